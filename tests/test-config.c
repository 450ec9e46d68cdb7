/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <dirent.h>
#include <syslog.h>

#include "config.h"

static char *slurp(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t len = 0;

        if (!f)
                return NULL;
        if (getdelim(&buf, &len, '\0', f) < 0) {
                free(buf);
                buf = strdup("");
        }
        fclose(f);
        return buf;
}

/* Field by field: the struct has padding that compound-literal assignment leaves undefined. */
static void assert_tunables_equal(const struct policy_tunables *a, const struct policy_tunables *b) {
        assert_int_equal(a->headroom_bytes, b->headroom_bytes);
        assert_int_equal(a->headroom_pct, b->headroom_pct);
        assert_int_equal(a->pressure_available_bytes, b->pressure_available_bytes);
        assert_int_equal(a->pressure_available_pct, b->pressure_available_pct);
        assert_int_equal(a->swap_in_burst, b->swap_in_burst);
        assert_int_equal(a->major_fault_burst, b->major_fault_burst);
        assert_int_equal(a->grow_step_bytes, b->grow_step_bytes);
        assert_int_equal(a->grow_step_pct, b->grow_step_pct);
        assert_int_equal(a->shrink_pct, b->shrink_pct);
        assert_int_equal(a->min_step_bytes, b->min_step_bytes);
        assert_int_equal(a->min_step_permille, b->min_step_permille);
        assert_int_equal(a->host_low_bytes, b->host_low_bytes);
        assert_int_equal(a->host_low_pct, b->host_low_pct);
        assert_true(a->psi_some_threshold == b->psi_some_threshold);
        assert_int_equal(a->stale_usec, b->stale_usec);
        assert_int_equal(a->stuck_usec, b->stuck_usec);
        assert_int_equal(a->stuck_retry_usec, b->stuck_retry_usec);
        assert_int_equal(a->override_usec, b->override_usec);
        assert_int_equal(a->shrink_hold_usec, b->shrink_hold_usec);
        assert_int_equal(a->idle_tax_pct, b->idle_tax_pct);
        assert_int_equal(a->free_page_reporting, b->free_page_reporting);
}

static void assert_defaults(const struct ppn_config *c) {
        assert_int_equal(c->log_level, LOG_INFO);
        assert_string_equal(c->runtime_dir, "/run/ppn");
        assert_string_equal(c->ledger_path, "/var/lib/ppn/ledger.db");
        assert_string_equal(c->control_socket, "/run/ppn/ppnd.sock");
        assert_string_equal(c->control_group, "");
        assert_int_equal(c->control_max_request, 4096);
        assert_int_equal(c->control_idle_timeout_usec, 5000000);
        assert_string_equal(c->cgroup_root, "auto");
        assert_string_equal(c->cgroup_parent, "ppn.slice");
        assert_false(c->cgroup_delegated);
        assert_int_equal(c->stats_interval_sec, 1);
        assert_int_equal(c->tick_usec, 1000000);
        assert_true(c->fast_signal);
        assert_int_equal(c->fast_signal_rate, 0);
        assert_int_equal(c->settled_stats_interval_usec, 3000000);
        assert_int_equal(c->override_usec, 600000000);
        assert_int_equal(c->qmp_retry_max_usec, 5000000);
        assert_string_equal(c->accel, "kvm");
        assert_string_equal(c->qemu_binary, "qemu-system-x86_64");
        assert_string_equal(c->log_dir, "/var/log/ppn");
        assert_string_equal(c->image_dir, "/var/lib/ppn/images");
        assert_false(c->metrics_enabled);
        assert_string_equal(c->metrics_address, "127.0.0.1");
        assert_string_equal(c->libvirt_uri, "");
        assert_int_equal(c->metrics_port, 9464);
        {
                struct policy_tunables t;
                policy_tunables_default(&t);
                t.override_usec = c->override_usec;
                assert_tunables_equal(&t, &c->policy);
        }
}

static void test_default(void **state) {
        struct ppn_config *c = NULL;
        char *problems = NULL;

        assert_int_equal(config_new_default(&c), 0);
        assert_defaults(c);
        config_free(c);
        /* The embedded text parses cleanly through the public entry too. */
        assert_int_equal(config_load_string("built-in", config_default_text, &c, &problems), 0);
        assert_null(problems);
        assert_defaults(c);
        config_free(c);
        /* An empty file means all defaults. */
        assert_int_equal(config_load_string("empty", "", &c, &problems), 0);
        assert_defaults(c);
        config_free(c);
}

