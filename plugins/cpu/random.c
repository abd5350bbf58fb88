/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3"). Element k of a fill uses word k%4 of the block at counter
 * (offset + k) / 4 under key seed: any backend, any thread count, same
 * numbers. Sampling (bernoulli, multinomial, randperm) reads the same words. */
#include <math.h>
#include <stdlib.h>
#include "kernels.h"
#include "nnr/philox.h"

typedef struct rng_ctx { int kind; const nnr_tensor_desc *o; uint64_t seed, offset; double a, b; } rng_ctx;

static void rng_range(void *vc, int64_t begin, int64_t end)
{
    const rng_ctx *c = vc;
    int dt = c->o->dtype;
    int64_t es = (int64_t)nnr_dtype_nbytes(dt);
    char *base = c->o->data;
    /* blocks [begin, end) of 4 elements */
    int64_t n = 1;
    for (int d = 0; d < c->o->ndim; d++) n *= c->o->sizes[d];
    for (int64_t blk = begin; blk < end; blk++) {
        uint32_t w[4];
        nnr_philox(c->offset / 4 + (uint64_t)blk, c->seed, w);
        double v[4];
        if (c->kind == NNR_OP_RAND_NORMAL) {
            for (int j = 0; j < 4; j += 2) {
                double u1 = ((double)w[j] + 1.0) * 0x1p-32, u2 = (double)w[j + 1] * 0x1p-32;
                double r = sqrt(-2.0 * log(u1));
                v[j] = c->a + c->b * r * cos(2 * M_PI * u2);
                v[j + 1] = c->a + c->b * r * sin(2 * M_PI * u2);
            }
        } else if (c->kind == NNR_OP_RAND_UNIFORM) {
            for (int j = 0; j < 4; j++) {
                double u = dt == NNR_F64 ? (double)w[j] * 0x1p-32 : (double)(w[j] >> 8) * 0x1p-24;
                v[j] = c->a + (c->b - c->a) * u;
                if (v[j] >= c->b) v[j] = nextafter(c->b, c->a);
            }
        } else {
            double range = floor(c->b) - ceil(c->a);
            uint64_t span = range >= 1 ? (uint64_t)range : 1;
            for (int j = 0; j < 4; j++) {
                uint64_t r = span <= 0xffffffffu ? (((uint64_t)w[j] * span) >> 32)
                                                 : (((uint64_t)w[j] << 32) | w[(j + 1) & 3]) % span;
                v[j] = ceil(c->a) + (double)r;
            }
        }
        for (int j = 0; j < 4; j++) {
            int64_t k = blk * 4 + j;
            if (k >= n) break;
            nnr_store_f64(dt, base + k * es, v[j]);
        }
    }
}

int cpu_random(const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0];
    rng_ctx c = {(int)call->op, o, (uint64_t)call->params->i[0], (uint64_t)call->params->i[1], call->params->f[0], call->params->f[1]};
    int64_t n = 1;
    for (int d = 0; d < o->ndim; d++) n *= o->sizes[d];
    return cpu_parallel_for((n + 3) / 4, 4096, rng_range, &c);
}

/* ---------------- sampling: bernoulli, multinomial, randperm ---------------- */

/* word k of the stream at offset (a multiple of 4) */
static inline uint32_t philox_word(uint64_t seed, uint64_t offset, uint64_t k)
{
    uint32_t w[4];
    nnr_philox(offset / 4 + k / 4, seed, w);
    return w[k & 3];
}

typedef struct sample_ctx {
    const nnr_tensor_desc *p, *o;
    uint64_t seed, offset;
    double scalar;
    int64_t n, C, W;             /* multinomial: draws, categories, words per row */
    int replacement;
    int *bad_row;                /* multinomial: a row with no positive sum (first seen), -1 none */
} sample_ctx;

static void bernoulli_range(void *vc, int64_t begin, int64_t end)
{
    const sample_ctx *c = vc;
    int dt = c->o->dtype;
    int64_t es = (int64_t)nnr_dtype_nbytes(dt), pes = c->p ? (int64_t)nnr_dtype_nbytes(c->p->dtype) : 0;
    for (int64_t blk = begin; blk < end; blk++) {
        uint32_t w[4];
        nnr_philox(c->offset / 4 + (uint64_t)blk, c->seed, w);
        for (int j = 0; j < 4; j++) {
            int64_t k = blk * 4 + j;
            if (k >= c->n) break;
            double p = c->p ? nnr_load_f64(c->p->dtype, (const char *)c->p->data + k * pes) : c->scalar;
            nnr_store_f64(dt, (char *)c->o->data + k * es, (double)w[j] * 0x1p-32 < p ? 1.0 : 0.0);
        }
    }
}

typedef struct race { double key; int64_t cat; } race;
static int race_cmp(const void *x, const void *y)
{
    const race *a = x, *b = y;
    return a->key < b->key ? -1 : a->key > b->key ? 1 : (a->cat > b->cat) - (a->cat < b->cat);
}

