"""Issue 17's attention against PyTorch: F.scaled_dot_product_attention (causal, bool and float masks,
broadcast heads, a scale, blocks of query rows), nn.MultiheadAttention (PyTorch's packed in-projection,
key padding masks, separate kdim/vdim, the averaged weights) and the Transformer layers, loaded with the
same state dicts: outputs and every gradient."""
import harness

s = harness.Suite("attention")


def t(shape, **kw):
    return s.tensor(shape, low=-1, high=1, **kw)


def case(name, inputs, lua, py, prm, lua_call, py_call, **kw):
    s.module_case(name, inputs, lua, py, lua_call, py_call, prm, lua_pre="m:eval()", py_pre="m.eval()", **kw)


# ---- scaled_dot_product_attention ------------------------------------------------------------------
# the reference: PyTorch's own where it has it (2.0 and later), else its definition in PyTorch ops
SDPA_PY = """def sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    s = q @ k.transpose(-2, -1) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    return torch.softmax(s, -1) @ v
"""
s.case("sdpa", [t([2, 3, 5, 4]), t([2, 3, 7, 4]), t([2, 3, 7, 6])], lua="return F.scaled_dot_product_attention(x1, x2, x3)",
       py=SDPA_PY + "return sdpa(x1, x2, x3)", grad=True)
s.case("sdpa causal (transposed query)", [t([2, 6, 4], layout="transposed"), t([2, 6, 4]), t([2, 6, 3])],
       lua="return F.scaled_dot_product_attention(x1, x2, x3, {is_causal = true})",
       py=SDPA_PY + "return sdpa(x1, x2, x3, is_causal=True)", grad=True)
s.case("sdpa causal, more queries than keys", [t([1, 7, 4]), t([1, 4, 4]), t([1, 4, 2])],
       lua="return F.scaled_dot_product_attention(x1, x2, x3, {is_causal = true})",
       py=SDPA_PY + "return sdpa(x1, x2, x3, is_causal=True)", grad=True)
s.case("sdpa with a float mask [L, S] and a scale", [t([2, 2, 5, 3]), t([2, 2, 6, 3]), t([2, 2, 6, 3]), t([5, 6])],
       lua="return F.scaled_dot_product_attention(x1, x2, x3, {attn_mask = x4:detach(), scale = 0.7})",
       py=SDPA_PY + "return sdpa(x1, x2, x3, attn_mask=x4.detach(), scale=0.7)", grad=True)
s.case("sdpa with a bool mask and key/value broadcast over heads", [t([2, 4, 5, 3]), t([2, 1, 6, 3]), t([2, 1, 6, 2]),
       t([2, 1, 5, 6], dtype="bool")],
       lua="local m = x4:clone(); m:select(4, 1):fill_(true); return F.scaled_dot_product_attention(x1, x2, x3, {attn_mask = m})",
       py=SDPA_PY + "m = x4.clone(); m[..., 0] = True; return sdpa(x1, x2.expand(2, 4, 6, 3), x3.expand(2, 4, 6, 2), attn_mask=m)",
       grad=True)
s.case("sdpa over blocks of query rows (2100 x 2100 scores), causal", [t([1, 2100, 8], dtype="f32"), t([1, 2100, 8], dtype="f32"),
       t([1, 2100, 8], dtype="f32")],
       lua="return F.scaled_dot_product_attention(x1, x2, x3, {is_causal = true})",
       py=SDPA_PY + "return sdpa(x1, x2, x3, is_causal=True)", grad=True, atol=1e-4, rtol=1e-4)
s.case("sdpa over blocks, a float mask", [t([1, 2100, 4], dtype="f32"), t([1, 2100, 4], dtype="f32"), t([1, 2100, 4], dtype="f32"),
       t([2100, 2100], dtype="f32")],
       lua="return F.scaled_dot_product_attention(x1, x2, x3, {attn_mask = x4:detach()})",
       py=SDPA_PY + "return sdpa(x1, x2, x3, attn_mask=x4.detach())", grad=True, atol=1e-4, rtol=1e-4)

# ---- MultiheadAttention ----------------------------------------------------------------------------
E, H = 8, 2
mha = {"in_proj_weight": t([3 * E, E]), "in_proj_bias": t([3 * E]), "out_proj.weight": t([E, E]), "out_proj.bias": t([E])}
case("MultiheadAttention self-attention with weights", [t([5, 2, E])], "nn.MultiheadAttention(8, 2)", "nn.MultiheadAttention(8, 2)", mha,
     "local o, w = m(x1, x1, x1); return {o, w}", "return m(x1, x1, x1)")
case("MultiheadAttention batch_first, key padding mask, no weights", [t([2, 5, E]), t([2, 7, E]), t([2, 7], dtype="bool")],
     "nn.MultiheadAttention(8, 2, {batch_first = true})", "nn.MultiheadAttention(8, 2, batch_first=True)", mha,
     "local k = x3:clone(); k:select(2, 1):fill_(false); local o = m(x1, x2, x2, {key_padding_mask = k, need_weights = false}); return o",
     "k = x3.clone(); k[:, 0] = False; return m(x1, x2, x2, key_padding_mask=k, need_weights=False)[0]")
