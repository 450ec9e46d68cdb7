/* SPDX-License-Identifier: Apache-2.0 */
/* The control socket against real sockets on an in-process sd-event loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <pthread.h>

#include "control-client.h"
#include "control.h"
#include "jsonutil.h"

struct fixture {
        char dir[64];
        char path[128];
        sd_event *e;
        struct control *ctl;
        unsigned calls;
};

static int h_echo(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                  struct ppn_error *err) {
        struct fixture *f = userdata;
        f->calls++;
        *ret = json_object_get(req);
        return 0;
}

static int h_fail(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                  struct ppn_error *err) {
        return ppn_error_set(err, -ENOENT, "no VM named 'x'; see ppnctl vm list");
}

static int h_follow(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                    struct ppn_error *err) {
        control_conn_follow(conn, 7);
        *ret = json_object_new_object();
        return 0;
}

/* A reply larger than a follower's 1 MiB queue (`status` of 2,000 VMs is), or larger than the
 * 16 MiB a reply may be ("huge"). */
static int h_big(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                 struct ppn_error *err) {
        size_t n = strcmp(json_member_string(req, "request"), "huge") == 0 ? 17u << 20 : 2u << 20;
        char *text = malloc(n + 1);

        assert_non_null(text);
        memset(text, 'x', n);
        text[n] = '\0';
        *ret = json_object_new_object();
        json_object_object_add(*ret, "text", json_object_new_string(text));
        free(text);
        return 0;
}

/* The same as h_big, written as text (control_conn_reply_text): `status` replies so. */
static int h_text(struct control_conn *conn, json_object *req, void *userdata, json_object **ret,
                  struct ppn_error *err) {
        size_t n = strcmp(json_member_string(req, "request"), "hugetext") == 0 ? 17u << 20 : 2u << 20;
        char *text = malloc(n + 12);

        assert_non_null(text);
        memcpy(text, "{\"text\":\"", 9);
        memset(text + 9, 'x', n);
        memcpy(text + 9 + n, "\"}", 3);        /* and its NUL */
        control_conn_reply_text(conn, text, n + 11);
        return 0;
}

static const struct control_request table[] = {
        { "big", h_big },
        { "echo", h_echo },
        { "fail", h_fail },
        { "follow", h_follow },
        { "huge", h_big },
        { "hugetext", h_text },
        { "text", h_text },
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));
        struct control_options o = { .group = (gid_t) -1, .max_request = 512, .max_clients = 4 };

        snprintf(f->dir, sizeof(f->dir), "/tmp/test-control-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        chmod(f->dir, 0755);
        snprintf(f->path, sizeof(f->path), "%s/sub/ppnd.sock", f->dir);
        o.path = f->path;
        assert_int_equal(sd_event_new(&f->e), 0);
        assert_int_equal(control_new(f->e, &o, table, ELEMENTSOF(table), f, &f->ctl, NULL), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char sub[160];

        control_free(f->ctl);
        sd_event_unref(f->e);
        snprintf(sub, sizeof(sub), "%s/sub", f->dir);
        rmdir(sub);
        rmdir(f->dir);
        free(f);
        return 0;
}

static int client(const struct fixture *f) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        strcpy(sa.sun_path, f->path);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        return fd;
}

/* Runs the loop until fd has a full line (or EOF); returns it (static buffer), NULL on EOF. */
static char *read_line(struct fixture *f, int fd) {
        static char buf[8192];
        size_t len = 0;

        for (int i = 0; i < 200; i++) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, 0) != 1)
                        sd_event_run(f->e, 10000);
                else {
                        ssize_t n = recv(fd, buf + len, 1, 0);
                        if (n <= 0)
                                return NULL;
                        if (buf[len] == '\n') {
                                buf[len] = '\0';
                                return buf;
                        }
                        len++;
                        i = 0;
                }
        }
        fail_msg("no reply within 2 s");
        return NULL;
}

