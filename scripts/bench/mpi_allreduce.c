/* The reference of scripts/bench/run_dist.py: a bare MPI_Allreduce of n floats (default 16 Mi, 64 MiB),
 * the median of 10 after a warm-up, as rank 0 prints it:  {"bare_ms": ...}
 * Run: mpirun -np 2 build/bin/nnr_mpi_allreduce [n] */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, n = argc > 1 ? atoi(argv[1]) : 16 << 20;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    float *buf = malloc(sizeof(float) * (size_t)n);
    if (!buf || n <= 0) MPI_Abort(MPI_COMM_WORLD, 1);
    for (int i = 0; i < n; i++) buf[i] = 1.0f;
    double t[10];
    MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (int r = 0; r < 10; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        t[r] = MPI_Wtime() - t0;
    }
    qsort(t, 10, sizeof t[0], by_value);
    if (rank == 0) printf("{\"bare_ms\": %.3f}\n", t[5] * 1e3);
    free(buf);
    MPI_Finalize();
    return 0;
}
