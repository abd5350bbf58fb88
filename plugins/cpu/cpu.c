/* The cpu backend: a plugin like any other, loaded through plugin.h. It owns
 * one device (host memory), runs every op, and is the reference the other
 * backends are checked against. */
#include <cblas.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "kernels.h"

int cpu_isa_level = CPU_ISA_C, cpu_isa_cpu = CPU_ISA_C;    /* isa.h; set at init */

const nnr_host_api *cpu_host;

int cpu_error(int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cpu_host->set_error(msg);
    return status;
}

/* N cpu devices ("cpu", "cpu:1", ...) over the same memory, for nnr.parallel.DataParallel on machines
 * without GPUs; every device runs every op, on its share of the threads. NNR_CPU_DEVICES=N sets the
 * count at the start; naming a device past it ("cpu:1") makes the core ask for more (option "devices") */
enum { MAX_CPU_DEVICES = 16 };
static int cpu_devices;       /* 0 until first counted */

static nnr_status device_count(nnr_plugin *self, int *count)
{
    (void)self;
    if (!cpu_devices) {
        const char *env = getenv("NNR_CPU_DEVICES");
        char *end = NULL;
        long n = env ? strtol(env, &end, 10) : 1;
        if (env && (end == env || *end != 0 || n < 1 || n > MAX_CPU_DEVICES)) {
            fprintf(stderr, "nnrun: NNR_CPU_DEVICES=%.60s is not a whole number in 1..%d; using 1\n", env, MAX_CPU_DEVICES);
            n = 1;
        }
        cpu_devices = (int)n;
        cpu_pool_set_devices(cpu_devices);       /* each device its share of the threads */
    }
    *count = cpu_devices;
    return NNR_OK;
}

/* option "devices": at least n devices (the core asks when a script names "cpu:<n-1>") */
static nnr_status set_devices(const char *value)
{
    char *end = NULL;
    long n = value ? strtol(value, &end, 10) : 0;
    if (!value || end == value || *end != 0 || n < 1)
        return (nnr_status)cpu_error(NNR_ERR_INVALID, "cpu: option devices takes a whole number of devices, got '%s'", value ? value : "(null)");
    if (n > MAX_CPU_DEVICES)
        return (nnr_status)cpu_error(NNR_ERR_DEVICE, "the cpu backend offers at most %d devices (asked for %ld)", MAX_CPU_DEVICES, n);
    if (!cpu_devices) { int c; device_count(NULL, &c); }
    if (n > cpu_devices) {
        cpu_devices = (int)n;
        cpu_pool_set_devices(cpu_devices);
    }
    return NNR_OK;
}

/* the cpu's model name from /proc/cpuinfo ("cpu" when it says none) */
static char model_name[128];
static pthread_once_t model_once = PTHREAD_ONCE_INIT;

