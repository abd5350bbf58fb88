-- The first thing to run: a tour of nnr's tensors.
--   nnrun scripts/demo.lua
local nnr = require "nnr"

print("nnrun " .. nnr.version() .. ", devices:")
for _, d in ipairs(nnr.devices()) do print("  " .. d.name) end

nnr.manual_seed(0)
local x = nnr.randn(4, 3)
print("\nx = nnr.randn(4, 3)"); print(x)
print("\nx:t()  (a view: no copy)"); print(x:t())
print("\nx[2] and x[{-1, 2}]"); print(x[2]); print(x[{ -1, 2 }])
local w = nnr.arange(6):view(3, 2)
print("\nx @ w, with w = nnr.arange(6):view(3, 2)"); print(x:matmul(w))
print("\nbroadcasting: x + nnr.tensor{10, 20, 30}"); print(x + nnr.tensor({ 10, 20, 30 }))
print("\nreductions: x:sum(1), x:max(2), x:softmax(2)")
print(x:sum(1)); print((x:max(2))); print(x:softmax(2))

-- a small least-squares fit by gradient descent, written with tensor ops
local true_w = nnr.tensor({ { 2 }, { -3 }, { 0.5 } })
local X = nnr.randn(256, 3)
local y = X:matmul(true_w) + nnr.randn(256, 1) * 0.01
local est = nnr.zeros(3, 1)
for step = 1, 200 do
  local err = X:matmul(est) - y
  local grad = X:t():matmul(err) * (2 / 256)
  est:sub_(grad * 0.1)
end
print("\nleast squares by gradient descent: true w = [2, -3, 0.5], found")
print(est:view(3))
local big = nnr.rand(1024, 1024)
big:matmul(big)                                 -- warm up OpenBLAS's threads
local t0 = nnr.clock()
local prod = big:matmul(big)
print(string.format("\n1024x1024 f32 matmul: %.1f ms, %.1f GFLOP/s", (nnr.clock() - t0) * 1e3,
  2 * 1024 ^ 3 / (nnr.clock() - t0) / 1e9))
