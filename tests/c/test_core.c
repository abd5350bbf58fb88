/* cmocka tests of the core's C API: tensors, views, ops and errors, checked
 * against naive reference loops on random inputs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "nnr/nnr.h"
#include "autograd/internal.h"      /* the engine's own nodes, for the create_graph guard */
#include "base/internal.h"          /* nnr_plugin_knows_op */

static double urand(void) { return (double)rand() / RAND_MAX * 4.0 - 2.0; }

static nnr_tensor *random_tensor(int dtype, int ndim, const int64_t *sizes, double *values)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= sizes[i];
    for (int64_t i = 0; i < n; i++) values[i] = urand();
    return nnr_from_doubles(values, n, dtype, ndim, sizes, 0);
}

static void test_init(void **state)
{
    (void)state;
    assert_true(nnr_init() >= 1);
    assert_true(nnr_device_count() >= 1);
    assert_string_equal(nnr_device_name(0), "cpu");
    assert_int_equal(nnr_device_find("cpu"), 0);
    assert_int_equal(nnr_device_find("cpu:0"), 0);
    assert_int_equal(nnr_device_find("nope:0"), -1);
    assert_non_null(strstr(nnr_last_error(), "no backend plugin provides 'nope'"));
    assert_int_equal(nnr_device_find("cpu:x"), -1);
}

static void test_promotion(void **state)
{
    (void)state;
    assert_int_equal(nnr_promote_types(NNR_I32, NNR_F32), NNR_F32);
    assert_int_equal(nnr_promote_types(NNR_BOOL, NNR_U8), NNR_U8);
    assert_int_equal(nnr_promote_types(NNR_U8, NNR_I8), NNR_I32);
    assert_int_equal(nnr_promote_types(NNR_F16, NNR_BF16), NNR_F32);
    assert_int_equal(nnr_promote_types(NNR_I64, NNR_F16), NNR_F16);
    assert_int_equal(nnr_promote_types(NNR_F64, NNR_F32), NNR_F64);
}

static void test_views_share_storage(void **state)
{
    (void)state;
    int64_t sizes[2] = {3, 4};
    nnr_tensor *t = nnr_arange(0, 12, 1, NNR_F64, 0);
    nnr_tensor *m = nnr_view(t, 2, sizes);
    assert_non_null(m);
    assert_true(nnr_tensor_same_storage(t, m));
    nnr_tensor *tr = nnr_transpose(m, 0, 1);
    assert_int_equal(nnr_tensor_size(tr, 0), 4);
    assert_int_equal(nnr_tensor_stride(tr, 0), 1);
    assert_false(nnr_tensor_is_contiguous(tr));
    int64_t idx[2] = {3, 2};
    double v;
    assert_int_equal(nnr_get(tr, idx, &v), 0);
    assert_true(v == 2 * 4 + 3);
    assert_int_equal(nnr_set(tr, idx, -1), 0);
    int64_t i11 = 11;
    assert_int_equal(nnr_get(t, &i11, &v), 0);
    assert_true(v == -1);
    int64_t flat = 12;
    assert_null(nnr_view(tr, 1, &flat));
    assert_non_null(strstr(nnr_last_error(), "view: shape [12] is incompatible"));
    nnr_tensor *r = nnr_reshape(tr, 1, &flat);
    assert_non_null(r);
    assert_false(nnr_tensor_same_storage(r, t));
    nnr_tensor_release(r);
    nnr_tensor_release(tr);
    nnr_tensor_release(m);
    nnr_tensor_release(t);
}

static void test_broadcast_add_matches_loop(void **state)
{
    (void)state;
    double av[3 * 1 * 5], bv[4 * 5];
    int64_t as[3] = {3, 1, 5}, bs[2] = {4, 5};
    nnr_tensor *a = random_tensor(NNR_F32, 3, as, av), *b = random_tensor(NNR_F32, 2, bs, bv);
    nnr_tensor *c = nnr_binary(NNR_OP_ADD, a, b);
    assert_non_null(c);
    assert_int_equal(nnr_tensor_ndim(c), 3);
    double out[60];
    assert_int_equal(nnr_to_doubles(c, out, 60), 0);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 5; k++) {
                double want = (float)av[i * 5 + k] + (float)bv[j * 5 + k];
                assert_true(fabs(out[(i * 4 + j) * 5 + k] - want) < 1e-6);
            }
    int64_t bad[1] = {4};
    nnr_tensor *d = nnr_empty(NNR_F32, 1, bad, 0);
    assert_null(nnr_binary(NNR_OP_ADD, b, d));
    assert_string_equal(nnr_last_error(), "add: shapes [4, 5] and [4] cannot broadcast (dimension 2: 5 vs 4)");
    assert_int_equal(nnr_last_status(), NNR_ERR_INVALID);
    nnr_tensor_release(a); nnr_tensor_release(b); nnr_tensor_release(c); nnr_tensor_release(d);
}

