/* Copies and casts: clone, contiguous, to (dtype, device), copy_, fill_, set; each with what it
 * records and its backward. A write that overwrites a tensor restarts its history. */
#include <string.h>
#include "ops/internal.h"

/* ---------------- clone, contiguous, to ---------------- */

/* clone: the gradient passes through; to: it goes back to the input's dtype and device */
static int identity_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    grads[0] = node->i[0] ? nnr_to(g, node->in[0].dtype, node->in[0].device) : nnr_clone(g);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static int record_identity(const nnr_tensor *x, nnr_tensor *out, int cast)
{
    nnr_node *node = nnr_node_new(cast ? "ToCopyBackward" : "CloneBackward", identity_backward, 1, &x);
    if (node) node->i[0] = cast, node->double_diff = 1;
    return nnr_node_finish(out, node, NNR_OK);
}

nnr_tensor *nnr_to(const nnr_tensor *t, int dtype, int device)
{
    if (!nnr_dtype_valid(dtype)) { nnr_errorf(NNR_ERR_INVALID, "to: unknown dtype %d", dtype); return NULL; }
    if (!nnr_device_get(device)) { nnr_errorf(NNR_ERR_DEVICE, "to: no device %d", device); return NULL; }
    if (dtype == t->dtype && device == t->device) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    nnr_tensor *r = nnr_tensor_converted(t, dtype, device);
    if (nnr_dtype_is_float(dtype) && nnr_should_record(1, &t)) NNR_RECORD(r, record_identity(t, r, 1));
    return r;
}

nnr_tensor *nnr_clone(const nnr_tensor *t)
{
    nnr_tensor *r = nnr_tensor_alloc(t->dtype, t->ndim, t->sizes, t->device);
    if (r && nnr_tensor_copy_into(r, t)) { nnr_tensor_release(r); return NULL; }
    if (nnr_should_record(1, &t)) NNR_RECORD(r, record_identity(t, r, 0));
    return r;
}

nnr_tensor *nnr_contiguous(const nnr_tensor *t)
{
    if (nnr_tensor_is_contiguous(t)) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    return nnr_clone(t);
}

/* ---------------- writes that overwrite: copy_, fill_ ---------------- */

/* the history of an overwritten tensor: its gradient goes to the source (summed over broadcast
 * dims) and not to what it held before */
static int overwrite_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    if (node->n_inputs > 0 && node->in[0].node) {
        nnr_tensor *s = nnr_sum_to(g, node->in[0].ndim, node->in[0].sizes);
        if (!s) return nnr_last_status();
        grads[0] = s;
    }
    return NNR_OK;
}

int nnr_record_overwrite(const char *name, nnr_tensor *dst, const nnr_tensor *src)
{
    atomic_fetch_add(&dst->storage->history, 1);        /* views of dst made before now are stale */
    nnr_node *node = nnr_node_new(name, overwrite_backward, src ? 1 : 0, &src);
    if (node) node->double_diff = 1;
    return nnr_node_finish(dst, node, NNR_OK);
}

int nnr_fill_(nnr_tensor *t, double value)
{
    /* an expanded target is allowed: every element gets the same value however often it is written */
    if (nnr_check_value_fits("fill_", t->dtype, value) || nnr_autograd_check_inplace("fill_", t)) return nnr_last_status();
    if (t->requires_grad && nnr_grad_mode() && nnr_record_overwrite("FillBackward", t, NULL)) return nnr_last_status();
    return nnr_tensor_fill_raw(t, value);
}

int nnr_copy_(nnr_tensor *dst, const nnr_tensor *src)
{
    if (dst == src) return NNR_OK;               /* a copy onto itself changes nothing (PyTorch's is_same) */
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (nnr_broadcast_shapes("copy_", dst->ndim, dst->sizes, src->ndim, src->sizes, &n, shape)) return nnr_last_status();
    if (n != dst->ndim || memcmp(shape, dst->sizes, sizeof(int64_t) * (size_t)n) != 0) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "copy_: source of shape %s cannot be broadcast to destination shape %s",
                          nnr_shape_str(a, sizeof a, src->ndim, src->sizes), nnr_shape_str(b, sizeof b, dst->ndim, dst->sizes));
    }
    if (nnr_autograd_check_inplace("copy_", dst) || nnr_check_written("copy_", "", dst)) return nnr_last_status();
    nnr_tensor *from = nnr_written_operand("copy_", "", dst, src);
    if (!from) return nnr_last_status();
    int st = NNR_OK;
    if (nnr_grad_mode() && (dst->requires_grad || src->requires_grad) &&
        nnr_record_overwrite("CopyBackward", dst, src->requires_grad ? src : NULL))
        st = nnr_last_status();
    if (st == NNR_OK) st = nnr_tensor_copy_into(dst, from);
    nnr_tensor_release(from);
    return st;
}

int nnr_set(nnr_tensor *t, const int64_t *index, double value)
{
    int64_t off;
    int st = nnr_tensor_element_offset("set", t, index, &off);
    if (st) return st;
    if ((st = nnr_check_value_fits("set", t->dtype, value)) || (st = nnr_autograd_check_inplace("set", t))) return st;
    if (t->requires_grad && nnr_grad_mode())
        return nnr_errorf(NNR_ERR_INVALID, "set: writing one element of a tensor that requires grad is not supported; "
                          "clone() it, or write inside nnr.no_grad");
    return nnr_tensor_write_element(t, off, value);
}
