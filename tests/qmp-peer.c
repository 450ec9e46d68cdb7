/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/param.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "qmp-peer.h"
#include "util.h"

static void record_event(struct peer *p, const struct qmp_event *ev, bool via_handler) {
        struct peer_event *r;

        assert_true(p->n_events < PEER_MAX_EVENTS);
        r = &p->events[p->n_events++];
        r->id = ev->id;
        snprintf(r->name, sizeof(r->name), "%s", ev->name);
        r->via_handler = via_handler;
        r->timestamp_usec = ev->timestamp_usec;
        r->data = ev->data ? json_object_get(ev->data) : NULL;
}

static void on_event_generic(struct qmp *q, const struct qmp_event *ev, void *userdata) {
        record_event(userdata, ev, false);
}

static void on_event_handler(struct qmp *q, const struct qmp_event *ev, void *userdata) {
        record_event(userdata, ev, true);
}

static void on_ready(struct qmp *q, void *userdata) {
        ((struct peer *) userdata)->n_ready++;
}

static void on_disconnected(struct qmp *q, const struct qmp_error *reason, void *userdata) {
        struct peer *p = userdata;
        p->n_disconnected++;
        p->reason = *reason;
}

void peer_setup(struct peer *p, uint64_t timeout_usec) {
        sd_event *e;

        assert_int_equal(sd_event_new(&e), 0);
        peer_setup_on(p, e, timeout_usec);
        sd_event_unref(e);
}

void peer_setup_on(struct peer *p, sd_event *e, uint64_t timeout_usec) {
        static const struct qmp_callbacks cb = {
                .ready = on_ready, .disconnected = on_disconnected, .event = on_event_generic,
        };
        struct qmp_error err = { 0 };
        int fds[2];

        *p = (struct peer) { .chunk = PEER_BATCH, .e = sd_event_ref(e) };
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        p->fd = fds[1];
        assert_int_equal(fcntl(p->fd, F_SETFL, O_NONBLOCK), 0);
        assert_int_equal(qmp_open_fd(p->e, fds[0], "test peer", timeout_usec, &cb, p, &p->q, &err), 0);
        assert_int_equal(qmp_set_event_handler(p->q, QMP_EVENT_STOP, on_event_handler, p), 0);
        assert_int_equal(qmp_set_event_handler(p->q, QMP_EVENT_SHUTDOWN, on_event_handler, p), 0);
}

void peer_teardown(struct peer *p) {
        p->q = qmp_free(p->q);
        p->auto_src = sd_event_source_disable_unref(p->auto_src);
        json_object_put(p->last_command);
        for (size_t i = 0; i < p->n_events; i++)
                json_object_put(p->events[i].data);
        if (p->fd >= 0)
                close(p->fd);
        p->fd = -1;
        p->e = sd_event_unref(p->e);
}

struct peer *ready_peer(void) {
        struct peer *p = calloc(1, sizeof(*p));
        assert_non_null(p);
        peer_setup(p, 0);
        peer_handshake(p);
        return p;
}

struct peer *ready_peer_on(sd_event *e) {
        struct peer *p = calloc(1, sizeof(*p));
        assert_non_null(p);
        peer_setup_on(p, e, 0);
        peer_handshake(p);
        return p;
}

void peer_done(struct peer *p) {
        peer_teardown(p);
        free(p);
}

void peer_pump(struct peer *p) {
        int r;
        while ((r = sd_event_run(p->e, 0)) > 0)
                ;
        assert_true(r >= 0);
}

bool peer_run_until(struct peer *p, const bool *flag, uint64_t max_usec) {
        uint64_t end = now_usec() + max_usec;

        while (!*flag && now_usec() < end)
                assert_true(sd_event_run(p->e, end - now_usec()) >= 0);
        return *flag;
}

void peer_write(struct peer *p, const char *data, size_t len) {
        while (len > 0) {
                ssize_t n = send(p->fd, data, MIN(len, p->chunk), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EAGAIN) {
                        peer_pump(p);
                        continue;
                }
                if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
                        return; /* the client closed its end, as it should after an error */
                assert_true(n > 0);
                data += n;
                len -= (size_t) n;
                peer_pump(p);
        }
}

void peer_send_line(struct peer *p, const char *line) {
        _cleanup_free_ char *s = NULL;
        assert_true(asprintf(&s, "%s\r\n", line) > 0);
        peer_write(p, s, strlen(s));
}

