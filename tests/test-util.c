/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "util.h"

/* A memfd holding len bytes of 'x', rewound. */
static int memfd_of(size_t len) {
        int fd = memfd_create("read-full", MFD_CLOEXEC);
        char *data = malloc(len + 1);

        assert_true(fd >= 0);
        assert_non_null(data);
        memset(data, 'x', len);
        assert_int_equal(write(fd, data, len), (ssize_t) len);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        free(data);
        return fd;
}

/* The limit is inclusive, the buffer is NUL-terminated, and growth past 4 KiB works. */
static void test_read_full_fd(void **state) {
        static const struct { size_t len, max; int r; } cases[] = {
                { 0, 10, 0 }, { 10, 10, 0 }, { 11, 10, -EFBIG },
                { 4096, 10000, 0 }, { 10000, 10000, 0 }, { 10001, 10000, -EFBIG }, { 70000, 100000, 0 },
        };

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                int fd = memfd_of(cases[i].len);
                char *buf = NULL;
                size_t n = 0;

                assert_int_equal(read_full_fd(fd, cases[i].max, &buf, &n), cases[i].r);
                if (cases[i].r == 0) {
                        assert_int_equal(n, cases[i].len);
                        assert_int_equal(strlen(buf), cases[i].len);
                } else
                        assert_null(buf);
                free(buf);
                close(fd);
        }
}

