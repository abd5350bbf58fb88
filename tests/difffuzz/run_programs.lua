-- The nnrun half of the differential fuzzer (tests/difffuzz/difffuzz.py drives it).
--
--   nnrun tests/difffuzz/run_programs.lua BATCH.lua RESULTS.txt
--
-- BATCH.lua returns a list of programs, written by difffuzz.py:
--   { id = 17, steps = { { code = "v1 = nnr.tensor(...)", outs = { "v1" } }, ... },
--     final = { "v1", "v2", ... },     -- values compared once more after the last step (aliasing)
--     grads = { "v1", ... } }          -- leaves whose .grad is compared (gradient programs)
-- Each step's code is one or more Lua statements over global names (v1, v2, ...) in an environment
-- of its own per program (with nnr); a step that raises ends its program (caught with pcall).
--
-- RESULTS.txt, one record a line, tab-separated, flushed at every program's start and end so
-- that a crash of nnrun leaves the id of the program that was running:
--   P id                         program starts
--   R step name VALUE            a step's output
--   E step message               the step raised (newlines and tabs escaped)
--   F 0 name VALUE               a value after the last step
--   G 0 name VALUE               a leaf's .grad after the last step
--   D id                         program done
-- VALUE is "T dtype sizes strides offset values" for a tensor (sizes and strides comma-separated,
-- values space-separated in %.17g, every dtype read through doubles), "N value" for a Lua number
-- or boolean, "nil", or "O typename" for anything else.
local nnr = require "nnr"
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local batch_path, out_path = arg[1], arg[2]
if not batch_path or not out_path then
  io.stderr:write("usage: nnrun run_programs.lua BATCH.lua RESULTS.txt\n")
  os.exit(2)
end
local programs = dofile(batch_path)
local out = assert(io.open(out_path, "w"))

local fmt = string.format
local function num(v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  return fmt("%.17g", v)
end

local buf, bufn = nil, 0
local function value_text(v)
  if nnr.is_tensor(v) then
    local nd = v:dim()
    local sizes, strides = {}, {}
    for d = 1, nd do
      sizes[d] = tostring(tonumber(C.nnr_tensor_size(v.p, d - 1)))
      strides[d] = tostring(tonumber(C.nnr_tensor_stride(v.p, d - 1)))
    end
    local n = tonumber(C.nnr_tensor_numel(v.p))
    if n > bufn then buf, bufn = ffi.new("double[?]", n), n end
    local vals = {}
    if n > 0 then
      if C.nnr_to_doubles(v.p, buf, n) ~= 0 then
        return "X\t" .. (binding.last_error():gsub("[\t\n]", " "))
      end
      for i = 0, n - 1 do vals[i + 1] = num(buf[i]) end
    end
    return "T\t" .. v.dtype .. "\t" .. table.concat(sizes, ",") .. "\t" .. table.concat(strides, ",") .. "\t" ..
      tostring(tonumber(C.nnr_tensor_offset(v.p))) .. "\t" .. table.concat(vals, " ")
  elseif type(v) == "number" then
    return "N\t" .. num(v)
  elseif type(v) == "boolean" then
    return "N\t" .. (v and "1" or "0")
  elseif v == nil then
    return "nil"
  end
  return "O\t" .. type(v)
end

local function escape(s)
  return (tostring(s):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub("\t", "\\t"))
end

for _, prog in ipairs(programs) do
  out:write("P\t", prog.id, "\n")
  out:flush()
  local env = setmetatable({ nnr = nnr }, { __index = _G })
  local failed = false
  for k, st in ipairs(prog.steps) do
    local f, err = loadstring(st.code, "=step" .. k)
    local ok, e
    if f then
      setfenv(f, env)
      ok, e = pcall(f)
    else
      ok, e = false, "difffuzz: the step does not compile: " .. tostring(err)
    end
    if not ok then
      out:write("E\t", k, "\t", escape(e), "\n")
      failed = true
      break
    end
    for _, name in ipairs(st.outs) do
      out:write("R\t", k, "\t", name, "\t", value_text(rawget(env, name)), "\n")
    end
  end
  if not failed then
    for _, name in ipairs(prog.final or {}) do
      out:write("F\t0\t", name, "\t", value_text(rawget(env, name)), "\n")
    end
    for _, name in ipairs(prog.grads or {}) do
      local t = rawget(env, name)
      local ok, g = pcall(function() return t.grad end)
      out:write("G\t0\t", name, "\t", ok and value_text(g) or ("X\t" .. escape(g)), "\n")
    end
  end
  out:write("D\t", prog.id, "\n")
  out:flush()
  env = nil
end
out:close()
