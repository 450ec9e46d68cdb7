/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon's recent decisions, each with its reason: a bounded ring (oldest dropped first)
 * that `ppnctl events` reads and `ppnctl events --follow` streams. Sequence numbers start at 1
 * and never repeat within a daemon's life, so a follower asks for "everything after N" and
 * learns from a gap that it fell behind. Pure memory; JSON conversion both ways for the
 * control protocol.
 */

#include <json-c/json.h>
#include <stdint.h>

#include "util.h"

#define EVENT_NAME_MAX 64
/* Room for the longest kind: the policy's reason names ("shrink-overcommit", 17) and the
 * daemon's own; a kind is never cut (tests/test-eventlog.c checks every policy reason). */
#define EVENT_KIND_MAX 32
#define EVENT_REASON_MAX 192

struct ppn_event {
        uint64_t seq;              /* assigned by eventlog_add() */
        uint64_t realtime_usec;    /* wall clock, for people */
        char vm[EVENT_NAME_MAX];   /* "" for node-wide events */
        char kind[EVENT_KIND_MAX]; /* inflate, deflate, hold, override, adopt, absent, ... */
        uint64_t from_bytes;       /* previous target (0 if none) */
        uint64_t to_bytes;         /* new target (0 if none) */
        char reason[EVENT_REASON_MAX];
};

struct eventlog {
        struct ppn_event *ring;
        size_t capacity;
        size_t count; /* <= capacity */
        size_t head;  /* index of the oldest */
        uint64_t last_seq;
};

/* 0 or -ENOMEM/-EINVAL (capacity 0). */
int eventlog_init(struct eventlog *l, size_t capacity);
void eventlog_done(struct eventlog *l);

/* Copies ev in with the next sequence number; returns the stored copy (valid until the next add). */
const struct ppn_event *eventlog_add(struct eventlog *l, const struct ppn_event *ev);

/* Convenience: builds the event (vm NULL means node-wide, texts truncated to fit) and formats
 * the reason; returns the stored copy like eventlog_add(). */
const struct ppn_event *eventlog_addv(struct eventlog *l, uint64_t realtime_usec, const char *vm, const char *kind,
                                      uint64_t from, uint64_t to, const char *fmt, va_list ap) _printf_(7, 0);
const struct ppn_event *eventlog_addf(struct eventlog *l, uint64_t realtime_usec, const char *vm, const char *kind,
                                      uint64_t from, uint64_t to, const char *fmt, ...) _printf_(7, 8);

/*
 * The events with seq > after_seq, oldest first, at most max of the newest of them. Returns how
 * many were written to out[] (pointers into the ring, valid until the next add).
 */
size_t eventlog_since(const struct eventlog *l, uint64_t after_seq, const struct ppn_event **out, size_t max);

/*
 * One VM's events at or after since_usec as a JSON array (oldest first) of at most budget bytes
 * of plain JSON: the newest that fit; *ret_omitted (may be NULL) counts the older ones left
 * out. A control reply must fit the socket's reply queue (ppnctl history of a busy VM).
 */
json_object *eventlog_vm_json(const struct eventlog *l, const char *vm, uint64_t since_usec, size_t budget,
                              size_t *ret_omitted);

json_object *event_to_json(const struct ppn_event *ev);
/* 0, or -EINVAL if a required member is missing or has the wrong type. */
int event_from_json(json_object *o, struct ppn_event *ret);
