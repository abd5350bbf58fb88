/* The device table and the services the host lends plugins. Device roles come from what plugins
 * declare (nnr_plugin.flags, device_props), never from their names: the host backend (the
 * highest-scoring backend that offers NNR_PLUGIN_HOST) supplies device 0, where the core makes its
 * host tensors and runs what other backends lack; a device whose props say NNR_DEVICE_HOST_MEMORY
 * has data pointers the core may read directly. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "base/internal.h"

static nnr_device_entry devices[NNR_MAX_DEVICES];
static int n_devices;
static nnr_plugin *host_backend;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
/* the other backends' devices (cuda's) are counted on first need, not at init: counting them starts
 * their runtime (CUDA's takes 0.1-0.5 s on a GPU machine), which a script on the cpu should not pay */
static pthread_once_t others_once = PTHREAD_ONCE_INIT;
static int num_threads;

static int log_threshold = NNR_LOG_WARN;   /* NNR_LOG, read once by do_init before any thread logs */

static void host_log(int level, const char *plugin, const char *message)
{
    if (level < log_threshold) return;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "nnr[%s] %s: %s\n", plugin ? plugin : "core", names[level < 0 ? 0 : level > 3 ? 3 : level], message);
}

static void host_set_error(const char *message) { nnr_set_error(NNR_ERR_INTERNAL, message); }

/* Blocks of 4 MiB and more are 2 MiB aligned. With NNR_HUGEPAGES=1 they are also asked to be
 * backed by transparent huge pages: first touch of a fresh 128 MiB tensor then costs 64 page faults
 * instead of 32768, when the kernel has huge pages at hand. Off by default (as PyTorch's
 * THP_MEM_ALLOC_ENABLE): with THP defrag "madvise" (Debian's default) a fragmented machine compacts
 * memory on each such fault, and a fresh 64 MiB block took 125 ms to touch instead of 12-15 ms
 * (docs/perf.md); on memory the caching allocator hands back, the two differ by ~5%. */
static int huge_pages = 0;   /* NNR_HUGEPAGES, read once by do_init */

static void *host_alloc(size_t nbytes)
{
    void *p = NULL;
    size_t huge = (size_t)2 << 20;
    if (nbytes >= 2 * huge) {
        size_t rounded = (nbytes + huge - 1) & ~(huge - 1);
        if (posix_memalign(&p, huge, rounded) != 0) return NULL;
        if (huge_pages) madvise(p, rounded, MADV_HUGEPAGE);
        return p;
    }
    if (posix_memalign(&p, 64, nbytes ? nbytes : 64) != 0) return NULL;
    return p;
}

static void host_free(void *ptr) { free(ptr); }
static int host_num_threads(void) { return nnr_get_num_threads(); }
static int host_parallel_for(int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t), void *ctx);

const nnr_host_api nnr_host = {
    .struct_size = sizeof(nnr_host_api),
    .abi_version = NNR_ABI_VERSION,
    .log = host_log,
    .set_error = host_set_error,
    .host_alloc = host_alloc,
    .host_free = host_free,
    .interrupted = nnr_interrupted_flag,
    .num_threads = host_num_threads,
    .parallel_for = host_parallel_for,
};

/* the host backend's pool (ABI 1.7), else one piece on the calling thread */
static int host_parallel_for(int64_t n, int64_t grain, void (*fn)(void *, int64_t, int64_t), void *ctx)
{
    if (n <= 0) return NNR_OK;
    nnr_plugin *b = host_backend;
    if (b && (b->abi_version & 0xffff) >= 7 && NNR_HAS_FIELD(b, nnr_plugin, parallel_for) && b->parallel_for)
        return b->parallel_for(b, n, grain, fn, ctx);
    fn(ctx, 0, n);
    return nnr_interrupted_flag() ? NNR_ERR_INTERRUPTED : NNR_OK;
}

/* flags is ABI 1.4's (before, a reserved field nobody had to zero) */
static int offers_host(const nnr_plugin *p)
{
    return p->kind == NNR_PLUGIN_BACKEND && (p->abi_version & 0xffff) >= 4 && (p->flags & NNR_PLUGIN_HOST);
}

