/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The seam between the manager and a VM's hypervisor: one small interface, two backends.
 *   QMP      ppnd speaks to QEMU's monitor itself (vmlink); CPU weight through ppnd's own
 *            cgroup (the manager places QEMU's pid, see cgroup.h).
 *   libvirt  libvirt owns the monitor; ppnd goes through libvirt's API (virtlink); CPU weight
 *            through the domain's own cgroup (virDomainSetSchedulerParameters).
 * The manager sees the same states, samples, targets and callbacks whichever a VM has; the
 * ledger entry decides (a libvirt domain name, else a QMP socket).
 */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "vmlink.h"

/* Where a VM is reached. libvirt_domain set: through libvirt at libvirt_uri; else QMP at
 * qmp_path (NULL: none known, the link stays ABSENT). */
struct backend_where {
        const char *qmp_path;
        const char *libvirt_uri;
        const char *libvirt_domain;
};

struct backend;

struct backend_callbacks {
        void (*state_changed)(struct backend *b, enum vmlink_state old, const char *why, void *userdata);
        void (*sampled)(struct backend *b, void *userdata);
        /* A command failed (for metrics): QEMU's error class, "timeout", "transport" or "libvirt". */
        void (*error)(struct backend *b, const char *class, void *userdata);
        /* A virtio-mem step of the actuator (QMP VMs with a virtio-mem device; see vmlink.h). */
        void (*actuated)(struct backend *b, const struct actuator_plan *plan, void *userdata);
};

/* *ret is set before the backend may call back (a QMP connect can succeed at once). On failure
 * *ret is NULL. */
int backend_new(sd_event *e, const char *name, const struct backend_where *w, const struct vmlink_options *o,
                const struct backend_callbacks *cb, void *userdata, struct backend **ret);
/* Disconnects (the VM keeps running) and frees. NULL ok. */
struct backend *backend_free(struct backend *b);

/* The ledger changed where the VM is: reconnects there (switching backend if need be). */
int backend_set_where(struct backend *b, const struct backend_where *w);
void backend_set_options(struct backend *b, const struct vmlink_options *o);

bool backend_is_libvirt(const struct backend *b);
enum vmlink_state backend_get_state(const struct backend *b);
/* QEMU's pid for QMP VMs while connected; 0 when unknown (always for libvirt). */
pid_t backend_pid(const struct backend *b);
const struct vmlink_sample *backend_last(const struct backend *b);
const char *backend_why(const struct backend *b);

/* As vmlink_sample() / vmlink_set_size(): the VM's size, reached by the actuator (virtio-mem
 * blocks first, then the balloon) where the VM has a virtio-mem device, else by the balloon.
 * stats false: the guest statistics are not asked this round (QMP; libvirt reads them with the
 * balloon's size in one call and ignores it). */
int backend_sample(struct backend *b, bool stats);
int backend_set_target(struct backend *b, uint64_t bytes, uint64_t floor_bytes);
/* The actuator's current plan for a VM with virtio-mem; NULL otherwise (always for libvirt). */
const struct actuator_plan *backend_actuator_plan(const struct backend *b);

/*
 * The VM's CPU weight (ledger units, 1..10000). libvirt: set on the domain's cgroup by libvirt,
 * now and on every adoption; returns 0. QMP: -EOPNOTSUPP, the caller places QEMU's pid in its
 * own cgroup with that weight.
 */
int backend_set_cpu_weight(struct backend *b, uint32_t weight);
