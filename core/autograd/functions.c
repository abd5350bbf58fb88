/* The host language's part of autograd (core/autograd/): Functions whose backward is written in
 * the host language (Lua), and gradient hooks. The host gives the callback that runs them; it sets it
 * on its thread before each backward pass, since each Lua state (a script, a DataParallel replica)
 * runs its own passes on its own thread. Ids carry their state's owner number in the high 32 bits;
 * the engine lists the ids of Functions and hooks whose nodes died, so that each owner drops what it
 * kept for them. Besides the thread's own settings, the list of dead ids is the autograd part's only
 * state. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "autograd/internal.h"

static _Thread_local nnr_autograd_callback host_callback;
static _Atomic int32_t owners;
static pthread_mutex_t dead_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t *dead_ids;
static size_t n_dead, cap_dead;

void nnr_autograd_set_callback(nnr_autograd_callback cb) { host_callback = cb; }
int32_t nnr_autograd_new_owner(void) { return atomic_fetch_add(&owners, 1) + 1; }

void nnr_autograd_note_dead(int64_t id)
{
    pthread_mutex_lock(&dead_lock);
    if (n_dead == cap_dead) {
        size_t cap = cap_dead ? cap_dead * 2 : 64;
        int64_t *grown = realloc(dead_ids, sizeof *grown * cap);
        if (grown) { dead_ids = grown; cap_dead = cap; }
    }
    if (n_dead < cap_dead) dead_ids[n_dead++] = id;          /* out of memory: the host keeps an entry */
    pthread_mutex_unlock(&dead_lock);
}

int nnr_autograd_dead_ids(int32_t owner, int64_t *buf, int cap)
{
    pthread_mutex_lock(&dead_lock);
    int n = 0;
    for (size_t i = 0; i < n_dead && n < cap;) {
        if ((int32_t)(dead_ids[i] >> 32) != owner) { i++; continue; }
        buf[n++] = dead_ids[i];
        dead_ids[i] = dead_ids[--n_dead];
    }
    pthread_mutex_unlock(&dead_lock);
    return n;
}

/* the host's gradient hooks on output k of n, in the order they were registered: each may replace
 * the gradient (*g, owned) with one of the same shape, dtype and device */
int nnr_node_run_hooks(nnr_node *n, int k, nnr_tensor **g)
{
    for (int h = 0; h < n->n_hooks && *g; h++) {
        if (n->hooks[2 * h + 1] != k) continue;
        if (!host_callback) return nnr_errorf(NNR_ERR_INVALID, "backward: a gradient hook is registered but no host runs hooks");
        nnr_tensor *in[1] = {*g}, *out[1] = {NULL};
        int st = host_callback(NNR_AUTOGRAD_HOOK, n->hooks[2 * h], 1, in, 1, out);
        if (st) { nnr_tensor_release(out[0]); return st; }
        if (!out[0]) continue;
        const nnr_tensor *r = out[0], *was = *g;
        if (r->ndim != was->ndim || memcmp(r->sizes, was->sizes, sizeof(int64_t) * (size_t)r->ndim) != 0 ||
            r->dtype != was->dtype || r->device != was->device) {
            char a[NNR_SHAPE_BUF], b[NNR_SHAPE_BUF];
            st = nnr_errorf(NNR_ERR_INVALID, "backward: a hook returned a gradient of shape %s (%s on %s) for one of shape %s "
                            "(%s on %s); a hook must return nil or a tensor like its argument",
                            nnr_shape_str(a, sizeof a, r->ndim, r->sizes), nnr_dtype_name(r->dtype), nnr_device_name(r->device),
                            nnr_shape_str(b, sizeof b, was->ndim, was->sizes), nnr_dtype_name(was->dtype), nnr_device_name(was->device));
            nnr_tensor_release(out[0]);
            return st;
        }
        nnr_tensor_release(*g);
        *g = out[0];
    }
    return NNR_OK;
}

static int function_backward(nnr_node *n, const nnr_tensor *g, nnr_tensor **grads)
{
    if (!host_callback) return nnr_errorf(NNR_ERR_INVALID, "backward: %s: no host runs Functions", n->name);
    nnr_tensor *stack_in[8], **in = n->n_outputs <= 8 ? stack_in : calloc((size_t)n->n_outputs, sizeof *in);
    if (!in) return nnr_errorf(NNR_ERR_OOM, "backward: out of memory");
    in[0] = (nnr_tensor *)g;
    for (int k = 1; k < n->n_outputs; k++) in[k] = n->pending_more[k - 1];
    int st = host_callback(NNR_AUTOGRAD_FUNCTION, n->i[0], n->n_outputs, in, n->n_inputs, grads);
    if (in != stack_in) free(in);
    return st;
}

