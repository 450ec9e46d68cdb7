/* SPDX-License-Identifier: Apache-2.0 */
#include "jsonutil.h"

#include <errno.h>
#include <stdio.h>

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
