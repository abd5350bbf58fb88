-- nnr.backends.<plugin>.<option>: settings handed to a backend plugin (plugin ABI 1.2 set_option).
--   nnr.backends.cuda.allow_tf32 = true     -- TF32 tensor cores for f32 matmul and convolution (off by default)
--   nnr.backends.cpu.amx = false            -- bf16 matmuls without AMX tiles (on by default where the cpu has them)
-- Reading asks the plugin (get_option; "1"/"0" read as true/false: nnr.backends.cpu.amx is true only where
-- AMX runs), and otherwise gives the last value set from Lua (nil when never set).
-- Setting an unknown plugin or option is an error.
local ffi = require "ffi"
local binding = require "nnr.binding"
local C = binding.C
local buf = ffi.new("char[256]")

local values = {}

local function backend(name)
  values[name] = values[name] or {}
  return setmetatable({}, {
    __index = function(_, key)
      if C.nnr_plugin_get_option(name, tostring(key), buf, 256) == 0 then
        local v = ffi.string(buf)
        if v == "1" then return true elseif v == "0" then return false end
        return v
      end
      return values[name][key]
    end,
    __newindex = function(_, key, value)
      local s
      if type(value) == "boolean" then s = value and "1" or "0" else s = tostring(value) end
      binding.check(C.nnr_plugin_set_option(name, tostring(key), s))
      values[name][key] = value
    end,
  })
end

return setmetatable({}, { __index = function(t, name)
  local b = backend(name)
  rawset(t, name, b)
  return b
end })
