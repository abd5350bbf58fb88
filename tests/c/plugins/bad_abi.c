/* A plugin built against a future ABI major: the host must refuse it. */
#include "nnr/plugin.h"

static nnr_plugin plugin = {.struct_size = sizeof(nnr_plugin), .abi_version = (99u << 16), .name = "future",
                            .kind = NNR_PLUGIN_BACKEND};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 50; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)h; (void)abi;
    *out = &plugin;   /* a careless plugin that does not check the host's version */
    return NNR_OK;
}