/* Reads one line of any length; returns its length without the newline (0: none within 5 s). */
static size_t read_long_line(struct fixture *f, int fd) {
        char buf[65536];
        size_t len = 0;

        for (int i = 0; i < 500; i++) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, 0) != 1) {
                        sd_event_run(f->e, 10000);
                        continue;
                }
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n <= 0)
                        return 0;
                if (buf[n - 1] == '\n')
                        return len + (size_t) n - 1;
                len += (size_t) n;
                i = 0;
        }
        fail_msg("no whole line within 5 s");
        return 0;
}

/* Reads exactly n bytes (fails after 5 s without progress); returns them (malloc'ed). */
static char *read_bytes(struct fixture *f, int fd, size_t n) {
        char *buf = malloc(n);
        size_t len = 0;

        assert_non_null(buf);
        for (int i = 0; i < 500 && len < n; i++) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, 0) != 1) {
                        sd_event_run(f->e, 10000);
                        continue;
                }
                ssize_t k = recv(fd, buf + len, n - len, 0);
                assert_true(k > 0);
                len += (size_t) k;
                i = 0;
        }
        assert_int_equal(len, n);
        return buf;
}

static void say(int fd, const char *s) {
        assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t) strlen(s));
}

static void test_mode_and_roundtrip(void **state) {
        struct fixture *f = *state;
        struct stat st;
        int fd;

        assert_int_equal(stat(f->path, &st), 0);
        assert_true(S_ISSOCK(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0660);
        fd = client(f);
        say(fd, "{\"request\":\"echo\",\"x\":1}\n");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\",\"x\":1}");
        /* Two requests in one write: two replies, in order. */
        say(fd, "{\"request\":\"echo\",\"n\":1}\n{\"request\":\"echo\",\"n\":2}\n");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\",\"n\":1}");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\",\"n\":2}");
        assert_int_equal(f->calls, 3);
        close(fd);
}

static void test_errors(void **state) {
        static const struct { const char *in, *out; } cases[] = {
                { "{\"request\":\"nope\"}\n", "{\"error\":\"unknown request 'nope'\"}" },
                { "not json\n", "{\"error\":\"request is not one JSON object\"}" },
                { "{\"request\":\"echo\"} trailing\n", "{\"error\":\"request is not one JSON object\"}" },
                { "[1,2]\n", "{\"error\":\"request must be an object with a \\\"request\\\" string\"}" },
                { "{\"request\":5}\n", "{\"error\":\"request must be an object with a \\\"request\\\" string\"}" },
                { "{\"request\":\"fail\"}\n", "{\"error\":\"no VM named 'x'; see ppnctl vm list\"}" },
        };
        struct fixture *f = *state;
        int fd = client(f);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                say(fd, cases[i].in);
                assert_string_equal(read_line(f, fd), cases[i].out);
        }
        /* The connection survives bad requests. */
        say(fd, "{\"request\":\"echo\"}\n");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\"}");
        close(fd);
}

static void test_too_large(void **state) {
        struct fixture *f = *state;
        char big[600];
        int fd = client(f);

        /* 600 bytes without a newline, limit 512: refused before any parsing, then closed. */
        memset(big, 'x', sizeof(big));
        assert_int_equal(send(fd, big, sizeof(big), MSG_NOSIGNAL), (ssize_t) sizeof(big));
        assert_string_equal(read_line(f, fd), "{\"error\":\"request too large (limit 512 bytes)\"}");
        assert_null(read_line(f, fd));
        assert_int_equal(f->calls, 0);
        close(fd);
}

static void test_follow(void **state) {
        struct fixture *f = *state;
        int a = client(f), b = client(f);
        json_object *msg = json_object_new_object();

        json_object_object_add(msg, "event", json_object_new_int(42));
        say(a, "{\"request\":\"follow\"}\n");
        assert_string_equal(read_line(f, a), "{}");
        say(b, "{\"request\":\"echo\"}\n");
        assert_string_equal(read_line(f, b), "{\"request\":\"echo\"}");
        assert_int_equal(control_n_connections(f->ctl), 2);
        control_broadcast(f->ctl, 7, msg);
        control_broadcast(f->ctl, 8, msg);      /* another topic: nobody */
        assert_string_equal(read_line(f, a), "{\"event\":42}");
        json_object_put(msg);
        close(a);
        close(b);
        for (int i = 0; i < 10; i++)
                sd_event_run(f->e, 1000);
        assert_int_equal(control_n_connections(f->ctl), 0);
}

