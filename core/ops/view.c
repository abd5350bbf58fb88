/* Views: new sizes, strides and offset over the same storage, never a copy (reshape copies only
 * when the strides do not allow a view). Each records how to send its gradient back to the base. */
#include <string.h>
#include "ops/internal.h"

enum view_kind {
    VIEW_RESHAPE = 0,    /* view, reshape, squeeze, unsqueeze, flatten */
    VIEW_PERMUTE = 1,    /* params: the permutation */
    VIEW_TRANSPOSE = 2,  /* params: dim0, dim1 */
    VIEW_NARROW = 3,     /* params: dim, start, length */
    VIEW_SELECT = 4,     /* params: dim, index */
    VIEW_EXPAND = 5
};


/* the gradient of a narrow or select while a graph is created: g between zeros, joined by a recorded
 * cat (writing g into a zero tensor would not carry g's history) */
static nnr_tensor *zeros_around(nnr_node *node, const nnr_tensor *g)
{
    const struct nnr_node_input *in = &node->in[0];
    int dim = (int)node->i[1];
    int64_t start = node->i[2], len = node->i[0] == VIEW_NARROW ? node->i[3] : 1;
    nnr_tensor *mid = node->i[0] == VIEW_NARROW ? (nnr_tensor_retain((nnr_tensor *)g), (nnr_tensor *)g) : nnr_unsqueeze(g, dim);
    if (!mid) return NULL;
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, in->sizes, sizeof sizes);
    nnr_tensor *parts[3];
    int n = 0;
    sizes[dim] = start;
    if (start > 0) parts[n++] = nnr_full(g->dtype, in->ndim, sizes, 0.0, g->device);
    parts[n++] = mid;
    sizes[dim] = in->sizes[dim] - start - len;
    if (sizes[dim] > 0) parts[n++] = nnr_full(g->dtype, in->ndim, sizes, 0.0, g->device);
    nnr_tensor *r = NULL;
    bool ok = true;
    for (int k = 0; k < n; k++) ok = ok && parts[k];
    if (ok) r = n == 1 ? (nnr_tensor_retain(parts[0]), parts[0]) : nnr_cat(n, parts, dim);
    for (int k = 0; k < n; k++) nnr_tensor_release(parts[k]);
    return r;
}

static int view_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    const struct nnr_node_input *in = &node->in[0];
    nnr_tensor *r = NULL;
    switch ((int)node->i[0]) {
    case VIEW_RESHAPE:
        r = nnr_reshape(g, in->ndim, in->sizes);
        break;
    case VIEW_PERMUTE: {
        int inverse[NNR_MAX_DIMS];
        for (int d = 0; d < in->ndim; d++) inverse[node->i[1 + d]] = d;
        r = nnr_permute(g, in->ndim, inverse);
        break;
    }
    case VIEW_TRANSPOSE: r = nnr_transpose(g, (int)node->i[1], (int)node->i[2]); break;
    case VIEW_NARROW: case VIEW_SELECT:
        if (nnr_creating_graph()) { r = zeros_around(node, g); break; }
        {
        r = nnr_full(g->dtype, in->ndim, in->sizes, 0.0, g->device);
        nnr_tensor *slot = !r ? NULL : node->i[0] == VIEW_NARROW ? nnr_narrow(r, (int)node->i[1], node->i[2], node->i[3])
                                                                    : nnr_select(r, (int)node->i[1], node->i[2]);
        if (!slot || nnr_copy_(slot, g)) { nnr_tensor_release(r); r = NULL; }
        nnr_tensor_release(slot);
        break;
    }
    case VIEW_EXPAND: r = nnr_sum_to(g, in->ndim, in->sizes); break;
    default: return nnr_errorf(NNR_ERR_INTERNAL, "backward: unknown view kind %lld", (long long)node->i[0]);
    }
    if (!r) return nnr_last_status();
    grads[0] = r;
    return NNR_OK;
}

