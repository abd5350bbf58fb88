/* The replicas of nnr.parallel.DataParallel (DESIGN.md decision 9): state k of a set of LuaJIT
 * states (states.c) holds device k's replica of the model, and each runs on a thread of its own,
 * concurrently. Torch7's DataParallelTable ran its replicas from one thread; here each replica's
 * forward and backward run in parallel. A state's function (lua/nnr/parallel_replica.lua) is the
 * replica's step. */
#include <lauxlib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "host/internal.h"

enum { MAX_REPLICAS = 64 };

typedef struct job {
    lua_State *L;
    int fn_ref, mode;
    nnr_tensor *x, *y;
    double weight;
    nnr_tensor *out[1];       /* the replica's output, written by its step function (a new reference) */
    double loss;
    int status;
    char err[600];
} job;

/* replica 0 runs on the caller's thread; each other replica has its own thread for the life of the
 * set (a new thread per step would also start with cold per-thread scratch and malloc arenas) */
struct nnr_replica_set {
    int n;
    nnr_lua_states *lua;             /* owns the states */
    int sync_ready;                  /* the lock and conditions below are initialised */
    lua_State *states[MAX_REPLICAS];
    int fn_ref[MAX_REPLICAS];
    pthread_t threads[MAX_REPLICAS];
    int started[MAX_REPLICAS];
    job jobs[MAX_REPLICAS];
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned long generation;
    int pending, stopping;
};

static void *run_one(void *arg);

typedef struct worker_arg { nnr_replica_set *s; int k; } worker_arg;

static void *worker_main(void *arg)
{
    nnr_replica_set *s = ((worker_arg *)arg)->s;
    int k = ((worker_arg *)arg)->k;
    free(arg);
    unsigned long seen = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stopping && s->generation == seen) pthread_cond_wait(&s->go, &s->lock);
        if (s->stopping) break;
        seen = s->generation;
        pthread_mutex_unlock(&s->lock);
        run_one(&s->jobs[k]);
        pthread_mutex_lock(&s->lock);
        if (--s->pending == 0) pthread_cond_signal(&s->done);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

nnr_replica_set *nnr_replicas_new(nnr_lua_states *states)
{
    int n = nnr_lua_states_count(states);
    if (n > MAX_REPLICAS) {
        nnr_errorf(NNR_ERR_INVALID, "DataParallel: 1..%d devices (got %d)", MAX_REPLICAS, n);
        nnr_lua_states_free(states);
        return NULL;
    }
    nnr_replica_set *s = calloc(1, sizeof *s);
    if (!s) { nnr_lua_states_free(states); nnr_errorf(NNR_ERR_OOM, "DataParallel: out of memory"); return NULL; }
    s->n = n;
    s->lua = states;
    char err[600];
    for (int k = 0; k < n; k++) {       /* every replica built now, so that a broken one fails here */
        if (!(s->states[k] = nnr_lua_states_get(states, k, &s->fn_ref[k], err, sizeof err))) {
            nnr_errorf(NNR_ERR_INVALID, "DataParallel: %s", err);
            nnr_replicas_free(s);
            return NULL;
        }
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->go, NULL);
    pthread_cond_init(&s->done, NULL);
    s->sync_ready = 1;
    for (int k = 1; k < n; k++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) { a->s = s; a->k = k; }
        s->started[k] = a && pthread_create(&s->threads[k], NULL, worker_main, a) == 0;
        if (!s->started[k]) free(a);
    }
    return s;
}

static void *run_one(void *arg)
{
    job *j = arg;
    lua_State *L = j->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->fn_ref);
    lua_pushinteger(L, j->mode);
    lua_pushlightuserdata(L, j->x);
    lua_pushlightuserdata(L, j->y);
    lua_pushnumber(L, j->weight);
    lua_pushlightuserdata(L, j->out);
    if (lua_pcall(L, 5, 1, 0) != 0) {
        snprintf(j->err, sizeof j->err, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "failed");
        j->status = NNR_ERR_INVALID;
    } else {
        j->loss = lua_tonumber(L, -1);
    }
    lua_settop(L, 0);
    return NULL;
}

/* runs every replica k on (x[k], y[k]) at once; mode 0: forward only, 1: forward, weight * loss, backward.
 * out[k] gets replica k's output (a new reference), losses[k] its weighted loss. */
int nnr_replicas_run(nnr_replica_set *s, int mode, nnr_tensor *const *x, nnr_tensor *const *y, const double *weights,
                     nnr_tensor **out, double *losses)
{
    job *jobs = s->jobs;
    for (int k = 0; k < s->n; k++) {
        jobs[k] = (job){.L = s->states[k], .fn_ref = s->fn_ref[k], .mode = mode, .x = x[k], .y = y ? y[k] : NULL,
                        .weight = weights ? weights[k] : 1.0};
    }
    int threaded = 0;
    for (int k = 1; k < s->n; k++) threaded += s->started[k];
    pthread_mutex_lock(&s->lock);
    s->pending = threaded;
    s->generation++;
    pthread_cond_broadcast(&s->go);
    pthread_mutex_unlock(&s->lock);
    run_one(&jobs[0]);
    for (int k = 1; k < s->n; k++) if (!s->started[k]) run_one(&jobs[k]);
    pthread_mutex_lock(&s->lock);
    while (s->pending > 0) pthread_cond_wait(&s->done, &s->lock);
    pthread_mutex_unlock(&s->lock);
    int st = NNR_OK;
    for (int k = 0; k < s->n; k++) {
        out[k] = jobs[k].out[0];
        if (losses) losses[k] = jobs[k].loss;
        if (jobs[k].status && st == NNR_OK) st = nnr_errorf(jobs[k].status, "DataParallel: replica %d: %s", k + 1, jobs[k].err);
    }
    if (st)
        for (int k = 0; k < s->n; k++) { nnr_tensor_release(out[k]); out[k] = NULL; }
    return st;
}

void nnr_replicas_free(nnr_replica_set *s)
{
    if (!s) return;
    int any = 0;
    for (int k = 1; k < s->n; k++) any |= s->started[k];
    if (any) {
        pthread_mutex_lock(&s->lock);
        s->stopping = 1;
        pthread_cond_broadcast(&s->go);
        pthread_mutex_unlock(&s->lock);
        for (int k = 1; k < s->n; k++) if (s->started[k]) pthread_join(s->threads[k], NULL);
    }
    if (s->sync_ready) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->go);
        pthread_cond_destroy(&s->done);
    }
    nnr_lua_states_free(s->lua);
    free(s);
}
