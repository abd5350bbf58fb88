/* The plugin registry: finds backend libraries, checks their ABI, keeps the
 * device table. A plugin that cannot be used is refused with a reason and the
 * others still load (DESIGN.md decision 7). */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

#define MAX_PLUGINS 32
#define MAX_DEVICES 64

typedef struct plugin_record {
    char path[512];
    char name[64];
    char version[32];
    char message[256];
    int loaded;
    int score;
    int devices;         /* how many it added */
    void *handle;
    nnr_plugin *plugin;
} plugin_record;

static plugin_record plugins[MAX_PLUGINS];
static int n_plugins;
static nnr_device_entry devices[MAX_DEVICES];
static int n_devices;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int num_threads;

static void host_log(int level, const char *plugin, const char *message)
{
    const char *env = getenv("NNR_LOG");
    int threshold = env ? atoi(env) : NNR_LOG_WARN;
    if (level < threshold) return;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "nnr[%s] %s: %s\n", plugin ? plugin : "core",
            names[level < 0 ? 0 : level > 3 ? 3 : level], message);
}

static void host_set_error(const char *message) { nnr_set_error(NNR_ERR_INTERNAL, message); }

/* Blocks of 4 MiB and more are 2 MiB aligned and asked to be backed by
 * transparent huge pages: first touch of a fresh 128 MiB tensor then costs
 * 64 page faults instead of 32768. */
static void *host_alloc(size_t nbytes)
{
    void *p = NULL;
    size_t huge = (size_t)2 << 20;
    if (nbytes >= 2 * huge) {
        size_t rounded = (nbytes + huge - 1) & ~(huge - 1);
        if (posix_memalign(&p, huge, rounded) != 0) return NULL;
        madvise(p, rounded, MADV_HUGEPAGE);
        return p;
    }
    if (posix_memalign(&p, 64, nbytes ? nbytes : 64) != 0) return NULL;
    return p;
}

static void host_free(void *ptr) { free(ptr); }
static int host_num_threads(void) { return nnr_get_num_threads(); }

const nnr_host_api nnr_host = {
    .struct_size = sizeof(nnr_host_api),
    .abi_version = NNR_ABI_VERSION,
    .log = host_log,
    .set_error = host_set_error,
    .host_alloc = host_alloc,
    .host_free = host_free,
    .interrupted = nnr_interrupted_flag,
    .num_threads = host_num_threads,
};

static void refuse(plugin_record *r, const char *fmt, const char *detail)
{
    snprintf(r->message, sizeof r->message, fmt, detail ? detail : "");
    r->loaded = 0;
    char line[768];
    snprintf(line, sizeof line, "refused %.500s: %.255s", r->path, r->message);
    host_log(NNR_LOG_INFO, NULL, line);
}

static int already_seen(const char *path)
{
    for (int i = 0; i < n_plugins; i++)
        if (strcmp(plugins[i].path, path) == 0) return 1;
    return 0;
}

static void try_load(const char *path)
{
    char real[512];
    if (!realpath(path, real)) snprintf(real, sizeof real, "%s", path);
    if (n_plugins >= MAX_PLUGINS || already_seen(real)) return;
    plugin_record *r = &plugins[n_plugins++];
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", real);
    const char *base = strrchr(real, '/');
    snprintf(r->name, sizeof r->name, "%.63s", base ? base + 1 : real);

    r->handle = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!r->handle) { refuse(r, "cannot load: %s", dlerror()); return; }
    nnr_plugin_probe_fn probe = (nnr_plugin_probe_fn)dlsym(r->handle, "nnr_plugin_probe");
    nnr_plugin_init_fn init = (nnr_plugin_init_fn)dlsym(r->handle, "nnr_plugin_init");
    if (!probe || !init) {
        refuse(r, "missing entry point %s", !probe ? "nnr_plugin_probe" : "nnr_plugin_init");
        dlclose(r->handle); r->handle = NULL;
        return;
    }
    r->score = probe();
    if (r->score <= 0) {
        refuse(r, "probe says unusable on this machine%s", "");
        dlclose(r->handle); r->handle = NULL;
        return;
    }
    nnr_plugin *p = NULL;
    nnr_status st = init(&nnr_host, NNR_ABI_VERSION, &p);
    if (st != NNR_OK || !p) {
        char why[240];
        snprintf(why, sizeof why, "init failed (status %d): %.200s", (int)st, nnr_last_error());
        refuse(r, "%s", why);
        dlclose(r->handle); r->handle = NULL;
        return;
    }
    if (p->struct_size < offsetof(nnr_plugin, shutdown) ||
        NNR_ABI_MAJOR_OF(p->abi_version) != NNR_ABI_MAJOR) {
        char why[160];
        snprintf(why, sizeof why, "ABI %u.%u, host speaks %d.x (struct_size %u)",
                 p->abi_version >> 16, p->abi_version & 0xffff, NNR_ABI_MAJOR, p->struct_size);
        refuse(r, "ABI mismatch: %s", why);
        /* the object is not ours to interpret: leave the library mapped */
        return;
    }
    if (p->kind == NNR_PLUGIN_BACKEND && (!p->run || !p->supports || !p->buffer_alloc ||
                                          !p->buffer_free || !p->copy || !p->device_count)) {
        refuse(r, "backend lacks a required function%s", "");
        return;
    }
    snprintf(r->name, sizeof r->name, "%s", p->name ? p->name : "?");
    snprintf(r->version, sizeof r->version, "%s", p->version ? p->version : "");
    snprintf(r->message, sizeof r->message, "%s", p->description ? p->description : "");
    for (int i = 0; i < n_plugins - 1; i++) {
        plugin_record *o = &plugins[i];
        if (o->loaded && strcmp(o->name, r->name) == 0) {
            if (o->score >= r->score) {
                char why[256];
                snprintf(why, sizeof why, "%.30s already provided by %.190s", r->name, o->path);
                if (NNR_HAS_FIELD(p, nnr_plugin, shutdown) && p->shutdown) p->shutdown(p);
                refuse(r, "%s", why);
                return;
            }
            o->loaded = 0;
            snprintf(o->message, sizeof o->message, "superseded by %.230s", r->path);
        }
    }
    r->plugin = p;
    r->loaded = 1;
}

