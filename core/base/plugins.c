/* Plugin loading: finds backend and extension libraries, checks their ABI and entry points, and
 * keeps a record of each with the reason it was refused. A plugin that cannot be used is refused
 * and the others still load (DESIGN.md decision 7). The search order, and what a probe score
 * means, are stated in nnr/plugin.h and docs/plugin-abi.md. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/internal.h"

static nnr_plugin_record plugins[NNR_MAX_PLUGINS];
static int n_plugins;

int nnr_plugin_record_count(void) { return n_plugins; }
nnr_plugin_record *nnr_plugin_record_at(int i) { return (i >= 0 && i < n_plugins) ? &plugins[i] : NULL; }

static void refuse(nnr_plugin_record *r, const char *fmt, const char *detail)
{
    snprintf(r->message, sizeof r->message, fmt, detail ? detail : "");
    r->loaded = 0;
    char line[768];
    snprintf(line, sizeof line, "refused %.500s: %.255s", r->path, r->message);
    nnr_host.log(NNR_LOG_INFO, NULL, line);
}

static nnr_plugin_record *new_record(const char *path)
{
    for (int i = 0; i < n_plugins; i++)
        if (strcmp(plugins[i].path, path) == 0) return NULL;
    if (n_plugins >= NNR_MAX_PLUGINS) return NULL;
    nnr_plugin_record *r = &plugins[n_plugins++];
    memset(r, 0, sizeof *r);
    snprintf(r->path, sizeof r->path, "%s", path);
    const char *base = strrchr(path, '/');
    snprintf(r->name, sizeof r->name, "%.63s", base ? base + 1 : path);
    return r;
}

/* the first entry point a backend must have and lacks, or NULL */
static const char *missing_entry_point(const nnr_plugin *p)
{
    if (p->kind != NNR_PLUGIN_BACKEND) return !p->supports ? "supports" : !p->run ? "run" : NULL;
    if (!p->device_count) return "device_count";
    if (!p->buffer_alloc) return "buffer_alloc";
    if (!p->buffer_free) return "buffer_free";
    if (!p->copy) return "copy";
    if (!p->supports) return "supports";
    if (!p->run) return "run";
    return NULL;
}

/* checks what init returned; a refusal names the reason. 0 when the plugin may be used */
static int check_plugin(nnr_plugin_record *r, nnr_plugin *p)
{
    char why[240];
    size_t minimum = offsetof(nnr_plugin, shutdown) + sizeof p->shutdown;
    if (p->struct_size < minimum) {
        snprintf(why, sizeof why, "its plugin struct is %u bytes, smaller than any ABI %d.x plugin (%zu): not a compatible plugin",
                 p->struct_size, NNR_ABI_MAJOR, minimum);
        refuse(r, "%s", why);
        return -1;
    }
    if (NNR_ABI_MAJOR_OF(p->abi_version) != NNR_ABI_MAJOR) {
        snprintf(why, sizeof why, "ABI mismatch: built against ABI %u.%u, this host speaks %d.x", p->abi_version >> 16,
                 p->abi_version & 0xffff, NNR_ABI_MAJOR);
        refuse(r, "%s", why);
        return -1;
    }
    if (p->kind != NNR_PLUGIN_BACKEND && p->kind != NNR_PLUGIN_EXTENSION) {
        snprintf(why, sizeof why, "unknown plugin kind %d (0 backend, 1 extension)", p->kind);
        refuse(r, "%s", why);
        return -1;
    }
    const char *missing = missing_entry_point(p);
    if (missing) {
        snprintf(why, sizeof why, "%s lacks the required entry point %s()", p->kind == NNR_PLUGIN_BACKEND ? "backend" : "extension",
                 missing);
        refuse(r, "%s", why);
        return -1;
    }
    return 0;
}

/* of two loaded plugins with one name the higher probe score stays; on a tie, the one loaded first */
static int resolve_name_clash(nnr_plugin_record *r, nnr_plugin *p)
{
    for (nnr_plugin_record *o = plugins; o < r; o++) {
        if (!o->loaded || strcmp(o->name, r->name) != 0) continue;
        if (o->score >= r->score) {
            char why[256];
            snprintf(why, sizeof why, "%.30s already provided by %.190s", r->name, o->path);
            if (p->shutdown) p->shutdown(p);
            refuse(r, "%s", why);
            return -1;
        }
        o->loaded = 0;
        snprintf(o->message, sizeof o->message, "superseded by %.200s (probe score %d > %d)", r->path, r->score, o->score);
    }
    return 0;
}

