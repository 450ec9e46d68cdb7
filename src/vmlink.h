/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * One VM's link to its QEMU, on the daemon's sd-event loop: find the QMP socket, connect,
 * negotiate, find the balloon device, enable guest statistics, and then sample (balloon actual
 * + guest statistics) and set balloon targets on request.
 *
 * States: ABSENT (no socket, nobody listening, or QEMU gone) -> CONNECTING (greeting and set-up
 * under way) -> RUNNING. While ABSENT the link retries with a backoff that starts at 100 ms
 * and doubles up to retry_max, so a VM that starts is adopted within that ceiling. QEMU's exit
 * closes the socket: the link notices at once (EOF/HUP), goes ABSENT and starts retrying.
 *
 * A QEMU with a virtio-mem device (the first one query-memory-devices lists, whatever its id: a
 * QEMU started elsewhere is adopted too) is probed at adoption (its block size and region, and
 * the boot memory from query-memory-size-summary) and polled in every sampling round; its
 * MEMORY_DEVICE_SIZE_CHANGE events update the plugged size between rounds. For such a VM,
 * vmlink_set_size() hands targets to the actuator (actuator.h), which is stepped after every
 * round and event: plug/unplug requests and balloon moves, with reasons.
 *
 * The QEMU pid comes from the socket's peer credentials (SO_PEERCRED, qmp_peer_pid()): the
 * kernel records the pid of the process that created the listening socket's connection end,
 * i.e. QEMU itself. It is never read from a pidfile or the ledger, so it cannot be stale or forged
 * by whoever writes those files.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

enum vmlink_state {
        VMLINK_ABSENT,
        VMLINK_CONNECTING,
        VMLINK_RUNNING,
};

const char *vmlink_state_to_string(enum vmlink_state s);

#define VMLINK_STAT_UNKNOWN UINT64_MAX

/* The latest readings. Sizes in bytes; VMLINK_STAT_UNKNOWN where QEMU/the guest gave none. */
struct vmlink_sample {
        bool balloon;                   /* a balloon device answers (false: DeviceNotActive/none) */
        bool free_page_reporting;       /* its free-page-reporting property is on (read at adoption) */
        uint64_t actual;                /* the guest's size: balloon actual + plugged; valid if
                                         * actual_usec != 0 */
        uint64_t balloon_actual;        /* query-balloon actual: base − what the balloon holds */
        bool vmem;                      /* a virtio-mem device answers */
        uint64_t base;                  /* boot memory (query-memory-size-summary), 0 if unknown */
        uint64_t plugged, requested;    /* virtio-mem size and requested-size */
        uint64_t region, block;         /* its max-size and block-size */
        uint64_t actual_usec;           /* monotonic time of that reply */
        uint64_t available, free, total;
        uint64_t swap_in, swap_out, major_faults;
        uint64_t stats_update_sec;      /* guest-stats last-update: wall clock seconds, 0 = never */
        uint64_t stats_usec;            /* monotonic time the stats were read; 0 = never */
};

struct vmlink;
struct actuator_plan;

struct vmlink_callbacks {
        /* The state changed; why is one line for the operator. */
        void (*state_changed)(struct vmlink *l, enum vmlink_state old, const char *why, void *userdata);
        /* A vmlink_sample() round has completed (successfully or not). */
        void (*sampled)(struct vmlink *l, void *userdata);
        /* A QMP command failed (optional; for metrics): QEMU's error class ("DeviceNotActive",
         * "GenericError", ...), or "timeout", or "transport" (connection lost, bad reply). */
        void (*qmp_error)(struct vmlink *l, const char *class, void *userdata);
        /* The actuator took a step for a virtio-mem VM (optional; plan->reason says which). */
        void (*actuated)(struct vmlink *l, const struct actuator_plan *plan, void *userdata);
};

struct vmlink_options {
        uint64_t stats_interval_sec;    /* guest-stats-polling-interval to set (whole seconds) */
        uint64_t retry_max_usec;        /* reconnect backoff ceiling */
        uint64_t timeout_usec;          /* per QMP command; 0 = qmp's default */
};

int vmlink_new(sd_event *e, const char *name, const char *qmp_path, const struct vmlink_options *o,
               const struct vmlink_callbacks *cb, void *userdata, struct vmlink **ret);
/* Disconnects (QEMU keeps running) and frees. NULL ok. */
struct vmlink *vmlink_free(struct vmlink *l);

/* A new socket path (ledger changed): reconnects there. NULL path: stays ABSENT. */
int vmlink_set_path(struct vmlink *l, const char *qmp_path);
/* New options (reload); a new stats interval is sent to a running QEMU. */
void vmlink_set_options(struct vmlink *l, const struct vmlink_options *o);

const char *vmlink_name(const struct vmlink *l);
enum vmlink_state vmlink_get_state(const struct vmlink *l);
/* QEMU's pid while CONNECTING/RUNNING, else 0. */
pid_t vmlink_pid(const struct vmlink *l);
const struct vmlink_sample *vmlink_last(const struct vmlink *l);
/* Why the link is where it is ("QMP socket ... absent", "no balloon device", ...). */
const char *vmlink_why(const struct vmlink *l);

/*
 * Starts a sampling round: query-balloon and the guest statistics, each only when it can tell
 * something new; the statistics not at all when stats is false (the caller knows they can wait:
 * settle.h). The balloon's actual also arrives by QEMU's BALLOON_CHANGE event; query-balloon
 * is asked after such an event, while the last target sent is not reached, and whenever the
 * actual is not known. The statistics are asked unless the guest's next report cannot be due
 * yet (stats interval longer than the tick). cb->sampled runs when the replies are in. Returns
 * 0 (a round started), 1 (nothing to ask: the last readings are current; no callback),
 * -ENOTCONN when not RUNNING, -EBUSY while a round is in flight.
 */
int vmlink_sample(struct vmlink *l, bool stats);

/* Sends a balloon target (bytes; QEMU's "balloon" value = the guest size wanted). A target
 * below floor_bytes (the VM's minimum) is refused (-ERANGE) and never sent. */
int vmlink_set_target(struct vmlink *l, uint64_t bytes, uint64_t floor_bytes);

/* The guest size wanted, for any VM: with a virtio-mem device the actuator plans plug/unplug and
 * balloon moves toward it (never below min_bytes at any step); without one it is
 * vmlink_set_target(bytes, min_bytes). 0 or -errno. */
int vmlink_set_size(struct vmlink *l, uint64_t bytes, uint64_t min_bytes);
/* The actuator's latest plan for a virtio-mem VM, or NULL (none yet, or no virtio-mem). */
const struct actuator_plan *vmlink_actuator_plan(const struct vmlink *l);
