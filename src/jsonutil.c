/* SPDX-License-Identifier: Apache-2.0 */
#include "jsonutil.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/printbuf.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

const char *json_member_string(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

int json_member_text(json_object *o, const char *key, char *buf, size_t len) {
        const char *s = json_member_string(o, key);

        if (!s)
                return -EINVAL;
        snprintf(buf, len, "%s", s);
        return 0;
}

int json_member_bool(json_object *o, const char *key, bool *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return -ENOENT;
        if (!json_object_is_type(v, json_type_boolean))
                return -EINVAL;
        *ret = json_object_get_boolean(v);
        return 0;
}

static json_object *int_member(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return NULL;
        return v;
}

int json_member_int64(json_object *o, const char *key, int64_t *ret) {
        json_object *v = int_member(o, key);

        if (!v)
                return -EINVAL;
        *ret = json_object_get_int64(v);
        return 0;
}

int json_member_uint64(json_object *o, const char *key, uint64_t *ret) {
        json_object *v = int_member(o, key);

        if (!v)
                return -EINVAL;
        *ret = json_object_get_uint64(v);
        return 0;
}

/* ---- the strict subset scanner ---- */

void json_scan_ws(struct json_scan *s) {
        while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
                s->p++;
}

bool json_scan_char(struct json_scan *s, char c) {
        json_scan_ws(s);
        if (s->p >= s->end || *s->p != c)
                return false;
        s->p++;
        return true;
}

bool json_scan_string(struct json_scan *s, const char **ret, size_t *ret_len) {
        const char *start, *close;

        if (!json_scan_char(s, '"'))
                return false;
        start = s->p;
        close = memchr(start, '"', (size_t) (s->end - start));
        if (!close)
                return false;
        for (const char *c = start; c < close; c++)
                if ((unsigned char) (*c - 0x20) > 0x7e - 0x20 || *c == '\\')
                        return false;
        *ret = start;
        *ret_len = (size_t) (close - start);
        s->p = close + 1;
        return true;
}

/* Digits [p, e) as an unsigned number: no leading zero, at most 2^64-1. */
static bool digits_value(const char *p, const char *e, uint64_t *ret) {
        size_t n = (size_t) (e - p);
        uint64_t v = 0;

        if (n == 0 || n > 20 || (*p == '0' && n > 1))
                return false;
        /* 20 digits fit only up to 2^64-1 = 18446744073709551615 (same length: compare as text). */
        if (n == 20 && memcmp(p, "18446744073709551615", 20) > 0)
                return false;
        for (; p < e; p++)
                v = v * 10 + (uint64_t) (*p - '0');
        *ret = v;
        return true;
}

bool json_scan_uint(struct json_scan *s, uint64_t *ret) {
        const char *start;

        json_scan_ws(s);
        start = s->p;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
                s->p++;
        /* A fraction/exponent next, or the text ending (the number may still be growing): not
         * in the subset. */
        if (s->p >= s->end || *s->p == '.' || *s->p == 'e' || *s->p == 'E')
                return false;
        return digits_value(start, s->p, ret);
}

bool json_scan_digits(const char *p, const char *e, uint64_t *ret) {
        for (const char *c = p; c < e; c++)
                if (*c < '0' || *c > '9')
                        return false;
        return digits_value(p, e, ret);
}

static bool scan_value(struct json_scan *s, unsigned depth) {
        const char *key;
        size_t len;
        uint64_t n;
        bool first = true;
        int r;

        json_scan_ws(s);
        if (s->p >= s->end)
                return false;
        if (*s->p == '"')
                return json_scan_string(s, &key, &len);
        if (*s->p != '{')
                return json_scan_uint(s, &n);
        if (depth >= JSON_SCAN_DEPTH)
                return false;
        s->p++;
        while ((r = json_scan_member(s, &first, &key, &len)) == 1)
                if (!scan_value(s, depth + 1))
                        return false;
        return r == 0;
}

bool json_scan_value(struct json_scan *s) { return scan_value(s, 1); }

int json_scan_member(struct json_scan *s, bool *first, const char **ret_key, size_t *ret_len) {
        if (*first && json_scan_char(s, '}'))
                return 0;
        if (!*first) {
                json_scan_ws(s);
                if (s->p < s->end && *s->p == '}') {
                        s->p++;
                        return 0;
                }
                if (!json_scan_char(s, ','))
                        return -1;
        }
        *first = false;
        if (!json_scan_string(s, ret_key, ret_len) || !json_scan_char(s, ':'))
                return -1;
        return 1;
}

bool json_scan_key_is(const char *key, size_t len, const char *name) {
        return strlen(name) == len && memcmp(key, name, len) == 0;
}

bool json_scan_end(struct json_scan *s) {
        json_scan_ws(s);
        return s->p == s->end;
}

static json_object *build_object(struct json_scan *s, unsigned depth) {
        json_object *o = json_object_new_object(), *v = NULL;
        const char *key, *text;
        char name[JSON_SCAN_KEY_MAX];
        size_t len, tlen;
        bool first = true;
        uint64_t n;
        int r = -1;

        while (o && (r = json_scan_member(s, &first, &key, &len)) == 1) {
                if (len >= sizeof(name))
                        break;
                memcpy(name, key, len);
                name[len] = '\0';
                if (json_object_object_get_ex(o, name, NULL))
                        break; /* a key twice: json-c keeps one of them; not ours to choose */
                json_scan_ws(s);
                if (s->p < s->end && *s->p == '"')
                        v = json_scan_string(s, &text, &tlen) ? json_object_new_string_len(text, (int) tlen) : NULL;
                else if (s->p < s->end && *s->p == '{')
                        v = depth + 1 < JSON_SCAN_DEPTH && json_scan_char(s, '{') ? build_object(s, depth + 1) : NULL;
                else if (json_scan_uint(s, &n))
                        /* As json-c's parser makes a number: an int64 where it fits. */
                        v = n <= INT64_MAX ? json_object_new_int64((int64_t) n) : json_object_new_uint64(n);
                else
                        v = NULL;
                if (!v || json_object_object_add(o, name, v) < 0)
                        break;
                v = NULL;
        }
        if (o && r == 0)
                return o;
        json_object_put(v);
        json_object_put(o);
        return NULL;
}

json_object *json_scan_object(struct json_scan *s) { return json_scan_char(s, '{') ? build_object(s, 1) : NULL; }

json_object *json_size_or_null(uint64_t v, uint64_t unknown) { return v == unknown ? NULL : json_object_new_uint64(v); }

static json_object *field_to_json(const struct json_field *f, const char *p) {
        switch (f->kind) {
        case JSON_KIND_TEXT:
                return json_object_new_string(p);
        case JSON_KIND_U64:
                return json_object_new_uint64(*(const uint64_t *) (const void *) p);
        case JSON_KIND_SIZE:
                return json_size_or_null(*(const uint64_t *) (const void *) p, UINT64_MAX);
        case JSON_KIND_I64:
                return json_object_new_int64(*(const int64_t *) (const void *) p);
        case JSON_KIND_PERCENT: {
                double d = *(const double *) (const void *) p;
                return d < 0 ? NULL : json_object_new_double(d);
        }
        case JSON_KIND_BOOL:
                return json_object_new_boolean(*(const bool *) (const void *) p);
        case JSON_KIND_SETTING:
                return json_size_or_null(*(const uint64_t *) (const void *) p, 0);
        }
        return NULL;
}

json_object *json_from_fields(const struct json_field *f, size_t n, const void *p) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (size_t i = 0; i < n; i++)
                json_object_object_add(o, f[i].key, field_to_json(&f[i], (const char *) p + f[i].offset));
        return o;
}

