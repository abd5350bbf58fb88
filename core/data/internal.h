/* Private to libnnr: the dataset descriptions the loader reads (dataset.c), the image decoder
 * (image.c) and the transforms the loader's workers apply (transforms.c). */
#ifndef NNR_DATA_INTERNAL_H
#define NNR_DATA_INTERNAL_H

#include <stdio.h>
#include <string.h>
#include "nnr/data.h"
#include "ops/internal.h"

#pragma GCC visibility push(hidden)

enum { NNR_DS_ROWS, NNR_DS_RECORDS, NNR_DS_IMAGES, NNR_DS_CONCAT, NNR_DS_SUBSET, NNR_DS_INDICES };

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
};

/* a sample as fields pointing into the dataset (or into `owned`, a decoded image) */
typedef struct nnr_sample {
    nnr_field x, y;                  /* base points at the sample itself */
    void *owned;
    const char *path;                /* images: the file */
} nnr_sample;

/* sample i of the loader's epoch (random text windows depend on it) */
int nnr_sample_fetch(const nnr_dataset *d, int64_t i, int64_t epoch, nnr_sample *s, char *err, size_t errn);

/* a whole file into a malloc'd buffer (one spare byte), refusing files over max_bytes */
int nnr_read_whole_file(const char *path, size_t max_bytes, unsigned char **buf, size_t *n, char *err, size_t errn);

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

/* an element at a possibly unaligned address (memory-mapped records) */
static inline double nnr_load_f64_unaligned(int dtype, const void *p)
{
    union { double d; int64_t i; float f; uint8_t b[8]; } u;
    memcpy(u.b, p, nnr_dtype_nbytes(dtype));
    return nnr_load_f64(dtype, u.b);
}

#pragma GCC visibility pop
#endif
