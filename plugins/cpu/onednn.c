/* oneDNN (Debian's libdnnl2) for the shapes where it beats OpenBLAS + our own kernels:
 *  - batched f32 matmul (the products of einsum and attention): its brgemm kernels ran 64 products of
 *    256x64 @ 64x256 at 105-130 GFLOP/s on one core where OpenBLAS's sgemm gave 70-90;
 *  - the transposed convolution (CONV2D_GRAD_INPUT without a relu mask, f32, one group) in blocked
 *    layouts: 16x64x16x16 -> 32x32 in 1.5 ms on two cores where im2col + gemm + col2im took 2.6.
 * Opened on first use, like OpenBLAS (blas.c), so a script that never reaches these ops does not pay
 * for loading it, and a machine without it runs the ops as before. Threads stay ours: oneDNN runs
 * single-threaded (its OpenMP team set to 1 in the calling thread) on a piece of the batch per pool
 * thread, so there is one set of threads for the backend. Primitives are built once per shape and
 * kept (up to CACHE_SIZE); each runs with a scratchpad of the calling thread's, so pool threads can
 * run one primitive at once. A shape oneDNN would only serve with a reference kernel is remembered
 * as declined and left to the other path.
 * nnr.backends.cpu.onednn = false (or NNR_ONEDNN=0 before the start) turns it off. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

int cpu_onednn_enabled = -1;     /* -1: not yet read from NNR_ONEDNN */
_Atomic long cpu_onednn_calls;    /* ops it ran: nnr.backends.cpu.onednn_calls, for tests and benchmarks */

#ifndef NNR_HAVE_ONEDNN

int cpu_onednn_available(void) { return 0; }
const char *cpu_onednn_version(void) { return "not available: built without dnnl.h (libdnnl-dev)"; }
int cpu_onednn_matmul(const cpu_onednn_mm *m, int64_t begin, int64_t end) { (void)m; (void)begin; (void)end; return 0; }
int cpu_onednn_gemm = 0;
_Atomic long cpu_onednn_gemm_calls;
void cpu_onednn_configure(void) {}
int cpu_onednn_gemm_applies(int64_t M, int64_t N, int64_t K) { (void)M; (void)N; (void)K; return 0; }
int cpu_onednn_gemm_piece(const cpu_onednn_mm *m) { (void)m; return 0; }
int cpu_onednn_conv_transpose(const nnr_op_call *call) { (void)call; return 0; }
int cpu_onednn_conv(const nnr_op_call *call) { (void)call; return 0; }
int cpu_onednn_conv_enabled = 0;
int cpu_onednn_linear(const nnr_op_call *call) { (void)call; return 0; }
void cpu_onednn_thread_exit(void) {}

#else
#include <dnnl.h>

#define DNNL_FUNCS(X) \
    X(dnnl_engine_create) X(dnnl_stream_create) X(dnnl_stream_destroy) X(dnnl_memory_desc_init_by_strides) \
    X(dnnl_memory_desc_init_by_tag) X(dnnl_matmul_desc_init) X(dnnl_dilated_deconvolution_forward_desc_init) \
    X(dnnl_dilated_convolution_forward_desc_init) X(dnnl_memory_desc_equal) \
    X(dnnl_primitive_attr_create) X(dnnl_primitive_attr_destroy) X(dnnl_primitive_attr_set_scratchpad_mode) \
    X(dnnl_primitive_desc_create) X(dnnl_primitive_desc_destroy) X(dnnl_primitive_desc_query_md) X(dnnl_primitive_desc_query) \
    X(dnnl_primitive_create) X(dnnl_primitive_destroy) X(dnnl_primitive_execute) X(dnnl_memory_create) X(dnnl_memory_destroy) \
    X(dnnl_reorder_primitive_desc_create) X(dnnl_memory_desc_get_size) X(dnnl_version) \
    X(dnnl_post_ops_create) X(dnnl_post_ops_destroy) X(dnnl_post_ops_append_sum) X(dnnl_primitive_attr_set_post_ops)

static struct {
#define FIELD(f) __typeof__(&f) f;
    DNNL_FUNCS(FIELD)
#undef FIELD
    void (*omp_set_num_threads)(int);
    dnnl_engine_t engine;
    int ok;
    char version[160];              /* "2.6.3", or why it is not available */
} D;

static pthread_once_t open_once = PTHREAD_ONCE_INIT;

/* a class forced below the CPU's (NNR_CPU_ISA) caps oneDNN's own dispatch too, unless the user capped it;
 * set at init, since oneDNN reads it when it first dispatches */
void cpu_onednn_configure(void)
{
    static const char *const dnnl_isa[CPU_ISA_COUNT] = {"SSE41", "AVX2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX"};
    if (cpu_isa_level < cpu_isa_cpu && !getenv("ONEDNN_MAX_CPU_ISA") && !getenv("DNNL_MAX_CPU_ISA"))
        setenv("ONEDNN_MAX_CPU_ISA", dnnl_isa[cpu_isa_level], 0);
}

static void open_dnnl(void)
{
    void *h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) { snprintf(D.version, sizeof D.version, "not available: %s", dlerror()); return; }
    snprintf(D.version, sizeof D.version, "not available: libdnnl.so.2 lacks a function of the 2.x C API");
#define LOAD(f) if (!(D.f = (__typeof__(&f))dlsym(h, #f))) return;
    DNNL_FUNCS(LOAD)
#undef LOAD
    D.omp_set_num_threads = (void (*)(int))dlsym(h, "omp_set_num_threads");
    /* the OpenMP runtime's threads are never started: every call runs with a team of 1 */
    if (!D.omp_set_num_threads || D.dnnl_engine_create(&D.engine, dnnl_cpu, 0) != dnnl_success) {
        snprintf(D.version, sizeof D.version, "not available: no OpenMP runtime or cpu engine in libdnnl.so.2");
        return;
    }
    const dnnl_version_t *v = D.dnnl_version();
    snprintf(D.version, sizeof D.version, "%d.%d.%d", v->major, v->minor, v->patch);
    D.ok = 1;
}

int cpu_onednn_available(void)
{
    if (cpu_onednn_enabled < 0) {
        const char *env = getenv("NNR_ONEDNN");
        cpu_onednn_enabled = !(env && strcmp(env, "0") == 0);
        if (env && strcmp(env, "0") && strcmp(env, "1")) fprintf(stderr, "nnrun: NNR_ONEDNN=%.20s is neither 0 nor 1; using 1\n", env);
    }
    if (!cpu_onednn_enabled) return 0;
    pthread_once(&open_once, open_dnnl);
    return D.ok;
}

const char *cpu_onednn_version(void)
{
    if (!cpu_onednn_available() && !cpu_onednn_enabled) return "off";
    return D.version;
}

/* ---- per-thread state: a stream and a grow-only buffer (blocked copies, then the scratchpad) ---- */
static _Thread_local dnnl_stream_t tl_stream;
static _Thread_local struct { char *p; size_t n; } tl_buf;