static void test_second_daemon_refused(void **state) {
        struct fixture *f = *state;
        struct control_options o = { .path = f->path, .group = (gid_t) -1, .max_request = 512, .max_clients = 4 };
        struct control *c2 = NULL;
        struct ppn_error err = { 0 };

        assert_int_equal(control_new(f->e, &o, table, ELEMENTSOF(table), f, &c2, &err), -EADDRINUSE);
        assert_non_null(strstr(err.msg, "another ppnd is listening on"));
        /* The live socket still works and still belongs to the first. */
        int fd = client(f);
        say(fd, "{\"request\":\"echo\"}\n");
        assert_non_null(read_line(f, fd));
        close(fd);
}

static void test_stale_socket_replaced(void **state) {
        struct fixture *f = *state;
        struct control_options o = { .path = f->path, .group = (gid_t) -1, .max_request = 512, .max_clients = 4 };
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct control *c2 = NULL;
        int fd;

        /* A crash leaves a socket file nobody listens on. */
        f->ctl = control_free(f->ctl);
        assert_int_not_equal(access(f->path, F_OK), 0);     /* removed on clean exit */
        strcpy(sa.sun_path, f->path);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        assert_int_equal(control_new(f->e, &o, table, ELEMENTSOF(table), f, &c2, NULL), 0);
        f->ctl = c2;
}

static void test_unsorted_table(void **state) {
        static const struct control_request bad[] = { { "pool", h_echo }, { "events", h_echo } };
        struct fixture *f = *state;
        struct control_options o = { .path = "/tmp/unused.sock", .group = (gid_t) -1, .max_request = 512, .max_clients = 4 };
        struct control *c = NULL;

        assert_int_equal(control_new(f->e, &o, bad, 2, f, &c, NULL), -EINVAL);
}

static void test_peer_rule(void **state) {
        const gid_t groups[] = { 20, 44 };
        assert_true(control_peer_allowed(0, 0, NULL, 0, (gid_t) -1, 1000));
        assert_true(control_peer_allowed(1000, 1000, NULL, 0, (gid_t) -1, 1000));      /* the daemon's own uid */
        assert_false(control_peer_allowed(1001, 1001, NULL, 0, (gid_t) -1, 0));
        assert_true(control_peer_allowed(1001, 44, NULL, 0, 44, 0));                   /* primary group */
        assert_true(control_peer_allowed(1001, 1001, groups, 2, 44, 0));               /* supplementary */
        assert_false(control_peer_allowed(1001, 1001, groups, 2, 45, 0));
}

/* A real unprivileged peer (uid nobody) through SO_PEERCRED: refused, then allowed by group. */
static int nobody_ping(struct fixture *f) {
        pid_t pid = fork();
        int status;

        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                char buf[256] = "";
                ssize_t n;
                int fd;
                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(3);
                strcpy(sa.sun_path, f->path);
                fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        _exit(4);
                /* A refused peer may find the connection already closed: its answer is still queued. */
                (void) send(fd, "{\"request\":\"echo\"}\n", 19, MSG_NOSIGNAL);
                n = recv(fd, buf, sizeof(buf) - 1, 0);
                _exit(n > 0 && strstr(buf, "permission denied") ? 1 : n > 0 && strstr(buf, "echo") ? 0 : 6);
        }
        while (waitpid(pid, &status, WNOHANG) == 0)
                sd_event_run(f->e, 10000);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_peer_credentials(void **state) {
        struct fixture *f = *state;
        struct control_options o = { .path = f->path, .group = 65534, .max_request = 512, .max_clients = 4 };

        if (geteuid() != 0)
                skip();
        /* Mode 0660 root:root already keeps nobody out; open it up to test SO_PEERCRED itself. */
        assert_int_equal(chmod(f->path, 0666), 0);
        assert_int_equal(nobody_ping(f), 1);
        f->ctl = control_free(f->ctl);
        assert_int_equal(control_new(f->e, &o, table, ELEMENTSOF(table), f, &f->ctl, NULL), 0);
        assert_int_equal(nobody_ping(f), 0);
}

