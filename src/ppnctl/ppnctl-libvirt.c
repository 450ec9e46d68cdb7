/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl vm import-libvirt: the running domains libvirt has, proposed as ledger entries. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"
#include "ppnctl.h"
#include "virtlink.h"

static json_object *proposal_json(const struct virtlink_domain *d, const struct virtlink_proposal *p) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "domain", json_object_new_string(d->name));
        json_object_object_add(o, "name", json_object_new_string(p->name));
        json_object_object_add(o, "min_bytes", json_object_new_uint64(p->min_bytes));
        json_object_object_add(o, "max_bytes", json_object_new_uint64(p->max_bytes));
        json_object_object_add(o, "cpu_weight", json_object_new_uint64(p->cpu_weight));
        json_object_object_add(o, "cpu_shares", json_object_new_uint64(d->cpu_shares));
        json_object_object_add(o, "note", json_object_new_string(p->note));
        return o;
}

static void proposal_print(const struct virtlink_domain *d, const struct virtlink_proposal *p) {
        char a[32], b[32];

        printf("ppnctl vm add %s --min %s --max %s --cpu-weight %" PRIu32 " --libvirt %s\n", p->name,
               ctl_size((int64_t) p->min_bytes, a, sizeof(a)), ctl_size((int64_t) p->max_bytes, b, sizeof(b)),
               p->cpu_weight, d->name);
        printf("    # cpu_shares %" PRIu64 " -> weight %" PRIu32 "%s%s\n", d->cpu_shares, p->cpu_weight,
               p->note[0] ? "; " : "", p->note);
}

/* --apply: each proposal through the ledger's admission, like 'vm add'; a refusal is reported
 * and the others still go in. Returns 0 or a negative result (printed). */
static int apply(const struct ctl_globals *g, const struct virtlink_domain *d, const struct virtlink_proposal *p) {
        _cleanup_ledger_ struct ledger *l = NULL;
        _cleanup_(ledger_vm_done) struct ledger_vm vm = {};
        struct ppn_error e = {};
        char uuid[LEDGER_UUID_LEN + 1];
        int r;

        ledger_vm_init(&vm);
        snprintf(vm.name, sizeof(vm.name), "%s", p->name);
        vm.min_bytes = p->min_bytes;
        vm.max_bytes = p->max_bytes;
        vm.cpu_weight = p->cpu_weight;
        if ((r = ledger_vm_assign(&vm, "libvirt", d->name, &e)) < 0)
                return ctl_fail(&e, r);
        if ((r = ctl_open_ledger(g, true, &l)) < 0)
                return r;
        r = ledger_vm_add(l, &vm, getuid(), uuid, &e);
        return r < 0 ? ctl_fail(&e, r) : 0;
}

int ctl_vm_import_libvirt(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_free_ struct virtlink_domain *doms = NULL;
        const char *uri = ctl_arg(args, "uri") ? ctl_arg(args, "uri") : g->libvirt_uri;
        bool do_apply = ctl_flag(args, "apply"), json = args->json, v2 = virtlink_cpu_on_cgroup_v2();
        struct ppn_error e = {};
        json_object *arr = NULL;
        int n, refused = 0, proposed = 0;

        if (!uri || !*uri)
                return ctl_usage_error(args, "no libvirt URI: give --uri URI "
                                       "or set [libvirt] uri in ppnd's config");
        n = virtlink_list_domains(uri, &doms, &e);
        if (n < 0)
                return ctl_fail(&e, n);
        arr = json ? json_object_new_array() : NULL;
        for (int i = 0; i < n; i++) {
                struct virtlink_proposal p;
                if (!doms[i].balloon || virtlink_propose(&doms[i], v2, &p) < 0) {
                        if (!json)
                                fprintf(stderr, "ppnctl: skipping domain '%s': %s\n", doms[i].name,
                                        doms[i].balloon ? "no valid ledger name can be made from it"
                                                        : "no memory balloon (add <memballoon model='virtio'>)");
                        continue;
                }
                proposed++;
                if (json)
                        json_object_array_add(arr, proposal_json(&doms[i], &p));
                else
                        proposal_print(&doms[i], &p);
                if (do_apply)
                        refused += apply(g, &doms[i], &p) < 0;
        }
        if (json)
                ctl_print_json(arr);
        else if (!proposed)
                printf("no running domain with a balloon at %s\n", uri);
        return refused ? CTL_ERR_FAILED : CTL_OK;
}
