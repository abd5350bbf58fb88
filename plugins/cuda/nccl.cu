/* NCCL collectives for nnr.parallel.Distributed on GPU tensors (ABI 1.3: NNR_OP_ALL_REDUCE and
 * NNR_OP_BROADCAST). libnccl.so.2 is opened on first use, as cuBLAS is. The communicator of a
 * device is made from an id rank 0 draws (get_option "nccl_unique_id") and the core broadcasts
 * over MPI (set_option "nccl_comm" "HEXID:RANK:NRANKS:DEVICE"). The reductions run on the
 * device's stream, in order with its kernels. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_internal.h"

/* the part of nccl.h we use (NCCL's ABI is stable across 2.x) */
typedef struct ncclComm *ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef enum { ncclSuccess = 0 } ncclResult_t;
enum { nccl_int8 = 0, nccl_uint8 = 1, nccl_int32 = 2, nccl_int64 = 4, nccl_float16 = 6, nccl_float32 = 7, nccl_float64 = 8,
       nccl_bfloat16 = 9 };
enum { nccl_sum = 0, nccl_prod = 1, nccl_max = 2, nccl_min = 3 };

static struct {
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*comm_init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*broadcast)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
    const char *(*error_string)(ncclResult_t);
} nccl;
static int nccl_state;            /* 0 untried, 1 loaded, -1 failed */
static char nccl_error[300];
static pthread_mutex_t nccl_lock = PTHREAD_MUTEX_INITIALIZER;
static ncclComm_t comms[16];

static int nccl_load(void)
{
    pthread_mutex_lock(&nccl_lock);
    if (nccl_state == 0) {
        void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(nccl_error, sizeof nccl_error, "cuda: cannot load NCCL (libnccl.so.2): %s", dlerror());
            nccl_state = -1;
        } else {
            *(void **)&nccl.get_unique_id = dlsym(h, "ncclGetUniqueId");
            *(void **)&nccl.comm_init_rank = dlsym(h, "ncclCommInitRank");
            *(void **)&nccl.all_reduce = dlsym(h, "ncclAllReduce");
            *(void **)&nccl.broadcast = dlsym(h, "ncclBroadcast");
            *(void **)&nccl.error_string = dlsym(h, "ncclGetErrorString");
            nccl_state = nccl.get_unique_id && nccl.comm_init_rank && nccl.all_reduce && nccl.broadcast ? 1 : -1;
            if (nccl_state < 0) snprintf(nccl_error, sizeof nccl_error, "cuda: the NCCL found lacks ncclAllReduce or its peers");
        }
    }
    int ok = nccl_state == 1;
    pthread_mutex_unlock(&nccl_lock);
    if (!ok) cu_errorf(NNR_ERR_UNSUPPORTED, "%s", nccl_error);
    return ok;
}

static int nccl_fail(ncclResult_t r, const char *what)
{
    return cu_errorf(NNR_ERR_DEVICE, "%s: NCCL error %d: %s", what, (int)r, nccl.error_string ? nccl.error_string(r) : "");
}

int cu_nccl_unique_id(char *buf, size_t n)
{
    if (!nccl_load()) return NNR_ERR_UNSUPPORTED;
    ncclUniqueId id;
    ncclResult_t r = nccl.get_unique_id(&id);
    if (r != ncclSuccess) return nccl_fail(r, "nccl_unique_id");
    if (n < 2 * sizeof id.internal + 1) return cu_errorf(NNR_ERR_INVALID, "nccl_unique_id: buffer of %zu bytes", n);
    for (size_t i = 0; i < sizeof id.internal; i++) snprintf(buf + 2 * i, 3, "%02x", (unsigned char)id.internal[i]);
    return NNR_OK;
}

/* "HEXID:RANK:NRANKS:DEVICE" */
int cu_nccl_comm(const char *spec)
{
    if (!nccl_load()) return NNR_ERR_UNSUPPORTED;
    ncclUniqueId id;
    int rank, nranks, device;
    const char *colon = strchr(spec, ':');
    if (!colon || colon - spec != 2 * (int)sizeof id.internal || sscanf(colon + 1, "%d:%d:%d", &rank, &nranks, &device) != 3 ||
        device < 0 || device >= 16 || rank < 0 || rank >= nranks)
        return cu_errorf(NNR_ERR_INVALID, "nccl_comm: expected HEXID:RANK:NRANKS:DEVICE");
    for (size_t i = 0; i < sizeof id.internal; i++) {
        unsigned v;
        if (sscanf(spec + 2 * i, "%2x", &v) != 1) return cu_errorf(NNR_ERR_INVALID, "nccl_comm: bad id");
        id.internal[i] = (char)v;
    }
    cu_device *d = cu_dev(device);
    if (!d) return NNR_ERR_DEVICE;
    ncclResult_t r = nccl.comm_init_rank(&comms[device], nranks, id, rank);
    if (r != ncclSuccess) { comms[device] = NULL; return nccl_fail(r, "nccl_comm"); }
    return NNR_OK;
}

int cu_nccl_ready(int device) { return device >= 0 && device < 16 && comms[device] != NULL; }

static int nccl_type(int dt)
{
    switch (dt) {
    case NNR_F32: return nccl_float32;
    case NNR_F64: return nccl_float64;
    case NNR_F16: return nccl_float16;
    case NNR_BF16: return nccl_bfloat16;
    case NNR_I32: return nccl_int32;
    case NNR_I64: return nccl_int64;
    case NNR_I8: return nccl_int8;
    case NNR_U8: case NNR_BOOL: return nccl_uint8;
    }
    return -1;
}

int cu_nccl_supports(const nnr_op_call *call)
{
    return call->n_outputs == 1 && call->n_inputs == 0 && cu_nccl_ready(call->outputs[0]->device) &&
           nccl_type(call->outputs[0]->dtype) >= 0 && nnr_desc_is_contiguous(call->outputs[0]);
}

int cu_nccl_run(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *t = call->outputs[0];
    size_t n = (size_t)nnr_desc_numel(t);
    ncclComm_t comm = comms[t->device];
    ncclResult_t r;
    if (call->op == NNR_OP_ALL_REDUCE) {
        static const int ops[4] = {nccl_sum, nccl_max, nccl_min, nccl_prod};
        int64_t k = call->params->i[0];
        r = nccl.all_reduce(t->data, t->data, n, nccl_type(t->dtype), ops[k >= 0 && k < 4 ? k : 0], comm, d->stream);
    } else {
        r = nccl.broadcast(t->data, t->data, n, nccl_type(t->dtype), (int)call->params->i[0], comm, d->stream);
    }
    return r == ncclSuccess ? NNR_OK : nccl_fail(r, call->op == NNR_OP_ALL_REDUCE ? "all_reduce" : "broadcast");
}
