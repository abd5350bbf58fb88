/* Scans: cumsum and cumprod along a dim; what they record and their derivatives, written with
 * recorded ops (so that a backward that records can be differentiated again):
 *  - cumsum: the gradient summed from the end (a reverse cumsum, whose own derivative is cumsum);
 *  - cumprod: PyTorch's formula, right with zeros in the input. With k the first zero of a row,
 *    x_i for i < k gets sum_{j >= i} g_j y_j / x_i (the y_j past k are 0), x_k gets
 *    sum_{j >= k} g_j y'_j with y' the cumprod of x with x_k replaced by 1, and the x_i past k get 0. */
#include <string.h>
#include "ops/internal.h"

static nnr_tensor *scan(int op, const nnr_tensor *a, int d, int reverse);

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