static void test_matmul_matches_loop(void **state)
{
    (void)state;
    enum { M = 17, K = 33, N = 9 };
    double av[M * K], bv[K * N], out[M * N];
    int64_t as[2] = {M, K}, bs[2] = {K, N};
    nnr_tensor *a = random_tensor(NNR_F64, 2, as, av), *b = random_tensor(NNR_F64, 2, bs, bv);
    nnr_tensor *c = nnr_matmul(a, b);
    assert_non_null(c);
    assert_int_equal(nnr_to_doubles(c, out, M * N), 0);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int p = 0; p < K; p++) s += av[i * K + p] * bv[p * N + j];
            assert_true(fabs(out[i * N + j] - s) < 1e-10);
        }
    assert_null(nnr_matmul(a, a));
    assert_string_equal(nnr_last_error(), "matmul: inner dimensions differ: [17, 33] @ [17, 33] (33 vs 17)");
    nnr_tensor_release(a); nnr_tensor_release(b); nnr_tensor_release(c);
}

static void test_reduce_and_softmax(void **state)
{
    (void)state;
    double v[6] = {1, 5, 3, 4, 2, 6};
    int64_t sizes[2] = {2, 3};
    nnr_tensor *t = nnr_from_doubles(v, 6, NNR_F64, 2, sizes, 0);
    int dim1 = 1;
    nnr_tensor *s = nnr_reduce(NNR_OP_SUM, t, 1, &dim1, 0, 0);
    double out[3];
    assert_int_equal(nnr_to_doubles(s, out, 2), 0);
    assert_true(out[0] == 9 && out[1] == 12);
    nnr_tensor *am = nnr_reduce(NNR_OP_ARGMAX, t, 1, &dim1, 0, 0);
    assert_int_equal(nnr_tensor_dtype(am), NNR_I64);
    assert_int_equal(nnr_to_doubles(am, out, 2), 0);
    assert_true(out[0] == 1 && out[1] == 2);
    nnr_tensor *sm = nnr_softmax(t, 1, 0);
    double p[6];
    assert_int_equal(nnr_to_doubles(sm, p, 6), 0);
    double z = exp(1) + exp(5) + exp(3);
    assert_true(fabs(p[1] - exp(5) / z) < 1e-12);
    nnr_tensor_release(t); nnr_tensor_release(s); nnr_tensor_release(am); nnr_tensor_release(sm);
}

static void test_casts_round_trip(void **state)
{
    (void)state;
    double v[5] = {-2.5, -1, 0, 1.75, 300};
    int64_t n = 5;
    nnr_tensor *t = nnr_from_doubles(v, 5, NNR_F64, 1, &n, 0);
    static const int dts[] = {NNR_F32, NNR_F16, NNR_BF16, NNR_I32, NNR_I64};
    for (size_t k = 0; k < sizeof dts / sizeof dts[0]; k++) {
        nnr_tensor *c = nnr_to(t, dts[k], 0);
        double out[5];
        assert_int_equal(nnr_to_doubles(c, out, 5), 0);
        for (int i = 0; i < 5; i++) {
            double want = (dts[k] == NNR_I32 || dts[k] == NNR_I64) ? trunc(v[i]) : v[i];
            assert_true(fabs(out[i] - want) <= fabs(want) * 4e-3);
        }
        nnr_tensor_release(c);
    }
    nnr_tensor *u8 = nnr_to(t, NNR_U8, 0);
    double out[5];
    nnr_to_doubles(u8, out, 5);
    assert_true(out[4] == 300 - 256);          /* integer casts wrap, like C and PyTorch */
    nnr_tensor_release(u8);
    nnr_tensor_release(t);
}

static void test_memory_accounting(void **state)
{
    (void)state;
    int64_t before = nnr_live_bytes();
    int64_t sizes[2] = {256, 1024};
    nnr_tensor *t = nnr_empty(NNR_F32, 2, sizes, 0);
    assert_true(nnr_live_bytes() - before >= 1024 * 1024);
    nnr_tensor_release(t);
    assert_int_equal(nnr_live_bytes(), before);
    assert_true(nnr_cached_bytes() >= 1024 * 1024);    /* kept for reuse */
    nnr_tensor *again = nnr_empty(NNR_F32, 2, sizes, 0);
    nnr_tensor_release(again);
    nnr_empty_cache();
    assert_int_equal(nnr_cached_bytes(), 0);
    int64_t huge[2] = {1 << 20, 1 << 22};               /* 16 TiB */
    assert_null(nnr_empty(NNR_F32, 2, huge, 0));
    assert_int_equal(nnr_last_status(), NNR_ERR_OOM);
    assert_non_null(strstr(nnr_last_error(), "out of memory"));
}

