/* The base of the core (core/base/): errors and interrupts, the plugin registry and the device
 * table, threads, the caching allocator's accounting, the random generator. */
#ifndef NNR_BASE_H
#define NNR_BASE_H

#include "nnr/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
/* --- library, errors --- */
const char *nnr_version(void);
/* the declarations of the public headers as text, for ffi.cdef */
const char *nnr_cdef_text(void);
/* loads plugins (idempotent); returns the number of plugins loaded */
int nnr_init(void);
const char *nnr_last_error(void);
int nnr_last_status(void);
/* sets the thread's error and returns status (used by the Lua layer too) */
int nnr_set_error(int status, const char *message);

/* Ctrl-C: a signal handler calls nnr_interrupt(); the next op fails with
 * NNR_ERR_INTERRUPTED and clears the flag. */
void nnr_interrupt(void);
int nnr_interrupt_pending(void);
void nnr_clear_interrupt(void);

/* --- plugins --- */
int nnr_plugin_count(void);                 /* every plugin seen, refused ones too */
const char *nnr_plugin_name(int i);
const char *nnr_plugin_path(int i);
const char *nnr_plugin_version(int i);
int nnr_plugin_loaded(int i);               /* 1 loaded, 0 refused */
const char *nnr_plugin_message(int i);      /* why it was refused or has no device, or its description */
int nnr_plugin_device_count(int i);         /* devices it added */
int nnr_plugin_kind_of(int i);               /* NNR_PLUGIN_BACKEND or _EXTENSION; -1 when refused before it said */
int nnr_plugin_abi(int i);                  /* the ABI it was built against, (major << 16) | minor; -1 unknown */
/* index of the plugin named name (or whose file is libnnr_<name>.so), -1 when none */
int nnr_plugin_find(const char *name);
/* a backend setting, e.g. ("cuda", "allow_tf32", "1"); an error names unknown plugins and keys */
int nnr_plugin_set_option(const char *name, const char *key, const char *value);
/* reads a plugin's named value (plugin ABI 1.3 get_option) into buf, NUL-terminated */
int nnr_plugin_get_option(const char *name, const char *key, char *buf, size_t buflen);

/* --- devices --- */
/* every device; the host backend's are counted at init, the others (cuda's) on first need: by this,
 * by nnr_device_find naming one, or by a plugin's device count or message */
int nnr_device_count(void);
/* 1 when the host backend has its device (nnr_last_error says why not); counts no other backend's */
int nnr_host_ready(void);
const char *nnr_device_type(int device);    /* plugin name, "cpu" */
int nnr_device_local_index(int device);     /* index within its plugin */
const char *nnr_device_name(int device);
const char *nnr_device_label(int device);   /* the plugin's description: model, memory */
/* "cpu", "cuda:1" -> global device id, or -1 with an error */
int nnr_device_find(const char *spec);
int nnr_synchronize(int device);
/* 1 when the device's memory is host memory (the core reads it directly) */
int nnr_device_host_memory(int device);
/* the properties its plugin declares (plugin ABI 1.4; zeros when it declares none) */
int nnr_device_props_of(int device, nnr_device_props *out);
/* free and total bytes of the device's memory, from its plugin (-1 where it does not say) */
int nnr_device_memory_info(int device, int64_t *free_bytes, int64_t *total_bytes);

/* --- threads and time --- */
void nnr_set_num_threads(int n);
int nnr_get_num_threads(void);
/* monotonic wall-clock time in seconds (for benchmarks and progress bars) */
double nnr_clock(void);

/* --- memory accounting (DESIGN.md decision 5) --- */
int64_t nnr_live_bytes(void);
int64_t nnr_peak_bytes(void);
/* pointer to a flag the core sets when tensors grew enough that the Lua GC
 * should run; the Lua layer reads it after each allocation and clears it
 * with nnr_gc_done() after collecting. */
volatile int32_t *nnr_gc_flag(void);
void nnr_gc_done(void);
/* drops cached blocks of every device allocator */
void nnr_empty_cache(void);
int64_t nnr_cached_bytes(void);
int64_t nnr_device_peak_bytes(int device);          /* since the last reset (nnr_profiler_start) */
int64_t nnr_device_live_bytes(int device);
int64_t nnr_device_cached_bytes(int device);        /* held by the caching allocator for reuse */
void nnr_device_empty_cache(int device);
void nnr_reset_peak_bytes(void);

/* --- the random generator: Philox4x32-10 (nnr/philox.h), for tensors and the data loader alike --- */
void nnr_manual_seed(uint64_t seed);
uint64_t nnr_rng_seed(void);
uint64_t nnr_rng_offset(void);
void nnr_rng_set_state(uint64_t seed, uint64_t offset);
/* keyed streams that depend on (seed, stream, epoch) only, never on a global state: a permutation of
 * 0..n-1 (the loader's and the samplers' shuffles), and n uniform numbers in [0, 1) from position
 * first of the stream. The streams the library uses are kept apart: */
enum { NNR_STREAM_SHUFFLE = 1, NNR_STREAM_TRANSFORM = 2, NNR_STREAM_SAMPLER = 3, NNR_STREAM_TEXT = 4 };
int nnr_random_permutation(uint64_t seed, uint64_t stream, uint64_t epoch, int64_t n, int64_t *out);
int nnr_random_uniforms(uint64_t seed, uint64_t stream, uint64_t epoch, int64_t first, int64_t n, double *out);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_BASE_H */
