/* cmocka tests of the plugin registry and ABI: broken plugins are refused
 * with a reason while the rest load; a second backend (the example testdev
 * plugin) gets devices, runs its own ops, falls back to the cpu for the rest,
 * and copies across devices. Run with NNR_PLUGIN_PATH naming the test plugins. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "nnr/nnr.h"

static int find_plugin(const char *file_part)
{
    for (int i = 0; i < nnr_plugin_count(); i++)
        if (strstr(nnr_plugin_path(i), file_part)) return i;
    return -1;
}

static void expect_refused(const char *file_part, const char *reason)
{
    int i = find_plugin(file_part);
    assert_true(i >= 0);
    assert_false(nnr_plugin_loaded(i));
    if (!strstr(nnr_plugin_message(i), reason)) fail_msg("%s: '%s' lacks '%s'", file_part, nnr_plugin_message(i), reason);
}

static void test_broken_plugins_are_refused(void **state)
{
    (void)state;
    nnr_init();
    expect_refused("bad_abi", "ABI mismatch: built against ABI 99.0, this host speaks 1.x");
    expect_refused("no_copy", "backend lacks the required entry point copy()");
    expect_refused("tiny_struct", "its plugin struct is 16 bytes, smaller than any ABI 1.x plugin");
    expect_refused("no_init", "missing entry point nnr_plugin_init");
    expect_refused("probe_zero", "probe says unusable");
    expect_refused("init_fail", "init failed (status 4): no driver found");
    expect_refused("no_object", "init failed (status 0): it returned success but no plugin object");
    expect_refused("silent_fail", "init failed (status 4): the plugin gave no reason");
    expect_refused("not_a_plugin", "missing entry point nnr_plugin_probe");
    int cpu = find_plugin("libnnr_cpu");
    assert_true(cpu >= 0 && nnr_plugin_loaded(cpu));
    assert_int_equal(nnr_plugin_kind_of(cpu), NNR_PLUGIN_BACKEND);
    assert_int_equal(nnr_plugin_abi(cpu), (int)NNR_ABI_VERSION);
    /* the host backend (the cpu plugin offers the role) gives device 0, named by the plugin alone */
    assert_string_equal(nnr_device_name(0), "cpu");
    assert_true(nnr_device_host_memory(0));
    nnr_device_props props;
    assert_int_equal(nnr_device_props_of(0, &props), NNR_OK);
    assert_true(props.flags & NNR_DEVICE_HOST_MEMORY);
    assert_true(props.total_memory > 0 && props.compute_units > 0 && props.model[0]);
    int64_t free_bytes, total_bytes;
    assert_int_equal(nnr_device_memory_info(0, &free_bytes, &total_bytes), NNR_OK);
    assert_true(total_bytes > 0 && free_bytes > 0 && free_bytes <= total_bytes);
    /* an ABI 1.3 plugin with a nonzero reserved word (today's flags) and a higher probe score loads as
     * an ordinary backend: the role of host is ABI 1.4's */
    int old = find_plugin("old_host");
    assert_true(old >= 0 && nnr_plugin_loaded(old));
    assert_int_equal(nnr_plugin_abi(old), (1 << 16) | 3);
    int od = nnr_device_find("oldhost:0");
    assert_true(od > 0);
    assert_false(nnr_device_host_memory(od));
    assert_int_equal(nnr_device_props_of(od, &props), NNR_OK);
    assert_int_equal((int)props.flags, 0);
}

static void test_second_backend(void **state)
{
    (void)state;
    int d1 = nnr_device_find("testdev:1");
    assert_true(d1 > 0);
    assert_string_equal(nnr_device_type(d1), "testdev");
    assert_int_equal(nnr_device_local_index(d1), 1);
    assert_int_equal(nnr_device_find("testdev:2"), -1);
    assert_non_null(strstr(nnr_last_error(), "only 2 testdev device(s) present"));

    double v[6] = {1, -2, 3, -4, 5, -6};
    int64_t sizes[2] = {2, 3};
    nnr_tensor *host = nnr_from_doubles(v, 6, NNR_F32, 2, sizes, 0);
    nnr_tensor *a = nnr_to(host, NNR_F32, d1);             /* host -> device copy */
    assert_non_null(a);
    assert_int_equal(nnr_tensor_device(a), d1);
    assert_false(nnr_device_host_memory(d1));                 /* testdev declares no host memory: copies it is */
    assert_null(nnr_tensor_data(a));
    nnr_tensor *sum = nnr_binary(NNR_OP_ADD, a, a);          /* the plugin's own kernel */
    nnr_tensor *prod = nnr_binary(NNR_OP_MUL, a, a);         /* cpu fallback, copies inserted */
    nnr_tensor *tr = nnr_transpose(a, 0, 1);
    nnr_tensor *trc = nnr_contiguous(tr);                     /* strided copy: fallback too */
    assert_non_null(sum); assert_non_null(prod); assert_non_null(trc);
    assert_int_equal(nnr_tensor_device(prod), d1);
    double s[6], p[6], t[6];
    assert_int_equal(nnr_to_doubles(sum, s, 6), 0);          /* device -> host */
    assert_int_equal(nnr_to_doubles(prod, p, 6), 0);
    assert_int_equal(nnr_to_doubles(trc, t, 6), 0);
    for (int i = 0; i < 6; i++) {
        assert_true(s[i] == 2 * v[i]);
        assert_true(p[i] == v[i] * v[i]);
    }
    assert_true(t[1] == v[3] && t[2] == v[1]);
    /* device to device across two devices of the plugin */
    int d0 = nnr_device_find("testdev:0");
    nnr_tensor *b = nnr_to(prod, NNR_F64, d0);
    double q[6];
    assert_int_equal(nnr_to_doubles(b, q, 6), 0);
    assert_true(q[5] == 36);
    /* mixing devices in one op is an error */
    assert_null(nnr_binary(NNR_OP_ADD, a, host));
    assert_non_null(strstr(nnr_last_error(), "tensors are on different devices (testdev:1 and cpu)"));
    nnr_tensor *objs[] = {host, a, sum, prod, tr, trc, b};
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++) nnr_tensor_release(objs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broken_plugins_are_refused),
        cmocka_unit_test(test_second_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
