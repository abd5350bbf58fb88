/* sort and topk along the last dim (the core moves the dim there), as on the cpu: each element
 * becomes an unsigned key whose integer order is the wanted order (float bits flipped, every NaN
 * above +inf, -0.0 as 0.0, all bits inverted for descending), CUB's radix sort (stable) orders the
 * (key, position) pairs, one segment per row, and a last kernel writes the values (read back from
 * the input by position, so NaN payloads and the sign of zero come out as they went in) and the
 * 0-based positions. topk sorts its rows whole and keeps the first k: the same answer as the cpu's
 * selection (ties to the lower index). supports() takes rows of fewer than 2^31 elements in all. */
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include "dtype.cuh"

typedef struct sort_geom {
    int nd, dt, es, descending;
    int64_t sizes[NNR_MAX_DIMS];                 /* the input's; the outputs' last dim is m */
    int64_t in_st[NNR_MAX_DIMS], val_st[NNR_MAX_DIMS], idx_st[NNR_MAX_DIMS];
    int64_t n, m, rows;
    const char *in;
    char *val;
    int64_t *idx;
} sort_geom;

/* element offset (in elements) of (row r, position i) for strides st over g's leading sizes */
__device__ __forceinline__ int64_t sort_offset(const sort_geom &g, const int64_t *st, int64_t r, int64_t i)
{
    int64_t off = i * st[g.nd - 1];
    for (int d = g.nd - 2; d >= 0; d--) {
        int64_t q = r / g.sizes[d];
        off += (r - q * g.sizes[d]) * st[d];
        r = q;
    }
    return off;
}

__device__ __forceinline__ uint32_t key32_of_f32(float v)
{
    uint32_t b = __float_as_uint(v);
    b = v == 0 ? 0u : b;
    b = v != v ? 0x7fc00000u : b;
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
}

__device__ __forceinline__ uint64_t key64_of_f64(double v)
{
    uint64_t b = (uint64_t)__double_as_longlong(v);
    b = v == 0 ? 0ull : b;
    b = v != v ? 0x7ff8000000000000ull : b;
    return b ^ ((uint64_t)((int64_t)b >> 63) | 0x8000000000000000ull);
}

/* the key of the element at p, as plugins/cpu/sort.c makes it (the width is K's) */
template <typename K> __device__ __forceinline__ K sort_key(int dt, const char *p, int descending)
{
    K k;
    switch (dt) {
    case NNR_F32: k = (K)key32_of_f32(*(const float *)p); break;
    case NNR_F64: k = (K)key64_of_f64(*(const double *)p); break;
    case NNR_F16: k = (K)key32_of_f32(nnr_f16_to_f32(*(const uint16_t *)p)); break;
    case NNR_BF16: k = (K)key32_of_f32(nnr_bf16_to_f32(*(const uint16_t *)p)); break;
    case NNR_I64: k = (K)((uint64_t)*(const int64_t *)p ^ 0x8000000000000000ull); break;
    case NNR_I32: k = (K)((uint32_t)*(const int32_t *)p ^ 0x80000000u); break;
    case NNR_I8: k = (K)((uint8_t)*(const int8_t *)p ^ 0x80u); break;
    default: k = (K)*(const uint8_t *)p; break;                    /* u8, bool */
    }
    return descending ? (K)~k : k;       /* inverted across K's width: the order reverses, ties keep theirs */
}

template <typename K> __global__ void k_sort_keys(sort_geom g, K *keys, int *pos)
{
    int64_t total = g.rows * g.n;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / g.n, i = e - r * g.n;
        keys[e] = sort_key<K>(g.dt, g.in + sort_offset(g, g.in_st, r, i) * g.es, g.descending);
        pos[e] = (int)i;
    }
}

__global__ void k_sort_offsets(int64_t rows, int64_t n, int *offsets)
{
    for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r <= rows; r += (int64_t)gridDim.x * blockDim.x)
        offsets[r] = (int)(r * n);
}

/* the first m of each sorted row: values copied from the input by position, and the positions */
__global__ void k_sort_write(sort_geom g, const int *pos)
{
    int64_t total = g.rows * g.m;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / g.m, j = e - r * g.m;
        int64_t p = pos[r * g.n + j];
        const char *src = g.in + sort_offset(g, g.in_st, r, p) * g.es;
        char *dst = g.val + sort_offset(g, g.val_st, r, j) * g.es;
        switch (g.es) {
        case 8: *(uint64_t *)dst = *(const uint64_t *)src; break;
        case 4: *(uint32_t *)dst = *(const uint32_t *)src; break;
        case 2: *(uint16_t *)dst = *(const uint16_t *)src; break;
        default: *(uint8_t *)dst = *(const uint8_t *)src; break;
        }
        g.idx[sort_offset(g, g.idx_st, r, j)] = p;
    }
}

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

