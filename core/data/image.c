/* PNG and JPEG files to u8 [C, H, W]: libpng's simplified API and
 * libjpeg-turbo's TurboJPEG API, both of which report corrupt or truncated
 * input as an error code (no longjmp through our frames). Every size is
 * checked before allocation; the whole file is read first, so a file that
 * shrinks underneath us cannot make a decoder read past its end. */
#include <errno.h>
#include <png.h>
#include <stdlib.h>
#include <strings.h>
#include <turbojpeg.h>
#include "data/internal.h"

enum { MAX_FILE_BYTES = 256 << 20 };
static const int64_t MAX_PIXELS = (int64_t)1 << 28;

int nnr_read_whole_file(const char *path, size_t max_bytes, unsigned char **buf, size_t *n, char *err, size_t errn)
{
    FILE *f = nnr_fopen_regular(path);
    if (!f) { snprintf(err, errn, "%s: cannot open: %s", path, nnr_open_strerror(errno)); return NNR_ERR_IO; }
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || (size_t)size > max_bytes || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        snprintf(err, errn, "%s: not a readable file of at most %zu MiB", path, max_bytes >> 20);
        return NNR_ERR_IO;
    }
    *buf = malloc((size_t)size + 1);
    if (!*buf) { fclose(f); snprintf(err, errn, "%s: out of memory", path); return NNR_ERR_OOM; }
    *n = fread(*buf, 1, (size_t)size, f);
    fclose(f);
    if (*n != (size_t)size) { free(*buf); *buf = NULL; snprintf(err, errn, "%s: short read", path); return NNR_ERR_IO; }
    return NNR_OK;
}

/* interleaved [H, W, C] to planar [C, H, W] */
static uint8_t *planar(const uint8_t *hwc, int64_t h, int64_t w, int64_t c)
{
    uint8_t *out = malloc((size_t)(h * w * c) + 1);
    if (!out) return NULL;
    if (c == 1) { memcpy(out, hwc, (size_t)(h * w)); return out; }
    for (int64_t p = 0; p < h * w; p++)
        for (int64_t k = 0; k < c; k++) out[k * h * w + p] = hwc[p * c + k];
    return out;
}

static int decode_png(const char *path, const unsigned char *buf, size_t n, int channels, uint8_t **pixels, int64_t sizes[3], char *err, size_t errn)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, buf, n)) {
        snprintf(err, errn, "%s: corrupt PNG: %s", path, img.message);
        return NNR_ERR_IO;
    }
    png_uint_32 format;
    switch (channels) {
    case 1: format = PNG_FORMAT_GRAY; break;
    case 3: format = PNG_FORMAT_RGB; break;
    case 4: format = PNG_FORMAT_RGBA; break;
    default: format = img.format & ~(png_uint_32)(PNG_FORMAT_FLAG_COLORMAP | PNG_FORMAT_FLAG_LINEAR | PNG_FORMAT_FLAG_AFIRST | PNG_FORMAT_FLAG_BGR);
    }
    img.format = format;
    int64_t c = PNG_IMAGE_PIXEL_CHANNELS(format), h = img.height, w = img.width, npix;
    if (h < 1 || w < 1 || !nnr_size_mul(h, w, &npix) || npix > MAX_PIXELS) {
        png_image_free(&img);
        snprintf(err, errn, "%s: PNG of %lldx%lld pixels (at most 2^28)", path, (long long)h, (long long)w);
        return NNR_ERR_IO;
    }
    uint8_t *hwc = malloc((size_t)(h * w * c));
    if (!hwc) { png_image_free(&img); snprintf(err, errn, "%s: out of memory", path); return NNR_ERR_OOM; }
    if (!png_image_finish_read(&img, NULL, hwc, 0, NULL)) {
        snprintf(err, errn, "%s: corrupt or truncated PNG: %s", path, img.message);
        png_image_free(&img);
        free(hwc);
        return NNR_ERR_IO;
    }
    *pixels = planar(hwc, h, w, c);
    free(hwc);
    if (!*pixels) { snprintf(err, errn, "%s: out of memory", path); return NNR_ERR_OOM; }
    sizes[0] = c; sizes[1] = h; sizes[2] = w;
    return NNR_OK;
}