void cpu_onednn_thread_exit(void)
{
    if (tl_stream) D.dnnl_stream_destroy(tl_stream);
    tl_stream = NULL;
    free(tl_buf.p);
    tl_buf.p = NULL;
    tl_buf.n = 0;
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* the calling thread's stream and a buffer of at least n bytes (64-byte aligned), or NULL */
static char *thread_setup(size_t n)
{
    D.omp_set_num_threads(1);
    if (!tl_stream && D.dnnl_stream_create(&tl_stream, D.engine, dnnl_stream_default_flags) != dnnl_success) return NULL;
    cpu_thread_scratch_taken();
    if (tl_buf.n < n) {
        free(tl_buf.p);
        tl_buf.n = 0;
        if (posix_memalign((void **)&tl_buf.p, 64, n)) { tl_buf.p = NULL; return NULL; }
        tl_buf.n = n;
    }
    return tl_buf.p;
}

/* ---- primitives by shape ---- */
enum { CACHE_SIZE = 256, KEY_LEN = 24, KIND_MATMUL = 1, KIND_DECONV = 2, KIND_LINEAR = 3, KIND_CONV = 4, KIND_CONV_W = 5 };

typedef struct prim {
    int64_t key[KEY_LEN];
    uint64_t hash;                  /* of key: compared first */
    int declined;                   /* oneDNN has only a reference kernel (or none) for it */
    int refs;                       /* calls running it now: an entry is reused only at 0 */
    uint64_t used;                  /* when it was last looked up, for least-recently-used reuse */
    dnnl_primitive_t p;             /* the matmul, deconvolution or convolution */
    dnnl_primitive_t to_src, to_wei, from_dst;   /* reorders to and from the blocked layouts (deconvolution, convolution) */
    dnnl_memory_desc_t bsrc, bwei, bdst;         /* the (de)convolution's blocked layouts */
    size_t scratch_bytes;
    void *packed;                   /* a keyed linear's or convolution's weight in the primitive's layout */
    size_t packed_bytes;
} prim;

static prim cache[CACHE_SIZE];

/* FNV-1a over the key's words */
static uint64_t key_hash(const int64_t *key)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < KEY_LEN; i++) h = (h ^ (uint64_t)key[i]) * 1099511628211ull;
    return h;
}

static int cache_used;
static uint64_t cache_clock;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static dnnl_primitive_attr_t user_scratchpad(void)
{
    dnnl_primitive_attr_t a = NULL;
    if (D.dnnl_primitive_attr_create(&a) != dnnl_success) return NULL;
    D.dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
    return a;
}

static size_t scratch_of(const_dnnl_primitive_desc_t pd)
{
    const dnnl_memory_desc_t *md = D.dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    return md ? D.dnnl_memory_desc_get_size(md) : 0;
}

/* the name of the implementation oneDNN chose ("brg:avx512_core", "jit:avx2", "gemm:jit", "ref:any"), or
 * "" when it does not say */
static const char *impl_of(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    return D.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl ? impl : "";
}

/* a primitive from an operation descriptor; declined (0) for reference kernels */
/* accumulate: the output added to what the destination holds (a sum post-op, beta = 1) */
static int make_primitive_sum(const_dnnl_op_desc_t op, int accumulate, dnnl_primitive_t *out, dnnl_primitive_desc_t *pd_out)
{
    dnnl_primitive_attr_t attr = user_scratchpad();
    dnnl_primitive_desc_t pd = NULL;
    int st = attr != NULL;
    if (st && accumulate) {
        dnnl_post_ops_t po = NULL;
        st = D.dnnl_post_ops_create(&po) == dnnl_success && D.dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
             D.dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
        if (po) D.dnnl_post_ops_destroy(po);
    }
    st = st && D.dnnl_primitive_desc_create(&pd, op, attr, D.engine, NULL) == dnnl_success;
    D.dnnl_primitive_attr_destroy(attr);
    if (st && (!*impl_of(pd) || strstr(impl_of(pd), "ref"))) st = 0;
    if (st && D.dnnl_primitive_create(out, pd) != dnnl_success) st = 0;
    if (!st && pd) { D.dnnl_primitive_desc_destroy(pd); pd = NULL; }
    *pd_out = pd;
    return st;
}

static int make_primitive(const_dnnl_op_desc_t op, dnnl_primitive_t *out, dnnl_primitive_desc_t *pd_out)
{
    return make_primitive_sum(op, 0, out, pd_out);
}

static int make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_primitive_t *out, size_t *scratch)
{
    dnnl_primitive_attr_t attr = user_scratchpad();
    dnnl_primitive_desc_t pd = NULL;
    int st = attr && D.dnnl_reorder_primitive_desc_create(&pd, from, D.engine, to, D.engine, attr) == dnnl_success &&
             D.dnnl_primitive_create(out, pd) == dnnl_success;
    D.dnnl_primitive_attr_destroy(attr);
    if (pd) {
        size_t s = scratch_of(pd);
        if (s > *scratch) *scratch = s;
        D.dnnl_primitive_desc_destroy(pd);
    }
    return st;
}

static size_t packed_total;         /* bytes of packed weights in the cache (under cache_lock) */
enum { PACKED_LIMIT = 256 << 20 };

static void prim_free(prim *e)
{
    dnnl_primitive_t *all[4] = {&e->p, &e->to_src, &e->to_wei, &e->from_dst};
    for (int i = 0; i < 4; i++) if (*all[i]) { D.dnnl_primitive_destroy(*all[i]); *all[i] = NULL; }
    free(e->packed);
    e->packed = NULL;
    packed_total -= e->packed_bytes;
    e->packed_bytes = 0;
}

/* an entry's primitives and packed weight freed, and its key zeroed (a zero key matches nothing) */
static void prim_forget(prim *e)
{
    prim_free(e);
    memset(e->key, 0, sizeof e->key);
    e->hash = key_hash(e->key);
}

/* packed weights past PACKED_LIMIT: the least recently used entries that hold some and that no call
 * is running are emptied */
static void trim_packed(void)
{
    while (packed_total > PACKED_LIMIT) {
        prim *lru = NULL;
        for (int i = 0; i < cache_used; i++)
            if (cache[i].packed && cache[i].refs == 0 && (!lru || cache[i].used < lru->used)) lru = &cache[i];
        if (!lru) return;
        prim_forget(lru);
    }
}

typedef int (*build_fn)(prim *e, const void *ctx);

/* a free slot, or the least recently used entry no call is running (its primitives freed); NULL when
 * every entry is in use */
static prim *slot(void)
{
    if (cache_used < CACHE_SIZE) return &cache[cache_used++];
    prim *lru = NULL;
    for (int i = 0; i < CACHE_SIZE; i++)
        if (cache[i].refs == 0 && (!lru || cache[i].used < lru->used)) lru = &cache[i];
    if (lru) prim_free(lru);
    return lru;
}

/* the primitive for key, built by build on a miss, held until release(). With every entry in use it
 * is built into *tmp, which release() frees. NULL when declined. */
static prim *lookup(const int64_t *key, build_fn build, const void *ctx, prim *tmp)
{
    uint64_t h = key_hash(key);
    pthread_mutex_lock(&cache_lock);
    prim *e = NULL;
    for (int i = 0; i < cache_used && !e; i++)
        if (cache[i].hash == h && memcmp(cache[i].key, key, sizeof cache[i].key) == 0) e = &cache[i];
    if (!e) {
        prim *s = slot();
        e = s ? s : tmp;
        memset(e, 0, sizeof *e);
        memcpy(e->key, key, sizeof e->key);
        e->hash = h;
        D.omp_set_num_threads(1);       /* a primitive takes its thread count from the thread that builds it */
        int built = build(e, ctx);
        packed_total += e->packed_bytes;     /* counted before any prim_free takes it off */
        if (!built) {
            prim_free(e);
            e->declined = 1;
        }
        if (!e->declined) e->refs++;         /* held while trimming, which may not take it */
        trim_packed();
        if (!e->declined) e->refs--;
    }
    e->used = ++cache_clock;
    if (!e->declined) e->refs++;
    pthread_mutex_unlock(&cache_lock);
    return e->declined ? NULL : e;
}

