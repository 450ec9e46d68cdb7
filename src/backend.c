/* SPDX-License-Identifier: Apache-2.0 */
#include "backend.h"

#include <string.h>

#include "virtlink.h"

struct backend_ops {
        int (*open)(struct backend *b, sd_event *e, const struct backend_where *w, const struct vmlink_options *o);
        void (*close)(struct backend *b);
        int (*set_where)(struct backend *b, const struct backend_where *w);
        void (*set_options)(struct backend *b, const struct vmlink_options *o);
        enum vmlink_state (*state)(const struct backend *b);
        pid_t (*pid)(const struct backend *b);
        const struct vmlink_sample *(*last)(const struct backend *b);
        const char *(*why)(const struct backend *b);
        int (*sample)(struct backend *b, bool stats);
        int (*set_target)(struct backend *b, uint64_t bytes, uint64_t floor_bytes);
        int (*set_cpu_weight)(struct backend *b, uint32_t weight);
        const struct actuator_plan *(*plan)(const struct backend *b);
};

struct backend {
        const struct backend_ops *ops;
        sd_event *event;
        char *name;
        struct vmlink_options opts;
        struct backend_callbacks cb;
        void *userdata;
        struct vmlink *qmp;             /* the QMP backend's link */
        struct virtlink *virt;          /* the libvirt backend's link */
};

/* ---- QMP: vmlink as it is ---- */

static void qmp_state(struct vmlink *l, enum vmlink_state old, const char *why, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.state_changed)
                b->cb.state_changed(b, old, why, b->userdata);
}

static void qmp_sampled(struct vmlink *l, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.sampled)
                b->cb.sampled(b, b->userdata);
}

static void qmp_error(struct vmlink *l, const char *class, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.error)
                b->cb.error(b, class, b->userdata);
}

static void qmp_actuated(struct vmlink *l, const struct actuator_plan *p, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.actuated)
                b->cb.actuated(b, p, b->userdata);
}

static const struct vmlink_callbacks qmp_callbacks = {
        .state_changed = qmp_state, .sampled = qmp_sampled, .qmp_error = qmp_error, .actuated = qmp_actuated,
};

static int qmp_open(struct backend *b, sd_event *e, const struct backend_where *w, const struct vmlink_options *o) {
        return vmlink_new(e, b->name, w->qmp_path, o, &qmp_callbacks, b, &b->qmp);
}
static void qmp_close(struct backend *b) { b->qmp = vmlink_free(b->qmp); }
static int qmp_set_where(struct backend *b, const struct backend_where *w) { return vmlink_set_path(b->qmp, w->qmp_path); }
static void qmp_set_options(struct backend *b, const struct vmlink_options *o) { vmlink_set_options(b->qmp, o); }
static enum vmlink_state qmp_get_state(const struct backend *b) { return vmlink_get_state(b->qmp); }
static pid_t qmp_pid(const struct backend *b) { return vmlink_pid(b->qmp); }
static const struct vmlink_sample *qmp_last(const struct backend *b) { return vmlink_last(b->qmp); }
static const char *qmp_why(const struct backend *b) { return vmlink_why(b->qmp); }
static int qmp_sample(struct backend *b, bool stats) { return vmlink_sample(b->qmp, stats); }
static int qmp_set_target(struct backend *b, uint64_t bytes, uint64_t floor_bytes) {
        return vmlink_set_size(b->qmp, bytes, floor_bytes);
}
static int qmp_set_cpu_weight(struct backend *b, uint32_t weight) { return -EOPNOTSUPP; }
static const struct actuator_plan *qmp_plan(const struct backend *b) { return vmlink_actuator_plan(b->qmp); }

static const struct backend_ops qmp_ops = {
        .open = qmp_open, .close = qmp_close, .set_where = qmp_set_where, .set_options = qmp_set_options,
        .state = qmp_get_state, .pid = qmp_pid, .last = qmp_last, .why = qmp_why, .sample = qmp_sample,
        .set_target = qmp_set_target, .set_cpu_weight = qmp_set_cpu_weight, .plan = qmp_plan,
};

/* ---- libvirt: virtlink ---- */

static void virt_state(struct virtlink *l, enum vmlink_state old, const char *why, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.state_changed)
                b->cb.state_changed(b, old, why, b->userdata);
}

static void virt_sampled(struct virtlink *l, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.sampled)
                b->cb.sampled(b, b->userdata);
}

static void virt_error(struct virtlink *l, const char *class, void *userdata) {
        struct backend *b = userdata;
        if (b->cb.error)
                b->cb.error(b, class, b->userdata);
}

static const struct virtlink_callbacks virt_callbacks = {
        .state_changed = virt_state, .sampled = virt_sampled, .error = virt_error,
};

