/* The cuda backend: devices, memory, copies, options, and op dispatch.
 *
 * Every op of a device is queued on that device's one stream, so the host
 * only waits where it reads results (device-to-host copies, index checks).
 * Memory comes from cudaMalloc through the core's caching allocator; because
 * a device's work runs in stream order, a block freed by the host can be
 * reused by the next op at once. Copies from page-locked host memory (the
 * loader's pin_memory) are asynchronous; from ordinary memory they return
 * once the data has left the source.
 *
 * Without a driver or a GPU the plugin still loads: device_count reports no
 * device with CUDA's own error text, which nnr.cuda.is_available() and the
 * tests show. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "blas_api.h"
#include "cuda_internal.h"

#define CU_TRY(expr, what) do { cudaError_t e_ = (expr); if (e_ != cudaSuccess) return (nnr_status)cu_fail(e_, what); } while (0)

const nnr_host_api *cu_host;

enum { MAX_DEVICES = 16 };
static cu_device devices[MAX_DEVICES];
static pthread_mutex_t dev_lock = PTHREAD_MUTEX_INITIALIZER;
/* one thread at a time queues work on a device: the ABI lets several threads call run() and copy()
 * for one device at once, and a device's scratch and stream are shared by its calls */
static pthread_mutex_t run_locks[MAX_DEVICES];
static pthread_once_t run_locks_once = PTHREAD_ONCE_INIT;
static void init_run_locks(void) { for (int i = 0; i < MAX_DEVICES; i++) pthread_mutex_init(&run_locks[i], NULL); }
static int allow_tf32;
static int device_total = -1;
static char no_device_reason[256];

int cu_allow_tf32(void) { return allow_tf32; }

int cu_errorf(int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cu_host->set_error(msg);
    return status;
}

int cu_fail(cudaError_t e, const char *what)
{
    cudaGetLastError();       /* clear a sticky-free error so the next op is not blamed */
    int st = e == cudaErrorMemoryAllocation ? NNR_ERR_OOM : NNR_ERR_DEVICE;
    return cu_errorf(st, "%s: CUDA error %d (%s): %s", what, (int)e, cudaGetErrorName(e), cudaGetErrorString(e));
}

/* ---------------- cuBLAS by dlopen ---------------- */

static cu_blas_api blas_api;
static int blas_state;            /* 0 untried, 1 loaded, -1 failed */
static char blas_error[400];

const cu_blas_api *cu_blas(void)
{
    if (__builtin_expect(blas_state == 1, 1)) return &blas_api;
    pthread_mutex_lock(&dev_lock);
    if (blas_state == 0) {
        static const char *names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
        void *h = NULL;
        for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(blas_error, sizeof blas_error, "cuda: cannot load cuBLAS (libcublas.so.13 or .12): %s; add its folder to LD_LIBRARY_PATH",
                     dlerror());
            blas_state = -1;
        } else {
#define SYM(field, name) *(void **)&blas_api.field = dlsym(h, name)
            SYM(create, "cublasCreate_v2");
            SYM(destroy, "cublasDestroy_v2");
            SYM(set_stream, "cublasSetStream_v2");
            SYM(set_math_mode, "cublasSetMathMode");
            SYM(gemm_strided_batched_ex, "cublasGemmStridedBatchedEx");
            SYM(status_string, "cublasGetStatusString");
#undef SYM
            if (!blas_api.create || !blas_api.destroy || !blas_api.set_stream || !blas_api.set_math_mode || !blas_api.gemm_strided_batched_ex) {
                snprintf(blas_error, sizeof blas_error, "cuda: the cuBLAS found lacks cublasGemmStridedBatchedEx or its peers");
                blas_state = -1;
            } else blas_state = 1;
        }
    }
    int ok = blas_state == 1;
    pthread_mutex_unlock(&dev_lock);
    if (!ok) { cu_host->set_error(blas_error); return NULL; }
    return &blas_api;
}

