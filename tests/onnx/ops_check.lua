-- One-node models of tests/onnx/ops.py: nnr.onnx.load runs each and gives onnxruntime's outputs
-- (within 1e-5 relative to the values' scale; integers exactly).   nnrun ops_check.lua DIR
local dir = arg[1]
local pass, fail = 0, 0
local DT = { float32 = "f32", int64 = "i64", bool = "bool" }
for name in io.lines(dir .. "/cases.txt") do
  local ok, err = pcall(function()
    local f = assert(io.open(dir .. "/" .. name .. ".json"))
    local ref = nnr.json.decode(f:read("*a"))
    f:close()
    local m = nnr.onnx.load(dir .. "/" .. name .. ".onnx")
    local feed = {}
    for _, inp in ipairs(ref.inputs) do
      local dt = DT[inp[2]] or error("dtype " .. inp[2])
      local t = nnr.tensor(inp[4], { dtype = dt == "bool" and "f32" or dt })
      if dt == "bool" then t = t:ne(0) end
      feed[inp[1]] = #inp[3] == 0 and t:reshape({}) or t:reshape(inp[3])
    end
    local outs = { nnr.no_grad(function() return m(feed) end) }
    for i, want in ipairs(ref.outputs) do
      local y = outs[i]
      local shape = nnr.shape_str(y:size())
      if shape ~= nnr.shape_str(want[1]) then error(string.format("output %d: shape %s, onnxruntime %s", i, shape, nnr.shape_str(want[1]))) end
      if #want[2] > 0 then
        local w = nnr.tensor(want[2], { dtype = "f64" })
        local d = (y:reshape(-1):to("f64") - w):abs():max():item()
        local scale = math.max(1, w:abs():max():item())
        if d > 1e-5 * scale then error(string.format("output %d differs by %.3g", i, d)) end
      end
    end
  end)
  if ok then pass = pass + 1 else fail = fail + 1; print("FAIL " .. name .. ": " .. tostring(err)) end
end
print(string.format("%d passed, %d failed", pass, fail))
os.exit(fail == 0 and 0 or 1, true)
