/* safetensors (DESIGN.md decision 6): an 8-byte little-endian header length,
 * a JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
 * "__metadata__": {"key": "value"}}, then the tensors' bytes. No code runs on
 * load; everything is validated before a byte of data is trusted. Files are
 * written to a temporary name, flushed and renamed, so a crash never leaves a
 * half-written file where the previous one was; every write, flush, close and
 * rename is checked (a full disk is an error naming the file, the temporary
 * file removed), and a save removes the temporary files of saves to the same
 * path that were killed (remove_stale_temps). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "data/internal.h"

enum { MAX_HEADER = 100 << 20 };

static const char *st_dtype_names[NNR_DTYPE_COUNT] = {"F32", "F64", "F16", "BF16", "I8", "U8", "I32", "I64", "BOOL"};

static int dtype_from_name(const char *s)
{
    for (int i = 0; i < NNR_DTYPE_COUNT; i++)
        if (strcmp(s, st_dtype_names[i]) == 0) return i;
    return -1;
}

struct nnr_file {
    char path[1024];
    FILE *f;
    int64_t data_start, data_size;
    int n;
    struct entry { char *name; int dtype, ndim; int64_t sizes[NNR_MAX_DIMS]; int64_t begin, end; } *entries;
    int nmeta;
    char **meta_keys, **meta_values;
};

void nnr_file_close(nnr_file *file)
{
    if (!file) return;
    if (file->f) fclose(file->f);
    for (int i = 0; i < file->n; i++) free(file->entries[i].name);
    for (int i = 0; i < file->nmeta; i++) { free(file->meta_keys[i]); free(file->meta_values[i]); }
    free(file->entries);
    free(file->meta_keys);
    free(file->meta_values);
    free(file);
}

static int cmp_begin(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int parse_metadata(nnr_file *file, const cJSON *item)
{
    const char *path = file->path;
    if (!cJSON_IsObject(item)) return nnr_errorf(NNR_ERR_IO, "load %s: __metadata__ is not an object", path);
    if (file->meta_keys) return nnr_errorf(NNR_ERR_IO, "load %s: the header has __metadata__ twice", path);
    int m = cJSON_GetArraySize(item);
    file->meta_keys = calloc((size_t)(m ? m : 1), sizeof(char *));
    file->meta_values = calloc((size_t)(m ? m : 1), sizeof(char *));
    if (!file->meta_keys || !file->meta_values) return nnr_errorf(NNR_ERR_OOM, "load %s: out of memory", path);
    cJSON *kv;
    cJSON_ArrayForEach(kv, item) {
        if (!cJSON_IsString(kv) || !kv->string) return nnr_errorf(NNR_ERR_IO, "load %s: metadata values must be strings", path);
        file->meta_keys[file->nmeta] = strdup(kv->string);
        file->meta_values[file->nmeta] = strdup(kv->valuestring);
        file->nmeta++;
        if (!file->meta_keys[file->nmeta - 1] || !file->meta_values[file->nmeta - 1]) return nnr_errorf(NNR_ERR_OOM, "load %s: out of memory", path);
    }
    return NNR_OK;
}

/* a tensor's shape into e (checked: whole numbers, at most NNR_MAX_DIMS, a size that fits); its element count in *numel */
static int parse_shape(const char *path, const char *name, const cJSON *shape, struct entry *e, int64_t *numel)
{
    e->ndim = cJSON_GetArraySize(shape);
    if (e->ndim > NNR_MAX_DIMS)
        return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' has %d dimensions (at most %d)", path, name, e->ndim, NNR_MAX_DIMS);
    *numel = 1;
    int k = 0;
    cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        double v = cJSON_IsNumber(d) ? d->valuedouble : -1;
        if (v < 0 || v != (double)(int64_t)v || v > 1e15) return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' has an invalid shape", path, name);
        e->sizes[k++] = (int64_t)v;
        if (e->sizes[k - 1] && *numel > INT64_MAX / 16 / e->sizes[k - 1]) return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' is too large", path, name);
        *numel *= e->sizes[k - 1];
    }
    return NNR_OK;
}

