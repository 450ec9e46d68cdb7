/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger on a full disk: a small tmpfs mounted by this test (root; in a private mount
 * namespace, so the mount cannot outlive the test). A write that does not fit must fail with
 * -ENOSPC and words that say "disk full", and leave the ledger exactly as it was: same export,
 * same audit log, integrity_check ok, also through a fresh connection. Space is then given
 * back a little at a time, so the failure lands at different points of the write (WAL frames
 * half written, commit frame missing), until the write fits and succeeds as a whole.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ledger.h"

/* 4 MiB of tmpfs: the ledger with 3 VMs takes ~100 KiB (db, WAL, shm); the import below
 * needs ~1.3 MiB of WAL, so it cannot fit once the filler leaves less than that. */
#define FS_SIZE "4m"
#define BIG_VMS 24
#define ARGS_PER_VM 48
#define ARG_LEN 1000

static char dir[64], path[128], filler[128];
static bool usable;
static char why_not[256];

static void must(int r, const struct ppn_error *e) {
        if (r < 0)
                fail_msg("unexpected failure %d: %s", r, e->msg);
}

static struct ledger *open_ok(void) {
        struct ledger *l = NULL;
        struct ppn_error e = {};
        must(ledger_open(path, NULL, &l, &e), &e);
        return l;
}

static char *export_text(struct ledger *l) {
        struct json_object *doc = NULL;
        struct ppn_error e = {};
        char *s;

        must(ledger_export(l, &doc, &e), &e);
        s = strdup(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN));
        json_object_put(doc);
        assert_non_null(s);
        return s;
}

static size_t audit_rows(struct ledger *l) {
        struct ledger_audit *a = NULL;
        struct ppn_error e = {};
        size_t n = 0;

        must(ledger_history(l, NULL, &a, &n, &e), &e);
        ledger_audit_free(a, n);
        return n;
}

/* Fills the file system so that about free_bytes stay free (0: completely full). */
static void fill_leaving(uint64_t free_bytes) {
        struct statvfs sv;
        int fd;

        unlink(filler);
        assert_int_equal(statvfs(dir, &sv), 0);
        uint64_t avail = (uint64_t) sv.f_bavail * sv.f_frsize;
        fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        if (avail > free_bytes)
                assert_int_equal(fallocate(fd, 0, 0, (off_t) (avail - free_bytes)), 0);
        if (free_bytes == 0) {
                /* fallocate leaves a partial page on some kernels; write until ENOSPC. */
                char page[4096] = { 0 };
                while (write(fd, page, sizeof(page)) > 0)
                        ;
        }
        close(fd);
}

static void make_ledger(void) {
        struct ledger *l = open_ok();
        const char *node[] = { "physical=64G", "reserve=1G" };
        const char *names[] = { "web", "db", "cache" };
        struct ppn_error e = {};

        must(ledger_node_set(l, node, 2, 0, &e), &e);
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                struct ledger_vm vm;
                ledger_vm_init(&vm);
                snprintf(vm.name, sizeof(vm.name), "%s", names[i]);
                must(ledger_vm_assign(&vm, "min", "512M", &e), &e);
                must(ledger_vm_assign(&vm, "max", "2G", &e), &e);
                must(ledger_vm_add(l, &vm, 0, NULL, &e), &e);
                ledger_vm_done(&vm);
        }
        ledger_close(l);
}

/* An import of BIG_VMS entries with ~48 KB of QEMU arguments each: ~1.2 MB of rows. */
static struct json_object *big_doc(void) {
        struct json_object *doc = json_object_new_object(), *vms = json_object_new_array();
        char arg[ARG_LEN + 1];

