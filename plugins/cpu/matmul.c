/* Batched matmul through OpenBLAS.
 * inputs [..., M, K] and [..., K, N], output [..., M, N], equal batch dims
 * (broadcast inputs have stride 0). A matrix operand goes to gemm directly
 * when one of its strides is 1 (as NoTrans or Trans); otherwise it is packed
 * into a contiguous scratch copy first. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

typedef struct mat {
    const char *p;
    int64_t rs, cs;     /* element strides of rows and columns */
} mat;

/* how gemm can read a rows x cols matrix: sets trans and ld, or returns 0 */
static int gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, CBLAS_TRANSPOSE *trans, int64_t *ld)
{
    if ((cs == 1 || cols == 1) && (rs >= (cols > 1 ? cols : 1) || rows == 1)) {
        *trans = CblasNoTrans;
        *ld = rows == 1 ? (cols > 1 ? cols : 1) : rs;
        return 1;
    }
    if ((rs == 1 || rows == 1) && (cs >= (rows > 1 ? rows : 1) || cols == 1)) {
        *trans = CblasTrans;
        *ld = cols == 1 ? (rows > 1 ? rows : 1) : cs;
        return 1;
    }
    return 0;
}

static void pack(int dtype, int64_t rows, int64_t cols, const char *p, int64_t rs, int64_t cs, void *out)
{
    if (dtype == NNR_F32) {
        float *o = out;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) o[r * cols + c] = ((const float *)p)[r * rs + c * cs];
    } else {
        double *o = out;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) o[r * cols + c] = ((const double *)p)[r * rs + c * cs];
    }
}

/* a strided tensor of any float dtype as a contiguous f32 copy (to) or back (from) */
static void to_f32(const nnr_tensor_desc *d, float *out)
{
    int64_t n = 1, idx[NNR_MAX_DIMS] = {0}, es = (int64_t)nnr_dtype_nbytes(d->dtype);
    for (int i = 0; i < d->ndim; i++) n *= d->sizes[i];
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int i = 0; i < d->ndim; i++) off += idx[i] * d->strides[i];
        out[k] = (float)nnr_load_f64(d->dtype, (const char *)d->data + off * es);
        for (int i = d->ndim - 1; i >= 0; i--) { if (++idx[i] < d->sizes[i]) break; idx[i] = 0; }
    }
}

static void from_f32(const float *in, const nnr_tensor_desc *d)
{
    int64_t n = 1, idx[NNR_MAX_DIMS] = {0}, es = (int64_t)nnr_dtype_nbytes(d->dtype);
    for (int i = 0; i < d->ndim; i++) n *= d->sizes[i];
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int i = 0; i < d->ndim; i++) off += idx[i] * d->strides[i];
        nnr_store_f64(d->dtype, (char *)d->data + off * es, in[k]);
        for (int i = d->ndim - 1; i >= 0; i--) { if (++idx[i] < d->sizes[i]) break; idx[i] = 0; }
    }
}

/* d's shape over f32 data; the caller sets the strides */
static nnr_tensor_desc as_f32(const nnr_tensor_desc *d, float *data)
{
    nnr_tensor_desc c = *d;
    c.dtype = NNR_F32;
    c.data = data;
    return c;
}

static int64_t extent(const nnr_tensor_desc *d)
{
    int64_t n = 1;
    for (int i = 0; i < d->ndim; i++) n *= d->strides[i] == 0 ? 1 : d->sizes[i];
    return n;
}

