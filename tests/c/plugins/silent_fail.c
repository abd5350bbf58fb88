/* Probes fine; init fails without giving a reason (and without touching *out). */
#include "nnr/plugin.h"
NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 5; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)h; (void)abi; (void)out;
    return NNR_ERR_DEVICE;
}
