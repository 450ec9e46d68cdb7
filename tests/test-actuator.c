/* SPDX-License-Identifier: Apache-2.0 */
/* The actuator's rules, one table row each: a VM layout and observation in, the plan out. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <inttypes.h>
#include <string.h>
#include <cmocka.h>

#include "actuator.h"

#define SEC UINT64_C(1000000)
#define B (2 * MIB)   /* virtio-mem block */

/* base 512 MiB, region 3.5 GiB, min 768 MiB; plugged/requested/actual per case. */
#define VM(p, r, a) { .base = 512 * MIB, .region = 3584 * MIB, .block = B, .min = 768 * MIB, .plugged = (p), \
                     .requested = (r), .balloon_actual = (a), .balloon = true }
#define VMM(p, r, a, m) { .base = 512 * MIB, .region = 3584 * MIB, .block = B, .min = (m), .plugged = (p), \
                          .requested = (r), .balloon_actual = (a), .balloon = true }
static struct actuator_vm vm_of(uint64_t plugged, uint64_t requested, uint64_t actual) {
        return (struct actuator_vm) VM(plugged, requested, actual);
}

static void test_plan_table(void **state) {
        static const struct {
                const char *what;
                struct actuator_vm vm;
                uint64_t target;
                struct actuator_state st;
                bool set_req;
                uint64_t req;
                bool set_value;
                uint64_t value;
                enum actuator_reason reason;
        } cases[] = {
                { "growth plugs first; the balloon holds while blocks come",
                  VM(0, 0, 512 * MIB), 2 * GIB, {}, true, 1536 * MIB, false, 0, ACTUATOR_PLUG },
                { "the plug is in flight: nothing resent",
                  VM(512 * MIB, 1536 * MIB, 512 * MIB), 2 * GIB, { .prev_plugged = 0 }, false, 0, false, 0, ACTUATOR_PLUG },
                { "plugged: at the target, the balloon already at base",
                  VM(1536 * MIB, 1536 * MIB, 512 * MIB), 2 * GIB, { .prev_plugged = 1536 * MIB, .sent_value = 512 * MIB },
                  false, 0, false, 0, ACTUATOR_STEADY },
                { "a target off the block grid: one more block, the balloon takes the remainder",
                  VM(0, 0, 512 * MIB), 2 * GIB + MIB, {}, true, 1538 * MIB, false, 0, ACTUATOR_PLUG },
                { "... and once plugged the balloon inflates by the remainder",
                  VM(1538 * MIB, 1538 * MIB, 512 * MIB), 2 * GIB + MIB, { .prev_plugged = 1538 * MIB },
                  false, 0, true, 511 * MIB, ACTUATOR_BALLOON },
                { "growth with an inflated balloon: deflating is growth too, done at once",
                  VM(0, 0, 300 * MIB), 1 * GIB, {}, true, 512 * MIB, true, 512 * MIB, ACTUATOR_PLUG },
                { "reclaim unplugs whole blocks; the balloon waits",
                  VM(1536 * MIB, 1536 * MIB, 512 * MIB), GIB, { .prev_plugged = 1536 * MIB, .sent_value = 512 * MIB },
                  true, 512 * MIB, false, 0, ACTUATOR_UNPLUG },
                { "reclaim below base: everything unplugged, then the balloon",
                  VMM(0, 0, 512 * MIB, 256 * MIB), 400 * MIB, { .sent_value = 512 * MIB }, false, 0, true, 400 * MIB, ACTUATOR_BALLOON },
                { "an inflated balloon gives back ahead of the blocks, 16 MiB a step (min holds, no overshoot)",
                  VM(1536 * MIB, 1536 * MIB, 256 * MIB), GIB, { .prev_plugged = 1536 * MIB },
                  true, 1520 * MIB, true, 272 * MIB, ACTUATOR_DEFLATE_FIRST },
                { "the balloon value never goes below min − plugged (a target below min is held at it)",
                  VMM(0, 0, 512 * MIB, 400 * MIB), 300 * MIB, {}, false, 0, true, 400 * MIB, ACTUATOR_BALLOON },
                { "a guest reset: plugged fell with the request unchanged; the value is sent again",
                  VM(0, 1536 * MIB, 512 * MIB), 1800 * MIB, { .prev_plugged = 1536 * MIB, .sent_value = 264 * MIB },
                  true, 1288 * MIB, false, 0, ACTUATOR_GUEST_RESET },
        };
        struct actuator_tunables t;

        actuator_tunables_default(&t);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct actuator_plan p;
                assert_int_equal(actuator_plan(&t, &cases[i].vm, cases[i].target, 100 * SEC, &cases[i].st, &p), 0);
                if (p.set_requested != cases[i].set_req || (p.set_requested && p.requested != cases[i].req) ||
                    p.set_value != cases[i].set_value || (p.set_value && p.value != cases[i].value) ||
                    p.reason != cases[i].reason)
                        fail_msg("case %zu (%s): requested %d %" PRIu64 " MiB, value %d %" PRIu64 " MiB, reason %s (%s)", i,
                                 cases[i].what, p.set_requested, p.requested / MIB, p.set_value, p.value / MIB,
                                 actuator_reason_to_string(p.reason), p.why);
                /* Never below the minimum once everything settles: plugged wanted + value. */
                uint64_t plugged = p.set_requested ? p.requested : cases[i].vm.requested;
                uint64_t value = p.set_value ? p.value : p.state.sent_value;
                if (value && plugged + value < cases[i].vm.min)
                        fail_msg("case %zu (%s): settles at %" PRIu64 " MiB, below min", i, cases[i].what,
                                 (plugged + value) / MIB);
        }
}

