/* Copies, casts and transfers between devices, and the few kernels the autograd engine needs (fill,
 * add), without autograd: the ops of the same names (ops/copy.c) check in-place writes and record;
 * the engine and the creation functions call these. */
#include <stdlib.h>
#include <string.h>
#include "tensor/internal.h"

static int run_one(const char *op, int opid, int device, int nin, const nnr_tensor_desc **in, const nnr_tensor_desc *out,
                   const nnr_op_params *p)
{
    nnr_op_call call = {.struct_size = sizeof call, .op = (uint32_t)opid, .n_inputs = nin, .n_outputs = 1, .outputs = {out}, .params = p};
    for (int i = 0; i < nin; i++) call.inputs[i] = in[i];
    return nnr_dispatch(op, device, &call);
}

static int copy_same_device(nnr_tensor *dst, const nnr_tensor *src)
{
    nnr_tensor_desc d, s;
    nnr_tensor_desc_of(dst, &d);
    nnr_desc_broadcast(src, dst->ndim, dst->sizes, &s);
    const nnr_tensor_desc *in[1] = {&s};
    return run_one("copy", NNR_OP_COPY, dst->device, 1, in, &d, NULL);
}

static void *data_of(const nnr_tensor *t) { return (char *)t->storage->data + t->offset * (int64_t)nnr_dtype_nbytes(t->dtype); }

/* nbytes from a contiguous block on one device to a contiguous block on another */
static int transfer(void *dst, int to_device, const void *src, int from_device, size_t nbytes)
{
    const nnr_device_entry *from = nnr_device_get(from_device), *to = nnr_device_get(to_device);
    int st;
    if (from->host_memory && to->host_memory) { memcpy(dst, src, nbytes); return NNR_OK; }
    if (from->host_memory) st = to->plugin->copy(to->plugin, to->local_index, NNR_COPY_HOST_TO_DEVICE, dst, src, nbytes);
    else if (to->host_memory) st = from->plugin->copy(from->plugin, from->local_index, NNR_COPY_DEVICE_TO_HOST, dst, src, nbytes);
    else if (from->plugin == to->plugin && NNR_HAS_FIELD(from->plugin, nnr_plugin, copy_between) && from->plugin->copy_between)
        st = from->plugin->copy_between(from->plugin, to->local_index, dst, from->local_index, src, nbytes);
    else {                                   /* staged through host memory */
        void *host = malloc(nbytes);
        st = host ? from->plugin->copy(from->plugin, from->local_index, NNR_COPY_DEVICE_TO_HOST, host, src, nbytes)
                  : (nnr_status)nnr_errorf(NNR_ERR_OOM, "copy_: out of host memory for %zu bytes", nbytes);
        if (st == NNR_OK) st = to->plugin->copy(to->plugin, to->local_index, NNR_COPY_HOST_TO_DEVICE, dst, host, nbytes);
        free(host);
    }
    if (st) return nnr_errorf(st, "copy_: transfer %s -> %s failed: %s", from->name, to->name, nnr_last_error());
    return NNR_OK;
}

int nnr_tensor_copy_into(nnr_tensor *dst, const nnr_tensor *src)
{
    if (dst->device == src->device) return copy_same_device(dst, src);
    /* across devices: a contiguous block of dst's dtype travels between the plugins */
    nnr_tensor *s = nnr_tensor_alloc(dst->dtype, dst->ndim, dst->sizes, src->device);
    int st = s ? copy_same_device(s, src) : nnr_last_status();
    nnr_tensor *staging = NULL;
    if (st == NNR_OK) {
        int direct = nnr_tensor_is_contiguous(dst);
        staging = direct ? dst : nnr_tensor_alloc(dst->dtype, dst->ndim, dst->sizes, dst->device);
        size_t nbytes = (size_t)nnr_tensor_numel(dst) * nnr_dtype_nbytes(dst->dtype);
        if (!staging) st = nnr_last_status();
        else if (nbytes) st = transfer(data_of(staging), dst->device, data_of(s), src->device, nbytes);
        if (st == NNR_OK && !direct) st = copy_same_device(dst, staging);
        if (!direct) nnr_tensor_release(staging);
    }
    nnr_tensor_release(s);
    return st;
}

nnr_tensor *nnr_tensor_converted(const nnr_tensor *t, int dtype, int device)
{
    if (dtype == t->dtype && device == t->device) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    nnr_tensor *r = nnr_tensor_alloc(dtype, t->ndim, t->sizes, device);
    if (r && nnr_tensor_copy_into(r, t)) { nnr_tensor_release(r); r = NULL; }
    return r;
}

int nnr_tensor_fill_raw(nnr_tensor *t, double value)
{
    nnr_tensor_desc d;
    nnr_tensor_desc_of(t, &d);
    nnr_op_params p = {.struct_size = sizeof p, .f = {value}};
    return run_one("fill", NNR_OP_FILL, t->device, 0, NULL, &d, &p);
}

int nnr_tensor_add_into(nnr_tensor *out, const nnr_tensor *a, const nnr_tensor *b)
{
    nnr_tensor_desc da, db, dout;
    nnr_tensor_desc_of(a, &da);
    nnr_tensor_desc_of(b, &db);
    nnr_tensor_desc_of(out, &dout);
    const nnr_tensor_desc *in[2] = {&da, &db};
    return run_one("add", NNR_OP_ADD, out->device, 2, in, &dout, NULL);
}