/* one tensor's entry: dtype, shape, data offsets inside the data section and of the right length */
static int parse_entry(nnr_file *file, const char *name, const cJSON *item, int64_t data_size)
{
    const char *path = file->path;
    struct entry *e = &file->entries[file->n];
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsObject(item) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' lacks dtype, shape or data_offsets", path, name);
    e->dtype = dtype_from_name(dt->valuestring);
    if (e->dtype < 0) return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' has unsupported dtype %.20s", path, name, dt->valuestring);
    int64_t numel;
    if (parse_shape(path, name, shape, e, &numel)) return nnr_last_status();
    double b = cJSON_GetArrayItem(off, 0)->valuedouble, en = cJSON_GetArrayItem(off, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(off, 1)) || b < 0 || en < b ||
        en > (double)data_size || b != (double)(int64_t)b || en != (double)(int64_t)en)
        return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' has data_offsets outside the %lld data bytes (truncated file?)", path, name,
                          (long long)data_size);
    e->begin = (int64_t)b;
    e->end = (int64_t)en;
    if (e->end - e->begin != numel * (int64_t)nnr_dtype_nbytes(e->dtype)) {
        char sb[NNR_SHAPE_BUF];
        return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' of shape %s and dtype %s needs %lld bytes, its offsets give %lld", path, name,
                          nnr_shape_str(sb, sizeof sb, e->ndim, e->sizes), st_dtype_names[e->dtype],
                          (long long)(numel * (int64_t)nnr_dtype_nbytes(e->dtype)), (long long)(e->end - e->begin));
    }
    for (int i = 0; i < file->n; i++)
        if (strcmp(file->entries[i].name, name) == 0) return nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' appears twice", path, name);
    if (!(e->name = strdup(name))) return nnr_errorf(NNR_ERR_OOM, "load %s: out of memory", path);
    file->n++;
    return NNR_OK;
}

/* the buffers must tile the data section: no overlap, no gap */
static int check_tiling(nnr_file *file, int64_t data_size)
{
    const char *path = file->path;
    struct entry *sorted = malloc(sizeof *sorted * (size_t)(file->n ? file->n : 1));
    if (!sorted) return nnr_errorf(NNR_ERR_OOM, "load %s: out of memory", path);
    memcpy(sorted, file->entries, sizeof *sorted * (size_t)file->n);
    qsort(sorted, (size_t)file->n, sizeof *sorted, cmp_begin);
    int64_t at = 0;
    int st = NNR_OK;
    for (int i = 0; i < file->n && st == NNR_OK; i++) {
        if (sorted[i].begin != at)
            st = nnr_errorf(NNR_ERR_IO, "load %s: tensor '%.100s' starts at byte %lld, expected %lld (overlapping or missing data)", path,
                            sorted[i].name, (long long)sorted[i].begin, (long long)at);
        at = sorted[i].end;
    }
    if (st == NNR_OK && at != data_size)
        st = nnr_errorf(NNR_ERR_IO, "load %s: the tensors cover %lld bytes but the file holds %lld after the header", path, (long long)at,
                        (long long)data_size);
    free(sorted);
    return st;
}

/* parses and validates a header held in memory (also the fuzz target's entry) */
/* a JSON \u0000 escape: cJSON would cut the string there (two names differing after it would merge) */
static int has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i + 5 < len; i++)
        if (s[i] == '\\') {
            if (s[i + 1] == 'u' && s[i + 2] == '0' && s[i + 3] == '0' && s[i + 4] == '0' && s[i + 5] == '0') return 1;
            i++;        /* an escaped character, perhaps a backslash */
        }
    return 0;
}

