/* Mixed precision (nnr.autocast): the dtype f32 matmuls, linears and convolutions run in on this
 * thread (-1 off). The casts are recorded, so gradients reach the f32 master weights. */
#include "ops/internal.h"

static _Thread_local int autocast_dtype = -1;

int nnr_get_autocast(void) { return autocast_dtype; }

int nnr_set_autocast(int dtype)
{
    if (dtype != -1 && dtype != NNR_F16 && dtype != NNR_BF16)
        return nnr_errorf(NNR_ERR_INVALID, "autocast: dtype %s, expected f16 or bf16", nnr_dtype_name(dtype)), -2;
    int previous = autocast_dtype;
    autocast_dtype = dtype;
    return previous;
}

int nnr_autocast_operands(int n, const nnr_tensor *const *in, nnr_tensor **out)
{
    int ac = autocast_dtype;
    if (ac < 0) return 0;
    int any = 0;
    for (int k = 0; k < n; k++) {
        if (in[k] && in[k]->dtype != NNR_F32 && in[k]->dtype != ac) return 0;    /* f64 and others stay as they are */
        any |= in[k] && in[k]->dtype == NNR_F32;
    }
    if (!any) return 0;
    for (int k = 0; k < n; k++) {
        out[k] = in[k] ? nnr_to(in[k], ac, in[k]->device) : NULL;
        if (in[k] && !out[k]) { nnr_release_all(k, out); return -1; }
    }
    return 1;
}
