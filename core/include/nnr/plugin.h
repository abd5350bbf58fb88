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
 * The part between the NNR_CDEF markers, run through the C preprocessor, is
 * what LuaJIT's ffi.cdef reads (cmake/gen_cdef.cmake): no bitfields, no
 * structs passed by value, no system headers inside it.
 */
#ifndef NNR_PLUGIN_H
#define NNR_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include "plugin_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
enum {
    NNR_ABI_MAJOR = 1,
    NNR_ABI_MINOR = 10,
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

/* Op categories: the family an op belongs to, which says how its call is laid out (below). A backend
 * routes by category, never by ranges of ids. */
typedef enum nnr_opcat {
    NNR_OPCAT_UNARY = 1,       /* inputs[0] -> outputs[0], same shape */
    NNR_OPCAT_BINARY = 2,      /* inputs[0], inputs[1] (or one input and a scalar) -> outputs[0] */
    NNR_OPCAT_COMPARE = 3,     /* as BINARY, writing NNR_BOOL */
    NNR_OPCAT_SELECT = 4,      /* where, clamp */
    NNR_OPCAT_COPY = 5,        /* a strided copy with a cast */
    NNR_OPCAT_FILL = 6,        /* fill, arange: no inputs */
    NNR_OPCAT_RANDOM = 7,      /* counter-based random fills */
    NNR_OPCAT_REDUCE = 8,
    NNR_OPCAT_SOFTMAX = 9,
    NNR_OPCAT_MATMUL = 10,     /* matmul, linear */
    NNR_OPCAT_INDEX = 11,      /* gather, index_select, scatter_add, index_add */
    NNR_OPCAT_CONV = 12,
    NNR_OPCAT_POOL = 13,
    NNR_OPCAT_NORM = 14,
    NNR_OPCAT_OPTIM = 15,      /* fused optimizer steps */
    NNR_OPCAT_QUANT = 16,      /* int8 ops (plugins/quant) */
    NNR_OPCAT_COLLECTIVE = 17, /* across processes (NCCL) */
    NNR_OPCAT_SORT = 18,       /* sort, topk: values and I64 indices along the last dim */
    NNR_OPCAT_SCAN = 19,       /* cumsum, cumprod along the last dim */
    NNR_OPCAT_RNN = 20,        /* (ABI 1.6) a recurrent cell's gates: one time step of RNN, LSTM, GRU */
    NNR_OPCAT_ATTENTION = 21   /* (ABI 1.7) decoding attention against a key/value cache */
} nnr_opcat;

/* The op table (NNR_OP_TABLE, the nnr_op ids) and what each op's operands and params mean are in
 * nnr/plugin_ops.h, included above. */

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

/* Services the host lends a plugin. The table passed to nnr_plugin_init, and every function in it,
 * stays valid until the plugin's shutdown() has returned: a plugin may keep the pointer. Every
 * function may be called from any thread. */
typedef struct nnr_host_api {
    uint32_t struct_size;
    uint32_t abi_version;        /* (major << 16) | minor */
    void (*log)(int level, const char *plugin, const char *message);
    /* sets the calling thread's error message; the plugin then returns a status */
    void (*set_error)(const char *message);
    void *(*host_alloc)(size_t nbytes);   /* 64-byte aligned, NULL on failure */
    void (*host_free)(void *ptr);
    int (*interrupted)(void);             /* non-zero once Ctrl-C was pressed */
    int (*num_threads)(void);             /* threads a backend may use */
    /* ABI 1.7: runs fn(ctx, begin, end) over [0, n) in up to num_threads() contiguous pieces of at least
     * grain (the calling thread runs one) on the host backend's threads, so that an extension's kernels
     * and the backend's share one set of threads; inline (one piece) when the host backend has none.
     * Returns NNR_ERR_INTERRUPTED after Ctrl-C, else NNR_OK. Not to be called from inside fn. */
    int (*parallel_for)(int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);
} nnr_host_api;

typedef enum nnr_plugin_kind {
    NNR_PLUGIN_BACKEND = 0,      /* owns devices and memory */
    NNR_PLUGIN_EXTENSION = 1     /* adds ops to devices whose memory is host memory (plugins/quant) */
} nnr_plugin_kind;

/* nnr_plugin.flags (ABI 1.4) */
typedef enum nnr_plugin_flag {
    /* a backend that runs every op of the table on host memory and offers itself as the host backend:
     * the core makes its own host tensors there (loader batches, files read) and runs what other
     * backends lack on it. Of the loaded backends that offer it, the highest probe score wins. */
    NNR_PLUGIN_HOST = 1
} nnr_plugin_flag;

/* nnr_device_props.flags (ABI 1.4) */
typedef enum nnr_device_flag {
    /* the device's data pointers are host addresses: the core reads and writes them directly, and
     * runs ops the backend lacks on them without copies */
    NNR_DEVICE_HOST_MEMORY = 1
} nnr_device_flag;

/* What the core knows of a device, declared by its plugin (ABI 1.4) instead of guessed from names */
typedef struct nnr_device_props {
    uint32_t struct_size;
    uint32_t flags;              /* nnr_device_flag bits */
    uint64_t total_memory;       /* bytes; 0 when unknown */
    int32_t compute_units;       /* cores, multiprocessors; 0 when unknown */
    int32_t reserved;
    char model[96];              /* "Intel(R) Xeon(R) Platinum 8480+", "NVIDIA H200" */
} nnr_device_props;

typedef struct nnr_plugin nnr_plugin;

/* The plugin object. Optional members may be NULL. What the core promises and expects:
 *  - Devices: a plugin's devices are numbered 0..count-1 (`device` below); descriptors carry that
 *    number too. A pointer from buffer_alloc belongs to the device it was allocated on.
 *  - copy(): HOST_TO_DEVICE writes dst on `device` from host memory src; DEVICE_TO_HOST reads src on
 *    `device` into host memory dst; DEVICE_TO_DEVICE copies within `device`. Between two devices of
 *    one plugin the core calls copy_between() when the plugin has it, and otherwise stages the bytes
 *    through host memory with a DEVICE_TO_HOST and a HOST_TO_DEVICE copy.
 *  - Order: the calls on one device take effect in the order the core makes them, as if queued on one
 *    stream. run() and copy() may return before their work is done, but every later call on that
 *    device sees its results. A DEVICE_TO_HOST copy returns only once the bytes are in host memory.
 *    A HOST_TO_DEVICE copy may return before it has read its source only when the source is
 *    page-locked memory from this plugin's host_alloc_pinned; the core leaves such a block unchanged
 *    until synchronize() has returned for the device. synchronize(device) returns when every call
 *    made on the device so far is complete. buffer_free() may be called while queued work still uses
 *    the buffer: the plugin orders the free after that work. A device that declares
 *    NNR_DEVICE_HOST_MEMORY is synchronous: its run() and copy() are complete when they return, since
 *    the core reads and writes that memory directly (the fallback in place, element reads, files).
 *  - Threads: device_count, device_name, device_props, set_num_threads, set_option, get_option and
 *    shutdown are called by one thread at a time (device_props once per device, at load). Everything
 *    else (supports, run, copy, copy_between, buffer_alloc, buffer_free, synchronize, memory_info,
 *    release_memory, host_alloc_pinned, host_free_pinned) may be called from several threads at once, for different devices and for the
 *    same one (DataParallel runs a thread per device; the loader's workers allocate host tensors).
 *  - Scalars: params.f holds doubles. An f32 kernel computes with the scalar rounded to f32 (float)s,
 *    an f64 kernel with s itself; f16 and bf16 kernels compute in f32 or wider, with s at least to f32
 *    precision, and round each result once. In integer dtypes the core passes only integral scalars;
 *    a kernel converts them as nnr_double_to_i64 does (saturating).
 *  - Loading: every file whose name ends in .so in a plugin folder is opened with dlopen, which runs
 *    its constructors: put only trusted libraries there. nnr_plugin_probe() returns a score: 0 means
 *    unusable on this machine (the plugin is refused with that reason); higher is better. Of the
 *    loaded plugins with one name, the highest score is kept and the others refused; on a tie the one
 *    loaded first wins. Loading order: the entries of NNR_PLUGIN_PATH, then the folders and files the
 *    registration files name (NNR_PLUGIN_CONF_DIR, default /etc/nnr/plugins.d, *.conf in name order),
 *    then the nnr folder beside libnnr; within a folder, files in byte order of their names. */
struct nnr_plugin {
    uint32_t struct_size;
    uint32_t abi_version;        /* the ABI the plugin was built against */
    const char *name;            /* "cpu", "cuda": also the device type */
    const char *version;
    const char *description;
    int32_t kind;                /* nnr_plugin_kind */
    int32_t flags;               /* ABI 1.4 (reserved before, 0): nnr_plugin_flag bits */
    void *impl;                  /* plugin private */