static void release(prim *e, prim *tmp)
{
    pthread_mutex_lock(&cache_lock);
    e->refs--;
    if (e == tmp) prim_free(tmp);
    pthread_mutex_unlock(&cache_lock);
}

static int wrap(dnnl_memory_t *m, const dnnl_memory_desc_t *md, void *p)
{
    return D.dnnl_memory_create(m, md, D.engine, p) == dnnl_success;
}

/* runs p with up to 4 (arg, desc, pointer) triples and the scratchpad; 1 on success */
static int execute(dnnl_primitive_t p, int n, const int *args, const dnnl_memory_desc_t *const *mds, void *const *ptrs, void *scratch,
                   size_t scratch_bytes)
{
    dnnl_memory_t mem[5] = {0};
    dnnl_exec_arg_t ex[5];
    int ok = 1, k = 0;
    for (; k < n && ok; k++) { ok = wrap(&mem[k], mds[k], ptrs[k]); ex[k].arg = args[k]; ex[k].memory = mem[k]; }
    if (ok && scratch_bytes) {
        dnnl_memory_desc_t smd;
        dnnl_dims_t d = {(dnnl_dim_t)scratch_bytes};
        ok = D.dnnl_memory_desc_init_by_tag(&smd, 1, d, dnnl_u8, dnnl_a) == dnnl_success && wrap(&mem[k], &smd, scratch);
        ex[k].arg = DNNL_ARG_SCRATCHPAD;
        ex[k].memory = mem[k];
        k++;
    }
    if (ok) ok = D.dnnl_primitive_execute(p, tl_stream, k, ex) == dnnl_success;
    for (int i = 0; i < k; i++) if (mem[i]) D.dnnl_memory_destroy(mem[i]);
    return ok;
}

/* e->packed: the weight at src (plain layout from) reordered into e->bwei, the layout of the primitive it
 * serves; 1 on success (a failure leaves what was allocated to prim_free) */
static int pack_weight(prim *e, const dnnl_memory_desc_t *from, const void *src)
{
    size_t bytes = D.dnnl_memory_desc_get_size(&e->bwei);
    if (posix_memalign(&e->packed, 64, bytes ? bytes : 64)) { e->packed = NULL; return 0; }
    e->packed_bytes = bytes;
    dnnl_primitive_t reorder = NULL;
    size_t rs = 0;
    int ok = make_reorder(from, &e->bwei, &reorder, &rs);
    char *scratch = ok ? thread_setup(rs + 64) : NULL;
    int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    const dnnl_memory_desc_t *mds[2] = {from, &e->bwei};
    void *ptrs[2] = {(void *)src, e->packed};
    ok = ok && scratch && execute(reorder, 2, args, mds, ptrs, scratch, rs);
    if (reorder) D.dnnl_primitive_destroy(reorder);
    return ok;
}

/* ---- batched matmul ---- */
static void mm_descs(const cpu_onednn_mm *m, int64_t batch, dnnl_memory_desc_t *a, dnnl_memory_desc_t *b, dnnl_memory_desc_t *c, int *ok)
{
    dnnl_dims_t ad = {batch, m->M, m->K}, bd = {batch, m->K, m->N}, cd = {batch, m->M, m->N};
    dnnl_dims_t as = {m->sa, m->ta ? 1 : m->lda, m->ta ? m->lda : 1}, bs = {m->sb, m->tb ? 1 : m->ldb, m->tb ? m->ldb : 1};
    dnnl_dims_t cs = {m->sc, m->ldc, 1};
    *ok = D.dnnl_memory_desc_init_by_strides(a, 3, ad, dnnl_f32, as) == dnnl_success &&
          D.dnnl_memory_desc_init_by_strides(b, 3, bd, dnnl_f32, bs) == dnnl_success &&
          D.dnnl_memory_desc_init_by_strides(c, 3, cd, dnnl_f32, cs) == dnnl_success;
}

typedef struct mm_ctx { const cpu_onednn_mm *m; int64_t batch; } mm_ctx;

static int build_matmul(prim *e, const void *arg)
{
    const mm_ctx *c = arg;
    dnnl_memory_desc_t a, b, d;
    dnnl_matmul_desc_t op;
    dnnl_primitive_desc_t pd;
    int ok;
    mm_descs(c->m, c->batch, &a, &b, &d, &ok);
    if (!ok || D.dnnl_matmul_desc_init(&op, &a, &b, NULL, &d) != dnnl_success || !make_primitive_sum(&op, c->m->accumulate, &e->p, &pd))
        return 0;
    e->scratch_bytes = scratch_of(pd);
    D.dnnl_primitive_desc_destroy(pd);
    return 1;
}

