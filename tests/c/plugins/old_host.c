/* A backend built against ABI 1.3, when today's `flags` was a reserved field nobody had to zero:
 * this one holds 1 there (NNR_PLUGIN_HOST's bit) and probes higher than the cpu plugin. It must load
 * as an ordinary backend and never become the host backend. Its one device runs nothing. */
#include <string.h>
#include "nnr/plugin.h"
#include "host_memory.h"

static nnr_status device_count(nnr_plugin *self, int *count) { (void)self; *count = 1; return NNR_OK; }

static int supports(nnr_plugin *self, const nnr_op_call *call) { (void)self; (void)call; return 0; }
static nnr_status run(nnr_plugin *self, const nnr_op_call *call) { (void)self; (void)call; return NNR_ERR_UNSUPPORTED; }

static nnr_plugin plugin = {
    .struct_size = offsetof(nnr_plugin, device_props),       /* the 1.3 struct ended there */
    .abi_version = (1u << 16) | 3,
    .name = "oldhost",
    .version = "1.0",
    .kind = NNR_PLUGIN_BACKEND,
    .flags = 1,                                              /* 1.3's reserved field, not zeroed */
    .device_count = device_count,
    .buffer_alloc = buffer_alloc,
    .buffer_free = buffer_free,
    .copy = copy,
    .supports = supports,
    .run = run,
};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 1000; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)abi;
    host = h;
    *out = &plugin;
    return NNR_OK;
}
