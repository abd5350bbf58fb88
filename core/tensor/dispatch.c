/* Dispatch: one entry point runs every op call (DESIGN.md decision 7). It checks for Ctrl-C, asks
 * the backend that owns the device (then an extension, for devices with host memory), and runs
 * what neither has on the host backend: in place when the device's memory is host memory, else
 * through copies of every operand's extent. It times ops for the profiler and puts the op's name
 * on every error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tensor/internal.h"

const char *nnr_op_name(int op)
{
    const nnr_op_info *info = op > 0 ? nnr_op_info_of((uint32_t)op) : NULL;
    return info ? info->name : "op";
}

int nnr_op_category(int op) { return op > 0 ? nnr_op_category_of((uint32_t)op) : 0; }

enum { OP_SLOTS = 512 };        /* op ids below this are counted (the table goes to 273 today) */

int nnr_op_next(int op)
{
    for (int k = op < 0 ? 1 : op + 1; k < OP_SLOTS; k++)
        if (nnr_op_info_of((uint32_t)k)) return k;
    return 0;
}
static _Atomic int64_t fallback_counts[OP_SLOTS];

int64_t nnr_fallback_count(int op) { return (op >= 0 && op < OP_SLOTS) ? atomic_load(&fallback_counts[op]) : 0; }

/* elements spanned by a strided view: [lo, hi] relative to data */
static void desc_extent(const nnr_tensor_desc *d, int64_t *lo, int64_t *hi)
{
    int64_t l = 0, h = 0;
    for (int i = 0; i < d->ndim; i++) {
        if (d->sizes[i] == 0) { *lo = 0; *hi = -1; return; }
        int64_t span = (d->sizes[i] - 1) * d->strides[i];
        if (span < 0) l += span; else h += span;
    }
    *lo = l; *hi = h;
}

static const char *call_dtype(const nnr_op_call *call)
{
    return nnr_dtype_name(call->n_inputs ? call->inputs[0]->dtype : call->outputs[0]->dtype);
}

static int run_on_host_backend(const char *opname, const nnr_device_entry *dev, nnr_op_call *c)
{
    const nnr_device_entry *host = nnr_device_get(nnr_host_device());
    if (!host->plugin->supports(host->plugin, c))
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: not supported for dtype %s by %s or the %s fallback", opname, call_dtype(c),
                          dev->plugin->name, host->plugin->name);
    return host->plugin->run(host->plugin, c);
}

/* The call on the host backend. Operands in host memory are used in place; others are copied to
 * host memory (their whole extent, so strides stay valid) and outputs copied back. */
static int run_fallback(const char *opname, const nnr_device_entry *dev, nnr_op_call *call)
{
    const nnr_device_entry *host = nnr_device_get(nnr_host_device());
    nnr_tensor_desc hin[NNR_MAX_INPUTS], hout[NNR_MAX_OUTPUTS];
    void *bufs[NNR_MAX_INPUTS + NNR_MAX_OUTPUTS] = {0};
    int64_t lo_out[NNR_MAX_OUTPUTS] = {0}, bytes_out[NNR_MAX_OUTPUTS] = {0};
    nnr_op_call c = *call;
    int copies = !dev->host_memory, st = NNR_OK;
    for (int k = 0; k < call->n_inputs + call->n_outputs && st == NNR_OK; k++) {
        int is_out = k >= call->n_inputs;
        const nnr_tensor_desc *d = is_out ? call->outputs[k - call->n_inputs] : call->inputs[k];
        nnr_tensor_desc *h = is_out ? &hout[k - call->n_inputs] : &hin[k];
        *h = *d;
        h->device = host->local_index;
        if (is_out) c.outputs[k - call->n_inputs] = h; else c.inputs[k] = h;
        if (!copies) continue;
        int64_t lo, hi, es = (int64_t)nnr_dtype_nbytes(d->dtype);
        desc_extent(d, &lo, &hi);
        int64_t nbytes = (hi - lo + 1) * es;
        bufs[k] = malloc(nbytes > 0 ? (size_t)nbytes : 64);
        if (!bufs[k]) { st = nnr_errorf(NNR_ERR_OOM, "%s: out of memory for the %s fallback", opname, host->plugin->name); break; }
        if (nbytes > 0)
            st = dev->plugin->copy(dev->plugin, d->device, NNR_COPY_DEVICE_TO_HOST, bufs[k], (char *)d->data + lo * es, (size_t)nbytes);
        h->data = (char *)bufs[k] - lo * es;
        if (is_out) { lo_out[k - call->n_inputs] = lo * es; bytes_out[k - call->n_inputs] = nbytes; }
    }
    if (st == NNR_OK) st = run_on_host_backend(opname, dev, &c);
    for (int o = 0; o < call->n_outputs && st == NNR_OK && copies; o++)
        if (bytes_out[o] > 0)
            st = dev->plugin->copy(dev->plugin, call->outputs[o]->device, NNR_COPY_HOST_TO_DEVICE,
                                   (char *)call->outputs[o]->data + lo_out[o], (char *)hout[o].data + lo_out[o], (size_t)bytes_out[o]);
    for (int k = 0; k < call->n_inputs + call->n_outputs; k++) free(bufs[k]);
    return st;
}

