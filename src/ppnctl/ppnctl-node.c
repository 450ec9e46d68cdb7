/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl node set|show: the node settings kept in the ledger. */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"
#include "ppnctl.h"

static int node_set(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        char **argv = args->argv;
        int argc = args->argc, r;

        for (int i = 1; i < argc; i++) {
                struct ledger_node_settings scratch = {};
                if (ledger_node_assign_pair(&scratch, argv[i], &e) < 0)
                        return ctl_usage_error(args, "%s", e.msg);
        }
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_node_set(l, (const char *const *) argv + 1, (size_t) (argc - 1), getuid(), &e);
        return r < 0 ? ctl_fail(&e, r) : CTL_OK;
}

static int node_show(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        bool json = args->json;
        char a[32], b[32], c[32];
        int r;

        r = ctl_load_state(g, true, &st);
        if (r)
                return r;
        if (json) {
                ctl_print_json(ledger_node_to_json(&st->node));
                return CTL_OK;
        }
        printf("%-10s %s%s\n", "physical", ctl_size((int64_t) st->node.physical_bytes, a, sizeof(a)),
               st->node.physical_default ? " (default: MemTotal of /proc/meminfo)" : "");
        printf("%-10s %s%s\n", "reserve", ctl_size((int64_t) st->node.reserve_bytes, b, sizeof(b)),
               st->node.reserve_default ? " (default: max(512 MiB, 5% of physical))" : "");
        printf("%-10s %s%s\n", "min-floor", ctl_size((int64_t) st->node.min_floor_bytes, c, sizeof(c)),
               st->node.min_floor_default ? " (default)" : "");
        return CTL_OK;
}

const struct ctl_command ctl_node_commands[] = {
        { .name = "id", .run = ctl_node_id, .usage = "node id [--json]",
          .help = "this node's fleet id and key fingerprint", .json = true },
        { .name = "init", .run = ctl_node_init, .usage = "node init [--json]",
          .help = "create this node's fleet key (beside the ledger) if it has none", .json = true },
        { .name = "set", .run = node_set, .usage = "node set KEY=VALUE...",
          .note = "(keys: physical reserve min-floor; value SIZE or 'default')",
          .help = "change node settings, in one transaction (refused if a reservation breaks)",
          .min_args = 1, .max_args = -1, .args_error = "expected at least one KEY=VALUE" },
        { .name = "show", .run = node_show, .usage = "node show [--json]", .help = "the node settings",
          .json = true },
        {},
};
