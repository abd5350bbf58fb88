-- nnr.backends.<plugin>.<option>: settings handed to a backend plugin (plugin ABI 1.2 set_option).
--   nnr.backends.cuda.allow_tf32 = true     -- TF32 tensor cores for f32 matmul and convolution (off by default)
-- Reading gives the last value set from Lua (nil when never set). Unknown plugins or options are errors.
local core = require "nnr.core"
local C = core.C

local values = {}

local function backend(name)
  values[name] = values[name] or {}
  return setmetatable({}, {
    __index = function(_, key) return values[name][key] end,
    __newindex = function(_, key, value)
      local s
      if type(value) == "boolean" then s = value and "1" or "0" else s = tostring(value) end
      core.check(C.nnr_plugin_set_option(name, tostring(key), s))
      values[name][key] = value
    end,
  })
end

return setmetatable({}, { __index = function(t, name)
  local b = backend(name)
  rawset(t, name, b)
  return b
end })