/* f16 and bf16: products summed in f32 (as cuBLAS does for these types), rounded once at the end */
static int half_matmul(const nnr_op_call *call)
{
    const nnr_tensor_desc *A = call->inputs[0], *B = call->inputs[1], *C = call->outputs[0];
    nnr_tensor_desc a = *A, b = *B;
    /* broadcast dims stay broadcast in the copies: copy the distinct elements only */
    for (int i = 0; i < a.ndim; i++) if (a.strides[i] == 0) a.sizes[i] = 1;
    for (int i = 0; i < b.ndim; i++) if (b.strides[i] == 0) b.sizes[i] = 1;
    float *fa = malloc(sizeof(float) * (size_t)extent(A) + 64), *fb = malloc(sizeof(float) * (size_t)extent(B) + 64);
    int64_t nc = 1;
    for (int i = 0; i < C->ndim; i++) nc *= C->sizes[i];
    float *fc = malloc(sizeof(float) * (size_t)nc + 64);
    if (!fa || !fb || !fc) { free(fa); free(fb); free(fc); return cpu_error(NNR_ERR_OOM, "matmul: out of memory for f32 copies"); }
    to_f32(&a, fa);
    to_f32(&b, fb);
    nnr_tensor_desc ca = as_f32(A, fa), cb = as_f32(B, fb), cc = as_f32(C, fc);
    /* strides of the compacted copies, with the broadcast dims at 0 */
    int64_t st = 1;
    for (int i = ca.ndim - 1; i >= 0; i--) { ca.strides[i] = A->strides[i] == 0 ? 0 : st; st *= A->strides[i] == 0 ? 1 : A->sizes[i]; }
    st = 1;
    for (int i = cb.ndim - 1; i >= 0; i--) { cb.strides[i] = B->strides[i] == 0 ? 0 : st; st *= B->strides[i] == 0 ? 1 : B->sizes[i]; }
    st = 1;
    for (int i = cc.ndim - 1; i >= 0; i--) { cc.strides[i] = st; st *= C->sizes[i]; }
    nnr_op_call c = *call;
    c.inputs[0] = &ca;
    c.inputs[1] = &cb;
    c.outputs[0] = &cc;
    int status = cpu_matmul(&c);
    if (status == NNR_OK) from_f32(fc, C);
    free(fa); free(fb); free(fc);
    return status;
}

/* integer matmul (i8, u8, i32, i64), as PyTorch has on the cpu: sums in int64, stored wrapping as a
 * cast would; one output row per piece of the pool */
typedef struct int_mm { const nnr_tensor_desc *A, *B, *C; int64_t M, N, K; } int_mm;

static int64_t elem_offset(const nnr_tensor_desc *d, int64_t flat_batch, int64_t r, int64_t c)
{
    int nd = d->ndim;
    int64_t off = r * d->strides[nd - 2] + c * d->strides[nd - 1];
    for (int i = nd - 3; i >= 0; i--) {
        off += (flat_batch % d->sizes[i]) * d->strides[i];
        flat_batch /= d->sizes[i];
    }
    return off;
}

static void int_rows(void *ctx, int64_t begin, int64_t end)
{
    const int_mm *m = ctx;
    int dt = m->C->dtype;
    int64_t es = (int64_t)nnr_dtype_nbytes(dt);
    for (int64_t row = begin; row < end; row++) {
        int64_t b = row / m->M, i = row % m->M;
        for (int64_t j = 0; j < m->N; j++) {
            int64_t acc = 0;
            for (int64_t k = 0; k < m->K; k++) {
                int64_t x = nnr_load_i64(dt, (const char *)m->A->data + elem_offset(m->A, b, i, k) * es);
                int64_t y = nnr_load_i64(dt, (const char *)m->B->data + elem_offset(m->B, b, k, j) * es);
                acc = (int64_t)((uint64_t)acc + (uint64_t)x * (uint64_t)y);
            }
            nnr_store_i64(dt, (char *)m->C->data + elem_offset(m->C, b, i, j) * es, acc);
        }
    }
}

static int int_matmul(const nnr_op_call *call)
{
    const nnr_tensor_desc *C = call->outputs[0];
    int nd = C->ndim;
    int_mm m = {call->inputs[0], call->inputs[1], C, C->sizes[nd - 2], C->sizes[nd - 1], call->inputs[0]->sizes[nd - 1]};
    int64_t rows = m.M;
    for (int d = 0; d < nd - 2; d++) rows *= C->sizes[d];
    int64_t grain = m.N * m.K > 4096 ? 1 : 4096 / (m.N * m.K + 1) + 1;
    return cpu_parallel_for(rows, grain, int_rows, &m);
}

/* many matrices, all read in place: the pool's threads take whole products, each a single-threaded
 * gemm (a small product split over threads spent more time in the split than in the product:
 * 64 products of 256x64 @ 64x256 ran 4x slower that way) */
typedef struct batch_mm {
    const nnr_tensor_desc *A, *B, *C;
    int nd, dt;
    int64_t M, N, K, es, lda, ldb, ldc;
    CBLAS_TRANSPOSE ta, tb;
    int onednn;                 /* f32 with one stride between products per operand: mm is set */
    cpu_onednn_mm mm;
} batch_mm;

