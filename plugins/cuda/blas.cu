/* matmul, linear and convolution on cuBLAS.
 *
 * cuBLAS is column-major; a row-major C = A B is computed as C^T = B^T A^T,
 * which needs no copies: a row-major matrix read column-major is its
 * transpose. Operands with neither unit row nor unit column stride are copied
 * to contiguous scratch first. TF32 is off unless nnr.backends.cuda.allow_tf32.
 *
 * Convolution is im2col into a "wide" [C*KH*KW, images*HO*WO] matrix for a
 * chunk of images, one batched gemm over the groups, and a permute (with the
 * bias and the fused relu) back to NCHW; its gradients use the same layout,
 * so each is one or two gemms per chunk instead of one per image. */
#include <math.h>
#include "blas_api.h"
#include "dtype.cuh"

cudaDataType_t cu_blas_type(int dt)
{
    switch (dt) {
    case NNR_F64: return CUDA_R_64F;
    case NNR_F16: return CUDA_R_16F;
    case NNR_BF16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
    }
}

static cublasComputeType_t compute_type(int dt)
{
    if (dt == NNR_F64) return CUBLAS_COMPUTE_64F;
    if (dt == NNR_F32 && cu_allow_tf32()) return CUBLAS_COMPUTE_32F_FAST_TF32;
    return CUBLAS_COMPUTE_32F;
}

/* C (row-major [M, N], ldc) = alpha * A B + beta * C for `batch` matrices, where A is [M, K] and B is
 * [K, N], each either row-major (*_rm = 1, leading dim ld*) or column-major; strides between batches */
static int gemm_rm(cu_device *d, int dt, int64_t M, int64_t N, int64_t K, const void *A, int a_rm, int64_t lda, int64_t sa,
                   const void *B, int b_rm, int64_t ldb, int64_t sb, void *C, int64_t ldc, int64_t sc, int64_t batch, double beta,
                   const char *what)
{
    if (M == 0 || N == 0 || batch == 0) return NNR_OK;
    float alpha_f = 1.0f, beta_f = (float)beta;
    double alpha_d = 1.0;
    const void *alpha = dt == NNR_F64 ? (const void *)&alpha_d : (const void *)&alpha_f;
    const void *betap = dt == NNR_F64 ? (const void *)&beta : (const void *)&beta_f;
    cudaDataType_t t = cu_blas_type(dt);
    /* column-major: C^T [N, M] = B^T [N, K] * A^T [K, M] */
    cublasOperation_t opa = b_rm ? CUBLAS_OP_N : CUBLAS_OP_T, opb = a_rm ? CUBLAS_OP_N : CUBLAS_OP_T;
    cublasStatus_t s;
    if (K == 0) return cu_errorf(NNR_ERR_UNSUPPORTED, "%s: an inner dimension of 0", what);
    s = cu_blas()->gemm_strided_batched_ex(d->blas, opa, opb, (int)N, (int)M, (int)K, alpha, B, t, (int)ldb, sb, A, t, (int)lda, sa, betap,
                                   C, t, (int)ldc, sc, (int)batch, compute_type(dt), CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS) return cu_blas_fail(s, what);
    return NNR_OK;
}

/* how a [rows, cols] matrix with strides (s0, s1) can be handed to cuBLAS: 1 row-major, 0 column-major, -1 not at all */
static int matrix_layout(int64_t rows, int64_t cols, int64_t s0, int64_t s1, int64_t *ld)
{
    if ((s1 == 1 || cols == 1) && (rows == 1 || s0 >= cols) && s0 > 0) { *ld = rows == 1 ? (cols > 0 ? cols : 1) : s0; return 1; }
    if ((s1 == 1 || cols == 1) && rows == 1) { *ld = cols > 0 ? cols : 1; return 1; }
    if ((s0 == 1 || rows == 1) && (cols == 1 || s1 >= rows) && s1 > 0) { *ld = cols == 1 ? (rows > 0 ? rows : 1) : s1; return 0; }
    return -1;
}

