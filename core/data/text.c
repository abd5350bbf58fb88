/* Windows of text for language models (docs/sequence.md): sample i is a
 * window of seq_len + 1 tokens, x the first seq_len and y the last seq_len
 * (each token's successor), both i64 ids ready for nn.Embedding.
 *
 * Tokens are a corpus's bytes (id = byte + 1, read from the memory-mapped
 * files as the window is fetched: a corpus larger than memory works) or ids
 * a tokenizer made (an i32 or i64 tensor in memory). Windows lie within
 * tokens [begin, end), so a train/validation split by position never shares
 * a token. Contiguous windows start at begin + i * stride; random windows
 * start at an offset drawn from (seed, epoch, i) with Philox, so epoch e's
 * windows differ from epoch e + 1's and are the same on every run, whatever
 * the loader's workers. */
#include <stdlib.h>
#include <string.h>
#include "data/internal.h"

nnr_dataset *nnr_dataset_text(nnr_corpus *corpus, const nnr_tensor *ids, int64_t begin, int64_t end, int64_t seq_len,
                              int64_t stride, int64_t samples, uint64_t seed)
{
    if ((corpus == NULL) == (ids == NULL)) { nnr_errorf(NNR_ERR_INVALID, "TextDataset: needs a corpus or token ids (one of them)"); return NULL; }
    if (ids && (ids->ndim != 1 || (ids->dtype != NNR_I32 && ids->dtype != NNR_I64) || !nnr_device_is_host_memory(ids->device))) {
        nnr_errorf(NNR_ERR_INVALID, "TextDataset: token ids must be a 1-d i32 or i64 cpu tensor, got %s with %d dimensions",
                   nnr_dtype_name(ids->dtype), ids->ndim);
        return NULL;
    }
    int64_t total = corpus ? corpus->size : ids->sizes[0];
    const char *unit = corpus ? "bytes" : "tokens";
    if (seq_len < 1 || seq_len > ((int64_t)1 << 40)) { nnr_errorf(NNR_ERR_INVALID, "TextDataset: seq_len must be >= 1, got %lld", (long long)seq_len); return NULL; }
    if (begin < 0 || end > total || begin > end) {
        nnr_errorf(NNR_ERR_INVALID, "TextDataset: the range [%lld, %lld) is outside the %lld %s", (long long)begin, (long long)end, (long long)total, unit);
        return NULL;
    }
    if (end - begin <= seq_len) {
        nnr_errorf(NNR_ERR_INVALID, "TextDataset: seq_len %lld is longer than the data: %lld %s, and a window needs seq_len + 1 = %lld",
                   (long long)seq_len, (long long)(end - begin), unit, (long long)seq_len + 1);
        return NULL;
    }
    if (stride < 0 || (stride == 0 && samples < 0)) {
        nnr_errorf(NNR_ERR_INVALID, "TextDataset: stride must be >= 1 (or 0: random windows), got %lld", (long long)stride);
        return NULL;
    }
    nnr_dataset *d = nnr_dataset_new(NNR_DS_TEXT, "TextDataset");
    if (!d) return NULL;
    if (ids) { d->x = nnr_contiguous(ids); if (!d->x) { nnr_dataset_release(d); return NULL; } }
    if (corpus) { nnr_corpus_retain(corpus); d->corpus = corpus; }
    d->text_begin = begin;
    d->text_end = end;
    d->seq_len = seq_len;
    d->stride = stride;
    d->seed = seed;
    /* windows starting at begin .. end - seq_len - 1: (end - begin - seq_len) of them at stride 1 */
    d->n = stride ? (end - begin - seq_len - 1) / stride + 1 : samples;
    d->xf = (nnr_field){1, NNR_I64, 1, {seq_len}, 0, NULL, 0};
    d->yf = d->xf;
    return d;
}

/* the first token of window i */
static int64_t window_start(const nnr_dataset *d, int64_t i, int64_t epoch)
{
    if (d->stride) return d->text_begin + i * d->stride;      /* i < n: no overflow (checked when made) */
    nnr_rng_stream rng;
    nnr_rng_stream_init(&rng, d->seed, NNR_STREAM_TEXT, (uint64_t)epoch, (uint64_t)i);
    return d->text_begin + (int64_t)nnr_rng_below(&rng, (uint64_t)(d->text_end - d->text_begin - d->seq_len));
}

int nnr_text_fetch(const nnr_dataset *d, int64_t i, int64_t epoch, nnr_sample *s, char *err, size_t errn)
{
    int64_t n = d->seq_len + 1, o = window_start(d, i, epoch);
    /* the ids, then room for the bytes they are read from (n <= 2^40 + 1: no overflow) */
    int64_t *buf = malloc((sizeof(int64_t) + (d->corpus ? 1 : 0)) * (size_t)n);
    if (!buf) { snprintf(err, errn, "out of memory for a window of %lld tokens", (long long)n); return NNR_ERR_OOM; }
    if (d->corpus) {
        uint8_t *bytes = (uint8_t *)(buf + n);
        if (nnr_corpus_read(d->corpus, o, n, (char *)bytes)) { snprintf(err, errn, "%s", nnr_last_error()); free(buf); return NNR_ERR_INTERNAL; }
        for (int64_t k = 0; k < n; k++) buf[k] = (int64_t)bytes[k] + 1;
    } else if (d->x->dtype == NNR_I32) {
        const int32_t *ids = (const int32_t *)nnr_tensor_data(d->x) + o;
        for (int64_t k = 0; k < n; k++) buf[k] = ids[k];
    } else {
        memcpy(buf, (const int64_t *)nnr_tensor_data(d->x) + o, sizeof(int64_t) * (size_t)n);
    }
    s->owned = buf;
    s->path = NULL;
    s->x.base = (const char *)buf;
    s->y.base = (const char *)(buf + 1);
    return NNR_OK;
}
