"""Issue 16's layers and losses against PyTorch: outputs, input gradients and parameter gradients
on random (transposed, strided) inputs, with the same weights loaded into both models through
load_state_dict (strict: the parameter names and shapes must be PyTorch's), and the errors."""
import harness

s = harness.Suite("nn_layers")

# a module built in both languages, loaded with the same parameters and buffers (strict), run on the
# inputs; its parameters' gradients are compared (in registration order, the same in both)
def module_case(name, inputs, lua, py, params=None, lua_call="m(x1)", py_call="m(x1)", lua_pre="", py_pre="", grad=True, **kw):
    s.module_case(name, inputs, lua, py, "return " + lua_call, "return " + py_call, params, lua_pre, py_pre, grad, **kw)


def t(shape, **kw):
    return s.tensor(shape, **kw)


# ---- convolutions -------------------------------------------------------------------------------
module_case("Conv1d stride 2, padding 1, dilation 2, groups 2 (transposed input)", [t([2, 4, 9], layout="transposed")],
            "nn.Conv1d(4, 6, 3, {stride = 2, padding = 1, dilation = 2, groups = 2})",
            "nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)",
            {"weight": t([6, 2, 3]), "bias": t([6])})
module_case("Conv1d without bias (strided input)", [t([3, 2, 7], layout="strided")], "nn.Conv1d(2, 3, 2, {bias = false})",
            "nn.Conv1d(2, 3, 2, bias=False)", {"weight": t([3, 2, 2])})
module_case("Conv1d unbatched [C, L]", [t([2, 6])], "nn.Conv1d(2, 3, 3, {padding = 2})", "nn.Conv1d(2, 3, 3, padding=2)",
            {"weight": t([3, 2, 3]), "bias": t([3])})
module_case("ConvTranspose1d stride 2, padding 1, output_padding 1, groups 2", [t([2, 4, 5], layout="transposed")],
            "nn.ConvTranspose1d(4, 6, 3, {stride = 2, padding = 1, output_padding = 1, groups = 2})",
            "nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)",
            {"weight": t([4, 3, 3]), "bias": t([6])})
module_case("ConvTranspose2d stride {2, 1}, padding {1, 0}, output_padding {1, 0}, dilation {1, 2}", [t([2, 3, 4, 3], layout="transposed")],
            "nn.ConvTranspose2d(3, 4, {3, 2}, {stride = {2, 1}, padding = {1, 0}, output_padding = {1, 0}, dilation = {1, 2}})",
            "nn.ConvTranspose2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dilation=(1, 2))",
            {"weight": t([3, 4, 3, 2]), "bias": t([4])})
module_case("ConvTranspose2d groups 3, no bias, output_padding 1 < dilation 2 (stride 1)", [t([1, 6, 3, 4], layout="strided")],
            "nn.ConvTranspose2d(6, 3, 2, {groups = 3, bias = false, dilation = 2, output_padding = 1})",
            "nn.ConvTranspose2d(6, 3, 2, groups=3, bias=False, dilation=2, output_padding=1)",
            {"weight": t([6, 1, 2, 2])})
module_case("ConvTranspose2d 4x4 stride 2 padding 1 (a decoder's upsampling)", [t([2, 4, 5, 5])],
            "nn.ConvTranspose2d(4, 2, 4, {stride = 2, padding = 1})", "nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)",
            {"weight": t([4, 2, 4, 4]), "bias": t([2])})
module_case("ConvTranspose2d unbatched [C, H, W]", [t([2, 3, 3])], "nn.ConvTranspose2d(2, 3, 2, {stride = 2})",
            "nn.ConvTranspose2d(2, 3, 2, stride=2)", {"weight": t([2, 3, 2, 2]), "bias": t([3])})
s.case("F.conv_transpose2d with weight and bias gradients", [t([2, 2, 3, 4], layout="transposed"), t([2, 3, 3, 3]), t([3])],
       lua="return F.conv_transpose2d(x1, x2, x3, {stride = 2, padding = 1, output_padding = 1})",
       py="return F.conv_transpose2d(x1, x2, x3, stride=2, padding=1, output_padding=1)", grad=True)
s.case("F.conv_transpose1d", [t([1, 2, 6]), t([2, 2, 3])], lua="return F.conv_transpose1d(x1, x2, nil, {stride = 3})",
       py="return F.conv_transpose1d(x1, x2, None, stride=3)", grad=True)
