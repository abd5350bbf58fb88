/* The caching allocator (one per device) and the byte accounting that tells
 * LuaJIT's GC when tensors have grown (DESIGN.md decision 5).
 *
 * Freed blocks are kept in size classes (a quarter-power-of-two ladder) and
 * handed out again, so a training loop stops paying for page faults and
 * driver allocations after its first step. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/internal.h"

#define N_BINS 256
#define MAX_DEVICES NNR_MAX_DEVICES

typedef struct block { struct block *next; void *ptr; } block;

typedef struct device_cache {
    pthread_mutex_t lock;
    block *bins[N_BINS];
    int64_t cached;
} device_cache;

static device_cache caches[MAX_DEVICES];
static pthread_once_t caches_once = PTHREAD_ONCE_INIT;
static _Atomic int64_t live_bytes, peak_bytes, live_at_gc;
static volatile int32_t gc_flag;
static int64_t cache_limit = (int64_t)1 << 30;
static int64_t gc_min_growth = (int64_t)32 << 20;

static void caches_init(void)
{
    for (int i = 0; i < MAX_DEVICES; i++) pthread_mutex_init(&caches[i].lock, NULL);
    cache_limit = nnr_env_int("NNR_CACHE_LIMIT_MB", 1024, 0, (int64_t)1 << 40) << 20;
    gc_min_growth = nnr_env_int("NNR_GC_MIB", 32, 1, (int64_t)1 << 40) << 20;
}

/* size class: 64-byte steps below 1 KiB, then 4 steps per power of two */
static int size_class(size_t n, size_t *rounded)
{
    if (n <= 1024) {
        size_t r = (n + 63) & ~(size_t)63;
        if (r == 0) r = 64;
        *rounded = r;
        return (int)(r / 64) - 1;                 /* 0..15 */
    }
    int lg = 63 - __builtin_clzll((unsigned long long)(n - 1));   /* 2^lg < n <= 2^(lg+1) */
    size_t step = (size_t)1 << (lg - 2);
    size_t r = (n + step - 1) & ~(step - 1);
    *rounded = r;
    int q = (int)((r >> (lg - 2)) - 4);           /* 1..4 */
    int cls = 16 + (lg - 10) * 4 + q - 1;
    return cls < N_BINS ? cls : -1;
}

/* one atomic add per call; the peak and the GC trigger read it without locks */
/* the block size of class k (the inverse of size_class) */
static void size_class_bytes(int k, size_t *bytes)
{
    if (k < 16) { *bytes = (size_t)(k + 1) * 64; return; }
    int lg = (k - 16) / 4 + 10, q = (k - 16) % 4 + 1;
    *bytes = (size_t)(4 + q) << (lg - 2);
}

/* per device: live and peak bytes (the profiler's memory peaks) */
static _Atomic int64_t dev_live[MAX_DEVICES], dev_peak[MAX_DEVICES];
/* bytes this thread allocated (the profiler charges them to the next op) */
_Thread_local int64_t nnr_tl_alloc_bytes __attribute__((tls_model("initial-exec")));

void nnr_account_device(int device, int64_t delta)
{
    if (device < 0 || device >= MAX_DEVICES) return;
    int64_t now = atomic_fetch_add_explicit(&dev_live[device], delta, memory_order_relaxed) + delta;
    if (delta > 0 && now > atomic_load_explicit(&dev_peak[device], memory_order_relaxed))
        atomic_store_explicit(&dev_peak[device], now, memory_order_relaxed);
}

int64_t nnr_device_peak_bytes(int device) { return device >= 0 && device < MAX_DEVICES ? atomic_load(&dev_peak[device]) : -1; }
int64_t nnr_device_live_bytes(int device) { return device >= 0 && device < MAX_DEVICES ? atomic_load(&dev_live[device]) : -1; }
void nnr_reset_peak_bytes(void)
{
    atomic_store(&peak_bytes, atomic_load(&live_bytes));
    for (int i = 0; i < MAX_DEVICES; i++) atomic_store(&dev_peak[i], atomic_load(&dev_live[i]));
}