static void batch_products(void *arg, int64_t begin, int64_t end)
{
    const batch_mm *m = arg;
    if (m->onednn && cpu_onednn_matmul(&m->mm, begin, end)) return;
    for (int64_t b = begin; b < end; b++) {
        const char *pa = m->A->data, *pb = m->B->data;
        char *pc = m->C->data;
        int64_t rem = b;
        for (int d = m->nd - 3; d >= 0; d--) {
            int64_t i = rem % m->C->sizes[d];
            rem /= m->C->sizes[d];
            pa += i * m->A->strides[d] * m->es;
            pb += i * m->B->strides[d] * m->es;
            pc += i * m->C->strides[d] * m->es;
        }
        cpu_gemm_serial(m->dt, m->ta, m->tb, m->M, m->N, m->K, 1.0, pa, m->lda, pb, m->ldb, 0.0, pc, m->ldc);
    }
}

/* the one element stride between consecutive products of d when its batch dims (those of c's shape)
 * flatten to one; 0 when they do not or a batch dim is broadcast */
static int64_t batch_stride(const nnr_tensor_desc *d, const nnr_tensor_desc *c)
{
    int64_t stride = 0, span = 1;
    for (int k = c->ndim - 3; k >= 0; k--) {
        if (c->sizes[k] == 1) continue;
        if (d->strides[k] == 0) return 0;
        if (stride == 0) stride = d->strides[k];
        else if (d->strides[k] != stride * span) return 0;
        span *= c->sizes[k];
    }
    return stride;
}