int cu_blas_fail(cublasStatus_t s, const char *what)
{
    const char *text = blas_api.status_string ? blas_api.status_string(s) : "";
    return cu_errorf(s == CUBLAS_STATUS_ALLOC_FAILED ? NNR_ERR_OOM : NNR_ERR_DEVICE, "%s: cuBLAS error %d %s", what, (int)s, text);
}

/* ---------------- devices ---------------- */

cu_device *cu_dev(int device)
{
    if (device < 0 || device >= MAX_DEVICES || device >= device_total) {
        cu_errorf(NNR_ERR_DEVICE, "cuda: no device %d", device);
        return NULL;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) { cu_fail(e, "cuda: cudaSetDevice"); return NULL; }
    cu_device *d = &devices[device];
    if (__builtin_expect(d->ready, 1)) return d;
    const cu_blas_api *b = cu_blas();
    if (!b) return NULL;
    pthread_mutex_lock(&dev_lock);
    if (!d->ready) {
        e = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking);
        if (e == cudaSuccess) e = cudaMalloc((void **)&d->flag, 3 * sizeof(int64_t));
        if (e == cudaSuccess) e = cudaHostAlloc((void **)&d->flag_host, 3 * sizeof(int64_t), cudaHostAllocDefault);
        cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
        if (e == cudaSuccess) s = b->create(&d->blas);
        if (e == cudaSuccess && s == CUBLAS_STATUS_SUCCESS) {
            b->set_stream(d->blas, d->stream);
            b->set_math_mode(d->blas, CUBLAS_DEFAULT_MATH);
            d->ready = 1;
        }
        pthread_mutex_unlock(&dev_lock);
        if (e != cudaSuccess) { cu_fail(e, "cuda: device setup"); return NULL; }
        if (s != CUBLAS_STATUS_SUCCESS) { cu_blas_fail(s, "cuda: cublasCreate"); return NULL; }
        return d;
    }
    pthread_mutex_unlock(&dev_lock);
    return d;
}

void *cu_scratch(cu_device *d, size_t nbytes)
{
    if (nbytes <= d->scratch_bytes) return d->scratch;
    /* the old buffer may still be read by queued kernels */
    cudaStreamSynchronize(d->stream);
    if (d->scratch) cudaFree(d->scratch);
    d->scratch = NULL;
    d->scratch_bytes = 0;
    size_t want = nbytes + nbytes / 4;
    cudaError_t e = cudaMalloc(&d->scratch, want);
    if (e != cudaSuccess) {
        cudaGetLastError();
        e = cudaMalloc(&d->scratch, nbytes);
        want = nbytes;
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        d->scratch = NULL;
        cu_errorf(NNR_ERR_OOM, "cuda: out of memory for %zu bytes of scratch", nbytes);
        return NULL;
    }
    d->scratch_bytes = want;
    return d->scratch;
}

static nnr_status device_count(nnr_plugin *self, int *count)
{
    (void)self;
    pthread_once(&run_locks_once, init_run_locks);
    if (device_total < 0) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            snprintf(no_device_reason, sizeof no_device_reason, "no CUDA device: CUDA error %d (%s): %s", (int)e, cudaGetErrorName(e),
                     cudaGetErrorString(e));
            cudaGetLastError();
            n = 0;
        } else if (n == 0) snprintf(no_device_reason, sizeof no_device_reason, "no CUDA device: the driver reports none");
        device_total = n > MAX_DEVICES ? MAX_DEVICES : n;
    }
    *count = device_total;
    if (device_total == 0) {
        cu_host->set_error(no_device_reason);
        return NNR_ERR_DEVICE;
    }
    return NNR_OK;
}

static nnr_status device_name(nnr_plugin *self, int device, char *buf, size_t n)
{
    (void)self;
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) return (nnr_status)cu_fail(e, "cuda: device name");
    snprintf(buf, n, "%s, %.1f GiB, sm_%d%d", p.name, (double)p.totalGlobalMem / (1 << 30), p.major, p.minor);
    return NNR_OK;
}

