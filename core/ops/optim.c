/* The fused optimizer steps (SGD, Adam/AdamW, RMSprop with PyTorch's rules): one backend call per
 * parameter updates it and its state in place. Checks name the op and the tensor at fault. */
#include <math.h>
#include <string.h>
#include "ops/internal.h"

static int check_state(const char *op, const nnr_tensor *param, const nnr_tensor *t, const char *what)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (!t) return NNR_OK;
    if (t->ndim != param->ndim || memcmp(t->sizes, param->sizes, sizeof(int64_t) * (size_t)t->ndim) || t->dtype != param->dtype ||
        t->device != param->device || !nnr_tensor_is_contiguous(t))
        return nnr_errorf(NNR_ERR_INVALID, "%s: %s is %s %s on %s, expected a contiguous %s %s on %s like the parameter", op, what,
                          nnr_dtype_name(t->dtype), nnr_shape_str(a, sizeof a, t->ndim, t->sizes), nnr_device_name(t->device),
                          nnr_dtype_name(param->dtype), nnr_shape_str(b, sizeof b, param->ndim, param->sizes), nnr_device_name(param->device));
    return NNR_OK;
}

static int step(const char *op, int opid, nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *s1, nnr_tensor *s2, const nnr_op_params *p)
{
    if (!nnr_dtype_is_float(param->dtype))
        return nnr_errorf(NNR_ERR_UNSUPPORTED, "%s: dtype %s is not supported (expected a floating-point parameter)", op, nnr_dtype_name(param->dtype));
    if (!nnr_tensor_is_contiguous(param)) return nnr_errorf(NNR_ERR_INVALID, "%s: the parameter must be contiguous", op);
    if (check_state(op, param, s1, "optimizer state") || check_state(op, param, s2, "optimizer state")) return nnr_last_status();
    nnr_tensor *g = nnr_to(grad, param->dtype, param->device);
    nnr_tensor *gc = g ? nnr_contiguous(g) : NULL;
    nnr_tensor_release(g);
    if (!gc) return nnr_last_status();
    if (gc->ndim != param->ndim || memcmp(gc->sizes, param->sizes, sizeof(int64_t) * (size_t)param->ndim)) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
        nnr_tensor_release(gc);
        return nnr_errorf(NNR_ERR_INVALID, "%s: gradient of shape %s for a parameter of shape %s", op,
                          nnr_shape_str(a, sizeof a, grad->ndim, grad->sizes), nnr_shape_str(b, sizeof b, param->ndim, param->sizes));
    }
    nnr_tensor *outs[3] = {param, s1, s2};
    int nout = 1 + (s1 != NULL) + (s2 != NULL);
    if (!s1 && s2) { outs[1] = s2; }
    for (int k = 0; k < nout; k++) atomic_fetch_add(&outs[k]->storage->version, 1);
    int st = nnr_run_tensors(op, opid, param->device, 1, &gc, nout, outs, p);
    nnr_tensor_release(gc);
    return st;
}

int nnr_sgd_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *momentum_buffer, double lr, double momentum,
                 double dampening, double weight_decay, int nesterov, int buffer_is_new)
{
    nnr_op_params p = {.struct_size = sizeof p, .f = {lr, momentum, dampening, weight_decay}, .i = {nesterov, buffer_is_new}};
    return step("sgd", NNR_OP_SGD_STEP, param, grad, momentum != 0 ? momentum_buffer : NULL, NULL, &p);
}

int nnr_adam_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *exp_avg, nnr_tensor *exp_avg_sq, double lr, double beta1,
                  double beta2, double eps, double weight_decay, int64_t step_count, int decoupled)
{
    if (!exp_avg || !exp_avg_sq) return nnr_errorf(NNR_ERR_INVALID, "adam: both moment buffers are needed");
    if (step_count < 1) return nnr_errorf(NNR_ERR_INVALID, "adam: step count must be >= 1");
    double bc1 = 1 - pow(beta1, (double)step_count), bc2 = 1 - pow(beta2, (double)step_count);
    nnr_op_params p = {.struct_size = sizeof p, .f = {lr, beta1, beta2, eps, weight_decay, bc1, bc2}, .i = {decoupled}};
    return step(decoupled ? "adamw" : "adam", NNR_OP_ADAM_STEP, param, grad, exp_avg, exp_avg_sq, &p);
}

int nnr_rmsprop_step(nnr_tensor *param, const nnr_tensor *grad, nnr_tensor *square_avg, nnr_tensor *momentum_buffer, double lr,
                     double alpha, double eps, double weight_decay, double momentum)
{
    if (!square_avg) return nnr_errorf(NNR_ERR_INVALID, "rmsprop: the square average buffer is needed");
    nnr_op_params p = {.struct_size = sizeof p, .f = {lr, alpha, eps, weight_decay, momentum}};
    return step("rmsprop", NNR_OP_RMSPROP_STEP, param, grad, square_avg, momentum != 0 ? momentum_buffer : NULL, &p);
}