static void try_load(const char *path)
{
    char *resolved = realpath(path, NULL);        /* any length (a fixed buffer could overflow) */
    const char *real = resolved ? resolved : path;
    nnr_plugin_record *r = new_record(real);
    if (r) r->handle = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    free(resolved);
    if (!r) return;
    if (!r->handle) { refuse(r, "cannot load: %s", dlerror()); return; }
    nnr_plugin_probe_fn probe = (nnr_plugin_probe_fn)dlsym(r->handle, "nnr_plugin_probe");
    nnr_plugin_init_fn init = (nnr_plugin_init_fn)dlsym(r->handle, "nnr_plugin_init");
    if (!probe || !init) {
        refuse(r, "missing entry point %s() (a plugin exports nnr_plugin_probe and nnr_plugin_init)", !probe ? "nnr_plugin_probe" : "nnr_plugin_init");
        dlclose(r->handle); r->handle = NULL;
        return;
    }
    r->score = probe();
    if (r->score <= 0) {
        refuse(r, "probe says unusable on this machine (score %s)", r->score == 0 ? "0" : "negative");
        dlclose(r->handle); r->handle = NULL;
        return;
    }
    nnr_plugin *p = NULL;
    nnr_set_error(NNR_OK, "");           /* whatever the plugin reports is its own, not an older message */
    nnr_status st = init(&nnr_host, NNR_ABI_VERSION, &p);
    if (st != NNR_OK || !p) {
        char why[240];
        const char *said = nnr_last_error();
        snprintf(why, sizeof why, "init failed (status %d): %.200s", (int)st,
                 st == NNR_OK ? "it returned success but no plugin object" : said[0] ? said : "the plugin gave no reason");
        nnr_set_error(NNR_OK, "");
        refuse(r, "%s", why);
        dlclose(r->handle); r->handle = NULL;
        return;
    }
    if (check_plugin(r, p)) return;      /* the object is not ours to interpret: leave the library mapped */
    snprintf(r->name, sizeof r->name, "%s", p->name ? p->name : "?");
    snprintf(r->version, sizeof r->version, "%s", p->version ? p->version : "");
    snprintf(r->message, sizeof r->message, "%s", p->description ? p->description : "");
    if (resolve_name_clash(r, p)) return;
    r->plugin = p;
    r->loaded = 1;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* calls fn on each file in dir whose name ends in suffix, in bytewise order of names (loading
 * order, and so device numbering, is stable); nothing when dir cannot be read */
static void each_file(const char *dir, const char *suffix, void (*fn)(const char *path))
{
    DIR *d = opendir(dir);
    if (!d) return;
    int n = 0, cap = 16;
    char **names = malloc(sizeof *names * (size_t)cap);
    struct dirent *e;
    size_t sl = strlen(suffix);
    while (names && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= sl || strcmp(e->d_name + len - sl, suffix) != 0) continue;
        if (n == cap) {
            char **grown = realloc(names, sizeof *names * (size_t)(cap *= 2));
            if (!grown) break;
            names = grown;
        }
        if ((names[n] = strdup(e->d_name))) n++;
    }
    closedir(d);
    if (!names) return;
    qsort(names, (size_t)n, sizeof *names, by_name);
    for (int i = 0; i < n; i++) {
        char path[1024];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) < sizeof path) fn(path);
        else {
            char line[300];
            snprintf(line, sizeof line, "plugins: skipped %.200s in a folder whose path is too long", names[i]);
            nnr_host.log(NNR_LOG_WARN, NULL, line);
        }
        free(names[i]);
    }
    free(names);
}

static void scan_dir(const char *dir) { each_file(dir, ".so", try_load); }

/* an entry of the search path: a plugin file or a folder of them. One that does not exist is
 * recorded as refused, so nnrun --plugins shows it. */
static void scan_entry(const char *entry, const char *from)
{
    struct stat st;
    if (stat(entry, &st) != 0) {
        nnr_plugin_record *r = new_record(entry);
        if (r) {
            char why[200];
            snprintf(why, sizeof why, "not found (%.150s names it)", from);
            refuse(r, "%s", why);
        }
        return;
    }
    if (S_ISDIR(st.st_mode)) scan_dir(entry);
    else try_load(entry);
}

/* a registration file: one plugin file or folder per line; empty lines and # comments skipped */
static void scan_conf_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *s = line + strspn(line, " \t");
        s[strcspn(s, "\r\n")] = 0;
        size_t len = strlen(s);
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) s[--len] = 0;
        if (len && s[0] != '#') scan_entry(s, path);
    }
    fclose(f);
}

