/* Probes fine but fails to initialise, with a reason. */
#include "nnr/plugin.h"
NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 5; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)abi; (void)out;
    h->set_error("no driver found (this plugin always fails)");
    return NNR_ERR_DEVICE;
}
