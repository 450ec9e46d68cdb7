/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmlink against the fake QEMU (tests/fake-qemu.h) on a real Unix socket, in this process and
 * on the same sd-event loop: adoption after the socket appears, balloon discovery, statistics
 * enabling, sampling, the floor on targets, and QEMU going away and coming back. The fake
 * stands in for a QEMU whose balloon and guest statistics the test sets at exact moments
 * (a balloon that does not move by itself, statistics with chosen values and age), and for one
 * without a balloon device, which QEMU will not produce on demand; its replies are QEMU 7.2's
 * recorded ones. The real QEMU is exercised by test-ppnd-vm (suite vm); this runs under the
 * sanitizers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "fake-qemu.h"
#include "vmlink.h"

struct fake {
        sd_event *e;
        char dir[64], path[128];
        struct fake_qemu *q;
        sd_event_source *src;
        struct fake_qemu_vm *vm;                /* NULL while QEMU is not running */
        bool has_balloon;
        struct fake_qemu_stat_values stats;     /* what the guest reports */
        unsigned n_state_changes, n_sampled;
        enum vmlink_state last_state;
};

/* What the fake QEMU has seen and answered. */
static const struct fake_qemu_vm_state *qemu(struct fake *f) {
        return fake_qemu_vm_state(f->vm);
}

static int on_fake(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct fake *f = userdata;
        return fake_qemu_dispatch(f->q, 0) < 0 ? -EIO : 0;
}

/* QEMU starts: its QMP socket appears. A 768 MiB guest whose balloon moves only when the test
 * says so, and whose statistics are f->stats. */
static void fake_start(struct fake *f) {
        const struct fake_qemu_guest g = { .max = 768 * MIB, .no_balloon = !f->has_balloon,
                                           .balloon = FAKE_QEMU_BALLOON_HELD, .stats = FAKE_QEMU_STATS_PINNED };

        assert_int_equal(fake_qemu_add(f->q, f->path, &g, &f->vm), 0);
        fake_qemu_vm_set_stats(f->vm, &f->stats);
}

/* QEMU exits: the connection and the socket go. */
static void fake_stop(struct fake *f) {
        if (f->vm)
                fake_qemu_remove(f->vm);
        f->vm = NULL;
}

static void on_state(struct vmlink *l, enum vmlink_state old, const char *why, void *userdata) {
        struct fake *f = userdata;
        f->n_state_changes++;
        f->last_state = vmlink_get_state(l);
}

static void on_sampled(struct vmlink *l, void *userdata) {
        ((struct fake *) userdata)->n_sampled++;
}

static const struct vmlink_callbacks cbs = { .state_changed = on_state, .sampled = on_sampled };
static const struct vmlink_options opts = { .stats_interval_sec = 2, .retry_max_usec = 400000 };

/* Runs the loop until l is in state want, at most max_ms; returns the ms it took or -1. */
static long run_until_state(struct fake *f, struct vmlink *l, enum vmlink_state want, unsigned max_ms) {
        uint64_t t0 = now_usec();
        while (now_usec() - t0 < max_ms * 1000ULL) {
                if (vmlink_get_state(l) == want)
                        return (long) ((now_usec() - t0) / 1000);
                sd_event_run(f->e, 10000);
        }
        return vmlink_get_state(l) == want ? (long) max_ms : -1;
}

