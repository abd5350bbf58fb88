-- Out of memory in the caching allocator (core/base/allocator.c).
--   nnrun tests/faults/oom.lua message   an impossible allocation: the error says how much, on which device;
--                                        the GC flag is raised; the process goes on
--   nnrun tests/faults/oom.lua reclaim   under an address-space limit (setrlimit, as `ulimit -v` does) an
--                                        allocation that needs the memory of a cached block gets it: the
--                                        cache is freed and the allocation retried
--   nnrun tests/faults/oom.lua control   the same with the first block still in use: it fails, with the
--                                        message (so the limit is what makes `reclaim` interesting)
--   nnrun tests/faults/oom.lua gc        the first block unreachable but not yet collected: an op whose
--                                        result needs its memory runs the GC and retries once, and succeeds
-- Prints "ok: ..." and exits 0, or prints the failure and exits 1.
local nnr = require "nnr"
local ffi = require "ffi"
local C = require("nnr.binding").C
local mode = arg[1]
local MiB = 2 ^ 20

local function fail(msg) print("FAIL: " .. msg); os.exit(1) end

if mode == "message" then
  local ok, err = pcall(nnr.empty, 2 ^ 40)
  if ok then fail("a 4 TiB tensor was allocated") end
  local want = "out of memory: cannot allocate 4398046511104 bytes on cpu (4.0 TiB; "
  if not tostring(err):find(want, 1, true) then fail("message: " .. tostring(err)) end
  if C.nnr_gc_flag()[0] == 0 then fail("the GC flag was not raised after the failure") end
  if (nnr.ones(3) + 1):sum():item() ~= 6 then fail("the process cannot go on") end
  print("ok: " .. err)
  return
end

if mode ~= "reclaim" and mode ~= "control" and mode ~= "gc" then fail("usage: oom.lua message|reclaim|control|gc") end
if os.getenv("NNR_MEMCHECK") then     -- ASan and valgrind reserve terabytes of address space: no RLIMIT_AS fits
  print("ok: skipped under a memory checker (NNR_MEMCHECK=" .. os.getenv("NNR_MEMCHECK") .. "): an address-space limit cannot apply")
  return
end

ffi.cdef [[
struct nnr_rlimit { unsigned long cur, max; };
int setrlimit(int resource, const struct nnr_rlimit *r);
]]
local RLIMIT_AS = 9
local function vm_size()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmSize:%s+(%d+)")
    if kb then return tonumber(kb) * 1024 end
  end
end
-- start every thread (pool, BLAS) first: they reserve address space of their own
local _ = nnr.randn(256, 256):matmul(nnr.randn(256, 256)):sum():item()
collectgarbage(); collectgarbage()
local limit = vm_size() + 300 * MiB
if C.setrlimit(RLIMIT_AS, ffi.new("struct nnr_rlimit", { limit, limit })) ~= 0 then fail("setrlimit failed") end

local a = nnr.empty(120 * MiB / 4)          -- a 128 MiB block
if mode == "gc" then
  a = nil                                    -- garbage, but nothing has collected it
  local ok, b = pcall(function() return nnr.ones(1):expand(200 * MiB / 4):clone() end)   -- an op, not a creation
  if not ok then fail("the op that needed the unreachable block's memory failed: " .. tostring(b)) end
  if b:numel() ~= 200 * MiB / 4 or b[1] ~= 1 then fail("the op's result is wrong") end
  print(string.format("ok: a 200 MiB op result under a %d MiB address-space limit after the GC freed an unreachable 128 MiB tensor",
    math.floor(limit / MiB)))
elseif mode == "reclaim" then
  a = nil
  collectgarbage(); collectgarbage()        -- back in the cache, not to the system
  local cached = nnr.memory_stats().cached_bytes
  if cached < 120 * MiB then fail(string.format("the freed block is not cached (%d bytes cached)", cached)) end
  local ok, b = pcall(nnr.empty, 200 * MiB / 4)   -- 200 MiB more: fits only without the cached 128
  if not ok then fail("the allocation that needed the cached memory failed: " .. tostring(b)) end
  local after = nnr.memory_stats().cached_bytes
  if after ~= 0 then fail(string.format("the cache still holds %d bytes", after)) end
  print(string.format("ok: 200 MiB allocated under a %d MiB address-space limit after freeing %d MiB of cached blocks",
    math.floor(limit / MiB), math.floor(cached / MiB)))
else
  local ok, err = pcall(nnr.empty, 200 * MiB / 4)
  if ok then fail("200 MiB more fit with the first block live: the limit does not bind") end
  if not tostring(err):find("out of memory: cannot allocate 209715200 bytes on cpu (200.0 MiB; 128.0 MiB live in tensors there",
    1, true) then fail("message: " .. tostring(err)) end
  local _ = a
  print("ok: " .. err)
end
