/* libnnr: the C core of nnrun. This is the API that lua/nnr/init.lua binds
 * with ffi.cdef (the text between NNR_CDEF_BEGIN and NNR_CDEF_END is embedded
 * in the library and handed to the FFI, so there is one source of truth).
 *
 * Conventions:
 *  - Handles are opaque. Functions returning a pointer return NULL on error;
 *    functions returning int return an nnr_status (0 = ok). Either way the
 *    thread's message is in nnr_last_error().
 *  - Dimensions are 0-based here; the Lua layer converts from 1-based.
 *  - A returned nnr_tensor* is a new reference; release it with
 *    nnr_tensor_release (Lua does this through ffi.gc).
 */
#ifndef NNR_H
#define NNR_H

#include "nnr/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
typedef struct nnr_tensor nnr_tensor;

/* --- library, errors, registry --- */
const char *nnr_version(void);
/* the declarations below as text, for ffi.cdef */
const char *nnr_cdef_text(void);
/* loads plugins (idempotent); returns the number of backends loaded */
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

int nnr_plugin_count(void);                 /* every plugin seen, refused ones too */
const char *nnr_plugin_name(int i);
const char *nnr_plugin_path(int i);
const char *nnr_plugin_version(int i);
int nnr_plugin_loaded(int i);               /* 1 loaded, 0 refused */
const char *nnr_plugin_message(int i);      /* why it was refused or has no device, or its description */
int nnr_plugin_device_count(int i);         /* devices it added */
/* index of the plugin named name (or whose file is libnnr_<name>.so), -1 when none */
int nnr_plugin_find(const char *name);
/* a backend setting, e.g. ("cuda", "allow_tf32", "1"); an error names unknown plugins and keys */
int nnr_plugin_set_option(const char *name, const char *key, const char *value);
/* reads a plugin's named value (plugin ABI 1.3 get_option) into buf, NUL-terminated */
int nnr_plugin_get_option(const char *name, const char *key, char *buf, size_t buflen);

int nnr_device_count(void);
const char *nnr_device_type(int device);    /* plugin name, "cpu" */
int nnr_device_local_index(int device);     /* index within its plugin */
const char *nnr_device_name(int device);
const char *nnr_device_label(int device);   /* the plugin's description: model, memory */
/* "cpu", "cuda:1" -> global device id, or -1 with an error */
int nnr_device_find(const char *spec);
int nnr_synchronize(int device);
/* runs op on preallocated outputs (ops that extension plugins add, e.g. plugins/quant); the op's
 * name is for errors; params may be NULL */
int nnr_run_op(const char *name, int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params);
/* --- replicas of nnr.parallel.DataParallel (core/replicas.c): a LuaJIT state per device built from
 * payloads[k] (with ntensors[k] tensors of the flat list), run concurrently --- */
typedef struct nnr_replica_set nnr_replica_set;
nnr_replica_set *nnr_replicas_new(int n, const char *bootstrap, const char *const *payloads, const size_t *lens,
                                  nnr_tensor *const *tensors, const int *ntensors);
int nnr_replicas_run(nnr_replica_set *s, int mode, nnr_tensor *const *x, nnr_tensor *const *y, const double *weights,
                     nnr_tensor **out, double *losses);
void nnr_replicas_free(nnr_replica_set *s);

/* --- processes (nnr.parallel.Distributed, core/dist.c): MPI collectives on contiguous cpu tensors;
 * op 0 sum, 1 max, 2 min, 3 product. Built without MPI they return an error saying how to enable it. --- */
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
double nnr_dist_bench_raw_allreduce(int64_t n, int reps);   /* seconds, median; the benchmark's reference */
/* the op table (nnr/plugin.h): an op's name ("op" for an unknown number), its category (0 unknown), and
 * the next op number after op in the table (0 to start; 0 after the last) */
const char *nnr_op_name(int op);
int nnr_op_category(int op);
int nnr_op_next(int op);
/* how many calls of op ran on the cpu fallback because a backend lacked it */
int64_t nnr_fallback_count(int op);

