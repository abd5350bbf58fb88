/* Training a byte-level BPE (docs/sequence.md). The corpus is cut into
 * chunks (bpe.c) and the distinct chunks counted, so the merges run over
 * tens of thousands of words weighted by their counts rather than over
 * millions of bytes. Each pair keeps its weighted count and the words it
 * occurs in; a max-heap with lazy deletion gives the most frequent pair
 * (ties: the smaller left id, then the smaller right id, so training is
 * deterministic). Merging a pair rewrites only the words holding it and
 * updates only their pairs' counts. */
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"

typedef struct pair_stat { int32_t a, b; int64_t count; int32_t occ; int32_t mark; } pair_stat;   /* occ: its newest occurrence */
typedef struct occurrence { int32_t word, next; } occurrence;
typedef struct heap_entry { int64_t count; int32_t pair; } heap_entry;

typedef struct trainer {
    int32_t *ids;                    /* every word's tokens, word w at ids[start[w], start[w] + len[w]) */
    int64_t *start, *weight;         /* weight: how often the chunk occurs */
    int32_t *len, *touched;          /* touched: the last merge that rewrote the word */
    int64_t nwords;
    pair_stat *pairs; int64_t npairs, pairs_cap;
    uint64_t *keys; int32_t *slot_pair; uint64_t mask;     /* (a, b) -> pair index */
    occurrence *occ; int64_t nocc, occ_cap;
    heap_entry *heap; int64_t nheap, heap_cap;
    int32_t *fresh; int64_t nfresh, fresh_cap;             /* the pairs a merge made or grew */
} trainer;

static int oom(void) { return nnr_errorf(NNR_ERR_OOM, "BPE: out of memory while training"); }