int nnr_safetensors_parse(nnr_file *file, const char *header, size_t len, int64_t data_size)
{
    const char *path = file->path;
    if (has_nul_escape(header, len) || memchr(header, 0, len))
        return nnr_errorf(NNR_ERR_IO, "load %s: the header holds a NUL character (\\u0000), which names and metadata may not contain", path);
    cJSON *root = cJSON_ParseWithLength(header, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return nnr_errorf(NNR_ERR_IO, "load %s: the safetensors header is not a JSON object", path);
    }
    int count = cJSON_GetArraySize(root);
    file->entries = calloc((size_t)(count ? count : 1), sizeof *file->entries);
    if (!file->entries) { cJSON_Delete(root); return nnr_errorf(NNR_ERR_OOM, "load %s: out of memory", path); }
    int st = NNR_OK;
    cJSON *item;
    cJSON_ArrayForEach(item, root) {
        const char *name = item->string;
        if (!name) st = nnr_errorf(NNR_ERR_IO, "load %s: a header entry has no name", path);
        else if (strcmp(name, "__metadata__") == 0) st = parse_metadata(file, item);
        else st = parse_entry(file, name, item, data_size);
        if (st) break;
    }
    cJSON_Delete(root);
    return st ? st : check_tiling(file, data_size);
}

nnr_file *nnr_safetensors_open(const char *path)
{
    nnr_file *file = calloc(1, sizeof *file);
    if (!file) { nnr_errorf(NNR_ERR_OOM, "load: out of memory"); return NULL; }
    snprintf(file->path, sizeof file->path, "%s", path);
    file->f = nnr_fopen_regular(path);
    if (!file->f) { nnr_errorf(NNR_ERR_IO, "load %s: %s", path, nnr_open_strerror(errno)); nnr_file_close(file); return NULL; }
    struct stat sb;
    unsigned char lenbuf[8];
    if (fstat(fileno(file->f), &sb) != 0 || fread(lenbuf, 1, 8, file->f) != 8) {
        nnr_errorf(NNR_ERR_IO, "load %s: too short for a safetensors file (%lld bytes)", path, (long long)sb.st_size);
        nnr_file_close(file);
        return NULL;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | lenbuf[i];
    if (hlen > MAX_HEADER || (int64_t)(hlen + 8) > (int64_t)sb.st_size) {
        nnr_errorf(NNR_ERR_IO, "load %s: header length %llu is %s (file of %lld bytes)", path, (unsigned long long)hlen,
                   hlen > MAX_HEADER ? "over the 100 MiB limit" : "past the end of the file", (long long)sb.st_size);
        nnr_file_close(file);
        return NULL;
    }
    char *header = malloc(hlen + 1);
    if (!header || fread(header, 1, hlen, file->f) != hlen) {
        free(header);
        nnr_errorf(NNR_ERR_IO, "load %s: cannot read the %llu-byte header", path, (unsigned long long)hlen);
        nnr_file_close(file);
        return NULL;
    }
    header[hlen] = 0;
    file->data_start = 8 + (int64_t)hlen;
    file->data_size = (int64_t)sb.st_size - file->data_start;
    int st = nnr_safetensors_parse(file, header, hlen, file->data_size);
    free(header);
    if (st) { nnr_file_close(file); return NULL; }
    return file;
}

int nnr_file_count(const nnr_file *f) { return f->n; }
const char *nnr_file_name(const nnr_file *f, int i) { return (i >= 0 && i < f->n) ? f->entries[i].name : NULL; }
int nnr_file_metadata_count(const nnr_file *f) { return f->nmeta; }
const char *nnr_file_metadata_key(const nnr_file *f, int i) { return (i >= 0 && i < f->nmeta) ? f->meta_keys[i] : NULL; }
const char *nnr_file_metadata_value(const nnr_file *f, int i) { return (i >= 0 && i < f->nmeta) ? f->meta_values[i] : NULL; }

nnr_tensor *nnr_file_tensor(nnr_file *f, int i, int device)
{
    if (i < 0 || i >= f->n) { nnr_errorf(NNR_ERR_INVALID, "load %s: no tensor %d", f->path, i + 1); return NULL; }
    struct entry *e = &f->entries[i];
    nnr_tensor *t = nnr_tensor_alloc(e->dtype, e->ndim, e->sizes, nnr_host_device());
    if (!t) return NULL;
    size_t n = (size_t)(e->end - e->begin);
    if (n && (fseeko(f->f, f->data_start + e->begin, SEEK_SET) != 0 || fread(nnr_tensor_data(t), 1, n, f->f) != n)) {
        nnr_tensor_release(t);
        nnr_errorf(NNR_ERR_IO, "load %s: cannot read tensor '%s' (file changed or truncated)", f->path, e->name);
        return NULL;
    }
    if (e->dtype == NNR_BOOL) {                /* any non-zero byte is true */
        unsigned char *b = nnr_tensor_data(t);
        for (size_t k = 0; k < n; k++) b[k] = b[k] != 0;
    }
    if (device == t->device) return t;
    nnr_tensor *moved = nnr_to(t, e->dtype, device);
    nnr_tensor_release(t);
    return moved;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        if (w == 0) { errno = EIO; return -1; }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* the folder of path ("." when it names none; malloc'd, NULL when out of memory) and its last part */
static char *split_path(const char *path, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

enum { STALE_AGE_S = 10 };

static void note(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    nnr_host.log(level, NULL, msg);
}

/* Temporary files are PATH.tmp.<pid>.XXXXXX and their writer holds an flock on them from creation
 * to rename. A save removes the ones whose writer is gone (killed while saving): it takes the lock
 * itself, and the writer's pid is no process any more, or the file is older than STALE_AGE_S (a pid
 * used again since). A live writer holds its lock, so its file stays; between mkstemp and flock (a
 * few instructions) it is still safe unless its pid is not visible here (another pid namespace). */
static void remove_stale_temps(const char *path)
{
    const char *base;
    char *dir = split_path(path, &base);
    size_t blen = strlen(base);
    DIR *d = dir && blen ? opendir(dir) : NULL;
    if (!d) { free(dir); return; }
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0) continue;
        const char *num = name + blen + 5;
        char *end;
        errno = 0;
        long pid = strtol(num, &end, 10);
        if (end == num || *num < '0' || *num > '9' || errno || pid <= 0 || *end != '.' || strlen(end + 1) != 6) continue;
        int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat sb;
        int regular = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
        int gone = kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        int old = regular && time(NULL) - sb.st_mtime > STALE_AGE_S;
        if (regular && (gone || old) && flock(fd, LOCK_EX | LOCK_NB) == 0) {
            note(NNR_LOG_INFO, "save %s: removing %s/%s, left by a save that did not finish", path, dir, name);
            unlinkat(dfd, name, 0);
        }
        close(fd);
    }
    closedir(d);
    free(dir);
}

/* the header: {"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {...}} for the host copies;
 * NULL with the error set on failure */
static char *make_header(const char *path, int n, const char *const *names, nnr_tensor *const *host, int nmeta, const char *const *keys,
                         const char *const *values)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && nmeta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (int i = 0; i < nmeta && ok; i++) ok = cJSON_AddStringToObject(meta, keys[i], values[i]) != NULL;
    }
    int64_t at = 0;
    for (int i = 0; i < n && ok; i++) {
        const nnr_tensor *c = host[i];
        int64_t bytes, end;
        if (!nnr_size_product(c->ndim, c->sizes, (int64_t)nnr_dtype_nbytes(c->dtype), &bytes) || !nnr_size_add(at, bytes, &end)) {
            cJSON_Delete(root);
            nnr_errorf(NNR_ERR_INVALID, "save %s: the tensors' sizes overflow at '%s'", path, names[i]);
            return NULL;
        }
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *off = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        ok = e && shape && off && cJSON_AddStringToObject(e, "dtype", st_dtype_names[c->dtype]);
        for (int d = 0; d < c->ndim && ok; d++) ok = cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)c->sizes[d]));
        ok = ok && cJSON_AddItemToArray(off, cJSON_CreateNumber((double)at)) && cJSON_AddItemToArray(off, cJSON_CreateNumber((double)end));
        at = end;
    }
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path);
    return json;
}

