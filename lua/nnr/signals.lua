-- Graceful stops for long work (docs/reliability.md, "Faults during long work").
--
--   local signals = require "nnr.signals"
--   signals.catch_stop()                       -- from here on, SIGINT and SIGTERM ask to stop
--   for x, y in loader:iter() do
--     step(x, y)
--     local sig, status = signals.stop_requested()  -- "SIGTERM", 143 once asked; nil otherwise
--     if sig then save_checkpoint(); return end      -- nnrun then exits with status (130, 143)
--   end
--
-- Without catch_stop, Ctrl-C interrupts at the next op ("interrupted") and SIGTERM ends the
-- process at once. With it, the first SIGINT or SIGTERM is only recorded, so the step in progress
-- finishes; a second one interrupts as Ctrl-C does (a way out of a stuck step). nnrun exits with
-- 128 + the signal's number once one was caught, as shells report a process a signal stopped.
-- The handlers are nnrun's (core/host/nnrun.c): under a plain luajit nothing is caught
-- (catch_stop returns nil and stop_requested always nil).
local M = {}

local ok, native = pcall(require, "nnr.native")
local have = ok and type(native) == "table" and type(native.catch_stop) == "function"

-- whether stops can be caught here (under nnrun)
function M.available() return have end

-- on (default true): catch SIGINT and SIGTERM as stop requests; false: back to interrupting.
-- Returns whether they were caught before, or nil where they cannot be (not under nnrun).
function M.catch_stop(on)
  if not have then return nil end
  return native.catch_stop(on ~= false)
end

-- nil, or the signal that asked to stop ("SIGINT", "SIGTERM") and the exit status it gives (130, 143)
function M.stop_requested()
  if not have then return nil end
  return native.stop_signal()
end

-- forgets a stop request (nnrun then exits with the script's own status)
function M.clear_stop()
  if have then native.clear_stop() end
end

return M
