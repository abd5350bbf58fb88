-- Run under mpirun -np 2 by tests/dist_test.sh with a case name: each must end the job with an
-- error naming the failing rank, never hang.
local nnr = require "nnr"
local nn = nnr.nn
local D = nnr.parallel.Distributed
local case = arg[1]
local rank = D.init()
if case == "raise" then
  D.barrier()
  if rank == 1 then error("rank 1 gives up on purpose") end
  D.all_reduce(nnr.ones(4))            -- rank 0 waits here for rank 1, which is gone
  D.barrier()
elseif case == "die" then
  D.barrier()
  if rank == 1 then                    -- killed: no message, no MPI_Finalize
    local ffi = require "ffi"
    ffi.cdef "int getpid(void); int kill(int pid, int sig);"
    ffi.C.kill(ffi.C.getpid(), 9)
  end
  D.all_reduce(nnr.ones(4))
  D.barrier()
elseif case == "mismatch" then
  local m = rank == 0 and nn.Linear(4, 3) or nn.Linear(4, 5)
  nnr.parallel.DistributedDataParallel(m)
end
print("rank " .. rank .. " finished (unexpected)")
