/* Page-locked host memory (the loader's pin_memory), from the first plugin that offers it.
 * Pinning is slow (a driver call per block), so freed blocks are kept by size for the next batch
 * of the same shape, up to PINNED_CACHE blocks. */
#include <pthread.h>
#include "base/internal.h"

enum { PINNED_CACHE = 64 };
static pthread_mutex_t pinned_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { nnr_plugin *plugin; void *ptr; size_t nbytes; } pinned_cache[PINNED_CACHE];
static int pinned_cached;

nnr_plugin *nnr_pinned_plugin(void)
{
    int n = nnr_device_count();
    for (int i = 0; i < n; i++) {
        const nnr_device_entry *d = nnr_device_get(i);
        nnr_plugin *p = d ? d->plugin : NULL;
        if (p && NNR_HAS_FIELD(p, nnr_plugin, host_free_pinned) && p->host_alloc_pinned && p->host_free_pinned) return p;
    }
    return NULL;
}

void *nnr_alloc_pinned(size_t nbytes, nnr_plugin **plugin)
{
    *plugin = nnr_pinned_plugin();
    if (!*plugin) return NULL;
    void *p = NULL;
    pthread_mutex_lock(&pinned_lock);
    for (int i = 0; i < pinned_cached; i++)
        if (pinned_cache[i].plugin == *plugin && pinned_cache[i].nbytes == nbytes) {
            p = pinned_cache[i].ptr;
            pinned_cache[i] = pinned_cache[--pinned_cached];
            break;
        }
    pthread_mutex_unlock(&pinned_lock);
    if (p) {
        /* a reused block may still be the source of an asynchronous copy to the device */
        int n = nnr_device_count();
        for (int i = 0; i < n; i++) {
            const nnr_device_entry *d = nnr_device_get(i);
            if (d->plugin == *plugin && d->plugin->synchronize) d->plugin->synchronize(d->plugin, d->local_index);
        }
    }
    if (!p && (*plugin)->host_alloc_pinned(*plugin, nbytes ? nbytes : 1, &p) != NNR_OK) p = NULL;
    if (!p) { *plugin = NULL; return NULL; }
    nnr_account((int64_t)nbytes);
    nnr_account_device(nnr_host_device(), (int64_t)nbytes);
    return p;
}

void nnr_free_pinned(nnr_plugin *plugin, void *ptr, size_t nbytes)
{
    nnr_account(-(int64_t)nbytes);
    nnr_account_device(nnr_host_device(), -(int64_t)nbytes);
    pthread_mutex_lock(&pinned_lock);
    if (pinned_cached < PINNED_CACHE) {
        pinned_cache[pinned_cached].plugin = plugin;
        pinned_cache[pinned_cached].ptr = ptr;
        pinned_cache[pinned_cached].nbytes = nbytes;
        pinned_cached++;
        ptr = NULL;
    }
    pthread_mutex_unlock(&pinned_lock);
    if (ptr) plugin->host_free_pinned(plugin, ptr, nbytes ? nbytes : 1);
}

/* before plugins shut down: hand cached pinned blocks back */
void nnr_drop_pinned_cache(void)
{
    pthread_mutex_lock(&pinned_lock);
    for (int i = 0; i < pinned_cached; i++) pinned_cache[i].plugin->host_free_pinned(pinned_cache[i].plugin, pinned_cache[i].ptr, pinned_cache[i].nbytes ? pinned_cache[i].nbytes : 1);
    pinned_cached = 0;
    pthread_mutex_unlock(&pinned_lock);
}
