/* The profiler (DESIGN.md decision 12). While it runs, every op the
 * dispatcher runs, every autograd node, every module scope pushed from Lua,
 * every loader batch built on a worker, the consumer's waits for data and
 * every cache miss of the allocator become one event on the thread that did
 * it. Events go to per-thread chunked buffers (no lock, nothing moves while
 * a reader walks them); the Lua side aggregates them into tables and writes
 * the Chrome trace. Off, the cost is one load and one predictable branch
 * per op. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/internal.h"

enum { CHUNK = 4096, MAX_DEPTH = 256, MAX_NAMES = 65536 };
static const int64_t MAX_EVENTS = (int64_t)1 << 23;      /* 8M events (320 MiB): then new ones are dropped */

typedef struct chunk { nnr_prof_event ev[CHUNK]; struct chunk *next; } chunk;

typedef struct prof_thread {
    chunk *head, *tail;
    int64_t n;                   /* events this generation */
    unsigned generation;
    int tid;
    char label[64];
    struct { const char *name; int64_t start, bytes; } stack[MAX_DEPTH];
    int depth;
    struct prof_thread *next;
} prof_thread;

volatile int nnr_profiling;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static prof_thread *threads;
static int n_threads;
static unsigned generation = 1;
static _Atomic int64_t total_events, dropped;
static int64_t t_start, t_stop;
static char *names[MAX_NAMES];
static int n_names;
static _Thread_local prof_thread *tl;

int64_t nnr_prof_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static prof_thread *this_thread(void)
{
    if (tl) {
        if (tl->generation != generation) { tl->n = 0; tl->tail = tl->head; tl->depth = 0; tl->generation = generation; }
        return tl;
    }
    prof_thread *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_lock(&lock);
    t->tid = ++n_threads;
    snprintf(t->label, sizeof t->label, "thread %d", t->tid);
    t->generation = generation;
    t->next = threads;
    threads = t;
    pthread_mutex_unlock(&lock);
    tl = t;
    return t;
}

void nnr_prof_record(int kind, const char *name, int64_t start_ns, int64_t dur_ns, int64_t bytes)
{
    prof_thread *t = this_thread();
    if (!t) return;
    if (atomic_fetch_add_explicit(&total_events, 1, memory_order_relaxed) >= MAX_EVENTS) {
        atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
        return;
    }
    int64_t slot = t->n % CHUNK;
    if (slot == 0) {                 /* the next chunk: reuse one from an earlier run, or a new one */
        chunk *c = t->n == 0 ? t->head : t->tail->next;
        if (!c) {
            if (!(c = calloc(1, sizeof *c))) { atomic_fetch_add(&dropped, 1); return; }
            if (!t->head) t->head = c;
            else t->tail->next = c;
        }
        t->tail = c;
    }
    nnr_prof_event *e = &t->tail->ev[slot];
    e->name = name;
    e->start_ns = start_ns - t_start;
    e->dur_ns = dur_ns;
    e->bytes = bytes;
    e->kind = kind;
    e->tid = t->tid;
    t->n++;
}

/* an op's bytes are what its thread allocated since the thread's previous op (or the profile's start) */
static _Thread_local int64_t prof_charged;
static _Thread_local unsigned prof_gen;
static void charge_from_now(void) { prof_gen = generation; prof_charged = nnr_tl_alloc_bytes; }

void nnr_prof_record_op(const char *name, int64_t start_ns)
{
    if (prof_gen != generation) charge_from_now();     /* the first op of this thread in a new profile */
    nnr_prof_record(NNR_PROF_OP, name, start_ns, nnr_prof_now() - start_ns, nnr_tl_alloc_bytes - prof_charged);
    prof_charged = nnr_tl_alloc_bytes;
}

