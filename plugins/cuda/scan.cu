/* cumsum and cumprod along the last dim (the core moves the dim there), forward or from the end:
 * one thread per row, walking it in order, so the result is the serial scan's (floats accumulate
 * in double, integers in int64 with wrap-around, as on the cpu). supports() takes only calls with
 * enough rows to fill the device; one long row runs on the cpu backend. */
#include "dtype.cuh"

typedef struct scan_geom {
    int nd, dt, prod, reverse;
    int64_t sizes[NNR_MAX_DIMS], in_strides[NNR_MAX_DIMS], out_strides[NNR_MAX_DIMS];
    int64_t rows, n;
    const char *in;
    char *out;
} scan_geom;

__global__ void k_scan_rows(scan_geom g)
{
    int es = dt_size(g.dt);
    int integral = g.dt == NNR_I64;
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < g.rows; r += (int64_t)gridDim.x * blockDim.x) {
        const char *ip = g.in;
        char *op = g.out;
        int64_t rem = r;
        for (int d = g.nd - 2; d >= 0; d--) {
            int64_t k = rem % g.sizes[d];
            rem /= g.sizes[d];
            ip += k * g.in_strides[d] * es;
            op += k * g.out_strides[d] * es;
        }
        int64_t is = g.in_strides[g.nd - 1] * es, os = g.out_strides[g.nd - 1] * es;
        if (g.reverse) { ip += (g.n - 1) * is; op += (g.n - 1) * os; is = -is; os = -os; }
        double s = g.prod ? 1.0 : 0.0;
        uint64_t si = g.prod ? 1 : 0;
        for (int64_t i = 0; i < g.n; i++) {
            if (integral) {
                uint64_t x = (uint64_t)ld_i64(g.dt, ip + i * is);
                si = g.prod ? si * x : si + x;
                st_i64(g.dt, op + i * os, (int64_t)si);
            } else {
                double x = ld_f64(g.dt, ip + i * is);
                s = g.prod ? s * x : s + x;
                st_f64(g.dt, op + i * os, s);
            }
        }
    }
}

int cu_scan_supports(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    int dt = out->dtype;
    if (in->dtype != dt || (dt != NNR_F32 && dt != NNR_F64 && dt != NNR_I64) || in->ndim < 1) return 0;
    int64_t rows = 1;
    for (int d = 0; d < in->ndim - 1; d++) rows *= in->sizes[d];
    return rows >= 1024;
}

int cu_scan(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *out = call->outputs[0];
    scan_geom g;
    memset(&g, 0, sizeof g);
    g.nd = in->ndim;
    g.dt = in->dtype;
    g.prod = call->op == NNR_OP_CUMPROD;
    g.reverse = call->params && call->params->i[0] != 0;
    g.rows = 1;
    for (int k = 0; k < g.nd; k++) {
        g.sizes[k] = in->sizes[k];
        g.in_strides[k] = in->strides[k];
        g.out_strides[k] = out->strides[k];
        if (k < g.nd - 1) g.rows *= in->sizes[k];
    }
    g.n = in->sizes[g.nd - 1];
    g.in = (const char *)in->data;
    g.out = (char *)out->data;
    if (g.rows == 0 || g.n == 0) return NNR_OK;
    k_scan_rows<<<cu_blocks(g.rows, 128), 128, 0, d->stream>>>(g);
    CU_LAUNCHED("scan");
    return NNR_OK;
}
