/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's baselines against hand-computed cases from their published rules:
 * oVirt MOM (vdsm 02-balloon.policy) and Proxmox VE (PVE/AutoBalloon.pm, pvestatd.pm).
 * Each case states the arithmetic, so a reader can check the re-implementation against the
 * original without running either.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "baseline-mom.h"
#include "baseline-pve.h"
#include "util.h"

static struct mom_guest mg(uint64_t cur_mib, uint64_t unused_mib) {
        return (struct mom_guest) {
                .balloon_cur = cur_mib * MIB, .balloon_min = 500 * MIB, .balloon_max = 2000 * MIB,
                .avg_cur = (double) (cur_mib * MIB), .avg_unused = (double) (unused_mib * MIB),
                .valid = true,
        };
}

static void test_mom_grow(void **state) {
        /* host free 30 %: no pressure, grow. free share = 0.2 · 0.3/0.2 = 0.3.
         * used 900: floor = 900 + 0.3 · 1000 = 1200 > 1.05 · 1000 → 1200. */
        struct mom_guest g = mg(1000, 100);
        assert_int_equal(mom_decide(0.30, &g), 1200 * MIB);
        /* used 200: floor = max(500, 200 + 300) = 500 → 5 % step: 1050. */
        g = mg(1000, 800);
        assert_int_equal(mom_decide(0.30, &g), 1050 * MIB);
        /* At 1999 of 2000 the step is capped at max: 1 MiB < 0.25 % of 1999 → no command. */
        g = mg(1999, 800);
        assert_int_equal(mom_decide(0.30, &g), 0);
}

static void test_mom_shrink(void **state) {
        /* host free 10 %: pressure. free share 0.2 · 0.1/0.2 = 0.1; used 200:
         * floor = max(500, 300) = 500; 5 % step: 950. */
        struct mom_guest g = mg(1000, 800);
        assert_int_equal(mom_decide(0.10, &g), 950 * MIB);
        /* critical 4 %: share −0.01; used 900: floor 890; step 950 ≥ floor → 950. */
        g = mg(1000, 100);
        assert_int_equal(mom_decide(0.04, &g), 950 * MIB);
        /* used 990 at 10 %: floor 1090 > cur → would grow: the shrink rule sends nothing. */
        g = mg(1000, 10);
        assert_int_equal(mom_decide(0.10, &g), 0);
}

static void test_mom_qos_and_invalid(void **state) {
        /* Below its minimum: guest_qos restores the minimum whatever the stats say. */
        struct mom_guest g = mg(400, 0);
        g.valid = false;
        assert_int_equal(mom_decide(0.10, &g), 500 * MIB);
        /* No stats: ballooning disabled for the guest. */
        g = mg(1000, 800);
        g.valid = false;
        assert_int_equal(mom_decide(0.10, &g), 0);
}

static void test_mom_history(void **state) {
        struct mom_history h = {};
        assert_true(mom_history_avg(&h) == 0);
        for (int i = 1; i <= 12; i++)
                mom_history_push(&h, i);
        /* The last 10 samples: 3..12, mean 7.5. */
        assert_true(mom_history_avg(&h) == 7.5);
}

#define M ((int64_t) MIB)

static void test_pve_goal(void **state) {
        /* 10 GiB total, 3 GiB available: used 7 GiB; 80 % of 10 GiB − 7 GiB = +1 GiB. */
        assert_int_equal(pve_goal(10 * GIB, 3 * GIB), (int64_t) GIB);
        assert_int_equal(pve_goal(10 * GIB, 1 * GIB), -(int64_t) GIB);
}

static void test_pve_grow_pressured_first(void **state) {
        /* a: no free memory (pressured), b: 1 GiB free. goal +1 GiB goes to a first:
         * desired = 512M + 1.5G = 2G, but at most 100 MiB per cycle → 1G + 100M. The second
         * pass changes nothing (progress 0), rest 900M < goal, so b is not considered. */
        struct pve_vm v[2] = {
                { .balloon = 1024 * M, .balloon_min = 512 * M, .maxmem = 4096 * M, .freemem = 0, .shares = 1000 },
                { .balloon = 1024 * M, .balloon_min = 512 * M, .maxmem = 4096 * M, .freemem = 1024 * M, .shares = 1000 },
        };
        int64_t res[2];
        assert_int_equal(pve_compute_alg1(v, 2, 1024 * M, PVE_MAXCHANGE, res), 0);
        assert_int_equal(res[0], 1124 * M);
        assert_int_equal(res[1], 0);
}

static void test_pve_shrink_free_first(void **state) {
        /* goal −1 GiB: b has free > min/4 (idlist2) and gives first: desired below min → min,
         * at most 100 MiB → 1G − 100M. a is left alone. */
        struct pve_vm v[2] = {
                { .balloon = 1024 * M, .balloon_min = 512 * M, .maxmem = 4096 * M, .freemem = 0, .shares = 1000 },
                { .balloon = 1024 * M, .balloon_min = 512 * M, .maxmem = 4096 * M, .freemem = 1024 * M, .shares = 1000 },
        };
        int64_t res[2];
        assert_int_equal(pve_compute_alg1(v, 2, -1024 * M, PVE_MAXCHANGE, res), 0);
        assert_int_equal(res[0], 0);
        assert_int_equal(res[1], 924 * M);
}

static void test_pve_deadband_and_exclusions(void **state) {
        struct pve_vm v[3] = {
                { .balloon = 1024 * M, .balloon_min = 512 * M, .maxmem = 4096 * M, .shares = 1000 },
                { .balloon = 1024 * M, .balloon_min = 512 * M, .maxmem = 4096 * M, .shares = 0 },
                { .balloon = 1024 * M, .balloon_min = 0, .maxmem = 4096 * M, .shares = 1000 },
        };
        int64_t res[3];
        /* |goal| ≤ 10 MiB: nothing. */
        assert_int_equal(pve_compute_alg1(v, 3, 10 * M, PVE_MAXCHANGE, res), 0);
        assert_int_equal(res[0] | res[1] | res[2], 0);
        /* shares 0 and no balloon minimum: never touched. */
        assert_int_equal(pve_compute_alg1(v, 3, 2048 * M, PVE_MAXCHANGE, res), 0);
        assert_int_equal(res[0], 1124 * M);
        assert_int_equal(res[1], 0);
        assert_int_equal(res[2], 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_mom_grow),
                cmocka_unit_test(test_mom_shrink),
                cmocka_unit_test(test_mom_qos_and_invalid),
                cmocka_unit_test(test_mom_history),
                cmocka_unit_test(test_pve_goal),
                cmocka_unit_test(test_pve_grow_pressured_first),
                cmocka_unit_test(test_pve_shrink_free_first),
                cmocka_unit_test(test_pve_deadband_and_exclusions),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
