/* The backward pass (core/autograd/): collects the nodes reachable from the outputs, counts how
 * many consumers feed each one, and runs them in topological order, summing gradients where paths
 * meet; AccumulateGrad nodes add into the leaves' .grad, or, for autograd.grad, the gradients are
 * caught at the inputs asked for and only the nodes leading to them run. Unless retain_graph is
 * asked, the saved tensors of the nodes that ran are freed afterwards. With create_graph the pass
 * records what it computes, so that the gradients can be differentiated again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "autograd/internal.h"

static _Atomic unsigned pass_counter;

/* dst += g, allocating dst when it is NULL (g itself is never written); both of one shape, dtype and
 * device. While a graph is created the sum is a recorded op. */
static int accumulate(nnr_tensor **dst, const nnr_tensor *g)
{
    if (!*dst) {                  /* pending gradients are never written in place: share g */
        nnr_tensor_retain((nnr_tensor *)g);
        *dst = (nnr_tensor *)g;
        return NNR_OK;
    }
    nnr_tensor *sum;
    if (nnr_ag.creating_graph) sum = nnr_autograd_graph_ops.add(*dst, g);
    else {
        sum = nnr_tensor_alloc(g->dtype, g->ndim, g->sizes, g->device);
        if (sum && nnr_tensor_add_into(sum, *dst, g)) { nnr_tensor_release(sum); sum = NULL; }
    }
    if (!sum) return nnr_last_status();
    nnr_tensor_release(*dst);
    *dst = sum;
    return NNR_OK;
}

/* gradient into a leaf's .grad: in place when it exists (optimizers hold it); while a graph is
 * created, out of place and recorded, so that .grad carries its history (as PyTorch's) */
