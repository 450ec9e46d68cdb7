/* SPDX-License-Identifier: Apache-2.0 */
/* ppnd: the per-node pool daemon. Wiring only: options, config, the manager. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "log.h"
#include "manager.h"
#include "oomguard.h"

enum { OPT_CONFIG = 'c', OPT_CHECK = 'C', OPT_LOG = 'l', OPT_VERSION = 'V', OPT_HELP = 'h' };

/* One row per option; getopt's table and --help are generated from it. */
static const struct {
        const char *name;
        int has_arg;
        int val;
        const char *arg;
        const char *help;
} options[] = {
        { "config", required_argument, OPT_CONFIG, "FILE", "read the configuration from FILE (default: built-in)" },
        { "check-config", required_argument, OPT_CHECK, "FILE", "check FILE, print each problem as FILE:LINE: problem, exit" },
        { "log-level", required_argument, OPT_LOG, "LEVEL", "debug, info, notice, warning or err (overrides the config)" },
        { "version", no_argument, OPT_VERSION, NULL, "print the version and exit" },
        { "help", no_argument, OPT_HELP, NULL, "print this help and exit" },
};

static void usage(FILE *f) {
        fprintf(f, "usage: ppnd [OPTIONS]\n\nThe per-node memory and CPU pool daemon.\n\noptions:\n");
        for (size_t i = 0; i < ELEMENTSOF(options); i++) {
                char left[40];
                snprintf(left, sizeof(left), "--%s%s%s", options[i].name, options[i].arg ? " " : "",
                         options[i].arg ? options[i].arg : "");
                fprintf(f, "  %-26s %s\n", left, options[i].help);
        }
}

static int check_config(const char *path) {
        _cleanup_config_ struct ppn_config *c = NULL;
        _cleanup_free_ char *problems = NULL;
        int r = config_load_file(path, &c, &problems);

        if (r < 0) {
                fputs(problems ? problems : "out of memory\n", stderr);
                return 1;
        }
        printf("%s: ok\n", path);
        return 0;
}

struct args {
        const char *config;
        int log_level;          /* -1: from the config */
};

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, struct args *a) {
        struct option longopts[ELEMENTSOF(options) + 1] = { { 0 } };
        int c;

        for (size_t i = 0; i < ELEMENTSOF(options); i++)
                longopts[i] = (struct option) { options[i].name, options[i].has_arg, NULL, options[i].val };
        while ((c = getopt_long(argc, argv, "c:h", longopts, NULL)) >= 0) {
                switch (c) {
                case OPT_CONFIG:
                        a->config = optarg;
                        break;
                case OPT_CHECK:
                        return check_config(optarg);
                case OPT_LOG:
                        a->log_level = log_level_from_string(optarg);
                        if (a->log_level < 0) {
                                fprintf(stderr, "ppnd: unknown log level '%s'; see 'ppnd --help'\n", optarg);
                                return 2;
                        }
                        break;
                case OPT_VERSION:
                        printf("ppnd %s\n", PPN_VERSION);
                        return 0;
                case OPT_HELP:
                        usage(stdout);
                        return 0;
                default:
                        fprintf(stderr, "see 'ppnd --help'\n");
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "ppnd: unexpected argument '%s'; see 'ppnd --help'\n", argv[optind]);
                return 2;
        }
        return -1;
}

static int load(const struct args *a, struct ppn_config **ret) {
        _cleanup_free_ char *problems = NULL;
        int r = a->config ? config_load_file(a->config, ret, &problems) : config_new_default(ret);

        if (r < 0) {
                if (problems)
                        fputs(problems, stderr);
                log_error("cannot start: the configuration %s has problems (check with ppnd --check-config)",
                          a->config ? a->config : "(built-in)");
        }
        return r;
}

/* ppnd gives memory back under host pressure: it must outlive the guests' QEMUs there. */
static void protect_from_oom(void) {
        struct ppn_error err = { 0 };
        int v;

        if (oomguard_apply("/proc/self/oom_score_adj", OOMGUARD_SCORE_ADJ, &v, &err) < 0)
                log_warning("%s", err.msg);
        else
                log_debug("oom_score_adj %d", v);
}

/* ppnd holds three descriptors per VM (its QMP socket, /proc/PID/statm and /proc/PID/stat kept
 * open): 2,000 VMs need 6,000, beyond a usual soft limit of 1,024. The soft limit is raised to
 * the hard one; ppnd never uses select(). The unit sets LimitNOFILE= itself (its system call
 * filter refuses setrlimit), so this matters when ppnd is started otherwise. */
static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
                return;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                log_warning_errno(errno, "cannot raise the open-file limit to %llu: %m", (unsigned long long) rl.rlim_max);
}

int main(int argc, char **argv) {
        struct args a = { .log_level = -1 };
        _cleanup_(manager_freep) struct manager *m = NULL;
        struct ppn_config *cfg = NULL;
        struct ppn_error err = { 0 };
        int r;

        log_set_ident("ppnd");
        r = parse_args(argc, argv, &a);
        if (r >= 0)
                return r;
        if (load(&a, &cfg) < 0)
                return 1;
        if (a.log_level >= 0)
                cfg->log_level = a.log_level;
        log_set_max_level(cfg->log_level);
        protect_from_oom();
        raise_fd_limit();
        r = manager_new(cfg, a.config, &m, &err);
        if (r < 0) {
                log_error("cannot start: %s", err.msg);
                return 1;
        }
        return manager_run(m) < 0 ? 1 : 0;
}
