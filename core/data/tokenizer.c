/* Tokenizers (docs/sequence.md): what a character vocabulary and a byte-level
 * BPE share (every token's bytes in one pool, decoding, the id checks), and
 * the character vocabulary itself. Ids are 1-based at the API, 0-based
 * inside. A tokenizer is immutable once made, so the loader's threads and
 * several Lua states may share one. BPE's own parts: bpe.c (chunks, encoding)
 * and bpe_train.c; the JSON files: tokenizer_json.c. */
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"

static const char *kind_name(int kind) { return kind == NNR_TOKENIZER_CHAR ? "CharVocab" : "BPE"; }

void nnr_tokenizer_free(nnr_tokenizer *t)
{
    if (!t) return;
    free(t->pool);
    free(t->offs);
    free(t->chars);
    free(t->merges);
    free(t->rank_keys);
    free(t->rank_ids);
    free(t);
}

void nnr_bytes_free(char *bytes) { free(bytes); }

int nnr_tokenizer_kind(const nnr_tokenizer *t) { return t->kind; }
int64_t nnr_tokenizer_vocab_size(const nnr_tokenizer *t) { return t->vocab; }

nnr_tokenizer *nnr_tokenizer_alloc(int kind, int64_t vocab, const char *who)
{
    int64_t lo = kind == NNR_TOKENIZER_BPE ? NNR_BPE_BYTES : 1;
    if ((kind != NNR_TOKENIZER_CHAR && kind != NNR_TOKENIZER_BPE) || vocab < lo || vocab > NNR_TOKENIZER_MAX_VOCAB) {
        nnr_errorf(NNR_ERR_INVALID, "%s: a vocabulary of %lld tokens (%lld to %d)", who, (long long)vocab, (long long)lo, NNR_TOKENIZER_MAX_VOCAB);
        return NULL;
    }
    nnr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { nnr_errorf(NNR_ERR_OOM, "%s: out of memory", who); return NULL; }
    t->kind = kind;
    t->vocab = vocab;
    if (kind == NNR_TOKENIZER_CHAR) t->chars = malloc(sizeof(int32_t) * (size_t)vocab);
    else t->merges = malloc(sizeof(int32_t) * 2 * (size_t)(vocab - NNR_BPE_BYTES + 1));
    t->nmerges = kind == NNR_TOKENIZER_BPE ? vocab - NNR_BPE_BYTES : 0;
    if (kind == NNR_TOKENIZER_CHAR ? !t->chars : !t->merges) { nnr_tokenizer_free(t); nnr_errorf(NNR_ERR_OOM, "%s: out of memory", who); return NULL; }
    return t;
}

/* every token's bytes: a character's UTF-8, a byte, or a merge's two halves one after the other (each at most
 * NNR_BPE_MAX_CHUNK bytes: a longer token could never come out of a chunk) */
static int build_pool(nnr_tokenizer *t, const char *who)
{
    t->offs = malloc(sizeof(int64_t) * (size_t)(t->vocab + 1));
    t->pool = malloc((size_t)t->vocab * (t->kind == NNR_TOKENIZER_CHAR ? 4 : NNR_BPE_MAX_CHUNK));
    if (!t->offs || !t->pool) return nnr_errorf(NNR_ERR_OOM, "%s: out of memory for %lld tokens", who, (long long)t->vocab);
    int64_t at = 0;
    t->offs[0] = 0;
    for (int64_t i = 0; i < t->vocab; i++) {
        if (t->kind == NNR_TOKENIZER_CHAR) at += nnr_utf8_encode((uint32_t)t->chars[i], t->pool + at);
        else if (i < NNR_BPE_BYTES) t->pool[at++] = (uint8_t)i;
        else {
            int32_t a = t->merges[2 * (i - NNR_BPE_BYTES)], b = t->merges[2 * (i - NNR_BPE_BYTES) + 1];
            int64_t la = t->offs[a + 1] - t->offs[a], lb = t->offs[b + 1] - t->offs[b];
            if (la + lb > NNR_BPE_MAX_CHUNK)
                return nnr_errorf(NNR_ERR_INVALID, "%s: merge %lld (%d, %d) makes a token of %lld bytes; chunks, and so tokens, have at most %d",
                                  who, (long long)(i - NNR_BPE_BYTES + 1), a + 1, b + 1, (long long)(la + lb), NNR_BPE_MAX_CHUNK);
            memcpy(t->pool + at, t->pool + t->offs[a], (size_t)la);
            memcpy(t->pool + at + la, t->pool + t->offs[b], (size_t)lb);
            at += la + lb;
        }
        t->offs[i + 1] = at;
    }
    return NNR_OK;
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; }   /* 0: empty */
static uint64_t pair_hash(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; return k; }

