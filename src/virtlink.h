/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * One VM's link to a domain that libvirt runs, on the daemon's sd-event loop: the same states,
 * samples and balloon targets as vmlink (QMP), through libvirt's C API instead of QEMU's
 * monitor, which libvirt owns.
 *
 * Threads. Every libvirt call blocks (an RPC to libvirtd, which may wait on QEMU's monitor for
 * up to 30 s), and libvirt's events and keepalives need libvirt's own event loop to run. So all
 * links with the same URI share one connection owned by one thread, "the libvirt thread": it
 * runs libvirt's default event loop (virEventRunDefaultImpl), and the daemon hands it jobs
 * (sample, balloon target, cpu shares) through a queue whose eventfd is a handle in that very
 * loop. Replies and libvirt's events come back through a second queue whose eventfd is an
 * sd-event I/O source. The daemon's loop never calls libvirt, so it stays responsive whatever
 * libvirtd does; one thread (not one per VM) because libvirt serialises a connection's calls
 * anyway, and its events arrive on the thread that runs its loop.
 *
 * Lifecycle. The thread connects (and reconnects every second while libvirtd is away), and
 * registers for lifecycle and balloon-change events of every domain. Started/resumed: the link
 * looks the domain up and goes RUNNING. Stopped/crashed/shut down/undefined: ABSENT at once
 * (the event arrives within milliseconds of `virsh destroy`). libvirtd gone (the connection's
 * close callback, or keepalive after 3 × 2 s): every link ABSENT, and back to RUNNING when the
 * connection and the domain return. libvirtd not answering a call for 10 s (keepalive does not
 * cut a call in flight short): every link ABSENT, held, until the call returns. A balloon-change event updates the sample's `actual` at
 * once, so a `virsh setmem` by hand is seen like a `balloon` in QEMU's monitor.
 */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "vmlink.h"

struct virtlink;

struct virtlink_callbacks {
        void (*state_changed)(struct virtlink *l, enum vmlink_state old, const char *why, void *userdata);
        void (*sampled)(struct virtlink *l, void *userdata);
        /* A libvirt call failed: "libvirt" (the call's error), or "transport" (connection lost). */
        void (*error)(struct virtlink *l, const char *class, void *userdata);
};

/* uri: libvirt connection URI (e.g. "qemu:///system"); domain: the domain's name. */
int virtlink_new(sd_event *e, const char *name, const char *uri, const char *domain, const struct vmlink_options *o,
                 const struct virtlink_callbacks *cb, void *userdata, struct virtlink **ret);
/* Forgets the domain (it keeps running) and frees; the last link of a URI stops its thread. NULL ok. */
struct virtlink *virtlink_free(struct virtlink *l);

/* A new domain name (ledger changed): looks it up. */
int virtlink_set_domain(struct virtlink *l, const char *domain);
void virtlink_set_options(struct virtlink *l, const struct vmlink_options *o);

const char *virtlink_name(const struct virtlink *l);
enum vmlink_state virtlink_get_state(const struct virtlink *l);
/* QEMU's pid is libvirt's business: always 0. */
pid_t virtlink_pid(const struct virtlink *l);
const struct vmlink_sample *virtlink_last(const struct virtlink *l);
const char *virtlink_why(const struct virtlink *l);

/* Starts a sampling round (virDomainMemoryStats). 0, -ENOTCONN when not RUNNING, -EBUSY in flight. */
int virtlink_sample(struct virtlink *l);
/* virDomainSetMemoryFlags(LIVE); a target below floor_bytes is refused (-ERANGE), never sent. */
int virtlink_set_target(struct virtlink *l, uint64_t bytes, uint64_t floor_bytes);
/*
 * The domain's CPU weight, in the ledger's units (cgroup v2 cpu.weight, 1..10000, default 100),
 * through virDomainSetSchedulerParameters(cpu_shares) scaled so the kernel value means that
 * weight (virtlink_shares_for_weight()). Queued: applied now if RUNNING, else on adoption;
 * failures are logged and counted. 0 or -EINVAL (out of range).
 */
int virtlink_set_cpu_weight(struct virtlink *l, uint32_t weight);

/*
 * libvirt writes cpu_shares into the kernel unscaled: cpu.shares on cgroup v1, cpu.weight on v2.
 * So the value to pass for a ledger weight is weight × 1024 / 100 on v1 (the v1 default 1024
 * is the v2 default 100) and the weight itself on v2. cgroup_v2: the cpu controller is on the
 * unified hierarchy. Pure.
 */
uint64_t virtlink_shares_for_weight(uint32_t weight, bool cgroup_v2);
/* The inverse, for import: a domain's cpu_shares as a ledger weight, clamped to 1..10000. */
uint32_t virtlink_weight_for_shares(uint64_t shares, bool cgroup_v2);
/* True if the cpu controller is on cgroup v2 under /sys/fs/cgroup (what libvirt writes to). */
bool virtlink_cpu_on_cgroup_v2(void);

/* ---- import: what libvirt runs, as proposed ledger entries ---- */

/* One running domain as libvirt reports it. Sizes in bytes. */
struct virtlink_domain {
        char name[256];
        uint64_t memory_bytes;          /* <memory>: the boot size, the balloon's ceiling */
        uint64_t current_bytes;         /* <currentMemory>: the balloon's size now */
        bool balloon;                   /* a memory balloon answers */
        uint64_t cpu_shares;            /* libvirt's cpu_shares (the kernel value, unscaled); 0 unknown */
};

/*
 * Lists the running domains at uri (synchronously: for ppnctl, not the daemon). Returns the
 * number of domains (>= 0) with *ret (free()), or -errno with err saying what libvirt said.
 */
int virtlink_list_domains(const char *uri, struct virtlink_domain **ret, struct ppn_error *err);

/* A proposed ledger entry for a domain (pure). */
struct virtlink_proposal {
        char name[64];                  /* a valid ledger name made from the domain's */
        uint64_t min_bytes, max_bytes;
        uint32_t cpu_weight;
        const char *note;               /* why a value is what it is; "" if nothing to say */
};

/*
 * max = <memory>; min = <currentMemory> when below <memory> (what the operator sized it to),
 * else half of <memory> (nothing could move otherwise), never below 128 MiB or above max, in
 * whole MiB; weight = cpu_shares as the ledger weight that the kernel value means on this
 * cgroup version (virtlink_weight_for_shares()). The name: lower-case, characters outside
 * [a-z0-9_.-] become '-', cut to 63. Returns 0, or -EINVAL when no valid name can be made.
 */
int virtlink_propose(const struct virtlink_domain *d, bool cgroup_v2, struct virtlink_proposal *ret);