static void scan_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[128];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 128) {
        size_t len = strlen(e->d_name);
        if (len > 3 && strcmp(e->d_name + len - 3, ".so") == 0) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    /* sorted, so that loading order (and device numbering) is stable */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j]; names[j] = names[j - 1]; names[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        try_load(path);
        free(names[i]);
    }
}

static void scan_path_entry(const char *entry)
{
    size_t len = strlen(entry);
    if (len > 3 && strcmp(entry + len - 3, ".so") == 0) try_load(entry);
    else scan_dir(entry);
}

static void add_devices(plugin_record *r)
{
    nnr_plugin *p = r->plugin;
    int count = 0;
    if (p->kind != NNR_PLUGIN_BACKEND) return;
    if (p->device_count(p, &count) != NNR_OK || count <= 0) {
        /* loaded, but no device: keep the plugin's reason (e.g. CUDA's "insufficient driver") */
        const char *why = nnr_last_error();
        snprintf(r->message, sizeof r->message, "%.250s", why && why[0] ? why : "no device");
        nnr_set_error(NNR_OK, "");      /* kept in the record; not this thread's error any more */
        r->devices = 0;
        return;
    }
    for (int i = 0; i < count && n_devices < MAX_DEVICES; i++) {
        nnr_device_entry *d = &devices[n_devices++];
        d->plugin = p;
        d->local_index = i;
        if (strcmp(p->name, "cpu") == 0 && i == 0) snprintf(d->name, sizeof d->name, "cpu");   /* also "cpu:0" */
        else snprintf(d->name, sizeof d->name, "%s:%d", p->name, i);
        d->label[0] = 0;
        if (p->device_name) p->device_name(p, i, d->label, sizeof d->label);
        r->devices++;
    }
}

/* OpenBLAS 0.3.21 (Debian 12) does not recognise recent CPUs and falls back
 * to its SSE3 "Prescott" kernels: on an AVX-512 Xeon that is 40-60 GFLOP/s
 * instead of 200. Before the cpu plugin (and so OpenBLAS) is loaded, name the
 * widest kernel family the CPU and the OS support, unless the user chose one. */
static void choose_blas_kernels(void)
{
    /* OpenBLAS's idle threads spin (sched_yield) for 2^28 cycles after each call,
     * taking the cores from our own kernels between gemms; let them sleep sooner */
    setenv("OPENBLAS_THREAD_TIMEOUT", "12", 0);
#if defined(__x86_64__)
    if (getenv("OPENBLAS_CORETYPE")) return;
    __builtin_cpu_init();
    /* __builtin_cpu_supports checks CPUID and, for AVX/AVX-512, the OS's XCR0 state */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 0);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        setenv("OPENBLAS_CORETYPE", "Haswell", 0);
#endif
}

