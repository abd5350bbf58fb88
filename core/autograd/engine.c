/* Reverse-mode autograd: a tape of nodes in C (DESIGN.md decision 4), the mechanism alone; each
 * op's derivative lives beside the op in core/ops/.
 *
 * An op whose input requires grad records a node: the backward function, an edge per input to the
 * node that made that input (or to the input's AccumulateGrad node, for leaves), the input shapes
 * and the tensors the derivative needs. backward() collects the nodes reachable from the output,
 * counts how many consumers feed each one, and runs them in topological order, summing gradients
 * where paths meet; AccumulateGrad nodes add into the leaves' .grad. Unless retain_graph is asked,
 * the saved tensors are freed afterwards. Saved tensors carry the storage's version, so an in-place
 * write that would corrupt a saved value is an error, not a wrong gradient. */
#include <stdlib.h>
#include <string.h>
#include "autograd/internal.h"

static _Thread_local int grad_disabled;
static _Atomic unsigned pass_counter;

bool nnr_grad_mode(void) { return !grad_disabled; }
int nnr_is_grad_enabled(void) { return !grad_disabled; }

int nnr_set_grad_enabled(int on)
{
    int previous = !grad_disabled;
    grad_disabled = !on;
    return previous;
}

bool nnr_should_record(int n, const nnr_tensor *const *inputs)
{
    if (grad_disabled) return false;
    for (int k = 0; k < n; k++)
        if (inputs[k] && inputs[k]->requires_grad) return true;
    return false;
}

/* ---------------- a tensor's autograd slots ---------------- */

/* what the tensor part calls when a tensor with autograd slots dies */
static void release_slots(nnr_tensor *t)
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
    return node;
}

static nnr_node *accumulator(nnr_tensor *leaf)
{
    if (!leaf->grad_acc) {
        leaf->grad_acc = node_alloc("AccumulateGrad", NULL, 0);
        if (leaf->grad_acc) leaf->grad_acc->leaf = leaf;
        leaf->autograd_release = release_slots;
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
        node->in[k].ndim = x->ndim;
        node->in[k].dtype = x->dtype;
        node->in[k].device = x->device;
        memcpy(node->in[k].sizes, x->sizes, sizeof x->sizes);
        if (!x->requires_grad) continue;
        nnr_node *edge = x->grad_fn ? x->grad_fn : accumulator((nnr_tensor *)x);
        if (!edge) { nnr_node_release(node); return NULL; }
        atomic_fetch_add(&edge->refcount, 1);
        node->in[k].node = edge;
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
    int st = nnr_node_save(node, alias);
    nnr_tensor_release(alias);
    return st;
}

void nnr_node_attach(nnr_tensor *t, nnr_node *node)
{
    if (t->grad_fn) nnr_node_release(t->grad_fn);
    t->grad_fn = node;
    t->requires_grad = 1;
    t->autograd_release = release_slots;
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
        nnr_tensor_release(n->pending);
        if (n->retained && n->retained->grad_fn == n) n->retained = NULL;
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

static int second_backward_error(const nnr_node *node)
{
    return nnr_errorf(NNR_ERR_INVALID, "backward: %s: trying to backward through the graph a second time (its saved "
                      "values were freed after the first backward); pass retain_graph = true to the first backward", node->name);
}

const nnr_tensor *nnr_node_saved(nnr_node *node, int k)
{
    if (node->released || k >= node->n_saved) { second_backward_error(node); return NULL; }
    nnr_tensor *t = node->saved[k];
    unsigned now = atomic_load(&t->storage->version);
    if (now != node->saved_version[k]) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_INVALID, "backward: %s: a tensor of shape %s that it saved was modified by an in-place operation "
                   "(version %u, expected %u); use the out-of-place op or clone() first", node->name,
                   nnr_shape_str(b, sizeof b, t->ndim, t->sizes), now, node->saved_version[k]);
        return NULL;
    }
    return t;
}

int nnr_autograd_check_inplace(const char *op, nnr_tensor *t)
{
    if (!grad_disabled && t->requires_grad && !t->grad_fn)
        return nnr_errorf(NNR_ERR_INVALID, "%s: a leaf tensor that requires grad cannot be modified in place "
                          "(do it inside nnr.no_grad, or on a detach()ed tensor)", op);
    if (!grad_disabled && t->is_view && t->requires_grad)
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
        t->autograd_release = release_slots;
    }
    nnr_tensor_release(t->grad);
    t->grad = g;
    return NNR_OK;
}

int nnr_retain_grad(nnr_tensor *t)
{
    if (!t->requires_grad) return nnr_errorf(NNR_ERR_INVALID, "retain_grad: the tensor does not require grad");
    if (!t->grad_fn) return NNR_OK;          /* leaves keep their grad anyway */
    t->retains_grad = 1;
    t->grad_fn->retained = t;
    return NNR_OK;
}

