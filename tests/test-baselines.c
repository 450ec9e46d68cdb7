/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's baselines against hand-computed cases from their published rules:
 * oVirt MOM (vdsm 02-balloon.policy), Proxmox VE (PVE/AutoBalloon.pm, pvestatd.pm), and the
 * rules written down in bench/baseline-{hyperv,xen,chromeos,tmo}.h.
 * Each case states the arithmetic, so a reader can check the re-implementation against the
 * original without running either.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>

#include <math.h>

#include "baseline-chromeos.h"
#include "baseline-hyperv.h"
#include "baseline-mom.h"
#include "baseline-pve.h"
#include "baseline-tmo.h"
#include "baseline-xen.h"
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

static void test_mom_matched_thresholds(void **state) {
        /* Host free 10 %: pressure under the default 20 %; with the mark at 6 % it is not, and
         * the guest grows: free share 0.2 · 0.10/0.06 = 0.333; used 900: floor 900 + 333.3. */
        struct mom_thresholds th = { .pressure = 0.06, .critical = 0.05 };
        struct mom_guest g = mg(1000, 100);
        assert_int_equal(mom_decide(0.10, &g), 0);   /* shrink rule: floor 1000 ≥ cur */
        uint64_t t = mom_decide_with(&th, 0.10, &g);
        assert_true(llabs((long long) t - (long long) (900 * MIB + MIB * 1000 / 3)) < 2);
}

static void test_pve_goal_pct(void **state) {
        /* 10 GiB, 3 GiB available, target 90 %: 9 GiB − 7 GiB = +2 GiB. */
        assert_int_equal(pve_goal_pct(10 * GIB, 3 * GIB, 90), 2 * (int64_t) GIB);
}

#define near_mib(a, b_mib) assert_true(fabs((double) (a) / MIB - (b_mib)) < 0.01)

static void test_hyperv(void **state) {
        /* want = committed · 1.2 within [min, max]. */
        struct hv_vm v = { .min = 500 * MIB, .max = 2000 * MIB, .committed = 1000 * MIB, .weight = 5000 };
        assert_int_equal(hv_want(&v, 20), 1200 * MIB);
        v.committed = 1800 * MIB;                    /* 2160 → max */
        assert_int_equal(hv_want(&v, 20), 2000 * MIB);
        v.committed = 300 * MIB;                     /* 360 → min */
        assert_int_equal(hv_want(&v, 20), 500 * MIB);
        /* Two VMs wanting 1200 and 2000: on 4000 MiB both get it. */
        struct hv_vm vs[2] = {
                { .min = 500 * MIB, .max = 2000 * MIB, .committed = 1000 * MIB, .weight = 5000 },
                { .min = 500 * MIB, .max = 2000 * MIB, .committed = 1800 * MIB, .weight = 5000 },
        };
        uint64_t t[2];
        hv_targets(vs, 2, 4000 * MIB, 20, t);
        assert_int_equal(t[0], 1200 * MIB);
        assert_int_equal(t[1], 2000 * MIB);
        /* On 2500 MiB: minimums 1000, the other 1500 split by weight × (want − min):
         * 1500 · 700/2200 = 477.27 and 1500 · 1500/2200 = 1022.73. */
        hv_targets(vs, 2, 2500 * MIB, 20, t);
        near_mib(t[0], 977.27);
        near_mib(t[1], 1522.73);
        /* Weight 0 gets only its minimum: all 1500 goes to the other (capped at its 1500). */
        vs[0].weight = 0;
        hv_targets(vs, 2, 2500 * MIB, 20, t);
        assert_int_equal(t[0], 500 * MIB);
        assert_int_equal(t[1], 2000 * MIB);
}

static void test_xen(void **state) {
        /* f = (3000 − 1500) / (1500 + 2000) = 3/7: 500 + 642.86, 1000 + 857.14. */
        uint64_t mins[2] = { 500 * MIB, 1000 * MIB }, maxes[2] = { 2000 * MIB, 3000 * MIB }, t[2];
        xen_targets(mins, maxes, 2, 3000 * MIB, t);
        near_mib(t[0], 1142.86);
        near_mib(t[1], 1857.14);
        xen_targets(mins, maxes, 2, 6000 * MIB, t);  /* f > 1 → 1: every max */
        assert_int_equal(t[0], 2000 * MIB);
        assert_int_equal(t[1], 3000 * MIB);
        xen_targets(mins, maxes, 2, 1000 * MIB, t);  /* f < 0 → 0: every min */
        assert_int_equal(t[0], 500 * MIB);
        assert_int_equal(t[1], 1000 * MIB);
}

#define S 1000000ULL

