/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * oomguard: the daemon's protection against the kernel's OOM killer.
 *
 * Under host memory pressure ppnd is what gives memory back (it inflates idle guests'
 * balloons), so it must be the last process the OOM killer picks, not the first: a killed
 * ppnd leaves every balloon where it is. Its own footprint is small and bounded (a QMP message
 * is at most 1 MiB per VM, a control request at most max-request, a follower's queue at most
 * 1 MiB, the event ring 2048 entries; about 5 MiB resident with six VMs, see
 * docs/reliability.md), so sparing it costs the host nothing.
 *
 * OOMGUARD_SCORE_ADJ is -900 rather than -1000: -1000 would make ppnd unkillable even when it
 * is itself the leak, and a restarted ppnd re-adopts every VM (docs/ppnd.md).
 */

#include "util.h"

#define OOMGUARD_SCORE_ADJ (-900)

/*
 * Writes `value` (-1000..1000) to path (normally "/proc/self/oom_score_adj"; a parameter so
 * tests use a file) unless it already holds a value at or below it (a supervisor such as
 * systemd's OOMScoreAdjust= may have set a lower one: it is kept). Lowering needs
 * CAP_SYS_RESOURCE: without it the kernel answers EACCES, returned with words that say why
 * (not root, or root without the capability, or refused despite it).
 * Returns 0 (set or kept; *ret_value, may be NULL, gets the value in force), or -errno.
 */
int oomguard_apply(const char *path, int value, int *ret_value, struct ppn_error *err);
