/* 2-d convolution by im2col + sgemm/dgemm over the whole batch at once.
 *
 * x [N,C,H,W], weight [O,C/g,KH,KW], out [N,O,HO,WO]. For each group, the
 * columns matrix has one row per (c, kh, kw) of the group and one column per
 * (n, ho, wo) of the batch: a single gemm [O/g x CK] x [CK x N*HO*WO] per
 * group, rather than a small one per image. Backward: grad_input =
 * col2im(W^T x grad), grad_weight = grad x cols^T. Inputs are contiguous
 * (the core makes them so). */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

typedef struct conv_geom {
    int64_t N, C, H, W, O, KH, KW, HO, WO;
    int64_t sh, sw, ph, pw, dh, dw, groups;
    int64_t cg, og, ck, cols;   /* channels and outputs per group, rows and columns of the columns matrix */
} conv_geom;

static conv_geom geometry(const nnr_tensor_desc *x, const nnr_tensor_desc *w, const nnr_tensor_desc *y, const int64_t *i)
{
    conv_geom g = {x->sizes[0], x->sizes[1], x->sizes[2], x->sizes[3], w->sizes[0], w->sizes[2], w->sizes[3], y->sizes[2], y->sizes[3],
                   i[0], i[1], i[2], i[3], i[4], i[5], i[6], 0, 0, 0, 0};
    g.cg = g.C / g.groups;
    g.og = g.O / g.groups;
    g.ck = g.cg * g.KH * g.KW;
    g.cols = g.N * g.HO * g.WO;
    return g;
}

typedef struct im2col_job { const conv_geom *g; const void *x; void *cols; int64_t group; int dt; } im2col_job;

/* the wo range [lo, hi) whose input column w = wo*sw - pw + kw*dw lies inside [0, W) */
static void valid_range(int64_t W, int64_t WO, int64_t sw, int64_t off, int64_t *lo, int64_t *hi)
{
    int64_t l = off < 0 ? (-off + sw - 1) / sw : 0;
    int64_t h = W - off <= 0 ? 0 : (W - off + sw - 1) / sw;
    if (h > WO) h = WO;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* rows [begin, end) of the columns matrix of one group, f32: whole runs of
 * valid columns at once, zeros elsewhere. The runs are short (a row of the
 * output, 14 or 28 floats for small images), so they are plain loops: as
 * memcpy/memset calls (which gcc makes of such loops unless told not to)
 * the call overhead was most of the convolution's time. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_MEMCPY_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define NO_MEMCPY_CALLS
#endif

CPU_MULTI_ATTR(NO_MEMCPY_CALLS, void, im2col_rows_f32, (const im2col_job *j, int64_t begin, int64_t end), (j, begin, end))
{
    const conv_geom *g = j->g;
    const float *x = j->x;
    float *cols = j->cols;
    const int64_t WO = g->WO, sw = g->sw;
    /* stride 1, "same" width (3x3 with padding 1, ...): the valid part of a (c, kh, kw) row
     * is one contiguous shifted copy of the image plane, then the few edge columns
     * that wrapped into the neighbouring row are zeroed */
    int same = sw == 1 && g->sh == 1 && g->dw == 1 && g->dh == 1 && WO == g->W;
    for (int64_t r = begin; r < end; r++) {
        int64_t c = j->group * g->cg + r / (g->KH * g->KW), kh = (r / g->KW) % g->KH, kw = r % g->KW;
        int64_t off = kw * g->dw - g->pw, lo, hi;
        valid_range(g->W, WO, sw, off, &lo, &hi);
        if (same && lo < hi) {
            int64_t dh = kh - g->ph, ho_lo = dh < 0 ? -dh : 0, ho_hi = g->H - dh < g->HO ? g->H - dh : g->HO;
            for (int64_t n = 0; n < g->N; n++) {
                float *dst = cols + r * g->cols + n * g->HO * WO;
                const float *plane = x + (n * g->C + c) * g->H * g->W;
                for (int64_t k = 0; k < ho_lo * WO; k++) dst[k] = 0;
                for (int64_t k = (ho_hi > ho_lo ? ho_hi : ho_lo) * WO; k < g->HO * WO; k++) dst[k] = 0;
                if (ho_hi <= ho_lo) continue;
                int64_t first = ho_lo * WO + lo, last = (ho_hi - 1) * WO + hi;      /* [first, last) */
                const float *src = plane + (ho_lo + dh) * g->W + off - ho_lo * WO;  /* src[k] pairs with dst[k] */
                for (int64_t k = first; k < last; k++) dst[k] = src[k];
                for (int64_t ho = ho_lo; ho < ho_hi; ho++) {
                    for (int64_t wo = 0; wo < lo; wo++) dst[ho * WO + wo] = 0;
                    for (int64_t wo = hi; wo < WO; wo++) dst[ho * WO + wo] = 0;
                }
            }
            continue;
        }
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t ho = 0; ho < g->HO; ho++) {
                int64_t h = ho * g->sh - g->ph + kh * g->dh;
                float *dst = cols + r * g->cols + (n * g->HO + ho) * WO;
                if (h < 0 || h >= g->H) { for (int64_t wo = 0; wo < WO; wo++) dst[wo] = 0; continue; }
                const float *src = x + ((n * g->C + c) * g->H + h) * g->W + off;
                for (int64_t wo = 0; wo < lo; wo++) dst[wo] = 0;
                if (sw == 1) for (int64_t wo = lo; wo < hi; wo++) dst[wo] = src[wo];
                else for (int64_t wo = lo; wo < hi; wo++) dst[wo] = src[wo * sw];
                for (int64_t wo = hi; wo < WO; wo++) dst[wo] = 0;
            }
    }
}