/* the device's declared properties (zeros when the plugin predates ABI 1.4 or has none) */
static void read_props(nnr_plugin *p, int device, nnr_device_props *props)
{
    memset(props, 0, sizeof *props);
    props->struct_size = sizeof *props;
    if (NNR_HAS_FIELD(p, nnr_plugin, device_props) && p->device_props && p->device_props(p, device, props) != NNR_OK) {
        memset(props, 0, sizeof *props);
        nnr_set_error(NNR_OK, "");
    }
    props->struct_size = sizeof *props;
    props->model[sizeof props->model - 1] = 0;      /* the plugin may have filled all of it */
}

static pthread_mutex_t add_lock = PTHREAD_MUTEX_INITIALIZER;     /* devices are appended one caller at a time */

/* the plugin's devices from local index `from` on */
static void add_devices_from(nnr_plugin_record *r, int from)
{
    nnr_plugin *p = r->plugin;
    int count = 0;
    if (p->device_count(p, &count) != NNR_OK || count <= 0) {
        /* loaded, but no device: keep the plugin's reason (e.g. CUDA's "insufficient driver") */
        const char *why = nnr_last_error();
        snprintf(r->message, sizeof r->message, "%.250s", why && why[0] ? why : "no device");
        nnr_set_error(NNR_OK, "");      /* kept in the record; not this thread's error any more */
        return;
    }
    for (int i = from; i < count && n_devices < NNR_MAX_DEVICES; i++) {
        nnr_device_entry *d = &devices[n_devices];
        nnr_device_props *props = &d->props;
        read_props(p, i, props);      /* once: static properties, and device_props is not thread-safe */
        d->plugin = p;
        d->local_index = i;
        d->host_memory = (props->flags & NNR_DEVICE_HOST_MEMORY) || p == host_backend;
        if (d->host_memory) props->flags |= NNR_DEVICE_HOST_MEMORY;
        /* the host device answers to the plugin's name alone ("cpu"); every device also to "name:i" */
        if (p == host_backend && i == 0) snprintf(d->name, sizeof d->name, "%s", p->name);
        else snprintf(d->name, sizeof d->name, "%s:%d", p->name, i);
        d->label[0] = 0;
        if (p->device_name) p->device_name(p, i, d->label, sizeof d->label);
        d->label[sizeof d->label - 1] = 0;
        _Static_assert(sizeof props->model <= sizeof d->label, "a device's model fits its label");
        if (!d->label[0] && props->model[0]) {
            size_t n = strnlen(props->model, sizeof props->model - 1);
            memcpy(d->label, props->model, n);
            d->label[n] = 0;
        }
        r->devices++;
        __atomic_store_n(&n_devices, n_devices + 1, __ATOMIC_RELEASE);     /* published once written */
    }
}

static void add_devices(nnr_plugin_record *r)
{
    pthread_mutex_lock(&add_lock);
    add_devices_from(r, 0);
    pthread_mutex_unlock(&add_lock);
}

static nnr_plugin_record *record_of(const nnr_plugin *p)
{
    for (int i = 0; i < nnr_plugin_record_count(); i++)
        if (nnr_plugin_record_at(i)->plugin == p) return nnr_plugin_record_at(i);
    return NULL;
}

/* "cpu:3" past the host backend's devices: asks it for index + 1 of them (option "devices"; the cpu
 * plugin makes more devices over the same memory, each with its share of the threads) and adds the
 * new ones. 0 when it has them now, else an error set (the plugin's reason) */
static int grow_host(int want)
{
    nnr_plugin_record *r = record_of(host_backend);
    if (!r || !NNR_HAS_FIELD(host_backend, nnr_plugin, set_option) || !host_backend->set_option) return -1;
    char v[16];
    snprintf(v, sizeof v, "%d", want);
    pthread_mutex_lock(&add_lock);
    int st = host_backend->set_option(host_backend, "devices", v);
    if (st == NNR_OK) add_devices_from(r, r->devices);
    int have = r->devices;
    pthread_mutex_unlock(&add_lock);
    return st == NNR_OK && have >= want ? 0 : -1;
}

/* the nnr folder beside this library: <libdir>/nnr, or NULL */
static const char *plugin_dir_beside_library(char *buf, size_t n)
{
    Dl_info info;
    if (!dladdr((void *)nnr_init, &info) || !info.dli_fname) return NULL;
    if ((size_t)snprintf(buf, n, "%s", info.dli_fname) >= n) return NULL;      /* too long: not a path to guess at */
    char *slash = strrchr(buf, '/');
    if (!slash) return NULL;
    if ((size_t)snprintf(slash, n - (size_t)(slash - buf), "/nnr") >= n - (size_t)(slash - buf)) return NULL;
    return buf;
}

