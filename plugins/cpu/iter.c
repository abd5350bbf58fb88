/* The strided iterator: coalesces dimensions, then walks rows of the
 * innermost dimension in parallel pieces of the flat index space. */
#include <string.h>
#include "kernels.h"

void cpu_iter_init(cpu_iter *it, int nops, const nnr_tensor_desc *const *descs)
{
    const nnr_tensor_desc *shape = descs[0];
    it->nops = nops;
    int nd = 0;
    /* drop size-1 dims, keep order */
    for (int d = 0; d < shape->ndim; d++) {
        if (shape->sizes[d] == 1) continue;
        it->sizes[nd] = shape->sizes[d];
        for (int k = 0; k < nops; k++)
            it->strides[k][nd] = descs[k]->strides[d] * (int64_t)nnr_dtype_nbytes(descs[k]->dtype);
        nd++;
    }
    /* merge d into d+1 where every operand is contiguous across the pair */
    int w = 0;
    for (int d = 0; d < nd; d++) {
        if (w > 0) {
            int ok = 1;
            for (int k = 0; k < nops && ok; k++)
                ok = it->strides[k][w - 1] == it->strides[k][d] * it->sizes[d];
            if (ok) {
                it->sizes[w - 1] *= it->sizes[d];
                for (int k = 0; k < nops; k++) it->strides[k][w - 1] = it->strides[k][d];
                continue;
            }
        }
        it->sizes[w] = it->sizes[d];
        for (int k = 0; k < nops; k++) it->strides[k][w] = it->strides[k][d];
        w++;
    }
    if (w == 0) {                                   /* a scalar, or all dims were 1 */
        it->sizes[0] = 1;
        for (int k = 0; k < nops; k++) it->strides[k][0] = 0;
        w = 1;
    }
    for (int d = 0; d < shape->ndim; d++)
        if (shape->sizes[d] == 0) it->sizes[0] = 0;
    it->ndim = w;
    for (int k = 0; k < nops; k++) it->base[k] = (char *)descs[k]->data;
}

int64_t cpu_iter_numel(const cpu_iter *it)
{
    int64_t n = 1;
    for (int d = 0; d < it->ndim; d++) n *= it->sizes[d];
    return n;
}

typedef struct run_ctx { const cpu_iter *it; cpu_row_fn fn; void *ctx; } run_ctx;

static void run_range(void *arg, int64_t begin, int64_t end)
{
    const run_ctx *rc = arg;
    const cpu_iter *it = rc->it;
    int nd = it->ndim, nops = it->nops;
    int64_t inner = it->sizes[nd - 1];
    int64_t idx[NNR_MAX_DIMS];
    int64_t rem = begin;
    for (int d = nd - 1; d >= 0; d--) { idx[d] = rem % it->sizes[d]; rem /= it->sizes[d]; }
    int64_t inner_strides[CPU_ITER_MAX_OPS];
    for (int k = 0; k < nops; k++) inner_strides[k] = it->strides[k][nd - 1];
    int64_t pos = begin, rows = 0;
    while (pos < end) {
        char *ptrs[CPU_ITER_MAX_OPS];
        for (int k = 0; k < nops; k++) {
            char *p = it->base[k];
            for (int d = 0; d < nd; d++) p += idx[d] * it->strides[k][d];
            ptrs[k] = p;
        }
        int64_t n = inner - idx[nd - 1];
        if (n > end - pos) n = end - pos;
        rc->fn(rc->ctx, n, ptrs, inner_strides);
        pos += n;
        idx[nd - 1] += n;
        for (int d = nd - 1; d > 0 && idx[d] >= it->sizes[d]; d--) { idx[d] = 0; idx[d - 1]++; }
        if ((++rows & 255) == 0 && cpu_host->interrupted()) return;
    }
}

int cpu_iter_run(const cpu_iter *it, cpu_row_fn fn, void *ctx)
{
    int64_t n = cpu_iter_numel(it);
    if (n == 0) return NNR_OK;
    run_ctx rc = {it, fn, ctx};
    /* split big rows too: pieces are ranges of the flat index */
    return cpu_parallel_for(n, 1 << 15, run_range, &rc);
}
