/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl: the operator's CLI. Wiring only: global options, a command table, dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "ppnctl.h"

struct ctl_command {
        const char *name;
        ctl_handler run;
        const char *usage;
        const char *help;
        const struct ctl_subcommand *subcommands;       /* groups: their table; NULL for a command */
};

/* Keep sorted by name; usage() is generated from this table. */
static const struct ctl_command commands[] = {
        { "adopt", ctl_adopt, "adopt VM --qmp PATH | --libvirt DOMAIN",
          "take over a QEMU started elsewhere, or a libvirt domain" },
        { "balloon", ctl_balloon, "balloon VM SIZE [--for DURATION]", "hold a VM at SIZE: an override lease (refused below its minimum)" },
        { "events", ctl_events, "events [--follow] [--json]", "recent controller decisions with reasons" },
        { "export", ctl_export, "export VM DIR", "copy a stopped VM's images + manifest (sha256) to DIR" },
        { "fleet", ctl_fleet, "fleet [list] [--json] | trust ID FINGERPRINT", "the fleet in etcd: nodes, their capacity and staleness, grants as this node judges them; pair with a node", ctl_fleet_commands },
        { "grant", ctl_grant, "grant revoke ID", "revoke a grant this node made (signed; every node drops it)", ctl_grant_commands },
        { "history", ctl_history, "history VM [--since DURATION] [--json]", "a VM's recent samples (target, actual, guest available) and decisions" },
        { "import", ctl_import, "import DIR [--image-dir DIR]", "verify an archive, admit and register it here" },
        { "ledger", ctl_ledger, "ledger history [VM]|export|import FILE|check", "audit log; the ledger as JSON", ctl_ledger_commands },
        { "lend", ctl_lend, "lend BORROWER SIZE --for DURATION", "reserve SIZE of this node's pool for node BORROWER's VMs and publish a signed grant" },
        { "move", ctl_move, "move VM --to DIR [--timeout S] | move VM --to NODE --live [--grant ID] [--max-bandwidth SIZE] [--json]", "cold: stop + export + verify, then remove the entry; --live: QEMU live migration to a node" },
        { "node", ctl_node, "node set KEY=VALUE... | show | init | id", "node settings: physical, reserve, min-floor; the node's fleet identity", ctl_node_commands },
        { "plot", ctl_plot, "plot [VM...] [--since DURATION] --output FILE.svg [--input FILE.json]", "draw memory over time as an SVG: target, actual, guest use, minimum, decisions" },
        { "pool", ctl_pool, "pool [--json]", "capacity: physical, reserve, reserved min, available, committed, free" },
        { "release", ctl_release, "release VM", "end a VM's override lease: the controller resumes" },
        { "start", ctl_start, "start VM [--paused] [--dry-run] [--no-deflate-on-oom] [--no-free-page-reporting]", "boot QEMU from the ledger entry: balloon device, cgroup and weight before the vCPUs run" },
        { "status", ctl_status, "status [--json]", "every VM: state, min, target, actual, guest available, weight, reason" },
        { "stop", ctl_stop, "stop VM [--timeout S]", "ACPI powerdown, quit after the timeout" },
        { "vm", ctl_vm, "vm add|set|remove|show|list|import-libvirt ...", "VM entries: min, max, shares, cpu-weight, ...", ctl_vm_commands },
        {},
};

/* Everything fits 80 columns: names in a 10-column field, help wrapped under itself. */
static void usage(FILE *f) {
        fprintf(f,
                "usage: ppnctl [--config PATH] [--ledger PATH] [--socket PATH] [--json] [--bytes]\n"
                "              COMMAND [ARGS...]\n"
                "       ppnctl COMMAND --help\n"
                "\n"
                "global options:\n"
                "  --config PATH   ppnd's config file, for node settings (env PPN_CONFIG)\n"
                "                  default %s if it exists\n"
                "  --ledger PATH   ledger database (env PPN_LEDGER, config [ledger] path)\n"
                "                  default %s\n"
                "  --socket PATH   ppnd control socket (env PPN_SOCKET, config [control] socket)\n"
                "                  default %s\n"
                "  --json          machine-readable output, sizes in bytes\n"
                "  --bytes         sizes as exact byte counts instead of 512M, 1.5G\n"
                "  --version, --help\n"
                "\n"
                "Settings: an option overrides its environment variable, which overrides the\n"
                "config file, which overrides the built-in default (node settings: ppnctl(8)).\n"
                "\n"
                "commands:\n",
                PPN_DEFAULT_CONFIG, PPN_DEFAULT_LEDGER, PPN_DEFAULT_SOCKET);
        for (size_t i = 0; commands[i].name; i++) {
                fprintf(f, "  %-9s", commands[i].name);
                ctl_print_wrapped(f, commands[i].help, 12, 11);
        }
        fprintf(f, "\nexit status: 0 success, 1 refused or failed, 2 usage error\n");
}

