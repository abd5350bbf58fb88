/* Data (core/data/): files (safetensors, IDX, CSV, PNG/JPEG), datasets, text and tokenizers, and the data loader. */
#ifndef NNR_DATA_H
#define NNR_DATA_H

#include "nnr/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
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

/* numeric CSV (header, quoted fields) into f32 x [N, features] and y [N] (the label column; -1 none, or
 * label_name in the header): i64 classes + 1 when label_classes, else f32 */
int nnr_load_csv(const char *path, int header, const char *label_name, int label_column, char delimiter, int label_classes,
                 nnr_tensor **x, nnr_tensor **y);
/* a PNG or JPEG file as u8 [C, H, W]; channels 0 keeps the file's, 1 grey, 3 RGB, 4 RGBA */
nnr_tensor *nnr_load_image(const char *path, int channels);
/* u8 [C, H, W] to PNG, or JPEG when the path ends in .jpg/.jpeg (quality 1..100) */
int nnr_save_image(const char *path, const nnr_tensor *image, int quality);
/* a u8 [C, H, W] image (C 1, 3 or 4) as PNG bytes: malloc'd (free with nnr_bytes_free), *n of them; NULL on error */
uint8_t *nnr_encode_png(const nnr_tensor *image, size_t *n);

/* ---- ONNX models (onnx.c): what nnr.onnx.load reads ---- */
/* a model read and checked: the graph as JSON ({ir_version, producer, opsets, inputs, outputs, initializers,
 * nodes: [{op, domain, name, inputs, outputs, attrs}]}, an attribute tensor as {"tensor": k}) and its
 * tensors (initializers, then attribute tensors; k and "initializers" count from 1). External data is read
 * from files inside the model's folder only (dir; NULL refuses it). NULL with the error on bad input */
typedef struct nnr_onnx nnr_onnx;
nnr_onnx *nnr_onnx_open(const char *path);
nnr_onnx *nnr_onnx_parse(const uint8_t *data, size_t n, const char *path, const char *dir);
void nnr_onnx_close(nnr_onnx *m);
const char *nnr_onnx_graph(const nnr_onnx *m);
int nnr_onnx_count(const nnr_onnx *m);
const char *nnr_onnx_name(const nnr_onnx *m, int i);
/* tensor i (0-based), a new reference, on the host */
nnr_tensor *nnr_onnx_tensor(nnr_onnx *m, int i);
/* writes a model (onnx_write.c; atomically): json = {opset, name, producer_version, inputs/outputs: [{name, dtype
 * (ONNX's number), shape: [size or "name"]}], nodes: [{op, name, inputs, outputs, attrs: [{name, i|f|s|ints|floats|
 * strings}]}]}, and n initializers (contiguous host tensors) with their names */
int nnr_onnx_save(const char *path, const char *json, int n, const char *const *names, nnr_tensor *const *tensors);

/* ---- TensorBoard event files (events.c): what nnr.tensorboard.SummaryWriter writes ---- */
/* dir and its parents, as mkdir -p; 0 or the error */
int nnr_make_dirs(const char *dir);
/* seconds since the epoch (CLOCK_REALTIME), with the fraction: the wall time logs record */
double nnr_wall_time(void);
typedef struct nnr_events nnr_events;
/* a new events.out.tfevents.<seconds>.<host>.<pid>.<n><suffix> in dir (made, with its parents); records are
 * written out when max_queue wait, flush_secs after the last write, at flush and at close. NULL on error */
nnr_events *nnr_events_open(const char *dir, const char *suffix, int max_queue, double flush_secs);
const char *nnr_events_path(const nnr_events *w);
/* one value at step (>= 0) and wall_time (seconds since the epoch; 0: now); 0 or the error */
int nnr_events_scalar(nnr_events *w, const char *tag, double value, int64_t step, double wall_time);
/* values (n, finite) counted in the buckets between nedges increasing edges, numpy's histogram rule */
int nnr_events_histogram(nnr_events *w, const char *tag, const double *values, int64_t n, const double *edges, int64_t nedges, int64_t step,
                         double wall_time);
/* the histogram both writers log: counts (nedges - 1) of n finite values in the buckets between increasing
 * edges (numpy's rule), stats = {min, max, sum, sum of squares}, range = the first and last bucket not empty */
int nnr_histogram(const char *tag, const double *values, int64_t n, const double *edges, int64_t nedges, double *counts, double *stats,
                  int64_t *range);
/* a u8 [C, H, W] image (C 1, 3 or 4), stored as PNG */
int nnr_events_image(nnr_events *w, const char *tag, const nnr_tensor *image, int64_t step, double wall_time);
int nnr_events_text(nnr_events *w, const char *tag, const char *text, size_t n, int64_t step, double wall_time);
/* the hparams plugin's records: n hyper-parameters (kinds 0 number in numbers[i], 1 string in strings[i], 2 bool
 * in numbers[i]) and the tags of the metrics they are judged by */