/* An unplug that stalls falls back to the balloon, is retried, and the balloon gives back first. */
static void test_stall_fallback_retry(void **state) {
        struct actuator_tunables t;
        struct actuator_state st = { .prev_plugged = 1536 * MIB, .sent_value = 512 * MIB };
        struct actuator_vm vm = vm_of(1536 * MIB, 1536 * MIB, 512 * MIB);
        struct actuator_plan p;

        actuator_tunables_default(&t);
        assert_int_equal(actuator_plan(&t, &vm, GIB, 10 * SEC, &st, &p), 0);
        assert_true(p.set_requested);
        assert_int_equal(p.requested, 512 * MIB);
        vm.requested = 512 * MIB;
        /* Some progress at first ... */
        vm.plugged = 1400 * MIB;
        assert_int_equal(actuator_plan(&t, &vm, GIB, 11 * SEC, &p.state, &p), 0);
        assert_int_equal(p.reason, ACTUATOR_UNPLUG);
        assert_false(p.stalled);
        /* ... then none for 4.9 s: still waiting. */
        assert_int_equal(actuator_plan(&t, &vm, GIB, 15 * SEC + 900000, &p.state, &p), 0);
        assert_false(p.stalled);
        /* 5 s: stalled. The request is set back to what is plugged; the balloon reclaims all. */
        assert_int_equal(actuator_plan(&t, &vm, GIB, 16 * SEC, &p.state, &p), 0);
        assert_true(p.stalled);
        assert_int_equal(p.reason, ACTUATOR_UNPLUG_STALLED);
        assert_true(p.set_requested);
        assert_int_equal(p.requested, 1400 * MIB);
        assert_true(p.set_value);
        assert_int_equal(p.value, 128 * MIB);   /* 1 GiB − 1400 MiB < 0: the base floor */
        assert_non_null(strstr(p.why, "did not release"));
        vm.requested = 1400 * MIB;
        vm.balloon_actual = 128 * MIB;
        /* Held while stalled: nothing new sent. */
        assert_int_equal(actuator_plan(&t, &vm, GIB, 40 * SEC, &p.state, &p), 0);
        assert_true(p.stalled);
        assert_false(p.set_requested);
        assert_false(p.set_value);
        /* After the retry period: unplug again, the balloon giving back ahead of the blocks. */
        assert_int_equal(actuator_plan(&t, &vm, GIB, 76 * SEC, &p.state, &p), 0);
        assert_false(p.stalled);
        assert_true(p.set_requested);
        assert_int_equal(p.requested, 1384 * MIB);
        assert_true(p.set_value);
        assert_int_equal(p.value, 144 * MIB);
        assert_int_equal(p.reason, ACTUATOR_DEFLATE_FIRST);
        /* Growth during a stall ends it. */
        struct actuator_state stalled = { .prev_plugged = 1400 * MIB, .unplug_best = 1400 * MIB,
                                          .stalled_since_usec = 16 * SEC, .sent_value = 128 * MIB };
        assert_int_equal(actuator_plan(&t, &vm, 3 * GIB, 17 * SEC, &stalled, &p), 0);
        assert_false(p.stalled);
        assert_int_equal(p.state.stalled_since_usec, 0);
        assert_int_equal(p.requested, 2560 * MIB);
}