/* An integer member that may be null (read as if_null). */
static int get_uint_or_null(json_object *o, const char *key, uint64_t if_null, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return -EINVAL;
        if (!v)
                return *ret = if_null, 0;
        if (!json_object_is_type(v, json_type_int))
                return -EINVAL;
        *ret = json_object_get_uint64(v);
        return 0;
}

static int field_from_json(json_object *o, const struct json_field *f, char *p) {
        json_object *v;

        switch (f->kind) {
        case JSON_KIND_TEXT:
                return json_member_text(o, f->key, p, f->size);
        case JSON_KIND_U64:
        case JSON_KIND_SIZE:
                return get_uint_or_null(o, f->key, UINT64_MAX, (uint64_t *) (void *) p);
        case JSON_KIND_I64:
                return json_member_int64(o, f->key, (int64_t *) (void *) p);
        case JSON_KIND_PERCENT:
                if (!json_object_object_get_ex(o, f->key, &v))
                        return -EINVAL;
                *(double *) (void *) p = v ? json_object_get_double(v) : -1;
                return 0;
        case JSON_KIND_BOOL:
                return json_member_bool(o, f->key, (bool *) (void *) p) == -EINVAL ? -EINVAL : 0;
        case JSON_KIND_SETTING:
                return get_uint_or_null(o, f->key, 0, (uint64_t *) (void *) p);
        }
        return -EINVAL;
}