static void im2col_rows(void *arg, int64_t begin, int64_t end)
{
    const im2col_job *j = arg;
    const conv_geom *g = j->g;
    if (j->dt == NNR_F32) { im2col_rows_f32(j, begin, end); return; }
    for (int64_t r = begin; r < end; r++) {
        int64_t c = j->group * g->cg + r / (g->KH * g->KW), kh = (r / g->KW) % g->KH, kw = r % g->KW;
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t ho = 0; ho < g->HO; ho++) {
                int64_t h = ho * g->sh - g->ph + kh * g->dh;
                int64_t base = r * g->cols + (n * g->HO + ho) * g->WO;
                int64_t src = ((n * g->C + c) * g->H + h) * g->W;
                for (int64_t wo = 0; wo < g->WO; wo++) {
                    int64_t w = wo * g->sw - g->pw + kw * g->dw;
                    int inside = h >= 0 && h < g->H && w >= 0 && w < g->W;
                    if (j->dt == NNR_F32) ((float *)j->cols)[base + wo] = inside ? ((const float *)j->x)[src + w] : 0.0f;
                    else ((double *)j->cols)[base + wo] = inside ? ((const double *)j->x)[src + w] : 0.0;
                }
            }
    }
}

static void im2col(const conv_geom *g, int dt, const void *x, void *cols, int64_t group)
{
    im2col_job j = {g, x, cols, group, dt};
    cpu_parallel_for(g->ck, 1, im2col_rows, &j);
}

/* adds the columns matrix back into grad_x (channels of one group); parallel over channels */
typedef struct col2im_job { const conv_geom *g; const void *cols; void *dx; int64_t group; int dt; } col2im_job;

