/* Random fills from the one generator (base/random.c): uniform, normal, integers; and sampling:
 * bernoulli, multinomial, randperm. A call reserves a range of the generator's counter, so every
 * backend gives the same numbers for a seed. Nothing here is differentiable. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ops/internal.h"

int nnr_random_(nnr_tensor *t, int kind, double a, double b)
{
    if (kind != NNR_OP_RAND_UNIFORM && kind != NNR_OP_RAND_NORMAL && kind != NNR_OP_RAND_INT)
        return nnr_errorf(NNR_ERR_INVALID, "random: unknown distribution %d", kind);
    if (!isfinite(a) || !isfinite(b))
        return nnr_errorf(NNR_ERR_INVALID, "%s: the parameters must be finite numbers, got %g and %g", nnr_op_name(kind), a, b);
    if (kind == NNR_OP_RAND_INT && !(b > a))
        return nnr_errorf(NNR_ERR_INVALID, "randint: empty range [%g, %g)", a, b);
    if (kind == NNR_OP_RAND_INT && (!nnr_scalar_is_integral(a) || !nnr_scalar_is_integral(b)))
        return nnr_errorf(NNR_ERR_INVALID, "randint: the bounds must be integers, got [%.17g, %.17g)", a, b);
    if (kind == NNR_OP_RAND_INT && nnr_dtype_is_float(t->dtype) == 0 && t->dtype != NNR_BOOL &&
        (nnr_check_value_fits("randint", t->dtype, a) || nnr_check_value_fits("randint", t->dtype, b - 1)))
        return nnr_last_status();
    if (kind == NNR_OP_RAND_UNIFORM && !(b >= a))
        return nnr_errorf(NNR_ERR_INVALID, "uniform: the range [%g, %g) is empty (from > to)", a, b);
    if (kind == NNR_OP_RAND_NORMAL && !(b >= 0))
        return nnr_errorf(NNR_ERR_INVALID, "normal: std must be >= 0, got %g", b);
    if (kind != NNR_OP_RAND_INT && !nnr_dtype_is_float(t->dtype))
        return nnr_errorf(NNR_ERR_INVALID, "%s: dtype %s is not a floating-point type", nnr_op_name(kind), nnr_dtype_name(t->dtype));
    if (nnr_autograd_check_inplace(nnr_op_name(kind), t) || nnr_check_written(nnr_op_name(kind), "", t)) return nnr_last_status();
    if (t->requires_grad && nnr_grad_mode() && nnr_record_overwrite("FillBackward", t, NULL)) return nnr_last_status();
    /* the counter advances by the element count, rounded to Philox's 4-wide blocks */
    uint64_t seed, offset, n = (uint64_t)nnr_tensor_numel(t);
    nnr_rng_take((n + 3) / 4 * 4, &seed, &offset);
    nnr_tensor *c = nnr_tensor_is_contiguous(t) ? NULL : nnr_tensor_alloc(t->dtype, t->ndim, t->sizes, t->device);
    nnr_tensor_desc d;
    nnr_tensor_desc_of(c ? c : t, &d);
    nnr_op_params p = {.struct_size = sizeof p, .f = {a, b}, .i = {(int64_t)seed, (int64_t)offset}};
    int st = nnr_run_descs(nnr_op_name(kind), kind, t->device, 0, NULL, &d, &p);
    if (c) {
        if (st == NNR_OK) st = nnr_tensor_copy_into(t, c);
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


/* ---------------- sampling: bernoulli, multinomial, randperm ---------------- */

/* the words a call reads, rounded to Philox's 4-wide blocks, taken from the generator */
static void take_words(uint64_t n, nnr_op_params *p)
{
    uint64_t seed, offset;
    nnr_rng_take((n + 3) / 4 * 4, &seed, &offset);
    p->i[0] = (int64_t)seed;
    p->i[1] = (int64_t)offset;
}

/* p's extremes, for the range checks (NaN comes out as NaN) */
static int value_range(const nnr_tensor *p, double *lo, double *hi)
{
    int prev = nnr_set_grad_enabled(0);
    nnr_tensor *mn = nnr_reduce(NNR_OP_MIN, p, 0, NULL, 0, 0), *mx = mn ? nnr_reduce(NNR_OP_MAX, p, 0, NULL, 0, 0) : NULL;
    int st = mx ? nnr_item(mn, lo) : nnr_last_status();
    if (!st) st = nnr_item(mx, hi);
    nnr_tensor_release(mn);
    nnr_tensor_release(mx);
    nnr_set_grad_enabled(prev);
    return st;
}

int nnr_bernoulli_(nnr_tensor *t, const nnr_tensor *p, double scalar)
{
    const char *name = "bernoulli_";
    nnr_tensor *pc = NULL;
    if (p) {
        if (!nnr_dtype_is_float(p->dtype))
            return nnr_errorf(NNR_ERR_INVALID, "%s: p must be a floating-point tensor, got %s", name, nnr_dtype_name(p->dtype));
        if (nnr_same_device(name, t, p)) return nnr_last_status();
        int nd;
        int64_t sizes[NNR_MAX_DIMS];
        if (nnr_broadcast_shapes(name, t->ndim, t->sizes, p->ndim, p->sizes, &nd, sizes)) return nnr_last_status();
        if (nd != t->ndim || memcmp(sizes, t->sizes, sizeof(int64_t) * (size_t)nd)) {
            char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
            return nnr_errorf(NNR_ERR_INVALID, "%s: p of shape %s does not broadcast to the tensor's shape %s", name,
                              nnr_shape_str(a, sizeof a, p->ndim, p->sizes), nnr_shape_str(b, sizeof b, t->ndim, t->sizes));
        }
        double lo = 0, hi = 0;
        if (nnr_tensor_numel(p) > 0) {
            if (value_range(p, &lo, &hi)) return nnr_last_status();
            if (!(lo >= 0 && hi <= 1))
                return nnr_errorf(NNR_ERR_INVALID, "%s: every probability must lie in [0, 1], got values in [%g, %g]", name, lo, hi);
        }
        int prev = nnr_set_grad_enabled(0);
        nnr_tensor *e = nnr_expand(p, t->ndim, t->sizes);
        pc = e ? nnr_contiguous(e) : NULL;
        nnr_tensor_release(e);
        nnr_set_grad_enabled(prev);
        if (!pc) return nnr_last_status();
    } else if (!(scalar >= 0 && scalar <= 1)) {
        return nnr_errorf(NNR_ERR_INVALID, "%s: p must lie in [0, 1], got %g", name, scalar);
    }
    if (nnr_autograd_check_inplace(name, t) || nnr_check_written(name, "", t)) { nnr_tensor_release(pc); return nnr_last_status(); }
    if (t->requires_grad && nnr_grad_mode() && nnr_record_overwrite("FillBackward", t, NULL)) { nnr_tensor_release(pc); return nnr_last_status(); }
    nnr_op_params prm = {.struct_size = sizeof prm, .f = {scalar}};
    take_words((uint64_t)nnr_tensor_numel(t), &prm);
    nnr_tensor *c = nnr_tensor_is_contiguous(t) ? NULL : nnr_tensor_alloc(t->dtype, t->ndim, t->sizes, t->device);
    nnr_tensor_desc d, dp;
    nnr_tensor_desc_of(c ? c : t, &d);
    if (pc) nnr_tensor_desc_of(pc, &dp);
    const nnr_tensor_desc *in[1] = {&dp};
    int st = nnr_run_descs("bernoulli", NNR_OP_BERNOULLI, t->device, pc ? 1 : 0, in, &d, &prm);
    if (c) {
        if (st == NNR_OK) st = nnr_tensor_copy_into(t, c);
        nnr_tensor_release(c);
    }
    nnr_tensor_release(pc);
    return st;
}

nnr_tensor *nnr_bernoulli(const nnr_tensor *p)
{
    if (!nnr_dtype_is_float(p->dtype)) {
        nnr_errorf(NNR_ERR_INVALID, "bernoulli: p must be a floating-point tensor, got %s (convert with :float())", nnr_dtype_name(p->dtype));
        return NULL;
    }
    nnr_tensor *t = nnr_tensor_alloc(p->dtype, p->ndim, p->sizes, p->device);
    if (t && nnr_bernoulli_(t, p, 0)) { nnr_tensor_release(t); return NULL; }
    return t;
}

nnr_tensor *nnr_multinomial(const nnr_tensor *probs, int64_t n, int replacement)
{
    const char *name = "multinomial";
    char b[NNR_SHAPE_BUF];
    if (probs->ndim != 1 && probs->ndim != 2) {
        nnr_errorf(NNR_ERR_INVALID, "%s: probs must be 1-d or 2-d, got shape %s", name, nnr_shape_str(b, sizeof b, probs->ndim, probs->sizes));
        return NULL;
    }
    if (!nnr_dtype_is_float(probs->dtype)) {
        nnr_errorf(NNR_ERR_INVALID, "%s: probs must be floating point, got %s (convert with :float())", name, nnr_dtype_name(probs->dtype));
        return NULL;
    }
    int64_t R = probs->ndim == 2 ? probs->sizes[0] : 1, C = probs->sizes[probs->ndim - 1];
    if (C == 0) { nnr_errorf(NNR_ERR_INVALID, "%s: probs has no categories (shape %s)", name, nnr_shape_str(b, sizeof b, probs->ndim, probs->sizes)); return NULL; }
    if (n <= 0) { nnr_errorf(NNR_ERR_INVALID, "%s: the number of samples must be positive, got %lld", name, (long long)n); return NULL; }
    if (!replacement && n > C) {
        nnr_errorf(NNR_ERR_INVALID, "%s: cannot draw %lld samples without replacement from %lld categories (pass replacement = true)", name,
                   (long long)n, (long long)C);
        return NULL;
    }
    /* every row checked on the host: finite, non-negative, a positive sum, enough positive entries */
    int prev = nnr_set_grad_enabled(0);
    nnr_tensor *pc = nnr_to(probs, probs->dtype == NNR_F64 ? NNR_F64 : NNR_F32, probs->device);
    nnr_tensor *pcc = pc ? nnr_contiguous(pc) : NULL;
    nnr_tensor_release(pc);
    nnr_set_grad_enabled(prev);
    if (!pcc) return NULL;
    double *v = R * C > 0 ? malloc(sizeof(double) * (size_t)(R * C)) : NULL;
    if (!v && R * C > 0) { nnr_tensor_release(pcc); nnr_errorf(NNR_ERR_OOM, "%s: out of memory", name); return NULL; }
    int st = v ? nnr_to_doubles(pcc, v, R * C) : NNR_OK;
    for (int64_t r = 0; st == NNR_OK && r < R; r++) {
        double sum = 0;
        int64_t positive = 0;
        for (int64_t c = 0; c < C && st == NNR_OK; c++) {
            double x = v[r * C + c];
            if (!isfinite(x) || x < 0)
                st = nnr_errorf(NNR_ERR_INVALID, "%s: probs row %lld has the invalid entry %g at %lld (entries must be finite and >= 0)", name,
                                (long long)r + 1, x, (long long)c + 1);
            sum += x;
            positive += x > 0;
        }
        if (st == NNR_OK && !(sum > 0))
            st = nnr_errorf(NNR_ERR_INVALID, "%s: probs row %lld sums to 0 (at least one entry must be positive)", name, (long long)r + 1);
        if (st == NNR_OK && !replacement && positive < n)
            st = nnr_errorf(NNR_ERR_INVALID, "%s: probs row %lld has %lld positive entries, too few for %lld samples without replacement", name,
                            (long long)r + 1, (long long)positive, (long long)n);
    }
    free(v);
    int64_t osizes[2] = {R, n};
    nnr_tensor *out = st == NNR_OK ? nnr_tensor_alloc(NNR_I64, 2, osizes, probs->device) : NULL;
    if (out) {
        nnr_op_params prm = {.struct_size = sizeof prm, .i = {0, 0, replacement != 0}};
        int64_t W = ((replacement ? n : C) + 3) / 4 * 4;
        take_words((uint64_t)(R * W), &prm);
        nnr_tensor_desc dp, dout;
        nnr_tensor_desc_of(pcc, &dp);
        dp.ndim = 2; dp.sizes[0] = R; dp.sizes[1] = C; dp.strides[0] = C; dp.strides[1] = 1;
        nnr_tensor_desc_of(out, &dout);
        const nnr_tensor_desc *in[1] = {&dp};
        if (nnr_run_descs(name, NNR_OP_MULTINOMIAL, probs->device, 1, in, &dout, &prm)) { nnr_tensor_release(out); out = NULL; }
    }
    nnr_tensor_release(pcc);
    if (out && probs->ndim == 1) {
        nnr_tensor *r = nnr_reshape(out, 1, &n);
        nnr_tensor_release(out);
        out = r;
    }
    return out;
}

nnr_tensor *nnr_randperm(int64_t n, int device)
{
    if (n < 0) { nnr_errorf(NNR_ERR_INVALID, "randperm: n must be >= 0, got %lld", (long long)n); return NULL; }
    nnr_tensor *out = nnr_tensor_alloc(NNR_I64, 1, &n, device);
    if (out && n > 0) {
        nnr_op_params prm = {.struct_size = sizeof prm};
        take_words(2 * (uint64_t)n, &prm);
        nnr_tensor_desc d;
        nnr_tensor_desc_of(out, &d);
        if (nnr_run_descs("randperm", NNR_OP_RANDPERM, device, 0, NULL, &d, &prm)) { nnr_tensor_release(out); out = NULL; }
    }
    return out;
}
