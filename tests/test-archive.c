/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "archive.h"
#include "util.h"

static char *tmpdir(void) {
        char *d;
        assert_true(asprintf(&d, "%s/test-archive-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp") > 0);
        assert_non_null(mkdtemp(d));
        return d;
}

static void rm_rf(const char *path) {
        char *cmd;
        assert_true(asprintf(&cmd, "rm -rf '%s'", path) > 0);
        assert_int_equal(system(cmd), 0);
        free(cmd);
}

static char *join(const char *a, const char *b) {
        char *p;
        assert_true(asprintf(&p, "%s/%s", a, b) > 0);
        return p;
}

static void write_at(const char *path, off_t off, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT, 0644);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, data, len, off), (ssize_t) len);
        close(fd);
}

static void set_size(const char *path, off_t size) {
        int fd = open(path, O_WRONLY | O_CREAT, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, size), 0);
        close(fd);
}

static size_t count_entries(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;
        if (!d)
                return 0;
        while ((de = readdir(d)))
                n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
        closedir(d);
        return n;
}

static void test_detect_format(void **state) {
        assert_string_equal(archive_detect_format("QFI\xfb\0\0\0\3", 8), "qcow2");
        assert_string_equal(archive_detect_format("QFI", 3), "raw");
        assert_string_equal(archive_detect_format("\0\0\0\0", 4), "raw");
        assert_string_equal(archive_detect_format("", 0), "raw");
}

