/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the ppnctl handlers: ledger opening, errors, JSON, output habits. */
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "ledger.h"
#include "ppnctl.h"

static bool exact_sizes;        /* --bytes */

int ctl_open_ledger(const struct ctl_globals *g, bool write, struct ledger **ret) {
        struct ledger_options o = { .read_only = !write, .meminfo_path = getenv("PPN_MEMINFO") };
        struct ppn_error e = {};
        int r = ledger_open(g->ledger, &o, ret, &e);
        return r < 0 ? ctl_fail(&e, r) : 0;
}

int ctl_open_vm(const struct ctl_globals *g, bool write, const char *name, struct ledger **ret_l,
                struct ledger_vm *ret_vm) {
        struct ppn_error e = {};
        int r = ctl_open_ledger(g, write, ret_l);

        if (r)
                return r;
        r = ledger_vm_get(*ret_l, name, ret_vm, &e);
        return r < 0 ? ctl_fail(&e, r) : 0;
}

int ctl_load_state(const struct ctl_globals *g, bool need_node, struct ledger_state **ret) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        int r = ctl_open_ledger(g, false, &l);

        if (r)
                return r;
        r = ledger_load(l, &st, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        if (need_node && !st->node_ok) {
                fprintf(stderr, "ppnctl: %s\n", st->node_error);
                return CTL_ERR_FAILED;
        }
        *ret = TAKE_PTR(st);
        return 0;
}

int ctl_fail(const struct ppn_error *err, int r) {
        if (err && err->msg[0])
                fprintf(stderr, "ppnctl: %s\n", err->msg);
        else
                fprintf(stderr, "ppnctl: %s\n", strerror(r < 0 ? -r : r));
        return r < 0 ? r : CTL_ERR_FAILED;
}

void ctl_print_json(struct json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
}

const char *ctl_size(int64_t bytes, char *buf, size_t len) {
        char tmp[FORMAT_SIZE_MAX];
        uint64_t mag = bytes < 0 ? (uint64_t) -bytes : (uint64_t) bytes;

        if (exact_sizes) {
                snprintf(buf, len, "%" PRId64, bytes);
                return buf;
        }
        snprintf(buf, len, "%s%s", bytes < 0 ? "-" : "", format_size(mag, tmp, sizeof(tmp)));
        return buf;
}

void ctl_output_setup(bool exact) {
        exact_sizes = exact;
}

bool ctl_exact_sizes(void) {
        return exact_sizes;
}

bool ctl_color(FILE *f) {
        /* Asked per cell of a table (twice per VM in a status): the answer for stdout and stderr,
         * which cannot change during a command, is worked out once. */
        static int cached[3] = { -1, -1, -1 };
        const char *no = getenv("NO_COLOR"), *term = getenv("TERM");
        int fd = fileno(f);

        if (no && *no)
                return false;
        if (!term || strcmp(term, "dumb") == 0)
                return false;
        if (fd < 1 || fd > 2)
                return isatty(fd);
        if (cached[fd] < 0)
                cached[fd] = isatty(fd);
        return cached[fd];
}

const char *ctl_sgr(FILE *f, const char *seq) {
        return ctl_color(f) ? seq : "";
}

unsigned ctl_columns(void) {
        struct winsize w;

        /* 40 is the least a table row needs to stay readable; narrower terminals wrap. */
        if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0)
                return w.ws_col < 40 ? 40 : w.ws_col;
        return 80;
}
