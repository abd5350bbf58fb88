/* A corpus (docs/sequence.md): one or more files read as one sequence of bytes,
 * as `cat` would join them. Each file is memory-mapped read-only, so a corpus
 * larger than memory is paged in as windows are read; nothing is copied.
 * A folder stands for its regular files in the byte order of their names
 * (hidden files, sub-folders and excluded suffixes left out), so the order,
 * and with it every window's offset, is the same on every machine.
 * Also here: strict UTF-8, which the character vocabulary needs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "data/internal.h"

void nnr_corpus_retain(nnr_corpus *c) { if (c) atomic_fetch_add(&c->refcount, 1); }

void nnr_corpus_release(nnr_corpus *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refcount, 1, memory_order_acq_rel) != 1) return;
    for (int i = 0; i < c->nfiles; i++) {
        if (c->files[i].map) munmap(c->files[i].map, c->files[i].map_bytes);
        free(c->files[i].path);
    }
    free(c->files);
    free(c->owned);
    free(c);
}

int64_t nnr_corpus_size(const nnr_corpus *c) { return c->size; }
int nnr_corpus_file_count(const nnr_corpus *c) { return c->nfiles; }
const char *nnr_corpus_file_path(const nnr_corpus *c, int i) { return i >= 0 && i < c->nfiles ? c->files[i].path : NULL; }
int64_t nnr_corpus_file_size(const nnr_corpus *c, int i) { return i >= 0 && i < c->nfiles ? c->files[i].size : -1; }

int nnr_corpus_file_at(const nnr_corpus *c, int64_t offset)
{
    int lo = 0, hi = c->nfiles - 1;         /* the last file starting at or before offset with bytes in it */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (c->files[mid].start <= offset) lo = mid; else hi = mid - 1;
    }
    while (lo < c->nfiles - 1 && offset >= c->files[lo].start + c->files[lo].size) lo++;   /* past empty files */
    return lo;
}

int nnr_corpus_read(const nnr_corpus *c, int64_t offset, int64_t n, char *out)
{
    int64_t end;
    if (offset < 0 || n < 0 || !nnr_size_add(offset, n, &end) || end > c->size)
        return nnr_errorf(NNR_ERR_INVALID, "corpus: bytes [%lld, %lld + %lld) are outside its %lld bytes", (long long)offset,
                          (long long)offset, (long long)n, (long long)c->size);
    if (n == 0) return NNR_OK;
    for (int f = nnr_corpus_file_at(c, offset); n > 0; f++) {
        const nnr_corpus_file *file = &c->files[f];
        int64_t at = offset - file->start, take = file->size - at < n ? file->size - at : n;
        if (take <= 0) continue;
        memcpy(out, file->bytes + at, (size_t)take);
        out += take;
        offset += take;
        n -= take;
    }
    return NNR_OK;
}

/* appends a file (mapped) or, with map 0, a name without bytes yet */
static int add_file(nnr_corpus *c, const char *path, int *cap)
{
    if (c->nfiles == *cap) {
        int grown = *cap ? *cap * 2 : 16;
        nnr_corpus_file *f = realloc(c->files, sizeof *f * (size_t)grown);
        if (!f) return nnr_errorf(NNR_ERR_OOM, "corpus: out of memory");
        c->files = f;
        *cap = grown;
    }
    nnr_corpus_file *file = &c->files[c->nfiles];
    memset(file, 0, sizeof *file);
    if (!(file->path = strdup(path))) return nnr_errorf(NNR_ERR_OOM, "corpus: out of memory");
    c->nfiles++;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0) close(fd);
        return nnr_errorf(NNR_ERR_IO, "cannot open %s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) { close(fd); return nnr_errorf(NNR_ERR_IO, "%s is not a regular file", path); }
    file->size = (int64_t)st.st_size;
    if (file->size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) { int e = errno; close(fd); return nnr_errorf(NNR_ERR_IO, "cannot map %s: %s", path, strerror(e)); }
        file->map = m;
        file->map_bytes = (size_t)st.st_size;
        file->bytes = m;
        madvise(m, file->map_bytes, MADV_RANDOM);   /* windows are read at random offsets */
    }
    close(fd);
    file->start = c->size;
    if (!nnr_size_add(c->size, file->size, &c->size)) return nnr_errorf(NNR_ERR_INVALID, "corpus: its size overflows at %s", path);
    return NNR_OK;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int excluded(const char *name, int nexclude, const char *const *exclude)
{
    size_t n = strlen(name);
    if (name[0] == '.') return 1;
    for (int i = 0; i < nexclude; i++) {
        size_t k = strlen(exclude[i]);
        if (k && k <= n && strcmp(name + n - k, exclude[i]) == 0) return 1;
    }
    return 0;
}

