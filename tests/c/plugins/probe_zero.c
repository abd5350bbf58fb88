/* Says it cannot run on this machine (as a plugin for missing hardware would). */
#include "nnr/plugin.h"
NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 0; }
NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t abi, nnr_plugin **out)
{
    (void)h; (void)abi; (void)out;
    return NNR_ERR_INTERNAL;   /* never reached: the host must not call init after a zero probe */
}
