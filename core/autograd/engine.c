/* Reverse-mode autograd: a tape of nodes in C (DESIGN.md decision 4), the mechanism alone; each
 * op's derivative lives beside the op in core/ops/. This file: recording, nodes, saved tensors and a
 * tensor's autograd slots; backward.c walks the graph; functions.c is the host language's part
 * (Functions with a Lua backward, gradient hooks).
 *
 * An op whose input requires grad records a node: the backward function, an edge per input to the
 * node that made that input (or to the input's AccumulateGrad node, for leaves), the input shapes
 * and the tensors the derivative needs. Saved tensors carry the storage's version, so an in-place
 * write that would corrupt a saved value is an error, not a wrong gradient. */
#include <stdlib.h>
#include <string.h>
#include "autograd/internal.h"

_Thread_local nnr_autograd_thread nnr_ag;
nnr_graph_ops nnr_autograd_graph_ops;

bool nnr_grad_mode(void) { return !nnr_ag.grad_disabled; }
int nnr_is_grad_enabled(void) { return !nnr_ag.grad_disabled; }
bool nnr_creating_graph(void) { return nnr_ag.creating_graph; }

int nnr_set_grad_enabled(int on)
{
    int previous = !nnr_ag.grad_disabled;
    nnr_ag.grad_disabled = !on;
    return previous;
}

bool nnr_should_record(int n, const nnr_tensor *const *inputs)
{
    if (nnr_ag.grad_disabled) return false;
    for (int k = 0; k < n; k++)
        if (inputs[k] && inputs[k]->requires_grad) return true;
    return false;
}

/* ---------------- a tensor's autograd slots ---------------- */

/* what the tensor part calls when a tensor with autograd slots dies */
void nnr_autograd_release_slots(nnr_tensor *t)
{
    nnr_tensor_release(t->grad);
    t->grad = NULL;
    if (t->grad_fn) {
        if (t->grad_fn->retained == t) t->grad_fn->retained = NULL;
        nnr_node_release(t->grad_fn);
        t->grad_fn = NULL;
    }
    if (t->grad_acc) {
        t->grad_acc->leaf = NULL;
        nnr_node_release(t->grad_acc);
        t->grad_acc = NULL;
    }
}

static nnr_node *node_alloc(const char *name, nnr_backward_fn backward, int n)
{
    nnr_node *node = calloc(1, sizeof *node + (size_t)n * sizeof node->in[0]);
    if (!node) { nnr_errorf(NNR_ERR_OOM, "%s: out of memory for the autograd graph", name); return NULL; }
    atomic_init(&node->refcount, 1);
    node->name = name;
    node->backward = backward;
    node->n_inputs = n;
    node->n_outputs = 1;
    return node;
}

nnr_node *nnr_node_accumulator(nnr_tensor *leaf)
{
    if (!leaf->grad_acc) {
        leaf->grad_acc = node_alloc("AccumulateGrad", NULL, 0);
        if (leaf->grad_acc) leaf->grad_acc->leaf = leaf;
        leaf->autograd_release = nnr_autograd_release_slots;
    }
    return leaf->grad_acc;
}

nnr_node *nnr_node_new(const char *name, nnr_backward_fn backward, int n, const nnr_tensor *const *inputs)
{
    nnr_node *node = node_alloc(name, backward, n);
    if (!node) return NULL;
    for (int k = 0; k < n; k++) {
        const nnr_tensor *x = inputs[k];
        if (!x) continue;
        if (x->is_view && x->requires_grad && x->view_history != atomic_load(&x->storage->history)) {
            /* PyTorch re-bases such a view on its base's new history; here it is refused, never wrong */
            nnr_errorf(NNR_ERR_INVALID, "%s: an input is a view whose base was changed in place (with autograd) after the view "
                       "was made, so its gradient would follow the old values; make the view after the in-place op, or "
                       "clone() the base first", name);
            nnr_node_release(node);
            return NULL;
        }
        node->in[k].ndim = x->ndim;
        node->in[k].dtype = x->dtype;
        node->in[k].device = x->device;
        memcpy(node->in[k].sizes, x->sizes, sizeof x->sizes);
        if (!x->requires_grad) continue;
        nnr_node *edge = x->grad_fn ? x->grad_fn : nnr_node_accumulator((nnr_tensor *)x);
        if (!edge) { nnr_node_release(node); return NULL; }
        atomic_fetch_add(&edge->refcount, 1);
        node->in[k].node = edge;
        node->in[k].output_nr = x->grad_fn ? x->output_nr : 0;
    }
    return node;
}