/* copies a strided tensor into contiguous scratch (the generic copy kernel) */
static int to_contiguous(cu_device *d, const nnr_tensor_desc *src, void *dst)
{
    nnr_tensor_desc c = *src;
    int64_t st = 1;
    for (int i = c.ndim - 1; i >= 0; i--) { c.strides[i] = st; st *= c.sizes[i]; }
    c.data = dst;
    nnr_op_call call;
    memset(&call, 0, sizeof call);
    call.struct_size = sizeof call;
    call.op = NNR_OP_COPY;
    call.n_inputs = 1;
    call.n_outputs = 1;
    call.inputs[0] = src;
    call.outputs[0] = &c;
    return cu_copy_op(d, &call);
}

/* one uniform stride over the batch dims [0, nb) of a descriptor, or -1 */
static int64_t batch_stride(const nnr_tensor_desc *t, int nb, int64_t *count)
{
    int64_t n = 1, stride = -2;
    for (int i = nb - 1; i >= 0; i--) {
        if (t->sizes[i] == 1) continue;
        if (stride == -2) { stride = t->strides[i]; n = t->sizes[i]; continue; }
        if (t->strides[i] != stride * n) return -1;
        n *= t->sizes[i];
    }
    *count = n;
    return stride == -2 ? 0 : stride;
}

int cu_matmul(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *a = call->inputs[0], *b = call->inputs[1], *o = call->outputs[0];
    int nd = o->ndim, nb = nd - 2, dt = o->dtype;
    int64_t M = o->sizes[nd - 2], N = o->sizes[nd - 1], K = a->sizes[nd - 1];
    int64_t es = (int64_t)nnr_dtype_nbytes(dt), batch = 1;
    for (int i = 0; i < nb; i++) batch *= o->sizes[i];
    if (batch == 0 || M == 0 || N == 0) return NNR_OK;
    if (K == 0) {
        nnr_op_call f;
        memset(&f, 0, sizeof f);
        nnr_op_params p;
        memset(&p, 0, sizeof p);
        f.struct_size = sizeof f; f.op = NNR_OP_FILL; f.n_outputs = 1; f.outputs[0] = o; f.params = &p;
        return cu_fill(d, &f);
    }
    int64_t lda = 0, ldb = 0, ldc = 0, na = 1, nbb = 1, nc = 1;
    int64_t sa = batch_stride(a, nb, &na), sb = batch_stride(b, nb, &nbb), sc = batch_stride(o, nb, &nc);
    int ra = matrix_layout(M, K, a->strides[nd - 2], a->strides[nd - 1], &lda);
    int rb = matrix_layout(K, N, b->strides[nd - 2], b->strides[nd - 1], &ldb);
    int rc = matrix_layout(M, N, o->strides[nd - 2], o->strides[nd - 1], &ldc);
    /* whatever cuBLAS cannot take directly goes through contiguous scratch */
    int copy_a = ra < 0 || sa < 0 || (na != batch && sa != 0), copy_b = rb < 0 || sb < 0 || (nbb != batch && sb != 0);
    int copy_c = rc != 1 || sc < 0 || nc != batch || sc == 0;
    if (batch == 1) { copy_c = rc != 1; sa = sb = sc = 0; }
    size_t need = 0, off_a = 0, off_b = 0, off_c = 0;
    if (copy_a) { off_a = need; need += (size_t)(batch * M * K * es + 255) & ~(size_t)255; }
    if (copy_b) { off_b = need; need += (size_t)(batch * K * N * es + 255) & ~(size_t)255; }
    if (copy_c) { off_c = need; need += (size_t)(batch * M * N * es + 255) & ~(size_t)255; }
    char *scratch = need ? (char *)cu_scratch(d, need) : NULL;
    if (need && !scratch) return NNR_ERR_OOM;
    const void *pa = a->data, *pb = b->data;
    void *pc = o->data;
    int st;
    if (copy_a) {
        nnr_tensor_desc e = *a;                       /* the broadcast operand made whole */
        for (int i = 0; i < nb; i++) e.sizes[i] = o->sizes[i];
        if ((st = to_contiguous(d, &e, scratch + off_a))) return st;
        pa = scratch + off_a; ra = 1; lda = K; sa = batch > 1 ? M * K : 0;
    }
    if (copy_b) {
        nnr_tensor_desc e = *b;
        for (int i = 0; i < nb; i++) e.sizes[i] = o->sizes[i];
        if ((st = to_contiguous(d, &e, scratch + off_b))) return st;
        pb = scratch + off_b; rb = 1; ldb = N; sb = batch > 1 ? K * N : 0;
    }
    if (copy_c) { pc = scratch + off_c; ldc = N; sc = M * N; }
    st = gemm_rm(d, dt, M, N, K, pa, ra, lda, sa, pb, rb, ldb, sb, pc, ldc, sc, batch, 0.0, "matmul");
    if (st) return st;
    if (copy_c) {
        nnr_tensor_desc src = *o;
        int64_t s = 1;
        for (int i = nd - 1; i >= 0; i--) { src.strides[i] = s; s *= o->sizes[i]; }
        src.data = pc;
        nnr_op_call c;
        memset(&c, 0, sizeof c);
        c.struct_size = sizeof c; c.op = NNR_OP_COPY; c.n_inputs = 1; c.n_outputs = 1; c.inputs[0] = &src; c.outputs[0] = o;
        return cu_copy_op(d, &c);
    }
    return NNR_OK;
}

