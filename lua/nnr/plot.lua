-- nnr.plot: pictures of a training run, drawn by gnuplot (Debian's gnuplot-nox, as Torch7 did), and grids
-- of images.
--   nnr.plot.curves("metrics.jsonl" or {records}, "curves.png" or ".svg"[, opts])
--       one panel per metric that has train_/test_/val_ series (train_loss and val_loss share the "loss"
--       panel), against "epoch" or "step" (opts.x); a learning rate ("lr") on its own axis, on the right of
--       the first panel. opts: x, title, all (every other numeric key gets a panel too), width, height, logx.
--   nnr.plot.image_grid(images, "grid.png"[, opts])
--       [N, C, H, W] (C 1, 3 or 4) or [N, H, W] images, u8 or floats in [0, 1], in rows of opts.nrow (8) with
--       opts.padding (2) pixels of opts.pad_value (0) between them, as torchvision's make_grid;
--       opts.normalize scales the batch's least..greatest value to 0..1 first. Returns the grid, u8 [C, H, W].
-- `nnrun plot metrics.jsonl [-o curves.png|svg] [--x KEY] [--title T] [--all]` runs curves from the shell.
-- Files are written whole: to a temporary name, then renamed.
local nnr = require "nnr"
local V = require "nnr.check"
local json = require "nnr.json"

local M = {}
local ROLES = { train = 1, test = 2, val = 3, valid = 3, validation = 3 }

-- the records of a JSON-lines file, each an object, every bad line named
local function read_records(path)
  local f, err = io.open(path, "r")
  if not f then error("plot: cannot read " .. path .. ": " .. tostring(err), 0) end
  local records, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if line:match("%S") then
      local v, why = json.decode(line)
      if v == nil then f:close(); error(string.format("plot: %s line %d is not JSON: %s", path, n, why), 0) end
      if type(v) ~= "table" or v[1] ~= nil then f:close(); error(string.format("plot: %s line %d is not a JSON object", path, n), 0) end
      records[#records + 1] = v
    end
  end
  f:close()
  if #records == 0 then error("plot: " .. path .. " holds no records (a metrics file has one JSON object a line)", 0) end
  return records
end

-- a text inside gnuplot's double quotes (the terminals are noenhanced: _ and ^ are themselves)
local function label(s) return (tostring(s):gsub('[\\"]', "\\%0"):gsub("%c", " ")) end

local function gnuplot_ok()
  local ok = os.execute("command -v gnuplot >/dev/null 2>&1")
  return ok == 0 or ok == true
end

-- the panels: {name, series = {{key, title}...}}; lr: the learning rate's key or nil
local function layout(records, x, all)
  local keys, seen = {}, {}
  for _, r in ipairs(records) do
    for k, v in pairs(r) do
      if type(k) == "string" and type(v) == "number" and k ~= x and not seen[k] then seen[k] = true; keys[#keys + 1] = k end
    end
  end
  table.sort(keys)
  local panels, by_name, lr = {}, {}, nil
  for _, k in ipairs(keys) do
    local role, base = k:match("^(%a+)_(.+)$")
    if k == "lr" or k == "learning_rate" then lr = k
    elseif role and ROLES[role] then
      if not by_name[base] then by_name[base] = { name = base, series = {} }; panels[#panels + 1] = by_name[base] end
      table.insert(by_name[base].series, { key = k, title = role, order = ROLES[role] })
    end
  end
  for _, p in ipairs(panels) do table.sort(p.series, function(a, b) return a.order < b.order end) end
  -- the loss first, then accuracy, then the rest by name
  local rank = function(p) return p.name == "loss" and 0 or p.name:match("acc") and 1 or 2 end
  table.sort(panels, function(a, b) if rank(a) ~= rank(b) then return rank(a) < rank(b) end return a.name < b.name end)
  if all then
    for _, k in ipairs(keys) do
      local role = k:match("^(%a+)_")
      if k ~= lr and not (role and ROLES[role]) then panels[#panels + 1] = { name = k, series = { { key = k, title = k } } } end
    end
  end
  return panels, lr, keys
end

local function temp_beside(path)
  return path .. string.format(".tmp.%d.%d", math.random(1, 1e9), os.time())
end

-- what curves needs, checked before a training run starts (its --plot): the extension and gnuplot
function M.check_output(out, who)
  who = who or "plot"
  local ext = type(out) == "string" and out:match("%.(%w+)$")
  if not ext or (ext:lower() ~= "png" and ext:lower() ~= "svg") then error(who .. ": the output must end in .png or .svg, got " .. tostring(out), 0) end
  if not gnuplot_ok() then error(who .. ": gnuplot is not installed (Debian: apt-get install gnuplot-nox)", 0) end
  local dir = out:match("^(.*)/[^/]*$") or "."
  local probe = dir .. string.format("/.nnr-plot-probe.%d", math.random(1, 1e9))
  local f, err = io.open(probe, "w")
  if not f then error(who .. ": cannot write in " .. dir .. ": " .. tostring(err), 0) end
  f:close()
  os.remove(probe)
end

function M.curves(src, out, opts)
  local who = "plot"
  opts = V.options(who, opts, { x = true, title = true, all = true, width = true, height = true, logx = true })
  local records = type(src) == "table" and src or read_records(V.path(who, "metrics", src))
  if #records == 0 then error("plot: no records", 0) end
  out = V.path(who, "output", out)
  local ext = out:match("%.(%w+)$")
  ext = ext and ext:lower()
  if ext ~= "png" and ext ~= "svg" then error("plot: the output must end in .png or .svg, got " .. out, 0) end
  local x = opts.x
  if x == nil then x = records[1].epoch ~= nil and "epoch" or records[1].step ~= nil and "step" or nil end
  if x == nil then error("plot: the records have no 'epoch' or 'step' to plot against (name one with x)", 0) end
  for i, r in ipairs(records) do
    if type(r[x]) ~= "number" then error(string.format("plot: record %d has no number '%s' to plot against", i, x), 0) end
  end
  local panels, lr, keys = layout(records, x, opts.all)
  if #panels == 0 then
    error("plot: no train_/test_/val_ metrics to draw (numeric keys: " .. (#keys > 0 and table.concat(keys, ", ") or "none")
      .. "); all = true (--all) draws every one", 0)
  end
  if not gnuplot_ok() then error("plot: gnuplot is not installed (Debian: apt-get install gnuplot-nox)", 0) end
  local width = V.integer(who, "width", opts.width or math.min(480 * #panels, 1920), 100, 8000)
  local height = V.integer(who, "height", opts.height or 400, 100, 8000)
  -- the data: x, then every key's column (NaN where a record lacks it: a gap in the line)
  local cols, col_of = { x }, {}
  for _, p in ipairs(panels) do for _, s in ipairs(p.series) do if not col_of[s.key] then cols[#cols + 1] = s.key; col_of[s.key] = #cols end end end
  if lr then cols[#cols + 1] = lr; col_of[lr] = #cols end
  local data = temp_beside(out) .. ".dat"
  local f, err = io.open(data, "w")
  if not f then error("plot: cannot write beside " .. out .. ": " .. tostring(err), 0) end
  for _, r in ipairs(records) do
    local row = {}
    for i, k in ipairs(cols) do
      local v = r[k]
      row[i] = (type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge) and string.format("%.17g", v) or "NaN"
    end
    f:write(table.concat(row, " "), "\n")
  end
  f:close()
  local tmp = temp_beside(out) .. "." .. ext
  local g = {}
  g[#g + 1] = ext == "png" and string.format('set terminal pngcairo size %d,%d noenhanced font "sans,10" background "#ffffff"', width, height)
    or string.format('set terminal svg size %d,%d noenhanced font "sans,10" background "#ffffff"', width, height)
  g[#g + 1] = string.format("set output %q", tmp)
  g[#g + 1] = "set datafile missing NaN"
  local lo, hi, whole = math.huge, -math.huge, true
  for _, r in ipairs(records) do lo, hi = math.min(lo, r[x]), math.max(hi, r[x]); whole = whole and r[x] == math.floor(r[x]) end
  if whole and hi - lo <= 20 then g[#g + 1] = "set xtics 1" end       -- epochs: no tic at 1.5
  if opts.logx then g[#g + 1] = "set logscale x; set format x '%.0e'" end
  g[#g + 1] = string.format('set multiplot layout 1,%d title "%s"', #panels, label(opts.title or ""))
  for i, p in ipairs(panels) do
    g[#g + 1] = string.format('set title "%s"; set xlabel "%s"; set ylabel "%s"; set grid; set key top right box opaque', label(p.name),
      label(x), label(p.name))
    local parts = {}
    for _, s in ipairs(p.series) do
      -- a role keeps its colour in every panel: train 1, test 2, validation 3
      parts[#parts + 1] = string.format('%q using 1:%d with linespoints lt %d pt 7 ps 0.6 lw 2 title "%s"', data, col_of[s.key], s.order or 4,
        label(s.title))
    end
    if lr and i == 1 then
      g[#g + 1] = 'set ytics nomirror; set y2tics; set y2label "learning rate"'
      parts[#parts + 1] = string.format('%q using 1:%d axes x1y2 with lines dt 2 lw 1.5 lc rgb "#808080" title "lr"', data, col_of[lr])
    end
    g[#g + 1] = "plot " .. table.concat(parts, ", ")
    if lr and i == 1 then g[#g + 1] = "unset y2tics; unset y2label; set ytics mirror" end
  end
  g[#g + 1] = "unset multiplot"
  g[#g + 1] = "set output"
  local script = temp_beside(out) .. ".gp"
  f = assert(io.open(script, "w"))
  f:write(table.concat(g, "\n"), "\n")
  f:close()
  local log = script .. ".log"
  local rc = os.execute(string.format("gnuplot %q >%q 2>&1", script, log))
  local msg = ""
  local lf = io.open(log, "r")
  if lf then msg = lf:read("*a"); lf:close() end
  os.remove(script); os.remove(log); os.remove(data)
  local size = 0
  local of = io.open(tmp, "rb")
  if of then size = of:seek("end"); of:close() end
  if not (rc == 0 or rc == true) or size == 0 then
    os.remove(tmp)
    error("plot: gnuplot could not draw " .. out .. ": " .. (msg:match("%S") and msg:gsub("%s+$", "") or "no output"), 0)
  end
  local ok, rerr = os.rename(tmp, out)
  if not ok then os.remove(tmp); error("plot: cannot write " .. out .. ": " .. tostring(rerr), 0) end
  local J = package.loaded["nnr.jupyter"]
  if J and J.active then J.display(out) end          -- in a notebook: shown inline too
  return out
end

function M.image_grid(images, path, opts)
  local who = "image_grid"
  opts = V.options(who, opts, { nrow = true, padding = true, pad_value = true, normalize = true })
  if not nnr.is_tensor(images) then error(who .. ": images must be a tensor [N, C, H, W] or [N, H, W], got " .. type(images), 0) end
  local x = images:detach():to("cpu")
  if x:dim() == 3 then x = x:unsqueeze(2) end
  if x:dim() ~= 4 then error(who .. ": images must be [N, C, H, W] or [N, H, W], got " .. nnr.shape_str(images:size()), 0) end
  local n, c, h, w = x:size(1), x:size(2), x:size(3), x:size(4)
  if n == 0 or h == 0 or w == 0 then error(who .. ": no images (" .. nnr.shape_str(images:size()) .. ")", 0) end
  if c ~= 1 and c ~= 3 and c ~= 4 then error(string.format("%s: images have 1, 3 or 4 channels, got %d", who, c), 0) end
  local nrow = V.integer(who, "nrow", opts.nrow or 8, 1, 1e6)
  local pad = V.integer(who, "padding", opts.padding or 2, 0, 1e4)
  local pad_value = V.number(who, "pad_value", opts.pad_value or 0, { min = 0, max = 255 })
  if x.dtype ~= "u8" then
    if not x:is_floating_point() then error(who .. ": images must be u8 or floating point, got " .. x.dtype, 0) end
    x = x:double()
    if x:isnan():any():item() then error(who .. ": images hold NaN", 0) end
    if opts.normalize then
      local lo, hi = x:min():item(), x:max():item()
      x = hi > lo and (x - lo) / (hi - lo) or x * 0
    end
    x = (x:clamp(0, 1) * 255):round():to("u8")
    if pad_value <= 1 then pad_value = math.floor(pad_value * 255 + 0.5) end
  end
  local cols = math.min(nrow, n)
  local rows = math.ceil(n / cols)
  local gh, gw = rows * (h + pad) + pad, cols * (w + pad) + pad
  if gh > 65535 or gw > 65535 then error(string.format("%s: a grid of %d x %d pixels is larger than PNG's 65535 a side here", who, gh, gw), 0) end
  local grid = nnr.full({ c, gh, gw }, math.floor(pad_value), { dtype = "u8" })
  for i = 0, n - 1 do
    local r, q = math.floor(i / cols), i % cols
    grid:narrow(2, pad + r * (h + pad) + 1, h):narrow(3, pad + q * (w + pad) + 1, w):copy_(x:select(1, i + 1))
  end
  if path ~= nil then nnr.data.save_image(V.path(who, "path", path), grid) end
  local J = package.loaded["nnr.jupyter"]
  if J and J.active then J.display(grid) end         -- in a notebook: shown inline
  return grid
end

-- nnrun plot FILE [-o OUT] [--x KEY] [--title T] [--all]
function M.main(argv)
  local file, opts, out = nil, {}, nil
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "-o" or a == "--output" then out = argv[i + 1]; i = i + 1
    elseif a == "--x" then opts.x = argv[i + 1]; i = i + 1
    elseif a == "--title" then opts.title = argv[i + 1]; i = i + 1
    elseif a == "--all" then opts.all = true
    elseif a == "-h" or a == "--help" then
      print("usage: nnrun plot metrics.jsonl [-o curves.png|svg] [--x epoch|step|KEY] [--title TEXT] [--all]")
      return
    elseif a:sub(1, 1) == "-" then error("nnrun plot: unknown option " .. a .. " (known: -o, --x, --title, --all)", 0)
    elseif file then error("nnrun plot: one metrics file, got " .. file .. " and " .. a, 0)
    else file = a end
    if (a == "-o" or a == "--output" or a == "--x" or a == "--title") and argv[i] == nil then error("nnrun plot: " .. a .. " needs a value", 0) end
    i = i + 1
  end
  if not file then error("usage: nnrun plot metrics.jsonl [-o curves.png|svg] [--x KEY] [--title TEXT] [--all]", 0) end
  out = out or (file:gsub("%.[^./]*$", "") .. ".png")
  print("wrote " .. M.curves(file, out, opts))
end

return M