int32_t nnr_bpe_rank(const nnr_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t k = pair_key(a, b);
    for (uint64_t h = pair_hash(k) & t->rank_mask;; h = (h + 1) & t->rank_mask) {
        if (t->rank_keys[h] == k) return t->rank_ids[h];
        if (t->rank_keys[h] == 0) return -1;
    }
}

/* the pair table of the merges; a pair merged twice is refused (a file could say so; training never does) */
static int build_ranks(nnr_tokenizer *t, const char *who)
{
    uint64_t cap = 16;
    while (cap < (uint64_t)t->nmerges * 2) cap <<= 1;
    t->rank_mask = cap - 1;
    t->rank_keys = calloc(cap, sizeof *t->rank_keys);
    t->rank_ids = malloc(cap * sizeof *t->rank_ids);
    if (!t->rank_keys || !t->rank_ids) return nnr_errorf(NNR_ERR_OOM, "%s: out of memory", who);
    for (int64_t m = 0; m < t->nmerges; m++) {
        uint64_t k = pair_key(t->merges[2 * m], t->merges[2 * m + 1]), h = pair_hash(k) & t->rank_mask;
        while (t->rank_keys[h] && t->rank_keys[h] != k) h = (h + 1) & t->rank_mask;
        if (t->rank_keys[h] == k)
            return nnr_errorf(NNR_ERR_INVALID, "%s: merge %lld repeats the pair (%d, %d) of merge %d", who, (long long)m + 1, t->merges[2 * m] + 1,
                              t->merges[2 * m + 1] + 1, t->rank_ids[h] - NNR_BPE_BYTES + 1);
        t->rank_keys[h] = k;
        t->rank_ids[h] = (int32_t)(NNR_BPE_BYTES + m);
    }
    return NNR_OK;
}

int nnr_tokenizer_finish(nnr_tokenizer *t, const char *who)
{
    if (t->kind == NNR_TOKENIZER_CHAR) {
        for (int i = 0; i < 128; i++) t->ascii[i] = -1;
        for (int64_t i = 0; i < t->vocab && t->chars[i] < 128; i++) t->ascii[t->chars[i]] = (int32_t)i;
    }
    int st = build_pool(t, who);
    if (st == NNR_OK && t->kind == NNR_TOKENIZER_BPE) st = build_ranks(t, who);
    return st;
}

int nnr_bpe_merge(const nnr_tokenizer *t, int64_t k, int64_t *left, int64_t *right)
{
    if (t->kind != NNR_TOKENIZER_BPE) return nnr_errorf(NNR_ERR_INVALID, "CharVocab has no merges");
    if (k < 1 || k > t->nmerges) return nnr_errorf(NNR_ERR_INVALID, "BPE: merge %lld is outside 1..%lld", (long long)k, (long long)t->nmerges);
    *left = t->merges[2 * (k - 1)] + 1;
    *right = t->merges[2 * (k - 1) + 1] + 1;
    return NNR_OK;
}

const char *nnr_tokenizer_token(const nnr_tokenizer *t, int64_t id, int64_t *n)
{
    if (id < 1 || id > t->vocab) {
        nnr_errorf(NNR_ERR_INVALID, "%s: id %lld is outside the vocabulary 1..%lld", kind_name(t->kind), (long long)id, (long long)t->vocab);
        return NULL;
    }
    *n = t->offs[id] - t->offs[id - 1];
    return (const char *)t->pool + t->offs[id - 1];
}

/* ---------------- decoding ---------------- */