void nnr_account(int64_t delta)
{
    int64_t now = atomic_fetch_add_explicit(&live_bytes, delta, memory_order_relaxed) + delta;
    if (delta > 0) {
        nnr_tl_alloc_bytes += delta;
        if (now > atomic_load_explicit(&peak_bytes, memory_order_relaxed))
            atomic_store_explicit(&peak_bytes, now, memory_order_relaxed);
        int64_t base = atomic_load_explicit(&live_at_gc, memory_order_relaxed);
        int64_t threshold = base / 2 < gc_min_growth ? gc_min_growth : base / 2;
        if (now - base > threshold) gc_flag = 1;      /* live bytes grew by half (or 32 MiB) since the last GC */
    }
}
/* a block from the device itself (a cache miss): the profiler shows these as "alloc" events */
static void *raw_alloc(const nnr_device_entry *d, size_t nbytes)
{
    void *p = NULL;
    int64_t t0 = nnr_profiling ? nnr_prof_now() : 0;
    if (d->plugin->buffer_alloc(d->plugin, d->local_index, nbytes, &p) != NNR_OK) p = NULL;
    if (nnr_profiling) nnr_prof_record(NNR_PROF_ALLOC, "alloc (cache miss)", t0, nnr_prof_now() - t0, (int64_t)nbytes);
    return p;
}

static void drop_cache(int device)
{
    const nnr_device_entry *d = nnr_device_get(device);
    device_cache *c = &caches[device];
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < N_BINS; i++) {
        block *b = c->bins[i];
        while (b) {
            block *next = b->next;
            d->plugin->buffer_free(d->plugin, d->local_index, b->ptr);
            free(b);
            b = next;
        }
        c->bins[i] = NULL;
    }
    c->cached = 0;
    pthread_mutex_unlock(&c->lock);
}

/* out of memory: hand back what our caches hold of the memory this allocation competes for (the
 * device's cache; for a device in host memory, the cache of every such device and the pinned
 * cache too, since they share the machine's RAM) and the plugin's own caches for the device */
static void reclaim(int device, const nnr_device_entry *d)
{
    drop_cache(device);
    if (d->host_memory) {
        for (int i = 0; i < nnr_device_total(); i++) {
            const nnr_device_entry *o = nnr_device_get(i);
            if (i != device && o && o->host_memory) drop_cache(i);
        }
        nnr_drop_pinned_cache();
    }
    nnr_device_release_memory(device);
}

/* n bytes for a message: "1.5 GiB" */
static void human_bytes(char *buf, size_t n, double b)
{
    static const char *units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    int u = 0;
    while (b >= 1024 && u < 6) { b /= 1024; u++; }
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", b, units[u]);
}

void nnr_allocator_init(void) { pthread_once(&caches_once, caches_init); }

void *nnr_alloc_device(int device, size_t nbytes)
{
    pthread_once(&caches_once, caches_init);
    const nnr_device_entry *d = nnr_device_get(device);
    if (!d) { nnr_errorf(NNR_ERR_DEVICE, "alloc: no device %d", device); return NULL; }
    size_t rounded;
    int cls = size_class(nbytes, &rounded);
    if (rounded < nbytes) rounded = nbytes;        /* beyond the ladder's arithmetic: ask for it as is */
    device_cache *c = &caches[device];
    void *p = NULL;
    if (cls >= 0) {
        pthread_mutex_lock(&c->lock);
        block *b = c->bins[cls];
        if (b) {
            c->bins[cls] = b->next;
            c->cached -= (int64_t)rounded;
            p = b->ptr;
        }
        pthread_mutex_unlock(&c->lock);
        free(b);
    }
    if (!p) p = raw_alloc(d, rounded);
    int64_t dropped = 0;
    if (!p) {                       /* give the caches back, ask the plugin for its own, and try once more */
        dropped = nnr_cached_bytes();
        reclaim(device, d);
        dropped -= nnr_cached_bytes();
        p = raw_alloc(d, rounded);
    }
    if (!p) {
        /* Lua's garbage may hold tensors no one uses any more: the flag makes the Lua side run a full
         * collection at its next allocation (lua/nnr/binding.lua), so a retry by the caller can succeed */
        gc_flag = 1;
        char want[32], live[32], freed[32];
        human_bytes(want, sizeof want, (double)nbytes);
        human_bytes(live, sizeof live, (double)nnr_device_live_bytes(device));
        human_bytes(freed, sizeof freed, (double)dropped);
        nnr_errorf(NNR_ERR_OOM, "out of memory: cannot allocate %zu bytes on %s (%s; %s live in tensors there; retried after freeing %s "
                   "of cached blocks)", nbytes, d->name, want, live, freed);
        return NULL;
    }
    nnr_account((int64_t)rounded);
    nnr_account_device(device, (int64_t)rounded);
    return p;
}