static int run_matmul(const cpu_onednn_mm *m, int64_t begin, int64_t end)
{
    if (!cpu_onednn_available() || end <= begin) return 0;
    int64_t batch = end - begin;
    int64_t key[KEY_LEN] = {KIND_MATMUL, batch, m->M, m->N, m->K, m->ta, m->tb, m->lda, m->ldb, m->ldc, m->sa, m->sb, m->sc, m->accumulate};
    mm_ctx c = {m, batch};
    prim tmp;
    prim *e = lookup(key, build_matmul, &c, &tmp);
    if (!e) return 0;
    char *scratch = thread_setup(e->scratch_bytes + 64);
    dnnl_memory_desc_t a, b, d;
    int ok;
    mm_descs(m, batch, &a, &b, &d, &ok);
    int args[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    const dnnl_memory_desc_t *mds[3] = {&a, &b, &d};
    void *ptrs[3] = {(void *)(m->A + begin * m->sa), (void *)(m->B + begin * m->sb), (void *)(m->C + begin * m->sc)};
    ok = ok && scratch && execute(e->p, 3, args, mds, ptrs, scratch, e->scratch_bytes);
    release(e, &tmp);
    return ok;
}

int cpu_onednn_matmul(const cpu_onednn_mm *m, int64_t begin, int64_t end)
{
    int ok = run_matmul(m, begin, end);
    if (ok) cpu_onednn_calls++;
    return ok;
}

_Atomic long cpu_onednn_gemm_calls;

int cpu_onednn_gemm_piece(const cpu_onednn_mm *m)
{
    int ok = run_matmul(m, 0, 1);
    if (ok) cpu_onednn_gemm_calls++;
    return ok;
}

/* A product of 17 to 512 rows (the whole product: gemm.c decides once, and its pieces run one per core):
 * oneDNN's brgemm
 * kernels ran the mlp's, cnn's and recurrent layers' shapes at 1.1-1.6x OpenBLAS 0.3.21's rate, and tied
 * above 512 rows; at 1-16 rows OpenBLAS (or the small-batch kernel) is 2-3x faster (docs/perf.md, "The
 * field's libraries"). A rule on the shape, not a timing: the same product takes the same path in every
 * run, so a resumed training gives the same bits. BLIS 0.9 (Debian's) was slower than both on every
 * shape, and libxsmm only builds kernels for products too small to matter here. */
int cpu_onednn_gemm = 1;       /* nnr.backends.cpu.onednn_gemm = false: every such product on OpenBLAS */

int cpu_onednn_gemm_applies(int64_t M, int64_t N, int64_t K)
{
    return cpu_onednn_gemm && M > 16 && M <= 512 && N >= 16 && K >= 16 && cpu_onednn_available();
}

/* ---- transposed convolution: CONV2D_GRAD_INPUT (grad_x = deconvolution of grad_y by w) ---- */
typedef struct dc_geom {
    int64_t N, C, H, W, O, HO, WO, KH, KW, s[2], p[2], pr[2], d[2];
} dc_geom;

/* plain NCHW descriptors of mb images: src is grad_y [mb, O, HO, WO], dst grad_x [mb, C, H, W];
 * the weight [O, C, KH, KW] is oneDNN's deconvolution weight {C, O, KH, KW} in "iohw" */
static int plain_descs(const dc_geom *g, int64_t mb, dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei, dnnl_memory_desc_t *dst)
{
    dnnl_dims_t sd = {mb, g->O, g->HO, g->WO}, wd = {g->C, g->O, g->KH, g->KW}, dd = {mb, g->C, g->H, g->W};
    return D.dnnl_memory_desc_init_by_tag(src, 4, sd, dnnl_f32, dnnl_nchw) == dnnl_success &&
           D.dnnl_memory_desc_init_by_tag(wei, 4, wd, dnnl_f32, dnnl_iohw) == dnnl_success &&
           D.dnnl_memory_desc_init_by_tag(dst, 4, dd, dnnl_f32, dnnl_nchw) == dnnl_success;
}

typedef struct dc_ctx { const dc_geom *g; int64_t mb; } dc_ctx;

static int build_deconv(prim *e, const void *arg)
{
    const dc_ctx *c = arg;
    const dc_geom *g = c->g;
    dnnl_memory_desc_t src, wei, dst, asrc, awei, adst;
    if (!plain_descs(g, c->mb, &src, &wei, &dst)) return 0;
    dnnl_dims_t sd = {c->mb, g->O, g->HO, g->WO}, wd = {g->C, g->O, g->KH, g->KW}, dd = {c->mb, g->C, g->H, g->W};
    dnnl_dims_t st = {g->s[0], g->s[1]}, dil = {g->d[0] - 1, g->d[1] - 1}, pl = {g->p[0], g->p[1]}, pr = {g->pr[0], g->pr[1]};
    dnnl_deconvolution_desc_t op;
    dnnl_primitive_desc_t pd;
    if (D.dnnl_memory_desc_init_by_tag(&asrc, 4, sd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_memory_desc_init_by_tag(&awei, 4, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_memory_desc_init_by_tag(&adst, 4, dd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_dilated_deconvolution_forward_desc_init(&op, dnnl_forward_inference, dnnl_deconvolution_direct, &asrc, &awei, NULL, &adst,
                                               st, dil, pl, pr) != dnnl_success ||
        !make_primitive(&op, &e->p, &pd))
        return 0;
    const dnnl_memory_desc_t *bs = D.dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *bw = D.dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *bd = D.dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    e->scratch_bytes = scratch_of(pd);
    e->bsrc = *bs;
    e->bwei = *bw;
    e->bdst = *bd;
    int ok = make_reorder(&src, bs, &e->to_src, &e->scratch_bytes) && make_reorder(&wei, bw, &e->to_wei, &e->scratch_bytes) &&
             make_reorder(bd, &dst, &e->from_dst, &e->scratch_bytes);
    D.dnnl_primitive_desc_destroy(pd);
    return ok;
}

typedef struct dc_job {
    const dc_geom *g;
    const char *gy, *w;
    char *gx;
    int failed;
} dc_job;

/* images [n0, n0 + mb): their gradient to the blocked layout, the deconvolution, the result back to
 * NCHW; each call puts the weight in the blocked layout itself (a few hundred KiB at most) */
static int run_chunk(const dc_job *j, int64_t n0, int64_t mb)
{
    const dc_geom *g = j->g;
    int64_t key[KEY_LEN] = {KIND_DECONV, mb, g->C, g->H, g->W, g->O, g->HO, g->WO, g->KH, g->KW,
                            g->s[0] | g->s[1] << 16 | g->d[0] << 32 | g->d[1] << 48, g->p[0], g->p[1], g->pr[0], g->pr[1]};
    dc_ctx c = {g, mb};
    prim tmp;
    prim *e = lookup(key, build_deconv, &c, &tmp);
    if (!e) return 0;
    size_t sb = round64(D.dnnl_memory_desc_get_size(&e->bsrc)), wb = round64(D.dnnl_memory_desc_get_size(&e->bwei));
    size_t db = round64(D.dnnl_memory_desc_get_size(&e->bdst));
    char *buf = thread_setup(sb + wb + db + e->scratch_bytes + 64);
    dnnl_memory_desc_t src, wei, dst;
    int ok = buf && plain_descs(g, mb, &src, &wei, &dst);
    if (ok) {
        char *bsrc = buf, *bwei = buf + sb, *bdst = buf + sb + wb, *scratch = buf + sb + wb + db;
        int reorder[2] = {DNNL_ARG_FROM, DNNL_ARG_TO}, conv[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
        const dnnl_memory_desc_t *m1[2] = {&src, &e->bsrc}, *m2[2] = {&wei, &e->bwei}, *m3[3] = {&e->bsrc, &e->bwei, &e->bdst};
        const dnnl_memory_desc_t *m4[2] = {&e->bdst, &dst};
        void *p1[2] = {(void *)(j->gy + n0 * g->O * g->HO * g->WO * 4), bsrc}, *p2[2] = {(void *)j->w, bwei};
        void *p3[3] = {bsrc, bwei, bdst}, *p4[2] = {bdst, j->gx + n0 * g->C * g->H * g->W * 4};
        ok = execute(e->to_src, 2, reorder, m1, p1, scratch, e->scratch_bytes) &&
             execute(e->to_wei, 2, reorder, m2, p2, scratch, e->scratch_bytes) &&
             execute(e->p, 3, conv, m3, p3, scratch, e->scratch_bytes) &&
             execute(e->from_dst, 2, reorder, m4, p4, scratch, e->scratch_bytes);
    }
    release(e, &tmp);
    return ok;
}

/* a piece of the batch, in chunks whose blocked copies take about CHUNK_BYTES (channels padded to 16) */
enum { CHUNK_BYTES = 16 << 20 };

static void dc_images(void *arg, int64_t begin, int64_t end)
{
    dc_job *j = arg;
    const dc_geom *g = j->g;
    int64_t image = 4 * (((g->O + 15) & ~15) * g->HO * g->WO + ((g->C + 15) & ~15) * g->H * g->W);
    int64_t chunk = CHUNK_BYTES / image > 1 ? CHUNK_BYTES / image : 1;
    for (int64_t n = begin; n < end && !j->failed; n += chunk)
        if (!run_chunk(j, n, end - n < chunk ? end - n : chunk)) j->failed = 1;
}

/* 1 when oneDNN computed the op (or Ctrl-C stopped it); 0 leaves it to the caller (not applicable,
 * declined, or failed part way: the caller's path overwrites the whole output) */
int cpu_onednn_conv_transpose(const nnr_op_call *call)
{
    const nnr_tensor_desc *gy = call->inputs[0], *w = call->inputs[1], *gx = call->outputs[0];
    const int64_t *i = call->params->i;
    int threads = cpu_pool_threads();
    if (gy->dtype != NNR_F32 || i[6] != 1 || (call->n_inputs > 2 && i[7] == 1) || gx->sizes[0] < threads) return 0;
    dc_geom g = {gx->sizes[0], gx->sizes[1], gx->sizes[2], gx->sizes[3], gy->sizes[1], gy->sizes[2], gy->sizes[3], w->sizes[2], w->sizes[3],
                 {i[0], i[1]}, {i[2], i[3]}, {0, 0}, {i[4], i[5]}};
    for (int k = 0; k < 2; k++) {
        int64_t in = k ? g.WO : g.HO, out = k ? g.W : g.H, ks = k ? g.KW : g.KH;
        g.pr[k] = (in - 1) * g.s[k] + (ks - 1) * g.d[k] + 1 - out - g.p[k];
        if (g.pr[k] < 0 || g.s[k] >= 1 << 16 || g.d[k] >= 1 << 15) return 0;
    }
    /* small products are faster through the caller's im2col path, which has no reorders */
    if ((double)g.N * g.C * g.H * g.W * g.O * g.KH * g.KW / ((double)g.s[0] * g.s[1]) < 1 << 22) return 0;
    if (!cpu_onednn_available()) return 0;
    dc_job j = {&g, gy->data, w->data, gx->data, 0};
    int st = cpu_parallel_for(g.N, 1, dc_images, &j);
    if (st == NNR_ERR_INTERRUPTED) return 1;        /* the caller reports it */
    if (st != NNR_OK || j.failed) return 0;
    cpu_onednn_calls++;
    return 1;
}

/* ---- a keyed convolution (CONV2D with f[0] != 0: inference), the weight packed once per key ----
 * oneDNN's direct convolutions (jit:avx2, jit:avx512_core and their 1x1 forms) in blocked layouts,
 * against im2col + OpenBLAS: ResNet-18's convolutions at batch 1 ran at 70 GFLOP/s on one core of an
 * AVX2 EPYC, reorders included, where im2col + sgemm gave 45 (docs/perf.md). The work is split in
 * pieces of (images, output rows), one per pool thread: runs of the batch when it has at least as many
 * images as threads, else bands of output rows, each a convolution of its own input rows with the
 * padding that falls to it. A piece reorders its input rows into the primitive's layout, convolves
 * them with the weight packed in that layout, and reorders its output back into its part of the NCHW
 * output. Slicing output channels instead left each thread's kernel 20-40% slower. The weight is packed
 * once per (storage, version, layout) and kept: a newer version of the same storage drops the older
 * copies. oneDNN's gemm-based convolution is declined (that is the caller's own path), and the relu is
 * ours (oneDNN's would turn NaN into 0). */
typedef struct cv_job {
    const nnr_op_call *call;
    int64_t N, C, H, W, O, HO, WO, KH, KW, s[2], p[2], d[2];
    int64_t uid, version, chunk, pieces, bands, unit;   /* chunk: images a call; pieces of the batch; bands of rows;
                                                         * unit: output channels a slice (0: no slices) */
    int bias, relu, failed;
} cv_job;

/* a piece: images [n0, n0 + nb), output rows [h0, h1) of output channels [o0, o0 + os), its input
 * rows [i0, i1) and the padding above and below them */
typedef struct cv_piece_geom { int64_t n0, nb, h0, h1, i0, i1, pt, pb, o0, os; } cv_piece_geom;

typedef struct cv_ctx { const cv_job *j; const cv_piece_geom *q; const prim *shape; } cv_ctx;

static cv_piece_geom cv_rows(const cv_job *j, int64_t n0, int64_t nb, int64_t h0, int64_t h1, int64_t o0, int64_t os)
{
    int64_t reach = (j->KH - 1) * j->d[0] + 1, top = h0 * j->s[0] - j->p[0], bottom = (h1 - 1) * j->s[0] - j->p[0] + reach;
    cv_piece_geom q = {n0, nb, h0, h1, top < 0 ? 0 : top, bottom > j->H ? j->H : bottom, 0, 0, o0, os};
    q.pt = q.i0 - top;
    q.pb = bottom - q.i1;
    return q;
}

/* the piece's plain layouts: its input rows inside x, its weight rows [os, C, KH, KW] and bias [os],
 * its output rows and channels inside y (the strides of the whole tensors) */
static int cv_plain(const cv_job *j, const cv_piece_geom *q, dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei, dnnl_memory_desc_t *bias,
                    dnnl_memory_desc_t *dst)
{
    dnnl_dims_t sd = {q->nb, j->C, q->i1 - q->i0, j->W}, ss = {j->C * j->H * j->W, j->H * j->W, j->W, 1};
    dnnl_dims_t wd = {q->os, j->C, j->KH, j->KW}, bd = {q->os}, dd = {q->nb, q->os, q->h1 - q->h0, j->WO};
    dnnl_dims_t ds = {j->O * j->HO * j->WO, j->HO * j->WO, j->WO, 1};
    return D.dnnl_memory_desc_init_by_strides(src, 4, sd, dnnl_f32, ss) == dnnl_success &&
           D.dnnl_memory_desc_init_by_tag(wei, 4, wd, dnnl_f32, dnnl_oihw) == dnnl_success &&
           D.dnnl_memory_desc_init_by_tag(bias, 1, bd, dnnl_f32, dnnl_a) == dnnl_success &&
           D.dnnl_memory_desc_init_by_strides(dst, 4, dd, dnnl_f32, ds) == dnnl_success;
}

static int build_conv(prim *e, const void *arg)
{
    const cv_ctx *c = arg;
    const cv_job *j = c->j;
    const cv_piece_geom *q = c->q;
    dnnl_memory_desc_t src, wei, bias, dst, asrc, awei, adst;
    dnnl_dims_t sd = {q->nb, j->C, q->i1 - q->i0, j->W}, wd = {q->os, j->C, j->KH, j->KW}, dd = {q->nb, q->os, q->h1 - q->h0, j->WO};
    dnnl_dims_t st = {j->s[0], j->s[1]}, dil = {j->d[0] - 1, j->d[1] - 1}, pl = {q->pt, j->p[1]}, pr = {q->pb, j->p[1]};
    dnnl_convolution_desc_t op;
    dnnl_primitive_desc_t pd;
    if (!cv_plain(j, q, &src, &wei, &bias, &dst) ||
        D.dnnl_memory_desc_init_by_tag(&asrc, 4, sd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_memory_desc_init_by_tag(&awei, 4, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_memory_desc_init_by_tag(&adst, 4, dd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_dilated_convolution_forward_desc_init(&op, dnnl_forward_inference, dnnl_convolution_direct, &asrc, &awei,
                                                     j->bias ? &bias : NULL, &adst, st, dil, pl, pr) != dnnl_success ||
        !make_primitive(&op, &e->p, &pd))
        return 0;
    int ok = *impl_of(pd) && !strstr(impl_of(pd), "gemm");
    e->scratch_bytes = scratch_of(pd);
    e->bsrc = *D.dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    e->bwei = *D.dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    e->bdst = *D.dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    D.dnnl_primitive_desc_destroy(pd);
    if (ok && !D.dnnl_memory_desc_equal(&src, &e->bsrc)) ok = make_reorder(&src, &e->bsrc, &e->to_src, &e->scratch_bytes);
    return ok && make_reorder(&e->bdst, &dst, &e->from_dst, &e->scratch_bytes);
}

/* the weight in a primitive's layout (the entry holds only `packed`); copies of an older version of
 * the same storage are dropped (called under cache_lock) */
static int build_conv_w(prim *e, const void *arg)
{
    const cv_ctx *c = arg;
    const cv_job *j = c->j;
    for (int i = 0; i < cache_used; i++) {
        prim *o = &cache[i];
        if (o != e && o->key[0] == KIND_CONV_W && o->key[1] == e->key[1] && o->key[2] != e->key[2] && o->refs == 0) prim_forget(o);
    }
    dnnl_memory_desc_t src, wei, bias, dst;
    if (!cv_plain(j, c->q, &src, &wei, &bias, &dst)) return 0;
    e->bwei = c->shape->bwei;
    return pack_weight(e, &wei, (const char *)j->call->inputs[1]->data + c->q->o0 * j->C * j->KH * j->KW * 4);
}

/* The copies between a piece's NCHW rows (a strided view of x or y) and the primitive's layout, when
 * that layout blocks the channels alone (nChw8c, nChw16c, or plain): oneDNN's reorders take a
 * strided view to its reference kernel, 1 GB/s here against 10 for these loops. b: the channel
 * block (1 for plain); 0 for any other layout (oneDNN's reorders then). */
static int64_t chan_block(const dnnl_memory_desc_t *md)
{
    const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
    if (md->format_kind != dnnl_blocked || md->ndims != 4 || md->data_type != dnnl_f32 || md->padded_dims[0] != md->dims[0] ||
        md->padded_dims[2] != md->dims[2] || md->padded_dims[3] != md->dims[3])
        return 0;
    if (bd->inner_nblks == 0) return md->padded_dims[1] == md->dims[1] ? 1 : 0;
    return bd->inner_nblks == 1 && bd->inner_idxs[0] == 1 && md->padded_dims[1] % bd->inner_blks[0] == 0 ? bd->inner_blks[0] : 0;
}

#if defined(__x86_64__)
#include <immintrin.h>

/* r[0..7] (8 floats each) transposed in place */
__attribute__((target(CPU_TARGET_AVX2))) static inline void transpose8(__m256 *r)
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]), t2 = _mm256_unpacklo_ps(r[2], r[3]);
    __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]), t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee), u2 = _mm256_shuffle_ps(t1, t3, 0x44);
    __m256 u3 = _mm256_shuffle_ps(t1, t3, 0xee), u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* one row of 8 channels: plain rows p[k] + w (k < nc; the rest zeros) into pixels of stride ps, or back */
__attribute__((target(CPU_TARGET_AVX2))) static void rows_to_pixels8(const float *const *p, int nc, float *d, int64_t ps, int64_t W)
{
    int64_t w = 0;
    for (; w + 8 <= W; w += 8) {
        __m256 r[8];
        for (int k = 0; k < 8; k++) r[k] = k < nc ? _mm256_loadu_ps(p[k] + w) : _mm256_setzero_ps();
        transpose8(r);
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(d + (w + i) * ps, r[i]);
    }
    for (; w < W; w++)
        for (int k = 0; k < 8; k++) d[w * ps + k] = k < nc ? p[k][w] : 0;
}

__attribute__((target(CPU_TARGET_AVX2))) static void pixels_to_rows8(const float *s, int64_t ps, float *const *p, int nc, int64_t W, int relu)
{
    int64_t w = 0;
    __m256 zero = _mm256_setzero_ps();
    for (; w + 8 <= W; w += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + (w + i) * ps);
        transpose8(r);
        for (int k = 0; k < nc; k++) _mm256_storeu_ps(p[k] + w, relu ? _mm256_max_ps(zero, r[k]) : r[k]);   /* NaN kept */
    }
    for (; w < W; w++)
        for (int k = 0; k < nc; k++) { float v = s[w * ps + k]; p[k][w] = relu && v < 0 ? 0 : v; }
}
#define HAVE_TRANSPOSE8 1
#else
#define HAVE_TRANSPOSE8 0
#endif

/* x's view [N, C, H, W] (strides xs) into the blocked md at dst; the padded channels get zeros */
static void cv_to_blocked(const float *x, const int64_t *xs, const dnnl_memory_desc_t *md, float *dst)
{
    int64_t b = chan_block(md), N = md->dims[0], C = md->dims[1], H = md->dims[2], W = md->dims[3];
    const dnnl_dim_t *st = md->format_desc.blocking.strides;
    int fast = HAVE_TRANSPOSE8 && cpu_isa_level >= CPU_ISA_AVX2 && b % 8 == 0 && st[3] == b;
    dst += md->offset0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t cb = 0; cb < md->padded_dims[1] / b; cb++)
            for (int64_t h = 0; h < H; h++) {
                float *restrict d = dst + n * st[0] + cb * st[1] + h * st[2];
#if HAVE_TRANSPOSE8
                if (fast) {
                    for (int64_t k0 = 0; k0 < b; k0 += 8) {
                        const float *p[8];
                        int64_t c0 = cb * b + k0, nc = C - c0 < 0 ? 0 : C - c0 > 8 ? 8 : C - c0;
                        for (int64_t k = 0; k < nc; k++) p[k] = x + n * xs[0] + (c0 + k) * xs[1] + h * xs[2];
                        rows_to_pixels8(p, (int)nc, d + k0, st[3], W);
                    }
                    continue;
                }
#endif
                for (int64_t k = 0; k < b; k++) {
                    int64_t c = cb * b + k;
                    const float *restrict s = x + n * xs[0] + c * xs[1] + h * xs[2];
                    if (c < C) for (int64_t w = 0; w < W; w++) d[w * st[3] + k] = s[w];
                    else for (int64_t w = 0; w < W; w++) d[w * st[3] + k] = 0;
                }
            }
}

/* the blocked md at src into y's view [N, O, HO, WO] (strides ys), relu'd (NaN kept) when asked */
static void cv_from_blocked(const dnnl_memory_desc_t *md, const float *src, float *y, const int64_t *ys, int relu)
{
    int64_t b = chan_block(md), N = md->dims[0], C = md->dims[1], H = md->dims[2], W = md->dims[3];
    const dnnl_dim_t *st = md->format_desc.blocking.strides;
    int fast = HAVE_TRANSPOSE8 && cpu_isa_level >= CPU_ISA_AVX2 && b % 8 == 0 && st[3] == b;
    src += md->offset0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t cb = 0; cb < md->padded_dims[1] / b; cb++)
            for (int64_t h = 0; h < H; h++) {
                const float *restrict s = src + n * st[0] + cb * st[1] + h * st[2];
#if HAVE_TRANSPOSE8
                if (fast) {
                    for (int64_t k0 = 0; k0 < b; k0 += 8) {
                        float *p[8];
                        int64_t c0 = cb * b + k0, nc = C - c0 < 0 ? 0 : C - c0 > 8 ? 8 : C - c0;
                        for (int64_t k = 0; k < nc; k++) p[k] = y + n * ys[0] + (c0 + k) * ys[1] + h * ys[2];
                        if (nc) pixels_to_rows8(s + k0, st[3], p, (int)nc, W, relu);
                    }
                    continue;
                }
#endif
                for (int64_t k = 0; k < b && cb * b + k < C; k++) {
                    float *restrict d = y + n * ys[0] + (cb * b + k) * ys[1] + h * ys[2];
                    if (relu) for (int64_t w = 0; w < W; w++) { float v = s[w * st[3] + k]; d[w] = v < 0 ? 0 : v; }
                    else for (int64_t w = 0; w < W; w++) d[w] = s[w * st[3] + k];
                }
            }
}