static void test_chromeos_midpoint_and_blocking(void **state) {
        /* One VM; host slack 2000 − 500 = 1500, guest slack 2400 − 400 = 2000:
         * delta = (2000 − 1500)/2 = 250 → inflate to 4096 − 250 = 3846 MiB, low priority. */
        struct cros_host h = { .now_usec = 100 * S, .available = 2000 * MIB, .critical = 500 * MIB, .n_vms = 1 };
        struct cros_vm v = { .min = 1024 * MIB, .max = 4096 * MIB, .target = 4096 * MIB, .actual = 4096 * MIB,
                             .guest_available = 2400 * MIB };
        struct cros_state st = {};
        assert_int_equal(cros_decide(&h, &v, &st), 3846 * MIB);
        assert_int_equal(st.dir, -1);
        assert_false(st.high);
        /* 30 s later, guest slack 1000 − 400 = 600 < host's 1500: delta −450, a low-priority
         * deflate: blocked for 100 s after a low-priority inflate. */
        v.target = v.actual = 3846 * MIB;
        v.guest_available = 1000 * MIB;
        h.now_usec = 130 * S;
        assert_int_equal(cros_decide(&h, &v, &st), 0);
        /* At 201 s it passes: 3846 + 450 = 4296 → capped at max. */
        h.now_usec = 201 * S;
        assert_int_equal(cros_decide(&h, &v, &st), 4096 * MIB);
        /* A guest below its critical level deflates at high priority, even when blocked. */
        struct cros_state st2 = { .resize_usec = 190 * S, .dir = -1, .high = false };
        v.guest_available = 300 * MIB;              /* slack −100: delta −800 */
        assert_int_equal(cros_decide(&h, &v, &st2), 4096 * MIB);
        assert_true(st2.high);
        /* A change of at most 1 % of max (40.96 MiB) is not made: delta 40 MiB. */
        struct cros_state st3 = {};
        v.guest_available = 1980 * MIB;             /* slack 1580, delta (1580 − 1500)/2 = 40 */
        assert_int_equal(cros_decide(&h, &v, &st3), 0);
        /* The balloon never holds more than 3/4: guest slack huge → actual ≥ 4096/4 = 1024. */
        v.guest_available = 8000 * MIB;
        assert_int_equal(cros_decide(&h, &v, &st3), 1024 * MIB);
}

static void test_chromeos_stall(void **state) {
        /* Inflating toward 3846 since t = 0; checked at 5 s with actual 4000, at 10 s actual is
         * 3990: 10 MiB in 5 s = 2 MiB/s < 15 → deflate 128 MiB: 3990 + 128 = 4118 → max 4096. */
        struct cros_host h = { .now_usec = 10 * S, .available = 2000 * MIB, .critical = 500 * MIB, .n_vms = 1 };
        struct cros_vm v = { .min = 1024 * MIB, .max = 4096 * MIB, .target = 3846 * MIB, .actual = 3990 * MIB,
                             .guest_available = 2400 * MIB };
        struct cros_state st = { .resize_usec = 1, .dir = -1, .high = false,
                                 .check_usec = 5 * S, .check_actual = 4000 * MIB };
        assert_int_equal(cros_decide(&h, &v, &st), 4096 * MIB);
        assert_true(st.high);
        /* Moving at 20 MiB/s (100 MiB in 5 s) is not a stall: the midpoint rule runs
         * (delta 250 from 3890 → 3640). */
        st = (struct cros_state) { .resize_usec = 1, .dir = -1, .check_usec = 5 * S, .check_actual = 3990 * MIB };
        v.actual = 3890 * MIB;
        assert_int_equal(cros_decide(&h, &v, &st), 3640 * MIB);
}

static void test_tmo(void **state) {
        /* Starts at actual; 5 grace ticks; the 6th probes with no stall: x = 10 ms/1 µs/10,
         * capped at max_probe: −1 % → 4096 · 0.99 = 4055.04 MiB. */
        struct tmo_state st = {};
        assert_int_equal(tmo_tick(&st, 0, 4096 * MIB, 512 * MIB, 8192 * MIB), 4096 * MIB);
        for (int k = 0; k < 5; k++)
                assert_int_equal(tmo_tick(&st, 0, 4096 * MIB, 512 * MIB, 8192 * MIB), 4096 * MIB);
        near_mib(tmo_tick(&st, 0, 4096 * MIB, 512 * MIB, 8192 * MIB), 4055.04);
        /* 40 ms of stall in one tick: (40/10/20)² = 0.04 → +4 %: 4217.24 MiB, at once. */
        near_mib(tmo_tick(&st, 40000, 4096 * MIB, 512 * MIB, 8192 * MIB), 4217.2416);
        /* 5 ms over the next interval (≤ 10 ms): the probe is (10/5/10)² · 1 % = 0.04 %. */
        for (int k = 0; k < 5; k++)
                near_mib(tmo_tick(&st, 45000, 4096 * MIB, 512 * MIB, 8192 * MIB), 4217.2416);
        near_mib(tmo_tick(&st, 45000, 4096 * MIB, 512 * MIB, 8192 * MIB), 4217.2416 * 0.9996);
        /* 400 ms: (40/20)² = 4 → capped at max_backoff 100 %: doubles, capped at max. */
        assert_int_equal(tmo_tick(&st, 445000, 4096 * MIB, 512 * MIB, 8192 * MIB), 8192 * MIB);
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
                cmocka_unit_test(test_mom_matched_thresholds),
                cmocka_unit_test(test_pve_goal_pct),
                cmocka_unit_test(test_hyperv),
                cmocka_unit_test(test_xen),
                cmocka_unit_test(test_chromeos_midpoint_and_blocking),
                cmocka_unit_test(test_chromeos_stall),
                cmocka_unit_test(test_tmo),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
