/* Autograd (core/autograd/; DESIGN.md decision 4): recording and the backward pass. */
#ifndef NNR_AUTOGRAD_H
#define NNR_AUTOGRAD_H

#include "nnr/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* NNR_CDEF_BEGIN */
/* recording on or off for this thread; returns the previous setting */
int nnr_set_grad_enabled(int on);
int nnr_is_grad_enabled(void);
int nnr_requires_grad(const nnr_tensor *t);
/* leaves only: floating-point tensors may require grad */
int nnr_requires_grad_(nnr_tensor *t, int flag);
int nnr_is_leaf(const nnr_tensor *t);
/* the accumulated gradient (new reference), or NULL when there is none */
nnr_tensor *nnr_grad(const nnr_tensor *t);
/* replaces .grad (g may be NULL) */
int nnr_set_grad(nnr_tensor *t, nnr_tensor *g);
int nnr_retain_grad(nnr_tensor *t);
/* "MulBackward", or NULL for a leaf */
const char *nnr_grad_fn_name(const nnr_tensor *t);
/* the same data, cut from the graph */
nnr_tensor *nnr_detach(const nnr_tensor *t);
/* gradients of t (grad NULL: t must have one element) into the leaves' .grad */
int nnr_backward(nnr_tensor *t, const nnr_tensor *grad, int retain_graph);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_AUTOGRAD_H */