static void read_model(void)
{
    snprintf(model_name, sizeof model_name, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                snprintf(model_name, sizeof model_name, "%s", colon + 2);
                model_name[strcspn(model_name, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

static void cpu_model(char *buf, size_t n)
{
    pthread_once(&model_once, read_model);      /* read once: device_name and device_props both ask */
    if (n == 0) return;
    size_t len = strnlen(model_name, sizeof model_name - 1);
    if (len > n - 1) len = n - 1;              /* a long model name is cut to the caller's buffer */
    memcpy(buf, model_name, len);
    buf[len] = 0;
}

static nnr_status device_name(nnr_plugin *self, int device, char *buf, size_t n)
{
    (void)self; (void)device;
    char model[128];
    cpu_model(model, sizeof model);
    snprintf(buf, n, "%s, %ld cores", model, sysconf(_SC_NPROCESSORS_ONLN));
    return NNR_OK;
}

/* every cpu device is host memory: the core reads it directly and the fallback copies nothing */
static nnr_status device_props(nnr_plugin *self, int device, nnr_device_props *out)
{
    (void)self; (void)device;
    out->flags = NNR_DEVICE_HOST_MEMORY;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    out->total_memory = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    out->compute_units = (int32_t)sysconf(_SC_NPROCESSORS_ONLN);
    cpu_model(out->model, sizeof out->model);
    return NNR_OK;
}

/* the machine's memory: MemAvailable of /proc/meminfo (the kernel's estimate of what can be had
 * without swapping), and the physical total */
static nnr_status memory_info(nnr_plugin *self, int device, uint64_t *free_bytes, uint64_t *total_bytes)
{
    (void)self; (void)device;
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    *total_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    *free_bytes = avail > 0 && page > 0 ? (uint64_t)avail * (uint64_t)page : 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { *free_bytes = (uint64_t)kb * 1024; break; }
        fclose(f);
    }
    return NNR_OK;
}

static nnr_status buffer_alloc(nnr_plugin *self, int device, size_t nbytes, void **out)
{
    (void)self; (void)device;
    *out = cpu_host->host_alloc(nbytes);
    return *out ? NNR_OK : NNR_ERR_OOM;
}

static void buffer_free(nnr_plugin *self, int device, void *ptr) { (void)self; (void)device; cpu_host->host_free(ptr); }

static nnr_status copy(nnr_plugin *self, int device, int kind, void *dst, const void *src, size_t nbytes)
{
    (void)self; (void)device; (void)kind;
    memmove(dst, src, nbytes);
    return NNR_OK;
}

static int dtype_ok(int dt) { return dt >= 0 && dt < NNR_DTYPE_COUNT; }

static int supports(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    if (call->struct_size < sizeof(nnr_op_call) || call->n_outputs < 1) return 0;
    for (int i = 0; i < call->n_inputs; i++) if (!dtype_ok(call->inputs[i]->dtype)) return 0;
    for (int i = 0; i < call->n_outputs; i++) if (!dtype_ok(call->outputs[i]->dtype)) return 0;
    int out = call->outputs[0]->dtype;
    switch (call->op) {
    case NNR_OP_MATMUL:
        return out != NNR_BOOL && call->inputs[0]->dtype == out && call->inputs[1]->dtype == out && call->outputs[0]->ndim >= 2;
    case NNR_OP_LINEAR: {
        if (out != NNR_F32 && out != NNR_F64) return 0;
        for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != out || !nnr_desc_is_contiguous(call->inputs[i])) return 0;
        return nnr_desc_is_contiguous(call->outputs[0]) && call->inputs[0]->ndim == 2 && call->inputs[1]->ndim == 2;
    }
    case NNR_OP_CONV2D: case NNR_OP_CONV2D_GRAD_INPUT: case NNR_OP_CONV2D_GRAD_WEIGHT:
    case NNR_OP_MAXPOOL2D: case NNR_OP_MAXPOOL2D_BACKWARD: case NNR_OP_AVGPOOL2D: case NNR_OP_AVGPOOL2D_BACKWARD:
    case NNR_OP_ADAPTIVE_AVGPOOL2D: case NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD:
    case NNR_OP_BN_STATS: case NNR_OP_BN_AFFINE: case NNR_OP_BN_BACKWARD_REDUCE: case NNR_OP_BN_BACKWARD_APPLY:
    case NNR_OP_SGD_STEP: case NNR_OP_ADAM_STEP: case NNR_OP_RMSPROP_STEP:
        if (out != NNR_F32 && out != NNR_F64) return 0;
        for (int i = 0; i < call->n_inputs; i++)
            if (call->inputs[i]->dtype != out && call->inputs[i]->dtype != NNR_I64) return 0;
        return 1;
    case NNR_OP_SOFTMAX: case NNR_OP_LOG_SOFTMAX: return !nnr_dtype_is_integral(out);
    case NNR_OP_ACTIVATION: case NNR_OP_ACTIVATION_GRAD:     /* floats, one dtype throughout */
        if (nnr_dtype_is_integral(out)) return 0;
        for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != out) return 0;
        return 1;
    case NNR_OP_RAND_UNIFORM: case NNR_OP_RAND_NORMAL: return !nnr_dtype_is_integral(out);
    case NNR_OP_RAND_INT: return 1;
    case NNR_OP_BERNOULLI: return call->n_inputs == 0 || !nnr_dtype_is_integral(call->inputs[0]->dtype);
    case NNR_OP_MULTINOMIAL: return out == NNR_I64 && !nnr_dtype_is_integral(call->inputs[0]->dtype);
    case NNR_OP_RANDPERM: return out == NNR_I64;
    case NNR_OP_SORT: case NNR_OP_TOPK: return call->n_outputs == 2 && call->outputs[1]->dtype == NNR_I64 && call->inputs[0]->dtype == out;
    case NNR_OP_CUMSUM: case NNR_OP_CUMPROD:
        return call->inputs[0]->dtype == out && (!nnr_dtype_is_integral(out) || out == NNR_I64);
    case NNR_OP_RNN_CELL: case NNR_OP_RNN_CELL_BACKWARD: return cpu_supports_rnn(call);
    case NNR_OP_LAYER_NORM: case NNR_OP_LAYER_NORM_BACKWARD: return cpu_supports_layer_norm(call);
    case NNR_OP_CROSS_ENTROPY: case NNR_OP_CROSS_ENTROPY_GRAD: return cpu_supports_cross_entropy(call);
    case NNR_OP_ATTN_DECODE: return cpu_supports_attention_decode(call);
    default: break;
    }
    switch (nnr_op_category_of(call->op)) {
    case NNR_OPCAT_UNARY: case NNR_OPCAT_BINARY: case NNR_OPCAT_COMPARE: case NNR_OPCAT_SELECT: case NNR_OPCAT_COPY:
    case NNR_OPCAT_FILL: case NNR_OPCAT_REDUCE: case NNR_OPCAT_INDEX:
        return 1;
    }
    return 0;
}

static nnr_status run(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    cpu_pool_select(call->outputs[0]->device);
    switch (call->op) {     /* the ops whose kernels may call a gemm open OpenBLAS first */
    case NNR_OP_MATMUL: case NNR_OP_LINEAR: case NNR_OP_CONV2D: case NNR_OP_CONV2D_GRAD_INPUT: case NNR_OP_CONV2D_GRAD_WEIGHT: {
        int st = cpu_blas_open();
        if (st != NNR_OK) return (nnr_status)st;
        break;
    }
    default: break;
    }
    switch (call->op) {
    case NNR_OP_COPY: return cpu_copy(call);
    case NNR_OP_FILL: return cpu_fill(call);
    case NNR_OP_ARANGE: return cpu_arange(call);
    case NNR_OP_WHERE: return cpu_where(call);
    case NNR_OP_CLAMP: return cpu_clamp(call);
    case NNR_OP_RAND_UNIFORM: case NNR_OP_RAND_NORMAL: case NNR_OP_RAND_INT: return cpu_random(call);
    case NNR_OP_BERNOULLI: case NNR_OP_MULTINOMIAL: case NNR_OP_RANDPERM: return cpu_sample(call);
    case NNR_OP_SORT: case NNR_OP_TOPK: return cpu_sort(call);
    case NNR_OP_CUMSUM: case NNR_OP_CUMPROD: return cpu_scan(call);
    case NNR_OP_RNN_CELL: case NNR_OP_RNN_CELL_BACKWARD: return cpu_rnn_cell(call);
    case NNR_OP_LAYER_NORM: case NNR_OP_LAYER_NORM_BACKWARD: return cpu_layer_norm(call);
    case NNR_OP_CROSS_ENTROPY: case NNR_OP_CROSS_ENTROPY_GRAD: return cpu_cross_entropy(call);
    case NNR_OP_ATTN_DECODE: return cpu_attention_decode(call);
    case NNR_OP_SOFTMAX: case NNR_OP_LOG_SOFTMAX: return cpu_softmax(call);
    case NNR_OP_MATMUL: return cpu_matmul(call);
    case NNR_OP_GATHER: return cpu_gather(call);
    case NNR_OP_INDEX_SELECT: return cpu_index_select(call);
    case NNR_OP_SCATTER_ADD: return cpu_scatter_add(call);
    case NNR_OP_INDEX_ADD: return cpu_index_add(call);
    case NNR_OP_CONV2D: return cpu_conv2d(call);
    case NNR_OP_CONV2D_GRAD_INPUT: return cpu_conv2d_grad_input(call);
    case NNR_OP_CONV2D_GRAD_WEIGHT: return cpu_conv2d_grad_weight(call);
    case NNR_OP_LINEAR: return cpu_linear(call);
    case NNR_OP_MAXPOOL2D: return cpu_maxpool2d(call);
    case NNR_OP_MAXPOOL2D_BACKWARD: return cpu_maxpool2d_backward(call);
    case NNR_OP_AVGPOOL2D: case NNR_OP_AVGPOOL2D_BACKWARD:
    case NNR_OP_ADAPTIVE_AVGPOOL2D: case NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD: return cpu_avgpool2d(call);
    case NNR_OP_BN_STATS: case NNR_OP_BN_AFFINE: case NNR_OP_BN_BACKWARD_REDUCE: case NNR_OP_BN_BACKWARD_APPLY: return cpu_batchnorm(call);
    case NNR_OP_SGD_STEP: return cpu_sgd_step(call);
    case NNR_OP_ADAM_STEP: return cpu_adam_step(call);
    case NNR_OP_RMSPROP_STEP: return cpu_rmsprop_step(call);
    case NNR_OP_ACTIVATION: case NNR_OP_ACTIVATION_GRAD: return cpu_activation(call);
    default: break;
    }
    switch (nnr_op_category_of(call->op)) {
    case NNR_OPCAT_UNARY: return cpu_unary(call);
    case NNR_OPCAT_BINARY: case NNR_OPCAT_COMPARE: return cpu_binary(call);
    case NNR_OPCAT_REDUCE: return cpu_reduce(call);
    }
    return cpu_error(NNR_ERR_UNSUPPORTED, "op %u is not implemented by the cpu backend", call->op);
}

static nnr_status set_num_threads(nnr_plugin *self, int n)
{
    (void)self;
    cpu_pool_set_threads(n);
    if (cpu_gemm_openblas_threads < 0) {
        const char *env = getenv("NNR_GEMM_THREADS");
        cpu_gemm_openblas_threads = env && strcmp(env, "openblas") == 0;
    }
    /* our pool splits gemms (gemm.c): one set of threads for the backend */
    cpu_blas_set_threads(cpu_gemm_openblas_threads ? n : 1);
    return NNR_OK;
}

/* nnr.backends.cpu.amx = false: bf16 matmuls without AMX tiles (f32 copies and sgemm);
 * nnr.backends.cpu.allow_bf16 = true: f32 gemms with bf16 products on AMX or AVX512-BF16 (off by default);
 * nnr.backends.cpu.bf16_dot = true|false|"auto": bf16 products on VDPBF16PS where AMX does not run them:
 *   always, never, or as its measured rate says (bf16.c); true needs a cpu class with AVX512-BF16;
 * nnr.backends.cpu.onednn = false: batched matmul and transposed convolution without oneDNN;
 * nnr.backends.cpu.gemv = false: linears of up to 16 rows through the gemm paths (for comparisons);
 * nnr.backends.cpu.onednn_gemm = false: gemm pieces of 17-512 rows on OpenBLAS, not oneDNN (onednn.c);
 * nnr.backends.cpu.onednn_conv = false: inference convolutions on im2col + OpenBLAS, not oneDNN */
static nnr_status set_bf16_dot(const char *value)
{
    int on = value && (strcmp(value, "1") == 0 || strcmp(value, "true") == 0);
    if (!value || (!on && strcmp(value, "0") && strcmp(value, "false") && strcmp(value, "auto")))
        return (nnr_status)cpu_error(NNR_ERR_INVALID, "cpu: option bf16_dot takes true, false or 'auto', got '%s'", value ? value : "(null)");
    if (on && cpu_isa_level < CPU_ISA_AVX512_BF16)
        return (nnr_status)cpu_error(NNR_ERR_UNSUPPORTED, "cpu: bf16_dot cannot be turned on: the cpu class is %s, without AVX512-BF16",
                                     cpu_isa_names[cpu_isa_level]);
    cpu_bf16_dot_setting = on ? 1 : strcmp(value, "auto") == 0 ? -1 : 0;
    return NNR_OK;
}

static nnr_status set_option(nnr_plugin *self, const char *key, const char *value)
{
    (void)self;
    if (strcmp(key, "devices") == 0) return set_devices(value);
    if (strcmp(key, "bf16_dot") == 0) return set_bf16_dot(value);
    int *flag = strcmp(key, "amx") == 0 ? &cpu_amx_enabled : strcmp(key, "allow_bf16") == 0 ? &cpu_allow_bf16
              : strcmp(key, "onednn") == 0 ? &cpu_onednn_enabled : strcmp(key, "gemv") == 0 ? &cpu_gemv_enabled
              : strcmp(key, "onednn_gemm") == 0 ? &cpu_onednn_gemm : strcmp(key, "onednn_conv") == 0 ? &cpu_onednn_conv_enabled : NULL;
    if (!flag) return (nnr_status)cpu_error(NNR_ERR_INVALID, "cpu: unknown option '%s' (known: amx, allow_bf16, bf16_dot, onednn, onednn_gemm, onednn_conv, gemv, devices)", key);
    if (!value || (strcmp(value, "1") && strcmp(value, "0") && strcmp(value, "true") && strcmp(value, "false")))
        return (nnr_status)cpu_error(NNR_ERR_INVALID, "cpu: option %s takes true or false, got '%s'", key, value ? value : "(null)");
    *flag = strcmp(value, "1") == 0 || strcmp(value, "true") == 0;
    if (flag == &cpu_onednn_enabled && *flag && !cpu_onednn_available()) {
        int st = cpu_error(NNR_ERR_UNSUPPORTED, "cpu: oneDNN cannot be turned on: %s", cpu_onednn_version());
        *flag = 0;
        return (nnr_status)st;
    }
    return NNR_OK;
}

/* "amx": true when bf16 matmuls run on AMX tiles; "bf16_dot": the VDPBF16PS setting (true, false, auto),
 * "bf16_dot_ratio" its measured multiply-adds a second over FMA's, "bf16_engine" the engines of bf16 matmuls and
 * of allow_bf16's f32 gemms ("amx", "avx512_bf16" or "f32" each); "allow_bf16": true when f32 gemms run on one; "onednn": true when
 * oneDNN is found and on; "onednn_version"; "onednn_calls", how many ops (pieces of a batch) it ran;
 * "isa", the CPU class the kernels run at (NNR_CPU_ISA, isa.h) and "isa_cpu", the CPU's own; "gemv": true
 * when linears of up to 16 rows run on the small-batch kernel (gemv.c), "gemv_calls" how many did
 * (booleans read as true/false) */
static nnr_status get_option(nnr_plugin *self, const char *key, char *buf, size_t n)
{
    (void)self;
    if (strcmp(key, "amx") == 0) snprintf(buf, n, "%s", cpu_amx_available() ? "true" : "false");
    else if (strcmp(key, "bf16_dot") == 0) {
        int mode = cpu_bf16_dot_mode();
        snprintf(buf, n, "%s", mode < 0 ? "auto" : mode ? "true" : "false");
    } else if (strcmp(key, "bf16_engine") == 0) {
        static const char *const names[3] = {"f32", "avx512_bf16", "amx"};
        snprintf(buf, n, "%s %s", names[cpu_bf16_engine(0)], names[cpu_bf16_engine(1)]);
    }
    else if (strcmp(key, "bf16_dot_ratio") == 0) snprintf(buf, n, "%.2f", cpu_bf16_dot_ratio());
    else if (strcmp(key, "allow_bf16") == 0) snprintf(buf, n, "%s", cpu_allow_bf16 && cpu_bf16_engine(1) > 0 ? "true" : "false");
    else if (strcmp(key, "onednn") == 0) snprintf(buf, n, "%s", cpu_onednn_available() ? "true" : "false");
    else if (strcmp(key, "onednn_version") == 0) snprintf(buf, n, "%s", cpu_onednn_version());
    else if (strcmp(key, "onednn_calls") == 0) snprintf(buf, n, "%ld", (long)cpu_onednn_calls);
    else if (strcmp(key, "onednn_gemm_calls") == 0) snprintf(buf, n, "%ld", (long)cpu_onednn_gemm_calls);
    else if (strcmp(key, "onednn_gemm") == 0) snprintf(buf, n, "%s", cpu_onednn_gemm && cpu_onednn_available() ? "true" : "false");
    else if (strcmp(key, "onednn_conv") == 0) snprintf(buf, n, "%s", cpu_onednn_conv_enabled && cpu_onednn_available() ? "true" : "false");
    else if (strcmp(key, "gemv") == 0) snprintf(buf, n, "%s", cpu_gemv_enabled ? "true" : "false");
    else if (strcmp(key, "gemv_calls") == 0) snprintf(buf, n, "%ld", (long)cpu_gemv_calls);
    else if (strcmp(key, "devices") == 0) snprintf(buf, n, "%d", cpu_devices);
    else if (strcmp(key, "isa") == 0) snprintf(buf, n, "%s", cpu_isa_names[cpu_isa_level]);
    else if (strcmp(key, "isa_cpu") == 0) snprintf(buf, n, "%s", cpu_isa_names[cpu_isa_cpu]);
    else return (nnr_status)cpu_error(NNR_ERR_INVALID, "cpu: unknown value '%s' (known: amx, allow_bf16, bf16_dot, bf16_dot_ratio, bf16_engine, onednn, onednn_version, onednn_calls, onednn_gemm, onednn_gemm_calls, onednn_conv, gemv, gemv_calls, devices, isa, isa_cpu)", key);
    return NNR_OK;
}

/* ABI 1.7: the pool for the extensions' kernels (plugins/quant), one set of threads for the process */
static nnr_status pool_parallel_for(nnr_plugin *self, int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t), void *ctx)
{
    (void)self;
    return (nnr_status)cpu_parallel_for(n, grain, fn, ctx);
}

