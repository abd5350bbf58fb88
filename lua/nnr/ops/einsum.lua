-- nnr.einsum(equation, operands...): Einstein summation as PyTorch's, composed from views,
-- index_select (diagonals), sums and matmul, so it has gradients.
--
-- Each operand first loses its repeated subscripts (a diagonal: "ii->i") and the subscripts that
-- appear nowhere else (summed). The operands are then contracted left to right, two at a time, each
-- pair as ONE batched matmul: A is permuted to [batch..., A-only..., contracted...] and B to
-- [batch..., contracted..., B-only...], both reshaped to [batch..., M, K] and [batch..., K, N]. The
-- permutes are views and matmul takes transposed operands as they are, so "bhqd,bhkd->bhqk" copies
-- nothing and runs at batched-gemm speed. Subscripts of size 1 broadcast against any size, and so do
-- the dimensions that "..." stands for.
local T = require "nnr.tensor"
local U = require "nnr.ops.util"
local shape_str = U.shape_str
local type, concat = type, table.concat

local M = { methods = {}, functions = {}, functional = {} }

local function fail(eq, msg) error("einsum: " .. msg .. " (equation '" .. eq .. "')", 0) end

-- one term of the equation -> a list of letters with "..." at most once
local function parse_term(eq, term, what)
  local labels, i, ellipsis = {}, 1, false
  while i <= #term do
    local c = term:sub(i, i)
    if c:match("%a") then
      labels[#labels + 1] = c
      i = i + 1
    elseif term:sub(i, i + 2) == "..." then
      if ellipsis then fail(eq, what .. " '" .. term .. "' has more than one '...'") end
      ellipsis = true
      labels[#labels + 1] = "..."
      i = i + 3
    else
      fail(eq, "invalid subscript '" .. c .. "' in " .. what .. " '" .. term ..
        "' (subscripts are the letters a-z and A-Z, and one '...' per term)")
    end
  end
  return labels, ellipsis
end

local function prod(sizes, from, to)
  local p = 1
  for i = from, to do p = p * sizes[i] end
  return p
end

-- the diagonal of dims a < b (equal sizes) of x: b is dropped, the diagonal is the last dim
local function diagonal(x, a, b)
  local nd = x:dim()
  local perm = {}
  for d = 1, nd do if d ~= a and d ~= b then perm[#perm + 1] = d end end
  perm[#perm + 1] = a; perm[#perm + 1] = b
  x = x:permute(perm)
  local s = x:size()
  local n = s[nd]
  s[nd] = nil; s[nd - 1] = n * n
  x = x:reshape(s)
  return x:index_select(nd - 1, T.arange(1, n * n + 1, n + 1, { dtype = "i64", device = x.device }))
end

-- positions of a label in a list
local function find(list, l)
  for i = 1, #list do if list[i] == l then return i end end
end

-- sums out the labels of x not in `keep` (a set); returns x, labels
local function sum_unneeded(x, labels, keep)
  local dims, rest = {}, {}
  for i, l in ipairs(labels) do
    if keep[l] then rest[#rest + 1] = l else dims[#dims + 1] = i end
  end
  if #dims == 0 then return x, labels end
  return x:sum(dims), rest
end

-- x reshaped to sizes, untouched when it has them already (no reshape call at all on the common path)
local function reshaped(x, sizes)
  local s = x:size()
  if #s == #sizes then
    local same = true
    for i = 1, #s do if s[i] ~= sizes[i] then same = false; break end end
    if same then return x end
  end
  return x:reshape(sizes)
end

-- contracts A and B over their common labels not in `keep`: one (batched) matmul
local function contract(A, la, B, lb, keep)
  local inA, inB = {}, {}
  for i, l in ipairs(la) do inA[l] = i end
  for i, l in ipairs(lb) do inB[l] = i end
  -- a contracted label of size 1 on one side and n on the other: sum the other side first
  local sa, sb = A:size(), B:size()
  for l, i in pairs(inA) do
    local j = inB[l]
    if j and not keep[l] then
      if sa[i] == 1 and sb[j] > 1 then B = B:sum(j, true); sb = B:size() end
      if sb[j] == 1 and sa[i] > 1 then A = A:sum(i, true); sa = A:size() end
    end
  end
  local batch, afree, contr, bfree = {}, {}, {}, {}
  for _, l in ipairs(la) do
    if inB[l] then
      if keep[l] then batch[#batch + 1] = l else contr[#contr + 1] = l end
    else
      afree[#afree + 1] = l
    end
  end
  for _, l in ipairs(lb) do if not inA[l] then bfree[#bfree + 1] = l end end
  local pa, pb = {}, {}
  for _, l in ipairs(batch) do pa[#pa + 1] = inA[l]; pb[#pb + 1] = inB[l] end
  for _, l in ipairs(afree) do pa[#pa + 1] = inA[l] end
  for _, l in ipairs(contr) do pa[#pa + 1] = inA[l] end
  for _, l in ipairs(contr) do pb[#pb + 1] = inB[l] end
  for _, l in ipairs(bfree) do pb[#pb + 1] = inB[l] end
  local nb = #batch
  local ap, bp = A:permute(pa), B:permute(pb)
  local as, bs = ap:size(), bp:size()
  local a3, b3 = {}, {}
  for i = 1, nb do a3[i] = as[i]; b3[i] = bs[i] end
  local M_ = prod(as, nb + 1, nb + #afree)
  local K = prod(as, nb + #afree + 1, #as)
  local N = prod(bs, nb + #contr + 1, #bs)
  a3[nb + 1], a3[nb + 2] = M_, K
  b3[nb + 1], b3[nb + 2] = K, N
  local r = reshaped(ap, a3):matmul(reshaped(bp, b3))     -- [batch..., M, N], batch dims broadcast
  local rs, labels = {}, {}
  local s = r:size()
  for i = 1, nb do rs[i] = s[i]; labels[i] = batch[i] end
  for i, l in ipairs(afree) do rs[#rs + 1] = as[nb + i]; labels[#labels + 1] = l end
  for i, l in ipairs(bfree) do rs[#rs + 1] = bs[nb + #contr + i]; labels[#labels + 1] = l end
  return r:reshape(rs), labels
end

-- each operand's labels, "..." spelled out as ".1" .. ".E" aligned from the right (E: the most dims
-- any "..." stands for), with every rank and size checked; returns lists, the count of each label, E
local function operand_labels(eq, terms, ops)
  local E, parsed = 0, {}
  for i, term in ipairs(terms) do
    local labels, ell = parse_term(eq, term, "operand " .. i .. "'s subscripts")
    local nd = ops[i]:dim()
    local named = #labels - (ell and 1 or 0)
    if (ell and nd < named) or (not ell and nd ~= named) then
      fail(eq, "operand " .. i .. " has shape " .. shape_str(ops[i]:size()) .. " (" .. nd .. " dimensions) but its subscripts '" ..
        term .. "' name " .. named .. (ell and " or more" or ""))
    end
    parsed[i] = { labels = labels, ell = ell and nd - named or nil }
    if ell and nd - named > E then E = nd - named end
  end
  local count, sizes, first_seen, lists = {}, {}, {}, {}
  for i, p in ipairs(parsed) do
    local list = {}
    for _, l in ipairs(p.labels) do
      if l == "..." then
        for k = E - p.ell + 1, E do list[#list + 1] = "." .. k end
      else
        list[#list + 1] = l
      end
    end
    local s, here = ops[i]:size(), {}
    for d, l in ipairs(list) do
      count[l] = (count[l] or 0) + 1
      local n = s[d]
      if here[l] and here[l] ~= n then
        fail(eq, "subscript '" .. l .. "' is repeated in operand " .. i .. " for dimensions of sizes " .. here[l] .. " and " .. n ..
          " (a diagonal needs equal sizes)")
      end
      here[l] = n
      if sizes[l] == nil or sizes[l] == 1 then
        if sizes[l] == nil then first_seen[l] = i end
        sizes[l] = n
      elseif n ~= 1 and n ~= sizes[l] then
        local name = l:sub(1, 1) == "." and "the dimensions of '...'" or "subscript '" .. l .. "'"
        fail(eq, name .. " has size " .. sizes[l] .. " in operand " .. first_seen[l] .. " and " .. n .. " in operand " .. i ..
          " (sizes must match, or be 1 to broadcast)")
      end
    end
    lists[i] = list
  end
  return lists, count, E
end

-- the output's labels: as written after "->", or (implicit) "..." then the letters that appear once,
-- in alphabetical order
local function output_labels(eq, rhs, count, E)
  local out = {}
  if rhs then
    local labels = parse_term(eq, rhs, "the output")
    local seen = {}
    for _, l in ipairs(labels) do
      if l == "..." then
        for k = 1, E do out[#out + 1] = "." .. k end
      else
        if not count[l] then fail(eq, "output subscript '" .. l .. "' does not appear in the operands") end
        if seen[l] then fail(eq, "output subscript '" .. l .. "' appears more than once") end
        seen[l] = true
        out[#out + 1] = l
      end
    end
    return out
  end
  for k = 1, E do out[#out + 1] = "." .. k end
  local once = {}
  for l, c in pairs(count) do if c == 1 and l:sub(1, 1) ~= "." then once[#once + 1] = l end end
  table.sort(once)
  for _, l in ipairs(once) do out[#out + 1] = l end
  return out
end

-- the diagonal of every label repeated in one operand (sizes checked already); returns x, its labels
local function take_diagonals(x, list)
  for a = 1, #list do
    for b = a + 1, #list do
      if list[a] == list[b] then
        local rest = {}
        for d = 1, #list do if d ~= a and d ~= b then rest[#rest + 1] = list[d] end end
        rest[#rest + 1] = list[a]
        return take_diagonals(diagonal(x, a, b), rest)
      end
    end
  end
  return x, list
end

-- the set of labels in set and in list
local function with(set, list)
  local k = {}
  for l in pairs(set) do k[l] = true end
  for _, l in ipairs(list) do k[l] = true end
  return k
end

function M.functions.einsum(eq, ...)
  if type(eq) ~= "string" then error("einsum: the first argument must be the equation (a string), got " .. type(eq), 0) end
  local ops = { ... }
  if #ops == 1 and type(ops[1]) == "table" and not U.is_tensor(ops[1]) then ops = ops[1] end
  if #ops == 0 then fail(eq, "no operands given") end
  for i = 1, #ops do U.tensor("einsum", ops[i], "operand " .. i) end
  local e = eq:gsub("%s", "")
  local lhs, rhs = e, nil
  local arrow = e:find("->", 1, true)
  if arrow then lhs, rhs = e:sub(1, arrow - 1), e:sub(arrow + 2) end
  local terms = {}
  for term in (lhs .. ","):gmatch("([^,]*),") do terms[#terms + 1] = term end
  if #terms ~= #ops then
    fail(eq, #terms .. " operand term" .. (#terms == 1 and "" or "s") .. " for " .. #ops .. " operand" .. (#ops == 1 and "" or "s"))
  end
  local lists, count, E = operand_labels(eq, terms, ops)
  local out = output_labels(eq, rhs, count, E)
  local in_out = with({}, out)
  -- per operand: diagonals of repeated labels, then sums of the labels needed nowhere else
  local xs = {}
  for i = 1, #ops do
    local x, list = take_diagonals(ops[i], lists[i])
    local keep = in_out
    for j = 1, #ops do if j ~= i then keep = with(keep, lists[j]) end end
    xs[i], lists[i] = sum_unneeded(x, list, keep)
  end
  -- contractions, left to right: a label survives a step while the output or a later operand has it
  local acc, la = xs[1], lists[1]
  for i = 2, #ops do
    local keep = in_out
    for j = i + 1, #ops do keep = with(keep, lists[j]) end
    local b, lb
    acc, la = sum_unneeded(acc, la, with(keep, lists[i]))
    b, lb = sum_unneeded(xs[i], lists[i], with(keep, la))
    acc, la = contract(acc, la, b, lb, keep)
  end
  acc, la = sum_unneeded(acc, la, in_out)
  -- into the output's order
  local perm, ordered = {}, true
  for k, l in ipairs(out) do
    perm[k] = find(la, l)
    if perm[k] ~= k then ordered = false end
  end
  if ordered then return acc end
  return acc:permute(perm)
end

return M