static void test_file_name_valid(void **state) {
        static const struct { const char *name; bool ok; } cases[] = {
                { "disk.img", true }, { "a b,c.qcow2", true }, { "", false }, { ".", false },
                { "..", false }, { ".hidden", false }, { "a/b", false }, { "manifest.json", false },
                { "tab\there", false }, { "new\nline", false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (archive_file_name_valid(cases[i].name) != cases[i].ok)
                        fail_msg("archive_file_name_valid(\"%s\") != %d", cases[i].name, cases[i].ok);
}

static void test_file_names_unique(void **state) {
        const char *src[] = { "/a/disk.img", "/b/disk.img", "/c/disk-1.img", "/d/manifest.json", "/e/.x", "/f/disk.img", "noext" };
        const char *want[] = { "disk.img", "disk-1.img", "disk-1-1.img", "disk3.img", "disk4.img", "disk-2.img", "noext" };
        char **names = NULL;
        assert_int_equal(archive_file_names(src, ELEMENTSOF(src), &names), 0);
        for (size_t i = 0; i < ELEMENTSOF(src); i++)
                assert_string_equal(names[i], want[i]);
        assert_null(names[ELEMENTSOF(src)]);
        strv_free(names);
}

/* FIPS 180-2 test vectors. */
static void test_hash_vectors(void **state) {
        char *d = tmpdir(), *p = join(d, "f"), hex[65];
        uint64_t size;
        set_size(p, 0);
        assert_int_equal(archive_hash_file(p, NULL, NULL, hex, &size, NULL), 0);
        assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_int_equal(size, 0);
        write_at(p, 0, "abc", 3);
        assert_int_equal(archive_hash_file(p, NULL, NULL, hex, &size, NULL), 0);
        assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        /* A million 'a': spans many chunks. */
        char *buf = malloc(1000000);
        memset(buf, 'a', 1000000);
        write_at(p, 0, buf, 1000000);
        free(buf);
        assert_int_equal(archive_hash_file(p, NULL, NULL, hex, &size, NULL), 0);
        assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        assert_int_equal(size, 1000000);
        struct ppn_error err = {};
        assert_int_equal(archive_hash_file(d, NULL, NULL, hex, &size, &err), -EINVAL);
        assert_non_null(strstr(err.msg, "not a regular file"));
        rm_rf(d);
        free(p);
        free(d);
}

/* A 64 MiB image with 2 data blocks, a zero-filled written block and a hole at the end. */
static char *make_sparse_image(const char *dir, const char *name) {
        char *p = join(dir, name), block[4096], zeros[256 * 1024] = {};
        memset(block, 0x5a, sizeof(block));
        set_size(p, 64 * (off_t) MIB);
        write_at(p, (off_t) MIB, block, sizeof(block));
        write_at(p, 2 * (off_t) MIB, zeros, sizeof(zeros));
        write_at(p, 40 * (off_t) MIB + 17, "marker", 6);
        return p;
}

static uint64_t allocated(const char *path) {
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        return (uint64_t) st.st_blocks * 512;
}

struct progress_seen {
        unsigned calls;
        uint64_t last_done, last_total;
};

static void count_progress(const char *file, uint64_t done, uint64_t total, void *userdata) {
        struct progress_seen *p = userdata;
        assert_true(done >= p->last_done);   /* monotonic */
        p->calls++;
        p->last_done = done;
        p->last_total = total;
}

static void test_sparse_copy(void **state) {
        struct progress_seen seen = {};
        char *d = tmpdir(), *src = make_sparse_image(d, "src.img"), *dst = join(d, "dst.img");
        char src_hex[65], dst_hex[65];
        struct archive_copy_result c;
        struct stat before, after;
        int dfd = open(d, O_RDONLY | O_DIRECTORY);
        assert_int_equal(stat(src, &before), 0);
        assert_int_equal(archive_copy_file(src, dfd, "dst.img", count_progress, &seen, &c, NULL), 0);
        /* One report per 1 MiB chunk, ending at the full size. */
        assert_true(seen.calls >= 64);
        assert_int_equal(seen.last_done, 64 * MIB);
        assert_int_equal(seen.last_total, 64 * MIB);
        assert_int_equal(archive_hash_file(src, NULL, NULL, src_hex, NULL, NULL), 0);
        assert_int_equal(archive_hash_file(dst, NULL, NULL, dst_hex, NULL, NULL), 0);
        assert_string_equal(c.sha256, src_hex);
        assert_string_equal(dst_hex, src_hex);
        assert_int_equal(c.size, 64 * MIB);
        /* Only the two data blocks are written (at most 64 KiB each, depending on how the
         * filesystem reports data regions); the 256 KiB of written zeros are skipped. */
        assert_true(c.data_bytes >= 4096 + 6);
        assert_true(c.data_bytes <= 2 * ARCHIVE_ZERO_BLOCK);
        assert_true(allocated(dst) <= 1 * MIB);
        assert_int_equal(stat(src, &after), 0);
        assert_int_equal(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
        assert_int_equal(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
        /* Never overwrites. */
        struct ppn_error err = {};
        assert_int_equal(archive_copy_file(src, dfd, "dst.img", NULL, NULL, &c, &err), -EEXIST);
        close(dfd);
        rm_rf(d);
        free(src);
        free(dst);
        free(d);
}

static void test_atomic_write(void **state) {
        char *d = tmpdir(), *p = join(d, "f.json"), buf[16] = {};
        int dfd = open(d, O_RDONLY | O_DIRECTORY);
        assert_int_equal(archive_write_file_atomic(dfd, d, "f.json", "one", 3, 0644, NULL), 0);
        assert_int_equal(archive_write_file_atomic(dfd, d, "f.json", "second", 6, 0644, NULL), 0);
        int fd = open(p, O_RDONLY);
        assert_int_equal(read(fd, buf, sizeof(buf)), 6);
        assert_string_equal(buf, "second");
        close(fd);
        assert_int_equal(count_entries(d), 1);   /* no temp file left */
        close(dfd);
        rm_rf(d);
        free(p);
        free(d);
}

struct fixture {
        char *dir, *src1, *src2, *archive;
        json_object *vm;
};

static int setup_export(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));
        f->dir = tmpdir();
        char *a = join(f->dir, "a"), *b = join(f->dir, "b");
        mkdir(a, 0755);
        mkdir(b, 0755);
        f->src1 = make_sparse_image(a, "disk.img");
        f->src2 = join(b, "disk.img");     /* same basename: must not clash */
        write_at(f->src2, 0, "QFI\xfb rest", 9);
        f->archive = join(f->dir, "archive");
        f->vm = json_object_new_object();
        json_object_object_add(f->vm, "name", json_object_new_string("web"));
        const char *src[] = { f->src1, f->src2 };
        assert_int_equal(archive_export(f->archive, "web", "0b6f2c1e-1d2a-4a4e-9d0b-2f5f1d5e9a11", f->vm, src, 2,
                                        NULL, NULL, NULL), 0);
        free(a);
        free(b);
        *state = f;
        return 0;
}

static int teardown_export(void **state) {
        struct fixture *f = *state;
        rm_rf(f->dir);
        json_object_put(f->vm);
        free(f->dir);
        free(f->src1);
        free(f->src2);
        free(f->archive);
        free(f);
        return 0;
}

static void test_export_manifest(void **state) {
        struct fixture *f = *state;
        struct archive_manifest m;
        char hex[65];
        assert_int_equal(archive_manifest_read(f->archive, &m, NULL), 0);
        assert_string_equal(m.name, "web");
        assert_string_equal(m.uuid, "0b6f2c1e-1d2a-4a4e-9d0b-2f5f1d5e9a11");
        assert_int_equal(m.n_disks, 2);
        assert_string_equal(m.disks[0].file, "disk.img");
        assert_string_equal(m.disks[0].format, "raw");
        assert_int_equal(m.disks[0].size, 64 * MIB);
        assert_string_equal(m.disks[1].file, "disk-1.img");
        assert_string_equal(m.disks[1].format, "qcow2");
        assert_string_equal(m.disks[0].source, f->src1);
        assert_int_equal(archive_hash_file(f->src1, NULL, NULL, hex, NULL, NULL), 0);
        assert_string_equal(m.disks[0].sha256, hex);
        assert_int_equal(archive_verify(f->archive, &m, NULL, NULL, NULL), 0);
        char *copy = join(f->archive, "disk.img");
        assert_true(allocated(copy) <= MIB);
        free(copy);
        assert_int_equal(count_entries(f->archive), 3);
        archive_manifest_done(&m);
}

static void expect_verify_error(const char *dir, int code, const char *words) {
        struct archive_manifest m;
        struct ppn_error err = {};
        assert_int_equal(archive_manifest_read(dir, &m, NULL), 0);
        int r = archive_verify(dir, &m, NULL, NULL, &err);
        if (r != code || !strstr(err.msg, words))
                fail_msg("verify: %d '%s', want %d '%s'", r, err.msg, code, words);
        archive_manifest_done(&m);
}

static void test_verify_flipped_byte(void **state) {
        struct fixture *f = *state;
        char *p = join(f->archive, "disk.img"), c;
        int fd = open(p, O_RDWR);
        assert_int_equal(pread(fd, &c, 1, 40 * MIB + 17), 1);
        c ^= 1;
        assert_int_equal(pwrite(fd, &c, 1, 40 * MIB + 17), 1);
        close(fd);
        expect_verify_error(f->archive, -EBADMSG, "disk.img: sha256 mismatch");
        free(p);
}

static void test_verify_truncated(void **state) {
        struct fixture *f = *state;
        char *p = join(f->archive, "disk-1.img");
        set_size(p, 4);
        expect_verify_error(f->archive, -EBADMSG, "disk-1.img: size 4, manifest says 9");
        free(p);
}

static void test_verify_missing(void **state) {
        struct fixture *f = *state;
        char *p = join(f->archive, "disk-1.img");
        assert_int_equal(unlink(p), 0);
        expect_verify_error(f->archive, -ENOENT, "disk-1.img: missing");
        free(p);
}

static void test_export_refuses_nonempty(void **state) {
        struct fixture *f = *state;
        struct ppn_error err = {};
        const char *src[] = { f->src1 };
        assert_int_equal(archive_export(f->archive, "web", "u", f->vm, src, 1, NULL, NULL, &err), -EEXIST);
        assert_non_null(strstr(err.msg, "not empty"));
        expect_verify_error(f->archive, 0, "");
        /* A missing source: nothing left behind, the directory it created removed. */
        char *dst = join(f->dir, "other"), *nope = join(f->dir, "nope.img");
        const char *bad[] = { f->src1, nope };
        assert_int_equal(archive_export(dst, "web", "u", f->vm, bad, 2, NULL, NULL, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "nope.img"));
        assert_int_equal(access(dst, F_OK), -1);
        free(dst);
        free(nope);
}

static void test_install(void **state) {
        struct fixture *f = *state;
        struct archive_manifest m;
        struct ppn_error err = {};
        char **paths = NULL, *dest = join(f->dir, "images/web"), *parent = join(f->dir, "images");
        mkdir(parent, 0755);
        assert_int_equal(archive_manifest_read(f->archive, &m, NULL), 0);
        assert_int_equal(archive_install(f->archive, &m, dest, NULL, NULL, &paths, NULL), 0);
        assert_non_null(strstr(paths[0], "/images/web/disk.img"));
        assert_non_null(strstr(paths[1], "/images/web/disk-1.img"));
        assert_null(paths[2]);
        assert_int_equal(archive_verify(dest, &m, NULL, NULL, NULL), 0);
        assert_true(allocated(paths[0]) <= MIB);
        /* Never overwrites, even an identical install. */
        assert_int_equal(archive_install(f->archive, &m, dest, NULL, NULL, &paths, &err), -EEXIST);
        assert_int_equal(count_entries(parent), 1);
        assert_int_equal(archive_remove_installed(dest, &m), 0);
        assert_int_equal(count_entries(parent), 0);
        strv_free(paths);
        archive_manifest_done(&m);
        free(dest);
        free(parent);
}

/* An archive's image replaced by a symbolic link (to a file with the very same content, so a
 * checksum cannot tell) after it was verified: install opens each image once, without
 * following links, and refuses; it once copied whatever the link pointed to. Verify refuses
 * it too. */
static void test_install_refuses_symlink(void **state) {
        struct fixture *f = *state;
        struct archive_manifest m;
        struct ppn_error err = {};
        char **paths = NULL, *dest = join(f->dir, "images-web"), *img = join(f->archive, "disk-1.img");

        assert_int_equal(archive_manifest_read(f->archive, &m, NULL), 0);
        assert_int_equal(archive_verify(f->archive, &m, NULL, NULL, NULL), 0);
        assert_int_equal(unlink(img), 0);
        assert_int_equal(symlink(f->src2, img), 0);     /* the exported source: identical bytes */
        assert_int_equal(archive_install(f->archive, &m, dest, NULL, NULL, &paths, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "disk-1.img: a symbolic link, not a regular file"));
        assert_null(paths);
        assert_int_equal(access(dest, F_OK), -1);
        expect_verify_error(f->archive, -EBADMSG, "disk-1.img: a symbolic link");
        archive_manifest_done(&m);
        free(dest);
        free(img);
}

static void test_manifest_bad(void **state) {
        static const struct { const char *json, *words; } cases[] = {
                { "[]", "not a JSON object" },
                { "{\"archive\": \"other\"}", "archive: want" },
                { "{\"archive\": \"ppn-vm\", \"version\": 2}", "version: want 1" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\"}", "name and uuid" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\"}", "vm: missing" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\", \"vm\": {}}", "disks: missing" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\", \"vm\": {}, \"disks\": "
                  "[{\"file\": \"../etc/passwd\"}]}", "disks[0].file" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\", \"vm\": {}, \"disks\": "
                  "[{\"file\": \"d\", \"format\": \"vmdk\"}]}", "format" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\", \"vm\": {}, \"disks\": "
                  "[{\"file\": \"d\", \"format\": \"raw\", \"size\": -1}]}", "size" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\", \"vm\": {}, \"disks\": "
                  "[{\"file\": \"d\", \"format\": \"raw\", \"size\": 1, \"sha256\": \"ABC\"}]}", "sha256" },
                { "{\"archive\": \"ppn-vm\", \"version\": 1, \"name\": \"a\", \"uuid\": \"u\", \"vm\": {}, \"disks\": ["
                  "{\"file\": \"d\", \"format\": \"raw\", \"size\": 1, \"sha256\": \"" "0123456789abcdef0123456789abcdef"
                  "0123456789abcdef0123456789abcdef\"}, {\"file\": \"d\", \"format\": \"raw\", \"size\": 1, \"sha256\": \""
                  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}]}", "listed twice" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = json_tokener_parse(cases[i].json);
                struct archive_manifest m;
                struct ppn_error err = {};
                assert_non_null(o);
                int r = archive_manifest_from_json(o, &m, &err);
                json_object_put(o);
                if (r != -EBADMSG || !strstr(err.msg, cases[i].words))
                        fail_msg("case %zu: %d '%s', want '%s'", i, r, err.msg, cases[i].words);
        }
}

