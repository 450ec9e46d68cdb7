/* SPDX-License-Identifier: Apache-2.0 */
#include "control.h"

#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "log.h"

/* A follower that lets this much pile up is not reading; drop it (≈ 5,000 events). */
#define CONTROL_MAX_QUEUED (1u << 20)

/* Refusals and malformed requests are logged at notice, but a peer connecting in a loop must
 * not flood the journal: at most 10 such lines per 10 s; the rest are counted, and the count
 * is logged once the next window opens. */
#define NOTICE_BURST 10
#define NOTICE_WINDOW_USEC (10 * USEC_PER_SEC)


struct control_conn {
        struct control *ctl;
        struct control_conn *next;
        int fd;
        sd_event_source *source;
        sd_event_source *timer;         /* idle deadline; NULL for followers */
        uid_t uid;
        char *in;               /* max_request bytes */
        size_t in_len;
        char *out;              /* out[out_off, out_len) is queued */
        size_t out_off, out_len, out_cap;
        char *text;             /* a reply the handler wrote as text (control_conn_reply_text) */
        size_t text_len;
        unsigned topic;         /* 0: not following */
        bool closing;           /* close once out is flushed */
};

struct control {
        sd_event *event;
        sd_event_source *listen_source;
        int fd;
        char *path;
        dev_t dev;
        ino_t ino;
        struct control_options opts;
        const struct control_request *table;
        size_t n_table;
        void *userdata;
        struct control_conn *conns;
        size_t n_conns;
        uint64_t notice_window;         /* start of the current window (CLOCK_MONOTONIC µs) */
        unsigned n_notices, n_suppressed;
};

/* True if a notice may be logged now (see NOTICE_BURST). */
static bool notice_allowed(struct control *c) {
        uint64_t now = now_usec();

        if (now - c->notice_window >= NOTICE_WINDOW_USEC) {
                if (c->n_suppressed)
                        log_notice("control: %u more refused or malformed requests were not logged",
                                   c->n_suppressed);
                c->notice_window = now;
                c->n_notices = c->n_suppressed = 0;
        }
        if (c->n_notices < NOTICE_BURST) {
                c->n_notices++;
                return true;
        }
        c->n_suppressed++;
        return false;
}

bool control_peer_allowed(uid_t uid, gid_t gid, const gid_t *groups, size_t n_groups,
                          gid_t allowed_gid, uid_t self) {
        if (uid == 0 || uid == self)
                return true;
        if (allowed_gid == (gid_t) -1)
                return false;
        if (gid == allowed_gid)
                return true;
        for (size_t i = 0; i < n_groups; i++)
                if (groups[i] == allowed_gid)
                        return true;
        return false;
}

/* Looks up the peer's supplementary groups in the user database and applies the rule above. */
static bool peer_allowed(const struct control *c, const struct ucred *cred) {
        gid_t groups[256];
        int n = ELEMENTSOF(groups);
        struct passwd *pw;

        if (control_peer_allowed(cred->uid, cred->gid, NULL, 0, c->opts.group, geteuid()))
                return true;
        if (c->opts.group == (gid_t) -1)
                return false;
        pw = getpwuid(cred->uid);
        if (!pw || getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) < 0)
                return false;
        return control_peer_allowed(cred->uid, cred->gid, groups, (size_t) n, c->opts.group, geteuid());
}

static void conn_free(struct control_conn *conn) {
        struct control *c = conn->ctl;

        for (struct control_conn **p = &c->conns; *p; p = &(*p)->next)
                if (*p == conn) {
                        *p = conn->next;
                        c->n_conns--;
                        break;
                }
        sd_event_source_disable_unref(conn->source);
        sd_event_source_disable_unref(conn->timer);
        if (conn->fd >= 0)
                close(conn->fd);
        free(conn->in);
        free(conn->out);
        free(conn->text);
        free(conn);
}