static nnr_status buffer_alloc(nnr_plugin *self, int device, size_t nbytes, void **out)
{
    (void)self;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMalloc(out, nbytes ? nbytes : 1);
    if (e != cudaSuccess) {
        *out = NULL;
        cudaGetLastError();
        return (nnr_status)cu_errorf(e == cudaErrorMemoryAllocation ? NNR_ERR_OOM : NNR_ERR_DEVICE,
                                     "cuda:%d: cannot allocate %zu bytes: %s", device, nbytes, cudaGetErrorString(e));
    }
    return NNR_OK;
}

static void buffer_free(nnr_plugin *self, int device, void *ptr)
{
    (void)self;
    if (cudaSetDevice(device) != cudaSuccess) return;
    if (devices[device].ready) cudaStreamSynchronize(devices[device].stream);
    cudaFree(ptr);
}

/* the ABI 1.4 device properties: device memory (not host memory), its size, the multiprocessors */
static nnr_status device_props(nnr_plugin *self, int device, nnr_device_props *out)
{
    (void)self;
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) return (nnr_status)cu_fail(e, "cuda: device properties");
    out->flags = 0;
    out->total_memory = (uint64_t)p.totalGlobalMem;
    out->compute_units = p.multiProcessorCount;
    snprintf(out->model, sizeof out->model, "%.95s", p.name);
    return NNR_OK;
}

static nnr_status memory_info(nnr_plugin *self, int device, uint64_t *free_bytes, uint64_t *total_bytes)
{
    (void)self;
    size_t f = 0, t = 0;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaMemGetInfo(&f, &t);
    if (e != cudaSuccess) return (nnr_status)cu_fail(e, "cuda: memory info");
    *free_bytes = f;
    *total_bytes = t;
    return NNR_OK;
}

/* the caching allocator is short of memory: give back the device's scratch (it grows again on demand) */
static void release_memory(nnr_plugin *self, int device)
{
    (void)self;
    if (device < 0 || device >= device_total || !devices[device].ready || cudaSetDevice(device) != cudaSuccess) return;
    pthread_mutex_lock(&run_locks[device]);
    cu_device *d = &devices[device];
    cudaStreamSynchronize(d->stream);
    if (d->scratch) cudaFree(d->scratch);
    d->scratch = NULL;
    d->scratch_bytes = 0;
    pthread_mutex_unlock(&run_locks[device]);
}

static nnr_status copy_locked(cu_device *d, int kind, void *dst, const void *src, size_t nbytes);

static nnr_status copy(nnr_plugin *self, int device, int kind, void *dst, const void *src, size_t nbytes)
{
    (void)self;
    if (nbytes == 0) return NNR_OK;
    cu_device *d = cu_dev(device);
    if (!d) return NNR_ERR_DEVICE;
    pthread_mutex_lock(&run_locks[device]);
    nnr_status st = copy_locked(d, kind, dst, src, nbytes);
    pthread_mutex_unlock(&run_locks[device]);
    return st;
}

