/* SPDX-License-Identifier: Apache-2.0 */
/* Adaptive sampling (settle.h): which VMs' statistics wait, for how long, and what makes them
 * due at once. Literal snapshots; times in µs on the monotonic clock, a 1 s tick. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "settle.h"

#define S USEC_PER_SEC
#define TICK S

/* Idle and settled: 2 GiB with 1.5 GiB available, balloon at its target, RSS where it was,
 * statistics read at t = 10 s with a report 1 s old. */
static struct settle_vm settled_vm(void) {
        return (struct settle_vm) {
                .steady = true, .size = 2 * GIB, .target = 2 * GIB, .available = 1536 * MIB, .rss = 900 * MIB,
                .stats_read_usec = 10 * S, .stats_age_usec = S, .size_at_ask = 2 * GIB, .rss_at_ask = 900 * MIB,
        };
}

/* Read every 3 s (3 rounds) while settled: skipped at 11 and 12 s, due at 13 s. */
static void test_interval(void **state) {
        struct settle_tunables t;
        struct settle_vm vm = settled_vm();

        settle_tunables_default(&t);
        assert_int_equal(t.interval_usec, 3 * S);
        assert_int_equal(settle_judge(&t, &vm, 10 * S, TICK), SETTLE_SKIP);
        vm.stats_age_usec = 2 * S;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_SKIP);
        vm.stats_age_usec = 3 * S;
        assert_int_equal(settle_judge(&t, &vm, 12 * S, TICK), SETTLE_SKIP);
        assert_int_equal(settle_judge(&t, &vm, 12 * S + 600000, TICK), SETTLE_DUE);  /* round jitter */
        assert_int_equal(settle_judge(&t, &vm, 13 * S, TICK), SETTLE_DUE);
        /* A 200 ms tick: due at the round closest to 3 s. */
        assert_int_equal(settle_judge(&t, &vm, 12 * S + 800000, 200000), SETTLE_SKIP);
        assert_int_equal(settle_judge(&t, &vm, 12 * S + 900000, 200000), SETTLE_DUE);
        /* Off: every round. */
        t.interval_usec = 0;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_READ);
        assert_int_equal(settle_judge(NULL, &vm, 11 * S, TICK), SETTLE_READ);
        assert_int_equal(settle_judge(&t, NULL, 11 * S, TICK), SETTLE_READ);
}

/* Whether the host's allocations since the last read could have moved the RSS to the 32 MiB
 * mark: RSS 900 MiB at the ask and at the last read, then 920 MiB. */
static void test_rss_may_move(void **state) {
        struct settle_tunables t;
        settle_tunables_default(&t);
        assert_int_equal(t.rss_move, 32 * MIB);
        assert_false(settle_rss_may_move(&t, 900 * MIB, 900 * MIB, 0));
        assert_false(settle_rss_may_move(&t, 900 * MIB, 900 * MIB, 31 * MIB));
        assert_true(settle_rss_may_move(&t, 900 * MIB, 900 * MIB, 32 * MIB));
        /* Already 20 MiB up at the last read: 11 MiB more cannot reach the mark, 12 can. */
        assert_false(settle_rss_may_move(&t, 920 * MIB, 900 * MIB, 11 * MIB));
        assert_true(settle_rss_may_move(&t, 920 * MIB, 900 * MIB, 12 * MIB));
        /* Below the ask: the bound is on rises only. */
        assert_false(settle_rss_may_move(&t, 880 * MIB, 900 * MIB, 31 * MIB));
        /* Anything unknown: it may. */
        assert_true(settle_rss_may_move(&t, 0, 900 * MIB, 0));
        assert_true(settle_rss_may_move(&t, 900 * MIB, 0, 0));
        assert_true(settle_rss_may_move(NULL, 900 * MIB, 900 * MIB, 0));
        assert_true(settle_rss_may_move(&t, UINT64_MAX, 900 * MIB, 1));
}

/* Never held until the policy would find the statistics stale (5 s): a report 4 s old is read,
 * whatever the interval. */
static void test_never_stale(void **state) {
        struct settle_tunables t;
        struct settle_vm vm = settled_vm();

        settle_tunables_default(&t);
        t.interval_usec = 4800000;      /* the largest the config allows below 5 s */
        vm.stats_age_usec = 3900000;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_SKIP);
        vm.stats_age_usec = 4 * S;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_DUE);
        vm.stats_age_usec = UINT64_MAX; /* no overflow */
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_DUE);
        t.stale_usec = 500000;          /* below the slack */
        vm.stats_age_usec = 0;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_DUE);
}

/* Each condition alone makes the statistics due at the next round. */
static void test_unsettled(void **state) {
        struct settle_tunables t;
        settle_tunables_default(&t);
        static const char *const what[] = {
                "not steady (lease, operator change, a target just applied, a hold)",
                "pressure in the last decision",
                "RSS rose by 32 MiB since the statistics were asked (a guest touching memory)",
                "RSS fell by 32 MiB",
                "RSS unknown (libvirt, QEMU gone)",
                "RSS at the ask unknown",
                "balloon moved since the statistics were asked (BALLOON_CHANGE)",
                "balloon not at its target",
                "available below 512 MiB",
                "available below 25 % of the size",
                "available unknown",
                "statistics never read",
        };
        for (size_t i = 0; i < ELEMENTSOF(what); i++) {
                struct settle_vm vm = settled_vm();
                switch (i) {
                case 0: vm.steady = false; break;
                case 1: vm.pressure = true; break;
                case 2: vm.rss += 32 * MIB; break;
                case 3: vm.rss -= 32 * MIB; break;
                case 4: vm.rss = 0; break;
                case 5: vm.rss_at_ask = 0; break;
                case 6: vm.size -= 2 * MIB; vm.target = vm.size; break;
                case 7: vm.target += 16 * MIB; break;
                case 8: vm.available = 511 * MIB; break;
                case 9: vm.size = vm.target = vm.size_at_ask = 8 * GIB; vm.available = 2 * GIB - 1; break;
                case 10: vm.available = UINT64_MAX; break;
                case 11: vm.stats_read_usec = 0; break;
                }
                if (settle_judge(&t, &vm, 11 * S, TICK) != SETTLE_READ)
                        fail_msg("%s: not read", what[i]);
        }
        /* settle_candidate(): the rule without the RSS and the size at the last ask. */
        struct settle_vm c = settled_vm();
        c.rss = c.rss_at_ask = 0;
        c.size_at_ask = 0;
        assert_true(settle_candidate(&t, &c));
        c = settled_vm();
        c.available = 100 * MIB;
        assert_false(settle_candidate(&t, &c));
        assert_false(settle_candidate(NULL, &c));
        /* Just inside each bound: still settled. */
        struct settle_vm vm = settled_vm();
        vm.rss += 32 * MIB - 1;
        vm.target += 16 * MIB - 1;
        vm.available = 512 * MIB;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_SKIP);
        vm = settled_vm();
        vm.size = vm.target = vm.size_at_ask = 8 * GIB;
        vm.available = 2 * GIB;
        assert_int_equal(settle_judge(&t, &vm, 11 * S, TICK), SETTLE_SKIP);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_interval),
                cmocka_unit_test(test_never_stale),
                cmocka_unit_test(test_rss_may_move),
                cmocka_unit_test(test_unsettled),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
