/* OpenBLAS, opened by this plugin at init rather than linked. OpenBLAS reads its environment when
 * it loads, and its settings are this plugin's to make, not the core's:
 *  - OpenBLAS 0.3.21 (Debian 12) does not recognise recent CPUs and falls back to its SSE3
 *    "Prescott" kernels: on an AVX-512 Xeon that is 40-60 GFLOP/s instead of 200. Unless the user
 *    chose one (OPENBLAS_CORETYPE, or NNR_KEEP_BLAS_DETECTION set), name the widest kernel family
 *    the CPU and the OS support.
 *  - OpenBLAS's idle threads spin (sched_yield) for 2^28 cycles after each call, taking the cores
 *    from our own kernels between gemms: let them sleep sooner.
 * Only the three functions below are used; the gemms run single-threaded inside our pool (gemm.c).
 * It is opened on the first op that needs a gemm, not at the plugin's init: loading it (its constructor
 * sizes buffers and starts its threads) took 7 of the 9 ms the plugin added to nnrun's start-up, which a
 * script that never multiplies matrices should not pay. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "kernels.h"

cpu_blas_api cpu_blas;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static int threads_wanted = 1;      /* what set_num_threads asked for before OpenBLAS was open */

/* the environment OpenBLAS reads when it loads, set at the plugin's init: setenv while other threads may
 * call getenv is undefined, and the first product may come from any thread */
void cpu_blas_configure(void)
{
    setenv("OPENBLAS_THREAD_TIMEOUT", "12", 0);
#if defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE") || getenv("NNR_KEEP_BLAS_DETECTION")) return;
    /* the running class (isa.h: CPUID and XCR0, or a lower one from NNR_CPU_ISA); Prescott is SSE3 */
    setenv("OPENBLAS_CORETYPE", cpu_isa_level >= CPU_ISA_AVX512 ? "SkylakeX" : cpu_isa_level >= CPU_ISA_AVX2 ? "Haswell" : "Prescott", 0);
#endif
}

static int open_locked(void)
{
    if (cpu_blas.sgemm) return NNR_OK;
    /* the soname first (a bundle's copy through the executable's RPATH, LD_LIBRARY_PATH, the system's),
     * then the library this plugin was built against */
    const char *names[] = {"libopenblas.so.0", NNR_OPENBLAS_FILE};
    void *h = NULL;
    char why[512] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++)
        if (!(h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL))) snprintf(why, sizeof why, "%s", dlerror());
    if (!h) return cpu_error(NNR_ERR_DEVICE, "cpu: cannot open OpenBLAS (libopenblas.so.0, %s): %s", NNR_OPENBLAS_FILE, why);
    cpu_sgemm_fn sgemm = (cpu_sgemm_fn)dlsym(h, "cblas_sgemm");
    cpu_blas.dgemm = (cpu_dgemm_fn)dlsym(h, "cblas_dgemm");
    cpu_blas.set_num_threads = (void (*)(int))dlsym(h, "openblas_set_num_threads");
    if (!sgemm || !cpu_blas.dgemm || !cpu_blas.set_num_threads)
        return cpu_error(NNR_ERR_DEVICE, "cpu: the OpenBLAS it opened lacks cblas_sgemm, cblas_dgemm or openblas_set_num_threads");
    cpu_blas.set_num_threads(threads_wanted);
    __atomic_store_n(&cpu_blas.sgemm, sgemm, __ATOMIC_RELEASE);     /* last: it says the rest is there */
    return NNR_OK;    /* the handle stays open for the life of the process */
}

int cpu_blas_open(void)
{
    if (__atomic_load_n(&cpu_blas.sgemm, __ATOMIC_ACQUIRE)) return NNR_OK;
    pthread_mutex_lock(&open_lock);
    int st = open_locked();
    pthread_mutex_unlock(&open_lock);
    return st;
}

void cpu_blas_set_threads(int n)
{
    pthread_mutex_lock(&open_lock);
    threads_wanted = n;
    if (cpu_blas.sgemm) cpu_blas.set_num_threads(n);
    pthread_mutex_unlock(&open_lock);
}
