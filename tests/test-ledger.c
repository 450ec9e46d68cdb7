/* SPDX-License-Identifier: Apache-2.0 */
/* The ledger: entry validation (table-driven), the store, audit, import/export, bad files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ledger.h"

static char dir[64];
static char path[128];

static int setup(void **state) {
        strcpy(dir, "/tmp/test-ledger.XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/ledger.db", dir);
        return 0;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static struct ledger *open_ok(void) {
        struct ledger *l = NULL;
        struct ppn_error e = {};
        int r = ledger_open(path, NULL, &l, &e);
        if (r < 0)
                fail_msg("ledger_open: %d %s", r, e.msg);
        return l;
}

static void must(int r, const struct ppn_error *e) {
        if (r < 0)
                fail_msg("unexpected failure %d: %s", r, e->msg);
}

static void add_vm(struct ledger *l, const char *name, const char *min, const char *max) {
        struct ledger_vm vm;
        struct ppn_error e = {};
        ledger_vm_init(&vm);
        snprintf(vm.name, sizeof(vm.name), "%s", name);
        must(ledger_vm_assign(&vm, "min", min, &e), &e);
        must(ledger_vm_assign(&vm, "max", max, &e), &e);
        must(ledger_vm_add(l, &vm, 4242, NULL, &e), &e);
        ledger_vm_done(&vm);
}

static void node_set(struct ledger *l, const char *a, const char *b) {
        const char *pairs[] = { (char *) a, (char *) b };
        struct ppn_error e = {};
        must(ledger_node_set(l, pairs, b ? 2 : 1, 4242, &e), &e);
}

/* ---- pure: assignment and validation ---- */

static void test_assign_table(void **state) {
        static const struct {
                const char *pair;
                int r;
                const char *msg;
        } cases[] = {
                { "min=512M", 0, NULL },
                { "max=2G", 0, NULL },
                { "max=1048576K", 0, NULL },
                { "shares=1", 0, NULL },
                { "shares=100000", 0, NULL },
                { "cpu-weight=10000", 0, NULL },
                { "vcpus=4", 0, NULL },
                { "qmp=/run/ppn/web.qmp", 0, NULL },
                { "libvirt=web", 0, NULL },
                { "disks=/a.img,/b.img", 0, NULL },
                { "qemu-args=-device virtio-rng-pci", 0, NULL },
                { "min=abc", -EINVAL, "min 'abc' is not a size; use bytes or a number with K, M, G or T (e.g. 512M, 2G, 1048576K)" },
                { "min=-1G", -EINVAL, NULL },
                { "shares=0", -EINVAL, "shares '0' is not an integer in 1–100000 (default 1000)" },
                { "shares=100001", -EINVAL, NULL },
                { "cpu-weight=0", -EINVAL, "cpu-weight '0' is not an integer in 1–10000 (default 100)" },
                { "cpu-weight=10001", -EINVAL, NULL },
                { "cpu-weight=1x", -EINVAL, NULL },
                { "vcpus=0", -EINVAL, NULL },
                { "colour=blue", -ENOKEY, "unknown key 'colour'; keys are min, max, base, vmem, shares, cpu-weight, vcpus, qmp, libvirt, disks, disk, qemu-args, qemu-arg" },
                { "base=512M", 0, NULL },
                { "base=default", 0, NULL },
                { "base=lots", -EINVAL, "base 'lots' is not a size; use bytes or a number with K, M, G or T (e.g. 512M, 2G, 1048576K)" },
                { "vmem=on", 0, NULL },
                { "vmem=off", 0, NULL },
                { "vmem=yes", -EINVAL, "vmem 'yes' is neither on nor off" },
                { "min", -EINVAL, "'min' is not KEY=VALUE (e.g. min=1G)" },
                { "=1G", -EINVAL, NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ledger_vm vm;
                struct ppn_error e = {};
                ledger_vm_init(&vm);
                int r = ledger_vm_assign_pair(&vm, cases[i].pair, &e);
                if (r != cases[i].r)
                        fail_msg("'%s': r=%d want %d (%s)", cases[i].pair, r, cases[i].r, e.msg);
                if (cases[i].msg)
                        assert_string_equal(e.msg, cases[i].msg);
                ledger_vm_done(&vm);
        }
}

static void test_assign_values(void **state) {
        struct ledger_vm vm;
        struct ppn_error e = {};
        ledger_vm_init(&vm);
        assert_int_equal(vm.shares, 1000);
        assert_int_equal(vm.cpu_weight, 100);
        assert_int_equal(vm.vcpus, 1);
        assert_int_equal(ledger_vm_assign_pair(&vm, "min=1048576K", &e), 0);
        assert_int_equal(vm.min_bytes, GIB);
        assert_int_equal(ledger_vm_assign_pair(&vm, "disks=/a.img,/b.img", &e), 0);
        assert_int_equal(ledger_vm_assign(&vm, "disk", "/c.img", &e), 0);
        assert_string_equal(vm.disks[2], "/c.img");
        assert_null(vm.disks[3]);
        assert_int_equal(ledger_vm_assign_pair(&vm, "disks=", &e), 0);
        assert_null(vm.disks);
        assert_int_equal(ledger_vm_assign_pair(&vm, "qemu-args=-device  virtio-rng-pci", &e), 0);
        assert_string_equal(vm.qemu_args[1], "virtio-rng-pci");
        assert_int_equal(ledger_vm_assign(&vm, "qemu-arg", "a b,c", &e), 0);
        assert_string_equal(vm.qemu_args[2], "a b,c");
        ledger_vm_done(&vm);
}

static void test_name_table(void **state) {
        static const struct { const char *name; bool ok; } cases[] = {
                { "web", true }, { "a", true }, { "0", true }, { "web-1.prod_x", true },
                { "", false }, { "Web", false }, { "-web", false }, { ".web", false }, { "_web", false },
                { "we b", false }, { "we/b", false }, { "wé", false },
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true },    /* 63 */
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false },   /* 64 */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (ledger_name_valid(cases[i].name) != cases[i].ok)
                        fail_msg("name '%s': want %s", cases[i].name, cases[i].ok ? "valid" : "invalid");
}

