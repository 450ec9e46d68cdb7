/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnd's configuration: an INI file (libinih) read through one table of keys. Every key has a
 * type, bounds and a default; the defaults themselves are an embedded INI text parsed by the
 * same code, so ppnd runs with no file at all and the defaults can never drift from what the
 * parser accepts.
 *
 * Problems are collected, not stopped at: every line that is wrong is reported as
 * "FILE:LINE: problem" (one per line, in file order), as `ppnd --check-config FILE` prints
 * them. Unknown sections and keys are problems, so a typo never silently means "default".
 */

#include <stdbool.h>
#include <stdint.h>

#include "policy.h"
#include "util.h"

struct ppn_config {
        /* [daemon] */
        int log_level;                  /* syslog level */
        char *runtime_dir;              /* QMP sockets are looked up relative to it */
        uint64_t history_memory;        /* bytes all VMs' history samples share (history.h) */
        /* [ledger] */
        char *ledger_path;
        /* [control] */
        char *control_socket;
        char *control_group;            /* "" = root only */
        uint64_t control_max_request;   /* bytes per request line */
        uint64_t control_idle_timeout_usec; /* close a client silent this long (followers exempt) */
        /* [cgroup] */
        char *cgroup_root;              /* mount point; "auto" = /sys/fs/cgroup (v1 or v2 detected) */
        char *cgroup_parent;            /* per-VM groups are created under it */
        bool cgroup_delegated;          /* parent = ppnd's own group (systemd Delegate=yes) */
        /* [controller] */
        uint64_t stats_interval_sec;    /* guest statistics polling, whole seconds (QEMU's unit) */
        uint64_t tick_usec;             /* controller period */
        uint64_t override_usec;         /* default override lease (ppnctl balloon, QMP changes) */
        uint64_t qmp_retry_max_usec;    /* reconnect backoff ceiling while a QMP socket is absent */
        bool fast_signal;               /* sample QEMU RSS every 200 ms and grow on bursts (fastgrow.h) */
        uint64_t fast_signal_reads;     /* QEMU RSS reads a second between ticks at most, nearest first (0: all) */
        uint64_t fast_signal_rate;      /* assumed top allocation rate, bytes/s: VMs farther than it can
                                         * reach in a tick are sampled once a tick (fastgrow_dense()) */
        uint64_t settled_stats_interval_usec; /* a settled VM's statistics this often (settle.h); 0 = every round */
        /* [qemu] */
        /* Used by ppnctl start|stop|adopt|import|move, which launch and carry VMs. */
        char *accel;                    /* "tcg" or "kvm" */
        char *qemu_binary;              /* absolute, or a name looked up in PATH */
        char *log_dir;                  /* QEMU's stderr and serial console: LOG_DIR/NAME.log */
        char *image_dir;                /* ppnctl import puts disk images in IMAGE_DIR/NAME/ */
        /* [host]: where the node's memory is read (a container's view, e.g. LXCFS's, or a test's) */
        char *host_meminfo;             /* MemAvailable: the host's free memory (default /proc/meminfo) */
        char *host_pressure;            /* memory PSI (default /proc/pressure/memory) */
        char *host_vmstat;              /* pgalloc_*: what the host allocated (default /proc/vmstat) */
        /* [libvirt] */
        char *libvirt_uri;              /* connection for ledger entries naming a domain; "" = none */
        /* [metrics] */
        bool metrics_enabled;
        char *metrics_address;
        uint64_t metrics_port;
        /* [fleet]: the etcd store other nodes and orchestrators read (docs/fleet.md) */
        bool fleet_enabled;
        char *fleet_endpoints;          /* comma-separated http(s):// URLs, tried in turn */
        char *fleet_ca;                 /* "" = the system's CAs */
        char *fleet_cert;               /* client certificate, "" = none */
        char *fleet_key;                /* its private key */
        uint64_t fleet_lease_usec;      /* TTL of the lease the capacity record lives under */
        uint64_t fleet_republish_usec;  /* rewrite the record at least this often */
        uint64_t fleet_threshold_bytes; /* ...and whenever a figure moves by more than this */
        /* live moves (docs/relocation.md) */
        char *migration_address;        /* this node receives migrations on this address */
        uint64_t migration_port;        /* ...on the first free port of [port, port + ports) */
        uint64_t migration_ports;
        char *migration_peers;          /* comma-separated addresses this node sends to */
        uint64_t migration_timeout_usec;/* a move not finished by then is aborted */
        /* [policy]: starts from policy_tunables_default(); override_usec is [controller]
         * override-default. Checked with policy_tunables_check() on load. */
        struct policy_tunables policy;
};

/* The embedded default configuration text (valid INI, parsed by config_new_default()). */
extern const char config_default_text[];

/* A config holding the embedded defaults. 0, or -ENOMEM. */
int config_new_default(struct ppn_config **ret);

/*
 * Loads FILE over the defaults. On success returns 0 and *ret. If the file has problems,
 * returns -EINVAL and, if ret_problems is non-NULL, the problems text ("FILE:LINE: problem\n"
 * per problem; "FILE: ..." for whole-file problems such as a missing file). -ENOMEM otherwise.
 * `name` is what problems are prefixed with (usually path itself).
 */
int config_load_file(const char *path, struct ppn_config **ret, char **ret_problems);

/* Same, from a string (tests; the embedded default). */
int config_load_string(const char *name, const char *text, struct ppn_config **ret, char **ret_problems);

struct ppn_config *config_free(struct ppn_config *c);
static inline void config_freep(struct ppn_config **c) { config_free(*c); }
#define _cleanup_config_ _cleanup_(config_freep)

/*
 * Names the settings that differ between a and b and can only change with a restart
 * (paths, sockets, the control socket's limits, cgroup delegation, the metrics listener), as
 * ", "-joined text into buf; returns the number of them.
 */
int config_restart_needed(const struct ppn_config *a, const struct ppn_config *b, char *buf, size_t len);