int nnr_profiler_start(void)
{
    pthread_mutex_lock(&lock);
    generation++;
    atomic_store(&total_events, 0);
    atomic_store(&dropped, 0);
    pthread_mutex_unlock(&lock);
    nnr_reset_peak_bytes();
    t_start = nnr_prof_now();
    t_stop = 0;
    prof_thread *t = this_thread();
    if (t) snprintf(t->label, sizeof t->label, "main");
    charge_from_now();
    nnr_profiling = 1;
    return NNR_OK;
}

int nnr_profiler_stop(void)
{
    if (nnr_profiling) t_stop = nnr_prof_now();      /* a second stop keeps the first one's span */
    nnr_profiling = 0;
    return NNR_OK;
}

int nnr_profiler_enabled(void) { return nnr_profiling; }
double nnr_profiler_seconds(void)
{
    if (!t_start) return 0;            /* never started */
    return (double)((t_stop ? t_stop : nnr_prof_now()) - t_start) * 1e-9;
}
int64_t nnr_profiler_dropped(void) { return atomic_load(&dropped); }

void nnr_profiler_thread_label(const char *label)
{
    prof_thread *t = this_thread();
    if (t) snprintf(t->label, sizeof t->label, "%s", label);
}

const char *nnr_profiler_thread_name(int tid)
{
    for (prof_thread *t = threads; t; t = t->next)
        if (t->tid == tid) return t->label;
    return NULL;
}

/* a stable copy of name, for scope events (module names): the same pointer for the same text */
const char *nnr_profiler_intern(const char *name)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < n_names; i++)
        if (strcmp(names[i], name) == 0) { pthread_mutex_unlock(&lock); return names[i]; }
    const char *r = NULL;
    if (n_names < MAX_NAMES && (names[n_names] = strdup(name))) r = names[n_names++];
    pthread_mutex_unlock(&lock);
    return r ? r : "(too many names)";
}

void nnr_profiler_push(const char *interned)
{
    if (!nnr_profiling) return;
    prof_thread *t = this_thread();
    if (!t) return;
    if (t->depth < MAX_DEPTH) {
        t->stack[t->depth].name = interned;
        t->stack[t->depth].start = nnr_prof_now();
        t->stack[t->depth].bytes = nnr_tl_alloc_bytes;
    }
    t->depth++;
}

void nnr_profiler_pop(void)
{
    prof_thread *t = tl;
    if (!t || t->depth == 0) return;
    t->depth--;
    if (!nnr_profiling || t->depth >= MAX_DEPTH || t->generation != generation) return;
    int64_t now = nnr_prof_now();
    nnr_prof_record(NNR_PROF_SCOPE, t->stack[t->depth].name, t->stack[t->depth].start, now - t->stack[t->depth].start,
                    nnr_tl_alloc_bytes - t->stack[t->depth].bytes);
}

int64_t nnr_profiler_event_count(void)
{
    int64_t n = 0;
    pthread_mutex_lock(&lock);
    for (prof_thread *t = threads; t; t = t->next)
        if (t->generation == generation) n += t->n;
    pthread_mutex_unlock(&lock);
    return n;
}

/* copies up to max events (all threads) into out; returns how many */
int64_t nnr_profiler_events(nnr_prof_event *out, int64_t max)
{
    int64_t k = 0;
    pthread_mutex_lock(&lock);
    for (prof_thread *t = threads; t; t = t->next) {
        if (t->generation != generation) continue;
        int64_t n = t->n;
        chunk *c = t->head;
        for (int64_t i = 0; i < n && k < max && c; i++) {
            out[k++] = c->ev[i % CHUNK];
            if (i % CHUNK == CHUNK - 1) c = c->next;
        }
    }
    pthread_mutex_unlock(&lock);
    return k;
}

__attribute__((destructor)) static void profiler_exit(void)
{
    nnr_profiling = 0;
    while (threads) {
        prof_thread *t = threads;
        threads = t->next;
        while (t->head) { chunk *c = t->head; t->head = c->next; free(c); }
        free(t);
    }
    for (int i = 0; i < n_names; i++) free(names[i]);
}
