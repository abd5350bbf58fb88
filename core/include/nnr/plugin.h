/* nnrun backend plugin ABI.
 *
 * A plugin is a shared library exporting two functions:
 *
 *   int        nnr_plugin_probe(void);
 *       A score, 0 = unusable here. Checks CPUID/XCR0 or that a driver library
 *       exists; never initialises a driver. Highest score wins a device type.
 *   nnr_status nnr_plugin_init(const nnr_host_api *host, uint32_t host_abi,
 *                              nnr_plugin **out);
 *       Creates the plugin object. Must refuse (NNR_ERR_ABI) a host whose ABI
 *       major differs from the one the plugin was built against.
 *
 * Rules (docs/plugin-abi.md has the long form):
 *  - Every struct starts with struct_size; structs are append-only. A reader
 *    touches a field only when it lies inside struct_size (NNR_HAS_FIELD).
 *  - The ABI major must match exactly; a newer minor only appends.
 *  - Op ids are stable numbers and are never reused.
 *  - Every call returns a status; nothing aborts or throws across the boundary.
 *  - A plugin links nothing from the core: the host passes its services in.
 *
 * This header is plain C that LuaJIT's ffi.cdef can read: no macros or
 * bitfields inside declarations, no structs passed by value.
 */
#ifndef NNR_PLUGIN_H
#define NNR_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
enum {
    NNR_ABI_MAJOR = 1,
    NNR_ABI_MINOR = 3,
    NNR_MAX_DIMS = 8,
    NNR_MAX_INPUTS = 4,
    NNR_MAX_OUTPUTS = 4,
    NNR_MAX_PARAMS = 8
};

typedef enum nnr_status {
    NNR_OK = 0,
    NNR_ERR_INVALID = 1,      /* bad argument: shape, dtype, index */
    NNR_ERR_UNSUPPORTED = 2,  /* op/dtype combination not implemented */
    NNR_ERR_OOM = 3,          /* allocation failed */
    NNR_ERR_DEVICE = 4,       /* driver or device failure */
    NNR_ERR_INTERRUPTED = 5,  /* host asked to stop (Ctrl-C) */
    NNR_ERR_ABI = 6,          /* version mismatch */
    NNR_ERR_IO = 7,           /* file or parse error */
    NNR_ERR_INTERNAL = 8
} nnr_status;

typedef enum nnr_dtype {
    NNR_F32 = 0, NNR_F64 = 1, NNR_F16 = 2, NNR_BF16 = 3,
    NNR_I8 = 4, NNR_U8 = 5, NNR_I32 = 6, NNR_I64 = 7, NNR_BOOL = 8,
    NNR_DTYPE_COUNT = 9
} nnr_dtype;

