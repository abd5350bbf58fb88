/* The host (core/host/): the one pool of LuaJIT states that runs Lua code beside the script (the
 * loader's workers, DataParallel's replicas), and MPI for nnr.parallel.Distributed. */
#ifndef NNR_HOST_H
#define NNR_HOST_H

#include "nnr/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
/* --- LuaJIT states: state k runs `bootstrap` (a chunk named `name`) with (payload, tensors, ntensors, k,
 * datasets, ndatasets) and keeps the function it returns. Payload k comes with ntensors[k] tensors of
 * the flat list (npayloads 1: one payload, and its tensors, for every state). A state is created on
 * first use by the thread that uses it and used by one thread at a time; the set holds a reference to
 * each tensor and dataset until freed. --- */
typedef struct nnr_lua_states nnr_lua_states;
nnr_lua_states *nnr_lua_states_new(int nstates, const char *name, const char *bootstrap, int npayloads,
                                   const char *const *payloads, const size_t *lens, nnr_tensor *const *tensors,
                                   const int *ntensors, nnr_dataset *const *datasets, int ndatasets);
void nnr_lua_states_free(void *states);
/* the loader's batch function over a set whose functions build batches (nnr.data.worker): hand it to a
 * loader with nnr_loader_set_batch_fn(loader, nnr_lua_states_batch, states, nnr_lua_states_free) */
int nnr_lua_states_batch(void *states, int slot, int64_t epoch, int64_t batch, const int64_t *samples, int64_t count,
                         nnr_tensor **x, nnr_tensor **y, char *err, size_t errn);

/* --- the replicas of nnr.parallel.DataParallel: one state of the set per device (nnr.parallel_replica),
 * each with a thread of its own for the life of the set; takes ownership of the states --- */
typedef struct nnr_replica_set nnr_replica_set;
nnr_replica_set *nnr_replicas_new(nnr_lua_states *states);
/* runs every replica k on (x[k], y[k]) at once; mode 0: forward only, 1: forward, weight * loss, backward.
 * out[k] gets replica k's output (a new reference), losses[k] its weighted loss. */
int nnr_replicas_run(nnr_replica_set *s, int mode, nnr_tensor *const *x, nnr_tensor *const *y, const double *weights,
                     nnr_tensor **out, double *losses);
void nnr_replicas_free(nnr_replica_set *s);

/* --- kernels written in LuaJIT (nnr.kernel): n worker threads, each with a state of the set running
 * bootstrap (a chunk returning function(source, blob, chunk, nchunks) -> nil or an error message).
 * start hands chunks first..first+count-1 of nchunks to workers 1..count and returns at once (the
 * caller runs its own chunk meanwhile); wait returns when they are done, with the first error. The
 * source and the blob (what the Lua side wrote: addresses, strides, sizes) must live until then. --- */
typedef struct nnr_kernel_pool nnr_kernel_pool;
nnr_kernel_pool *nnr_kernel_pool_new(int n, const char *bootstrap);
int nnr_kernel_pool_size(const nnr_kernel_pool *p);
int nnr_kernel_pool_start(nnr_kernel_pool *p, const char *source, size_t len, const void *blob, int first, int count, int nchunks);
int nnr_kernel_pool_wait(nnr_kernel_pool *p);
void nnr_kernel_pool_free(nnr_kernel_pool *p);

/* --- processes (nnr.parallel.Distributed): MPI collectives on contiguous tensors in host memory, and
 * the backend's own collectives (NCCL) on its devices; op 0 sum, 1 max, 2 min, 3 product. Built
 * without MPI they return an error saying how to enable it. --- */
int nnr_dist_available(void);
int nnr_dist_init(int *rank, int *size);
int nnr_dist_initialized(void);
int nnr_dist_barrier(void);
int nnr_dist_all_reduce(nnr_tensor *t, int op);
int nnr_dist_all_reduce_start(nnr_tensor *t, int op);   /* non-blocking; finished by nnr_dist_wait_all */
int nnr_dist_wait_all(void);
int nnr_dist_broadcast(nnr_tensor *t, int root);
int nnr_dist_all_gather(nnr_tensor *out, const nnr_tensor *in);
void nnr_dist_abort(int code);
void nnr_dist_finalize(void);            /* nnrun calls it after a script that succeeded */
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_HOST_H */
