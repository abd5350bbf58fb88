/* sort and topk along the last dim (the core moves the dim there).
 *
 * Each element of a row becomes an unsigned key whose integer order is the wanted order (float bits
 * flipped so that they compare as integers, NaN above +inf, -0.0 as 0.0, every bit inverted for
 * descending), and a row is ordered by (key, position), which makes it stable in both directions:
 *  - short rows: insertion sort;
 *  - longer rows: LSD radix sort, 8 bits a pass, skipping the passes whose digit is the same in every
 *    key (an f32 row needs at most 4 passes, small integers fewer);
 *  - topk: for k much smaller than the row, a bounded heap of the k best (most elements cost one
 *    comparison); otherwise a quickselect of the k first (key, position) pairs; then those k sorted.
 * Keys of at most 4 bytes travel packed with their position in one 64-bit word (key << 32 | pos).
 * Rows are spread over the pool. Values are copied from the input by position, so NaN payloads and
 * the sign of zero come out as they went in. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

enum { INSERTION_MAX = 32 };

typedef struct sort_item { uint64_t key; int64_t pos; } sort_item;

/* key width in bytes for a dtype: the passes the radix sort may need */
static int key_width(int dt)
{
    switch (dt) {
    case NNR_F64: case NNR_I64: return 8;
    case NNR_I8: case NNR_U8: case NNR_BOOL: return 1;
    default: return 4;
    }
}

/* branch-free, so that a row's keys vectorize: zeros made +0.0, every NaN the one quiet NaN, then
 * the sign bit flipped for positives and every bit for negatives */
static inline uint64_t key_of_f32(float v)
{
    uint32_t b;
    memcpy(&b, &v, 4);
    b = v == 0 ? 0u : b;
    b = v != v ? 0x7fc00000u : b;                    /* every NaN: above +inf */
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
}

static inline uint64_t key_of_f64(double v)
{
    uint64_t b;
    memcpy(&b, &v, 8);
    b = v == 0 ? 0u : b;
    b = v != v ? 0x7ff8000000000000ull : b;
    return b ^ ((uint64_t)((int64_t)b >> 63) | 0x8000000000000000ull);
}

/* the n keys of a strided row; descending inverts them within the key's width */
static void row_keys(int dt, const char *p, int64_t stride, int64_t n, int descending, uint64_t *key)
{
    switch (dt) {
    case NNR_F32: for (int64_t i = 0; i < n; i++) key[i] = key_of_f32(*(const float *)(p + i * stride)); break;
    case NNR_F64: for (int64_t i = 0; i < n; i++) key[i] = key_of_f64(*(const double *)(p + i * stride)); break;
    case NNR_F16: for (int64_t i = 0; i < n; i++) key[i] = key_of_f32(nnr_f16_to_f32(*(const uint16_t *)(p + i * stride))); break;
    case NNR_BF16: for (int64_t i = 0; i < n; i++) key[i] = key_of_f32(nnr_bf16_to_f32(*(const uint16_t *)(p + i * stride))); break;
    case NNR_I64: for (int64_t i = 0; i < n; i++) key[i] = (uint64_t)*(const int64_t *)(p + i * stride) ^ 0x8000000000000000ull; break;
    case NNR_I32: for (int64_t i = 0; i < n; i++) key[i] = (uint32_t)*(const int32_t *)(p + i * stride) ^ 0x80000000u; break;
    case NNR_I8: for (int64_t i = 0; i < n; i++) key[i] = (uint8_t)*(const int8_t *)(p + i * stride) ^ 0x80u; break;
    default: for (int64_t i = 0; i < n; i++) key[i] = *(const uint8_t *)(p + i * stride); break;   /* u8, bool */
    }
    if (descending) {
        int w = key_width(dt);
        uint64_t mask = w == 8 ? UINT64_MAX : (((uint64_t)1 << (8 * w)) - 1);
        for (int64_t i = 0; i < n; i++) key[i] ^= mask;
    }
}

