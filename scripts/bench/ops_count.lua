-- Instructions per tiny op, for callgrind (docs/perf.md): nnrun ops_count.lua OP N runs N calls of OP
-- (add, add_, mul_, relu, view) on 4-element f32 tensors; N = 0 gives start-up alone.
local nnr = require "nnr"
local which, n = arg[1], tonumber(arg[2])
local a, b, c = nnr.rand(4), nnr.rand(4), nnr.rand(4)
local f = ({
  add = function() return a + b end,
  add_ = function() c:add_(b) end,
  mul_ = function() c:mul_(0.5) end,
  relu = function() return a:relu() end,
  view = function() return a:view(2, 2) end,
})[which]
for i = 1, n do f() end
