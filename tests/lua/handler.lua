-- busted output handler: one line per failure with its message, then a
-- closing line "N passed, N failed, N skipped" (errors count as failed).
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local write = io.write

  local function report(kind, element, message, trace)
    local name = handler.getFullName(element)
    local where = element.trace and (element.trace.short_src .. ":" .. element.trace.currentline) or ""
    write(string.format("%s: %s (%s)\n  %s\n", kind, name, where, tostring(message):gsub("\n", "\n  ")))
    if trace and trace.traceback and options.verbose then write(trace.traceback, "\n") end
  end

  handler.testEnd = function(element, parent, status)
    if status == "success" then write(".") elseif status == "pending" then write("s") end
    io.flush()
    return nil, true
  end

  handler.failure = function(element, parent, message, trace)
    write("\n"); report("FAIL", element, message, trace)
    return nil, true
  end

  handler.error = function(element, parent, message, trace)
    write("\n"); report("ERROR", element, message, trace)
    return nil, true
  end

  handler.suiteEnd = function()
    local failed = handler.failuresCount + handler.errorsCount
    write(string.format("\n%d passed, %d failed, %d skipped\n", handler.successesCount, failed, handler.pendingsCount))
    io.flush()
    return nil, true
  end

  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "failure" }, handler.failure)
  busted.subscribe({ "error" }, handler.error)
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  return handler
end