/* monotonic wall-clock time in seconds (for benchmarks and progress bars) */
double nnr_clock(void);

void nnr_set_num_threads(int n);
int nnr_get_num_threads(void);

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

/* --- tensors: lifetime and metadata --- */
void nnr_tensor_retain(nnr_tensor *t);
void nnr_tensor_release(nnr_tensor *t);
int nnr_tensor_dtype(const nnr_tensor *t);
int nnr_tensor_ndim(const nnr_tensor *t);
int64_t nnr_tensor_size(const nnr_tensor *t, int dim);
int64_t nnr_tensor_stride(const nnr_tensor *t, int dim);
int64_t nnr_tensor_offset(const nnr_tensor *t);
int64_t nnr_tensor_numel(const nnr_tensor *t);
int nnr_tensor_device(const nnr_tensor *t);
int nnr_tensor_is_contiguous(const nnr_tensor *t);
/* host address of element (0,...,0) for cpu tensors, NULL otherwise */
void *nnr_tensor_data(const nnr_tensor *t);
/* 1 if both views share one storage */
int nnr_tensor_same_storage(const nnr_tensor *a, const nnr_tensor *b);
const char *nnr_dtype_name(int dtype);
int nnr_dtype_size(int dtype);
/* the dtype a binary op on a and b computes in (PyTorch's promotion) */
int nnr_promote_types(int a, int b);

/* --- creation --- */
nnr_tensor *nnr_empty(int dtype, int ndim, const int64_t *sizes, int device);
nnr_tensor *nnr_full(int dtype, int ndim, const int64_t *sizes, double value, int device);
nnr_tensor *nnr_from_doubles(const double *values, int64_t n, int dtype, int ndim, const int64_t *sizes, int device);
/* contiguous copy of all elements as doubles (n must equal numel) */
int nnr_to_doubles(const nnr_tensor *t, double *out, int64_t n);
/* element at a 0-based index of t's ndim entries */
int nnr_get(const nnr_tensor *t, const int64_t *index, double *out);
int nnr_set(nnr_tensor *t, const int64_t *index, double value);
int nnr_item(const nnr_tensor *t, double *out);
nnr_tensor *nnr_arange(double start, double end, double step, int dtype, int device);
nnr_tensor *nnr_linspace(double start, double end, int64_t steps, int dtype, int device);
nnr_tensor *nnr_eye(int64_t n, int64_t m, int dtype, int device);
void nnr_manual_seed(uint64_t seed);
uint64_t nnr_rng_seed(void);
uint64_t nnr_rng_offset(void);
void nnr_rng_set_state(uint64_t seed, uint64_t offset);
/* kind: NNR_OP_RAND_UNIFORM, NNR_OP_RAND_NORMAL or NNR_OP_RAND_INT */
nnr_tensor *nnr_random(int kind, int dtype, int ndim, const int64_t *sizes, double a, double b, int device);
/* fills t in place from the generator */
int nnr_random_(nnr_tensor *t, int kind, double a, double b);

/* --- views (share storage) --- */
nnr_tensor *nnr_view(const nnr_tensor *t, int ndim, const int64_t *sizes);
nnr_tensor *nnr_reshape(const nnr_tensor *t, int ndim, const int64_t *sizes);
nnr_tensor *nnr_permute(const nnr_tensor *t, int ndim, const int *dims);
nnr_tensor *nnr_transpose(const nnr_tensor *t, int dim0, int dim1);
nnr_tensor *nnr_narrow(const nnr_tensor *t, int dim, int64_t start, int64_t length);
nnr_tensor *nnr_select(const nnr_tensor *t, int dim, int64_t index);
nnr_tensor *nnr_expand(const nnr_tensor *t, int ndim, const int64_t *sizes);
nnr_tensor *nnr_squeeze(const nnr_tensor *t, int dim);      /* dim -1: every size-1 dim */
nnr_tensor *nnr_unsqueeze(const nnr_tensor *t, int dim);
nnr_tensor *nnr_flatten(const nnr_tensor *t, int start_dim, int end_dim);
nnr_tensor *nnr_as_strided(const nnr_tensor *t, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset);
nnr_tensor *nnr_contiguous(const nnr_tensor *t);            /* t itself (new ref) when already contiguous */
nnr_tensor *nnr_clone(const nnr_tensor *t);
nnr_tensor *nnr_to(const nnr_tensor *t, int dtype, int device); /* t itself when nothing changes */

