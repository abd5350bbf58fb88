-- nnr.logging.JSONLinesWriter(path, opts): SummaryWriter's calls (nnr.tensorboard) written as JSON lines,
-- one object per call, for scripts, jq and pandas rather than TensorBoard:
--   {"kind":"scalar","tag":"loss/train","step":3,"value":0.25,"wall_time":1796627268.36}
--   {"kind":"histogram","tag":"fc.weight","step":1,"min":..,"max":..,"num":..,"sum":..,"sum_squares":..,"bucket_limit":[..],"bucket":[..]}
--   {"kind":"image","tag":"samples","step":1,"file":"images/samples_1.png","channels":3,"height":28,"width":28}
--   {"kind":"text","tag":"notes","step":0,"text":".."}
--   {"kind":"hparams","hparams":{"lr":0.1},"metrics":{"hparam/acc":0.9},"wall_time":..}
-- opts: append (default false: a new file replaces an old one), flush_secs (120), max_queue (10). Images are
-- PNG files in <path's folder>/images/. NaN and infinities are written NaN, Infinity, -Infinity (Python's
-- json and pandas read them). Lines reach the file whole: queued, then written with the file flushed.
-- (nnr.log stays the elementwise logarithm.)
local nnr = require "nnr"
local V = require "nnr.check"
local json = require "nnr.json"
local A = require("nnr.tensorboard")._args

local M = {}
local Writer = {}
Writer.__index = Writer
local OPTIONS = { append = true, flush_secs = true, max_queue = true }

local ffi = require "ffi"
local C = require("nnr.binding").C
-- seconds since the epoch, with the fraction (libnnr's CLOCK_REALTIME: no cdef of the user's clock_gettime to clash with)
local function now() return C.nnr_wall_time() end

-- the file and its queue live apart from the writer, so that a writer dropped without close still
-- writes its queue when it is collected (ffi.gc on a sentinel, whose finalizer holds only this state)
local function write_queue(state)
  if #state.queue == 0 or not state.f then return true end
  local ok, err = state.f:write(table.concat(state.queue))
  if ok then ok, err = state.f:flush() end
  state.queue = {}
  return ok, err
end

function M.JSONLinesWriter(path, opts)
  local who = "JSONLinesWriter"
  opts = V.options(who, opts, OPTIONS)
  path = V.path(who, "path", path)
  local append = V.boolean(who, "append", opts.append)
  local f, err = io.open(path, append and "a" or "w")
  if not f then error(who .. ": cannot write " .. path .. ": " .. tostring(err), 0) end
  local state = { f = f, queue = {} }
  local sentinel = ffi.gc(ffi.new("char[1]"), function() write_queue(state); if state.f then state.f:close(); state.f = nil end end)
  return setmetatable({ path = path, _state = state, _sentinel = sentinel, _max_queue = V.integer(who, "max_queue", opts.max_queue or 10, 1, 1e6),
                        _flush_secs = V.number(who, "flush_secs", opts.flush_secs or 120, { min = 0 }), _last = now() }, Writer)
end

local function file(self, who)
  if not self._state.f then error(who .. ": the writer is closed", 0) end
  return self._state.f
end

