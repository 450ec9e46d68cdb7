/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * Typed reads of one member of a JSON object, shared by every decoder of what the daemon
 * publishes (status, events, history, archives, QMP replies). Each fails, without writing its
 * out-parameter, when the member is missing or of another type; none allocates.
 */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

static inline void json_object_putp(json_object **o) { json_object_put(*o); }
/* A json_object reference dropped when the variable goes out of scope; hand it on with TAKE_PTR. */
#define _cleanup_json_ _cleanup_(json_object_putp)

/* v as a JSON integer, or NULL (JSON null) when v == unknown: each producer names its "unknown"
 * (UINT64_MAX for a size nobody measured, 0 for a setting nobody set). */
json_object *json_size_or_null(uint64_t v, uint64_t unknown);

/*
 * One table per struct, one writer and one reader: the JSON a struct travels as is listed once
 * (key, kind, where in the struct), in the order the writer emits the keys.
 */
enum json_kind {
        JSON_KIND_TEXT,    /* char[size]: a string (cut to size - 1 bytes when read) */
        JSON_KIND_U64,     /* uint64_t: an integer; null reads as UINT64_MAX */
        JSON_KIND_SIZE,    /* uint64_t: an integer, or null for UINT64_MAX both ways */
        JSON_KIND_I64,     /* int64_t: an integer */
        JSON_KIND_PERCENT, /* double: a number, or null for a negative value (reads as -1) */
        JSON_KIND_BOOL,    /* bool: true or false; a missing member reads as false (older writers) */
        JSON_KIND_SETTING, /* uint64_t: an integer, or null for 0 both ways (a setting nobody set) */
};

struct json_field {
        const char *key;
        enum json_kind kind;
        size_t offset;
        size_t size; /* JSON_KIND_TEXT: the array's size */
};

#define JSON_FIELD(type, member, key, kind) \
        { key, kind, offsetof(type, member), sizeof(((type *) 0)->member) }

/* A new object with the table's members taken from the struct at p; NULL if out of memory. */
json_object *json_from_fields(const struct json_field *f, size_t n, const void *p);
/* Fills the struct at p from o's members. Returns 0, or -EINVAL if o is not an object or a
 * member is missing or of another kind (p may then be partly written). */
int json_to_fields(json_object *o, const struct json_field *f, size_t n, void *p);

/* The string member `key` of `o`, owned by `o`; NULL if missing or not a string. */
const char *json_member_string(json_object *o, const char *key);

/* Copies the string member `key` into buf (truncated to len - 1 bytes, always terminated).
 * Returns 0, or -EINVAL if missing or not a string. */
int json_member_text(json_object *o, const char *key, char *buf, size_t len);

/* The boolean member `key` (JSON true or false only). Returns 0, -ENOENT if missing (*ret
 * untouched), or -EINVAL if of another type ("no", 1 and "" are not booleans). */
int json_member_bool(json_object *o, const char *key, bool *ret);

/* The integer member `key` as json-c reads it (int64 saturates). Returns 0 or -EINVAL. */
int json_member_int64(json_object *o, const char *key, int64_t *ret);

/* The integer member `key` as json-c reads it as unsigned (a negative value reads as 0).
 * Returns 0 or -EINVAL. */
int json_member_uint64(json_object *o, const char *key, uint64_t *ret);

/*
 * A scanner for a strict subset of JSON, for the replies the daemon reads every tick (json-c
 * allocates an object per value, a hash table per object and a copy per key: at 2,000 VMs that
 * was the daemon's largest cost). The subset: objects, strings of printable ASCII without
 * escapes, and non-negative integers as JSON writes them (no sign, no leading zero, at most
 * 2^64-1), between JSON whitespace. Nothing is allocated. Anything else (arrays, true/false/null,
 * fractions, escapes, other bytes, nesting deeper than JSON_SCAN_DEPTH, the text ending early)
 * makes a function return false/-1: the caller then parses with json-c as before. Text in the
 * subset means the same to both, so the scanner never decides otherwise than json-c would.
 */
#define JSON_SCAN_DEPTH 4

struct json_scan {
        const char *p, *end;
};

/* Skips whitespace. */
void json_scan_ws(struct json_scan *s);
/* Skips whitespace, then consumes c. */
bool json_scan_char(struct json_scan *s, char c);
/* A string: *ret points into the text (not terminated), *ret_len bytes. */
bool json_scan_string(struct json_scan *s, const char **ret, size_t *ret_len);
bool json_scan_uint(struct json_scan *s, uint64_t *ret);
/* The text [p, e) as such a number, wholly. */
bool json_scan_digits(const char *p, const char *e, uint64_t *ret);
/* Skips one value of the subset. */
bool json_scan_value(struct json_scan *s);
/* Walks an object: call first with *first = true right after json_scan_char(s, '{'). Returns
 * 1 after `"key":` (the value comes next), 0 after the closing brace, -1 outside the subset. */
int json_scan_member(struct json_scan *s, bool *first, const char **ret_key, size_t *ret_len);
/* True if the key is the C string name. */
bool json_scan_key_is(const char *key, size_t len, const char *name);
/* Skips whitespace; true if the text ends there. */
bool json_scan_end(struct json_scan *s);
/* Keys longer than this are outside the subset for json_scan_object(). */
#define JSON_SCAN_KEY_MAX 128
/* Reads an object of the subset into json-c objects, as json-c's parser would have made them
 * from the same text (numbers as int64 where they fit, else uint64), for callers that hand
 * json-c objects on; NULL outside the subset and for an object with a key twice. The caller
 * owns the result. */
json_object *json_scan_object(struct json_scan *s);

/*
 * Writing JSON text directly, for replies too large to build as json-c objects (`status` of
 * 2,000 VMs: 34,000 objects, ~100 ms). json_write_string writes s as a JSON string (quotes,
 * backslash and control characters escaped; other bytes as they are, as json-c does).
 * These take no lock on f (the caller owns it). json_object_new_raw wraps such text, taking ownership of it (freed with
 * the object): the object serializes as exactly that text, so it can be a member of an ordinary reply. Its content
 * cannot be read back as json-c objects. NULL on ENOMEM (text is then freed).
 */
void json_write_string(FILE *f, const char *s);
/* v in decimal, as JSON writes a non-negative integer. */
void json_write_uint(FILE *f, uint64_t v);
json_object *json_object_new_raw(char *text);
/* The struct at p as one JSON object's text, from its table: the same keys, order and nulls
 * as json_from_fields() gives. */
void json_write_fields(FILE *f, const struct json_field *fields, size_t n, const void *p);
