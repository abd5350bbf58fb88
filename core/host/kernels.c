/* Kernels written in LuaJIT (nnr.kernel.map / reduce): a pool of worker threads, each with a LuaJIT
 * state of the one pool of states (states.c), that run chunks of a kernel while the script's own
 * state runs the first chunk. The kernel is Lua source; each state compiles it once (the bootstrap,
 * lua/nnr/kernel_worker.lua, caches it by source) and runs its chunk over the tensors' memory, which
 * the blob describes (addresses, strides, sizes: a layout the Lua side writes and reads, of which C
 * knows nothing). Plugins never call into Lua; the host does, on its own threads. */
#include <lauxlib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "host/internal.h"

enum { MAX_WORKERS = 63 };

typedef struct kernel_job {
    const char *source;
    size_t len;
    const void *blob;
    int chunk, nchunks;
    int status;
    char err[600];
} kernel_job;

struct nnr_kernel_pool {
    int n;
    nnr_lua_states *states;
    lua_State *L[MAX_WORKERS];
    int fn_ref[MAX_WORKERS];
    pthread_t threads[MAX_WORKERS];
    int started[MAX_WORKERS];
    kernel_job jobs[MAX_WORKERS];
    int active;                      /* workers given a chunk this round */
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned long generation;
    int pending, stopping;
};

static void run_job(lua_State *L, int fn_ref, kernel_job *j)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushlstring(L, j->source, j->len);
    lua_pushlightuserdata(L, (void *)j->blob);
    lua_pushinteger(L, j->chunk);
    lua_pushinteger(L, j->nchunks);
    j->status = NNR_OK;
    if (lua_pcall(L, 4, 1, 0) != 0 || !lua_isnil(L, -1)) {
        snprintf(j->err, sizeof j->err, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "the kernel failed");
        j->status = NNR_ERR_INVALID;
    }
    lua_settop(L, 0);
}

typedef struct worker_arg { nnr_kernel_pool *p; int k; } worker_arg;

static void *worker_main(void *arg)
{
    nnr_kernel_pool *p = ((worker_arg *)arg)->p;
    int k = ((worker_arg *)arg)->k;
    free(arg);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stopping && p->generation == seen) pthread_cond_wait(&p->go, &p->lock);
        if (p->stopping) break;
        seen = p->generation;
        int mine = k < p->active;
        pthread_mutex_unlock(&p->lock);
        if (mine) run_job(p->L[k], p->fn_ref[k], &p->jobs[k]);
        pthread_mutex_lock(&p->lock);
        if (mine && --p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

nnr_kernel_pool *nnr_kernel_pool_new(int n, const char *bootstrap)
{
    if (n < 1 || n > MAX_WORKERS) { nnr_errorf(NNR_ERR_INVALID, "kernel pool: 1..%d workers (got %d)", MAX_WORKERS, n); return NULL; }
    const char *payload = "";
    size_t len = 0;
    int none = 0;
    nnr_lua_states *states = nnr_lua_states_new(n, "=nnr.kernel_worker", bootstrap, 1, &payload, &len, NULL, &none, NULL, 0);
    if (!states) return NULL;
    nnr_kernel_pool *p = calloc(1, sizeof *p);
    if (!p) { nnr_lua_states_free(states); nnr_errorf(NNR_ERR_OOM, "kernel pool: out of memory"); return NULL; }
    p->n = n;
    p->states = states;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    char err[600];
    for (int k = 0; k < n; k++) {       /* every state made now, so that a broken bootstrap fails here */
        if (!(p->L[k] = nnr_lua_states_get(states, k, &p->fn_ref[k], err, sizeof err))) {
            nnr_errorf(NNR_ERR_INVALID, "kernel pool: %s", err);
            nnr_kernel_pool_free(p);
            return NULL;
        }
    }
    for (int k = 0; k < n; k++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) { a->p = p; a->k = k; }
        p->started[k] = a && pthread_create(&p->threads[k], NULL, worker_main, a) == 0;
        if (!p->started[k]) free(a);
    }
    return p;
}

int nnr_kernel_pool_size(const nnr_kernel_pool *p) { return p->n; }

int nnr_kernel_pool_start(nnr_kernel_pool *p, const char *source, size_t len, const void *blob, int first, int count, int nchunks)
{
    if (count < 0 || count > p->n || first < 0 || first + count > nchunks)
        return nnr_errorf(NNR_ERR_INVALID, "kernel pool: chunks %d..%d of %d on %d workers", first + 1, first + count, nchunks, p->n);
    pthread_mutex_lock(&p->lock);
    if (p->pending) { pthread_mutex_unlock(&p->lock); return nnr_errorf(NNR_ERR_INVALID, "kernel pool: a kernel is still running"); }
    for (int k = 0; k < count; k++) p->jobs[k] = (kernel_job){.source = source, .len = len, .blob = blob, .chunk = first + k, .nchunks = nchunks};
    int threaded = 0;
    for (int k = 0; k < count; k++) threaded += p->started[k];
    p->active = count;
    p->pending = threaded;
    p->generation++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->lock);
    for (int k = 0; k < count; k++)      /* a worker whose thread did not start: its chunk runs here, now */
        if (!p->started[k]) run_job(p->L[k], p->fn_ref[k], &p->jobs[k]);
    return NNR_OK;
}

int nnr_kernel_pool_wait(nnr_kernel_pool *p)
{
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->lock);
    int count = p->active;
    p->active = 0;
    pthread_mutex_unlock(&p->lock);
    for (int k = 0; k < count; k++)
        if (p->jobs[k].status) return nnr_errorf(p->jobs[k].status, "%s", p->jobs[k].err);
    return NNR_OK;
}

void nnr_kernel_pool_free(nnr_kernel_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->lock);
    for (int k = 0; k < p->n; k++) if (p->started[k]) pthread_join(p->threads[k], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    nnr_lua_states_free(p->states);
    free(p);
}
