/* The loader's transforms of one sample, a float image [C, H, W]: to_float, normalize, random and
 * center crops, horizontal flips, bilinear resize. Their randomness comes from a keyed stream of
 * the one generator (base/random.c): sample i of epoch e draws the same numbers whatever worker
 * builds it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"

typedef struct image { float *data; int64_t c, h, w; } image;

/* makes *buf hold at least need floats */
static int grow(float **buf, size_t *n, size_t need)
{
    if (*n >= need) return NNR_OK;
    float *grown = realloc(*buf, need * sizeof(float));
    if (!grown) return NNR_ERR_OOM;
    *buf = grown;
    *n = need;
    return NNR_OK;
}

/* Normalize's parameters: {mean, std} for every channel, or {m0, s0, m1, s1, m2, s2, 1} per channel
 * (p[6] marks the form: a mean of 0 or below must not switch it) */
static void normalize(const nnr_transform *tr, image *img)
{
    int per_channel = tr->p[6] != 0;
    for (int64_t c = 0; c < img->c; c++) {     /* per channel: exactly 3 (apply_transforms checks) */
        double mean = per_channel ? tr->p[c * 2] : tr->p[0], std = per_channel ? tr->p[c * 2 + 1] : tr->p[1];
        float *p = img->data + c * img->h * img->w;
        float m = (float)mean, inv = (float)(1.0 / std);
        for (int64_t i = 0; i < img->h * img->w; i++) p[i] = (p[i] - m) * inv;
    }
}

static void hflip(image *img)
{
    for (int64_t c = 0; c < img->c; c++)
        for (int64_t y = 0; y < img->h; y++) {
            float *row = img->data + (c * img->h + y) * img->w;
            for (int64_t a = 0, b = img->w - 1; a < b; a++, b--) { float v = row[a]; row[a] = row[b]; row[b] = v; }
        }
}

/* a crop of the image padded with zeros: at a random place (RandomCrop) or centred */
static int crop(const nnr_transform *tr, image *img, float **scratch, size_t *scratch_n, nnr_rng_stream *rng, char *err, size_t errn)
{
    int64_t oh = (int64_t)tr->p[0], ow = (int64_t)tr->p[1], pad = tr->kind == NNR_TRANSFORM_RANDOM_CROP ? (int64_t)tr->p[2] : 0;
    int64_t ph = img->h + 2 * pad, pw = img->w + 2 * pad;
    if (oh > ph || ow > pw || oh < 1 || ow < 1) {
        snprintf(err, errn, "crop of %lldx%lld from an image of %lldx%lld (padding %lld)", (long long)oh, (long long)ow,
                 (long long)img->h, (long long)img->w, (long long)pad);
        return NNR_ERR_INVALID;
    }
    int64_t top = (ph - oh) / 2, left = (pw - ow) / 2;
    if (tr->kind == NNR_TRANSFORM_RANDOM_CROP) {
        top = (int64_t)nnr_rng_below(rng, (uint64_t)(ph - oh + 1));
        left = (int64_t)nnr_rng_below(rng, (uint64_t)(pw - ow + 1));
    }
    size_t need = (size_t)(img->c * oh * ow);
    if (grow(scratch, scratch_n, need)) { snprintf(err, errn, "out of memory"); return NNR_ERR_OOM; }
    for (int64_t c = 0; c < img->c; c++)
        for (int64_t y = 0; y < oh; y++)
            for (int64_t x = 0; x < ow; x++) {
                int64_t sy = top + y - pad, sx = left + x - pad;
                (*scratch)[(c * oh + y) * ow + x] =
                    (sy >= 0 && sy < img->h && sx >= 0 && sx < img->w) ? img->data[(c * img->h + sy) * img->w + sx] : 0.0f;
            }
    memcpy(img->data, *scratch, need * sizeof(float));
    img->h = oh;
    img->w = ow;
    return NNR_OK;
}