/* between two GPUs: after the work queued on both, and complete when it returns */
static nnr_status copy_between(nnr_plugin *self, int dst_device, void *dst, int src_device, const void *src, size_t nbytes)
{
    (void)self;
    if (nbytes == 0) return NNR_OK;
    cu_device *s = cu_dev(src_device);
    if (!s) return NNR_ERR_DEVICE;
    CU_TRY(cudaStreamSynchronize(s->stream), "copy between devices");
    cu_device *d = cu_dev(dst_device);
    if (!d) return NNR_ERR_DEVICE;
    pthread_mutex_lock(&run_locks[dst_device]);
    cudaError_t e = cudaMemcpyPeerAsync(dst, dst_device, src, src_device, nbytes, d->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(d->stream);
    pthread_mutex_unlock(&run_locks[dst_device]);
    if (e != cudaSuccess) return (nnr_status)cu_fail(e, "copy between devices");
    return NNR_OK;
}

static nnr_status copy_locked(cu_device *d, int kind, void *dst, const void *src, size_t nbytes)
{
    cudaMemcpyKind k = kind == NNR_COPY_HOST_TO_DEVICE ? cudaMemcpyHostToDevice
                     : kind == NNR_COPY_DEVICE_TO_HOST ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
    CU_TRY(cudaMemcpyAsync(dst, src, nbytes, k, d->stream), "copy");
    /* device-to-host: the caller reads dst now. Host-to-device from pageable memory returns once the
     * data is staged (CUDA's documented behaviour), so src may be freed; from pinned memory it is
     * fully asynchronous, and the core's pinned cache synchronizes before reusing a block. */
    if (kind == NNR_COPY_DEVICE_TO_HOST) CU_TRY(cudaStreamSynchronize(d->stream), "copy");
    return NNR_OK;
}

static nnr_status synchronize(nnr_plugin *self, int device)
{
    (void)self;
    cu_device *d = cu_dev(device);
    if (!d) return NNR_ERR_DEVICE;
    CU_TRY(cudaStreamSynchronize(d->stream), "synchronize");
    return NNR_OK;
}

static nnr_status host_alloc_pinned(nnr_plugin *self, size_t nbytes, void **out)
{
    (void)self;
    if (device_total <= 0) return (nnr_status)cu_errorf(NNR_ERR_DEVICE, "cuda: %s", no_device_reason);
    cudaError_t e = cudaHostAlloc(out, nbytes ? nbytes : 1, cudaHostAllocPortable);
    if (e != cudaSuccess) { *out = NULL; return (nnr_status)cu_fail(e, "cuda: pinned host memory"); }
    return NNR_OK;
}

static void host_free_pinned(nnr_plugin *self, void *ptr, size_t nbytes)
{
    (void)self; (void)nbytes;
    /* a copy from this block may still be queued */
    for (int i = 0; i < device_total; i++)
        if (devices[i].ready) cudaStreamSynchronize(devices[i].stream);
    cudaFreeHost(ptr);
}

static nnr_status set_option(nnr_plugin *self, const char *key, const char *value)
{
    (void)self;
    if (strcmp(key, "allow_tf32") == 0) {
        allow_tf32 = value && (strcmp(value, "1") == 0 || strcmp(value, "true") == 0);
        return NNR_OK;
    }
    if (strcmp(key, "nccl_comm") == 0) return (nnr_status)cu_nccl_comm(value ? value : "");
    return (nnr_status)cu_errorf(NNR_ERR_INVALID, "cuda: unknown option '%s' (known: allow_tf32, nccl_comm)", key);
}

static nnr_status get_option(nnr_plugin *self, const char *key, char *buf, size_t n)
{
    (void)self;
    if (strcmp(key, "nccl_unique_id") == 0) return (nnr_status)cu_nccl_unique_id(buf, n);
    if (strcmp(key, "allow_tf32") == 0) { snprintf(buf, n, "%s", allow_tf32 ? "true" : "false"); return NNR_OK; }
    return (nnr_status)cu_errorf(NNR_ERR_INVALID, "cuda: unknown value '%s' (known: allow_tf32, nccl_unique_id)", key);
}

/* ---------------- ops ---------------- */

static int is_float(int dt) { return dt == NNR_F32 || dt == NNR_F64 || dt == NNR_F16 || dt == NNR_BF16; }
static int f32_f64(int dt) { return dt == NNR_F32 || dt == NNR_F64; }

static int supports(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    if (call->struct_size < sizeof(nnr_op_call) || call->n_outputs < 1) return 0;
    for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype < 0 || call->inputs[i]->dtype >= NNR_DTYPE_COUNT) return 0;
    for (int i = 0; i < call->n_outputs; i++) if (call->outputs[i]->dtype < 0 || call->outputs[i]->dtype >= NNR_DTYPE_COUNT) return 0;
    int out = call->outputs[0]->dtype, op = (int)call->op;
    switch (op) {
    case NNR_OP_MATMUL:
        return is_float(out) && call->inputs[0]->dtype == out && call->inputs[1]->dtype == out && call->outputs[0]->ndim >= 2;
    case NNR_OP_LINEAR:
        if (!is_float(out) || call->inputs[0]->ndim != 2 || call->inputs[1]->ndim != 2 || !nnr_desc_is_contiguous(call->outputs[0])) return 0;
        for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != out || !nnr_desc_is_contiguous(call->inputs[i])) return 0;
        return 1;
    case NNR_OP_CONV2D: case NNR_OP_CONV2D_GRAD_INPUT: case NNR_OP_CONV2D_GRAD_WEIGHT:
        /* f16/bf16 too (autocast): products summed in f32 by cuBLAS */
        if (!is_float(out)) return 0;
        for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != out || !nnr_desc_is_contiguous(call->inputs[i])) return 0;
        for (int i = 0; i < call->n_outputs; i++) if (!nnr_desc_is_contiguous(call->outputs[i])) return 0;
        return 1;
    case NNR_OP_MAXPOOL2D: case NNR_OP_MAXPOOL2D_BACKWARD: case NNR_OP_AVGPOOL2D: case NNR_OP_AVGPOOL2D_BACKWARD:
    case NNR_OP_ADAPTIVE_AVGPOOL2D: case NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD:
        if (!is_float(out)) return 0;
        for (int i = 0; i < call->n_inputs; i++) {
            if (call->inputs[i]->dtype != out && call->inputs[i]->dtype != NNR_I64) return 0;
            if (!nnr_desc_is_contiguous(call->inputs[i])) return 0;
        }
        for (int i = 0; i < call->n_outputs; i++) if (!nnr_desc_is_contiguous(call->outputs[i])) return 0;
        return 1;
    case NNR_OP_BN_STATS: case NNR_OP_BN_AFFINE: case NNR_OP_BN_BACKWARD_REDUCE: case NNR_OP_BN_BACKWARD_APPLY:
    case NNR_OP_SGD_STEP: case NNR_OP_ADAM_STEP: case NNR_OP_RMSPROP_STEP:
        if (!f32_f64(out)) return 0;
        for (int i = 0; i < call->n_inputs; i++) {
            if (call->inputs[i]->dtype != out && call->inputs[i]->dtype != NNR_I64) return 0;
            if (!nnr_desc_is_contiguous(call->inputs[i])) return 0;
        }
        for (int i = 0; i < call->n_outputs; i++) if (!nnr_desc_is_contiguous(call->outputs[i])) return 0;
        return 1;
    case NNR_OP_SOFTMAX: case NNR_OP_LOG_SOFTMAX: return is_float(out);
    case NNR_OP_ACTIVATION: case NNR_OP_ACTIVATION_GRAD:
        if (!is_float(out)) return 0;
        for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != out) return 0;
        return 1;
    case NNR_OP_RAND_UNIFORM: case NNR_OP_RAND_NORMAL: return is_float(out) && nnr_desc_is_contiguous(call->outputs[0]);
    case NNR_OP_RAND_INT: return nnr_desc_is_contiguous(call->outputs[0]);
    case NNR_OP_SCATTER_ADD: case NNR_OP_INDEX_ADD:
        return f32_f64(out) && call->inputs[1]->dtype == out && call->inputs[0]->dtype == NNR_I64;
    case NNR_OP_GATHER: case NNR_OP_INDEX_SELECT: return call->inputs[1]->dtype == NNR_I64 && call->inputs[0]->dtype == out;
    case NNR_OP_ALL_REDUCE: case NNR_OP_BROADCAST: return cu_nccl_supports(call);
    case NNR_OP_CUMSUM: case NNR_OP_CUMPROD: return cu_scan_supports(call);
    case NNR_OP_RNN_CELL: case NNR_OP_RNN_CELL_BACKWARD: return cu_rnn_supports(call);
    case NNR_OP_LAYER_NORM: case NNR_OP_LAYER_NORM_BACKWARD: return cu_layer_norm_supports(call);
    case NNR_OP_CROSS_ENTROPY: case NNR_OP_CROSS_ENTROPY_GRAD: return cu_cross_entropy_supports(call);
    case NNR_OP_SORT: case NNR_OP_TOPK: return cu_sort_supports(call);
    case NNR_OP_ATTN_DECODE: return cu_attention_decode_supports(call);
    /* the sampling ops (bernoulli, multinomial, randperm) run on the cpu backend */
    default: break;
    }
    switch (nnr_op_category_of((uint32_t)op)) {
    case NNR_OPCAT_UNARY: case NNR_OPCAT_BINARY: case NNR_OPCAT_COMPARE: case NNR_OPCAT_SELECT: case NNR_OPCAT_COPY:
    case NNR_OPCAT_FILL: case NNR_OPCAT_REDUCE:
        return 1;
    }
    return 0;
}

