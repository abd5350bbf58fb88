/* Private to libnnr: the autograd engine's nodes, for the ops that record them (core/ops/). */
#ifndef NNR_AUTOGRAD_INTERNAL_H
#define NNR_AUTOGRAD_INTERNAL_H

#include "nnr/autograd.h"
#include "tensor/internal.h"

#pragma GCC visibility push(hidden)

enum { NNR_NODE_MAX_SAVED = 10 };     /* a recurrent layer's node keeps 10 */
typedef struct nnr_node nnr_node;
/* computes the gradients of the node's inputs from the gradient of its output; grads[k] may stay
 * NULL for an input that gets none. Recording is off while it runs, unless the backward pass was
 * asked to create a graph (then only nodes marked double_diff run: their backward is made of
 * recorded ops). */
typedef int (*nnr_backward_fn)(nnr_node *node, const nnr_tensor *grad, nnr_tensor **grads);

struct nnr_node {
    atomic_int refcount;
    const char *name;                /* "MulBackward" */
    nnr_backward_fn backward;        /* NULL for AccumulateGrad */
    unsigned visit;                  /* pass marker of the current backward */
    int n_saved;
    nnr_tensor *saved[NNR_NODE_MAX_SAVED];
    unsigned saved_version[NNR_NODE_MAX_SAVED];
    unsigned saved_output;           /* bit k: saved[k] is the node's own output (a detached alias) */
    double f[4];                     /* the op's own numbers: scalars, bounds */
    int64_t i[NNR_MAX_DIMS];
    int released;                    /* saved tensors were freed after a backward */
    int double_diff;                 /* its backward is built from recorded ops: create_graph may run it */
    int n_outputs;                   /* 1, or more for a host-language Function */
    char *owned_name;                /* name, when it was made at run time (freed with the node) */
    nnr_tensor *leaf;                /* AccumulateGrad: the leaf (weak; cleared when it dies) */
    nnr_tensor *retained;            /* retain_grad: the non-leaf output (weak) */
    int n_hooks, cap_hooks;          /* gradient hooks of the host: (id, output) pairs */
    int64_t *hooks;
    /* scratch of one backward pass */
    int deps, needed;
    nnr_tensor *pending;             /* the gradient of output 0, summed */
    nnr_tensor **pending_more;       /* outputs 1.. of a node with several */
    nnr_tensor *live[NNR_NODE_MAX_SAVED];   /* create_graph: saved outputs re-linked to this node */
    int n_inputs;
    struct nnr_node_input {
        nnr_node *node;              /* where this input's gradient goes; NULL: it needs none */
        int output_nr;               /* which output of that node the input is */
        int ndim, dtype, device;
        int64_t sizes[NNR_MAX_DIMS];
    } in[];
};

bool nnr_grad_mode(void);
/* true when recording is on and any input requires grad */
bool nnr_should_record(int n, const nnr_tensor *const *inputs);
/* a node for an op over inputs (edges and input shapes filled in), or NULL with the error set */
nnr_node *nnr_node_new(const char *name, nnr_backward_fn backward, int n, const nnr_tensor *const *inputs);
/* What a backward pass that creates a graph needs from the ops part, which depends on the engine
 * and not the other way: recorded sum, cast and clone. The ops part fills it in when it loads. */
typedef struct nnr_graph_ops {
    nnr_tensor *(*add)(const nnr_tensor *a, const nnr_tensor *b);
    nnr_tensor *(*to)(const nnr_tensor *t, int dtype, int device);
    nnr_tensor *(*clone)(const nnr_tensor *t);
} nnr_graph_ops;
extern nnr_graph_ops nnr_autograd_graph_ops;

/* the thread's autograd settings (engine.c) */
typedef struct nnr_autograd_thread {
    int grad_disabled;               /* recording off (no_grad, and backward passes without create_graph) */
    int creating_graph;              /* a backward pass with create_graph is running */
    int in_backward;                 /* a backward pass is running */
    nnr_node *running_node;          /* the node whose backward runs */
} nnr_autograd_thread;
extern _Thread_local nnr_autograd_thread nnr_ag;

/* true while a backward pass records its own graph (create_graph) */
bool nnr_creating_graph(void);
/* what a tensor that has autograd slots runs when it dies (engine.c) */
void nnr_autograd_release_slots(nnr_tensor *t);
/* a leaf's AccumulateGrad node, made on first use (engine.c) */
nnr_node *nnr_node_accumulator(nnr_tensor *leaf);
/* v becomes output k of node (engine.c) */
void nnr_node_link(nnr_tensor *v, nnr_node *node, int k);
/* the error of a node whose saved tensors were freed by an earlier pass (engine.c) */
int nnr_node_second_backward_error(const nnr_node *node);
/* functions.c: host Functions' nodes, the ids of dead ones, hooks on output k of a node (each may
 * replace the owned gradient *g) */
bool nnr_node_is_function(const nnr_node *n);
void nnr_autograd_note_dead(int64_t id);
int nnr_node_run_hooks(nnr_node *n, int k, nnr_tensor **g);
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
