/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * ppnctl's side of the control socket: connect, send one request, read JSON lines back.
 * Blocking, with a timeout per read so a wedged daemon cannot hang the CLI forever.
 * A daemon that is not running is reported with the socket that was tried and what to do.
 */

#include <json-c/json.h>

#include "util.h"

struct control_client;

/* Connects to path. -ENOENT/-ECONNREFUSED/-EACCES etc. with err saying what to do. */
int control_client_connect(const char *path, struct control_client **ret, struct ppn_error *err);
struct control_client *control_client_free(struct control_client *c);
static inline void control_client_freep(struct control_client **c) { control_client_free(*c); }

/* Sends req as one line. */
int control_client_send(struct control_client *c, json_object *req, struct ppn_error *err);

/*
 * Reads the next reply line, waiting at most timeout_ms (-1: forever). Returns 0 and the object;
 * -EREMOTEIO if it is {"error": ...} (err holds the daemon's words); -ECONNRESET if the daemon
 * closed; -ETIMEDOUT; -EBADMSG if not JSON.
 */
int control_client_read(struct control_client *c, int timeout_ms, json_object **ret, struct ppn_error *err);

/* Send + read one reply: the whole exchange of a simple request. name is the "request". */
int control_client_call(const char *path, const char *name, json_object *args, json_object **ret,
                        struct ppn_error *err);

/* Send + read one reply whose array under key may hold thousands of elements (status): each
 * element is passed to each() as it is read (a negative return stops and is returned); the
 * rest of the reply is not kept. Errors as control_client_read(). */
int control_client_call_each(const char *path, const char *name, json_object *args, const char *key,
                             int (*each)(json_object *elem, void *userdata), void *userdata,
                             struct ppn_error *err);