s.case("F.conv1d with a broadcast (expanded) input", [t([3, 2, 5], layout="expanded"), t([4, 2, 2]), t([4])],
       lua="return F.conv1d(x1, x2, x3, {padding = 1})", py="return F.conv1d(x1, x2, x3, padding=1)", grad=True)
s.case("F.conv2d vs a float32 ConvTranspose2d round trip", [t([1, 3, 4, 4], dtype="f32"), t([3, 2, 3, 3], dtype="f32")],
       lua="return F.conv_transpose2d(x1, x2, nil, {stride = 2})", py="return F.conv_transpose2d(x1, x2, None, stride=2)", grad=True)

# ---- normalization ------------------------------------------------------------------------------
module_case("GroupNorm(2, 6) with affine parameters", [t([3, 6, 4, 5], layout="transposed")], "nn.GroupNorm(2, 6)", "nn.GroupNorm(2, 6)",
            {"weight": t([6]), "bias": t([6])})
module_case("GroupNorm(3, 6) without affine, 3-d input", [t([2, 6, 7], layout="strided")], "nn.GroupNorm(3, 6, {affine = false, eps = 1e-3})",
            "nn.GroupNorm(3, 6, affine=False, eps=1e-3)")
module_case("InstanceNorm2d(4) defaults (no affine, no running stats)", [t([2, 4, 5, 5], layout="transposed")], "nn.InstanceNorm2d(4)",
            "nn.InstanceNorm2d(4)")
module_case("InstanceNorm2d affine, running stats updated in training", [t([3, 4, 3, 5])],
            "nn.InstanceNorm2d(4, {affine = true, track_running_stats = true, momentum = 0.3})",
            "nn.InstanceNorm2d(4, affine=True, track_running_stats=True, momentum=0.3)",
            {"weight": t([4]), "bias": t([4]), "running_mean": t([4]), "running_var": t([4], low=0.5, high=2),
             "num_batches_tracked": t([], dtype="i64", low=0, high=5)},
            lua_call="m(x1), m.running_mean, m.running_var, m.num_batches_tracked", py_call="m(x1), m.running_mean, m.running_var, m.num_batches_tracked")
module_case("InstanceNorm2d eval with running stats, unbatched", [t([4, 3, 5])],
            "nn.InstanceNorm2d(4, {affine = true, track_running_stats = true})", "nn.InstanceNorm2d(4, affine=True, track_running_stats=True)",
            {"weight": t([4]), "bias": t([4]), "running_mean": t([4]), "running_var": t([4], low=0.5, high=2),
             "num_batches_tracked": t([], dtype="i64", low=0, high=5)}, lua_pre="m:eval()", py_pre="m.eval()")
module_case("InstanceNorm1d [N, C, L]", [t([2, 3, 6])], "nn.InstanceNorm1d(3, {affine = true})", "nn.InstanceNorm1d(3, affine=True)",
            {"weight": t([3]), "bias": t([3])})
s.case("F.group_norm with weight, bias", [t([2, 4, 3]), t([4]), t([4])], lua="return F.group_norm(x1, 2, x2, x3)",
       py="return F.group_norm(x1, 2, x2, x3)", grad=True)

# ---- pooling ------------------------------------------------------------------------------------
module_case("MaxPool1d(3, stride 2, padding 1)", [t([2, 3, 10], layout="transposed")], "nn.MaxPool1d(3, {stride = 2, padding = 1})",
            "nn.MaxPool1d(3, stride=2, padding=1)")
module_case("MaxPool1d dilation 2, ceil_mode, unbatched", [t([3, 11])], "nn.MaxPool1d(2, {stride = 3, dilation = 2, ceil_mode = true})",
            "nn.MaxPool1d(2, stride=3, dilation=2, ceil_mode=True)")
module_case("AvgPool1d(3, stride 2, padding 1, count_include_pad false)", [t([2, 3, 9], layout="strided")],
            "nn.AvgPool1d(3, {stride = 2, padding = 1, count_include_pad = false})", "nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False)")
module_case("AvgPool1d ceil_mode", [t([1, 2, 8])], "nn.AvgPool1d(3, {ceil_mode = true})", "nn.AvgPool1d(3, ceil_mode=True)")
module_case("AdaptiveMaxPool2d {3, 2} of 7x5 (uneven windows)", [t([2, 3, 7, 5], layout="transposed")], "nn.AdaptiveMaxPool2d({3, 2})",
            "nn.AdaptiveMaxPool2d((3, 2))")