/* one piece; 1 on success */
static int cv_piece(const cv_job *j, const cv_piece_geom *q)
{
    const nnr_op_call *call = j->call;
    int64_t key[KEY_LEN] = {KIND_CONV, q->nb, j->C, j->H, j->W, j->O, q->os, q->i1 - q->i0, q->pt, q->pb, j->HO, q->h1 - q->h0, j->WO, j->KH, j->KW,
                            j->s[0] | j->s[1] << 16 | j->d[0] << 32 | j->d[1] << 48, j->p[1], j->bias};
    prim tmp, wtmp;
    cv_ctx c = {j, q, NULL};
    prim *e = lookup(key, build_conv, &c, &tmp);
    if (!e) return 0;
    /* the packed weight: by the weight's values (storage, version, address) and the layout it is in
     * (bands of rows and batch sizes share it where their primitives chose the same) */
    const dnnl_memory_desc_t *md = &e->bwei;
    const dnnl_blocking_desc_t *bl = &md->format_desc.blocking;
    int64_t lk[KEY_LEN] = {md->ndims, md->data_type, md->format_kind, bl->inner_nblks, md->offset0};
    for (int d = 0; d < md->ndims && d < 4; d++) {
        lk[5 + d] = md->padded_dims[d];
        lk[9 + d] = md->format_kind == dnnl_blocked ? bl->strides[d] : 0;
    }
    for (int b = 0; b < bl->inner_nblks && b < 4 && md->format_kind == dnnl_blocked; b++) lk[13 + b] = bl->inner_blks[b] | bl->inner_idxs[b] << 32;
    lk[17] = md->extra.flags;
    int64_t layout = (int64_t)key_hash(lk);
    int64_t wkey[KEY_LEN] = {KIND_CONV_W, j->uid, j->version, (int64_t)(intptr_t)call->inputs[1]->data, (int64_t)layout, q->o0, q->os, j->C, j->KH, j->KW};
    c.shape = e;
    prim *ew = lookup(wkey, build_conv_w, &c, &wtmp);
    if (ew && !D.dnnl_memory_desc_equal(&ew->bwei, &e->bwei)) { release(ew, &wtmp); ew = NULL; }     /* (a hash collision) */
    size_t sb = e->to_src ? round64(D.dnnl_memory_desc_get_size(&e->bsrc)) : 0, db = round64(D.dnnl_memory_desc_get_size(&e->bdst));
    char *buf = ew ? thread_setup(sb + db + e->scratch_bytes + 64) : NULL;
    dnnl_memory_desc_t src, wei, bias, dst;
    int ok = buf && cv_plain(j, q, &src, &wei, &bias, &dst);
    if (ok) {
        const char *x = (const char *)call->inputs[0]->data + (q->n0 * j->C * j->H + q->i0) * j->W * 4;
        char *bdst = buf + sb, *scratch = buf + sb + db;
        char *y = (char *)call->outputs[0]->data + ((q->n0 * j->O + q->o0) * j->HO + q->h0) * j->WO * 4;
        int reorder[2] = {DNNL_ARG_FROM, DNNL_ARG_TO}, conv[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
        const dnnl_memory_desc_t *m1[2] = {&src, &e->bsrc}, *m2[4] = {&e->bsrc, &e->bwei, &e->bdst, &bias}, *m3[2] = {&e->bdst, &dst};
        void *p1[2] = {(void *)x, buf}, *p3[2] = {bdst, y};
        void *p2[4] = {e->to_src ? buf : (void *)x, ew->packed, bdst, j->bias ? (char *)call->inputs[2]->data + q->o0 * 4 : NULL};
        int64_t xs[4] = {j->C * j->H * j->W, j->H * j->W, j->W, 1}, ys[4] = {j->O * j->HO * j->WO, j->HO * j->WO, j->WO, 1};
        int own_src = chan_block(&e->bsrc) > 0, own_dst = chan_block(&e->bdst) > 0;
        if (e->to_src && own_src) cv_to_blocked((const float *)x, xs, &e->bsrc, (float *)buf);
        else if (e->to_src) ok = execute(e->to_src, 2, reorder, m1, p1, scratch, e->scratch_bytes);
        ok = ok && execute(e->p, j->bias ? 4 : 3, conv, m2, p2, scratch, e->scratch_bytes);
        if (ok && own_dst) cv_from_blocked(&e->bdst, (const float *)bdst, (float *)y, ys, j->relu);
        else if (ok) {
            ok = execute(e->from_dst, 2, reorder, m3, p3, scratch, e->scratch_bytes);
            int64_t rows = (q->h1 - q->h0) * j->WO;
            if (ok && j->relu)
                for (int64_t n = 0; n < q->nb; n++)
                    for (int64_t o = 0; o < q->os; o++) cpu_relu_inplace(NNR_F32, y + (n * j->O + o) * j->HO * j->WO * 4, rows);
        }
    }
    if (ew) release(ew, &wtmp);
    release(e, &tmp);
    return ok;
}

/* piece p: slice p of the output channels (j->unit), band p of the output rows (j->bands > 1), both
 * over the whole batch, or a run of the batch in calls of j->chunk images */
static void cv_pieces(void *arg, int64_t begin, int64_t end)
{
    cv_job *j = arg;
    for (int64_t p = begin; p < end && !j->failed; p++) {
        if (j->unit || j->bands > 1) {
            int64_t o0 = j->unit ? p * j->unit : 0, os = j->unit ? (j->O - o0 < j->unit ? j->O - o0 : j->unit) : j->O;
            int64_t h0 = j->unit ? 0 : j->HO * p / j->bands, h1 = j->unit ? j->HO : j->HO * (p + 1) / j->bands;
            cv_piece_geom q = cv_rows(j, 0, j->N, h0, h1, o0, os);
            if (!cv_piece(j, &q)) j->failed = 1;
            continue;
        }
        int64_t lo = j->N * p / j->pieces, hi = j->N * (p + 1) / j->pieces;
        for (int64_t n = lo; n < hi && !j->failed; n += j->chunk) {
            cv_piece_geom q = cv_rows(j, n, hi - n < j->chunk ? hi - n : j->chunk, 0, j->HO, 0, j->O);
            if (!cv_piece(j, &q)) j->failed = 1;
        }
    }
}

int cpu_onednn_conv_enabled = 1;   /* nnr.backends.cpu.onednn_conv = false: inference convolutions on im2col + OpenBLAS */

/* 1 when oneDNN computed the op (or Ctrl-C stopped it); 0 leaves it to the caller's path, which
 * overwrites the whole output */
int cpu_onednn_conv(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1], *y = call->outputs[0];
    const nnr_op_params *pa = call->params;
    if (!cpu_onednn_conv_enabled || !pa || pa->f[0] == 0 || x->dtype != NNR_F32 || pa->i[6] != 1 || !cpu_onednn_available()) return 0;
    cv_job j = {call, x->sizes[0], x->sizes[1], x->sizes[2], x->sizes[3], w->sizes[0], y->sizes[2], y->sizes[3], w->sizes[2], w->sizes[3],
                {pa->i[0], pa->i[1]}, {pa->i[2], pa->i[3]}, {pa->i[4], pa->i[5]}, (int64_t)pa->f[0], (int64_t)pa->f[1], 1, 1, 1, 0,
                call->n_inputs > 2, pa->i[7] == 1, 0};
    if (j.s[0] >= 1 << 16 || j.s[1] >= 1 << 16 || j.d[0] >= 1 << 15 || j.d[1] >= 1 << 15 || j.N < 1 || j.HO < 1) return 0;
    int64_t threads = cpu_pool_threads();
    if (j.N >= threads) {
        /* calls of a few images, whose blocked input and output take about 4 MiB, so that a call's
         * reorders and convolution share the cache */
        int64_t image = 4 * (((j.C + 15) & ~15) * j.H * j.W + ((j.O + 15) & ~15) * j.HO * j.WO);
        j.chunk = (4 << 20) / image > 1 ? (4 << 20) / image : 1;
        j.pieces = threads;
    } else if ((double)j.O * j.C * j.KH * j.KW > (double)j.N * (j.C * j.H * j.W + j.O * j.HO * j.WO) && j.O >= 32) {
        /* more weight than activations (the deep layers at a small batch): each thread reads only its
         * slice of the weight; bands of rows would each stream all of it */
        j.unit = ((j.O + threads - 1) / threads + 15) & ~(int64_t)15;
    } else
        j.bands = j.HO < threads ? j.HO : threads;
    int64_t pieces = j.unit ? (j.O + j.unit - 1) / j.unit : j.bands > 1 ? j.bands : j.pieces;
    int st = cpu_parallel_for(pieces, 1, cv_pieces, &j);
    if (st == NNR_ERR_INTERRUPTED) return 1;        /* the caller reports it */
    if (st != NNR_OK || j.failed) return 0;
    cpu_onednn_calls++;
    return 1;
}