char *nnr_tokenizer_decode(const nnr_tokenizer *t, const nnr_tensor *ids, int64_t *n)
{
    const char *who = kind_name(t->kind);
    int dt = ids->dtype;
    if (dt != NNR_I32 && dt != NNR_I64 && dt != NNR_I8 && dt != NNR_U8) {
        nnr_errorf(NNR_ERR_INVALID, "%s: decode takes integer ids, got %s", who, nnr_dtype_name(dt));
        return NULL;
    }
    if (!nnr_device_is_host_memory(ids->device)) { nnr_errorf(NNR_ERR_INVALID, "%s: decode takes ids in cpu memory", who); return NULL; }
    nnr_tensor *c = nnr_contiguous(ids);
    if (!c) return NULL;
    int64_t count = nnr_tensor_numel(c), bytes = 0;
    const void *p = nnr_tensor_data(c);
    char *out = NULL;
    for (int pass = 0; pass < 2; pass++) {          /* the length (and the ids checked), then the bytes */
        int64_t at = 0;
        for (int64_t k = 0; k < count; k++) {
            int64_t id = dt == NNR_I64 ? ((const int64_t *)p)[k] : dt == NNR_I32 ? ((const int32_t *)p)[k]
                       : dt == NNR_I8 ? ((const int8_t *)p)[k] : ((const uint8_t *)p)[k];
            if (id < 1 || id > t->vocab) {
                nnr_errorf(NNR_ERR_INVALID, "%s: decode: id %lld (position %lld) is outside the vocabulary 1..%lld", who, (long long)id,
                           (long long)k + 1, (long long)t->vocab);
                nnr_tensor_release(c);
                return NULL;
            }
            int64_t len = t->offs[id] - t->offs[id - 1];
            if (pass) memcpy(out + at, t->pool + t->offs[id - 1], (size_t)len);
            at += len;                               /* at most count * NNR_BPE_MAX_CHUNK: no overflow */
        }
        if (!pass && !(out = malloc((size_t)at + 1))) {
            nnr_tensor_release(c);
            nnr_errorf(NNR_ERR_OOM, "%s: decode: out of memory for %lld bytes", who, (long long)at);
            return NULL;
        }
        bytes = at;
    }
    nnr_tensor_release(c);
    out[bytes] = 0;
    *n = bytes;
    return out;
}

/* ---------------- the character vocabulary ---------------- */

static int cmp_i32(const void *a, const void *b) { int32_t x = *(const int32_t *)a, y = *(const int32_t *)b; return (x > y) - (x < y); }

nnr_tokenizer *nnr_charvocab_build(const nnr_corpus *c)
{
    if (nnr_corpus_check_text(c, "CharVocab")) return NULL;
    uint8_t *seen = calloc(0x110000 / 8, 1);        /* a bit per code point: 136 KiB */
    if (!seen) { nnr_errorf(NNR_ERR_OOM, "CharVocab: out of memory"); return NULL; }
    int64_t distinct = 0;
    for (int f = 0; f < c->nfiles; f++)
        for (int64_t i = 0; i < c->files[f].size;) {
            int32_t cp = nnr_utf8_decode(c->files[f].bytes, c->files[f].size, &i);   /* valid: checked above ... */
            if (cp <= 0) {                                                             /* ... unless it changed since */
                free(seen);
                nnr_errorf(NNR_ERR_IO, "CharVocab: %s changed while it was read", c->files[f].path);
                return NULL;
            }
            if (!(seen[cp >> 3] & (1 << (cp & 7)))) { seen[cp >> 3] |= (uint8_t)(1 << (cp & 7)); distinct++; }
        }
    nnr_tokenizer *t = nnr_tokenizer_alloc(NNR_TOKENIZER_CHAR, distinct, "CharVocab");
    if (t) {
        int64_t k = 0;
        for (int32_t cp = 0; cp < 0x110000; cp++)
            if (seen[cp >> 3] & (1 << (cp & 7))) t->chars[k++] = cp;
        if (nnr_tokenizer_finish(t, "CharVocab")) { nnr_tokenizer_free(t); t = NULL; }
    }
    free(seen);
    return t;
}

/* the id of code point cp, or -1 */
static int32_t char_id(const nnr_tokenizer *t, int32_t cp)
{
    if (cp < 128) return t->ascii[cp];
    int32_t *hit = bsearch(&cp, t->chars, (size_t)t->vocab, sizeof(int32_t), cmp_i32);
    return hit ? (int32_t)(hit - t->chars) : -1;
}