static void test_manifest_read_errors(void **state) {
        char *d = tmpdir(), *p = join(d, ARCHIVE_MANIFEST);
        struct archive_manifest m;
        struct ppn_error err = {};
        assert_int_equal(archive_manifest_read(d, &m, &err), -ENOENT);
        assert_non_null(strstr(err.msg, "not a VM archive"));
        write_at(p, 0, "{\"archive\": \"ppn-vm\", \"vers", 27);
        assert_int_equal(archive_manifest_read(d, &m, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "not valid JSON"));
        rm_rf(d);
        free(p);
        free(d);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_detect_format),
                cmocka_unit_test(test_file_name_valid),
                cmocka_unit_test(test_file_names_unique),
                cmocka_unit_test(test_hash_vectors),
                cmocka_unit_test(test_sparse_copy),
                cmocka_unit_test(test_atomic_write),
                cmocka_unit_test_setup_teardown(test_export_manifest, setup_export, teardown_export),
                cmocka_unit_test_setup_teardown(test_verify_flipped_byte, setup_export, teardown_export),
                cmocka_unit_test_setup_teardown(test_verify_truncated, setup_export, teardown_export),
                cmocka_unit_test_setup_teardown(test_verify_missing, setup_export, teardown_export),
                cmocka_unit_test_setup_teardown(test_export_refuses_nonempty, setup_export, teardown_export),
                cmocka_unit_test_setup_teardown(test_install, setup_export, teardown_export),
                cmocka_unit_test_setup_teardown(test_install_refuses_symlink, setup_export, teardown_export),
                cmocka_unit_test(test_manifest_bad),
                cmocka_unit_test(test_manifest_read_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
