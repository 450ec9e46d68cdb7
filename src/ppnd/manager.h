/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon's state and its single-threaded sd-event loop: signals (SIGTERM/SIGINT end the
 * loop cleanly, SIGHUP reloads the config), sd_notify (READY=1, STATUS=, WATCHDOG=1 through
 * sd-event's watchdog support; all no-ops without systemd), the controller tick, the VM table,
 * the ring of recent decisions, and the control socket's request table.
 */

#include <systemd/sd-event.h>

#include "config.h"
#include "eventlog.h"
#include "util.h"

struct manager;

/* Events kept for `ppnctl events` (≈ 40 min of one decision per second). */
#define MANAGER_EVENTS_MAX 2048

/*
 * Sets up everything but does not run. Takes ownership of cfg. config_path is what SIGHUP
 * re-reads (NULL: the built-in defaults, nothing to reload). Errors say what failed.
 */
int manager_new(struct ppn_config *cfg, const char *config_path, struct manager **ret, struct ppn_error *err);

/* Runs until SIGTERM/SIGINT (returns 0) or a fatal loop error (negative errno). */
int manager_run(struct manager *m);

struct manager *manager_free(struct manager *m);
static inline void manager_freep(struct manager **m) { manager_free(*m); }

/* Records a decision or state change: kept in the ring, logged at info, sent to followers. */
void manager_record(struct manager *m, const char *vm, const char *kind, uint64_t from, uint64_t to, const char *fmt,
                    ...) _printf_(6, 7);