static void shutdown(nnr_plugin *self)
{
    (void)self;
    cpu_pool_shutdown();
    cpu_thread_exit();
}

static char description[200];

static nnr_plugin cpu_plugin = {
    .struct_size = sizeof(nnr_plugin),
    .abi_version = NNR_ABI_VERSION,
    .name = "cpu",
    .version = "0.1.0",
    .description = description,
    .kind = NNR_PLUGIN_BACKEND,
    .flags = NNR_PLUGIN_HOST,
    .device_count = device_count,
    .device_name = device_name,
    .buffer_alloc = buffer_alloc,
    .buffer_free = buffer_free,
    .copy = copy,
    .supports = supports,
    .run = run,
    .set_num_threads = set_num_threads,
    .shutdown = shutdown,
    .set_option = set_option,
    .get_option = get_option,
    .device_props = device_props,
    .memory_info = memory_info,
    .parallel_for = pool_parallel_for,
};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void)
{
    /* the baseline build runs on any x86-64/aarch64; wider kernels are picked by the CPU class (isa.h) */
    return 100;
}

NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *host, uint32_t host_abi, nnr_plugin **out)
{
    if (NNR_ABI_MAJOR_OF(host_abi) != NNR_ABI_MAJOR || !host || !NNR_HAS_FIELD(host, nnr_host_api, num_threads)) {
        if (host && host->set_error) host->set_error("cpu plugin: host ABI major differs or host API table is too old");
        return NNR_ERR_ABI;
    }
    cpu_host = host;
    cpu_isa_cpu = cpu_isa_detect();
    char note[200];
    cpu_isa_level = cpu_isa_choose(getenv("NNR_CPU_ISA"), cpu_isa_cpu, note, sizeof note);
    if (note[0]) fprintf(stderr, "%s\n", note);
    cpu_blas_configure();       /* the libraries' environment now; they open on first use */
    cpu_onednn_configure();
    snprintf(description, sizeof description, "host memory; OpenBLAS gemm, kernels for the CPU class %s%s (NNR_CPU_ISA); "
             "devices cpu, cpu:1, ... as named (at most 16)", cpu_isa_names[cpu_isa_level],
             cpu_isa_level < cpu_isa_cpu ? ", forced" : "");
    *out = &cpu_plugin;     /* OpenBLAS opens on the first op that needs it (blas.c) */
    return NNR_OK;
}
