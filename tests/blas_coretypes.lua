-- f32 matmul, batched matmul and convolutions (2-d, 1-d, transposed; OpenBLAS sgemm inside) against f64, under whatever OpenBLAS kernel
-- family OPENBLAS_CORETYPE names: tests/blas_coretypes.sh runs it for every class this CPU can run,
-- so the lower classes' paths (the cpu plugin's choice on an older CPU) are tested on any machine.
local nnr = require "nnr"
nnr.manual_seed(7)
local function relerr(got, ref) return (got:double() - ref):abs():max():item() / ref:abs():max():item() end
local worst = 0
for _, s in ipairs { { 67, 129, 45 }, { 256, 256, 256 }, { 1, 300, 7 } } do
  local a, b = nnr.randn(s[1], s[2]), nnr.randn(s[2], s[3])
  worst = math.max(worst, relerr(nnr.matmul(a, b), nnr.matmul(a:double(), b:double())))
  worst = math.max(worst, relerr(nnr.matmul(a, b:t():contiguous():t()), nnr.matmul(a:double(), b:double())))
end
local F = nnr.nn.functional
local x, w = nnr.randn(4, 3, 17, 15), nnr.randn(8, 3, 3, 3)
worst = math.max(worst, relerr(F.conv2d(x, w, nil, { padding = 1 }), F.conv2d(x:double(), w:double(), nil, { padding = 1 })))
-- a batch of products, one single-threaded gemm each (plugins/cpu/matmul.c)
local p, q = nnr.randn(8, 33, 17), nnr.randn(8, 17, 29)
worst = math.max(worst, relerr(p:matmul(q), p:double():matmul(q:double())))
-- 1-d convolutions a tile at a time (plugins/cpu/conv1d.c), forward and transposed
local s1, w1 = nnr.randn(2, 5, 700), nnr.randn(6, 5, 7)
worst = math.max(worst, relerr(F.conv1d(s1, w1, nil, { padding = 3 }), F.conv1d(s1:double(), w1:double(), nil, { padding = 3 })))
local wt = nnr.randn(5, 4, 8)
worst = math.max(worst, relerr(F.conv_transpose1d(s1, wt, nil, { stride = 4, padding = 2 }),
  F.conv_transpose1d(s1:double(), wt:double(), nil, { stride = 4, padding = 2 })))
print(string.format("OPENBLAS_CORETYPE=%s: worst relative error against f64 %.2e", os.getenv("OPENBLAS_CORETYPE") or "(detected)", worst))
if worst > 1e-5 then error("f32 products disagree with f64", 0) end