case("MultiheadAttention bool attn_mask, per-head weights", [t([4, 3, E]), t([4, 6], dtype="bool")],
     "nn.MultiheadAttention(8, 2)", "nn.MultiheadAttention(8, 2)", mha,
     "local a = x2:clone(); a:select(2, 1):fill_(false); local o, w = m(x1, x1, x1, {attn_mask = a:narrow(2, 1, 4), average_attn_weights = false}); return {o, w}",
     "a = x2.clone(); a[:, 0] = False; return m(x1, x1, x1, attn_mask=a[:, :4], average_attn_weights=False)")
case("MultiheadAttention kdim and vdim, unbatched", [t([3, E]), t([5, 4]), t([5, 6])],
     "nn.MultiheadAttention(8, 2, {kdim = 4, vdim = 6})", "nn.MultiheadAttention(8, 2, kdim=4, vdim=6)",
     {"q_proj_weight": t([E, E]), "k_proj_weight": t([E, 4]), "v_proj_weight": t([E, 6]), "in_proj_bias": t([3 * E]),
      "out_proj.weight": t([E, E]), "out_proj.bias": t([E])},
     "local o, w = m(x1, x2, x3); return {o, w}", "return m(x1, x2, x3)")

# ---- Transformer layers -----------------------------------------------------------------------------
D, FF = 8, 16


def layer_params(prefix="", cross=False):
    p = {}
    for a in ["self_attn"] + (["multihead_attn"] if cross else []):
        p.update({prefix + a + "." + k: v for k, v in
                  {"in_proj_weight": t([3 * D, D]), "in_proj_bias": t([3 * D]), "out_proj.weight": t([D, D]), "out_proj.bias": t([D])}.items()})
    p.update({prefix + "linear1.weight": t([FF, D]), prefix + "linear1.bias": t([FF]), prefix + "linear2.weight": t([D, FF]),
              prefix + "linear2.bias": t([D])})
    for i in range(1, 4 if cross else 3):
        p[prefix + "norm%d.weight" % i] = t([D])
        p[prefix + "norm%d.bias" % i] = t([D])
    return p


case("TransformerEncoderLayer post-norm, relu, src mask", [t([5, 2, D])],
     "nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16})", "nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)", layer_params(),
     "local c = nnr.ones(5, 5, {dtype = 'bool'}):triu(1); return m(x1, {src_mask = c})",
     "c = torch.ones(5, 5, dtype=torch.bool).triu(1); return m(x1, src_mask=c)")
case("TransformerEncoderLayer norm_first, gelu, batch_first, key padding", [t([2, 5, D]), t([2, 5], dtype="bool")],
     "nn.TransformerEncoderLayer(8, 2, {dim_feedforward = 16, norm_first = true, activation = 'gelu', batch_first = true})",
     "nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, norm_first=True, activation='gelu', batch_first=True)", layer_params(),
     "local k = x2:clone(); k:select(2, 1):fill_(false); return m(x1, {src_key_padding_mask = k})",
     "k = x2.clone(); k[:, 0] = False; return m(x1, src_key_padding_mask=k)")
case("TransformerDecoderLayer with memory, causal target", [t([4, 2, D]), t([6, 2, D])],
     "nn.TransformerDecoderLayer(8, 2, {dim_feedforward = 16})", "nn.TransformerDecoderLayer(8, 2, dim_feedforward=16)",
     layer_params(cross=True), "return m(x1, x2, {tgt_is_causal = true})",
     "c = torch.triu(torch.full((4, 4), float('-inf'), dtype=torch.float64), 1); return m(x1, x2, tgt_mask=c)")

# ---- GELU (one fused op; the tanh form composed) -----------------------------------------------------
s.case("F.gelu exact (strided)", [t([4, 6], layout="strided")], lua="return F.gelu(x1 * 3)", py="return F.gelu(x1 * 3)", grad=True)
s.case("F.gelu exact, float32", [t([300], dtype="f32")], lua="return F.gelu(x1 * 4)", py="return F.gelu(x1 * 4)", grad=True)
s.case("F.gelu tanh form", [t([5, 3])], lua="return F.gelu(x1 * 3, 'tanh')", py="return F.gelu(x1 * 3, approximate='tanh')", grad=True)
s.case("nn.GELU module", [t([2, 7], layout="transposed")], lua="return nn.GELU()(x1)", py="return nn.GELU()(x1)", grad=True)

s.raises("sdpa: query and key do not fit", [t([2, 3, 4]), t([2, 3, 5]), t([2, 3, 5])],
         lua="return F.scaled_dot_product_attention(x1, x2, x3)", py=SDPA_PY + "return sdpa(x1, x2, x3)")
s.raises("MultiheadAttention: embed_dim not divisible by num_heads", [], lua="return nn.MultiheadAttention(10, 3)",
         py="return nn.MultiheadAttention(10, 3)")
s.run()