int nnr_events_hparams(nnr_events *w, int n, const char *const *names, const int *kinds, const double *numbers, const char *const *strings,
                       int nmetrics, const char *const *metrics, double wall_time);
int nnr_events_flush(nnr_events *w);
/* flushes, syncs and frees (NULL is fine); 0 or the error of the last writes */
int nnr_events_close(nnr_events *w);

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

/* sample i of an epoch (the loader's epochs count from 1): random text windows depend on it; others do not
 * (nnr_dataset_get is epoch 1) */
int nnr_dataset_get_epoch(const nnr_dataset *dataset, int64_t i, int64_t epoch, nnr_tensor **x, nnr_tensor **y);

/* --- text (docs/sequence.md): corpora, tokenizers, windows of text --- */
/* a corpus: files read as one sequence of bytes, memory-mapped; refcounted, read-only, shared by threads */
typedef struct nnr_corpus nnr_corpus;
/* each path a file, or a folder whose regular files (not hidden, not in sub-folders, none ending in one of
 * the exclude suffixes) are taken in the byte order of their names; everything one after the other, as cat */
nnr_corpus *nnr_corpus_open(int npaths, const char *const *paths, int nexclude, const char *const *exclude);
/* n bytes held in memory (copied); name is what messages call them */
nnr_corpus *nnr_corpus_from_bytes(const char *bytes, int64_t n, const char *name);
int64_t nnr_corpus_size(const nnr_corpus *corpus);
int nnr_corpus_file_count(const nnr_corpus *corpus);
const char *nnr_corpus_file_path(const nnr_corpus *corpus, int i);
int64_t nnr_corpus_file_size(const nnr_corpus *corpus, int i);
/* n bytes from offset into out */
int nnr_corpus_read(const nnr_corpus *corpus, int64_t offset, int64_t n, char *out);
/* NNR_OK when every file is UTF-8 text without NUL bytes, else an error naming who, the file and the offset */
int nnr_corpus_check_text(const nnr_corpus *corpus, const char *who);
void nnr_corpus_retain(nnr_corpus *corpus);
void nnr_corpus_release(nnr_corpus *corpus);

/* a tokenizer: a character vocabulary or a byte-level BPE. Ids are 1-based; immutable once made (threads share it) */
typedef struct nnr_tokenizer nnr_tokenizer;
enum { NNR_TOKENIZER_CHAR = 1, NNR_TOKENIZER_BPE = 2 };
/* the distinct characters of a UTF-8 corpus, ids in code point order */
nnr_tokenizer *nnr_charvocab_build(const nnr_corpus *corpus);
/* byte-level BPE: 256 byte tokens, then merges of the most frequent pair (seen at least min_frequency times)
 * until vocab_size tokens */
nnr_tokenizer *nnr_bpe_train(const nnr_corpus *corpus, int64_t vocab_size, int64_t min_frequency);
/* JSON (either kind), validated; save writes atomically */
nnr_tokenizer *nnr_tokenizer_load(const char *path);
int nnr_tokenizer_save(const nnr_tokenizer *tok, const char *path);
int nnr_tokenizer_kind(const nnr_tokenizer *tok);
int64_t nnr_tokenizer_vocab_size(const nnr_tokenizer *tok);
/* bpe: merge k (1-based) joins tokens *left and *right into token 256 + k */
int nnr_bpe_merge(const nnr_tokenizer *tok, int64_t k, int64_t *left, int64_t *right);
/* the bytes of token id (pointing into the tokenizer), *n their count; NULL with an error outside the vocabulary */
const char *nnr_tokenizer_token(const nnr_tokenizer *tok, int64_t id, int64_t *n);
/* n bytes of text as ids: i32 [count] */
nnr_tensor *nnr_tokenizer_encode(const nnr_tokenizer *tok, const char *bytes, int64_t n);
nnr_tensor *nnr_tokenizer_encode_corpus(const nnr_tokenizer *tok, const nnr_corpus *corpus);
/* ids (an integer tensor of any shape, read in order) as text: malloc'd bytes for nnr_bytes_free, *n their count */
char *nnr_tokenizer_decode(const nnr_tokenizer *tok, const nnr_tensor *ids, int64_t *n);
void nnr_bytes_free(char *bytes);
void nnr_tokenizer_free(nnr_tokenizer *tok);

/* windows of seq_len + 1 tokens within tokens [begin, end) of a corpus's bytes (token id = byte + 1) or of
 * ids (i32 or i64 [N], taken as they are; corpus NULL): sample i is x = tokens[o, o + seq_len) and
 * y = tokens[o + 1, o + seq_len + 1), both i64. stride > 0: o = begin + i * stride, as many windows as fit;
 * stride 0: `samples` windows at offsets drawn from (seed, epoch, i) */
nnr_dataset *nnr_dataset_text(nnr_corpus *corpus, const nnr_tensor *ids, int64_t begin, int64_t end, int64_t seq_len,
                              int64_t stride, int64_t samples, uint64_t seed);

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

/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_DATA_H */
