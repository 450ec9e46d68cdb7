/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Per-VM memory history: a bounded ring of samples (target, balloon actual, guest available and
 * total) taken once per controller tick, for `ppnctl history` and `ppnctl plot`. Pure memory,
 * plus JSON both ways for the control protocol.
 *
 * Bound: the samples of all VMs share one memory budget ([daemon] history-memory, 8 MiB by
 * default): each VM keeps history_capacity_for() samples, oldest dropped first, between
 * HISTORY_SAMPLES_MIN and HISTORY_SAMPLES_MAX (3600: one hour at the default 1 s tick), 40 bytes
 * each. 8 MiB keeps the hour for up to 58 VMs, 35 minutes at 100, 104 samples (1 min 44 s) at
 * 2,000; the floor of 60 samples can exceed the budget beyond 3,495 VMs. The
 * decisions shown with the samples come from the daemon's event ring (MANAGER_EVENTS_MAX),
 * so they are bounded too. The history lives in the daemon and starts empty when it starts:
 * it explains the recent past, the ledger's audit log is the permanent record.
 */

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#define HISTORY_SAMPLES_MAX 3600
#define HISTORY_SAMPLES_MIN 60
#define HISTORY_UNKNOWN UINT64_MAX      /* a value nobody knew then (JSON null) */

struct history_sample {
        uint64_t realtime_usec;         /* wall clock of the sample */
        uint64_t target_bytes;
        uint64_t actual_bytes;
        uint64_t guest_available_bytes;
        uint64_t guest_total_bytes;
};

struct history_ring {
        struct history_sample *ring;
        size_t capacity, count, head;   /* head: index of the oldest */
};

/* 0, or -ENOMEM / -EINVAL (capacity 0). */
int history_ring_init(struct history_ring *h, size_t capacity);
void history_ring_done(struct history_ring *h);

/* Samples per VM when n_vms VMs share budget_bytes: budget / (n_vms x sample size), within
 * HISTORY_SAMPLES_MIN..HISTORY_SAMPLES_MAX. */
size_t history_capacity_for(uint64_t budget_bytes, size_t n_vms);

/* Changes the capacity, keeping the newest samples that fit. 0, or -ENOMEM / -EINVAL
 * (capacity 0); h is unchanged on error. */
int history_ring_resize(struct history_ring *h, size_t capacity);

/* Appends a copy; drops the oldest when full. */
void history_ring_add(struct history_ring *h, const struct history_sample *s);

/* The i-th sample, oldest first (i < count). */
const struct history_sample *history_ring_get(const struct history_ring *h, size_t i);

/* Index of the first sample at or after since_realtime_usec (count if none). Samples are
 * appended in time order, so this is a binary search. */
size_t history_ring_first_since(const struct history_ring *h, uint64_t since_realtime_usec);

/* Guest use as the policy counts it: balloon actual - guest available (the guest's total
 * leaves out kernel and reserved memory), when both are known and consistent, else
 * HISTORY_UNKNOWN. */
uint64_t history_sample_guest_used(const struct history_sample *s);

/* {"time_usec", "target_bytes", "actual_bytes", "guest_available_bytes", "guest_total_bytes"}:
 * what `ppnctl history --json` prints (unknown values null). */
json_object *history_sample_to_json(const struct history_sample *s);
/* 0, or -EINVAL if a member is missing or not an integer/null. */
int history_sample_from_json(json_object *o, struct history_sample *ret);

/* The compact form the control socket carries, [time, target, actual, available, total]: an
 * hour of one VM is ~200 KiB instead of ~500, well inside a reply's 1 MiB. */
json_object *history_sample_to_array(const struct history_sample *s);
int history_sample_from_array(json_object *a, struct history_sample *ret);