CPU_MULTI(void, col2im_channels_f32, (const col2im_job *j, int64_t begin, int64_t end), (j, begin, end))
{
    const conv_geom *g = j->g;
    const float *cols = j->cols;
    float *dx = j->dx;
    for (int64_t cl = begin; cl < end; cl++) {
        int64_t c = j->group * g->cg + cl;
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t r = (cl * g->KH + kh) * g->KW + kw, off = kw * g->dw - g->pw, lo, hi;
                valid_range(g->W, g->WO, g->sw, off, &lo, &hi);
                for (int64_t n = 0; n < g->N; n++)
                    for (int64_t ho = 0; ho < g->HO; ho++) {
                        int64_t h = ho * g->sh - g->ph + kh * g->dh;
                        if (h < 0 || h >= g->H) continue;
                        const float *src = cols + r * g->cols + (n * g->HO + ho) * g->WO;
                        float *dst = dx + ((n * g->C + c) * g->H + h) * g->W + off;
                        if (g->sw == 1) for (int64_t wo = lo; wo < hi; wo++) dst[wo] += src[wo];
                        else for (int64_t wo = lo; wo < hi; wo++) dst[wo * g->sw] += src[wo];
                    }
            }
    }
}

static void col2im_channels(void *arg, int64_t begin, int64_t end)
{
    const col2im_job *j = arg;
    const conv_geom *g = j->g;
    if (j->dt == NNR_F32) { col2im_channels_f32(j, begin, end); return; }
    for (int64_t cl = begin; cl < end; cl++) {
        int64_t c = j->group * g->cg + cl;
        for (int64_t kh = 0; kh < g->KH; kh++)
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t r = (cl * g->KH + kh) * g->KW + kw;
                for (int64_t n = 0; n < g->N; n++)
                    for (int64_t ho = 0; ho < g->HO; ho++) {
                        int64_t h = ho * g->sh - g->ph + kh * g->dh;
                        if (h < 0 || h >= g->H) continue;
                        int64_t base = r * g->cols + (n * g->HO + ho) * g->WO;
                        int64_t dst = ((n * g->C + c) * g->H + h) * g->W;
                        for (int64_t wo = 0; wo < g->WO; wo++) {
                            int64_t w = wo * g->sw - g->pw + kw * g->dw;
                            if (w < 0 || w >= g->W) continue;
                            if (j->dt == NNR_F32) ((float *)j->dx)[dst + w] += ((const float *)j->cols)[base + wo];
                            else ((double *)j->dx)[dst + w] += ((const double *)j->cols)[base + wo];
                        }
                    }
            }
    }
}

/* grow-only scratch per calling thread: no page faults after the first step.
 * Past 64 MiB a buffer is given back after the call (scratch_done) rather than kept. */
typedef struct scratch { void *p; size_t n; } scratch;
static _Thread_local scratch tl_cols, tl_rows;
enum { SCRATCH_KEEP = 64 << 20 };

static void *scratch_get(scratch *s, size_t n)
{
    if (s->n >= n) return s->p;
    cpu_thread_scratch_taken();
    free(s->p);
    s->p = malloc(n);
    s->n = s->p ? n : 0;
    return s->p;
}

static void scratch_done(void)
{
    scratch *all[2] = {&tl_cols, &tl_rows};
    for (int i = 0; i < 2; i++)
        if (all[i]->n > SCRATCH_KEEP) { free(all[i]->p); all[i]->p = NULL; all[i]->n = 0; }
}

void cpu_conv_scratch_free(void)
{
    free(tl_cols.p); free(tl_rows.p);
    tl_cols.p = tl_rows.p = NULL;
    tl_cols.n = tl_rows.n = 0;
}

