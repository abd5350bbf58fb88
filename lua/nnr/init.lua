-- nnr: the Lua package of nnrun.   local nnr = require "nnr"
local binding = require "nnr.binding"
local T = require "nnr.tensor"
local ffi, C = binding.ffi, binding.C

local nnr = {}
for k, v in pairs(T) do nnr[k] = v end
nnr.Tensor = T.methods

nnr.float32, nnr.float64, nnr.float16, nnr.bfloat16 = "f32", "f64", "f16", "bf16"
nnr.int8, nnr.uint8, nnr.int32, nnr.int64, nnr.bool = "i8", "u8", "i32", "i64", "bool"

function nnr.version() return ffi.string(C.nnr_version()) end
function nnr.dtype_size(d) return C.nnr_dtype_size(binding.dtype_id(d, "dtype_size")) end
nnr.is_dtype = binding.is_dtype

-- gradient recording -----------------------------------------------------------
local function with_grad_mode(on, fn, ...)
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn) and getmetatable(fn).__call) then
    error((on and "enable_grad" or "no_grad") .. ": expected a function to run, got " .. type(fn), 0)
  end
  local prev = C.nnr_set_grad_enabled(on and 1 or 0)
  local results = { pcall(fn, ...) }
  C.nnr_set_grad_enabled(prev)
  if not results[1] then error(results[2], 0) end
  return unpack(results, 2, table.maxn(results))
end
-- nnr.no_grad(fn, ...): runs fn with recording off and returns its results
function nnr.no_grad(fn, ...) return with_grad_mode(false, fn, ...) end
function nnr.enable_grad(fn, ...) return with_grad_mode(true, fn, ...) end
-- returns the previous setting
function nnr.set_grad_enabled(on) return C.nnr_set_grad_enabled(on and 1 or 0) ~= 0 end
function nnr.is_grad_enabled() return C.nnr_is_grad_enabled() ~= 0 end
nnr.autograd = require "nnr.autograd"
local serialize = require "nnr.serialize"
nnr.save, nnr.load = serialize.save, serialize.load
nnr.save_checkpoint, nnr.load_checkpoint = serialize.save_checkpoint, serialize.load_checkpoint
nnr.load_idx = serialize.load_idx

function nnr.set_default_dtype(d)
  local id = binding.dtype_id(d, "set_default_dtype")
  if id ~= C.NNR_F32 and id ~= C.NNR_F64 then error("set_default_dtype: expected f32 or f64, got " .. tostring(d), 0) end
  binding.default_dtype = id
end
function nnr.get_default_dtype() return binding.dtype_names[binding.default_dtype] end

-- devices and plugins ------------------------------------------------------------
local Device = {}
Device.__index = Device
Device.__tostring = function(d) return d.name end

-- nnr.device("cuda:1") -> {id=, name=, type=, index=, label=, host_memory=, total_memory=, compute_units=, model=}
-- (the last four as the device's plugin declares them; 0 or "" where it declares nothing)
local props = ffi.new("nnr_device_props")
function nnr.device(spec)
  local id = binding.device_id(spec, "device")
  binding.check(C.nnr_device_props_of(id, props))
  return setmetatable({
    id = id,
    name = ffi.string(C.nnr_device_name(id)),
    type = ffi.string(C.nnr_device_type(id)),
    index = C.nnr_device_local_index(id),
    label = ffi.string(C.nnr_device_label(id)),
    host_memory = C.nnr_device_host_memory(id) ~= 0,
    total_memory = tonumber(props.total_memory),
    compute_units = props.compute_units,
    model = ffi.string(props.model),
  }, Device)
end

function nnr.devices()
  local list = {}
  for i = 0, C.nnr_device_count() - 1 do list[#list + 1] = nnr.device(i) end
  return list
end

-- every plugin seen: name, kind ("backend"/"extension"), abi ("1.4"), loaded, devices, path, message
function nnr.plugins() return require("nnr.backends").list() end

-- a device's memory: what its plugin reports free and in total (nil where it does not say), and what
-- the caching allocator holds: live (tensors), cached (kept for reuse), peak (since the last reset)
local free_b, total_b = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
function nnr.device_memory(device)
  local id = binding.device_id(device or "cpu", "device_memory")
  binding.check(C.nnr_device_memory_info(id, free_b, total_b))
  local function known(v) v = tonumber(v); return v >= 0 and v or nil end
  return { free = known(free_b[0]), total = known(total_b[0]), live = tonumber(C.nnr_device_live_bytes(id)),
           cached = tonumber(C.nnr_device_cached_bytes(id)), peak = tonumber(C.nnr_device_peak_bytes(id)) }
end

-- the peak of nnr.device_memory() starts again from what is live now (with nnr.empty_cache first, a
-- measurement that follows sees its own allocations)
function nnr.reset_peak_memory() C.nnr_reset_peak_bytes() end

function nnr.synchronize(device) binding.check(C.nnr_synchronize(binding.device_id(device))) end
-- wall-clock seconds (monotonic)
nnr.clock = C.nnr_clock
function nnr.set_num_threads(n) C.nnr_set_num_threads(require("nnr.check").integer("set_num_threads", "n", n, 1, 1024)) end
function nnr.get_num_threads() return C.nnr_get_num_threads() end

function nnr.memory_stats()
  return {
    live_bytes = tonumber(C.nnr_live_bytes()),
    peak_bytes = tonumber(C.nnr_peak_bytes()),
    cached_bytes = tonumber(C.nnr_cached_bytes()),
  }
end
function nnr.empty_cache() C.nnr_empty_cache() end

-- nnr.generate(model, prompt, opts): sampled continuations of a language model (lua/nnr/generate.lua)
function nnr.generate(model, prompt, opts) return require("nnr.generate").generate(model, prompt, opts) end

-- nnr.autocast("bf16", fn, ...): fn with mixed precision (lua/nnr/amp.lua, docs/cuda.md)
function nnr.autocast(dtype, fn, ...) return require("nnr.amp").autocast(dtype, fn, ...) end

-- submodules load on first use (nnr.nn, nnr.optim, ...); nnr._submodules lists them (the REPL completes them)
local SUBMODULES = { "nn", "optim", "data", "profiler", "cuda", "backends", "amp", "quant", "prune", "parallel", "check", "kernel", "text",
                     "models", "tensorboard", "logging", "repl", "plot", "json", "jupyter", "train", "onnx" }
local is_submodule = {}
for _, k in ipairs(SUBMODULES) do is_submodule[k] = true end
rawset(nnr, "_submodules", SUBMODULES)
setmetatable(nnr, { __index = function(t, k)
  if is_submodule[k] then
    local m = require("nnr." .. k)
    rawset(t, k, m)
    return m
  end
  if type(k) == "string" then
    local names = require("nnr.names")
    local known = names.names_of(t)
    for _, s in ipairs(SUBMODULES) do known[s] = true end
    names.unknown("nnr", k, known)
  end
end })

require("nnr.ops").install(nnr)   -- tensor ops composed in Lua (lua/nnr/ops/)
return nnr
