/* SPDX-License-Identifier: Apache-2.0 */
/* Pool accounting and admission: literal structs, table-driven, exact refusal messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "pool.h"

#define VM(n, mn, mx) { .name = n, .min_bytes = (mn) * MIB, .max_bytes = (mx) * MIB }

static void test_compute(void **state) {
        struct pool_node node = { 16384 * MIB, 1024 * MIB };
        struct pool_vm vms[] = {
                VM("db", 4096, 8192),
                { .name = "web", .min_bytes = 1024 * MIB, .max_bytes = 4096 * MIB, .actual_bytes = 2048 * MIB,
                  .actual_known = true },
        };
        struct pool_figures f;

        pool_compute(&node, vms, ELEMENTSOF(vms), &f);
        assert_int_equal(f.physical_bytes, 16384 * MIB);
        assert_int_equal(f.reserve_bytes, 1024 * MIB);
        assert_int_equal(f.reserved_min_bytes, 5120 * MIB);
        assert_int_equal(f.pool_available_bytes, (int64_t) (10240 * MIB));
        /* db's actual is unknown: counted at its max (8192); web at its actual (2048). */
        assert_int_equal(f.committed_bytes, 10240 * MIB);
        assert_int_equal(f.free_bytes, (int64_t) (5120 * MIB));
        assert_int_equal(f.n_vms, 2);
        assert_int_equal(f.n_actual_known, 1);
}

static void test_compute_overcommitted(void **state) {
        struct pool_node node = { 4096 * MIB, 1024 * MIB };
        struct pool_vm vms[] = { VM("a", 2048, 4096), VM("b", 2048, 4096) };
        struct pool_figures f;

        pool_compute(&node, vms, ELEMENTSOF(vms), &f);
        assert_int_equal(f.pool_available_bytes, -(int64_t) (1024 * MIB));
        assert_int_equal(f.free_bytes, -(int64_t) (5120 * MIB));
        pool_compute(&node, NULL, 0, &f);
        assert_int_equal(f.pool_available_bytes, (int64_t) (3072 * MIB));
        assert_int_equal(f.committed_bytes, 0);
}

static void test_compute_saturates(void **state) {
        struct pool_node node = { UINT64_MAX, 0 };
        struct pool_vm vms[] = { { .name = "x", .min_bytes = UINT64_MAX, .max_bytes = UINT64_MAX },
                                 { .name = "y", .min_bytes = UINT64_MAX, .max_bytes = UINT64_MAX } };
        struct pool_figures f;
        pool_compute(&node, vms, 2, &f);   /* must not overflow (UBSan checks) */
        assert_true(f.pool_available_bytes <= 0);
}