/* --- in-place writes --- */
int nnr_copy_(nnr_tensor *dst, const nnr_tensor *src);      /* broadcasts and casts src */
int nnr_fill_(nnr_tensor *t, double value);

/* --- elementwise --- */
nnr_tensor *nnr_unary(int op, const nnr_tensor *a);
int nnr_unary_(int op, nnr_tensor *a);
nnr_tensor *nnr_binary(int op, const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_binary_scalar(int op, const nnr_tensor *a, double s, int scalar_first);
int nnr_binary_(int op, nnr_tensor *a, const nnr_tensor *b);
int nnr_binary_scalar_(int op, nnr_tensor *a, double s);
/* out-variant: writes op(a, b) into out (shape and dtype must fit) */
int nnr_binary_out(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out);
nnr_tensor *nnr_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_where_scalar(const nnr_tensor *cond, const nnr_tensor *a, double sa, const nnr_tensor *b, double sb);
nnr_tensor *nnr_clamp(const nnr_tensor *a, double lo, double hi, int flags);
int nnr_clamp_(nnr_tensor *a, double lo, double hi, int flags);
nnr_tensor *nnr_masked_fill(const nnr_tensor *a, const nnr_tensor *mask, double value);
int nnr_masked_fill_(nnr_tensor *a, const nnr_tensor *mask, double value);

/* --- reductions: ndims = 0 reduces every dim --- */
nnr_tensor *nnr_reduce(int op, const nnr_tensor *a, int ndims, const int *dims, int keepdim, int64_t correction);
nnr_tensor *nnr_softmax(const nnr_tensor *a, int dim, int log);

/* --- files --- */
/* a safetensors file, opened and validated; tensors are read on demand */
typedef struct nnr_file nnr_file;
nnr_file *nnr_safetensors_open(const char *path);
void nnr_file_close(nnr_file *file);
int nnr_file_count(const nnr_file *file);
const char *nnr_file_name(const nnr_file *file, int i);
nnr_tensor *nnr_file_tensor(nnr_file *file, int i, int device);
int nnr_file_metadata_count(const nnr_file *file);
const char *nnr_file_metadata_key(const nnr_file *file, int i);
const char *nnr_file_metadata_value(const nnr_file *file, int i);
/* writes atomically (temporary file, fsync, rename) */
int nnr_safetensors_save(const char *path, int n, const char *const *names, nnr_tensor *const *tensors,
                         int nmeta, const char *const *keys, const char *const *values);
/* an IDX file (MNIST family), raw or gzip */
nnr_tensor *nnr_load_idx(const char *path);

/* --- the profiler (nnr.profiler): events per thread while it runs --- */
typedef struct nnr_prof_event {
    const char *name;            /* op, module, autograd node, "DataLoader batch", ... */
    int64_t start_ns;            /* since nnr_profiler_start */
    int64_t dur_ns;
    int64_t bytes;               /* bytes allocated by the event's thread for it */
    int32_t kind;                /* 0 op, 1 scope (module), 2 autograd node, 3 loader batch, 4 wait for data, 5 allocation */
    int32_t tid;                 /* the recording thread (1, 2, ...) */
} nnr_prof_event;
int nnr_profiler_start(void);    /* clears the previous events and the memory peaks */
int nnr_profiler_stop(void);
int nnr_profiler_enabled(void);
double nnr_profiler_seconds(void);                  /* from start to stop (or now) */
int64_t nnr_profiler_dropped(void);                 /* events beyond the buffer limit */
const char *nnr_profiler_intern(const char *name);  /* a stable copy for scope names */
void nnr_profiler_push(const char *interned);       /* a scope (module) on this thread */
void nnr_profiler_pop(void);
void nnr_profiler_thread_label(const char *label);
const char *nnr_profiler_thread_name(int tid);
int64_t nnr_profiler_event_count(void);
int64_t nnr_profiler_events(nnr_prof_event *out, int64_t max);
int64_t nnr_device_peak_bytes(int device);          /* since the last reset (nnr_profiler_start) */
int64_t nnr_device_live_bytes(int device);
int64_t nnr_device_cached_bytes(int device);        /* held by the caching allocator for reuse */
void nnr_device_empty_cache(int device);
void nnr_reset_peak_bytes(void);

/* numeric CSV (header, quoted fields) into f32 x [N, features] and y [N] (the label column; -1 none, or
 * label_name in the header): i64 classes + 1 when label_classes, else f32 */
int nnr_load_csv(const char *path, int header, const char *label_name, int label_column, char delimiter, int label_classes,
                 nnr_tensor **x, nnr_tensor **y);
/* a PNG or JPEG file as u8 [C, H, W]; channels 0 keeps the file's, 1 grey, 3 RGB, 4 RGBA */
nnr_tensor *nnr_load_image(const char *path, int channels);
/* u8 [C, H, W] to PNG, or JPEG when the path ends in .jpg/.jpeg (quality 1..100) */
int nnr_save_image(const char *path, const nnr_tensor *image, int quality);

/* page-locked host memory (from the first plugin offering it, e.g. cuda), for asynchronous copies */
const char *nnr_pinned_provider(void);            /* the plugin's name, NULL when none offers it */
int nnr_tensor_is_pinned(const nnr_tensor *t);
/* t itself when pinned, else a pinned contiguous copy (ordinary memory when no plugin pins) */
nnr_tensor *nnr_pin_memory(const nnr_tensor *t);

/* --- datasets the loader reads (refcounted, shared read-only by its workers; indices 0-based) --- */
typedef struct nnr_dataset nnr_dataset;
/* sample i is row i of x (and y) */
nnr_dataset *nnr_dataset_tensors(const nnr_tensor *x, const nnr_tensor *y);
/* fixed-size records of a memory-mapped file: x (x_dtype, x_sizes) at x_offset of each record, y (one
 * y_dtype value; y_offset -1: none) at y_offset; y_classes: y becomes i64 class + 1 */
nnr_dataset *nnr_dataset_records(const char *path, int64_t header_bytes, int64_t record_bytes, int64_t x_offset, int x_dtype,
                                 int x_ndim, const int64_t *x_sizes, int64_t y_offset, int y_dtype, int y_classes);
/* one PNG/JPEG file per sample (decoded by the workers) with an i64 label (labels NULL: none) */
nnr_dataset *nnr_dataset_images(int64_t n, const char *const *paths, const int64_t *labels, int channels);
/* root/<class>/<image>: classes are the sorted sub-folder names, labelled 1, 2, ...; files sorted by name */
nnr_dataset *nnr_dataset_image_folder(const char *root, int channels);
int nnr_dataset_class_count(const nnr_dataset *dataset);
const char *nnr_dataset_class_name(const nnr_dataset *dataset, int i);
nnr_dataset *nnr_dataset_concat(int n, nnr_dataset *const *parts);
nnr_dataset *nnr_dataset_subset(nnr_dataset *base, int64_t n, const int64_t *indices);
/* n samples without data of their own: the numbering of a Lua dataset whose batches a batch function builds */
nnr_dataset *nnr_dataset_indices(int64_t n);
int64_t nnr_dataset_length(const nnr_dataset *dataset);
/* sample i as new tensors (y NULL when the dataset has no targets) */
int nnr_dataset_get(const nnr_dataset *dataset, int64_t i, nnr_tensor **x, nnr_tensor **y);
void nnr_dataset_retain(nnr_dataset *dataset);
void nnr_dataset_release(nnr_dataset *dataset);

/* --- the data loader (batches assembled on libuv's worker pool) --- */
typedef struct nnr_loader nnr_loader;
enum {
    NNR_TRANSFORM_TO_FLOAT = 1,       /* p: scale */
    NNR_TRANSFORM_NORMALIZE = 2,      /* p: mean, std (one channel) or mean0, std0, mean1, std1, mean2, std2 */
    NNR_TRANSFORM_RANDOM_CROP = 3,    /* p: height, width, padding */
    NNR_TRANSFORM_RANDOM_HFLIP = 4,   /* p: probability */
    NNR_TRANSFORM_CENTER_CROP = 5,    /* p: height, width */
    NNR_TRANSFORM_RESIZE = 6          /* p: height, width (bilinear) */
};
/* shuffle with seed; num_workers 0 assembles in the caller */
nnr_loader *nnr_loader_new(nnr_dataset *dataset, int64_t batch_size, int shuffle, uint64_t seed, int drop_last,
                           int num_workers, int prefetch);
/* transforms of each x sample ([H, W] or [C, H, W]), applied in order; x batches become f32 [B, C, H, W] */
int nnr_loader_add_transform(nnr_loader *loader, int kind, const double *params, int nparams);
/* one transform applied to one sample ([H, W] or [C, H, W]) with the random stream `seed`: f32 [C, H, W] */
nnr_tensor *nnr_transform_apply(int kind, const double *params, int nparams, const nnr_tensor *x, uint64_t seed);
/* a sampler's sample order for the epochs started from now on (indices NULL: back to the built-in one) */
int nnr_loader_set_order(nnr_loader *loader, int64_t n, const int64_t *indices);
/* builds batches with fn instead of the dataset (Lua datasets); slot < max(workers, 1) names the worker
 * state; the loader owns ctx and calls free_ctx(ctx) when freed */
typedef int (*nnr_batch_fn)(void *ctx, int slot, int64_t epoch, int64_t batch, const int64_t *samples, int64_t count,
                            nnr_tensor **x, nnr_tensor **y, char *err, size_t errn);
int nnr_loader_set_batch_fn(nnr_loader *loader, nnr_batch_fn fn, void *ctx, void (*free_ctx)(void *));
/* batches in page-locked memory (nnr_pin_memory) */
int nnr_loader_set_pin_memory(nnr_loader *loader, int on);
int64_t nnr_loader_length(const nnr_loader *loader);
/* begins an epoch at a batch position (0, or a saved one) */
int nnr_loader_start_epoch(nnr_loader *loader, int64_t epoch, int64_t first_batch);
enum { NNR_LOADER_END = -1 };
/* NNR_OK with the next batch (new references), NNR_LOADER_END after the epoch's last batch, or an error status */
int nnr_loader_next(nnr_loader *loader, nnr_tensor **x, nnr_tensor **y);
int64_t nnr_loader_position(const nnr_loader *loader);
int nnr_loader_stats(const nnr_loader *loader, double *wait_seconds, double *busy_seconds, int64_t *batches);
void nnr_loader_free(nnr_loader *loader);

/* --- per-worker LuaJIT states (Lua datasets, transforms and collate functions) --- */
typedef struct nnr_lua_pool nnr_lua_pool;
/* nstates states, each running `bootstrap` (Lua source) with (payload, tensors, ntensors, slot, datasets,
 * ndatasets) to get its batch function; the pool holds a reference to each tensor and dataset until freed. Hand it to a loader with
 * nnr_loader_set_batch_fn(loader, nnr_lua_pool_batch, pool, nnr_lua_pool_free). */
nnr_lua_pool *nnr_lua_pool_new(int nstates, const char *bootstrap, const char *payload, size_t payload_len,
                               nnr_tensor *const *tensors, int ntensors, nnr_dataset *const *datasets, int ndatasets);
int nnr_lua_pool_batch(void *pool, int slot, int64_t epoch, int64_t batch, const int64_t *samples, int64_t count,
                       nnr_tensor **x, nnr_tensor **y, char *err, size_t errn);
void nnr_lua_pool_free(void *pool);

/* --- neural-network ops (f32/f64, NCHW) --- */
/* y = x W^T + b (bias may be NULL) */
nnr_tensor *nnr_linear(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias);
/* relu(x W^T + b), one fused op on the cpu backend */
nnr_tensor *nnr_linear_relu(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias);
/* batch norm over dim 1 of [N, C, ...]; weight, bias, running stats may be NULL; in
 * training the batch statistics are used and the running ones updated in place */
nnr_tensor *nnr_batch_norm(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, nnr_tensor *running_mean,
                           nnr_tensor *running_var, int training, double momentum, double eps);
nnr_tensor *nnr_conv2d(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, int stride_h, int stride_w,
                       int pad_h, int pad_w, int dilation_h, int dilation_w, int groups);
/* relu(conv2d(...)), one fused op on the cpu backend */
nnr_tensor *nnr_conv2d_relu(const nnr_tensor *x, const nnr_tensor *weight, const nnr_tensor *bias, int stride_h, int stride_w,
                       int pad_h, int pad_w, int dilation_h, int dilation_w, int groups);
nnr_tensor *nnr_max_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int ceil_mode);
nnr_tensor *nnr_avg_pool2d(const nnr_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, int ceil_mode, int count_include_pad);
nnr_tensor *nnr_adaptive_avg_pool2d(const nnr_tensor *x, int out_h, int out_w);
/* fused optimizer steps: update param and its state in place from grad
 * (PyTorch's rules); a buffer may be NULL when its feature is off */
