/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The actuator: pure. The policy decides a VM's memory target (the guest size wanted); for a VM
 * with a virtio-mem region this module turns that target into virtio-mem plug/unplug requests
 * and balloon moves, one step at a time, from what QEMU last reported. No I/O, no clock reads.
 *
 * A VM's size is base + plugged − balloon, where QEMU 7.2's query-balloon "actual" is
 * base − balloon (it does not count plugged memory: measured, a 512 MiB guest with 1 GiB
 * plugged reports actual 512 MiB, and a balloon value above base is capped). So the size is
 * plugged + actual, and the balloon's "value" (actual wanted) is independent of plugged.
 *
 * Rules (each step re-plans from the observation, so a lost reply or a restart costs nothing):
 *  - plugged wanted P' = the target's part above base in whole blocks, rounded up, at most the
 *    region; the balloon takes the remainder below a block: value V' = target − P'.
 *  - Growth plugs first (0.07 s per GiB measured), then deflates: while a plug is in flight the
 *    balloon is deflated only if it must deflate anyway (V' above actual).
 *  - Reclaim unplugs whole blocks first (1.5 GiB in 1.0–1.2 s measured, host RSS falls with
 *    it); the balloon inflates for the remainder only once the unplug is done. A balloon that
 *    holds more than V' gives back ahead of the blocks, at most ahead_max per step with as much
 *    unplugged: the size never passes below the target while blocks go (the minimum holds at
 *    every step) and never rises above it by a policy step (which would look like a change
 *    made outside ppnd).
 *  - An unplug that makes no progress for stall_usec (the guest cannot offline its blocks) is
 *    stalled: the request is set back to what is plugged, the balloon takes the whole reclaim
 *    (reason unplug-stalled, shown like a stuck balloon), and the unplug is retried after
 *    retry_usec.
 *  - Plugged memory falling while nobody asked for less is a guest reset (QEMU unplugs
 *    everything): noted, the balloon value is sent again, and the plan carries on.
 *  - The balloon value is never below floor = max(min − plugged, min(base, base_floor)): the
 *    size stays at or above the minimum, and the boot memory (the only memory the guest kernel
 *    can allocate from; plugged memory is onlined movable) keeps at least base_floor.
 */

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct actuator_tunables {
        uint64_t stall_usec;      /* no unplug progress for this long = stalled (default 5 s) */
        uint64_t retry_usec;      /* a stalled unplug is tried again after this long (60 s) */
        uint64_t base_floor;      /* the balloon never takes base below this (128 MiB) */
        uint64_t ahead_max;       /* the most the balloon gives back ahead of an unplug per step (16 MiB) */
};

void actuator_tunables_default(struct actuator_tunables *ret);

/* The VM's memory as configured and as QEMU reports it. Sizes in bytes. */
struct actuator_vm {
        uint64_t base;            /* boot memory */
        uint64_t region;          /* virtio-mem region (max − base); the device's max-size */
        uint64_t block;           /* the device's block size */
        uint64_t min;             /* the ledger minimum */
        uint64_t plugged;         /* the device's "size" */
        uint64_t requested;       /* the device's "requested-size" */
        uint64_t balloon_actual;  /* query-balloon actual (base − balloon); = base without a balloon */
        bool balloon;             /* a balloon device answers */
};

/* Between steps; zero at adoption. */
struct actuator_state {
        uint64_t prev_plugged;        /* plugged at the previous step */
        uint64_t unplug_best;         /* lowest plugged since the current unplug began */
        uint64_t unplug_progress_usec;/* when it last went down (0 = no unplug under way) */
        uint64_t stalled_since_usec;  /* 0 = not stalled */
        uint64_t sent_value;          /* balloon value last sent (0 = none) */
};

enum actuator_reason {
        ACTUATOR_STEADY,          /* at the target */
        ACTUATOR_PLUG,            /* plugging blocks (growth) */
        ACTUATOR_UNPLUG,          /* unplugging blocks (reclaim) */
        ACTUATOR_BALLOON,         /* the balloon takes or gives the remainder below a block */
        ACTUATOR_DEFLATE_FIRST,   /* the balloon gives back before blocks go */
        ACTUATOR_UNPLUG_STALLED,  /* the guest does not release its blocks: the balloon reclaims */
        ACTUATOR_GUEST_RESET,     /* plugged memory fell with nobody asking: re-planned */
        _ACTUATOR_REASON_MAX,
};

const char *actuator_reason_to_string(enum actuator_reason r);

#define ACTUATOR_WHY_MAX 192

struct actuator_plan {
        bool set_requested;       /* send requested-size = requested */
        uint64_t requested;
        bool set_value;           /* send the balloon value (query-balloon actual wanted) */
        uint64_t value;
        uint64_t floor;           /* the lowest balloon value allowed now */
        bool stalled;             /* an unplug is stalled (status: like a stuck balloon) */
        enum actuator_reason reason;
        char why[ACTUATOR_WHY_MAX];
        struct actuator_state state;   /* store back */
};

/*
 * One step for target bytes at time now_usec. 0, or -EINVAL (a NULL pointer, block 0 or not a
 * power of two, target 0). Deterministic: same input, same plan. tests/test-actuator.c proves
 * each rule above.
 */
int actuator_plan(const struct actuator_tunables *t, const struct actuator_vm *vm, uint64_t target,
                  uint64_t now_usec, const struct actuator_state *state, struct actuator_plan *ret);
