/* Tokenizer files (docs/sequence.md): JSON, read with cJSON and validated
 * field by field before anything is built from them, written atomically.
 *   {"type": "nnrun.bpe", "version": 1, "chunks": "bytes64", "vocab_size": 258,
 *    "merges": [[105, 111], [33, 257]]}
 *   {"type": "nnrun.charvocab", "version": 1, "vocab_size": 3, "chars": [10, 32, 97]}
 * Ids are 1-based, as everywhere in Lua: BPE's 1..256 are the bytes 0..255
 * and merge k makes token 256 + k out of two earlier tokens; a vocabulary's
 * characters are code points in ascending order, id k the k-th. Unknown or
 * repeated keys, ids out of range, repeated merges or characters, tokens
 * longer than a chunk and sizes that disagree are errors naming the field. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"

/* the largest vocabulary's file is about 23 MB (a merge a line); the values it holds are at most about 3 a
 * token, so a file with more commas and brackets than 4 a token is refused before cJSON builds a tree of it */
enum { MAX_FILE = 32 << 20, MAX_VALUES = 4 * NNR_TOKENIZER_MAX_VOCAB + 64, FORMAT_VERSION = 1 };
static const char BPE_TYPE[] = "nnrun.bpe", CHAR_TYPE[] = "nnrun.charvocab", CHUNKS[] = "bytes64";

/* ---------------- saving ---------------- */

typedef struct text_buf { char *p; size_t n, cap; int failed; } text_buf;

static void put(text_buf *b, const char *fmt, long long v)
{
    char tmp[64];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    if (b->failed || k < 0) { b->failed = 1; return; }
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->failed = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, tmp, (size_t)k + 1);
    b->n += (size_t)k;
}

int nnr_tokenizer_save(const nnr_tokenizer *t, const char *path)
{
    if (!path || !path[0]) return nnr_errorf(NNR_ERR_INVALID, "save: the path is empty");
    int bpe = t->kind == NNR_TOKENIZER_BPE;
    text_buf b = {0};
    put(&b, bpe ? "{\"type\": \"nnrun.bpe\", \"version\": %lld, \"chunks\": \"bytes64\"," : "{\"type\": \"nnrun.charvocab\", \"version\": %lld,",
        FORMAT_VERSION);
    put(&b, " \"vocab_size\": %lld,", (long long)t->vocab);
    put(&b, bpe ? "\n \"merges\": [" : "\n \"chars\": [", 0);
    int64_t n = bpe ? t->nmerges : t->vocab;
    for (int64_t k = 0; k < n; k++) {
        if (bpe) {
            put(&b, k ? ",\n  [%lld, " : "\n  [%lld, ", t->merges[2 * k] + 1);
            put(&b, "%lld]", t->merges[2 * k + 1] + 1);
        } else {
            put(&b, k == 0 ? "%lld" : k % 16 ? ", %lld" : ",\n  %lld", t->chars[k]);
        }
    }
    put(&b, "]}\n", 0);
    if (b.failed) { free(b.p); return nnr_errorf(NNR_ERR_OOM, "save %s: out of memory", path); }
    const void *parts[1] = {b.p};
    size_t sizes[1] = {b.n};
    int st = nnr_write_atomically(path, 1, parts, sizes);
    free(b.p);
    return st;
}

/* ---------------- loading ---------------- */

/* v as a whole number in [lo, hi], or an error naming what */
static int whole(const char *path, const char *what, const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
        return nnr_errorf(NNR_ERR_IO, "load %s: %s must be a whole number in %lld..%lld", path, what, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return NNR_OK;
}

/* the root's keys are all known and none repeats */
static int check_keys(const char *path, const cJSON *root, const char *const *known, int nknown)
{
    for (const cJSON *a = root->child; a; a = a->next) {
        int ok = 0;
        for (int k = 0; k < nknown && !ok; k++) ok = strcmp(a->string, known[k]) == 0;
        if (!ok) return nnr_errorf(NNR_ERR_IO, "load %s: unknown key \"%.60s\"", path, a->string);
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0) return nnr_errorf(NNR_ERR_IO, "load %s: the key \"%.60s\" appears twice", path, a->string);
    }
    for (int k = 0; k < nknown; k++)
        if (!cJSON_GetObjectItemCaseSensitive(root, known[k])) return nnr_errorf(NNR_ERR_IO, "load %s: the key \"%s\" is missing", path, known[k]);
    return NNR_OK;
}

