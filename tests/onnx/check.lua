-- nnr.onnx.load against PyTorch (tests/onnx_test.sh): the models make_models.py exported give PyTorch's
-- outputs; an imported model trains, moves, quantizes and prunes; each hostile file of hostile.py is its
-- clear error.   nnrun check.lua MODELS_DIR HOSTILE_DIR
local models_dir, hostile_dir = arg[1], arg[2]
local pass, fail = 0, 0
local function check(name, ok, detail)
  if ok then pass = pass + 1 else fail = fail + 1; print("FAIL: " .. name .. (detail and (": " .. detail) or "")) end
end
local function reference(name)
  local f = assert(io.open(models_dir .. "/" .. name .. ".json"))
  local ref = nnr.json.decode(f:read("*a"))
  f:close()
  return nnr.tensor(ref.input[2]):reshape(ref.input[1]), nnr.tensor(ref.output[2]):reshape(ref.output[1]), ref.opset
end

for _, name in ipairs { "mlp", "cnn_bn", "lstm", "transformer", "resnet18" } do
  local ok, err = pcall(function()
    local m = nnr.onnx.load(models_dir .. "/" .. name .. ".onnx")
    local x, want, opset = reference(name)
    local y = nnr.no_grad(function() return m(x) end)
    local d = (y - want):abs():max():item()
    check(string.format("%s (opset %d): PyTorch's output within 1e-4 (max |diff| %.3g)", name, opset, d), d <= 1e-4)
    print(string.format("%-12s opset %d, %d parameters, max |diff| from PyTorch %.3g", name, opset, m:num_parameters(), d))
    -- on another device (a second cpu device, NNR_CPU_DEVICES=2, takes the paths a GPU would): the same outputs
    if pcall(nnr.device, "cpu:1") then
      local moved = nnr.onnx.load(models_dir .. "/" .. name .. ".onnx"):to("cpu:1")
      local y1 = nnr.no_grad(function() return moved(x:to("cpu:1")) end)
      check(name .. ": on cpu:1", y1.device == "cpu:1" and (y1:to("cpu") - y):abs():max():item() == 0)
    end
    -- a batch of 5 (the batch dimension is dynamic): each row as it is alone
    local x5 = nnr.cat({ x, x, x:narrow(1, 1, 1) }, 1)
    local y5 = nnr.no_grad(function() return m(x5) end)
    check(name .. ": batch 5", (y5:narrow(1, 1, 2) - y):abs():max():item() <= 1e-5)
  end)
  check(name .. " loads and runs", ok, tostring(err))
end