static void test_min_holds_while_unplugging(void **state) {
        /* Simulated: plugged goes down one step at a time; at every step size ≥ target ≥ min. */
        struct actuator_tunables t;
        struct actuator_state st = {};
        struct actuator_vm vm = vm_of(3 * GIB, 3 * GIB, 400 * MIB);
        struct actuator_plan p;
        uint64_t target = 768 * MIB, sent_value = 400 * MIB;

        actuator_tunables_default(&t);
        for (int step = 0; step < 60; step++) {
                assert_int_equal(actuator_plan(&t, &vm, target, (uint64_t) step * SEC, &st, &p), 0);
                st = p.state;
                if (p.set_requested)
                        vm.requested = p.requested;
                if (p.set_value)
                        sent_value = p.value;
                vm.balloon_actual = sent_value;    /* the balloon gets there at once here */
                if (vm.plugged > vm.requested)
                        vm.plugged = vm.plugged - vm.requested > 256 * MIB ? vm.plugged - 256 * MIB : vm.requested;
                if (vm.plugged + vm.balloon_actual < vm.min)
                        fail_msg("step %d: size %" PRIu64 " MiB below min", step, (vm.plugged + vm.balloon_actual) / MIB);
                /* Never above where it started plus one step ahead: no overshoot the policy would
                 * take for an outside change. */
                if (vm.plugged + vm.balloon_actual > 3 * GIB + 400 * MIB + 16 * MIB)
                        fail_msg("step %d: size %" PRIu64 " MiB overshoots", step, (vm.plugged + vm.balloon_actual) / MIB);
        }
        assert_int_equal(vm.plugged, 256 * MIB);
        assert_int_equal(vm.plugged + vm.balloon_actual, target);
}

/* A retried unplug after a stall, at the target: the balloon gives back as blocks go. Every
 * transient (balloon first, then the unplug) stays within [target, target + 16 MiB]. */
static void test_retry_stays_in_band(void **state) {
        struct actuator_tunables t;
        uint64_t target = 1600 * MIB;
        struct actuator_vm vm = vm_of(1400 * MIB, 1400 * MIB, 200 * MIB);
        struct actuator_state st = { .prev_plugged = 1400 * MIB, .unplug_best = 1400 * MIB,
                                     .stalled_since_usec = 1 * SEC, .sent_value = 200 * MIB };
        struct actuator_plan p;
        int step;

        actuator_tunables_default(&t);
        for (step = 0; step < 100 && vm.plugged != 1088 * MIB; step++) {
                assert_int_equal(actuator_plan(&t, &vm, target, 100 * SEC + (uint64_t) step * SEC, &st, &p), 0);
                st = p.state;
                if (p.set_value)
                        vm.balloon_actual = p.value;
                if (vm.plugged + vm.balloon_actual > target + 16 * MIB || vm.plugged + vm.balloon_actual < target)
                        fail_msg("step %d: size %" PRIu64 " MiB after the balloon", step, (vm.plugged + vm.balloon_actual) / MIB);
                if (p.set_requested)
                        vm.requested = p.requested;
                vm.plugged = vm.requested < vm.plugged ? vm.requested : vm.plugged;
                if (vm.plugged + vm.balloon_actual < target)
                        fail_msg("step %d: size %" PRIu64 " MiB after the unplug", step, (vm.plugged + vm.balloon_actual) / MIB);
        }
        assert_int_equal(vm.plugged, 1088 * MIB);
        assert_int_equal(vm.plugged + vm.balloon_actual, target);
        assert_true(step < 40);   /* 312 MiB at 16 MiB a step: 20 steps */
}

static void test_invalid(void **state) {
        struct actuator_tunables t;
        struct actuator_vm vm = vm_of(0, 0, 512 * MIB);
        struct actuator_plan p;

        actuator_tunables_default(&t);
        assert_int_equal(actuator_plan(&t, &vm, 0, 0, NULL, &p), -EINVAL);
        vm.block = 3 * MIB;
        assert_int_equal(actuator_plan(&t, &vm, GIB, 0, NULL, &p), -EINVAL);
        vm.block = 0;
        assert_int_equal(actuator_plan(&t, &vm, GIB, 0, NULL, &p), -EINVAL);
        assert_string_equal(actuator_reason_to_string(ACTUATOR_UNPLUG_STALLED), "unplug-stalled");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_plan_table),
                cmocka_unit_test(test_stall_fallback_retry),
                cmocka_unit_test(test_min_holds_while_unplugging),
                cmocka_unit_test(test_retry_stays_in_band),
                cmocka_unit_test(test_invalid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