/* the list under key: an array of exactly `count` entries */
static const cJSON *list_of(const char *path, const cJSON *root, const char *key, int64_t count)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsArray(a)) { nnr_errorf(NNR_ERR_IO, "load %s: \"%s\" must be a list", path, key); return NULL; }
    int64_t n = 0;
    for (const cJSON *e = a->child; e; e = e->next) n++;
    if (n != count) {
        nnr_errorf(NNR_ERR_IO, "load %s: \"%s\" has %lld entries but vocab_size %lld says %lld", path, key, (long long)n,
                   (long long)(strcmp(key, "merges") == 0 ? count + NNR_BPE_BYTES : count), (long long)count);
        return NULL;
    }
    return a;
}

static nnr_tokenizer *load_bpe(const char *path, const cJSON *root, int64_t vocab)
{
    static const char *const keys[] = {"type", "version", "chunks", "vocab_size", "merges"};
    if (check_keys(path, root, keys, 5)) return NULL;
    const cJSON *chunks = cJSON_GetObjectItemCaseSensitive(root, "chunks");
    if (!cJSON_IsString(chunks) || strcmp(chunks->valuestring, CHUNKS) != 0) {
        nnr_errorf(NNR_ERR_IO, "load %s: \"chunks\" must be \"%s\" (the only pre-split this version knows)", path, CHUNKS);
        return NULL;
    }
    if (vocab < NNR_BPE_BYTES) { nnr_errorf(NNR_ERR_IO, "load %s: vocab_size %lld is below the 256 byte tokens", path, (long long)vocab); return NULL; }
    const cJSON *merges = list_of(path, root, "merges", vocab - NNR_BPE_BYTES);
    nnr_tokenizer *t = merges ? nnr_tokenizer_alloc(NNR_TOKENIZER_BPE, vocab, "BPE") : NULL;
    if (!t) return NULL;
    int64_t k = 0;
    for (const cJSON *m = merges->child; m; m = m->next, k++) {
        char what[64];
        if (!cJSON_IsArray(m) || !m->child || !m->child->next || m->child->next->next) {
            nnr_errorf(NNR_ERR_IO, "load %s: merge %lld must be a pair of token ids [left, right]", path, (long long)k + 1);
            nnr_tokenizer_free(t);
            return NULL;
        }
        int64_t a, b;
        snprintf(what, sizeof what, "merge %lld's tokens", (long long)k + 1);    /* made before it: ids 1 .. 256 + k */
        if (whole(path, what, m->child, 1, NNR_BPE_BYTES + k, &a) || whole(path, what, m->child->next, 1, NNR_BPE_BYTES + k, &b)) {
            nnr_tokenizer_free(t);
            return NULL;
        }
        t->merges[2 * k] = (int32_t)(a - 1);
        t->merges[2 * k + 1] = (int32_t)(b - 1);
    }
    if (nnr_tokenizer_finish(t, "BPE")) {
        char why[512];
        snprintf(why, sizeof why, "%s", nnr_last_error());
        nnr_errorf(nnr_last_status(), "load %s: %s", path, why + (strncmp(why, "BPE: ", 5) == 0 ? 5 : 0));
        nnr_tokenizer_free(t);
        return NULL;
    }
    return t;
}