static int accumulate_leaf(nnr_tensor *leaf, const nnr_tensor *g)
{
    leaf->autograd_release = nnr_autograd_release_slots;
    if (nnr_ag.creating_graph) {
        nnr_tensor *c = g->dtype == leaf->dtype && g->device == leaf->device ? (nnr_tensor_retain((nnr_tensor *)g), (nnr_tensor *)g)
                                                                                : nnr_autograd_graph_ops.to(g, leaf->dtype, leaf->device);
        nnr_tensor *r = !c ? NULL : leaf->grad ? nnr_autograd_graph_ops.add(leaf->grad, c) : nnr_autograd_graph_ops.clone(c);
        nnr_tensor_release(c);
        if (!r) return nnr_last_status();
        nnr_tensor_release(leaf->grad);
        leaf->grad = r;
        return NNR_OK;
    }
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

/* where the gradient of output k of node n is summed */
static nnr_tensor **slot(nnr_node *n, int k) { return k == 0 ? &n->pending : &n->pending_more[k - 1]; }

static bool has_pending(const nnr_node *n)
{
    if (n->pending) return true;
    for (int k = 0; k < n->n_outputs - 1; k++)
        if (n->pending_more[k]) return true;
    return false;
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

/* every node reachable from the roots into all, each with the number of its consumers in deps */
static int collect(int n_roots, nnr_node *const *roots, unsigned pass, node_list *all)
{
    node_list stack = {0};
    int st = NNR_OK;
    for (int r = 0; st == NNR_OK && r < n_roots; r++) {
        if (!roots[r] || roots[r]->visit == pass) continue;
        roots[r]->visit = pass;
        roots[r]->deps = 0;
        st = push(&stack, roots[r]);
    }
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

/* autograd.grad's targets: the gradient of each input tensor is caught where it arrives (its
 * AccumulateGrad node for a leaf, the output of its grad_fn otherwise) instead of reaching .grad */
typedef struct targets {
    int n;
    nnr_node **node;
    int *output_nr;
    nnr_tensor **caught;
} targets;

static bool is_target(const targets *t, const nnr_node *n)
{
    for (int i = 0; t && i < t->n; i++)
        if (t->node[i] == n) return true;
    return false;
}

/* needed: the node leads to a target (all nodes when there are no targets). The order is Kahn's on
 * a copy of the counts, walked backwards: a node's inputs come before it. */
static int mark_needed(node_list *all, const targets *t)
{
    if (!t) {
        for (size_t i = 0; i < all->n; i++) all->items[i]->needed = 1;
        return NNR_OK;
    }
    node_list order = {0}, ready = {0};
    int st = NNR_OK;
    for (size_t i = 0; i < all->n; i++) {
        nnr_node *n = all->items[i];
        n->needed = n->deps;                 /* a scratch count for now */
        if (n->deps == 0) st = st ? st : push(&ready, n);
    }
    while (st == NNR_OK && ready.n) {
        nnr_node *n = ready.items[--ready.n];
        st = push(&order, n);
        for (int k = 0; st == NNR_OK && k < n->n_inputs; k++) {
            nnr_node *next = n->in[k].node;
            if (next && --next->needed == 0) st = push(&ready, next);
        }
    }
    for (size_t i = order.n; st == NNR_OK && i-- > 0;) {
        nnr_node *n = order.items[i];
        int need = is_target(t, n);
        for (int k = 0; !need && k < n->n_inputs; k++) need = n->in[k].node && n->in[k].node->needed;
        n->needed = need;
    }
    free(order.items);
    free(ready.items);
    return st;
}

/* input k's gradient gk, converted to the input's dtype and device and checked against its shape,
 * added to the pending gradient of the node (and output) it goes to; releases gk */
static int pass_on(nnr_node *n, int k, nnr_tensor *gk)
{
    const struct nnr_node_input *in = &n->in[k];
    int st = NNR_OK;
    if (gk->dtype != in->dtype || gk->device != in->device) {
        nnr_tensor *c = nnr_ag.creating_graph ? nnr_autograd_graph_ops.to(gk, in->dtype, in->device) : nnr_tensor_converted(gk, in->dtype, in->device);
        nnr_tensor_release(gk);
        if (!(gk = c)) return nnr_last_status();
    }
    if (gk->ndim != in->ndim || memcmp(gk->sizes, in->sizes, sizeof(int64_t) * (size_t)in->ndim) != 0) {
        char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
        st = nnr_errorf(nnr_node_is_function(n) ? NNR_ERR_INVALID : NNR_ERR_INTERNAL,
                        "backward: %s gave a gradient of shape %s for its input %d of shape %s", n->name,
                        nnr_shape_str(a, sizeof a, gk->ndim, gk->sizes), k + 1, nnr_shape_str(b, sizeof b, in->ndim, in->sizes));
    }
    if (st == NNR_OK) st = accumulate(slot(in->node, in->output_nr), gk);
    nnr_tensor_release(gk);
    return st;
}

/* runs node n's backward on its pending gradient g and passes its inputs' gradients on */
static int run_node(nnr_node *n, const nnr_tensor *g)
{
    if (n->released) return nnr_node_second_backward_error(n);
    if (nnr_ag.creating_graph && !n->double_diff)
        return nnr_errorf(NNR_ERR_INVALID, "backward: %s: the backward of this op is not differentiable yet, so a backward pass "
                          "with create_graph (second-order gradients) cannot go through it", n->name);
    nnr_tensor *stack_grads[8], **grads = n->n_inputs <= 8 ? stack_grads : calloc((size_t)n->n_inputs, sizeof *grads);
    if (!grads) return nnr_errorf(NNR_ERR_OOM, "backward: out of memory");
    memset(grads, 0, sizeof *grads * (size_t)n->n_inputs);
    int st;
    nnr_ag.running_node = n;
    if (__builtin_expect(nnr_profiling, 0)) {
        int64_t t0 = nnr_prof_now(), b0 = nnr_tl_alloc_bytes;
        st = n->backward(n, g, grads);
        nnr_prof_record(NNR_PROF_AUTOGRAD, n->name, t0, nnr_prof_now() - t0, nnr_tl_alloc_bytes - b0);
    } else {
        st = n->backward(n, g, grads);
    }
    nnr_ag.running_node = NULL;
    for (int k = 0; k < NNR_NODE_MAX_SAVED; k++) {      /* re-linked outputs: held by what recorded them */
        nnr_tensor_release(n->live[k]);
        n->live[k] = NULL;
    }
    for (int k = 0; k < n->n_inputs; k++) {
        if (st == NNR_OK && grads[k] && n->in[k].node) st = pass_on(n, k, grads[k]);
        else nnr_tensor_release(grads[k]);
    }
    if (grads != stack_grads) free(grads);
    return st;
}

/* a node's needed mark once its backward has run */
enum { RAN = 2 };

/* after the pass: pending gradients dropped, saved tensors of the nodes that ran freed unless the
 * graph is kept (a node the pass did not need keeps them: a later backward may go through it) */
static void finish(node_list *all, int retain_graph)
{
    for (size_t i = 0; i < all->n; i++) {
        nnr_node *n = all->items[i];
        nnr_tensor_release(n->pending);
        n->pending = NULL;
        for (int k = 0; k < n->n_outputs - 1; k++) {
            nnr_tensor_release(n->pending_more[k]);
            n->pending_more[k] = NULL;
        }
        if (!retain_graph && n->backward && n->needed == RAN && !n->released) {
            for (int k = 0; k < n->n_saved; k++) nnr_tensor_release(n->saved[k]);
            n->n_saved = 0;
            n->released = 1;
            if (nnr_node_is_function(n)) nnr_autograd_note_dead(n->i[0]);    /* what the host saved goes too */
        }
    }
}

/* the gradients of roots (seeded with seeds) through the graph: into the leaves' .grad, or, with
 * targets, caught at the targets alone */
static int run_graph(int n_roots, nnr_tensor *const *roots, nnr_tensor *const *seeds, int retain_graph, targets *tg)
{
    unsigned pass = atomic_fetch_add(&pass_counter, 1) + 1;
    node_list all = {0}, ready = {0};
    nnr_node *stack_nodes[8], **root_nodes = n_roots <= 8 ? stack_nodes : calloc((size_t)n_roots, sizeof *root_nodes);
    if (!root_nodes) return nnr_errorf(NNR_ERR_OOM, "backward: out of memory");
    int st = NNR_OK;
    for (int r = 0; r < n_roots; r++) root_nodes[r] = roots[r]->grad_fn;
    st = collect(n_roots, root_nodes, pass, &all);
    if (st == NNR_OK) st = mark_needed(&all, tg);
    /* the seeds: at the roots' nodes, or straight into a leaf root (through the leaf's hooks) */
    for (int r = 0; st == NNR_OK && r < n_roots; r++) {
        nnr_tensor *root = roots[r];
        if (root->grad_fn) { st = accumulate(slot(root->grad_fn, root->output_nr), seeds[r]); continue; }
        nnr_tensor *g = seeds[r];
        nnr_tensor_retain(g);
        if (root->grad_acc && root->grad_acc->n_hooks) st = nnr_node_run_hooks(root->grad_acc, 0, &g);
        if (st == NNR_OK && !tg) st = accumulate_leaf(root, g);
        for (int i = 0; st == NNR_OK && tg && i < tg->n; i++)
            if (tg->node[i] == root->grad_acc && root->grad_acc) st = accumulate(&tg->caught[i], g);
        nnr_tensor_release(g);
    }
    for (size_t i = 0; st == NNR_OK && i < all.n; i++)
        if (all.items[i]->deps == 0) st = push(&ready, all.items[i]);
    while (st == NNR_OK && ready.n) {
        nnr_node *n = ready.items[--ready.n];
        if (n->needed && has_pending(n)) {
            for (int k = 0; st == NNR_OK && k < n->n_outputs; k++)
                if (*slot(n, k) && n->n_hooks) st = nnr_node_run_hooks(n, k, slot(n, k));
            for (int i = 0; st == NNR_OK && tg && i < tg->n; i++)        /* a target: its gradient caught */
                if (tg->node[i] == n && *slot(n, tg->output_nr[i])) st = accumulate(&tg->caught[i], *slot(n, tg->output_nr[i]));
            nnr_tensor *g = n->pending;
            n->pending = NULL;
            if (st == NNR_OK && g && n->retained && !tg) st = accumulate_leaf(n->retained, g);
            if (st == NNR_OK && n->backward) {
                /* with targets, a node runs only when a target lies below it (a target that is not a
                 * leaf may have others under it) */
                bool below = !tg;
                for (int k = 0; !below && k < n->n_inputs; k++) below = n->in[k].node && n->in[k].node->needed;
                if (below) { n->needed = RAN; st = run_node(n, g); }
            } else if (st == NNR_OK && !n->backward && n->leaf && g && !tg) {
                st = accumulate_leaf(n->leaf, g);
            }
            nnr_tensor_release(g);
            for (int k = 0; k < n->n_outputs - 1; k++) {
                nnr_tensor_release(n->pending_more[k]);
                n->pending_more[k] = NULL;
            }
        }
        for (int k = 0; k < n->n_inputs; k++) {
            nnr_node *next = n->in[k].node;
            if (next && --next->deps == 0 && st == NNR_OK) st = push(&ready, next);
        }
    }
    finish(&all, retain_graph);
    free(all.items);
    free(ready.items);
    if (root_nodes != stack_nodes) free(root_nodes);
    return st;
}

/* the seed of a root: grad given (converted to the root's dtype and device, shape checked) or ones
 * for a one-element root */
static nnr_tensor *seed_for(const char *op, const nnr_tensor *root, const nnr_tensor *grad, int index)
{
    char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
    if (!grad) {
        if (nnr_tensor_numel(root) != 1) {
            char which[32] = "this one";
            if (index >= 0) snprintf(which, sizeof which, "output %d", index + 1);
            nnr_errorf(NNR_ERR_INVALID, "%s: a gradient can be created implicitly only for a single-element output, "
                       "%s has shape %s; pass the gradient", op, which, nnr_shape_str(a, sizeof a, root->ndim, root->sizes));
            return NULL;
        }
        return nnr_full(root->dtype, root->ndim, root->sizes, 1.0, root->device);
    }
    if (grad->ndim != root->ndim || memcmp(grad->sizes, root->sizes, sizeof(int64_t) * (size_t)root->ndim) != 0) {
        char which[32] = "an output";
        if (index >= 0) snprintf(which, sizeof which, "output %d", index + 1);
        nnr_errorf(NNR_ERR_INVALID, "%s: gradient of shape %s given for %s of shape %s", op,
                   nnr_shape_str(a, sizeof a, grad->ndim, grad->sizes), which, nnr_shape_str(b, sizeof b, root->ndim, root->sizes));
        return NULL;
    }
    if (grad->dtype == root->dtype && grad->device == root->device) { nnr_tensor_retain((nnr_tensor *)grad); return (nnr_tensor *)grad; }
    return nnr_tensor_converted(grad, root->dtype, root->device);
}

/* one backward pass on this thread: recording as create_graph asks, never nested */
static int with_pass(const char *op, int n, nnr_tensor *const *roots, nnr_tensor *const *grads, int retain_graph,
                     int create_graph, targets *tg)
{
    if (nnr_ag.in_backward)
        return nnr_errorf(NNR_ERR_INVALID, "%s: called from inside a backward pass (a Function's backward or a gradient hook); "
                          "that is not supported", op);
    for (int r = 0; r < n; r++) {
        if (roots[r]->requires_grad) continue;
        char which[32] = "the tensor";
        if (n > 1) snprintf(which, sizeof which, "output %d", r + 1);
        return nnr_errorf(NNR_ERR_INVALID, "%s: %s does not require grad and has no grad_fn "
                          "(did a parameter lack requires_grad, or was it computed inside nnr.no_grad?)", op, which);
    }
    nnr_tensor *stack_seeds[8], **seeds = n <= 8 ? stack_seeds : calloc((size_t)n, sizeof *seeds);
    if (!seeds) return nnr_errorf(NNR_ERR_OOM, "%s: out of memory", op);
    int st = NNR_OK, made = 0;
    int previous = nnr_ag.grad_disabled;
    nnr_ag.grad_disabled = !create_graph;      /* the seeds are made as the pass will record */
    for (; made < n; made++) {
        seeds[made] = seed_for(op, roots[made], grads ? grads[made] : NULL, n == 1 ? -1 : made);
        if (!seeds[made]) { st = nnr_last_status(); break; }
    }
    if (st == NNR_OK) {
        nnr_ag.in_backward = 1;
        nnr_ag.creating_graph = create_graph;
        st = run_graph(n, roots, seeds, retain_graph, tg);
        nnr_ag.creating_graph = 0;
        nnr_ag.in_backward = 0;
    }
    nnr_ag.grad_disabled = previous;
    for (int r = 0; r < made; r++) nnr_tensor_release(seeds[r]);
    if (seeds != stack_seeds) free(seeds);
    return st;
}

int nnr_backward(nnr_tensor *root, const nnr_tensor *grad, int retain_graph)
{
    nnr_tensor *roots[1] = {root}, *grads[1] = {(nnr_tensor *)grad};
    return with_pass("backward", 1, roots, grads, retain_graph, 0, NULL);
}

int nnr_backward_multi(int n, nnr_tensor *const *roots, nnr_tensor *const *grads, int retain_graph, int create_graph)
{
    if (n < 1) return nnr_errorf(NNR_ERR_INVALID, "backward: no outputs given");
    return with_pass("backward", n, roots, grads, retain_graph, create_graph, NULL);
}

int nnr_autograd_grad(int n_out, nnr_tensor *const *outputs, nnr_tensor *const *grad_outputs, int n_in, nnr_tensor *const *inputs,
                      int retain_graph, int create_graph, int allow_unused, nnr_tensor **grads)
{
    if (nnr_ag.in_backward)       /* before grads is touched: it may be the running pass's own */
        return nnr_errorf(NNR_ERR_INVALID, "autograd.grad: called from inside a backward pass (a Function's backward or a gradient "
                          "hook); that is not supported");
    if (n_out < 1) return nnr_errorf(NNR_ERR_INVALID, "autograd.grad: no outputs given");
    if (n_in < 1) return nnr_errorf(NNR_ERR_INVALID, "autograd.grad: no inputs given");
    for (int i = 0; i < n_in; i++) {
        grads[i] = NULL;
        if (!inputs[i]->requires_grad)
            return nnr_errorf(NNR_ERR_INVALID, "autograd.grad: input %d does not require grad", i + 1);
    }
    targets tg = {.n = n_in};
    tg.node = calloc((size_t)n_in, sizeof *tg.node);
    tg.output_nr = calloc((size_t)n_in, sizeof *tg.output_nr);
    if (!tg.node || !tg.output_nr) { free(tg.node); free(tg.output_nr); return nnr_errorf(NNR_ERR_OOM, "autograd.grad: out of memory"); }
    tg.caught = grads;
    int st = NNR_OK;
    for (int i = 0; st == NNR_OK && i < n_in; i++) {
        nnr_tensor *x = inputs[i];
        tg.node[i] = x->grad_fn ? x->grad_fn : nnr_node_accumulator(x);
        tg.output_nr[i] = x->grad_fn ? x->output_nr : 0;
        if (!tg.node[i]) st = nnr_last_status();
    }
    if (st == NNR_OK) st = with_pass("autograd.grad", n_out, outputs, grad_outputs, retain_graph, create_graph, &tg);
    for (int i = 0; st == NNR_OK && i < n_in; i++) {
        if (grads[i] || allow_unused) continue;
        st = nnr_errorf(NNR_ERR_INVALID, "autograd.grad: input %d was not used to compute the outputs "
                        "(pass allow_unused = true to get nil for it)", i + 1);
    }
    if (st) for (int i = 0; i < n_in; i++) { nnr_tensor_release(grads[i]); grads[i] = NULL; }
    free(tg.node);
    free(tg.output_nr);
    return st;
}
