"""nnrun against PyTorch: sort, argsort, topk, cumsum, cumprod, floor/ceil/round/trunc,
isnan/isinf/isfinite, any/all on every layout (gradients included), and the sampling ops by their
properties (their numbers come from nnrun's own Philox stream, not PyTorch's)."""
import harness

NAN, INF = float("nan"), float("inf")
s = harness.Suite("native_ops")

for layout in harness.LAYOUTS:
    x = s.tensor([4, 6], layout=layout)
    for dim in (1, 2):
        for desc in (False, True):
            s.case("sort dim %d%s, %s" % (dim, " descending" if desc else "", layout), [x],
                   lua="return x1:sort(%d, %s)" % (dim, "true" if desc else "false"),
                   py="v, i = torch.sort(x1, dim=%d, descending=%s, stable=True); return v, i + 1" % (dim - 1, desc), grad=True)
        if layout == "expanded" and dim == 1:     # equal values along dim 1: PyTorch picks any of the tied indices
            s.case("topk values along equal values, %s" % layout, [x], lua="return (x1:topk(3, 1))", py="return torch.topk(x1, 3, 0)[0]")
        else:
            s.case("topk 3 largest and 2 smallest, dim %d, %s" % (dim, layout), [x],
                   lua="local a, b = x1:topk(3, %d); local c, d = x1:topk(2, %d, false); return a, b, c, d" % (dim, dim),
                   py="a, b = torch.topk(x1, 3, %d); c, d = torch.topk(x1, 2, %d, largest=False); return a, b + 1, c, d + 1" % (dim - 1, dim - 1),
                   grad=True)
        s.case("cumsum and cumprod dim %d, %s" % (dim, layout), [x],
               lua="return x1:cumsum(%d), x1:cumprod(%d)" % (dim, dim),
               py="return x1.cumsum(%d), x1.cumprod(%d)" % (dim - 1, dim - 1), grad=True)
    s.case("argsort, %s" % layout, [x], lua="return x1:argsort(-1, true)", py="return torch.sort(x1, dim=-1, descending=True, stable=True)[1] + 1")
    s.case("floor, ceil, round, trunc (zero gradients), %s" % layout, [s.tensor([3, 5], layout=layout, low=-4, high=4)],
           lua="return x1:floor(), x1:ceil(), x1:round(), x1:trunc()",
           py="return x1.floor(), x1.ceil(), x1.round(), x1.trunc()", grad=True)
    b = s.tensor([3, 4], dtype="bool", layout=layout)
    s.case("any and all over dims, keepdim, %s" % layout, [b],
           lua="return x1:any(), x1:all(), x1:any(2), x1:all(1, true), x1:any({1, 2}, true)",
           py="return x1.any(), x1.all(), x1.any(1), x1.all(0, keepdim=True), x1.any(1, keepdim=True).any(0, keepdim=True)")

# a 3-d input along its middle dim, sort of a broadcast (expanded) input and its gradient
x3 = s.tensor([3, 5, 4], layout="transposed")
s.case("sort, topk, cumsum along the middle dim of 3-d", [x3],
       lua="local v, i = x1:sort(2); local t, j = x1:topk(2, -2); return v, i, t, j, x1:cumsum(2)",
       py="v, i = torch.sort(x1, dim=1, stable=True); t, j = torch.topk(x1, 2, -2); return v, i + 1, t, j + 1, x1.cumsum(1)", grad=True)

# ties: the stable order is PyTorch's stable order, both directions; integers and every float dtype
for dt in ("i64", "i32", "u8"):
    t = s.tensor([3, 40], dtype=dt, low=0, high=3)
    s.case("stable sort with ties, %s" % dt, [t],
           lua="local a, b = x1:sort(2); local c, d = x1:sort(2, true); return a, b, c, d",
           py="a, b = torch.sort(x1, dim=1, stable=True); c, d = torch.sort(x1, dim=1, descending=True, stable=True); return a, b + 1, c, d + 1")
for dt in ("f32", "f16", "bf16"):
    t = s.tensor([2, 50], dtype=dt, low=-2, high=2)
    s.case("sort %s" % dt, [t], lua="return x1:sort(2, true)", py="v, i = torch.sort(x1, dim=1, descending=True, stable=True); return v, i + 1")
ties = s.tensor([12], dtype="f64", values=[1, 0, -0.0, 2, 1, NAN, -INF, 0, NAN, INF, 1, -1])
s.case("NaN sorts above inf, -0.0 equals 0.0 (stable)", [ties],
       lua="local a, b = x1:sort(); local c, d = x1:sort(1, true); return a, b, c, d",
       py="a, b = torch.sort(x1, stable=True); c, d = torch.sort(x1, descending=True, stable=True); return a, b + 1, c, d + 1")
long_row = s.tensor([3000], dtype="f32")
s.case("a long row (the radix path)", [long_row], lua="return x1:sort()", py="v, i = torch.sort(x1, stable=True); return v, i + 1")
s.case("topk of a long row", [long_row], lua="return x1:topk(20)", py="v, i = torch.topk(x1, 20); return v, i + 1")

