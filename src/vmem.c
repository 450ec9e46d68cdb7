/* SPDX-License-Identifier: Apache-2.0 */
#include "vmem.h"

#include <inttypes.h>
#include <string.h>

#include "jsonutil.h"

/* ---- pure decoding ------------------------------------------------------------------- */

/* A JSON integer >= 0. */
static bool get_uint(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int) ||
            json_object_get_int64(v) < 0)
                return false;
        *ret = json_object_get_uint64(v);
        return true;
}

static int decode_device(json_object *data, struct vmem_device *ret, struct ppn_error *err) {
        struct vmem_device d = { 0 };
        const char *id = json_member_string(data, "id");

        if (!id || !*id || strlen(id) >= sizeof(d.id) || strchr(id, '/'))
                return ppn_error_set(err, -EBADMSG, "query-memory-devices: a virtio-mem device without a usable id "
                                     "(a device given no id= cannot be resized by id)");
        snprintf(d.id, sizeof(d.id), "%s", id);
        if (!get_uint(data, "size", &d.size) || !get_uint(data, "requested-size", &d.requested) ||
            !get_uint(data, "max-size", &d.max_size) || !get_uint(data, "block-size", &d.block_size))
                return ppn_error_set(err, -EBADMSG, "query-memory-devices: virtio-mem '%s' lacks size, requested-size, "
                                     "max-size or block-size", d.id);
        if (!d.block_size || (d.block_size & (d.block_size - 1)) || d.size > d.max_size || d.requested > d.max_size)
                return ppn_error_set(err, -EBADMSG, "query-memory-devices: virtio-mem '%s' reports block-size %" PRIu64
                                     ", size %" PRIu64 ", requested %" PRIu64 " beyond max-size %" PRIu64, d.id,
                                     d.block_size, d.size, d.requested, d.max_size);
        *ret = d;
        return 0;
}

int vmem_devices_decode(json_object *reply, struct vmem_device *ret, struct ppn_error *err) {
        size_t n;

        if (!json_object_is_type(reply, json_type_array))
                return ppn_error_set(err, -EBADMSG, "query-memory-devices: the reply is not an array");
        n = json_object_array_length(reply);
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(reply, i), *data;
                const char *type = json_member_string(e, "type");
                if (!type || strcmp(type, "virtio-mem") != 0)
                        continue;
                if (!json_object_object_get_ex(e, "data", &data) || !json_object_is_type(data, json_type_object))
                        return ppn_error_set(err, -EBADMSG, "query-memory-devices: a virtio-mem entry without data");
                int r = decode_device(data, ret, err);
                return r < 0 ? r : 1;
        }
        return 0;
}

int vmem_event_size(const struct qmp_event *ev, char *ret_id, size_t id_len, uint64_t *ret_size) {
        const char *id;
        uint64_t size;

        if (!ev || ev->id != QMP_EVENT_MEMORY_DEVICE_SIZE_CHANGE)
                return -EINVAL;
        if (!ev->data || !get_uint(ev->data, "size", &size))
                return -EBADMSG;
        id = json_member_string(ev->data, "id");
        if (ret_id && id_len)
                snprintf(ret_id, id_len, "%s", id ? id : "");
        *ret_size = size;
        return 0;
}

int vmem_check_request(const struct vmem_device *dev, uint64_t bytes, struct ppn_error *err) {
        char a[FORMAT_SIZE_MAX], b[FORMAT_SIZE_MAX];

        if (!dev->block_size || bytes % dev->block_size)
                return ppn_error_set(err, -EINVAL, "virtio-mem '%s': %" PRIu64 " bytes is not whole %s blocks: refused",
                                     dev->id, bytes, format_size(dev->block_size, a, sizeof(a)));
        if (bytes > dev->max_size)
                return ppn_error_set(err, -ERANGE, "virtio-mem '%s': %s is above the region %s: refused", dev->id,
                                     format_size(bytes, a, sizeof(a)), format_size(dev->max_size, b, sizeof(b)));
        return 0;
}

/* ---- commands ------------------------------------------------------------------------ */

static int build_request(struct qmp *q, const struct vmem_device *dev, uint64_t bytes, json_object **ret,
                         struct qmp_error *err) {
        int r = vmem_check_request(dev, bytes, &err->error);

        if (r < 0)
                return ppn_error_prefix(&err->error, r, "%s", qmp_name(q) ?: "QMP");
        *ret = qmp_qom_args(dev->id, "requested-size", json_object_new_uint64(bytes));
        return *ret ? 0 : ppn_error_set(&err->error, -ENOMEM, "out of memory");
}

