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

-- the median of runs samples after warm calls; a call under 1 ms is repeated within each sample to
-- fill about 1 ms and the sample divided (a lone call of a few microseconds measured the clock and
-- the caches the previous benchmark left cold more than the op); ops_timing_torch.py does the same
function M.time_ms(fn, warm, runs)
  for _ = 1, warm or 2 do fn() end
  local t0 = nnr.clock()
  fn()
  local first = nnr.clock() - t0
  local reps = first < 1e-3 and math.min(1000, math.ceil(1e-3 / math.max(first, 1e-6))) or 1
  local t = {}
  for r = 1, runs or 11 do
    t0 = nnr.clock()
    for _ = 1, reps do fn() end
    t[r] = (nnr.clock() - t0) * 1e3 / reps
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
