/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * settle: when a VM's guest statistics may be read less often than every round, pure. At 2,000
 * VMs one qom-get guest-stats per VM and tick (send, read, decode) is most of ppnd's CPU; a VM
 * whose memory is not moving tells nothing new in most of them.
 *
 * A VM is settled when all of these hold:
 *   - its balloon is still: the size is where it was when its statistics were last asked, and
 *     within arrive_bytes of the target in force (a BALLOON_CHANGE event moves the size);
 *   - no lease or override is in force or pending, no operator change is waiting, and the
 *     policy's last decision neither applied a target nor held the VM (no, stale or bad stats);
 *   - its last statistics show no pressure (the policy's flag: available low, swap-in or major
 *     faults), and available ≥ max(spare_bytes, spare_pct of its size): 512 MiB or 25 %, far
 *     above the policy's headroom (max(128 MiB, 10 % of use)) and pressure mark (max(64 MiB,
 *     5 %)), so the policy wants no growth and a guest needs ≥ 448 MiB of new use to reach
 *     pressure;
 *   - its QEMU's resident set is known and within rss_move (32 MiB) of what it was when the
 *     statistics were last asked: a guest touching new memory makes its QEMU fault at once, so
 *     a burst of new memory unsettles the VM at the next round (one pread of /proc/PID/statm,
 *     none while the host allocated less than what would reach the mark since the last one).
 * The pool may reclaim meanwhile: a settled VM keeps its interval, but it never gives memory on
 * statistics this round did not read. When the policy would shrink a VM whose read was
 * skipped, the manager reads its statistics at once and decides again on them (manager-round.c,
 * verify_donors()).
 * A settled VM's statistics are read when interval_usec (3 s) has passed since they were last
 * read, and at once when any condition above fails. They are never held so long that the policy
 * would find them stale: while their age plus slack_usec reaches stale_usec (the policy's
 * bound, 5 s), they are read.
 *
 * The delay it can add: a guest that raises its use without new resident memory (memory it had
 * touched before and freed inside, page cache turned into anonymous memory) is seen up to
 * interval_usec − tick later than before. It must use ≥ 448 MiB (or 25 % of its size less the
 * pressure mark) in that time to reach pressure.
 */

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct settle_tunables {
        uint64_t interval_usec;   /* a settled VM's statistics at most this old when read again (3 s; 0 = off) */
        uint64_t spare_bytes;     /* available at least this ... (512 MiB) */
        unsigned spare_pct;       /* ... and this % of the size (25) */
        uint64_t rss_move;        /* QEMU RSS moved by this much since: unsettled (32 MiB) */
        uint64_t arrive_bytes;    /* size within this of the target: the balloon arrived (16 MiB) */
        uint64_t stale_usec;      /* the policy's staleness bound (5 s) */
        uint64_t slack_usec;      /* read while the statistics' age + this reaches stale_usec (1 s) */
};

void settle_tunables_default(struct settle_tunables *ret);

/* What the manager knows of one VM at the start of a round. */
struct settle_vm {
        bool steady;              /* decided, no lease in force or pending, last decision neither
                                   * applied a target nor held the VM */
        bool pressure;            /* the policy's last decision saw pressure */
        uint64_t size;            /* now (balloon actual + plugged) */
        uint64_t target;          /* target in force */
        uint64_t available;       /* in the last statistics; UINT64_MAX = unknown */
        uint64_t rss;             /* QEMU's resident set now; 0 = unknown */
        uint64_t stats_read_usec; /* monotonic time the statistics were last read; 0 = never */
        uint64_t stats_age_usec;  /* age of the guest's report in them (now − last-update) */
        /* When the statistics were last asked for (kept by the caller). */
        uint64_t size_at_ask;
        uint64_t rss_at_ask;      /* 0 = unknown */
};

enum settle_verdict {
        SETTLE_READ,              /* not settled: read the statistics this round */
        SETTLE_DUE,               /* settled, but interval_usec has passed (or staleness is near): read */
        SETTLE_SKIP,              /* settled: this round decides on the statistics it has */
};

/* Whether vm could be settled whatever its RSS and its size at the last ask: everything of the
 * rule but those. The caller reads the RSS (a system call) only for such a VM, and keeps it as
 * rss_at_ask only then (0 otherwise: not settled next round). */
bool settle_candidate(const struct settle_tunables *t, const struct settle_vm *vm);

/* Whether a VM's QEMU RSS, rss when last read, may now be rss_move or more away from rss_at_ask
 * (what unsettles the VM), given that the whole host allocated `allocated` bytes since that read
 * (its cumulative counter): its QEMU can have grown by at most that much. False means it cannot
 * have risen to the mark, and the caller may keep rss without reading it; a fall (memory the
 * guest freed) is not bounded by it and is seen at the next read. True when anything is unknown
 * (0), or the host allocated rss_move or more. */
bool settle_rss_may_move(const struct settle_tunables *t, uint64_t rss, uint64_t rss_at_ask, uint64_t allocated);

/* The verdict for one VM at now_usec (monotonic); tick_usec is the round's period (a read is due
 * at the round closest to interval_usec). */
enum settle_verdict settle_judge(const struct settle_tunables *t, const struct settle_vm *vm, uint64_t now_usec,
                                 uint64_t tick_usec);
