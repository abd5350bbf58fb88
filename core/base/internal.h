/* Private to libnnr: what the base part (errors, the registry and the device table, the caching
 * allocator, the profiler, the random generator) offers the parts above it. Nothing here crosses
 * the plugin boundary. */
#ifndef NNR_BASE_INTERNAL_H
#define NNR_BASE_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "nnr/base.h"
#include "nnr/profiler.h"
#include "nnr/dtype.h"

/* everything below is private to libnnr: direct calls, no PLT */
#pragma GCC visibility push(hidden)

/* ---- errors (error.c) ---- */
int nnr_errorf(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "[2, 3]" into buf */
const char *nnr_shape_str(char *buf, size_t n, int ndim, const int64_t *sizes);
#define NNR_SHAPE_BUF 160
int nnr_interrupted_flag(void);
/* this thread ignores Ctrl-C (the loader's workers) */
void nnr_ignore_interrupts(int on);

/* ---- size arithmetic: every product or sum of sizes, counts, strides and byte lengths goes through
 * these (PyTorch's "integer multiplication overflow" check). False when an operand is negative or
 * the result does not fit an int64; *r is then -1. */
static inline bool nnr_size_mul(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, r)) { *r = -1; return false; }
    return true;
}
static inline bool nnr_size_add(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, r)) { *r = -1; return false; }
    return true;
}
/* the product of n sizes times elem (1 for an element count); false on a negative size or overflow,
 * also when a later size is 0 (as PyTorch's safe_multiplies: every partial product of a shape must
 * fit, since strides and loops over the shape compute them) */
static inline bool nnr_size_product(int n, const int64_t *sizes, int64_t elem, int64_t *r)
{
    int64_t p = elem;
    for (int i = 0; i < n; i++)
        if (!nnr_size_mul(p, sizes[i], &p)) { *r = -1; return false; }
    *r = p;
    return true;
}
/* a double (a Lua number, a transform's parameter) as a size: finite, whole, in [lo, hi] */
static inline bool nnr_size_from_double(double v, int64_t lo, int64_t hi, int64_t *r)
{
    if (!(v >= (double)lo && v <= (double)hi && v < 9223372036854775808.0) || v != (double)(int64_t)v) { *r = -1; return false; }
    *r = (int64_t)v;
    return true;
}

/* ---- environment variables (error.c) ---- */
/* the whole number an environment variable spells, in [lo, hi]; dflt when it is unset, and when it
 * is anything else, with a warning on stderr naming the variable (callers read each once, at init) */
int64_t nnr_env_int(const char *name, int64_t dflt, int64_t lo, int64_t hi);

/* ---- plugins (plugins.c) ---- */
enum { NNR_MAX_PLUGINS = 32, NNR_MAX_DEVICES = 64 };
typedef struct nnr_plugin_record {
    char path[512];
    char name[64];
    char version[32];
    char message[256];   /* why it was refused or has no device, or its description */
    int loaded;
    int score;           /* its probe's */
    int devices;         /* how many it added */
    void *handle;
    nnr_plugin *plugin;
} nnr_plugin_record;
/* loads the plugins of the search path (nnr/plugin.h), then those of default_dir (may be NULL) */
void nnr_plugins_scan(const char *default_dir);
int nnr_plugin_record_count(void);
nnr_plugin_record *nnr_plugin_record_at(int i);

/* ---- the device table (devices.c) ---- */
typedef struct nnr_device_entry {
    nnr_plugin *plugin;
    int local_index;
    int host_memory;     /* the plugin's memory for this device is host memory (NNR_DEVICE_HOST_MEMORY) */
    char name[96];       /* "cpu", "cuda:0" */
    char label[128];     /* the plugin's description of the device */
    nnr_device_props props;  /* as the plugin declared them at load (zeros before ABI 1.4), host memory marked */
} nnr_device_entry;

extern const nnr_host_api nnr_host;
int nnr_device_total(void);        /* the devices counted so far (no other backend started) */
void nnr_devices_all(void);        /* counts the other backends' devices, once */
const nnr_device_entry *nnr_device_get(int device);
/* the host device: the first device of the host backend, where tensors the core makes in host memory
 * live (loader batches, files read, the cpu fallback's operands) */
int nnr_host_device(void);
/* the device's data pointers are host addresses (the core may read and write them directly) */
bool nnr_device_is_host_memory(int device);
/* the first loaded extension plugin that takes this call, or NULL (for devices with host memory) */
/* p was built against an ABI that has op (a plugin never sees an op newer than its header) */
int nnr_plugin_knows_op(const nnr_plugin *p, uint32_t op);
nnr_plugin *nnr_extension_for(const nnr_op_call *call);
/* the plugin's own caches for the device given back (release_memory, ABI 1.4), if it has any */
void nnr_device_release_memory(int device);

/* ---- the caching allocator (allocator.c) and page-locked host memory (pinned.c) ---- */
/* reads the allocator's settings (NNR_CACHE_LIMIT_MB, NNR_GC_MIB) now rather than at the first block */
void nnr_allocator_init(void);
void *nnr_alloc_device(int device, size_t nbytes);
void nnr_free_device(int device, void *ptr, size_t nbytes);
/* live bytes of every device (the GC trigger) and of one */
void nnr_account(int64_t delta);
void nnr_account_device(int device, int64_t delta);
/* bytes this thread allocated (the profiler charges them to the next op) */
extern _Thread_local int64_t nnr_tl_alloc_bytes;
/* page-locked host memory from the first plugin that offers it (cached by size); NULL with *plugin
 * NULL when none does */
void *nnr_alloc_pinned(size_t nbytes, nnr_plugin **plugin);
nnr_plugin *nnr_pinned_plugin(void);    /* the first plugin offering page-locked memory, or NULL */
void nnr_free_pinned(nnr_plugin *plugin, void *ptr, size_t nbytes);
void nnr_drop_pinned_cache(void);

/* ---- the profiler (profiler.c): off, it costs one predictable branch per op ---- */
enum { NNR_PROF_OP = 0, NNR_PROF_SCOPE = 1, NNR_PROF_AUTOGRAD = 2, NNR_PROF_LOADER = 3, NNR_PROF_WAIT = 4, NNR_PROF_ALLOC = 5 };
extern volatile int nnr_profiling;
int64_t nnr_prof_now(void);
/* one finished event of this thread; name must outlive the profile (static strings, interned names) */
void nnr_prof_record(int kind, const char *name, int64_t start_ns, int64_t dur_ns, int64_t bytes);
/* one finished op of this thread: its bytes are what the thread allocated since its previous op */
void nnr_prof_record_op(const char *name, int64_t start_ns);

/* ---- the random generator (random.c): one Philox for tensors and the loader ---- */
/* reserves count numbers of the global stream for a tensor fill: its key and first counter */
void nnr_rng_take(uint64_t count, uint64_t *seed, uint64_t *offset);
/* a keyed stream of numbers that depends on (seed, stream, epoch, index) only */
typedef struct nnr_rng_stream {
    uint64_t key, counter;
    uint32_t block[4];
    int used;                    /* words of block already handed out (4: draw the next block) */
} nnr_rng_stream;
void nnr_rng_stream_init(nnr_rng_stream *s, uint64_t seed, uint64_t stream, uint64_t epoch, uint64_t index);
uint64_t nnr_rng_next_u64(nnr_rng_stream *s);
double nnr_rng_uniform(nnr_rng_stream *s);                 /* [0, 1), 53 bits */
uint64_t nnr_rng_below(nnr_rng_stream *s, uint64_t n);     /* uniform in [0, n), unbiased */

#pragma GCC visibility pop
#endif