/* Writes what is queued. Returns 0, or -errno if the connection is dead. */
static int conn_flush(struct control_conn *conn) {
        while (conn->out_off < conn->out_len) {
                ssize_t n = send(conn->fd, conn->out + conn->out_off, conn->out_len - conn->out_off,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                /* No memmove per send: a 1 MiB reply leaves in ~5 sends of the socket's buffer. */
                conn->out_off += (size_t) n;
        }
        if (conn->out_off == conn->out_len)
                conn->out_off = conn->out_len = 0;
        if (conn->out_len == 0 && conn->out_cap > CONTROL_MAX_QUEUED) {
                /* A large reply went out: do not keep its buffer for the connection's life. */
                free(conn->out);
                conn->out = NULL;
                conn->out_cap = 0;
        }
        return sd_event_source_set_io_events(conn->source, EPOLLIN | (conn->out_len ? EPOLLOUT : 0));
}

/* Makes room for len more bytes after what is queued (what was sent already is dropped).
 * -ENOBUFS if more than limit bytes would be queued. */
static int conn_reserve(struct control_conn *conn, size_t len, size_t limit) {
        size_t queued = conn->out_len - conn->out_off;

        if (queued + len > limit)
                return -ENOBUFS;
        if (conn->out_off > 0) {
                memmove(conn->out, conn->out + conn->out_off, queued);
                conn->out_off = 0;
                conn->out_len = queued;
        }
        if (queued + len > conn->out_cap) {
                size_t cap = (queued + len) * 2;
                char *p = realloc(conn->out, cap);
                if (!p)
                        return -ENOMEM;
                conn->out = p;
                conn->out_cap = cap;
        }
        return 0;
}

/* Queues s (len bytes) as one line and tries to send it. -ENOBUFS if more than limit bytes
 * would be queued (a follower not reading, or a reply too large). */
static int conn_queue(struct control_conn *conn, const char *s, size_t len, size_t limit) {
        int r = conn_reserve(conn, len + 1, limit);

        if (r < 0)
                return r;
        memcpy(conn->out + conn->out_len, s, len);
        conn->out[conn->out_len + len] = '\n';
        conn->out_len += len + 1;
        return conn_flush(conn);
}

/* Queues one JSON object as a line (conn_queue()). */
static int conn_send(struct control_conn *conn, json_object *msg, size_t limit) {
        const char *s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);

        return conn_queue(conn, s, strlen(s), limit);
}

/* Queues a reply written as text (text[len] is its NUL: room for the newline), taking
 * ownership of text. Nothing queued: text becomes the queue, without a copy. */
static int conn_send_text(struct control_conn *conn, char *text, size_t len, size_t limit) {
        int r;

        if (conn->out_len == 0 && len + 1 <= limit) {
                text[len] = '\n';
                free(conn->out);
                conn->out = text;
                conn->out_off = 0;
                conn->out_len = conn->out_cap = len + 1;
                return conn_flush(conn);
        }
        r = conn_queue(conn, text, len, limit);
        free(text);
        return r;
}

void control_conn_reply_text(struct control_conn *conn, char *text, size_t len) {
        free(conn->text);
        conn->text = text;
        conn->text_len = len;
}

static int send_error(struct control_conn *conn, const char *msg) {
        json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        json_object_object_add(o, "error", json_object_new_string(msg));
        r = conn_send(conn, o, CONTROL_MAX_REPLY);
        json_object_put(o);
        return r;
}

static int cmp_request(const void *key, const void *elem) {
        return strcmp(key, ((const struct control_request *) elem)->name);
}

