/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3"). Element k of a fill uses word k%4 of the block at counter
 * (offset + k) / 4 under key seed: any backend, any thread count, same
 * numbers. */
#include <math.h>
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
