/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the blockstats decoder: a reply recorded from QEMU 7.2 (a virtio-blk disk on a
 * raw node over a file node), sums over devices, and every malformed reply refused with words
 * and the out-parameter untouched. vmlink's use of it runs in test-vmlink.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "blockstats.h"
#include "util.h"

/* query-blockstats from QEMU 7.2 (-blockdev file + raw, -device virtio-blk-pci), stats trimmed
 * to the members of interest and two others; rd_bytes set to what a guest had read. */
static const char recorded[] =
        "[{\"device\": \"\", \"parent\": {\"stats\": {\"wr_bytes\": 0, \"rd_bytes\": 999, \"rd_operations\": 3},"
        " \"node-name\": \"f0\", \"driver-specific\": {\"driver\": \"file\"}}, \"stats\": {\"wr_bytes\": 0,"
        " \"timed_stats\": [], \"account_invalid\": true, \"rd_bytes\": 419430400, \"rd_operations\": 3200},"
        " \"node-name\": \"disk0\", \"qdev\": \"/machine/peripheral/vd0/virtio-backend\"}]";

static int decode(const char *text, uint64_t *ret, struct ppn_error *err) {
        json_object *o = json_tokener_parse(text);
        int r;

        assert_non_null(o);
        r = blockstats_read_decode(o, ret, err);
        json_object_put(o);
        return r;
}

static void test_recorded(void **state) {
        struct ppn_error err = { 0 };
        uint64_t v = 1;

        /* The device's own counter; its file node (the backing "parent") is not counted again. */
        assert_int_equal(decode(recorded, &v, &err), 0);
        assert_int_equal(v, 419430400);
}

static void test_sum_and_empty(void **state) {
        struct ppn_error err = { 0 };
        uint64_t v = 1;

        assert_int_equal(decode("[{\"stats\": {\"rd_bytes\": 5}}, {\"stats\": {\"rd_bytes\": 7}}]", &v, &err), 0);
        assert_int_equal(v, 12);
        assert_int_equal(decode("[]", &v, &err), 0);
        assert_int_equal(v, 0);
}

static void test_malformed(void **state) {
        static const struct {
                const char *text, *words;
        } cases[] = {
                { "{}", "not an array" },
                { "[1]", "entry 0 has no stats object" },
                { "[{\"stats\": {\"rd_bytes\": 1}}, {\"device\": \"d\"}]", "entry 1 has no stats object" },
                { "[{\"stats\": {\"wr_bytes\": 1}}]", "rd_bytes is not a non-negative integer" },
                { "[{\"stats\": {\"rd_bytes\": -4}}]", "rd_bytes is not a non-negative integer" },
                { "[{\"stats\": {\"rd_bytes\": \"4\"}}]", "rd_bytes is not a non-negative integer" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ppn_error err = { 0 };
                uint64_t v = 42;
                assert_int_equal(decode(cases[i].text, &v, &err), -EBADMSG);
                assert_int_equal(v, 42);
                if (!strstr(err.msg, cases[i].words))
                        fail_msg("case %zu: \"%s\" does not say \"%s\"", i, err.msg, cases[i].words);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_recorded),
                cmocka_unit_test(test_sum_and_empty),
                cmocka_unit_test(test_malformed),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