/* Stable op ids. Append only; never renumber or reuse. */
typedef enum nnr_op {
    /* unary elementwise: inputs[0] -> outputs[0], same shape */
    NNR_OP_NEG = 1, NNR_OP_ABS = 2, NNR_OP_EXP = 3, NNR_OP_LOG = 4,
    NNR_OP_SQRT = 5, NNR_OP_TANH = 6, NNR_OP_SIGMOID = 7, NNR_OP_RELU = 8,
    NNR_OP_SIN = 9, NNR_OP_COS = 10, NNR_OP_SIGN = 11, NNR_OP_RECIPROCAL = 12,
    NNR_OP_LOGICAL_NOT = 13, NNR_OP_ERF = 14,
    /* binary elementwise: inputs[0], inputs[1] (same dtype, broadcast to the
     * output's shape with zero strides) -> outputs[0]. With one input the
     * other operand is the scalar params.f[0]; params.i[0] = 1 when the
     * scalar is the left operand. Comparisons write NNR_BOOL. */
    NNR_OP_ADD = 32, NNR_OP_SUB = 33, NNR_OP_MUL = 34, NNR_OP_DIV = 35,
    NNR_OP_POW = 36, NNR_OP_MAXIMUM = 37, NNR_OP_MINIMUM = 38,
    NNR_OP_EQ = 39, NNR_OP_NE = 40, NNR_OP_LT = 41, NNR_OP_LE = 42,
    NNR_OP_GT = 43, NNR_OP_GE = 44, NNR_OP_LOGICAL_AND = 45, NNR_OP_LOGICAL_OR = 46,
    /* inputs[0] where inputs[1] > 0, else 0: the gradient of relu (grad, x) */
    NNR_OP_RELU_GRAD = 47,
    /* where(cond bool, a, b) -> out; a and b may be replaced by scalars:
     * i[0] bit 0: a is f[0]; bit 1: b is f[1] (then inputs hold only those given) */
    NNR_OP_WHERE = 64,
    /* clamp(x) with f[0]=min, f[1]=max; i[0] bit 0 has min, bit 1 has max */
    NNR_OP_CLAMP = 65,
    /* copy inputs[0] into outputs[0]: same shape, any dtypes (a cast) */
    NNR_OP_COPY = 66,
    /* fill outputs[0] with f[0] */
    NNR_OP_FILL = 67,
    /* outputs[0] (1-d) [k] = f[0] + k * f[1] */
    NNR_OP_ARANGE = 68,
    /* random fills of outputs[0] from a counter-based generator (Philox4x32-10):
     * i[0] = seed, i[1] = counter offset. Element k of a contiguous output uses
     * counter offset + k, so every backend yields the same numbers. */
    NNR_OP_RAND_UNIFORM = 80,   /* [f[0], f[1]) */
    NNR_OP_RAND_NORMAL = 81,    /* mean f[0], std f[1] */
    NNR_OP_RAND_INT = 82,       /* integers in [f[0], f[1]) */
    /* reductions: inputs[0] has the output's dims first, then i[0] reduced
     * dims last; outputs[0] has the leading dims only. ARGMAX/ARGMIN write
     * NNR_I64 flat indices over the reduced dims. VAR: i[1] = correction,
     * i[2] = 1 for the square root (std). */
    NNR_OP_SUM = 96, NNR_OP_PROD = 97, NNR_OP_MAX = 98, NNR_OP_MIN = 99,
    NNR_OP_ARGMAX = 100, NNR_OP_ARGMIN = 101, NNR_OP_MEAN = 102, NNR_OP_VAR = 103,
    /* softmax over the last dim of inputs[0] into outputs[0] (same shape) */
    NNR_OP_SOFTMAX = 112, NNR_OP_LOG_SOFTMAX = 113,
    /* batched matmul: inputs [...,M,K] and [...,K,N] -> outputs[0] [...,M,N];
     * the leading batch dims are equal in all three (inputs broadcast with
     * stride 0); any strides */
    NNR_OP_MATMUL = 128,
    /* ABI 1.1: y = x W^T (+ b): inputs x [M, K], weight [N, K], optional bias [N], all
     * contiguous -> out [M, N] contiguous; params i[0] = 1: relu(y) (params may be NULL: 0).
     * The core uses it on backends built against ABI 1.1 or later whose supports() takes the call,
     * and MATMUL, ADD (and RELU) elsewhere. */
    NNR_OP_LINEAR = 129,
    /* gather along dim i[0]: out[..j..] = in[..index[..j..]..]; index I64 0-based */
    NNR_OP_GATHER = 144,
    /* index_select along dim i[0] with 1-d I64 index inputs[1] */
    NNR_OP_INDEX_SELECT = 145,
    /* accumulate into outputs[0] (read and written) along dim i[0]:
     * SCATTER_ADD: out[..index[j..]..] += src[j..] (index and src share a shape)
     * INDEX_ADD: out.select(dim, index[j]) += src.select(dim, j) (index 1-d)
     * inputs: index (I64, 0-based), src */
    NNR_OP_SCATTER_ADD = 146, NNR_OP_INDEX_ADD = 147,
    /* 2-d convolution, NCHW. i: stride h, w; padding h, w; dilation h, w; groups; and for CONV2D
     * i[7] = 1: relu applied to the output (ABI 1.1; the core asks for it on backends built against 1.1 or later).
     * CONV2D: inputs x [N,C,H,W], weight [O,C/groups,KH,KW], optional bias [O] -> out [N,O,HO,WO]
     * CONV2D_GRAD_INPUT: inputs grad_out, weight -> grad_x (its shape given by the output)
     * CONV2D_GRAD_WEIGHT: inputs x, grad_out -> grad_weight, and (optional, ABI 1.1) grad_bias [O] as
     *   outputs[1]; the core asks for it on the cpu backend only, and sums grad_out itself elsewhere */
    NNR_OP_CONV2D = 160, NNR_OP_CONV2D_GRAD_INPUT = 161, NNR_OP_CONV2D_GRAD_WEIGHT = 162,
    /* pooling, NCHW. i: kernel h, w; stride h, w; padding h, w; dilation h, w (max) or
     * count_include_pad (avg, i[6]).
     * MAXPOOL2D: x -> outputs[0] values, outputs[1] I64 argmax (flat h*W+w within the plane); the core
     *   leaves the argmax out (n_outputs 1) on the cpu backend when no gradient is recorded (ABI 1.1)
     * MAXPOOL2D_BACKWARD: inputs grad_out, argmax -> grad_x (fully written)
     * AVGPOOL2D / _BACKWARD: x -> y; grad_out -> grad_x
     * ADAPTIVE_AVGPOOL2D / _BACKWARD: output size from the output's shape */
    NNR_OP_MAXPOOL2D = 163, NNR_OP_MAXPOOL2D_BACKWARD = 164,
    NNR_OP_AVGPOOL2D = 165, NNR_OP_AVGPOOL2D_BACKWARD = 166,
    NNR_OP_ADAPTIVE_AVGPOOL2D = 167, NNR_OP_ADAPTIVE_AVGPOOL2D_BACKWARD = 168,
    /* batch norm over dim 1 of a contiguous [N, C, ...] x, in pieces the core composes:
     * BN_STATS: x -> outputs mean [C], invstd [C] (biased variance; f[0] = eps)
     * BN_AFFINE: x, coef [2, C] (scale, shift) -> y = x * scale + shift
     * BN_BACKWARD_REDUCE: dy, x, coef [2, C] (mean, invstd) -> [2, C] (sum dy, sum dy * xhat)
     * BN_BACKWARD_APPLY: dy, x, coef [3, C] (a, b, c) -> dx = a dy + b x + c */
    NNR_OP_BN_STATS = 169, NNR_OP_BN_AFFINE = 170, NNR_OP_BN_BACKWARD_REDUCE = 171, NNR_OP_BN_BACKWARD_APPLY = 172,
    /* fused optimizer steps: outputs are read and updated in place, inputs[0] is the
     * gradient; all contiguous, one dtype.
     * SGD: outputs param, momentum buffer (absent when momentum is 0);
     *      f: lr, momentum, dampening, weight_decay; i[0]: nesterov, i[1]: buffer is new
     * ADAM: outputs param, exp_avg, exp_avg_sq; f: lr, beta1, beta2, eps, weight_decay,
     *       bias_correction1, bias_correction2; i[0]: decoupled weight decay (AdamW)
     * RMSPROP: outputs param, square_avg, momentum buffer (absent when momentum is 0);
     *       f: lr, alpha, eps, weight_decay, momentum */
    NNR_OP_SGD_STEP = 192, NNR_OP_ADAM_STEP = 193, NNR_OP_RMSPROP_STEP = 194,
    /* ABI 1.2: int8 ops that the quant extension plugin (plugins/quant) adds on the cpu device.
     * QUANT_WEIGHT: W f32 [N, K] -> q i8 [N, K], scale f32 [N]: symmetric per output channel,
     *   scale = max|W_n| / 127 (1 for a zero row), q = round-to-nearest-even(W / scale) in [-127, 127]
     * QUANT_PACK: q i8 [N, K] -> packed i8 [ceil(N/16), ceil(K/4), 16, 4] (blocks of 16 channels by 4
     *   k, the layout of vpdpbusd), wsum i32 [N] (the row sums of q)
     * QUANT_LINEAR: x f32 [M, K], packed, meta f32 [3, N] (scale, wsum, bias) -> y f32 [M, N]: each
     *   row of x quantized symmetrically (max|x_m| / 127, nearest even), int32 dot products, then
     *   y = fma(acc, sx * sw, bias); i[0] = 1: relu; i[1] = K; i[2] kernel: 0 the best this CPU has,
     *   1 portable C, 2 AVX2, 3 AVX-VNNI, 4 AVX-512 VNNI (all give identical results) */
    NNR_OP_QUANT_WEIGHT = 208, NNR_OP_QUANT_PACK = 209, NNR_OP_QUANT_LINEAR = 210,
    /* ABI 1.3: collectives across processes on a backend's own devices (the cuda backend: NCCL), once
     * the core has set up the communicator with set_option("nccl_comm", ...). outputs[0] is reduced or
     * overwritten in place, contiguous. ALL_REDUCE: i[0] = 0 sum, 1 max, 2 min, 3 product.
     * BROADCAST: i[0] = the root rank. */
    NNR_OP_ALL_REDUCE = 224, NNR_OP_BROADCAST = 225
} nnr_op;

