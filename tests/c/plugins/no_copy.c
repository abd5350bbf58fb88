/* A backend without copy(): the host must refuse it, naming the entry point it lacks. */
#include "nnr/plugin.h"

static nnr_status count(nnr_plugin *self, int *n) { (void)self; *n = 1; return NNR_OK; }
static nnr_status alloc(nnr_plugin *self, int device, size_t nbytes, void **out) { (void)self; (void)device; (void)nbytes; *out = 0; return NNR_ERR_OOM; }
static void release(nnr_plugin *self, int device, void *ptr) { (void)self; (void)device; (void)ptr; }
static int supports(nnr_plugin *self, const nnr_op_call *call) { (void)self; (void)call; return 0; }
static nnr_status run(nnr_plugin *self, const nnr_op_call *call) { (void)self; (void)call; return NNR_ERR_UNSUPPORTED; }

static nnr_plugin plugin = {.struct_size = sizeof(nnr_plugin), .abi_version = NNR_ABI_VERSION, .name = "nocopy",
                            .kind = NNR_PLUGIN_BACKEND, .device_count = count, .buffer_alloc = alloc, .buffer_free = release,
                            .supports = supports, .run = run};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 5; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)h;
    if (NNR_ABI_MAJOR_OF(abi) != NNR_ABI_MAJOR) return NNR_ERR_ABI;
    *out = &plugin;
    return NNR_OK;
}