    nnr_status (*device_count)(nnr_plugin *self, int *count);
    nnr_status (*device_name)(nnr_plugin *self, int device, char *buf, size_t buflen);
    nnr_status (*buffer_alloc)(nnr_plugin *self, int device, size_t nbytes, void **out);
    void (*buffer_free)(nnr_plugin *self, int device, void *ptr);
    /* contiguous byte copies between host memory and this plugin's device (see above) */
    nnr_status (*copy)(nnr_plugin *self, int device, int kind, void *dst, const void *src, size_t nbytes);
    /* 1 if run() handles this call (op, dtypes, layout, params); 0 otherwise. The core offers fused
     * forms (LINEAR, CONV2D's relu, the relu mask of the conv gradients, grad_bias as a second output,
     * MAX_POOL2D without the argmax) only when supports() takes them, and composes otherwise. */
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
    /* optional, ABI 1.4: the device's properties; without it a device is assumed not to be host memory */
    nnr_status (*device_props)(nnr_plugin *self, int device, nnr_device_props *out);
    /* optional, ABI 1.4: the device memory's free and total bytes now */
    nnr_status (*memory_info)(nnr_plugin *self, int device, uint64_t *free_bytes, uint64_t *total_bytes);
    /* optional, ABI 1.4: gives back what the plugin keeps for the device beyond live buffers (scratch,
     * workspaces, its own caches). The caching allocator calls it when an allocation fails, after
     * dropping its own cache, before it tries once more. */
    void (*release_memory)(nnr_plugin *self, int device);
    /* optional, ABI 1.4: nbytes from src on src_device to dst on dst_device, two devices of this plugin */
    nnr_status (*copy_between)(nnr_plugin *self, int dst_device, void *dst, int src_device, const void *src, size_t nbytes);
    /* optional, ABI 1.7, for the host backend: its thread pool, as nnr_host_api.parallel_for describes;
     * the core hands extensions' calls to it */
    nnr_status (*parallel_for)(nnr_plugin *self, int64_t n, int64_t grain, void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx);
};

typedef int (*nnr_plugin_probe_fn)(void);
typedef nnr_status (*nnr_plugin_init_fn)(const nnr_host_api *host, uint32_t host_abi, nnr_plugin **out);
/* NNR_CDEF_END */

/* One row of the op table, for code that looks an op up by its number */
typedef struct nnr_op_info {
    uint32_t op;
    const char *name;
    int32_t category;            /* nnr_opcat */
    int8_t min_inputs, max_inputs, min_outputs, max_outputs;
} nnr_op_info;

/* the table's row for op, or NULL for a number no op has (a plugin built against an older header
 * answers NULL for ops added since: supports() then says no) */
#ifndef __cplusplus
/* C: one array indexed by number (a few instructions; dispatch asks it on every op) */
static inline const nnr_op_info *nnr_op_rows_(uint32_t *count)
{
    static const nnr_op_info rows[] = {
#define NNR_OP_INFO_ROW_(ID, num, name, cat, in_min, in_max, out_min, out_max) \
    [num] = {num, name, NNR_OPCAT_##cat, in_min, in_max, out_min, out_max},
        NNR_OP_TABLE(NNR_OP_INFO_ROW_)
#undef NNR_OP_INFO_ROW_
    };
    *count = (uint32_t)(sizeof rows / sizeof rows[0]);
    return rows;
}
static inline const nnr_op_info *nnr_op_info_of(uint32_t op)
{
    uint32_t n;
    const nnr_op_info *rows = nnr_op_rows_(&n);
    return op < n && rows[op].name ? &rows[op] : 0;
}
/* op's category (nnr_opcat), 0 for an unknown number (the rows between ops are all zero) */
static inline int nnr_op_category_of(uint32_t op)
{
    uint32_t n;
    const nnr_op_info *rows = nnr_op_rows_(&n);
    return op < n ? rows[op].category : 0;
}
#else
/* C++ has no designated array initializers: a switch over the same table */
static inline const nnr_op_info *nnr_op_info_of(uint32_t op)
{
    switch (op) {
#define NNR_OP_INFO_CASE_(ID, num, name, cat, in_min, in_max, out_min, out_max) \
    case num: { static const nnr_op_info info = {num, name, NNR_OPCAT_##cat, in_min, in_max, out_min, out_max}; return &info; }
    NNR_OP_TABLE(NNR_OP_INFO_CASE_)
#undef NNR_OP_INFO_CASE_
    }
    return 0;
}
static inline int nnr_op_category_of(uint32_t op)
{
    const nnr_op_info *info = nnr_op_info_of(op);
    return info ? info->category : 0;
}
#endif

/* what every backend asks of a descriptor: its element count, and whether it is dense in row-major
 * order (size-1 dimensions may have any stride) */
static inline int64_t nnr_desc_numel(const nnr_tensor_desc *d)
{
    int64_t n = 1;
    for (int i = 0; i < d->ndim; i++) n *= d->sizes[i];
    return n;
}

static inline int nnr_desc_is_contiguous(const nnr_tensor_desc *d)
{
    int64_t expected = 1;
    for (int i = d->ndim - 1; i >= 0; i--) {
        if (d->sizes[i] != 1 && d->strides[i] != expected) return 0;
        expected *= d->sizes[i];
    }
    return 1;
}

/* the operand checks of the ops whose layout has more to it than the op table's counts */
#include "plugin_calls.h"

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