/* Parses one line and runs its handler: the single place that turns failures into an answer. */
static int handle_line(struct control_conn *conn, const char *line, size_t len) {
        struct control *c = conn->ctl;
        struct ppn_error err = { 0 };
        json_tokener *tok = json_tokener_new();
        json_object *req = NULL, *name, *reply = NULL;
        const struct control_request *entry;
        bool malformed = true;          /* until dispatched */
        size_t size = 0;                /* of a reply too large to queue */
        int r;

        if (!tok)
                return -ENOMEM;
        req = json_tokener_parse_ex(tok, line, (int) len);
        if (!req || json_tokener_get_error(tok) != json_tokener_success || tok->char_offset != (int) len) {
                ppn_error_set(&err, -EINVAL, "request is not one JSON object");
                goto fail;
        }
        if (!json_object_is_type(req, json_type_object) || !json_object_object_get_ex(req, "request", &name) ||
            !json_object_is_type(name, json_type_string)) {
                ppn_error_set(&err, -EINVAL, "request must be an object with a \"request\" string");
                goto fail;
        }
        entry = bsearch(json_object_get_string(name), c->table, c->n_table, sizeof(*c->table), cmp_request);
        if (!entry) {
                ppn_error_set(&err, -EOPNOTSUPP, "unknown request '%.64s'", json_object_get_string(name));
                goto fail;
        }
        malformed = false;
        r = entry->handler(conn, req, c->userdata, &reply, &err);
        if (r >= 0 && !reply && !conn->text)
                r = ppn_error_set(&err, -EPROTO, "internal error: no reply");
        if (r < 0) {
                free(conn->text);
                conn->text = NULL;
                goto fail;
        }
        if (reply) {
                r = conn_send(conn, reply, CONTROL_MAX_REPLY);
                if (r == -ENOBUFS)
                        size = strlen(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
        } else {
                size = conn->text_len;
                r = conn_send_text(conn, TAKE_PTR(conn->text), conn->text_len, CONTROL_MAX_REPLY);
        }
        if (r == -ENOBUFS && conn->out_len == 0) {
                /* The reply alone is more than the queue takes: say so rather than close
                 * without a word (the client would see a reply cut off). */
                char msg[160];
                snprintf(msg, sizeof(msg), "reply too large (%zu bytes; the limit is %u): ask for less",
                         size, CONTROL_MAX_REPLY);
                log_warning("control: uid %u: the reply to '%s' was not sent: %s", (unsigned) conn->uid,
                            entry->name, msg);
                r = send_error(conn, msg);
        }
        json_object_put(reply);
        json_object_put(req);
        json_tokener_free(tok);
        return r;
fail:
        /* Only root and the control group get this far. A refused request ("no VM 'x'") is the
         * user's business; a malformed one is a broken or hostile client: the operator's. */
        if (malformed && notice_allowed(c))
                log_notice("control: uid %u: malformed request refused: %s", (unsigned) conn->uid, err.msg);
        else
                log_debug("control: uid %u: %s", (unsigned) conn->uid, err.msg);
        json_object_put(req);
        json_tokener_free(tok);
        return send_error(conn, err.msg[0] ? err.msg : "request failed");
}

/* Restarts the idle deadline: a client has idle_timeout to send its next complete request. A
 * follower has no deadline (the write-queue limit still bounds it). */
static int conn_rearm(struct control_conn *conn) {
        if (!conn->timer)
                return 0;
        if (conn->topic) {
                conn->timer = sd_event_source_disable_unref(conn->timer);
                return 0;
        }
        return sd_event_source_set_time_relative(conn->timer, conn->ctl->opts.idle_timeout_usec);
}

/* Consumes complete lines from the input buffer. */
static int conn_process(struct control_conn *conn) {
        char *nl;

        while ((nl = memchr(conn->in, '\n', conn->in_len))) {
                size_t len = (size_t) (nl - conn->in);
                int r = len ? handle_line(conn, conn->in, len) : 0;
                if (r >= 0 && len)
                        r = conn_rearm(conn);
                if (r < 0)
                        return r;
                memmove(conn->in, nl + 1, conn->in_len - len - 1);
                conn->in_len -= len + 1;
        }
        if (conn->in_len >= conn->ctl->opts.max_request) {
                char msg[96];
                snprintf(msg, sizeof(msg), "request too large (limit %zu bytes)", conn->ctl->opts.max_request);
                if (notice_allowed(conn->ctl))
                        log_notice("control: uid %u: %s; connection closed", (unsigned) conn->uid, msg);
                (void) send_error(conn, msg);
                return -EMSGSIZE;
        }
        return 0;
}

static int on_conn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct control_conn *conn = userdata;
        int r = 0;

        if (revents & EPOLLOUT)
                r = conn_flush(conn);
        if (r >= 0 && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                ssize_t n = recv(fd, conn->in + conn->in_len, conn->ctl->opts.max_request - conn->in_len, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                        r = -ECONNRESET;
                else if (n > 0) {
                        conn->in_len += (size_t) n;
                        r = conn_process(conn);
                }
        }
        if (r < 0 || (conn->closing && conn->out_len == 0)) {
                /* Best effort to deliver a final error before closing. */
                if (conn->out_len > conn->out_off)
                        (void) send(conn->fd, conn->out + conn->out_off, conn->out_len - conn->out_off,
                                    MSG_NOSIGNAL | MSG_DONTWAIT);
                conn_free(conn);
        }
        return 0;
}

static int on_conn_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        struct control_conn *conn = userdata;

        log_debug("control: uid %u sent no complete request for %" PRIu64 " ms; connection closed",
                  (unsigned) conn->uid, conn->ctl->opts.idle_timeout_usec / USEC_PER_MSEC);
        (void) send_error(conn, "idle timeout: no complete request in time; connection closed");
        conn_free(conn);
        return 0;
}

