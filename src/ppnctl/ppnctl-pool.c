/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl pool: the capacity signals. When ppnd answers on its control socket, the figures are
 * its live ones: committed from the real balloon actuals. Otherwise they come from the ledger
 * alone, and committed counts every VM at its max — the most it can hold — and says so.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

#include "control-client.h"
#include "ledger.h"
#include "pool.h"
#include "ppnctl.h"
#include "status.h"


static void print_human(const struct pool_figures *f, bool live) {
        char b[6][32];
        printf("%-15s %s\n", "physical", ctl_size((int64_t) f->physical_bytes, b[0], sizeof(b[0])));
        printf("%-15s %s\n", "reserve", ctl_size((int64_t) f->reserve_bytes, b[1], sizeof(b[1])));
        printf("%-15s %s (sum of min over %zu VMs)\n", "reserved min",
               ctl_size((int64_t) f->reserved_min_bytes, b[2], sizeof(b[2])), f->n_vms);
        printf("%-15s %s\n", "pool available", ctl_size(f->pool_available_bytes, b[3], sizeof(b[3])));
        printf("%-15s %s (%s)\n", "committed", ctl_size((int64_t) f->committed_bytes, b[4], sizeof(b[4])),
               live ? "live balloon actuals from ppnd" : "ledger only: each VM counted at its max");
        printf("%-15s %s\n", "free", ctl_size(f->free_bytes, b[5], sizeof(b[5])));
}

static struct json_object *figures_json(const struct pool_figures *f, bool live) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "physical_bytes", json_object_new_int64((int64_t) f->physical_bytes));
        json_object_object_add(o, "reserve_bytes", json_object_new_int64((int64_t) f->reserve_bytes));
        json_object_object_add(o, "reserved_min_bytes", json_object_new_int64((int64_t) f->reserved_min_bytes));
        json_object_object_add(o, "pool_available_bytes", json_object_new_int64(f->pool_available_bytes));
        json_object_object_add(o, "committed_bytes", json_object_new_int64((int64_t) f->committed_bytes));
        json_object_object_add(o, "free_bytes", json_object_new_int64(f->free_bytes));
        json_object_object_add(o, "vms", json_object_new_int64((int64_t) f->n_vms));
        json_object_object_add(o, "actual_known_vms", json_object_new_int64((int64_t) f->n_actual_known));
        json_object_object_add(o, "actual_source", json_object_new_string(live ? "ppnd" : "ledger"));
        return o;
}

/* ppnd's live figures; -1 if it does not answer (then the ledger is the source). */
static int pool_from_daemon(const struct ctl_globals *g, struct pool_figures *ret) {
        json_object *reply = NULL;
        struct pool_status p;
        int r = control_client_call(g->socket, "pool", NULL, &reply, NULL);

        if (r >= 0)
                r = pool_status_from_json(reply, &p);
        json_object_put(reply);
        if (r < 0 || p.physical_bytes == 0)
                return -1;
        *ret = (struct pool_figures) {
                .physical_bytes = p.physical_bytes, .reserve_bytes = p.reserve_bytes,
                .reserved_min_bytes = p.reserved_min_bytes, .pool_available_bytes = p.pool_available_bytes,
                .committed_bytes = p.committed_bytes, .free_bytes = p.free_bytes,
                .n_vms = (size_t) p.n_vms, .n_actual_known = (size_t) p.n_running,
        };
        return 0;
}

int ctl_pool(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        _cleanup_free_ struct pool_vm *vms = NULL;
        struct pool_figures f;
        bool json = args->json;
        int r;

        if (pool_from_daemon(g, &f) == 0) {
                if (json)
                        ctl_print_json(figures_json(&f, true));
                else
                        print_human(&f, true);
                return CTL_OK;
        }
        r = ctl_load_state(g, true, &st);
        if (r)
                return r;
        vms = ledger_state_pool_vms(st);
        if (!vms)
                return ctl_fail(NULL, -ENOMEM);
        pool_compute(&(struct pool_node) { st->node.physical_bytes, st->node.reserve_bytes,
                                           ledger_state_lent(st, (int64_t) (now_realtime_usec() / 1000000)) },
                     vms, st->n_vms, &f);
        if (json)
                ctl_print_json(figures_json(&f, false));
        else
                print_human(&f, false);
        return CTL_OK;
}