static void test_admit_table(void **state) {
        static const struct pool_vm base[] = { VM("cache", 2048, 4096), VM("db", 4096, 8192), VM("tiny", 128, 512) };
        struct pool_vm plus_web[4] = { base[0], base[1], base[2], VM("web", 2048, 4096) };
        struct pool_vm plus_small[4] = { base[0], base[1], base[2], VM("web", 1024, 4096) };
        struct pool_vm raised[3] = { VM("cache", 3200, 4096), base[1], base[2] };
        struct pool_vm lowered[3] = { VM("cache", 1024, 4096), base[1], base[2] };
        /* capacity 8192 − 1024 = 7168; Σ min = 6272; available 896 MiB */
        struct pool_node node = { 8192 * MIB, 1024 * MIB };
        struct pool_node smaller = { 7168 * MIB, 1024 * MIB };
        struct pool_node tight = { 6000 * MIB, 1024 * MIB };
        static const struct pool_node nothing = { 2048 * MIB, 1024 * MIB };
        const struct {
                const char *what;
                const struct pool_node *nb, *na;
                const struct pool_vm *before, *after;
                size_t n_before, n_after;
                int r;
                const char *msg;
        } cases[] = {
                { "admitting 'web' (min 2048 MiB)", &node, &node, base, plus_web, 3, 4, -ENOSPC,
                  "refused: admitting 'web' (min 2048 MiB) needs 2048 MiB but the pool has 896 MiB available "
                  "(short by 1152 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB, tiny 128 MiB" },
                { "admitting 'web' (min 1024 MiB)", &node, &node, base, plus_small, 3, 4, -ENOSPC,
                  "refused: admitting 'web' (min 1024 MiB) needs 1024 MiB but the pool has 896 MiB available "
                  "(short by 128 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB, tiny 128 MiB" },
                { "admitting 'web' (min 2048 MiB)", &nothing, &nothing, NULL, plus_web + 3, 0, 1, -ENOSPC,
                  "refused: admitting 'web' (min 2048 MiB) needs 2048 MiB but the pool has 1024 MiB available "
                  "(short by 1024 MiB); biggest reservations: none" },
                { "raising cache", &node, &node, base, raised, 3, 3, -ENOSPC,
                  "refused: raising cache needs 1152 MiB but the pool has 896 MiB available (short by 256 MiB); "
                  "biggest reservations: db 4096 MiB, cache 2048 MiB, tiny 128 MiB" },
                { "setting physical=7168M", &node, &smaller, base, base, 3, 3, -ENOSPC,
                  "refused: setting physical=7168M needs 1024 MiB but the pool has 896 MiB available (short by "
                  "128 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB, tiny 128 MiB" },
                /* allowed: fits exactly, lowers a minimum, removes a VM, or helps an already-short node */
                { "exact", &node, &node, base, base, 3, 3, 0, NULL },
                { "lower", &node, &node, base, lowered, 3, 3, 0, NULL },
                { "remove", &node, &node, base, base, 3, 2, 0, NULL },
                { "short node, lowering", &tight, &tight, base, lowered, 3, 3, 0, NULL },
                { "short node, adding", &tight, &tight, base, plus_web, 3, 4, -ENOSPC,
                  "refused: short node, adding needs 2048 MiB but the pool has -1296 MiB available (short by "
                  "3344 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB, tiny 128 MiB" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ppn_error e = {};
                int r = pool_admit(cases[i].nb, cases[i].before, cases[i].n_before, cases[i].na, cases[i].after,
                                   cases[i].n_after, cases[i].what, &e);
                if (r != cases[i].r)
                        fail_msg("case %zu (%s): r=%d want %d (%s)", i, cases[i].what, r, cases[i].r, e.msg);
                if (cases[i].msg)
                        assert_string_equal(e.msg, cases[i].msg);
        }
}

static void test_admit_exact_fit_zero(void **state) {
        struct pool_node node = { 3072 * MIB, 1024 * MIB };
        struct pool_vm after[] = { VM("a", 2048, 2048) };
        assert_int_equal(pool_admit(&node, NULL, 0, &node, after, 1, "x", NULL), 0);
        after[0].min_bytes += 1;
        assert_int_equal(pool_admit(&node, NULL, 0, &node, after, 1, "x", NULL), -ENOSPC);
}

static void test_format_mib(void **state) {
        char b[POOL_MIB_MAX];
        assert_string_equal(pool_format_mib(2048 * (int64_t) MIB, b, sizeof(b)), "2048 MiB");
        assert_string_equal(pool_format_mib(-512 * (int64_t) MIB, b, sizeof(b)), "-512 MiB");
        assert_string_equal(pool_format_mib(3 * (int64_t) MIB / 2, b, sizeof(b)), "1.5 MiB");
        assert_string_equal(pool_format_mib(0, b, sizeof(b)), "0 MiB");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_compute),
                cmocka_unit_test(test_compute_overcommitted),
                cmocka_unit_test(test_compute_saturates),
                cmocka_unit_test(test_admit_table),
                cmocka_unit_test(test_admit_exact_fit_zero),
                cmocka_unit_test(test_format_mib),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