/* a node whose op did not mark its backward as built from recorded ops stops a create_graph pass
 * with its name (no op of the core is left unmarked, so the guard is checked with a node of its own) */
static int twice_backward(nnr_node *node, const nnr_tensor *g, nnr_tensor **grads)
{
    (void)node;
    grads[0] = nnr_binary_scalar(NNR_OP_MUL, g, 2, 0);
    return grads[0] ? NNR_OK : nnr_last_status();
}

static void test_create_graph_guard(void **state)
{
    (void)state;
    int64_t n = 3;
    nnr_tensor *x = nnr_full(NNR_F64, 1, &n, 1.0, 0), *y = nnr_full(NNR_F64, 1, &n, 2.0, 0), *gy = nnr_full(NNR_F64, 1, &n, 1.0, 0);
    assert_int_equal(nnr_requires_grad_(x, 1), NNR_OK);
    const nnr_tensor *in[1] = {x};
    nnr_node *node = nnr_node_new("OpaqueBackward", twice_backward, 1, in);
    assert_non_null(node);
    nnr_node_attach(y, node);
    nnr_tensor *grad = NULL;
    assert_int_not_equal(nnr_autograd_grad(1, &y, &gy, 1, &x, 1, 1, 0, &grad), NNR_OK);
    assert_non_null(strstr(nnr_last_error(), "OpaqueBackward: the backward of this op is not differentiable yet"));
    assert_null(grad);
    assert_int_equal(nnr_autograd_grad(1, &y, &gy, 1, &x, 0, 0, 0, &grad), NNR_OK);    /* a plain pass runs it */
    double v = 0;
    int64_t at = 1;
    assert_int_equal(nnr_get(grad, &at, &v), NNR_OK);
    assert_true(v == 2.0);
    nnr_tensor_release(grad);
    nnr_tensor_release(gy);
    nnr_tensor_release(y);
    nnr_tensor_release(x);
}

static void test_interrupt(void **state)
{
    (void)state;
    int64_t n = 1000;
    nnr_interrupt();
    assert_null(nnr_full(NNR_F32, 1, &n, 1.0, 0));
    assert_int_equal(nnr_last_status(), NNR_ERR_INTERRUPTED);
    assert_false(nnr_interrupt_pending());
    nnr_tensor *t = nnr_full(NNR_F32, 1, &n, 1.0, 0);
    assert_non_null(t);
    nnr_tensor_release(t);
}

/* an op reaches only plugins built against the ABI that added it, extensions as well as backends:
 * one that answers supports() by category would take a newer op for an older one */
static void test_ops_gated_by_abi(void **state)
{
    (void)state;
    nnr_plugin p;
    memset(&p, 0, sizeof p);
    p.abi_version = (1u << 16) | 9;
    assert_true(nnr_plugin_knows_op(&p, NNR_OP_ACTIVATION));
    assert_false(nnr_plugin_knows_op(&p, NNR_OP_CROSS_ENTROPY));
    assert_false(nnr_plugin_knows_op(&p, NNR_OP_CROSS_ENTROPY_GRAD));
    p.abi_version = (1u << 16) | 10;
    assert_true(nnr_plugin_knows_op(&p, NNR_OP_CROSS_ENTROPY_GRAD));
    p.abi_version = (1u << 16) | 4;
    assert_true(nnr_plugin_knows_op(&p, NNR_OP_SOFTMAX));
    assert_false(nnr_plugin_knows_op(&p, NNR_OP_SORT));
    p.abi_version = (1u << 16) | 6;
    assert_false(nnr_plugin_knows_op(&p, NNR_OP_ATTN_DECODE));
}

int main(void)
{
    srand(42);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_promotion),
        cmocka_unit_test(test_views_share_storage),
        cmocka_unit_test(test_broadcast_add_matches_loop),
        cmocka_unit_test(test_matmul_matches_loop),
        cmocka_unit_test(test_reduce_and_softmax),
        cmocka_unit_test(test_casts_round_trip),
        cmocka_unit_test(test_memory_accounting),
        cmocka_unit_test(test_interrupt),
        cmocka_unit_test(test_create_graph_guard),
        cmocka_unit_test(test_ops_gated_by_abi),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