int cu_linear(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *b = call->n_inputs > 2 ? call->inputs[2] : NULL;
    const nnr_tensor_desc *y = call->outputs[0];
    int64_t M = x->sizes[0], K = x->sizes[1], N = w->sizes[0];
    int relu = call->params && call->params->i[0] == 1;
    if (M == 0 || N == 0) return NNR_OK;
    if (K == 0) return cu_errorf(NNR_ERR_UNSUPPORTED, "linear: in_features of 0");
    /* y [M, N] = x [M, K] * W^T: W read as a column-major [K, N] */
    int st = gemm_rm(d, y->dtype, M, N, K, x->data, 1, K, 0, w->data, 0, K, 0, y->data, N, 0, 1, 0.0, "linear");
    if (st) return st;
    return cu_bias_relu(d, y->dtype, y->data, b ? b->data : NULL, M, N, relu);
}

/* ---------------- convolution ---------------- */


typedef struct conv_geom {
    int64_t N, C, H, W, O, KH, KW, HO, WO, sh, sw, ph, pw, dh, dw, groups;
    int64_t Cg, Og, CK, P;     /* per group: channels, outputs, C/g*KH*KW; HO*WO */
} conv_geom;

static conv_geom geometry(const nnr_tensor_desc *x, const nnr_tensor_desc *w, const nnr_tensor_desc *y, const int64_t *i)
{
    conv_geom g;
    g.N = x->sizes[0]; g.C = x->sizes[1]; g.H = x->sizes[2]; g.W = x->sizes[3];
    g.O = w->sizes[0]; g.KH = w->sizes[2]; g.KW = w->sizes[3];
    g.HO = y->sizes[2]; g.WO = y->sizes[3];
    g.sh = i[0]; g.sw = i[1]; g.ph = i[2]; g.pw = i[3]; g.dh = i[4]; g.dw = i[5]; g.groups = i[6] > 0 ? i[6] : 1;
    g.Cg = g.C / g.groups; g.Og = g.O / g.groups; g.CK = g.Cg * g.KH * g.KW; g.P = g.HO * g.WO;
    return g;
}