int nnr_sgd_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *momentum_buffer, double lr, double momentum,
                 double dampening, double weight_decay, int nesterov, int buffer_is_new);
int nnr_adam_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *exp_avg, nnr_tensor *exp_avg_sq, double lr,
                  double beta1, double beta2, double eps, double weight_decay, int64_t step, int decoupled_weight_decay);
int nnr_rmsprop_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *square_avg, nnr_tensor *momentum_buffer,
                     double lr, double alpha, double eps, double weight_decay, double momentum);

/* --- autograd (DESIGN.md decision 4) --- */
/* recording on or off for this thread; returns the previous setting */
int nnr_set_grad_enabled(int on);
int nnr_is_grad_enabled(void);
/* mixed precision for this thread: f32 matmul, linear and (where the backend has it) convolution run
 * in dtype (f16 or bf16; -1 off), softmax and log_softmax of half inputs in f32. Returns the previous
 * setting, or -2 with an error for another dtype. */
int nnr_set_autocast(int dtype);
int nnr_get_autocast(void);
int nnr_requires_grad(const nnr_tensor *t);
/* leaves only: floating-point tensors may require grad */
int nnr_requires_grad_(nnr_tensor *t, int flag);
int nnr_is_leaf(const nnr_tensor *t);
/* the accumulated gradient (new reference), or NULL when there is none */
nnr_tensor *nnr_grad(const nnr_tensor *t);
/* replaces .grad (g may be NULL) */
int nnr_set_grad(nnr_tensor *t, nnr_tensor *g);
int nnr_retain_grad(nnr_tensor *t);
/* "MulBackward", or NULL for a leaf */
const char *nnr_grad_fn_name(const nnr_tensor *t);
/* the same data, cut from the graph */
nnr_tensor *nnr_detach(const nnr_tensor *t);
/* gradients of t (grad NULL: t must have one element) into the leaves' .grad */
int nnr_backward(nnr_tensor *t, const nnr_tensor *grad, int retain_graph);

/* --- linear algebra and indexing --- */
nnr_tensor *nnr_matmul(const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_mm(const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_bmm(const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_cat(int n, nnr_tensor *const *tensors, int dim);
nnr_tensor *nnr_gather(const nnr_tensor *a, int dim, const nnr_tensor *index);
nnr_tensor *nnr_index_select(const nnr_tensor *a, int dim, const nnr_tensor *index);
/* out-of-place scatter-add and index-add (the backward of gather and index_select):
 * a copy of a with src added at index along dim */
nnr_tensor *nnr_scatter_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src);
nnr_tensor *nnr_index_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_H */
