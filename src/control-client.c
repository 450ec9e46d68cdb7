/* SPDX-License-Identifier: Apache-2.0 */
#include "control-client.h"
#include "jsonutil.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* A reply line longer than this is not from ppnd (a status of 1,000 VMs is ~500 KiB). */
#define CLIENT_MAX_LINE (16u << 20)
#define CLIENT_TIMEOUT_MS 10000

struct control_client {
        int fd;
        char *path;
        char *buf;
        size_t len, cap;
        size_t scanned;         /* buf[0, scanned) holds no newline: a long reply is searched once */
};

struct control_client *control_client_free(struct control_client *c) {
        if (!c)
                return NULL;
        if (c->fd >= 0)
                close(c->fd);
        free(c->path);
        free(c->buf);
        free(c);
        return NULL;
}

static int connect_error(const char *path, int e, struct ppn_error *err) {
        if (e == ENOENT || e == ECONNREFUSED)
                return ppn_error_set(err, -e, "ppnd is not running (no daemon listening on %s); "
                                     "start it (systemctl start ppnd) or point --socket/PPN_SOCKET at its socket", path);
        if (e == EACCES || e == EPERM)
                return ppn_error_set(err, -e, "permission denied on %s; run as root or as a member of ppnd's control group",
                                     path);
        return ppn_error_set(err, -e, "cannot connect to ppnd at %s: %s", path, strerror(e));
}

int control_client_connect(const char *path, struct control_client **ret, struct ppn_error *err) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct control_client *c;

        if (strlen(path) >= sizeof(sa.sun_path))
                return ppn_error_set(err, -ENAMETOOLONG, "socket path %s is too long", path);
        memcpy(sa.sun_path, path, strlen(path));
        c = calloc(1, sizeof(*c));
        if (!c || !(c->path = strdup(path))) {
                free(c);
                return ppn_error_set(err, -ENOMEM, "out of memory");
        }
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int e = errno;
                control_client_free(c);
                return connect_error(path, e, err);
        }
        *ret = c;
        return 0;
}

int control_client_send(struct control_client *c, json_object *req, struct ppn_error *err) {
        const char *s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
        size_t len = strlen(s), off = 0;
        _cleanup_free_ char *line = malloc(len + 1);

        if (!line)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        memcpy(line, s, len);
        line[len++] = '\n';
        while (off < len) {
                ssize_t n = send(c->fd, line + off, len - off, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return ppn_error_set(err, -errno, "cannot send to ppnd at %s: %m", c->path);
                }
                off += (size_t) n;
        }
        return 0;
}

/* Removes the first line (len bytes and its newline) from buf. */
static void drop_line(struct control_client *c, size_t len) {
        memmove(c->buf, c->buf + len + 1, c->len - len - 1);
        c->len -= len + 1;
        c->scanned = 0;
}

/* A reply line as an object: -EREMOTEIO if it is {"error": ...}, -EBADMSG if not an object. */
static int parse_reply(struct control_client *c, const char *line, json_object **ret, struct ppn_error *err) {
        json_object *o = json_tokener_parse(line), *e;

        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return ppn_error_set(err, -EBADMSG, "ppnd at %s sent a reply that is not a JSON object", c->path);
        }
        if (json_object_object_get_ex(o, "error", &e)) {
                ppn_error_set(err, -EREMOTEIO, "ppnd: %s", json_object_get_string(e));
                json_object_put(o);
                return -EREMOTEIO;
        }
        *ret = o;
        return 0;
}

/* Waits for the next complete line; on success c->buf starts with it, NUL-terminated in place
 * of its newline, and *ret_len is its length (drop_line() it once used). */
static int read_line(struct control_client *c, int timeout_ms, size_t *ret_len, struct ppn_error *err) {
        for (;;) {
                char *nl = c->len > c->scanned ? memchr(c->buf + c->scanned, '\n', c->len - c->scanned) : NULL;
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                ssize_t n;
                int r;

                if (nl) {
                        *nl = '\0';
                        *ret_len = (size_t) (nl - c->buf);
                        return 0;
                }
                c->scanned = c->len;
                if (c->len + 4096 > c->cap) {
                        char *b;
                        if (c->cap >= CLIENT_MAX_LINE)
                                return ppn_error_set(err, -EMSGSIZE, "reply from %s is too long", c->path);
                        b = realloc(c->buf, c->cap ? c->cap * 2 : 65536);
                        if (!b)
                                return ppn_error_set(err, -ENOMEM, "out of memory");
                        c->buf = b;
                        c->cap = c->cap ? c->cap * 2 : 65536;
                }
                r = poll(&p, 1, timeout_ms);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r == 0)
                        return ppn_error_set(err, -ETIMEDOUT, "ppnd at %s did not answer within %d ms", c->path, timeout_ms);
                n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return ppn_error_set(err, -ECONNRESET, "ppnd at %s closed the connection", c->path);
                c->len += (size_t) n;
        }
}

