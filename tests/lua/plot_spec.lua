-- nnr.plot: curves drawn by gnuplot (opened and checked: size, not blank, the colours of the lines),
-- image grids (pixel by pixel), and bad input
local nnr = require "nnr"

local function tmp(ext) return os.tmpname() .. ext end
local function fails(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
end
local function write(path, text) local f = assert(io.open(path, "w")); f:write(text); f:close() end

local records = {}
for e = 1, 8 do
  records[e] = { epoch = e, train_loss = 1 / e, test_loss = 1.2 / e + 0.1, test_accuracy = 0.6 + 0.04 * e, lr = 0.1 * (1 - e / 9),
                 samples_per_s = 1000 }
end

describe("nnr.plot.curves", function()
  it("draws a PNG of the size asked, with the train and test lines in their colours, and an SVG", function()
    local out = tmp(".png")
    assert.are.equal(out, nnr.plot.curves(records, out, { title = "a_b \"quoted\"", width = 900, height = 350 }))
    local img = nnr.data.load_image(out)
    assert.are.same({ 3, 350, 900 }, img.shape)
    local px = img:float()
    -- not blank: most of it white background, and some pixels of each line's colour (gnuplot's first two:
    -- purple #9400d3 for train, green #009e73 for test)
    local white = px:eq(255):all(1):float():mean():item()
    assert.is_true(white > 0.5 and white < 0.995, "white share " .. white)
    local function share(r, g, b)
      local d = (px:select(1, 1) - r):abs() + (px:select(1, 2) - g):abs() + (px:select(1, 3) - b):abs()
      return d:lt(60):float():mean():item()
    end
    assert.is_true(share(148, 0, 211) > 0.001, "no train line")
    assert.is_true(share(0, 158, 115) > 0.001, "no test line")
    os.remove(out)
    local svg = tmp(".svg")
    nnr.plot.curves(records, svg)
    local f = assert(io.open(svg))
    local text = f:read("*a")
    f:close()
    assert.is_truthy(text:find("<svg", 1, true))
    assert.is_truthy(text:find("accuracy", 1, true) and text:find("learning rate", 1, true))
    os.remove(svg)
  end)

  it("reads a metrics file of JSON lines, and names a bad one", function()
    local m = tmp(".jsonl")
    local lines = {}
    for _, r in ipairs(records) do lines[#lines + 1] = require("nnr.json").encode(r) end
    write(m, table.concat(lines, "\n") .. "\n\n")
    local out = tmp(".png")
    nnr.plot.curves(m, out)
    assert.are.same({ 3, 400, 960 }, nnr.data.load_image(out).shape)     -- two panels of 480 x 400
    os.remove(out)
    write(m, '{"epoch": 1, "train_loss": 0.5}\n{"epoch": 2, "train_loss": \n')
    fails(m .. " line 2 is not JSON: the end of the text where a value was expected", nnr.plot.curves, m, out)
    write(m, '[1, 2]\n')
    fails(m .. " line 1 is not a JSON object", nnr.plot.curves, m, out)
    write(m, '{"time": 1, "train_loss": 0.5}\n')
    fails("the records have no 'epoch' or 'step' to plot against", nnr.plot.curves, m, out)
    write(m, '{"epoch": 1, "speed": 0.5}\n')
    fails("no train_/test_/val_ metrics to draw (numeric keys: speed)", nnr.plot.curves, m, out)
    write(m, "")
    fails("holds no records", nnr.plot.curves, m, out)
    fails("plot: cannot read /nonexistent.jsonl", nnr.plot.curves, "/nonexistent.jsonl", out)
    fails("the output must end in .png or .svg, got x.gif", nnr.plot.curves, records, "x.gif")
    fails("plot: unknown option 'titel'", nnr.plot.curves, records, out, { titel = "x" })
    os.remove(m)
  end)
end)

describe("nnr.plot.image_grid", function()
  it("lays images out in rows with padding, as make_grid", function()
    nnr.manual_seed(3)
    local imgs = nnr.randint(0, 256, { 5, 1, 4, 6 }):to("u8")
    local g = nnr.plot.image_grid(imgs, nil, { nrow = 3, padding = 2, pad_value = 7 })
    assert.are.same({ 1, 2 * 6 + 2, 3 * 8 + 2 }, g.shape)
    for i = 0, 4 do
      local r, c = math.floor(i / 3), i % 3
      local cell = g:narrow(2, 3 + r * 6, 4):narrow(3, 3 + c * 8, 6)
      assert.are.equal(0, (cell:int() - imgs:select(1, i + 1):int()):abs():max():item())
    end
    assert.are.equal(7, g[{ 1, 1, 1 }])
    assert.are.equal(7, g[{ 1, 14, 26 }])                      -- the empty sixth cell is padding
    -- floats in [0, 1] (clamped), grey [N, H, W], and the file it writes
    local out = tmp(".png")
    local f = nnr.plot.image_grid(nnr.tensor({ { { 0, 0.5 }, { 1, 2 } } }), out, { padding = 0 })
    assert.are.same({ 0, 128, 255, 255 }, { f[{ 1, 1, 1 }], f[{ 1, 1, 2 }], f[{ 1, 2, 1 }], f[{ 1, 2, 2 }] })
    assert.are.same({ 1, 2, 2 }, nnr.data.load_image(out).shape)
    os.remove(out)
    local n = nnr.plot.image_grid(nnr.tensor({ { { -1, 1 } } }), nil, { padding = 0, normalize = true })
    assert.are.same({ 0, 255 }, { n[{ 1, 1, 1 }], n[{ 1, 1, 2 }] })
  end)

  it("names bad input", function()
    fails("images have 1, 3 or 4 channels, got 2", nnr.plot.image_grid, nnr.rand(2, 2, 4, 4))
    fails("images must be [N, C, H, W] or [N, H, W], got [4, 4]", nnr.plot.image_grid, nnr.rand(4, 4))
    fails("images hold NaN", nnr.plot.image_grid, nnr.full({ 1, 2, 2 }, 0 / 0))
    fails("nrow must be an integer in [1, 1000000], got 0", nnr.plot.image_grid, nnr.rand(1, 2, 2), nil, { nrow = 0 })
    fails("image_grid: unknown option 'rows'", nnr.plot.image_grid, nnr.rand(1, 2, 2), nil, { rows = 2 })
  end)
end)
