/* SPDX-License-Identifier: Apache-2.0 */
/*
 * guest-work on the host (it is a plain static program; WORK_DIR points it at a temp dir):
 * the hog really touches and frees its memory, the spinner burns CPU and reports it, and
 * misuse fails with a message. The real-VM test runs the same program inside the guest.
 * Usage: test-guest-work PATH-TO-guest-work
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <sys/wait.h>

#include "util.h"

static const char *prog;
static char work_dir[] = "/tmp/ppn-test-guest-work-XXXXXX";

/* Runs "guest-work ARGS", returns its exit status; stdout+stderr into out. */
static int gw(char *out, size_t len, const char *fmt, ...) _printf_(3, 4);
static int gw(char *out, size_t len, const char *fmt, ...) {
        char args[256], cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(args, sizeof(args), fmt, ap);
        va_end(ap);
        snprintf(cmd, sizeof(cmd), "WORK_DIR=%s %s %s 2>&1", work_dir, prog, args);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        size_t n = fread(out, 1, len - 1, p);
        out[n] = 0;
        int st = pclose(p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static long rss_kib(long pid) {
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%ld/status", pid);
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        assert_non_null(f);
        buf[fread(buf, 1, sizeof(buf) - 1, f)] = 0;
        const char *p = strstr(buf, "VmRSS:");
        assert_non_null(p);
        return strtol(p + 6, NULL, 10);
}

static void test_hog_touches_and_frees(void **state) {
        char out[1024];
        assert_int_equal(gw(out, sizeof(out), "hog h 48"), 0);
        assert_non_null(strstr(out, "hog h: holding 48 MiB"));
        assert_int_equal(gw(out, sizeof(out), "pid h"), 0);
        long pid = atol(out);
        assert_true(pid > 0);
        assert_true(rss_kib(pid) >= 48 * 1024);
        assert_int_equal(gw(out, sizeof(out), "free h"), 0);
        assert_string_equal(out, "h: freed 48 MiB\n");
        assert_true(rss_kib(pid) < 16 * 1024);
        assert_int_equal(gw(out, sizeof(out), "stop h"), 0);
        assert_string_equal(out, "h: stopped\n");
        assert_int_equal(gw(out, sizeof(out), "pid h"), 1);
        assert_int_equal(gw(out, sizeof(out), "status h"), 0);
        assert_string_equal(out, "h: stopped (exited)\n");
}

static void test_spinner_reports_cpu(void **state) {
        char out[1024];
        assert_int_equal(gw(out, sizeof(out), "spin s"), 0);
        assert_non_null(strstr(out, "spin s: spinning (pid "));
        usleep(300000);
        assert_int_equal(gw(out, sizeof(out), "free s"), 1);
        assert_non_null(strstr(out, "s is a spinner, not a hog"));
        assert_int_equal(gw(out, sizeof(out), "stop s"), 0);
        const char *cpu = strstr(out, "cpu ");
        assert_non_null(cpu);
        assert_true(strtod(cpu + 4, NULL) > 0.05);  /* 0.3 s of wall time on a shared core */
}

static void test_misuse(void **state) {
        static const struct {
                const char *args;
                int status;
                const char *says;
        } cases[] = {
                { "", 2, "usage:" },
                { "bogus x", 2, "usage:" },
                { "hog x 0", 1, "usage: hog NAME MIB" },
                { "hog x 12abc", 1, "usage: hog NAME MIB" },
                { "hog x", 1, "usage: hog NAME MIB" },
                { "stop nothing", 1, "nothing is not running" },
                { "free nothing", 1, "nothing is not running" },
                { "status nothing", 1, "no workload named nothing" },
                { "spin c --cgroup /nonexistent", 1, "cannot join cgroup /nonexistent" },
        };
        char out[1024];
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int r = gw(out, sizeof(out), "%s", cases[i].args);
                if (r != cases[i].status || !strstr(out, cases[i].says))
                        fail_msg("guest-work %s: status %d, output \"%s\"; want %d and \"%s\"",
                                 cases[i].args, r, out, cases[i].status, cases[i].says);
        }
}

static void test_one_workload_per_name(void **state) {
        char out[1024];
        assert_int_equal(gw(out, sizeof(out), "hog d 1"), 0);
        assert_int_equal(gw(out, sizeof(out), "hog d 1"), 1);
        assert_non_null(strstr(out, "d is already running"));
        assert_int_equal(gw(out, sizeof(out), "stop d"), 0);
        assert_int_equal(gw(out, sizeof(out), "hog d 1"), 0);  /* the name is free again */
        assert_int_equal(gw(out, sizeof(out), "stop d"), 0);
}

/* Polls "status NAME" until the workload has exited; returns its last line. */
static void wait_exited(const char *name, char *out, size_t len) {
        for (int i = 0; i < 500; i++) {
                assert_int_equal(gw(out, len, "status %s", name), 0);
                if (strstr(out, "(exited)"))
                        return;
                usleep(20000);
        }
        fail_msg("%s did not finish in 10 s: %s", name, out);
}

static void test_reader_reads_every_pass(void **state) {
        char out[1024], file[512], cmd[600];
        snprintf(file, sizeof(file), "%s/data", work_dir);
        snprintf(cmd, sizeof(cmd), "head -c 3145728 /dev/urandom >%s", file);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(gw(out, sizeof(out), "read r 3 50 %s", file), 0);
        assert_non_null(strstr(out, "read r: 3 passes over "));
        wait_exited("r", out, sizeof(out));
        assert_non_null(strstr(out, "r: done: busy "));
        /* Three passes of 3 MiB each, 50 ms apart: total ≥ 100 ms of pauses, busy < total. */
        long busy = atol(strstr(out, "busy ") + 5), total = atol(strstr(out, "total ") + 6);
        assert_true(total >= 100 && busy <= total);
        char log[512];
        snprintf(log, sizeof(log), "grep -c '^pass [123]: 3 MiB in ' %s/r.log | grep -qx 3", work_dir);
        assert_int_equal(system(log), 0);
        assert_int_equal(gw(out, sizeof(out), "read n 1 0 %s/none", work_dir), 1);
        assert_non_null(strstr(out, "cannot read"));
}

static void test_burst_allocates_each_time(void **state) {
        char out[1024], log[512];
        assert_int_equal(gw(out, sizeof(out), "burst b 2 20 1000 50"), 0);
        assert_non_null(strstr(out, "burst b: 2 x 20 MiB (pid "));
        long pid = atol(strstr(out, "pid ") + 4);
        /* Once the first burst is logged, its 20 MiB are touched and held for 1 s. */
        snprintf(log, sizeof(log), "grep -q '^burst 1: ' %s/b.log", work_dir);
        for (int i = 0; i < 500 && system(log) != 0; i++)
                usleep(10000);
        assert_true(rss_kib(pid) >= 20 * 1024);
        wait_exited("b", out, sizeof(out));
        assert_non_null(strstr(out, "b: done: busy "));
        long total = atol(strstr(out, "total ") + 6);
        assert_true(total >= 2050);  /* two holds of 1 s and a gap of 50 ms */
        snprintf(log, sizeof(log), "grep -c '^burst [12]: 20 MiB in ' %s/b.log | grep -qx 2", work_dir);
        assert_int_equal(system(log), 0);
        for (const char *bad = "burst x 0 1 1 1\0burst x 1 1 1\0read x 1 -1 f\0"; *bad; bad += strlen(bad) + 1) {
                assert_int_equal(gw(out, sizeof(out), "%s", bad), 1);
                assert_non_null(strstr(out, "usage: "));
        }
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", work_dir);
        return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hog_touches_and_frees),
                cmocka_unit_test(test_spinner_reports_cpu),
                cmocka_unit_test(test_misuse),
                cmocka_unit_test(test_one_workload_per_name),
                cmocka_unit_test(test_reader_reads_every_pass),
                cmocka_unit_test(test_burst_allocates_each_time),
        };
        if (argc != 2 || !mkdtemp(work_dir)) {
                fprintf(stderr, "usage: %s PATH-TO-guest-work\n", argv[0]);
                return 2;
        }
        prog = argv[1];
        return cmocka_run_group_tests(tests, NULL, teardown);
}
