/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl status: the daemon's live view of every VM, as a table or JSON. */
#include <string.h>

#include "control-client.h"
#include "ppnctl.h"
#include "status.h"

/* "-" for unknown; "?" for a size no memory has (2^63 bytes or more: only a guest's claim can be). */
static const char *size_or_dash(uint64_t v, char *buf, size_t len) {
        return v == STATUS_UNKNOWN ? "-" : v > INT64_MAX ? "?" : ctl_size((int64_t) v, buf, len);
}

/* A guest claiming more available memory than its maximum is lying or broken: "?" (the
 * daemon holds such a VM; --json shows the raw claim). */
static const char *avail_or_mark(const struct vm_status *s, char *buf, size_t len) {
        if (s->guest_available_bytes != STATUS_UNKNOWN && s->guest_available_bytes > s->max_bytes)
                return "?";
        return size_or_dash(s->guest_available_bytes, buf, len);
}

static const char *state_color(const char *state) {
        return ctl_sgr(stdout, strcmp(state, "running") == 0      ? CTL_SGR_GREEN
                               : strcmp(state, "connecting") == 0 ? CTL_SGR_YELLOW
                                                                  : CTL_SGR_RED);
}

/* Column widths from the rows themselves: names and sizes as wide as the widest (sizes at
 * least 7, "1023.9M"), so --bytes and long names widen only the table that needs it. */
struct layout {
        int name_w, size_w;
        size_t fixed;           /* columns before REASON */
        unsigned cols;
};

/* The reason follows on the row when it fits the width, else on its own line below, cut to fit. */
static void print_row(const struct vm_status *s, const struct layout *l) {
        char min[32], target[32], actual[32], avail[32], cut[sizeof(s->reason) + 4];

        printf("%-*s %s%-10s%s %*s %*s %*s %*s %6" PRIu64, l->name_w, s->name, state_color(s->state), s->state,
               ctl_sgr(stdout, CTL_SGR_RESET), l->size_w, size_or_dash(s->min_bytes, min, sizeof(min)), l->size_w,
               size_or_dash(s->target_bytes, target, sizeof(target)), l->size_w,
               size_or_dash(s->actual_bytes, actual, sizeof(actual)), l->size_w,
               avail_or_mark(s, avail, sizeof(avail)), s->cpu_weight);
        if (l->fixed + strlen(s->reason) <= l->cols)
                printf("  %s\n", s->reason);
        else
                printf("\n  %s\n", text_fit(s->reason, l->cols - 2, cut, sizeof(cut)));
}

static size_t size_len(uint64_t v) {
        char buf[32];
        return strlen(size_or_dash(v, buf, sizeof(buf)));
}

static void layout_for(const struct vm_status *st, size_t n, unsigned cols, struct layout *l) {
        size_t name_w = 2, size_w = 7;

        for (size_t i = 0; i < n; i++) {
                const uint64_t v[] = { st[i].min_bytes, st[i].target_bytes, st[i].actual_bytes };
                name_w = strlen(st[i].name) > name_w ? strlen(st[i].name) : name_w;
                for (size_t k = 0; k < ELEMENTSOF(v); k++)
                        size_w = size_len(v[k]) > size_w ? size_len(v[k]) : size_w;
        }
        l->name_w = (int) name_w;
        l->size_w = (int) size_w;
        l->cols = cols;
        l->fixed = name_w + 1 + 10 + 4 * (1 + size_w) + 1 + 6 + 2;
}

struct rows {
        struct vm_status *st;
        size_t n, cap;
};

static int add_row(json_object *vm, void *userdata) {
        struct rows *rows = userdata;

        if (rows->n == rows->cap) {
                size_t cap = rows->cap ? rows->cap * 2 : 64;
                struct vm_status *p = reallocarray(rows->st, cap, sizeof(*p));
                if (!p)
                        return -ENOMEM;
                rows->st = p;
                rows->cap = cap;
        }
        if (vm_status_brief_from_json(vm, &rows->st[rows->n]) < 0)
                return -EPROTO;
        rows->n++;
        return 0;
}

static void print_table(const struct vm_status *st, size_t n, unsigned cols) {
        struct layout l;

        layout_for(st, n, cols, &l);
        printf("%s%-*s %-10s %*s %*s %*s %*s %6s  %s%s\n", ctl_sgr(stdout, CTL_SGR_BOLD), l.name_w, "VM", "STATE",
               l.size_w, "MIN", l.size_w, "TARGET", l.size_w, "ACTUAL", l.size_w, "AVAIL", "WEIGHT", "REASON",
               ctl_sgr(stdout, CTL_SGR_RESET));
        for (size_t i = 0; i < n; i++)
                print_row(&st[i], &l);
        if (n == 0)
                printf("(no VMs in the ledger)\n");
}

/* The table asks for the brief form (what it shows: 9 members per VM and the reason cut as
 * print_row() would cut it) and reads it one VM at a time (at 2,000 VMs a 1 MB reply as one
 * json-c tree was most of ppnctl's time, in malloc and page faults); a ppnd that does not know
 * "brief" ignores it and sends every member, which reads the same. --json prints the whole
 * object. */
int ctl_status(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_free_ struct vm_status *st = NULL;
        struct ppn_error err = { 0 };
        struct rows rows = { 0 };
        json_object *reply = NULL, *req = NULL;
        unsigned cols = ctl_columns();
        int r;

        if (args->json) {
                if (control_client_call(g->socket, "status", NULL, &reply, &err) < 0) {
                        fprintf(stderr, "ppnctl: %s\n", err.msg);
                        return CTL_ERR_FAILED;
                }
                printf("%s\n", json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED));
                json_object_put(reply);
                return CTL_OK;
        }
        req = json_object_new_object();
        if (!req)
                return ctl_fail(NULL, -ENOMEM);
        json_object_object_add(req, "brief", json_object_new_boolean(true));
        json_object_object_add(req, "reason_width", json_object_new_int64(cols - 2));
        r = control_client_call_each(g->socket, "status", req, "vms", add_row, &rows, &err);
        json_object_put(req);
        st = rows.st;
        if (r == -EPROTO) {
                fprintf(stderr, "ppnctl: the daemon sent a VM entry this ppnctl cannot read (version mismatch?)\n");
                return CTL_ERR_FAILED;
        }
        if (r == -ENOMEM)
                return ctl_fail(NULL, -ENOMEM);
        if (r < 0) {
                fprintf(stderr, "ppnctl: %s\n", err.msg);
                return CTL_ERR_FAILED;
        }
        print_table(st, rows.n, cols);
        return CTL_OK;
}