        memset(arg, 'x', ARG_LEN);
        arg[ARG_LEN] = '\0';
        for (int i = 0; i < BIG_VMS; i++) {
                struct json_object *vm = json_object_new_object(), *args = json_object_new_array();
                char name[32], uuid[LEDGER_UUID_LEN + 1];
                uint8_t random[16] = { 0x42, (uint8_t) i };
                snprintf(name, sizeof(name), "big%02d", i);
                ledger_uuid_format(random, uuid);
                json_object_object_add(vm, "name", json_object_new_string(name));
                json_object_object_add(vm, "uuid", json_object_new_string(uuid));
                json_object_object_add(vm, "min_bytes", json_object_new_int64(256 * MIB));
                json_object_object_add(vm, "max_bytes", json_object_new_int64(GIB));
                for (int j = 0; j < ARGS_PER_VM; j++)
                        json_object_array_add(args, json_object_new_string(arg));
                json_object_object_add(vm, "qemu_args", args);
                json_object_array_add(vms, vm);
        }
        json_object_object_add(doc, "schema", json_object_new_int(1));
        json_object_object_add(doc, "vms", vms);
        return doc;
}

/* The ledger is as it was: same export, same audit, intact, also seen from a new connection. */
static void assert_unchanged(struct ledger *l, const char *before, size_t audit_before) {
        struct ledger *fresh;
        struct ppn_error e = {};
        char *now = export_text(l);

        assert_string_equal(now, before);
        free(now);
        assert_int_equal(audit_rows(l), audit_before);
        must(ledger_integrity_check(l, &e), &e);
        fresh = open_ok();
        now = export_text(fresh);
        assert_string_equal(now, before);
        free(now);
        must(ledger_integrity_check(fresh, &e), &e);
        ledger_close(fresh);
}

static int setup(void **state) {
        if (!usable)
                return 0;
        make_ledger();
        return 0;
}

static int teardown(void **state) {
        char p[160];
        unlink(filler);
        unlink(path);
        snprintf(p, sizeof(p), "%s-wal", path);
        unlink(p);
        snprintf(p, sizeof(p), "%s-shm", path);
        unlink(p);
        return 0;
}

#define REQUIRE_FS() do { if (!usable) skip(); } while (0)

/* Completely full: refused with -ENOSPC and "disk full", nothing changed; room again: works. */
static void test_full_refused_unchanged(void **state) {
        REQUIRE_FS();
        struct ledger *l = open_ok();
        struct json_object *doc = big_doc();
        struct ppn_error e = {};
        char *before = export_text(l);
        size_t audit = audit_rows(l);
        int r;

        fill_leaving(0);
        r = ledger_import(l, doc, false, 0, &e);
        assert_int_equal(r, -ENOSPC);
        assert_non_null(strstr(e.msg, "disk full"));
        assert_non_null(strstr(e.msg, path));
        print_message("# refused: %s\n", e.msg);
        assert_unchanged(l, before, audit);

        /* A small change on a full disk: also refused cleanly or done whole, never half. */
        const char *pair[] = { "shares=7" };
        r = ledger_vm_set(l, "web", pair, 1, 0, &e);
        assert_true(r == 0 || r == -ENOSPC);
        if (r == -ENOSPC)
                assert_unchanged(l, before, audit);

        unlink(filler);
        must(ledger_import(l, doc, false, 0, &e), &e);
        struct ledger_state *st = NULL;
        must(ledger_load(l, &st, &e), &e);
        assert_int_equal(st->n_vms, 3 + BIG_VMS);
        ledger_state_free(st);
        must(ledger_integrity_check(l, &e), &e);
        json_object_put(doc);
        free(before);
        ledger_close(l);
}

