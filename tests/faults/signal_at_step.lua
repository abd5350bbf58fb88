-- Runs a script and sends this process a signal right after its optimizer's N-th step, so a test can
-- stop training at an exact place through the real signal path (nnrun's handler, nnr.signals):
--   nnrun tests/faults/signal_at_step.lua SIGNAL N script.lua [args...]
-- SIGNAL: INT or TERM; INT2 or TERM2 send it twice (the second one interrupts at once).
-- Under mpirun, SIGNAL_RANK=r sends it in rank r only (the others must stop after the same step).
local ffi = require "ffi"
ffi.cdef "int kill(int pid, int sig); int getpid(void);"
local signame, at, script = arg[1], tonumber(arg[2]), arg[3]
local signum = ({ INT = 2, TERM = 15, INT2 = 2, TERM2 = 15 })[signame]
local times = signame:match("2$") and 2 or 1
assert(signum and at and script, "usage: signal_at_step.lua INT|TERM|INT2|TERM2 N script.lua [args...]")

local Optimizer = require "nnr.optim.optimizer"
local step, count = Optimizer.step, 0
function Optimizer.step(self, ...)
  local r = step(self, ...)
  count = count + 1
  local only = os.getenv("SIGNAL_RANK")
  if count == at and (not only or os.getenv("OMPI_COMM_WORLD_RANK") == only) then
    for _ = 1, times do ffi.C.kill(ffi.C.getpid(), signum) end
  end
  return r
end

-- the script sees its own arguments, as if nnrun had run it
local args = { [0] = script }
for i = 4, #arg do args[#args + 1] = arg[i] end
_G.arg = args
local chunk = assert(loadfile(script))
return chunk(unpack(args))