static int setup(void **state) {
        struct fake *f = calloc(1, sizeof(*f));

        snprintf(f->dir, sizeof(f->dir), "/tmp/test-vmlink-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/qmp.sock", f->dir);
        f->has_balloon = true;
        f->stats = (struct fake_qemu_stat_values) {
                .available = 400 * MIB, .free = 300 * MIB, .total = 768 * MIB, .major_faults = 7,
                .minor_faults = 1000, .disk_caches = UINT64_MAX, .last_update = 1795946222,
        };
        assert_int_equal(sd_event_new(&f->e), 0);
        assert_int_equal(fake_qemu_new(&f->q), 0);
        assert_int_equal(sd_event_add_io(f->e, &f->src, fake_qemu_fd(f->q), EPOLLIN, on_fake, f), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fake *f = *state;
        fake_stop(f);
        sd_event_source_disable_unref(f->src);
        fake_qemu_free(f->q);
        sd_event_unref(f->e);
        rmdir(f->dir);
        free(f);
        return 0;
}

static void test_absent_then_adopted(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;
        long ms;

        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_int_equal(vmlink_get_state(l), VMLINK_ABSENT);
        assert_int_equal(vmlink_pid(l), 0);
        assert_non_null(strstr(vmlink_why(l), "absent"));
        assert_int_equal(vmlink_sample(l, true), -ENOTCONN);
        /* Backoff grows while absent (100, 200, 400 ms ceiling)... */
        for (int i = 0; i < 60; i++)
                sd_event_run(f->e, 10000);
        /* ...and QEMU appearing is noticed within the ceiling. */
        fake_start(f);
        ms = run_until_state(f, l, VMLINK_RUNNING, 2000);
        assert_true(ms >= 0 && ms <= 600);
        /* The pid is the socket's peer: here the test process itself. */
        assert_int_equal(vmlink_pid(l), getpid());
        assert_int_equal(qemu(f)->poll_interval, 2);
        assert_true(vmlink_last(l)->balloon);
        vmlink_free(l);
}

static void test_sample_and_target(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;
        const struct vmlink_sample *x;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_int_equal(vmlink_sample(l, true), 0);
        assert_int_equal(vmlink_sample(l, true), -EBUSY);     /* one round at a time */
        for (int i = 0; i < 100 && f->n_sampled == 0; i++)
                sd_event_run(f->e, 10000);
        assert_int_equal(f->n_sampled, 1);
        x = vmlink_last(l);
        assert_int_equal(x->actual, 768 * MIB);
        assert_true(x->actual_usec > 0);
        assert_int_equal(x->available, 400 * MIB);
        assert_int_equal(x->free, 300 * MIB);
        assert_int_equal(x->total, 768 * MIB);
        assert_int_equal(x->major_faults, 7);
        assert_int_equal(x->stats_update_sec, 1795946222);
        /* Below the floor: refused, nothing sent. */
        assert_int_equal(vmlink_set_target(l, 100 * MIB, 256 * MIB), -ERANGE);
        assert_int_equal(vmlink_set_target(l, 0, 0), -EINVAL);
        assert_int_equal(vmlink_set_target(l, 512 * MIB, 256 * MIB), 0);
        for (int i = 0; i < 50 && qemu(f)->requested == 0; i++)
                sd_event_run(f->e, 10000);
        assert_int_equal(qemu(f)->requested, 512 * MIB);
        vmlink_free(l);
}

/* One sampling round; returns vmlink_sample()'s answer after the replies are in. */
static int sample_round(struct fake *f, struct vmlink *l) {
        unsigned before = f->n_sampled;
        int r = vmlink_sample(l, true);

        for (int i = 0; r == 0 && i < 100 && f->n_sampled == before; i++)
                sd_event_run(f->e, 10000);
        if (r == 0)
                assert_int_equal(f->n_sampled, before + 1);
        return r;
}

/* The guest moves its balloon and QEMU reports it (BALLOON_CHANGE). */
static void fake_balloon_change(struct fake *f, struct vmlink *l, uint64_t actual) {
        fake_qemu_vm_balloon_change(f->vm, actual);
        for (int i = 0; i < 5; i++)
                sd_event_run(f->e, 10000);
}

/* query-balloon only when QEMU's events cannot tell: after a BALLOON_CHANGE (its value may be
 * an intermediate one), while a target sent is not reached, never for a balloon at rest. The
 * statistics only once the guest's next report can be due. */
static void test_events_spare_queries(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->query_balloon, 1);
        assert_int_equal(qemu(f)->stats_read, 1);
        /* At rest: the actual is known, nothing moved it; the (old) statistics are asked again. */
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->query_balloon, 1);
        assert_int_equal(qemu(f)->stats_read, 2);
        /* The guest moved the balloon itself: the event's value at once, the truth next round. */
        fake_balloon_change(f, l, 700 * MIB);
        assert_int_equal(vmlink_last(l)->actual, 700 * MIB);
        fake_qemu_vm_set_actual(f->vm, 640 * MIB);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->query_balloon, 2);
        assert_int_equal(vmlink_last(l)->actual, 640 * MIB);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->query_balloon, 2);
        /* A target on its way is polled every round until the actual is there. */
        assert_int_equal(vmlink_set_target(l, 512 * MIB, 256 * MIB), 0);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->query_balloon, 4);
        fake_qemu_vm_set_actual(f->vm, 512 * MIB);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->query_balloon, 5);
        assert_int_equal(vmlink_last(l)->actual, 512 * MIB);
        /* Fresh statistics (interval 2 s): the next report cannot be due yet, nothing to ask. */
        f->stats.last_update = now_realtime_usec() / 1000000;
        fake_qemu_vm_set_stats(f->vm, &f->stats);
        assert_int_equal(sample_round(f, l), 0);
        assert_int_equal(qemu(f)->stats_read, 8);
        assert_int_equal(sample_round(f, l), 1);
        assert_int_equal(qemu(f)->stats_read, 8);
        assert_int_equal(qemu(f)->query_balloon, 5);
        /* A new target: an event short of it is asked again; the event that puts the balloon at
         * it is the truth, no query after it (the balloon stops at its target). */
        assert_int_equal(vmlink_set_target(l, 384 * MIB, 256 * MIB), 0);
        fake_balloon_change(f, l, 448 * MIB);
        sample_round(f, l);
        assert_int_equal(qemu(f)->query_balloon, 6);
        assert_int_equal(vmlink_last(l)->actual, 448 * MIB);
        fake_balloon_change(f, l, 384 * MIB);
        assert_int_equal(vmlink_last(l)->actual, 384 * MIB);
        sample_round(f, l);
        sample_round(f, l);
        assert_int_equal(qemu(f)->query_balloon, 6);
        /* The guest moves it again (deflate-on-oom): asked at once. */
        fake_balloon_change(f, l, 500 * MIB);
        sample_round(f, l);
        assert_int_equal(qemu(f)->query_balloon, 7);
        assert_int_equal(vmlink_last(l)->actual, 500 * MIB);
        vmlink_free(l);
}

