/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl status: the daemon's live view of every VM, as a table or JSON. */
#include <string.h>

#include "control-client.h"
#include "ppnctl.h"
#include "status.h"

static const char *size_or_dash(uint64_t v, char *buf, size_t len) {
        return v == STATUS_UNKNOWN ? "-" : format_size(v, buf, len);
}

static void print_row(const struct vm_status *s) {
        char min[FORMAT_SIZE_MAX], target[FORMAT_SIZE_MAX], actual[FORMAT_SIZE_MAX], avail[FORMAT_SIZE_MAX];

        printf("%-16s %-10s %7s %7s %7s %7s %6" PRIu64 "  %s\n", s->name, s->state,
               size_or_dash(s->min_bytes, min, sizeof(min)), size_or_dash(s->target_bytes, target, sizeof(target)),
               size_or_dash(s->actual_bytes, actual, sizeof(actual)),
               size_or_dash(s->guest_available_bytes, avail, sizeof(avail)), s->cpu_weight, s->reason);
}

static int print_table(json_object *reply) {
        json_object *vms;
        size_t n;

        if (!json_object_object_get_ex(reply, "vms", &vms) || !json_object_is_type(vms, json_type_array)) {
                fprintf(stderr, "ppnctl: the daemon's status reply has no VM list (version mismatch?)\n");
                return CTL_FAILED;
        }
        n = json_object_array_length(vms);
        printf("%-16s %-10s %7s %7s %7s %7s %6s  %s\n", "VM", "STATE", "MIN", "TARGET", "ACTUAL", "AVAIL",
               "WEIGHT", "REASON");
        for (size_t i = 0; i < n; i++) {
                struct vm_status s;
                if (vm_status_from_json(json_object_array_get_idx(vms, i), &s) < 0) {
                        fprintf(stderr, "ppnctl: the daemon sent a VM entry this ppnctl cannot read (version mismatch?)\n");
                        return CTL_FAILED;
                }
                print_row(&s);
        }
        if (n == 0)
                printf("(no VMs in the ledger)\n");
        return CTL_OK;
}

int ctl_status(const struct ctl_globals *g, int argc, char **argv) {
        struct ppn_error err = { 0 };
        json_object *reply = NULL;
        bool json = g->json;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        json = true;
                else {
                        fprintf(stderr, "usage: ppnctl status [--json]\n");
                        return CTL_USAGE;
                }
        }
        if (ctl_client_call(g->socket, "status", NULL, &reply, &err) < 0) {
                fprintf(stderr, "ppnctl: %s\n", err.msg);
                return CTL_FAILED;
        }
        if (json) {
                printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
                r = CTL_OK;
        } else
                r = print_table(reply);
        json_object_put(reply);
        return r;
}
