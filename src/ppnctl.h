/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnctl subcommands. Each group lives in its own file (ppnctl-vm.c, ppnctl-pool.c, ...) and is
 * listed in the table in ppnctl.c. Handlers get the global options and their own argv
 * (argv[0] is the command name) and return the exit status:
 * 0 success, 1 refused or failed (message on stderr), 2 usage error.
 */

#include <stdbool.h>

#define PPN_DEFAULT_LEDGER "/var/lib/ppn/ledger.db"
#define PPN_DEFAULT_SOCKET "/run/ppn/ppnd.sock"

struct ctl_globals {
        const char *ledger;   /* --ledger, $PPN_LEDGER, or PPN_DEFAULT_LEDGER */
        const char *socket;   /* --socket, $PPN_SOCKET, or PPN_DEFAULT_SOCKET */
        bool json;            /* --json given anywhere before the command */
};

enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

typedef int (*ctl_handler)(const struct ctl_globals *g, int argc, char **argv);

/* Handlers; one line per command. */
int ctl_events(const struct ctl_globals *g, int argc, char **argv);
int ctl_status(const struct ctl_globals *g, int argc, char **argv);
