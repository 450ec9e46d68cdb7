/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * qmp: a client for QEMU's JSON monitor (QMP) on a Unix socket, driven by an sd-event loop.
 * No threads and no blocking I/O: the socket is non-blocking and everything after connect(2)
 * happens in the loop's callbacks. A synchronous layer on top (qmp_connect_sync(),
 * qmp_call_sync()) runs the loop itself, for the CLI and tests.
 *
 * Life of a connection:
 *   connect -> QEMU's greeting is read (its version is kept) -> "qmp_capabilities" is sent ->
 *   its {"return": {}} makes the connection ready (callbacks.ready) -> commands and events ->
 *   disconnected (callbacks.disconnected, with the reason), exactly once, unless qmp_free()
 *   came first.
 *
 * Commands carry an integer "id"; replies are matched by it, so replies and events may arrive
 * in any order (QEMU 7.2 sends an event such as STOP before the reply to "stop"). Each command
 * has its own timeout: a peer that stops answering fails that command with -ETIMEDOUT and then
 * the connection, since a late reply could no longer be matched with certainty.
 *
 * All connections attached to one sd_event loop share ONE io source of that loop: each loop
 * iteration serves every connection that has data (up to 256), so N peers answering at once
 * cost O(N), not one poll of all N sockets per reply (why, with numbers: qmp.c, "the hub").
 *
 * Whatever the peer sends is distrusted: partial messages and many messages per read are
 * handled by json-c's stream tokener; a message larger than QMP_MESSAGE_MAX, malformed JSON,
 * a reply to an unknown id or anything that is not a QMP message ends the connection with a
 * clear reason naming the socket. Full JSON is logged only at debug level.
 *
 * Errors are reported in struct qmp_error. When QEMU itself refused a command, `class` and
 * `desc` hold QEMU's words and `error.code` is derived from the class (DeviceNotActive ->
 * -ENODEV, DeviceNotFound -> -ENOENT, CommandNotFound -> -EOPNOTSUPP, anything else ->
 * -EREMOTEIO). Otherwise `class` is "" and the code is the transport's:
 *   -ENOENT / -ECONNREFUSED / -ENAMETOOLONG  connecting (no socket, nobody listening, path too long)
 *   -ETIMEDOUT    no greeting / no reply within the timeout
 *   -ECONNRESET   QEMU closed the socket (EOF or HUP), possibly in the middle of a message
 *   -EPROTO       malformed JSON or a message that breaks the protocol
 *   -EMSGSIZE     a message larger than QMP_MESSAGE_MAX
 *   -ENOTCONN     a command issued before ready or after the disconnect
 *   -ECANCELED    the client was freed while the command was pending
 * Pending commands of a connection that ends fail with the reason of the end.
 */

#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

/* Largest message accepted from QEMU, counted from the end of the previous one: 1 MiB.
 * The largest reply the project asks for (qom-get guest-stats) is ~650 bytes and QEMU 7.2's
 * whole query-qmp-schema is ~200 KiB, so 1 MiB is generous and still bounds memory. */
#define QMP_MESSAGE_MAX (1024 * 1024)

/* Default timeout for the greeting+capabilities and for each command: 5 s. QEMU answers
 * query-balloon in < 1 ms here even under TCG; a monitor busy for 5 s is a stuck one. */
#define QMP_TIMEOUT_DEFAULT_USEC (5 * USEC_PER_SEC)

struct qmp;

struct qmp_error {
        struct ppn_error error;   /* code (-errno) and words: what failed, on which socket */
        char class[64];           /* QEMU's error class ("DeviceNotActive", ...); "" if transport */
        char desc[256];           /* QEMU's "desc", verbatim; "" if transport */
};

/* True if QEMU answered the command with an error (as opposed to a transport failure). */
static inline bool qmp_error_is_qemu(const struct qmp_error *e) { return e && e->class[0]; }
/* True if QEMU answered with the error class `class`. */
bool qmp_error_has_class(const struct qmp_error *e, const char *class);

struct qmp_version {
        unsigned major, minor, micro;
        char package[64];         /* e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3", may be "" */
};

