/* SPDX-License-Identifier: Apache-2.0 */
#include "balloon.h"

#include <inttypes.h>
#include <string.h>

#include "jsonutil.h"

/* QEMU's "not reported" (virtio-balloon's stats start at -1 as uint64). */
#define STAT_UNKNOWN UINT64_MAX

/* ---- pure decoding ------------------------------------------------------------------- */

/* Sorted by name for bsearch; the unit tests check every stat is found. */
#define STAT(name, stat) { name, sizeof(name) - 1, stat }
static const struct stat_name {
        const char *name;
        size_t len;
        enum balloon_stat stat;
} stat_table[] = {
        STAT("stat-available-memory", BALLOON_STAT_AVAILABLE_MEMORY),
        STAT("stat-disk-caches", BALLOON_STAT_DISK_CACHES),
        STAT("stat-free-memory", BALLOON_STAT_FREE_MEMORY),
        STAT("stat-htlb-pgalloc", BALLOON_STAT_HTLB_PGALLOC),
        STAT("stat-htlb-pgfail", BALLOON_STAT_HTLB_PGFAIL),
        STAT("stat-major-faults", BALLOON_STAT_MAJOR_FAULTS),
        STAT("stat-minor-faults", BALLOON_STAT_MINOR_FAULTS),
        STAT("stat-swap-in", BALLOON_STAT_SWAP_IN),
        STAT("stat-swap-out", BALLOON_STAT_SWAP_OUT),
        STAT("stat-total-memory", BALLOON_STAT_TOTAL_MEMORY),
};

static int cmp_stat(const void *key, const void *elem) {
        return strcmp(key, ((const struct stat_name *) elem)->name);
}

const char *balloon_stat_to_name(enum balloon_stat stat) {
        for (size_t i = 0; i < ELEMENTSOF(stat_table); i++)
                if (stat_table[i].stat == stat)
                        return stat_table[i].name;
        return NULL;
}

int balloon_stats_get(const struct balloon_stats *s, enum balloon_stat stat, uint64_t *ret) {
        if (!s || stat < 0 || stat >= _BALLOON_STAT_MAX)
                return -EINVAL;
        if (!(s->known & (1u << stat)))
                return -ENODATA;
        *ret = s->value[stat];
        return 0;
}

/* A JSON integer >= 0 (json-c keeps values above INT64_MAX as uint64). */
static bool get_uint(json_object *v, uint64_t *ret) {
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return false;
        *ret = json_object_get_uint64(v);
        return true;
}

static int decode_one_stat(struct balloon_stats *s, const char *name, json_object *v,
                           struct ppn_error *err) {
        const struct stat_name *sn;
        uint64_t n;

        if (!get_uint(v, &n))
                return ppn_error_set(err, -EBADMSG, "guest-stats: %s is not a non-negative integer: %s",
                                     name, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        sn = bsearch(name, stat_table, ELEMENTSOF(stat_table), sizeof(stat_table[0]), cmp_stat);
        if (!sn) {
                s->n_extra++;
                return 0;
        }
        if (n == STAT_UNKNOWN)
                return 0;
        s->value[sn->stat] = n;
        s->known |= 1u << sn->stat;
        return 0;
}

int balloon_stats_decode(json_object *reply, struct balloon_stats *ret, struct ppn_error *err) {
        struct balloon_stats s = { 0 };
        json_object *stats, *last;
        int r;

        if (!json_object_is_type(reply, json_type_object))
                return ppn_error_set(err, -EBADMSG, "guest-stats: the reply is not an object");
        if (!json_object_object_get_ex(reply, "last-update", &last) || !get_uint(last, &s.last_update))
                return ppn_error_set(err, -EBADMSG, "guest-stats: no valid last-update");
        if (!json_object_object_get_ex(reply, "stats", &stats) ||
            !json_object_is_type(stats, json_type_object))
                return ppn_error_set(err, -EBADMSG, "guest-stats: no stats object");
        json_object_object_foreach(stats, name, v) {
                r = decode_one_stat(&s, name, v, err);
                if (r < 0)
                        return r;
        }
        /* Never reported: whatever numbers are there mean nothing. */
        if (s.last_update == 0) {
                memset(s.value, 0, sizeof(s.value));
                s.known = 0;
        }
        *ret = s;
        return 0;
}

static int stat_by_name(const char *name, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(stat_table); i++)
                if (stat_table[i].len == len && memcmp(stat_table[i].name, name, len) == 0)
                        return (int) stat_table[i].stat;
        return -1;
}