/* A reply larger than a follower's queue (1 MiB) goes out whole; one larger than a reply may
 * be (16 MiB) is answered with an error that says so, and the connection stays usable; it was
 * closed without a word (the client saw a reply cut off). */
/* request's 17 MiB reply is refused with an error that says so, and fd stays usable. */
static void assert_refused_too_large(struct fixture *f, int fd, const char *request) {
        const char *line;

        say(fd, request);
        line = read_line(f, fd);
        assert_non_null(line);
        assert_non_null(strstr(line, "reply too large (17825803 bytes; the limit is 16777216): ask for less"));
        say(fd, "{\"request\":\"echo\"}\n");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\"}");
}

static void test_reply_too_large(void **state) {
        struct fixture *f = *state;
        int fd = client(f);

        say(fd, "{\"request\":\"big\"}\n");
        assert_int_equal(read_long_line(f, fd), (2u << 20) + 11);       /* {"text":"…"} */
        assert_refused_too_large(f, fd, "{\"request\":\"huge\"}\n");
        close(fd);
}

/* A reply written as text goes out whole, without a copy, and in order with the replies
 * queued after it; one larger than a reply may be is refused with the same error. */
static void test_reply_text(void **state) {
        struct fixture *f = *state;
        int fd = client(f);
        char *all;

        /* The text reply becomes the queue; the echo is queued behind it. */
        say(fd, "{\"request\":\"text\"}\n{\"request\":\"echo\"}\n");
        all = read_bytes(f, fd, (2u << 20) + 12 + 19);
        assert_memory_equal(all, "{\"text\":\"xxx", 12);
        assert_memory_equal(all + (2u << 20) + 9, "\"}\n{\"request\":\"echo\"}\n", 22);
        free(all);
        /* Queued behind the echo. */
        say(fd, "{\"request\":\"echo\"}\n{\"request\":\"text\"}\n");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\"}");
        assert_int_equal(read_long_line(f, fd), (2u << 20) + 11);
        assert_refused_too_large(f, fd, "{\"request\":\"hugetext\"}\n");
        close(fd);
}

/* A one-shot daemon for the client side: accepts one connection, reads the request line and
 * answers with a canned reply (what a daemon of another version, or a broken one, may send). */
struct canned {
        int listen_fd;
        const char *reply;
};

static void *canned_serve(void *userdata) {
        struct canned *c = userdata;
        int fd = accept(c->listen_fd, NULL, NULL);
        char ch;

        if (fd < 0)
                return NULL;
        while (recv(fd, &ch, 1, 0) == 1 && ch != '\n')
                ;
        (void) send(fd, c->reply, strlen(c->reply), MSG_NOSIGNAL);
        close(fd);
        return NULL;
}

static int collect(json_object *vm, void *userdata) {
        char *names = userdata;
        const char *name = json_member_string(vm, "name");

        if (!name)
                return -EPROTO;
        strcat(names, name);
        strcat(names, ";");
        return 0;
}

/* Runs control_client_call_each() against a daemon answering reply; returns its result and
 * the names it was handed in names (";"-separated). */
