-- A convolutional autoencoder on Fashion-MNIST: what an everyday PyTorch model beyond an MLP or a
-- small CNN needs (ConvTranspose2d, GroupNorm, SiLU, OneCycleLR, EMA weights with AveragedModel).
--   nnrun scripts/train_autoencoder.lua [--epochs N] [--batch-size N] [--lr X] [--limit N] [--seed N]
--                                       [--ema-decay X] [--threads N] [--data DIR] [--save PATH]
-- --lr is OneCycleLR's max_lr for AdamW; --limit trains on the first N training images (all of the
-- test set is always evaluated). It prints the training loss per epoch and the test reconstruction
-- loss (mean squared error per pixel, images in [0, 1]) of the model and of its EMA weights; the last
-- line is a JSON object with those numbers. scripts/autoencoder_torch.py is the same in PyTorch.
local nnr = require "nnr"
local nn, F = nnr.nn, nnr.nn.functional
local fm = dofile((arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts") .. "/fashion_mnist.lua")

local opts = { epochs = 2, batch_size = 128, lr = 0.01, limit = 0, seed = 1, ema_decay = 0.995, threads = 0, data = fm.DEFAULT_DATA }
local numbers = {
  epochs = { integer = true, min = 1, max = 1000 }, batch_size = { integer = true, min = 1, max = 65536 },
  lr = { above = 0, max = 10 }, limit = { integer = true, min = 0 }, seed = { integer = true, min = 0, max = 2 ^ 53 },
  ema_decay = { min = 0, below = 1 }, threads = { integer = true, min = 0, max = 1024 },
}
local args = arg or {}
local i = 1
while i <= #args do
  local a = args[i]
  local key = a:match("^%-%-([%w%-]+)$")
  if a == "--help" or a == "-h" then io.write(io.open(arg[0]):read("*a"):match("^(.-)\nlocal"), "\n"); os.exit(0) end
  key = key and key:gsub("%-", "_")
  if not key or (opts[key] == nil and key ~= "save") then
    error("unexpected argument '" .. a .. "' (see the header of scripts/train_autoencoder.lua)", 0)
  end
  local v = args[i + 1]
  if v == nil then error("--" .. key:gsub("_", "-") .. " needs a value", 0) end
  if numbers[key] then opts[key] = fm.number_option(key, v, numbers[key]) else opts[key] = v end
  i = i + 2
end
if opts.threads > 0 then nnr.set_num_threads(opts.threads) end
nnr.manual_seed(opts.seed)

-- images in [0, 1], [N, 1, 28, 28]
local function images(prefix, limit)
  local x = fm.read_split(opts.data, prefix)
  if limit and limit > 0 and limit < x:size(1) then x = x:narrow(1, 1, limit) end
  return x:float():div_(255):view(-1, 1, 28, 28)
end
local train_x, test_x = images("train", opts.limit), images("t10k")

-- 28x28 -> 14x14 -> 7x7 and back
local function block(conv, channels, groups) return { conv, nn.GroupNorm(groups, channels), nn.SiLU() } end
local layers = {}
for _, part in ipairs {
  block(nn.Conv2d(1, 32, 3, { stride = 2, padding = 1 }), 32, 8),
  block(nn.Conv2d(32, 64, 3, { stride = 2, padding = 1 }), 64, 8),
  block(nn.ConvTranspose2d(64, 32, 3, { stride = 2, padding = 1, output_padding = 1 }), 32, 8),
} do for _, m in ipairs(part) do layers[#layers + 1] = m end end
layers[#layers + 1] = nn.ConvTranspose2d(32, 1, 3, { stride = 2, padding = 1, output_padding = 1 })
layers[#layers + 1] = nn.Sigmoid()
local model = nn.Sequential(layers)

local n = train_x:size(1)
local steps_per_epoch = math.ceil(n / opts.batch_size)
local opt = nnr.optim.AdamW(model:parameters(), { lr = opts.lr, weight_decay = 1e-4 })
local sched = nnr.optim.OneCycleLR(opt, { max_lr = opts.lr, epochs = opts.epochs, steps_per_epoch = steps_per_epoch })
local ema = nnr.optim.swa_utils.AveragedModel(model, { ema_decay = opts.ema_decay })

local function test_loss(m)
  m:eval()
  local total = nnr.no_grad(function()
    local sum = 0
    for s = 1, test_x:size(1), 1000 do
      local x = test_x:narrow(1, s, math.min(1000, test_x:size(1) - s + 1))
      sum = sum + F.mse_loss(m(x), x, { reduction = "sum" }):item()
    end
    return sum
  end)
  m:train()
  return total / test_x:numel()
end

local t0 = nnr.clock()
local train_loss
for epoch = 1, opts.epochs do
  local perm = nnr.tensor(fm.permutation(n, opts.seed, epoch), { dtype = "i64" })
  local sum, count = 0, 0
  for s = 1, n, opts.batch_size do
    local idx = perm:narrow(1, s, math.min(opts.batch_size, n - s + 1))
    local x = train_x:index_select(1, idx)
    local loss = F.mse_loss(model(x), x)
    opt:zero_grad()
    loss:backward()
    opt:step()
    sched:step()
    ema:update_parameters(model)
    sum, count = sum + loss:item() * x:size(1), count + x:size(1)
  end
  train_loss = sum / count
  print(string.format("epoch %d  train loss %.6f  lr %.2e  %.1f s", epoch, train_loss, opt.param_groups[1].lr, nnr.clock() - t0))
end
local seconds = nnr.clock() - t0
local model_loss, ema_loss = test_loss(model), test_loss(ema)
print(string.format("test reconstruction loss: model %.6f  ema %.6f", model_loss, ema_loss))
if opts.save then nnr.save(opts.save, ema.module:state_dict()) end
print(string.format('{"framework": "nnrun", "epochs": %d, "train_images": %d, "train_loss": %.6f, "test_loss": %.6f, "test_loss_ema": %.6f, "seconds": %.2f}',
  opts.epochs, n, train_loss, model_loss, ema_loss, seconds))
