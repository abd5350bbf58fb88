"""Every broadcasting op with operands of different ranks (issue 16: a [3, 3] mask on a [2, 3, 3]
tensor was refused by masked_fill and where): values and gradients against PyTorch, both orders,
size-1 dims, zero-stride and transposed operands."""
import harness

s = harness.Suite("broadcast")


def broadcast(a, b):
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    return [x if y == 1 else y for x, y in zip(a, b)]


PAIRS = [([2, 3, 3], [3, 3]), ([3, 3], [2, 3, 3]), ([2, 1, 4], [3, 1]), ([4], [2, 3, 4]), ([2, 3, 1, 4], [5, 1]),
         ([], [2, 3]), ([2, 3], [])]
ARITH = {"add": ("x1 + x2", "x1 + x2"), "sub": ("x1 - x2", "x1 - x2"), "mul": ("x1 * x2", "x1 * x2"),
         "div": ("x1 / x2", "x1 / x2"), "maximum": ("nnr.maximum(x1, x2)", "torch.maximum(x1, x2)"),
         "minimum": ("nnr.minimum(x1, x2)", "torch.minimum(x1, x2)")}
for a, b in PAIRS:
    tag = "%s and %s" % (a, b)
    la = "transposed" if len(a) >= 2 else "contiguous"
    for name, (lua, py) in sorted(ARITH.items()):
        x, y = s.tensor(a, layout=la), s.tensor(b, low=0.5, high=2)
        s.case("%s, %s" % (name, tag), [x, y], lua="return " + lua, py="return " + py, grad=True)
    x, y = s.tensor(a, low=0.5, high=2), s.tensor(b, low=-1.5, high=1.5)
    s.case("pow, %s" % tag, [x, y], lua="return x1 ^ x2", py="return x1 ** x2", grad=True)
    for cmp in ("eq", "lt", "ge"):
        x, y = s.tensor(a, dtype="i64", low=0, high=2), s.tensor(b, dtype="i64", low=0, high=2)
        s.case("%s, %s" % (cmp, tag), [x, y], lua="return x1:%s(x2)" % cmp, py="return x1.%s(x2)" % cmp)
    m, u = s.tensor(a, dtype="bool"), s.tensor(b, dtype="bool")
    s.case("logical_and, %s" % tag, [m, u], lua="return x1:logical_and(x2)", py="return x1.logical_and(x2)")
    # where(cond, a, b) with the condition of either rank, and masked_fill with a mask of lower rank
    c, x, y = s.tensor(b, dtype="bool"), s.tensor(a), s.tensor(b)
    s.case("where(cond %s, x %s, y %s)" % (b, a, b), [c, x, y], lua="return nnr.where(x1, x2, x3)",
           py="return torch.where(x1, x2, x3)", grad=True)
    c, x = s.tensor(a, dtype="bool"), s.tensor(b)
    s.case("where(cond %s, x %s, 0.5)" % (a, b), [c, x], lua="return nnr.where(x1, x2, 0.5)",
           py="return torch.where(x1, x2, torch.tensor(0.5, dtype=torch.float64))", grad=True)
    # out of place, masked_fill broadcasts both ways (as PyTorch); in place, only into self's shape
    m, x = s.tensor(b, dtype="bool"), s.tensor(a, layout=la)
    s.case("masked_fill(x %s, mask %s)" % (a, b), [x, m], lua="return x1:masked_fill(x2, -3)",
           py="return x1.masked_fill(x2, -3)", grad=True)
    y = s.tensor(b)
    inplace = [("masked_fill_", [x, m], "y:masked_fill_(x2, 7)", "y.masked_fill_(x2, 7)"),
               ("add_", [x, y], "y:add_(x2)", "y.add_(x2)")]
    for name, ins, lua, py in inplace:
        lua, py = "local y = x1:clone(); %s; return y" % lua, "y = x1.clone(); %s; return y" % py
        if broadcast(a, b) == a:
            s.case("%s (self %s, other %s)" % (name, a, b), ins, lua=lua, py=py, grad=True)
        else:
            s.raises("%s cannot grow self (%s, %s)" % (name, a, b), ins, lua=lua, py=py)
# the issue's own case: a causal mask of [T, T] on scores [B, T, T], then softmax
scores, = [s.tensor([2, 4, 4])]
s.case("causal mask [4, 4] on [2, 4, 4] scores, softmax", [scores],
       lua="local i = nnr.arange(4); local m = i:view(4, 1):lt(i:view(1, 4)); return x1:masked_fill(m, -1 / 0):softmax(-1)",
       py="i = torch.arange(4); m = i.view(4, 1) < i.view(1, 4); return x1.masked_fill(m, float('-inf')).softmax(-1)", grad=True)
s.case("causal mask through where", [scores],
       lua="local i = nnr.arange(4); local m = i:view(4, 1):ge(i:view(1, 4)); return nnr.where(m, x1, -1e9):softmax(-1)",
       py="i = torch.arange(4); m = i.view(4, 1) >= i.view(1, 4); return torch.where(m, x1, torch.tensor(-1e9, dtype=torch.float64)).softmax(-1)", grad=True)
# batched matmul broadcasts its batch dims
for a, b in [([2, 3, 4], [4, 5]), ([4, 5], [2, 5, 3]), ([2, 1, 3, 4], [3, 4, 2]), ([3], [2, 3, 4]), ([2, 3, 4], [4])]:
    x, y = s.tensor(a), s.tensor(b)
    s.case("matmul %s @ %s" % (a, b), [x, y], lua="return x1:matmul(x2)", py="return x1.matmul(x2)", grad=True)
s.raises("add: [2, 3] and [3, 2]", [s.tensor([2, 3]), s.tensor([3, 2])], lua="return x1 + x2", py="return x1 + x2")
s.raises("masked_fill: shapes that do not broadcast", [s.tensor([3]), s.tensor([2, 2], dtype="bool")],
         lua="return x1:masked_fill(x2, 0)", py="return x1.masked_fill(x2, 0)")
s.run()
