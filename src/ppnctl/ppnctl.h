/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnctl subcommands. Each group lives in its own file (ppnctl-vm.c, ppnctl-pool.c, ...) and is
 * listed in the table in ppnctl.c. Handlers get the global options and their own argv
 * (argv[0] is the command name) and return the exit status:
 * 0 success, 1 refused or failed (message on stderr), 2 usage error.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The daemon's config file, read for the settings below (meson: SYSCONFDIR/ppn/ppnd.conf). */
#ifndef PPN_DEFAULT_CONFIG
#define PPN_DEFAULT_CONFIG "/etc/ppn/ppnd.conf"
#endif
/* For --help: the config module's built-in defaults of [ledger] path and [control] socket. */
#define PPN_DEFAULT_LEDGER "/var/lib/ppn/ledger.db"
#define PPN_DEFAULT_SOCKET "/run/ppn/ppnd.sock"

/*
 * Every setting comes from, first found: the command-line option, the environment variable,
 * the config file's key (--config, $PPN_CONFIG, or PPN_DEFAULT_CONFIG if it exists), the
 * built-in default (the config module's, which ppnd uses too).
 */
struct ctl_globals {
        const char *ledger;   /* --ledger, $PPN_LEDGER, [ledger] path */
        const char *socket;   /* --socket, $PPN_SOCKET, [control] socket */
        bool json;            /* --json given anywhere before the command */
        /* Node settings of start|stop|adopt|export|import|move. */
        const char *runtime_dir;        /* $PPN_RUNTIME_DIR, [daemon] runtime-dir */
        const char *log_dir;            /* $PPN_LOG_DIR, [qemu] log-dir */
        const char *image_dir;          /* import --image-dir, $PPN_IMAGE_DIR, [qemu] image-dir */
        const char *accel;              /* $PPN_ACCEL, [qemu] accel */
        const char *qemu;               /* $PPN_QEMU, [qemu] binary */
        const char *cgroup_root;        /* $PPN_CGROUP_ROOT, [cgroup] root; NULL = auto */
        const char *cgroup_parent;      /* $PPN_CGROUP_PARENT, [cgroup] parent */
        /* The fleet store (fleet, lend, grant). */
        const char *etcd_endpoints;     /* $PPN_ETCD_ENDPOINTS, [fleet] endpoints */
        const char *etcd_ca, *etcd_cert, *etcd_key;     /* [fleet] ca, cert, key */
        const char *libvirt_uri;        /* $PPN_LIBVIRT_URI, [libvirt] uri ("" = none) */
        const char *migration_peers;    /* [fleet] migration-peers: where move --live may send */
        uint64_t migration_timeout_usec;        /* [fleet] migration-timeout */
};

/* Shared by the handlers and main (ppnctl-config.c). */
struct ppn_config;
/*
 * Loads the config file: path if non-NULL (--config or $PPN_CONFIG: missing is an error),
 * else default_path if it exists (missing: the built-in defaults, silently). Problems are
 * printed as "ppnctl: FILE:LINE: problem"; returns 0 or CTL_FAILED.
 */
int ctl_config_load(const char *path, const char *default_path, struct ppn_config **ret);
/* Fills every setting of g still NULL from env (getenv, or a fixture) and then cfg. Pure; the
 * strings stay owned by cfg and the environment. */
void ctl_settings_resolve(struct ctl_globals *g, const struct ppn_config *cfg, char *(*env)(const char *));

enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

typedef int (*ctl_handler)(const struct ctl_globals *g, int argc, char **argv);

/* Handlers; one line per command. */
int ctl_adopt(const struct ctl_globals *g, int argc, char **argv);
int ctl_balloon(const struct ctl_globals *g, int argc, char **argv);
int ctl_events(const struct ctl_globals *g, int argc, char **argv);
int ctl_export(const struct ctl_globals *g, int argc, char **argv);
int ctl_fleet(const struct ctl_globals *g, int argc, char **argv);
int ctl_grant(const struct ctl_globals *g, int argc, char **argv);
int ctl_lend(const struct ctl_globals *g, int argc, char **argv);
int ctl_node_id(const struct ctl_globals *g, int argc, char **argv);
int ctl_node_init(const struct ctl_globals *g, int argc, char **argv);
int ctl_history(const struct ctl_globals *g, int argc, char **argv);
int ctl_import(const struct ctl_globals *g, int argc, char **argv);
int ctl_ledger(const struct ctl_globals *g, int argc, char **argv);
int ctl_move(const struct ctl_globals *g, int argc, char **argv);
int ctl_move_live(const struct ctl_globals *g, int argc, char **argv);
/* This node's fleet key (beside the ledger) and a client of the fleet store; 0 or CTL_FAILED
 * with the reason printed (ppnctl-fleet.c). */