static void warn_fallback(const char *opname, const nnr_device_entry *dev, const nnr_op_call *call)
{
    static _Atomic int warned[OP_SLOTS][NNR_DTYPE_COUNT + 1];
    const nnr_tensor_desc *d = call->n_inputs ? call->inputs[0] : call->outputs[0];
    int dt = d->dtype >= 0 && d->dtype < NNR_DTYPE_COUNT ? d->dtype : NNR_DTYPE_COUNT;
    if (call->op >= OP_SLOTS || atomic_exchange(&warned[call->op][dt], 1)) return;
    char msg[256];
    snprintf(msg, sizeof msg, "%s (%s) is not implemented by %s; running it on the %s backend%s", opname, nnr_dtype_name(d->dtype),
             dev->plugin->name, nnr_device_get(nnr_host_device())->plugin->name,
             dev->host_memory ? " (in place: host memory)" : " (copies inserted)");
    nnr_host.log(NNR_LOG_WARN, NULL, msg);
}

static int route(const char *opname, const nnr_device_entry *dev, nnr_op_call *call)
{
    nnr_plugin *p = dev->plugin, *ext;
    if (nnr_plugin_knows_op(p, call->op) && p->supports(p, call)) return p->run(p, call);
    if (dev->host_memory && (ext = nnr_extension_for(call))) return ext->run(ext, call);   /* an op an extension adds */
    if (p == nnr_device_get(nnr_host_device())->plugin)     /* the host backend itself: nowhere else to go */
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported by the %s backend", opname, call_dtype(call), p->name);
    warn_fallback(opname, dev, call);
    if (call->op < OP_SLOTS) atomic_fetch_add(&fallback_counts[call->op], 1);
    return run_fallback(opname, dev, call);
}

int nnr_dispatch(const char *opname, int device, nnr_op_call *call)
{
    if (nnr_interrupted_flag()) {
        nnr_clear_interrupt();
        return nnr_errorf(NNR_ERR_INTERRUPTED, "%s: interrupted", opname);
    }
    const nnr_device_entry *dev = nnr_device_get(device);
    if (!dev) return nnr_errorf(NNR_ERR_DEVICE, "%s: no device %d", opname, device);
    int64_t t0 = 0;
    if (__builtin_expect(nnr_profiling, 0)) t0 = nnr_prof_now();
    int st = route(opname, dev, call);
    if (__builtin_expect(nnr_profiling, 0)) nnr_prof_record_op(opname, t0);
    if (st == NNR_ERR_INTERRUPTED) {      /* whatever message the thread held before, this op was interrupted */
        nnr_clear_interrupt();
        return nnr_errorf(st, "%s: interrupted", opname);
    }
    if (st != NNR_OK) {
        const char *msg = nnr_last_error();
        if (strncmp(msg, opname, strlen(opname)) != 0) {
            char copy[900];
            snprintf(copy, sizeof copy, "%s", msg[0] ? msg : "failed");
            nnr_errorf(st, "%s: %s", opname, copy);
        } else nnr_set_error(st, msg);
    }
    return st;
}

/* the call of op on tensors: their descriptors go in din/dout */
static nnr_op_call describe(int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *p,
                            nnr_tensor_desc *din, nnr_tensor_desc *dout)
{
    nnr_op_call call = {.struct_size = sizeof call, .op = (uint32_t)op, .n_inputs = nin, .n_outputs = nout, .params = p};
    for (int k = 0; k < nin; k++) { nnr_tensor_desc_of(in[k], &din[k]); call.inputs[k] = &din[k]; }
    for (int k = 0; k < nout; k++) { nnr_tensor_desc_of(out[k], &dout[k]); call.outputs[k] = &dout[k]; }
    return call;
}

int nnr_run_tensors(const char *opname, int op, int device, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out,
                    const nnr_op_params *params)
{
    nnr_tensor_desc din[NNR_MAX_INPUTS], dout[NNR_MAX_OUTPUTS];
    nnr_op_call call = describe(op, nin, in, nout, out, params, din, dout);
    return nnr_dispatch(opname, device, &call);
}

int nnr_backend_takes(int device, int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params)
{
    const nnr_device_entry *dev = nnr_device_get(device);
    if (!dev) return 0;
    nnr_tensor_desc din[NNR_MAX_INPUTS], dout[NNR_MAX_OUTPUTS];
    nnr_op_call call = describe(op, nin, in, nout, out, params, din, dout);
    return nnr_plugin_knows_op(dev->plugin, call.op) && dev->plugin->supports(dev->plugin, &call);
}