static void do_init(void)
{
    if (!getenv("NNR_KEEP_BLAS_DETECTION")) choose_blas_kernels();
    const char *env = getenv("NNR_NUM_THREADS");
    if (!env) env = getenv("OMP_NUM_THREADS");
    num_threads = env ? atoi(env) : 0;
    if (num_threads <= 0) num_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (num_threads <= 0) num_threads = 1;

    const char *paths = getenv("NNR_PLUGIN_PATH");
    if (paths && *paths) {
        char *copy = strdup(paths), *save = NULL;
        for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save))
            scan_path_entry(tok);
        free(copy);
    }
    /* the plugin folder beside this library: <libdir>/nnr */
    Dl_info info;
    if (!getenv("NNR_NO_DEFAULT_PLUGINS") && dladdr((void *)nnr_init, &info) && info.dli_fname) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s", info.dli_fname);
        char *slash = strrchr(dir, '/');
        if (slash) {
            snprintf(slash, sizeof dir - (size_t)(slash - dir), "/nnr");
            scan_dir(dir);
        }
    }
    /* cpu first: it is device 0 and the fallback for every op */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n_plugins; i++)
            if (plugins[i].loaded && (strcmp(plugins[i].name, "cpu") == 0) == (pass == 0))
                add_devices(&plugins[i]);
    nnr_set_num_threads(num_threads);
}

int nnr_init(void)
{
    pthread_once(&init_once, do_init);
    int n = 0;
    for (int i = 0; i < n_plugins; i++) n += plugins[i].loaded;
    if (n_devices == 0 || strcmp(devices[0].plugin->name, "cpu") != 0)
        nnr_errorf(NNR_ERR_DEVICE, "no cpu backend loaded (looked in NNR_PLUGIN_PATH and the nnr plugin folder beside libnnr)");
    return n;
}

/* at exit, let plugins join their threads and free what they hold */
__attribute__((destructor)) static void shutdown_plugins(void)
{
    nnr_drop_pinned_cache();
    for (int i = n_plugins - 1; i >= 0; i--) {
        nnr_plugin *p = plugins[i].plugin;
        if (plugins[i].loaded && NNR_HAS_FIELD(p, nnr_plugin, shutdown) && p->shutdown) p->shutdown(p);
    }
}

int nnr_plugin_count(void) { nnr_init(); return n_plugins; }
static const plugin_record *rec(int i) { return (i >= 0 && i < n_plugins) ? &plugins[i] : NULL; }
const char *nnr_plugin_name(int i) { return rec(i) ? rec(i)->name : NULL; }
const char *nnr_plugin_path(int i) { return rec(i) ? rec(i)->path : NULL; }
const char *nnr_plugin_version(int i) { return rec(i) ? rec(i)->version : NULL; }
int nnr_plugin_loaded(int i) { return rec(i) ? rec(i)->loaded : 0; }
const char *nnr_plugin_message(int i) { return rec(i) ? rec(i)->message : NULL; }

/* a plugin by its name ("cuda"), or, for one refused before it could name itself, by its file
 * (libnnr_cuda.so); the loaded one first. -1 when none */
int nnr_plugin_find(const char *name)
{
    nnr_init();
    char file[96];
    snprintf(file, sizeof file, "libnnr_%.60s.so", name);
    int refused = -1;
    for (int i = 0; i < n_plugins; i++) {
        const char *base = strrchr(plugins[i].path, '/');
        base = base ? base + 1 : plugins[i].path;
        if (strcmp(plugins[i].name, name) != 0 && strcmp(base, file) != 0) continue;
        if (plugins[i].loaded) return i;
        if (refused < 0) refused = i;
    }
    return refused;
}

/* the loaded plugin `name` whose set_option (or get_option) takes key, or NULL with the error set */
static nnr_plugin *option_plugin(const char *name, const char *key, int get)
{
    int i = nnr_plugin_find(name);
    if (i < 0 || !plugins[i].loaded) {
        nnr_errorf(NNR_ERR_DEVICE, "backend option %s.%s: no %s plugin is loaded%s%s", name, key, name, i >= 0 ? ": " : "",
                   i >= 0 ? plugins[i].message : "");
        return NULL;
    }
    nnr_plugin *p = plugins[i].plugin;
    if (get ? !NNR_HAS_FIELD(p, nnr_plugin, get_option) || !p->get_option : !NNR_HAS_FIELD(p, nnr_plugin, set_option) || !p->set_option) {
        nnr_errorf(NNR_ERR_UNSUPPORTED, "backend option %s.%s: the %s plugin %s", name, key, name, get ? "has no values to read" : "takes no options");
        return NULL;
    }
    nnr_set_error(NNR_OK, "");
    return p;
}

/* the plugin's status, its message prefixed with the option */
static int option_status(int st, const char *name, const char *key)
{
    if (st == NNR_OK) return NNR_OK;
    char msg[600];
    snprintf(msg, sizeof msg, "%s", nnr_last_error()[0] ? nnr_last_error() : "refused");
    return nnr_errorf(st, "backend option %s.%s: %s", name, key, msg);
}