/* Space given back 16 KiB at a time: each attempt fails whole or succeeds whole. */
static void test_full_at_many_points(void **state) {
        REQUIRE_FS();
        struct ledger *l = open_ok();
        struct json_object *doc = big_doc();
        char *before = export_text(l);
        size_t audit = audit_rows(l);
        unsigned failures = 0;
        uint64_t free_bytes;
        int r = -ENOSPC;

        for (free_bytes = 0; free_bytes <= 3 * MIB && r == -ENOSPC; free_bytes += 16 * 1024) {
                struct ppn_error e = {};
                fill_leaving(free_bytes);
                r = ledger_import(l, doc, false, 0, &e);
                if (r == -ENOSPC) {
                        assert_non_null(strstr(e.msg, "disk full"));
                        unlink(filler); /* room to read and check */
                        assert_unchanged(l, before, audit);
                        failures++;
                } else if (r < 0) {
                        fail_msg("with %" PRIu64 " bytes free: %d %s", free_bytes, r, e.msg);
                }
        }
        print_message("# %u refused attempts (0..%" PRIu64 " KiB free), then the import fit\n",
                      failures, (free_bytes - 16 * 1024) / 1024);
        assert_int_equal(r, 0);
        assert_true(failures >= 10);
        unlink(filler);
        struct ppn_error e = {};
        struct ledger_state *st = NULL;
        must(ledger_load(l, &st, &e), &e);
        assert_int_equal(st->n_vms, 3 + BIG_VMS);
        ledger_state_free(st);
        must(ledger_integrity_check(l, &e), &e);
        json_object_put(doc);
        free(before);
        ledger_close(l);
}

/* ppnctl on a full disk: exit status 1 and a message naming the ledger and the cause. */
static void test_ppnctl_full(void **state) {
        REQUIRE_FS();
        const char *build = getenv("PPN_BUILD_ROOT");
        char cmd[1024], out[2048] = "";
        FILE *p;
        int status;

        if (!build)
                skip();
        struct ledger *l = open_ok();
        char *before = export_text(l);
        size_t audit = audit_rows(l);
        fill_leaving(0);
        /* 6 arguments of 100 KB (one argv string may hold 128 KiB): 600 KB that cannot fit. */
        snprintf(cmd, sizeof(cmd),
                 "a=$(head -c 100000 /dev/zero | tr '\\0' x); PPN_LEDGER='%s' '%s/src/ppnctl' vm add big "
                 "--min 256M --max 1G --qemu-arg \"$a\" --qemu-arg \"$a\" --qemu-arg \"$a\" "
                 "--qemu-arg \"$a\" --qemu-arg \"$a\" --qemu-arg \"$a\" 2>&1", path, build);
        p = popen(cmd, "r");
        assert_non_null(p);
        fread(out, 1, sizeof(out) - 1, p);
        status = pclose(p);
        print_message("# ppnctl: %s", out);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 1);
        assert_non_null(strstr(out, "disk full"));
        unlink(filler);
        assert_unchanged(l, before, audit);
        free(before);
        ledger_close(l);
}

/* A private mount namespace and a small tmpfs in it; skipped (with the reason) if not root. */
static void mount_small_fs(void) {
        strcpy(dir, "/tmp/test-ledger-diskfull.XXXXXX");
        if (!mkdtemp(dir)) {
                snprintf(why_not, sizeof(why_not), "mkdtemp: %m");
                return;
        }
        snprintf(path, sizeof(path), "%s/ledger.db", dir);
        snprintf(filler, sizeof(filler), "%s/filler", dir);
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=" FS_SIZE ",mode=0700") < 0) {
                snprintf(why_not, sizeof(why_not), "cannot mount a tmpfs (needs root): %m");
                return;
        }
        usable = true;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_full_refused_unchanged, setup, teardown),
                cmocka_unit_test_setup_teardown(test_full_at_many_points, setup, teardown),
                cmocka_unit_test_setup_teardown(test_ppnctl_full, setup, teardown),
        };
        int r;

        mount_small_fs();
        if (!usable)
                fprintf(stderr, "# skipping: %s\n", why_not);
        r = cmocka_run_group_tests(tests, NULL, NULL);
        if (usable)
                umount2(dir, MNT_DETACH);
        rmdir(dir);
        return r;
}
