-- nnr.tensorboard.SummaryWriter(log_dir, opts): TensorBoard event files, with PyTorch's methods.
--   local w = nnr.tensorboard.SummaryWriter("runs/mlp")           -- opts: comment, max_queue (10), flush_secs (120),
--                                                                  -- filename_suffix ("")
--   w:add_scalar("loss/train", loss, step)                         -- a number, or a one-element tensor
--   w:add_histogram("fc1.weight", lin.weight, epoch)               -- bins = "tensorflow" (default) or a count
--   w:add_image("samples", img, step)                              -- [C, H, W] (dataformats "CHW", "HWC", "HW"), u8 or float in [0, 1]
--   w:add_text("notes", "lr 0.1", step)
--   w:add_hparams({lr = 0.1, opt = "sgd"}, {["hparam/accuracy"] = 0.91})
--   w:flush(); w:close()
-- The files are written natively (core/data/events.c: protobuf-c, CRC32C); TensorBoard, or pip's
-- tensorboard package, reads them. nnr.logging.JSONLinesWriter takes the same calls and writes JSON lines.
-- Values: a scalar may be NaN or infinite (a diverged loss is worth seeing); steps are integers >= 0;
-- walltime (seconds since the epoch) defaults to now.
local ffi = require "ffi"
local nnr = require "nnr"
local binding = require "nnr.binding"
local V = require "nnr.check"
local C = binding.C

local M = {}

-- the checks both writers share ------------------------------------------------------------------
local A = {}
M._args = A

function A.tag(who, tag)
  if type(tag) ~= "string" or tag == "" or tag:find("\0", 1, true) then
    error(who .. ": tag must be a non-empty string without NUL bytes, got " .. V.show(tag), 0)
  end
  return tag
end

function A.step(who, step) return V.integer(who, "global_step", step or 0, 0) end

function A.walltime(who, t)
  if t == nil then return 0 end
  return V.number(who, "walltime", t, { above = 0 })
end

-- a number, or the value of a one-element tensor (a loss); NaN and infinities pass
function A.scalar(who, v)
  if nnr.is_tensor(v) then
    if v:numel() ~= 1 then error(string.format("%s: scalar_value must be a number or a one-element tensor, got a tensor of %d elements", who, v:numel()), 0) end
    local x = v:item()
    if type(x) == "boolean" then return x and 1 or 0 end      -- a bool tensor
    return x
  end
  if type(v) == "boolean" then return v and 1 or 0 end
  if type(v) ~= "number" then error(who .. ": scalar_value must be a number or a one-element tensor, got " .. type(v), 0) end
  return v
end

