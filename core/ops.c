/* Op front-ends: check shapes, dtypes and devices, work out the result's
 * shape and dtype, allocate it, and dispatch one nnr_op_call to the backend
 * that owns the device. Errors name the op and the shapes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "derivatives.h"
#include "nnr/dtype.h"
#include "internal.h"

const char *nnr_op_name(int op)
{
    const nnr_op_info *info = op > 0 ? nnr_op_info_of((uint32_t)op) : NULL;
    return info ? info->name : "op";
}

int nnr_op_category(int op) { return op > 0 ? nnr_op_category_of((uint32_t)op) : 0; }

/* the op after `op` in the table's order of numbers (0 to start), 0 after the last */
int nnr_op_next(int op)
{
    for (int k = op + 1; k < 256; k++)
        if (nnr_op_info_of((uint32_t)k)) return k;
    return 0;
}

static int is_unary(int op) { return nnr_op_category(op) == NNR_OPCAT_UNARY; }
static int is_compare(int op) { return nnr_op_category(op) == NNR_OPCAT_COMPARE; }
static int is_binary(int op) { return nnr_op_category(op) == NNR_OPCAT_BINARY || is_compare(op); }

/* ---------- dispatch, with the cpu fallback ---------- */

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

/* Runs the call on the cpu backend: every operand is copied to host memory
 * (its whole extent, so strides stay valid) and outputs are copied back. */
static int run_on_cpu_fallback(const char *opname, const nnr_device_entry *dev, nnr_op_call *call)
{
    const nnr_device_entry *cpu = nnr_device_get(0);
    nnr_tensor_desc hin[NNR_MAX_INPUTS], hout[NNR_MAX_OUTPUTS];
    void *bufs[NNR_MAX_INPUTS + NNR_MAX_OUTPUTS] = {0};
    int64_t lo_out[NNR_MAX_OUTPUTS] = {0}, bytes_out[NNR_MAX_OUTPUTS] = {0};
    nnr_op_call c = *call;
    int st = NNR_OK;
    for (int k = 0; k < call->n_inputs + call->n_outputs && st == NNR_OK; k++) {
        int is_out = k >= call->n_inputs;
        const nnr_tensor_desc *d = is_out ? call->outputs[k - call->n_inputs] : call->inputs[k];
        nnr_tensor_desc *h = is_out ? &hout[k - call->n_inputs] : &hin[k];
        *h = *d;
        int64_t lo, hi, es = (int64_t)nnr_dtype_nbytes(d->dtype);
        desc_extent(d, &lo, &hi);
        int64_t nbytes = (hi - lo + 1) * es;
        bufs[k] = malloc(nbytes > 0 ? (size_t)nbytes : 64);
        if (!bufs[k]) { st = nnr_errorf(NNR_ERR_OOM, "%s: out of memory for the cpu fallback", opname); break; }
        if (nbytes > 0)
            st = dev->plugin->copy(dev->plugin, d->device, NNR_COPY_DEVICE_TO_HOST, bufs[k], (char *)d->data + lo * es, (size_t)nbytes);
        h->data = (char *)bufs[k] - lo * es;
        h->device = 0;
        if (is_out) { lo_out[k - call->n_inputs] = lo * es; bytes_out[k - call->n_inputs] = nbytes; c.outputs[k - call->n_inputs] = h; }
        else c.inputs[k] = h;
    }
    if (st == NNR_OK) {
        if (!cpu->plugin->supports(cpu->plugin, &c))
            st = nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: not supported for dtype %s by %s or the cpu fallback", opname,
                            nnr_dtype_name(call->n_inputs ? call->inputs[0]->dtype : call->outputs[0]->dtype), dev->plugin->name);
        else st = cpu->plugin->run(cpu->plugin, &c);
    }
    for (int o = 0; o < call->n_outputs && st == NNR_OK; o++)
        if (bytes_out[o] > 0)
            st = dev->plugin->copy(dev->plugin, call->outputs[o]->device, NNR_COPY_HOST_TO_DEVICE,
                                   (char *)call->outputs[o]->data + lo_out[o], (char *)hout[o].data + lo_out[o], (size_t)bytes_out[o]);
    for (int k = 0; k < call->n_inputs + call->n_outputs; k++) free(bufs[k]);
    return st;
}

static _Atomic int64_t fallback_counts[256];

int64_t nnr_fallback_count(int op) { return (op >= 0 && op < 256) ? atomic_load(&fallback_counts[op]) : 0; }

/* an op's bytes are what its thread allocated since the thread's previous op (or the profile's start) */
static _Thread_local int64_t prof_charged;
static _Thread_local unsigned prof_gen;
void nnr_prof_charge_from_now(void) { prof_gen = nnr_prof_generation(); prof_charged = nnr_tl_alloc_bytes; }

