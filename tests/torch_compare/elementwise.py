"""nnrun against PyTorch: the existing elementwise, reduction and matmul ops on every layout, and the
harness's own self-check (a case that must fail is reported as failing)."""
import harness

s = harness.Suite("elementwise")
for layout in harness.LAYOUTS:
    a = s.tensor([3, 4], layout=layout)
    b = s.tensor([4], layout="strided" if layout == "strided" else "contiguous")
    s.case("add, broadcast, %s" % layout, [a, b], lua="return x1 + x2", py="return x1 + x2", grad=True)
    s.case("mul and sum over dim 2, %s" % layout, [a, b], lua="return (x1 * x2):sum(2)", py="return (x1 * x2).sum(1)", grad=True)
    s.case("tanh and exp, %s" % layout, [a], lua="return x1:tanh(), x1:exp()", py="return x1.tanh(), x1.exp()", grad=True)
    c = s.tensor([4, 5], layout=layout)
    s.case("matmul, %s" % layout, [a, c], lua="return x1:matmul(x2)", py="return x1.matmul(x2)", grad=True)
    s.case("argmax (1-based), %s" % layout, [a], lua="return x1:argmax(2)", py="return x1.argmax(1) + 1")
f32 = s.tensor([5], dtype="f32", values=[1.0, float("nan"), float("inf"), -0.0, -2.5])
s.case("specials through abs", [f32], lua="return x1:abs()", py="return x1.abs()")
s.raises("matmul: inner sizes differ", [s.tensor([2, 3]), s.tensor([2, 3])], lua="return x1:matmul(x2)", py="return x1.matmul(x2)")
s.case("sum of i32 is i64", [s.tensor([6], dtype="i32", low=-50, high=50)], lua="return x1:sum()", py="return x1.sum()")
# the harness itself: each of these differs on purpose and must be reported
t = s.tensor([3, 4], layout="transposed")
s.case("self-check: a value 1e-6 off", [t], lua="return x1 + 1e-6", py="return x1", expect_fail=True)
s.case("self-check: a gradient twice too large", [t], lua="return x1 * x1", py="return x1 * x1.detach()", grad=True, expect_fail=True)
s.case("self-check: dims 1-based vs 0-based", [t], lua="return x1:sum(1)", py="return x1.sum(1)", expect_fail=True)
s.case("self-check: a dtype", [t], lua="return x1:float()", py="return x1", expect_fail=True)
s.case("self-check: an integer off by one", [s.tensor([3], dtype="i64")], lua="return x1 + 1", py="return x1", expect_fail=True)
s.run()
