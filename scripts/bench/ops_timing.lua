-- What the ops_*.lua benchmark scripts share (loaded with dofile beside them): arg[1] as the thread
-- count, the median time of a call, and the one JSON line each prints. No timing is asserted.
local nnr = require "nnr"
local M = {}

-- sets the thread count from the script's first argument (when given)
function M.threads(arg)
  local n = tonumber(arg and arg[1])
  if n then nnr.set_num_threads(n) end
  return nnr.get_num_threads()
end

-- the median time of fn() in milliseconds over runs calls, after warm calls (threads, the cache)
function M.time_ms(fn, warm, runs)
  for _ = 1, warm or 2 do fn() end
  local t = {}
  for r = 1, runs or 11 do
    local t0 = nnr.clock()
    fn()
    t[r] = (nnr.clock() - t0) * 1e3
  end
  table.sort(t)
  return t[math.floor(#t / 2) + 1]
end

-- out (names to numbers or strings) as one JSON object on stdout, keys sorted
function M.print_json(out)
  local keys, parts = {}, {}
  for key in pairs(out) do keys[#keys + 1] = key end
  table.sort(keys)
  for _, key in ipairs(keys) do
    local v = out[key]
    parts[#parts + 1] = string.format(type(v) == "number" and "%q: %.6g" or "%q: %q", key, v)
  end
  print("{" .. table.concat(parts, ", ") .. "}")
end

return M