static void gemm(int dt, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, const void *a, int64_t lda,
                 const void *b, int64_t ldb, double beta, void *c, int64_t ldc)
{
    cpu_gemm(dt, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
}

/* out [O, N*HO*WO] (group-major rows) <-> y [N, O, HO, WO] */
static void scatter_rows(const conv_geom *g, int dt, const void *rows, void *y, const void *bias)
{
    int64_t plane = g->HO * g->WO;
    for (int64_t o = 0; o < g->O; o++)
        for (int64_t n = 0; n < g->N; n++) {
            const char *src = (const char *)rows + ((o * g->N + n) * plane) * (dt == NNR_F32 ? 4 : 8);
            char *dst = (char *)y + ((n * g->O + o) * plane) * (dt == NNR_F32 ? 4 : 8);
            if (dt == NNR_F32) {
                float b = bias ? ((const float *)bias)[o] : 0.0f;
                for (int64_t p = 0; p < plane; p++) ((float *)dst)[p] = ((const float *)src)[p] + b;
            } else {
                double b = bias ? ((const double *)bias)[o] : 0.0;
                for (int64_t p = 0; p < plane; p++) ((double *)dst)[p] = ((const double *)src)[p] + b;
            }
        }
}

/* grad [N, O, HO*WO] -> rows [O, N*HO*WO]; with mask (the output of a fused conv+relu), grad * (mask > 0) */
/* selects, not branches: the mask is as good as random (a branch per element cost more than the convolution) */
CPU_MULTI(void, mask_f32, (float *restrict d, const float *restrict a, const float *restrict m, int64_t n), (d, a, m, n))
{
    for (int64_t k = 0; k < n; k++) d[k] = m[k] > 0 ? a[k] : 0.0f;
}

static void mask_copy(int dt, void *dst, const void *src, const void *mask, int64_t n)
{
    if (!mask) { memcpy(dst, src, (size_t)(n * (dt == NNR_F32 ? 4 : 8))); return; }
    if (dt == NNR_F32) { mask_f32(dst, src, mask, n); return; }
    double *d = dst;
    const double *a = src, *m = mask;
    for (int64_t k = 0; k < n; k++) d[k] = m[k] > 0 ? a[k] : 0.0;
}

static void gather_rows(const conv_geom *g, int dt, const void *y, const void *mask, void *rows)
{
    int64_t plane = g->HO * g->WO, es = dt == NNR_F32 ? 4 : 8;
    for (int64_t o = 0; o < g->O; o++)
        for (int64_t n = 0; n < g->N; n++)
            mask_copy(dt, (char *)rows + (o * g->N + n) * plane * es, (const char *)y + (n * g->O + o) * plane * es,
                      mask ? (const char *)mask + (n * g->O + o) * plane * es : NULL, plane);
}

/* The batch goes through in chunks of images whose columns matrix stays
 * near 8 MiB: one gemm per chunk keeps its operands in cache (at batch 256
 * the whole batch's matrix is 57 MiB for the second conv of the cnn, and a
 * single gemm over it ran 30% slower per sample than at batch 64). */
enum { CHUNK_BYTES = 8 << 20 };

static int64_t chunk_images(const conv_geom *g, int64_t es)
{
    int64_t per_image = g->ck * g->HO * g->WO * es;
    int64_t n = per_image > 0 ? CHUNK_BYTES / per_image : g->N;
    if (n < 1) n = 1;
    return n < g->N ? n : g->N;
}

/* the geometry of images [n0, n0 + count) */
static conv_geom chunk_geom(const conv_geom *g, int64_t count)
{
    conv_geom c = *g;
    c.N = count;
    c.cols = count * g->HO * g->WO;
    return c;
}

/* sum of a contiguous row, in 16 independent lanes (vectorizes without reassociation flags) */
static double row_sum_f32(const float *r, int64_t n)
{
    float acc[16] = {0};
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int l = 0; l < 16; l++) acc[l] += r[k + l];
    double s = 0;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; k < n; k++) s += r[k];
    return s;
}

/* Per image when an image's columns matrix fits in L2 (small images, the common case
 * here): the pool's threads take whole images, each with its own columns buffer and a
 * single-threaded gemm that writes the image's [O, HO*WO] output in place (NCHW needs no
 * transpose), starting from the bias with beta = 1. The columns never leave the cache, and
 * nothing is gathered or scattered. Larger images go through in chunks as below. */
enum { PER_IMAGE_BYTES = 1 << 20 };

static int per_image(const conv_geom *g, int64_t es) { return g->ck * g->HO * g->WO * es <= PER_IMAGE_BYTES; }

static _Thread_local scratch tl_image;     /* one image's columns, per pool thread */

static void im2col_one(const conv_geom *g, int dt, const void *x, void *cols, int64_t group)
{
    conv_geom one = chunk_geom(g, 1);
    im2col_job j = {&one, x, cols, group, dt};
    im2col_rows(&j, 0, g->ck);
}

