-- all_reduce of 64 MiB of f32 through nnr.parallel.Distributed against a bare MPI_Allreduce of the
-- same size in the same run (medians of 10). Run: mpirun -np 2 nnrun scripts/bench/allreduce.lua
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
local bare = D._bench_raw_allreduce(n, 10)
-- bandwidth as MPI benchmarks count it: the buffer's bytes over the time
if rank == 0 then
  print(string.format('{"ranks": %d, "mib": 64, "nnr_ms": %.3f, "bare_ms": %.3f, "nnr_gbs": %.2f, "bare_gbs": %.2f, "share": %.4f}', size,
    ours * 1e3, bare * 1e3, n * 4 / ours / 1e9, n * 4 / bare / 1e9, bare / ours))
end