int nnr_node_save(nnr_node *node, const nnr_tensor *t)
{
    if (node->n_saved >= NNR_NODE_MAX_SAVED) return nnr_errorf(NNR_ERR_INTERNAL, "%s: too many saved tensors", node->name);
    nnr_tensor_retain((nnr_tensor *)t);
    node->saved_version[node->n_saved] = atomic_load(&t->storage->version);
    node->saved[node->n_saved++] = (nnr_tensor *)t;
    return NNR_OK;
}

int nnr_node_save_output(nnr_node *node, const nnr_tensor *out)
{
    nnr_tensor *alias = nnr_tensor_new_view(out, out->ndim, out->sizes, out->strides, out->offset);
    if (!alias) return nnr_last_status();
    if (node->n_saved < NNR_NODE_MAX_SAVED) node->saved_output |= 1u << node->n_saved;
    int st = nnr_node_save(node, alias);
    nnr_tensor_release(alias);
    return st;
}

void nnr_node_attach(nnr_tensor *t, nnr_node *node)
{
    if (t->grad_fn && t->grad_fn->retained == t) t->grad_fn->retained = NULL;    /* the old node must not point at t */
    if (t->grad_fn) nnr_node_release(t->grad_fn);
    t->grad_fn = node;
    t->output_nr = 0;
    t->requires_grad = 1;
    t->autograd_release = nnr_autograd_release_slots;
}

void nnr_node_link(nnr_tensor *v, nnr_node *node, int k)
{
    atomic_fetch_add(&node->refcount, 1);
    v->grad_fn = node;
    v->output_nr = (int8_t)k;
    v->requires_grad = 1;
    v->autograd_release = nnr_autograd_release_slots;
}

int nnr_node_finish(nnr_tensor *out, nnr_node *node, int st)
{
    if (!node) return nnr_last_status();
    if (st) { nnr_node_release(node); return st; }
    nnr_node_attach(out, node);
    return NNR_OK;
}

/* releases iteratively: a long chain of nodes must not recurse */
void nnr_node_release(nnr_node *node)
{
    nnr_node *stack_small[64], **stack = stack_small;
    size_t cap = 64, top = 0;
    if (node) stack[top++] = node;
    while (top) {
        nnr_node *n = stack[--top];
        if (atomic_fetch_sub(&n->refcount, 1) != 1) continue;
        for (int k = 0; k < n->n_saved; k++) nnr_tensor_release(n->saved[k]);
        for (int k = 0; k < NNR_NODE_MAX_SAVED; k++) nnr_tensor_release(n->live[k]);
        nnr_tensor_release(n->pending);
        if (n->pending_more) {
            for (int k = 0; k < n->n_outputs - 1; k++) nnr_tensor_release(n->pending_more[k]);
            free(n->pending_more);
        }
        if (n->retained && n->retained->grad_fn == n) n->retained = NULL;
        if (nnr_node_is_function(n)) nnr_autograd_note_dead(n->i[0]);
        for (int k = 0; k < n->n_hooks; k++) nnr_autograd_note_dead(n->hooks[2 * k]);
        free(n->hooks);
        free(n->owned_name);
        for (int k = 0; k < n->n_inputs; k++) {
            nnr_node *next = n->in[k].node;
            if (!next) continue;
            if (top == cap) {
                nnr_node **grown = malloc(sizeof *grown * cap * 2);
                if (!grown) { atomic_fetch_sub(&next->refcount, 1); continue; }   /* leak rather than crash */
                memcpy(grown, stack, sizeof *grown * cap);
                if (stack != stack_small) free(stack);
                stack = grown;
                cap *= 2;
            }
            stack[top++] = next;
        }
        free(n);
    }
    if (stack != stack_small) free(stack);
}

int nnr_node_second_backward_error(const nnr_node *node)
{
    return nnr_errorf(NNR_ERR_INVALID, "backward: %s: trying to backward through the graph a second time (its saved "
                      "values were freed after the first backward); pass retain_graph = true to the first backward", node->name);
}

const nnr_tensor *nnr_node_saved(nnr_node *node, int k)
{
    if (node->released || k >= node->n_saved) { nnr_node_second_backward_error(node); return NULL; }
    nnr_tensor *t = node->saved[k];
    unsigned now = atomic_load(&t->storage->version);
    if (now != node->saved_version[k]) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "backward: %s: a tensor of shape %s that it saved was modified by an in-place operation "
                   "(version %u, expected %u); use the out-of-place op or clone() first", node->name,
                   nnr_shape_str(b, sizeof b, t->ndim, t->sizes), now, node->saved_version[k]);
        return NULL;
    }
    if (nnr_ag.creating_graph && (node->saved_output >> k & 1)) {
        /* the node's own output, linked to the node again for as long as its backward runs, so that
         * what the backward computes from it is differentiated through the node (exp, tanh, softmax) */
        if (!node->live[k]) {
            nnr_tensor *v = nnr_tensor_new_view(t, t->ndim, t->sizes, t->strides, t->offset);
            if (!v) return NULL;
            nnr_node_link(v, node, 0);
            node->live[k] = v;
        }
        return node->live[k];
    }
    return t;
}