-- trainable: its initializers are parameters, one SGD step lowers the loss on a fixed batch
do
  local m = nnr.onnx.load(models_dir .. "/mlp.onnx"):train()
  local x = reference("mlp")
  local target = nnr.tensor({ 3, 7 }, { dtype = "i64" })
  local opt = nnr.optim.SGD(m:parameters(), { lr = 0.1 })
  local F = nnr.nn.functional
  local before = F.cross_entropy(m(x), target)
  opt:zero_grad(); before:backward(); opt:step()
  local after = F.cross_entropy(m(x), target):item()
  check("the imported mlp trains (loss " .. before:item() .. " -> " .. after .. ")", after < before:item())
  check("its Gemms are nn.Linear children (" .. #m:parameters() .. " parameters)", tostring(m):find("Linear") ~= nil)
  local sd = m:state_dict()
  local m2 = nnr.onnx.load(models_dir .. "/mlp.onnx")
  m2:load_state_dict(sd)
  check("state_dict round trip", (m2(x) - m(x)):abs():max():item() == 0)
  local q = nnr.quant.dynamic(m:eval())
  local dq = (q(x) - m(x)):abs():max():item()
  check("nnr.quant.dynamic on an imported model (max |diff| " .. dq .. ")", dq < 0.05)
  local pairs_ = {}
  for _, mod in ipairs(m:modules()) do if getmetatable(mod) == nnr.nn.Linear then pairs_[#pairs_ + 1] = { mod, "weight" } end end
  nnr.prune.global_unstructured(pairs_, 0.5)
  check("nnr.prune on an imported model", nnr.prune.sparsity(m) > 0.3)
end

-- hostile files: each a clear error naming the file and what is wrong
local cases = {
  { "truncated.onnx", "the protobuf is truncated" }, { "text.onnx", "the protobuf is malformed" },
  { "absurd_dims.onnx", "initializer 'w' has an impossible shape (2 dimensions, the first 1099511627776)" },
  { "negative_dim.onnx", "impossible dimension -4" }, { "short_initializer.onnx", "holds 8 bytes of data for its shape's 64" },
  { "few_values.onnx", "holds 2 values for a shape of 16" },
  { "cycle.onnx", "node 'first' (Add) uses 'b', which no graph input, initializer or earlier node makes (the graph has a cycle" },
  { "twice.onnx", "node 'two' (Relu) makes 'y', which already has a value" },
  { "unsupported.onnx", "unsupported operators: Foo (nodes 'f1', 'f2'), Bar (node 'b1')" },
  { "old_opset.onnx", "operator set 9; nnrun reads 13 to" },
  { "external_escape.onnx", "external data '../outside.bin' lies outside the model's folder" },
  { "external_symlink.onnx", "external data 'link.bin' lies outside the model's folder" },
  { "external_absolute.onnx", "must be a path relative to the model's folder" },
  { "external_missing.onnx", "external data nowhere.bin: No such file or directory" },
  { "deep.onnx", "graphs or types nest more than 64 deep" },
  { "missing.onnx", "missing.onnx: No such file or directory" },
}
for _, c in ipairs(cases) do
  local path = hostile_dir .. "/" .. c[1]
  local ok, err = pcall(nnr.onnx.load, path)
  check(c[1] .. " is refused: " .. c[2], not ok and tostring(err):find(c[2], 1, true) ~= nil and tostring(err):find(path, 1, true) ~= nil,
        ok and "it loaded" or tostring(err))
end
local ok, m = pcall(nnr.onnx.load, hostile_dir .. "/external_ok.onnx")
check("external data inside the folder loads", ok and (m(nnr.ones(1, 4)) - nnr.tensor({ { 24, 28, 32, 36 } })):abs():max():item() == 0, tostring(m))
local okn, mn = pcall(nnr.onnx.load, hostile_dir .. "/newest_opset.onnx")
check("the newest onnx's operator set (" .. (okn and mn.opset or "?") .. ") loads and runs",
      okn and (mn(nnr.ones(1, 4)) - nnr.tensor({ { 24, 28, 32, 36 } })):abs():max():item() == 0, tostring(mn))
local ok2, err2 = pcall(nnr.onnx.load, nil)
check("a path that is not a string", not ok2 and tostring(err2):find("onnx.load: path must be a path", 1, true) ~= nil, tostring(err2))
-- nnr.onnx.export: the training issue's models and a model of the other exportable layers, written with
-- the example's and another batch's outputs for tests/onnx/ort_check.py (onnx.checker, onnxruntime); each
-- loads back into nnrun with the same outputs
local export_dir = arg[3]
if export_dir then
  local fm = dofile(arg[0]:gsub("tests/onnx/check.lua$", "") .. "scripts/fashion_mnist.lua")
  local nn = nnr.nn
  local function save_json(path, t) local f = assert(io.open(path, "w")); f:write(nnr.json.encode(t)); f:close() end
  local function flat(t) return { t:size(), t:reshape(-1):to("f64"):totable() } end
  local models = {
    mlp = { function() return fm.build_model("mlp") end, { 1, 28, 28 } },
    cnn = { function() return fm.build_model("cnn") end, { 1, 28, 28 } },
    cnn_bn = { function() return fm.build_model("cnn-bn") end, { 1, 28, 28 } },
    layers = { function()
      return nn.Sequential(nn.Conv2d(3, 6, 3, { stride = 2, padding = 1 }), nn.BatchNorm2d(6), nn.ELU(), nn.AvgPool2d(2), nn.LeakyReLU(0.2),
        nn.MaxPool2d(2, { stride = 1 }), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(),
        nn.Dropout(0.3), nn.Tanh(), nn.Linear(8, 4), nn.LogSoftmax(2))
    end, { 3, 16, 16 } },
  }
  for _, name in ipairs { "mlp", "cnn", "cnn_bn", "layers" } do
    local ok, err = pcall(function()
      nnr.manual_seed(7)
      local m = models[name][1]()
      for _, mod in ipairs(m:modules()) do        -- batch-norm statistics that are not 0 and 1
        if mod.running_mean then mod.running_mean:uniform_(-0.5, 0.5); mod.running_var:uniform_(0.5, 1.5) end
      end
      local s = models[name][2]
      local x = nnr.randn(2, s[1], s[2], s[3])
      local path = export_dir .. "/" .. name .. ".onnx"
      nnr.onnx.export(m, x, path)
      m:eval()
      local cases = {}
      for _, b in ipairs { 2, 5 } do
        local xb = b == 2 and x or nnr.randn(b, s[1], s[2], s[3])
        local y = nnr.no_grad(function() return m(xb) end)
        cases[#cases + 1] = { input = flat(xb), output = flat(y) }
        local back = nnr.onnx.load(path)
        local d = (back(xb) - y):abs():max():item()
        check(string.format("export %s: loads back with the same outputs at batch %d (max |diff| %.3g)", name, b, d), d <= 1e-6)
      end
      save_json(export_dir .. "/" .. name .. ".json", { cases = cases })
    end)
    check("export " .. name, ok, tostring(err))
  end
  -- the language models (nnr.models.RecurrentLM: embedding, 2-layer LSTM or GRU, head; nnr.models.GPT),
  -- batch and length dynamic, ids 1-based as nnrun's
  for _, cell in ipairs { "lstm", "gru", "gpt" } do
    local ok, err = pcall(function()
      nnr.manual_seed(11)
      local m = cell == "gpt" and nnr.models.GPT { vocab_size = 30, context = 8, d_model = 16, n_head = 2, n_layer = 2 }
                or nnr.models.RecurrentLM { vocab_size = 30, cell = cell, hidden = 16, num_layers = 2 }
      local path = export_dir .. "/" .. cell .. "_lm.onnx"
      nnr.onnx.export(m, nnr.randint(1, 31, { 2, 7 }), path, { dynamic = { "batch", "seq" } })
      m:eval()
      local cases = {}
      for _, bt in ipairs { { 2, 7 }, { 3, 4 } } do
        local ids = nnr.randint(1, 31, bt)
        local y = nnr.no_grad(function() return m(ids) end)
        cases[#cases + 1] = { input = flat(ids), output = flat(y), dtype = "int64" }
        local d = (nnr.onnx.load(path)(ids) - y):abs():max():item()
        check(string.format("export %s_lm: loads back with the same outputs at %dx%d (max |diff| %.3g)", cell, bt[1], bt[2], d), d <= 1e-6)
      end
      save_json(export_dir .. "/" .. cell .. "_lm.json", { cases = cases })
    end)
    check("export " .. cell .. "_lm", ok, tostring(err))
  end
  local bad = nn.Sequential(nn.Linear(4, 4), nn.PixelShuffle(2))
  local okb, errb = pcall(nnr.onnx.export, bad, nnr.randn(1, 4), export_dir .. "/bad.onnx")
  check("export of a layer with no ONNX form names it", not okb and tostring(errb):find("no ONNX form for PixelShuffle (2)", 1, true), tostring(errb))
  local okp, errp = pcall(nnr.onnx.export, nn.Linear(4, 4), nnr.randn(1, 4), "/nonexistent/m.onnx")
  check("export to a folder that does not exist", not okp and tostring(errp):find("/nonexistent/m.onnx", 1, true), tostring(errp))
end
print(string.format("%d passed, %d failed", pass, fail))
os.exit(fail == 0 and 0 or 1, true)      -- (closing the state: its tensors freed, as leak checks want)