struct fleet_identity;
struct etcd;
int ctl_load_identity(const struct ctl_globals *g, struct fleet_identity *ret);
int ctl_open_etcd(const struct ctl_globals *g, struct etcd **ret);
int ctl_node(const struct ctl_globals *g, int argc, char **argv);
int ctl_plot(const struct ctl_globals *g, int argc, char **argv);
int ctl_pool(const struct ctl_globals *g, int argc, char **argv);
int ctl_release(const struct ctl_globals *g, int argc, char **argv);
int ctl_start(const struct ctl_globals *g, int argc, char **argv);
int ctl_status(const struct ctl_globals *g, int argc, char **argv);
int ctl_stop(const struct ctl_globals *g, int argc, char **argv);
int ctl_vm(const struct ctl_globals *g, int argc, char **argv);

/* Shared by the handlers (ppnctl-common.c). */
struct ledger;
struct json_object;
struct ppn_error;
/* A subcommand table: dispatches argv[1] (argv[0] is the group name). */
struct ctl_subcommand {
        const char *name;
        ctl_handler run;
        const char *usage;
};
/* The groups' tables, for dispatch, help and completion checks. */
extern const struct ctl_subcommand ctl_ledger_commands[], ctl_node_commands[], ctl_vm_commands[],
        ctl_fleet_commands[], ctl_grant_commands[];
extern const struct ctl_subcommand ctl_ledger_commands[], ctl_node_commands[], ctl_vm_commands[];
#define IMPORT_LIBVIRT_USAGE "vm import-libvirt [--uri URI] [--apply] [--json]"
/* ppnctl-libvirt.c */
int ctl_vm_import_libvirt(const struct ctl_globals *g, int argc, char **argv);
/* Prints "usage:" and one "  ppnctl USAGE" line per subcommand. */
void ctl_print_subcommands(FILE *f, const struct ctl_subcommand *table);
/* Prints text wrapped to 80 columns, continuation lines indented by indent spaces. */
void ctl_print_wrapped(FILE *f, const char *text, size_t indent, size_t first_col);
/* `--help`: "usage: ppnctl USAGE" on stdout, wrapped to 80 columns. */
void ctl_print_usage(const char *usage);
int ctl_dispatch(const char *group, const struct ctl_subcommand *table, const struct ctl_globals *g,
                 int argc, char **argv);
/* Opens g->ledger; read-only for read commands. Prints the error; returns 0 or CTL_FAILED. */
int ctl_open_ledger(const struct ctl_globals *g, bool write, struct ledger **ret);
/* Opens g->ledger read-only and loads a snapshot; need_node: a node record that cannot be
 * resolved is a failure too (its reason printed). Returns 0 and *ret, or CTL_FAILED (printed). */
struct ledger_state;
int ctl_load_state(const struct ctl_globals *g, bool need_node, struct ledger_state **ret);
/* 1 if the VM's QEMU answers on its QMP or ppnctl monitor socket, 0 if not, -ENOMEM. */
struct ledger_vm;
int ctl_vm_running(const struct ctl_globals *g, const struct ledger_vm *vm);
/* Prints "ppnctl: <message>" and returns CTL_FAILED. */
int ctl_fail(const struct ppn_error *err, int r);
/* Prints "ppnctl <cmd>: <message>; usage: ppnctl <usage>" and returns CTL_USAGE. */
int ctl_usage_error(const char *cmd, const char *usage, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Parses the options every command takes after its name: --json (read commands), --help.
 * Returns -1 to continue with *ret_json set, or an exit status. Leaves non-option args in
 * argv[1..*ret_argc-1]. */
int ctl_parse_plain(const char *cmd, const char *usage, bool allow_json, int *argc, char **argv, bool *ret_json);
/* Prints a JSON value to stdout (pretty) and frees it. */
void ctl_print_json(struct json_object *o);
/* "2G" / "-512M" / "880.7M" for human output; the exact byte count after ctl_output_setup()
 * with exact sizes (--bytes). */
const char *ctl_size(int64_t bytes, char *buf, size_t len);

/* Output habits, set once by main: --bytes, and colour only when stdout is a terminal, TERM is
 * not "dumb" and NO_COLOR is unset or empty (https://no-color.org). */
void ctl_output_setup(bool exact_sizes);
bool ctl_exact_sizes(void);
/* Whether to colour what goes to f (decided per stream: stdout may be a pipe, stderr not). */
bool ctl_color(FILE *f);
/* seq (one of the CTL_SGR_* escapes) when f gets colour, else "". */
const char *ctl_sgr(FILE *f, const char *seq);
#define CTL_SGR_BOLD "\033[1m"
#define CTL_SGR_RED "\033[31m"
#define CTL_SGR_GREEN "\033[32m"
#define CTL_SGR_YELLOW "\033[33m"
#define CTL_SGR_RESET "\033[0m"
/* Width for tables: the terminal's when stdout is one, else 80. */
unsigned ctl_columns(void);
/* Copies s into buf cut to at most width display columns (UTF-8 aware), "…" marking a cut. */
const char *ctl_fit(const char *s, size_t width, char *buf, size_t len);