/* ---- a keyed linear (LINEAR with params i[1] != 0): the weight packed once per key ---- */
typedef struct lin_job {
    const nnr_op_call *call;
    int64_t M, N, K, slices;
    int failed;
} lin_job;

/* n0, ns: the slice's columns; unit: the product's widest slice (every slice but the last; the last is
 * not wider), so that all slices of a product take the same side of the line below */
typedef struct lin_ctx { const lin_job *j; int64_t n0, ns, unit; } lin_ctx;

/* the columns [n0, n0 + ns) of y = x W^T + b: src x [M, K], weights W's rows as [K, ns], dst y's columns */
static int lin_descs(const lin_job *j, int64_t ns, dnnl_memory_desc_t *src, dnnl_memory_desc_t *wei, dnnl_memory_desc_t *bias,
                     dnnl_memory_desc_t *dst)
{
    dnnl_dims_t sd = {j->M, j->K}, ss = {j->K, 1}, wd = {j->K, ns}, ws = {1, j->K}, bd = {1, ns}, bs = {ns, 1}, dd = {j->M, ns}, ds = {j->N, 1};
    return D.dnnl_memory_desc_init_by_strides(src, 2, sd, dnnl_f32, ss) == dnnl_success &&
           D.dnnl_memory_desc_init_by_strides(wei, 2, wd, dnnl_f32, ws) == dnnl_success &&
           D.dnnl_memory_desc_init_by_strides(bias, 2, bd, dnnl_f32, bs) == dnnl_success &&
           D.dnnl_memory_desc_init_by_strides(dst, 2, dd, dnnl_f32, ds) == dnnl_success;
}