/* grows *p (of elem bytes each) to hold at least need, doubling */
static int reserve(void **p, int64_t *cap, int64_t need, size_t elem)
{
    if (need <= *cap) return 0;
    int64_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static uint64_t key_of(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; }
static uint64_t mix(uint64_t k) { k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33; return k; }

static int rehash(trainer *t)
{
    uint64_t cap = t->keys ? (t->mask + 1) * 2 : 1 << 16;
    uint64_t *keys = calloc(cap, sizeof *keys);
    int32_t *slot_pair = malloc(cap * sizeof *slot_pair);
    if (!keys || !slot_pair) { free(keys); free(slot_pair); return -1; }
    for (int64_t p = 0; p < t->npairs; p++) {
        uint64_t k = key_of(t->pairs[p].a, t->pairs[p].b), h = mix(k) & (cap - 1);
        while (keys[h]) h = (h + 1) & (cap - 1);
        keys[h] = k;
        slot_pair[h] = (int32_t)p;
    }
    free(t->keys);
    free(t->slot_pair);
    t->keys = keys;
    t->slot_pair = slot_pair;
    t->mask = cap - 1;
    return 0;
}

/* the index of pair (a, b), made (count 0) when new; -1 when out of memory */
static int32_t pair_index(trainer *t, int32_t a, int32_t b)
{
    if ((!t->keys || (uint64_t)(t->npairs + 1) * 2 > t->mask + 1) && rehash(t)) return -1;
    uint64_t k = key_of(a, b), h = mix(k) & t->mask;
    for (; t->keys[h]; h = (h + 1) & t->mask)
        if (t->keys[h] == k) return t->slot_pair[h];
    if (t->npairs >= INT32_MAX || reserve((void **)&t->pairs, &t->pairs_cap, t->npairs + 1, sizeof *t->pairs)) return -1;
    t->pairs[t->npairs] = (pair_stat){a, b, 0, -1, -1};
    t->keys[h] = k;
    t->slot_pair[h] = (int32_t)t->npairs;
    return (int32_t)t->npairs++;
}

/* heap order: the larger count first, then the smaller (a, b) */
static int above(const trainer *t, heap_entry x, heap_entry y)
{
    if (x.count != y.count) return x.count > y.count;
    const pair_stat *p = &t->pairs[x.pair], *q = &t->pairs[y.pair];
    return p->a != q->a ? p->a < q->a : p->b < q->b;
}

static int heap_push(trainer *t, int32_t pair)
{
    if (reserve((void **)&t->heap, &t->heap_cap, t->nheap + 1, sizeof *t->heap)) return -1;
    heap_entry e = {t->pairs[pair].count, pair};
    int64_t i = t->nheap++;
    while (i > 0 && above(t, e, t->heap[(i - 1) / 2])) { t->heap[i] = t->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    t->heap[i] = e;
    return 0;
}

static heap_entry heap_pop(trainer *t)
{
    heap_entry top = t->heap[0], last = t->heap[--t->nheap];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= t->nheap) break;
        if (c + 1 < t->nheap && above(t, t->heap[c + 1], t->heap[c])) c++;
        if (!above(t, t->heap[c], last)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (t->nheap) t->heap[i] = last;
    return top;
}

/* adds sign * the word's weight to each of its pairs; with sign > 0, a pair holding token z (just made), or
 * every pair when z < 0 (the first count), notes the word among its occurrences and goes on the fresh list */
static int count_pairs(trainer *t, int64_t w, int sign, int32_t z)
{
    const int32_t *ids = t->ids + t->start[w];
    for (int32_t k = 0; k + 1 < t->len[w]; k++) {
        int32_t p = pair_index(t, ids[k], ids[k + 1]);
        if (p < 0) return -1;
        t->pairs[p].count += sign * t->weight[w];
        if (sign < 0 || (z >= 0 && ids[k] != z && ids[k + 1] != z)) continue;
        if (t->nocc >= INT32_MAX || reserve((void **)&t->occ, &t->occ_cap, t->nocc + 1, sizeof *t->occ)) return -1;
        t->occ[t->nocc] = (occurrence){(int32_t)w, t->pairs[p].occ};
        t->pairs[p].occ = (int32_t)t->nocc++;
        if (t->pairs[p].mark != z) {
            t->pairs[p].mark = z;
            if (reserve((void **)&t->fresh, &t->fresh_cap, t->nfresh + 1, sizeof *t->fresh)) return -1;
            t->fresh[t->nfresh++] = p;
        }
    }
    return 0;
}

/* the distinct chunks of the corpus as words of byte tokens, each weighted by its count */
static int collect_words(trainer *t, const nnr_corpus *c, nnr_chunk_map *m)
{
    int64_t total = 0;
    for (int f = 0; f < c->nfiles; f++) {
        const uint8_t *s = c->files[f].bytes;
        for (int64_t i = 0, n = c->files[f].size; i < n;) {
            int64_t end = nnr_bpe_chunk_end(s, n, i);
            nnr_chunk_slot *slot = nnr_chunk_map_get(m, s + i, (int32_t)(end - i), 1);
            if (!slot) return oom();
            if (slot->value < 0) { slot->value = 0; total += end - i; }
            slot->value++;
            i = end;
        }
    }
    if (m->count >= INT32_MAX || total >= INT32_MAX) return nnr_errorf(NNR_ERR_INVALID, "BPE: the corpus has too many distinct chunks to train on");
    t->ids = malloc(sizeof *t->ids * (size_t)(total ? total : 1));
    t->start = malloc(sizeof *t->start * (size_t)(m->count + 1));
    t->weight = malloc(sizeof *t->weight * (size_t)(m->count + 1));
    t->len = malloc(sizeof *t->len * (size_t)(m->count + 1));
    t->touched = malloc(sizeof *t->touched * (size_t)(m->count + 1));
    if (!t->ids || !t->start || !t->weight || !t->len || !t->touched) return oom();
    int64_t at = 0;
    for (uint64_t k = 0; m->slots && k <= m->mask; k++) {
        const nnr_chunk_slot *s = &m->slots[k];
        if (!s->len) continue;
        int64_t w = t->nwords++;
        t->start[w] = at;
        t->len[w] = s->len;
        t->weight[w] = s->value;
        t->touched[w] = -1;
        for (int32_t j = 0; j < s->len; j++) t->ids[at++] = s->key[j];
    }
    return 0;
}

/* rewrites word w with (a, b) -> z, left to right; 0 when it held no such pair */
static int merge_word(trainer *t, int64_t w, int32_t a, int32_t b, int32_t z)
{
    int32_t *ids = t->ids + t->start[w], n = t->len[w], out = 0, hit = 0;
    for (int32_t k = 0; k < n;) {
        if (k + 1 < n && ids[k] == a && ids[k + 1] == b) { ids[out++] = z; k += 2; hit = 1; }
        else ids[out++] = ids[k++];
    }
    t->len[w] = out;
    return hit;
}

static int word_has(const trainer *t, int64_t w, int32_t a, int32_t b)
{
    const int32_t *ids = t->ids + t->start[w];
    for (int32_t k = 0; k + 1 < t->len[w]; k++) if (ids[k] == a && ids[k + 1] == b) return 1;
    return 0;
}

/* applies the merge of pair p as token z to every word that holds it, and queues the pairs it made */
static int apply_merge(trainer *t, int32_t p, int32_t z)
{
    int32_t a = t->pairs[p].a, b = t->pairs[p].b;
    t->nfresh = 0;
    for (int32_t o = t->pairs[p].occ; o >= 0; o = t->occ[o].next) {
        int32_t w = t->occ[o].word;
        if (t->touched[w] == z || !word_has(t, w, a, b)) continue;
        t->touched[w] = z;
        if (count_pairs(t, w, -1, z)) return oom();
        merge_word(t, w, a, b, z);
        if (count_pairs(t, w, +1, z)) return oom();
    }
    for (int64_t k = 0; k < t->nfresh; k++)
        if (t->pairs[t->fresh[k]].count > 0 && heap_push(t, t->fresh[k])) return oom();
    return 0;
}

/* the merges, most frequent pair first, into merges (room for 2 * max); their count, or -1 */
static int64_t run_merges(trainer *t, int64_t max, int64_t min_frequency, int32_t *merges)
{
    for (int64_t w = 0; w < t->nwords; w++) if (count_pairs(t, w, +1, -2)) return oom(), -1;
    for (int64_t k = 0; k < t->nfresh; k++) if (heap_push(t, t->fresh[k])) return oom(), -1;
    int64_t made = 0;
    while (made < max && t->nheap > 0) {
        if (nnr_interrupted_flag()) { nnr_clear_interrupt(); return nnr_errorf(NNR_ERR_INTERRUPTED, "BPE: training interrupted"), -1; }
        heap_entry e = heap_pop(t);
        int64_t now = t->pairs[e.pair].count;
        if (now != e.count) {                /* stale: it has fallen since; back with today's count */
            if (now > 0 && heap_push(t, e.pair)) return oom(), -1;
            continue;
        }
        if (now < min_frequency) break;
        int32_t z = (int32_t)(NNR_BPE_BYTES + made);
        merges[2 * made] = t->pairs[e.pair].a;
        merges[2 * made + 1] = t->pairs[e.pair].b;
        made++;
        if (apply_merge(t, e.pair, z)) return -1;
    }
    return made;
}

static void trainer_free(trainer *t)
{
    free(t->ids); free(t->start); free(t->weight); free(t->len); free(t->touched);
    free(t->pairs); free(t->keys); free(t->slot_pair); free(t->occ); free(t->heap); free(t->fresh);
}

nnr_tokenizer *nnr_bpe_train(const nnr_corpus *c, int64_t vocab_size, int64_t min_frequency)
{
    if (vocab_size < NNR_BPE_BYTES || vocab_size > NNR_TOKENIZER_MAX_VOCAB) {
        nnr_errorf(NNR_ERR_INVALID, "BPE: vocab_size must be in %d..%d (the 256 bytes and the merges), got %lld", NNR_BPE_BYTES,
                   NNR_TOKENIZER_MAX_VOCAB, (long long)vocab_size);
        return NULL;
    }
    if (min_frequency < 1) { nnr_errorf(NNR_ERR_INVALID, "BPE: min_frequency must be >= 1, got %lld", (long long)min_frequency); return NULL; }
    trainer t = {0};
    nnr_chunk_map m = {0};
    int64_t max = vocab_size - NNR_BPE_BYTES, made = -1;
    int32_t *merges = malloc(sizeof(int32_t) * 2 * (size_t)(max + 1));
    if (!merges) oom();
    else if (collect_words(&t, c, &m) == 0) made = run_merges(&t, max, min_frequency, merges);
    nnr_chunk_map_free(&m);
    trainer_free(&t);
    nnr_tokenizer *tok = made < 0 ? NULL : nnr_tokenizer_alloc(NNR_TOKENIZER_BPE, NNR_BPE_BYTES + made, "BPE");
    if (tok) {
        memcpy(tok->merges, merges, sizeof(int32_t) * 2 * (size_t)made);
        if (nnr_tokenizer_finish(tok, "BPE")) { nnr_tokenizer_free(tok); tok = NULL; }
    }
    free(merges);
    return tok;
}