/* Events the project reacts to. Any other event is delivered as QMP_EVENT_UNKNOWN. */
enum qmp_event_id {
        QMP_EVENT_UNKNOWN = 0,
        QMP_EVENT_BALLOON_CHANGE,            /* data: {"actual": bytes}; rate-limited to 1/s */
        QMP_EVENT_DEVICE_DELETED,            /* data: {"device": id, "path": qom path} */
        QMP_EVENT_MEMORY_DEVICE_SIZE_CHANGE, /* data: {"id", "size", "qom-path"}; 1/s */
        QMP_EVENT_POWERDOWN,
        QMP_EVENT_RESET,                     /* data: {"guest": bool, "reason": str} */
        QMP_EVENT_RESUME,
        QMP_EVENT_SHUTDOWN,                  /* data: {"guest": bool, "reason": str} */
        QMP_EVENT_STOP,
        _QMP_EVENT_MAX,
};

struct qmp_event {
        enum qmp_event_id id;
        const char *name;         /* as QEMU sent it */
        json_object *data;        /* "data", or NULL; borrowed: valid during the callback only */
        uint64_t timestamp_usec;  /* QEMU's wall-clock stamp, µs since the epoch; 0 if absent */
};

typedef void (*qmp_event_fn)(struct qmp *q, const struct qmp_event *ev, void *userdata);

/*
 * Reply to one command: exactly one call per accepted qmp_call(), never from inside
 * qmp_call() itself. On success err is NULL and ret is QEMU's "return" value (borrowed: take
 * json_object_get() to keep it). On failure ret is NULL and err says why.
 */
typedef void (*qmp_reply_fn)(struct qmp *q, json_object *ret, const struct qmp_error *err,
                             void *userdata);

struct qmp_callbacks {
        /* Greeting read and capabilities accepted: commands may be sent now. */
        void (*ready)(struct qmp *q, void *userdata);
        /* The connection ended (reason->error.code as listed above). Called once; not called
         * after qmp_free(). The struct qmp stays valid until qmp_free(). */
        void (*disconnected)(struct qmp *q, const struct qmp_error *reason, void *userdata);
        /* Events that have no handler of their own (qmp_set_event_handler()), unknown ones
         * included. */
        qmp_event_fn event;
};

/*
 * Connects to the QMP socket at `path` and attaches to loop `e`. connect(2) happens now (a
 * missing socket or nobody listening fails here, naming the socket); the greeting and the
 * capabilities negotiation happen in the loop, bounded by timeout_usec (0: the default).
 * cb (may be NULL) and userdata are copied/kept. Returns 0 and *ret, or -errno and err.
 */
int qmp_connect(sd_event *e, const char *path, uint64_t timeout_usec,
                const struct qmp_callbacks *cb, void *userdata, struct qmp **ret,
                struct qmp_error *err);

/* The same over an already connected stream socket `fd` (taken over, even on failure; made
 * non-blocking). `name` is used in messages (the socket path, or "test peer"). */
int qmp_open_fd(sd_event *e, int fd, const char *name, uint64_t timeout_usec,
                const struct qmp_callbacks *cb, void *userdata, struct qmp **ret,
                struct qmp_error *err);

void qmp_set_callbacks(struct qmp *q, const struct qmp_callbacks *cb, void *userdata);

/* Routes event `id` (not QMP_EVENT_UNKNOWN) to fn; fn NULL routes it back to callbacks.event.
 * Returns 0 or -EINVAL. */
int qmp_set_event_handler(struct qmp *q, enum qmp_event_id id, qmp_event_fn fn, void *userdata);

/* Event names <-> ids, through the sorted table. Unknown names give QMP_EVENT_UNKNOWN. */
enum qmp_event_id qmp_event_from_name(const char *name);
const char *qmp_event_to_name(enum qmp_event_id id);

/*
 * Sends {"execute": command, "arguments": args, "id": N}. Consumes one reference to args
 * (may be NULL), even on failure, so callers can pass a freshly built object. Returns 0 when
 * queued (fn will be called exactly once, from the loop), or -ENOTCONN / -EINVAL / -ENOMEM
 * with err set (fn is not called). timeout_usec 0 means QMP_TIMEOUT_DEFAULT_USEC.
 */
int qmp_call(struct qmp *q, const char *command, json_object *args, uint64_t timeout_usec,
             qmp_reply_fn fn, void *userdata, struct qmp_error *err);

/* The same with the arguments as JSON text (an object, or NULL for none), for commands sent
 * every tick: the text is put into the command line as it is, so it must come from the caller's
 * own code (numbers, checked identifiers), never from outside. `command` is [a-z0-9_-]. */
int qmp_call_text(struct qmp *q, const char *command, const char *args_json, uint64_t timeout_usec,
                  qmp_reply_fn fn, void *userdata, struct qmp_error *err);

