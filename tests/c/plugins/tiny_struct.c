/* A plugin object whose struct_size is smaller than any ABI's: not a compatible plugin, whatever
 * version it claims. */
#include "nnr/plugin.h"

static nnr_plugin plugin = {.struct_size = 16, .abi_version = NNR_ABI_VERSION, .name = "tiny", .kind = NNR_PLUGIN_BACKEND};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 5; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)h; (void)abi;
    *out = &plugin;
    return NNR_OK;
}