module_case("AdaptiveMaxPool2d 2 of 6x4 (even windows)", [t([2, 3, 6, 4])], "nn.AdaptiveMaxPool2d(2)", "nn.AdaptiveMaxPool2d(2)")
module_case("AdaptiveMaxPool2d 4 of 3x3 (overlapping windows, unbatched)", [t([2, 3, 3])], "nn.AdaptiveMaxPool2d(4)", "nn.AdaptiveMaxPool2d(4)")

# ---- resampling and rearranging -----------------------------------------------------------------
for lua, py in [("{scale_factor = 2}", "scale_factor=2"), ("{size = {5, 7}}", "size=(5, 7)"),
                ("{scale_factor = {1.5, 0.5}}", "scale_factor=(1.5, 0.5)"),
                ("{scale_factor = 2, mode = 'bilinear'}", "scale_factor=2, mode='bilinear'"),
                ("{size = {5, 7}, mode = 'bilinear', align_corners = true}", "size=(5, 7), mode='bilinear', align_corners=True"),
                ("{scale_factor = 1.5, mode = 'bilinear'}", "scale_factor=1.5, mode='bilinear'"),
                ("{size = 2, mode = 'bilinear'}", "size=2, mode='bilinear'")]:
    module_case("Upsample" + lua, [t([1, 2, 3, 4], layout="transposed")], "nn.Upsample(%s)" % lua, "nn.Upsample(%s)" % py)
module_case("PixelShuffle(2)", [t([2, 8, 3, 2], layout="transposed")], "nn.PixelShuffle(2)", "nn.PixelShuffle(2)")
module_case("PixelShuffle(3) with two batch dims", [t([2, 3, 9, 2, 2])], "nn.PixelShuffle(3)", "nn.PixelShuffle(3)")
module_case("PixelUnshuffle(2)", [t([2, 2, 4, 6], layout="strided")], "nn.PixelUnshuffle(2)", "nn.PixelUnshuffle(2)")
s.case("pixel_unshuffle undoes pixel_shuffle", [t([1, 12, 2, 3])], lua="return F.pixel_unshuffle(F.pixel_shuffle(x1, 2), 2)",
       py="return F.pixel_unshuffle(F.pixel_shuffle(x1, 2), 2)", grad=True)
module_case("Dropout2d in eval is the identity", [t([2, 3, 4, 4])], "nn.Dropout2d(0.3)", "nn.Dropout2d(0.3)", lua_pre="m:eval()", py_pre="m.eval()")
module_case("Dropout2d(0) in training is the identity", [t([2, 3, 4, 4])], "nn.Dropout2d(0)", "nn.Dropout2d(0)")
module_case("Identity", [t([2, 3], layout="transposed")], "nn.Identity(54, 'unused')", "nn.Identity(54, 'unused')")

# ---- activations --------------------------------------------------------------------------------
for name, lua, py in [("SiLU", "nn.SiLU()", "nn.SiLU()"), ("Mish", "nn.Mish()", "nn.Mish()"), ("Softplus", "nn.Softplus()", "nn.Softplus()"),
                      ("Softplus(2, 1): beta and a threshold that is crossed", "nn.Softplus(2, 1)", "nn.Softplus(2, 1)"),
                      ("Softplus(-0.5)", "nn.Softplus(-0.5)", "nn.Softplus(-0.5)"), ("Hardswish", "nn.Hardswish()", "nn.Hardswish()")]:
    module_case(name + " on [-6, 6]", [t([4, 5], layout="transposed", low=-6, high=6)], lua, py)
module_case("Softplus and Mish far out (no overflow)", [t([6], values=[-800.0, -40.0, -1e-3, 1e-3, 40.0, 800.0])],
            "nn.Sequential(nn.Softplus(), nn.Mish())", "nn.Sequential(nn.Softplus(), nn.Mish())")
module_case("PReLU() one slope", [t([3, 4, 2], layout="transposed")], "nn.PReLU()", "nn.PReLU()", {"weight": t([1])})
module_case("PReLU(4, 0.1) per channel", [t([2, 4, 3, 3])], "nn.PReLU(4, 0.1)", "nn.PReLU(4, 0.1)", {"weight": t([4])})
module_case("PReLU init 0.1 as constructed", [t([2, 4])], "nn.PReLU(4, 0.1)", "nn.PReLU(4, 0.1)", {"weight": s.tensor([4], values=[0.1] * 4)})
s.case("F.prelu, F.silu, F.mish, F.hardswish, F.softplus", [t([2, 3, 4], low=-4, high=4), t([3])],
       lua="return F.prelu(x1, x2), F.silu(x1), F.mish(x1), F.hardswish(x1), F.softplus(x1, 3, 2)",
       py="return F.prelu(x1, x2), F.silu(x1), F.mish(x1), F.hardswish(x1), F.softplus(x1, 3, 2)", grad=True)

