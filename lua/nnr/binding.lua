-- The FFI binding of libnnr: loads the library, declares its API from the text
-- it embeds (one source of truth: the headers in core/include/nnr/), and holds
-- the helpers every other module uses to turn C failures into Lua errors.
local ffi = require "ffi"

local M = {}

local function load_core()
  ffi.cdef "const char *nnr_cdef_text(void);"
  -- under nnrun the core is linked into the executable; under plain luajit, load it
  local ok = pcall(function() return ffi.C.nnr_cdef_text end)
  if ok then return ffi.C end
  local path = os.getenv("NNR_LIB")
  if path then
    local ok2, lib = pcall(ffi.load, path)
    if not ok2 then error("nnr: cannot load the core library NNR_LIB=" .. path .. " (" .. tostring(lib) .. ")", 0) end
    return lib
  end
  -- the library installed with these modules: <prefix>/share/lua/5.1/nnr/ is beside <prefix>/lib (cmake
  -- --install; Debian's multiarch folder, lib64) or <prefix>/lib/lua/5.1 (a luarocks tree); then the
  -- system's search path
  local prefix = debug.getinfo(1, "S").source:match("^@(.*)/share/lua/5%.1/nnr/binding%.lua$")
  local triplet = ({ x64 = "x86_64-linux-gnu", arm64 = "aarch64-linux-gnu" })[ffi.arch]
  local tried = {}
  local function try(file)
    local f = io.open(file, "rb")
    if not f then return nil end
    f:close()
    tried[#tried + 1] = file
    local ok2, lib = pcall(ffi.load, file)
    if ok2 then return lib end
    -- there, but it does not load (a missing dependency): said, rather than another libnnr from the system
    error("nnr: cannot load " .. file .. ", the core library installed with these modules: " .. tostring(lib), 0)
  end
  if prefix then
    for _, dir in ipairs { "lib/lua/5.1", "lib", triplet and ("lib/" .. triplet), "lib64" } do
      local lib = try(prefix .. "/" .. dir .. "/libnnr.so.0") or try(prefix .. "/" .. dir .. "/libnnr.so")
      if lib then return lib end
    end
  end
  local ok2, lib = pcall(ffi.load, "nnr")
  if ok2 then return lib end
  error("nnr: cannot load the core library libnnr" .. (#tried > 0 and (": tried " .. table.concat(tried, ", ")) or "") ..
        (prefix and (", and nothing beside " .. prefix .. "/share/lua/5.1") or "") .. ", nor the system's (" .. tostring(lib) ..
        "); run under nnrun or set NNR_LIB", 0)
end

local C = load_core()
ffi.cdef((ffi.string(C.nnr_cdef_text()):gsub("const char %*nnr_cdef_text%(void%);", "")))
M.C = C
M.ffi = ffi

C.nnr_init()
if C.nnr_host_ready() == 0 then
  error("nnr: " .. ffi.string(C.nnr_last_error()), 0)
end

function M.last_error()
  return ffi.string(C.nnr_last_error())
end

-- raises the core's current error as a Lua error (no position: the message names the op)
function M.raise()
  error(ffi.string(C.nnr_last_error()), 0)
end

-- A tensor on the Lua side is a handle: a small struct holding the core's
-- pointer. (A bare pointer cdata cannot take t[i]: LuaJIT reserves numeric
-- indexing of pointers for pointer arithmetic.) The struct is Lua's own, not
-- a mirror of any C layout; C functions receive h.p.
ffi.cdef "typedef struct nnr_handle { nnr_tensor *p; } nnr_handle;"
local handle_ct = ffi.typeof("nnr_handle")
M.handle_ct = handle_ct
function M.set_handle_metatable(mt) handle_ct = ffi.metatype("nnr_handle", mt); M.handle_ct = handle_ct end

-- Under nnrun, handles are finalized by a plain C function (nnr.native),
-- much cheaper for the GC to call than an FFI function; plain luajit falls
-- back to a Lua function. A self-test guards the cdata-payload assumption.
local release = function(h) C.nnr_tensor_release(h.p) end
do
  local ok, native = pcall(require, "nnr.native")
  if ok then
    local probe = C.nnr_empty(C.NNR_F32, 0, nil, 0)
    if probe ~= nil then
      if native.address(handle_ct(probe)) == tonumber(ffi.cast("uintptr_t", probe)) then release = native.release end
      C.nnr_tensor_release(probe)
    end
  end
end
local gc_flag = C.nnr_gc_flag()
-- A state beside the script's (a loader's worker, a DataParallel replica: lua/nnr/data/worker.lua,
-- parallel_replica.lua) calls this first: it leaves the process-wide GC flag to the script's state and
-- collects on its own schedule.
function M.worker_state() gc_flag = ffi.new("int32_t[1]") end
-- Every 1024 new handles the GC takes a small incremental step. Otherwise
-- cycles are paced by the Lua heap alone: garbage handles pile up (and
-- LuaJIT's finalizer table with them) for as long as the heap takes to double,
-- and a loop of tiny ops ran 2x slower with a few more modules loaded.
local handles, HANDLE_STEP, STEP_KB = 0, 1024, 64
local OOM = C.NNR_ERR_OOM

-- Takes ownership of a new nnr_tensor* from the core and returns its handle.
-- On NULL: after an out-of-memory failure, collect garbage, drop cached
-- blocks and retry the call once (f and its arguments); otherwise raise. When
-- tensors have grown enough, run the GC (DESIGN.md decision 5): no
-- collectgarbage() in user code.
local function retry(f, ...)
  if f and C.nnr_last_status() == OOM then
    collectgarbage(); collectgarbage()
    C.nnr_empty_cache()
    return f(...)
  end
end

function M.own(p, f, ...)
  if p == nil then
    p = retry(f, ...)
    if p == nil then M.raise() end
  end
  if gc_flag[0] ~= 0 then
    collectgarbage()
    C.nnr_gc_done()
  end
  handles = handles + 1
  if handles >= HANDLE_STEP then
    handles = 0
    collectgarbage("step", STEP_KB)
  end
  return ffi.gc(handle_ct(p), release)
end

-- f(...) (a C function returning a new nnr_tensor*) as an owned handle; after an out-of-memory
-- failure, the GC runs, the caches are dropped and f(...) is called once more (DESIGN.md decision 5).
-- The tensors among the arguments are held across that collection: the caller's own references to
-- them may already be gone (a tail call), and the GC must not free what the retry reads.
local tensor_ptr_ct = ffi.typeof("nnr_tensor *")
local function hold(fn, ...)
  for i = 1, select("#", ...) do
    local x = select(i, ...)
    if type(x) == "cdata" and ffi.istype(tensor_ptr_ct, x) and x ~= nil then fn(x) end
  end
end
function M.call(f, ...)
  local p = f(...)
  if p == nil then
    if C.nnr_last_status() ~= OOM then M.raise() end
    hold(C.nnr_tensor_retain, ...)
    collectgarbage(); collectgarbage()
    C.nnr_empty_cache()
    p = f(...)
    hold(C.nnr_tensor_release, ...)
    if p == nil then M.raise() end
  end
  return M.own(p)
end

function M.check(status)
  if status ~= 0 then M.raise() end
end

-- dtypes ------------------------------------------------------------------
local dtype_ids = {
  f32 = C.NNR_F32, float32 = C.NNR_F32, float = C.NNR_F32,
  f64 = C.NNR_F64, float64 = C.NNR_F64, double = C.NNR_F64,
  f16 = C.NNR_F16, float16 = C.NNR_F16, half = C.NNR_F16,
  bf16 = C.NNR_BF16, bfloat16 = C.NNR_BF16,
  i8 = C.NNR_I8, int8 = C.NNR_I8,
  u8 = C.NNR_U8, uint8 = C.NNR_U8, byte = C.NNR_U8,
  i32 = C.NNR_I32, int32 = C.NNR_I32, int = C.NNR_I32,
  i64 = C.NNR_I64, int64 = C.NNR_I64, long = C.NNR_I64,
  bool = C.NNR_BOOL,
}
M.dtype_names = { [0] = "f32", "f64", "f16", "bf16", "i8", "u8", "i32", "i64", "bool" }
M.default_dtype = C.NNR_F32

function M.dtype_id(d, op)
  if d == nil then return M.default_dtype end
  local id = dtype_ids[d]
  if id == nil then
    error((op or "nnr") .. ": unknown dtype '" .. tostring(d) .. "' (expected f32, f64, f16, bf16, i8, u8, i32, i64 or bool)", 0)
  end
  return id
end

function M.is_dtype(d) return type(d) == "string" and dtype_ids[d] ~= nil end

-- devices -------------------------------------------------------------------
local device_cache = {}

function M.device_id(d, op)
  if d == nil then return 0 end
  local kind = type(d)
  if kind == "number" then
    if d ~= math.floor(d) or d < 0 or d >= C.nnr_device_count() then
      error(string.format("%sno device %s (device numbers are 0..%d; or name one: \"cpu\", \"cuda:0\")", op and op .. ": " or "",
        tostring(d), C.nnr_device_count() - 1), 0)
    end
    return d
  end
  if kind == "table" and d.id then return M.device_id(d.id, op) end
  if kind == "string" then
    local id = device_cache[d]
    if id then return id end
    id = C.nnr_device_find(d)
    if id < 0 then error((op and op .. ": " or "") .. M.last_error(), 0) end
    device_cache[d] = id
    return id
  end
  error((op or "nnr") .. ": expected a device name like \"cpu\", got " .. kind, 0)
end

function M.is_device(d)
  if type(d) == "table" and d.id then return true end
  if type(d) ~= "string" then return false end
  return d == "cpu" or d:match("^%a[%w_]*:%d+$") ~= nil or d:match("^%a[%w_]*$") ~= nil and not dtype_ids[d]
end

return M