int nnr_dispatch(const char *opname, int device, nnr_op_call *call)
{
    if (nnr_interrupted_flag()) {
        nnr_clear_interrupt();
        return nnr_errorf(NNR_ERR_INTERRUPTED, "%s: interrupted", opname);
    }
    const nnr_device_entry *dev = nnr_device_get(device);
    if (!dev) return nnr_errorf(NNR_ERR_DEVICE, "%s: no device %d", opname, device);
    nnr_plugin *p = dev->plugin;
    int st;
    int64_t t0 = 0;
    if (__builtin_expect(nnr_profiling, 0)) t0 = nnr_prof_now();
    nnr_plugin *ext;
    if (p->supports(p, call)) {
        st = p->run(p, call);
    } else if (device == 0 && (ext = nnr_extension_for(call))) {
        st = ext->run(ext, call);      /* an op an extension plugin adds (plugins/quant) */
    } else if (device != 0) {
        static _Atomic int warned[256];
        if (call->op < 256 && !atomic_exchange(&warned[call->op], 1)) {
            char msg[160];
            snprintf(msg, sizeof msg, "%s is not implemented by the %s backend; running it on the cpu (copies inserted)", opname, p->name);
            nnr_host.log(NNR_LOG_WARN, NULL, msg);
        }
        if (call->op < 256) atomic_fetch_add(&fallback_counts[call->op], 1);
        st = run_on_cpu_fallback(opname, dev, call);
    } else {
        const nnr_tensor_desc *d = call->n_inputs ? call->inputs[0] : call->outputs[0];
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported by the %s backend", opname, nnr_dtype_name(d->dtype), p->name);
    }
    if (__builtin_expect(nnr_profiling, 0)) {
        /* an op's bytes: what its thread allocated since the previous op (the front-end's outputs) */
        if (prof_gen != nnr_prof_generation()) { prof_gen = nnr_prof_generation(); prof_charged = nnr_tl_alloc_bytes; }   /* a new profile */
        nnr_prof_record(NNR_PROF_OP, opname, t0, nnr_prof_now() - t0, nnr_tl_alloc_bytes - prof_charged);
        prof_charged = nnr_tl_alloc_bytes;
    }
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

/* ---------- helpers ---------- */

static int broadcast_shapes(const char *op, int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out)
{
    int n = na > nb ? na : nb;
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
    *nout = n;
    return NNR_OK;
}

/* t viewed with the broadcast shape (zero strides where it is expanded) */
static void desc_broadcast(const nnr_tensor *t, int ndim, const int64_t *sizes, nnr_tensor_desc *d)
{
    nnr_tensor_desc_of(t, d);
    d->ndim = ndim;
    for (int i = ndim - 1, j = t->ndim - 1; i >= 0; i--, j--) {
        d->sizes[i] = sizes[i];
        d->strides[i] = (j >= 0 && t->sizes[j] == sizes[i]) ? t->strides[j] : 0;
    }
}

static int same_device(const char *op, const nnr_tensor *a, const nnr_tensor *b)
{
    if (a->device == b->device) return NNR_OK;
    return nnr_errorf(NNR_ERR_DEVICE, "%s: tensors are on different devices (%s and %s); move one with :to()", op,
                      nnr_device_name(a->device), nnr_device_name(b->device));
}

/* t in dtype (new reference; t itself when it already has it) */
static nnr_tensor *as_dtype(const nnr_tensor *t, int dtype)
{
    if (t->dtype == dtype) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    return nnr_to(t, dtype, t->device);
}

static int run1(const char *op, int opid, int device, int nin, const nnr_tensor_desc **in, const nnr_tensor_desc *out, const nnr_op_params *p)
{
    nnr_op_call call = {.struct_size = sizeof call, .op = (uint32_t)opid, .n_inputs = nin, .n_outputs = 1, .outputs = {out}, .params = p};
    for (int i = 0; i < nin; i++) call.inputs[i] = in[i];
    return nnr_dispatch(op, device, &call);
}

/* records into r with fn's result; on failure drops r */
#define RECORD(r, call) do { if ((r) && (call) != NNR_OK) { nnr_tensor_release(r); (r) = NULL; } } while (0)

static int copy_same_device(nnr_tensor *dst, const nnr_tensor *src);

/* the end of an in-place op computed out of place while recording: a takes
 * r's values and r's history */
static int inplace_recorded(nnr_tensor *a, nnr_tensor *r)
{
    if (!r) return nnr_last_status();
    int st = copy_same_device(a, r);
    if (st == NNR_OK && r->grad_fn) {
        atomic_fetch_add(&r->grad_fn->refcount, 1);
        nnr_node_attach(a, r->grad_fn);
    }
    nnr_tensor_release(r);
    return st;
}

/* a's current value as a separate tensor that carries a's history */
static nnr_tensor *old_value(nnr_tensor *a)
{
    return nnr_clone(a);
}

/* ---------- copy, fill, to ---------- */

int nnr_fill_(nnr_tensor *t, double value)
{
    if (nnr_autograd_check_inplace("fill_", t)) return nnr_last_status();
    if (t->requires_grad && nnr_grad_mode() && nnr_record_overwrite("FillBackward", t, NULL)) return nnr_last_status();
    nnr_tensor_desc d;
    nnr_tensor_desc_of(t, &d);
    nnr_op_params p = {.struct_size = sizeof p, .f = {value}};
    return run1("fill", NNR_OP_FILL, t->device, 0, NULL, &d, &p);
}

static int copy_same_device(nnr_tensor *dst, const nnr_tensor *src)
{
    nnr_tensor_desc d, s;
    nnr_tensor_desc_of(dst, &d);
    desc_broadcast(src, dst->ndim, dst->sizes, &s);
    const nnr_tensor_desc *in[1] = {&s};
    return run1("copy", NNR_OP_COPY, dst->device, 1, in, &d, NULL);
}

int nnr_copy_(nnr_tensor *dst, const nnr_tensor *src)
{
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (broadcast_shapes("copy_", dst->ndim, dst->sizes, src->ndim, src->sizes, &n, shape)) return nnr_last_status();
    if (n != dst->ndim || memcmp(shape, dst->sizes, sizeof(int64_t) * (size_t)n) != 0) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "copy_: source of shape %s cannot be broadcast to destination shape %s",
                          nnr_shape_str(a, sizeof a, src->ndim, src->sizes), nnr_shape_str(b, sizeof b, dst->ndim, dst->sizes));
    }
    if (nnr_autograd_check_inplace("copy_", dst)) return nnr_last_status();
    if (nnr_grad_mode() && (dst->requires_grad || src->requires_grad) &&
        nnr_record_overwrite("CopyBackward", dst, src->requires_grad ? src : NULL))
        return nnr_last_status();
    if (dst->device == src->device) return copy_same_device(dst, src);

    /* across devices: a contiguous block of dst's dtype travels through the plugins' copy */
    nnr_tensor *expanded = nnr_expand(src, dst->ndim, dst->sizes);
    nnr_tensor *s = expanded ? nnr_tensor_alloc(dst->dtype, dst->ndim, dst->sizes, src->device) : NULL;
    int st = s ? copy_same_device(s, expanded) : nnr_last_status();
    nnr_tensor_release(expanded);
    nnr_tensor *staging = NULL;
    if (st == NNR_OK) {
        int direct = nnr_tensor_is_contiguous(dst);
        staging = direct ? dst : nnr_tensor_alloc(dst->dtype, dst->ndim, dst->sizes, dst->device);
        if (!staging) st = nnr_last_status();
        size_t nbytes = (size_t)nnr_tensor_numel(dst) * nnr_dtype_bytes(dst->dtype);
        const nnr_device_entry *from = nnr_device_get(src->device), *to = nnr_device_get(dst->device);
        void *sp = (char *)s->storage->data, *dp = staging ? (char *)staging->storage->data + staging->offset * (int64_t)nnr_dtype_bytes(dst->dtype) : NULL;
        if (st == NNR_OK && nbytes) {
            if (src->device == 0) st = to->plugin->copy(to->plugin, to->local_index, NNR_COPY_HOST_TO_DEVICE, dp, sp, nbytes);
            else if (dst->device == 0) st = from->plugin->copy(from->plugin, from->local_index, NNR_COPY_DEVICE_TO_HOST, dp, sp, nbytes);
            else {
                void *host = malloc(nbytes);
                st = host ? from->plugin->copy(from->plugin, from->local_index, NNR_COPY_DEVICE_TO_HOST, host, sp, nbytes)
                          : (nnr_status)nnr_errorf(NNR_ERR_OOM, "copy_: out of host memory for %zu bytes", nbytes);
                if (st == NNR_OK) st = to->plugin->copy(to->plugin, to->local_index, NNR_COPY_HOST_TO_DEVICE, dp, host, nbytes);
                free(host);
            }
            if (st) nnr_errorf(st, "copy_: transfer %s -> %s failed: %s", from->name, to->name, nnr_last_error());
        }
        if (st == NNR_OK && !direct) st = copy_same_device(dst, staging);
        if (!direct) nnr_tensor_release(staging);
    }
    nnr_tensor_release(s);
    return st;
}