void nnr_free_device(int device, void *ptr, size_t nbytes)
{
    if (!ptr) return;
    const nnr_device_entry *d = nnr_device_get(device);
    size_t rounded;
    int cls = size_class(nbytes, &rounded);
    nnr_account(-(int64_t)rounded);
    nnr_account_device(device, -(int64_t)rounded);
    device_cache *c = &caches[device];
    block *b = cls >= 0 && (int64_t)rounded <= cache_limit / 4 ? malloc(sizeof *b) : NULL;
    if (b) {
        pthread_mutex_lock(&c->lock);
        /* full: make room by dropping the largest cached blocks (stale big ones go first) */
        for (int k = N_BINS - 1; k > cls && c->cached + (int64_t)rounded > cache_limit; k--) {
            while (c->bins[k] && c->cached + (int64_t)rounded > cache_limit) {
                block *victim = c->bins[k];
                c->bins[k] = victim->next;
                size_t vr;
                size_class_bytes(k, &vr);
                c->cached -= (int64_t)vr;
                d->plugin->buffer_free(d->plugin, d->local_index, victim->ptr);
                free(victim);
            }
        }
        if (c->cached + (int64_t)rounded <= cache_limit) {
            b->ptr = ptr;
            b->next = c->bins[cls];
            c->bins[cls] = b;
            c->cached += (int64_t)rounded;
            ptr = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        if (ptr) free(b);
    }
    if (ptr) d->plugin->buffer_free(d->plugin, d->local_index, ptr);
}

int64_t nnr_device_cached_bytes(int device)
{
    if (device < 0 || device >= MAX_DEVICES || !nnr_device_get(device)) return -1;
    pthread_once(&caches_once, caches_init);
    pthread_mutex_lock(&caches[device].lock);
    int64_t n = caches[device].cached;
    pthread_mutex_unlock(&caches[device].lock);
    return n;
}

void nnr_device_empty_cache(int device)
{
    if (device < 0 || device >= MAX_DEVICES || !nnr_device_get(device)) return;
    pthread_once(&caches_once, caches_init);
    drop_cache(device);
}

void nnr_empty_cache(void)
{
    pthread_once(&caches_once, caches_init);
    for (int i = 0; i < nnr_device_total(); i++) drop_cache(i);
    nnr_drop_pinned_cache();
}

int64_t nnr_cached_bytes(void)
{
    pthread_once(&caches_once, caches_init);
    int64_t total = 0;
    for (int i = 0; i < nnr_device_total(); i++) {
        pthread_mutex_lock(&caches[i].lock);
        total += caches[i].cached;
        pthread_mutex_unlock(&caches[i].lock);
    }
    return total;
}

int64_t nnr_live_bytes(void) { return atomic_load(&live_bytes); }
int64_t nnr_peak_bytes(void) { return atomic_load(&peak_bytes); }
volatile int32_t *nnr_gc_flag(void) { return &gc_flag; }

void nnr_gc_done(void)
{
    atomic_store(&live_at_gc, atomic_load(&live_bytes));
    gc_flag = 0;
}