static void do_init(void)
{
    log_threshold = (int)nnr_env_int("NNR_LOG", NNR_LOG_WARN, 0, 4);
    huge_pages = (int)nnr_env_int("NNR_HUGEPAGES", 0, 0, 1);
    nnr_allocator_init();
    num_threads = (int)nnr_env_int(getenv("NNR_NUM_THREADS") ? "NNR_NUM_THREADS" : "OMP_NUM_THREADS", 0, 1, 4096);
    if (num_threads <= 0) num_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (num_threads <= 0) num_threads = 1;
    char dir[1024];
    nnr_plugins_scan(plugin_dir_beside_library(dir, sizeof dir));
    /* the host backend: the highest probe score among those offering the role; on a tie, the first */
    nnr_plugin_record *host = NULL;
    for (int i = 0; i < nnr_plugin_record_count(); i++) {
        nnr_plugin_record *r = nnr_plugin_record_at(i);
        if (r->loaded && offers_host(r->plugin) && (!host || r->score > host->score)) host = r;
    }
    if (host) {
        host_backend = host->plugin;
        add_devices(host);             /* device 0 is the host device */
        if (n_devices == 0) host_backend = NULL;
    }
    nnr_set_num_threads(num_threads);
}

/* no host device, no devices at all: the core's own host tensors would land on another device */
static void add_other_devices(void)
{
    for (int i = 0; host_backend && i < nnr_plugin_record_count(); i++) {
        nnr_plugin_record *r = nnr_plugin_record_at(i);
        if (r->loaded && r->plugin != host_backend && r->plugin->kind == NNR_PLUGIN_BACKEND) add_devices(r);
    }
}

void nnr_devices_all(void)
{
    nnr_init();
    pthread_once(&others_once, add_other_devices);
}

int nnr_host_ready(void) { nnr_init(); return host_backend != NULL && n_devices > 0; }

int nnr_init(void)
{
    pthread_once(&init_once, do_init);
    int n = 0;
    for (int i = 0; i < nnr_plugin_record_count(); i++) n += nnr_plugin_record_at(i)->loaded;
    if (!host_backend || n_devices == 0)
        nnr_errorf(NNR_ERR_DEVICE, "no host backend: no plugin of ABI 1.4 or later offering NNR_PLUGIN_HOST has a device (the cpu "
                   "plugin does; looked in NNR_PLUGIN_PATH, the registration files and the nnr plugin folder beside libnnr; see "
                   "nnrun --plugins)");
    return n;
}

int nnr_device_total(void) { return __atomic_load_n(&n_devices, __ATOMIC_ACQUIRE); }
int nnr_device_count(void) { nnr_devices_all(); return nnr_device_total(); }
int nnr_host_device(void) { return 0; }

const nnr_device_entry *nnr_device_get(int device)
{
    return (device >= 0 && device < nnr_device_total()) ? &devices[device] : NULL;
}

bool nnr_device_is_host_memory(int device)
{
    const nnr_device_entry *d = nnr_device_get(device);
    return d && d->host_memory;
}

const char *nnr_device_type(int device) { return nnr_device_get(device) ? devices[device].plugin->name : NULL; }
int nnr_device_local_index(int device) { return nnr_device_get(device) ? devices[device].local_index : -1; }
const char *nnr_device_name(int device) { return nnr_device_get(device) ? devices[device].name : NULL; }
const char *nnr_device_label(int device) { return nnr_device_get(device) ? devices[device].label : NULL; }
int nnr_device_host_memory(int device) { return nnr_device_is_host_memory(device); }

int nnr_device_props_of(int device, nnr_device_props *out)
{
    const nnr_device_entry *d = nnr_device_get(device);
    if (!d) return nnr_errorf(NNR_ERR_DEVICE, "device_props: no device %d", device);
    *out = d->props;
    return NNR_OK;
}

/* free and total bytes of the device's memory: the plugin's memory_info when it has one, else the
 * total it declares (free unknown: -1) */