int nnr_id_buf_reserve(nnr_id_buf *b, int64_t more)
{
    int64_t need;
    if (!nnr_size_add(b->n, more, &need)) return nnr_errorf(NNR_ERR_OOM, "encode: too many tokens");
    if (need <= b->cap) return NNR_OK;
    int64_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    int32_t *ids = realloc(b->ids, sizeof(int32_t) * (size_t)cap);
    if (!ids) return nnr_errorf(NNR_ERR_OOM, "encode: out of memory for %lld tokens", (long long)cap);
    b->ids = ids;
    b->cap = cap;
    return NNR_OK;
}

/* the characters of s[0, n) as 1-based ids appended to out; where: the file, for messages */
static int char_encode(const nnr_tokenizer *t, const uint8_t *s, int64_t n, const char *where, nnr_id_buf *out)
{
    for (int64_t i = 0; i < n;) {
        if (out->n == out->cap && nnr_id_buf_reserve(out, 1)) return nnr_last_status();
        int64_t at = i;
        int32_t cp = nnr_utf8_decode(s, n, &i), id = cp > 0 ? char_id(t, cp) : -1;
        if (cp <= 0)
            return nnr_errorf(NNR_ERR_INVALID, "CharVocab: %s is not text: %s at byte offset %lld (0x%02x)", where,
                              cp == 0 ? "a NUL byte" : "invalid UTF-8", (long long)at, s[at]);
        if (id < 0) {
            char shown[8] = "";
            if (cp >= 32 && cp != 127) { memcpy(shown, s + at, (size_t)(i - at)); shown[i - at] = 0; }
            return nnr_errorf(NNR_ERR_INVALID, "CharVocab: the character U+%04X%s%s%s at byte offset %lld of %s is not in the vocabulary (%lld characters)",
                              (unsigned)cp, shown[0] ? " '" : "", shown, shown[0] ? "'" : "", (long long)at, where, (long long)t->vocab);
        }
        out->ids[out->n++] = id + 1;
    }
    return NNR_OK;
}

static int encode_into(const nnr_tokenizer *t, const uint8_t *s, int64_t n, const char *where, nnr_id_buf *out, nnr_chunk_map *cache)
{
    return t->kind == NNR_TOKENIZER_BPE ? nnr_bpe_encode(t, s, n, out, cache) : char_encode(t, s, n, where, out);
}

static nnr_tensor *ids_tensor(nnr_id_buf *b)
{
    nnr_tensor *r = nnr_tensor_alloc(NNR_I32, 1, &b->n, nnr_host_device());
    if (r && b->n) memcpy(nnr_tensor_data(r), b->ids, sizeof(int32_t) * (size_t)b->n);
    free(b->ids);
    return r;
}

nnr_tensor *nnr_tokenizer_encode(const nnr_tokenizer *t, const char *bytes, int64_t n)
{
    if (n < 0 || (n > 0 && !bytes)) { nnr_errorf(NNR_ERR_INVALID, "%s: encode: %lld bytes", kind_name(t->kind), (long long)n); return NULL; }
    nnr_id_buf out = {0};
    nnr_chunk_map cache = {0};
    int st = encode_into(t, (const uint8_t *)bytes, n, "the text", &out, &cache);
    nnr_chunk_map_free(&cache);
    if (st) { free(out.ids); return NULL; }
    return ids_tensor(&out);
}

/* every file one after the other; the ids grow as needed (BPE's: about a third of the bytes' count) */
nnr_tensor *nnr_tokenizer_encode_corpus(const nnr_tokenizer *t, const nnr_corpus *c)
{
    nnr_id_buf out = {0};
    nnr_chunk_map cache = {0};
    int st = NNR_OK;
    for (int f = 0; f < c->nfiles && st == NNR_OK; f++) st = encode_into(t, c->files[f].bytes, c->files[f].size, c->files[f].path, &out, &cache);
    nnr_chunk_map_free(&cache);
    if (st) { free(out.ids); return NULL; }
    return ids_tensor(&out);
}
