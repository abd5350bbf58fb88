/* Private to libnnr: the dataset descriptions the loader reads (dataset.c), the image decoder
 * (image.c) and the transforms the loader's workers apply (transforms.c). */
#ifndef NNR_DATA_INTERNAL_H
#define NNR_DATA_INTERNAL_H

#include <stdio.h>
#include <string.h>
#include "nnr/data.h"
#include "ops/internal.h"

#pragma GCC visibility push(hidden)

enum { NNR_DS_ROWS, NNR_DS_RECORDS, NNR_DS_IMAGES, NNR_DS_CONCAT, NNR_DS_SUBSET, NNR_DS_INDICES, NNR_DS_TEXT };

/* one field (x or y) of a sample: sample i is at base + i * stride */
typedef struct nnr_field {
    int present, dtype, ndim;
    int64_t sizes[NNR_MAX_DIMS];     /* per sample */
    int64_t stride;                  /* bytes between samples */
    const char *base;
    int classes;                     /* a class label stored 0-based: becomes i64, + 1 */
} nnr_field;

struct nnr_dataset {
    atomic_int refcount;
    int kind;
    int64_t n;
    nnr_field xf, yf;
    nnr_tensor *x, *y;               /* rows */
    void *map; size_t map_bytes;     /* records */
    char *path;
    char **paths; int64_t *labels;   /* images */
    int channels;
    char **class_names; int nclasses;  /* image folders */
    nnr_dataset **parts;             /* concat (all), subset (parts[0]) */
    int nparts;
    int64_t *offsets;                /* concat: first sample of each part */
    int64_t *indices;                /* subset */
    nnr_corpus *corpus;              /* text: the bytes (x NULL), or x holds the token ids */
    int64_t text_begin, text_end, seq_len, stride;   /* text: tokens [begin, end), windows of seq_len + 1 */
    uint64_t seed;                   /* text: random windows (stride 0) */
};

/* a dataset of kind with one reference, nothing else set; NULL with an error naming what */
nnr_dataset *nnr_dataset_new(int kind, const char *what);

/* a sample as fields pointing into the dataset (or into `owned`, a decoded image) */
typedef struct nnr_sample {
    nnr_field x, y;                  /* base points at the sample itself */
    void *owned;
    const char *path;                /* images: the file */
} nnr_sample;

/* sample i of the loader's epoch (random text windows depend on it) */
int nnr_sample_fetch(const nnr_dataset *d, int64_t i, int64_t epoch, nnr_sample *s, char *err, size_t errn);
/* a text window (text.c): the dataset's sample i as an owned i64 buffer that s->x and s->y point into */
int nnr_text_fetch(const nnr_dataset *d, int64_t i, int64_t epoch, nnr_sample *s, char *err, size_t errn);

/* a whole file into a malloc'd buffer (one spare byte), refusing files over max_bytes */
int nnr_read_whole_file(const char *path, size_t max_bytes, unsigned char **buf, size_t *n, char *err, size_t errn);
/* files.c: a regular file opened for reading (never blocking on a FIFO or a device), as a descriptor or a
 * stdio stream; -1 / NULL with errno set, NNR_ENOTREG for a pipe, device or socket (EISDIR for a folder).
 * nnr_open_strerror(errno) words either. */
#define NNR_ENOTREG 100000
int nnr_open_regular(const char *path);
FILE *nnr_fopen_regular(const char *path);
const char *nnr_open_strerror(int e);

/* reads a PNG or JPEG file into u8 [C, H, W] (malloc'd); channels 0 keeps the file's */
int nnr_decode_image_file(const char *path, int channels, uint8_t **pixels, int64_t sizes[3], char *err, size_t errn);

/* ---- transforms (transforms.c) ---- */
typedef struct nnr_transform { int kind; double p[8]; } nnr_transform;
/* a worker's buffers for the image being transformed, grown as needed (the caller frees both) */
typedef struct nnr_scratch { float *img, *tmp; size_t img_n, tmp_n; } nnr_scratch;
/* x of one sample through the transforms into sc->img ([C, H, W] floats); out gets that shape */
int nnr_transform_sample(const nnr_transform *list, int ntransforms, const nnr_field *x, nnr_rng_stream *rng, nnr_scratch *sc,
                         int64_t out[3], char *err, size_t errn);

/* writes the parts one after the other to a temporary file beside path, flushes it and renames it over
 * path (safetensors.c): a crash or a full disk never leaves a broken file there; errors begin "save PATH: " */
int nnr_write_atomically(const char *path, int nparts, const void *const *parts, const size_t *sizes);
/* ONNX's type number of a dtype (onnx.c's table, which the reader uses the other way); 0 where none */
int32_t nnr_onnx_type_of(int dtype);

