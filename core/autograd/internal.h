/* Private to libnnr: the autograd engine's nodes, for the ops that record them (core/ops/). */
#ifndef NNR_AUTOGRAD_INTERNAL_H
#define NNR_AUTOGRAD_INTERNAL_H

#include "nnr/autograd.h"
#include "tensor/internal.h"

#pragma GCC visibility push(hidden)

enum { NNR_NODE_MAX_SAVED = 4 };
typedef struct nnr_node nnr_node;
/* computes the gradients of the node's inputs from the gradient of its output; grads[k] may stay
 * NULL for an input that gets none. Recording is off while it runs. */
typedef int (*nnr_backward_fn)(nnr_node *node, const nnr_tensor *grad, nnr_tensor **grads);

struct nnr_node {
    atomic_int refcount;
    const char *name;                /* "MulBackward" */
    nnr_backward_fn backward;        /* NULL for AccumulateGrad */
    unsigned visit;                  /* pass marker of the current backward */
    int n_saved;
    nnr_tensor *saved[NNR_NODE_MAX_SAVED];
    unsigned saved_version[NNR_NODE_MAX_SAVED];
    double f[4];                     /* the op's own numbers: scalars, bounds */
    int64_t i[NNR_MAX_DIMS];
    int released;                    /* saved tensors were freed after a backward */
    nnr_tensor *leaf;                /* AccumulateGrad: the leaf (weak; cleared when it dies) */
    nnr_tensor *retained;            /* retain_grad: the non-leaf output (weak) */
    /* scratch of one backward pass */
    int deps;
    nnr_tensor *pending;
    int n_inputs;
    struct nnr_node_input {
        nnr_node *node;              /* where this input's gradient goes; NULL: it needs none */
        int ndim, dtype, device;
        int64_t sizes[NNR_MAX_DIMS];
    } in[];
};

bool nnr_grad_mode(void);
/* true when recording is on and any input requires grad */
bool nnr_should_record(int n, const nnr_tensor *const *inputs);
/* a node for an op over inputs (edges and input shapes filled in), or NULL with the error set */
nnr_node *nnr_node_new(const char *name, nnr_backward_fn backward, int n, const nnr_tensor *const *inputs);
/* keeps t for the backward (its version is checked when read back) */
int nnr_node_save(nnr_node *node, const nnr_tensor *t);
/* keeps the node's own output: a detached alias, so that no cycle holds it */
int nnr_node_save_output(nnr_node *node, const nnr_tensor *out);
/* t gets node as grad_fn (takes the caller's reference to node) */
void nnr_node_attach(nnr_tensor *t, nnr_node *node);
/* attaches node to out, or releases it and returns the error when st failed or node is NULL */
int nnr_node_finish(nnr_tensor *out, nnr_node *node, int st);
void nnr_node_release(nnr_node *node);
/* the saved tensor k, or NULL with an error if it was freed or modified in place */
const nnr_tensor *nnr_node_saved(nnr_node *node, int k);
/* in-place op on t: check it may be modified, bump its version */
int nnr_autograd_check_inplace(const char *op, nnr_tensor *t);

#pragma GCC visibility pop
#endif
