/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * The daemon's control socket: JSON lines over a Unix stream socket, on the daemon's sd-event
 * loop. Every client is distrusted:
 *   - the socket is created under umask 0117 and then set to mode 0660 (owner root, group the
 *     configured one), so nobody else can even connect;
 *   - each connection's peer credentials (SO_PEERCRED) are checked at accept: root, the
 *     daemon's own uid, or a member (primary or supplementary) of the configured group;
 *   - a request line may be at most max_request bytes; the limit is checked before any parsing;
 *   - a request is one JSON object with a "request" member naming an entry of the caller's
 *     table (sorted by name); anything else gets one answer, {"error": "..."}, from one place.
 * A reply is one JSON object per line. A handler may turn its connection into a stream
 * (control_conn_follow): later control_broadcast() messages on that topic are sent to it; a
 * follower that does not read (over 1 MiB queued) is dropped rather than let it grow memory.
 * A connection that sends no complete request for idle_timeout_usec (since it connected or
 * since its last request) is closed; a follower is exempt. The last slots of max_clients are
 * kept for root, so idle group members cannot lock root out.
 */

#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

/* One reply may be larger than what a follower may let pile up: `status` of 2,000 VMs is
 * ~1 MiB (more with long reasons). The client reads lines up to 16 MiB (control-client.c);
 * past that a reply is refused with an error. The buffer is released once it has gone out. */
#define CONTROL_MAX_REPLY (16u << 20)

struct control;
struct control_conn;

/*
 * Handles one request. Returns 0 with *ret_reply set (a new object, sent as one line) or
 * after control_conn_reply_text(), or a negative errno with err->msg saying why (sent as
 * {"error": msg}).
 */
typedef int (*control_handler)(struct control_conn *conn, json_object *request, void *userdata,
                               json_object **ret_reply, struct ppn_error *err);

struct control_request {
        const char *name;
        control_handler handler;
};

struct control_options {
        const char *path;
        gid_t group;            /* (gid_t) -1: root (and the daemon's own uid) only */
        size_t max_request;     /* bytes in one request line, newline included */
        size_t max_clients;     /* connections at once; more are answered with an error */
        size_t root_reserved;   /* of those, the last this many are for root only */
        uint64_t idle_timeout_usec; /* a client that sends no complete request for this long is
                                 * closed (followers are exempt); 0: never */
};

/* Creates the socket and starts accepting. table must be sorted by name (checked: -EINVAL). */
int control_new(sd_event *event, const struct control_options *opts, const struct control_request *table,
                size_t n_table, void *userdata, struct control **ret, struct ppn_error *err);

/* Closes every connection, removes the socket file if it is still ours. Accepts NULL. */
struct control *control_free(struct control *c);

/* The peer's uid (SO_PEERCRED at accept): a handler that changes something checks it. */
uid_t control_conn_uid(const struct control_conn *conn);

/* The reply to the request being handled, already written as one JSON object's text (no
 * newline): text is malloc'ed with text[len] its NUL (open_memstream's buffer is), and conn
 * takes it. For large replies: sent without building json-c objects or copying it again. */
void control_conn_reply_text(struct control_conn *conn, char *text, size_t len);

/* Keeps conn open after the reply and subscribes it to topic (a small integer > 0). */
void control_conn_follow(struct control_conn *conn, unsigned topic);

/* Sends msg (one line) to every follower of topic. */
void control_broadcast(struct control *c, unsigned topic, json_object *msg);

/* Whether any connection follows topic: a message nobody would get need not be built. */
bool control_has_followers(const struct control *c, unsigned topic);

/* Number of open connections (tests). */
size_t control_n_connections(const struct control *c);

/*
 * Pure: may a peer with uid/gid and supplementary groups connect? Root and `self` always may;
 * others only if allowed_gid is not (gid_t) -1 and is their gid or one of their groups.
 */
bool control_peer_allowed(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups,
                          gid_t allowed_gid, uid_t self);
