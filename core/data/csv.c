/* Numeric CSV files (RFC 4180: quoted fields, "" inside quotes, CRLF or LF)
 * into an f32 feature matrix and an optional label column. Every record must
 * have the first record's field count; a field that is not a number is an
 * error naming the file, the line and the column. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include "data/internal.h"

static const size_t MAX_CSV_BYTES = (size_t)1 << 30;

typedef struct parser {
    const char *p, *end, *path;
    int64_t line;
    char field[256];
    size_t flen;
    int truncated;
    char *err; size_t errn;
} parser;

/* reads one field into ps->field; returns 1 at the end of a record, 0 after a delimiter, -1 on a quote error */
static int next_field(parser *ps, char delim)
{
    ps->flen = 0;
    ps->truncated = 0;
    int quoted = 0;
    int64_t start_line = ps->line;
    const char *p = ps->p;
    while (p < ps->end && (*p == ' ' || *p == '\t') && *p != delim) p++;
    if (p < ps->end && *p == '"') { quoted = 1; p++; }
    for (;;) {
        if (p >= ps->end) {
            if (quoted) { snprintf(ps->err, ps->errn, "%s:%lld: a quoted field is not closed", ps->path, (long long)start_line); return -1; }
            ps->p = p;
            return 1;
        }
        char ch = *p;
        if (quoted) {
            if (ch == '"') {
                if (p + 1 < ps->end && p[1] == '"') { p += 2; goto add_quote; }
                quoted = 0;
                p++;
                while (p < ps->end && (*p == ' ' || *p == '\t') && *p != delim) p++;
                if (p < ps->end && *p != delim && *p != '\n' && *p != '\r') {
                    snprintf(ps->err, ps->errn, "%s:%lld: text after a closing quote", ps->path, (long long)ps->line);
                    return -1;
                }
                continue;
            }
            if (ch == '\n') ps->line++;
            p++;
        } else {
            if (ch == delim) { ps->p = p + 1; return 0; }
            if (ch == '\n' || ch == '\r') {
                if (ch == '\r' && p + 1 < ps->end && p[1] == '\n') p++;
                ps->p = p + 1;
                ps->line++;
                return 1;
            }
            p++;
        }
        if (ps->flen + 1 < sizeof ps->field) ps->field[ps->flen++] = ch;
        else ps->truncated = 1;
        continue;
    add_quote:
        if (ps->flen + 1 < sizeof ps->field) ps->field[ps->flen++] = '"';
        else ps->truncated = 1;
    }
}

