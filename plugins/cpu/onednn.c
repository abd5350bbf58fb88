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
int cpu_onednn_linear(const nnr_op_call *call) { (void)call; return 0; }
void cpu_onednn_thread_exit(void) {}

#else
#include <dnnl.h>

#define DNNL_FUNCS(X) \
    X(dnnl_engine_create) X(dnnl_stream_create) X(dnnl_stream_destroy) X(dnnl_memory_desc_init_by_strides) \
    X(dnnl_memory_desc_init_by_tag) X(dnnl_matmul_desc_init) X(dnnl_dilated_deconvolution_forward_desc_init) \
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
enum { CACHE_SIZE = 64, KEY_LEN = 16, KIND_MATMUL = 1, KIND_DECONV = 2, KIND_LINEAR = 3 };

typedef struct prim {
    int64_t key[KEY_LEN];
    int declined;                   /* oneDNN has only a reference kernel (or none) for it */
    int refs;                       /* calls running it now: an entry is reused only at 0 */
    uint64_t used;                  /* when it was last looked up, for least-recently-used reuse */
    dnnl_primitive_t p;             /* the matmul or deconvolution */
    dnnl_primitive_t to_src, to_wei, from_dst;   /* reorders to and from the blocked layouts (deconvolution) */
    dnnl_memory_desc_t bsrc, bwei, bdst;         /* the deconvolution's blocked layouts */
    size_t scratch_bytes;
    void *packed;                   /* a keyed linear's weight slice in the primitive's layout */
    size_t packed_bytes;
} prim;

static prim cache[CACHE_SIZE];
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
    const char *impl = NULL;
    if (st && (D.dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl || strstr(impl, "ref")))
        st = 0;
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

/* packed weights past PACKED_LIMIT: the least recently used entries that hold some and that no call
 * is running are emptied (a zero key matches nothing) */
static void trim_packed(void)
{
    while (packed_total > PACKED_LIMIT) {
        prim *lru = NULL;
        for (int i = 0; i < cache_used; i++)
            if (cache[i].packed && cache[i].refs == 0 && (!lru || cache[i].used < lru->used)) lru = &cache[i];
        if (!lru) return;
        prim_free(lru);
        memset(lru->key, 0, sizeof lru->key);
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
    pthread_mutex_lock(&cache_lock);
    prim *e = NULL;
    for (int i = 0; i < cache_used && !e; i++)
        if (memcmp(cache[i].key, key, sizeof cache[i].key) == 0) e = &cache[i];
    if (!e) {
        prim *s = slot();
        e = s ? s : tmp;
        memset(e, 0, sizeof *e);
        memcpy(e->key, key, sizeof e->key);
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

/* ---- a keyed linear (LINEAR with params i[1] != 0): the weight packed once per key ---- */
typedef struct lin_job {
    const nnr_op_call *call;
    int64_t M, N, K, slices;
    int failed;
} lin_job;

typedef struct lin_ctx { const lin_job *j; int64_t n0, ns; } lin_ctx;

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
    e->scratch_bytes = scratch_of(pd);
    e->bwei = *D.dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    D.dnnl_primitive_desc_destroy(pd);
    size_t bytes = D.dnnl_memory_desc_get_size(&e->bwei);
    dnnl_primitive_t reorder = NULL;
    size_t rs = 0;
    if (posix_memalign(&e->packed, 64, bytes ? bytes : 64)) { e->packed = NULL; return 0; }
    e->packed_bytes = bytes;
    int ok = make_reorder(&wei, &e->bwei, &reorder, &rs);
    char *scratch = ok ? thread_setup(rs + 64) : NULL;
    int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO};
    const dnnl_memory_desc_t *mds[2] = {&wei, &e->bwei};
    void *ptrs[2] = {(char *)call->inputs[1]->data + c->n0 * j->K * 4, e->packed};
    ok = ok && scratch && execute(reorder, 2, args, mds, ptrs, scratch, rs);
    if (reorder) D.dnnl_primitive_destroy(reorder);
    return ok;
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
        lin_ctx c = {j, n0, ns};
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
