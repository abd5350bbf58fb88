/* Private to libnnr: what the op families (one file each in core/ops/) share. Each family keeps
 * its front end (checks, result shape and dtype, dispatch), what it records, and its backward side
 * by side; a backward computes with ordinary ops while recording is off. */
#ifndef NNR_OPS_INTERNAL_H
#define NNR_OPS_INTERNAL_H

#include "nnr/ops.h"
#include "autograd/internal.h"

#pragma GCC visibility push(hidden)

/* ---- shapes, devices, dtypes (common.c) ---- */
int nnr_broadcast_shapes(const char *op, int na, const int64_t *a, int nb, const int64_t *b, int *nout, int64_t *out);
int nnr_same_device(const char *op, const nnr_tensor *a, const nnr_tensor *b);
/* t in dtype (new reference; t itself when it already has it) */
nnr_tensor *nnr_as_dtype(const nnr_tensor *t, int dtype);
/* contiguous copies in the given dtype, recording nothing (new references; NULL entries stay NULL) */
int nnr_prepare_operands(int n, const nnr_tensor *const *in, int dtype, nnr_tensor **out);
void nnr_release_all(int n, nnr_tensor **ts);
/* the dtype two tensor operands compute in (PyTorch's result_type: 0-d tensors join as numbers do) */
int nnr_promote_operands(const nnr_tensor *a, const nnr_tensor *b);
/* a Lua number joins a tensor's dtype unless it needs a wider category */
int nnr_promote_with_scalar(int dtype, double s);
int nnr_scalar_is_integral(double s);
/* one call with descriptors already made (broadcast views, permuted dims) */
int nnr_run_descs(const char *op, int opid, int device, int nin, const nnr_tensor_desc **in, const nnr_tensor_desc *out,
                  const nnr_op_params *p);
/* a new tensor of ins[0]'s shape and device and of dtype dt, written by one call of opid on the nin inputs
 * as they are (same shape, any strides); NULL with the error set */
nnr_tensor *nnr_run_new(const char *op, int opid, int dt, int nin, const nnr_tensor *const *ins, const nnr_op_params *p);
/* the device's plugin was built against ABI 1.minor or later: it knows the ops and forms that minor
 * added (LINEAR and CONV2D's relu came with 1.1; a 1.0 plugin might take them for something else) */
int nnr_backend_knows(int device, int minor);
/* output size of a window op (convolution, pooling) along one dim; 0 when the input is too small */
int64_t nnr_window_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode);

/* records into r with the call's status; on failure drops r */
#define NNR_RECORD(r, call) do { if ((r) && (call) != NNR_OK) { nnr_tensor_release(r); (r) = NULL; } } while (0)

/* ---- tensors an op writes (in-place, out=, copy_): PyTorch's overlap rules (common.c) ---- */
/* an error when out has an expanded (stride-0) dimension: one element would be written many times
 * (messages name op followed by suffix: "add" "_", so that no name is formatted on the hot path) */
int nnr_check_written(const char *op, const char *suffix, const nnr_tensor *out);
/* in, as an operand read by an op that writes out (new reference): in itself when their memory is
 * apart or laid out alike, a private copy when they share it in another order, NULL (an error) when
 * they partly overlap */
nnr_tensor *nnr_written_operand(const char *op, const char *suffix, const nnr_tensor *out, const nnr_tensor *in);

/* ---- in-place ops while recording (common.c): computed out of place, then a takes r's values and
 * history; releases r ---- */
int nnr_inplace_recorded(nnr_tensor *a, nnr_tensor *r);

/* ---- gradients (common.c) ---- */
/* g summed over the dims it was broadcast along, then shaped as sizes */
nnr_tensor *nnr_sum_to(const nnr_tensor *g, int ndim, const int64_t *sizes);
/* g summed to input k's shape; releases g */
nnr_tensor *nnr_grad_for_input(nnr_node *node, int k, nnr_tensor *g);
nnr_tensor *nnr_mul(const nnr_tensor *a, const nnr_tensor *b);
nnr_tensor *nnr_mul_scalar(const nnr_tensor *a, double s);
/* a * b, releasing a */
nnr_tensor *nnr_mul_into(nnr_tensor *a, const nnr_tensor *b);
/* keeps t for the backward; the node's own output (is_output) as a detached alias */
static inline int nnr_save(nnr_node *node, const nnr_tensor *t, int is_output)
{
    return is_output ? nnr_node_save_output(node, t) : nnr_node_save(node, t);
}

/* ---- autocast (autocast.c) ---- */
/* the operands of a matmul-like op (f32, or already in the autocast dtype) as recorded casts to the
 * autocast dtype: 1, or 0 when autocast is off or an operand has another dtype, -1 on error */
int nnr_autocast_operands(int n, const nnr_tensor *const *in, nnr_tensor **out);

/* ---- what one family asks of another ---- */
/* dst was overwritten (copy_ from src, or fill_ with src NULL): its history restarts here (copy.c) */
int nnr_record_overwrite(const char *name, nnr_tensor *dst, const nnr_tensor *src);

#pragma GCC visibility pop
#endif
