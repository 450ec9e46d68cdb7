/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl node set|show: the node settings kept in the ledger. */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"
#include "ppnctl.h"

#define SET_USAGE "node set KEY=VALUE... (keys: physical reserve min-floor; value SIZE or 'default')"
#define SHOW_USAGE "node show [--json]"

static int node_set(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        bool json = false;
        int r = ctl_parse_plain("node set", SET_USAGE, false, &argc, argv, &json);

        if (r >= 0)
                return r;
        if (argc < 2)
                return ctl_usage_error("node set", SET_USAGE, "expected at least one KEY=VALUE");
        for (int i = 1; i < argc; i++) {
                struct ledger_node_settings scratch = {};
                if (ledger_node_assign_pair(&scratch, argv[i], &e) < 0)
                        return ctl_usage_error("node set", SET_USAGE, "%s", e.msg);
        }
        r = ctl_open_ledger(g, true, &l);
        if (r)
                return r;
        r = ledger_node_set(l, (const char *const *) argv + 1, (size_t) (argc - 1), getuid(), &e);
        return r < 0 ? ctl_fail(&e, r) : CTL_OK;
}

static int node_show(const struct ctl_globals *g, int argc, char **argv) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        bool json = g->json;
        char a[32], b[32], c[32];
        int r = ctl_parse_plain("node show", SHOW_USAGE, true, &argc, argv, &json);

        if (r >= 0)
                return r;
        if (argc != 1)
                return ctl_usage_error("node show", SHOW_USAGE, "unexpected argument '%s'", argv[1]);
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

const struct ctl_subcommand ctl_node_commands[] = {
        { "id", ctl_node_id, "node id [--json]" },
        { "init", ctl_node_init, "node init" },
        { "set", node_set, SET_USAGE },
        { "show", node_show, SHOW_USAGE },
        {},
};

int ctl_node(const struct ctl_globals *g, int argc, char **argv) {
        return ctl_dispatch("node", ctl_node_commands, g, argc, argv);
}
