/* SPDX-License-Identifier: Apache-2.0 */
/* ppnctl: the operator's CLI. Wiring only: a command table, global options, dispatch. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

struct ctl_command {
        const char *name;
        int (*run)(int argc, char **argv);
        const char *usage;
        const char *help;
};

static const struct ctl_command commands[] = {
        { NULL, NULL, NULL, NULL },
};

static void usage(FILE *f) {
        fprintf(f, "usage: ppnctl [--ledger PATH] [--socket PATH] COMMAND [ARGS...]\n\ncommands:\n");
        for (size_t i = 0; commands[i].name; i++)
                fprintf(f, "  %-40s %s\n", commands[i].usage, commands[i].help);
}

int main(int argc, char **argv) {
        log_set_ident("ppnctl");
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (strcmp(argv[1], "--version") == 0) {
                printf("ppnctl %s\n", PPN_VERSION);
                return 0;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                usage(stdout);
                return 0;
        }
        for (size_t i = 0; commands[i].name; i++)
                if (strcmp(argv[1], commands[i].name) == 0)
                        return commands[i].run(argc - 1, argv + 1);
        fprintf(stderr, "ppnctl: unknown command '%s'; see 'ppnctl --help'\n", argv[1]);
        return 2;
}
