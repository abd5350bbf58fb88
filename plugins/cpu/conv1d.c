/* 1-d convolution (the 2-d op with H = KH = 1, any stride along W) a tile of outputs at a time:
 * with the input padded once, the columns that outputs [j0, j0 + n) read are, for row (c, kw), the
 * padded input's row c at columns (j0 + p) sw + kw dw: a [C*KW, n] block made by row copies while it
 * stays in L2, then one gemm per tile (the transposed convolution is the input gradient's form):
 *   y[:, j0:j0+n]  = W [O x C*KW] @ cols                     (forward)
 *   cols           = W^T @ gy[:, j0:j0+n], added back to the padded input gradient row by row
 *   gW            += gy[:, j0:j0+n] @ cols^T                 (weight gradient)
 * im2col over whole images wrote the input KW times over to memory for these shapes (an audio row
 * of 8000 samples and a 9-tap kernel: 9.2 MB per image) and read it back.
 *
 *   x [N, C, 1, W], weight [O, C/groups, 1, KW], y [N, O, 1, WO], WO = (W + 2 pw - dw (KW - 1) - 1) / sw + 1 */
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

enum { TILE = 512 };

typedef struct c1 {
    int64_t N, C, W, O, KW, WO, pw, dw, groups, cg, og, Wp;
    int dt;
    int64_t es, sw;         /* element size; the stride along W */
} c1;

/* the geometry, or 0 when this path does not apply */
int cpu_conv1d_applies(const nnr_tensor_desc *x, const nnr_tensor_desc *w, const nnr_tensor_desc *y, const int64_t *i)
{
    return x->sizes[2] == 1 && w->sizes[2] == 1 && y->sizes[2] == 1 && i[2] == 0 && (x->dtype == NNR_F32 || x->dtype == NNR_F64) &&
           y->sizes[3] >= 64;
}

static c1 geometry(const nnr_tensor_desc *x, const nnr_tensor_desc *w, const nnr_tensor_desc *y, const int64_t *i)
{
    c1 g = {x->sizes[0], x->sizes[1], x->sizes[3], w->sizes[0], w->sizes[3], y->sizes[3], i[3], i[5], i[6], 0, 0, 0, x->dtype, 0, i[1]};
    g.cg = g.C / g.groups;
    g.og = g.O / g.groups;
    g.Wp = g.W + 2 * g.pw;
    g.es = g.dt == NNR_F32 ? 4 : 8;
    return g;
}

static _Thread_local void *tl_cols;
static _Thread_local size_t tl_cols_n;

/* the calling thread's tile of columns, [cg*KW, TILE] */
static char *tile_cols(const c1 *g)
{
    size_t n = (size_t)(g->cg * g->KW * TILE * g->es) + 64;
    if (tl_cols_n < n) {
        free(tl_cols);
        tl_cols = malloc(n);
        tl_cols_n = tl_cols ? n : 0;
        if (tl_cols) cpu_thread_scratch_taken();
    }
    return tl_cols;
}

void cpu_conv1d_thread_exit(void)
{
    free(tl_cols);
    tl_cols = NULL;
    tl_cols_n = 0;
}

/* cols [cg*KW, tn]: row (c, kw) = the padded row c of group gr of image n at columns (j0 + p) sw + kw dw */
static void fill_cols(const c1 *g, const char *xpad, int64_t n, int64_t gr, int64_t j0, int64_t tn, char *cols)
{
    for (int64_t c = 0; c < g->cg; c++) {
        const char *row = xpad + ((n * g->C + gr * g->cg + c) * g->Wp + j0 * g->sw) * g->es;
        for (int64_t kw = 0; kw < g->KW; kw++) {
            char *dst = cols + (c * g->KW + kw) * tn * g->es;
            const char *src = row + kw * g->dw * g->es;
            if (g->sw == 1) memcpy(dst, src, (size_t)(tn * g->es));
            else if (g->dt == NNR_F32) for (int64_t p = 0; p < tn; p++) ((float *)dst)[p] = ((const float *)src)[p * g->sw];
            else for (int64_t p = 0; p < tn; p++) ((double *)dst)[p] = ((const double *)src)[p * g->sw];
        }
    }
}

typedef struct pad_job { const c1 *g; const char *x; char *xpad; } pad_job;

/* rows (n, c) of x into the padded buffer [N, C, Wp] with zero borders */
static void pad_rows(void *arg, int64_t begin, int64_t end)
{
    pad_job *j = arg;
    const c1 *g = j->g;
    for (int64_t r = begin; r < end; r++) {
        char *dst = j->xpad + r * g->Wp * g->es;
        memset(dst, 0, (size_t)(g->pw * g->es));
        memcpy(dst + g->pw * g->es, j->x + r * g->W * g->es, (size_t)(g->W * g->es));
        memset(dst + (g->pw + g->W) * g->es, 0, (size_t)(g->pw * g->es));
    }
}