# ---- containers: state dict names as PyTorch's ----------------------------------------------------
module_case("ModuleDict: names enc., dec. in the state dict", [t([2, 3])],
            "nn.ModuleDict{{'enc', nn.Linear(3, 4)}, {'dec', nn.Linear(4, 2)}}",
            "nn.ModuleDict({'enc': nn.Linear(3, 4), 'dec': nn.Linear(4, 2)})",
            {"enc.weight": t([4, 3]), "enc.bias": t([4]), "dec.weight": t([2, 4]), "dec.bias": t([2])},
            lua_call="m.dec(F.silu(m.enc(x1)))", py_call="m['dec'](F.silu(m['enc'](x1)))")
# (PyTorch wraps the tensors given in new Parameters, nnrun keeps them: the lists' own are compared)
s.case("ParameterList (1-based get)", [t([2, 3])],
       lua="local pl = nn.ParameterList{P.a:detach():clone(), P.b:detach():clone()}\nG[1], G[2] = pl:get(1), pl:get(2)\n"
           "return x1 * pl:get(1) + pl:get(-1)",
       py="pl = nn.ParameterList([P.a.detach().clone(), P.b.detach().clone()])\nG.extend([pl[0], pl[1]])\nreturn x1 * pl[0] + pl[-1]",
       params={"a": t([3]), "b": t([2, 1])}, grad=True)

# ---- losses -------------------------------------------------------------------------------------
for red in ("mean", "sum", "none"):
    x, y = t([4, 5], layout="transposed"), t([4, 5])
    s.case("HuberLoss delta 0.5, %s" % red, [x, y], lua="return nn.HuberLoss{delta = 0.5, reduction = '%s'}(x1, x2)" % red,
           py="return nn.HuberLoss(delta=0.5, reduction='%s')(x1, x2)" % red, grad=True)
    s.case("SmoothL1Loss beta 0.7, %s" % red, [x, y], lua="return nn.SmoothL1Loss{beta = 0.7, reduction = '%s'}(x1, x2)" % red,
           py="return nn.SmoothL1Loss(beta=0.7, reduction='%s')(x1, x2)" % red, grad=True)
    s.case("CosineEmbeddingLoss margin 0.2, %s" % red, [t([5, 4], layout="strided"), t([5, 4]), s.tensor([5], dtype="i64", values=[1, -1, 1, -1, -1])],
           lua="return nn.CosineEmbeddingLoss{margin = 0.2, reduction = '%s'}(x1, x2, x3)" % red,
           py="return nn.CosineEmbeddingLoss(margin=0.2, reduction='%s')(x1, x2, x3)" % red, grad=True)
    p, q, w = t([3, 4], low=0.02, high=0.98, layout="transposed"), t([3, 4], low=0, high=1), t([4], low=0.5, high=2)
    s.case("BCELoss with a broadcast weight, %s" % red, [p, q, w], lua="return nn.BCELoss{weight = x3:detach(), reduction = '%s'}(x1, x2)" % red,
           py="return nn.BCELoss(weight=x3.detach(), reduction='%s')(x1, x2)" % red, grad=True)
s.case("SmoothL1Loss beta 0 is L1", [t([3, 3]), t([3, 3])], lua="return F.smooth_l1_loss(x1, x2, {beta = 0})",
       py="return F.smooth_l1_loss(x1, x2, beta=0.0)", grad=True)
s.case("BCELoss at 0 and 1: log clamped at -100", [s.tensor([4], values=[0.0, 1.0, 0.0, 1.0]), s.tensor([4], values=[1.0, 0.0, 0.0, 1.0])],
       lua="return F.binary_cross_entropy(x1, x2, {reduction = 'none'})", py="return F.binary_cross_entropy(x1, x2, reduction='none')")
s.case("CosineEmbeddingLoss of single vectors", [t([4]), t([4]), s.tensor([], dtype="i64", values=[-1])],
       lua="return F.cosine_embedding_loss(x1, x2, x3, {margin = -0.5})", py="return F.cosine_embedding_loss(x1, x2, x3, margin=-0.5)", grad=True)