nnr_tensor *nnr_to(const nnr_tensor *t, int dtype, int device)
{
    if (!nnr_dtype_valid(dtype)) { nnr_errorf(NNR_ERR_INVALID, "to: unknown dtype %d", dtype); return NULL; }
    if (dtype == t->dtype && device == t->device) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    nnr_tensor *r = nnr_tensor_alloc(dtype, t->ndim, t->sizes, device);
    int prev = nnr_set_grad_enabled(0);         /* the cast records itself below */
    if (r && nnr_copy_(r, t)) { nnr_tensor_release(r); r = NULL; }
    nnr_set_grad_enabled(prev);
    if (nnr_dtype_is_float(dtype) && nnr_should_record(1, &t)) RECORD(r, nnr_record_view(NNR_VIEW_CAST, t, r, NULL, 0));
    return r;
}

nnr_tensor *nnr_clone(const nnr_tensor *t)
{
    nnr_tensor *r = nnr_tensor_alloc(t->dtype, t->ndim, t->sizes, t->device);
    if (r && copy_same_device(r, t)) { nnr_tensor_release(r); return NULL; }
    if (nnr_should_record(1, &t)) RECORD(r, nnr_record_view(NNR_VIEW_IDENTITY, t, r, NULL, 0));
    return r;
}

nnr_tensor *nnr_contiguous(const nnr_tensor *t)
{
    if (nnr_tensor_is_contiguous(t)) { nnr_tensor_retain((nnr_tensor *)t); return (nnr_tensor *)t; }
    return nnr_clone(t);
}

/* ---------- random ---------- */

int nnr_random_(nnr_tensor *t, int kind, double a, double b)
{
    if (kind != NNR_OP_RAND_UNIFORM && kind != NNR_OP_RAND_NORMAL && kind != NNR_OP_RAND_INT)
        return nnr_errorf(NNR_ERR_INVALID, "random: unknown distribution %d", kind);
    if (kind == NNR_OP_RAND_INT && !(b > a))
        return nnr_errorf(NNR_ERR_INVALID, "randint: empty range [%g, %g)", a, b);
    if (kind != NNR_OP_RAND_INT && !nnr_dtype_is_float(t->dtype))
        return nnr_errorf(NNR_ERR_INVALID, "%s: dtype %s is not a floating-point type", nnr_op_name(kind), nnr_dtype_name(t->dtype));
    if (nnr_autograd_check_inplace(nnr_op_name(kind), t)) return nnr_last_status();
    if (t->requires_grad && nnr_grad_mode() && nnr_record_overwrite("FillBackward", t, NULL)) return nnr_last_status();
    /* the counter advances by the element count, rounded to Philox's 4-wide blocks */
    uint64_t seed, offset, n = (uint64_t)nnr_tensor_numel(t);
    nnr_rng_take((n + 3) / 4 * 4, &seed, &offset);
    nnr_tensor *c = nnr_tensor_is_contiguous(t) ? NULL : nnr_tensor_alloc(t->dtype, t->ndim, t->sizes, t->device);
    nnr_tensor_desc d;
    nnr_tensor_desc_of(c ? c : t, &d);
    nnr_op_params p = {.struct_size = sizeof p, .f = {a, b}, .i = {(int64_t)seed, (int64_t)offset}};
    int st = run1(nnr_op_name(kind), kind, t->device, 0, NULL, &d, &p);
    if (c) {
        if (st == NNR_OK) st = copy_same_device(t, c);
        nnr_tensor_release(c);
    }
    return st;
}

nnr_tensor *nnr_random(int kind, int dtype, int ndim, const int64_t *sizes, double a, double b, int device)
{
    nnr_tensor *t = nnr_tensor_alloc(dtype, ndim, sizes, device);
    if (t && nnr_random_(t, kind, a, b)) { nnr_tensor_release(t); return NULL; }
    return t;
}

/* ---------- elementwise ---------- */

static int unary_dtype(int op, int dtype, int *out)
{
    switch (op) {
    case NNR_OP_EXP: case NNR_OP_LOG: case NNR_OP_SQRT: case NNR_OP_TANH: case NNR_OP_SIGMOID:
    case NNR_OP_SIN: case NNR_OP_COS: case NNR_OP_RECIPROCAL: case NNR_OP_ERF:
        *out = nnr_dtype_is_float(dtype) ? dtype : NNR_F32;
        return NNR_OK;
    case NNR_OP_LOGICAL_NOT: *out = NNR_BOOL; return NNR_OK;
    case NNR_OP_NEG: case NNR_OP_ABS: case NNR_OP_RELU: case NNR_OP_SIGN:
        if (dtype == NNR_BOOL && op != NNR_OP_SIGN)
            return nnr_errorf(NNR_ERR_INVALID, "%s: not defined for bool tensors", nnr_op_name(op));
        *out = dtype;
        return NNR_OK;
    }
    return nnr_errorf(NNR_ERR_INVALID, "unary: %d is not a unary op", op);
}

nnr_tensor *nnr_unary(int op, const nnr_tensor *a)
{
    int odt = 0;
    if (!is_unary(op)) { nnr_errorf(NNR_ERR_INVALID, "unary: %d is not a unary op", op); return NULL; }
    if (unary_dtype(op, a->dtype, &odt)) return NULL;
    /* math ops compute in the output's float type; the others read the input as is */
    int in_dt = (odt == NNR_BOOL || !nnr_dtype_is_float(odt)) ? a->dtype : odt;
    nnr_tensor *x = as_dtype(a, in_dt);
    if (!x) return NULL;
    nnr_tensor *r = nnr_tensor_alloc(odt, a->ndim, a->sizes, a->device);
    if (r) {
        nnr_tensor_desc di, dout;
        nnr_tensor_desc_of(x, &di);
        nnr_tensor_desc_of(r, &dout);
        const nnr_tensor_desc *in[1] = {&di};
        if (run1(nnr_op_name(op), op, a->device, 1, in, &dout, NULL)) { nnr_tensor_release(r); r = NULL; }
    }
    if (nnr_should_record(1, (const nnr_tensor **)&x)) RECORD(r, nnr_record_unary(op, x, r));
    nnr_tensor_release(x);
    return r;
}

