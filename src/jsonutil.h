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
