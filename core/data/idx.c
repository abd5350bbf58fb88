/* IDX files (the MNIST family), raw or gzip-compressed (zlib's gzread reads
 * both). Magic: two zero bytes, a type byte, a dimension count; then one
 * big-endian u32 per dimension; then the data, big-endian. Every size is
 * checked against what the file actually holds. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "data/internal.h"

/* the size the file holds once decompressed: its length, or for gzip the
 * ISIZE of the trailer (mod 2^32); -1 when unknown. Checked before any large
 * allocation, so a corrupt header cannot ask for gigabytes. */
static int64_t content_size(const char *path)
{
    FILE *f = nnr_fopen_regular(path);
    if (!f) return -1;
    unsigned char head[2], tail[4];
    int64_t size = -1;
    if (fread(head, 1, 2, f) == 2 && head[0] == 0x1f && head[1] == 0x8b) {
        if (fseek(f, -4, SEEK_END) == 0 && fread(tail, 1, 4, f) == 4)
            size = (int64_t)tail[0] | ((int64_t)tail[1] << 8) | ((int64_t)tail[2] << 16) | ((int64_t)tail[3] << 24);
        size = size >= 0 ? -(size + 2) : -1;    /* encoded: modulo 2^32 */
    } else if (fseek(f, 0, SEEK_END) == 0) {
        size = ftell(f);
    }
    fclose(f);
    return size;
}

static int idx_dtype(int code, int *dtype, int *width)
{
    switch (code) {
    case 0x08: *dtype = NNR_U8; *width = 1; return 1;
    case 0x09: *dtype = NNR_I8; *width = 1; return 1;
    case 0x0B: *dtype = NNR_I32; *width = 2; return 1;   /* i16 widened */
    case 0x0C: *dtype = NNR_I32; *width = 4; return 1;
    case 0x0D: *dtype = NNR_F32; *width = 4; return 1;
    case 0x0E: *dtype = NNR_F64; *width = 8; return 1;
    }
    return 0;
}

/* reads exactly n bytes; 0 on success */
static int read_exact(gzFile f, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
        int got = gzread(f, p, chunk);
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

nnr_tensor *nnr_load_idx(const char *path)
{
    int fd = nnr_open_regular(path);
    gzFile f = fd >= 0 ? gzdopen(fd, "rb") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        nnr_errorf(NNR_ERR_IO, "load_idx %s: %s", path, e ? nnr_open_strerror(e) : "cannot open");
        return NULL;
    }
    unsigned char magic[4];
    nnr_tensor *t = NULL;
    if (read_exact(f, magic, 4) != 0) { nnr_errorf(NNR_ERR_IO, "load_idx %s: too short for an IDX file", path); goto done; }
    int dtype, width, ndim = magic[3];
    if (magic[0] || magic[1] || !idx_dtype(magic[2], &dtype, &width) || ndim < 1 || ndim > NNR_MAX_DIMS) {
        nnr_errorf(NNR_ERR_IO, "load_idx %s: not an IDX file (magic %02x %02x %02x %02x)", path, magic[0], magic[1], magic[2], magic[3]);
        goto done;
    }
    int64_t sizes[NNR_MAX_DIMS], numel = 1;
    for (int d = 0; d < ndim; d++) {
        unsigned char b[4];
        if (read_exact(f, b, 4) != 0) { nnr_errorf(NNR_ERR_IO, "load_idx %s: truncated in the header", path); goto done; }
        sizes[d] = ((int64_t)b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
        if (!nnr_size_mul(numel, sizes[d], &numel) || numel > ((int64_t)1 << 40)) {
            nnr_errorf(NNR_ERR_IO, "load_idx %s: dimensions are implausibly large", path);
            goto done;
        }
    }
    int64_t expected = 4 + 4 * (int64_t)ndim + numel * width, holds = content_size(path);
    int gz = holds < -1;
    int fits = holds == -1 || (gz ? (expected & 0xffffffffLL) == -(holds + 2) : expected == holds);
    if (!fits) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_IO, "load_idx %s: the header promises %s elements of %d bytes (%lld bytes in all) but the file %s %lld",
                   path, nnr_shape_str(b, sizeof b, ndim, sizes), width, (long long)expected,
                   gz ? "decompresses to" : "holds", (long long)(gz ? -(holds + 2) : holds));
        goto done;
    }
    t = nnr_tensor_alloc(dtype, ndim, sizes, nnr_host_device());
    if (!t) goto done;
    unsigned char *data = nnr_tensor_data(t);
    if (read_exact(f, data, (size_t)(numel * width)) != 0) {
        char b[NNR_SHAPE_BUF];
        nnr_errorf(NNR_ERR_IO, "load_idx %s: truncated: the header promises %s elements of %d bytes", path,
                   nnr_shape_str(b, sizeof b, ndim, sizes), width);
        nnr_tensor_release(t);
        t = NULL;
        goto done;
    }
    unsigned char extra;
    if (gzread(f, &extra, 1) > 0) {
        nnr_errorf(NNR_ERR_IO, "load_idx %s: trailing bytes after the data the header describes", path);
        nnr_tensor_release(t);
        t = NULL;
        goto done;
    }
    /* big-endian to host order, widening i16 in place from the back */
    if (width == 2) {
        int32_t *out = (int32_t *)data;
        for (int64_t k = numel - 1; k >= 0; k--) out[k] = (int16_t)((data[2 * k] << 8) | data[2 * k + 1]);
    } else if (width > 1) {
        for (int64_t k = 0; k < numel; k++) {
            unsigned char *p = data + k * width;
            for (int a = 0, b = width - 1; a < b; a++, b--) { unsigned char c = p[a]; p[a] = p[b]; p[b] = c; }
        }
    }
done:
    gzclose(f);
    return t;
}