int nnr_autograd_check_inplace(const char *op, nnr_tensor *t)
{
    if (!nnr_ag.grad_disabled && t->requires_grad && !t->grad_fn)
        return nnr_errorf(NNR_ERR_INVALID, "%s: a leaf tensor that requires grad cannot be modified in place "
                          "(do it inside nnr.no_grad, or on a detach()ed tensor)", op);
    if (!nnr_ag.grad_disabled && t->is_view && t->requires_grad)
        return nnr_errorf(NNR_ERR_INVALID, "%s: in-place change of a view of a tensor that requires grad is not supported; "
                          "clone() the view first", op);
    atomic_fetch_add(&t->storage->version, 1);
    return NNR_OK;
}

/* ---------------- the public API ---------------- */

int nnr_requires_grad(const nnr_tensor *t) { return t->requires_grad; }
int nnr_is_leaf(const nnr_tensor *t) { return t->grad_fn == NULL; }
const char *nnr_grad_fn_name(const nnr_tensor *t) { return t->grad_fn ? t->grad_fn->name : NULL; }

int nnr_requires_grad_(nnr_tensor *t, int flag)
{
    if (t->grad_fn) {
        if (flag) return NNR_OK;
        return nnr_errorf(NNR_ERR_INVALID, "requires_grad_: only leaf tensors can stop requiring grad; use detach() for a non-leaf");
    }
    if (flag && !nnr_dtype_is_float(t->dtype))
        return nnr_errorf(NNR_ERR_INVALID, "requires_grad_: only floating-point tensors can require grad, got %s", nnr_dtype_name(t->dtype));
    t->requires_grad = flag ? 1 : 0;
    return NNR_OK;
}

nnr_tensor *nnr_grad(const nnr_tensor *t)
{
    if (t->grad) nnr_tensor_retain(t->grad);
    return t->grad;
}

int nnr_set_grad(nnr_tensor *t, nnr_tensor *g)
{
    if (g) {
        if (g->ndim != t->ndim || memcmp(g->sizes, t->sizes, sizeof(int64_t) * (size_t)t->ndim) != 0 || g->device != t->device) {
            char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
            return nnr_errorf(NNR_ERR_INVALID, "grad: assigned gradient of shape %s on %s, expected shape %s on %s",
                              nnr_shape_str(a, sizeof a, g->ndim, g->sizes), nnr_device_name(g->device),
                              nnr_shape_str(b, sizeof b, t->ndim, t->sizes), nnr_device_name(t->device));
        }
        if (g->dtype != t->dtype)      /* as PyTorch: "assigned grad has data of a different type" */
            return nnr_errorf(NNR_ERR_INVALID, "grad: assigned gradient is %s, the tensor is %s", nnr_dtype_name(g->dtype), nnr_dtype_name(t->dtype));
        nnr_tensor_retain(g);
        t->autograd_release = nnr_autograd_release_slots;
    }
    nnr_tensor_release(t->grad);
    t->grad = g;
    return NNR_OK;
}

int nnr_retain_grad(nnr_tensor *t)
{
    if (!t->requires_grad) return nnr_errorf(NNR_ERR_INVALID, "retain_grad: the tensor does not require grad");
    if (!t->grad_fn) return NNR_OK;          /* leaves keep their grad anyway */
    if (t->output_nr != 0 || t->grad_fn->n_outputs > 1)
        return nnr_errorf(NNR_ERR_INVALID, "retain_grad: not supported on the outputs of %s, a Function with several outputs; "
                          "register a hook on the output instead (t:register_hook(fn))", t->grad_fn->name);
    t->retains_grad = 1;
    t->grad_fn->retained = t;
    return NNR_OK;
}

nnr_tensor *nnr_detach(const nnr_tensor *t)
{
    return nnr_tensor_new_view(t, t->ndim, t->sizes, t->strides, t->offset);
}

unsigned nnr_tensor_version(const nnr_tensor *t) { return atomic_load(&t->storage->version); }

int nnr_tensor_mark_written(nnr_tensor *t, const char *op) { return nnr_autograd_check_inplace(op, t); }
