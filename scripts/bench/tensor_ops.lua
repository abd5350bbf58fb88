-- nnrun side of the foundation benchmark (scripts/bench/run.py runs it next
-- to PyTorch): per-op overhead of a small op, large elementwise bandwidth,
-- and f32 matmul against a direct cblas_sgemm call in the same process.
-- Prints one JSON object. Medians over repeats; no timing is asserted.
local nnr = require "nnr"
local ffi = require "ffi"
local clock = nnr.clock

local function median(t)
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

local out = {}

-- 1. a + b on 4-element f32 tensors, from a Lua loop
do
  local a, b = nnr.rand(4), nnr.rand(4)
  local c
  local n, runs = 200000, {}
  for r = 1, 9 do
    local t0 = clock()
    for i = 1, n do c = a + b end
    runs[r] = (clock() - t0) / n * 1e6
  end
  out.small_add_us = median(runs)
end

-- 2. large contiguous f32 elementwise: c = a + b (allocating) and into a preallocated c
do
  local n = 2 ^ 25                                  -- 128 MiB per operand
  local a, b, c = nnr.rand(n), nnr.rand(n), nnr.empty(n)
  local alloc, into = {}, {}
  for r = 1, 4 do local d = a + b end               -- warm up the allocator's cache
  for r = 1, 11 do
    local t0 = clock()
    local d = a + b
    local t1 = clock()
    nnr.binary_out("add", a, b, c)
    local t2 = clock()
    alloc[r] = 12 * n / (t1 - t0) / 1e9
    into[r] = 12 * n / (t2 - t1) / 1e9
  end
  out.add_alloc_gbs = median(alloc)
  out.add_out_gbs = median(into)
  local m = {}
  for r = 1, 11 do
    local t0 = clock()
    local e = a:relu()
    m[r] = 8 * n / (clock() - t0) / 1e9
  end
  out.relu_gbs = median(m)
end

-- 3. 1024x1024 f32 matmul vs cblas_sgemm called directly on the same buffers
do
  ffi.cdef [[
    void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
    char *openblas_get_corename(void);
  ]]
  local blas = ffi.load("libopenblas.so.0")         -- the very library the cpu plugin uses
  local N = 1024
  local a, b = nnr.rand(N, N), nnr.rand(N, N)
  local c = nnr.empty(N, N)
  local pa = ffi.cast("const float *", a:data_ptr())
  local pb = ffi.cast("const float *", b:data_ptr())
  local pc = ffi.cast("float *", c:data_ptr())
  local ours, direct = {}, {}
  for r = 1, 20 do a:matmul(b) end                  -- warm up: threads, and the allocator's cache
  for r = 1, 31 do
    local t0 = clock()
    local d = a:matmul(b)
    local t1 = clock()
    blas.cblas_sgemm(101, 111, 111, N, N, N, 1, pa, N, pb, N, 0, pc, N)
    local t2 = clock()
    ours[r] = 2 * N ^ 3 / (t1 - t0) / 1e9
    direct[r] = 2 * N ^ 3 / (t2 - t1) / 1e9
  end
  out.matmul_gflops = median(ours)
  out.sgemm_gflops = median(direct)
  out.blas_core = ffi.string(blas.openblas_get_corename())
end

out.threads = nnr.get_num_threads()
out.version = nnr.version()
out.luajit = jit.version
local parts = {}
for k, v in pairs(out) do
  parts[#parts + 1] = string.format("%q: %s", k, type(v) == "number" and string.format("%.6g", v) or string.format("%q", v))
end
print("{" .. table.concat(parts, ", ") .. "}")