/* bilinear, half-pixel centres (align_corners false) */
static int resize(const nnr_transform *tr, image *img, float **scratch, size_t *scratch_n, char *err, size_t errn)
{
    int64_t oh = (int64_t)tr->p[0], ow = (int64_t)tr->p[1];
    if (oh < 1 || ow < 1) { snprintf(err, errn, "resize to %lldx%lld", (long long)oh, (long long)ow); return NNR_ERR_INVALID; }
    size_t need = (size_t)(img->c * oh * ow);
    if (grow(scratch, scratch_n, need)) { snprintf(err, errn, "out of memory"); return NNR_ERR_OOM; }
    double sy = (double)img->h / (double)oh, sx = (double)img->w / (double)ow;
    for (int64_t c = 0; c < img->c; c++)
        for (int64_t y = 0; y < oh; y++) {
            double fy = (y + 0.5) * sy - 0.5;
            if (fy < 0) fy = 0;
            int64_t y0 = (int64_t)fy, y1 = y0 + 1 < img->h ? y0 + 1 : y0;
            double wy = fy - (double)y0;
            for (int64_t x = 0; x < ow; x++) {
                double fx = (x + 0.5) * sx - 0.5;
                if (fx < 0) fx = 0;
                int64_t x0 = (int64_t)fx, x1 = x0 + 1 < img->w ? x0 + 1 : x0;
                double wx = fx - (double)x0;
                const float *p = img->data + c * img->h * img->w;
                double v = (1 - wy) * ((1 - wx) * p[y0 * img->w + x0] + wx * p[y0 * img->w + x1]) +
                           wy * ((1 - wx) * p[y1 * img->w + x0] + wx * p[y1 * img->w + x1]);
                (*scratch)[(c * oh + y) * ow + x] = (float)v;
            }
        }
    /* the image buffer is sized for the largest shape the pipeline reaches (pipeline_shape) */
    memcpy(img->data, *scratch, need * sizeof(float));
    img->h = oh;
    img->w = ow;
    return NNR_OK;
}

static int apply_transforms(const nnr_transform *list, int ntransforms, image *img, float **scratch, size_t *scratch_n, nnr_rng_stream *rng,
                            char *err, size_t errn)
{
    int st = NNR_OK;
    for (int t = 0; t < ntransforms && st == NNR_OK; t++) {
        const nnr_transform *tr = &list[t];
        int64_t n = img->c * img->h * img->w;
        switch (tr->kind) {
        case NNR_TRANSFORM_TO_FLOAT:
            for (int64_t i = 0; i < n; i++) img->data[i] *= (float)tr->p[0];
            break;
        case NNR_TRANSFORM_NORMALIZE:
            if (tr->p[6] != 0 && img->c != 3) {
                snprintf(err, errn, "Normalize: statistics for 3 channels, the image has %lld", (long long)img->c);
                st = NNR_ERR_INVALID;
            } else normalize(tr, img);
            break;
        case NNR_TRANSFORM_RANDOM_HFLIP:
            if (nnr_rng_uniform(rng) < tr->p[0]) hflip(img);
            break;
        case NNR_TRANSFORM_RANDOM_CROP: case NNR_TRANSFORM_CENTER_CROP: st = crop(tr, img, scratch, scratch_n, rng, err, errn); break;
        case NNR_TRANSFORM_RESIZE: st = resize(tr, img, scratch, scratch_n, err, errn); break;
        }
    }
    return st;
}

/* a transform's parameters as the kernels need them; the Lua constructors say the same first, by name */
static int check_params(const nnr_transform *tr, char *err, size_t errn)
{
    const double *p = tr->p;
    switch (tr->kind) {
    case NNR_TRANSFORM_TO_FLOAT:
        if (!isfinite(p[0])) { snprintf(err, errn, "ToFloat: scale must be finite, got %g", p[0]); return NNR_ERR_INVALID; }
        break;
    case NNR_TRANSFORM_NORMALIZE:
        for (int c = 0; c < (p[6] != 0 ? 3 : 1); c++)
            if (!isfinite(p[2 * c]) || !isfinite(p[2 * c + 1]) || p[2 * c + 1] == 0) {
                snprintf(err, errn, "Normalize: mean and std must be finite and std non-zero, got mean %g, std %g", p[2 * c], p[2 * c + 1]);
                return NNR_ERR_INVALID;
            }
        break;
    case NNR_TRANSFORM_RANDOM_HFLIP:
        if (!(p[0] >= 0 && p[0] <= 1)) { snprintf(err, errn, "RandomHorizontalFlip: p must be in [0, 1], got %g", p[0]); return NNR_ERR_INVALID; }
        break;
    default: break;   /* sizes: checked by pipeline_shape */
    }
    return NNR_OK;
}

/* the sample shape [C, H, W] after the transforms, and the most floats any step holds; false when
 * a size is not a whole number >= 1 or a product overflows */
static bool pipeline_shape(const nnr_transform *list, int ntransforms, int64_t *c, int64_t *h, int64_t *w, int64_t *largest)
{
    int64_t chw[3] = {*c, *h, *w}, n;
    if (!nnr_size_product(3, chw, 1, largest)) return false;
    for (int t = 0; t < ntransforms; t++) {
        const nnr_transform *tr = &list[t];
        if (tr->kind == NNR_TRANSFORM_RANDOM_CROP || tr->kind == NNR_TRANSFORM_CENTER_CROP || tr->kind == NNR_TRANSFORM_RESIZE) {
            if (!nnr_size_from_double(tr->p[0], 1, (int64_t)1 << 24, h) || !nnr_size_from_double(tr->p[1], 1, (int64_t)1 << 24, w)) return false;
            int64_t s[3] = {*c, *h, *w};
            if (!nnr_size_product(3, s, 1, &n)) return false;
            if (n > *largest) *largest = n;
        }
    }
    /* a padded crop holds (h + 2 pad) x (w + 2 pad) floats per channel at its widest */
    for (int t = 0; t < ntransforms; t++)
        if (list[t].kind == NNR_TRANSFORM_RANDOM_CROP && !(list[t].p[2] >= 0 && list[t].p[2] <= (double)(1 << 24))) return false;
    return true;
}