/* writes the file to a temporary name, flushes it and renames it over path: a crash, a full disk or a
 * failed write never leaves a broken file at path, and the temporary file goes on failure */
int nnr_write_atomically(const char *path, int nparts, const void *const *parts, const size_t *sizes)
{
    size_t tmpn = strlen(path) + 40;
    char *tmp = malloc(tmpn);
    if (!tmp) return nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path);
    snprintf(tmp, tmpn, "%s.tmp.%ld.XXXXXX", path, (long)getpid());
    remove_stale_temps(path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(tmp);
        return nnr_errorf(NNR_ERR_IO, "save %s: cannot create a temporary file beside it: %s", path, strerror(errno));
    }
    flock(fd, LOCK_EX | LOCK_NB);       /* held until close: tells remove_stale_temps this writer is alive */
    const char *step = "writing";
    int bad = 0;
    for (int i = 0; i < nparts && !bad; i++) bad = write_all(fd, parts[i], sizes[i]);
    if (!bad && fsync(fd) != 0) { bad = 1; step = "flushing"; }
    int err = bad ? errno : 0;
    if (close(fd) != 0 && !bad) { bad = 1; step = "closing"; err = errno; }
    if (!bad) {
        struct stat sbuf;
        mode_t mode = stat(path, &sbuf) == 0 ? sbuf.st_mode & 0777 : 0644;
        if (chmod(tmp, mode) != 0) note(NNR_LOG_WARN, "save %s: cannot set its mode: %s", path, strerror(errno));
        if (rename(tmp, path) != 0) { bad = 1; step = "renaming"; err = errno; }
    }
    if (bad) {
        unlink(tmp);
        free(tmp);
        return nnr_errorf(NNR_ERR_IO, "save %s: %s (while %s; the previous file is unchanged and no temporary file is left)", path,
                          strerror(err), step);
    }
    free(tmp);
    /* make the rename itself durable */
    const char *base;
    char *dir = split_path(path, &base);
    int dfd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    free(dir);
    return NNR_OK;
}