int nnr_device_memory_info(int device, int64_t *free_bytes, int64_t *total_bytes)
{
    const nnr_device_entry *d = nnr_device_get(device);
    *free_bytes = *total_bytes = -1;
    if (!d) return nnr_errorf(NNR_ERR_DEVICE, "memory_info: no device %d", device);
    nnr_plugin *p = d->plugin;
    if (NNR_HAS_FIELD(p, nnr_plugin, memory_info) && p->memory_info) {
        uint64_t f = 0, t = 0;
        int st = p->memory_info(p, d->local_index, &f, &t);
        if (st != NNR_OK) return nnr_errorf(st, "memory_info: %s: %s", d->name, nnr_last_error());
        *free_bytes = (int64_t)f;
        *total_bytes = (int64_t)t;
        return NNR_OK;
    }
    if (d->props.total_memory) *total_bytes = (int64_t)d->props.total_memory;
    return NNR_OK;
}

/* the plugin's own caches for the device, given back (the allocator's out-of-memory path) */
void nnr_device_release_memory(int device)
{
    const nnr_device_entry *d = nnr_device_get(device);
    if (d && NNR_HAS_FIELD(d->plugin, nnr_plugin, release_memory) && d->plugin->release_memory)
        d->plugin->release_memory(d->plugin, d->local_index);
}

static int parse_spec(const char *spec, char *type, size_t n, int *index)
{
    const char *colon = strchr(spec, ':');
    size_t tlen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (tlen == 0 || tlen >= n) return -1;
    memcpy(type, spec, tlen);
    type[tlen] = 0;
    *index = 0;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || v < 0 || v > 1 << 20) return -1;
        *index = (int)v;
    }
    return 0;
}

int nnr_device_find(const char *spec)
{
    nnr_init();
    char type[64];
    int index;
    if (parse_spec(spec, type, sizeof type, &index))
        return nnr_errorf(NNR_ERR_INVALID, "device '%s': expected a name like \"cpu\" or \"cuda:1\"", spec), -1;
    if (!host_backend || strcmp(type, host_backend->name) != 0) nnr_devices_all();   /* another backend's: count them now */
    int seen = 0;
    for (int i = 0; i < nnr_device_total(); i++) {
        if (strcmp(devices[i].plugin->name, type) != 0) continue;
        if (devices[i].local_index == index) return i;
        seen++;
    }
    if (host_backend && strcmp(type, host_backend->name) == 0 && index >= seen && seen > 0) {
        if (grow_host(index + 1) == 0) return nnr_device_find(spec);
        const char *why = nnr_last_error();
        return nnr_errorf(NNR_ERR_DEVICE, "device '%s': %s", spec, why && why[0] ? why : "the backend cannot make more devices"), -1;
    }
    int r = nnr_plugin_find(type);
    const char *msg = r >= 0 ? nnr_plugin_message(r) : "";
    if (seen)
        return nnr_errorf(NNR_ERR_DEVICE, "device '%s': only %d %s device(s) present (%s)", spec, seen, type, msg), -1;
    if (r >= 0 && nnr_plugin_loaded(r))
        return nnr_errorf(NNR_ERR_DEVICE, "device '%s': the %s plugin has no device: %s", spec, type, msg), -1;
    if (r >= 0) return nnr_errorf(NNR_ERR_DEVICE, "device '%s': plugin %s was refused: %s", spec, type, msg), -1;
    return nnr_errorf(NNR_ERR_DEVICE, "device '%s': no backend plugin provides '%s' (see nnrun --plugins)", spec, type), -1;
}

int nnr_synchronize(int device)
{
    const nnr_device_entry *d = nnr_device_get(device);
    if (!d) return nnr_errorf(NNR_ERR_DEVICE, "synchronize: no device %d", device);
    if (d->plugin->synchronize) return d->plugin->synchronize(d->plugin, d->local_index);
    return NNR_OK;
}

void nnr_set_num_threads(int n)
{
    if (n <= 0) n = 1;
    num_threads = n;
    for (int i = 0; i < nnr_plugin_record_count(); i++) {
        nnr_plugin_record *r = nnr_plugin_record_at(i);
        if (r->loaded && r->plugin->set_num_threads) r->plugin->set_num_threads(r->plugin, n);
    }
}

int nnr_get_num_threads(void) { return num_threads > 0 ? num_threads : 1; }

double nnr_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *nnr_version(void) { return NNR_VERSION_STRING; }