/* cols[(c*KH + kh)*KW + kw][n*P + p] = x[n0 + n][c][h][w] (0 in the padding) */
template <typename T>
__global__ void k_im2col(const T *__restrict__ x, T *__restrict__ cols, conv_geom g, int64_t n0, int64_t nb)
{
    int64_t wide = nb * g.P, total = g.C * g.KH * g.KW * wide;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t col = i % wide, row = i / wide;
        int64_t n = col / g.P, p = col % g.P, ho = p / g.WO, wo = p % g.WO;
        int64_t kw = row % g.KW, kh = (row / g.KW) % g.KH, c = row / (g.KW * g.KH);
        int64_t h = ho * g.sh - g.ph + kh * g.dh, w = wo * g.sw - g.pw + kw * g.dw;
        cols[i] = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? x[(((n0 + n) * g.C + c) * g.H + h) * g.W + w] : from_d<T>(0.0);
    }
}

/* gx[n0 + n][c][h][w] = sum of the columns that read it */
template <typename T>
__global__ void k_col2im(const T *__restrict__ cols, T *__restrict__ gx, conv_geom g, int64_t n0, int64_t nb)
{
    int64_t wide = nb * g.P, total = nb * g.C * g.H * g.W;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t w = i % g.W, h = (i / g.W) % g.H, c = (i / (g.W * g.H)) % g.C, n = i / (g.W * g.H * g.C);
        double s = 0;
        for (int64_t kh = 0; kh < g.KH; kh++) {
            int64_t hn = h + g.ph - kh * g.dh;
            if (hn < 0 || hn % g.sh) continue;
            int64_t ho = hn / g.sh;
            if (ho >= g.HO) continue;
            for (int64_t kw = 0; kw < g.KW; kw++) {
                int64_t wn = w + g.pw - kw * g.dw;
                if (wn < 0 || wn % g.sw) continue;
                int64_t wo = wn / g.sw;
                if (wo >= g.WO) continue;
                s += to_d(cols[((c * g.KH + kh) * g.KW + kw) * wide + n * g.P + ho * g.WO + wo]);
            }
        }
        gx[n0 * g.C * g.H * g.W + i] = from_d<T>(s);
    }
}

/* y[n0 + n][o][p] = Y[o][n*P + p] + bias[o], relu'd when asked */
template <typename T>
__global__ void k_wide_to_nchw(const T *__restrict__ Y, const T *__restrict__ bias, T *__restrict__ y, conv_geom g, int64_t n0,
                               int64_t nb, int relu)
{
    int64_t total = nb * g.O * g.P, wide = nb * g.P;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = i % g.P, o = (i / g.P) % g.O, n = i / (g.P * g.O);
        double v = to_d(Y[o * wide + n * g.P + p]);
        if (bias) v += to_d(bias[o]);
        if (relu) v = v > 0 ? v : (v != v ? v : 0.0);
        y[n0 * g.O * g.P + i] = from_d<T>(v);
    }
}

/* GY[o][n*P + p] = gy[n0 + n][o][p], masked by a fused relu's output when given */
template <typename T>
__global__ void k_nchw_to_wide(const T *__restrict__ gy, const T *__restrict__ mask, T *__restrict__ GY, conv_geom g, int64_t n0,
                               int64_t nb)
{
    int64_t total = nb * g.O * g.P, wide = nb * g.P;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = i % g.P, o = (i / g.P) % g.O, n = i / (g.P * g.O);
        int64_t src = n0 * g.O * g.P + i;
        T v = gy[src];
        if (mask && !(to_d(mask[src]) > 0)) v = from_d<T>(0.0);
        GY[o * wide + n * g.P + p] = v;
    }
}

