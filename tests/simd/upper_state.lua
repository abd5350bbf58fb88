-- After every SIMD kernel family returns, the upper halves of ymm0-15 / zmm0-15 must be clean
-- (VZEROUPPER): while they are dirty every legacy-SSE instruction in the thread
-- pays a merge, and glibc's scalar libm (erff under GELU) ran 30x slower after the int8 AVX-512
-- kernel. XINUSE (XGETBV, ECX = 1, read by tests/simd/xinuse.c) says whether they are.
-- Usage: nnrun tests/simd/upper_state.lua path/to/libtest_xinuse.so
local nnr = require "nnr"
local ffi = require "ffi"
ffi.cdef "int64_t nnr_test_xinuse(void); int64_t nnr_test_xinuse_after_vzeroupper(void);"
local lib = ffi.load(assert(arg[1], "usage: upper_state.lua libtest_xinuse.so"))
-- the upper halves of ymm0-15 and of zmm0-15 (zmm16-31, bit 7, cost legacy SSE nothing: glibc's own
-- string functions use them so as to need no VZEROUPPER)
local DIRTY = 4 + 64
if lib.nnr_test_xinuse() < 0 then print("skip: this CPU cannot report XINUSE"); os.exit(77, true) end
if bit.band(tonumber(lib.nnr_test_xinuse_after_vzeroupper()), DIRTY) ~= 0 then
  print("skip: this CPU reports the upper halves in use right after VZEROUPPER (XINUSE may over-report)")
  os.exit(77, true)
end
nnr.set_num_threads(1)               -- the kernels run in this thread, where XINUSE is read

local pass, fail = 0, 0
local function check(name, fn)
  fn()
  local state = tonumber(lib.nnr_test_xinuse())
  if bit.band(state, DIRTY) == 0 then pass = pass + 1
  else fail = fail + 1; print(string.format("FAIL %s: the upper register state is dirty afterwards (XINUSE 0x%x)", name, state)) end
end

local x, w = nnr.randn(8, 256), nnr.randn(64, 256)
local big = nnr.randn(64, 1024)
check("f32 linear", function() return nnr.nn.functional.linear(x, w) end)
check("f32 matmul 64x1024x64", function() return big:matmul(big:t()) end)
check("softmax", function() return nnr.nn.functional.softmax(big, 2) end)
check("gelu", function() return nnr.nn.functional.gelu(big) end)
check("layer norm", function() return nnr.nn.functional.layer_norm(big, { 1024 }) end)
check("exp", function() return big:exp() end)
check("sum", function() return big:sum() end)
if nnr.quant.available() then
  local q = nnr.quant.dynamic(nnr.nn.Linear(256, 64), nil, { quiet = true })
  for name in pairs(nnr.quant.kernels) do
    if name ~= "best" then
      local ok, m = pcall(nnr.quant.dynamic, nnr.nn.Linear(256, 64), nil, { quiet = true, kernel = name })
      if ok and pcall(m, x) then
        check("int8 linear, " .. name .. " kernel, 8 rows", function() return m(x) end)
        check("int8 linear, " .. name .. " kernel, 1 row", function() return m(x:narrow(1, 1, 1)) end)
      end
    end
  end
  check("int8 linear, best kernel", function() return q(x) end)
end
print(string.format("%d passed, %d failed", pass, fail))
os.exit(fail == 0 and 0 or 1, true)     -- closing the state: its tensors go before the leak check