typedef struct image_job {
    const conv_geom *g;
    int dt, failed, relu;
    const char *x, *w, *gy, *bias, *mask;
    char *y, *gx;
    char *partial;          /* grad weight: one [O, CK] (+ [O] bias) accumulator per piece */
    int64_t pieces, has_bias;
} image_job;

static void *image_cols(const conv_geom *g, int64_t es) { return scratch_get(&tl_image, (size_t)(g->ck * g->HO * g->WO * es) + 64); }

static _Thread_local scratch tl_masked;    /* one image's masked gradient, per pool thread */

/* image n's output gradient, masked by the fused relu's output when there is one (in cache) */
static const char *image_grad(const image_job *j, int64_t n, int64_t es)
{
    const conv_geom *g = j->g;
    int64_t size = g->O * g->HO * g->WO;
    const char *gyn = j->gy + n * size * es;
    if (!j->mask) return gyn;
    void *buf = scratch_get(&tl_masked, (size_t)(size * es) + 64);
    if (!buf) return NULL;
    mask_copy(j->dt, buf, gyn, j->mask + n * size * es, size);
    return buf;
}

/* fewer images than threads (inference at batch 1): the caller takes the images one by one
 * and the gemm itself is split over the pool */
static int split_gemm(const conv_geom *g) { return g->N < cpu_pool_threads(); }

static void forward_images(void *arg, int64_t begin, int64_t end)
{
    image_job *j = arg;
    const conv_geom *g = j->g;
    int dt = j->dt;
    int64_t es = dt == NNR_F32 ? 4 : 8, plane = g->HO * g->WO;
    void *cols = image_cols(g, es);
    if (!cols) { j->failed = 1; return; }
    for (int64_t n = begin; n < end; n++) {
        const char *xn = j->x + n * g->C * g->H * g->W * es;
        char *yn = j->y + n * g->O * plane * es;
        if (j->bias)
            for (int64_t o = 0; o < g->O; o++) {
                if (dt == NNR_F32) { float b = ((const float *)j->bias)[o]; for (int64_t p = 0; p < plane; p++) ((float *)yn)[o * plane + p] = b; }
                else { double b = ((const double *)j->bias)[o]; for (int64_t p = 0; p < plane; p++) ((double *)yn)[o * plane + p] = b; }
            }
        for (int64_t gr = 0; gr < g->groups; gr++) {
            im2col_one(g, dt, xn, cols, gr);
            (split_gemm(g) ? cpu_gemm : cpu_gemm_serial)(dt, CblasNoTrans, CblasNoTrans, g->og, plane, g->ck, 1.0,
                j->w + gr * g->og * g->ck * es, g->ck, cols, plane, j->bias ? 1.0 : 0.0, yn + gr * g->og * plane * es, plane);
        }
        if (j->relu) cpu_relu_inplace(dt, yn, g->O * plane);     /* while the image's output is in cache */
    }
}

static void grad_input_images(void *arg, int64_t begin, int64_t end)
{
    image_job *j = arg;
    const conv_geom *g = j->g;
    int dt = j->dt;
    int64_t es = dt == NNR_F32 ? 4 : 8, plane = g->HO * g->WO;
    void *cols = image_cols(g, es);
    if (!cols) { j->failed = 1; return; }
    conv_geom one = chunk_geom(g, 1);
    for (int64_t n = begin; n < end; n++) {
        char *gxn = j->gx + n * g->C * g->H * g->W * es;
        const char *gyn = image_grad(j, n, es);
        if (!gyn) { j->failed = 1; return; }
        memset(gxn, 0, (size_t)(g->C * g->H * g->W * es));
        for (int64_t gr = 0; gr < g->groups; gr++) {
            /* cols [ck x plane] = W_g^T [ck x og] @ gy_n,g [og x plane] */
            (split_gemm(g) ? cpu_gemm : cpu_gemm_serial)(dt, CblasTrans, CblasNoTrans, g->ck, plane, g->og, 1.0,
                j->w + gr * g->og * g->ck * es, g->ck, gyn + gr * g->og * plane * es, plane, 0.0, cols, plane);
            col2im_job c = {&one, cols, gxn, gr, dt};
            col2im_channels(&c, 0, g->cg);
        }
    }
}

