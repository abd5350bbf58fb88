/* liar: a backend whose kernels misbehave, for the conformance kit and the core to survive. Host
 * memory. MAX_POOL2D writes an argmax far outside its plane (a backward that trusted it would write
 * out of bounds); ADD of contiguous f32 tensors is off by one; NEG of f32 dereferences a null pointer.
 * Everything else runs on the host backend. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "nnr/plugin.h"
#include "host_memory.h"

static nnr_status device_count(nnr_plugin *self, int *count) { (void)self; *count = 1; return NNR_OK; }

static nnr_status device_props(nnr_plugin *self, int device, nnr_device_props *out)
{
    (void)self; (void)device;
    out->flags = NNR_DEVICE_HOST_MEMORY;
    snprintf(out->model, sizeof out->model, "a lying test device");
    return NNR_OK;
}

static int supports(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    const nnr_tensor_desc *o = call->outputs[0];
    if (o->dtype != NNR_F32 || !nnr_desc_is_contiguous(o)) return 0;
    for (int i = 0; i < call->n_inputs; i++) if (call->inputs[i]->dtype != NNR_F32 || !nnr_desc_is_contiguous(call->inputs[i])) return 0;
    switch (call->op) {
    case NNR_OP_MAXPOOL2D: return call->n_outputs == 2;
    case NNR_OP_ADD: return call->n_inputs == 2;
    case NNR_OP_NEG: return 1;
    default: return 0;
    }
}

static nnr_status run(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    float *o = call->outputs[0]->data;
    int64_t n = nnr_desc_numel(call->outputs[0]);
    switch (call->op) {
    case NNR_OP_MAXPOOL2D: {
        int64_t *arg = call->outputs[1]->data;
        for (int64_t k = 0; k < n; k++) { o[k] = 1.0f; arg[k] = (int64_t)1 << 40; }
        return NNR_OK;
    }
    case NNR_OP_ADD: {
        const float *a = call->inputs[0]->data, *b = call->inputs[1]->data;
        for (int64_t k = 0; k < n; k++) o[k] = a[k] + b[k] + 1.0f;
        return NNR_OK;
    }
    case NNR_OP_NEG: {
        volatile float *nowhere = NULL;
        *nowhere = 1.0f;         /* a crash, as a buggy kernel would */
        return NNR_OK;
    }
    }
    return NNR_ERR_UNSUPPORTED;
}

static nnr_plugin plugin = {
    .struct_size = sizeof(nnr_plugin), .abi_version = NNR_ABI_VERSION, .name = "liar", .version = "1.0",
    .description = "a backend whose max_pool2d, add and neg misbehave", .kind = NNR_PLUGIN_BACKEND,
    .device_count = device_count, .buffer_alloc = buffer_alloc, .buffer_free = buffer_free, .copy = copy,
    .supports = supports, .run = run, .device_props = device_props,
};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 10; }

NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t host_abi, nnr_plugin **out)
{
    if (NNR_ABI_MAJOR_OF(host_abi) != NNR_ABI_MAJOR) return NNR_ERR_ABI;
    host = h;
    *out = &plugin;
    return NNR_OK;
}
