-- Kernels written in LuaJIT: the code that runs one chunk of a kernel (lua/nnr/kernel.lua builds the
-- call). It runs in the script's state and in the kernel pool's worker states (core/host/kernels.c),
-- which load this file as their bootstrap; it needs nothing but LuaJIT's own libraries.
--
-- A kernel arrives as a plan and the user's function: "<plan>\n<source>". The plan names the kind
-- (map, reduce along a dim, reduce all), the number of iteration dims and each operand ("f32",
-- "i64", ... for a tensor, "s" for a number) and the output's dtype. From it this file writes a Lua
-- loop specialised for that plan (the user's function is an upvalue of the loop, so LuaJIT inlines
-- it into the trace), compiles it once per state and caches it. The loop reads its operands from the
-- blob, an int64 array the Lua side wrote (offsets below), and walks the elements of its chunk with
-- an odometer over the dims, the last dim innermost.
--
-- Blob: [0] the address of the double array (numbers, reduction init, partial results), [1] nd,
-- [2] the number of iteration points, [3 .. 3+nd) sizes; then per tensor operand and the output:
-- address, nd strides (elements), and for reduce-along-dim one more stride (the reduced dim's);
-- last, for reduce-along-dim, the reduced length. Doubles: the numbers in order, then init, then
-- one partial result per chunk (reduce all).
local ffi = require "ffi"

local M = {}

local CTYPE = { f32 = "float", f64 = "double", i8 = "int8_t", u8 = "uint8_t", i32 = "int32_t", i64 = "int64_t", bool = "uint8_t" }
local RANGE = { i8 = { -128, 127 }, u8 = { 0, 255 }, i32 = { -2147483648, 2147483647 }, i64 = { -2 ^ 63, 2 ^ 63 - 1024 } }
M.CTYPE = CTYPE

-- plan: "map|rdim|rall nd op1,op2,... out"
function M.parse_plan(plan)
  local kind, nd, ops, out = plan:match("^(%a+) (%d+) ([%w,]*) (%w+)$")
  if not kind then error("kernel: bad plan '" .. plan .. "'", 0) end
  local list = {}
  for op in ops:gmatch("[^,]+") do list[#list + 1] = op end
  return kind, tonumber(nd), list, out
end

local function load_value(op, p, off)
  if op == "i64" then return ("tonumber(%s[%s])"):format(p, off) end
  if op == "bool" then return ("(%s[%s] ~= 0)"):format(p, off) end
  return ("%s[%s]"):format(p, off)
end

-- the store of value v into the output, with the checks a narrowing store needs
local function store(out, target, v)
  if out == "bool" then
    return ("do local r = %s; %s = (r == true or (type(r) == 'number' and r ~= 0)) and 1 or 0 end"):format(v, target)
  end
  local range = RANGE[out]
  if range then
    return ("do local r = %s; if type(r) ~= 'number' or r ~= floor(r) or r < %.17g or r > %.17g then bad(r, '%s') end; %s = r end")
      :format(v, range[1], range[2], out, target)
  end
  return ("do local r = %s; if type(r) ~= 'number' then bad(r, '%s') end; %s = r end"):format(v, out, target)
end

-- the Lua text of the loop for a plan
function M.generate(plan, source, combine)
  local kind, nd, ops, out = M.parse_plan(plan)
  local L = {}
  local function w(s, ...) L[#L + 1] = select("#", ...) > 0 and s:format(...) or s end
  w("local ffi = require 'ffi'")
  w("local floor, min, tonumber, type, error, tostring = math.floor, math.min, tonumber, type, error, tostring")
  w("local fn = %s", source)
  w("if type(fn) ~= 'function' then error('the kernel source must be a function expression, such as function(x) return x * 2 end', 0) end")
  w("local function bad(r, dt) error('the kernel returned ' .. tostring(r) .. ', which is not a value of the output dtype ' .. dt, 0) end")
  w("return function(B, chunk, nchunks)")
  w("  local D = ffi.cast('double *', B[0])")
  w("  local total = tonumber(B[2])")
  w("  local start, stop = floor(total * chunk / nchunks), floor(total * (chunk + 1) / nchunks)")
  w("  if start >= stop then return end")
  for d = 0, nd - 1 do w("  local n%d = tonumber(B[%d])", d, 3 + d) end
  local at = 3 + nd
  local per = nd + 1 + (kind == "rdim" and 1 or 0)
  local args, scalars, tensors = {}, 0, {}
  for j, op in ipairs(ops) do
    if op == "s" then
      args[#args + 1] = ("c%d"):format(j)
      w("  local c%d = D[%d]", j, scalars)
      scalars = scalars + 1
    else
      tensors[#tensors + 1] = j
      w("  local p%d = ffi.cast('%s *', B[%d])", j, CTYPE[op], at)
      for d = 0, nd - 1 do w("  local s%d_%d = tonumber(B[%d])", j, d, at + 1 + d) end
      if kind == "rdim" then w("  local r%d = tonumber(B[%d])", j, at + 1 + nd) end
      at = at + per
    end
  end
  w("  local po = ffi.cast('%s *', B[%d])", CTYPE[out], at)
  for d = 0, nd - 1 do w("  local so_%d = tonumber(B[%d])", d, at + 1 + d) end
  at = at + per
  if kind == "rdim" then w("  local R = tonumber(B[%d])", at) end
  if kind ~= "map" then w("  local init = D[%d]", scalars) end
  -- the odometer at start
  w("  local rem = start")
  for d = nd - 1, 0, -1 do w("  local i%d = rem %% n%d; rem = (rem - i%d) / n%d", d, d, d, d) end
  local function offsets()
    for _, j in ipairs(tensors) do
      local terms = {}
      for d = 0, nd - 1 do terms[#terms + 1] = ("i%d * s%d_%d"):format(d, j, d) end
      w("    o%d = %s", j, table.concat(terms, " + "))
    end
    local terms = {}
    for d = 0, nd - 1 do terms[#terms + 1] = ("i%d * so_%d"):format(d, d) end
    w("    oo = %s", table.concat(terms, " + "))
  end
  local decl = { "oo" }
  for _, j in ipairs(tensors) do decl[#decl + 1] = "o" .. j end
  w("  local %s = %s", table.concat(decl, ", "), ("0, "):rep(#decl - 1) .. "0")
  w("  do")
  offsets()
  w("  end")
  local last = nd - 1
  if kind == "rall" then w("  local acc = init") end
  w("  local k = start")
  w("  while k < stop do")
  w("    local cnt = min(n%d - i%d, stop - k)", last, last)
  w("    for e = 0, cnt - 1 do")
  local vals = {}
  for j, op in ipairs(ops) do
    if op == "s" then vals[#vals + 1] = ("c%d"):format(j)
    else vals[#vals + 1] = load_value(op, "p" .. j, ("o%d + e * s%d_%d"):format(j, j, last)) end
  end
  if kind == "map" then
    w("      %s", store(out, ("po[oo + e * so_%d]"):format(last), ("fn(%s)"):format(table.concat(vals, ", "))))
  elseif kind == "rall" then
    w("      acc = fn(acc, %s)", table.concat(vals, ", "))
  else
    local rvals = {}
    for j, op in ipairs(ops) do
      if op == "s" then rvals[#rvals + 1] = ("c%d"):format(j)
      else rvals[#rvals + 1] = load_value(op, "p" .. j, ("o%d + e * s%d_%d + q * r%d"):format(j, j, last, j)) end
    end
    w("      local a = init")
    w("      for q = 0, R - 1 do a = fn(a, %s) end", table.concat(rvals, ", "))
    w("      %s", store(out, ("po[oo + e * so_%d]"):format(last), "a"))
  end
  w("    end")
  w("    k = k + cnt")
  w("    i%d = i%d + cnt", last, last)
  w("    if i%d >= n%d and k < stop then", last, last)
  w("      i%d = 0", last)
  for d = nd - 2, 0, -1 do
    w("      i%d = i%d + 1", d, d)
    w("      if i%d >= n%d then i%d = 0", d, d, d)
  end
  for _ = nd - 2, 0, -1 do w("      end") end
  offsets()
  w("    else")
  for _, j in ipairs(tensors) do w("      o%d = o%d + cnt * s%d_%d", j, j, j, last) end
  w("      oo = oo + cnt * so_%d", last)
  w("    end")
  w("  end")
  if kind == "rall" then
    w("  if type(acc) ~= 'number' then error('the reduction gave ' .. tostring(acc) .. ', not a number', 0) end")
    w("  D[%d + chunk] = acc", scalars + 1)
  end
  w("end")
  return table.concat(L, "\n")
end

-- compiled loops, by plan and source
local cache, cached = {}, 0
function M.compile(text)
  local f = cache[text]
  if f then return f end
  local plan, source = text:match("^([^\n]*)\n(.*)$")
  local code = M.generate(plan, source)
  local chunk, err = loadstring(code, "=kernel")
  if not chunk then error("kernel: " .. err, 0) end
  f = chunk()
  if cached > 256 then cache, cached = {}, 0 end      -- bounded: kernels made in a loop must not grow it
  cache[text] = f
  cached = cached + 1
  return f
end

function M.run(text, blob, chunk, nchunks)
  local f = M.compile(text)
  f(ffi.cast("int64_t *", blob), chunk, nchunks)
end

-- the pool's bootstrap: returns the function a worker runs per chunk (nil or an error message)
function M.worker()
  return function(text, blob, chunk, nchunks)
    local ok, err = pcall(M.run, text, blob, chunk, nchunks)
    if not ok then return tostring(err) end
    return nil
  end
end

return M