/* piece p of P takes images [p*N/P, (p+1)*N/P) and sums into its own accumulator */
static void grad_weight_pieces(void *arg, int64_t begin, int64_t end)
{
    image_job *j = arg;
    const conv_geom *g = j->g;
    int dt = j->dt;
    int64_t es = dt == NNR_F32 ? 4 : 8, plane = g->HO * g->WO, wsize = g->O * g->ck + g->O;
    void *cols = image_cols(g, es);
    if (!cols) { j->failed = 1; return; }
    for (int64_t p = begin; p < end; p++) {
        char *acc = j->partial + p * wsize * es;
        memset(acc, 0, (size_t)(wsize * es));
        for (int64_t n = g->N * p / j->pieces; n < g->N * (p + 1) / j->pieces; n++) {
            const char *xn = j->x + n * g->C * g->H * g->W * es;
            const char *gyn = image_grad(j, n, es);
            if (!gyn) { j->failed = 1; return; }
            for (int64_t gr = 0; gr < g->groups; gr++) {
                im2col_one(g, dt, xn, cols, gr);
                /* gW_g [og x ck] += gy_n,g [og x plane] @ cols^T [plane x ck] */
                cpu_gemm_serial(dt, CblasNoTrans, CblasTrans, g->og, g->ck, plane, 1.0, gyn + gr * g->og * plane * es, plane, cols, plane,
                                1.0, acc + gr * g->og * g->ck * es, g->ck);
            }
            if (j->has_bias)
                for (int64_t o = 0; o < g->O; o++) {
                    if (dt == NNR_F32) ((float *)acc)[g->O * g->ck + o] += (float)row_sum_f32((const float *)gyn + o * plane, plane);
                    else for (int64_t k = 0; k < plane; k++) ((double *)acc)[g->O * g->ck + o] += ((const double *)gyn)[o * plane + k];
                }
        }
    }
}