/* A strided view of device memory, as a kernel sees it. */
typedef struct nnr_tensor_desc {
    uint32_t struct_size;
    int32_t dtype;               /* nnr_dtype */
    int32_t ndim;                /* 0..NNR_MAX_DIMS */
    int32_t device;              /* the plugin's own device index */
    int64_t sizes[8];            /* NNR_MAX_DIMS */
    int64_t strides[8];          /* in elements; 0 for broadcast dims */
    void *data;                  /* address of element (0,...,0) */
} nnr_tensor_desc;

typedef struct nnr_op_params {
    uint32_t struct_size;
    uint32_t reserved;
    double f[8];                 /* NNR_MAX_PARAMS */
    int64_t i[8];
} nnr_op_params;

typedef struct nnr_op_call {
    uint32_t struct_size;
    uint32_t op;                 /* nnr_op */
    int32_t n_inputs;
    int32_t n_outputs;
    const nnr_tensor_desc *inputs[4];   /* NNR_MAX_INPUTS */
    const nnr_tensor_desc *outputs[4];  /* NNR_MAX_OUTPUTS; written, never reallocated */
    const nnr_op_params *params;
} nnr_op_call;

typedef enum nnr_log_level {
    NNR_LOG_DEBUG = 0, NNR_LOG_INFO = 1, NNR_LOG_WARN = 2, NNR_LOG_ERROR = 3
} nnr_log_level;

