/* Scans: cumsum and cumprod along a dim; what they record and their derivatives, written with
 * recorded ops (so that a backward that records can be differentiated again):
 *  - cumsum: the gradient summed from the end (a reverse cumsum, whose own derivative is cumsum);
 *  - cumprod: PyTorch's formula, right with zeros in the input. With k the first zero of a row,
 *    x_i for i < k gets sum_{j >= i} g_j y_j / x_i (the y_j past k are 0), x_k gets
 *    sum_{j >= k} g_j y'_j with y' the cumprod of x with x_k replaced by 1, and the x_i past k get 0;
 *    with create_graph and zeros in x, a quadratic form whose terms stay polynomials in x (below). */
#include <string.h>
#include "ops/internal.h"

static nnr_tensor *scan(int op, const nnr_tensor *a, int d, int reverse);

/* cumprod's gradient as polynomials in x, for a backward that records its graph (create_graph) when
 * x has zeros: the linear formula below masks out the terms that vanish at the point, whose own
 * derivatives do not. grad_i = y_{i-1} * sum_{j >= i} g_j prod_{i < m <= j} x_m, the products taken
 * over an [..., n, n] expansion of the row: O(n^2), as PyTorch does in that case. */
static nnr_tensor *cumprod_grad_quadratic(const nnr_tensor *x, const nnr_tensor *g, int d)
{
    if (x->ndim == 0) return nnr_clone(g);
    int last = x->ndim - 1;
    int64_t n = x->sizes[d];
    nnr_tensor *xt = nnr_transpose(x, d, last), *gt = nnr_transpose(g, d, last);
    int64_t sq[NNR_MAX_DIMS + 1];
    for (int k = 0; k < last; k++) sq[k] = xt ? xt->sizes[k] : 0;
    sq[last] = n;
    sq[last + 1] = n;
    nnr_tensor *xu = xt ? nnr_unsqueeze(xt, last) : NULL, *gu = gt ? nnr_unsqueeze(gt, last) : NULL;   /* [..., 1, n] */
    nnr_tensor *xe = xu ? nnr_expand(xu, last + 2, sq) : NULL, *ge = gu ? nnr_expand(gu, last + 2, sq) : NULL;
    nnr_tensor *ar = nnr_arange(0, (double)n, 1, x->dtype, x->device);
    int64_t col[2] = {n, 1};
    nnr_tensor *ii = ar ? nnr_reshape(ar, 2, col) : NULL;                      /* i down the rows, m or j across */
    nnr_tensor *after = ii ? nnr_binary(NNR_OP_GT, ar, ii) : NULL;             /* m > i */
    nnr_tensor *from = ii ? nnr_binary(NNR_OP_GE, ar, ii) : NULL;              /* j >= i */
    nnr_tensor *xm = after && xe ? nnr_where_scalar(after, xe, 0, NULL, 1) : NULL;
    nnr_tensor *T = xm ? scan(NNR_OP_CUMPROD, xm, last + 1, 0) : NULL;         /* prod_{i < m <= j} x_m */
    nnr_tensor *tg = T && ge ? nnr_mul(T, ge) : NULL;
    nnr_tensor *tm = tg && from ? nnr_where_scalar(from, tg, 0, NULL, 0) : NULL;
    int sd = last + 1;
    nnr_tensor *S = tm ? nnr_reduce(NNR_OP_SUM, tm, 1, &sd, 0, 0) : NULL;     /* [..., n] */
    int64_t one[NNR_MAX_DIMS];
    for (int k = 0; k < last; k++) one[k] = sq[k];
    one[last] = 1;
    nnr_tensor *ones = nnr_full(x->dtype, last + 1, one, 1.0, x->device);
    nnr_tensor *head = xt ? nnr_narrow(xt, last, 0, n - 1) : NULL;
    nnr_tensor *parts[2] = {ones, head};
    nnr_tensor *shifted = ones && head ? nnr_cat(2, parts, last) : NULL;       /* 1, x_0 .. x_{n-2} */
    nnr_tensor *yex = shifted ? scan(NNR_OP_CUMPROD, shifted, last, 0) : NULL; /* y_{i-1} */
    nnr_tensor *r = yex && S ? nnr_mul(yex, S) : NULL;
    nnr_tensor *out = r ? nnr_transpose(r, d, last) : NULL;
    nnr_tensor *all[] = {xt, gt, xu, gu, xe, ge, ar, ii, after, from, xm, T, tg, tm, S, ones, head, shifted, yex, r};
    nnr_release_all(20, all);
    return out;
}

