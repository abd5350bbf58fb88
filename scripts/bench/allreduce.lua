-- all_reduce of 64 MiB of f32 through nnr.parallel.Distributed (the median of 10); run_dist.py runs it
-- beside a bare MPI_Allreduce of the same size (build/bin/nnr_mpi_allreduce) in the same run.
-- Run: mpirun -np 2 nnrun scripts/bench/allreduce.lua
local nnr = require "nnr"
local D = nnr.parallel.Distributed
local rank, size = D.init()
local n = 16 * 2 ^ 20                          -- 64 MiB of f32
local t = nnr.ones(n)
local times = {}
D.all_reduce(t)
for i = 1, 10 do
  D.barrier()
  local t0 = nnr.clock()
  D.all_reduce(t)
  times[i] = nnr.clock() - t0
end
table.sort(times)
local ours = times[6]
if rank == 0 then print(string.format('{"ranks": %d, "mib": 64, "nnr_ms": %.3f}', size, ours * 1e3)) end