int nnr_function_node(const char *name, int64_t id, int n_in, nnr_tensor *const *inputs, int n_out, nnr_tensor *const *outputs,
                      const unsigned char *differentiable)
{
    if (n_out < 1 || n_out > 127) return nnr_errorf(NNR_ERR_INVALID, "Function %s: %d outputs (1 to 127 supported)", name, n_out);
    for (int k = 0; k < n_out; k++)
        if (differentiable[k] && (outputs[k]->grad_fn || outputs[k]->requires_grad || !nnr_dtype_is_float(outputs[k]->dtype)))
            return nnr_errorf(NNR_ERR_INVALID, "Function %s: output %d cannot take the Function's history (%s)", name, k + 1,
                              nnr_dtype_is_float(outputs[k]->dtype) ? "it already has one" : "not a floating-point tensor");
    size_t len = strlen(name);
    char *owned = malloc(len + sizeof "Backward");
    nnr_node *node = owned ? nnr_node_new("FunctionBackward", function_backward, n_in, (const nnr_tensor *const *)inputs) : NULL;
    if (!node) { free(owned); return owned ? nnr_last_status() : nnr_errorf(NNR_ERR_OOM, "Function %s: out of memory", name); }
    memcpy(owned, name, len);
    memcpy(owned + len, "Backward", sizeof "Backward");
    node->owned_name = owned;
    node->name = owned;
    node->i[0] = id;
    node->double_diff = 1;              /* its backward is the host's ops, recorded like any other */
    node->n_outputs = n_out;
    if (n_out > 1 && !(node->pending_more = calloc((size_t)n_out - 1, sizeof *node->pending_more))) {
        node->n_outputs = 1;
        nnr_node_release(node);
        return nnr_errorf(NNR_ERR_OOM, "Function %s: out of memory", name);
    }
    for (int k = 0; k < n_out; k++) {
        if (!differentiable[k]) continue;
        atomic_fetch_add(&node->refcount, 1);
        nnr_node_attach(outputs[k], node);
        outputs[k]->output_nr = (int8_t)k;
    }
    nnr_node_release(node);             /* the outputs hold it now (or nothing does, and it goes) */
    return NNR_OK;
}

nnr_tensor *nnr_function_saved_output(const nnr_tensor *t, int64_t id, int k)
{
    nnr_node *n = nnr_ag.running_node;
    nnr_tensor *v = nnr_tensor_new_view(t, t->ndim, t->sizes, t->strides, t->offset);
    if (!v || !nnr_ag.creating_graph || !n || n->backward != function_backward || n->i[0] != id || k < 0 || k >= n->n_outputs) return v;
    /* the Function's own output, linked to its node again while its backward records (as the C
     * ops' saved outputs are): the gradient's history then reaches through it */
    nnr_node_link(v, n, k);
    return v;
}

int nnr_tensor_register_hook(nnr_tensor *t, int64_t id)
{
    if (!t->requires_grad)
        return nnr_errorf(NNR_ERR_INVALID, "register_hook: the tensor does not require grad, so no gradient will reach a hook");
    nnr_node *n = t->grad_fn ? t->grad_fn : nnr_node_accumulator(t);
    if (!n) return nnr_last_status();
    if (n->n_hooks == n->cap_hooks) {
        int cap = n->cap_hooks ? n->cap_hooks * 2 : 2;
        int64_t *grown = realloc(n->hooks, sizeof *grown * 2 * (size_t)cap);
        if (!grown) return nnr_errorf(NNR_ERR_OOM, "register_hook: out of memory");
        n->hooks = grown;
        n->cap_hooks = cap;
    }
    n->hooks[2 * n->n_hooks] = id;
    n->hooks[2 * n->n_hooks + 1] = t->grad_fn ? t->output_nr : 0;
    n->n_hooks++;
    return NNR_OK;
}

int nnr_tensor_remove_hook(nnr_tensor *t, int64_t id)
{
    nnr_node *n = t->grad_fn ? t->grad_fn : t->grad_acc;
    for (int h = 0; n && h < n->n_hooks; h++) {
        if (n->hooks[2 * h] != id) continue;
        memmove(&n->hooks[2 * h], &n->hooks[2 * h + 2], sizeof *n->hooks * 2 * (size_t)(n->n_hooks - h - 1));
        n->n_hooks--;
        return 1;
    }
    return 0;
}

bool nnr_node_is_function(const nnr_node *n) { return n->backward == function_backward; }