int nnr_transform_sample(const nnr_transform *list, int ntransforms, const nnr_field *x, nnr_rng_stream *rng, nnr_scratch *sc,
                         int64_t out[3], char *err, size_t errn)
{
    char a[NNR_SHAPE_BUF];
    if (x->ndim < 1 || x->ndim > 3) {
        snprintf(err, errn, "transforms take [W], [H, W] or [C, H, W] samples, got %s", nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
        return NNR_ERR_INVALID;
    }
    int64_t c = x->ndim == 3 ? x->sizes[0] : 1, h = x->ndim >= 2 ? x->sizes[x->ndim - 2] : 1, w = x->sizes[x->ndim - 1];
    for (int t = 0; t < ntransforms; t++) {
        int st = check_params(&list[t], err, errn);
        if (st) return st;
    }
    int64_t n, oc = c, oh = h, ow = w, largest;
    if (!nnr_size_product(x->ndim, x->sizes, 1, &n) || !pipeline_shape(list, ntransforms, &oc, &oh, &ow, &largest) ||
        largest > ((int64_t)1 << 40) / (int64_t)sizeof(float)) {
        snprintf(err, errn, "a sample of shape %s with these transforms needs sizes that are not whole numbers in range or overflow",
                 nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
        return NNR_ERR_INVALID;
    }
    if (grow(&sc->img, &sc->img_n, (size_t)largest)) { snprintf(err, errn, "out of memory"); return NNR_ERR_OOM; }
    float *img = sc->img;
    if (x->dtype == NNR_U8) for (int64_t j = 0; j < n; j++) img[j] = ((const uint8_t *)x->base)[j];
    else if (x->dtype == NNR_F32) memcpy(img, x->base, sizeof(float) * (size_t)n);
    else {
        int64_t es = (int64_t)nnr_dtype_nbytes(x->dtype);
        for (int64_t j = 0; j < n; j++) img[j] = (float)nnr_load_f64_unaligned(x->dtype, x->base + j * es);
    }
    image im = {img, c, h, w};
    int st = apply_transforms(list, ntransforms, &im, &sc->tmp, &sc->tmp_n, rng, err, errn);
    out[0] = im.c; out[1] = im.h; out[2] = im.w;
    return st;
}

nnr_tensor *nnr_transform_apply(int kind, const double *params, int nparams, const nnr_tensor *x, uint64_t seed)
{
    char err[384] = "", a[NNR_SHAPE_BUF];
    if (kind < NNR_TRANSFORM_TO_FLOAT || kind > NNR_TRANSFORM_RESIZE) { nnr_errorf(NNR_ERR_INVALID, "transform: unknown kind %d", kind); return NULL; }
    if (!nnr_device_is_host_memory(x->device) || x->ndim < 1 || x->ndim > 3) {
        nnr_errorf(NNR_ERR_INVALID, "transform: expected a cpu sample [W], [H, W] or [C, H, W], got %s", nnr_shape_str(a, sizeof a, x->ndim, x->sizes));
        return NULL;
    }
    nnr_transform t = {kind, {0}};
    for (int i = 0; i < nparams && i < 8; i++) t.p[i] = params[i];
    nnr_tensor *src = nnr_contiguous(x);
    if (!src) return NULL;
    nnr_field f = {1, src->dtype, src->ndim, {0}, 0, nnr_tensor_data(src), 0};
    memcpy(f.sizes, src->sizes, sizeof(int64_t) * (size_t)src->ndim);
    nnr_scratch sc = {0};
    int64_t out[3];
    nnr_rng_stream rng;
    nnr_rng_stream_init(&rng, seed, NNR_STREAM_TRANSFORM, 0, 0);
    int st = nnr_transform_sample(&t, 1, &f, &rng, &sc, out, err, sizeof err);
    nnr_tensor *r = NULL;
    if (st == NNR_OK && (r = nnr_tensor_alloc(NNR_F32, 3, out, nnr_host_device())))
        memcpy(nnr_tensor_data(r), sc.img, sizeof(float) * (size_t)(out[0] * out[1] * out[2]));
    else if (st == NNR_OK) nnr_errorf(NNR_ERR_OOM, "transform: out of memory");
    else nnr_errorf(st, "transform: %s", err);
    nnr_tensor_release(src);
    free(sc.img);
    free(sc.tmp);
    return r;
}