/* ---- text (corpus.c, text.c, tokenizer.c, bpe.c, bpe_train.c, tokenizer_json.c) ---- */
typedef struct nnr_corpus_file {
    char *path;
    const uint8_t *bytes;            /* mapped (or in `owned`) */
    int64_t size, start;             /* start: its first byte's offset in the corpus */
    void *map; size_t map_bytes;
} nnr_corpus_file;
struct nnr_corpus {
    atomic_int refcount;
    int nfiles;
    nnr_corpus_file *files;
    int64_t size;
    uint8_t *owned;                  /* nnr_corpus_from_bytes */
};
/* the file holding byte offset (0 <= offset < size) */
int nnr_corpus_file_at(const nnr_corpus *c, int64_t offset);

/* the Unicode scalar value at s[*i] (strict UTF-8: no overlong forms, surrogates or values past U+10FFFF),
 * *i moved past it; -1 (and *i unchanged) when the bytes there are not one */
int32_t nnr_utf8_decode(const uint8_t *s, int64_t n, int64_t *i);
/* cp's UTF-8 bytes into out; their count */
int nnr_utf8_encode(uint32_t cp, uint8_t out[4]);

/* BPE chunks are at most NNR_BPE_MAX_CHUNK bytes, so no token is longer; ids fit an i32 with room */
enum { NNR_BPE_MAX_CHUNK = 64, NNR_TOKENIZER_MAX_VOCAB = 1 << 20, NNR_BPE_BYTES = 256 };
struct nnr_tokenizer {
    int kind;
    int64_t vocab;                   /* tokens: ids 0 .. vocab - 1 inside, 1 .. vocab outside */
    uint8_t *pool;                   /* token i's bytes: pool[offs[i], offs[i + 1]) */
    int64_t *offs;
    int32_t *chars;                  /* char: code points in id order (ascending) */
    int32_t ascii[128];              /* char: the ids of ASCII characters (-1: none) */
    int32_t *merges;                 /* bpe: merge k joins merges[2k] and merges[2k + 1] into token 256 + k */
    int64_t nmerges;
    uint64_t *rank_keys;             /* bpe: an open-addressing table of pairs (left << 32 | right) + 1 ... */
    int32_t *rank_ids;               /* ... to the token they merge into */
    uint64_t rank_mask;
};
/* a tokenizer of kind with vocab tokens and its arrays (chars or merges) allocated; NULL with an error */
nnr_tokenizer *nnr_tokenizer_alloc(int kind, int64_t vocab, const char *who);
/* once chars or merges are filled: every token's bytes, and (bpe) the pair table */
int nnr_tokenizer_finish(nnr_tokenizer *t, const char *who);
/* the id (0-based) of the merge of left and right, or -1 */
int32_t nnr_bpe_rank(const nnr_tokenizer *t, int32_t left, int32_t right);
/* the end of the chunk of s[0, n) that starts at i: the pre-split both training and encoding use */
int64_t nnr_bpe_chunk_end(const uint8_t *s, int64_t n, int64_t i);
/* token ids as they are made */
typedef struct nnr_id_buf { int32_t *ids; int64_t n, cap; } nnr_id_buf;
/* room for `more` ids after the n there are */
int nnr_id_buf_reserve(nnr_id_buf *b, int64_t more);
/* a byte string -> int64 table (bpe.c): keys (length >= 1) point into memory that outlives the table;
 * payload is room for what values refer to */
typedef struct nnr_chunk_slot { const uint8_t *key; int32_t len; uint32_t hash; int64_t value; } nnr_chunk_slot;
typedef struct nnr_chunk_map { nnr_chunk_slot *slots; uint64_t mask; int64_t count; nnr_id_buf payload; } nnr_chunk_map;
/* the slot of key; when absent, a new one (value -1) if insert, else NULL; NULL also when out of memory */
nnr_chunk_slot *nnr_chunk_map_get(nnr_chunk_map *m, const uint8_t *key, int32_t len, int insert);
void nnr_chunk_map_free(nnr_chunk_map *m);
/* s[0, n) as BPE's 1-based ids appended to out; cache (may start empty) keeps the ids of chunks seen before */
int nnr_bpe_encode(const nnr_tokenizer *t, const uint8_t *s, int64_t n, nnr_id_buf *out, nnr_chunk_map *cache);

/* an element at a possibly unaligned address (memory-mapped records) */
static inline double nnr_load_f64_unaligned(int dtype, const void *p)
{
    union { double d; int64_t i; float f; uint8_t b[8]; } u;
    memcpy(u.b, p, nnr_dtype_nbytes(dtype));
    return nnr_load_f64(dtype, u.b);
}

#pragma GCC visibility pop
#endif
