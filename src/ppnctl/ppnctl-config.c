/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl's settings: the daemon's config file (read by the same module as ppnd, so a key means
 * one thing to both), overridden by the environment, overridden by options.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ppnctl.h"

static void print_problems(const char *problems) {
        for (const char *l = problems; *l;) {
                size_t n = strcspn(l, "\n");
                fprintf(stderr, "ppnctl: %.*s\n", (int) n, l);
                l += n + (l[n] == '\n');
        }
}

int ctl_config_load(const char *path, const char *default_path, struct ppn_config **ret) {
        _cleanup_free_ char *problems = NULL;
        int r;

        /* Only the default may be absent; a file named on purpose that is missing is a mistake. */
        if (!path && access(default_path, F_OK) < 0 && errno == ENOENT)
                r = config_new_default(ret);
        else
                r = config_load_file(path ? path : default_path, ret, &problems);
        if (r == -EINVAL && problems) {
                print_problems(problems);
                fprintf(stderr, "ppnctl: fix %s (see ppnd.conf(5); ppnd --check-config checks it), or name "
                        "another with --config\n", path ? path : default_path);
                return CTL_ERR_FAILED;
        }
        return r < 0 ? ctl_fail(NULL, r) : 0;
}

static void pick(const char **field, char *(*env)(const char *), const char *var, const char *from_config) {
        const char *v;

        if (*field)
                return;
        v = var ? env(var) : NULL;
        *field = v && *v ? v : from_config;
}

void ctl_settings_resolve(struct ctl_globals *g, const struct ppn_config *cfg, char *(*env)(const char *)) {
        pick(&g->ledger, env, "PPN_LEDGER", cfg->ledger_path);
        pick(&g->socket, env, "PPN_SOCKET", cfg->control_socket);
        pick(&g->runtime_dir, env, "PPN_RUNTIME_DIR", cfg->runtime_dir);
        pick(&g->log_dir, env, "PPN_LOG_DIR", cfg->log_dir);
        pick(&g->image_dir, env, "PPN_IMAGE_DIR", cfg->image_dir);
        pick(&g->accel, env, "PPN_ACCEL", cfg->accel);
        pick(&g->qemu, env, "PPN_QEMU", cfg->qemu_binary);
        pick(&g->cgroup_root, env, "PPN_CGROUP_ROOT", cfg->cgroup_root);
        pick(&g->cgroup_parent, env, "PPN_CGROUP_PARENT", cfg->cgroup_parent);
        pick(&g->etcd_endpoints, env, "PPN_ETCD_ENDPOINTS", cfg->fleet_endpoints);
        g->etcd_ca = cfg->fleet_ca;
        g->etcd_cert = cfg->fleet_cert;
        g->etcd_key = cfg->fleet_key;
        pick(&g->libvirt_uri, env, "PPN_LIBVIRT_URI", cfg->libvirt_uri);
        g->migration_peers = cfg->migration_peers;
        g->migration_timeout_usec = cfg->migration_timeout_usec;
        /* "auto" is the cgroup module's default root (NULL): found, v1 or v2. */
        if (strcmp(g->cgroup_root, "auto") == 0)
                g->cgroup_root = NULL;
}