/* Case i: a VM "web" from up to n KEY=VALUE pairs, validated against node; r and the message
 * as wanted. *ret is the entry (ledger_vm_done() it); returns r. */
static int validate_case(size_t i, const char *const *pairs, size_t n, const struct ledger_node *node, int want_r,
                         const char *want_msg, struct ledger_vm *ret) {
        struct ppn_error e = {};
        ledger_vm_init(ret);
        strcpy(ret->name, "web");
        for (size_t j = 0; j < n && pairs[j]; j++)
                assert_int_equal(ledger_vm_assign_pair(ret, pairs[j], &e), 0);
        int r = ledger_vm_validate(ret, node, &e);
        if (r != want_r)
                fail_msg("case %zu: r=%d want %d (%s)", i, r, want_r, e.msg);
        if (want_msg)
                assert_string_equal(e.msg, want_msg);
        return r;
}

static void test_validate_table(void **state) {
        static const struct ledger_node node = { 16 * GIB, GIB, 128 * MIB };
        static const struct {
                const char *pairs[3];
                int r;
                const char *msg;
        } cases[] = {
                { { "min=1G", "max=2G" }, 0, NULL },
                { { "min=128M", "max=128M" }, 0, NULL },
                { { "min=2G", "max=1G" }, -EINVAL, "vm 'web': min 2048 MiB is above max 1024 MiB; lower min or raise max" },
                { { "min=64M", "max=1G" }, -EINVAL,
                  "vm 'web': min 64 MiB is below the node's safe floor 128 MiB (a guest ballooned near zero panics); "
                  "raise min, or lower the floor with 'ppnctl node set min-floor=SIZE'" },
                { { "max=1G" }, -EINVAL, "vm 'web': min is not set; give it with --min SIZE (e.g. 1G)" },
                { { "min=1G" }, -EINVAL, "vm 'web': max is not set; give it with --max SIZE (e.g. 1G)" },
                { { "min=1G", "max=1048577K" }, -EINVAL, NULL },    /* not whole MiB */
                { { "min=1G", "max=2G", "qmp=relative.sock" }, -EINVAL,
                  "vm 'web': qmp 'relative.sock' must be an absolute path of at most 107 bytes (a Unix socket address)" },
                { { "min=1G", "max=2G", "disks=/ok.img,rel.img" }, -EINVAL, "vm 'web': disk 'rel.img' must be an absolute path" },
                { { "min=1G", "max=2T" }, 0, NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ledger_vm vm;
                validate_case(i, cases[i].pairs, 3, &node, cases[i].r, cases[i].msg, &vm);
                ledger_vm_done(&vm);
        }
}

/* The memory layout: boot memory (base) and a virtio-mem region up to max. */
static void test_validate_layout_table(void **state) {
        static const struct ledger_node node = { 16 * GIB, GIB, 128 * MIB };
        static const struct {
                const char *pairs[4];
                int r;
                const char *msg;
                uint64_t boot, region;
        } cases[] = {
                { { "min=1G", "max=4G", "base=512M", "vmem=on" }, 0, NULL, 512 * MIB, 3584 * MIB },
                { { "min=1G", "max=4G" }, 0, NULL, 4 * GIB, 0 },
                { { "min=1G", "max=4G", "base=4G" }, 0, NULL, 4 * GIB, 0 },   /* base = max: no region */
                { { "min=1G", "max=4G", "base=512M" }, -EINVAL,
                  "vm 'web': base 512 MiB applies only with a virtio-mem region; give vmem=on, or unset it with base=default" },
                { { "min=1G", "max=4G", "vmem=on" }, -EINVAL,
                  "vm 'web': vmem=on needs the boot memory: give base=SIZE (e.g. base=512M; the region is max − base)" },
                { { "min=1G", "max=4G", "base=4G", "vmem=on" }, -EINVAL,
                  "vm 'web': base 4096 MiB leaves no virtio-mem region below max 4096 MiB; lower base or raise max" },
                { { "min=1G", "max=4G", "base=513M", "vmem=on" }, -EINVAL,
                  "vm 'web': with vmem=on, base and max must be whole 2 MiB blocks (virtio-mem's block size), e.g. base=512M max=4G" },
                { { "min=1G", "max=4097M", "base=512M", "vmem=on" }, -EINVAL, NULL },
                { { "min=128M", "max=4G", "base=64M", "vmem=on" }, -EINVAL,
                  "vm 'web': base 64 MiB is below the node's safe floor 128 MiB: the boot memory alone must carry the "
                  "guest kernel (plugged memory is movable); raise base" },
                /* min above the boot memory is fine: the region holds the rest. */
                { { "min=2G", "max=4G", "base=256M", "vmem=on" }, 0, NULL, 256 * MIB, 3840 * MIB },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ledger_vm vm;
                if (validate_case(i, cases[i].pairs, 4, &node, cases[i].r, cases[i].msg, &vm) == 0) {
                        assert_int_equal(ledger_vm_boot_bytes(&vm), cases[i].boot);
                        assert_int_equal(ledger_vm_region_bytes(&vm), cases[i].region);
                }
                ledger_vm_done(&vm);
        }
}

static void test_validate_ranges_and_override(void **state) {
        static const struct ledger_node node = { 16 * GIB, GIB, 128 * MIB };
        struct ledger_vm vm;
        struct ppn_error e = {};

        ledger_vm_init(&vm);
        strcpy(vm.name, "web");
        vm.min_bytes = GIB;
        vm.max_bytes = 2 * GIB;
        vm.shares = 0;
        assert_int_equal(ledger_vm_validate(&vm, &node, &e), -EINVAL);
        assert_string_equal(e.msg, "vm 'web': shares 0 is out of range 1–100000 (default 1000)");
        vm.shares = 1000;
        vm.cpu_weight = 20000;
        assert_int_equal(ledger_vm_validate(&vm, &node, &e), -EINVAL);
        assert_string_equal(e.msg, "vm 'web': cpu-weight 20000 is out of range 1–10000 (default 100)");
        vm.cpu_weight = 100;
        vm.override_set = true;
        vm.override_target_bytes = 512 * MIB;
        assert_int_equal(ledger_vm_validate(&vm, &node, &e), -EINVAL);
        assert_string_equal(e.msg, "vm 'web': override target 512 MiB is outside min 1024 MiB – max 2048 MiB; "
                                   "choose a target in that range or clear the override first");
        vm.override_target_bytes = 2 * GIB;
        assert_int_equal(ledger_vm_validate(&vm, &node, &e), 0);
        strcpy(vm.uuid, "not-a-uuid");
        assert_int_equal(ledger_vm_validate(&vm, &node, &e), -EINVAL);
        ledger_vm_done(&vm);
}

static void test_node_defaults(void **state) {
        struct ledger_node_settings s = {};
        struct ledger_node n;
        struct ppn_error e = {};
        uint64_t total;

        assert_int_equal(ledger_parse_meminfo_total("MemFree: 1 kB\nMemTotal:       4194304 kB\n", &total), 0);
        assert_int_equal(total, 4 * GIB);
        assert_int_equal(ledger_parse_meminfo_total("MemFree: 1 kB\n", &total), -EINVAL);

        assert_int_equal(ledger_node_resolve(&s, 4 * GIB, &n, &e), 0);   /* 5% of 4G < 512M */
        assert_int_equal(n.physical_bytes, 4 * GIB);
        assert_int_equal(n.reserve_bytes, 512 * MIB);
        assert_int_equal(n.min_floor_bytes, 128 * MIB);
        assert_true(n.physical_default && n.reserve_default && n.min_floor_default);
        assert_int_equal(ledger_node_resolve(&s, 64 * GIB, &n, &e), 0);  /* 5% of 64G */
        assert_int_equal(n.reserve_bytes, 3276 * MIB);   /* 3435973836.8 rounded down to MiB */
        assert_int_equal(ledger_node_resolve(&s, 0, &n, &e), -EINVAL);
        s.physical_bytes = 512 * MIB;
        assert_int_equal(ledger_node_resolve(&s, 0, &n, &e), -EINVAL);   /* reserve 512M ≥ physical */
        assert_string_equal(e.msg, "reserve 512 MiB is not below physical 512 MiB; lower reserve or raise physical "
                                   "with 'ppnctl node set'");
        assert_int_equal(ledger_node_assign_pair(&s, "reserve=default", &e), 0);
        assert_int_equal(ledger_node_assign_pair(&s, "physical=0", &e), -EINVAL);
        assert_int_equal(ledger_node_assign_pair(&s, "ram=1G", &e), -ENOKEY);
}

static void test_uuid(void **state) {
        uint8_t zero[16] = {}, ones[16];
        char u[LEDGER_UUID_LEN + 1];
        memset(ones, 0xff, sizeof(ones));
        ledger_uuid_format(zero, u);
        assert_string_equal(u, "00000000-0000-4000-8000-000000000000");
        ledger_uuid_format(ones, u);
        assert_string_equal(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_true(ledger_uuid_valid(u));
        assert_false(ledger_uuid_valid("FFFFFFFF-ffff-4fff-bfff-ffffffffffff"));
        assert_false(ledger_uuid_valid("ffffffff-ffff-4fff-bfff-fffffffffff"));
}

static void test_json_roundtrip(void **state) {
        struct ledger_vm vm, back;
        struct ppn_error e = {};
        ledger_vm_init(&vm);
        strcpy(vm.name, "web");
        strcpy(vm.uuid, "00000000-0000-4000-8000-000000000000");
        assert_int_equal(ledger_vm_assign_pair(&vm, "min=1G", &e), 0);
        assert_int_equal(ledger_vm_assign_pair(&vm, "max=2G", &e), 0);
        assert_int_equal(ledger_vm_assign_pair(&vm, "qmp=/run/w.qmp", &e), 0);
        assert_int_equal(ledger_vm_assign_pair(&vm, "disks=/a.img", &e), 0);
        vm.override_set = true;
        vm.override_target_bytes = GIB;
        vm.override_expires = 1800000000;
        struct json_object *o = ledger_vm_to_json(&vm);
        assert_int_equal(ledger_vm_from_json(o, &back, &e), 0);
        for (size_t i = 0; ledger_vm_fields[i]; i++) {
                char *a = ledger_vm_field_text(&vm, ledger_vm_fields[i]), *b = ledger_vm_field_text(&back, ledger_vm_fields[i]);
                if ((a || b) && (!a || !b || strcmp(a, b) != 0))
                        fail_msg("field %s: %s vs %s", ledger_vm_fields[i], a, b);
                free(a);
                free(b);
        }
        json_object_object_add(o, "shares", json_object_new_string("many"));
        assert_int_equal(ledger_vm_from_json(o, &back, &e), -EINVAL);   /* back is untouched on failure */
        assert_string_equal(e.msg, "shares: expected an integer in 0–4294967295");
        json_object_put(o);
        ledger_vm_done(&back);
        ledger_vm_done(&vm);
}

/* ---- the store ---- */

static void test_crud_and_audit(void **state) {
        struct ledger *l = open_ok();
        struct ledger_vm vm;
        struct ppn_error e = {};
        struct ledger_audit *a;
        size_t n;
        const char *pairs[] = { "shares=2000", "cpu-weight=300" };

        node_set(l, "physical=8G", "reserve=1G");
        add_vm(l, "db", "4G", "6G");
        must(ledger_vm_get(l, "db", &vm, &e), &e);
        assert_true(ledger_uuid_valid(vm.uuid));
        char uuid[LEDGER_UUID_LEN + 1];
        strcpy(uuid, vm.uuid);
        ledger_vm_done(&vm);

        must(ledger_vm_set(l, "db", pairs, 2, 1001, &e), &e);
        must(ledger_vm_get(l, "db", &vm, &e), &e);
        assert_int_equal(vm.shares, 2000);
        assert_int_equal(vm.cpu_weight, 300);
        assert_string_equal(vm.uuid, uuid);   /* stable */
        ledger_vm_done(&vm);

        must(ledger_history(l, "db", &a, &n, &e), &e);
        assert_int_equal(n, 6 + 2);   /* add: uuid min max shares cpu-weight vcpus; set: 2 */
        assert_int_equal(a[1].uid, 4242);
        assert_string_equal(a[1].field, "min");
        assert_null(a[1].old_value);
        assert_string_equal(a[1].new_value, "4294967296");
        assert_int_equal(a[6].uid, 1001);
        assert_string_equal(a[6].field, "shares");
        assert_string_equal(a[6].old_value, "1000");
        assert_string_equal(a[6].new_value, "2000");
        assert_true(a[6].time_usec > 1700000000LL * 1000000);
        ledger_audit_free(a, n);

        assert_int_equal(ledger_vm_set(l, "nope", pairs, 1, 0, &e), -ENOENT);
        assert_string_equal(e.msg, "no VM 'nope' in the ledger; see 'ppnctl vm list'");
        must(ledger_vm_remove(l, "db", 7, &e), &e);
        assert_int_equal(ledger_vm_get(l, "db", &vm, &e), -ENOENT);
        must(ledger_history(l, NULL, &a, &n, &e), &e);
        assert_int_equal(n, 2 + 8 + 6);   /* node 2, db 8, remove 6 fields */
        assert_null(a[0].vm);
        assert_string_equal(a[0].field, "physical");
        assert_string_equal(a[n - 1].vm, "db");
        assert_null(a[n - 1].new_value);
        assert_int_equal(a[n - 1].uid, 7);
        ledger_audit_free(a, n);
        ledger_close(l);
}

/* A move removes the entry it exported only if nobody changed it meanwhile. */
static void test_remove_unchanged(void **state) {
        struct ledger *l = open_ok();
        struct ledger_vm vm;
        struct ppn_error e = {};
        const char *pairs[] = { "shares=2000" };

        node_set(l, "physical=8G", "reserve=1G");
        add_vm(l, "db", "1G", "2G");
        must(ledger_vm_get(l, "db", &vm, &e), &e);
        must(ledger_vm_set(l, "db", pairs, 1, 0, &e), &e);          /* a concurrent 'vm set' */
        assert_int_equal(ledger_vm_remove_unchanged(l, &vm, 0, &e), -ESTALE);
        assert_string_equal(e.msg, "vm 'db' changed while it was being moved (see 'ppnctl ledger history db'): "
                                   "its entry stays here");
        ledger_vm_done(&vm);
        must(ledger_vm_get(l, "db", &vm, &e), &e);                  /* still there, with the change */
        assert_int_equal(vm.shares, 2000);
        must(ledger_vm_remove_unchanged(l, &vm, 0, &e), &e);
        assert_int_equal(ledger_vm_remove_unchanged(l, &vm, 0, &e), -ENOENT);
        ledger_vm_done(&vm);
        assert_int_equal(ledger_vm_get(l, "db", &vm, &e), -ENOENT);
        ledger_close(l);
}

static void test_add_keeps_given_uuid(void **state) {
        struct ledger *l = open_ok();
        struct ledger_vm vm, got;
        struct ppn_error e = {};
        char uuid[LEDGER_UUID_LEN + 1];

        node_set(l, "physical=8G", "reserve=1G");
        ledger_vm_init(&vm);
        strcpy(vm.name, "moved");
        strcpy(vm.uuid, "0f0e0d0c-0b0a-4908-8706-050403020100");   /* identity kept across nodes */
        vm.min_bytes = vm.max_bytes = GIB;
        must(ledger_vm_add(l, &vm, 0, uuid, &e), &e);
        assert_string_equal(uuid, vm.uuid);
        must(ledger_vm_get(l, "moved", &got, &e), &e);
        assert_string_equal(got.uuid, vm.uuid);
        ledger_vm_done(&got);
        strcpy(vm.name, "twin");
        assert_int_equal(ledger_vm_add(l, &vm, 0, NULL, &e), -EEXIST);
        assert_string_equal(e.msg, "vm 'moved' and vm 'twin' would share the uuid 0f0e0d0c-0b0a-4908-8706-050403020100; "
                                   "names and uuids must be unique");
        ledger_close(l);
}

static void test_refusals_change_nothing(void **state) {
        struct ledger *l = open_ok();
        struct ppn_error e = {};
        struct ledger_audit *a;
        size_t n, n2;
        struct ledger_vm vm;
        const char *raise[] = { "shares=5", "max=4G", "min=3584M" };   /* first valid, second refused: all or none */

        node_set(l, "physical=8G", "reserve=1G");
        add_vm(l, "db", "4G", "6G");
        add_vm(l, "cache", "2G", "3G");
        must(ledger_history(l, NULL, &a, &n, &e), &e);
        ledger_audit_free(a, n);

        ledger_vm_init(&vm);
        strcpy(vm.name, "web");
        vm.min_bytes = 2 * GIB;
        vm.max_bytes = 3 * GIB;
        assert_int_equal(ledger_vm_add(l, &vm, 0, NULL, &e), -ENOSPC);
        assert_string_equal(e.msg, "refused: admitting 'web' (min 2048 MiB) needs 2048 MiB but the pool has 1024 MiB "
                                   "available (short by 1024 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB");
        assert_int_equal(ledger_vm_add(l, &(struct ledger_vm) { .name = "db", .min_bytes = GIB, .max_bytes = GIB,
                                                                .shares = 1, .cpu_weight = 1, .vcpus = 1 }, 0, NULL, &e),
                         -EEXIST);
        assert_int_equal(ledger_vm_set(l, "cache", raise, 3, 0, &e), -ENOSPC);
        assert_string_equal(e.msg, "refused: raising the minimum of 'cache' from 2048 MiB to 3584 MiB needs 1536 MiB but "
                                   "the pool has 1024 MiB available (short by 512 MiB); biggest reservations: db 4096 MiB, "
                                   "cache 2048 MiB");
        const char *phys[] = { "physical=6G" }, *floor[] = { "min-floor=3G" };
        assert_int_equal(ledger_node_set(l, phys, 1, 0, &e), -ENOSPC);
        assert_int_equal(ledger_node_set(l, floor, 1, 0, &e), -EINVAL);
        assert_string_equal(e.msg, "vm 'cache': min 2048 MiB is below the node's safe floor 3072 MiB (a guest ballooned "
                                   "near zero panics); raise min, or lower the floor with 'ppnctl node set min-floor=SIZE'");
        assert_int_equal(ledger_override_set(l, "db", GIB, 1800000000, 0, &e), -EINVAL);
        assert_int_equal(ledger_override_set(l, "db", 7 * GIB, 1800000000, 0, &e), -EINVAL);

        must(ledger_history(l, NULL, &a, &n2, &e), &e);
        assert_int_equal(n2, n);   /* nothing written */
        ledger_audit_free(a, n2);
        must(ledger_vm_get(l, "cache", &vm, &e), &e);
        assert_int_equal(vm.shares, 1000);
        assert_int_equal(vm.min_bytes, 2 * GIB);
        assert_int_equal(vm.max_bytes, 3 * GIB);
        ledger_vm_done(&vm);
        ledger_close(l);
}

static void test_override_lease(void **state) {
        struct ledger *l = open_ok();
        struct ppn_error e = {};
        struct ledger_vm vm;
        struct ledger_audit *a;
        size_t n;

        node_set(l, "physical=8G", "reserve=1G");
        add_vm(l, "db", "2G", "6G");
        must(ledger_override_set(l, "db", 3 * GIB, 1800000000, 55, &e), &e);
        must(ledger_vm_get(l, "db", &vm, &e), &e);
        assert_true(vm.override_set);
        assert_int_equal(vm.override_target_bytes, 3 * GIB);
        assert_int_equal(vm.override_expires, 1800000000);
        ledger_vm_done(&vm);
        must(ledger_override_clear(l, "db", 56, &e), &e);
        must(ledger_vm_get(l, "db", &vm, &e), &e);
        assert_false(vm.override_set);
        ledger_vm_done(&vm);
        must(ledger_history(l, "db", &a, &n, &e), &e);
        assert_string_equal(a[n - 2].field, "override");
        assert_string_equal(a[n - 2].new_value, "3221225472 until 1800000000");
        assert_string_equal(a[n - 1].old_value, "3221225472 until 1800000000");
        assert_null(a[n - 1].new_value);
        assert_int_equal(a[n - 1].uid, 56);
        ledger_audit_free(a, n);
        assert_int_equal(ledger_override_set(l, "nope", GIB, 0, 0, &e), -ENOENT);

        /* An expired lease does not block a new minimum (it once refused min=4G: "override
         * target 3G is outside min 4G"); a live one still does. */
        const char *raise[] = { "min=4G" };
        must(ledger_override_set(l, "db", 3 * GIB, 1000000000, 0, &e), &e);   /* expired in 2001 */
        must(ledger_vm_set(l, "db", raise, 1, 0, &e), &e);
        must(ledger_vm_get(l, "db", &vm, &e), &e);
        assert_int_equal(vm.min_bytes, 4 * GIB);
        assert_false(vm.override_set);
        ledger_vm_done(&vm);
        const char *lower[] = { "min=2G" }, *again[] = { "min=5G" };
        must(ledger_vm_set(l, "db", lower, 1, 0, &e), &e);
        must(ledger_override_set(l, "db", 3 * GIB, 4000000000, 0, &e), &e);   /* live */
        assert_int_equal(ledger_vm_set(l, "db", again, 1, 0, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "override target"));
        ledger_close(l);
}

static void test_changed(void **state) {
        struct ledger *daemon = open_ok(), *cli = open_ok();
        struct ppn_error e = {};

        assert_int_equal(ledger_changed(daemon), 0);
        node_set(cli, "physical=8G", NULL);
        assert_int_equal(ledger_changed(daemon), 1);
        assert_int_equal(ledger_changed(daemon), 0);
        /* A refused change commits nothing and is not reported. */
        const char *bad[] = { "reserve=9G" };
        assert_int_equal(ledger_node_set(cli, bad, 1, 0, &e), -EINVAL);
        assert_int_equal(ledger_changed(daemon), 0);
        add_vm(cli, "a", "1G", "1G");
        assert_int_equal(ledger_changed(daemon), 1);
        ledger_close(cli);
        ledger_close(daemon);
}

static void test_meminfo_default(void **state) {
        char mi[160];
        struct ledger_options o = { .meminfo_path = mi };
        struct ledger *l;
        struct ledger_node n;
        struct ppn_error e = {};

        snprintf(mi, sizeof(mi), "%s/meminfo", dir);
        FILE *f = fopen(mi, "w");
        assert_non_null(f);
        fputs("MemTotal:       2097152 kB\nMemFree:         100 kB\n", f);
        fclose(f);
        must(ledger_open(path, &o, &l, &e), &e);
        must(ledger_node_get(l, &n, &e), &e);
        assert_int_equal(n.physical_bytes, 2 * GIB);
        assert_true(n.physical_default);
        assert_int_equal(n.reserve_bytes, 512 * MIB);
        ledger_close(l);
}

static void test_export_import(void **state) {
        struct ledger *l = open_ok();
        struct ppn_error e = {};
        struct json_object *doc, *copy;
        struct ledger_audit *a;
        size_t n, n2;

        node_set(l, "physical=8G", "reserve=1G");
        add_vm(l, "db", "2G", "4G");
        add_vm(l, "web", "1G", "2G");
        must(ledger_export(l, &doc, &e), &e);
        must(ledger_history(l, NULL, &a, &n, &e), &e);
        ledger_audit_free(a, n);

        /* Re-importing the same document changes nothing and audits nothing. */
        must(ledger_import(l, doc, false, 0, &e), &e);
        must(ledger_history(l, NULL, &a, &n2, &e), &e);
        ledger_audit_free(a, n2);
        assert_int_equal(n2, n);

        /* One bad entry (the second): nothing changes, the entry and field are named. */
        copy = json_tokener_parse(json_object_to_json_string(doc));
        assert_non_null(copy);
        struct json_object *vms = json_object_object_get(copy, "vms");
        json_object_object_add(json_object_array_get_idx(vms, 0), "shares", json_object_new_int(7));
        json_object_object_add(json_object_array_get_idx(vms, 1), "cpu_weight", json_object_new_int(0));
        assert_int_equal(ledger_import(l, copy, false, 0, &e), -EINVAL);
        assert_string_equal(e.msg, "import: vms[1] ('web'): vm 'web': cpu-weight 0 is out of range 1–10000 (default 100)");
        json_object_object_add(json_object_array_get_idx(vms, 1), "cpu_weight", json_object_new_string("x"));
        assert_int_equal(ledger_import(l, copy, false, 0, &e), -EINVAL);
        assert_string_equal(e.msg, "import: vms[1] ('web'): cpu_weight: expected an integer in 0–4294967295");
        must(ledger_history(l, NULL, &a, &n2, &e), &e);
        ledger_audit_free(a, n2);
        assert_int_equal(n2, n);
        json_object_put(copy);

        /* Admission as a whole: two new VMs that each fit alone but not together. */
        struct json_object *big = json_tokener_parse(
                "{\"vms\": [{\"name\": \"x\", \"uuid\": \"00000000-0000-4000-8000-000000000001\", \"min_bytes\": 2684354560,"
                " \"max_bytes\": 2684354560}, {\"name\": \"y\", \"uuid\": \"00000000-0000-4000-8000-000000000002\","
                " \"min_bytes\": 2684354560, \"max_bytes\": 2684354560}]}");
        assert_int_equal(ledger_import(l, big, false, 0, &e), -ENOSPC);
        assert_string_equal(e.msg, "refused: importing 2 VMs needs 5120 MiB but the pool has 4096 MiB available "
                                   "(short by 1024 MiB); biggest reservations: db 2048 MiB, web 1024 MiB");
        json_object_put(big);

        /* --replace onto an empty ledger reproduces the export. */
        ledger_close(l);
        unlink(path);
        l = open_ok();
        must(ledger_import(l, doc, true, 0, &e), &e);
        struct json_object *again;
        must(ledger_export(l, &again, &e), &e);
        assert_string_equal(json_object_to_json_string(again), json_object_to_json_string(doc));
        json_object_put(again);
        json_object_put(doc);
        ledger_close(l);
}

/* ---- files that are not a usable ledger: clear error, bytes unchanged ---- */

static char *slurp(const char *p, size_t *ret_len) {
        FILE *f = fopen(p, "rb");
        assert_non_null(f);
        char *buf = malloc(1 << 20);
        *ret_len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        return buf;
}

static void write_file(const char *p, const void *data, size_t len) {
        FILE *f = fopen(p, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        fclose(f);
}

/* Opens read-write and read-only; both must fail with -EPROTO and `want` in the message,
 * and leave the file byte-identical. */
static void expect_refused(const char *want) {
        size_t len0, len1;
        char *before = slurp(path, &len0);
        for (int ro = 0; ro < 2; ro++) {
                struct ledger_options o = { .read_only = ro };
                struct ledger *l = NULL;
                struct ppn_error e = {};
                int r = ledger_open(path, &o, &l, &e);
                assert_null(l);
                if (r != -EPROTO || !strstr(e.msg, want))
                        fail_msg("r=%d msg '%s', want -EPROTO and '%s'", r, e.msg, want);
                assert_non_null(strstr(e.msg, "the file was not modified"));
                char *after = slurp(path, &len1);
                assert_int_equal(len1, len0);
                assert_memory_equal(after, before, len0);
                free(after);
        }
        free(before);
}

static void test_not_sqlite(void **state) {
        char text[4096];
        memset(text, 'x', sizeof(text));
        write_file(path, text, sizeof(text));
        expect_refused("is not an SQLite database");
}

static void test_truncated(void **state) {
        struct ledger *l = open_ok();
        node_set(l, "physical=8G", "reserve=1G");
        for (int i = 0; i < 40; i++) {
                char name[16];
                snprintf(name, sizeof(name), "vm%d", i);
                add_vm(l, name, "128M", "256M");
        }
        ledger_close(l);   /* checkpoints: the whole ledger is in the main file, no -wal left */
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size > 8192);
        assert_int_equal(truncate(path, 4096), 0);
        expect_refused("is truncated (4096 bytes, its header says");
        assert_int_equal(truncate(path, 50), 0);
        expect_refused("is truncated (50 bytes, shorter than an SQLite header)");
}

static void test_damaged(void **state) {
        struct ledger *l = open_ok();
        node_set(l, "physical=64G", "reserve=1G");
        for (int i = 0; i < 40; i++) {
                char name[16];
                snprintf(name, sizeof(name), "vm%d", i);
                add_vm(l, name, "128M", "256M");
        }
        ledger_close(l);
        /* Garbage over the middle of page 3: the header is fine, only quick_check sees it. */
        int fd = open(path, O_WRONLY);
        char junk[512];
        memset(junk, 0xa5, sizeof(junk));
        assert_int_equal(pwrite(fd, junk, sizeof(junk), 2 * 4096 + 1024), (ssize_t) sizeof(junk));
        close(fd);
        expect_refused("is damaged or truncated");
}

static void test_newer_schema(void **state) {
        struct ledger *l = open_ok();
        node_set(l, "physical=8G", "reserve=1G");
        ledger_close(l);
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        char want[96];
        snprintf(want, sizeof(want), "has schema version 99 but this build knows versions up to %d", LEDGER_SCHEMA_VERSION);
        expect_refused(want);
}

static void test_foreign_sqlite(void **state) {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        expect_refused("is an SQLite database but not a ppn ledger");
}

static void test_missing_read_only(void **state) {
        struct ledger_options o = { .read_only = true };
        struct ledger *l = NULL;
        struct ppn_error e = {};
        assert_int_equal(ledger_open(path, &o, &l, &e), -ENOENT);
        assert_non_null(strstr(e.msg, "does not exist"));
        assert_int_equal(access(path, F_OK), -1);   /* not created */
}

/* A ledger written by the schema-1 build (its exact DDL and a row): opened, it is migrated in
 * place, keeps its VM (vmem off, no base), audits nothing, and takes a layout afterwards. */
static void test_migrates_from_v1(void **state) {
        static const char v1[] =
                "CREATE TABLE node (id INTEGER PRIMARY KEY CHECK (id = 1), physical_bytes INTEGER, reserve_bytes INTEGER, min_floor_bytes INTEGER);"
                "INSERT INTO node (id, physical_bytes, reserve_bytes) VALUES (1, 17179869184, 1073741824);"
                "CREATE TABLE vm (name TEXT PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, min_bytes INTEGER NOT NULL, max_bytes INTEGER NOT NULL,"
                "  shares INTEGER NOT NULL, cpu_weight INTEGER NOT NULL, vcpus INTEGER NOT NULL, qmp TEXT, disks TEXT NOT NULL DEFAULT '[]',"
                "  qemu_args TEXT NOT NULL DEFAULT '[]', override_target_bytes INTEGER, override_expires INTEGER);"
                "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time_usec INTEGER NOT NULL, uid INTEGER NOT NULL,"
                "  vm TEXT, field TEXT NOT NULL, old TEXT, new TEXT);"
                "CREATE INDEX audit_vm ON audit (vm, id);"
                "INSERT INTO vm (name, uuid, min_bytes, max_bytes, shares, cpu_weight, vcpus) VALUES"
                "  ('old', '0b5b0a58-2f5e-4d0b-9a55-6a3f8b1c2d3e', 1073741824, 4294967296, 1000, 100, 1);"
                "PRAGMA user_version = 1;";
        struct ledger_audit *a = NULL;
        struct ledger_vm vm;
        struct ppn_error e = {};
        size_t n = 0;
        sqlite3 *db;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        struct ledger *l = open_ok();
        must(ledger_vm_get(l, "old", &vm, &e), &e);
        assert_false(vm.vmem);
        assert_int_equal(vm.base_bytes, 0);
        assert_int_equal(ledger_vm_boot_bytes(&vm), 4 * GIB);
        ledger_vm_done(&vm);
        must(ledger_history(l, NULL, &a, &n, &e), &e);
        assert_int_equal(n, 0);
        ledger_audit_free(a, n);
        const char *pairs[] = { "base=1G", "vmem=on" };
        must(ledger_vm_set(l, "old", pairs, 2, 4242, &e), &e);
        must(ledger_vm_get(l, "old", &vm, &e), &e);
        assert_true(vm.vmem);
        assert_int_equal(vm.base_bytes, GIB);
        assert_int_equal(ledger_vm_region_bytes(&vm), 3 * GIB);
        ledger_vm_done(&vm);
        must(ledger_history(l, "old", &a, &n, &e), &e);
        assert_int_equal(n, 2);
        assert_string_equal(a[0].field, "base");
        assert_null(a[0].old_value);
        assert_string_equal(a[0].new_value, "1073741824");
        assert_string_equal(a[1].field, "vmem");
        assert_null(a[1].old_value);
        assert_string_equal(a[1].new_value, "on");
        ledger_audit_free(a, n);
        /* Refused: vmem off with a base left; nothing changes. */
        const char *off[] = { "vmem=off" };
        assert_int_equal(ledger_vm_set(l, "old", off, 1, 4242, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "applies only with a virtio-mem region"));
        ledger_close(l);
}

static void test_migrates_and_reopens(void **state) {
        struct ledger *l = open_ok();
        add_vm(l, "a", "1G", "1G");   /* physical from /proc/meminfo: this machine has ≥ 2 GiB */
        ledger_close(l);
        l = open_ok();
        struct ppn_error e = {};
        must(ledger_integrity_check(l, &e), &e);
        ledger_close(l);
        sqlite3 *db;
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(s, 0), LEDGER_SCHEMA_VERSION);
        sqlite3_finalize(s);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *) sqlite3_column_text(s, 0), "wal");
        sqlite3_finalize(s);
        sqlite3_close(db);
}