static int is_blank_line(const parser *ps)
{
    const char *p = ps->p;
    while (p < ps->end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p >= ps->end || *p == '\n';
}

static int push(double **buf, int64_t *cap, int64_t n, double v)
{
    if (n == *cap) {
        int64_t grown = *cap ? *cap * 2 : 1024;
        double *b = realloc(*buf, sizeof(double) * (size_t)grown);
        if (!b) return -1;
        *buf = b;
        *cap = grown;
    }
    (*buf)[n] = v;
    return 0;
}

static void skip_line(parser *ps)
{
    while (ps->p < ps->end && *ps->p != '\n') ps->p++;
    if (ps->p < ps->end) { ps->p++; ps->line++; }
}

/* the header: its number of columns, and the label column when it is asked for by name */
static int read_header(parser *ps, char delimiter, const char *label_name, int *label_column, int64_t *ncols)
{
    int col = 0, r;
    while (ps->p < ps->end && is_blank_line(ps)) skip_line(ps);
    if (ps->p >= ps->end) {
        snprintf(ps->err, ps->errn, "%s: the file is empty (no header, no records)", ps->path);
        return NNR_ERR_INVALID;
    }
    do {
        if ((r = next_field(ps, delimiter)) < 0) return NNR_ERR_IO;
        ps->field[ps->flen] = 0;
        if (memchr(ps->field, 0, ps->flen)) {
            snprintf(ps->err, ps->errn, "%s:%lld: header column %d holds a NUL byte", ps->path, (long long)ps->line, col + 1);
            return NNR_ERR_INVALID;
        }
        if (label_name && strcmp(ps->field, label_name) == 0) *label_column = col;
        col++;
    } while (r == 0);
    *ncols = col;
    if (label_name && *label_column < 0) {
        snprintf(ps->err, ps->errn, "%s: no column named \"%s\" in the header", ps->path, label_name);
        return NNR_ERR_INVALID;
    }
    return NNR_OK;
}

/* every record's numbers into *vals (row-major), checking each row has *ncols fields (the first
 * row's count when *ncols < 0) */
static int read_records(parser *ps, char delimiter, double **vals, int64_t *ncols, int64_t *rows)
{
    int64_t n = 0, cap = 0;
    while (ps->p < ps->end) {
        if (is_blank_line(ps)) { skip_line(ps); continue; }
        int64_t line = ps->line, col = 0;
        int r;
        do {
            if ((r = next_field(ps, delimiter)) < 0) return NNR_ERR_IO;
            ps->field[ps->flen] = 0;
            char *endp;
            errno = 0;
            if (memchr(ps->field, 0, ps->flen)) {
                snprintf(ps->err, ps->errn, "%s:%lld: column %lld: the field holds a NUL byte (not a number)", ps->path, (long long)line,
                         (long long)col + 1);
                return NNR_ERR_IO;
            }
            double v = ps->truncated ? NAN : strtod(ps->field, &endp);
            if (!ps->truncated) while (*endp == ' ' || *endp == '\t') endp++;
            if (ps->truncated || ps->flen == 0 || endp != ps->field + ps->flen) {
                snprintf(ps->err, ps->errn, "%s:%lld: column %lld: \"%.40s\" is not a number", ps->path, (long long)line, (long long)col + 1,
                         ps->field);
                return NNR_ERR_IO;
            }
            if (push(vals, &cap, n++, v)) { snprintf(ps->err, ps->errn, "out of memory reading %s", ps->path); return NNR_ERR_OOM; }
            col++;
        } while (r == 0);
        if (*ncols < 0) *ncols = col;
        if (col != *ncols) {
            snprintf(ps->err, ps->errn, "%s:%lld: %lld fields, expected %lld", ps->path, (long long)line, (long long)col, (long long)*ncols);
            return NNR_ERR_IO;
        }
        (*rows)++;
    }
    return NNR_OK;
}

/* x [rows, features] f32 and y [rows] (i64 class + 1, or f32) from the numbers read */
static int make_tensors(const parser *ps, const double *vals, int64_t rows, int64_t ncols, int label_column, int label_classes,
                        nnr_tensor **x, nnr_tensor **y)
{
    if (label_column >= ncols || (label_column >= 0 && ncols < 2)) {
        snprintf(ps->err, ps->errn, "%s: label column %d of %lld columns (features need at least one more)", ps->path, label_column + 1,
                 (long long)ncols);
        return NNR_ERR_INVALID;
    }
    int64_t nfeat = label_column >= 0 ? ncols - 1 : ncols;
    int64_t xs[2] = {rows, nfeat}, ys[1] = {rows};
    *x = nnr_tensor_alloc(NNR_F32, 2, xs, nnr_host_device());
    if (label_column >= 0) *y = nnr_tensor_alloc(label_classes ? NNR_I64 : NNR_F32, 1, ys, nnr_host_device());
    if (!*x || (label_column >= 0 && !*y)) { snprintf(ps->err, ps->errn, "out of memory for %s", ps->path); return NNR_ERR_OOM; }
    float *xd = nnr_tensor_data(*x);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0, k = 0; c < ncols; c++) {
            double v = vals[r * ncols + c];
            if (c != label_column) { xd[r * nfeat + k++] = (float)v; continue; }
            if (!label_classes) { ((float *)nnr_tensor_data(*y))[r] = (float)v; continue; }
            if (v != floor(v) || v < 0 || v > 1e15) {
                snprintf(ps->err, ps->errn, "%s: record %lld: label %g is not a class number (0, 1, ...)", ps->path, (long long)r + 1, v);
                return NNR_ERR_INVALID;
            }
            ((int64_t *)nnr_tensor_data(*y))[r] = (int64_t)v + 1;
        }
    return NNR_OK;
}

int nnr_load_csv(const char *path, int header, const char *label_name, int label_column, char delimiter, int label_classes,
                 nnr_tensor **x, nnr_tensor **y)
{
    *x = *y = NULL;
    char err[512] = "";
    unsigned char *bytes = NULL;
    size_t size = 0;
    int rst = nnr_read_whole_file(path, MAX_CSV_BYTES, &bytes, &size, err, sizeof err);
    if (rst) return nnr_errorf(rst, "CSVDataset: %s", err);
    char *text = (char *)bytes;
    parser ps = {text, text + size, path, 1, "", 0, 0, err, sizeof err};
    if (size >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF) ps.p += 3;  /* UTF-8 BOM */
    int64_t ncols = -1, rows = 0;
    double *vals = NULL;
    int st = NNR_OK;
    if (header) st = read_header(&ps, delimiter, label_name, &label_column, &ncols);
    else if (label_name) {
        snprintf(err, sizeof err, "%s: a label column by name needs a header", path);
        st = NNR_ERR_INVALID;
    }
    if (st == NNR_OK) st = read_records(&ps, delimiter, &vals, &ncols, &rows);
    if (st == NNR_OK && rows == 0) {
        snprintf(err, sizeof err, "%s: no records%s", path, header ? " after the header" : " (the file is empty)");
        st = NNR_ERR_INVALID;
    }
    if (st == NNR_OK) st = make_tensors(&ps, vals, rows, ncols < 0 ? 0 : ncols, label_column, label_classes, x, y);
    free(vals);
    free(text);
    if (st) {
        nnr_tensor_release(*x); nnr_tensor_release(*y);
        *x = *y = NULL;
        return nnr_errorf(st, "CSVDataset: %s", err);
    }
    return NNR_OK;
}