static nnr_status run_op(cu_device *d, const nnr_op_call *call);

/* NNR_CUDA_LAUNCH_BLOCKING=1: wait for each op, so that the profiler times kernels rather than
 * launches and a failing kernel is reported by the op that launched it */
static int launch_blocking = -1;

static nnr_status run(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    cu_device *d = cu_dev(call->outputs[0]->device);
    if (!d) return NNR_ERR_DEVICE;
    if (launch_blocking < 0) {
        const char *e = getenv("NNR_CUDA_LAUNCH_BLOCKING");
        launch_blocking = e && *e && strcmp(e, "0") != 0;
    }
    pthread_mutex_lock(&run_locks[call->outputs[0]->device]);
    nnr_status st = run_op(d, call);
    if (st == NNR_OK && launch_blocking) {
        cudaError_t e = cudaStreamSynchronize(d->stream);
        if (e != cudaSuccess) st = (nnr_status)cu_fail(e, "cuda (NNR_CUDA_LAUNCH_BLOCKING)");
    }
    pthread_mutex_unlock(&run_locks[call->outputs[0]->device]);
    return st;
}

static nnr_status run_op(cu_device *d, const nnr_op_call *call)
{
    int op = (int)call->op;
    if (op == NNR_OP_ACTIVATION || op == NNR_OP_ACTIVATION_GRAD) return (nnr_status)cu_activation(d, call);
    switch (nnr_op_category_of((uint32_t)op)) {
    case NNR_OPCAT_UNARY: return (nnr_status)cu_unary(d, call);
    case NNR_OPCAT_BINARY: case NNR_OPCAT_COMPARE: return (nnr_status)cu_binary(d, call);
    case NNR_OPCAT_REDUCE: return (nnr_status)cu_reduce(d, call);
    }
    switch (op) {
    case NNR_OP_WHERE: return (nnr_status)cu_where(d, call);
    case NNR_OP_CLAMP: return (nnr_status)cu_clamp(d, call);
    case NNR_OP_COPY: return (nnr_status)cu_copy_op(d, call);
    case NNR_OP_FILL: return (nnr_status)cu_fill(d, call);
    case NNR_OP_ARANGE: return (nnr_status)cu_arange(d, call);
    case NNR_OP_RAND_UNIFORM: case NNR_OP_RAND_NORMAL: case NNR_OP_RAND_INT: return (nnr_status)cu_random(d, call);
    case NNR_OP_SOFTMAX: case NNR_OP_LOG_SOFTMAX: return (nnr_status)cu_softmax(d, call);
    case NNR_OP_CUMSUM: case NNR_OP_CUMPROD: return (nnr_status)cu_scan(d, call);
    case NNR_OP_RNN_CELL: case NNR_OP_RNN_CELL_BACKWARD: return (nnr_status)cu_rnn(d, call);
    case NNR_OP_LAYER_NORM: case NNR_OP_LAYER_NORM_BACKWARD: return (nnr_status)cu_layer_norm(d, call);
    case NNR_OP_CROSS_ENTROPY: case NNR_OP_CROSS_ENTROPY_GRAD: return (nnr_status)cu_cross_entropy(d, call);
    case NNR_OP_SORT: case NNR_OP_TOPK: return (nnr_status)cu_sort(d, call);
    case NNR_OP_ATTN_DECODE: return (nnr_status)cu_attention_decode(d, call);
    case NNR_OP_MATMUL: return (nnr_status)cu_matmul(d, call);
    case NNR_OP_LINEAR: return (nnr_status)cu_linear(d, call);
    case NNR_OP_CONV2D: return (nnr_status)cu_conv2d(d, call);
    case NNR_OP_CONV2D_GRAD_INPUT: return (nnr_status)cu_conv2d_grad_input(d, call);
    case NNR_OP_CONV2D_GRAD_WEIGHT: return (nnr_status)cu_conv2d_grad_weight(d, call);
    case NNR_OP_MAXPOOL2D: case NNR_OP_MAXPOOL2D_BACKWARD: case NNR_OP_AVGPOOL2D: case NNR_OP_AVGPOOL2D_BACKWARD:
    case NNR_OP_ADAPTIVE_AVGPOOL2D: case NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD: return (nnr_status)cu_pool(d, call);
    case NNR_OP_BN_STATS: case NNR_OP_BN_AFFINE: case NNR_OP_BN_BACKWARD_REDUCE: case NNR_OP_BN_BACKWARD_APPLY:
        return (nnr_status)cu_batchnorm(d, call);
    case NNR_OP_SGD_STEP: case NNR_OP_ADAM_STEP: case NNR_OP_RMSPROP_STEP: return (nnr_status)cu_optim(d, call);
    case NNR_OP_GATHER: case NNR_OP_INDEX_SELECT: case NNR_OP_SCATTER_ADD: case NNR_OP_INDEX_ADD: return (nnr_status)cu_index(d, call);
    case NNR_OP_ALL_REDUCE: case NNR_OP_BROADCAST: return (nnr_status)cu_nccl_run(d, call);
    }
    return (nnr_status)cu_errorf(NNR_ERR_UNSUPPORTED, "cuda: op %d is not implemented", op);
}