static void test_exit_noticed_and_readopted(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;
        unsigned changes;
        long ms;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        changes = f->n_state_changes;
        fake_stop(f);
        /* EOF is seen on the next loop iteration: no polling delay. */
        ms = run_until_state(f, l, VMLINK_ABSENT, 1000);
        assert_true(ms >= 0 && ms <= 50);
        assert_int_equal(f->n_state_changes, changes + 1);
        assert_non_null(strstr(vmlink_why(l), "went away"));
        assert_int_equal(vmlink_pid(l), 0);
        assert_int_equal(vmlink_sample(l, true), -ENOTCONN);
        assert_int_equal(vmlink_set_target(l, 512 * MIB, 0), -ENOTCONN);
        /* It comes back on the same socket: adopted again, retry restarted at 100 ms. */
        fake_start(f);
        ms = run_until_state(f, l, VMLINK_RUNNING, 2000);
        assert_true(ms >= 0 && ms <= 500);
        vmlink_free(l);
}

static void test_no_balloon(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;

        f->has_balloon = false;
        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", f->path, &opts, &cbs, f, &l), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_non_null(strstr(vmlink_why(l), "no balloon device"));
        assert_int_equal(qemu(f)->poll_interval, 0);   /* nothing to enable */
        assert_int_equal(vmlink_sample(l, true), 0);
        for (int i = 0; i < 100 && f->n_sampled == 0; i++)
                sd_event_run(f->e, 10000);
        assert_false(vmlink_last(l)->balloon);
        assert_int_equal(vmlink_last(l)->actual_usec, 0);
        vmlink_free(l);
}

static void test_path_change(void **state) {
        struct fake *f = *state;
        struct vmlink *l = NULL;

        fake_start(f);
        assert_int_equal(vmlink_new(f->e, "vm1", NULL, &opts, &cbs, f, &l), 0);
        assert_int_equal(vmlink_get_state(l), VMLINK_ABSENT);
        assert_non_null(strstr(vmlink_why(l), "no QMP socket"));
        assert_int_equal(vmlink_set_path(l, f->path), 0);
        assert_true(run_until_state(f, l, VMLINK_RUNNING, 2000) >= 0);
        assert_int_equal(vmlink_set_path(l, NULL), 0);
        assert_int_equal(vmlink_get_state(l), VMLINK_ABSENT);
        vmlink_free(l);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_absent_then_adopted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sample_and_target, setup, teardown),
                cmocka_unit_test_setup_teardown(test_events_spare_queries, setup, teardown),
                cmocka_unit_test_setup_teardown(test_exit_noticed_and_readopted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_balloon, setup, teardown),
                cmocka_unit_test_setup_teardown(test_path_change, setup, teardown),
        };
        return cmocka_run_group_tests_name("vmlink", tests, NULL, NULL);
}