/* The next line the client wrote, without running the loop. */
static json_object *read_line(struct peer *p) {
        char *nl;
        json_object *o;
        ssize_t n;

        n = read(p->fd, p->rbuf + p->rlen, sizeof(p->rbuf) - p->rlen);
        if (n > 0)
                p->rlen += (size_t) n;
        nl = memchr(p->rbuf, '\n', p->rlen);
        if (!nl)
                return NULL;
        *nl = '\0';
        o = json_tokener_parse(p->rbuf);
        assert_non_null(o);
        p->rlen -= (size_t) (nl + 1 - p->rbuf);
        memmove(p->rbuf, nl + 1, p->rlen);
        return o;
}

json_object *peer_read_command(struct peer *p) {
        peer_pump(p);
        return read_line(p);
}

void peer_answer(struct peer *p, const char *execute, const char *return_json) {
        json_object *cmd = peer_read_command(p);
        char line[4096];

        assert_non_null(cmd);
        assert_string_equal(json_object_get_string(json_object_object_get(cmd, "execute")), execute);
        snprintf(line, sizeof(line), "{\"return\": %s, \"id\": %s}", return_json,
                 json_object_get_string(json_object_object_get(cmd, "id")));
        json_object_put(cmd);
        peer_send_line(p, line);
}

void peer_handshake(struct peer *p) {
        struct transcript t;

        transcript_load("session.qmp", &t);
        assert_int_equal(t.lines[0].dir, '<');
        peer_send_line(p, t.lines[0].text); /* QEMU 7.2's greeting */
        transcript_free(&t);
        peer_answer(p, "qmp_capabilities", "{}");
        assert_int_equal(p->n_ready, 1);
        assert_true(qmp_is_ready(p->q));
}

void transcript_load(const char *name, struct transcript *ret) {
        const char *dir = getenv("PPN_FIXTURES");
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t cap = 0;
        ssize_t n;

        assert_non_null(dir);
        assert_true(asprintf(&path, "%s/qmp/%s", dir, name) > 0);
        f = fopen(path, "re");
        if (!f)
                fail_msg("cannot open transcript %s: %s", path, strerror(errno));
        *ret = (struct transcript) { 0 };
        while ((n = getline(&line, &cap, f)) >= 0) {
                struct transcript_line l = { 0 };
                if (n > 0 && line[n - 1] == '\n')
                        line[--n] = '\0';
                if (n < 3 || line[0] == '#')
                        continue;
                assert_true(line[2] == ' ');
                l.dir = strcmp(line, "<- EOF") == 0 ? 'E' : line[0] == '<' ? '<' : '>';
                assert_non_null(l.text = strdup(line + 3));
                ret->lines = realloc(ret->lines, (ret->n + 1) * sizeof(*ret->lines));
                assert_non_null(ret->lines);
                ret->lines[ret->n++] = l;
        }
}

void transcript_free(struct transcript *t) {
        for (size_t i = 0; i < t->n; i++)
                free(t->lines[i].text);
        free(t->lines);
        *t = (struct transcript) { 0 };
}

const char *transcript_find_reply(const struct transcript *t, int id) {
        for (size_t i = 0; i < t->n; i++) {
                json_object *o, *v;
                bool match;

                if (t->lines[i].dir != '<')
                        continue;
                o = json_tokener_parse(t->lines[i].text);
                match = o && json_object_object_get_ex(o, "id", &v) && json_object_get_int(v) == id;
                json_object_put(o);
                if (match)
                        return t->lines[i].text;
        }
        return NULL;
}

static int on_autoreply(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct peer *p = userdata;
        json_object *cmd;

        while ((cmd = read_line(p))) {
                const char *id = json_object_get_string(json_object_object_get(cmd, "id"));
                const char *tmpl, *at;
                _cleanup_free_ char *line = NULL;

                json_object_put(p->last_command);
                p->last_command = cmd;
                if (p->next_reply >= p->n_replies)
                        continue; /* silent from now on */
                tmpl = p->replies[p->next_reply++];
                at = strstr(tmpl, "%ID%");
                assert_non_null(at);
                assert_true(asprintf(&line, "%.*s%s%s\r\n", (int) (at - tmpl), tmpl, id, at + 4) > 0);
                assert_int_equal(send(p->fd, line, strlen(line), MSG_NOSIGNAL), (ssize_t) strlen(line));
        }
        return 0;
}

void peer_autoreply(struct peer *p, const char *const *replies, size_t n) {
        p->replies = replies;
        p->n_replies = n;
        p->next_reply = 0;
        if (!p->auto_src)
                assert_int_equal(sd_event_add_io(p->e, &p->auto_src, p->fd, EPOLLIN, on_autoreply, p), 0);
}