static int virt_open(struct backend *b, sd_event *e, const struct backend_where *w, const struct vmlink_options *o) {
        return virtlink_new(e, b->name, w->libvirt_uri, w->libvirt_domain, o, &virt_callbacks, b, &b->virt);
}
static void virt_close(struct backend *b) { b->virt = virtlink_free(b->virt); }
static int virt_set_where(struct backend *b, const struct backend_where *w) {
        return virtlink_set_domain(b->virt, w->libvirt_domain);
}
static void virt_set_options(struct backend *b, const struct vmlink_options *o) { virtlink_set_options(b->virt, o); }
static enum vmlink_state virt_get_state(const struct backend *b) { return virtlink_get_state(b->virt); }
static pid_t virt_pid(const struct backend *b) { return virtlink_pid(b->virt); }
static const struct vmlink_sample *virt_last(const struct backend *b) { return virtlink_last(b->virt); }
static const char *virt_why(const struct backend *b) { return virtlink_why(b->virt); }
static int virt_sample(struct backend *b, bool stats) { return virtlink_sample(b->virt); }
static int virt_set_target(struct backend *b, uint64_t bytes, uint64_t floor_bytes) {
        return virtlink_set_target(b->virt, bytes, floor_bytes);
}
static int virt_set_cpu_weight(struct backend *b, uint32_t weight) { return virtlink_set_cpu_weight(b->virt, weight); }
static const struct actuator_plan *virt_plan(const struct backend *b) { return NULL; }

static const struct backend_ops virt_ops = {
        .open = virt_open, .close = virt_close, .set_where = virt_set_where, .set_options = virt_set_options,
        .state = virt_get_state, .pid = virt_pid, .last = virt_last, .why = virt_why, .sample = virt_sample,
        .set_target = virt_set_target, .set_cpu_weight = virt_set_cpu_weight, .plan = virt_plan,
};

/* ---- the seam ---- */

static const struct backend_ops *ops_for(const struct backend_where *w) {
        return w->libvirt_domain ? &virt_ops : &qmp_ops;
}

int backend_new(sd_event *e, const char *name, const struct backend_where *w, const struct vmlink_options *o,
                const struct backend_callbacks *cb, void *userdata, struct backend **ret) {
        struct backend *b = calloc(1, sizeof(*b));
        int r;

        *ret = NULL;
        if (!b || !(b->name = strdup(name))) {
                free(b);
                return -ENOMEM;
        }
        b->event = sd_event_ref(e);
        b->opts = *o;
        b->cb = *cb;
        b->userdata = userdata;
        b->ops = ops_for(w);
        *ret = b;
        r = b->ops->open(b, e, w, o);
        if (r < 0)
                *ret = backend_free(b);
        return r;
}

struct backend *backend_free(struct backend *b) {
        if (!b)
                return NULL;
        b->cb = (struct backend_callbacks) { 0 };
        b->ops->close(b);
        sd_event_unref(b->event);
        free(b->name);
        free(b);
        return NULL;
}

int backend_set_where(struct backend *b, const struct backend_where *w) {
        const struct backend_ops *next = ops_for(w);
        enum vmlink_state old;
        int r;

        if (next == b->ops)
                return b->ops->set_where(b, w);
        /* Another backend: the old link goes, the new one starts; the manager hears ABSENT. */
        old = b->ops->state(b);
        b->ops->close(b);
        b->ops = next;
        r = b->ops->open(b, b->event, w, &b->opts);
        if (r < 0) {
                /* Keep a link to call: a QMP one with no socket stays ABSENT. */
                b->ops = &qmp_ops;
                (void) qmp_open(b, b->event, &(struct backend_where) { 0 }, &b->opts);
        }
        if (old != VMLINK_ABSENT && b->ops->state(b) == VMLINK_ABSENT && b->cb.state_changed)
                b->cb.state_changed(b, old, "moved to another backend", b->userdata);
        return r;
}

void backend_set_options(struct backend *b, const struct vmlink_options *o) {
        b->opts = *o;
        b->ops->set_options(b, o);
}

bool backend_is_libvirt(const struct backend *b) { return b->ops == &virt_ops; }
enum vmlink_state backend_get_state(const struct backend *b) { return b->ops->state(b); }
pid_t backend_pid(const struct backend *b) { return b->ops->pid(b); }
const struct vmlink_sample *backend_last(const struct backend *b) { return b->ops->last(b); }
const char *backend_why(const struct backend *b) { return b->ops->why(b); }
int backend_sample(struct backend *b, bool stats) { return b->ops->sample(b, stats); }
int backend_set_target(struct backend *b, uint64_t bytes, uint64_t floor_bytes) {
        return b->ops->set_target(b, bytes, floor_bytes);
}
int backend_set_cpu_weight(struct backend *b, uint32_t weight) { return b->ops->set_cpu_weight(b, weight); }
const struct actuator_plan *backend_actuator_plan(const struct backend *b) { return b->ops->plan(b); }