int nnr_unary_(int op, nnr_tensor *a)
{
    int odt = 0;
    if (!is_unary(op)) return nnr_errorf(NNR_ERR_INVALID, "unary_: %d is not a unary op", op);
    if (unary_dtype(op, a->dtype, &odt)) return nnr_last_status();
    if (odt != a->dtype)
        return nnr_errorf(NNR_ERR_INVALID, "%s_: result type %s cannot be stored in place in a %s tensor", nnr_op_name(op),
                          nnr_dtype_name(odt), nnr_dtype_name(a->dtype));
    if (nnr_autograd_check_inplace(nnr_op_name(op), a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = old_value(a), *r = old ? nnr_unary(op, old) : NULL;
        nnr_tensor_release(old);
        return inplace_recorded(a, r);
    }
    nnr_tensor_desc d;
    nnr_tensor_desc_of(a, &d);
    const nnr_tensor_desc *in[1] = {&d};
    return run1(nnr_op_name(op), op, a->device, 1, in, &d, NULL);
}

/* compute dtype and result dtype of a binary op */
static void binary_dtypes(int op, int promoted, int *compute, int *result)
{
    *compute = promoted;
    if ((op == NNR_OP_DIV) && !nnr_dtype_is_float(promoted)) *compute = NNR_F32;
    *result = is_compare(op) ? NNR_BOOL : *compute;
}

static int scalar_is_integral(double s) { return s == floor(s) && s > -9.2e18 && s < 9.2e18; }

/* a Lua number joins a tensor's dtype unless it needs a wider category */
static int promote_with_scalar(int dtype, double s)
{
    if (nnr_dtype_is_float(dtype)) return dtype;
    if (!scalar_is_integral(s)) return NNR_F32;
    if (dtype == NNR_BOOL && !(s == 0 || s == 1)) return NNR_I64;
    return dtype;
}

static int check_binary_op(int op)
{
    if (!is_binary(op)) return nnr_errorf(NNR_ERR_INVALID, "binary: %d is not a binary op", op);
    return NNR_OK;
}

static nnr_tensor *binary_into(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    const char *name = nnr_op_name(op);
    if (check_binary_op(op) || same_device(name, a, b)) return NULL;
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (broadcast_shapes(name, a->ndim, a->sizes, b->ndim, b->sizes, &n, shape)) return NULL;
    int compute, result;
    binary_dtypes(op, nnr_promote_types(a->dtype, b->dtype), &compute, &result);
    if (out) {
        const nnr_tensor *in2[2] = {a, b};
        if (nnr_should_record(2, in2) || (out->requires_grad && nnr_grad_mode())) {
            nnr_errorf(NNR_ERR_INVALID, "%s: the out= variant does not record gradients; use it inside nnr.no_grad", name);
            return NULL;
        }
        if (out->ndim != n || memcmp(out->sizes, shape, sizeof(int64_t) * (size_t)n) != 0 || out->dtype != result || out->device != a->device) {
            char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "%s: out tensor is %s %s, expected %s %s", name, nnr_shape_str(x, sizeof x, out->ndim, out->sizes),
                       nnr_dtype_name(out->dtype), nnr_shape_str(y, sizeof y, n, shape), nnr_dtype_name(result));
            return NULL;
        }
        nnr_tensor_retain(out);
    } else if (!(out = nnr_tensor_alloc(result, n, shape, a->device))) return NULL;
    nnr_tensor *x = a->dtype == compute ? NULL : nnr_to(a, compute, a->device);
    nnr_tensor *y = b->dtype == compute ? NULL : nnr_to(b, compute, b->device);
    if ((a->dtype != compute && !x) || (b->dtype != compute && !y)) goto fail;
    nnr_tensor_desc dx, dy, dout;
    desc_broadcast(x ? x : a, n, shape, &dx);
    desc_broadcast(y ? y : b, n, shape, &dy);
    nnr_tensor_desc_of(out, &dout);
    const nnr_tensor_desc *in[2] = {&dx, &dy};
    if (run1(name, op, a->device, 2, in, &dout, NULL)) goto fail;
    const nnr_tensor *used[2] = {x ? x : a, y ? y : b};
    if (nnr_should_record(2, used) && nnr_record_binary(op, used[0], used[1], out)) goto fail;
    nnr_tensor_release(x);
    nnr_tensor_release(y);
    return out;
fail:
    nnr_tensor_release(x);
    nnr_tensor_release(y);
    nnr_tensor_release(out);
    return NULL;
}

nnr_tensor *nnr_binary(int op, const nnr_tensor *a, const nnr_tensor *b) { return binary_into(op, a, b, NULL); }

int nnr_binary_out(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out)
{
    nnr_tensor *r = binary_into(op, a, b, out);
    if (!r) return nnr_last_status();
    nnr_tensor_release(r);
    return NNR_OK;
}

static int run_scalar(int op, const nnr_tensor *x, double s, int scalar_first, nnr_tensor *out)
{
    nnr_tensor_desc dx, dout;
    nnr_tensor_desc_of(x, &dx);
    nnr_tensor_desc_of(out, &dout);
    nnr_op_params p = {.struct_size = sizeof p, .f = {s}, .i = {scalar_first ? 1 : 0}};
    const nnr_tensor_desc *in[1] = {&dx};
    return run1(nnr_op_name(op), op, x->device, 1, in, &dout, &p);
}

nnr_tensor *nnr_binary_scalar(int op, const nnr_tensor *a, double s, int scalar_first)
{
    if (check_binary_op(op)) return NULL;
    int compute, result;
    binary_dtypes(op, promote_with_scalar(a->dtype, s), &compute, &result);
    nnr_tensor *x = a->dtype == compute ? NULL : nnr_to(a, compute, a->device);
    if (a->dtype != compute && !x) return NULL;
    nnr_tensor *r = nnr_tensor_alloc(result, a->ndim, a->sizes, a->device);
    const nnr_tensor *used = x ? x : a;
    if (r && run_scalar(op, used, s, scalar_first, r)) { nnr_tensor_release(r); r = NULL; }
    if (nnr_should_record(1, &used)) RECORD(r, nnr_record_binary_scalar(op, used, s, scalar_first, r));
    nnr_tensor_release(x);
    return r;
}

static int inplace_check(int op, const nnr_tensor *a, int result)
{
    if (result != a->dtype)
        return nnr_errorf(NNR_ERR_INVALID, "%s_: result type %s cannot be stored in place in a %s tensor", nnr_op_name(op),
                          nnr_dtype_name(result), nnr_dtype_name(a->dtype));
    return NNR_OK;
}

int nnr_binary_(int op, nnr_tensor *a, const nnr_tensor *b)
{
    const char *name = nnr_op_name(op);
    if (check_binary_op(op) || same_device(name, a, b)) return nnr_last_status();
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (broadcast_shapes(name, a->ndim, a->sizes, b->ndim, b->sizes, &n, shape)) return nnr_last_status();
    if (n != a->ndim || memcmp(shape, a->sizes, sizeof(int64_t) * (size_t)n) != 0) {
        char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_INVALID, "%s_: shape %s cannot be broadcast to the in-place target's shape %s", name,
                          nnr_shape_str(y, sizeof y, b->ndim, b->sizes), nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
    }
    int compute, result;
    binary_dtypes(op, nnr_promote_types(a->dtype, b->dtype), &compute, &result);
    if (is_compare(op)) return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s_: comparisons are not available in place", name);
    if (inplace_check(op, a, result)) return nnr_last_status();
    if (nnr_autograd_check_inplace(name, a)) return nnr_last_status();
    const nnr_tensor *in2[2] = {a, b};
    if (nnr_should_record(2, in2)) {
        nnr_tensor *old = old_value(a), *r = old ? nnr_binary(op, old, b) : NULL;
        nnr_tensor_release(old);
        return inplace_recorded(a, r);
    }
    nnr_tensor *y = as_dtype(b, compute);
    if (!y) return nnr_last_status();
    nnr_tensor_desc da, dy;
    nnr_tensor_desc_of(a, &da);
    desc_broadcast(y, n, shape, &dy);
    const nnr_tensor_desc *in[2] = {&da, &dy};
    int st = run1(name, op, a->device, 2, in, &da, NULL);
    nnr_tensor_release(y);
    return st;
}