local function emit(self, who, record)
  file(self, who)
  local q = self._state.queue
  q[#q + 1] = json.encode(record) .. "\n"
  if #q >= self._max_queue or now() - self._last >= self._flush_secs then self:flush() end
end

-- the line json.encode would write, spelt out: the call a training loop makes every step
function Writer:add_scalar(tag, scalar_value, global_step, walltime)
  local who = "add_scalar"
  file(self, who)
  local wt = A.walltime(who, walltime)
  local line = string.format('{"kind":"scalar","step":%d,"tag":%s,"value":%s,"wall_time":%s}\n', A.step(who, global_step),
    json.string(A.tag(who, tag)), json.number(A.scalar(who, scalar_value)), json.number(wt > 0 and wt or now()))
  local q = self._state.queue
  q[#q + 1] = line
  if #q >= self._max_queue or now() - self._last >= self._flush_secs then self:flush() end
end

function Writer:add_histogram(tag, values, global_step, bins, walltime)
  local who = "add_histogram"
  file(self, who)
  tag = A.tag(who, tag)
  local step, wt = A.step(who, global_step), A.walltime(who, walltime)
  local x, edges = A.histogram(who, values, bins)
  local n = x:numel()
  -- counted as the TensorBoard writer counts (core/data/events.c)
  local ce, counts, stats, range = ffi.new("double[?]", #edges, edges), ffi.new("double[?]", #edges - 1), ffi.new("double[4]"),
    ffi.new("int64_t[2]")
  require("nnr.binding").check(C.nnr_histogram(tag, ffi.cast("const double *", C.nnr_tensor_data(x.p)), n, ce, #edges, counts, stats, range))
  local limits, buckets = {}, {}
  for i = tonumber(range[0]), tonumber(range[1]) do limits[#limits + 1] = edges[i + 2]; buckets[#buckets + 1] = counts[i] end
  local lo, hi, sum, sq = stats[0], stats[1], stats[2], stats[3]
  emit(self, who, { kind = "histogram", tag = tag, step = step, min = lo, max = hi, num = n, sum = sum, sum_squares = sq,
                    bucket_limit = limits, bucket = buckets, wall_time = wt > 0 and wt or now() })
end

function Writer:add_image(tag, img_tensor, global_step, walltime, dataformats)
  local who = "add_image"
  file(self, who)
  tag = A.tag(who, tag)
  local step, wt = A.step(who, global_step), A.walltime(who, walltime)
  local img = A.image(who, img_tensor, dataformats)
  local base = self.path:match("^(.*)/[^/]*$") or "."
  require("nnr.binding").check(C.nnr_make_dirs(base .. "/images"))
  local name = "images/" .. tag:gsub("[^%w%-_.]", "_") .. "_" .. step .. ".png"
  nnr.data.save_image(base .. "/" .. name, img)
  emit(self, who, { kind = "image", tag = tag, step = step, file = name, channels = img:size(1), height = img:size(2), width = img:size(3),
                    wall_time = wt > 0 and wt or now() })
end

function Writer:add_text(tag, text_string, global_step, walltime)
  local who = "add_text"
  file(self, who)
  local wt = A.walltime(who, walltime)
  emit(self, who, { kind = "text", tag = A.tag(who, tag), step = A.step(who, global_step), text = A.text(who, text_string),
                    wall_time = wt > 0 and wt or now() })
end

function Writer:add_hparams(hparam_dict, metric_dict, hparam_domain_discrete, run_name)
  local who = "add_hparams"
  file(self, who)
  if hparam_domain_discrete ~= nil then error(who .. ": hparam_domain_discrete is not supported; leave it nil", 0) end
  if run_name ~= nil and type(run_name) ~= "string" then error(who .. ": run_name must be a string", 0) end
  local hp, ms = A.hparams(who, hparam_dict, metric_dict)
  local h, m = {}, {}
  for _, p in ipairs(hp) do h[p[1]] = p[2] end
  for _, p in ipairs(ms) do m[p[1]] = p[2] end
  emit(self, who, { kind = "hparams", hparams = h, metrics = m, run = run_name, wall_time = now() })
end

function Writer:flush()
  file(self, "flush")
  local ok, err = write_queue(self._state)
  if not ok then error("JSONLinesWriter: cannot write " .. self.path .. ": " .. tostring(err), 0) end
  self._last = now()
end

function Writer:close()
  if not self._state.f then return end
  self:flush()
  self._state.f:close()
  self._state.f = nil
end

Writer.__tostring = function(self) return "JSONLinesWriter(" .. self.path .. (self._state.f and "" or ", closed") .. ")" end

return M