int cpu_conv2d(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *y = call->outputs[0];
    const nnr_tensor_desc *bias = call->n_inputs > 2 ? call->inputs[2] : NULL;
    conv_geom g = geometry(x, w, y, call->params->i);
    int dt = x->dtype, relu = call->params->i[7] == 1;
    int64_t es = dt == NNR_F32 ? 4 : 8;
    if (cpu_onednn_conv(call)) return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
    if (cpu_conv1d_applies(x, w, y, call->params->i)) return cpu_conv1d_forward(call);
    if (per_image(&g, es)) {
        image_job j = {&g, dt, 0, relu, x->data, w->data, NULL, bias ? bias->data : NULL, NULL, y->data, NULL, NULL, 0, 0};
        int st = NNR_OK;
        if (split_gemm(&g)) forward_images(&j, 0, g.N);
        else st = cpu_parallel_for(g.N, 1, forward_images, &j);
        if (j.failed) return cpu_error(NNR_ERR_OOM, "conv2d: out of memory for the columns matrix");
        return st;
    }
    int64_t step = chunk_images(&g, es);
    void *cols = scratch_get(&tl_cols, (size_t)(g.ck * step * g.HO * g.WO * es) + 64);
    void *rows = scratch_get(&tl_rows, (size_t)(g.O * step * g.HO * g.WO * es) + 64);
    if (!cols || !rows) return cpu_error(NNR_ERR_OOM, "conv2d: out of memory for the columns matrix");
    for (int64_t n0 = 0; n0 < g.N; n0 += step) {
        conv_geom c = chunk_geom(&g, g.N - n0 < step ? g.N - n0 : step);
        const char *xc = (const char *)x->data + n0 * g.C * g.H * g.W * es;
        for (int64_t gr = 0; gr < g.groups; gr++) {
            im2col(&c, dt, xc, cols, gr);
            /* rows[og] = W_g [og x ck] @ cols [ck x cols] */
            gemm(dt, CblasNoTrans, CblasNoTrans, c.og, c.cols, c.ck, (const char *)w->data + gr * c.og * c.ck * es, c.ck, cols, c.cols,
                 0.0, (char *)rows + gr * c.og * c.cols * es, c.cols);
        }
        scatter_rows(&c, dt, rows, (char *)y->data + n0 * g.O * g.HO * g.WO * es, bias ? bias->data : NULL);
        if (relu) cpu_relu_inplace(dt, (char *)y->data + n0 * g.O * g.HO * g.WO * es, c.N * g.O * g.HO * g.WO);
    }
    scratch_done();
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

int cpu_conv2d_grad_input(const nnr_op_call *call)
{
    const nnr_tensor_desc *gy = call->inputs[0], *w = call->inputs[1], *gx = call->outputs[0];
    const char *mask = call->n_inputs > 2 && call->params->i[7] == 1 ? call->inputs[2]->data : NULL;   /* fused relu's output */
    conv_geom g = geometry(gx, w, gy, call->params->i);
    int dt = gy->dtype;
    if (!mask && cpu_onednn_conv_transpose(call)) return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
    if (!mask && cpu_conv1d_applies(gx, w, gy, call->params->i)) return cpu_conv1d_grad_input(call);
    int64_t es = dt == NNR_F32 ? 4 : 8, step = chunk_images(&g, es);
    if (per_image(&g, es)) {
        image_job j = {&g, dt, 0, 0, NULL, w->data, gy->data, NULL, mask, NULL, gx->data, NULL, 0, 0};
        int st = NNR_OK;
        if (split_gemm(&g)) grad_input_images(&j, 0, g.N);
        else st = cpu_parallel_for(g.N, 1, grad_input_images, &j);
        if (j.failed) return cpu_error(NNR_ERR_OOM, "conv2d backward: out of memory");
        return st;
    }
    void *cols = scratch_get(&tl_cols, (size_t)(g.ck * step * g.HO * g.WO * es) + 64);
    void *rows = scratch_get(&tl_rows, (size_t)(g.O * step * g.HO * g.WO * es) + 64);
    if (!cols || !rows) return cpu_error(NNR_ERR_OOM, "conv2d backward: out of memory");
    memset(gx->data, 0, (size_t)(g.N * g.C * g.H * g.W * es));
    for (int64_t n0 = 0; n0 < g.N; n0 += step) {
        conv_geom c = chunk_geom(&g, g.N - n0 < step ? g.N - n0 : step);
        gather_rows(&c, dt, (const char *)gy->data + n0 * g.O * g.HO * g.WO * es, mask ? mask + n0 * g.O * g.HO * g.WO * es : NULL, rows);
        char *gxc = (char *)gx->data + n0 * g.C * g.H * g.W * es;
        for (int64_t gr = 0; gr < g.groups; gr++) {
            /* cols [ck x cols] = W_g^T [ck x og] @ rows_g [og x cols] */
            gemm(dt, CblasTrans, CblasNoTrans, c.ck, c.cols, c.og, (const char *)w->data + gr * c.og * c.ck * es, c.ck,
                 (const char *)rows + gr * c.og * c.cols * es, c.cols, 0.0, cols, c.cols);
            col2im_job j = {&c, cols, gxc, gr, dt};
            cpu_parallel_for(c.cg, 1, col2im_channels, &j);
        }
    }
    scratch_done();
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

int cpu_conv2d_grad_weight(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *gy = call->inputs[1], *gw = call->outputs[0];
    const char *mask = call->n_inputs > 2 && call->params->i[7] == 1 ? call->inputs[2]->data : NULL;   /* fused relu's output */
    const nnr_tensor_desc *gb = call->n_outputs > 1 ? call->outputs[1] : NULL;      /* the bias gradient, from the same rows */
    conv_geom g = geometry(x, gw, gy, call->params->i);
    int dt = x->dtype;
    if (!mask && cpu_conv1d_applies(x, gw, gy, call->params->i)) return cpu_conv1d_grad_weight(call);
    int64_t es = dt == NNR_F32 ? 4 : 8, step = chunk_images(&g, es);
    if (per_image(&g, es)) {
        int64_t pieces = cpu_pool_threads() < g.N ? cpu_pool_threads() : g.N, wsize = g.O * g.ck + g.O;
        if (pieces < 1) pieces = 1;
        image_job j = {&g, dt, 0, 0, x->data, NULL, gy->data, NULL, mask, NULL, NULL, malloc((size_t)(pieces * wsize * es) + 64), pieces, gb != NULL};
        if (!j.partial) return cpu_error(NNR_ERR_OOM, "conv2d backward: out of memory");
        int st = cpu_parallel_for(pieces, 1, grad_weight_pieces, &j);
        if (j.failed) { free(j.partial); return cpu_error(NNR_ERR_OOM, "conv2d backward: out of memory"); }
        /* the pieces' sums, in piece order */
        for (int64_t k = 0; k < g.O * g.ck + (gb ? g.O : 0); k++) {
            double sum = 0;
            for (int64_t p = 0; p < pieces; p++)
                sum += dt == NNR_F32 ? ((const float *)j.partial)[p * wsize + k] : ((const double *)j.partial)[p * wsize + k];
            char *dst = k < g.O * g.ck ? (char *)gw->data + k * es : (char *)gb->data + (k - g.O * g.ck) * es;
            if (dt == NNR_F32) *(float *)dst = (float)sum;
            else *(double *)dst = sum;
        }
        free(j.partial);
        return st;
    }
    void *cols = scratch_get(&tl_cols, (size_t)(g.ck * step * g.HO * g.WO * es) + 64);
    void *rows = scratch_get(&tl_rows, (size_t)(g.O * step * g.HO * g.WO * es) + 64);
    if (!cols || !rows) return cpu_error(NNR_ERR_OOM, "conv2d backward: out of memory");
    for (int64_t n0 = 0; n0 < g.N; n0 += step) {
        conv_geom c = chunk_geom(&g, g.N - n0 < step ? g.N - n0 : step);
        gather_rows(&c, dt, (const char *)gy->data + n0 * g.O * g.HO * g.WO * es, mask ? mask + n0 * g.O * g.HO * g.WO * es : NULL, rows);
        if (gb)
            for (int64_t o = 0; o < g.O; o++) {
                double sum = 0;
                if (dt == NNR_F32) sum = row_sum_f32((const float *)rows + o * c.cols, c.cols);
                else for (int64_t k = 0; k < c.cols; k++) sum += ((const double *)rows)[o * c.cols + k];
                if (dt == NNR_F32) ((float *)gb->data)[o] = (n0 ? ((float *)gb->data)[o] : 0.0f) + (float)sum;
                else ((double *)gb->data)[o] = (n0 ? ((double *)gb->data)[o] : 0.0) + sum;
            }
        const char *xc = (const char *)x->data + n0 * g.C * g.H * g.W * es;
        for (int64_t gr = 0; gr < g.groups; gr++) {
            im2col(&c, dt, xc, cols, gr);
            /* gW_g [og x ck] (+)= rows_g [og x cols] @ cols^T [cols x ck] */
            gemm(dt, CblasNoTrans, CblasTrans, c.og, c.ck, c.cols, (const char *)rows + gr * c.og * c.cols * es, c.cols, cols, c.cols,
                 n0 ? 1.0 : 0.0, (char *)gw->data + gr * c.og * c.ck * es, c.ck);
        }
    }
    scratch_done();
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

/* a pool thread's image buffer, at its exit */
void cpu_conv_thread_exit(void)
{
    free(tl_image.p);
    tl_image.p = NULL;
    tl_image.n = 0;
    free(tl_masked.p);
    tl_masked.p = NULL;
    tl_masked.n = 0;
    cpu_conv_scratch_free();
    cpu_conv1d_thread_exit();
}
