/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A scripted QMP peer for unit tests: the client under test on one end of a socketpair, the
 * test on the other, both driven by one sd-event loop that the test pumps by hand. Every
 * write of the peer is followed by a pump, so a chunk size of 1 makes the client see one byte
 * per read, and a chunk size of PEER_BATCH hands it many messages in one read.
 *
 * Transcripts (tests/fixtures/qmp/ *.qmp, recorded from QEMU 7.2 by record.py) are loaded
 * as lines: '<' from QEMU, '>' to QEMU, 'E' for QEMU closing the socket.
 */

#include <json-c/json.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "qmp.h"

#define PEER_BATCH SIZE_MAX
#define PEER_MAX_EVENTS 64

struct peer_event {
        enum qmp_event_id id;
        char name[64];
        bool via_handler;          /* delivered by a per-event handler, not the generic one */
        uint64_t timestamp_usec;
        json_object *data;         /* own reference, or NULL */
};

struct peer {
        sd_event *e;
        int fd;                    /* the peer's end (non-blocking) */
        struct qmp *q;             /* the client under test */
        size_t chunk;              /* bytes per write; PEER_BATCH = as much as fits */
        char rbuf[65536];          /* what the client wrote and the peer has not consumed */
        size_t rlen;

        sd_event_source *auto_src; /* answering by itself (peer_autoreply) */
        const char *const *replies;
        size_t n_replies, next_reply;
        json_object *last_command; /* the last command answered by itself */

        unsigned n_ready;
        unsigned n_disconnected;
        struct qmp_error reason;
        struct peer_event events[PEER_MAX_EVENTS];
        size_t n_events;
};

/* Creates the loop, the socketpair and the client (connect timeout timeout_usec, 0 = default).
 * Handlers for STOP and SHUTDOWN are set; other events go to the generic callback. */
void peer_setup(struct peer *p, uint64_t timeout_usec);
/* The same on loop e (a reference is taken): clients on one loop share its hub. */
void peer_setup_on(struct peer *p, sd_event *e, uint64_t timeout_usec);
void peer_teardown(struct peer *p);

/* Dispatches everything that is ready, without waiting. */
void peer_pump(struct peer *p);
/* Runs the loop (waiting) until *flag is true or max_usec passed; returns *flag. */
bool peer_run_until(struct peer *p, const bool *flag, uint64_t max_usec);
/* Writes bytes in p->chunk pieces, pumping after each. Stops quietly if the client hung up. */
void peer_write(struct peer *p, const char *data, size_t len);
void peer_send_line(struct peer *p, const char *line); /* line + "\r\n" */
/* Pumps, then returns the next line the client wrote (parsed), or NULL if none. */
json_object *peer_read_command(struct peer *p);
/* Greeting (QEMU 7.2's, from session.qmp) and capabilities: leaves the client ready. */
void peer_handshake(struct peer *p);
/* A heap peer past the greeting (no timeout); peer_done() tears it down and frees it. */
struct peer *ready_peer(void);
/* The same on loop e (another peer's: its clients share one hub). */
struct peer *ready_peer_on(sd_event *e);
void peer_done(struct peer *p);
/* Answers the next command the client sent with `{"return": <json>, "id": N}`; checks its name. */
void peer_answer(struct peer *p, const char *execute, const char *return_json);

/*
 * Makes the peer answer by itself, from inside the loop, so that _sync calls (which run the
 * loop) can be tested: the i-th command gets replies[i] with "%ID%" replaced by its id. Once
 * the replies are used up, the peer is silent. The array must outlive the peer.
 */
void peer_autoreply(struct peer *p, const char *const *replies, size_t n);

struct transcript_line {
        char dir;                  /* '<' from QEMU, '>' to QEMU, 'E' QEMU closed the socket */
        char *text;
};

struct transcript {
        struct transcript_line *lines;
        size_t n;
};

/* Loads $PPN_FIXTURES/qmp/<name> (fails the test if missing). */
void transcript_load(const char *name, struct transcript *ret);
void transcript_free(struct transcript *t);
/* The message with the given transcript id sent by QEMU ('<' line), or NULL. */
const char *transcript_find_reply(const struct transcript *t, int id);
