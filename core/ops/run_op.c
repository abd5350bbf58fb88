/* Ops on preallocated outputs, called from Lua: the ops extension plugins add (plugins/quant) and
 * the conformance kit's calls of single backend ops. Every operand on one device; the outputs'
 * versions are bumped as for any in-place write. */
#include "ops/internal.h"

int nnr_run_op(const char *name, int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params)
{
    if (nin < 0 || nin > NNR_MAX_INPUTS || nout < 1 || nout > NNR_MAX_OUTPUTS)
        return nnr_errorf(NNR_ERR_INVALID, "%s: %d inputs and %d outputs (at most %d and 1..%d)", name, nin, nout, NNR_MAX_INPUTS, NNR_MAX_OUTPUTS);
    nnr_op_params p = {.struct_size = sizeof p};
    if (params) { p = *params; p.struct_size = sizeof p; }
    int device = out[0] ? out[0]->device : -1;
    for (int k = 0; k < nin; k++)
        if (!in[k] || in[k]->device != device) return nnr_errorf(NNR_ERR_DEVICE, "%s: input %d is missing or on another device", name, k + 1);
    for (int k = 0; k < nout; k++) {
        if (!out[k] || out[k]->device != device) return nnr_errorf(NNR_ERR_DEVICE, "%s: output %d is missing or on another device", name, k + 1);
        if (nnr_autograd_check_inplace(name, out[k])) return nnr_last_status();   /* also bumps its version */
    }
    return nnr_run_tensors(name, op, device, nin, in, nout, out, &p);
}


int nnr_op_supported(int op, int nin, nnr_tensor *const *in, int nout, nnr_tensor *const *out, const nnr_op_params *params)
{
    if (nin < 0 || nin > NNR_MAX_INPUTS || nout < 1 || nout > NNR_MAX_OUTPUTS || !out[0]) return 0;
    nnr_op_params p = {.struct_size = sizeof p};
    if (params) { p = *params; p.struct_size = sizeof p; }
    return nnr_backend_takes(out[0]->device, op, nin, in, nout, out, &p);
}