static void test_good_full(void **state) {
        _cleanup_free_ char *path = NULL;
        struct ppn_config *c = NULL;
        char *problems = NULL;

        assert_true(asprintf(&path, "%s/config/good-full.conf", getenv("PPN_FIXTURES")) > 0);
        assert_int_equal(config_load_file(path, &c, &problems), 0);
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_string_equal(c->runtime_dir, "/tmp/ppn-run");
        assert_string_equal(c->control_group, "adm");
        assert_int_equal(c->control_max_request, 8192);
        assert_int_equal(c->control_idle_timeout_usec, 2000000);
        assert_string_equal(c->cgroup_root, "/sys/fs/cgroup/unified");
        assert_string_equal(c->cgroup_parent, "pool.test");
        assert_true(c->cgroup_delegated);
        assert_int_equal(c->stats_interval_sec, 2);
        assert_int_equal(c->tick_usec, 500000);
        assert_int_equal(c->override_usec, 90000000);
        assert_string_equal(c->accel, "tcg");
        assert_string_equal(c->qemu_binary, "/opt/qemu/bin/qemu-system-x86_64");
        assert_string_equal(c->log_dir, "/tmp/ppn-log");
        assert_string_equal(c->image_dir, "/srv/images");
        assert_string_equal(c->libvirt_uri, "qemu+unix:///system?socket=/run/libvirt/libvirt-sock");
        assert_true(c->metrics_enabled);
        assert_string_equal(c->metrics_address, "::1");
        assert_int_equal(c->metrics_port, 9100);
        assert_int_equal(c->policy.headroom_bytes, 96 * MIB);
        assert_int_equal(c->policy.headroom_pct, 20);
        assert_int_equal(c->policy.pressure_available_bytes, 48 * MIB);
        assert_int_equal(c->policy.pressure_available_pct, 4);
        assert_int_equal(c->policy.swap_in_burst, 2 * MIB);
        assert_int_equal(c->policy.major_fault_burst, 800);
        assert_int_equal(c->policy.grow_step_bytes, 192 * MIB);
        assert_int_equal(c->policy.grow_step_pct, 30);
        assert_int_equal(c->policy.shrink_pct, 40);
        assert_int_equal(c->policy.min_step_bytes, 32 * MIB);
        assert_int_equal(c->policy.min_step_permille, 20);
        assert_int_equal(c->policy.host_low_bytes, 512 * MIB);
        assert_int_equal(c->policy.host_low_pct, 6);
        assert_true(c->policy.psi_some_threshold == 2.5);
        assert_int_equal(c->policy.stale_usec, 6000000);
        assert_int_equal(c->policy.stuck_usec, 8000000);
        assert_int_equal(c->policy.stuck_retry_usec, 120000000);
        assert_int_equal(c->policy.shrink_hold_usec, 15000000);
        assert_int_equal(c->policy.idle_tax_pct, 50);
        assert_int_equal(c->policy.free_page_reporting, POLICY_FPR_YES);
        /* The lease length the policy uses for changes made behind its back is [controller]'s. */
        assert_int_equal(c->policy.override_usec, 90000000);
        config_free(c);
}

/* Every bad-*.conf must produce exactly its golden bad-*.err (as ppnd --check-config prints). */
static void test_golden(void **state) {
        _cleanup_free_ char *dir = NULL;
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        assert_true(asprintf(&dir, "%s/config", getenv("PPN_FIXTURES")) > 0);
        assert_int_equal(chdir(dir), 0);
        d = opendir(".");
        assert_non_null(d);
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                char golden[256];
                _cleanup_free_ char *want = NULL;
                char *problems = NULL;
                struct ppn_config *c = NULL;

                if (strncmp(de->d_name, "bad-", 4) != 0 || len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
                        continue;
                snprintf(golden, sizeof(golden), "%.*s.err", (int) (len - 5), de->d_name);
                want = slurp(golden);
                if (!want)
                        fail_msg("%s has no golden file %s", de->d_name, golden);
                assert_int_equal(config_load_file(de->d_name, &c, &problems), -EINVAL);
                assert_null(c);
                if (strcmp(problems, want) != 0)
                        fail_msg("%s:\n--- got\n%s--- want\n%s", de->d_name, problems, want);
                free(problems);
                n++;
        }
        closedir(d);
        assert_true(n >= 7);
}

static void test_missing_file(void **state) {
        struct ppn_config *c = NULL;
        char *problems = NULL;

        assert_int_equal(config_load_file("/nonexistent/ppnd.conf", &c, &problems), -EINVAL);
        assert_string_equal(problems, "/nonexistent/ppnd.conf: cannot open: No such file or directory\n");
        free(problems);
}

/* The example file lists every default: uncommented, it must parse to exactly the defaults. */
static void test_example_is_defaults(void **state) {
        _cleanup_free_ char *path = NULL, *text = NULL, *out = NULL;
        struct ppn_config *c = NULL;
        char *problems = NULL;
        size_t len = 0, keys = 0;
        FILE *f;

        assert_true(asprintf(&path, "%s/systemd/ppnd.conf.example", getenv("PPN_SOURCE_ROOT")) > 0);
        text = slurp(path);
        assert_non_null(text);
        f = open_memstream(&out, &len);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
                /* "#key = value" is a default to uncomment; "# text" stays a comment. */
                if (line[0] == '#' && line[1] != ' ' && line[1] != '#' && line[1] && strchr(line, '=')) {
                        line++;
                        keys++;
                }
                fprintf(f, "%s\n", line);
        }
        fclose(f);
        assert_int_equal(config_load_string("example", out, &c, &problems), 0);
        assert_defaults(c);
        assert_true(keys >= 16);
        config_free(c);
}