static int scan_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    int d = (int)node->i[0];
    if (node->i[2] == NNR_OP_CUMSUM) {
        grads[0] = scan(NNR_OP_CUMSUM, g, d, !node->i[1]);
        return grads[0] ? NNR_OK : nnr_last_status();
    }
    const nnr_tensor *x = nnr_node_saved(node, 0), *y = nnr_node_saved(node, 1);
    if (!x || !y) return nnr_last_status();
    nnr_tensor *z = nnr_binary_scalar(NNR_OP_EQ, x, 0, 0);                     /* the zeros */
    if (z && nnr_creating_graph()) {
        nnr_tensor *anyz = nnr_reduce(NNR_OP_ANY, z, 0, NULL, 0, 0);
        double has = 0;
        int st = anyz ? nnr_item(anyz, &has) : nnr_last_status();
        nnr_tensor_release(anyz);
        if (st) { nnr_tensor_release(z); return st; }
        if (has != 0) {
            nnr_tensor_release(z);
            grads[0] = cumprod_grad_quadratic(x, g, d);
            return grads[0] ? NNR_OK : nnr_last_status();
        }
    }
    nnr_tensor *zf = z ? nnr_to(z, x->dtype, x->device) : NULL;
    nnr_tensor *cz = zf ? scan(NNR_OP_CUMSUM, zf, d, 0) : NULL;                 /* zeros so far */
    nnr_tensor *before = cz ? nnr_binary_scalar(NNR_OP_EQ, cz, 0, 0) : NULL;   /* before the first zero */
    nnr_tensor *one = cz ? nnr_binary_scalar(NNR_OP_EQ, cz, 1, 0) : NULL;
    nnr_tensor *at = one ? nnr_binary(NNR_OP_LOGICAL_AND, one, z) : NULL;      /* the first zero */
    nnr_tensor *xs = z ? nnr_where_scalar(z, NULL, 1, x, 0) : NULL;             /* zeros replaced by 1 */
    nnr_tensor *gy = nnr_mul(g, y);
    nnr_tensor *rg = gy ? scan(NNR_OP_CUMSUM, gy, d, 1) : NULL;
    nnr_tensor *q = rg && xs ? nnr_binary(NNR_OP_DIV, rg, xs) : NULL;
    nnr_tensor *ga = q && before ? nnr_where_scalar(before, q, 0, NULL, 0) : NULL;
    nnr_tensor *x1 = at ? nnr_where_scalar(at, NULL, 1, x, 0) : NULL;           /* the first zero replaced by 1 */
    nnr_tensor *y1 = x1 ? scan(NNR_OP_CUMPROD, x1, d, 0) : NULL;
    nnr_tensor *gy1 = y1 ? nnr_mul(g, y1) : NULL;
    nnr_tensor *rg1 = gy1 ? scan(NNR_OP_CUMSUM, gy1, d, 1) : NULL;
    nnr_tensor *gb = rg1 && at ? nnr_where_scalar(at, rg1, 0, NULL, 0) : NULL;
    grads[0] = ga && gb ? nnr_binary(NNR_OP_ADD, ga, gb) : NULL;
    nnr_tensor *all[] = {z, zf, cz, before, one, at, xs, gy, rg, q, ga, x1, y1, gy1, rg1, gb};
    nnr_release_all(16, all);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static int record_scan(int op, const nnr_tensor *x, int d, int reverse, nnr_tensor *out)
{
    nnr_node *node = nnr_node_new(op == NNR_OP_CUMSUM ? "CumsumBackward" : "CumprodBackward", scan_backward, 1, &x);
    if (!node) return nnr_last_status();
    node->double_diff = 1;                     /* written with recorded ops */
    node->i[0] = d;
    node->i[1] = reverse;
    node->i[2] = op;
    int st = NNR_OK;
    if (op == NNR_OP_CUMPROD) {
        st = nnr_save(node, x, 0);
        if (!st) st = nnr_save(node, out, 1);
    }
    if (st) { nnr_node_release(node); return st; }
    return nnr_node_finish(out, node, NNR_OK);
}

/* ---------------- front ends ---------------- */

/* op along dim d (checked), from the end when reverse; integers and bool scan in i64 */
static nnr_tensor *scan(int op, const nnr_tensor *a, int d, int reverse)
{
    const char *name = nnr_op_name(op);
    int dt = nnr_dtype_is_integral(a->dtype) ? NNR_I64 : a->dtype;
    nnr_tensor *x = nnr_as_dtype(a, dt);
    nnr_tensor *r = x ? nnr_tensor_alloc(dt, a->ndim, a->sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc di, dout;
        nnr_tensor_desc_of(x, &di);
        nnr_tensor_desc_of(r, &dout);
        if (a->ndim == 0) { di.ndim = dout.ndim = 1; di.sizes[0] = dout.sizes[0] = 1; di.strides[0] = dout.strides[0] = 1; }
        else {       /* dim d moved last in both */
            for (nnr_tensor_desc *t = &di; t; t = t == &di ? &dout : NULL) {
                int64_t size = t->sizes[d], stride = t->strides[d];
                for (int k = d; k < a->ndim - 1; k++) { t->sizes[k] = t->sizes[k + 1]; t->strides[k] = t->strides[k + 1]; }
                t->sizes[a->ndim - 1] = size;
                t->strides[a->ndim - 1] = stride;
            }
        }
        nnr_op_params p = {.struct_size = sizeof p, .i = {reverse}};
        const nnr_tensor_desc *in[1] = {&di};
        if (nnr_run_descs(name, op, a->device, 1, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (r && nnr_should_record(1, (const nnr_tensor **)&x)) NNR_RECORD(r, record_scan(op, x, d, reverse, r));
    nnr_tensor_release(x);
    return r;
}

static nnr_tensor *scan_front(int op, const nnr_tensor *a, int dim)
{
    int n = a->ndim ? a->ndim : 1, d = dim < 0 ? dim + n : dim;
    if (d < 0 || d >= n) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", nnr_op_name(op), dim + 1,
                   nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
        return NULL;
    }
    return scan(op, a, a->ndim ? d : 0, 0);
}

nnr_tensor *nnr_cumsum(const nnr_tensor *a, int dim) { return scan_front(NNR_OP_CUMSUM, a, dim); }
nnr_tensor *nnr_cumprod(const nnr_tensor *a, int dim) { return scan_front(NNR_OP_CUMPROD, a, dim); }
