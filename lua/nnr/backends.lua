-- nnr.backends.<plugin>.<option>: settings handed to a backend plugin (plugin ABI set_option and
-- get_option), and what the core knows of each backend.
--   nnr.backends.cuda.allow_tf32 = true     -- TF32 tensor cores for f32 matmul and convolution (off by default)
--   nnr.backends.cpu.amx = false            -- bf16 matmuls without AMX tiles (on by default where the cpu has them)
--   nnr.backends.cpu.onednn = false         -- batched matmul and transposed convolution without oneDNN
-- Reading asks the plugin: the value comes back as the plugin's string, except that "true" and
-- "false" (how plugins report a boolean) read as booleans. A plugin that cannot answer is an error,
-- as is setting an unknown plugin or option. A boolean is sent as "true" or "false", anything else
-- with tostring.
--   nnr.backends.fallback_counts()  -- {op name = calls that ran on the host backend because a backend lacked the op}
--   nnr.backends.list()             -- every plugin: name, version, kind, ABI, loaded, devices, path, message
local ffi = require "ffi"
local binding = require "nnr.binding"
local C = binding.C
local buf = ffi.new("char[512]")

local function backend(name)
  return setmetatable({}, {
    __index = function(_, key)
      if C.nnr_plugin_get_option(name, tostring(key), buf, 512) ~= 0 then binding.raise() end
      local v = ffi.string(buf)
      if v == "true" then return true elseif v == "false" then return false end
      return v
    end,
    __newindex = function(_, key, value)
      local s
      if type(value) == "boolean" then s = value and "true" or "false" else s = tostring(value) end
      binding.check(C.nnr_plugin_set_option(name, tostring(key), s))
    end,
  })
end

local M = {}

function M.fallback_counts()
  local counts, op = {}, C.nnr_op_next(0)
  while op ~= 0 do
    local n = tonumber(C.nnr_fallback_count(op))
    if n > 0 then counts[ffi.string(C.nnr_op_name(op))] = n end
    op = C.nnr_op_next(op)
  end
  return counts
end

local KINDS = { [0] = "backend", [1] = "extension" }

function M.list()
  local list = {}
  for i = 0, C.nnr_plugin_count() - 1 do
    local abi = C.nnr_plugin_abi(i)
    list[#list + 1] = {
      name = ffi.string(C.nnr_plugin_name(i)),
      version = ffi.string(C.nnr_plugin_version(i)),
      kind = KINDS[C.nnr_plugin_kind_of(i)],
      abi = abi >= 0 and string.format("%d.%d", bit.rshift(abi, 16), bit.band(abi, 0xffff)) or nil,
      loaded = C.nnr_plugin_loaded(i) ~= 0,
      devices = C.nnr_plugin_device_count(i),
      path = ffi.string(C.nnr_plugin_path(i)),
      message = ffi.string(C.nnr_plugin_message(i)),
    }
  end
  return list
end

return setmetatable(M, { __index = function(t, name)
  local b = backend(name)
  rawset(t, name, b)
  return b
end })
