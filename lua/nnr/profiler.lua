-- nnr.profiler: where the time goes (DESIGN.md decision 12).
--
--   nnr.profiler.start()
--   ... train ...
--   local prof = nnr.profiler.stop()
--   print(prof:table())                      -- by op, by module, autograd, loader; memory peaks
--   prof:write_trace("trace.json")           -- chrome://tracing or ui.perfetto.dev
--
--   local prof, result = nnr.profiler.profile(fn, {model = model})
--
-- The core records every op (kernel time; the bytes its front-end allocated),
-- every autograd node, every module call (a scope its ops nest under), every
-- DataLoader batch on its worker's own track, the training loop's waits for
-- data, and every allocation that missed the caching allocator. Off, an op
-- pays one predictable branch.
local binding = require "nnr.binding"
local ffi, C = binding.ffi, binding.C

local M = {}
local KIND = { [0] = "op", "module", "autograd", "loader", "wait", "alloc" }

local function module_state() return require("nnr.nn.module")._profiling end

-- names each module of model by its path ("features.1 (Conv2d)") for the by-module table
function M.label(model, prefix)
  prefix = prefix or ""
  rawset(model, "_prof_name", prefix == "" and model.__name or string.format("%s (%s)", prefix, model.__name))
  for _, nm in ipairs(model.named_children and model:named_children() or {}) do
    M.label(nm[2], prefix == "" and nm[1] or prefix .. "." .. nm[1])
  end
  return model
end

function M.start(opts)
  if opts and opts.model then M.label(opts.model) end
  binding.check(C.nnr_profiler_start())
  module_state().on = true
end

function M.is_enabled() return C.nnr_profiler_enabled() ~= 0 end

local Profile = {}
Profile.__index = Profile