int nnr_binary_scalar_(int op, nnr_tensor *a, double s)
{
    if (check_binary_op(op)) return nnr_last_status();
    if (is_compare(op)) return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s_: comparisons are not available in place", nnr_op_name(op));
    int compute, result;
    binary_dtypes(op, promote_with_scalar(a->dtype, s), &compute, &result);
    if (inplace_check(op, a, result)) return nnr_last_status();
    if (nnr_autograd_check_inplace(nnr_op_name(op), a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = old_value(a), *r = old ? nnr_binary_scalar(op, old, s, 0) : NULL;
        nnr_tensor_release(old);
        return inplace_recorded(a, r);
    }
    return run_scalar(op, a, s, 0, a);
}

nnr_tensor *nnr_where_scalar(const nnr_tensor *cond, const nnr_tensor *a, double sa, const nnr_tensor *b, double sb)
{
    if (cond->dtype != NNR_BOOL) {
        nnr_errorf(NNR_ERR_INVALID, "where: condition must be a bool tensor, got %s", nnr_dtype_name(cond->dtype));
        return NULL;
    }
    if ((a && same_device("where", cond, a)) || (b && same_device("where", cond, b))) return NULL;
    int n = cond->ndim;
    int64_t shape[NNR_MAX_DIMS];
    memcpy(shape, cond->sizes, sizeof shape);
    if (a && broadcast_shapes("where", n, shape, a->ndim, a->sizes, &n, shape)) return NULL;
    if (b && broadcast_shapes("where", n, shape, b->ndim, b->sizes, &n, shape)) return NULL;
    int dt;
    if (a && b) dt = nnr_promote_types(a->dtype, b->dtype);
    else if (a) dt = promote_with_scalar(a->dtype, sb);
    else if (b) dt = promote_with_scalar(b->dtype, sa);
    else dt = (scalar_is_integral(sa) && scalar_is_integral(sb)) ? NNR_I64 : NNR_F32;
    nnr_tensor *x = a ? as_dtype(a, dt) : NULL, *y = b ? as_dtype(b, dt) : NULL;
    nnr_tensor *r = ((a && !x) || (b && !y)) ? NULL : nnr_tensor_alloc(dt, n, shape, cond->device);
    if (r) {
        nnr_tensor_desc dc, dx, dy, dout;
        const nnr_tensor_desc *in[3];
        int nin = 0;
        desc_broadcast(cond, n, shape, &dc);
        in[nin++] = &dc;
        if (x) { desc_broadcast(x, n, shape, &dx); in[nin++] = &dx; }
        if (y) { desc_broadcast(y, n, shape, &dy); in[nin++] = &dy; }
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .f = {sa, sb}, .i = {(x ? 0 : 1) | (y ? 0 : 2)}};
        if (run1("where", NNR_OP_WHERE, cond->device, nin, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    const nnr_tensor *used[2] = {x, y};
    if (nnr_should_record(2, used)) RECORD(r, nnr_record_where(cond, x, y, r));
    nnr_tensor_release(x);
    nnr_tensor_release(y);
    return r;
}

nnr_tensor *nnr_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b)
{
    return nnr_where_scalar(cond, a, 0, b, 0);
}

static int check_mask(const char *op, const nnr_tensor *a, const nnr_tensor *mask)
{
    if (mask->dtype != NNR_BOOL) return nnr_errorf(NNR_ERR_INVALID, "%s: mask must be a bool tensor, got %s", op, nnr_dtype_name(mask->dtype));
    return same_device(op, a, mask);
}

nnr_tensor *nnr_masked_fill(const nnr_tensor *a, const nnr_tensor *mask, double value)
{
    if (check_mask("masked_fill", a, mask)) return NULL;
    int n;
    int64_t shape[NNR_MAX_DIMS];
    if (broadcast_shapes("masked_fill", a->ndim, a->sizes, mask->ndim, mask->sizes, &n, shape)) return NULL;
    if (n != a->ndim || memcmp(shape, a->sizes, sizeof(int64_t) * (size_t)n)) {
        char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "masked_fill: mask of shape %s does not broadcast to the tensor's shape %s",
                   nnr_shape_str(y, sizeof y, mask->ndim, mask->sizes), nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    nnr_tensor *r = nnr_where_scalar(mask, NULL, value, a, 0);
    if (r && r->dtype != a->dtype) {                 /* keep a's dtype, as PyTorch does */
        nnr_tensor *c = nnr_to(r, a->dtype, a->device);
        nnr_tensor_release(r);
        r = c;
    }
    return r;
}

int nnr_masked_fill_(nnr_tensor *a, const nnr_tensor *mask, double value)
{
    if (nnr_autograd_check_inplace("masked_fill_", a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = old_value(a), *r = old ? nnr_masked_fill(old, mask, value) : NULL;
        nnr_tensor_release(old);
        return inplace_recorded(a, r);
    }
    nnr_tensor *r = nnr_masked_fill(a, mask, value);
    if (!r) return nnr_last_status();
    int st = copy_same_device(a, r);
    nnr_tensor_release(r);
    return st;
}

nnr_tensor *nnr_clamp(const nnr_tensor *a, double lo, double hi, int flags)
{
    int dt = a->dtype;
    if (flags & 1) dt = promote_with_scalar(dt, lo);
    if (flags & 2) dt = promote_with_scalar(dt, hi);
    if (dt == NNR_BOOL) { nnr_errorf(NNR_ERR_INVALID, "clamp: not defined for bool tensors"); return NULL; }
    nnr_tensor *x = as_dtype(a, dt);
    nnr_tensor *r = x ? nnr_tensor_alloc(dt, a->ndim, a->sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc dx, dout;
        nnr_tensor_desc_of(x, &dx);
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .f = {lo, hi}, .i = {flags}};
        const nnr_tensor_desc *in[1] = {&dx};
        if (run1("clamp", NNR_OP_CLAMP, a->device, 1, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (x && nnr_should_record(1, (const nnr_tensor **)&x)) RECORD(r, nnr_record_clamp(x, lo, hi, flags, r));
    nnr_tensor_release(x);
    return r;
}

int nnr_clamp_(nnr_tensor *a, double lo, double hi, int flags)
{
    if (a->dtype == NNR_BOOL) return nnr_errorf(NNR_ERR_INVALID, "clamp_: not defined for bool tensors");
    if (nnr_autograd_check_inplace("clamp_", a)) return nnr_last_status();
    if (nnr_should_record(1, (const nnr_tensor **)&a)) {
        nnr_tensor *old = old_value(a), *r = old ? nnr_clamp(old, lo, hi, flags) : NULL;
        nnr_tensor_release(old);
        return inplace_recorded(a, r);
    }
    nnr_tensor_desc d;
    nnr_tensor_desc_of(a, &d);
    nnr_op_params p = {.struct_size = sizeof p, .f = {lo, hi}, .i = {flags}};
    const nnr_tensor_desc *in[1] = {&d};
    return run1("clamp_", NNR_OP_CLAMP, a->device, 1, in, &d, &p);
}

/* ---------- reductions ---------- */

nnr_tensor *nnr_reduce(int op, const nnr_tensor *a, int ndims, const int *dims, int keepdim, int64_t correction)
{
    const char *name = nnr_op_name(op);
    if (nnr_op_category(op) != NNR_OPCAT_REDUCE) { nnr_errorf(NNR_ERR_INVALID, "reduce: %d is not a reduction", op); return NULL; }
    int reduced[NNR_MAX_DIMS] = {0};
    if (ndims <= 0) for (int i = 0; i < a->ndim; i++) reduced[i] = 1;
    for (int k = 0; k < ndims; k++) {
        int d = dims[k] < 0 ? dims[k] + a->ndim : dims[k];
        if (d < 0 || d >= a->ndim) {
            char b[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", name, dims[k] + 1,
                       nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
            return NULL;
        }
        if (reduced[d]++) { nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d given twice", name, d + 1); return NULL; }
    }
    int in_dt = a->dtype, out_dt = a->dtype;
    if (op == NNR_OP_SUM || op == NNR_OP_PROD) { if (nnr_dtype_is_integral(a->dtype)) in_dt = out_dt = NNR_I64; }
    else if (op == NNR_OP_ARGMAX || op == NNR_OP_ARGMIN) out_dt = NNR_I64;
    else if (op == NNR_OP_MEAN || op == NNR_OP_VAR) {
        if (!nnr_dtype_is_float(a->dtype)) {
            nnr_errorf(NNR_ERR_INVALID, "%s: input dtype must be floating point, got %s (convert with :float())", name, nnr_dtype_name(a->dtype));
            return NULL;
        }
    }
    int64_t rcount = 1;
    int64_t out_sizes[NNR_MAX_DIMS], kept_sizes[NNR_MAX_DIMS];
    int nout = 0, nkept = 0;
    nnr_tensor_desc din;
    nnr_tensor *x = as_dtype(a, in_dt);
    if (!x) return NULL;
    nnr_tensor_desc_of(x, &din);
    int k = 0;
    for (int i = 0; i < a->ndim; i++)            /* kept dims first */
        if (!reduced[i]) {
            din.sizes[k] = a->sizes[i]; din.strides[k] = x->strides[i]; k++;
            kept_sizes[nkept++] = a->sizes[i];
        }
    for (int i = 0; i < a->ndim; i++)
        if (reduced[i]) { din.sizes[k] = a->sizes[i]; din.strides[k] = x->strides[i]; k++; rcount *= a->sizes[i]; }
    for (int i = 0; i < a->ndim; i++) {
        if (!reduced[i]) out_sizes[nout++] = a->sizes[i];
        else if (keepdim) out_sizes[nout++] = 1;
    }
    if (rcount == 0 && (op == NNR_OP_MAX || op == NNR_OP_MIN || op == NNR_OP_ARGMAX || op == NNR_OP_ARGMIN)) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: cannot reduce over an empty dimension (shape %s)", name, nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
        nnr_tensor_release(x);
        return NULL;
    }
    nnr_tensor *r = nnr_tensor_alloc(out_dt, nout, out_sizes, a->device);
    if (r) {
        nnr_tensor_desc dout;
        nnr_tensor_desc_of(r, &dout);
        dout.ndim = nkept;
        memcpy(dout.sizes, kept_sizes, sizeof(int64_t) * (size_t)nkept);
        nnr_contiguous_strides(nkept, kept_sizes, dout.strides);
        nnr_op_params p = {.struct_size = sizeof p, .i = {a->ndim - nkept, correction, 0}};
        const nnr_tensor_desc *in[1] = {&din};
        if (run1(name, op, a->device, 1, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (nnr_should_record(1, (const nnr_tensor **)&x)) {
        unsigned mask = 0;
        for (int d = 0; d < a->ndim; d++) if (reduced[d]) mask |= 1u << d;
        RECORD(r, nnr_record_reduce(op, x, mask, rcount, correction, r));
    }
    nnr_tensor_release(x);
    return r;
}

nnr_tensor *nnr_softmax(const nnr_tensor *a, int dim, int log)
{
    const char *name = log ? "log_softmax" : "softmax";
    int d = dim < 0 ? dim + a->ndim : dim;
    if (a->ndim == 0) d = 0;
    else if (d < 0 || d >= a->ndim) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", name, dim + 1, nnr_shape_str(b, sizeof b, a->ndim, a->sizes));
        return NULL;
    }
    /* under autocast, half inputs are normalised in f32 (as PyTorch's autocast does) */
    int low = a->dtype == NNR_F16 || a->dtype == NNR_BF16;
    nnr_tensor *x = as_dtype(a, !nnr_dtype_is_float(a->dtype) || (low && nnr_get_autocast() >= 0) ? NNR_F32 : a->dtype);
    nnr_tensor *r = x ? nnr_tensor_alloc(x->dtype, a->ndim, a->sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc di, dout;
        nnr_tensor_desc_of(x, &di);
        nnr_tensor_desc_of(r, &dout);
        if (a->ndim == 0) { di.ndim = dout.ndim = 1; di.sizes[0] = dout.sizes[0] = 1; di.strides[0] = dout.strides[0] = 1; }
        else {   /* move dim last in both */
            int last = a->ndim - 1;
            int64_t t;
            t = di.sizes[d]; di.sizes[d] = di.sizes[last]; di.sizes[last] = t;
            t = di.strides[d]; di.strides[d] = di.strides[last]; di.strides[last] = t;
            t = dout.sizes[d]; dout.sizes[d] = dout.sizes[last]; dout.sizes[last] = t;
            t = dout.strides[d]; dout.strides[d] = dout.strides[last]; dout.strides[last] = t;
        }
        const nnr_tensor_desc *in[1] = {&di};
        int op = log ? NNR_OP_LOG_SOFTMAX : NNR_OP_SOFTMAX;
        if (run1(name, op, a->device, 1, in, &dout, NULL)) { nnr_tensor_release(r); r = NULL; }
    }
    if (a->ndim > 0 && x && nnr_should_record(1, (const nnr_tensor **)&x)) RECORD(r, nnr_record_softmax(x, d, log, r));
    nnr_tensor_release(x);
    return r;
}

/* ---------- matmul ---------- */

static nnr_tensor *matmul_impl(const char *name, const nnr_tensor *a, const nnr_tensor *b)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    if (same_device(name, a, b)) return NULL;
    if (a->ndim == 0 || b->ndim == 0) {
        nnr_errorf(NNR_ERR_INVALID, "%s: both arguments need at least 1 dimension, got shapes %s and %s", name,
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    int dt = nnr_promote_types(a->dtype, b->dtype);
    if (dt != NNR_F32 && dt != NNR_F64 && dt != NNR_F16 && dt != NNR_BF16) {
        nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported (expected f32, f64, f16 or bf16)", name, nnr_dtype_name(dt));
        return NULL;
    }
    if (dt == NNR_F32 && nnr_get_autocast() >= 0) dt = nnr_get_autocast();   /* the casts are recorded: gradients reach f32 */
    /* promote 1-d operands to matrices, remember which dims to drop */
    int64_t as[NNR_MAX_DIMS], ast[NNR_MAX_DIMS], bs[NNR_MAX_DIMS], bst[NNR_MAX_DIMS];
    int na = a->ndim, nb = b->ndim;
    memcpy(as, a->sizes, sizeof as); memcpy(ast, a->strides, sizeof ast);
    memcpy(bs, b->sizes, sizeof bs); memcpy(bst, b->strides, sizeof bst);
    int drop_m = 0, drop_n = 0;
    if (na == 1) { as[1] = as[0]; ast[1] = ast[0]; as[0] = 1; ast[0] = 0; na = 2; drop_m = 1; }
    if (nb == 1) { bs[1] = 1; bst[1] = 0; nb = 2; drop_n = 1; }
    int64_t M = as[na - 2], K = as[na - 1], K2 = bs[nb - 2], N = bs[nb - 1];
    if (K != K2) {
        nnr_errorf(NNR_ERR_INVALID, "%s: inner dimensions differ: %s @ %s (%lld vs %lld)", name,
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes), (long long)K, (long long)K2);
        return NULL;
    }
    int nbatch;
    int64_t batch[NNR_MAX_DIMS];
    if (broadcast_shapes(name, na - 2, as, nb - 2, bs, &nbatch, batch)) {
        nnr_errorf(NNR_ERR_INVALID, "%s: batch dimensions of %s and %s cannot broadcast", name,
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    if (nbatch + 2 > NNR_MAX_DIMS) { nnr_errorf(NNR_ERR_INVALID, "%s: too many dimensions", name); return NULL; }
    int64_t osz[NNR_MAX_DIMS];
    memcpy(osz, batch, sizeof(int64_t) * (size_t)nbatch);
    osz[nbatch] = M; osz[nbatch + 1] = N;
    nnr_tensor *xa = as_dtype(a, dt), *xb = xa ? as_dtype(b, dt) : NULL;
    nnr_tensor *r = xb ? nnr_tensor_alloc(dt, nbatch + 2, osz, a->device) : NULL;
    if (r) {
        nnr_tensor_desc da, db, dout;
        nnr_tensor_desc_of(xa, &da);
        nnr_tensor_desc_of(xb, &db);
        nnr_tensor_desc_of(r, &dout);
        da.ndim = db.ndim = nbatch + 2;
        for (int i = 0; i < nbatch; i++) {
            int ia = na - 2 - nbatch + i, ib = nb - 2 - nbatch + i;
            da.sizes[i] = db.sizes[i] = batch[i];
            da.strides[i] = (ia >= 0 && as[ia] == batch[i]) ? ast[ia] : 0;
            db.strides[i] = (ib >= 0 && bs[ib] == batch[i]) ? bst[ib] : 0;
        }
        da.sizes[nbatch] = M; da.sizes[nbatch + 1] = K; da.strides[nbatch] = ast[na - 2]; da.strides[nbatch + 1] = ast[na - 1];
        db.sizes[nbatch] = K; db.sizes[nbatch + 1] = N; db.strides[nbatch] = bst[nb - 2]; db.strides[nbatch + 1] = bst[nb - 1];
        const nnr_tensor_desc *in[2] = {&da, &db};
        if (run1(name, NNR_OP_MATMUL, a->device, 2, in, &dout, NULL)) { nnr_tensor_release(r); r = NULL; }
    }
    const nnr_tensor *used[2] = {xa, xb};
    if (r && nnr_should_record(2, used)) RECORD(r, nnr_record_matmul(xa, xb, r));
    nnr_tensor_release(xa);
    nnr_tensor_release(xb);
    if (r && (drop_m || drop_n)) {
        int64_t fs[NNR_MAX_DIMS];
        int k = 0;
        for (int i = 0; i < nbatch; i++) fs[k++] = batch[i];
        if (!drop_m) fs[k++] = M;
        if (!drop_n) fs[k++] = N;
        nnr_tensor *v = nnr_view(r, k, fs);
        nnr_tensor_release(r);
        r = v;
    }
    return r;
}

nnr_tensor *nnr_matmul(const nnr_tensor *a, const nnr_tensor *b) { return matmul_impl("matmul", a, b); }

nnr_tensor *nnr_mm(const nnr_tensor *a, const nnr_tensor *b)
{
    if (a->ndim != 2 || b->ndim != 2) {
        char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "mm: expected two 2-d tensors, got shapes %s and %s", nnr_shape_str(x, sizeof x, a->ndim, a->sizes),
                   nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    return matmul_impl("mm", a, b);
}

nnr_tensor *nnr_bmm(const nnr_tensor *a, const nnr_tensor *b)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    if (a->ndim != 3 || b->ndim != 3 || a->sizes[0] != b->sizes[0]) {
        nnr_errorf(NNR_ERR_INVALID, "bmm: expected two 3-d tensors with equal batch sizes, got shapes %s and %s",
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), nnr_shape_str(y, sizeof y, b->ndim, b->sizes));
        return NULL;
    }
    return matmul_impl("bmm", a, b);
}

/* ---------- joining and indexing ---------- */

nnr_tensor *nnr_cat(int n, nnr_tensor *const *ts, int dim)
{
    if (n <= 0) { nnr_errorf(NNR_ERR_INVALID, "cat: expected a non-empty list of tensors"); return NULL; }
    const nnr_tensor *first = ts[0];
    int d = dim < 0 ? dim + first->ndim : dim;
    if (first->ndim == 0 || d < 0 || d >= first->ndim) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "cat: dimension %d is out of range for tensors of shape %s", dim + 1, nnr_shape_str(b, sizeof b, first->ndim, first->sizes));
        return NULL;
    }
    int dt = first->dtype;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const nnr_tensor *t = ts[i];
        if (same_device("cat", first, t)) return NULL;
        int ok = t->ndim == first->ndim;
        for (int k = 0; ok && k < t->ndim; k++) ok = k == d || t->sizes[k] == first->sizes[k];
        if (!ok) {
            char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
            nnr_errorf(NNR_ERR_INVALID, "cat: tensor %d has shape %s, expected %s except in dimension %d", i + 1,
                       nnr_shape_str(y, sizeof y, t->ndim, t->sizes), nnr_shape_str(x, sizeof x, first->ndim, first->sizes), d + 1);
            return NULL;
        }
        total += t->sizes[d];
        dt = nnr_promote_types(dt, t->dtype);
    }
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, first->sizes, sizeof sizes);
    sizes[d] = total;
    nnr_tensor *r = nnr_tensor_alloc(dt, first->ndim, sizes, first->device);
    int64_t at = 0;
    for (int i = 0; r && i < n; i++) {
        nnr_tensor *slot = nnr_narrow(r, d, at, ts[i]->sizes[d]);
        int st = slot ? copy_same_device(slot, ts[i]) : nnr_last_status();
        nnr_tensor_release(slot);
        if (st) { nnr_tensor_release(r); return NULL; }
        at += ts[i]->sizes[d];
    }
    if (r && nnr_should_record(n, (const nnr_tensor *const *)ts)) RECORD(r, nnr_record_cat(n, ts, d, r));
    return r;
}

static nnr_tensor *index_as_i64(const char *op, const nnr_tensor *a, const nnr_tensor *index)
{
    if (!nnr_dtype_is_integral(index->dtype) || index->dtype == NNR_BOOL) {
        nnr_errorf(NNR_ERR_INVALID, "%s: index must be an integer tensor, got %s", op, nnr_dtype_name(index->dtype));
        return NULL;
    }
    if (same_device(op, a, index)) return NULL;
    return as_dtype(index, NNR_I64);
}

nnr_tensor *nnr_gather(const nnr_tensor *a, int dim, const nnr_tensor *index)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    int d = dim < 0 ? dim + a->ndim : dim;
    if (d < 0 || d >= (a->ndim ? a->ndim : 1)) {
        nnr_errorf(NNR_ERR_INVALID, "gather: dimension %d is out of range for a tensor of shape %s", dim + 1, nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    int ok = index->ndim == a->ndim;
    for (int k = 0; ok && k < a->ndim; k++) ok = k == d || index->sizes[k] <= a->sizes[k];
    if (!ok) {
        nnr_errorf(NNR_ERR_INVALID, "gather: index of shape %s does not fit input of shape %s (same number of dims, no larger except in dimension %d)",
                   nnr_shape_str(y, sizeof y, index->ndim, index->sizes), nnr_shape_str(x, sizeof x, a->ndim, a->sizes), d + 1);
        return NULL;
    }
    nnr_tensor *idx = index_as_i64("gather", a, index);
    nnr_tensor *r = idx ? nnr_tensor_alloc(a->dtype, index->ndim, index->sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc da, di, dout;
        nnr_tensor_desc_of(a, &da);
        nnr_tensor_desc_of(idx, &di);
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .i = {d}};
        const nnr_tensor_desc *in[2] = {&da, &di};
        if (run1("gather", NNR_OP_GATHER, a->device, 2, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (r && nnr_should_record(1, &a)) RECORD(r, nnr_record_index(0, a, d, idx, NULL, r));
    nnr_tensor_release(idx);
    return r;
}

nnr_tensor *nnr_index_select(const nnr_tensor *a, int dim, const nnr_tensor *index)
{
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    int d = dim < 0 ? dim + a->ndim : dim;
    if (a->ndim == 0 || d < 0 || d >= a->ndim) {
        nnr_errorf(NNR_ERR_INVALID, "index_select: dimension %d is out of range for a tensor of shape %s", dim + 1, nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    if (index->ndim > 1) {
        nnr_errorf(NNR_ERR_INVALID, "index_select: index must be 1-d, got shape %s", nnr_shape_str(y, sizeof y, index->ndim, index->sizes));
        return NULL;
    }
    nnr_tensor *idx = index_as_i64("index_select", a, index);
    int64_t sizes[NNR_MAX_DIMS];
    memcpy(sizes, a->sizes, sizeof sizes);
    sizes[d] = nnr_tensor_numel(index);
    nnr_tensor *r = idx ? nnr_tensor_alloc(a->dtype, a->ndim, sizes, a->device) : NULL;
    if (r) {
        nnr_tensor_desc da, di, dout;
        nnr_tensor_desc_of(a, &da);
        nnr_tensor_desc_of(idx, &di);
        if (di.ndim == 0) { di.ndim = 1; di.sizes[0] = 1; di.strides[0] = 1; }
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .i = {d}};
        const nnr_tensor_desc *in[2] = {&da, &di};
        if (run1("index_select", NNR_OP_INDEX_SELECT, a->device, 2, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    if (r && nnr_should_record(1, &a)) RECORD(r, nnr_record_index(1, a, d, idx, NULL, r));
    nnr_tensor_release(idx);
    return r;
}

/* out = a with src added at index along dim (SCATTER_ADD) or at index[j] slices (INDEX_ADD) */
static nnr_tensor *accumulate_at(int kind, const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src)
{
    const char *name = kind == NNR_OP_SCATTER_ADD ? "scatter_add" : "index_add";
    char x[NNR_SHAPE_BUF], y[NNR_SHAPE_BUF];
    int d = dim < 0 ? dim + a->ndim : dim;
    if (a->ndim == 0 || d < 0 || d >= a->ndim) {
        nnr_errorf(NNR_ERR_INVALID, "%s: dimension %d is out of range for a tensor of shape %s", name, dim + 1, nnr_shape_str(x, sizeof x, a->ndim, a->sizes));
        return NULL;
    }
    if (same_device(name, a, src)) return NULL;
    int ok;
    if (kind == NNR_OP_SCATTER_ADD) {
        ok = index->ndim == a->ndim && src->ndim == a->ndim;
        for (int k = 0; ok && k < a->ndim; k++) ok = index->sizes[k] == src->sizes[k] && (k == d || index->sizes[k] <= a->sizes[k]);
    } else {
        ok = index->ndim <= 1 && src->ndim == a->ndim && src->sizes[d] == nnr_tensor_numel(index);
        for (int k = 0; ok && k < a->ndim; k++) ok = k == d || src->sizes[k] == a->sizes[k];
    }
    if (!ok) {
        char z[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "%s: index %s and source %s do not fit a tensor of shape %s along dimension %d", name,
                   nnr_shape_str(y, sizeof y, index->ndim, index->sizes), nnr_shape_str(z, sizeof z, src->ndim, src->sizes),
                   nnr_shape_str(x, sizeof x, a->ndim, a->sizes), d + 1);
        return NULL;
    }
    nnr_tensor *idx = index_as_i64(name, a, index);
    nnr_tensor *s = idx ? as_dtype(src, a->dtype) : NULL;
    nnr_tensor *r = s ? nnr_tensor_alloc(a->dtype, a->ndim, a->sizes, a->device) : NULL;
    if (r && copy_same_device(r, a)) { nnr_tensor_release(r); r = NULL; }
    if (r) {
        nnr_tensor_desc di, ds, dout;
        nnr_tensor_desc_of(idx, &di);
        if (di.ndim == 0) { di.ndim = 1; di.sizes[0] = 1; di.strides[0] = 1; }
        nnr_tensor_desc_of(s, &ds);
        nnr_tensor_desc_of(r, &dout);
        nnr_op_params p = {.struct_size = sizeof p, .i = {d}};
        const nnr_tensor_desc *in[2] = {&di, &ds};
        if (run1(name, kind, a->device, 2, in, &dout, &p)) { nnr_tensor_release(r); r = NULL; }
    }
    const nnr_tensor *used[2] = {a, s};
    if (r && nnr_should_record(2, used))
        RECORD(r, nnr_record_index(kind == NNR_OP_SCATTER_ADD ? 2 : 3, a, d, idx, s, r));
    nnr_tensor_release(idx);
    nnr_tensor_release(s);
    return r;
}

nnr_tensor *nnr_scatter_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src)
{
    return accumulate_at(NNR_OP_SCATTER_ADD, a, dim, index, src);
}

nnr_tensor *nnr_index_add(const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src)
{
    return accumulate_at(NNR_OP_INDEX_ADD, a, dim, index, src);
}