static int record_view(int kind, const nnr_tensor *base, nnr_tensor *out, const int64_t *params, int nparams)
{
    static const char *names[] = {"ViewBackward", "PermuteBackward", "TransposeBackward", "NarrowBackward",
                                  "SelectBackward", "ExpandBackward"};
    nnr_node *node = nnr_node_new(names[kind], view_backward, 1, &base);
    if (!node) return nnr_last_status();
    node->double_diff = 1;
    node->i[0] = kind;
    for (int k = 0; k < nparams && k < NNR_MAX_DIMS - 1; k++) node->i[1 + k] = params[k];
    out->is_view = 1;
    out->view_history = atomic_load(&out->storage->history);
    return nnr_node_finish(out, node, NNR_OK);
}

/* a new view records how to send its gradient back to the base */
static nnr_tensor *finish_view(nnr_tensor *v, int kind, const nnr_tensor *base, const int64_t *params, int nparams)
{
    if (v && nnr_should_record(1, &base) && record_view(kind, base, v, params, nparams)) {
        nnr_tensor_release(v);
        return NULL;
    }
    return v;
}

static int wrap_dim(const char *op, const nnr_tensor *t, int dim, int extra)
{
    int n = t->ndim + extra;
    if (dim < 0) dim += n;
    if (dim < 0 || dim >= (n > 0 ? n : 1)) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", op, dim + 1,
                   nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return -1;
    }
    return dim;
}

/* fills in a -1 entry; checks the element count */
static int infer_sizes(const char *op, const nnr_tensor *t, int ndim, const int64_t *in, int64_t *out)
{
    if (ndim < 0 || ndim > NNR_MAX_DIMS) return nnr_errorf(NNR_ERR_INVALID, "%s: %d dimensions, at most %d supported", op, ndim, NNR_MAX_DIMS);
    int infer = -1, nknown = 0;
    int64_t known, total = nnr_tensor_numel(t), sizes[NNR_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        out[i] = in[i];
        if (in[i] == -1) {
            if (infer >= 0) return nnr_errorf(NNR_ERR_INVALID, "%s: only one dimension can be -1", op);
            infer = i;
        } else if (in[i] < 0) {
            return nnr_errorf(NNR_ERR_INVALID, "%s: invalid size %lld", op, (long long)in[i]);
        } else sizes[nknown++] = in[i];
    }
    if (!nnr_size_product(nknown, sizes, 1, &known)) goto bad;     /* a product past int64 fits no tensor */
    if (infer >= 0) {
        if (known == 0 || total % known) goto bad;
        out[infer] = total / known;
    } else if (known != total) goto bad;
    return NNR_OK;
bad:;
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    return nnr_errorf(NNR_ERR_INVALID, "%s: shape %s is invalid for a tensor of shape %s (%lld elements)", op,
                      nnr_shape_str(a, sizeof a, ndim, in), nnr_shape_str(b, sizeof b, t->ndim, t->sizes), (long long)total);
}

