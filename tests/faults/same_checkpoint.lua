-- Compares two checkpoints of scripts/train_fashion_mnist.lua: every tensor (model, optimizer state)
-- bit for bit, and the epoch. Exits non-zero, naming the first difference, unless they are the same.
--   nnrun tests/faults/same_checkpoint.lua a.safetensors b.safetensors
local nnr = require "nnr"
local a, am = nnr.load(arg[1])
local b, bm = nnr.load(arg[2])
local n = 0
for name, t in pairs(a) do
  local u = b[name]
  if not u then io.stderr:write(arg[2], " lacks ", name, "\n"); os.exit(1) end
  if t.dtype ~= u.dtype or nnr.shape_str(t:size()) ~= nnr.shape_str(u:size()) then
    io.stderr:write(name, ": ", t.dtype, " ", nnr.shape_str(t:size()), " vs ", u.dtype, " ", nnr.shape_str(u:size()), "\n"); os.exit(1)
  end
  if t:numel() > 0 and t:double():ne(u:double()):sum():item() ~= 0 then
    io.stderr:write(name, " differs: max |a - b| = ", (t:double() - u:double()):abs():max():item(), "\n"); os.exit(1)
  end
  n = n + 1
end
for name in pairs(b) do if not a[name] then io.stderr:write(arg[1], " lacks ", name, "\n"); os.exit(1) end end
for _, k in ipairs { "nnr:n:epoch", "nnr:s:model_kind", "nnr:n:scheduler/last_epoch" } do
  if am[k] ~= bm[k] then io.stderr:write(k, ": ", tostring(am[k]), " vs ", tostring(bm[k]), "\n"); os.exit(1) end
end
print(string.format("same: %d tensors, epoch %s", n, tostring(am["nnr:n:epoch"])))