static int decode_jpeg(const char *path, const unsigned char *buf, size_t n, int channels, uint8_t **pixels, int64_t sizes[3], char *err, size_t errn)
{
    tjhandle tj = tjInitDecompress();
    if (!tj) { snprintf(err, errn, "%s: cannot start the JPEG decoder", path); return NNR_ERR_OOM; }
    int w = 0, h = 0, subsamp = 0, colorspace = 0;
    if (tjDecompressHeader3(tj, buf, (unsigned long)n, &w, &h, &subsamp, &colorspace) != 0) {
        snprintf(err, errn, "%s: corrupt JPEG: %s", path, tjGetErrorStr2(tj));
        tjDestroy(tj);
        return NNR_ERR_IO;
    }
    if (channels == 0) channels = colorspace == TJCS_GRAY ? 1 : 3;
    int pf = channels == 1 ? TJPF_GRAY : channels == 3 ? TJPF_RGB : TJPF_RGBA;
    if (h < 1 || w < 1 || (int64_t)h * w > MAX_PIXELS) {
        tjDestroy(tj);
        snprintf(err, errn, "%s: JPEG of %dx%d pixels (at most 2^28)", path, h, w);
        return NNR_ERR_IO;
    }
    uint8_t *hwc = malloc((size_t)h * (size_t)w * (size_t)channels);
    if (!hwc) { tjDestroy(tj); snprintf(err, errn, "%s: out of memory", path); return NNR_ERR_OOM; }
    /* a truncated file decodes with a warning (grey rows); that is an error here */
    if (tjDecompress2(tj, buf, (unsigned long)n, hwc, w, 0, h, pf, TJFLAG_STOPONWARNING) != 0) {
        snprintf(err, errn, "%s: corrupt or truncated JPEG: %s", path, tjGetErrorStr2(tj));
        tjDestroy(tj);
        free(hwc);
        return NNR_ERR_IO;
    }
    tjDestroy(tj);
    *pixels = planar(hwc, h, w, channels);
    free(hwc);
    if (!*pixels) { snprintf(err, errn, "%s: out of memory", path); return NNR_ERR_OOM; }
    sizes[0] = channels; sizes[1] = h; sizes[2] = w;
    return NNR_OK;
}

int nnr_decode_image_file(const char *path, int channels, uint8_t **pixels, int64_t sizes[3], char *err, size_t errn)
{
    unsigned char *buf = NULL;
    size_t n = 0;
    *pixels = NULL;
    int st = nnr_read_whole_file(path, MAX_FILE_BYTES, &buf, &n, err, errn);
    if (st) return st;
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && memcmp(buf, png_sig, 8) == 0) st = decode_png(path, buf, n, channels, pixels, sizes, err, errn);
    else if (n >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff) st = decode_jpeg(path, buf, n, channels, pixels, sizes, err, errn);
    else { snprintf(err, errn, "%s: not a PNG or JPEG file", path); st = NNR_ERR_IO; }
    free(buf);
    return st;
}

nnr_tensor *nnr_load_image(const char *path, int channels)
{
    char err[512];
    uint8_t *pixels;
    int64_t sizes[3];
    if (channels != 0 && channels != 1 && channels != 3 && channels != 4) {
        nnr_errorf(NNR_ERR_INVALID, "load_image: channels must be 0 (as stored), 1, 3 or 4 (got %d)", channels);
        return NULL;
    }
    int st = nnr_decode_image_file(path, channels, &pixels, sizes, err, sizeof err);
    if (st) { nnr_errorf(st, "load_image: %s", err); return NULL; }
    nnr_tensor *t = nnr_tensor_alloc(NNR_U8, 3, sizes, nnr_host_device());
    if (t) memcpy(nnr_tensor_data(t), pixels, (size_t)(sizes[0] * sizes[1] * sizes[2]));
    else nnr_errorf(NNR_ERR_OOM, "load_image: out of memory for %s", path);
    free(pixels);
    return t;
}

/* a u8 [C, H, W] image (C 1, 3 or 4) with its channels interleaved, as the encoders take it; NULL with
 * the error set (who names the caller) */