/*
 * A decoder for the commands sent every tick: the text that stands where a plain reply's value
 * is ({"return": VALUE, "id": N}, on one line). The text is NOT checked: the decoder must read
 * it wholly as one value of jsonutil's strict subset (json_scan_*, ending with json_scan_end())
 * and decline otherwise. It returns 0 after doing exactly what the command's qmp_reply_fn would
 * have done with that reply (the qmp_reply_fn is then not called), or a negative value having
 * done nothing at all: then json-c parses the reply and the qmp_reply_fn gets it as usual.
 */
typedef int (*qmp_fast_fn)(struct qmp *q, const char *ret_json, size_t len, void *userdata);
int qmp_call_fast(struct qmp *q, const char *command, const char *args_json, uint64_t timeout_usec,
                  qmp_reply_fn fn, qmp_fast_fn fast, void *userdata, struct qmp_error *err);

/* Commands queued between qmp_cork() and qmp_uncork() go out in one write: a VM's commands of
 * one round cost one send(2) instead of one each. Nests; a queue that does not fit in the
 * socket waits for it to become writable, as always. */
void qmp_cork(struct qmp *q);
void qmp_uncork(struct qmp *q);

/* qmp_call() with a heap copy of ctx (size bytes) as fn's userdata, for wrappers that translate
 * replies (balloon, vmem): fn runs exactly once and must free(userdata). Same returns. */
int qmp_call_with(struct qmp *q, const char *command, json_object *args, uint64_t timeout_usec,
                  qmp_reply_fn fn, const void *ctx, size_t size, struct qmp_error *err);

/* {"path": "/machine/peripheral/ID", "property": PROPERTY[, "value": VALUE]}: the arguments of
 * qom-get/qom-set on a device. Consumes value (may be NULL). NULL on ENOMEM. The caller checks
 * the id (QMP_DEVICE_ID_MAX). */
#define QMP_DEVICE_ID_MAX 64
json_object *qmp_qom_args(const char *device_id, const char *property, json_object *value);

/* Makes e a decoding failure of `command` on q's socket: -EBADMSG, no QEMU class, the words
 * already in e->error prefixed with the command and the socket. */
void qmp_error_bad_reply(struct qmp *q, const char *command, struct qmp_error *e);

/* Closes the socket (if still open) and frees. Pending commands' callbacks run once with
 * -ECANCELED so they can free their userdata; they must not use q. The disconnected callback
 * is not called. May be called from inside any callback of this client. Accepts NULL. */
struct qmp *qmp_free(struct qmp *q);
static inline void qmp_freep(struct qmp **q) { qmp_free(*q); }
#define _cleanup_qmp_ _cleanup_(qmp_freep)

const char *qmp_name(const struct qmp *q);          /* socket path or given name */
bool qmp_is_ready(const struct qmp *q);             /* ready and not disconnected */
/* QEMU's version from its greeting: 0, or -ENODATA before the greeting. */
int qmp_qemu_version(const struct qmp *q, struct qmp_version *ret);
/* Number of commands waiting for a reply. */
unsigned qmp_pending(const struct qmp *q);

/*
 * The pid of the process at the other end of the socket (SO_PEERCRED, recorded by the kernel
 * at connect(2)): for a QMP socket, QEMU itself. The daemon uses this pid to move QEMU into
 * the VM's cgroup without trusting a pidfile. Returns 0 and *ret_pid, -ENOTCONN after the
 * disconnect, -ENODATA if the kernel reports no process (pid 0), or -errno of getsockopt.
 */
int qmp_peer_pid(const struct qmp *q, pid_t *ret_pid);

/*
 * Synchronous layer. qmp_connect_sync() gives a client with a private event loop and waits
 * until it is ready (greeting + capabilities), at most timeout_usec (0: default).
 * qmp_call_sync() sends one command and runs the client's loop until its reply arrives;
 * *ret_reply gets a new reference to the "return" value (json_object_put() it). It works on
 * any client whose loop is not currently running (-EBUSY when called from inside it).
 * Events arriving meanwhile go to the client's handlers. A timeout disconnects (see above).
 */
int qmp_connect_sync(const char *path, uint64_t timeout_usec, struct qmp **ret,
                     struct qmp_error *err);
int qmp_call_sync(struct qmp *q, const char *command, json_object *args, uint64_t timeout_usec,
                  json_object **ret_reply, struct qmp_error *err);
int qmp_call_sync_text(struct qmp *q, const char *command, const char *args_json, uint64_t timeout_usec,
                       json_object **ret_reply, struct qmp_error *err);
