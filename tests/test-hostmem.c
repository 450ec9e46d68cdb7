/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include <unistd.h>
#include <cmocka.h>

#include "hostmem.h"

#define KIB UINT64_C(1024)

static const char *fixtures(void) {
        const char *f = getenv("PPN_FIXTURES");
        return f ? f : "tests/fixtures";
}

static void fixture_path(char *buf, size_t len, const char *rel) {
        snprintf(buf, len, "%s/proc/%s", fixtures(), rel);
}

static void test_parse_meminfo_table(void **state) {
        static const struct {
                const char *in;
                int r;
                uint64_t total, available;
                bool has_available;
        } cases[] = {
                { "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\n", 0, 1000 * KIB, 600 * KIB, true },
                /* no MemAvailable (kernel < 3.14): free + buffers + cached */
                { "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n", 0, 1000 * KIB, 310 * KIB, false },
                /* no trailing newline, extra fields without kB are skipped */
                { "HugePages_Total: 0\nMemTotal: 8 kB\nMemFree: 4 kB\nMemAvailable: 6 kB", 0, 8 * KIB, 6 * KIB, true },
                /* a prefix of a key is not the key */
                { "MemTotalX: 5 kB\nMemTotal: 8 kB\nMemFree: 4 kB\n", 0, 8 * KIB, 4 * KIB, false },
                { "MemFree: 100 kB\n", -EINVAL, 0, 0, false },
                { "MemTotal: 1000 kB\n", -EINVAL, 0, 0, false },
                { "MemTotal: abc kB\nMemFree: 1 kB\n", -EINVAL, 0, 0, false },
                { "MemTotal: 1000\nMemFree: 1 kB\n", -EINVAL, 0, 0, false },
                { "MemTotal: 99999999999999999999 kB\nMemFree: 1 kB\n", -ERANGE, 0, 0, false },
                { "MemTotal: 18014398509481984 kB\nMemFree: 1 kB\n", -ERANGE, 0, 0, false },
                { "", -EINVAL, 0, 0, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct hostmem_meminfo m = { .total = 7 };
                int r = hostmem_parse_meminfo(cases[i].in, &m);
                if (r != cases[i].r)
                        fail_msg("case %zu: r = %d, want %d", i, r, cases[i].r);
                if (r < 0) {
                        assert_int_equal(m.total, 7);
                        continue;
                }
                assert_int_equal(m.total, cases[i].total);
                assert_int_equal(m.available, cases[i].available);
                assert_int_equal(m.has_available, cases[i].has_available);
        }
}

static void test_read_meminfo_fixture(void **state) {
        char path[4096];
        struct hostmem_meminfo m;
        struct ppn_error err = { 0 };

        fixture_path(path, sizeof(path), "meminfo");
        assert_int_equal(hostmem_read_meminfo(path, &m, &err), 0);
        assert_int_equal(m.total, 24684096 * KIB);
        assert_int_equal(m.free, 20376832 * KIB);
        assert_int_equal(m.available, 22353408 * KIB);
        assert_int_equal(m.buffers, 20524 * KIB);
        assert_int_equal(m.cached, 2119936 * KIB);
        assert_int_equal(m.swap_total, 1048572 * KIB);
        assert_int_equal(m.swap_free, 524284 * KIB);
        assert_true(m.has_available);

        fixture_path(path, sizeof(path), "meminfo-3.10");
        assert_int_equal(hostmem_read_meminfo(path, &m, &err), 0);
        assert_false(m.has_available);
        assert_int_equal(m.available, 420000 * KIB);

        fixture_path(path, sizeof(path), "no-such-file");
        assert_int_equal(hostmem_read_meminfo(path, &m, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "no-such-file"));
}

static void test_parse_psi_table(void **state) {
        static const struct {
                const char *in;
                int r;
                double some10;
                uint64_t some_total;
                bool full_valid;
        } cases[] = {
                { "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
                  0, 1.5, 123, true },
                { "some avg10=99.99 avg60=0.00 avg300=0.00 total=0\n", 0, 99.99, 0, false },
                { "full avg10=1.00 avg60=0.00 avg300=0.00 total=1\n", -EINVAL, 0, 0, false },
                { "some avg10=1.00 avg60=0.00 total=1\n", -EINVAL, 0, 0, false },
                { "some avg10=101.00 avg60=0.00 avg300=0.00 total=1\n", -EINVAL, 0, 0, false },
                { "some avg10=-1 avg60=0.00 avg300=0.00 total=1\n", -EINVAL, 0, 0, false },
                { "", -EINVAL, 0, 0, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct hostmem_psi p;
                int r = hostmem_parse_psi(cases[i].in, &p);
                if (r != cases[i].r)
                        fail_msg("case %zu: r = %d, want %d", i, r, cases[i].r);
                if (r < 0)
                        continue;
                assert_true(p.some.valid);
                assert_float_equal(p.some.avg10, cases[i].some10, 1e-9);
                assert_int_equal(p.some.total_usec, cases[i].some_total);
                assert_int_equal(p.full.valid, cases[i].full_valid);
        }
}

static void test_read_psi_fixture_and_absent(void **state) {
        char path[4096];
        struct hostmem_psi p = { 0 };
        struct ppn_error err = { 0 };

        fixture_path(path, sizeof(path), "pressure/memory");
        assert_int_equal(hostmem_read_psi(path, &p, &err), 1);
        assert_float_equal(p.some.avg10, 12.5, 1e-9);
        assert_float_equal(p.some.avg60, 3.25, 1e-9);
        assert_float_equal(p.some.avg300, 0.75, 1e-9);
        assert_int_equal(p.some.total_usec, 987654321);
        assert_true(p.full.valid);
        assert_float_equal(p.full.avg10, 1.0, 1e-9);
        assert_int_equal(p.full.total_usec, 12345678);

        /* Absent PSI (no CONFIG_PSI or psi=0) is reported as 0, not as an error. */
        struct hostmem_psi untouched = { .some.avg10 = 42 };
        fixture_path(path, sizeof(path), "pressure/absent");
        assert_int_equal(hostmem_read_psi(path, &untouched, &err), 0);
        assert_float_equal(untouched.some.avg10, 42, 0);

        /* Garbage in the file is an error with words. */
        fixture_path(path, sizeof(path), "meminfo");
        assert_int_equal(hostmem_read_psi(path, &p, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "parsing"));
}

static void test_pid_status_rss(void **state) {
        uint64_t v = 0;
        assert_int_equal(hostmem_parse_pid_status_rss("Name:\tx\nVmRSS:\t  2048 kB\n", &v), 0);
        assert_int_equal(v, 2048 * KIB);
        assert_int_equal(hostmem_parse_pid_status_rss("Name:\tkthreadd\n", &v), -ENODATA);
        assert_int_equal(hostmem_parse_pid_status_rss("VmRSS:\tlots\n", &v), -EINVAL);

        char root[4096];
        struct ppn_error err = { 0 };
        snprintf(root, sizeof(root), "%s/proc", fixtures());
        assert_int_equal(hostmem_read_pid_rss(root, 4242, &v, &err), 0);
        assert_int_equal(v, 1057792 * KIB);
        assert_int_equal(hostmem_read_pid_rss(root, 4243, &v, &err), -ENODATA);
        assert_int_equal(hostmem_read_pid_rss(root, 99999, &v, &err), -ESRCH);
        assert_non_null(strstr(err.msg, "99999"));
}

static void test_vmstat_alloc(void **state) {
        static const struct {
                const char *in;
                int r;
                uint64_t pages;
        } cases[] = {
                { "nr_free_pages 100\npgalloc_dma 1\npgalloc_dma32 20\npgalloc_normal 300\npgalloc_movable 0\n"
                  "pgfree 9999\n", 0, 321 },
                /* the last line without its newline; a zone this kernel lacks is simply absent */
                { "pgalloc_normal 5\npgalloc_device 7", 0, 12 },
                /* other counters that start alike are not allocations */
                { "pgallocstall 4\npgalloc_normal 5\n", 0, 5 },
                { "nr_free_pages 100\npgfree 3\n", -ENODATA, 0 },
                { "", -ENODATA, 0 },
                { "pgalloc_normal x\n", -EINVAL, 0 },
                { "pgalloc_normal 12x\n", -EINVAL, 0 },
                { "pgalloc_normal -1\n", -EINVAL, 0 },
                { "pgalloc_normal\n", -EINVAL, 0 },
                /* a sum past 2^64 - 1 is not wrapped */
                { "pgalloc_normal 18446744073709551615\npgalloc_dma 1\n", -EINVAL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t v = 0;
                int r = hostmem_parse_vmstat_alloc(cases[i].in, &v);
                if (r != cases[i].r)
                        fail_msg("case %zu: r = %d, want %d", i, r, cases[i].r);
                if (r == 0 && v != cases[i].pages)
                        fail_msg("case %zu: %" PRIu64 " pages, want %" PRIu64, i, v, cases[i].pages);
        }

        /* On this machine: memory a process touches is counted, however it is backed (64 MiB
         * written: at least 16,384 pages of 4 KiB, or 32 huge pages counting 512 each). */
        uint64_t before, after;
        struct ppn_error err = { 0 };
        assert_int_equal(hostmem_read_vmstat_alloc("/proc/vmstat", &before, NULL), 0);
        char *p = malloc(64 * MIB);
        assert_non_null(p);
        memset(p, 0x5a, 64 * MIB);
        assert_int_equal(hostmem_read_vmstat_alloc("/proc/vmstat", &after, NULL), 0);
        free(p);
        assert_int_equal(hostmem_read_vmstat_alloc("/nonexistent/vmstat", &after, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "/nonexistent/vmstat"));
        if (after < before + 64 * MIB / 4096)
                fail_msg("pgalloc rose by %" PRIu64 " pages for 64 MiB written", after - before);
}

static void test_read_real_proc(void **state) {
        /* The real files parse on this machine (PSI may be absent: both answers are fine). */
        struct hostmem_meminfo m;
        struct hostmem_psi p;
        uint64_t rss;
        assert_int_equal(hostmem_read_meminfo("/proc/meminfo", &m, NULL), 0);
        assert_true(m.total > 0 && m.available <= m.total);
        int r = hostmem_read_psi("/proc/pressure/memory", &p, NULL);
        assert_true(r == 0 || r == 1);
        assert_int_equal(hostmem_read_pid_rss("/proc", getpid(), &rss, NULL), 0);
        assert_true(rss > 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_meminfo_table),
                cmocka_unit_test(test_read_meminfo_fixture),
                cmocka_unit_test(test_parse_psi_table),
                cmocka_unit_test(test_read_psi_fixture_and_absent),
                cmocka_unit_test(test_pid_status_rss),
                cmocka_unit_test(test_vmstat_alloc),
                cmocka_unit_test(test_read_real_proc),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
