/* Random fills from the one generator (base/random.c): uniform, normal, integers. A fill reserves
 * a range of the generator's counter, so every backend gives the same numbers for a seed. */
#include <math.h>
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

