-- Runs an ONNX model in nnrun (nnr.onnx.load, docs/onnx.md).
--
--   nnrun scripts/onnx_run.lua MODEL.onnx [--int8] [--bench] [--batch N] [--shape D,D,...] [--iters N]
--         [--threads N] [--data DIR] [--limit N] [--seed N] [--metrics FILE] [--quiet]
--
-- A model whose input takes Fashion-MNIST images ([batch, 1, 28, 28] or [batch, 784]) is evaluated on the
-- 10,000 test images (Debian's dataset-fashion-mnist, or --data DIR; --limit N: the first N) and the test
-- accuracy printed: the argmax of its output against the labels. --bench (or a model of other inputs) times
-- it instead on seeded random inputs of the model's declared shape, the batch dimension --batch (1) and any
-- other named dimension given by --shape (the whole input shape, batch included): the median of --iters (50)
-- runs after min(20, --iters / 2) warm-up runs, as microseconds per batch and samples per second. --int8 runs the model
-- quantized by nnr.quant.dynamic (int8 weights per channel, int8 activations per row) for both.
-- --metrics FILE appends {"model", "int8", "accuracy" | "batch", "median_us", "samples_per_s"} per run.
local nnr = require "nnr"
local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "scripts")
local lm = dofile(dir .. "/charlm.lua")                -- parse
local fm = dofile(dir .. "/fashion_mnist.lua")         -- load_split, DEFAULT_DATA

local function parse_args(argv)
  local path = argv[1]
  if path == nil or path:match("^%-%-") then
    if path == "--help" then lm.parse({ "--help" }, {}, {}, {}, {}, arg[0]) end
    error("give the model: nnrun scripts/onnx_run.lua MODEL.onnx [options]", 0)
  end
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  local int = function(min, max) return { integer = true, min = min, max = max or 2 ^ 31 - 1 } end
  local opts = lm.parse(rest, { batch = 1, iters = 50, data = fm.DEFAULT_DATA, seed = 1 },
    { batch = int(1), iters = int(1, 1e6), threads = int(1, 1024), limit = int(1), seed = int(0, 2 ^ 53) },
    { int8 = true, bench = true, quiet = true }, { shape = true, data = true, metrics = true }, arg[0] or "scripts/onnx_run.lua")
  opts.model = path
  if opts.shape then
    local dims = {}
    for d in (opts.shape .. ","):gmatch("([^,]*),") do
      local n = tonumber(d)
      if not n or n < 1 or n % 1 ~= 0 or n > 2 ^ 31 then error("--shape must be whole numbers >= 1 separated by commas, got '" .. opts.shape .. "'", 0) end
      dims[#dims + 1] = n
    end
    opts.dims = dims
  end
  if opts.metrics then nnr.check.writable("--metrics", opts.metrics, true) end
  return opts
end

-- the input's shape: --shape, else the declared one with the batch dimension --batch (a named first one)
local function input_shape(opts, v)
  if opts.dims then return opts.dims end
  local shape = {}
  for i, d in ipairs(v.shape or {}) do
    if type(d) == "number" and d > 0 then shape[i] = d
    elseif i == 1 then shape[i] = opts.batch
    else error(string.format("the model's input '%s' has a dimension '%s' nnrun cannot guess: give --shape", v.name, tostring(d)), 0) end
  end
  if #shape == 0 then error("the model's input '" .. v.name .. "' declares no shape: give --shape", 0) end
  if not opts.dims and type((v.shape or {})[1]) == "number" and opts.batch ~= 1 then shape[1] = opts.batch end
  return shape
end

local function is_fashion(v)
  local s = v.shape or {}
  return (#s == 4 and s[2] == 1 and s[3] == 28 and s[4] == 28) or (#s == 2 and s[2] == 784)
end

local function accuracy(model, opts, v)
  local x, y = fm.load_split(opts.data, "t10k")
  if opts.limit then x, y = x:narrow(1, 1, math.min(opts.limit, x:size(1))), y:narrow(1, 1, math.min(opts.limit, y:size(1))) end
  if #v.shape == 2 then x = x:reshape(x:size(1), 784) end
  local correct = 0
  nnr.no_grad(function()
    for i = 1, x:size(1), 256 do
      local n = math.min(256, x:size(1) - i + 1)
      local out = model(x:narrow(1, i, n))
      correct = correct + out:argmax(2):eq(y:narrow(1, i, n)):sum():item()
    end
  end)
  return correct / x:size(1), x:size(1)
end

local function bench(model, opts, v)
  local shape = input_shape(opts, v)
  nnr.manual_seed(opts.seed)
  local x = (v.dtype == "i64" or v.dtype == "i32") and nnr.ones(shape, { dtype = v.dtype }) or nnr.randn(shape)
  local times, warm = {}, math.min(20, math.max(2, math.floor(opts.iters / 2)))
  nnr.no_grad(function()
    for i = 1, warm + opts.iters do
      local t0 = nnr.clock()
      model(x)
      if i > warm then times[#times + 1] = nnr.clock() - t0 end
    end
  end)
  table.sort(times)
  local med = times[math.floor((#times + 1) / 2)]
  return med * 1e6, shape[1] / med, shape
end

local function main(argv)
  local opts = parse_args(argv)
  if opts.threads then nnr.set_num_threads(opts.threads) end
  local model = nnr.onnx.load(opts.model)
  if #model.inputs ~= 1 then error(string.format("%s has %d inputs; onnx_run.lua feeds models of one", opts.model, #model.inputs), 0) end
  local v = model.inputs[1]
  if opts.int8 then model = nnr.quant.dynamic(model) end
  local kind = opts.int8 and "int8" or "fp32"
  local record = { model = opts.model, int8 = opts.int8 == true }
  if not opts.bench and is_fashion(v) then
    local acc, n = accuracy(model, opts, v)
    record.accuracy = acc
    if not opts.quiet then print(string.format("%s (%s): test accuracy %.4f on %d Fashion-MNIST images", opts.model, kind, acc, n)) end
  else
    local us, rate, shape = bench(model, opts, v)
    record.batch, record.median_us, record.samples_per_s = shape[1], us, rate
    if not opts.quiet then
      print(string.format("%s (%s): input %s, %.1f us per batch (median of %d), %.0f samples/s, %d threads", opts.model, kind,
        nnr.shape_str(shape), us, opts.iters, rate, nnr.get_num_threads()))
    end
  end
  if opts.metrics then
    local f = assert(io.open(opts.metrics, "a"))
    f:write(nnr.json.encode(record), "\n")
    f:close()
  end
end

main(arg)