-- stops and returns the profile
function M.stop()
  binding.check(C.nnr_profiler_stop())
  module_state().on = false
  local n = tonumber(C.nnr_profiler_event_count())
  local buf = ffi.new("nnr_prof_event[?]", math.max(n, 1))
  n = tonumber(C.nnr_profiler_events(buf, n))
  local devices = {}
  for d = 0, C.nnr_device_count() - 1 do
    devices[#devices + 1] = { name = ffi.string(C.nnr_device_name(d)), peak_bytes = tonumber(C.nnr_device_peak_bytes(d)) }
  end
  local names, threads = {}, {}
  local events = {}
  for i = 0, n - 1 do
    local e = buf[i]
    local key = e.name
    local name = names[tostring(key)]
    if not name then name = e.name ~= nil and ffi.string(e.name) or "?"; names[tostring(key)] = name end
    local tid = tonumber(e.tid)
    if not threads[tid] then
      local label = C.nnr_profiler_thread_name(tid)
      threads[tid] = label ~= nil and ffi.string(label) or ("thread " .. tid)
    end
    events[i + 1] = { name = name, kind = tonumber(e.kind), tid = tid, start = tonumber(e.start_ns), dur = tonumber(e.dur_ns),
                      bytes = tonumber(e.bytes) }
  end
  return setmetatable({ events = events, seconds = C.nnr_profiler_seconds(), devices = devices, threads = threads,
                        dropped = tonumber(C.nnr_profiler_dropped()) }, Profile)
end

-- runs fn(...) under the profiler: returns the profile and fn's results
function M.profile(fn, opts, ...)
  M.start(opts)
  local r = { pcall(fn, ...) }
  local prof = M.stop()
  if not r[1] then error(r[2], 0) end
  return prof, unpack(r, 2, table.maxn(r))
end

-- self time: an event's time less its direct children's on the same thread
local function with_self_times(events)
  local by_tid = {}
  for _, e in ipairs(events) do
    local l = by_tid[e.tid]
    if not l then l = {}; by_tid[e.tid] = l end
    l[#l + 1] = e
    e.self = e.dur
  end
  for _, l in pairs(by_tid) do
    table.sort(l, function(a, b) if a.start ~= b.start then return a.start < b.start end return a.dur > b.dur end)
    local stack = {}
    for _, e in ipairs(l) do
      while #stack > 0 and stack[#stack].start + stack[#stack].dur <= e.start do stack[#stack] = nil end
      local parent = stack[#stack]
      if parent then parent.self = parent.self - e.dur end
      stack[#stack + 1] = e
    end
  end
end

-- rows {name, kind, calls, total, self, mean, share, bytes} for events of the given kinds, by total time
function Profile:summary(kinds)
  if not self._self then with_self_times(self.events); self._self = true end
  local want = {}
  for _, k in ipairs(kinds) do want[k] = true end
  local rows, index = {}, {}
  for _, e in ipairs(self.events) do
    if want[KIND[e.kind]] then
      local key = KIND[e.kind] .. "\0" .. e.name
      local r = index[key]
      if not r then
        r = { name = e.name, kind = KIND[e.kind], calls = 0, total = 0, self = 0, bytes = 0 }
        index[key] = r
        rows[#rows + 1] = r
      end
      r.calls = r.calls + 1
      r.total = r.total + e.dur * 1e-9
      r.self = r.self + e.self * 1e-9
      r.bytes = r.bytes + math.max(e.bytes, 0)
    end
  end
  for _, r in ipairs(rows) do
    r.mean = r.total / r.calls
    r.share = r.total / self.seconds
  end
  table.sort(rows, function(a, b) return a.total > b.total end)
  return rows
end

function Profile:ops() return self:summary({ "op", "alloc" }) end
function Profile:modules() return self:summary({ "module" }) end

local function mib(b) return b / 1048576 end

local function format_rows(title, rows, limit)
  local out = { string.format("%-34s %9s %11s %11s %11s %7s %11s", title, "calls", "total ms", "self ms", "mean us", "share", "alloc MiB") }
  for i, r in ipairs(rows) do
    if i > limit then out[#out + 1] = string.format("  ... %d more", #rows - limit); break end
    local name = #r.name > 34 and r.name:sub(1, 31) .. "..." or r.name
    out[#out + 1] = string.format("%-34s %9d %11.2f %11.2f %11.2f %6.1f%% %11.2f", name, r.calls, r.total * 1e3, r.self * 1e3,
      r.mean * 1e6, 100 * r.share, mib(r.bytes))
  end
  return table.concat(out, "\n")
end

-- the report: ops, modules, autograd nodes, the loader, memory peaks ({limit = 25} rows per table)
function Profile:table(opts)
  local limit = opts and opts.limit or 25
  local parts = { string.format("profile: %.3f s, %d events%s", self.seconds, #self.events,
    self.dropped > 0 and string.format(" (%d dropped: the buffer holds 8M)", self.dropped) or "") }
  local ops = self:ops()
  if #ops > 0 then parts[#parts + 1] = format_rows("op", ops, limit) end
  local mods = self:modules()
  if #mods > 0 then parts[#parts + 1] = format_rows("module", mods, limit) end
  local ag = self:summary({ "autograd" })
  if #ag > 0 then parts[#parts + 1] = format_rows("autograd node (backward)", ag, limit) end
  local ld = self:summary({ "loader", "wait" })
  if #ld > 0 then parts[#parts + 1] = format_rows("data loading", ld, limit) end
  local mem = { "peak memory:" }
  for _, d in ipairs(self.devices) do mem[#mem + 1] = string.format("  %-16s %10.2f MiB", d.name, mib(d.peak_bytes)) end
  parts[#parts + 1] = table.concat(mem, "\n")
  return table.concat(parts, "\n\n")
end

Profile.__tostring = Profile.table
function Profile:print(opts) print(self:table(opts)) end

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- a Chrome trace (chrome://tracing, ui.perfetto.dev): one track per thread, modules and autograd
-- nodes as spans with their ops nested inside, loader batches on the workers' tracks
function Profile:write_trace(path)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write('{"displayTimeUnit": "ms", "traceEvents": [\n')
  local first = true
  local function emit(s)
    if not first then f:write(",\n") end
    first = false
    f:write(s)
  end
  for tid, label in pairs(self.threads) do
    emit(string.format('{"name": "thread_name", "ph": "M", "pid": 1, "tid": %d, "args": {"name": %s}}', tid, json_string(label)))
    emit(string.format('{"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": %d, "args": {"sort_index": %d}}', tid,
      label == "main" and 0 or tid))
  end
  for _, e in ipairs(self.events) do
    emit(string.format('{"name": %s, "cat": "%s", "ph": "X", "ts": %.3f, "dur": %.3f, "pid": 1, "tid": %d, "args": {"bytes": %d}}',
      json_string(e.name), KIND[e.kind], e.start * 1e-3, e.dur * 1e-3, e.tid, e.bytes))
  end
  f:write("\n]}\n")
  f:close()
  assert(os.rename(tmp, path))
  return path
end

return M