/* `ppnctl COMMAND --help`, from the table: the usage (each subcommand's for a group) and what
 * the command is for. */
static int command_help(const struct ctl_command *c) {
        if (c->subcommands)
                ctl_print_subcommands(stdout, c->subcommands);
        else
                ctl_print_usage(c->usage);
        putchar('\n');
        ctl_print_wrapped(stdout, c->help, 0, 0);
        return CTL_OK;
}

static bool is_help(const char *a) {
        return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* "--NAME VALUE" or "--NAME=VALUE" for the options with a value; 1 if a matched, 0 if not,
 * -1 if its value is missing. */
static int option_value(const char *name, int argc, char **argv, int *i, const char **ret) {
        const char *a = argv[*i];
        size_t n = strlen(name);

        if (strncmp(a, name, n) != 0)
                return 0;
        if (a[n] == '=') {
                *ret = a + n + 1;
                return 1;
        }
        if (a[n] != '\0')
                return 0;
        if (*i + 1 >= argc)
                return -1;
        *ret = argv[++*i];
        return 1;
}

/* Returns -1 to go on with *ret_i at the command, else the exit status. */
static int parse_globals(int argc, char **argv, struct ctl_globals *g, const char **config, bool *exact, int *ret_i) {
        int i;

        for (i = 1; i < argc && argv[i][0] == '-'; i++) {
                const char *a = argv[i];
                int r;
                if (strcmp(a, "--version") == 0) {
                        printf("ppnctl %s\n", PPN_VERSION);
                        return CTL_OK;
                } else if (is_help(a)) {
                        usage(stdout);
                        return CTL_OK;
                } else if (strcmp(a, "--json") == 0) {
                        g->json = true;
                } else if (strcmp(a, "--bytes") == 0) {
                        *exact = true;
                } else if ((r = option_value("--ledger", argc, argv, &i, &g->ledger)) == 0 &&
                           (r = option_value("--socket", argc, argv, &i, &g->socket)) == 0 &&
                           (r = option_value("--config", argc, argv, &i, config)) == 0) {
                        fprintf(stderr, "ppnctl: unknown option '%s'; see 'ppnctl --help'\n", a);
                        return CTL_USAGE;
                } else if (r < 0) {
                        fprintf(stderr, "ppnctl: option '%s' needs a value; see 'ppnctl --help'\n", a);
                        return CTL_USAGE;
                }
        }
        *ret_i = i;
        return -1;
}

int main(int argc, char **argv) {
        _cleanup_config_ struct ppn_config *cfg = NULL;
        struct ctl_globals g = {};
        const char *config = getenv("PPN_CONFIG");
        bool exact = false;
        int i, r;

        log_set_ident("ppnctl");
        if (config && !*config)
                config = NULL;
        r = parse_globals(argc, argv, &g, &config, &exact, &i);
        if (r >= 0)
                return r;
        if (i >= argc) {
                usage(stderr);
                return CTL_USAGE;
        }
        ctl_output_setup(exact);
        for (size_t c = 0; commands[c].name; c++) {
                if (strcmp(argv[i], commands[c].name) != 0)
                        continue;
                /* A group's subcommands answer --help themselves; a command does it anywhere. */
                for (int k = i + 1; k < argc && (k == i + 1 || !commands[c].subcommands); k++)
                        if (is_help(argv[k]))
                                return command_help(&commands[c]);
                if (ctl_config_load(config, PPN_DEFAULT_CONFIG, &cfg))
                        return CTL_FAILED;
                ctl_settings_resolve(&g, cfg, getenv);
                return commands[c].run(&g, argc - i, argv + i);
        }
        fprintf(stderr, "ppnctl: unknown command '%s'; see 'ppnctl --help'\n", argv[i]);
        return CTL_USAGE;
}