static char *padded(const c1 *g, const char *x)
{
    char *xpad = malloc((size_t)(g->N * g->C * g->Wp * g->es) + 64);
    if (!xpad) return NULL;
    pad_job j = {g, x, xpad};
    cpu_parallel_for(g->N * g->C, 16, pad_rows, &j);
    return xpad;
}

typedef struct job {
    const c1 *g;
    const char *w, *xpad, *gy, *bias;
    char *y, *gxpad, *partial;
    int relu;
    int64_t tiles, pieces;
    int failed;
} job;

/* items are (image, tile) pairs */
static void forward_tiles(void *arg, int64_t begin, int64_t end)
{
    job *j = arg;
    const c1 *g = j->g;
    int64_t es = g->es, ck = g->cg * g->KW;
    char *cols = tile_cols(g);
    if (!cols) { j->failed = 1; return; }
    for (int64_t item = begin; item < end; item++) {
        int64_t n = item / j->tiles, j0 = (item % j->tiles) * TILE, tn = g->WO - j0 < TILE ? g->WO - j0 : TILE;
        char *yt = j->y + (n * g->O * g->WO + j0) * es;
        if (j->bias)
            for (int64_t o = 0; o < g->O; o++) {
                if (g->dt == NNR_F32) { float b = ((const float *)j->bias)[o]; for (int64_t p = 0; p < tn; p++) ((float *)yt)[o * g->WO + p] = b; }
                else { double b = ((const double *)j->bias)[o]; for (int64_t p = 0; p < tn; p++) ((double *)yt)[o * g->WO + p] = b; }
            }
        for (int64_t gr = 0; gr < g->groups; gr++) {
            fill_cols(g, j->xpad, n, gr, j0, tn, cols);
            cpu_gemm_serial(g->dt, CblasNoTrans, CblasNoTrans, g->og, tn, ck, 1.0, j->w + gr * g->og * ck * es, ck, cols, tn,
                            j->bias ? 1.0 : 0.0, yt + gr * g->og * g->WO * es, g->WO);
        }
        if (j->relu)
            for (int64_t o = 0; o < g->O; o++) cpu_relu_inplace(g->dt, yt + o * g->WO * es, tn);
    }
}

int cpu_conv1d_forward(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *y = call->outputs[0];
    c1 g = geometry(x, w, y, call->params->i);
    char *xpad = padded(&g, x->data);
    if (!xpad) return cpu_error(NNR_ERR_OOM, "conv1d: out of memory");
    job j = {&g, w->data, xpad, NULL, call->n_inputs > 2 ? call->inputs[2]->data : NULL, y->data, NULL, NULL, call->params->i[7] == 1,
             (g.WO + TILE - 1) / TILE, 0, 0};
    int st = cpu_parallel_for(g.N * j.tiles, 1, forward_tiles, &j);
    free(xpad);
    if (j.failed) return cpu_error(NNR_ERR_OOM, "conv1d: out of memory");
    return st;
}

/* items are images: an image's tiles add into overlapping stretches of its padded gradient */
static void grad_input_images(void *arg, int64_t begin, int64_t end)
{
    job *j = arg;
    const c1 *g = j->g;
    int64_t es = g->es, ck = g->cg * g->KW;
    char *cols = tile_cols(g);
    if (!cols) { j->failed = 1; return; }
    for (int64_t n = begin; n < end; n++) {
        char *gxn = j->gxpad + n * g->C * g->Wp * es;
        memset(gxn, 0, (size_t)(g->C * g->Wp * es));
        for (int64_t j0 = 0; j0 < g->WO; j0 += TILE) {
            int64_t tn = g->WO - j0 < TILE ? g->WO - j0 : TILE;
            for (int64_t gr = 0; gr < g->groups; gr++) {
                cpu_gemm_serial(g->dt, CblasTrans, CblasNoTrans, ck, tn, g->og, 1.0, j->w + gr * g->og * ck * es, ck,
                                j->gy + ((n * g->O + gr * g->og) * g->WO + j0) * es, g->WO, 0.0, cols, tn);
                for (int64_t c = 0; c < g->cg; c++)
                    for (int64_t kw = 0; kw < g->KW; kw++) {
                        const char *src = cols + (c * g->KW + kw) * tn * es;
                        char *dst = gxn + ((gr * g->cg + c) * g->Wp + j0 * g->sw + kw * g->dw) * es;
                        int64_t s = g->sw;
                        if (g->dt == NNR_F32) for (int64_t p = 0; p < tn; p++) ((float *)dst)[p * s] += ((const float *)src)[p];
                        else for (int64_t p = 0; p < tn; p++) ((double *)dst)[p * s] += ((const double *)src)[p];
                    }
            }
        }
    }
}

typedef struct unpad_job { const c1 *g; const char *gxpad; char *gx; } unpad_job;