/* Schema 1 -> 2: a ledger written before libvirt domains is migrated on the next write open,
 * its VMs kept (no domain); a domain then round-trips, and qmp with libvirt is refused. */
static void test_migrates_libvirt_column(void **state) {
        struct ledger *l = open_ok();
        add_vm(l, "a", "256M", "512M");
        ledger_close(l);
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        /* The schema just before the libvirt column (migration 3 -> 4). */
        assert_int_equal(sqlite3_exec(db, "ALTER TABLE vm DROP COLUMN libvirt_domain; PRAGMA user_version = 3",
                                      NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);

        l = open_ok();
        struct ledger_state *st = NULL;
        struct ppn_error e = {};
        must(ledger_load(l, &st, &e), &e);
        assert_int_equal(st->n_vms, 1);
        assert_null(st->vms[0].libvirt);
        ledger_state_free(st);
        const char *pairs[] = { "libvirt=web-dom.1" };
        must(ledger_vm_set(l, "a", pairs, 1, 0, &e), &e);
        must(ledger_load(l, &st, &e), &e);
        assert_string_equal(st->vms[0].libvirt, "web-dom.1");
        ledger_state_free(st);
        const char *both[] = { "qmp=/run/a.qmp" };
        assert_int_equal(ledger_vm_set(l, "a", both, 1, 0, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "a VM is reached one way"));
        const char *slash[] = { "libvirt=a/b" };
        assert_int_equal(ledger_vm_set(l, "a", slash, 1, 0, &e), -EINVAL);
        assert_non_null(strstr(e.msg, "has a '/'"));
        ledger_close(l);
}

/* A writer that holds the lock: waited out (no error), or after busy_timeout_ms our words,
 * never SQLite's "database is locked". The lock is held by another process for 300 ms. */
static void hold_lock_in_child(unsigned ms, int *ret_pid) {
        int p[2];
        char c;
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                sqlite3 *db;
                if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
                        _exit(1);
                if (write(p[1], "x", 1) != 1)
                        _exit(1);
                usleep(ms * 1000);
                sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
                sqlite3_close(db);
                _exit(0);
        }
        close(p[1]);
        assert_int_equal(read(p[0], &c, 1), 1);
        close(p[0]);
        *ret_pid = pid;
}