static int build_linear(prim *e, const void *arg)
{
    const lin_ctx *c = arg;
    const lin_job *j = c->j;
    const nnr_op_call *call = j->call;
    int has_bias = call->n_inputs > 2;
    dnnl_memory_desc_t src, wei, bias, dst, any;
    dnnl_dims_t wd = {j->K, c->ns};
    dnnl_matmul_desc_t op;
    dnnl_primitive_desc_t pd;
    if (!lin_descs(j, c->ns, &src, &wei, &bias, &dst) ||
        D.dnnl_memory_desc_init_by_tag(&any, 2, wd, dnnl_f32, dnnl_format_tag_any) != dnnl_success ||
        D.dnnl_matmul_desc_init(&op, &src, &any, has_bias ? &bias : NULL, &dst) != dnnl_success || !make_primitive(&op, &e->p, &pd))
        return 0;
    /* Below AVX-512 oneDNN 2.6's matmul is its jit sgemm (brgemm needs AVX-512), which repacks the weight at
     * every call, as OpenBLAS does. Measured on an AVX2 EPYC at 2 threads, it beat OpenBLAS on slices of up
     * to 256 columns (the mlp's 784 -> 512 and 512 -> 256 at 256 rows: 114-132 GFLOP/s against 84-144, the
     * mlp's inference at batch 256 118-142k samples/s against 75-125k) and lost on wider ones (the LSTM's
     * 512 -> 2048 step product, slices of 1024 columns: 55-73 against 87-134; 256 -> 1024: 78-85 against
     * 77-121), so a product of wider slices is declined there, all its slices alike (and keeps no copy of
     * the weight) */
    int ok = *impl_of(pd) && (strstr(impl_of(pd), "brg") || c->unit <= 256);
    e->scratch_bytes = scratch_of(pd);
    e->bwei = *D.dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    D.dnnl_primitive_desc_destroy(pd);
    return ok && pack_weight(e, &wei, (const char *)call->inputs[1]->data + c->n0 * j->K * 4);
}

