/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * What the daemon publishes about its VMs and its pool, as plain structs and as the JSON the
 * control socket carries (sizes in bytes; an unknown value is JSON null). The daemon fills the
 * structs from its live state; ppnctl reads them back with the *_from_json() functions, so
 * both sides share one definition of every field.
 */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define STATUS_UNKNOWN UINT64_MAX       /* a size or age nobody knows (shown as "-", JSON null) */

struct vm_status {
        char name[64];
        char state[16];                 /* "running", "connecting", "absent", "error" */
        uint64_t min_bytes, max_bytes;
        uint64_t target_bytes;          /* STATUS_UNKNOWN until the daemon has set or read one */
        uint64_t actual_bytes;          /* the guest's size (base + plugged − balloon), STATUS_UNKNOWN
                                         * while not connected */
        uint64_t base_bytes;            /* the split, STATUS_UNKNOWN where unknown: boot memory, */
        uint64_t plugged_bytes;         /* virtio-mem plugged (unknown without virtio-mem), */
        uint64_t balloon_bytes;         /* and what the balloon holds */
        uint64_t guest_available_bytes; /* from guest statistics; STATUS_UNKNOWN if none */
        uint64_t stats_age_usec;        /* age of the guest statistics; STATUS_UNKNOWN if none */
        uint64_t shares;
        uint64_t cpu_weight;            /* ledger weight, v2 scale 1-10000 */
        int64_t pid;                    /* QEMU pid, 0 if unknown */
        uint64_t override_left_usec;    /* remaining override lease, 0 if none */
        bool free_page_reporting;       /* its balloon returns free pages (read at adoption;
                                         * false when unknown or not running) */
        char reason[192];
};

struct pool_status {
        uint64_t physical_bytes;
        uint64_t reserve_bytes;
        uint64_t reserved_min_bytes;
        int64_t pool_available_bytes;
        uint64_t committed_bytes;       /* Σ real actuals (unknown counted at max) */
        int64_t free_bytes;
        uint64_t host_available_bytes;  /* /proc/meminfo MemAvailable, STATUS_UNKNOWN if unread */
        double psi_some_avg10;          /* node memory pressure, percent; < 0 if unread */
        uint64_t n_vms, n_running;
};

/* Writes the object as JSON text (what `ppnctl status --json` shows per VM), without json-c
 * objects: `status` writes every VM's this way (see json_object_new_raw). */
void vm_status_write(const struct vm_status *s, FILE *f);
/* 0, or -EINVAL if o is not such an object (a missing member is an error: same version both sides). */
int vm_status_from_json(json_object *o, struct vm_status *ret);

/*
 * The brief form (`status` with "brief": true), for ppnctl's table: only name, state,
 * min_bytes, max_bytes, target_bytes, actual_bytes, guest_available_bytes, cpu_weight and
 * reason (~290 of ~570 bytes per VM with the scale benchmark's guests at 80 columns). With
 * reason_width > 0 a reason longer than that many columns is sent as the table shows it:
 * text_fit(reason, reason_width), when that is shorter. The reader takes a brief or a full
 * object (an older ppnd ignores "brief"); the members it does not carry are left 0.
 */
void vm_status_write_brief(const struct vm_status *s, size_t reason_width, FILE *f);
int vm_status_brief_from_json(json_object *o, struct vm_status *ret);

json_object *pool_status_to_json(const struct pool_status *p);
int pool_status_from_json(json_object *o, struct pool_status *ret);
