"""Higher-order gradients against PyTorch: autograd.grad with create_graph, Hessian-vector products,
a gradient penalty and a MAML step, through every op family whose backward is recorded."""
import harness

s = harness.Suite("autograd")

# second derivatives: d/dx sum(grad f(x) * v), v fixed
UNARY = {
    "tanh": ("x1:tanh()", "x1.tanh()"), "sigmoid": ("x1:sigmoid()", "x1.sigmoid()"), "exp": ("x1:exp()", "x1.exp()"),
    "sin": ("x1:sin()", "x1.sin()"), "erf": ("x1:erf()", "torch.erf(x1)"), "gelu": ("F.gelu(x1)", "F.gelu(x1)"),
    "softplus": ("F.softplus(x1)", "F.softplus(x1)"), "silu": ("F.silu(x1)", "F.silu(x1)"),
    "log(x^2+1)": ("(x1 * x1 + 1):log()", "(x1 * x1 + 1).log()"), "sqrt(x^2+1)": ("(x1 * x1 + 1):sqrt()", "(x1 * x1 + 1).sqrt()"),
    "x^3": ("x1 * x1 * x1", "x1 * x1 * x1"), "relu(x)*x": ("x1:relu() * x1", "x1.relu() * x1"),
}
for name, (lua, py) in sorted(UNARY.items()):
    x = s.tensor([3, 4], layout="transposed")
    s.case("second derivative of %s" % name, [x],
           lua="local y = %s\nlocal g = nnr.autograd.grad(y:sum(), x1, {create_graph = true})\nreturn g, nnr.autograd.grad((g * g):sum(), x1)" % lua,
           py="y = %s\ng, = torch.autograd.grad(y.sum(), x1, create_graph=True)\nreturn g, torch.autograd.grad((g * g).sum(), x1)[0]" % py, requires_grad=True)

# Hessian-vector products through the families the issue names
HVP = [
    ("matmul", [[3, 4], [4, 5]], "(x1:matmul(x2)):tanh():sum()", "(x1.matmul(x2)).tanh().sum()"),
    ("linear", [[3, 4], [5, 4], [5]], "F.linear(x1, x2, x3):tanh():sum()", "F.linear(x1, x2, x3).tanh().sum()"),
    ("softmax", [[3, 4]], "(x1:softmax(2) * x1):sum()", "(x1.softmax(1) * x1).sum()"),
    ("log_softmax", [[3, 4]], "(x1:log_softmax(2) ^ 2):sum()", "(x1.log_softmax(1) ** 2).sum()"),
    ("reductions", [[3, 4]], "(x1:var(2) + x1:prod(2)):sum() + x1:mean(1):exp():sum()", "(x1.var(1) + x1.prod(1)).sum() + x1.mean(0).exp().sum()"),
    ("layer_norm", [[3, 4], [4], [4]], "(F.layer_norm(x1, {4}, x2, x3) ^ 3):sum()", "(F.layer_norm(x1, [4], x2, x3) ** 3).sum()"),
    ("conv2d", [[2, 2, 5, 5], [3, 2, 3, 3], [3]], "(F.conv2d(x1, x2, x3, {stride = 2, padding = 1}) ^ 2):tanh():sum()",
     "(F.conv2d(x1, x2, x3, stride=2, padding=1) ** 2).tanh().sum()"),
    ("conv_transpose2d", [[1, 2, 3, 3], [2, 3, 3, 3], [3]], "(F.conv_transpose2d(x1, x2, x3, {stride = 2, padding = 1, output_padding = 1}) ^ 2):sum()",
     "(F.conv_transpose2d(x1, x2, x3, stride=2, padding=1, output_padding=1) ** 2).sum()"),
    ("batch_norm (training)", [[4, 3, 2, 2], [3], [3]], "(F.batch_norm(x1, nil, nil, x2, x3, true) ^ 3):sum()",
     "(F.batch_norm(x1, None, None, x2, x3, training=True) ** 3).sum()"),
    ("group_norm", [[2, 4, 3], [4], [4]], "(F.group_norm(x1, 2, x2, x3) ^ 3):sum()", "(F.group_norm(x1, 2, x2, x3) ** 3).sum()"),
    ("max_pool2d", [[2, 2, 6, 6]], "(F.max_pool2d(x1, 2) ^ 3):sum()", "(F.max_pool2d(x1, 2) ** 3).sum()"),
    ("avg_pool2d", [[2, 2, 6, 6]], "(F.avg_pool2d(x1, 3, {stride = 2, padding = 1}) ^ 3):sum()",
     "(F.avg_pool2d(x1, 3, stride=2, padding=1) ** 3).sum()"),
    ("adaptive_avg_pool2d", [[2, 2, 5, 7]], "(F.adaptive_avg_pool2d(x1, {2, 3}) ^ 3):sum()", "(F.adaptive_avg_pool2d(x1, (2, 3)) ** 3).sum()"),
]
for name, shapes, lua, py in HVP:
    ins = [s.tensor(sh) for sh in shapes]
    vs = [s.tensor(sh) for sh in shapes]
    n = len(shapes)
    xs = ", ".join("x%d" % (k + 1) for k in range(n))
    vl = ", ".join("P.v%d" % (k + 1) for k in range(n))
    lsum = " + ".join("(gs[%d] * P.v%d):sum()" % (k + 1, k + 1) for k in range(n))
    psum = " + ".join("(gs[%d] * P.v%d).sum()" % (k, k + 1) for k in range(n))
    s.case("Hessian-vector product through %s" % name, ins,
           lua="local f = %s\nlocal gs = {nnr.autograd.grad(f, {%s}, {create_graph = true})}\nreturn nnr.autograd.grad(%s, {%s})" % (lua, xs, lsum, xs),
           py="f = %s\ngs = torch.autograd.grad(f, [%s], create_graph=True)\nreturn torch.autograd.grad(%s, [%s])" % (py, xs, psum, xs),
           params={"v%d" % (k + 1): v for k, v in enumerate(vs)}, requires_grad=True)