nnr_tensor *nnr_detach(const nnr_tensor *t)
{
    return nnr_tensor_new_view(t, t->ndim, t->sizes, t->strides, t->offset);
}

/* ---------------- backward ---------------- */

/* dst += g, allocating dst when it is NULL (g itself is never written); both of one shape, dtype and device */
static int accumulate(nnr_tensor **dst, const nnr_tensor *g)
{
    if (!*dst) {                  /* pending gradients are never written in place: share g */
        nnr_tensor_retain((nnr_tensor *)g);
        *dst = (nnr_tensor *)g;
        return NNR_OK;
    }
    nnr_tensor *sum = nnr_tensor_alloc(g->dtype, g->ndim, g->sizes, g->device);
    if (!sum || nnr_tensor_add_into(sum, *dst, g)) { nnr_tensor_release(sum); return nnr_last_status(); }
    nnr_tensor_release(*dst);
    *dst = sum;
    return NNR_OK;
}

/* gradient into a leaf's .grad: in place when it exists (optimizers hold it) */
static int accumulate_leaf(nnr_tensor *leaf, const nnr_tensor *g)
{
    leaf->autograd_release = release_slots;
    if (leaf->grad) {
        nnr_tensor *c = nnr_tensor_converted(g, leaf->grad->dtype, leaf->grad->device);
        int st = c ? nnr_tensor_add_into(leaf->grad, leaf->grad, c) : nnr_last_status();
        if (st == NNR_OK) atomic_fetch_add(&leaf->grad->storage->version, 1);
        nnr_tensor_release(c);
        return st;
    }
    /* a gradient nobody else holds can become .grad as it is: no copy */
    if (atomic_load(&g->refcount) == 1 && atomic_load(&g->storage->refcount) == 1 && nnr_tensor_is_contiguous(g) &&
        g->dtype == leaf->dtype && g->device == leaf->device && !g->grad_fn && g->ndim == leaf->ndim &&
        memcmp(g->sizes, leaf->sizes, sizeof(int64_t) * (size_t)leaf->ndim) == 0) {
        nnr_tensor_retain((nnr_tensor *)g);
        leaf->grad = (nnr_tensor *)g;
        return NNR_OK;
    }
    nnr_tensor *c = nnr_tensor_alloc(leaf->dtype, leaf->ndim, leaf->sizes, leaf->device);
    if (!c) return nnr_last_status();
    int st = nnr_tensor_copy_into(c, g);
    if (st) { nnr_tensor_release(c); return st; }
    leaf->grad = c;
    return NNR_OK;
}

typedef struct node_list { nnr_node **items; size_t n, cap; } node_list;

static int push(node_list *l, nnr_node *n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        nnr_node **grown = realloc(l->items, sizeof *grown * cap);
        if (!grown) return nnr_errorf(NNR_ERR_OOM, "backward: out of memory");
        l->items = grown;
        l->cap = cap;
    }
    l->items[l->n++] = n;
    return NNR_OK;
}

/* every node reachable from root into all, each with the number of its consumers in deps */
static int collect(nnr_node *root, unsigned pass, node_list *all)
{
    node_list stack = {0};
    int st = push(&stack, root);
    root->visit = pass;
    root->deps = 0;
    while (st == NNR_OK && stack.n) {
        nnr_node *n = stack.items[--stack.n];
        st = push(all, n);
        for (int k = 0; st == NNR_OK && k < n->n_inputs; k++) {
            nnr_node *next = n->in[k].node;
            if (!next) continue;
            if (next->visit != pass) {
                next->visit = pass;
                next->deps = 0;
                st = push(&stack, next);
            }
            next->deps++;
        }
    }
    free(stack.items);
    return st;
}

/* input k's gradient gk, converted to the input's dtype and device and checked against its shape,
 * added to the pending gradient of the node it goes to; releases gk */
static int pass_on(nnr_node *n, int k, nnr_tensor *gk)
{
    const struct nnr_node_input *in = &n->in[k];
    int st = NNR_OK;
    if (gk->dtype != in->dtype || gk->device != in->device) {
        nnr_tensor *c = nnr_tensor_converted(gk, in->dtype, in->device);
        nnr_tensor_release(gk);
        if (!(gk = c)) return nnr_last_status();
    }
    if (gk->ndim != in->ndim || memcmp(gk->sizes, in->sizes, sizeof(int64_t) * (size_t)in->ndim) != 0) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
        st = nnr_errorf(NNR_ERR_INTERNAL, "backward: %s gave a gradient of shape %s for an input of shape %s", n->name,
                        nnr_shape_str(a, sizeof a, gk->ndim, gk->sizes), nnr_shape_str(b, sizeof b, in->ndim, in->sizes));
    }
    if (st == NNR_OK) st = accumulate(&in->node->pending, gk);
    nnr_tensor_release(gk);
    return st;
}

