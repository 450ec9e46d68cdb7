/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator's model (bench/sim-model.h) and trace reader (bench/trace.h): balloon rates,
 * the inflate floor, the guest's published statistics, the OOM-event definition, and trace
 * files that do not parse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sim-model.h"
#include "trace.h"

/* One VM of 4 GiB, working set ws_mib for every one of `seconds` seconds. */
struct one {
        struct trace t;
        struct trace_vm vm;
        uint32_t ws[64];
};

static void one_init(struct one *o, uint32_t ws_mib, uint64_t init) {
        *o = (struct one) {
                .t = { .physical = 8 * GIB, .reserve = GIB, .base = GIB, .n_vms = 1, .seconds = 64 },
                .vm = { .max = 4 * GIB, .min = 512 * MIB, .shares = 1000, .cache = 0, .init = init },
        };
        for (size_t i = 0; i < 64; i++)
                o->ws[i] = ws_mib;
        o->t.vms = &o->vm;
        o->t.ws_mib = o->ws;
}

/* Rates per 0.1 s step are not whole bytes: compare within a page. */
#define assert_near(a, b) assert_true((a) + 4096 >= (b) && (b) + 4096 >= (a))

static void run_for(struct sim *s, double seconds) {
        for (unsigned k = 0; k < (unsigned) (seconds * 10 + 0.5); k++)
                sim_step(s);
}

static void test_balloon_rates(void **state) {
        struct one o;
        struct sim s;
        one_init(&o, 512, 4 * GIB);
        assert_int_equal(sim_init(&s, &o.t), 0);
        sim_set_target(&s, 0, 3 * GIB);
        run_for(&s, 1.0);
        /* Inflating at 0.5 GiB/s: half way after 1 s, there after 2 s. */
        assert_near(s.g[0].actual, 3 * GIB + 512 * MIB);
        run_for(&s, 1.0);
        assert_int_equal(s.g[0].actual, 3 * GIB);
        /* Deflating at 2 GiB/s: 1 GiB -> 3 GiB in 1 s. */
        sim_set_target(&s, 0, GIB);
        run_for(&s, 5.0);
        sim_set_target(&s, 0, 3 * GIB);
        run_for(&s, 0.5);
        assert_near(s.g[0].actual, 2 * GIB);
        run_for(&s, 0.5);
        assert_int_equal(s.g[0].actual, 3 * GIB);
        assert_int_equal(s.m.commands, 3);
        assert_int_equal(s.m.oom_events, 0);
        sim_done(&s);
}

static void test_inflate_floor_and_swap(void **state) {
        struct one o;
        struct sim s;
        /* ws 2 GiB: the balloon can push 512 MiB of it to swap, not more. */
        one_init(&o, 2048, 4 * GIB);
        assert_int_equal(sim_init(&s, &o.t), 0);
        sim_set_target(&s, 0, 512 * MIB);
        run_for(&s, 10.0);
        assert_int_equal(s.g[0].actual, SIM_KERNEL + 2 * GIB - SIM_SWAP);
        assert_int_equal(s.g[0].swapped, SIM_SWAP);
        assert_int_equal(s.g[0].available, 0);
        /* Swapping counts as pressure; a full swap is not yet an OOM event. */
        assert_true(s.m.pressure_s > 5.0);
        assert_int_equal(s.m.oom_events, 0);
        /* Published stats: what the guest saw at that moment, swap-in growing. */
        sim_publish(&s, 0);
        assert_int_equal(s.g[0].pub_available, 0);
        assert_int_equal(s.g[0].pub_total, s.g[0].actual);
        assert_true(s.g[0].pub_swap_in > 0 && s.g[0].pub_major_faults > 0);
        sim_done(&s);
}

static void test_oom_events(void **state) {
        struct one o;
        struct sim s;
        /* At 1 GiB, a working set that jumps to 2 GiB at t = 2 s exceeds usable + swap. */
        one_init(&o, 256, GIB);
        for (size_t i = 2; i < 64; i++)
                o.ws[i] = 2048;
        assert_int_equal(sim_init(&s, &o.t), 0);
        run_for(&s, 1.5);
        assert_int_equal(s.m.oom_events, 0);
        run_for(&s, 1.0);
        assert_int_equal(s.m.oom_events, 1);
        /* Still there 10 s later: the restarted service is killed again. */
        run_for(&s, 10.0);
        assert_int_equal(s.m.oom_events, 2);
        /* Given the memory, the episode ends. */
        sim_set_target(&s, 0, 3 * GIB);
        run_for(&s, 20.0);
        assert_int_equal(s.m.oom_events, 2);
        sim_done(&s);
}

static void test_host_overrun(void **state) {
        struct one o;
        struct sim s;
        /* Physical 4 GiB, base 1 GiB: a guest touching 3.5 GiB overruns the host. */
        one_init(&o, 3400, 4 * GIB);
        o.t.physical = 4 * GIB;
        assert_int_equal(sim_init(&s, &o.t), 0);
        run_for(&s, 2.0);
        assert_true(s.m.host_overrun_s > 1.9);
        assert_int_equal(sim_host_available(&s), 0);
        sim_done(&s);
}

static void test_trace_errors(void **state) {
        char path[] = "/tmp/ppn-trace-test.XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        FILE *f = fdopen(fd, "w");
        fputs("node physical_mib=8192 reserve_mib=1024 base_mib=1024\n"
              "vm name=a kind=steady max_mib=4096 min_mib=512 shares=1000 cache_mib=0 init_mib=4096\n"
              "t,a\n0,100\n1,x\n", f);
        fclose(f);
        struct trace *t = NULL;
        struct ppn_error err = {};
        assert_int_equal(trace_load(path, &t, &err), -EINVAL);
        assert_null(t);
        assert_non_null(strstr(err.msg, ":5:"));
        /* Fixed, it loads; the working set is clamped to the last second. */
        f = fopen(path, "w");
        fputs("node physical_mib=8192 reserve_mib=1024 base_mib=1024\n"
              "vm name=a kind=steady max_mib=4096 min_mib=512 shares=1000 cache_mib=0 init_mib=4096\n"
              "t,a\n0,100\n1,200\n", f);
        fclose(f);
        assert_int_equal(trace_load(path, &t, &err), 0);
        assert_int_equal(t->seconds, 2);
        assert_int_equal(trace_ws(t, 0, 99), 200 * MIB);
        trace_free(t);
        unlink(path);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_balloon_rates),
                cmocka_unit_test(test_inflate_floor_and_swap),
                cmocka_unit_test(test_oom_events),
                cmocka_unit_test(test_host_overrun),
                cmocka_unit_test(test_trace_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