/* [policy] values are checked as a whole by the policy itself: reported without a line. */
static void test_policy_check(void **state) {
        struct ppn_config *c = NULL;
        char *problems = NULL;

        assert_int_equal(config_load_string("p.conf", "[policy]\nmin-step = 64M\ngrow-step = 32M\n", &c, &problems),
                         -EINVAL);
        assert_string_equal(problems, "p.conf: [policy]: policy: growth step below the minimum step\n");
        free(problems);
        assert_int_equal(config_load_string("p.conf", "[policy]\npsi-threshold = 101\nshrink-percent = 0\n", &c,
                                            &problems), -EINVAL);
        assert_string_equal(problems, "p.conf:2: psi-threshold: '101' is not a percentage from 0 to 100 "
                                      "(examples: 1, 2.5)\n");
        free(problems);
}

/* [controller] settled-stats-interval stays below [policy] stats-stale-after, whichever is set. */
static void test_settled_interval(void **state) {
        struct ppn_config *c = NULL;
        char *problems = NULL;

        assert_int_equal(config_load_string("s.conf", "", &c, &problems), 0);
        assert_int_equal(c->settled_stats_interval_usec, 3000000);
        assert_int_equal(c->fast_signal_rate, 0);
        assert_int_equal(c->fast_signal_reads, 1000);
        config_free(c);
        assert_int_equal(config_load_string("s.conf", "[controller]\nsettled-stats-interval = 6s\nfast-signal-rate = 1G\n"
                                            "fast-signal-reads = 0\n[policy]\nstats-stale-after = 10s\n", &c, &problems), 0);
        assert_int_equal(c->settled_stats_interval_usec, 6000000);
        assert_int_equal(c->fast_signal_rate, UINT64_C(1) << 30);
        assert_int_equal(c->fast_signal_reads, 0);
        config_free(c);
        c = NULL;
        assert_int_equal(config_load_string("s.conf", "[controller]\nfast-signal-reads = 10000001\n", &c, &problems), -EINVAL);
        assert_null(c);
        assert_non_null(strstr(problems, "fast-signal-reads"));
        free(problems);
        problems = NULL;
        assert_int_equal(config_load_string("s.conf", "[controller]\nsettled-stats-interval = 0\n", &c, &problems), 0);
        config_free(c);
        c = NULL;
        assert_int_equal(config_load_string("s.conf", "[controller]\nsettled-stats-interval = 3s\n"
                                            "[policy]\nstats-stale-after = 3s\n", &c, &problems), -EINVAL);
        assert_null(c);
        assert_string_equal(problems, "s.conf: [controller] settled-stats-interval (3.0 s) must be below [policy] "
                                      "stats-stale-after (3.0 s): lower it, or 0 to read every VM's statistics every "
                                      "round\n");
        free(problems);
}

static void test_restart_needed(void **state) {
        struct ppn_config *a = NULL, *b = NULL;
        char buf[256];

        assert_int_equal(config_new_default(&a), 0);
        assert_int_equal(config_load_string("b", "[control]\nsocket = /tmp/x.sock\n[daemon]\nlog-level = debug\n"
                                                 "[ledger]\npath = /tmp/l.db\n", &b, NULL), 0);
        assert_int_equal(config_restart_needed(a, b, buf, sizeof(buf)), 2);
        assert_string_equal(buf, "ledger.path, control.socket");
        config_free(b);
        /* These were once taken silently on SIGHUP ("reloaded") and kept their old values. */
        assert_int_equal(config_load_string("b", "[metrics]\nenabled = yes\nport = 9999\n[control]\nmax-request = 8K\n"
                                                 "idle-timeout = 9s\n[cgroup]\ndelegated = yes\n", &b, NULL), 0);
        assert_int_equal(config_restart_needed(a, b, buf, sizeof(buf)), 5);
        assert_string_equal(buf, "control.max-request, control.idle-timeout, cgroup.delegated, metrics.enabled, "
                                 "metrics.port");
        assert_int_equal(config_restart_needed(a, a, buf, sizeof(buf)), 0);
        assert_string_equal(buf, "");
        config_free(a);
        config_free(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_default),
                cmocka_unit_test(test_good_full),
                cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_example_is_defaults),
                cmocka_unit_test(test_settled_interval),
                cmocka_unit_test(test_policy_check),
                cmocka_unit_test(test_restart_needed),
                cmocka_unit_test(test_golden),
        };
        return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