int json_to_fields(json_object *o, const struct json_field *f, size_t n, void *p) {
        if (!json_object_is_type(o, json_type_object))
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (field_from_json(o, &f[i], (char *) p + f[i].offset) < 0)
                        return -EINVAL;
        return 0;
}

void json_write_string(FILE *f, const char *s) {
        fputc_unlocked('"', f);
        while (*s) {
                size_t n = 0;
                while (s[n] && s[n] != '"' && s[n] != '\\' && (unsigned char) s[n] >= 0x20)
                        n++;
                fwrite_unlocked(s, 1, n, f);
                s += n;
                if (!*s)
                        break;
                if (*s == '"' || *s == '\\')
                        fprintf(f, "\\%c", *s);
                else if (*s == '\n')
                        fputs_unlocked("\\n", f);
                else
                        fprintf(f, "\\u%04x", (unsigned char) *s);
                s++;
        }
        fputc_unlocked('"', f);
}

void json_write_uint(FILE *f, uint64_t v) {
        char buf[24], *p = buf + sizeof(buf);

        do
                *--p = (char) ('0' + v % 10);
        while (v /= 10);
        fwrite_unlocked(p, 1, (size_t) (buf + sizeof(buf) - p), f);
}

static int raw_serialize(json_object *o, struct printbuf *pb, int level, int flags) {
        const char *text = json_object_get_userdata(o);

        return printbuf_memappend(pb, text, (int) strlen(text));
}

static void raw_free(json_object *o, void *userdata) { free(userdata); }

json_object *json_object_new_raw(char *text) {
        json_object *o = json_object_new_object();

        if (!o) {
                free(text);
                return NULL;
        }
        json_object_set_serializer(o, raw_serialize, text, raw_free);
        return o;
}

static void write_field(FILE *f, const struct json_field *fl, const char *p) {
        uint64_t u;
        int64_t i;
        double d;

        switch (fl->kind) {
        case JSON_KIND_TEXT:
                json_write_string(f, p);
                return;
        case JSON_KIND_U64:
        case JSON_KIND_SIZE:
                memcpy(&u, p, sizeof(u));
                if (fl->kind == JSON_KIND_SIZE && u == UINT64_MAX)
                        fputs_unlocked("null", f);
                else
                        json_write_uint(f, u);
                return;
        case JSON_KIND_I64:
                memcpy(&i, p, sizeof(i));
                fprintf(f, "%" PRId64, i);
                return;
        case JSON_KIND_PERCENT:
                memcpy(&d, p, sizeof(d));
                if (d < 0)
                        fputs_unlocked("null", f);
                else
                        fprintf(f, "%.17g", d);
                return;
        case JSON_KIND_BOOL:
                fputs_unlocked(*(const bool *) (const void *) p ? "true" : "false", f);
                return;
        case JSON_KIND_SETTING:
                memcpy(&u, p, sizeof(u));
                if (u == 0)
                        fputs_unlocked("null", f);
                else
                        json_write_uint(f, u);
                return;
        }
        fputs_unlocked("null", f);
}

void json_write_fields(FILE *f, const struct json_field *fields, size_t n, const void *p) {
        fputc_unlocked('{', f);
        for (size_t i = 0; i < n; i++) {
                if (i)
                        fputc_unlocked(',', f);
                json_write_string(f, fields[i].key);
                fputc_unlocked(':', f);
                write_field(f, &fields[i], (const char *) p + fields[i].offset);
        }
        fputc_unlocked('}', f);
}
