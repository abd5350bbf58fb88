/* The memory half of the test backends whose device memory is host memory (hostdev, liar,
 * old_host): blocks from the host's allocator, copies by memmove. The including plugin sets `host`
 * in its nnr_plugin_init. (examples/plugin/testdev.c keeps its own copy: an example stands alone.) */
#ifndef NNR_TEST_HOST_MEMORY_H
#define NNR_TEST_HOST_MEMORY_H

#include <stdio.h>
#include <string.h>
#include "nnr/plugin.h"

static const nnr_host_api *host;

static nnr_status buffer_alloc(nnr_plugin *self, int device, size_t nbytes, void **out)
{
    (void)device;
    *out = host->host_alloc(nbytes ? nbytes : 1);
    if (*out) return NNR_OK;
    char why[96];
    snprintf(why, sizeof why, "%s: out of memory", self->name);
    host->set_error(why);
    return NNR_ERR_OOM;
}

static void buffer_free(nnr_plugin *self, int device, void *ptr) { (void)self; (void)device; host->host_free(ptr); }

static nnr_status copy(nnr_plugin *self, int device, int kind, void *dst, const void *src, size_t nbytes)
{
    (void)self; (void)device; (void)kind;
    memmove(dst, src, nbytes);
    return NNR_OK;
}

#endif
