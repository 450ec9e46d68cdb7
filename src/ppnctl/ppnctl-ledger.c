/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl ledger history|export|import|check: the audit log and the ledger as a JSON document. */
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ledger.h"
#include "ppnctl.h"

static bool is_size_field(const char *f) {
        static const char *const sizes[] = { "min", "max", "physical", "reserve", "min-floor" };
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                if (strcmp(f, sizes[i]) == 0)
                        return true;
        return false;
}

static const char *human_value(const char *field, const char *v, char *buf, size_t len) {
        uint64_t n;
        if (!v)
                return "(none)";
        if (is_size_field(field) && parse_u64(v, &n) == 0)
                return ctl_size((int64_t) n, buf, len);
        return v;
}

static struct json_object *str_or_null(const char *s) {
        return s ? json_object_new_string(s) : NULL;
}

static void print_history(const struct ledger_audit *a, size_t n, bool json) {
        struct json_object *arr = json ? json_object_new_array() : NULL;
        for (size_t i = 0; i < n; i++) {
                time_t t = (time_t) (a[i].time_usec / 1000000);
                struct tm tm;
                char when[32], o[32], v[32];
                strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
                if (!json) {
                        printf("%s uid=%u %s %s: %s -> %s\n", when, (unsigned) a[i].uid, a[i].vm ? a[i].vm : "(node)",
                               a[i].field, human_value(a[i].field, a[i].old_value, o, sizeof(o)),
                               human_value(a[i].field, a[i].new_value, v, sizeof(v)));
                        continue;
                }
                struct json_object *e = json_object_new_object();
                json_object_object_add(e, "time", json_object_new_string(when));
                json_object_object_add(e, "time_usec", json_object_new_int64(a[i].time_usec));
                json_object_object_add(e, "uid", json_object_new_int64(a[i].uid));
                json_object_object_add(e, "vm", str_or_null(a[i].vm));
                json_object_object_add(e, "field", json_object_new_string(a[i].field));
                json_object_object_add(e, "old", str_or_null(a[i].old_value));
                json_object_object_add(e, "new", str_or_null(a[i].new_value));
                json_object_array_add(arr, e);
        }
        if (json)
                ctl_print_json(arr);
}

static int ledger_history_cmd(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ledger_audit *a = NULL;
        struct ppn_error e = {};
        bool json = args->json;
        size_t n = 0;
        int r;

        r = ctl_open_ledger(g, false, &l);
        if (r)
                return r;
        r = ledger_history(l, args->argc == 2 ? args->argv[1] : NULL, &a, &n, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        print_history(a, n, json);
        ledger_audit_free(a, n);
        return CTL_OK;
}

static int ledger_export_cmd(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct json_object *doc = NULL;
        struct ppn_error e = {};
        int r;

        r = ctl_open_ledger(g, false, &l);
        if (r)
                return r;
        r = ledger_export(l, &doc, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        ctl_print_json(doc);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "ppnctl: writing the export failed: %m\n");
                return CTL_ERR_FAILED;
        }
        return CTL_OK;
}

static int ledger_import_cmd(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct json_object *doc;
        struct ppn_error e = {};
        bool replace = ctl_flag(args, "replace");
        char **argv = args->argv;
        int r;

        doc = json_object_from_file(argv[1]);
        if (!doc) {
                fprintf(stderr, "ppnctl: cannot import '%s': %s; give a file written by 'ppnctl ledger export'\n",
                        argv[1], json_util_get_last_err());
                return CTL_ERR_FAILED;
        }
        r = ctl_open_ledger(g, true, &l);
        if (r == 0) {
                r = ledger_import(l, doc, replace, getuid(), &e);
                r = r < 0 ? ctl_fail(&e, r) : CTL_OK;
        }
        json_object_put(doc);
        if (r == CTL_OK)
                printf("imported '%s'\n", argv[1]);
        return r;
}

static int ledger_check_cmd(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_ledger_ struct ledger *l = NULL;
        struct ppn_error e = {};
        int r;

        r = ctl_open_ledger(g, false, &l);
        if (r)
                return r;
        r = ledger_integrity_check(l, &e);
        if (r < 0)
                return ctl_fail(&e, r);
        printf("ledger '%s': ok\n", g->ledger);
        return CTL_OK;
}

const struct ctl_command ctl_ledger_commands[] = {
        { .name = "check", .run = ledger_check_cmd, .usage = "ledger check",
          .help = "SQLite's integrity check of the ledger file" },
        { .name = "export", .run = ledger_export_cmd, .usage = "ledger export > FILE.json",
          .help = "the whole ledger as one JSON document on stdout" },
        { .name = "history", .run = ledger_history_cmd, .usage = "ledger history [VM] [--json]",
          .help = "the audit log: who changed what, old and new values", .max_args = 1,
          .args_error = "expected at most one VM name", .json = true },
        { .name = "import", .run = ledger_import_cmd, .usage = "ledger import FILE.json [--replace]",
          .help = "add the entries of an exported document, all or nothing",
          .options = (const struct ctl_option[]) {
                  { "replace", 0, NULL, "replace the whole ledger with the document" },
                  {} },
          .min_args = 1, .max_args = 1, .args_error = "expected one FILE" },
        {},
};
