/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: ledger import (ledger_import()), the path by which a whole JSON document from a
 * file ('ppnctl ledger import') reaches the store.
 *
 * Every input gets a fresh ledger: a copy of a template (node physical=16G reserve=1G, VMs
 * "web" and "db") made once in a private temporary folder. The input is parsed as ppnctl parses
 * a file (json-c, default flags), imported as an update, then imported again with --replace.
 *
 * Invariants checked on every input besides ASan/LSan/UBSan:
 *   - a refused import changes nothing: the export afterwards equals the export before;
 *   - a refusal is -EINVAL / -ENOSPC / -EEXIST / -EPROTO with words, never a crash or -EIO;
 *   - after an accepted import the ledger loads, its node resolves, and it exports.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "check failed: %s\n", #x); abort(); } } while (0)

/* tmpfs: the ledger fsyncs every commit (synchronous=FULL), which costs ~25 ms on a disk. */
static char dir[] = "/dev/shm/ppn-fuzz-ledger.XXXXXX";
static char template_path[64], work_path[64], meminfo_path[64];

static char *export_text(struct ledger *l) {
        struct json_object *doc = NULL;
        char *s;

        CHECK(ledger_export(l, &doc, NULL) == 0);
        s = strdup(json_object_to_json_string_ext(doc, JSON_C_TO_STRING_PLAIN));
        json_object_put(doc);
        CHECK(s);
        return s;
}

static void remove_db(const char *path) {
        char p[96];
        unlink(path);
        snprintf(p, sizeof(p), "%s-wal", path);
        unlink(p);
        snprintf(p, sizeof(p), "%s-shm", path);
        unlink(p);
}

static void cleanup(void) {
        remove_db(template_path);
        remove_db(work_path);
        unlink(meminfo_path);
        rmdir(dir);
}

static void make_template(void) {
        const struct ledger_options o = { .meminfo_path = meminfo_path };
        const char *node[] = { "physical=16G", "reserve=1G" };
        const char *vms[][2] = { { "web", "min=512M" }, { "db", "min=1G" } };
        struct ledger *l = NULL;
        FILE *f = fopen(meminfo_path, "we");

        CHECK(f);
        fputs("MemTotal:       16384000 kB\nMemFree:         8000000 kB\n", f);
        CHECK(fclose(f) == 0);
        CHECK(ledger_open(template_path, &o, &l, NULL) == 0);
        CHECK(ledger_node_set(l, node, 2, 0, NULL) == 0);
        for (size_t i = 0; i < 2; i++) {
                struct ledger_vm vm;
                ledger_vm_init(&vm);
                snprintf(vm.name, sizeof(vm.name), "%s", vms[i][0]);
                CHECK(ledger_vm_assign_pair(&vm, vms[i][1], NULL) == 0);
                CHECK(ledger_vm_assign_pair(&vm, "max=4G", NULL) == 0);
                CHECK(ledger_vm_add(l, &vm, 0, NULL, NULL) == 0);
                ledger_vm_done(&vm);
        }
        ledger_close(l); /* checkpoints: the template is one self-contained file */
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        CHECK(mkdtemp(dir));
        snprintf(template_path, sizeof(template_path), "%s/template.db", dir);
        snprintf(work_path, sizeof(work_path), "%s/work.db", dir);
        snprintf(meminfo_path, sizeof(meminfo_path), "%s/meminfo", dir);
        atexit(cleanup);
        make_template();
        return 0;
}

static void copy_template(void) {
        int in = open(template_path, O_RDONLY | O_CLOEXEC);
        int out = open(work_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        struct stat st;

        CHECK(in >= 0 && out >= 0 && fstat(in, &st) == 0);
        /* sendfile() may copy less than asked when a signal arrives (libFuzzer's timeout alarm,
         * on a loaded machine): continue until all is copied. */
        for (off_t done = 0; done < st.st_size;) {
                ssize_t n = sendfile(out, in, &done, (size_t) (st.st_size - done));
                CHECK(n > 0 || (n < 0 && errno == EINTR));
        }
        close(in);
        close(out);
}

static bool refusal(int r) {
        return r == -EINVAL || r == -ENOSPC || r == -EEXIST || r == -EPROTO || r == -ERANGE ||
               r == -ENOENT;
}

/* Imports doc; a refusal must leave the export as it was, an acceptance a loadable ledger. */
static void import_once(struct ledger *l, struct json_object *doc, bool replace) {
        struct ppn_error err = { 0 };
        struct ledger_state *st = NULL;
        char *before = export_text(l), *after;
        int r = ledger_import(l, doc, replace, 0, &err);

        if (r < 0) {
                if (!refusal(r) || !err.msg[0])
                        fprintf(stderr, "import: unexpected %d: %s\n", r, err.msg);
                CHECK(refusal(r) && err.msg[0]);
                after = export_text(l);
                CHECK(strcmp(before, after) == 0);
                free(after);
        } else {
                CHECK(ledger_load(l, &st, NULL) == 0);
                CHECK(st->node_ok);
                ledger_state_free(st);
                free(export_text(l));
        }
        free(before);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const struct ledger_options o = { .meminfo_path = meminfo_path };
        struct json_tokener *tok = json_tokener_new();
        struct json_object *doc;
        struct ledger *l = NULL;

        CHECK(tok);
        doc = json_tokener_parse_ex(tok, (const char *) data, (int) size);
        json_tokener_free(tok);
        if (!doc)
                return 0;
        copy_template();
        CHECK(ledger_open(work_path, &o, &l, NULL) == 0);
        import_once(l, doc, false);
        import_once(l, doc, true);
        json_object_put(doc);
        ledger_close(l);
        remove_db(work_path);
        return 0;
}
