/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Memory over time as an SVG picture a person can open in a browser: one panel per VM with the
 * balloon target, the balloon actual, the guest's use (actual - available), the VM's minimum
 * (and maximum) as lines, and the controller's decisions as marks whose tooltip is the reason.
 * Pure: samples in, text out; no clock reads (times are given), no I/O.
 *
 * For tools and tests, every panel carries its scale as attributes: data-vm, data-t0/data-t1
 * (wall clock, microseconds) map to data-x0/data-x1 (pixels), and bytes 0/data-ymax map to
 * data-y0/data-y1. Series are <path class="target|actual|used"> with absolute M/L commands;
 * a gap in the data (an unknown value) starts a new M.
 */

#include <stddef.h>
#include <stdint.h>

#include "eventlog.h"
#include "history.h"

struct plot_mark {
        uint64_t realtime_usec;
        uint64_t to_bytes;              /* the target it set; 0: an event without a size */
        char kind[EVENT_KIND_MAX];
        char reason[192];
};

struct plot_vm {
        const char *name;
        uint64_t min_bytes, max_bytes;
        const struct history_sample *samples;   /* oldest first */
        size_t n_samples;
        const struct plot_mark *marks;
        size_t n_marks;
};

struct plot_options {
        uint64_t t0_usec, t1_usec;      /* the time span drawn (t1 > t0) */
        const char *title;              /* NULL: "ppn-pool memory" */
};

/* Geometry, exported for tests. */
#define PLOT_WIDTH 960
#define PLOT_PANEL_HEIGHT 220
#define PLOT_MARGIN_LEFT 72
#define PLOT_MARGIN_RIGHT 24

/* Renders the picture. 0 with *ret_text (NUL-terminated, caller frees), -EINVAL if there is
 * no VM or the span is empty, -ENOMEM. */
int plot_render_svg(const struct plot_vm *vms, size_t n_vms, const struct plot_options *o, char **ret_text,
                    size_t *ret_len);