int cpu_matmul(const nnr_op_call *call)
{
    const nnr_tensor_desc *A = call->inputs[0], *B = call->inputs[1], *C = call->outputs[0];
    int nd = C->ndim, dt = C->dtype;
    if (nnr_dtype_is_integral(dt)) return int_matmul(call);
    if (dt == NNR_BF16) {
        int engine = cpu_bf16_engine(0);
        if (engine) return cpu_bf16_matmul(call, engine);
    }
    if (dt == NNR_F16 || dt == NNR_BF16) return half_matmul(call);
    int64_t M = C->sizes[nd - 2], N = C->sizes[nd - 1], K = A->sizes[nd - 1];
    int64_t es = (int64_t)nnr_dtype_nbytes(dt);
    int64_t batch = 1;
    for (int d = 0; d < nd - 2; d++) batch *= C->sizes[d];
    if (batch == 0 || M == 0 || N == 0) return NNR_OK;

    int64_t ars = A->strides[nd - 2], acs = A->strides[nd - 1];
    int64_t brs = B->strides[nd - 2], bcs = B->strides[nd - 1];
    int64_t crs = C->strides[nd - 2], ccs = C->strides[nd - 1];
    CBLAS_TRANSPOSE ta, tb, tc;
    int64_t lda, ldb, ldc;
    int direct_a = gemm_layout(M, K, ars, acs, &ta, &lda);
    int direct_b = gemm_layout(K, N, brs, bcs, &tb, &ldb);
    int direct_c = gemm_layout(M, N, crs, ccs, &tc, &ldc) && tc == CblasNoTrans;
    if (direct_a && direct_b && direct_c && K > 0 && batch >= cpu_pool_threads() && batch > 1) {
        batch_mm m = {A, B, C, nd, dt, M, N, K, es, lda, ldb, ldc, ta, tb, 0, {0}};
        int64_t sa = batch_stride(A, C), sb = batch_stride(B, C), sc = batch_stride(C, C);
        if (dt == NNR_F32 && sa > 0 && sb > 0 && sc > 0 && (double)M * N * K >= 32768.0 && cpu_onednn_available()) {
            m.onednn = 1;
            m.mm = (cpu_onednn_mm){M, N, K, lda, ldb, ldc, sa, sb, sc, ta == CblasTrans, tb == CblasTrans, A->data, B->data, C->data, 0};
        }
        if ((double)batch * M * N * K < CPU_SERIAL_MACS) { batch_products(&m, 0, batch); return NNR_OK; }    /* decoding's few heads */
        return cpu_parallel_for(batch, 1, batch_products, &m);
    }
    void *sa = direct_a ? NULL : malloc((size_t)(M * K * es) + 64);
    void *sb = direct_b ? NULL : malloc((size_t)(K * N * es) + 64);
    void *sc = direct_c ? NULL : malloc((size_t)(M * N * es) + 64);
    if ((!direct_a && !sa) || (!direct_b && !sb) || (!direct_c && !sc)) {
        free(sa); free(sb); free(sc);
        return cpu_error(NNR_ERR_OOM, "matmul: out of memory for scratch matrices");
    }
    if (!direct_a) { ta = CblasNoTrans; lda = K > 0 ? K : 1; }
    if (!direct_b) { tb = CblasNoTrans; ldb = N; }
    if (!direct_c) ldc = N;

    int64_t idx[NNR_MAX_DIMS] = {0};
    for (int64_t b = 0; b < batch; b++) {
        const char *pa = A->data, *pb = B->data;
        char *pc = C->data;
        for (int d = 0; d < nd - 2; d++) {
            pa += idx[d] * A->strides[d] * es;
            pb += idx[d] * B->strides[d] * es;
            pc += idx[d] * C->strides[d] * es;
        }
        if (!direct_a) { pack(dt, M, K, pa, ars, acs, sa); pa = sa; }
        if (!direct_b) { pack(dt, K, N, pb, brs, bcs, sb); pb = sb; }
        char *out = direct_c ? pc : sc;
        if (K == 0) {
            for (int64_t r = 0; r < M; r++) memset(out + r * ldc * es, 0, (size_t)(N * es));
        } else {
            cpu_gemm(dt, ta, tb, M, N, K, 1.0, pa, lda, pb, ldb, 0.0, out, ldc);
        }
        if (!direct_c) {
            for (int64_t r = 0; r < M; r++)
                for (int64_t c = 0; c < N; c++) {
                    if (dt == NNR_F32) ((float *)pc)[r * crs + c * ccs] = ((float *)sc)[r * N + c];
                    else ((double *)pc)[r * crs + c * ccs] = ((double *)sc)[r * N + c];
                }
        }
        for (int d = nd - 3; d >= 0; d--) { if (++idx[d] < C->sizes[d]) break; idx[d] = 0; }
        if ((b & 63) == 63 && cpu_host->interrupted()) break;
    }
    free(sa); free(sb); free(sc);
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

/* relu in place (NaN stays NaN, as the RELU op does); the fused linear and conv use it */
CPU_MULTI(void, relu_inplace, (int dt, void *p, int64_t n), (dt, p, n))
{
    if (dt == NNR_F32) { float *y = p; for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : (y[i] != y[i] ? y[i] : 0.0f); }
    else { double *y = p; for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : (y[i] != y[i] ? y[i] : 0.0); }
}

void cpu_relu_inplace(int dt, void *p, int64_t n) { relu_inplace(dt, p, n); }

typedef struct relu_job { char *y; int dt; } relu_job;

static void relu_range(void *arg, int64_t begin, int64_t end)
{
    const relu_job *j = arg;
    cpu_relu_inplace(j->dt, j->y + begin * (j->dt == NNR_F32 ? 4 : 8), end - begin);
}

/* y = x W^T (+ b) (relu'd), all contiguous: up to 16 rows on the small-batch kernel (gemv.c); a keyed
 * weight (inference, params i[1]) on oneDNN, packed once (onednn.c: its brgemm from AVX-512 up; below, its jit sgemm for
 * slices of up to 256 columns); else the bias rows first, then one gemm with
 * beta = 1. The relu pass keeps NaN (oneDNN's relu post-op would make it 0). */
int cpu_linear(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *y = call->outputs[0];
    const nnr_tensor_desc *b = call->n_inputs > 2 ? call->inputs[2] : NULL;
    int dt = y->dtype;
    int64_t M = x->sizes[0], K = x->sizes[1], N = w->sizes[0];
    int relu = call->params && call->params->i[0] == 1;
    if (cpu_gemv_applies(dt, M, N, K))
        return cpu_gemv_linear(x->data, w->data, b ? b->data : NULL, y->data, M, N, K, relu);
    if (!cpu_onednn_linear(call)) {          /* a keyed weight (inference) on oneDNN, packed once; else: */
        if (b) {
            for (int64_t r = 0; r < M; r++) {
                if (dt == NNR_F32) memcpy((float *)y->data + r * N, b->data, sizeof(float) * (size_t)N);
                else memcpy((double *)y->data + r * N, b->data, sizeof(double) * (size_t)N);
            }
        }
        if (K == 0 && !b) memset(y->data, 0, (size_t)(M * N) * nnr_dtype_nbytes(dt));
        if (K > 0) cpu_gemm(dt, CblasNoTrans, CblasTrans, M, N, K, 1.0, x->data, K, w->data, K, b ? 1.0 : 0.0, y->data, N);
    }
    if (relu) {      /* relu, while the output is still in cache */
        relu_job j = {y->data, dt};
        return cpu_parallel_for(M * N, 1 << 15, relu_range, &j);
    }
    return cpu_host->interrupted() ? NNR_ERR_INTERRUPTED : NNR_OK;
}
