/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl vm add|set|remove|show|list: VM entries in the ledger. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ledger.h"
#include "ppnctl.h"

static int vm_add(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(ledger_vm_done) struct ledger_vm vm = {};
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        char uuid[LEDGER_UUID_LEN + 1];
        const char *name = args->argv[1];
        int r;

        ledger_vm_init(&vm);
        /* In the order given: --disk and --qemu-arg add one item each. */
        for (size_t i = 0; i < args->n_given; i++) {
                if (ledger_vm_assign(&vm, args->given[i].opt->name, args->given[i].value, &e) < 0)
                        return ctl_usage_error(args, "%s", e.msg);
                /* --base is the boot memory; the rest up to max is the virtio-mem region. */
                if (strcmp(args->given[i].opt->name, "base") == 0)
                        vm.vmem = vm.base_bytes != 0;
        }
        if (!vm.min_bytes || !vm.max_bytes)
                return ctl_usage_error(args, "--min and --max are required");
        if (strlen(name) >= sizeof(vm.name) || !ledger_name_valid(name))
                return ctl_usage_error(args, "vm name '%s' is not valid: use 1–63 characters "
                                       "from a-z 0-9 _ . - starting with a letter or digit (e.g. web-1)",
                                       name);
        snprintf(vm.name, sizeof(vm.name), "%s", name);
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_vm_add(l, &vm, getuid(), uuid, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        printf("vm '%s' added (uuid %s)\n", vm.name, uuid);
        return CTL_OK;
}

/* True if pair i's key (before '=') was given earlier in pairs; "disk" and "qemu-arg" add one
 * item each and may repeat. */
static bool key_repeated(char **pairs, int i) {
        size_t len = strcspn(pairs[i], "=");

        if ((len == 4 && strncmp(pairs[i], "disk", 4) == 0) || (len == 8 && strncmp(pairs[i], "qemu-arg", 8) == 0))
                return false;
        for (int j = 0; j < i; j++)
                if (strcspn(pairs[j], "=") == len && strncmp(pairs[j], pairs[i], len) == 0)
                        return true;
        return false;
}

static int vm_set(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        char **argv = args->argv;
        int argc = args->argc;
        int r;

        for (int i = 2; i < argc; i++) {
                /* Syntax and values are checked before the ledger is opened: a typo is a usage error. */
                _cleanup_(ledger_vm_done) struct ledger_vm scratch = {};
                ledger_vm_init(&scratch);
                if (ledger_vm_assign_pair(&scratch, argv[i], &e) < 0)
                        return ctl_usage_error(args, "%s", e.msg);
                if (key_repeated(argv + 2, i - 2))
                        return ctl_usage_error(args, "key '%.*s' given twice; give each key once",
                                               (int) strcspn(argv[i], "="), argv[i]);
        }
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_vm_set(l, argv[1], (const char *const *) argv + 2, (size_t) (argc - 2), getuid(), &e);
        return r < 0 ? ctl_fail(&e, r) : CTL_OK;
}

/* A running VM's memory is in use: removing its entry would drop it from `committed` while
 * QEMU still holds it, and later admissions would overcommit the host. */
static int refuse_if_running(const struct ctl_globals *g, struct ledger *l, const char *name) {
        struct ledger_vm vm = { 0 };
        struct ppn_error e = {};
        int r = ledger_vm_get(l, name, &vm, &e);

        if (r < 0)
                return ctl_fail(&e, r);
        r = ctl_vm_running(g, &vm);
        ledger_vm_done(&vm);
        if (r < 0)
                return ctl_fail(NULL, r);
        if (r == 0)
                return CTL_OK;
        fprintf(stderr, "ppnctl: refused: vm '%s' is running (its QEMU answers on its monitor socket), so its "
                "memory is still in use and stays committed; stop it first (ppnctl stop %s), then remove it\n",
                name, name);
        return CTL_ERR_FAILED;
}

static int vm_remove(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        char **argv = args->argv;
        int r;

        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = refuse_if_running(g, l, argv[1]);
        if (r)
                return r;
        r = ledger_vm_remove(l, argv[1], getuid(), &e);
        if (r < 0)
                return ctl_fail(&e, r);
        printf("vm '%s' removed\n", argv[1]);
        return CTL_OK;
}

static void print_list(const char *label, char **l, const char *sep) {
        printf("%-11s ", label);
        if (!l)
                printf("-");
        for (size_t i = 0; l && l[i]; i++)
                printf("%s%s", i ? sep : "", l[i]);
        printf("\n");
}

static void print_vm(const struct ledger_vm *vm) {
        char a[32], b[32];
        printf("%-11s %s\n%-11s %s\n", "name", vm->name, "uuid", vm->uuid);
        printf("%-11s %s\n%-11s %s\n", "min", ctl_size((int64_t) vm->min_bytes, a, sizeof(a)), "max",
               ctl_size((int64_t) vm->max_bytes, b, sizeof(b)));
        if (vm->vmem)
                printf("%-11s %s boot + virtio-mem region %s\n", "memory",
                       ctl_size((int64_t) ledger_vm_boot_bytes(vm), a, sizeof(a)),
                       ctl_size((int64_t) ledger_vm_region_bytes(vm), b, sizeof(b)));
        else
                printf("%-11s %s boot, balloon only\n", "memory", ctl_size((int64_t) vm->max_bytes, a, sizeof(a)));
        printf("%-11s %" PRIu32 "\n%-11s %" PRIu32 "\n%-11s %" PRIu32 "\n", "shares", vm->shares, "cpu-weight",
               vm->cpu_weight, "vcpus", vm->vcpus);
        printf("%-11s %s\n", "qmp", vm->qmp ? vm->qmp : "-");
        if (vm->libvirt)
                printf("%-11s %s\n", "libvirt", vm->libvirt);
        print_list("disks", vm->disks, ", ");
        print_list("qemu-args", vm->qemu_args, " ");
        if (vm->override_set) {
                time_t t = (time_t) vm->override_expires;
                struct tm tm;
                char when[32];
                strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%SZ", gmtime_r(&t, &tm));
                printf("%-11s %s until %s\n", "override", ctl_size((int64_t) vm->override_target_bytes, a, sizeof(a)),
                       when);
        } else
                printf("%-11s none\n", "override");
}

static int vm_show(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(ledger_vm_done) struct ledger_vm vm = {};
        _cleanup_ledger_ struct ledger *l = NULL;
        bool json = args->json;
        char **argv = args->argv;
        int r;

        r = ctl_open_vm(g, false, argv[1], &l, &vm);
        if (r)
                return r;
        if (json)
                ctl_print_json(ledger_vm_to_json(&vm));
        else
                print_vm(&vm);
        return CTL_OK;
}

/* NAME is as wide as the longest name, cut (with "…") only where the row would pass the
 * table width: the other columns take 43 (53 with exact sizes, up to 13 digits each). */
static void print_table(const struct ledger_state *st) {
        int size_w = ctl_exact_sizes() ? 13 : 8;
        size_t name_w = 4, avail = ctl_columns() - 27 - 2 * (size_t) size_w;

        for (size_t i = 0; i < st->n_vms; i++)
                if (strlen(st->vms[i].name) > name_w)
                        name_w = strlen(st->vms[i].name);
        if (name_w > avail)
                name_w = avail;
        printf("%s%-*s %*s %*s %7s %10s %5s%s\n", ctl_sgr(stdout, CTL_SGR_BOLD), (int) name_w, "NAME", size_w, "MIN",
               size_w, "MAX",
               "SHARES", "CPU-WEIGHT", "VCPUS", ctl_sgr(stdout, CTL_SGR_RESET));
        for (size_t i = 0; i < st->n_vms; i++) {
                char a[32], b[32], name[256];
                const struct ledger_vm *vm = &st->vms[i];
                printf("%-*s %*s %*s %7" PRIu32 " %10" PRIu32 " %5" PRIu32 "\n", (int) name_w,
                       text_fit(vm->name, name_w, name, sizeof(name)), size_w, ctl_size((int64_t) vm->min_bytes, a, sizeof(a)),
                       size_w, ctl_size((int64_t) vm->max_bytes, b, sizeof(b)), vm->shares, vm->cpu_weight, vm->vcpus);
        }
}

static int vm_list(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        bool json = args->json;
        int r;

        r = ctl_load_state(g, false, &st);
        if (r)
                return r;
        if (json) {
                struct json_object *a = json_object_new_array();
                for (size_t i = 0; i < st->n_vms; i++)
                        json_object_array_add(a, ledger_vm_to_json(&st->vms[i]));
                ctl_print_json(a);
                return CTL_OK;
        }
        print_table(st);
        return CTL_OK;
}

static const struct ctl_option add_options[] = {
        { "min", 0, "SIZE", "the guaranteed minimum (e.g. 1G); required" },
        { "max", 0, "SIZE", "the most it may get, and its memory size; required" },
        { "base", 0, "SIZE", "boot memory; the rest up to max is a virtio-mem region" },
        { "shares", 0, "N", "its weight for spare memory, 1-100000 (default 1000)" },
        { "cpu-weight", 0, "N", "its cgroup cpu.weight, 1-10000 (default 100)" },
        { "vcpus", 0, "N", "virtual CPUs (default 1)" },
        { "qmp", 0, "PATH", "the QMP socket of a QEMU started elsewhere" },
        { "libvirt", 0, "DOMAIN", "a libvirt domain instead of a QEMU of ppnd's own" },
        { "disk", 0, "PATH", "a disk image; repeat for more" },
        { "qemu-arg", 0, "ARG", "one more QEMU argument; repeat for more" },
        {},
};

const struct ctl_command ctl_vm_commands[] = {
        { .name = "add", .run = vm_add,
          .usage = "vm add NAME --min SIZE --max SIZE [--base SIZE] [--shares N] [--cpu-weight N] [--vcpus N] "
                   "[--qmp PATH | --libvirt DOMAIN] [--disk PATH]... [--qemu-arg ARG]...",
          .help = "add a VM entry: admitted only if its minimum fits the pool", .options = add_options,
          .min_args = 1, .max_args = 1, .args_error = "expected one NAME" },
        { .name = "import-libvirt", .run = ctl_vm_import_libvirt, .usage = "vm import-libvirt [--uri URI] [--apply] [--json]",
          .help = "list the libvirt domains ppnd could manage; with --apply, add them",
          .options = (const struct ctl_option[]) {
                  { "uri", 0, "URI", "the libvirt connection (default: the [libvirt] uri setting)" },
                  { "apply", 0, NULL, "add the entries (without it: only show them)" },
                  {} },
          .json = true, .args_error = "no arguments expected" },
        { .name = "list", .run = vm_list, .usage = "vm list [--json]", .help = "every VM entry", .json = true },
        { .name = "remove", .run = vm_remove, .usage = "vm remove NAME", .help = "remove a stopped VM's entry",
          .min_args = 1, .max_args = 1, .args_error = "expected one NAME" },
        { .name = "set", .run = vm_set, .usage = "vm set NAME KEY=VALUE...",
          .note = "(keys: min max base vmem shares cpu-weight vcpus qmp libvirt disks qemu-args)",
          .help = "change a VM entry, all keys in one transaction (refused if a reservation breaks)",
          .min_args = 2, .max_args = -1, .args_error = "expected NAME and at least one KEY=VALUE" },
        { .name = "show", .run = vm_show, .usage = "vm show NAME [--json]", .help = "one VM entry",
          .min_args = 1, .max_args = 1, .args_error = "expected one NAME", .json = true },
        {},
};