/* the 8-byte header length, the header padded to 8 bytes (data starts aligned), the tensors' bytes */
static int write_file(const char *path, const char *json, int n, nnr_tensor *const *host)
{
    size_t hlen = strlen(json), padded = (hlen + 7) & ~(size_t)7;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    const void **parts = malloc(sizeof(void *) * (size_t)(n + 3));
    size_t *sizes = malloc(sizeof(size_t) * (size_t)(n + 3));
    if (!parts || !sizes) { free(parts); free(sizes); return nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path); }
    parts[0] = lenbuf; sizes[0] = 8;
    parts[1] = json; sizes[1] = hlen;
    parts[2] = "        "; sizes[2] = padded - hlen;
    for (int i = 0; i < n; i++) {
        parts[i + 3] = nnr_tensor_data(host[i]);
        sizes[i + 3] = (size_t)(nnr_tensor_numel(host[i]) * (int64_t)nnr_dtype_nbytes(host[i]->dtype));
    }
    int st = nnr_write_atomically(path, n + 3, parts, sizes);
    free(parts);
    free(sizes);
    return st;
}

int nnr_safetensors_save(const char *path, int n, const char *const *names, nnr_tensor *const *tensors, int nmeta,
                         const char *const *keys, const char *const *values)
{
    if (!path || !path[0]) return nnr_errorf(NNR_ERR_INVALID, "save: the path is empty");
    if (n < 0 || nmeta < 0) return nnr_errorf(NNR_ERR_INVALID, "save %s: %d tensors and %d metadata entries", path, n, nmeta);
    nnr_tensor **host = calloc((size_t)(n ? n : 1), sizeof *host);
    if (!host) return nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path);
    int st = NNR_OK;
    for (int i = 0; i < n && st == NNR_OK; i++) {
        if (strcmp(names[i], "__metadata__") == 0) { st = nnr_errorf(NNR_ERR_INVALID, "save %s: tensor name '%s' is reserved", path, names[i]); break; }
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) { st = nnr_errorf(NNR_ERR_INVALID, "save %s: tensor name '%s' is used twice", path, names[i]); break; }
        if (st) break;
        nnr_tensor *h = nnr_to(tensors[i], tensors[i]->dtype, nnr_host_device());
        nnr_tensor *c = h ? nnr_contiguous(h) : NULL;
        nnr_tensor_release(h);
        if (!c) { st = nnr_last_status(); break; }
        host[i] = c;
    }
    char *json = st == NNR_OK ? make_header(path, n, names, host, nmeta, keys, values) : NULL;
    if (st == NNR_OK && !json) st = nnr_last_status();
    if (st == NNR_OK) st = write_file(path, json, n, host);
    cJSON_free(json);
    for (int i = 0; i < n; i++) nnr_tensor_release(host[i]);
    free(host);
    return st;
}