static void multinomial_range(void *vc, int64_t begin, int64_t end)
{
    const sample_ctx *c = vc;
    int pdt = c->p->dtype;
    int64_t pes = (int64_t)nnr_dtype_nbytes(pdt);
    double *cdf = malloc(sizeof(double) * (size_t)c->C);
    race *rc = c->replacement ? NULL : malloc(sizeof(race) * (size_t)c->C);
    if (!cdf || (!c->replacement && !rc)) { free(cdf); free(rc); *c->bad_row = -2; return; }
    for (int64_t r = begin; r < end; r++) {
        const char *row = (const char *)c->p->data + r * c->C * pes;
        int64_t *out = (int64_t *)c->o->data + r * c->n;
        uint64_t base = (uint64_t)(r * c->W);
        if (c->replacement) {
            double s = 0;
            for (int64_t k = 0; k < c->C; k++) { s += nnr_load_f64(pdt, row + k * pes); cdf[k] = s; }
            for (int64_t j = 0; j < c->n; j++) {
                double u = (double)philox_word(c->seed, c->offset, base + (uint64_t)j) * 0x1p-32 * s;
                int64_t lo = 0, hi = c->C - 1;           /* the first category whose running sum exceeds u */
                while (lo < hi) { int64_t mid = lo + (hi - lo) / 2; if (cdf[mid] > u) hi = mid; else lo = mid + 1; }
                while (lo > 0 && nnr_load_f64(pdt, row + lo * pes) == 0) lo--;   /* rounding past the end: the last positive */
                out[j] = lo;
            }
        } else {
            for (int64_t k = 0; k < c->C; k++) {
                double p = nnr_load_f64(pdt, row + k * pes);
                double u = ((double)philox_word(c->seed, c->offset, base + (uint64_t)k) + 1.0) * 0x1p-32;   /* (0, 1] */
                rc[k].key = p > 0 ? -log(u) / p : INFINITY;
                rc[k].cat = k;
            }
            if (c->n <= 16) {      /* a few draws (sampling a token): the n smallest keys, by insertion */
                int64_t kept = 0;
                for (int64_t k = 0; k < c->C; k++) {
                    if (kept == c->n && race_cmp(&rc[k], &rc[kept - 1]) >= 0) continue;
                    race x = rc[k];
                    int64_t i = kept < c->n ? kept++ : kept - 1;
                    while (i > 0 && race_cmp(&x, &rc[i - 1]) < 0) { rc[i] = rc[i - 1]; i--; }
                    rc[i] = x;
                }
            } else {
                qsort(rc, (size_t)c->C, sizeof *rc, race_cmp);
            }
            for (int64_t j = 0; j < c->n; j++) out[j] = rc[j].cat;
        }
    }
    free(cdf);
    free(rc);
}

int cpu_sample(const nnr_op_call *call)
{
    const nnr_tensor_desc *o = call->outputs[0];
    int bad = -1;
    sample_ctx c = {.o = o, .seed = (uint64_t)call->params->i[0], .offset = (uint64_t)call->params->i[1], .bad_row = &bad};
    if (!nnr_desc_is_contiguous(o) || (call->n_inputs > 0 && !nnr_desc_is_contiguous(call->inputs[0])))
        return cpu_error(NNR_ERR_UNSUPPORTED, "%s: the operands must be contiguous", call->op == NNR_OP_BERNOULLI ? "bernoulli" : "multinomial");
    c.n = nnr_desc_numel(o);
    switch (call->op) {
    case NNR_OP_BERNOULLI:
        c.p = call->n_inputs > 0 ? call->inputs[0] : NULL;
        c.scalar = call->params->f[0];
        return cpu_parallel_for((c.n + 3) / 4, 4096, bernoulli_range, &c);
    case NNR_OP_MULTINOMIAL: {
        c.p = call->inputs[0];
        if (c.p->ndim != 2 || o->ndim != 2 || o->dtype != NNR_I64) return cpu_error(NNR_ERR_INVALID, "multinomial: expected probs [R, C] and an i64 output [R, n]");
        c.C = c.p->sizes[1];
        c.n = o->sizes[1];
        c.replacement = call->params->i[2] != 0;
        c.W = ((c.replacement ? c.n : c.C) + 3) / 4 * 4;
        if (!c.replacement && c.n > c.C) return cpu_error(NNR_ERR_INVALID, "multinomial: %lld draws without replacement from %lld categories", (long long)c.n, (long long)c.C);
        int st = cpu_parallel_for(c.p->sizes[0], 64, multinomial_range, &c);
        if (st == NNR_OK && bad == -2) return cpu_error(NNR_ERR_OOM, "multinomial: out of memory");
        return st;
    }
    case NNR_OP_RANDPERM: {
        int64_t *out = o->data;
        if (o->dtype != NNR_I64) return cpu_error(NNR_ERR_INVALID, "randperm: the output must be i64");
        for (int64_t i = 0; i < c.n; i++) out[i] = i;
        for (int64_t i = c.n - 1; i > 0; i--) {        /* Fisher-Yates from the end */
            uint64_t w = ((uint64_t)philox_word(c.seed, c.offset, 2 * (uint64_t)i) << 32) | philox_word(c.seed, c.offset, 2 * (uint64_t)i + 1);
            int64_t j = (int64_t)(w % (uint64_t)(i + 1)), t = out[i];
            out[i] = out[j];
            out[j] = t;
        }
        return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
    }
    }
    return cpu_error(NNR_ERR_UNSUPPORTED, "op %u is not a sampling op", call->op);
}