/* Unknown stats seen in one report, to tell a repeated name (json-c keeps one of them). */
#define EXTRA_NAMES_MAX 8

/* The "stats" object: the same reading as decode_one_stat() for each member. */
static int scan_stats(struct json_scan *js, struct balloon_stats *s) {
        struct { const char *name; size_t len; } extra[EXTRA_NAMES_MAX];
        uint32_t seen = 0;
        const char *name;
        bool first = true;
        size_t len;
        uint64_t n;
        int k, st;

        if (!json_scan_char(js, '{'))
                return -EAGAIN;
        while ((k = json_scan_member(js, &first, &name, &len)) == 1) {
                if (!json_scan_uint(js, &n))
                        return -EAGAIN;
                st = stat_by_name(name, len);
                if (st < 0) {
                        if (s->n_extra >= EXTRA_NAMES_MAX)
                                return -EAGAIN;
                        for (unsigned i = 0; i < s->n_extra; i++)
                                if (extra[i].len == len && memcmp(extra[i].name, name, len) == 0)
                                        return -EAGAIN;
                        extra[s->n_extra].name = name;
                        extra[s->n_extra++].len = len;
                        continue;
                }
                if (seen & (1u << st))
                        return -EAGAIN;
                seen |= 1u << st;
                if (n != STAT_UNKNOWN) {
                        s->value[st] = n;
                        s->known |= 1u << st;
                }
        }
        return k == 0 ? 0 : -EAGAIN;
}

int balloon_stats_decode_text(const char *text, size_t len, struct balloon_stats *ret) {
        struct json_scan js = { text, text + len };
        struct balloon_stats s = { 0 };
        bool first = true, have_stats = false, have_update = false;
        const char *key;
        size_t klen;
        int k;

        if (!json_scan_char(&js, '{'))
                return -EAGAIN;
        while ((k = json_scan_member(&js, &first, &key, &klen)) == 1) {
                if (!have_stats && json_scan_key_is(key, klen, "stats")) {
                        if (scan_stats(&js, &s) < 0)
                                return -EAGAIN;
                        have_stats = true;
                } else if (!have_update && json_scan_key_is(key, klen, "last-update")) {
                        if (!json_scan_uint(&js, &s.last_update))
                                return -EAGAIN;
                        have_update = true;
                } else
                        return -EAGAIN;
        }
        if (k < 0 || !have_stats || !have_update || !json_scan_end(&js))
                return -EAGAIN;
        if (s.last_update == 0) {
                memset(s.value, 0, sizeof(s.value));
                s.known = 0;
        }
        *ret = s;
        return 0;
}

int balloon_stats_parse(const char *text, size_t len, struct balloon_stats *ret,
                        struct ppn_error *err) {
        struct json_tokener *tok;
        json_object *o;
        int r;

        if (!text || len > QMP_MESSAGE_MAX)
                return ppn_error_set(err, -EBADMSG, "guest-stats: no text, or larger than %d bytes",
                                     QMP_MESSAGE_MAX);
        tok = json_tokener_new();
        if (!tok)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, text, (int) len);
        if (!o)
                r = ppn_error_set(err, -EBADMSG, "guest-stats: not JSON (%s)",
                                  json_tokener_error_desc(json_tokener_get_error(tok)));
        else
                r = balloon_stats_decode(o, ret, err);
        json_object_put(o);
        json_tokener_free(tok);
        return r;
}