typedef enum nnr_copy_kind {
    NNR_COPY_HOST_TO_DEVICE = 0, NNR_COPY_DEVICE_TO_HOST = 1, NNR_COPY_DEVICE_TO_DEVICE = 2
} nnr_copy_kind;

/* Services the host lends a plugin. */
typedef struct nnr_host_api {
    uint32_t struct_size;
    uint32_t abi_version;        /* (major << 16) | minor */
    void (*log)(int level, const char *plugin, const char *message);
    /* sets the thread's error message; the plugin then returns a status */
    void (*set_error)(const char *message);
    void *(*host_alloc)(size_t nbytes);   /* 64-byte aligned, NULL on failure */
    void (*host_free)(void *ptr);
    int (*interrupted)(void);             /* non-zero once Ctrl-C was pressed */
    int (*num_threads)(void);             /* threads a backend may use */
} nnr_host_api;

typedef enum nnr_plugin_kind {
    NNR_PLUGIN_BACKEND = 0,      /* owns devices and memory */
    NNR_PLUGIN_EXTENSION = 1     /* adds ops/transforms to existing devices */
} nnr_plugin_kind;

typedef struct nnr_plugin nnr_plugin;

/* The plugin object. Optional members may be NULL. */
struct nnr_plugin {
    uint32_t struct_size;
    uint32_t abi_version;        /* the ABI the plugin was built against */
    const char *name;            /* "cpu", "cuda": also the device type */
    const char *version;
    const char *description;
    int32_t kind;                /* nnr_plugin_kind */
    int32_t reserved;
    void *impl;                  /* plugin private */

    nnr_status (*device_count)(nnr_plugin *self, int *count);
    nnr_status (*device_name)(nnr_plugin *self, int device, char *buf, size_t buflen);
    nnr_status (*buffer_alloc)(nnr_plugin *self, int device, size_t nbytes, void **out);
    void (*buffer_free)(nnr_plugin *self, int device, void *ptr);
    /* contiguous byte copies between host memory and this plugin's device */
    nnr_status (*copy)(nnr_plugin *self, int device, int kind, void *dst, const void *src, size_t nbytes);
    /* 1 if run() handles this call (op, dtypes, layout); 0 otherwise */
    int (*supports)(nnr_plugin *self, const nnr_op_call *call);
    nnr_status (*run)(nnr_plugin *self, const nnr_op_call *call);
    nnr_status (*synchronize)(nnr_plugin *self, int device);    /* optional */
    nnr_status (*set_num_threads)(nnr_plugin *self, int n);     /* optional */
    void (*shutdown)(nnr_plugin *self);                         /* optional */
    /* optional, ABI 1.1: page-locked host memory, so copies to this plugin's devices can be
     * asynchronous (the loader's pin_memory); check NNR_HAS_FIELD before use */
    nnr_status (*host_alloc_pinned)(nnr_plugin *self, size_t nbytes, void **out);
    void (*host_free_pinned)(nnr_plugin *self, void *ptr, size_t nbytes);
    /* optional, ABI 1.2: a named setting (nnr.backends.<name>.<key> = value from Lua, e.g. cuda's
     * allow_tf32 = "1"); NNR_ERR_INVALID with a message for a key the plugin does not know */
    nnr_status (*set_option)(nnr_plugin *self, const char *key, const char *value);
    /* optional, ABI 1.3: reads a named value into buf (NUL-terminated), e.g. cuda's "nccl_unique_id"
     * (hex) that rank 0 makes and the core broadcasts over MPI */
    nnr_status (*get_option)(nnr_plugin *self, const char *key, char *buf, size_t buflen);
};

typedef int (*nnr_plugin_probe_fn)(void);
typedef nnr_status (*nnr_plugin_init_fn)(const nnr_host_api *host, uint32_t host_abi, nnr_plugin **out);
/* NNR_CDEF_END */

#define NNR_ABI_VERSION ((uint32_t)((NNR_ABI_MAJOR << 16) | NNR_ABI_MINOR))
#define NNR_ABI_MAJOR_OF(v) ((uint32_t)(v) >> 16)
/* true when struct *p (of type T, with struct_size) carries field F */
#define NNR_HAS_FIELD(p, T, F) \
    ((p)->struct_size >= offsetof(T, F) + sizeof(((T *)0)->F))

#if defined(_WIN32)
#define NNR_PLUGIN_EXPORT __declspec(dllexport)
#else
#define NNR_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
}
#endif
#endif /* NNR_PLUGIN_H */