static void lin_slices(void *arg, int64_t begin, int64_t end)
{
    lin_job *j = arg;
    const nnr_op_call *call = j->call;
    const nnr_tensor_desc *w = call->inputs[1];
    int has_bias = call->n_inputs > 2;
    for (int64_t s = begin; s < end && !j->failed; s++) {
        int64_t unit = (j->N / j->slices + 15) & ~(int64_t)15, n0 = s * unit, ns = s == j->slices - 1 ? j->N - n0 : unit;
        if (ns <= 0) continue;
        int64_t key[KEY_LEN] = {KIND_LINEAR, s, j->slices, j->M, j->N, j->K, call->params->i[1], call->params->i[2],
                                (int64_t)(intptr_t)w->data, has_bias};
        lin_ctx c = {j, n0, ns, unit};
        prim tmp;
        prim *e = lookup(key, build_linear, &c, &tmp);
        char *scratch = e ? thread_setup(e->scratch_bytes + 64) : NULL;
        dnnl_memory_desc_t src, wei, bias, dst;
        int ok = scratch && lin_descs(j, ns, &src, &wei, &bias, &dst);
        if (ok) {
            int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
            const dnnl_memory_desc_t *mds[4] = {&src, &e->bwei, &dst, &bias};
            void *ptrs[4] = {call->inputs[0]->data, e->packed, (float *)call->outputs[0]->data + n0,
                             has_bias ? (float *)call->inputs[2]->data + n0 : NULL};
            ok = execute(e->p, has_bias ? 4 : 3, args, mds, ptrs, scratch, e->scratch_bytes);
        }
        if (e) release(e, &tmp);
        if (!ok) j->failed = 1;
    }
}

int cpu_onednn_linear(const nnr_op_call *call)
{
    const nnr_tensor_desc *x = call->inputs[0], *w = call->inputs[1];
    if (x->dtype != NNR_F32 || !call->params || call->params->i[1] == 0 || (call->params->i[0] != 0 && call->params->i[0] != 1)) return 0;
    lin_job j = {call, x->sizes[0], w->sizes[0], w->sizes[1], 1, 0};
    /* allow_bf16's products (bf16.c) are taken on the gemm path, as for every other f32 gemm */
    if (j.M < 1 || j.M > 256 || j.K < 1 || j.N < 16 || cpu_bf16_sgemm_applies(j.M, j.N, j.K) || !cpu_onednn_available()) return 0;
    int threads = cpu_pool_threads();
    j.slices = j.N / 64 < threads ? (j.N / 64 > 0 ? j.N / 64 : 1) : threads;
    int st = cpu_parallel_for(j.slices, 1, lin_slices, &j);
    if (st == NNR_ERR_INTERRUPTED) return 1;
    if (st != NNR_OK || j.failed) return 0;
    cpu_onednn_calls++;
    return 1;
}

#endif
