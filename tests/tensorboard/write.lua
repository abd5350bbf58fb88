-- Writes TensorBoard event files with nnr.tensorboard.SummaryWriter, and expected.json: every value it
-- logged, for read.py to check against what pip's tensorboard reads back. Usage: nnrun write.lua DIR
local nnr = require "nnr"
local dir = assert(arg[1], "usage: write.lua DIR")
nnr.manual_seed(7)
local expected = { scalars = {}, histograms = {}, images = {}, texts = {}, hparams = {} }
local function list(t) local out = {} for i = 1, t:numel() do out[i] = t:reshape(-1)[i] end return out end

local w = nnr.tensorboard.SummaryWriter(dir, { max_queue = 3, flush_secs = 1e6, filename_suffix = ".nnr" })
-- scalars: numbers, a tensor, NaN and infinities, steps out of order, an explicit walltime
local values = { 2.5, 1 / 3, -0.0, 1e-30, 3.4e38, 0 / 0, math.huge, -math.huge, 123456789.125 }
for i, v in ipairs(values) do
  w:add_scalar("loss/train", v, i - 1)
  expected.scalars[#expected.scalars + 1] = { tag = "loss/train", step = i - 1, value = v ~= v and "nan" or v == math.huge and "inf" or v == -math.huge and "-inf" or v }
end
local t = nnr.randn(1):reshape({})
w:add_scalar("loss/tensor", t, 100, 1700000000.5)
expected.scalars[#expected.scalars + 1] = { tag = "loss/tensor", step = 100, value = t:item(), walltime = 1700000000.5 }
w:add_scalar("lr", 0.1, 7)
w:add_scalar("lr", 0.05, 3)
expected.scalars[#expected.scalars + 1] = { tag = "lr", step = 7, value = 0.1 }
expected.scalars[#expected.scalars + 1] = { tag = "lr", step = 3, value = 0.05 }
-- histograms: the default (TensorFlow's buckets), a count of buckets, a table, one repeated value
local lin = nnr.nn.Linear(20, 30)
local cases = { { "fc.weight", lin.weight, nil }, { "fc.bias", lin.bias, 7 }, { "table", { 1, 2, 2, 3, 3, 3, -4.5 }, 4 },
                { "constant", nnr.full({ 10 }, 0.25), 3 }, { "normal", nnr.randn(5000) * 3, "tensorflow" } }
for i, c in ipairs(cases) do
  w:add_histogram(c[1], c[2], i * 10, c[3])
  local vals = type(c[2]) == "table" and c[2] or list(c[2]:double())
  expected.histograms[#expected.histograms + 1] = { tag = c[1], step = i * 10, values = vals, bins = c[3] or "tensorflow" }
end
-- images: CHW float, HWC u8, HW, RGBA
local imgs = { { "chw", nnr.rand(3, 5, 7), "CHW" }, { "hwc", nnr.randint(0, 256, { 6, 4, 3 }):to("u8"), "HWC" },
               { "hw", nnr.rand(9, 3), "HW" }, { "rgba", nnr.rand(4, 2, 2), "CHW" } }
for i, c in ipairs(imgs) do
  w:add_image(c[1], c[2], i, nil, c[3])
  local x = c[2]
  if c[3] == "HW" then x = x:unsqueeze(1) elseif c[3] == "HWC" then x = x:permute(3, 1, 2) end
  if x.dtype ~= "u8" then x = (x:clamp(0, 1) * 255):round():to("u8") end
  expected.images[#expected.images + 1] = { tag = c[1], step = i, channels = x:size(1), height = x:size(2), width = x:size(3),
                                            pixels = list(x:contiguous():to("i64")) }
end
-- text, with UTF-8 and Markdown
local text = "epoch 3: **loss 0.25** — accuracy 91% ✓\nsecond line"
w:add_text("notes", text, 3)
expected.texts[1] = { tag = "notes", step = 3, text = text }
w:add_hparams({ lr = 0.01, optimizer = "adamw", batch_norm = true, layers = 3 }, { ["hparam/accuracy"] = 0.875, ["hparam/loss"] = 0.3125 },
              nil, "trial1")
expected.hparams = { run = "trial1", hparams = { lr = 0.01, optimizer = "adamw", batch_norm = true, layers = 3 },
                     metrics = { ["hparam/accuracy"] = 0.875, ["hparam/loss"] = 0.3125 } }
w:flush()
w:close()
w:close()     -- a second close does nothing
expected.path = w.path
local f = assert(io.open(dir .. "/expected.json", "w"))
f:write(require("nnr.json").encode(expected))
f:close()
print("wrote " .. w.path)
