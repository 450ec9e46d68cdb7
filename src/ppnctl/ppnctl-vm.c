/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl vm add|set|remove|show|list: VM entries in the ledger. */
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ledger.h"
#include "ppnctl.h"

#define ADD_USAGE "vm add NAME --min SIZE --max SIZE [--base SIZE] [--shares N] [--cpu-weight N] [--vcpus N] " \
                  "[--qmp PATH | --libvirt DOMAIN] [--disk PATH]... [--qemu-arg ARG]..."
#define SET_USAGE "vm set NAME KEY=VALUE... (keys: min max base vmem shares cpu-weight vcpus qmp libvirt disks qemu-args)"
#define SHOW_USAGE "vm show NAME [--json]"
#define LIST_USAGE "vm list [--json]"
#define REMOVE_USAGE "vm remove NAME"

static int vm_add(const struct ctl_globals *g, int argc, char **argv) {
        static const struct option opts[] = {
                { "min", required_argument, NULL, 0 },      { "max", required_argument, NULL, 0 },
                { "shares", required_argument, NULL, 0 },   { "cpu-weight", required_argument, NULL, 0 },
                { "vcpus", required_argument, NULL, 0 },    { "qmp", required_argument, NULL, 0 },
                { "disk", required_argument, NULL, 0 },     { "qemu-arg", required_argument, NULL, 0 },
                { "base", required_argument, NULL, 0 },     { "libvirt", required_argument, NULL, 0 },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        _cleanup_(ledger_vm_done) struct ledger_vm vm = {};
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        char uuid[LEDGER_UUID_LEN + 1];
        int c, idx, r;

        ledger_vm_init(&vm);
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
                if (c == 'h') {
                        ctl_print_usage(ADD_USAGE);
                        return CTL_OK;
                }
                if (c == '?')
                        return ctl_usage_error("vm add", ADD_USAGE, "unknown option or missing value '%s'",
                                               argv[optind - 1]);
                if (ledger_vm_assign(&vm, opts[idx].name, optarg, &e) < 0)
                        return ctl_usage_error("vm add", ADD_USAGE, "%s", e.msg);
                /* --base is the boot memory; the rest up to max is the virtio-mem region. */
                if (strcmp(opts[idx].name, "base") == 0)
                        vm.vmem = vm.base_bytes != 0;
        }
        if (optind != argc - 1)
                return ctl_usage_error("vm add", ADD_USAGE, "expected one NAME, got %d", argc - optind);
        if (!vm.min_bytes || !vm.max_bytes)
                return ctl_usage_error("vm add", ADD_USAGE, "--min and --max are required");
        if (strlen(argv[optind]) >= sizeof(vm.name) || !ledger_name_valid(argv[optind]))
                return ctl_usage_error("vm add", ADD_USAGE, "vm name '%s' is not valid: use 1–63 characters "
                                       "from a-z 0-9 _ . - starting with a letter or digit (e.g. web-1)",
                                       argv[optind]);
        snprintf(vm.name, sizeof(vm.name), "%s", argv[optind]);
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

static int vm_set(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        bool json = false;
        int r = ctl_parse_plain("vm set", SET_USAGE, false, &argc, argv, &json);

        if (r >= 0)
                return r;
        if (argc < 3)
                return ctl_usage_error("vm set", SET_USAGE, "expected NAME and at least one KEY=VALUE");
        for (int i = 2; i < argc; i++) {
                /* Syntax and values are checked before the ledger is opened: a typo is a usage error. */
                _cleanup_(ledger_vm_done) struct ledger_vm scratch = {};
                ledger_vm_init(&scratch);
                if (ledger_vm_assign_pair(&scratch, argv[i], &e) < 0)
                        return ctl_usage_error("vm set", SET_USAGE, "%s", e.msg);
                if (key_repeated(argv + 2, i - 2))
                        return ctl_usage_error("vm set", SET_USAGE, "key '%.*s' given twice; give each key once",
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
        return CTL_FAILED;
}

static int vm_remove(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        bool json = false;
        int r = ctl_parse_plain("vm remove", REMOVE_USAGE, false, &argc, argv, &json);

        if (r >= 0)
                return r;
        if (argc != 2)
                return ctl_usage_error("vm remove", REMOVE_USAGE, "expected one NAME");
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

static int vm_show(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_(ledger_vm_done) struct ledger_vm vm = {};
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        bool json = g->json;
        int r = ctl_parse_plain("vm show", SHOW_USAGE, true, &argc, argv, &json);

        if (r >= 0)
                return r;
        if (argc != 2)
                return ctl_usage_error("vm show", SHOW_USAGE, "expected one NAME");
        r = ctl_open_ledger(g, false, &l);
        if (r)
                return r;
        r = ledger_vm_get(l, argv[1], &vm, &e);
        if (r < 0)
                return ctl_fail(&e, r);
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
                       ctl_fit(vm->name, name_w, name, sizeof(name)), size_w, ctl_size((int64_t) vm->min_bytes, a, sizeof(a)),
                       size_w, ctl_size((int64_t) vm->max_bytes, b, sizeof(b)), vm->shares, vm->cpu_weight, vm->vcpus);
        }
}

static int vm_list(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        bool json = g->json;
        int r = ctl_parse_plain("vm list", LIST_USAGE, true, &argc, argv, &json);

        if (r >= 0)
                return r;
        if (argc != 1)
                return ctl_usage_error("vm list", LIST_USAGE, "unexpected argument '%s'", argv[1]);
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

const struct ctl_subcommand ctl_vm_commands[] = {
        { "add", vm_add, ADD_USAGE },
        { "import-libvirt", ctl_vm_import_libvirt, IMPORT_LIBVIRT_USAGE },
        { "list", vm_list, LIST_USAGE },
        { "remove", vm_remove, REMOVE_USAGE },
        { "set", vm_set, SET_USAGE },
        { "show", vm_show, SHOW_USAGE },
        {},
};

int ctl_vm(const struct ctl_globals *g, int argc, char **argv) {
        return ctl_dispatch("vm", ctl_vm_commands, g, argc, argv);
}
