-- nnr.onnx without Python (the sanitizer build runs it too): export then load gives the same module;
-- damaged files are clear errors. tests/onnx_test.sh checks against PyTorch, onnx and onnxruntime.
local nnr = require "nnr"
local nn = nnr.nn

local function tmp() return os.tmpname() end
local function write(path, bytes) local f = assert(io.open(path, "wb")); f:write(bytes); f:close() end
local function read(path) local f = assert(io.open(path, "rb")); local s = f:read("*a"); f:close(); return s end
local function fails(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok)
  assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
end

describe("nnr.onnx", function()
  it("lets the collector take each value after its last reader, during the forward", function()
    local layers = {}
    for i = 1, 24 do layers[i] = nn.Tanh() end
    local path = tmp()
    nnr.onnx.export(nn.Sequential(unpack(layers)), nnr.randn(2, 8), path)
    local g = nnr.onnx.load(path)
    os.remove(path)
    -- each Tanh node, before it runs, counts the earlier nodes' results still alive after a full
    -- collection: its own operand only, where every value lived to the end of the forward before
    local O = require "nnr.onnx_ops"
    local tanh, results, most = O.ops.Tanh, setmetatable({}, { __mode = "v" }), 0
    O.ops.Tanh = function(node, x, graph)
      collectgarbage(); collectgarbage()
      local alive = 0
      for i = 1, 24 do if results[i] then alive = alive + 1 end end
      most = math.max(most, alive)
      local y = tanh(node, x, graph)
      results[#results + 1] = y
      return y
    end
    local x = nnr.randn(3, 8)
    local ok, y = pcall(function() return nnr.no_grad(function() return g(x) end) end)
    O.ops.Tanh = tanh
    assert(ok, tostring(y))
    assert.are.equal(1, most)
    local ref = x
    for _ = 1, 24 do ref = ref:tanh() end
    assert.are.equal(0, (y - ref):abs():max():item())
  end)

  it("exports a model and loads it back: the same outputs at any batch, trainable", function()
    nnr.manual_seed(3)
    local m = nn.Sequential(nn.Conv2d(1, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                            nn.Softmax(2))
    local path = tmp()
    nnr.onnx.export(m, nnr.randn(2, 1, 8, 8), path)
    local g = nnr.onnx.load(path)
    m:eval()
    local x = nnr.randn(3, 1, 8, 8)
    assert.are.equal(0, (g(x) - m(x)):abs():max():item())
    assert.is_truthy(tostring(g):find("OnnxGraph", 1, true))
    assert.are.equal(m:num_parameters(), g:num_parameters())       -- (batch-norm statistics are buffers)
    g:train()
    local loss = g(x):sum()
    loss:backward()
    assert.is_truthy(g:parameters()[1].grad)
    os.remove(path)
  end)

  it("refuses damaged files with the file's name and the fault", function()
    local path = tmp()
    nnr.onnx.export(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), nnr.randn(2, 4), path)
    local bytes = read(path)
    for _, cut in ipairs { 1, 7, math.floor(#bytes / 2), #bytes - 1 } do
      write(path, bytes:sub(1, cut))
      local ok, err = pcall(nnr.onnx.load, path)
      assert.is_false(ok)
      assert.is_truthy(tostring(err):find("onnx " .. path .. ": ", 1, true), tostring(err))
    end
    write(path, "")
    fails("onnx " .. path .. ": not an ONNX model (it has no graph)", nnr.onnx.load, path)
    write(path, bytes:gsub("Gemm", "Gemx"))
    fails("unsupported operators: Gemx (node 'Gemx_1')", nnr.onnx.load, path)
    os.remove(path)
    fails("onnx /nonexistent.onnx: No such file or directory", nnr.onnx.load, "/nonexistent.onnx")
    fails("onnx /tmp: not a regular file", nnr.onnx.load, "/tmp")
    fails("onnx.load: path must be a path", nnr.onnx.load, 3)
  end)

  it("export names what it cannot record", function()
    local Custom = nn.Module:extend("Custom")
    function Custom:__init() nn.Module.__init(self); self:add_module("lin", nn.Linear(4, 4)) end
    function Custom:forward(x) return self.lin(x * 2) end
    fails("the input of lin (Linear) was computed outside the model's modules", nnr.onnx.export, Custom(), nnr.randn(1, 4), tmp())
    fails("onnx.export: opset must be", nnr.onnx.export, nn.Linear(2, 2), nnr.randn(1, 2), tmp(), { opset = 9 })
    fails("onnx.export: unknown option 'batch'", nnr.onnx.export, nn.Linear(2, 2), nnr.randn(1, 2), tmp(), { batch = 1 })
  end)
end)