-- TensorFlow's default buckets (PyTorch's bins = "tensorflow"): 0 and +-1e-12 * 1.1^k up to 1e20
local tf_edges
local function tensorflow_edges()
  if not tf_edges then
    local pos, v = {}, 1e-12
    while v < 1e20 do pos[#pos + 1] = v; v = v * 1.1 end
    tf_edges = {}
    for i = #pos, 1, -1 do tf_edges[#tf_edges + 1] = -pos[i] end
    tf_edges[#tf_edges + 1] = 0
    for i = 1, #pos do tf_edges[#tf_edges + 1] = pos[i] end
  end
  return tf_edges
end

-- the values as a contiguous f64 cpu tensor, and the bucket edges (numpy's rule: count bins of equal width
-- from the least to the greatest value)
function A.histogram(who, values, bins)
  if type(values) == "table" then values = nnr.tensor(values, { dtype = "f64" }) end
  if not nnr.is_tensor(values) then error(who .. ": values must be a tensor or a table of numbers, got " .. type(values), 0) end
  if values:numel() == 0 then error(who .. ": values is empty", 0) end
  local x = values:detach():to("cpu"):double():contiguous():reshape(-1)
  bins = bins == nil and "tensorflow" or bins
  local edges
  if bins == "tensorflow" then
    edges = tensorflow_edges()              -- (NaN and infinities: refused by the counting, in C or in logging.lua)
  elseif type(bins) == "number" then
    local n = V.integer(who, "bins", bins, 1, 1e6)
    if x:isnan():any():item() then error(who .. ": the values hold NaN", 0) end
    local lo, hi = x:min():item(), x:max():item()
    if lo == -math.huge or hi == math.huge then error(who .. ": the values hold an infinity", 0) end
    if lo == hi then lo, hi = lo - 0.5, hi + 0.5 end
    -- a range too narrow for n distinct edges in doubles (1e17 and 1e17 + 16, or 1 and 1 + 2^-52): widened
    -- around its middle until they are distinct, as numpy's float edges would be
    local width = hi - lo
    for _ = 1, 80 do
      local mid, ok = (lo + hi) / 2, true
      edges = {}
      for i = 0, n do edges[i + 1] = lo + (hi - lo) * i / n end
      edges[n + 1] = hi
      for i = 2, n + 1 do if not (edges[i] > edges[i - 1]) then ok = false; break end end
      if ok then break end
      width = width * 2 + math.abs(mid) * 2 ^ -40
      lo, hi = mid - width / 2, mid + width / 2
    end
  else
    error(who .. ": bins must be 'tensorflow' or a number of buckets, got " .. V.show(bins), 0)
  end
  return x, edges
end

-- an image as u8 [C, H, W] on the cpu: u8 as it is, floats scaled from [0, 1] (clamped, rounded)
function A.image(who, img, dataformats)
  if not nnr.is_tensor(img) then error(who .. ": img_tensor must be a tensor, got " .. type(img), 0) end
  dataformats = dataformats or "CHW"
  local want = ({ CHW = 3, HWC = 3, HW = 2 })[dataformats]
  if not want then error(who .. ": dataformats must be 'CHW', 'HWC' or 'HW', got " .. V.show(dataformats), 0) end
  if img:dim() ~= want then
    error(string.format("%s: an image in %s has %d dimensions, got %s", who, dataformats, want, nnr.shape_str(img:size())), 0)
  end
  local x = img:detach():to("cpu")
  if dataformats == "HW" then x = x:unsqueeze(1) elseif dataformats == "HWC" then x = x:permute(3, 1, 2) end
  local c = x:size(1)
  if c ~= 1 and c ~= 3 and c ~= 4 then
    error(string.format("%s: an image has 1, 3 or 4 channels, got %d (%s %s)", who, c, dataformats, nnr.shape_str(img:size())), 0)
  end
  if x.dtype == "u8" then return x:contiguous() end
  if not x:is_floating_point() then error(who .. ": img_tensor must be u8 or floating point in [0, 1], got " .. x.dtype, 0) end
  local f = x:float()
  if f:isnan():any():item() then error(who .. ": img_tensor holds NaN", 0) end
  return (f:clamp(0, 1) * 255):round():to("u8"):contiguous()
end

function A.text(who, text)
  if type(text) ~= "string" then error(who .. ": text_string must be a string, got " .. type(text), 0) end
  return text
end

-- hparams: {name = number | string | boolean}, metrics: {tag = number}; sorted by name
function A.hparams(who, hparams, metrics)
  if type(hparams) ~= "table" then error(who .. ": hparam_dict must be a table, got " .. type(hparams), 0) end
  if type(metrics) ~= "table" then error(who .. ": metric_dict must be a table, got " .. type(metrics), 0) end
  local hp, ms = {}, {}
  for k, v in pairs(hparams) do
    if type(k) ~= "string" or k == "" or k:find("\0", 1, true) then
      error(who .. ": hparam_dict's keys must be non-empty strings without NUL bytes, got " .. V.show(k), 0)
    end
    if type(v) == "number" then V.number(who, "hparam " .. k, v)
    elseif type(v) == "string" and v:find("\0", 1, true) then error(string.format("%s: hparam %s holds a NUL byte", who, k), 0)
    elseif type(v) ~= "string" and type(v) ~= "boolean" then
      error(string.format("%s: hparam %s must be a number, a string or a boolean, got %s", who, k, type(v)), 0)
    end
    hp[#hp + 1] = { k, v }
  end
  for k, v in pairs(metrics) do
    A.tag(who, k)
    ms[#ms + 1] = { k, A.scalar(who, v) }
  end
  table.sort(hp, function(a, b) return a[1] < b[1] end)
  table.sort(ms, function(a, b) return a[1] < b[1] end)
  return hp, ms
end

-- SummaryWriter ----------------------------------------------------------------------------------
local Writer = {}
Writer.__index = Writer
local OPTIONS = { comment = true, max_queue = true, flush_secs = true, filename_suffix = true }

local function close_handle(h) C.nnr_events_close(h) end

-- PyTorch's default: runs/<date>_<host><comment>
local function run_dir(comment)
  local f, host = io.open("/proc/sys/kernel/hostname"), nil
  if f then host = f:read("*l"); f:close() end
  return "runs/" .. os.date("%b%d_%H-%M-%S") .. "_" .. (host or "localhost") .. (comment or "")
end
local runs = 0

function M.SummaryWriter(log_dir, opts)
  local who = "SummaryWriter"
  opts = V.options(who, opts, OPTIONS)
  if opts.comment ~= nil and type(opts.comment) ~= "string" then error(who .. ": comment must be a string", 0) end
  log_dir = log_dir == nil and run_dir(opts.comment) or V.path(who, "log_dir", log_dir)
  local suffix = opts.filename_suffix or ""
  if type(suffix) ~= "string" or suffix:find("\0", 1, true) then error(who .. ": filename_suffix must be a string without NUL bytes", 0) end
  if opts.comment and opts.comment:find("\0", 1, true) then error(who .. ": comment holds a NUL byte", 0) end
  local max_queue = V.integer(who, "max_queue", opts.max_queue or 10, 1, 1e6)
  local flush_secs = V.number(who, "flush_secs", opts.flush_secs or 120, { min = 0 })
  local h = C.nnr_events_open(log_dir, suffix, max_queue, flush_secs)
  if h == nil then binding.raise() end
  local self = setmetatable({ log_dir = log_dir, _h = ffi.gc(h, close_handle), _opts = { max_queue = max_queue, flush_secs = flush_secs } }, Writer)
  self.path = ffi.string(C.nnr_events_path(h))
  return self
end

local function handle(self, who)
  if not self._h then error(who .. ": the writer is closed", 0) end
  return self._h
end

function Writer:get_logdir() return self.log_dir end

function Writer:add_scalar(tag, scalar_value, global_step, walltime)
  local who = "add_scalar"
  local h = handle(self, who)
  binding.check(C.nnr_events_scalar(h, A.tag(who, tag), A.scalar(who, scalar_value), A.step(who, global_step), A.walltime(who, walltime)))
end

function Writer:add_histogram(tag, values, global_step, bins, walltime)
  local who = "add_histogram"
  local h = handle(self, who)
  tag = A.tag(who, tag)
  local x, edges = A.histogram(who, values, bins)
  local ce = ffi.new("double[?]", #edges, edges)
  binding.check(C.nnr_events_histogram(h, tag, ffi.cast("const double *", C.nnr_tensor_data(x.p)), x:numel(), ce, #edges,
                                       A.step(who, global_step), A.walltime(who, walltime)))
end

function Writer:add_image(tag, img_tensor, global_step, walltime, dataformats)
  local who = "add_image"
  local h = handle(self, who)
  tag = A.tag(who, tag)
  local img = A.image(who, img_tensor, dataformats)
  binding.check(C.nnr_events_image(h, tag, img.p, A.step(who, global_step), A.walltime(who, walltime)))
end

function Writer:add_text(tag, text_string, global_step, walltime)
  local who = "add_text"
  local h = handle(self, who)
  local text = A.text(who, text_string)
  binding.check(C.nnr_events_text(h, A.tag(who, tag), text, #text, A.step(who, global_step), A.walltime(who, walltime)))
end

-- as PyTorch: the hyper-parameters and the metrics' values go to a run of their own under log_dir
-- (run_name, default the time), which TensorBoard's HPARAMS tab lists
function Writer:add_hparams(hparam_dict, metric_dict, hparam_domain_discrete, run_name)
  local who = "add_hparams"
  handle(self, who)
  if hparam_domain_discrete ~= nil then error(who .. ": hparam_domain_discrete is not supported; leave it nil", 0) end
  local hp, ms = A.hparams(who, hparam_dict, metric_dict)
  if run_name == nil then runs = runs + 1; run_name = string.format("%d.%d", os.time(), runs) end
  if type(run_name) ~= "string" or run_name == "" or run_name:find("/", 1, true) or run_name:find("\0", 1, true) then
    error(who .. ": run_name must be a non-empty name without '/', got " .. V.show(run_name), 0)
  end
  local n = #hp
  local names, kinds, nums, strs = ffi.new("const char *[?]", n + 1), ffi.new("int[?]", n + 1), ffi.new("double[?]", n + 1),
    ffi.new("const char *[?]", n + 1)
  for i, p in ipairs(hp) do
    names[i - 1] = p[1]
    local v = p[2]
    if type(v) == "number" then kinds[i - 1], nums[i - 1] = 0, v
    elseif type(v) == "string" then kinds[i - 1], strs[i - 1] = 1, v
    else kinds[i - 1], nums[i - 1] = 2, v and 1 or 0 end
  end
  local tags = ffi.new("const char *[?]", #ms + 1)
  for i, m in ipairs(ms) do tags[i - 1] = m[1] end
  local run = M.SummaryWriter(self.log_dir .. "/" .. run_name, self._opts)
  binding.check(C.nnr_events_hparams(run._h, n, names, kinds, nums, strs, #ms, tags, 0))
  for _, m in ipairs(ms) do run:add_scalar(m[1], m[2]) end
  run:close()
end

function Writer:flush() binding.check(C.nnr_events_flush(handle(self, "flush"))) end

function Writer:close()
  if not self._h then return end
  local h = ffi.gc(self._h, nil)
  self._h = nil
  binding.check(C.nnr_events_close(h))
end

Writer.__tostring = function(self) return "SummaryWriter(" .. self.log_dir .. (self._h and "" or ", closed") .. ")" end

return M