kl_target = [0.0, 0.3, 0.2, 0.5, 0.1, 0.0, 0.9, 0.0, 0.25, 0.25, 0.25, 0.25]
for red in ("batchmean", "mean", "sum", "none"):
    s.case("KLDivLoss %s, targets with zeros" % red, [t([3, 4], layout="transposed"), s.tensor([3, 4], values=kl_target)],
           lua="return nn.KLDivLoss{reduction = '%s'}(x1:log_softmax(2), x2:detach())" % red,
           py="return nn.KLDivLoss(reduction='%s')(x1.log_softmax(1), x2.detach())" % red, grad=True)
    s.case("KLDivLoss log_target, %s" % red, [t([3, 4]), t([3, 4], layout="strided")],
           lua="return nn.KLDivLoss{reduction = '%s', log_target = true}(x1:log_softmax(2), x2:log_softmax(2))" % red,
           py="return nn.KLDivLoss(reduction='%s', log_target=True)(x1.log_softmax(1), x2.log_softmax(1))" % red, grad=True)
s.case("kl_div: gradient with respect to the target", [t([2, 3]), t([2, 3], low=0.1, high=1)],
       lua="return F.kl_div(x1, x2, {reduction = 'sum'})", py="return F.kl_div(x1, x2, reduction='sum')", grad=True)

# class targets: 1-based in nnrun, 0-based in PyTorch; ignored entries (-100) stay as they are
PY_TARGET = "tg = torch.where(x2 == -100, x2, x2 - 1)\n"
targets = s.tensor([7], dtype="i64", values=[1, 2, -100, 4, 3, 2, -100])
weight = t([4], low=0.2, high=2)
for red in ("mean", "sum", "none"):
    s.case("CrossEntropyLoss weight and ignore_index -100, %s" % red, [t([7, 4], layout="transposed"), targets, weight],
           lua="return nn.CrossEntropyLoss{weight = x3:detach(), reduction = '%s'}(x1, x2)" % red,
           py=PY_TARGET + "return nn.CrossEntropyLoss(weight=x3.detach(), reduction='%s')(x1, tg)" % red, grad=True)
    s.case("cross_entropy weight, ignore_index 2 (a class), label smoothing 0.2, %s" % red,
           [t([7, 4]), s.tensor([7], dtype="i64", values=[1, 2, 2, 4, 3, 2, 1]), weight],
           lua="return F.cross_entropy(x1, x2, {weight = x3:detach(), ignore_index = 2, label_smoothing = 0.2, reduction = '%s'})" % red,
           py="return F.cross_entropy(x1, x2 - 1, weight=x3.detach(), ignore_index=1, label_smoothing=0.2, reduction='%s')" % red, grad=True)
    s.case("NLLLoss weight, ignore_index -100, %s" % red, [t([7, 4]), targets, weight],
           lua="return nn.NLLLoss{weight = x3:detach(), reduction = '%s'}(x1:log_softmax(2), x2)" % red,
           py=PY_TARGET + "return nn.NLLLoss(weight=x3.detach(), reduction='%s')(x1.log_softmax(1), tg)" % red, grad=True)
    s.case("cross_entropy label smoothing and ignore, no weight, %s" % red, [t([7, 4], layout="strided"), targets],
           lua="return F.cross_entropy(x1, x2, {label_smoothing = 0.1, reduction = '%s'})" % red,
           py=PY_TARGET + "return F.cross_entropy(x1, tg, label_smoothing=0.1, reduction='%s')" % red, grad=True)
# the fused loss (CROSS_ENTROPY: [N, C] scores in f32 or f64, no weight, no smoothing): ignored rows
# present, ignore_index a class, strided scores, f32 too
for red in ("mean", "sum", "none"):
    s.case("CrossEntropyLoss fused, ignore_index -100, %s" % red, [t([7, 4], layout="transposed"), targets],
           lua="return nn.CrossEntropyLoss{reduction = '%s'}(x1, x2)" % red,
           py=PY_TARGET + "return nn.CrossEntropyLoss(reduction='%s')(x1, tg)" % red, grad=True)
    s.case("cross_entropy fused, ignore_index 2 (a class), %s" % red,
           [t([7, 4], layout="strided"), s.tensor([7], dtype="i64", values=[1, 2, 2, 4, 3, 2, 1])],
           lua="return F.cross_entropy(x1, x2, {ignore_index = 2, reduction = '%s'})" % red,
           py="return F.cross_entropy(x1, x2 - 1, ignore_index=1, reduction='%s')" % red, grad=True)
    s.case("cross_entropy fused f32, 33 classes, %s" % red,
           [t([9, 33], dtype="f32"), s.tensor([9], dtype="i64", values=[1, 33, 17, 2, 32, 5, 16, 9, 30])],
           lua="return F.cross_entropy(x1, x2, {reduction = '%s'})" % red,
           py="return F.cross_entropy(x1, x2 - 1, reduction='%s')" % red, grad=True)