static int reject(int fd, const char *msg) {
        char line[256];
        int len = snprintf(line, sizeof(line), "{\"error\": \"%s\"}\n", msg);
        (void) send(fd, line, (size_t) len, MSG_NOSIGNAL | MSG_DONTWAIT);
        close(fd);
        return 0;
}

/* May a peer with uid take a connection slot now? Root may use the reserved ones. */
static bool slot_free(const struct control *c, uid_t uid) {
        size_t limit = c->opts.max_clients;

        if (uid != 0)
                limit = limit > c->opts.root_reserved ? limit - c->opts.root_reserved : 0;
        return c->n_conns < limit;
}

static int on_accept(sd_event_source *s, int lfd, uint32_t revents, void *userdata) {
        struct control *c = userdata;
        struct control_conn *conn;
        struct ucred cred;
        socklen_t len = sizeof(cred);
        int fd, r;

        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
                return 0;       /* EAGAIN, or the peer gave up: nothing to do */
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return reject(fd, "cannot read peer credentials");
        if (!peer_allowed(c, &cred)) {
                if (notice_allowed(c))
                        log_notice("control: refused uid %u (not root, not in the control group)",
                                   (unsigned) cred.uid);
                return reject(fd, "permission denied: only root or members of the control group may use ppnd");
        }
        if (!slot_free(c, cred.uid))
                return reject(fd, "too many connections; try again");
        conn = calloc(1, sizeof(*conn));
        if (!conn || !(conn->in = malloc(c->opts.max_request))) {
                free(conn);
                return reject(fd, "out of memory");
        }
        *conn = (struct control_conn) { .ctl = c, .fd = fd, .uid = cred.uid, .in = conn->in, .next = c->conns };
        r = sd_event_add_io(c->event, &conn->source, fd, EPOLLIN, on_conn_io, conn);
        if (r >= 0 && c->opts.idle_timeout_usec)
                r = sd_event_add_time_relative(c->event, &conn->timer, CLOCK_MONOTONIC,
                                               c->opts.idle_timeout_usec, 0, on_conn_idle, conn);
        c->conns = conn;
        c->n_conns++;
        if (r < 0)
                conn_free(conn);
        return 0;
}

/* Refuses to steal a live daemon's socket; removes a stale one (left by a crash). */
static int clear_stale(const char *path, const struct sockaddr_un *sa, struct ppn_error *err) {
        struct stat st;
        _cleanup_close_ int fd = -1;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : ppn_error_set(err, -errno, "cannot stat control socket %s: %m", path);
        if (!S_ISSOCK(st.st_mode))
                return ppn_error_set(err, -EEXIST, "%s exists and is not a socket; remove it or set [control] socket", path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (const struct sockaddr *) sa, sizeof(*sa)) == 0)
                return ppn_error_set(err, -EADDRINUSE, "another ppnd is listening on %s; stop it first", path);
        if (unlink(path) < 0 && errno != ENOENT)
                return ppn_error_set(err, -errno, "cannot remove stale socket %s: %m", path);
        return 0;
}

static int make_parent(const char *path, struct ppn_error *err) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return 0;
        *slash = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return ppn_error_set(err, -errno, "cannot create directory %s for the control socket: %m", dir);
        return 0;
}

