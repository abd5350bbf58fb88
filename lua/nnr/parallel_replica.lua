-- Runs inside a replica state of nnr.parallel.DataParallel (core/host/replicas.c): rebuilds this
-- device's replica from the payload (nnr.data.serial) and returns the step function the C side
-- calls, from its own thread, with this device's share of the batch.
local M = {}

function M.start(payload, tensors_ud, ntensors)
  local nnr = require "nnr"
  local binding = require "nnr.binding"
  binding.worker_state()
  local ffi, C = binding.ffi, binding.C
  local spec = require("nnr.data.serial").decode(payload, "DataParallel payload", tensors_ud, ntensors)
  local model, criterion = spec.model, spec.criterion
  local params = model:parameters()

  local function give(out, k, t)
    if t then C.nnr_tensor_retain(t.p); out[k] = t.p end
  end

  -- mode 0: output of the forward (no gradient); 1: forward, weight * criterion, backward
  return function(mode, xp, yp, weight, out_ud)
    local out = ffi.cast("nnr_tensor **", out_ud)
    C.nnr_tensor_retain(ffi.cast("nnr_tensor *", xp))
    local x = binding.own(ffi.cast("nnr_tensor *", xp))
    if mode == 0 then
      local y = nnr.no_grad(function() return model(x) end)
      give(out, 0, y)
      y = nil
      collectgarbage()
      return 0
    end
    C.nnr_tensor_retain(ffi.cast("nnr_tensor *", yp))
    local y = binding.own(ffi.cast("nnr_tensor *", yp))
    if spec.own_grads then for _, p in ipairs(params) do p.grad = nil end end
    local o = model(x)
    local loss = criterion(o, y)
    ;(loss * weight):backward()
    give(out, 0, o:detach())
    local value = loss:item() * weight
    -- this state's garbage is the step's activations and graph: megabytes behind a few small
    -- Lua objects, which its GC would not hurry to collect. The heap is small; a full cycle is cheap.
    o, loss = nil, nil
    collectgarbage()
    return value
  end
end

return M
