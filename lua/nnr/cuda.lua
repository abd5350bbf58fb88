-- nnr.cuda: the cuda backend seen from Lua (docs/cuda.md).
--   nnr.cuda.is_available()        true when the cuda plugin found a GPU
--   nnr.cuda.status()              why not: the plugin's message (CUDA's error text), or nil when available
--   nnr.cuda.device_count()
--   nnr.cuda.get_device_name(i)    0-based local index, as in "cuda:0"
--   nnr.cuda.synchronize(i)        waits for the device's queued work
--   nnr.cuda.memory_stats(i)       {allocated_bytes, peak_bytes, cached_bytes}
--   nnr.cuda.empty_cache()         gives cached blocks of every cuda device back to the driver
local ffi = require "ffi"
local binding = require "nnr.binding"
local C = binding.C

local M = {}

local function plugin_index()
  local i = C.nnr_plugin_find("cuda")
  return i >= 0 and i or nil
end

function M.device_count()
  local i = plugin_index()
  return i and C.nnr_plugin_loaded(i) ~= 0 and C.nnr_plugin_device_count(i) or 0
end

function M.is_available() return M.device_count() > 0 end

function M.status()
  if M.is_available() then return nil end
  local i = plugin_index()
  if not i then return "no cuda plugin (libnnr_cuda.so) was found: build with nvcc on PATH or in /usr/local/cuda" end
  return ffi.string(C.nnr_plugin_message(i))
end

local function device_id(i)
  i = i or 0
  if type(i) ~= "number" then return binding.device_id(i, "cuda") end
  return binding.device_id("cuda:" .. i, "cuda")
end

function M.get_device_name(i)
  local id = device_id(i)
  return ffi.string(C.nnr_device_label(id))
end

function M.synchronize(i) binding.check(C.nnr_synchronize(device_id(i))) end

function M.memory_stats(i)
  local id = device_id(i)
  return {
    allocated_bytes = tonumber(C.nnr_device_live_bytes(id)),
    peak_bytes = tonumber(C.nnr_device_peak_bytes(id)),
    cached_bytes = tonumber(C.nnr_device_cached_bytes(id)),
  }
end

function M.empty_cache()
  for d = 0, C.nnr_device_count() - 1 do
    if ffi.string(C.nnr_device_type(d)) == "cuda" then C.nnr_device_empty_cache(d) end
  end
end

return M
