/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnctl commands. Each group lives in its own file (ppnctl-vm.c, ppnctl-pool.c, ...); the
 * command table (ppnctl.c) and every group's subcommand table say, per command, its usage, its
 * options and how many operands it takes. ctl_parse() (ppnctl-parse.c) reads the command line
 * against that table, answers --help and usage errors from it; handlers get the options and
 * operands parsed and return a result (enum ctl_result), which main alone maps to the exit
 * status.
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
 * printed as "ppnctl: FILE:LINE: problem"; returns 0 or CTL_ERR_FAILED.
 */
int ctl_config_load(const char *path, const char *default_path, struct ppn_config **ret);
/* Fills every setting of g still NULL from env (getenv, or a fixture) and then cfg. Pure; the
 * strings stay owned by cfg and the environment. */
void ctl_settings_resolve(struct ctl_globals *g, const struct ppn_config *cfg, char *(*env)(const char *));

/*
 * What a handler returns: CTL_OK, a negative errno (the reason printed), or one of these
 * negative codes, all beyond any errno. main maps it to the exit status, in one place:
 * CTL_OK -> 0, CTL_ERR_USAGE -> 2, anything negative -> 1 (ppnctl(8), EXIT STATUS).
 */
enum ctl_result {
        CTL_OK = 0,
        CTL_ERR_FAILED = -4096 - 1,     /* refused or failed, the reason printed; no errno says it */
        CTL_ERR_USAGE = -4096 - 2,      /* the command line is wrong, the usage printed */
};

/* One option of a command: --NAME, or --NAME ARG / --NAME=ARG when arg is set. */
struct ctl_option {
        const char *name;
        char short_name;        /* 'o' for -o; 0 for none */
        const char *arg;        /* the value's placeholder in --help ("SECONDS"); NULL: a flag */
        const char *help;       /* one line for `ppnctl COMMAND --help` */
};

/* The command line of one command, parsed against its table entry. */
#define CTL_MAX_GIVEN 64
struct ctl_args {
        const struct ctl_command *cmd;
        char name[32];          /* "stop", "vm add": for messages */
        int argc;               /* the operands: argv[0] is the command's name, then them */
        char **argv;
        bool json;              /* --json, here or before the command */
        bool help;              /* --help or -h: nothing else was checked */
        size_t n_given;         /* the options given, in order */
        struct ctl_given {
                const struct ctl_option *opt;
                const char *value;      /* NULL for a flag */
                bool inline_value;      /* given as --NAME=VALUE */
        } given[CTL_MAX_GIVEN];
};

typedef int (*ctl_handler)(const struct ctl_globals *g, const struct ctl_args *a);

/*
 * A command, or a group of subcommands. usage is the synopsis after "ppnctl", exactly as
 * ppnctl(8) titles the command's section (one section per alternative joined by " | ");
 * note follows it on usage errors ("(keys: ...)"). Operands: min_args..max_args (-1: any),
 * else args_error. options ends with {}; --help is implied, --json only with json.
 */
struct ctl_command {
        const char *name;
        ctl_handler run;        /* NULL for a group without a default */
        const char *usage;
        const char *note;
        const char *help;
        const struct ctl_option *options;
        int min_args, max_args;
        const char *args_error;
        bool json;
        const struct ctl_command *subcommands;  /* a group: its table, ending with {} */
        const char *default_sub;                /* a group: the subcommand when none is named */
};

/*
 * Parses argv (argv[0] is the command's name) against the table entry c, or for a group
 * against the subcommand argv[1] names. Options may come anywhere before "--"; "-h"/"--help"
 * anywhere sets a->help and stops. Returns 0 with *a filled (argv is reordered: the operands
 * first), or CTL_ERR_USAGE with the error and the usage printed.
 */
int ctl_parse(const struct ctl_command *c, bool json, int argc, char **argv, struct ctl_args *a);
/* `ppnctl COMMAND --help` on stdout: usage, note, what it is for, its options. */
void ctl_help(const struct ctl_command *c);
/* The top-level command of that name, or NULL. */
const struct ctl_command *ctl_find_command(const char *name);
/* Whether w asks for help: "--help" or "-h". */
bool ctl_is_help(const char *w);
/* The last value of option name (without "--"), or NULL if not given. */
const char *ctl_arg(const struct ctl_args *a, const char *name);
/* Whether option name was given. */
bool ctl_flag(const struct ctl_args *a, const char *name);
/* The top-level command table (ppnctl.c), ending with {}. */
extern const struct ctl_command ctl_commands[];

/* Handlers; one line per command. */
int ctl_adopt(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_balloon(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_events(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_export(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_history(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_import(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_lend(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_move(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_move_live(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_node_id(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_node_init(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_plot(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_pool(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_release(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_start(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_status(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_stop(const struct ctl_globals *g, const struct ctl_args *a);
int ctl_vm_import_libvirt(const struct ctl_globals *g, const struct ctl_args *a);
/* The groups' tables. */
extern const struct ctl_command ctl_fleet_commands[], ctl_grant_commands[], ctl_ledger_commands[],
        ctl_node_commands[], ctl_vm_commands[];
/* This node's fleet key (beside the ledger) and a client of the fleet store; 0 or
 * CTL_ERR_FAILED with the reason printed (ppnctl-fleet.c). */
struct fleet_identity;
struct etcd;
int ctl_load_identity(const struct ctl_globals *g, struct fleet_identity *ret);
int ctl_open_etcd(const struct ctl_globals *g, struct etcd **ret);

/* Shared by the handlers (ppnctl-common.c). */
struct ledger;
struct json_object;
struct ppn_error;
/* Prints "usage:" and one "  ppnctl USAGE" line per subcommand. */
void ctl_print_subcommands(FILE *f, const struct ctl_command *table);
/* Prints text wrapped to 80 columns, continuation lines indented by indent spaces. */
void ctl_print_wrapped(FILE *f, const char *text, size_t indent, size_t first_col);
/* Opens g->ledger; read-only for read commands. Prints the error; returns 0 or CTL_ERR_FAILED. */
int ctl_open_ledger(const struct ctl_globals *g, bool write, struct ledger **ret);
/* ctl_open_ledger(), then reads VM name's entry into *ret_vm. *ret_l is the caller's to close
 * (also on failure), *ret_vm on success (ledger_vm_done). Returns 0, or a failure already printed. */
struct ledger_vm;
int ctl_open_vm(const struct ctl_globals *g, bool write, const char *name, struct ledger **ret_l,
                struct ledger_vm *ret_vm);
/* Opens g->ledger read-only and loads a snapshot; need_node: a node record that cannot be
 * resolved is a failure too (its reason printed). Returns 0 and *ret, or a negative result (printed). */
struct ledger_state;
int ctl_load_state(const struct ctl_globals *g, bool need_node, struct ledger_state **ret);
/* 1 if the VM's QEMU answers on its QMP or ppnctl monitor socket, 0 if not, -ENOMEM. */
int ctl_vm_running(const struct ctl_globals *g, const struct ledger_vm *vm);
/* Prints "ppnctl: <message>" (err's, else strerror(-r)) and returns r if negative, else
 * CTL_ERR_FAILED. */
int ctl_fail(const struct ppn_error *err, int r);
/* Prints "ppnctl NAME: MESSAGE" and "usage: ppnctl USAGE [NOTE]" for a's command; returns
 * CTL_ERR_USAGE. */
int ctl_usage_error(const struct ctl_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
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