/* stable: equal keys keep the order of pos (ascending on entry) */
static void insertion_sort(uint64_t *key, int64_t *pos, int64_t n)
{
    for (int64_t i = 1; i < n; i++) {
        uint64_t k = key[i];
        int64_t p = pos[i], j = i;
        for (; j > 0 && key[j - 1] > k; j--) { key[j] = key[j - 1]; pos[j] = pos[j - 1]; }
        key[j] = k;
        pos[j] = p;
    }
}

/* LSD radix sort of (key, pos) by key, stable; the result lands in *key and *pos (buffers may swap) */
static void radix_sort(uint64_t **key, int64_t **pos, uint64_t **key2, int64_t **pos2, int64_t n, int width)
{
    int64_t (*hist)[256] = calloc((size_t)width, sizeof *hist);
    if (!hist) { insertion_sort(*key, *pos, n); return; }     /* slow but right; only when malloc fails */
    const uint64_t *k0 = *key;
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = k0[i];
        for (int d = 0; d < width; d++) hist[d][(k >> (8 * d)) & 255]++;
    }
    for (int d = 0; d < width; d++) {
        int64_t *h = hist[d], at = 0;
        int constant = 0;
        for (int b = 0; b < 256; b++) if (h[b] == n) { constant = 1; break; }
        if (constant) continue;                      /* this digit orders nothing */
        for (int b = 0; b < 256; b++) { int64_t c = h[b]; h[b] = at; at += c; }
        const uint64_t *ks = *key;
        const int64_t *ps = *pos;
        uint64_t *kd = *key2;
        int64_t *pd = *pos2;
        int shift = 8 * d;
        for (int64_t i = 0; i < n; i++) {
            uint64_t k = ks[i];
            int64_t j = h[(k >> shift) & 255]++;
            kd[j] = k;
            pd[j] = ps[i];
        }
        uint64_t *tk = *key; *key = *key2; *key2 = tk;
        int64_t *tp = *pos; *pos = *pos2; *pos2 = tp;
    }
    free(hist);
}

/* the same over packed items (key << 32 | position), keys of width bytes: half the memory traffic
 * of separate arrays, and the position rides along for free */
static void radix_sort_packed(uint64_t **items, uint64_t **tmp, int64_t n, int width)
{
    int64_t (*hist)[256] = calloc((size_t)width, sizeof *hist);
    if (!hist) {              /* slow but right; only when malloc fails */
        uint64_t *a = *items;
        for (int64_t i = 1; i < n; i++) { uint64_t v = a[i]; int64_t j = i; for (; j > 0 && a[j - 1] > v; j--) a[j] = a[j - 1]; a[j] = v; }
        return;
    }
    const uint64_t *a0 = *items;
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = a0[i] >> 32;
        for (int d = 0; d < width; d++) hist[d][(k >> (8 * d)) & 255]++;
    }
    for (int d = 0; d < width; d++) {
        int64_t *h = hist[d], at = 0;
        int constant = 0;
        for (int b = 0; b < 256; b++) if (h[b] == n) { constant = 1; break; }
        if (constant) continue;
        for (int b = 0; b < 256; b++) { int64_t c = h[b]; h[b] = at; at += c; }
        const uint64_t *src = *items;
        uint64_t *dst = *tmp;
        int shift = 32 + 8 * d;
        for (int64_t i = 0; i < n; i++) {
            uint64_t v = src[i];
            dst[h[(v >> shift) & 255]++] = v;
        }
        *tmp = *items;
        *items = dst;
    }
    free(hist);
}