static int call_each(const char *reply, char *names, struct ppn_error *err) {
        char dir[] = "/tmp/test-control-client-XXXXXX", path[128];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct canned c = { .reply = reply };
        pthread_t t;
        int r;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/s", dir);
        strcpy(sa.sun_path, path);
        c.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(bind(c.listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(c.listen_fd, 1), 0);
        assert_int_equal(pthread_create(&t, NULL, canned_serve, &c), 0);
        names[0] = '\0';
        r = control_client_call_each(path, "status", NULL, "vms", collect, names, err);
        pthread_join(t, NULL);
        close(c.listen_fd);
        unlink(path);
        rmdir(dir);
        return r;
}

/* The client reads a status reply one VM at a time when it starts with the array (what ppnd
 * writes), and as a whole otherwise; errors and broken replies are said, not guessed at. */
static void test_client_each(void **state) {
        struct ppn_error err = { 0 };
        char names[256];

        assert_int_equal(call_each("{\"vms\":[{\"name\":\"a\"}, {\"name\":\"b,]\"} ,{\"name\":\"c\"}],\"pool\":{}}\n",
                                   names, &err), 0);
        assert_string_equal(names, "a;b,];c;");
        assert_int_equal(call_each("{\"vms\":[],\"pool\":{}}\n", names, &err), 0);
        assert_string_equal(names, "");
        /* Another order of fields: read whole. */
        assert_int_equal(call_each("{\"pool\":{},\"vms\":[{\"name\":\"a\"}]}\n", names, &err), 0);
        assert_string_equal(names, "a;");
        assert_int_equal(call_each("{\"error\":\"no such request\"}\n", names, &err), -EREMOTEIO);
        assert_string_equal(err.msg, "ppnd: no such request");
        assert_int_equal(call_each("{\"pool\":{}}\n", names, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "without \"vms\""));
        /* Cut off, or garbage between elements: refused after the elements before it. */
        assert_int_equal(call_each("{\"vms\":[{\"name\":\"a\"},{\"name\":\n", names, &err), -EBADMSG);
        assert_non_null(strstr(err.msg, "not JSON"));
        assert_int_equal(call_each("{\"vms\":[{\"name\":\"a\"} x {\"name\":\"b\"}]}\n", names, &err), -EBADMSG);
        assert_string_equal(names, "a;");
        /* An element the caller cannot read stops the walk with its error. */
        assert_int_equal(call_each("{\"vms\":[{\"name\":\"a\"},{\"nom\":1},{\"name\":\"c\"}]}\n", names, &err),
                         -EPROTO);
        assert_string_equal(names, "a;");
        assert_int_equal(call_each("", names, &err), -ECONNRESET);
}

/* Runs the loop for about ms milliseconds. */
static void run_for(struct fixture *f, unsigned ms) {
        uint64_t end = now_usec() + (uint64_t) ms * 1000;

        while (now_usec() < end)
                sd_event_run(f->e, 10000);
}

static void reopen(struct fixture *f, struct control_options *o) {
        o->path = f->path;
        f->ctl = control_free(f->ctl);
        assert_int_equal(control_new(f->e, o, table, ELEMENTSOF(table), f, &f->ctl, NULL), 0);
}

/* A full table of silent clients: the next one is refused until the deadline closes them. A
 * client trickling a request is closed too; a follower is not. */
static void test_idle_timeout(void **state) {
        struct fixture *f = *state;
        struct control_options o = { .group = (gid_t) -1, .max_request = 512, .max_clients = 4,
                                     .idle_timeout_usec = 300000 };
        int fds[4], late, follower;

        reopen(f, &o);
        follower = client(f);
        say(follower, "{\"request\":\"follow\"}\n");
        assert_string_equal(read_line(f, follower), "{}");
        for (int i = 0; i < 3; i++)
                fds[i] = client(f);
        say(fds[2], "{\"request\":");      /* never finished */
        late = client(f);
        assert_non_null(strstr(read_line(f, late), "too many connections"));
        close(late);
        run_for(f, 500);
        for (int i = 0; i < 3; i++) {
                assert_non_null(strstr(read_line(f, fds[i]), "idle timeout"));
                assert_null(read_line(f, fds[i]));
                close(fds[i]);
        }
        assert_int_equal(control_n_connections(f->ctl), 1);     /* the follower */
        fds[3] = client(f);
        say(fds[3], "{\"request\":\"echo\"}\n");
        assert_string_equal(read_line(f, fds[3]), "{\"request\":\"echo\"}");
        close(fds[3]);
        close(follower);
}

/* A request restarts the deadline: a client that keeps asking is not closed. */
static void test_idle_timeout_rearmed(void **state) {
        struct fixture *f = *state;
        struct control_options o = { .group = (gid_t) -1, .max_request = 512, .max_clients = 4,
                                     .idle_timeout_usec = 300000 };
        int fd;

        reopen(f, &o);
        fd = client(f);
        for (int i = 0; i < 4; i++) {
                run_for(f, 150);
                say(fd, "{\"request\":\"echo\"}\n");
                assert_string_equal(read_line(f, fd), "{\"request\":\"echo\"}");
        }
        close(fd);
}

/* As uid nobody: open two connections (both answered), then a third (refused: the rest are
 * root's); report on the pipe, and hold the two open until the parent closes `hold`. */
static void nobody_fill(struct fixture *f, int report, int hold) {
        char buf[256] = "";
        int fd[3];

        if (setgid(65534) < 0 || setuid(65534) < 0)
                _exit(3);
        for (int i = 0; i < 3; i++) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                ssize_t n;
                strcpy(sa.sun_path, f->path);
                fd[i] = socket(AF_UNIX, SOCK_STREAM, 0);
                if (connect(fd[i], (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        _exit(4);
                (void) send(fd[i], "{\"request\":\"echo\"}\n", 19, MSG_NOSIGNAL);
                n = recv(fd[i], buf, sizeof(buf) - 1, 0);
                buf[n > 0 ? n : 0] = '\0';
                if (!strstr(buf, i < 2 ? "echo" : "too many connections"))
                        _exit(5 + i);
        }
        (void) write(report, "k", 1);
        (void) read(hold, buf, 1);
        _exit(0);
}

static void test_root_reserved(void **state) {
        struct fixture *f = *state;
        struct control_options o = { .group = 65534, .max_request = 512, .max_clients = 4, .root_reserved = 2 };
        int report[2], hold[2], status, fd;
        char c;
        pid_t pid;

        if (geteuid() != 0)
                skip();
        reopen(f, &o);
        assert_int_equal(chmod(f->path, 0666), 0);
        assert_int_equal(pipe(report), 0);
        assert_int_equal(pipe(hold), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(report[0]);
                close(hold[1]);
                nobody_fill(f, report[1], hold[0]);
        }
        close(report[1]);
        close(hold[0]);
        for (struct pollfd p = { .fd = report[0], .events = POLLIN }; poll(&p, 1, 0) != 1;)
                sd_event_run(f->e, 10000);
        assert_int_equal(read(report[0], &c, 1), 1);    /* else the child failed: see its status */
        assert_int_equal(control_n_connections(f->ctl), 2);
        fd = client(f);         /* root, into a reserved slot */
        say(fd, "{\"request\":\"echo\"}\n");
        assert_string_equal(read_line(f, fd), "{\"request\":\"echo\"}");
        close(fd);
        close(hold[1]);
        while (waitpid(pid, &status, WNOHANG) == 0)
                sd_event_run(f->e, 10000);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        close(report[0]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_mode_and_roundtrip, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
                cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
                cmocka_unit_test_setup_teardown(test_follow, setup, teardown),
                cmocka_unit_test_setup_teardown(test_second_daemon_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_socket_replaced, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unsorted_table, setup, teardown),
                cmocka_unit_test(test_peer_rule),
                cmocka_unit_test_setup_teardown(test_peer_credentials, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reply_too_large, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reply_text, setup, teardown),
                cmocka_unit_test(test_client_each),
                cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
                cmocka_unit_test_setup_teardown(test_idle_timeout_rearmed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_root_reserved, setup, teardown),
        };
        return cmocka_run_group_tests_name("control", tests, NULL, NULL);
}