static void test_parse_size_table(void **state) {
        static const struct {
                const char *in;
                int r;
                uint64_t bytes;
        } cases[] = {
                { "0", 0, 0 },
                { "1048576", 0, 1048576 },
                { "512M", 0, 512 * MIB },
                { "2G", 0, 2 * GIB },
                { "1048576K", 0, GIB },
                { "4MiB", 0, 4 * MIB },
                { "3GiB", 0, 3 * GIB },
                { "1T", 0, UINT64_C(1) << 40 },
                { "100B", 0, 100 },
                { "", -EINVAL, 0 },
                { "-1G", -EINVAL, 0 },
                { "1.5G", -EINVAL, 0 },
                { "12X", -EINVAL, 0 },
                { " 1G", -EINVAL, 0 },
                { "99999999999999999999", -ERANGE, 0 },
                { "17179869184G", -ERANGE, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t v = 12345;
                int r = parse_size(cases[i].in, &v);
                if (r != cases[i].r)
                        fail_msg("parse_size(\"%s\") = %d, want %d", cases[i].in, r, cases[i].r);
                if (r == 0)
                        assert_int_equal(v, cases[i].bytes);
                else
                        assert_int_equal(v, 12345); /* ret_ untouched on failure */
        }
}

static void test_format_size(void **state) {
        char buf[FORMAT_SIZE_MAX];
        assert_string_equal(format_size(512 * MIB, buf, sizeof(buf)), "512M");
        assert_string_equal(format_size(3 * GIB / 2, buf, sizeof(buf)), "1.5G");
        assert_string_equal(format_size(2 * GIB, buf, sizeof(buf)), "2G");
        /* One decimal, rounded to nearest (integer arithmetic, as printf("%.1f") rounds). */
        assert_string_equal(format_size(GIB + GIB / 3, buf, sizeof(buf)), "1365.3M");
        assert_string_equal(format_size(GIB + GIB * 2 / 3, buf, sizeof(buf)), "1706.7M");
        assert_string_equal(format_size(10 * GIB + 1, buf, sizeof(buf)), "10.0G");
        assert_string_equal(format_size(20 * GIB - 1, buf, sizeof(buf)), "20.0G");
        assert_string_equal(format_size(UINT64_MAX, buf, sizeof(buf)), "16777216.0T");
        assert_string_equal(format_size(1000, buf, sizeof(buf)), "1000");
        assert_string_equal(format_size(0, buf, sizeof(buf)), "0");
}

/* Cut to columns, not bytes: "…" replaces the last column kept; width 0 keeps nothing. */
static void test_text_fit(void **state) {
        static const struct {
                const char *in;
                size_t width;
                const char *out;
        } cases[] = {
                { "abcdef", 6, "abcdef" },
                { "abcdef", 7, "abcdef" },
                { "abcdef", 5, "abcd\xe2\x80\xa6" },
                { "abcdef", 1, "\xe2\x80\xa6" },
                { "abcdef", 0, "" },
                { "", 3, "" },
                { "a\xe2\x86\x92" "bc", 4, "a\xe2\x86\x92" "bc" },            /* "a→bc": 4 columns */
                { "a\xe2\x86\x92" "bcd", 4, "a\xe2\x86\x92" "b\xe2\x80\xa6" },
                { "\xe2\x86\x92\xe2\x86\x92\xe2\x86\x92", 2, "\xe2\x86\x92\xe2\x80\xa6" },
        };
        char buf[64], again[64];

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                assert_string_equal(text_fit(cases[i].in, cases[i].width, buf, sizeof(buf)), cases[i].out);
        /* A cut that is cut again at the same or a wider width stays as it is (the brief status
         * sends reasons cut as the table would cut them; the table cuts them again). */
        text_fit("abcdefghij", 5, buf, sizeof(buf));
        assert_string_equal(text_fit(buf, 5, again, sizeof(again)), buf);
        assert_string_equal(text_fit(buf, 8, again, sizeof(again)), buf);
}

static void test_parse_duration(void **state) {
        uint64_t v;
        assert_int_equal(parse_duration("30", &v), 0);
        assert_int_equal(v, 30000000);
        assert_int_equal(parse_duration("500ms", &v), 0);
        assert_int_equal(v, 500000);
        assert_int_equal(parse_duration("10m", &v), 0);
        assert_int_equal(v, 600000000);
        assert_int_equal(parse_duration("2h", &v), 0);
        assert_int_equal(v, UINT64_C(7200000000));
        assert_int_equal(parse_duration("m", &v), -EINVAL);
        assert_int_equal(parse_duration("5 s", &v), -EINVAL);
}

static void test_error_prefix(void **state) {
        struct ppn_error e = { 0 };
        assert_int_equal(ppn_error_set(&e, ENOENT, "no such file %s", "x"), -ENOENT);
        assert_int_equal(ppn_error_prefix(&e, EIO, "opening ledger"), -ENOENT);
        assert_string_equal(e.msg, "opening ledger: no such file x");
        assert_int_equal(ppn_error_set(NULL, -EINVAL, "ignored"), -EINVAL);
}

/* The lazily loaded libraries: the real libvirt, a library that is not there, a symbol that is
 * not in it; the failures say which library and which symbol. */
static void test_dl_load(void **state) {
        struct { size_t (*strlen)(const char *); } libc = { 0 };
        struct { __typeof__(strlen) *strlen; int (*no_such_function)(void); } bad = { 0 };
        const struct dl_symbol ok[] = { DL_SYMBOL(&libc, strlen) };
        const struct dl_symbol missing[] = { DL_SYMBOL(&bad, strlen), DL_SYMBOL(&bad, no_such_function) };
        struct ppn_error e = { 0 };

        assert_int_equal(dl_load("libc.so.6", ok, ELEMENTSOF(ok), &e), 0);
        assert_non_null(libc.strlen);
        assert_int_equal(libc.strlen("four"), 4);
        assert_int_equal(dl_load(PPN_LIBVIRT_SONAME, NULL, 0, &e), 0);
        assert_int_equal(dl_load(PPN_LIBCURL_SONAME, NULL, 0, &e), 0);

        assert_int_equal(dl_load("libppn-no-such-library.so.7", ok, ELEMENTSOF(ok), &e), -ENOENT);
        assert_non_null(strstr(e.msg, "cannot load libppn-no-such-library.so.7: "));
        assert_int_equal(dl_load("libc.so.6", missing, ELEMENTSOF(missing), &e), -ENOENT);
        assert_string_equal(e.msg, "cannot load libc.so.6: no symbol no_such_function");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size_table),
                cmocka_unit_test(test_format_size),
                cmocka_unit_test(test_parse_duration),
                cmocka_unit_test(test_text_fit),
                cmocka_unit_test(test_error_prefix),
                cmocka_unit_test(test_read_full_fd),
                cmocka_unit_test(test_dl_load),
        };
        return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
