/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cgroup module on real cgroup v2: boots the test guest with 1 vCPU (pure v2 once cgroup2
 * is mounted) and runs guest-cgtest in it, a static program built from src/cgroup.c. The guest
 * program checks detection (an empty /sys/fs/cgroup is unusable, a mounted cgroup2 is v2), the
 * daemon-leaf evacuation, and that weights 100/300 share the vCPU 3 ± 0.5 by cpu.stat, then
 * 1 ± 0.2 after a live change to 300/300. This side checks its exit status and re-checks the
 * ratios it prints.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "testvm.h"
#include "util.h"

static struct testvm *vm;

static int setup(void **state) {
        struct testvm_opts o = { .mem_mib = 512, .vcpus = 1 };
        return testvm_boot(&o, &vm) < 0 ? -1 : 0;
}

static int teardown(void **state) {
        vm = testvm_kill(vm);
        return 0;
}

/* Runs cmd in the guest, prints its output as TAP comments, returns the status. */
static int run(const char *cmd, unsigned timeout_ms, char **ret_out) {
        char *out = NULL;
        int r = testvm_exec(vm, cmd, timeout_ms, &out);

        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                printf("# %s\n", line);
                if (next)
                        next[-1] = '\n';
                else
                        break;
        }
        *ret_out = out;
        return r;
}

static void test_detect(void **state) {
        _cleanup_free_ char *out = NULL;
        assert_int_equal(run("guest-cgtest detect", 30000, &out), 0);
        assert_non_null(strstr(out, "no usable cpu controller under /sys/fs/cgroup"));
        assert_non_null(strstr(out, "detect: cgroup v2 at /sys/fs/cgroup/."));
}

static void test_weights_on_v2(void **state) {
        _cleanup_free_ char *out = NULL;
        double r1 = 0, r2 = 0;
        const char *res;

        /* Two 4 s windows plus settling: ~10 s of guest time; generous for a loaded host. */
        assert_int_equal(run("guest-cgtest run /sys/fs/cgroup 4", 120000, &out), 0);
        assert_non_null(strstr(out, "cpu.weight read directly: vm-a 100, vm-b 300"));
        assert_non_null(strstr(out, "cpu.weight read directly: vm-a 300, vm-b 300"));
        res = strstr(out, "RESULT ratio=");
        assert_non_null(res);
        assert_int_equal(sscanf(res, "RESULT ratio=%lf live_ratio=%lf", &r1, &r2), 2);
        if (r1 < 2.5 || r1 > 3.5 || r2 < 0.8 || r2 > 1.2)
                fail_msg("ratios %.2f and %.2f, want 3 +- 0.5 and 1 +- 0.2", r1, r2);
        assert_non_null(strstr(out, "\nPASS\n"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_detect),
                cmocka_unit_test(test_weights_on_v2),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
