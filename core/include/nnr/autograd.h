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
/* the same for n outputs at once (grads may be NULL, or hold NULL entries for one-element outputs);
 * create_graph records the backward itself, so that the gradients can be differentiated again
 * (PyTorch's default retain_graph = create_graph is the caller's to apply) */
int nnr_backward_multi(int n, nnr_tensor *const *roots, nnr_tensor *const *grads, int retain_graph, int create_graph);
/* autograd.grad: the gradients of the outputs (weighted by grad_outputs, as in backward) with respect
 * to the inputs, as new references in grads; no .grad is touched. An input the outputs do not depend
 * on is an error unless allow_unused (then its entry is NULL). */
int nnr_autograd_grad(int n_out, nnr_tensor *const *outputs, nnr_tensor *const *grad_outputs, int n_in,
                      nnr_tensor *const *inputs, int retain_graph, int create_graph, int allow_unused, nnr_tensor **grads);
/* the version counter of t's storage (bumped by every in-place write) */
unsigned nnr_tensor_version(const nnr_tensor *t);
/* before writing into t outside the ops (nnr.kernel's out=): autograd's in-place rules (a leaf or a
 * view that requires grad is refused while recording), and the version bump that makes a node that
 * saved t refuse its backward */
int nnr_tensor_mark_written(nnr_tensor *t, const char *op);

/* The host language's part (Functions with a backward written in it, gradient hooks). The engine
 * calls the callback set on the running thread with kind NNR_AUTOGRAD_FUNCTION (id: the Function's;
 * in: the gradients of its n outputs, NULL where none arrived; out: the gradients of its inputs, new
 * references or NULL) or NNR_AUTOGRAD_HOOK (id: the hook's; in: the gradient; out: a replacement or
 * NULL). It returns a status, having set the error message on failure. Ids are the host's: the high
 * 32 bits an owner number from nnr_autograd_new_owner(), one per host state. */
enum { NNR_AUTOGRAD_FUNCTION = 1, NNR_AUTOGRAD_HOOK = 2 };
typedef int (*nnr_autograd_callback)(int kind, int64_t id, int n_in, nnr_tensor *const *in, int n_out, nnr_tensor **out);
void nnr_autograd_set_callback(nnr_autograd_callback cb);
int32_t nnr_autograd_new_owner(void);
/* makes the outputs (those marked differentiable) the results of a host Function named name over
 * the inputs: its backward is the callback with this id */
int nnr_function_node(const char *name, int64_t id, int n_in, nnr_tensor *const *inputs, int n_out,
                      nnr_tensor *const *outputs, const unsigned char *differentiable);
/* inside the backward of host Function id: t, an alias of its output k kept for the backward, as a
 * new tensor linked to the Function's node when the pass creates a graph (else just a view) */
nnr_tensor *nnr_function_saved_output(const nnr_tensor *t, int64_t id, int k);
/* hook id runs on t's gradient during backward (t must require grad); remove: 1 if it was there */
int nnr_tensor_register_hook(nnr_tensor *t, int64_t id);
int nnr_tensor_remove_hook(nnr_tensor *t, int64_t id);
/* ids of owner's Functions and hooks whose graph nodes died or were freed by a backward, up to cap,
 * into buf: the host drops what it kept for them; returns the count */
int nnr_autograd_dead_ids(int32_t owner, int64_t *buf, int cap);
/* NNR_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* NNR_AUTOGRAD_H */