int balloon_actual_decode(json_object *reply, uint64_t *ret_bytes, struct ppn_error *err) {
        json_object *v;
        uint64_t n;

        if (!json_object_object_get_ex(reply, "actual", &v) || !get_uint(v, &n))
                return ppn_error_set(err, -EBADMSG, "the reply has no valid \"actual\"");
        *ret_bytes = n;
        return 0;
}

int balloon_event_actual(const struct qmp_event *ev, uint64_t *ret_bytes) {
        if (!ev || ev->id != QMP_EVENT_BALLOON_CHANGE)
                return -EINVAL;
        return balloon_actual_decode(ev->data, ret_bytes, NULL);
}

int balloon_check_target(uint64_t target, uint64_t floor, struct ppn_error *err) {
        char t[FORMAT_SIZE_MAX], f[FORMAT_SIZE_MAX];

        if (target == 0)
                return ppn_error_set(err, -EINVAL, "balloon target 0 refused: a guest cannot live without memory");
        if (target < floor)
                return ppn_error_set(err, -ERANGE, "balloon target %s (%" PRIu64 " bytes) is below the floor %s (%" PRIu64 " bytes): refused",
                                     format_size(target, t, sizeof(t)), target,
                                     format_size(floor, f, sizeof(f)), floor);
        if (target > BALLOON_TARGET_MAX)
                return ppn_error_set(err, -ERANGE, "balloon target %" PRIu64 " bytes is larger than QEMU accepts",
                                     target);
        return 0;
}

/* ---- commands ------------------------------------------------------------------------ */