/* at exit: wait for queued work; the CUDA runtime tears itself down */
static void shutdown_plugin(nnr_plugin *self)
{
    (void)self;
    for (int i = 0; i < device_total; i++)
        if (devices[i].ready && cudaSetDevice(i) == cudaSuccess) cudaStreamSynchronize(devices[i].stream);
}

static nnr_plugin plugin;

extern "C" NNR_PLUGIN_EXPORT int nnr_plugin_probe(void)
{
    /* the driver library is looked for, not initialised; without it the plugin still
     * loads (score 1) so that nnr.cuda can say why there is no device */
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
    if (!h) h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (h) { dlclose(h); return 50; }
    return 1;
}

extern "C" NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t host_abi, nnr_plugin **out)
{
    if (NNR_ABI_MAJOR_OF(host_abi) != NNR_ABI_MAJOR) return NNR_ERR_ABI;
    cu_host = h;
    memset(&plugin, 0, sizeof plugin);
    plugin.struct_size = sizeof plugin;
    plugin.abi_version = NNR_ABI_VERSION;
    plugin.name = "cuda";
    plugin.version = "1.0";
    plugin.description = "NVIDIA GPUs: cuBLAS gemms, our kernels elsewhere";
    plugin.kind = NNR_PLUGIN_BACKEND;
    plugin.device_count = device_count;
    plugin.device_name = device_name;
    plugin.buffer_alloc = buffer_alloc;
    plugin.buffer_free = buffer_free;
    plugin.copy = copy;
    plugin.supports = supports;
    plugin.run = run;
    plugin.synchronize = synchronize;
    plugin.shutdown = shutdown_plugin;
    plugin.host_alloc_pinned = host_alloc_pinned;
    plugin.host_free_pinned = host_free_pinned;
    plugin.set_option = set_option;
    plugin.get_option = get_option;
    plugin.device_props = device_props;
    plugin.memory_info = memory_info;
    plugin.release_memory = release_memory;
    plugin.copy_between = copy_between;
    *out = &plugin;
    return NNR_OK;
}