int nnr_plugin_set_option(const char *name, const char *key, const char *value)
{
    nnr_plugin *p = option_plugin(name, key, 0);
    return p ? option_status(p->set_option(p, key, value), name, key) : nnr_last_status();
}

int nnr_plugin_get_option(const char *name, const char *key, char *buf, size_t buflen)
{
    if (buflen) buf[0] = 0;
    nnr_plugin *p = option_plugin(name, key, 1);
    return p ? option_status(p->get_option(p, key, buf, buflen), name, key) : nnr_last_status();
}

int nnr_plugin_device_count(int i) { return rec(i) ? rec(i)->devices : 0; }

/* the first loaded extension plugin (kind NNR_PLUGIN_EXTENSION) that takes this call, or NULL.
 * Extensions add ops on the cpu device (host memory): quantized kernels, say. */
nnr_plugin *nnr_extension_for(const nnr_op_call *call)
{
    for (int i = 0; i < n_plugins; i++) {
        nnr_plugin *p = plugins[i].plugin;
        if (plugins[i].loaded && p && p->kind == NNR_PLUGIN_EXTENSION && p->supports && p->run && p->supports(p, call)) return p;
    }
    return NULL;
}

int nnr_device_total(void) { return n_devices; }
int nnr_device_count(void) { nnr_init(); return n_devices; }

const nnr_device_entry *nnr_device_get(int device)
{
    return (device >= 0 && device < n_devices) ? &devices[device] : NULL;
}

const char *nnr_device_type(int device) { return nnr_device_get(device) ? devices[device].plugin->name : NULL; }
int nnr_device_local_index(int device) { return nnr_device_get(device) ? devices[device].local_index : -1; }
const char *nnr_device_name(int device) { return nnr_device_get(device) ? devices[device].name : NULL; }
const char *nnr_device_label(int device) { return nnr_device_get(device) ? devices[device].label : NULL; }

int nnr_device_find(const char *spec)
{
    nnr_init();
    char type[64];
    int index = 0;
    const char *colon = strchr(spec, ':');
    size_t tlen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (tlen == 0 || tlen >= sizeof type) goto bad;
    memcpy(type, spec, tlen);
    type[tlen] = 0;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || v < 0) goto bad;
        index = (int)v;
    }
    int seen = 0;
    for (int i = 0; i < n_devices; i++) {
        if (strcmp(devices[i].plugin->name, type) != 0) continue;
        if (devices[i].local_index == index) return i;
        seen++;
    }
    if (seen)
        return nnr_errorf(NNR_ERR_DEVICE, "device '%s': only %d %s device(s) present%s", spec, seen, type,
                          strcmp(type, "cpu") == 0 ? " (NNR_CPU_DEVICES=N before the start gives N cpu devices)" : ""), -1;
    int r = nnr_plugin_find(type);
    if (r >= 0 && plugins[r].loaded)
        return nnr_errorf(NNR_ERR_DEVICE, "device '%s': the %s plugin has no device: %s", spec, type, plugins[r].message), -1;
    if (r >= 0)
        return nnr_errorf(NNR_ERR_DEVICE, "device '%s': plugin %s was refused: %s", spec, type, plugins[r].message), -1;
    nnr_errorf(NNR_ERR_DEVICE, "device '%s': no backend plugin provides '%s' (see nnrun --plugins)", spec, type);
    return -1;
bad:
    nnr_errorf(NNR_ERR_INVALID, "device '%s': expected a name like \"cpu\" or \"cuda:1\"", spec);
    return -1;
}

int nnr_synchronize(int device)
{
    const nnr_device_entry *d = nnr_device_get(device);
    if (!d) return nnr_errorf(NNR_ERR_DEVICE, "synchronize: no device %d", device);
    if (NNR_HAS_FIELD(d->plugin, nnr_plugin, synchronize) && d->plugin->synchronize)
        return d->plugin->synchronize(d->plugin, d->local_index);
    return NNR_OK;
}

void nnr_set_num_threads(int n)
{
    if (n <= 0) n = 1;
    num_threads = n;
    for (int i = 0; i < n_plugins; i++) {
        nnr_plugin *p = plugins[i].plugin;
        if (plugins[i].loaded && NNR_HAS_FIELD(p, nnr_plugin, set_num_threads) && p->set_num_threads)
            p->set_num_threads(p, n);
    }
}

double nnr_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int nnr_get_num_threads(void) { return num_threads > 0 ? num_threads : 1; }

const char *nnr_version(void) { return NNR_VERSION_STRING; }