static bool is_letter(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A QEMU device id as QEMU accepts one (a letter, then letters, digits, '-', '.', '_'; fewer
 * than QMP_DEVICE_ID_MAX): it goes into the command text as it is, so anything else is refused
 * before sending. Checked for every guest-stats command, every round: a loop, not strspn(),
 * which builds a table of its set at each call. */
static int check_device_id(const char *id, struct qmp_error *err) {
        for (size_t i = 0; is_letter(id[0]) && i < QMP_DEVICE_ID_MAX; i++) {
                char c = id[i];
                if (c == '\0')
                        return 0;
                if (!is_letter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_')
                        break;
        }
        return ppn_error_set(&err->error, -EINVAL, "invalid balloon device id \"%.*s\"", QMP_DEVICE_ID_MAX, id);
}

/* Room for the longest arguments built here: a device id and a number. */
#define ARGS_MAX (sizeof("{\"path\":\"/machine/peripheral/\",\"property\":\"guest-stats-polling-interval\",\"value\":}") + \
                  QMP_DEVICE_ID_MAX + 24)

/* Builds the command for an operation; refuses bad arguments before anything is sent. */
static int build_target(struct qmp *q, uint64_t target, uint64_t floor, char args[static ARGS_MAX],
                        struct qmp_error *err) {
        int r = balloon_check_target(target, floor, &err->error);

        if (r < 0)
                return ppn_error_prefix(&err->error, r, "%s", qmp_name(q) ?: "QMP");
        snprintf(args, ARGS_MAX, "{\"value\":%" PRIu64 "}", target);
        return 0;
}

static int build_interval(const char *device_id, unsigned interval, char args[static ARGS_MAX],
                          struct qmp_error *err) {
        int r = check_device_id(device_id, err);

        if (r < 0)
                return r;
        snprintf(args, ARGS_MAX, "{\"path\":\"/machine/peripheral/%s\",\"property\":\"guest-stats-polling-interval\","
                 "\"value\":%u}", device_id, interval);
        return 0;
}

static int build_stats(const char *device_id, char args[static ARGS_MAX], struct qmp_error *err) {
        int r = check_device_id(device_id, err);

        if (r < 0)
                return r;
        /* Put together by hand, not by snprintf(): asked of every VM every round. */
        char *e = mempcpy(args, "{\"path\":\"/machine/peripheral/", strlen("{\"path\":\"/machine/peripheral/"));
        e = mempcpy(e, device_id, strlen(device_id));
        strcpy(e, "\",\"property\":\"guest-stats\"}");
        return 0;
}

/* ---- asynchronous -------------------------------------------------------------------- */

struct call {
        balloon_done_fn done;
        balloon_actual_fn actual;
        balloon_stats_fn stats;
        void *userdata;
};

static void on_done(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call *c = userdata;
        c->done(q, err, c->userdata);
        free(c);
}

static void on_actual(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call *c = userdata;
        struct qmp_error e = { 0 };
        uint64_t actual = 0;

        if (!err && balloon_actual_decode(ret, &actual, &e.error) < 0) {
                qmp_error_bad_reply(q, "query-balloon", &e);
                err = &e;
        }
        c->actual(q, err ? 0 : actual, err, c->userdata);
        free(c);
}

static void on_stats(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call *c = userdata;
        struct qmp_error e = { 0 };
        struct balloon_stats s = { 0 };

        if (!err && balloon_stats_decode(ret, &s, &e.error) < 0) {
                qmp_error_bad_reply(q, "qom-get guest-stats", &e);
                err = &e;
        }
        c->stats(q, err ? NULL : &s, err, c->userdata);
        free(c);
}

/* The fast decoders (qmp_fast_fn): the same outcome as the trampolines above, or -EAGAIN
 * having done nothing. */
static int on_done_fast(struct qmp *q, const char *ret, size_t len, void *userdata) {
        struct json_scan js = { ret, ret + len };
        struct call *c = userdata;

        if (!json_scan_value(&js) || !json_scan_end(&js))
                return -EAGAIN;
        c->done(q, NULL, c->userdata);
        free(c);
        return 0;
}

static int on_actual_fast(struct qmp *q, const char *ret, size_t len, void *userdata) {
        struct json_scan js = { ret, ret + len };
        struct call *c = userdata;
        const char *key;
        size_t klen;
        bool first = true;
        uint64_t actual;

        /* Exactly {"actual": N}: anything more or else takes the general way. */
        if (!json_scan_char(&js, '{') || json_scan_member(&js, &first, &key, &klen) != 1 ||
            !json_scan_key_is(key, klen, "actual") || !json_scan_uint(&js, &actual) ||
            json_scan_member(&js, &first, &key, &klen) != 0 || !json_scan_end(&js))
                return -EAGAIN;
        c->actual(q, actual, NULL, c->userdata);
        free(c);
        return 0;
}

static int on_stats_fast(struct qmp *q, const char *ret, size_t len, void *userdata) {
        struct call *c = userdata;
        struct balloon_stats s;

        if (balloon_stats_decode_text(ret, len, &s) < 0)
                return -EAGAIN;
        c->stats(q, &s, NULL, c->userdata);
        free(c);
        return 0;
}

/* Sends a built command with a heap context freed by the trampoline (called exactly once). */
static int send_call(struct qmp *q, const char *command, const char *args, uint64_t timeout,
                     qmp_reply_fn trampoline, qmp_fast_fn fast, struct call c, struct qmp_error *err) {
        struct call *heap = malloc(sizeof(*heap));
        int r;

        if (!heap)
                return ppn_error_set(&err->error, -ENOMEM, "out of memory");
        *heap = c;
        r = qmp_call_fast(q, command, args, timeout, trampoline, fast, heap, err);
        if (r < 0)
                free(heap);
        return r;
}

int balloon_set_target(struct qmp *q, uint64_t target, uint64_t floor, uint64_t timeout_usec,
                       balloon_done_fn fn, void *userdata, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        char args[ARGS_MAX];
        int r = build_target(q, target, floor, args, &e);

        if (r >= 0)
                r = send_call(q, "balloon", args, timeout_usec, on_done, on_done_fast,
                              (struct call) { .done = fn, .userdata = userdata }, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int balloon_query(struct qmp *q, uint64_t timeout_usec, balloon_actual_fn fn, void *userdata,
                  struct qmp_error *err) {
        struct qmp_error e = { 0 };
        int r = send_call(q, "query-balloon", NULL, timeout_usec, on_actual, on_actual_fast,
                          (struct call) { .actual = fn, .userdata = userdata }, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int balloon_enable_stats(struct qmp *q, const char *device_id, unsigned interval_sec,
                         uint64_t timeout_usec, balloon_done_fn fn, void *userdata,
                         struct qmp_error *err) {
        struct qmp_error e = { 0 };
        char args[ARGS_MAX];
        int r = build_interval(device_id ?: BALLOON_DEVICE_DEFAULT, interval_sec, args, &e);

        if (r >= 0)
                r = send_call(q, "qom-set", args, timeout_usec, on_done, on_done_fast,
                              (struct call) { .done = fn, .userdata = userdata }, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int balloon_read_stats(struct qmp *q, const char *device_id, uint64_t timeout_usec,
                       balloon_stats_fn fn, void *userdata, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        char args[ARGS_MAX];
        int r = build_stats(device_id ?: BALLOON_DEVICE_DEFAULT, args, &e);

        if (r >= 0)
                r = send_call(q, "qom-get", args, timeout_usec, on_stats, on_stats_fast,
                              (struct call) { .stats = fn, .userdata = userdata }, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

/* ---- synchronous --------------------------------------------------------------------- */

int balloon_set_target_sync(struct qmp *q, uint64_t target, uint64_t floor, uint64_t timeout_usec,
                            struct qmp_error *err) {
        struct qmp_error e = { 0 };
        char args[ARGS_MAX];
        int r = build_target(q, target, floor, args, &e);

        if (r >= 0)
                r = qmp_call_sync_text(q, "balloon", args, timeout_usec, NULL, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int balloon_query_sync(struct qmp *q, uint64_t timeout_usec, uint64_t *ret_actual,
                       struct qmp_error *err) {
        struct qmp_error e = { 0 };
        json_object *reply = NULL;
        uint64_t actual;
        int r = qmp_call_sync(q, "query-balloon", NULL, timeout_usec, &reply, &e);

        if (r >= 0) {
                r = balloon_actual_decode(reply, &actual, &e.error);
                if (r < 0)
                        qmp_error_bad_reply(q, "query-balloon", &e);
                json_object_put(reply);
        }
        if (r < 0) {
                if (err)
                        *err = e;
                return r;
        }
        *ret_actual = actual;
        return 0;
}

int balloon_enable_stats_sync(struct qmp *q, const char *device_id, unsigned interval_sec,
                              uint64_t timeout_usec, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        char args[ARGS_MAX];
        int r = build_interval(device_id ?: BALLOON_DEVICE_DEFAULT, interval_sec, args, &e);

        if (r >= 0)
                r = qmp_call_sync_text(q, "qom-set", args, timeout_usec, NULL, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int balloon_read_stats_sync(struct qmp *q, const char *device_id, uint64_t timeout_usec,
                            struct balloon_stats *ret, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        struct balloon_stats s;
        json_object *reply = NULL;
        char args[ARGS_MAX];
        int r = build_stats(device_id ?: BALLOON_DEVICE_DEFAULT, args, &e);

        if (r >= 0)
                r = qmp_call_sync_text(q, "qom-get", args, timeout_usec, &reply, &e);
        if (r >= 0) {
                r = balloon_stats_decode(reply, &s, &e.error);
                if (r < 0)
                        qmp_error_bad_reply(q, "qom-get guest-stats", &e);
                json_object_put(reply);
        }
        if (r < 0) {
                if (err)
                        *err = e;
                return r;
        }
        *ret = s;
        return 0;
}