/* gb[o] (+)= sum over the row GY[o][:] */
template <typename T>
__global__ void k_rowsum(const T *__restrict__ GY, T *__restrict__ gb, int64_t O, int64_t wide, int accumulate)
{
    __shared__ double sh[256];
    for (int64_t o = blockIdx.x; o < O; o += gridDim.x) {
        double s = 0;
        for (int64_t k = threadIdx.x; k < wide; k += blockDim.x) s += to_d(GY[o * wide + k]);
        sh[threadIdx.x] = s;
        __syncthreads();
        for (int t = blockDim.x / 2; t > 0; t >>= 1) {
            if ((int)threadIdx.x < t) sh[threadIdx.x] += sh[threadIdx.x + t];
            __syncthreads();
        }
        if (threadIdx.x == 0) gb[o] = from_d<T>((accumulate ? to_d(gb[o]) : 0.0) + sh[0]);
        __syncthreads();
    }
}

/* images per chunk so that the wide matrices stay under ~512 MiB */
static int64_t chunk_images(const conv_geom *g, int64_t es)
{
    int64_t per = (g->C * g->KH * g->KW + 2 * g->O) * g->P * es;
    int64_t nb = per > 0 ? ((int64_t)512 << 20) / per : g->N;
    return nb < 1 ? 1 : nb > g->N ? g->N : nb;
}

/* the scratch of a chunk of *nb images: the columns [C*KH*KW, nb*P], then *wide_out [O, nb*P]
 * (the forward's output or the output gradient, in the wide layout); NULL when out of memory */
static char *conv_buffers(cu_device *d, const conv_geom *g, int64_t es, int64_t *nb, char **wide_out)
{
    *nb = chunk_images(g, es);
    int64_t cols = g->C * g->KH * g->KW * *nb * g->P * es;
    char *p = (char *)cu_scratch(d, (size_t)(cols + g->O * *nb * g->P * es));
    *wide_out = p ? p + cols : NULL;
    return p;
}

template <typename T> static T *tp(const void *p) { return (T *)p; }


int cu_conv2d(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *b = call->n_inputs > 2 ? call->inputs[2] : NULL, *y = call->outputs[0];
    conv_geom g = geometry(x, w, y, call->params->i);
    int dt = x->dtype, relu = call->params->i[7] == 1;
    int64_t es = (int64_t)nnr_dtype_nbytes(dt);
    if (g.N == 0 || g.O == 0 || g.P == 0) return NNR_OK;
    int64_t nb;
    char *Y, *cols = conv_buffers(d, &g, es, &nb, &Y);
    if (!cols) return NNR_ERR_OOM;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
        int64_t m = g.N - n0 < nb ? g.N - n0 : nb, wide = m * g.P;
        unsigned grid = cu_blocks(g.C * g.KH * g.KW * wide, 256);
        LAUNCH(dt, k_im2col, grid, tp<T>(x->data), tp<T>(cols), g, n0, m);
        CU_LAUNCHED("conv2d");
        /* per group: Y_g [Og, wide] = W_g [Og, CK] * cols_g [CK, wide] */
        int st = gemm_rm(d, dt, g.Og, wide, g.CK, w->data, 1, g.CK, g.Og * g.CK, cols, 1, wide, g.CK * wide, Y, wide, g.Og * wide,
                         g.groups, 0.0, "conv2d");
        if (st) return st;
        grid = cu_blocks(m * g.O * g.P, 256);
        LAUNCH(dt, k_wide_to_nchw, grid, tp<T>(Y), b ? tp<T>(b->data) : NULL, tp<T>(y->data), g, n0, m, relu);
        CU_LAUNCHED("conv2d");
    }
    return NNR_OK;
}