int control_client_read(struct control_client *c, int timeout_ms, json_object **ret, struct ppn_error *err) {
        size_t len;
        int r = read_line(c, timeout_ms, &len, err);

        if (r < 0)
                return r;
        r = parse_reply(c, c->buf, ret, err);
        drop_line(c, len);
        return r;
}

/* Connects and sends the request; *ret is the connection to read the reply from. */
static int call_start(const char *path, const char *name, json_object *args, struct control_client **ret,
                      struct ppn_error *err) {
        _cleanup_(control_client_freep) struct control_client *c = NULL;
        _cleanup_json_ json_object *req = args ? json_object_get(args) : json_object_new_object();
        int r;

        if (!req)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        json_object_object_add(req, "request", json_object_new_string(name));
        r = control_client_connect(path, &c, err);
        if (r >= 0)
                r = control_client_send(c, req, err);
        if (r == EPIPE || r == ECONNRESET || r == -EPIPE || r == -ECONNRESET) {
                /* ppnd may refuse a connection (a full table) with an error line and close it
                 * before our request is sent: that line says why, a broken pipe does not. */
                struct ppn_error why = { 0 };
                json_object *o = NULL;
                if (control_client_read(c, 100, &o, &why) == -EREMOTEIO) {
                        if (err)
                                *err = why;
                        return -EREMOTEIO;
                }
                json_object_put(o);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int control_client_call(const char *path, const char *name, json_object *args, json_object **ret,
                        struct ppn_error *err) {
        _cleanup_(control_client_freep) struct control_client *c = NULL;
        int r = call_start(path, name, args, &c, err);

        return r < 0 ? r : control_client_read(c, CLIENT_TIMEOUT_MS, ret, err);
}

/* The elements of the array text starts with ('[' already consumed), one at a time: each is
 * parsed, handed to each() and freed, so a reply of thousands never becomes one tree. */
static int stream_array(struct control_client *c, const char *text, size_t len,
                        int (*each)(json_object *elem, void *userdata), void *userdata, struct ppn_error *err) {
        json_tokener *tok = json_tokener_new();
        size_t pos = 0;
        int r = 0;

        if (!tok)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        pos += strspn(text + pos, " \t");
        if (text[pos] == ']')
                goto done;
        for (;;) {
                json_object *o;

                json_tokener_reset(tok);
                o = json_tokener_parse_ex(tok, text + pos, (int) (len - pos));
                if (!o || json_tokener_get_error(tok) != json_tokener_success) {
                        json_object_put(o);
                        r = ppn_error_set(err, -EBADMSG, "ppnd at %s sent a reply that is not JSON (at byte %zu)",
                                          c->path, pos);
                        break;
                }
                pos += (size_t) tok->char_offset;
                r = each(o, userdata);
                json_object_put(o);
                if (r < 0)
                        break;
                pos += strspn(text + pos, " \t");
                if (text[pos] == ',') {
                        pos++;
                        continue;
                }
                if (text[pos] != ']')
                        r = ppn_error_set(err, -EBADMSG, "ppnd at %s sent a reply that is not JSON (at byte %zu)",
                                          c->path, pos);
                break;
        }
done:
        json_tokener_free(tok);
        return r;
}

int control_client_call_each(const char *path, const char *name, json_object *args, const char *key,
                             int (*each)(json_object *elem, void *userdata), void *userdata,
                             struct ppn_error *err) {
        _cleanup_(control_client_freep) struct control_client *c = NULL;
        _cleanup_json_ json_object *reply = NULL;
        char prefix[80];
        size_t len, n;
        json_object *arr;
        int r = call_start(path, name, args, &c, err);

        if (r < 0)
                return r;
        r = read_line(c, CLIENT_TIMEOUT_MS, &len, err);
        if (r < 0)
                return r;
        n = (size_t) snprintf(prefix, sizeof(prefix), "{\"%s\":[", key);
        if (n < sizeof(prefix) && len > n && memcmp(c->buf, prefix, n) == 0)
                return stream_array(c, c->buf + n, len - n, each, userdata, err);
        /* Any other shape (an error, another daemon's field order): the whole reply, then its array. */
        r = parse_reply(c, c->buf, &reply, err);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(reply, key, &arr) || !json_object_is_type(arr, json_type_array))
                return ppn_error_set(err, -EBADMSG, "ppnd at %s sent a reply without \"%s\" (version mismatch?)",
                                     c->path, key);
        for (size_t i = 0; i < json_object_array_length(arr); i++) {
                r = each(json_object_array_get_idx(arr, i), userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}
