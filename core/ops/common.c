/* What the op families share: broadcasting and dtype rules, operands made contiguous, in-place ops
 * while recording, and the small pieces of arithmetic their backwards use. */
#include <math.h>
#include <string.h>
#include "ops/internal.h"

/* out may be a or b (where() folds its operands' shapes into one): the result is built apart first */
int nnr_broadcast_shapes(const char *op, int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out_)
{
    int n = na > nb ? na : nb;
    int64_t out[NNR_MAX_DIMS];
    if (n > NNR_MAX_DIMS) return nnr_errorf(NNR_ERR_INVALID, "%s: %d dimensions, at most %d supported", op, n, NNR_MAX_DIMS);
    for (int i = 0; i < n; i++) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t sa = ia >= 0 ? a[ia] : 1, sb = ib >= 0 ? b[ib] : 1;
        if (sa == sb || sb == 1) out[i] = sa;
        else if (sa == 1) out[i] = sb;
        else {
            char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
            return nnr_errorf(NNR_ERR_INVALID, "%s: shapes %s and %s cannot broadcast (dimension %d: %lld vs %lld)", op,
                              nnr_shape_str(x, sizeof x, na, a), nnr_shape_str(y, sizeof y, nb, b), i + 1, (long long)sa, (long long)sb);
        }
    }
    memcpy(out_, out, sizeof(int64_t) * (size_t)n);
    *nout = n;
    return NNR_OK;
}

static nnr_tensor *graph_add(const nnr_tensor *a, const nnr_tensor *b) { return nnr_binary(NNR_OP_ADD, a, b); }

/* the recorded ops a backward pass that creates a graph needs (the engine cannot call ops itself) */
__attribute__((constructor)) static void give_engine_graph_ops(void)
{
    nnr_autograd_graph_ops = (nnr_graph_ops){.add = graph_add, .to = nnr_to, .clone = nnr_clone};
}

int nnr_same_device(const char *op, const nnr_tensor *a, const nnr_tensor *b)
{
    if (a->device == b->device) return NNR_OK;
    return nnr_errorf(NNR_ERR_DEVICE, "%s: tensors are on different devices (%s and %s); move one with :to()", op,
                      nnr_device_name(a->device), nnr_device_name(b->device));
}

nnr_tensor *nnr_as_dtype(const nnr_tensor *t, int dtype)
{
    if (t->dtype == dtype) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    return nnr_to(t, dtype, t->device);
}

int nnr_prepare_operands(int n, const nnr_tensor *const *in, int dtype, nnr_tensor **out)
{
    for (int k = 0; k < n; k++) {
        out[k] = NULL;
        if (!in[k]) continue;
        int prev = nnr_set_grad_enabled(0);
        nnr_tensor *c = nnr_to(in[k], dtype, in[k]->device);
        nnr_tensor *cc = c ? nnr_contiguous(c) : NULL;
        nnr_set_grad_enabled(prev);
        nnr_tensor_release(c);
        if (!cc) { nnr_release_all(k, out); return nnr_last_status(); }
        out[k] = cc;
    }
    return NNR_OK;
}

void nnr_release_all(int n, nnr_tensor **ts) { for (int k = 0; k < n; k++) nnr_tensor_release(ts[k]); }

/* PyTorch's result_type for two tensors: a 0-d tensor beside a dimensioned one counts only when its
 * category (bool < integer < float) is higher, as a Lua number does (f32 * 0-d f64 stays f32) */
static int category(int dt) { return dt == NNR_BOOL ? 0 : nnr_dtype_is_float(dt) ? 2 : 1; }
int nnr_promote_operands(const nnr_tensor *a, const nnr_tensor *b)
{
    bool za = a->ndim == 0, zb = b->ndim == 0;
    if (za == zb) return nnr_promote_types(a->dtype, b->dtype);
    const nnr_tensor *dimmed = za ? b : a, *scalar = za ? a : b;
    return category(scalar->dtype) > category(dimmed->dtype) ? scalar->dtype : dimmed->dtype;
}

int nnr_scalar_is_integral(double s) { return s == floor(s) && s > -9.2e18 && s < 9.2e18; }