static uint8_t *interleaved(const char *who, const nnr_tensor *t)
{
    char a[NNR_SHAPE_BUF];
    if (!nnr_device_is_host_memory(t->device) || t->dtype != NNR_U8 || t->ndim != 3 || (t->sizes[0] != 1 && t->sizes[0] != 3 && t->sizes[0] != 4) ||
        t->sizes[1] < 1 || t->sizes[2] < 1 || t->sizes[1] > 65535 || t->sizes[2] > 65535) {
        nnr_errorf(NNR_ERR_INVALID, "%s: expected a cpu u8 tensor [C, H, W] with C 1, 3 or 4 and sides up to 65535, got %s %s", who,
                   nnr_dtype_name(t->dtype), nnr_shape_str(a, sizeof a, t->ndim, t->sizes));
        return NULL;
    }
    int64_t c = t->sizes[0], h = t->sizes[1], w = t->sizes[2];
    nnr_tensor *src = nnr_contiguous(t);
    if (!src) return NULL;
    const uint8_t *chw = nnr_tensor_data(src);
    uint8_t *hwc = malloc((size_t)(c * h * w));
    if (!hwc) { nnr_tensor_release(src); nnr_errorf(NNR_ERR_OOM, "%s: out of memory", who); return NULL; }
    for (int64_t p = 0; p < h * w; p++)
        for (int64_t k = 0; k < c; k++) hwc[p * c + k] = chw[k * h * w + p];
    nnr_tensor_release(src);
    return hwc;
}

static void png_image_of(png_image *img, const nnr_tensor *t)
{
    memset(img, 0, sizeof *img);
    img->version = PNG_IMAGE_VERSION;
    img->width = (png_uint_32)t->sizes[2];
    img->height = (png_uint_32)t->sizes[1];
    img->format = t->sizes[0] == 1 ? PNG_FORMAT_GRAY : t->sizes[0] == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
}

/* a u8 [C, H, W] image as PNG bytes in memory (malloc'd, *n of them); NULL with the error set (who: the caller) */
static uint8_t *png_bytes(const char *who, const nnr_tensor *t, size_t *n)
{
    uint8_t *hwc = interleaved(who, t);
    if (!hwc) return NULL;
    png_image img;
    png_image_of(&img, t);
    png_alloc_size_t size = 0;
    uint8_t *out = NULL;
    int sized = png_image_write_to_memory(&img, NULL, &size, 0, hwc, 0, NULL);
    if (sized && (out = malloc(size ? size : 1)) && png_image_write_to_memory(&img, out, &size, 0, hwc, 0, NULL)) {
        *n = size;
    } else {
        if (sized && !out) nnr_errorf(NNR_ERR_OOM, "%s: out of memory for %zu bytes", who, (size_t)size);
        else nnr_errorf(NNR_ERR_IO, "%s: %s", who, img.message);
        free(out);
        out = NULL;
    }
    png_image_free(&img);
    free(hwc);
    return out;
}

uint8_t *nnr_encode_png(const nnr_tensor *t, size_t *n) { return png_bytes("encode_png", t, n); }

/* u8 [C, H, W] (C 1, 3 or 4) to a PNG, or a JPEG (C 1 or 3) at quality 1..100, chosen by the extension;
 * encoded in memory, then written whole (a temporary file renamed: an old file stays until the new one is) */
int nnr_save_image(const char *path, const nnr_tensor *t, int quality)
{
    size_t len = strlen(path);
    int jpeg = (len > 4 && strcasecmp(path + len - 4, ".jpg") == 0) || (len > 5 && strcasecmp(path + len - 5, ".jpeg") == 0);
    if (jpeg && t->ndim == 3 && t->sizes[0] == 4) return nnr_errorf(NNR_ERR_INVALID, "save_image: %s: JPEG has no alpha channel", path);
    if (!jpeg) {
        size_t n = 0;
        uint8_t *png = png_bytes("save_image", t, &n);
        if (!png) return nnr_last_status();
        const void *parts[1] = {png};
        int st = nnr_write_atomically(path, 1, parts, &n);
        free(png);
        return st;
    }
    uint8_t *hwc = interleaved("save_image", t);
    if (!hwc) return nnr_last_status();
    int64_t c = t->sizes[0], h = t->sizes[1], w = t->sizes[2];
    int st = NNR_OK;
    tjhandle tj = tjInitCompress();
    unsigned char *out = NULL;
    unsigned long out_n = 0;
    if (!tj || tjCompress2(tj, hwc, (int)w, 0, (int)h, c == 1 ? TJPF_GRAY : TJPF_RGB, &out, &out_n, c == 1 ? TJSAMP_GRAY : TJSAMP_420,
                           quality < 1 || quality > 100 ? 90 : quality, 0) != 0) {
        st = nnr_errorf(NNR_ERR_IO, "save_image: %s: %s", path, tj ? tjGetErrorStr2(tj) : "cannot start the JPEG encoder");
    } else {
        const void *parts[1] = {out};
        size_t n = out_n;
        st = nnr_write_atomically(path, 1, parts, &n);
    }
    tjFree(out);
    if (tj) tjDestroy(tj);
    free(hwc);
    return st;
}