int cu_conv2d_grad_input(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *gy = call->inputs[0], *w = call->inputs[1], *gx = call->outputs[0];
    const nnr_tensor_desc *mask = call->n_inputs > 2 && call->params->i[7] == 1 ? call->inputs[2] : NULL;
    conv_geom g = geometry(gx, w, gy, call->params->i);
    int dt = gx->dtype;
    int64_t es = (int64_t)nnr_dtype_nbytes(dt);
    if (g.N == 0) return NNR_OK;
    if (g.O == 0 || g.P == 0) {
        CU_CHECK(cudaMemsetAsync(gx->data, 0, (size_t)(nnr_desc_numel(gx) * es), d->stream), "conv2d backward");
        return NNR_OK;
    }
    int64_t nb;
    char *GY, *cols = conv_buffers(d, &g, es, &nb, &GY);
    if (!cols) return NNR_ERR_OOM;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
        int64_t m = g.N - n0 < nb ? g.N - n0 : nb, wide = m * g.P;
        unsigned grid = cu_blocks(m * g.O * g.P, 256);
        LAUNCH(dt, k_nchw_to_wide, grid, tp<T>(gy->data), mask ? tp<T>(mask->data) : NULL, tp<T>(GY), g, n0, m);
        CU_LAUNCHED("conv2d backward");
        /* per group: cols_g [CK, wide] = W_g^T [CK, Og] * GY_g [Og, wide]; W_g^T is W_g read column-major */
        int st = gemm_rm(d, dt, g.CK, wide, g.Og, w->data, 0, g.CK, g.Og * g.CK, GY, 1, wide, g.Og * wide, cols, wide, g.CK * wide,
                         g.groups, 0.0, "conv2d backward");
        if (st) return st;
        grid = cu_blocks(m * g.C * g.H * g.W, 256);
        LAUNCH(dt, k_col2im, grid, tp<T>(cols), tp<T>(gx->data), g, n0, m);
        CU_LAUNCHED("conv2d backward");
    }
    return NNR_OK;
}

int cu_conv2d_grad_weight(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *gy = call->inputs[1], *gw = call->outputs[0];
    const nnr_tensor_desc *gb = call->n_outputs > 1 ? call->outputs[1] : NULL;
    const nnr_tensor_desc *mask = call->n_inputs > 2 && call->params->i[7] == 1 ? call->inputs[2] : NULL;
    conv_geom g = geometry(x, gw, gy, call->params->i);
    int dt = x->dtype;
    int64_t es = (int64_t)nnr_dtype_nbytes(dt);
    if (g.N == 0 || g.P == 0) {
        CU_CHECK(cudaMemsetAsync(gw->data, 0, (size_t)(nnr_desc_numel(gw) * es), d->stream), "conv2d backward");
        if (gb) CU_CHECK(cudaMemsetAsync(gb->data, 0, (size_t)(nnr_desc_numel(gb) * es), d->stream), "conv2d backward");
        return NNR_OK;
    }
    int64_t nb;
    char *GY, *cols = conv_buffers(d, &g, es, &nb, &GY);
    if (!cols) return NNR_ERR_OOM;
    for (int64_t n0 = 0; n0 < g.N; n0 += nb) {
        int64_t m = g.N - n0 < nb ? g.N - n0 : nb, wide = m * g.P;
        unsigned grid = cu_blocks(g.C * g.KH * g.KW * wide, 256);
        LAUNCH(dt, k_im2col, grid, tp<T>(x->data), tp<T>(cols), g, n0, m);
        grid = cu_blocks(m * g.O * g.P, 256);
        LAUNCH(dt, k_nchw_to_wide, grid, tp<T>(gy->data), mask ? tp<T>(mask->data) : NULL, tp<T>(GY), g, n0, m);
        CU_LAUNCHED("conv2d backward");
        /* per group: GW_g [Og, CK] (+)= GY_g [Og, wide] * cols_g^T [wide, CK]; cols_g^T is cols_g read column-major */
        int st = gemm_rm(d, dt, g.Og, g.CK, wide, GY, 1, wide, g.Og * wide, cols, 0, wide, g.CK * wide, gw->data, g.CK, g.Og * g.CK,
                         g.groups, n0 ? 1.0 : 0.0, "conv2d backward");
        if (st) return st;
        if (gb) {
            unsigned og = (unsigned)(g.O < 65535 ? g.O : 65535);
            LAUNCH(dt, k_rowsum, og, tp<T>(GY), tp<T>(gb->data), g.O, wide, n0 > 0);
            CU_LAUNCHED("conv2d backward");
        }
    }
    return NNR_OK;
}