int nnr_promote_with_scalar(int dtype, double s)
{
    if (nnr_dtype_is_float(dtype)) return dtype;
    if (!nnr_scalar_is_integral(s)) return NNR_F32;
    if (dtype == NNR_BOOL && !(s == 0 || s == 1)) return NNR_I64;
    return dtype;
}

int nnr_run_descs(const char *op, int opid, int device, int nin, const nnr_tensor_desc **in, const nnr_tensor_desc *out,
                  const nnr_op_params *p)
{
    nnr_op_call call = {.struct_size = sizeof call, .op = (uint32_t)opid, .n_inputs = nin, .n_outputs = 1, .outputs = {out}, .params = p};
    for (int i = 0; i < nin; i++) call.inputs[i] = in[i];
    return nnr_dispatch(op, device, &call);
}

nnr_tensor *nnr_run_new(const char *op, int opid, int dt, int nin, const nnr_tensor *const *ins, const nnr_op_params *p)
{
    nnr_tensor *r = nnr_tensor_alloc(dt, ins[0]->ndim, ins[0]->sizes, ins[0]->device);
    if (!r) return NULL;
    nnr_tensor_desc d[NNR_MAX_INPUTS], dout;
    const nnr_tensor_desc *in[NNR_MAX_INPUTS];
    for (int i = 0; i < nin; i++) { nnr_tensor_desc_of(ins[i], &d[i]); in[i] = &d[i]; }
    nnr_tensor_desc_of(r, &dout);
    if (nnr_run_descs(op, opid, ins[0]->device, nin, in, &dout, p)) { nnr_tensor_release(r); return NULL; }
    return r;
}

int nnr_backend_knows(int device, int minor)
{
    const nnr_device_entry *dev = nnr_device_get(device);
    return dev && (int)(dev->plugin->abi_version & 0xffff) >= minor;
}

int64_t nnr_window_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode)
{
    /* PyTorch's pooling_output_shape: the division rounds toward minus infinity, so with ceil_mode a
     * window that overhangs the end (span < 0) still counts when it starts inside the input */
    int64_t num = in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    int64_t o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
    if (ceil_mode && o > 0 && (o - 1) * s >= in + p) o--;   /* the last window must start inside the input */
    return o > 0 ? o : 0;
}

/* ---- memory overlap of a written tensor (PyTorch's rules) ---- */

/* the elements of t cover one dense block, each once (any order of dims) */
static bool non_overlapping_and_dense(const nnr_tensor *t)
{
    int order[NNR_MAX_DIMS], n = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->sizes[i] != 1) order[n++] = i;
    for (int i = 1; i < n; i++)          /* by stride, ascending (insertion sort: at most 8 dims) */
        for (int j = i; j > 0 && t->strides[order[j]] < t->strides[order[j - 1]]; j--) {
            int k = order[j]; order[j] = order[j - 1]; order[j - 1] = k;
        }
    int64_t expected = 1;
    for (int i = 0; i < n; i++) {
        if (t->strides[order[i]] != expected) return false;
        expected *= t->sizes[order[i]];
    }
    return true;
}

/* the bytes [*lo, *hi) of its storage that t can touch; false for an empty tensor */
static bool byte_range(const nnr_tensor *t, int64_t *lo, int64_t *hi)
{
    int64_t first = t->offset, last = t->offset;
    for (int i = 0; i < t->ndim; i++) {
        if (t->sizes[i] == 0) return false;
        if (t->strides[i] >= 0) last += (t->sizes[i] - 1) * t->strides[i];
        else first += (t->sizes[i] - 1) * t->strides[i];
    }
    int64_t es = (int64_t)nnr_dtype_nbytes(t->dtype);
    *lo = first * es;
    *hi = (last + 1) * es;
    return true;
}

int nnr_check_written(const char *op, const char *suffix, const nnr_tensor *out)
{
    for (int i = 0; i < out->ndim; i++)
        if (out->sizes[i] == 0) return NNR_OK;   /* nothing is written */
    for (int i = 0; i < out->ndim; i++)
        if (out->strides[i] == 0 && out->sizes[i] > 1)
            return nnr_errorf(NNR_ERR_INVALID, "%s%s: unsupported operation: more than one element of the written-to tensor refers to "
                              "a single memory location (an expanded view); clone() it before writing", op, suffix);
    return NNR_OK;
}