struct call {
        vmem_done_fn done;
        vmem_query_fn query;
        void *userdata;
};

static void on_done(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call *c = userdata;
        c->done(q, err, c->userdata);
        free(c);
}

static void on_query(struct qmp *q, json_object *ret, const struct qmp_error *err, void *userdata) {
        struct call *c = userdata;
        struct qmp_error e = { 0 };
        struct vmem_device d;
        int r = 0;

        if (!err && (r = vmem_devices_decode(ret, &d, &e.error)) < 0) {
                qmp_error_bad_reply(q, "query-memory-devices", &e);
                err = &e;
        }
        c->query(q, !err && r > 0 ? &d : NULL, err, c->userdata);
        free(c);
}

static int send_call(struct qmp *q, const char *command, json_object *args, uint64_t timeout,
                     qmp_reply_fn trampoline, struct call c, struct qmp_error *err) {
        return qmp_call_with(q, command, args, timeout, trampoline, &c, sizeof(c), err);
}

int vmem_query(struct qmp *q, uint64_t timeout_usec, vmem_query_fn fn, void *userdata, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        int r = send_call(q, "query-memory-devices", NULL, timeout_usec, on_query,
                          (struct call) { .query = fn, .userdata = userdata }, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int vmem_set_requested(struct qmp *q, const struct vmem_device *dev, uint64_t bytes, uint64_t timeout_usec,
                       vmem_done_fn fn, void *userdata, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        json_object *args;
        int r = build_request(q, dev, bytes, &args, &e);

        if (r >= 0)
                r = send_call(q, "qom-set", args, timeout_usec, on_done,
                              (struct call) { .done = fn, .userdata = userdata }, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

/* ---- synchronous --------------------------------------------------------------------- */

int vmem_query_sync(struct qmp *q, uint64_t timeout_usec, struct vmem_device *ret, struct qmp_error *err) {
        struct qmp_error e = { 0 };
        json_object *reply = NULL;
        struct vmem_device d;
        int r = qmp_call_sync(q, "query-memory-devices", NULL, timeout_usec, &reply, &e);

        if (r >= 0) {
                r = vmem_devices_decode(reply, &d, &e.error);
                if (r < 0)
                        qmp_error_bad_reply(q, "query-memory-devices", &e);
                json_object_put(reply);
        }
        if (r < 0) {
                if (err)
                        *err = e;
                return r;
        }
        if (r > 0)
                *ret = d;
        return r;
}

int vmem_set_requested_sync(struct qmp *q, const struct vmem_device *dev, uint64_t bytes, uint64_t timeout_usec,
                            struct qmp_error *err) {
        struct qmp_error e = { 0 };
        json_object *args;
        int r = build_request(q, dev, bytes, &args, &e);

        if (r >= 0)
                r = qmp_call_sync(q, "qom-set", args, timeout_usec, NULL, &e);
        if (r < 0 && err)
                *err = e;
        return r;
}

int vmem_get_size_sync(struct qmp *q, const char *id, uint64_t timeout_usec, uint64_t *ret_bytes,
                       struct qmp_error *err) {
        struct qmp_error e = { 0 };
        json_object *reply = NULL, *args;
        int r;

        if (!id || !*id || strlen(id) >= VMEM_ID_MAX || strchr(id, '/'))
                r = ppn_error_set(&e.error, -EINVAL, "invalid virtio-mem device id \"%s\"", id ? id : "");
        else if (!(args = qmp_qom_args(id, "size", NULL)))
                r = ppn_error_set(&e.error, -ENOMEM, "out of memory");
        else
                r = 0;
        if (r < 0) {
                if (err)
                        *err = e;
                return r;
        }
        r = qmp_call_sync(q, "qom-get", args, timeout_usec, &reply, &e);
        if (r >= 0) {
                if (json_object_is_type(reply, json_type_int) && json_object_get_int64(reply) >= 0)
                        *ret_bytes = json_object_get_uint64(reply);
                else {
                        r = ppn_error_set(&e.error, -EBADMSG, "the reply is not a size");
                        qmp_error_bad_reply(q, "qom-get size", &e);
                }
                json_object_put(reply);
        }
        if (r < 0 && err)
                *err = e;
        return r;
}