static void test_lock_waited_out(void **state) {
        struct ledger *l = open_ok(), *impatient;
        struct ledger_options o = { .busy_timeout_ms = 100 };
        struct ppn_error e = {};
        const char *pairs[] = { "physical=4G" };
        int pid, status;

        must(ledger_open(path, &o, &impatient, &e), &e);
        hold_lock_in_child(300, &pid);
        uint64_t t0 = now_usec();
        assert_int_equal(ledger_node_set(impatient, pairs, 1, 0, &e), -EBUSY);
        assert_non_null(strstr(e.msg, "stayed locked by another writer for 100 ms; try again"));
        assert_null(strstr(e.msg, "database is locked"));
        must(ledger_node_set(l, pairs, 1, 0, &e), &e);   /* default 10 s: waits for the holder */
        uint64_t waited = now_usec() - t0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        assert_true(waited >= 250000);
        struct ledger_node n;
        must(ledger_node_get(l, &n, &e), &e);
        assert_int_equal(n.physical_bytes, 4 * GIB);
        ledger_close(impatient);
        ledger_close(l);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_assign_table),
                cmocka_unit_test(test_assign_values),
                cmocka_unit_test(test_name_table),
                cmocka_unit_test(test_validate_table),
                cmocka_unit_test(test_validate_layout_table),
                cmocka_unit_test(test_validate_ranges_and_override),
                cmocka_unit_test(test_node_defaults),
                cmocka_unit_test(test_uuid),
                cmocka_unit_test(test_json_roundtrip),
                T(test_crud_and_audit),
                T(test_remove_unchanged),
                T(test_add_keeps_given_uuid),
                T(test_refusals_change_nothing),
                T(test_override_lease),
                T(test_changed),
                T(test_lock_waited_out),
                T(test_meminfo_default),
                T(test_export_import),
                T(test_not_sqlite),
                T(test_truncated),
                T(test_damaged),
                T(test_newer_schema),
                T(test_foreign_sqlite),
                T(test_missing_read_only),
                T(test_migrates_and_reopens),
                T(test_migrates_from_v1),
                T(test_migrates_libvirt_column),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