/* runs node n's backward on its pending gradient g and passes its inputs' gradients on */
static int run_node(nnr_node *n, const nnr_tensor *g)
{
    if (n->released) return second_backward_error(n);
    nnr_tensor *stack_grads[8], **grads = n->n_inputs <= 8 ? stack_grads : calloc((size_t)n->n_inputs, sizeof *grads);
    if (!grads) return nnr_errorf(NNR_ERR_OOM, "backward: out of memory");
    memset(grads, 0, sizeof *grads * (size_t)n->n_inputs);
    int st;
    if (__builtin_expect(nnr_profiling, 0)) {
        int64_t t0 = nnr_prof_now(), b0 = nnr_tl_alloc_bytes;
        st = n->backward(n, g, grads);
        nnr_prof_record(NNR_PROF_AUTOGRAD, n->name, t0, nnr_prof_now() - t0, nnr_tl_alloc_bytes - b0);
    } else {
        st = n->backward(n, g, grads);
    }
    for (int k = 0; k < n->n_inputs; k++) {
        if (st == NNR_OK && grads[k] && n->in[k].node) st = pass_on(n, k, grads[k]);
        else nnr_tensor_release(grads[k]);
    }
    if (grads != stack_grads) free(grads);
    return st;
}

/* after the pass: pending gradients dropped, saved tensors freed unless the graph is kept */
static void finish(node_list *all, int retain_graph)
{
    for (size_t i = 0; i < all->n; i++) {
        nnr_node *n = all->items[i];
        nnr_tensor_release(n->pending);
        n->pending = NULL;
        if (!retain_graph && n->backward) {
            for (int k = 0; k < n->n_saved; k++) nnr_tensor_release(n->saved[k]);
            n->n_saved = 0;
            n->released = 1;
        }
    }
}

static int run_backward(nnr_tensor *root, nnr_tensor *grad, int retain_graph)
{
    if (!root->grad_fn) return accumulate_leaf(root, grad);     /* a leaf: its gradient is grad itself */
    unsigned pass = atomic_fetch_add(&pass_counter, 1) + 1;
    node_list all = {0}, ready = {0};
    int st = collect(root->grad_fn, pass, &all);
    if (st == NNR_OK) {
        nnr_tensor_retain(grad);
        root->grad_fn->pending = grad;
        st = push(&ready, root->grad_fn);
    }
    while (st == NNR_OK && ready.n) {
        nnr_node *n = ready.items[--ready.n];
        nnr_tensor *g = n->pending;
        n->pending = NULL;
        if (n->retained && g) st = accumulate_leaf(n->retained, g);
        if (st == NNR_OK && g) st = n->backward ? run_node(n, g) : n->leaf ? accumulate_leaf(n->leaf, g) : NNR_OK;
        nnr_tensor_release(g);
        for (int k = 0; k < n->n_inputs; k++) {
            nnr_node *next = n->in[k].node;
            if (next && --next->deps == 0 && st == NNR_OK) st = push(&ready, next);
        }
    }
    finish(&all, retain_graph);
    free(all.items);
    free(ready.items);
    return st;
}

int nnr_backward(nnr_tensor *root, const nnr_tensor *grad, int retain_graph)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (!root->requires_grad)
        return nnr_errorf(NNR_ERR_INVALID, "backward: the tensor does not require grad and has no grad_fn "
                          "(did a parameter lack requires_grad, or was it computed inside nnr.no_grad?)");
    nnr_tensor *g;
    if (!grad) {
        if (nnr_tensor_numel(root) != 1)
            return nnr_errorf(NNR_ERR_INVALID, "backward: a gradient can be created implicitly only for a single-element output, "
                              "this one has shape %s; pass the gradient", nnr_shape_str(a, sizeof a, root->ndim, root->sizes));
        g = nnr_full(root->dtype, root->ndim, root->sizes, 1.0, root->device);
    } else {
        if (grad->ndim != root->ndim || memcmp(grad->sizes, root->sizes, sizeof(int64_t) * (size_t)root->ndim) != 0)
            return nnr_errorf(NNR_ERR_INVALID, "backward: gradient of shape %s given for an output of shape %s",
                              nnr_shape_str(a, sizeof a, grad->ndim, grad->sizes), nnr_shape_str(b, sizeof b, root->ndim, root->sizes));
        g = nnr_tensor_converted(grad, root->dtype, root->device);
    }
    if (!g) return nnr_last_status();
    int previous = grad_disabled;
    grad_disabled = 1;
    int st = run_backward(root, g, retain_graph);
    grad_disabled = previous;
    nnr_tensor_release(g);
    return st;
}
