/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl: the operator's CLI. Wiring only: global options, a command table, dispatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "ppnctl.h"

#define DURATION_EXAMPLES "(90s, 10m, 2h)"

/* Keep sorted by name; usage(), `ppnctl COMMAND --help` and usage errors come from this table,
 * and tests/test-cli.sh checks it against ppnctl(8). */
const struct ctl_command ctl_commands[] = {
        { .name = "adopt", .run = ctl_adopt, .usage = "adopt VM --qmp PATH | --libvirt DOMAIN",
          .help = "take over a QEMU started elsewhere, or a libvirt domain",
          .options = (const struct ctl_option[]) {
                  { "qmp", 0, "PATH", "the running QEMU's QMP socket (an absolute path)" },
                  { "libvirt", 0, "DOMAIN", "the libvirt domain to hand over to ppnd" },
                  {} },
          .min_args = 1, .max_args = 1,
          .args_error = "expected one VM name and either --qmp PATH or --libvirt DOMAIN" },
        { .name = "balloon", .run = ctl_balloon, .usage = "balloon VM SIZE [--for DURATION]",
          .help = "hold a VM at SIZE: an override lease (refused below its minimum)",
          .options = (const struct ctl_option[]) {
                  { "for", 0, "DURATION", "the lease's length, 1s to 366d " DURATION_EXAMPLES "; default 10m" },
                  {} },
          .min_args = 2, .max_args = 2, .args_error = "need a VM and a size" },
        { .name = "events", .run = ctl_events, .usage = "events [--follow] [--json]",
          .help = "recent controller decisions with reasons",
          .options = (const struct ctl_option[]) {
                  { "follow", 'f', NULL, "keep printing decisions as ppnd makes them" },
                  {} },
          .json = true },
        { .name = "export", .run = ctl_export, .usage = "export VM DIR",
          .help = "copy a stopped VM's images + manifest (sha256) to DIR",
          .min_args = 2, .max_args = 2, .args_error = "expected a VM name and a directory" },
        { .name = "fleet", .subcommands = ctl_fleet_commands, .default_sub = "list",
          .help = "the fleet in etcd: nodes, their capacity and staleness, grants as this node judges them; "
                  "pair with a node" },
        { .name = "grant", .subcommands = ctl_grant_commands,
          .help = "revoke a grant this node made (signed; every node drops it)" },
        { .name = "history", .run = ctl_history, .usage = "history VM [--since DURATION] [--json]",
          .help = "a VM's recent samples (target, actual, guest available) and decisions",
          .options = (const struct ctl_option[]) {
                  { "since", 0, "DURATION", "how far back, at least 1s " DURATION_EXAMPLES "; default 10m" },
                  {} },
          .min_args = 1, .max_args = 1, .args_error = "expected one VM name", .json = true },
        { .name = "import", .run = ctl_import, .usage = "import DIR [--image-dir DIR]",
          .help = "verify an archive, admit and register it here",
          .options = (const struct ctl_option[]) {
                  { "image-dir", 0, "DIR", "where the images go (default: the [qemu] image-dir setting)" },
                  {} },
          .min_args = 1, .max_args = 1, .args_error = "expected one archive directory" },
        { .name = "ledger", .subcommands = ctl_ledger_commands, .help = "audit log; the ledger as JSON" },
        { .name = "lend", .run = ctl_lend, .usage = "lend BORROWER SIZE --for DURATION",
          .help = "reserve SIZE of this node's pool for node BORROWER's VMs and publish a signed grant",
          .options = (const struct ctl_option[]) {
                  { "for", 0, "DURATION", "how long the grant lasts, 1s to 366d (required)" },
                  {} },
          .min_args = 2, .max_args = 2, .args_error = "expected a borrower, a size and --for" },
        { .name = "move", .run = ctl_move,
          .usage = "move VM --to DIR [--timeout SECONDS] | "
                   "move VM --to NODE --live [--grant ID] [--max-bandwidth SIZE] [--json]",
          .help = "cold: stop + export + verify, then remove the entry; --live: QEMU live migration to a node",
          .options = (const struct ctl_option[]) {
                  { "to", 0, "DIR|NODE", "the archive directory (cold) or the node id (live)" },
                  { "timeout", 0, "SECONDS", "cold: how long the guest has to power down (default 60s)" },
                  { "live", 0, NULL, "migrate the running VM to another node" },
                  { "grant", 0, "ID", "live: the grant on the destination that admits it" },
                  { "max-bandwidth", 0, "SIZE", "live: bytes per second at most (e.g. 100M)" },
                  {} },
          .min_args = 1, .max_args = 1, .args_error = "expected one VM name and --to DIR or --to NODE",
          .json = true },
        { .name = "node", .subcommands = ctl_node_commands,
          .help = "node settings: physical, reserve, min-floor; the node's fleet identity" },
        { .name = "plot", .run = ctl_plot,
          .usage = "plot [VM...] [--since DURATION] --output FILE.svg [--input FILE.json]",
          .help = "draw memory over time as an SVG: target, actual, guest use, minimum, decisions",
          .options = (const struct ctl_option[]) {
                  { "since", 0, "DURATION", "how far back, at least 1s " DURATION_EXAMPLES "; default 30m" },
                  { "output", 'o', "FILE.svg", "where the SVG goes (required)" },
                  { "input", 0, "FILE.json", "draw a saved history document (see ppnctl(8)) instead of asking ppnd" },
                  {} },
          .max_args = -1 },
        { .name = "pool", .run = ctl_pool, .usage = "pool [--json]",
          .help = "capacity: physical, reserve, reserved min, available, committed, free", .json = true },
        { .name = "release", .run = ctl_release, .usage = "release VM",
          .help = "end a VM's override lease: the controller resumes",
          .min_args = 1, .max_args = 1, .args_error = "need exactly one VM name" },
        { .name = "start", .run = ctl_start,
          .usage = "start VM [--paused] [--dry-run] [--no-deflate-on-oom] [--no-free-page-reporting]",
          .help = "boot QEMU from the ledger entry: balloon device, cgroup and weight before the vCPUs run",
          .options = (const struct ctl_option[]) {
                  { "paused", 0, NULL, "leave the vCPUs stopped" },
                  { "dry-run", 0, NULL, "print the QEMU command line, start nothing" },
                  { "no-deflate-on-oom", 0, NULL, "the balloon does not give memory back on a guest OOM" },
                  { "no-free-page-reporting", 0, NULL, "the guest does not report its free pages" },
                  {} },
          .min_args = 1, .max_args = 1, .args_error = "expected one VM name" },
        { .name = "status", .run = ctl_status, .usage = "status [--json]",
          .help = "every VM: state, min, target, actual, guest available, weight, reason", .json = true },
        { .name = "stop", .run = ctl_stop, .usage = "stop VM [--timeout SECONDS]",
          .help = "ACPI powerdown, quit after the timeout",
          .options = (const struct ctl_option[]) {
                  { "timeout", 0, "SECONDS", "how long the guest has to power down (default 60s; or 30s, 2m)" },
                  {} },
          .min_args = 1, .max_args = 1, .args_error = "expected one VM name" },
        { .name = "vm", .subcommands = ctl_vm_commands, .help = "VM entries: min, max, shares, cpu-weight, ..." },
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
        for (size_t i = 0; ctl_commands[i].name; i++) {
                fprintf(f, "  %-9s", ctl_commands[i].name);
                ctl_print_wrapped(f, ctl_commands[i].help, 12, 11);
        }
        fprintf(f, "\nexit status: 0 success, 1 refused or failed, 2 usage error\n");
}

