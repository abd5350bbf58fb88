/* testdev: an example out-of-tree backend plugin, built against the installed
 * headers alone (nnr/plugin.h). It provides two "testdev" devices and
 * implements three ops for contiguous f32 tensors: fill, copy and add. Its
 * memory comes from malloc, but it does not declare NNR_DEVICE_HOST_MEMORY:
 * the core treats it as a device's memory, reached only through copy(), as
 * it would a GPU's. Everything else runs on the host backend through the
 * core's fallback, with copies, which makes it a test of that path too.
 *
 * Build: cmake -S examples/plugin -B build-plugin -DCMAKE_PREFIX_PATH=<nnr prefix> (CMakeLists.txt: installs
 *        under your prefix and registers it), or cc -shared -fPIC $(pkg-config --cflags nnr-plugin) testdev.c
 * Use:   NNR_PLUGIN_PATH=build-plugin nnrun -e 'print(nnr.ones(3, {device="testdev:1"}))' */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <nnr/plugin.h>

static const nnr_host_api *host;

static nnr_status device_count(nnr_plugin *self, int *count) { (void)self; *count = 2; return NNR_OK; }

static nnr_status device_name(nnr_plugin *self, int device, char *buf, size_t n)
{
    (void)self;
    snprintf(buf, n, "test device %d", device);
    return NNR_OK;
}

/* ABI 1.4: what the core may know of a device. No NNR_DEVICE_HOST_MEMORY: the core copies. */
static nnr_status device_props(nnr_plugin *self, int device, nnr_device_props *out)
{
    (void)self;
    out->flags = 0;
    out->total_memory = 0;          /* unknown: malloc's */
    out->compute_units = 1;
    snprintf(out->model, sizeof out->model, "testdev %d", device);
    return NNR_OK;
}

static nnr_status buffer_alloc(nnr_plugin *self, int device, size_t nbytes, void **out)
{
    (void)self; (void)device;
    *out = malloc(nbytes ? nbytes : 1);
    if (!*out) { host->set_error("testdev: out of memory"); return NNR_ERR_OOM; }
    return NNR_OK;
}

static void buffer_free(nnr_plugin *self, int device, void *ptr) { (void)self; (void)device; free(ptr); }

static nnr_status copy(nnr_plugin *self, int device, int kind, void *dst, const void *src, size_t nbytes)
{
    (void)self; (void)device; (void)kind;
    memmove(dst, src, nbytes);
    return NNR_OK;
}

/* page-locked host memory: what a GPU plugin gives the loader's pin_memory, here with mlock */
static nnr_status host_alloc_pinned(nnr_plugin *self, size_t nbytes, void **out)
{
    (void)self;
    void *p = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { host->set_error("testdev: out of memory"); return NNR_ERR_OOM; }
    if (mlock(p, nbytes) != 0) { munmap(p, nbytes); host->set_error("testdev: mlock failed (RLIMIT_MEMLOCK)"); return NNR_ERR_OOM; }
    *out = p;
    return NNR_OK;
}

static void host_free_pinned(nnr_plugin *self, void *ptr, size_t nbytes)
{
    (void)self;
    munlock(ptr, nbytes);
    munmap(ptr, nbytes);
}

static int supports(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    if (call->struct_size < sizeof(nnr_op_call) || call->n_outputs != 1) return 0;
    const nnr_tensor_desc *o = call->outputs[0];
    if (o->dtype != NNR_F32 || !nnr_desc_is_contiguous(o)) return 0;
    for (int i = 0; i < call->n_inputs; i++)
        if (call->inputs[i]->dtype != NNR_F32 || !nnr_desc_is_contiguous(call->inputs[i]) || nnr_desc_numel(call->inputs[i]) != nnr_desc_numel(o)) return 0;
    switch (call->op) {
    case NNR_OP_FILL: return call->n_inputs == 0;
    case NNR_OP_COPY: return call->n_inputs == 1;
    case NNR_OP_ADD: return call->n_inputs == 2;
    default: return 0;
    }
}

static nnr_status run(nnr_plugin *self, const nnr_op_call *call)
{
    (void)self;
    float *o = call->outputs[0]->data;
    int64_t n = nnr_desc_numel(call->outputs[0]);
    switch (call->op) {
    case NNR_OP_FILL: for (int64_t i = 0; i < n; i++) o[i] = (float)call->params->f[0]; return NNR_OK;
    case NNR_OP_COPY: memmove(o, call->inputs[0]->data, (size_t)n * sizeof(float)); return NNR_OK;
    case NNR_OP_ADD: {
        const float *a = call->inputs[0]->data, *b = call->inputs[1]->data;
        for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i];
        return NNR_OK;
    }
    }
    host->set_error("testdev: op not implemented");
    return NNR_ERR_UNSUPPORTED;
}

static nnr_plugin plugin = {
    .struct_size = sizeof(nnr_plugin),
    .abi_version = NNR_ABI_VERSION,
    .name = "testdev",
    .version = "1.0",
    .description = "example backend: fill/copy/add for contiguous f32, everything else through the fallback",
    .kind = NNR_PLUGIN_BACKEND,
    .device_count = device_count,
    .device_name = device_name,
    .buffer_alloc = buffer_alloc,
    .buffer_free = buffer_free,
    .copy = copy,
    .supports = supports,
    .run = run,
    .host_alloc_pinned = host_alloc_pinned,
    .host_free_pinned = host_free_pinned,
    .device_props = device_props,
};

NNR_PLUGIN_EXPORT int nnr_plugin_probe(void) { return 10; }

NNR_PLUGIN_EXPORT nnr_status nnr_plugin_init(const nnr_host_api *h, uint32_t host_abi, nnr_plugin **out)
{
    if (NNR_ABI_MAJOR_OF(host_abi) != NNR_ABI_MAJOR) return NNR_ERR_ABI;
    host = h;
    *out = &plugin;
    return NNR_OK;
}