static nnr_tokenizer *load_chars(const char *path, const cJSON *root, int64_t vocab)
{
    static const char *const keys[] = {"type", "version", "vocab_size", "chars"};
    if (check_keys(path, root, keys, 4)) return NULL;
    const cJSON *chars = list_of(path, root, "chars", vocab);
    nnr_tokenizer *t = chars ? nnr_tokenizer_alloc(NNR_TOKENIZER_CHAR, vocab, "CharVocab") : NULL;
    if (!t) return NULL;
    int64_t k = 0, prev = 0;
    for (const cJSON *c = chars->child; c; c = c->next, k++) {
        int64_t cp;
        char what[64];
        snprintf(what, sizeof what, "character %lld", (long long)k + 1);
        if (whole(path, what, c, 1, 0x10FFFF, &cp)) { nnr_tokenizer_free(t); return NULL; }
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp <= prev) {
            nnr_errorf(NNR_ERR_IO, "load %s: character %lld (%lld) %s", path, (long long)k + 1, (long long)cp,
                       cp <= prev ? "is not above the one before it (characters are distinct code points in ascending order)"
                                  : "is a UTF-16 surrogate, not a character");
            nnr_tokenizer_free(t);
            return NULL;
        }
        t->chars[k] = (int32_t)cp;
        prev = cp;
    }
    if (nnr_tokenizer_finish(t, "CharVocab")) { nnr_tokenizer_free(t); return NULL; }
    return t;
}

/* the document's root object, or NULL with an error naming the byte where parsing stopped */
static cJSON *parse_file(const char *path)
{
    unsigned char *buf = NULL;
    size_t n = 0;
    char err[512];
    int st = nnr_read_whole_file(path, MAX_FILE, &buf, &n, err, sizeof err);
    if (st) { nnr_errorf(st, "load %s", err); return NULL; }
    if (n == 0) { free(buf); nnr_errorf(NNR_ERR_IO, "load %s: the file is empty", path); return NULL; }
    buf[n] = 0;
    size_t values = 0;
    for (size_t k = 0; k < n; k++) values += buf[k] == ',' || buf[k] == '[' || buf[k] == '{';
    if (values > MAX_VALUES) {
        free(buf);
        nnr_errorf(NNR_ERR_IO, "load %s: %zu values, more than a tokenizer of the largest vocabulary (%d tokens) has", path, values,
                   NNR_TOKENIZER_MAX_VOCAB);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)buf, n, &end, 0);
    size_t at = end ? (size_t)(end - (const char *)buf) : 0;
    while (root && at < n && (buf[at] == ' ' || buf[at] == '\t' || buf[at] == '\n' || buf[at] == '\r')) at++;
    if (!root || at < n) {
        nnr_errorf(NNR_ERR_IO, "load %s: not JSON (%s at byte offset %zu)", path, root ? "something after the document" : "a syntax error", at);
        cJSON_Delete(root);
        root = NULL;
    } else if (!cJSON_IsObject(root)) {
        nnr_errorf(NNR_ERR_IO, "load %s: the document must be an object {\"type\": ...}", path);
        cJSON_Delete(root);
        root = NULL;
    }
    free(buf);
    return root;
}

nnr_tokenizer *nnr_tokenizer_load(const char *path)
{
    if (!path || !path[0]) { nnr_errorf(NNR_ERR_INVALID, "load: the path is empty"); return NULL; }
    cJSON *root = parse_file(path);
    if (!root) return NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    nnr_tokenizer *t = NULL;
    int64_t version = 0, vocab = 0;
    int bpe = cJSON_IsString(type) && strcmp(type->valuestring, BPE_TYPE) == 0;
    if (!bpe && !(cJSON_IsString(type) && strcmp(type->valuestring, CHAR_TYPE) == 0))
        nnr_errorf(NNR_ERR_IO, "load %s: not a tokenizer file (\"type\" must be \"%s\" or \"%s\")", path, BPE_TYPE, CHAR_TYPE);
    else if (whole(path, "version", cJSON_GetObjectItemCaseSensitive(root, "version"), 1, 1000000, &version)) {}
    else if (version != FORMAT_VERSION)
        nnr_errorf(NNR_ERR_IO, "load %s: format version %lld; this nnrun reads version %d", path, (long long)version, FORMAT_VERSION);
    else if (whole(path, "vocab_size", cJSON_GetObjectItemCaseSensitive(root, "vocab_size"), 1, NNR_TOKENIZER_MAX_VOCAB, &vocab)) {}
    else t = bpe ? load_bpe(path, root, vocab) : load_chars(path, root, vocab);
    cJSON_Delete(root);
    return t;
}
