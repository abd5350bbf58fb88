/* Exports a probe but no nnr_plugin_init: the host must refuse it. */
#include "nnr/plugin.h"
NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 1; }