template <typename K> static int sort_rows(cu_device *d, const sort_geom &g)
{
    int64_t total = g.rows * g.n;
    int bits = (int)sizeof(K) * 8;
    size_t temp = 0;
    cudaError_t e;
    /* the scratch: keys in and out, positions in and out, row offsets, then CUB's own */
    if (g.rows == 1)
        e = cub::DeviceRadixSort::SortPairs(NULL, temp, (const K *)NULL, (K *)NULL, (const int *)NULL, (int *)NULL, (int)total, 0, bits, d->stream);
    else
        e = cub::DeviceSegmentedRadixSort::SortPairs(NULL, temp, (const K *)NULL, (K *)NULL, (const int *)NULL, (int *)NULL, (int)total,
                                                     (int)g.rows, (const int *)NULL, (const int *)NULL, 0, bits, d->stream);
    if (e != cudaSuccess) return cu_fail(e, "sort (temporary storage size)");
    size_t kb = align256(sizeof(K) * (size_t)total), pb = align256(sizeof(int) * (size_t)total), ob = align256(sizeof(int) * (size_t)(g.rows + 1));
    char *s = (char *)cu_scratch(d, 2 * kb + 2 * pb + ob + temp);
    if (!s) return NNR_ERR_OOM;
    K *keys_in = (K *)s, *keys_out = (K *)(s + kb);
    int *pos_in = (int *)(s + 2 * kb), *pos_out = (int *)(s + 2 * kb + pb), *offsets = (int *)(s + 2 * kb + 2 * pb);
    void *work = s + 2 * kb + 2 * pb + ob;
    k_sort_keys<K><<<cu_blocks(total, 256), 256, 0, d->stream>>>(g, keys_in, pos_in);
    CU_LAUNCHED("sort (keys)");
    if (g.rows == 1) {
        e = cub::DeviceRadixSort::SortPairs(work, temp, keys_in, keys_out, pos_in, pos_out, (int)total, 0, bits, d->stream);
    } else {
        k_sort_offsets<<<cu_blocks(g.rows + 1, 256), 256, 0, d->stream>>>(g.rows, g.n, offsets);
        CU_LAUNCHED("sort (offsets)");
        e = cub::DeviceSegmentedRadixSort::SortPairs(work, temp, keys_in, keys_out, pos_in, pos_out, (int)total, (int)g.rows, offsets,
                                                     offsets + 1, 0, bits, d->stream);
    }
    if (e != cudaSuccess) return cu_fail(e, "sort (cub radix sort)");
    k_sort_write<<<cu_blocks(g.rows * g.m, 256), 256, 0, d->stream>>>(g, pos_out);
    CU_LAUNCHED("sort (write)");
    return NNR_OK;
}

int cu_sort_supports(const nnr_op_call *call)
{
    if (call->n_outputs != 2 || call->outputs[1]->dtype != NNR_I64 || call->inputs[0]->dtype != call->outputs[0]->dtype) return 0;
    if (call->inputs[0]->ndim < 1) return 0;
    return nnr_desc_numel(call->inputs[0]) < ((int64_t)1 << 31) - 1;
}

int cu_sort(cu_device *d, const nnr_op_call *call)
{
    const nnr_tensor_desc *in = call->inputs[0], *val = call->outputs[0], *idx = call->outputs[1];
    sort_geom g;
    memset(&g, 0, sizeof g);
    g.nd = in->ndim;
    g.dt = in->dtype;
    g.es = (int)nnr_dtype_nbytes(in->dtype);
    g.rows = 1;
    for (int k = 0; k < g.nd; k++) {
        g.sizes[k] = in->sizes[k];
        g.in_st[k] = in->strides[k];
        g.val_st[k] = val->strides[k];
        g.idx_st[k] = idx->strides[k];
        if (k < g.nd - 1) g.rows *= in->sizes[k];
    }
    g.n = in->sizes[g.nd - 1];
    g.m = val->sizes[g.nd - 1];
    if (call->op == NNR_OP_TOPK) {
        if (call->params->i[0] != g.m || g.m > g.n) return cu_errorf(NNR_ERR_INVALID, "topk: k = %lld does not fit the outputs", (long long)call->params->i[0]);
        g.descending = call->params->i[1] != 0;
    } else {
        g.descending = call->params->i[0] != 0;
    }
    g.in = (const char *)in->data;
    g.val = (char *)val->data;
    g.idx = (int64_t *)idx->data;
    if (g.rows == 0 || g.n == 0 || g.m == 0) return NNR_OK;
    int wide = g.dt == NNR_F64 || g.dt == NNR_I64;
    return wide ? sort_rows<uint64_t>(d, g) : sort_rows<uint32_t>(d, g);
}