/* strides for viewing t as new sizes without copying, or false (PyTorch's computeStride) */
static bool view_strides(const nnr_tensor *t, int ndim, const int64_t *sizes, int64_t *strides)
{
    if (nnr_tensor_numel(t) == 0 || t->ndim == 0) { nnr_contiguous_strides(ndim, sizes, strides); return true; }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->strides[t->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->sizes[d];
        if (d == 0 || (t->sizes[d - 1] != 1 && t->strides[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || sizes[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= sizes[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (d > 0) {
                chunk_base_stride = t->strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

nnr_tensor *nnr_view(const nnr_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    if (infer_sizes("view", t, ndim, sizes, s)) return NULL;
    if (!view_strides(t, ndim, s, st)) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF], c[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "view: shape %s is incompatible with the strides %s of a tensor of shape %s; use reshape (it copies) or contiguous() first",
                   nnr_shape_str(a, sizeof a, ndim, s), nnr_shape_str(c, sizeof c, t->ndim, t->strides), nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), VIEW_RESHAPE, t, NULL, 0);
}

nnr_tensor *nnr_reshape(const nnr_tensor *t, int ndim, const int64_t *sizes)
{
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    if (infer_sizes("reshape", t, ndim, sizes, s)) return NULL;
    if (view_strides(t, ndim, s, st)) return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), VIEW_RESHAPE, t, NULL, 0);
    nnr_tensor *c = nnr_contiguous(t);
    if (!c) return NULL;
    nnr_contiguous_strides(ndim, s, st);
    nnr_tensor *v = finish_view(nnr_tensor_new_view(c, ndim, s, st, c->offset), VIEW_RESHAPE, c, NULL, 0);
    nnr_tensor_release(c);
    return v;
}

nnr_tensor *nnr_permute(const nnr_tensor *t, int ndim, const int *dims)
{
    if (ndim != t->ndim) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "permute: %d dimensions given for a tensor of shape %s", ndim, nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS], perm[NNR_MAX_DIMS];
    int seen[NNR_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) {
        int d = wrap_dim("permute", t, dims[i], 0);
        if (d < 0) return NULL;
        if (seen[d]++) { nnr_errorf(NNR_ERR_INVALID, "permute: dimension %d repeated", d + 1); return NULL; }
        s[i] = t->sizes[d];
        st[i] = t->strides[d];
        perm[i] = d;
    }
    return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), VIEW_PERMUTE, t, perm, ndim);
}

nnr_tensor *nnr_transpose(const nnr_tensor *t, int dim0, int dim1)
{
    int a = wrap_dim("transpose", t, dim0, 0), b = a < 0 ? -1 : wrap_dim("transpose", t, dim1, 0);
    if (a < 0 || b < 0) return NULL;
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    memcpy(s, t->sizes, sizeof s);
    memcpy(st, t->strides, sizeof st);
    s[a] = t->sizes[b]; s[b] = t->sizes[a];
    st[a] = t->strides[b]; st[b] = t->strides[a];
    int64_t params[2] = {a, b};
    return finish_view(nnr_tensor_new_view(t, t->ndim, s, st, t->offset), VIEW_TRANSPOSE, t, params, 2);
}

nnr_tensor *nnr_narrow(const nnr_tensor *t, int dim, int64_t start, int64_t length)
{
    int d = wrap_dim("narrow", t, dim, 0);
    if (d < 0) return NULL;
    if (start < 0 || length < 0 || start + length > t->sizes[d]) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "narrow: elements %lld to %lld are out of range for dimension %d of size %lld (shape %s)",
                   (long long)start + 1, (long long)(start + length), d + 1, (long long)t->sizes[d], nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    int64_t s[NNR_MAX_DIMS];
    memcpy(s, t->sizes, sizeof s);
    s[d] = length;
    int64_t params[3] = {d, start, length};
    return finish_view(nnr_tensor_new_view(t, t->ndim, s, t->strides, t->offset + start * t->strides[d]), VIEW_NARROW, t, params, 3);
}

nnr_tensor *nnr_select(const nnr_tensor *t, int dim, int64_t index)
{
    if (t->ndim == 0) { nnr_errorf(NNR_ERR_INVALID, "select: cannot index a 0-dimensional tensor"); return NULL; }
    int d = wrap_dim("select", t, dim, 0);
    if (d < 0) return NULL;
    if (index < 0 || index >= t->sizes[d]) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "index %lld is out of range for dimension %d of size %lld (shape %s)", (long long)index + 1, d + 1,
                   (long long)t->sizes[d], nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        return NULL;
    }
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) { s[k] = t->sizes[i]; st[k] = t->strides[i]; k++; }
    int64_t params[2] = {d, index};
    return finish_view(nnr_tensor_new_view(t, t->ndim - 1, s, st, t->offset + index * t->strides[d]), VIEW_SELECT, t, params, 2);
}

nnr_tensor *nnr_expand(const nnr_tensor *t, int ndim, const int64_t *sizes)
{
    if (ndim < t->ndim || ndim > NNR_MAX_DIMS) goto bad;
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    for (int i = ndim - 1, j = t->ndim - 1; i >= 0; i--, j--) {
        int64_t want = sizes[i];
        if (j >= 0) {
            if (want == -1) want = t->sizes[j];
            if (t->sizes[j] == want) { s[i] = want; st[i] = t->strides[j]; }
            else if (t->sizes[j] == 1 && want >= 0) { s[i] = want; st[i] = 0; }
            else goto bad;
        } else {
            if (want < 0) goto bad;
            s[i] = want; st[i] = 0;
        }
    }
    if (!nnr_check_sizes("expand", ndim, s)) return NULL;
    return finish_view(nnr_tensor_new_view(t, ndim, s, st, t->offset), VIEW_EXPAND, t, NULL, 0);
bad:;
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    nnr_errorf(NNR_ERR_INVALID, "expand: cannot expand shape %s to %s (only size-1 dimensions can grow)",
               nnr_shape_str(a, sizeof a, t->ndim, t->sizes), nnr_shape_str(b, sizeof b, ndim, sizes));
    return NULL;
}

