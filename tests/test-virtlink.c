/* SPDX-License-Identifier: Apache-2.0 */
/* virtlink's pure parts: the cpu_shares libvirt must be given for a ledger weight on each
 * cgroup version, the inverse for import, and the import's proposed entries. The rest of
 * virtlink runs against a real libvirtd in test-libvirt.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "virtlink.h"

static void test_shares_for_weight(void **state) {
        static const struct { uint32_t weight; bool v2; uint64_t shares; } cases[] = {
                /* v1: the kernel reads cpu.shares; 1024 is v2's 100. */
                { 100, false, 1024 }, { 300, false, 3072 }, { 50, false, 512 }, { 1, false, 10 },
                { 10000, false, 102400 },
                /* v2: libvirt writes cpu_shares into cpu.weight as it is: pass the weight itself. */
                { 100, true, 100 }, { 300, true, 300 }, { 1, true, 1 }, { 10000, true, 10000 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_int_equal(virtlink_shares_for_weight(cases[i].weight, cases[i].v2), cases[i].shares);
}

static void test_weight_for_shares(void **state) {
        static const struct { uint64_t shares; bool v2; uint32_t weight; } cases[] = {
                { 1024, false, 100 }, { 3072, false, 300 }, { 2, false, 1 }, { 0, false, 1 },
                { 262144, false, 10000 }, { 1000000, false, 10000 },
                /* v2: a v1-era <shares>1024</shares> is cpu.weight 1024 there: ~10x the default. */
                { 1024, true, 1024 }, { 100, true, 100 }, { 0, true, 1 }, { 20000, true, 10000 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_int_equal(virtlink_weight_for_shares(cases[i].shares, cases[i].v2), cases[i].weight);
        /* Round trip for every weight on both versions. */
        for (uint32_t w = 1; w <= 10000; w++) {
                assert_int_equal(virtlink_weight_for_shares(virtlink_shares_for_weight(w, false), false), w);
                assert_int_equal(virtlink_weight_for_shares(virtlink_shares_for_weight(w, true), true), w);
        }
}

static void test_propose(void **state) {
        static const struct {
                struct virtlink_domain d;
                bool v2;
                const char *name;
                uint64_t min_mib, max_mib;
                uint32_t weight;
                bool half;
        } cases[] = {
                { { "web", 4096 * MIB, 2048 * MIB, true, 1024 }, false, "web", 2048, 4096, 100, false },
                { { "Web_DB 1", 4096 * MIB, 4096 * MIB, true, 2048 }, false, "web_db-1", 2048, 4096, 200, true },
                { { "small", 192 * MIB, 192 * MIB, true, 100 }, true, "small", 128, 192, 100, true },
                { { "tiny", 100 * MIB, 64 * MIB, true, 0 }, true, "tiny", 100, 100, 100, false },
                { { ".hidden", 1024 * MIB + 512, 512 * MIB + 100, true, 300 }, true, "dhidden", 512, 1024, 300, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct virtlink_proposal p;
                assert_int_equal(virtlink_propose(&cases[i].d, cases[i].v2, &p), 0);
                assert_string_equal(p.name, cases[i].name);
                assert_int_equal(p.min_bytes, cases[i].min_mib * MIB);
                assert_int_equal(p.max_bytes, cases[i].max_mib * MIB);
                assert_int_equal(p.cpu_weight, cases[i].weight);
                assert_int_equal(p.note[0] != '\0', cases[i].half);
        }
        struct virtlink_proposal p;
        struct virtlink_domain bad = { "a..b", GIB, GIB, true, 0 };
        assert_int_equal(virtlink_propose(&bad, true, &p), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_shares_for_weight),
                cmocka_unit_test(test_weight_for_shares),
                cmocka_unit_test(test_propose),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