static int listen_socket(struct control *c, struct ppn_error *err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        mode_t old;
        int r;

        if (strlen(c->path) >= sizeof(sa.sun_path))
                return ppn_error_set(err, -ENAMETOOLONG, "control socket path %s is longer than %zu bytes",
                                     c->path, sizeof(sa.sun_path) - 1);
        memcpy(sa.sun_path, c->path, strlen(c->path));
        r = make_parent(c->path, err);
        if (r >= 0)
                r = clear_stale(c->path, &sa, err);
        if (r < 0)
                return r;
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
                return ppn_error_set(err, -errno, "cannot create control socket: %m");
        /* No window in which the socket exists with a wider mode than 0660. */
        old = umask(0117);
        r = bind(c->fd, (const struct sockaddr *) &sa, sizeof(sa));
        umask(old);
        if (r < 0)
                return ppn_error_set(err, -errno, "cannot bind control socket %s: %m", c->path);
        if (c->opts.group != (gid_t) -1 && chown(c->path, (uid_t) -1, c->opts.group) < 0)
                return ppn_error_set(err, -errno, "cannot give control socket %s to group %u: %m",
                                     c->path, (unsigned) c->opts.group);
        if (chmod(c->path, 0660) < 0 || stat(c->path, &st) < 0)
                return ppn_error_set(err, -errno, "cannot set mode of control socket %s: %m", c->path);
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        if (listen(c->fd, 16) < 0)
                return ppn_error_set(err, -errno, "cannot listen on control socket %s: %m", c->path);
        return 0;
}

int control_new(sd_event *event, const struct control_options *opts, const struct control_request *table,
                size_t n_table, void *userdata, struct control **ret, struct ppn_error *err) {
        struct control *c;
        int r;

        for (size_t i = 1; i < n_table; i++)
                if (strcmp(table[i - 1].name, table[i].name) >= 0)
                        return ppn_error_set(err, -EINVAL, "control request table not sorted at '%s'", table[i].name);
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        *c = (struct control) { .event = sd_event_ref(event), .fd = -1, .opts = *opts, .table = table,
                                .n_table = n_table, .userdata = userdata };
        c->path = strdup(opts->path);
        if (!c->path) {
                control_free(c);
                return -ENOMEM;
        }
        c->opts.path = c->path;
        r = listen_socket(c, err);
        if (r >= 0) {
                r = sd_event_add_io(event, &c->listen_source, c->fd, EPOLLIN, on_accept, c);
                if (r < 0)
                        ppn_error_set(err, r, "cannot watch control socket: %s", strerror(-r));
        }
        if (r < 0) {
                control_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

struct control *control_free(struct control *c) {
        struct stat st;

        if (!c)
                return NULL;
        while (c->conns)
                conn_free(c->conns);
        sd_event_source_disable_unref(c->listen_source);
        if (c->fd >= 0) {
                close(c->fd);
                /* Remove the file only if it is still the one we bound (not a successor's). */
                if (c->ino && stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
                        unlink(c->path);
        }
        sd_event_unref(c->event);
        free(c->path);
        free(c);
        return NULL;
}

uid_t control_conn_uid(const struct control_conn *conn) { return conn->uid; }

void control_conn_follow(struct control_conn *conn, unsigned topic) {
        conn->topic = topic;
        (void) conn_rearm(conn);
}

void control_broadcast(struct control *c, unsigned topic, json_object *msg) {
        struct control_conn *conn = c->conns, *next;

        for (; conn; conn = next) {
                next = conn->next;
                if (conn->topic != topic)
                        continue;
                if (conn_send(conn, msg, CONTROL_MAX_QUEUED) < 0) {
                        log_debug("control: dropping follower uid %u (not reading)", (unsigned) conn->uid);
                        conn_free(conn);
                }
        }
}

bool control_has_followers(const struct control *c, unsigned topic) {
        for (const struct control_conn *conn = c->conns; conn; conn = conn->next)
                if (conn->topic == topic)
                        return true;
        return false;
}

size_t control_n_connections(const struct control *c) {
        return c->n_conns;
}
