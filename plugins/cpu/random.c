/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3"). Element k of a fill uses word k%4 of the block at counter
 * (offset + k) / 4 under key seed: any backend, any thread count, same
 * numbers. */
#include <math.h>
#include "kernels.h"

static void philox(uint64_t counter, uint64_t seed, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1; c3 = (uint32_t)p0;
        c0 = n0; c2 = n2;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

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
        philox(c->offset / 4 + (uint64_t)blk, c->seed, w);
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