static int u64_cmp(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

/* a bounded max-heap of the k least packed items seen so far (key << 32 | position): for k much
 * smaller than the row most items are turned away by one comparison with the heap's top */
typedef struct least_heap { uint64_t *h; int64_t k, size; } least_heap;

static void heap_feed(least_heap *hp, const uint64_t *key, int64_t m, int64_t base)
{
    uint64_t *heap = hp->h;
    int64_t k = hp->k;
    int64_t i = 0;
    for (; i < m && hp->size < k; i++) {              /* push: sift up */
        uint64_t v = key[i] << 32 | (uint64_t)(base + i);
        int64_t at = hp->size++;
        while (at > 0 && heap[(at - 1) / 2] < v) { heap[at] = heap[(at - 1) / 2]; at = (at - 1) / 2; }
        heap[at] = v;
    }
    for (; i < m; i++) {
        if ((i & 63) == 0 && i + 64 <= m) {
            /* positions only grow, so an item beats the top only with a smaller key: a block of 64
             * with none (the usual case once the heap has filled) is passed over, vectorized */
            uint64_t kt = heap[0] >> 32;
            int hit = 0;
            for (int64_t t = i; t < i + 64; t++) hit |= key[t] < kt;
            if (!hit) { i += 63; continue; }
        }
        uint64_t v = key[i] << 32 | (uint64_t)(base + i);
        if (v >= heap[0]) continue;
        int64_t at = 0;                               /* replace the top: sift down */
        for (;;) {
            int64_t c = 2 * at + 1;
            if (c >= k) break;
            if (c + 1 < k && heap[c + 1] > heap[c]) c++;
            if (heap[c] <= v) break;
            heap[at] = heap[c];
            at = c;
        }
        heap[at] = v;
    }
}

enum { KEY_CHUNK = 2048 };

/* the k least of elements [lo, hi) of a strided row into heap[0..k) (unsorted), keys made a chunk at
 * a time so that they stay in cache */
static void least_of_span(int dt, const char *row, int64_t stride, int64_t lo, int64_t hi, int descending, int64_t k, uint64_t *heap)
{
    uint64_t key[KEY_CHUNK];
    least_heap hp = {heap, k, 0};
    for (int64_t at = lo; at < hi; at += KEY_CHUNK) {
        int64_t m = hi - at < KEY_CHUNK ? hi - at : KEY_CHUNK;
        row_keys(dt, row + at * stride, stride, m, descending, key);
        heap_feed(&hp, key, m, at);
    }
}

/* quickselect of the k least packed items to the front (all distinct) */
static void select_least_packed(uint64_t *it, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi > lo && k > lo && k <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        uint64_t a = it[lo], b = it[mid], c = it[hi], pv;
        if (a < b) pv = b < c ? b : a < c ? c : a;
        else pv = a < c ? a : b < c ? c : b;
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (it[i] < pv) i++;
            while (pv < it[j]) j--;
            if (i <= j) { uint64_t t = it[i]; it[i] = it[j]; it[j] = t; i++; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

static inline int item_less(sort_item a, sort_item b) { return a.key < b.key || (a.key == b.key && a.pos < b.pos); }

static int item_cmp(const void *x, const void *y)
{
    const sort_item *a = x, *b = y;
    return item_less(*a, *b) ? -1 : item_less(*b, *a) ? 1 : 0;
}

/* rearranges it[0..n) so that its k least items (all distinct: positions differ) come first */
static void select_least(sort_item *it, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (hi > lo && k > lo && k <= hi) {
        int64_t mid = lo + (hi - lo) / 2;              /* median of three as the pivot */
        sort_item a = it[lo], b = it[mid], c = it[hi], pv;
        if (item_less(a, b)) pv = item_less(b, c) ? b : item_less(a, c) ? c : a;
        else pv = item_less(a, c) ? a : item_less(b, c) ? c : b;
        int64_t i = lo, j = hi;
        while (i <= j) {                               /* Hoare partition around pv */
            while (item_less(it[i], pv)) i++;
            while (item_less(pv, it[j])) j--;
            if (i <= j) { sort_item t = it[i]; it[i] = it[j]; it[j] = t; i++; j--; }
        }
        /* [lo, j] <= pv <= [i, hi]; items between j and i equal pv */
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return;
    }
}

typedef struct sort_job {
    const nnr_tensor_desc *in, *val, *idx;
    int topk;
    int64_t k;                   /* topk: how many */
    int descending;              /* sort: descending; topk: largest */
    atomic_int failed;
} sort_job;

/* the address of row r's first element in d (every dim but the last) */
static inline char *row_base(const nnr_tensor_desc *d, int64_t r)
{
    int64_t off = 0, rem = r;
    for (int k = d->ndim - 2; k >= 0; k--) {
        off += (rem % d->sizes[k]) * d->strides[k];
        rem /= d->sizes[k];
    }
    return (char *)d->data + off * (int64_t)nnr_dtype_nbytes(d->dtype);
}

/* values (copied from the input by position) and 0-based positions of one output row; the
 * positions from pos, from packed items (the low 32 bits) or from items */
static void write_row(const sort_job *j, int64_t r, const int64_t *pos, const uint64_t *packed, const sort_item *items, int64_t m)
{
    int nd = j->in->ndim;
    int64_t es = (int64_t)nnr_dtype_nbytes(j->in->dtype);
    const char *ip = row_base(j->in, r);
    char *vp = row_base(j->val, r), *xp = row_base(j->idx, r);
    int64_t is = j->in->strides[nd - 1] * es, vs = j->val->strides[nd - 1] * es, xs = j->idx->strides[nd - 1];
    int64_t *xo = (int64_t *)xp;
    for (int64_t i = 0; i < m; i++) {
        int64_t p = pos ? pos[i] : packed ? (int64_t)(packed[i] & 0xffffffffu) : items[i].pos;
        xo[i * xs] = p;
        switch (es) {
        case 8: *(uint64_t *)(vp + i * vs) = *(const uint64_t *)(ip + p * is); break;
        case 4: *(uint32_t *)(vp + i * vs) = *(const uint32_t *)(ip + p * is); break;
        case 2: *(uint16_t *)(vp + i * vs) = *(const uint16_t *)(ip + p * is); break;
        default: *(uint8_t *)(vp + i * vs) = *(const uint8_t *)(ip + p * is); break;
        }
    }
}

/* keys of at most 4 bytes and rows shorter than 2^32 go packed (key << 32 | position) */
static int packs(int dt, int64_t n) { return key_width(dt) <= 4 && n < ((int64_t)1 << 32); }

static void sort_range(void *arg, int64_t begin, int64_t end)
{
    sort_job *j = arg;
    int nd = j->in->ndim, dt = j->in->dtype;
    int64_t n = j->in->sizes[nd - 1], is = j->in->strides[nd - 1] * (int64_t)nnr_dtype_nbytes(dt);
    int packed = packs(dt, n) && n > INSERTION_MAX;
    uint64_t *key = malloc(sizeof(uint64_t) * (size_t)n * 2);
    int64_t *pos = packed ? NULL : malloc(sizeof(int64_t) * (size_t)n * 2);
    if (!key || (!packed && !pos)) { free(key); free(pos); atomic_store(&j->failed, 1); return; }
    for (int64_t r = begin; r < end; r++) {
        uint64_t *k = key, *k2 = key + n;
        row_keys(dt, row_base(j->in, r), is, n, j->descending, k);
        if (packed) {
            for (int64_t i = 0; i < n; i++) k[i] = k[i] << 32 | (uint64_t)i;
            radix_sort_packed(&k, &k2, n, key_width(dt));
            write_row(j, r, NULL, k, NULL, n);
            continue;
        }
        int64_t *p = pos, *p2 = pos + n;
        for (int64_t i = 0; i < n; i++) p[i] = i;
        if (n <= INSERTION_MAX) insertion_sort(k, p, n);
        else radix_sort(&k, &p, &k2, &p2, n, key_width(dt));
        write_row(j, r, p, NULL, NULL, n);
    }
    free(key);
    free(pos);
}

static void topk_range(void *arg, int64_t begin, int64_t end)
{
    sort_job *j = arg;
    int nd = j->in->ndim, dt = j->in->dtype;
    int64_t n = j->in->sizes[nd - 1], k = j->k, is = j->in->strides[nd - 1] * (int64_t)nnr_dtype_nbytes(dt);
    int packed = packs(dt, n);
    uint64_t *key = malloc(sizeof(uint64_t) * (size_t)n);
    uint64_t *heap = packed ? malloc(sizeof(uint64_t) * (size_t)n) : NULL;
    sort_item *items = packed ? NULL : malloc(sizeof(sort_item) * (size_t)n);
    if (!key || (packed ? !heap : !items)) { free(key); free(heap); free(items); atomic_store(&j->failed, 1); return; }
    for (int64_t r = begin; r < end; r++) {
        if (!(packed && k * 16 <= n)) row_keys(dt, row_base(j->in, r), is, n, j->descending, key);   /* largest: inverted, least first */
        if (packed && k * 16 <= n) {
            least_of_span(dt, row_base(j->in, r), is, 0, n, j->descending, k, heap);
            qsort(heap, (size_t)k, sizeof *heap, u64_cmp);
        } else if (packed) {
            for (int64_t i = 0; i < n; i++) heap[i] = key[i] << 32 | (uint64_t)i;
            if (k < n) select_least_packed(heap, n, k);
            qsort(heap, (size_t)k, sizeof *heap, u64_cmp);
        } else {
            for (int64_t i = 0; i < n; i++) { items[i].key = key[i]; items[i].pos = i; }
            if (k < n) select_least(items, n, k);
            qsort(items, (size_t)k, sizeof *items, item_cmp);
        }
        write_row(j, r, NULL, packed ? heap : NULL, items, k);
    }
    free(key);
    free(heap);
    free(items);
}

/* one long row, small k: each thread the k best of its piece, then the best k of those */
typedef struct span_job { const sort_job *j; int64_t n, pieces; uint64_t *cand; } span_job;

static void span_range(void *arg, int64_t begin, int64_t end)
{
    const span_job *s = arg;
    const sort_job *j = s->j;
    int nd = j->in->ndim;
    int64_t is = j->in->strides[nd - 1] * (int64_t)nnr_dtype_nbytes(j->in->dtype);
    for (int64_t p = begin; p < end; p++)
        least_of_span(j->in->dtype, row_base(j->in, 0), is, s->n * p / s->pieces, s->n * (p + 1) / s->pieces, j->descending, j->k,
                      s->cand + p * j->k);
}

static int topk_one_row(sort_job *j, int64_t n)
{
    int64_t pieces = cpu_pool_threads();
    if (pieces > 64) pieces = 64;
    uint64_t *cand = malloc(sizeof(uint64_t) * (size_t)(pieces * j->k));
    if (!cand) return cpu_error(NNR_ERR_OOM, "topk: out of memory");
    span_job s = {j, n, pieces, cand};
    int st = cpu_parallel_for(pieces, 1, span_range, &s);
    if (st == NNR_OK) {
        qsort(cand, (size_t)(pieces * j->k), sizeof *cand, u64_cmp);   /* positions differ: a total order */
        write_row(j, 0, NULL, cand, NULL, j->k);
    }
    free(cand);
    return st;
}

int cpu_sort(const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0];
    sort_job j = {.in = in, .val = call->outputs[0], .idx = call->outputs[1], .topk = call->op == NNR_OP_TOPK};
    if (in->ndim < 1) return cpu_error(NNR_ERR_INVALID, "sort: expected at least one dimension");
    int64_t n = in->sizes[in->ndim - 1], rows = 1;
    for (int d = 0; d < in->ndim - 1; d++) rows *= in->sizes[d];
    if (j.topk) {
        j.k = call->params->i[0];
        j.descending = call->params->i[1] != 0;
        if (j.k < 0 || j.k > n) return cpu_error(NNR_ERR_INVALID, "topk: k = %lld is out of range for a dimension of size %lld", (long long)j.k, (long long)n);
        if (j.k == 0) return NNR_OK;
    } else {
        j.descending = call->params->i[0] != 0;
    }
    if (n == 0 || rows == 0) return NNR_OK;
    atomic_init(&j.failed, 0);
    if (j.topk && rows == 1 && packs(in->dtype, n) && j.k * 16 <= n && n >= (1 << 16) && cpu_pool_threads() > 1 && j.k * 64 <= n)
        return topk_one_row(&j, n);
    int64_t grain = (1 << 14) / n;
    int st = cpu_parallel_for(rows, grain > 0 ? grain : 1, j.topk ? topk_range : sort_range, &j);
    if (st == NNR_OK && atomic_load(&j.failed)) return cpu_error(NNR_ERR_OOM, "%s: out of memory for a row of %lld elements", j.topk ? "topk" : "sort", (long long)n);
    return st;
}