static void unpad_rows(void *arg, int64_t begin, int64_t end)
{
    unpad_job *j = arg;
    const c1 *g = j->g;
    for (int64_t r = begin; r < end; r++)
        memcpy(j->gx + r * g->W * g->es, j->gxpad + (r * g->Wp + g->pw) * g->es, (size_t)(g->W * g->es));
}

int cpu_conv1d_grad_input(const nnr_op_call *call)
{
    const nnr_tensor_desc *gy = call->inputs[0], *w = call->inputs[1], *gx = call->outputs[0];
    c1 g = geometry(gx, w, gy, call->params->i);
    char *gxpad = malloc((size_t)(g.N * g.C * g.Wp * g.es) + 64);
    if (!gxpad) return cpu_error(NNR_ERR_OOM, "conv1d backward: out of memory");
    job j = {&g, w->data, NULL, gy->data, NULL, NULL, gxpad, NULL, 0, 0, 0, 0};
    int st = cpu_parallel_for(g.N, 1, grad_input_images, &j);
    unpad_job u = {&g, gxpad, gx->data};
    if (st == NNR_OK && !j.failed) st = cpu_parallel_for(g.N * g.C, 16, unpad_rows, &u);
    free(gxpad);
    if (j.failed) return cpu_error(NNR_ERR_OOM, "conv1d backward: out of memory");
    return st;
}

/* piece p sums images [p N / P, (p + 1) N / P) into its own [O, cg*KW] (+ [O] bias) accumulator */
static void grad_weight_pieces(void *arg, int64_t begin, int64_t end)
{
    job *j = arg;
    const c1 *g = j->g;
    int64_t es = g->es, ck = g->cg * g->KW, wsize = g->O * ck + g->O;
    char *cols = tile_cols(g);
    if (!cols) { j->failed = 1; return; }
    for (int64_t p = begin; p < end; p++) {
        char *acc = j->partial + p * wsize * es;
        memset(acc, 0, (size_t)(wsize * es));
        for (int64_t n = g->N * p / j->pieces; n < g->N * (p + 1) / j->pieces; n++) {
            for (int64_t j0 = 0; j0 < g->WO; j0 += TILE) {
                int64_t tn = g->WO - j0 < TILE ? g->WO - j0 : TILE;
                for (int64_t gr = 0; gr < g->groups; gr++) {
                    fill_cols(g, j->xpad, n, gr, j0, tn, cols);
                    cpu_gemm_serial(g->dt, CblasNoTrans, CblasTrans, g->og, ck, tn, 1.0, j->gy + ((n * g->O + gr * g->og) * g->WO + j0) * es, g->WO,
                                    cols, tn, 1.0, acc + gr * g->og * ck * es, ck);
                }
            }
            for (int64_t o = 0; o < g->O; o++) {
                const char *row = j->gy + (n * g->O + o) * g->WO * es;
                double s = 0;
                for (int64_t k = 0; k < g->WO; k++) s += g->dt == NNR_F32 ? ((const float *)row)[k] : ((const double *)row)[k];
                if (g->dt == NNR_F32) ((float *)acc)[wsize - g->O + o] += (float)s;
                else ((double *)acc)[wsize - g->O + o] += s;
            }
        }
    }
}

int cpu_conv1d_grad_weight(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *gy = call->inputs[1], *gw = call->outputs[0];
    const nnr_tensor_desc *gb = call->n_outputs > 1 ? call->outputs[1] : NULL;
    c1 g = geometry(x, gw, gy, call->params->i);
    int64_t pieces = cpu_pool_threads() < g.N ? cpu_pool_threads() : g.N, wsize = g.O * g.cg * g.KW + g.O;
    if (pieces < 1) pieces = 1;
    char *xpad = padded(&g, x->data), *partial = xpad ? malloc((size_t)(pieces * wsize * g.es) + 64) : NULL;
    if (!partial) { free(xpad); return cpu_error(NNR_ERR_OOM, "conv1d backward: out of memory"); }
    job j = {&g, NULL, xpad, gy->data, NULL, NULL, NULL, partial, 0, 0, pieces, 0};
    int st = cpu_parallel_for(pieces, 1, grad_weight_pieces, &j);
    for (int64_t k = 0; st == NNR_OK && !j.failed && k < wsize; k++) {      /* the pieces' sums, in piece order */
        double s = 0;
        for (int64_t p = 0; p < pieces; p++) s += g.dt == NNR_F32 ? ((const float *)partial)[p * wsize + k] : ((const double *)partial)[p * wsize + k];
        char *dst = k < wsize - g.O ? (char *)gw->data + k * g.es : gb ? (char *)gb->data + (k - (wsize - g.O)) * g.es : NULL;
        if (!dst) break;
        if (g.dt == NNR_F32) *(float *)dst = (float)s;
        else *(double *)dst = s;
    }
    free(xpad);
    free(partial);
    if (j.failed) return cpu_error(NNR_ERR_OOM, "conv1d backward: out of memory");
    return st;
}