void nnr_plugins_scan(const char *default_dir)
{
    const char *paths = getenv("NNR_PLUGIN_PATH");
    if (paths && *paths) {
        char *copy = strdup(paths), *save = NULL;
        for (char *tok = copy ? strtok_r(copy, ":", &save) : NULL; tok; tok = strtok_r(NULL, ":", &save))
            scan_entry(tok, "NNR_PLUGIN_PATH");
        free(copy);
    }
    if (getenv("NNR_NO_DEFAULT_PLUGINS")) return;
    const char *conf_dir = getenv("NNR_PLUGIN_CONF_DIR");
    if (!conf_dir) conf_dir = "/etc/nnr/plugins.d";
    each_file(conf_dir, ".conf", scan_conf_file);
    if (default_dir) scan_dir(default_dir);
}

/* at exit, let plugins join their threads and free what they hold */
__attribute__((destructor)) static void shutdown_plugins(void)
{
    nnr_drop_pinned_cache();
    for (int i = n_plugins - 1; i >= 0; i--) {
        nnr_plugin *p = plugins[i].plugin;
        if (plugins[i].loaded && p->shutdown) p->shutdown(p);
    }
}

int nnr_plugin_count(void) { nnr_init(); return n_plugins; }
const char *nnr_plugin_name(int i) { return nnr_plugin_record_at(i) ? plugins[i].name : NULL; }
const char *nnr_plugin_path(int i) { return nnr_plugin_record_at(i) ? plugins[i].path : NULL; }
const char *nnr_plugin_version(int i) { return nnr_plugin_record_at(i) ? plugins[i].version : NULL; }
int nnr_plugin_loaded(int i) { return nnr_plugin_record_at(i) ? plugins[i].loaded : 0; }
/* a backend's message and device count are known once its devices are counted (devices.c) */
const char *nnr_plugin_message(int i) { nnr_devices_all(); return nnr_plugin_record_at(i) ? plugins[i].message : NULL; }
int nnr_plugin_device_count(int i) { nnr_devices_all(); return nnr_plugin_record_at(i) ? plugins[i].devices : 0; }
int nnr_plugin_kind_of(int i) { return nnr_plugin_record_at(i) && plugins[i].plugin ? plugins[i].plugin->kind : -1; }
int nnr_plugin_abi(int i) { return nnr_plugin_record_at(i) && plugins[i].plugin ? (int)plugins[i].plugin->abi_version : -1; }

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
    /* a backend's device count is the core's to change (naming "cpu:3" asks for it): devices made behind
     * its back would have no entry, and would take the threads of the ones that do */
    if (strcmp(key, "devices") == 0)
        return nnr_errorf(NNR_ERR_INVALID, "%s: devices is not an option; name the device (\"%s:3\") to make it", name, name);
    nnr_plugin *p = option_plugin(name, key, 0);
    return p ? option_status(p->set_option(p, key, value), name, key) : nnr_last_status();
}

int nnr_plugin_get_option(const char *name, const char *key, char *buf, size_t buflen)
{
    if (buflen) buf[0] = 0;
    nnr_plugin *p = option_plugin(name, key, 1);
    return p ? option_status(p->get_option(p, key, buf, buflen), name, key) : nnr_last_status();
}

/* the first loaded extension plugin (kind NNR_PLUGIN_EXTENSION) that takes this call, or NULL.
 * Extensions add ops on devices whose memory is host memory: quantized kernels, say. */
/* ops numbered 256 and up came with ABI 1.5, 272 and up with 1.6, 278 with 1.7, 279 and 280 with 1.9,
 * 281 and up with 1.10: a plugin built against an older header never sees them (it might answer by
 * category, and take floor for another unary op), backends and extensions alike */
int nnr_plugin_knows_op(const nnr_plugin *p, uint32_t op)
{
    int minor = (int)(p->abi_version & 0xffff);
    return op < 256 || (op < 272 && minor >= 5) || (op < 278 && minor >= 6) || (op < 279 && minor >= 7) || (op < 281 && minor >= 9) ||
           minor >= 10;
}

nnr_plugin *nnr_extension_for(const nnr_op_call *call)
{
    for (int i = 0; i < n_plugins; i++) {
        nnr_plugin *p = plugins[i].plugin;
        if (plugins[i].loaded && p->kind == NNR_PLUGIN_EXTENSION && nnr_plugin_knows_op(p, call->op) && p->supports(p, call)) return p;
    }
    return NULL;
}