s.case("cross_entropy over [N, C, d] scores with weight and ignore", [t([2, 4, 3]), s.tensor([2, 3], dtype="i64", values=[1, 4, -100, 2, 2, 3]), weight],
       lua="return F.cross_entropy(x1, x2, {weight = x3:detach()})", py=PY_TARGET + "return F.cross_entropy(x1, tg, weight=x3.detach())", grad=True)
s.case("cross_entropy: every target ignored gives nan", [t([2, 3]), s.tensor([2], dtype="i64", values=[-100, -100])],
       lua="return F.cross_entropy(x1, x2)", py="return F.cross_entropy(x1, x2)")

# ---- errors -------------------------------------------------------------------------------------
s.raises("ConvTranspose2d: output_padding not below stride or dilation", [], lua="return nn.ConvTranspose2d(2, 2, 3, {stride = 2, output_padding = 2})",
         py="return nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)(torch.zeros(1, 2, 3, 3))")
s.raises("Conv1d: wrong number of channels", [t([1, 3, 5])], lua="return nn.Conv1d(2, 2, 3)(x1)", py="return nn.Conv1d(2, 2, 3).double()(x1)")
s.raises("conv_transpose2d: weight channels differ from the input's", [t([1, 3, 4, 4]), t([2, 2, 3, 3])],
         lua="return F.conv_transpose2d(x1, x2)", py="return F.conv_transpose2d(x1, x2)")
s.raises("GroupNorm: channels not divisible by groups", [], lua="return nn.GroupNorm(4, 6)", py="return nn.GroupNorm(4, 6)")
s.raises("group_norm: input channels not divisible", [t([2, 6, 3])], lua="return F.group_norm(x1, 4)", py="return F.group_norm(x1, 4)")
s.raises("PixelShuffle: channels not divisible by r^2", [t([1, 6, 2, 2])], lua="return nn.PixelShuffle(2)(x1)", py="return nn.PixelShuffle(2)(x1)")
s.raises("BCELoss: input outside [0, 1]", [s.tensor([3], values=[0.5, 1.5, 0.2]), t([3], low=0, high=1)],
         lua="return F.binary_cross_entropy(x1, x2)", py="return F.binary_cross_entropy(x1, x2)")
s.raises("cross_entropy: label 0 (0-based labels not shifted)", [t([2, 3]), s.tensor([2], dtype="i64", values=[0, 1])],
         lua="return F.cross_entropy(x1, x2)", py="return F.cross_entropy(x1, x2 - 1)")
s.raises("cross_entropy: weight of the wrong length", [t([2, 3]), s.tensor([2], dtype="i64", values=[1, 2]), t([4])],
         lua="return F.cross_entropy(x1, x2, {weight = x3:detach()})", py="return F.cross_entropy(x1, x2 - 1, weight=x3.detach())")
s.raises("kl_div: shapes differ", [t([2, 3]), t([3, 2])], lua="return F.kl_div(x1, x2)", py="return F.kl_div(x1, x2)")
s.raises("PReLU: weights and channels differ", [t([2, 3, 4])], lua="return nn.PReLU(4)(x1)", py="return nn.PReLU(4).double()(x1)")
s.raises("AdaptiveMaxPool2d: a 2-d input", [t([3, 4])], lua="return nn.AdaptiveMaxPool2d(2)(x1)", py="return nn.AdaptiveMaxPool2d(2)(x1)")
s.raises("Upsample: both size and scale_factor", [], lua="return nn.Upsample{size = 2, scale_factor = 2}",
         py="return nn.Upsample(size=2, scale_factor=2)(torch.zeros(1, 1, 2, 2))")
s.raises("Upsample: align_corners with nearest", [], lua="return nn.Upsample{scale_factor = 2, align_corners = true}",
         py="return nn.Upsample(scale_factor=2, align_corners=True)(torch.zeros(1, 1, 2, 2))")
s.raises("ModuleDict: state dict with PyTorch's names only", [], lua="return nn.ModuleDict{a = nn.Linear(2, 2)}:load_state_dict({['a.w'] = nnr.zeros(2, 2)})",
         py="return nn.ModuleDict({'a': nn.Linear(2, 2)}).load_state_dict({'a.w': torch.zeros(2, 2)})")

s.run()