/* "--NAME VALUE" or "--NAME=VALUE" for the options with a value; 1 if a matched, 0 if not,
 * CTL_ERR_USAGE (printed) if its value is missing. */
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
        if (*i + 1 >= argc) {
                fprintf(stderr, "ppnctl: option '%s' needs a value; see 'ppnctl --help'\n", a);
                return CTL_ERR_USAGE;
        }
        *ret = argv[++*i];
        return 1;
}

struct globals {
        struct ctl_globals g;
        const char *config;
        bool exact;
        bool done;      /* --version or --help answered */
};

/* The global option argv[*i]: CTL_OK or CTL_ERR_USAGE (printed). */
static int parse_global(int argc, char **argv, int *i, struct globals *o) {
        const char *a = argv[*i];
        int r;

        if (strcmp(a, "--version") == 0)
                return printf("ppnctl %s\n", PPN_VERSION), o->done = true, CTL_OK;
        if (ctl_is_help(a))
                return usage(stdout), o->done = true, CTL_OK;
        if (strcmp(a, "--json") == 0)
                return o->g.json = true, CTL_OK;
        if (strcmp(a, "--bytes") == 0)
                return o->exact = true, CTL_OK;
        if ((r = option_value("--ledger", argc, argv, i, &o->g.ledger)) == 0 &&
            (r = option_value("--socket", argc, argv, i, &o->g.socket)) == 0 &&
            (r = option_value("--config", argc, argv, i, &o->config)) == 0) {
                fprintf(stderr, "ppnctl: unknown option '%s'; see 'ppnctl --help'\n", a);
                return CTL_ERR_USAGE;
        }
        return r < 0 ? r : CTL_OK;
}

/* The whole run: a result (enum ctl_result), not an exit status. */
static int run(int argc, char **argv) {
        _cleanup_config_ struct ppn_config *cfg = NULL;
        struct globals o = { .config = getenv("PPN_CONFIG") };
        const struct ctl_command *c;
        struct ctl_args a;
        int i, r = CTL_OK;

        if (o.config && !*o.config)
                o.config = NULL;
        for (i = 1; i < argc && argv[i][0] == '-' && r == CTL_OK && !o.done; i++)
                r = parse_global(argc, argv, &i, &o);
        if (r < 0 || o.done)
                return r;
        if (i >= argc)
                return usage(stderr), CTL_ERR_USAGE;
        ctl_output_setup(o.exact);
        c = ctl_find_command(argv[i]);
        if (!c) {
                fprintf(stderr, "ppnctl: unknown command '%s'; see 'ppnctl --help'\n", argv[i]);
                return CTL_ERR_USAGE;
        }
        r = ctl_parse(c, o.g.json, argc - i, argv + i, &a);
        if (r < 0 || a.help)
                return r < 0 ? r : (ctl_help(a.cmd), CTL_OK);
        r = ctl_config_load(o.config, PPN_DEFAULT_CONFIG, &cfg);
        if (r < 0)
                return r;
        ctl_settings_resolve(&o.g, cfg, getenv);
        return a.cmd->run(&o.g, &a);
}

/* The one place a result becomes the exit status (ppnctl(8), EXIT STATUS). */
static int exit_status(int r) {
        if (r == CTL_OK)
                return 0;
        if (r == CTL_ERR_USAGE)
                return 2;
        return 1;
}

int main(int argc, char **argv) {
        log_set_ident("ppnctl");
        return exit_status(run(argc, argv));
}
