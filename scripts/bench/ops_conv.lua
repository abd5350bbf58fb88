-- nnrun side of the conv1d / transposed-convolution benchmark (issue 16's target: >= 1.0x PyTorch on
-- a small audio shape and a decoder shape); ops_conv_torch.py runs the same workloads in PyTorch.
-- Usage: nnrun scripts/bench/ops_conv.lua [THREADS]. Prints one JSON object: median milliseconds of
-- each forward, and of forward + backward. No timing is asserted anywhere.
local nnr = require "nnr"
local F = nnr.nn.functional
local timing = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts/bench") .. "/ops_timing.lua")
local threads = timing.threads(arg)
local time_ms = timing.time_ms

nnr.manual_seed(1)
local out = { threads = threads }
local onednn_before = tonumber(nnr.backends.cpu.onednn_calls)
local cases = {
  -- name, input shape, weight shape, call
  { "conv1d_audio", { 8, 32, 8000 }, { 64, 32, 9 }, function(x, w) return F.conv1d(x, w, nil, { padding = 4 }) end },
  { "conv_transpose1d_x4", { 8, 64, 1000 }, { 64, 32, 8 }, function(x, w) return F.conv_transpose1d(x, w, nil, { stride = 4, padding = 2 }) end },
  { "conv_transpose2d_7to14", { 32, 64, 7, 7 }, { 64, 32, 3, 3 },
    function(x, w) return F.conv_transpose2d(x, w, nil, { stride = 2, padding = 1, output_padding = 1 }) end },
  { "conv_transpose2d_16to32", { 16, 64, 16, 16 }, { 64, 32, 4, 4 }, function(x, w) return F.conv_transpose2d(x, w, nil, { stride = 2, padding = 1 }) end },
}
for _, c in ipairs(cases) do
  local x, w = nnr.randn(c[2]), nnr.randn(c[3]):mul_(0.1)
  out[c[1] .. "_fwd_ms"] = time_ms(function() return nnr.no_grad(c[4], x, w) end, 3, 15)
  local xg, wg = x:clone():requires_grad_(), w:clone():requires_grad_()
  out[c[1] .. "_fwdbwd_ms"] = time_ms(function()
    xg.grad, wg.grad = nil, nil
    c[4](xg, wg):sum():backward()
  end, 2, 9)
end
-- which path ran: oneDNN's version (or why not) and how many ops it took
out.onednn = nnr.backends.cpu.onednn_version
out.onednn_calls = tonumber(nnr.backends.cpu.onednn_calls) - onednn_before
timing.print_json(out)