nnr_tensor *nnr_written_operand(const char *op, const char *suffix, const nnr_tensor *out, const nnr_tensor *in)
{
    int64_t alo, ahi, blo, bhi;
    if (in->storage != out->storage || !byte_range(out, &alo, &ahi) || !byte_range(in, &blo, &bhi) || ahi <= blo || bhi <= alo) {
        nnr_tensor_retain((nnr_tensor *)in);
        return (nnr_tensor *)in;
    }
    /* the same elements in the same places (broadcast dims aside): each is read before it is written */
    if (in->dtype == out->dtype && in->offset == out->offset && in->ndim <= out->ndim) {
        bool same = true;
        for (int i = out->ndim - 1, j = in->ndim - 1; j >= 0 && same; i--, j--)
            same = in->sizes[j] == out->sizes[i] && (in->strides[j] == out->strides[i] || in->sizes[j] == 1);
        for (int i = 0; i < out->ndim - in->ndim && same; i++) same = out->sizes[i] == 1;
        if (same) { nnr_tensor_retain((nnr_tensor *)in); return (nnr_tensor *)in; }
    }
    if (non_overlapping_and_dense(out) && non_overlapping_and_dense(in) && (alo != blo || ahi != bhi)) {
        nnr_errorf(NNR_ERR_INVALID, "%s%s: unsupported operation: some elements of the input tensor and the written-to tensor refer to "
                   "a single memory location; clone() the input first", op, suffix);
        return NULL;
    }
    /* the same block in another order (a:add_(a:t())), or layouts too irregular to tell: read a copy */
    nnr_tensor *c = nnr_tensor_alloc(in->dtype, in->ndim, in->sizes, in->device);
    if (c && nnr_tensor_copy_into(c, in)) { nnr_tensor_release(c); c = NULL; }
    return c;
}

int nnr_inplace_recorded(nnr_tensor *a, nnr_tensor *r)
{
    if (!r) return nnr_last_status();
    int st = nnr_tensor_copy_into(a, r);
    if (st == NNR_OK && r->grad_fn) {
        atomic_fetch_add(&a->storage->history, 1);      /* views of a made before now are stale */
        atomic_fetch_add(&r->grad_fn->refcount, 1);
        nnr_node_attach(a, r->grad_fn);
    }
    nnr_tensor_release(r);
    return st;
}

nnr_tensor *nnr_sum_to(const nnr_tensor *g, int ndim, const int64_t *sizes)
{
    int dims[NNR_MAX_DIMS], n = 0, lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++)
        if (d < lead || (sizes[d - lead] == 1 && g->sizes[d] != 1)) dims[n++] = d;
    if (n == 0) return nnr_reshape(g, ndim, sizes);
    nnr_tensor *s = nnr_reduce(NNR_OP_SUM, g, n, dims, 1, 0);
    if (!s) return NULL;
    nnr_tensor *r = nnr_reshape(s, ndim, sizes);
    nnr_tensor_release(s);
    return r;
}

nnr_tensor *nnr_grad_for_input(nnr_node *node, int k, nnr_tensor *g)
{
    if (!g) return NULL;
    nnr_tensor *r = nnr_sum_to(g, node->in[k].ndim, node->in[k].sizes);
    nnr_tensor_release(g);
    return r;
}

nnr_tensor *nnr_mul(const nnr_tensor *a, const nnr_tensor *b) { return nnr_binary(NNR_OP_MUL, a, b); }
nnr_tensor *nnr_mul_scalar(const nnr_tensor *a, double s) { return nnr_binary_scalar(NNR_OP_MUL, a, s, 0); }

nnr_tensor *nnr_mul_into(nnr_tensor *a, const nnr_tensor *b)
{
    if (!a) return NULL;
    nnr_tensor *r = nnr_mul(a, b);
    nnr_tensor_release(a);
    return r;
}