# cumprod through zeros: PyTorch's formula
z = s.tensor([2, 6], dtype="f64", values=[2, 0, 3, 4, 0.5, 1.5, 0, 1.5, 2, 0, -1, 3])
s.case("cumprod with zeros, gradient", [z], lua="return x1:cumprod(2)", py="return x1.cumprod(1)", grad=True)
s.case("cumsum of integers and bool is i64", [s.tensor([5], dtype="i32", low=-9, high=9), s.tensor([6], dtype="bool")],
       lua="return x1:cumsum(1), x2:cumsum(1), x1:cumprod(1), x1:cumsum(1, {dtype = 'f64'})",
       py="return x1.cumsum(0), x2.cumsum(0), x1.cumprod(0), x1.cumsum(0, dtype=torch.float64)")

# rounding: half to even, decimals; tests of specials
halves = s.tensor([8], dtype="f64", values=[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999, -7.5])
s.case("round half to even", [halves], lua="return x1:round(), x1:floor(), x1:ceil(), x1:trunc()",
       py="return x1.round(), x1.floor(), x1.ceil(), x1.trunc()")
s.case("round with decimals", [s.tensor([6], dtype="f64", low=-100, high=100)],
       lua="return x1:round(2), x1:round{decimals = -1}", py="return x1.round(decimals=2), x1.round(decimals=-1)")
spec = s.tensor([6], dtype="f32", values=[1.0, NAN, INF, -INF, -0.0, 3e38])
s.case("isnan, isinf, isfinite", [spec], lua="return x1:isnan(), x1:isinf(), x1:isfinite()", py="return x1.isnan(), x1.isinf(), x1.isfinite()")
s.case("isnan, isfinite of integers", [s.tensor([4], dtype="i64")], lua="return x1:isnan(), x1:isfinite()", py="return x1.isnan(), x1.isfinite()")
s.case("any and all of floats (NaN is true) and integers", [spec, s.tensor([2, 3], dtype="i32", low=0, high=1)],
       lua="return x1:any(), x1:all(), x2:any(2), x2:all(2)", py="return x1.any(), x1.all(), x2.any(1), x2.all(1)")
s.case("any and all of empty tensors", [s.tensor([0], dtype="f32")], lua="return x1:any(), x1:all()", py="return x1.any(), x1.all()")
s.case("0-d: sort, cumsum", [s.tensor([], dtype="f64")], lua="local v, i = x1:sort(); return v, i, x1:cumsum(1)",
       py="v, i = torch.sort(x1); return v, i + 1, x1.cumsum(0)", grad=True)

# sampling: properties only (the streams differ from PyTorch's)
probs = s.tensor([3, 5], dtype="f64", low=0.1, high=1)
s.case("multinomial without replacement: distinct categories, shape, dtype", [probs],
       lua="local m = nnr.multinomial(x1, 5); return (m:sort(2)), m.dtype == 'i64'",
       py="return torch.arange(1, 6).expand(3, 5), True")
s.case("randperm sorts to 1..n", [], lua="nnr.manual_seed(3); return (nnr.randperm(64):sort())", py="return torch.arange(1, 65)")
s.case("bernoulli of 0 and 1, p broadcast in bernoulli_", [s.tensor([2, 1], dtype="f32", values=[0, 1])],
       lua="return nnr.zeros(2, 5):bernoulli_(x1), nnr.bernoulli(x1:expand(2, 3))",
       py="return x1.expand(2, 5).clone(), x1.expand(2, 3).clone()")

# errors: both sides refuse
e = s.tensor([3, 4])
s.raises("sort: dimension out of range", [e], lua="return x1:sort(3)", py="return torch.sort(x1, 2)")
s.raises("topk: k larger than the dim", [e], lua="return x1:topk(5)", py="return torch.topk(x1, 5)")
s.raises("cumsum: dimension out of range", [e], lua="return x1:cumsum(-3)", py="return x1.cumsum(-3)")
s.raises("multinomial: a negative weight", [s.tensor([3], dtype="f32", values=[0.5, -0.1, 1])],
         lua="return nnr.multinomial(x1, 1)", py="return torch.multinomial(x1, 1)")
s.raises("multinomial: a NaN weight", [s.tensor([3], dtype="f32", values=[0.5, NAN, 1])],
         lua="return nnr.multinomial(x1, 1)", py="return torch.multinomial(x1, 1)")
s.raises("multinomial: a row summing to 0", [s.tensor([2, 2], dtype="f32", values=[1, 1, 0, 0])],
         lua="return nnr.multinomial(x1, 1)", py="return torch.multinomial(x1, 1)")
s.raises("multinomial: more draws than categories without replacement", [s.tensor([3], dtype="f32", values=[1, 1, 1])],
         lua="return nnr.multinomial(x1, 4)", py="return torch.multinomial(x1, 4)")
s.raises("bernoulli: p above 1", [s.tensor([2], dtype="f32", values=[0.5, 1.5])], lua="return nnr.bernoulli(x1)", py="return torch.bernoulli(x1)")
s.raises("randperm: negative n", [], lua="return nnr.randperm(-1)", py="return torch.randperm(-1)")
s.raises("floor of bool", [s.tensor([2], dtype="bool")], lua="return x1:floor()", py="return x1.floor()")
s.run()
