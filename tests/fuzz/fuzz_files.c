/* libFuzzer targets for the file parsers: safetensors (nnr_safetensors_open
 * plus reading every tensor), IDX (nnr_load_idx, raw and gzip), CSV
 * (nnr_load_csv with and without a header and label), images
 * (nnr_load_image: PNG and JPEG, every channel conversion), tokenizer files
 * (nnr_tokenizer_load, then a round trip through what loaded) and text (a
 * corpus: a BPE trained on it and a character vocabulary built from it must
 * give its bytes back exactly, or the target aborts) and ONNX models (nnr_onnx_open,
 * then every tensor). The input
 * goes through a real file, as users' files do. Build with -DNNR_FUZZ=ON
 * and clang; run e.g. build-fuzz/bin/fuzz_safetensors -max_total_time=30.
 * A crash, a leak or an ASan report is a failure; a clean error is not. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "nnr/nnr.h"

#if defined(FUZZ_TOKENIZER) || defined(FUZZ_TEXT)
/* encode then decode must give the bytes back; an encoding error (a CharVocab's unknown character) is fine */
static void round_trip(const nnr_tokenizer *tok, const uint8_t *data, size_t size)
{
    nnr_tensor *ids = nnr_tokenizer_encode(tok, (const char *)data, (int64_t)size);
    if (!ids) return;
    int64_t n = -1;
    char *back = nnr_tokenizer_decode(tok, ids, &n);
    if (!back || n != (int64_t)size || (size && memcmp(back, data, size) != 0)) {
        fprintf(stderr, "round trip failed: %s\n", back ? "different bytes" : nnr_last_error());
        abort();
    }
    nnr_bytes_free(back);
    nnr_tensor_release(ids);
}
#endif

static const char *input_file(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/nnr-fuzz-%d", (int)getpid());
        nnr_init();
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = input_file(data, size);
#if defined(FUZZ_SAFETENSORS)
    nnr_file *f = nnr_safetensors_open(path);
    if (f) {
        for (int i = 0; i < nnr_file_count(f); i++) nnr_tensor_release(nnr_file_tensor(f, i, 0));
        for (int i = 0; i < nnr_file_metadata_count(f); i++) (void)nnr_file_metadata_value(f, i);
        nnr_file_close(f);
    }
#elif defined(FUZZ_ONNX)
    nnr_onnx *m = nnr_onnx_open(path);
    if (m) {
        if (!nnr_onnx_graph(m)) abort();
        for (int i = 0; i < nnr_onnx_count(m); i++) nnr_tensor_release(nnr_onnx_tensor(m, i));
        nnr_onnx_close(m);
    }
#elif defined(FUZZ_CSV)
    nnr_tensor *x, *y;
    if (nnr_load_csv(path, 1, NULL, 0, ',', 1, &x, &y) == 0) { nnr_tensor_release(x); nnr_tensor_release(y); }
    if (nnr_load_csv(path, 0, NULL, -1, ';', 0, &x, &y) == 0) { nnr_tensor_release(x); nnr_tensor_release(y); }
    if (nnr_load_csv(path, 1, "label", -1, ',', 0, &x, &y) == 0) { nnr_tensor_release(x); nnr_tensor_release(y); }
#elif defined(FUZZ_IMAGE)
    int channels = size ? data[size - 1] % 5 : 0;     /* 0, 1, 3, 4, and 2 (refused) */
    nnr_tensor_release(nnr_load_image(path, channels == 2 ? 3 : channels));
#elif defined(FUZZ_TOKENIZER)
    nnr_tokenizer *tok = nnr_tokenizer_load(path);
    if (tok) {
        round_trip(tok, data, size);
        nnr_tokenizer_free(tok);
    }
#elif defined(FUZZ_TEXT)
    nnr_corpus *corpus = nnr_corpus_open(1, &path, 0, NULL);
    if (corpus) {
        /* a vocabulary the size the last byte says (256: bytes alone), merges seen once or more */
        nnr_tokenizer *bpe = nnr_bpe_train(corpus, 256 + (size ? data[size - 1] : 0), 1);
        if (!bpe) abort();
        round_trip(bpe, data, size);
        nnr_tokenizer_free(bpe);
        nnr_tokenizer *chars = nnr_charvocab_build(corpus);
        if (chars) { round_trip(chars, data, size); nnr_tokenizer_free(chars); }
        nnr_corpus_release(corpus);
    }
#else
    nnr_tensor_release(nnr_load_idx(path));
#endif
    return 0;
}
