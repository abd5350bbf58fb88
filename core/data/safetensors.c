/* safetensors (DESIGN.md decision 6): an 8-byte little-endian header length,
 * a JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]},
 * "__metadata__": {"key": "value"}}, then the tensors' bytes. No code runs on
 * load; everything is validated before a byte of data is trusted. Files are
 * written to a temporary name, flushed and renamed, so a crash never leaves a
 * half-written file where the previous one was. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
int nnr_safetensors_parse(nnr_file *file, const char *header, size_t len, int64_t data_size)
{
    const char *path = file->path;
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
    file->f = fopen(path, "rb");
    if (!file->f) { nnr_errorf(NNR_ERR_IO, "load %s: %s", path, strerror(errno)); nnr_file_close(file); return NULL; }
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
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int nnr_safetensors_save(const char *path, int n, const char *const *names, nnr_tensor *const *tensors, int nmeta,
                         const char *const *keys, const char *const *values)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path);
    nnr_tensor **host = calloc((size_t)(n ? n : 1), sizeof *host);
    int st = host ? NNR_OK : nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path);
    int64_t at = 0;
    if (st == NNR_OK && nmeta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < nmeta && meta; i++) cJSON_AddStringToObject(meta, keys[i], values[i]);
    }
    for (int i = 0; i < n && st == NNR_OK; i++) {
        if (strcmp(names[i], "__metadata__") == 0 || cJSON_GetObjectItemCaseSensitive(root, names[i])) {
            st = nnr_errorf(NNR_ERR_INVALID, "save %s: tensor name '%s' is used twice or reserved", path, names[i]);
            break;
        }
        nnr_tensor *h = nnr_to(tensors[i], tensors[i]->dtype, nnr_host_device());
        nnr_tensor *c = h ? nnr_contiguous(h) : NULL;
        nnr_tensor_release(h);
        if (!c) { st = nnr_last_status(); break; }
        host[i] = c;
        int64_t bytes = nnr_tensor_numel(c) * (int64_t)nnr_dtype_nbytes(c->dtype);
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        cJSON_AddStringToObject(e, "dtype", st_dtype_names[c->dtype]);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < c->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)c->sizes[d]));
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)at));
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(at + bytes)));
        at += bytes;
    }
    char *json = st == NNR_OK ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (st == NNR_OK && !json) st = nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path);
    char tmp[1100];
    int fd = -1;
    if (st == NNR_OK) {
        snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
        fd = mkstemp(tmp);
        if (fd < 0) st = nnr_errorf(NNR_ERR_IO, "save %s: cannot create a temporary file: %s", path, strerror(errno));
    }
    if (st == NNR_OK) {
        size_t hlen = strlen(json), padded = (hlen + 7) & ~(size_t)7;   /* data starts 8-byte aligned */
        unsigned char lenbuf[8];
        for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
        int bad = write_all(fd, lenbuf, 8) || write_all(fd, json, hlen) || write_all(fd, "        ", padded - hlen);
        for (int i = 0; i < n && !bad; i++)
            bad = write_all(fd, nnr_tensor_data(host[i]), (size_t)(nnr_tensor_numel(host[i]) * (int64_t)nnr_dtype_nbytes(host[i]->dtype)));
        if (!bad) bad = fsync(fd);
        if (close(fd) != 0) bad = 1;
        fd = -1;
        if (!bad) {

            struct stat sbuf;
            mode_t mode = stat(path, &sbuf) == 0 ? sbuf.st_mode & 0777 : 0644;
            chmod(tmp, mode);
            bad = rename(tmp, path);
        }
        if (bad) {
            st = nnr_errorf(NNR_ERR_IO, "save %s: %s", path, strerror(errno));
            unlink(tmp);
        } else {
            /* make the rename itself durable */
            char dir[1100];
            snprintf(dir, sizeof dir, "%s", path);
            char *slash = strrchr(dir, '/');
            if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
            int dfd = open(dir, O_RDONLY | O_DIRECTORY);
            if (dfd >= 0) { fsync(dfd); close(dfd); }
        }
    }
    cJSON_free(json);
    for (int i = 0; host && i < n; i++) nnr_tensor_release(host[i]);
    free(host);
    return st;
}