/* the folder's regular files (symbolic links to them too), sorted by name */
static int add_folder(nnr_corpus *c, const char *dir, int nexclude, const char *const *exclude, int *cap)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, by_name), st = NNR_OK, before = c->nfiles;
    if (n < 0) return nnr_errorf(NNR_ERR_IO, "cannot read the folder %s: %s", dir, strerror(errno));
    for (int i = 0; i < n; i++) {
        if (st == NNR_OK && !excluded(names[i]->d_name, nexclude, exclude)) {
            size_t len = strlen(dir) + strlen(names[i]->d_name) + 2;
            char *path = malloc(len);
            struct stat sb;
            if (!path) st = nnr_errorf(NNR_ERR_OOM, "corpus: out of memory");
            else {
                snprintf(path, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]->d_name);
                if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) st = add_file(c, path, cap);
                free(path);
            }
        }
        free(names[i]);
    }
    free(names);
    if (st == NNR_OK && c->nfiles == before) st = nnr_errorf(NNR_ERR_INVALID, "the folder %s has no files to read (hidden files, sub-folders%s are left out)",
                                                             dir, nexclude ? " and the excluded suffixes" : "");
    return st;
}

nnr_corpus *nnr_corpus_open(int npaths, const char *const *paths, int nexclude, const char *const *exclude)
{
    if (npaths < 1 || nexclude < 0) { nnr_errorf(NNR_ERR_INVALID, "corpus: needs at least one path"); return NULL; }
    nnr_corpus *c = calloc(1, sizeof *c);
    if (!c) { nnr_errorf(NNR_ERR_OOM, "corpus: out of memory"); return NULL; }
    atomic_init(&c->refcount, 1);
    int cap = 0, st = NNR_OK;
    for (int p = 0; p < npaths && st == NNR_OK; p++) {
        struct stat sb;
        const char *path = paths[p];
        if (!path || !path[0]) st = nnr_errorf(NNR_ERR_INVALID, "corpus: path %d is empty", p + 1);
        else if (stat(path, &sb) != 0) st = nnr_errorf(NNR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        else if (S_ISDIR(sb.st_mode)) st = add_folder(c, path, nexclude, exclude, &cap);
        else {
            int64_t before = c->size;
            st = add_file(c, path, &cap);
            if (st == NNR_OK && c->size == before) st = nnr_errorf(NNR_ERR_INVALID, "%s is empty", path);
        }
    }
    if (st == NNR_OK && c->size == 0) st = nnr_errorf(NNR_ERR_INVALID, "%s: every file is empty (%d files)", paths[0], c->nfiles);
    if (st) { nnr_corpus_release(c); return NULL; }
    return c;
}

nnr_corpus *nnr_corpus_from_bytes(const char *bytes, int64_t n, const char *name)
{
    if (n < 0 || (n > 0 && !bytes)) { nnr_errorf(NNR_ERR_INVALID, "corpus: %lld bytes", (long long)n); return NULL; }
    nnr_corpus *c = calloc(1, sizeof *c);
    if (c) c->files = calloc(1, sizeof *c->files);
    if (c) c->owned = malloc((size_t)n + 1);
    if (c && c->files) c->files[0].path = strdup(name && name[0] ? name : "(text)");
    if (!c || !c->files || !c->owned || !c->files[0].path) {
        if (c) { free(c->owned); if (c->files) free(c->files[0].path); free(c->files); free(c); }
        nnr_errorf(NNR_ERR_OOM, "corpus: out of memory for %lld bytes", (long long)n);
        return NULL;
    }
    atomic_init(&c->refcount, 1);
    if (n) memcpy(c->owned, bytes, (size_t)n);
    c->nfiles = 1;
    c->files[0].bytes = c->owned;
    c->files[0].size = c->size = n;
    return c;
}

/* ---------------- UTF-8 ---------------- */

int32_t nnr_utf8_decode(const uint8_t *s, int64_t n, int64_t *i)
{
    int64_t k = *i;
    uint32_t b = s[k];
    if (b < 0x80) { *i = k + 1; return (int32_t)b; }
    int len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
    if (!len || n - k < len) return -1;
    uint32_t cp = b & (0x7F >> len);
    for (int j = 1; j < len; j++) {
        if ((s[k + j] & 0xC0) != 0x80) return -1;
        cp = cp << 6 | (s[k + j] & 0x3F);
    }
    /* the shortest form only, no surrogates, nothing past U+10FFFF */
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return -1;
    *i = k + len;
    return (int32_t)cp;
}

int nnr_utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { out[0] = (uint8_t)(0xC0 | cp >> 6); out[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12); out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18); out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

int nnr_corpus_check_text(const nnr_corpus *c, const char *who)
{
    for (int f = 0; f < c->nfiles; f++) {
        const nnr_corpus_file *file = &c->files[f];
        for (int64_t i = 0; i < file->size;) {
            int64_t at = i;
            int32_t cp = nnr_utf8_decode(file->bytes, file->size, &i);
            if (cp > 0) continue;
            return nnr_errorf(NNR_ERR_INVALID, "%s: %s is not text: %s at byte offset %lld (0x%02x); a binary file? (bytes or BPE take any bytes)",
                              who, file->path, cp == 0 ? "a NUL byte" : "invalid UTF-8", (long long)at, file->bytes[at]);
        }
    }
    return NNR_OK;
}