nnr_tensor *nnr_squeeze(const nnr_tensor *t, int dim)
{
    int d = -1;
    if (dim != -1 || t->ndim == 0) {
        if (t->ndim == 0) return finish_view(nnr_tensor_new_view(t, 0, t->sizes, t->strides, t->offset), VIEW_RESHAPE, t, NULL, 0);
        d = wrap_dim("squeeze", t, dim, 0);
        if (d < 0) return NULL;
    }
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->sizes[i] == 1 && (d < 0 || d == i)) continue;
        s[k] = t->sizes[i]; st[k] = t->strides[i]; k++;
    }
    return finish_view(nnr_tensor_new_view(t, k, s, st, t->offset), VIEW_RESHAPE, t, NULL, 0);
}

nnr_tensor *nnr_unsqueeze(const nnr_tensor *t, int dim)
{
    if (t->ndim >= NNR_MAX_DIMS) { nnr_errorf(NNR_ERR_INVALID, "unsqueeze: a tensor has at most %d dimensions", NNR_MAX_DIMS); return NULL; }
    int d = wrap_dim("unsqueeze", t, dim, 1);
    if (d < 0) return NULL;
    int64_t s[NNR_MAX_DIMS], st[NNR_MAX_DIMS];
    for (int i = 0, k = 0; i <= t->ndim; i++) {
        if (i == d) {
            s[i] = 1;
            st[i] = k < t->ndim ? t->strides[k] * t->sizes[k] : 1;
            continue;
        }
        s[i] = t->sizes[k]; st[i] = t->strides[k]; k++;
    }
    return finish_view(nnr_tensor_new_view(t, t->ndim + 1, s, st, t->offset), VIEW_RESHAPE, t, NULL, 0);
}

nnr_tensor *nnr_flatten(const nnr_tensor *t, int start_dim, int end_dim)
{
    if (t->ndim == 0) { int64_t one = 1; return nnr_reshape(t, 1, &one); }
    int a = wrap_dim("flatten", t, start_dim, 0), b = a < 0 ? -1 : wrap_dim("flatten", t, end_dim, 0);
    if (a < 0 || b < 0) return NULL;
    if (a > b) { nnr_errorf(NNR_ERR_INVALID, "flatten: start dimension %d comes after end dimension %d", a + 1, b + 1); return NULL; }
    int64_t s[NNR_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < a; i++) s[k++] = t->sizes[i];
    int64_t m = 1;
    for (int i = a; i <= b; i++) m *= t->sizes[i];
    s[k++] = m;
    for (int i = b + 1; i < t->ndim; i++) s[k++] = t->sizes[i];
    return nnr_reshape(t, k, s);
}

nnr_tensor *nnr_as_strided(const nnr_tensor *t, int ndim, const int64_t *sizes, const int64_t *strides, int64_t offset)
{
    if (nnr_should_record(1, &t)) {
        nnr_errorf(NNR_ERR_UNSUPPORTED, "as_strided: not differentiable; use it inside nnr.no_grad or on a detach()ed tensor");
        return NULL;
    }
    if (!nnr_check_sizes("as_strided", ndim, sizes)) return NULL;
    int64_t max_off = offset;
    for (int i = 0; i < ndim; i++) {
        if (strides[i] < 0) { nnr_errorf(NNR_ERR_INVALID, "as_strided: negative stride"); return NULL; }
        if (sizes[i] == 0) { max_off = -1; break; }
        max_off += (sizes[i] - 1) * strides[i];
    }
    int64_t cap = (int64_t)(t->storage->nbytes / nnr_dtype_nbytes(t->dtype));
    if (offset < 0 || max_off >= cap) {
        nnr_errorf(NNR_ERR_INVALID, "as_strided: the view reaches element %lld of a storage of %lld elements", (long long)max_off + 1, (long long)cap);
        return NULL;
    }
    return nnr_tensor_new_view(t, ndim, sizes, strides, offset);
}

