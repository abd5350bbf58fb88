/* Recording of differentiable ops (derivatives.c). Each record_* is called
 * by an op after computing `out` when nnr_should_record() says so; it makes
 * the node, saves what the backward needs and attaches it to out. */
#ifndef NNR_DERIVATIVES_H
#define NNR_DERIVATIVES_H

#include "internal.h"

#pragma GCC visibility push(hidden)

enum nnr_view_kind {
    NNR_VIEW_RESHAPE = 0,    /* view, reshape, squeeze, unsqueeze, flatten */
    NNR_VIEW_PERMUTE = 1,    /* params: the permutation */
    NNR_VIEW_TRANSPOSE = 2,  /* params: dim0, dim1 */
    NNR_VIEW_NARROW = 3,     /* params: dim, start, length */
    NNR_VIEW_SELECT = 4,     /* params: dim, index */
    NNR_VIEW_EXPAND = 5,
    NNR_VIEW_IDENTITY = 6,   /* clone, contiguous */
    NNR_VIEW_CAST = 7        /* to(dtype, device) */
};

int nnr_record_unary(int op, const nnr_tensor *x, nnr_tensor *out);
int nnr_record_binary(int op, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out);
int nnr_record_binary_scalar(int op, const nnr_tensor *x, double s, int scalar_first, nnr_tensor *out);
/* a or b may be NULL (a scalar there) */
int nnr_record_where(const nnr_tensor *cond, const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out);
int nnr_record_clamp(const nnr_tensor *x, double lo, double hi, int flags, nnr_tensor *out);
/* dim_mask: bit d set for each reduced dim of x; count: elements reduced per output */
int nnr_record_reduce(int op, const nnr_tensor *x, unsigned dim_mask, int64_t count, int64_t correction, nnr_tensor *out);
int nnr_record_softmax(const nnr_tensor *x, int dim, int log, nnr_tensor *out);
int nnr_record_matmul(const nnr_tensor *a, const nnr_tensor *b, nnr_tensor *out);
int nnr_record_view(int kind, const nnr_tensor *base, nnr_tensor *out, const int64_t *params, int nparams);
int nnr_record_cat(int n, nnr_tensor *const *ts, int dim, nnr_tensor *out);
/* kind 0 gather, 1 index_select, 2 scatter_add, 3 index_add (src only for 2 and 3) */
int nnr_record_index(int kind, const nnr_tensor *a, int dim, const nnr_tensor *index, const nnr_tensor *src, nnr_tensor *out);
/* inputs: x, weight, bias (NULL when absent) as the user gave them (the graph's edges);
 * xc, wc: the contiguous copies the kernel used (saved) */
int nnr_record_conv2d(const nnr_tensor *const *inputs, const nnr_tensor *xc, const nnr_tensor *wc, const int64_t *geom, int relu,
                      nnr_tensor *out);
/* op: NNR_OP_MAXPOOL2D (indices given), AVGPOOL2D or ADAPTIVE_AVGPOOL2D; params as the kernel's */
int nnr_record_pool(int op, const nnr_tensor *x, const nnr_tensor *xc, const nnr_tensor *indices, const int64_t *params, nnr_tensor *out);
/* nn.c: the gradients, for the backward functions */
int nnr_conv2d_grads(const nnr_tensor *x, const nnr_tensor *w, const nnr_tensor *gy, const int64_t *geom, const nnr_tensor *relu_out,
                     nnr_tensor **gx, nnr_tensor **gw, nnr_tensor **gb);
nnr_tensor *nnr_pool_grad(int op, const nnr_tensor *x, const nnr_tensor *indices, const nnr_tensor *gy, const int64_t *params);
/* inputs: x, weight, bias (NULL when absent) */
int nnr_record_linear(const nnr_tensor *const *inputs, nnr_tensor *out);
int nnr_record_linear_relu(const nnr_tensor *const *inputs, nnr_tensor *out);
/* x, weight, bias as given; xc: contiguous x; w: weight in x's dtype (or NULL) */
int nnr_record_batch_norm(const nnr_tensor *const *inputs, const nnr_tensor *xc, const nnr_tensor *w, const nnr_tensor *mean,
                          const nnr_tensor *invstd, int training, nnr_tensor *out);
int nnr_batch_norm_grads(const nnr_tensor *xc, const nnr_tensor *w, const nnr_tensor *mean, const nnr_tensor *invstd, int training,
                         const nnr_tensor *gy, nnr_tensor **gx, nnr_tensor **gw, nnr_tensor **gb);
/* dst was overwritten (copy_ from src, or fill_ with src NULL): its history restarts here */
int nnr_record_overwrite(const char *name, nnr_tensor *dst, const nnr_tensor *src);

#pragma GCC visibility pop
#endif