# a gradient penalty through a two-layer network, into its weights
s.case("gradient penalty into the weights", [s.tensor([6, 3])],
       lua="local w1, b1, w2 = P.w1:detach():requires_grad_(), P.b1:detach():requires_grad_(), P.w2:detach():requires_grad_()\n"
           "local out = F.linear(F.linear(x1, w1, b1):tanh(), w2):sum()\n"
           "local g = nnr.autograd.grad(out, x1, {create_graph = true})\n"
           "local pen = ((g * g):sum(2):sqrt() - 1):pow(2):mean()\n"
           "return pen, nnr.autograd.grad(pen, {w1, b1, w2})",
       py="w1, b1, w2 = P.w1.detach().requires_grad_(), P.b1.detach().requires_grad_(), P.w2.detach().requires_grad_()\n"
          "out = F.linear(F.linear(x1, w1, b1).tanh(), w2).sum()\n"
          "g, = torch.autograd.grad(out, x1, create_graph=True)\n"
          "pen = ((g * g).sum(1).sqrt() - 1).pow(2).mean()\n"
          "return (pen,) + torch.autograd.grad(pen, [w1, b1, w2])",
       params={"w1": s.tensor([5, 3]), "b1": s.tensor([5]), "w2": s.tensor([1, 5])}, requires_grad=True)

# one MAML step: the meta-gradient through the inner update
s.case("second-order MAML step", [s.tensor([3, 1])],
       lua="local inner = F.mse_loss(P.xs:matmul(x1), P.ys)\n"
           "local g = nnr.autograd.grad(inner, x1, {create_graph = true})\n"
           "local adapted = x1 - g * 0.1\n"
           "return F.mse_loss(P.xq:matmul(adapted), P.yq)",
       py="inner = F.mse_loss(P.xs.matmul(x1), P.ys)\n"
          "g, = torch.autograd.grad(inner, x1, create_graph=True)\n"
          "adapted = x1 - g * 0.1\n"
          "return F.mse_loss(P.xq.matmul(adapted), P.yq)",
       grad=True, params={"xs": s.tensor([8, 3]), "ys": s.tensor([8, 1]), "xq": s.tensor([8, 3]), "yq": s.tensor([8, 1])})

# errors on both sides
s.raises("grad of an input that was not used", [s.tensor([3]), s.tensor([3])],
         lua="return nnr.autograd.grad((x1 * 2):sum(), {x1, x2:requires_grad_()})",
         py="return torch.autograd.grad((x1 * 2).sum(), [x1, x2.requires_grad_()])")
s.raises("grad of a non-scalar output without grad_outputs", [s.tensor([3])],
         lua="return nnr.autograd.grad(x1 * 2, x1)", py="return torch.autograd.grad(x1 * 2, x1)")
s.run()
