/* libFuzzer targets for the file parsers: safetensors (nnr_safetensors_open
 * plus reading every tensor), IDX (nnr_load_idx, raw and gzip), CSV
 * (nnr_load_csv with and without a header and label) and images
 * (nnr_load_image: PNG and JPEG, every channel conversion). The input
 * goes through a real file, as users' files do. Build with -DNNR_FUZZ=ON
 * and clang; run e.g. build-fuzz/bin/fuzz_safetensors -max_total_time=30.
 * A crash, a leak or an ASan report is a failure; a clean error is not. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "nnr/nnr.h"

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
#elif defined(FUZZ_CSV)
    nnr_tensor *x, *y;
    if (nnr_load_csv(path, 1, NULL, 0, ',', 1, &x, &y) == 0) { nnr_tensor_release(x); nnr_tensor_release(y); }
    if (nnr_load_csv(path, 0, NULL, -1, ';', 0, &x, &y) == 0) { nnr_tensor_release(x); nnr_tensor_release(y); }
    if (nnr_load_csv(path, 1, "label", -1, ',', 0, &x, &y) == 0) { nnr_tensor_release(x); nnr_tensor_release(y); }
#elif defined(FUZZ_IMAGE)
    int channels = size ? data[size - 1] % 5 : 0;     /* 0, 1, 3, 4, and 2 (refused) */
    nnr_tensor_release(nnr_load_image(path, channels == 2 ? 3 : channels));
#else
    nnr_tensor_release(nnr_load_idx(path));
#endif
    return 0;
}
