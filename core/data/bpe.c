/* Byte-level BPE (docs/sequence.md; after minbpe's basic.py): text is first
 * cut into chunks, then each chunk's bytes are merged pair by pair in the
 * order the merges were learnt. Training (bpe_train.c) and encoding cut the
 * same way, so merges never cross a chunk and a chunk seen twice is encoded
 * once (a cache of chunk -> ids).
 *
 * The chunks (GPT-2's pre-split, on bytes rather than Unicode classes):
 *   - a run of letters (ASCII letters and every byte >= 0x80, so a UTF-8
 *     word stays whole), of digits, or of other bytes (punctuation), with
 *     one space before it attached (" the", " 42", " --");
 *   - a run of whitespace, except that its last space goes with the word
 *     after it;
 *   - cut every NNR_BPE_MAX_CHUNK bytes, which bounds a token's length and
 *     the work per chunk.
 * Every byte belongs to exactly one chunk and ids decode to their bytes, so
 * decode(encode(s)) == s for any bytes, invalid UTF-8 included. */
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"

enum { C_SPACE, C_BLANK, C_LETTER, C_DIGIT, C_OTHER };
enum { CACHE_MAX = 1 << 20 };           /* chunks the encoder remembers */

static int byte_class(uint8_t b)
{
    if (b == ' ') return C_SPACE;
    if (b == '\t' || b == '\n' || b == '\v' || b == '\f' || b == '\r') return C_BLANK;
    if (b >= 0x80 || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return C_LETTER;
    if (b >= '0' && b <= '9') return C_DIGIT;
    return C_OTHER;
}

int64_t nnr_bpe_chunk_end(const uint8_t *s, int64_t n, int64_t i)
{
    int64_t limit = n - i > NNR_BPE_MAX_CHUNK ? i + NNR_BPE_MAX_CHUNK : n, j = i + 1;
    int c = byte_class(s[i]);
    if (c == C_SPACE && j < n && byte_class(s[j]) >= C_LETTER) c = byte_class(s[j++]);
    if (c >= C_LETTER) {
        while (j < limit && byte_class(s[j]) == c) j++;
        return j;
    }
    while (j < n && j <= limit && byte_class(s[j]) <= C_BLANK) j++;
    if (j > limit) return limit;            /* whitespace goes on past the cut */
    if (j < n && j - i > 1 && s[j - 1] == ' ') j--;
    return j;
}

/* ---------------- chunk -> value table ---------------- */

static uint32_t hash_bytes(const uint8_t *p, int32_t n)
{
    uint64_t h = 1469598103934665603ULL;            /* FNV-1a */
    for (int32_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return (uint32_t)(h ^ (h >> 32));
}

static int grow(nnr_chunk_map *m)
{
    uint64_t cap = m->slots ? (m->mask + 1) * 2 : 1024;
    nnr_chunk_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (uint64_t k = 0; m->slots && k <= m->mask; k++) {
        if (!m->slots[k].len) continue;
        uint64_t h = m->slots[k].hash & (cap - 1);
        while (slots[h].len) h = (h + 1) & (cap - 1);
        slots[h] = m->slots[k];
    }
    free(m->slots);
    m->slots = slots;
    m->mask = cap - 1;
    return 0;
}

nnr_chunk_slot *nnr_chunk_map_get(nnr_chunk_map *m, const uint8_t *key, int32_t len, int insert)
{
    if (insert && (!m->slots || (uint64_t)(m->count + 1) * 2 > m->mask + 1) && grow(m)) return NULL;
    if (!m->slots) return NULL;
    uint32_t hash = hash_bytes(key, len);
    uint64_t h = hash & m->mask;
    for (; m->slots[h].len; h = (h + 1) & m->mask) {
        nnr_chunk_slot *s = &m->slots[h];
        if (s->hash == hash && s->len == len && memcmp(s->key, key, (size_t)len) == 0) return s;
    }
    if (!insert) return NULL;
    m->slots[h] = (nnr_chunk_slot){key, len, hash, -1};
    m->count++;
    return &m->slots[h];
}

void nnr_chunk_map_free(nnr_chunk_map *m)
{
    free(m->slots);
    free(m->payload.ids);
    memset(m, 0, sizeof *m);
}

/* ---------------- encoding ---------------- */

/* one chunk's bytes (len <= NNR_BPE_MAX_CHUNK) to 0-based ids: the learnt merge of lowest rank among
 * adjacent pairs, everywhere it occurs left to right, until none applies; the count */
static int encode_chunk(const nnr_tokenizer *t, const uint8_t *s, int len, int32_t *ids)
{
    int n = len;
    for (int k = 0; k < n; k++) ids[k] = s[k];
    while (n >= 2) {
        int32_t best = -1;
        int at = -1;
        for (int k = 0; k + 1 < n; k++) {
            int32_t r = nnr_bpe_rank(t, ids[k], ids[k + 1]);
            if (r >= 0 && (best < 0 || r < best)) { best = r; at = k; }
        }
        if (at < 0) break;
        int32_t a = ids[at], b = ids[at + 1];
        int w = at;
        for (int k = at; k < n;) {
            if (k + 1 < n && ids[k] == a && ids[k + 1] == b) { ids[w++] = best; k += 2; }
            else ids[w++] = ids[k++];
        }
        n = w;
    }
    return n;
}

int nnr_bpe_encode(const nnr_tokenizer *t, const uint8_t *s, int64_t n, nnr_id_buf *out, nnr_chunk_map *cache)
{
    int32_t ids[NNR_BPE_MAX_CHUNK];
    for (int64_t i = 0; i < n;) {
        int64_t end = nnr_bpe_chunk_end(s, n, i);
        int len = (int)(end - i);
        if (nnr_id_buf_reserve(out, len)) return nnr_last_status();
        nnr_chunk_slot *slot = nnr_chunk_map_get(cache, s + i, len, cache->count < CACHE_MAX);
        if (slot && slot->value >= 0) {             /* value: where its ids are in the payload << 7 | their count */
            int k = (int)(slot->value & 127);
            memcpy(out->ids + out->n, cache->payload.ids + (slot->value >> 7), sizeof(int32_t) * (size_t)k);
            out->n += k;
        } else {
            int k = encode_chunk(t, s + i, len, ids);
            for (int j = 0; j < k; j++) out->ids[out->n + j] = ids[j] + 1;
            if (slot && nnr_id_buf_reserve(&cache->payload, k) == NNR_OK) {
                memcpy(cache->payload.ids + cache->payload.n, out->ids + out->n, sizeof(int32_t) * (size_t)k);
                slot->value = cache->payload.n << 7 | k;
                cache->payload.n += k;
            }
            out->n += k;
        }
        i = end;
    }
    return NNR_OK;
}
