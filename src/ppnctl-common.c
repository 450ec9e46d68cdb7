/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the ppnctl handlers: subcommand dispatch, ledger opening, errors, JSON. */
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ledger.h"
#include "ppnctl.h"

int ctl_dispatch(const char *group, const struct ctl_subcommand *table, const struct ctl_globals *g,
                 int argc, char **argv) {
        if (argc >= 2)
                for (size_t i = 0; table[i].name; i++)
                        if (strcmp(argv[1], table[i].name) == 0)
                                return table[i].run(g, argc - 1, argv + 1);
        FILE *f = argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr;
        if (f == stderr && argc >= 2)
                fprintf(f, "ppnctl %s: unknown subcommand '%s'\n", group, argv[1]);
        else if (f == stderr)
                fprintf(f, "ppnctl %s: missing subcommand\n", group);
        fprintf(f, "usage:\n");
        for (size_t i = 0; table[i].name; i++)
                fprintf(f, "  ppnctl %s\n", table[i].usage);
        return f == stdout ? CTL_OK : CTL_USAGE;
}

int ctl_open_ledger(const struct ctl_globals *g, bool write, struct ledger **ret) {
        struct ledger_options o = { .read_only = !write, .meminfo_path = getenv("PPN_MEMINFO") };
        struct ppn_error e = {};
        int r = ledger_open(g->ledger, &o, ret, &e);
        return r < 0 ? ctl_fail(&e, r) : 0;
}

int ctl_fail(const struct ppn_error *err, int r) {
        if (err && err->msg[0])
                fprintf(stderr, "ppnctl: %s\n", err->msg);
        else
                fprintf(stderr, "ppnctl: %s\n", strerror(r < 0 ? -r : r));
        return CTL_FAILED;
}

int ctl_usage_error(const char *cmd, const char *usage, const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "ppnctl %s: ", cmd);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nusage: ppnctl %s\n", usage);
        return CTL_USAGE;
}

int ctl_parse_plain(const char *cmd, const char *usage, bool allow_json, int *argc, char **argv, bool *ret_json) {
        int out = 1;
        for (int i = 1; i < *argc; i++) {
                if (allow_json && strcmp(argv[i], "--json") == 0)
                        *ret_json = true;
                else if (strcmp(argv[i], "--help") == 0) {
                        printf("usage: ppnctl %s\n", usage);
                        return CTL_OK;
                } else if (strcmp(argv[i], "--") == 0) {
                        while (++i < *argc)
                                argv[out++] = argv[i];
                } else if (argv[i][0] == '-' && argv[i][1])
                        return ctl_usage_error(cmd, usage, "unknown option '%s'", argv[i]);
                else
                        argv[out++] = argv[i];
        }
        *argc = out;
        return -1;
}

void ctl_print_json(struct json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
}

const char *ctl_size(int64_t bytes, char *buf, size_t len) {
        char tmp[FORMAT_SIZE_MAX];
        uint64_t mag = bytes < 0 ? (uint64_t) -bytes : (uint64_t) bytes;
        snprintf(buf, len, "%s%s", bytes < 0 ? "-" : "", format_size(mag, tmp, sizeof(tmp)));
        return buf;
}
