/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl history VM and ppnctl plot [VM...]: the daemon's recent per-VM samples (target,
 * actual, guest available/total) and decisions, as a table, as JSON, or drawn as an SVG.
 * The JSON of `history --json` is also what `plot --input` reads, so a run can be saved and
 * drawn later, elsewhere.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "control-client.h"
#include "history.h"
#include "jsonutil.h"
#include "plot.h"
#include "ppnctl.h"

#define DEFAULT_HISTORY_SINCE (UINT64_C(600) * 1000000)  /* 10 min */
#define DEFAULT_PLOT_SINCE (UINT64_C(1800) * 1000000)    /* 30 min */
#define MAX_VM_ARGS 64

struct hist_args {
        const char *vms[MAX_VM_ARGS];
        size_t n_vms;
        uint64_t since_usec;
        bool json;
        const char *output;
        const char *input;
};

/* One VM of a history document, decoded. */
struct hist_vm {
        char name[64];
        uint64_t min_bytes, max_bytes;
        struct history_sample *samples;
        size_t n_samples;
        struct plot_mark *marks;
        size_t n_marks;
        uint64_t marks_omitted;         /* older decisions ppnd left out of its reply */
};

struct hist_doc {
        uint64_t now_usec, since_usec;
        struct hist_vm *vms;
        size_t n_vms;
};

static void hist_doc_done(struct hist_doc *d) {
        for (size_t i = 0; i < d->n_vms; i++) {
                free(d->vms[i].samples);
                free(d->vms[i].marks);
        }
        free(d->vms);
}

/* The operands and options of history and plot into *h; 0 or CTL_ERR_USAGE (printed). */
static int parse_args(const struct ctl_args *args, struct hist_args *h) {
        const char *since = ctl_arg(args, "since");

        if (since && (parse_duration(since, &h->since_usec) < 0 || h->since_usec < 1000000))
                return ctl_usage_error(args, "'%s' is not a duration of at least 1s (examples: 90s, 10m, 2h)", since);
        if (args->argc - 1 > MAX_VM_ARGS)
                return ctl_usage_error(args, "at most %d VMs at once", MAX_VM_ARGS);
        for (int i = 1; i < args->argc; i++)
                h->vms[h->n_vms++] = args->argv[i];
        h->output = ctl_arg(args, "output");
        h->input = ctl_arg(args, "input");
        h->json = args->json;
        return 0;
}

/* The VM names ppnd manages, from its status (the brief form: the names are all we read). */
static int vm_names(const char *socket, json_object **ret, struct ppn_error *err) {
        json_object *reply = NULL, *vms, *names = json_object_new_array(), *args = json_object_new_object();
        int r;

        if (!names || !args) {
                json_object_put(names);
                json_object_put(args);
                return ppn_error_set(err, -ENOMEM, "out of memory");
        }
        json_object_object_add(args, "brief", json_object_new_boolean(true));
        r = control_client_call(socket, "status", args, &reply, err);
        json_object_put(args);
        if (r < 0) {
                json_object_put(names);
                return r;
        }
        if (!json_object_object_get_ex(reply, "vms", &vms) || !json_object_is_type(vms, json_type_array)) {
                json_object_put(reply);
                json_object_put(names);
                return ppn_error_set(err, -EBADMSG, "the daemon's status reply has no VM list (version mismatch?)");
        }
        for (size_t i = 0; i < json_object_array_length(vms); i++) {
                json_object *name;
                if (json_object_object_get_ex(json_object_array_get_idx(vms, i), "name", &name))
                        json_object_array_add(names, json_object_get(name));
        }
        json_object_put(reply);
        *ret = names;
        return 0;
}

/* The daemon sends samples as compact arrays; the document ppnctl prints has objects. */
static int expand_samples(json_object *vm) {
        json_object *samples, *out;

        if (!json_object_object_get_ex(vm, "samples", &samples) || !json_object_is_type(samples, json_type_array))
                return -EBADMSG;
        out = json_object_new_array_ext((int) json_object_array_length(samples));
        for (size_t i = 0; i < json_object_array_length(samples); i++) {
                struct history_sample s;
                if (history_sample_from_array(json_object_array_get_idx(samples, i), &s) < 0) {
                        json_object_put(out);
                        return -EBADMSG;
                }
                json_object_array_add(out, history_sample_to_json(&s));
        }
        json_object_object_add(vm, "samples", out);
        return 0;
}

/* One VM's history over the last span: its object for the document, and the span's ends. */
static int fetch_vm(const char *socket, const char *name, uint64_t span, json_object **ret_vm, uint64_t *now,
                    uint64_t *since, struct ppn_error *err) {
        json_object *args = json_object_new_object(), *reply = NULL, *vm, *v;
        int r;

        json_object_object_add(args, "vm", json_object_new_string(name));
        json_object_object_add(args, "span_usec", json_object_new_int64((int64_t) span));
        r = control_client_call(socket, "history", args, &reply, err);
        json_object_put(args);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(reply, "vm", &vm) || expand_samples(vm) < 0 ||
            !json_object_object_get_ex(reply, "now_usec", &v) || !(*now = (uint64_t) json_object_get_int64(v)) ||
            !json_object_object_get_ex(reply, "since_usec", &v) || !(*since = (uint64_t) json_object_get_int64(v))) {
                json_object_put(reply);
                return ppn_error_set(err, -EBADMSG, "the daemon's history reply cannot be read (version mismatch?)");
        }
        *ret_vm = json_object_get(vm);
        json_object_put(reply);
        return 0;
}

/*
 * The history document: {"now_usec", "since_usec", "vms": [{"name", "min_bytes", "max_bytes",
 * "samples": [...], "events": [...]}]} for the VMs asked (all if none), one request per VM so
 * each reply stays small. The span runs from the first VM's start to the last VM's end.
 */
static int fetch(const struct ctl_globals *g, const struct hist_args *a, json_object **ret) {
        struct ppn_error err = { 0 };
        json_object *names = NULL, *doc = json_object_new_object(), *vms = json_object_new_array();
        uint64_t now = 0, since = 0, first_since = 0;
        int r = 0;

        json_object_object_add(doc, "vms", vms);
        if (a->n_vms == 0)
                r = vm_names(g->socket, &names, &err);
        else {
                names = json_object_new_array();
                for (size_t i = 0; i < a->n_vms; i++)
                        json_object_array_add(names, json_object_new_string(a->vms[i]));
        }
        for (size_t i = 0; r >= 0 && i < json_object_array_length(names); i++) {
                json_object *vm = NULL;
                r = fetch_vm(g->socket, json_object_get_string(json_object_array_get_idx(names, i)), a->since_usec, &vm,
                             &now, &since, &err);
                if (r >= 0)
                        json_object_array_add(vms, vm);
                if (i == 0)
                        first_since = since;
        }
        json_object_put(names);
        if (r < 0) {
                json_object_put(doc);
                fprintf(stderr, "ppnctl: %s\n", err.msg);
                return CTL_ERR_FAILED;
        }
        if (!now) /* no VM at all: the span ends now */
                now = now_realtime_usec(), first_since = now - a->since_usec;
        json_object_object_add(doc, "now_usec", json_object_new_int64((int64_t) now));
        json_object_object_add(doc, "since_usec", json_object_new_int64((int64_t) first_since));
        *ret = doc;
        return 0;
}

/* A size or time: negative values are refused. */
static int get_u64(json_object *o, const char *key, uint64_t *ret) {
        int64_t v;

        if (json_member_int64(o, key, &v) < 0 || v < 0)
                return -EINVAL;
        *ret = (uint64_t) v;
        return 0;
}

static int decode_marks(json_object *arr, struct hist_vm *vm) {
        size_t n = json_object_array_length(arr);

        vm->marks = calloc(n + 1, sizeof(*vm->marks));
        if (!vm->marks)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(arr, i);
                struct plot_mark *m = &vm->marks[i];
                if (get_u64(e, "time_usec", &m->realtime_usec) < 0 || get_u64(e, "to_bytes", &m->to_bytes) < 0 ||
                    json_member_text(e, "kind", m->kind, sizeof(m->kind)) < 0 ||
                    json_member_text(e, "reason", m->reason, sizeof(m->reason)) < 0)
                        return -EINVAL;
        }
        vm->n_marks = n;
        return 0;
}

static int decode_vm(json_object *o, struct hist_vm *vm) {
        json_object *samples, *events;
        size_t n;

        if (json_member_text(o, "name", vm->name, sizeof(vm->name)) < 0 ||
            get_u64(o, "min_bytes", &vm->min_bytes) < 0 ||
            get_u64(o, "max_bytes", &vm->max_bytes) < 0 || !json_object_object_get_ex(o, "samples", &samples) ||
            !json_object_is_type(samples, json_type_array) || !json_object_object_get_ex(o, "events", &events) ||
            !json_object_is_type(events, json_type_array))
                return -EINVAL;
        n = json_object_array_length(samples);
        vm->samples = calloc(n + 1, sizeof(*vm->samples));
        if (!vm->samples)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (history_sample_from_json(json_object_array_get_idx(samples, i), &vm->samples[i]) < 0)
                        return -EINVAL;
        vm->n_samples = n;
        if (json_object_object_get_ex(o, "events_omitted", NULL) && get_u64(o, "events_omitted", &vm->marks_omitted) < 0)
                return -EINVAL;
        return decode_marks(events, vm);
}

static int decode(json_object *doc, struct hist_doc *d) {
        json_object *vms;

        *d = (struct hist_doc) { 0 };
        if (get_u64(doc, "now_usec", &d->now_usec) < 0 || get_u64(doc, "since_usec", &d->since_usec) < 0 ||
            !json_object_object_get_ex(doc, "vms", &vms) || !json_object_is_type(vms, json_type_array))
                return -EINVAL;
        d->vms = calloc(json_object_array_length(vms) + 1, sizeof(*d->vms));
        if (!d->vms)
                return -ENOMEM;
        for (size_t i = 0; i < json_object_array_length(vms); i++) {
                d->n_vms++;
                if (decode_vm(json_object_array_get_idx(vms, i), &d->vms[i]) < 0)
                        return -EINVAL;
        }
        return 0;
}

/* ---- history ---- */

static const char *hms(uint64_t usec, char *buf, size_t len) {
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;
        strftime(buf, len, "%H:%M:%S", gmtime_r(&t, &tm));
        return buf;
}

static const char *size_col(uint64_t v, char *buf, size_t len) {
        return v == HISTORY_UNKNOWN ? "-" : ctl_size((int64_t) v, buf, len);
}

static bool same_values(const struct history_sample *a, const struct history_sample *b) {
        return a->target_bytes == b->target_bytes && a->actual_bytes == b->actual_bytes &&
               a->guest_available_bytes == b->guest_available_bytes && a->guest_total_bytes == b->guest_total_bytes;
}

static void print_mark(const struct plot_mark *m) {
        char t[16], to[32], line[512], cut[512];
        unsigned w = ctl_columns();

        snprintf(line, sizeof(line), "%s  * %s%s%s: %s", hms(m->realtime_usec, t, sizeof(t)), m->kind,
                 m->to_bytes ? " to " : "", m->to_bytes ? ctl_size((int64_t) m->to_bytes, to, sizeof(to)) : "",
                 m->reason);
        printf("%s%s%s\n", ctl_sgr(stdout, CTL_SGR_YELLOW), text_fit(line, w, cut, sizeof(cut)),
               ctl_sgr(stdout, CTL_SGR_RESET));
}

/* Samples with their decisions in time order; a sample equal to the one before is folded. */
static void print_vm_history(const struct hist_vm *vm) {
        char a[32], b[32], c[32], d[32], t[16];
        size_t k = 0;

        printf("%s: min %s, max %s; %zu samples, %zu decisions (times UTC; unchanged samples folded)\n", vm->name,
               ctl_size((int64_t) vm->min_bytes, a, sizeof(a)), ctl_size((int64_t) vm->max_bytes, b, sizeof(b)),
               vm->n_samples, vm->n_marks);
        if (vm->marks_omitted)
                printf("(%" PRIu64 " older decisions left out: the daemon's reply is bounded; ask for a shorter "
                       "--since)\n", vm->marks_omitted);
        printf("%s%-8s  %11s %11s %11s %11s%s\n", ctl_sgr(stdout, CTL_SGR_BOLD), "TIME", "TARGET", "ACTUAL", "AVAILABLE",
               "USE", ctl_sgr(stdout, CTL_SGR_RESET));
        for (size_t i = 0; i < vm->n_samples; i++) {
                const struct history_sample *s = &vm->samples[i];
                for (; k < vm->n_marks && vm->marks[k].realtime_usec <= s->realtime_usec; k++)
                        print_mark(&vm->marks[k]);
                if (i > 0 && i + 1 < vm->n_samples && same_values(s, &vm->samples[i - 1]))
                        continue;
                printf("%-8s  %11s %11s %11s %11s\n", hms(s->realtime_usec, t, sizeof(t)),
                       size_col(s->target_bytes, a, sizeof(a)), size_col(s->actual_bytes, b, sizeof(b)),
                       size_col(s->guest_available_bytes, c, sizeof(c)),
                       size_col(history_sample_guest_used(s), d, sizeof(d)));
        }
        for (; k < vm->n_marks; k++)
                print_mark(&vm->marks[k]);
        if (vm->n_samples == 0)
                printf("(no samples yet: the VM has not been running under this ppnd in that time)\n");
}

int ctl_history(const struct ctl_globals *g, const struct ctl_args *args) {
        struct hist_args a = { .since_usec = DEFAULT_HISTORY_SINCE };
        struct hist_doc d = { 0 };
        json_object *doc = NULL;
        int r = parse_args(args, &a);

        if (r < 0)
                return r;
        r = fetch(g, &a, &doc);
        if (r)
                return r;
        if (a.json) {
                ctl_print_json(doc);
                return CTL_OK;
        }
        r = decode(doc, &d);
        json_object_put(doc);
        if (r < 0 || d.n_vms != 1) {
                hist_doc_done(&d);
                fprintf(stderr, "ppnctl: the daemon's history reply cannot be read (version mismatch?)\n");
                return CTL_ERR_FAILED;
        }
        print_vm_history(&d.vms[0]);
        hist_doc_done(&d);
        return CTL_OK;
}

/* ---- plot ---- */

/* Writes text to path through a temporary file and a rename: a reader never sees half a picture. */
static int write_file(const char *path, const char *text, size_t len) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        size_t done = 0;

        if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        while (done < len) {
                ssize_t n = write(fd, text + done, len - done);
                if (n < 0) {
                        int e = -errno;
                        unlink(tmp);
                        return e;
                }
                done += (size_t) n;
        }
        if (fchmod(fd, 0644) < 0 || rename(tmp, path) < 0) {
                int e = -errno;
                unlink(tmp);
                return e;
        }
        return 0;
}

static struct plot_vm plot_vm_of(const struct hist_vm *v) {
        return (struct plot_vm) { v->name, v->min_bytes, v->max_bytes, v->samples, v->n_samples, v->marks, v->n_marks };
}

/* The VMs asked for, in that order, or all of them when none was named. */
static int select_vms(const struct hist_doc *d, const struct hist_args *a, struct plot_vm *out, size_t *ret_n) {
        size_t n = 0;

        if (a->n_vms == 0) {
                for (size_t k = 0; k < d->n_vms; k++)
                        out[n++] = plot_vm_of(&d->vms[k]);
                *ret_n = n;
                return 0;
        }
        for (size_t i = 0; i < a->n_vms; i++) {
                size_t k = 0;
                while (k < d->n_vms && strcmp(d->vms[k].name, a->vms[i]) != 0)
                        k++;
                if (k == d->n_vms) {
                        fprintf(stderr, "ppnctl: no history for VM '%s'; see 'ppnctl status' for the VMs ppnd manages\n",
                                a->vms[i]);
                        return CTL_ERR_FAILED;
                }
                out[n++] = plot_vm_of(&d->vms[k]);
        }
        *ret_n = n;
        return 0;
}

static int draw(const struct hist_doc *d, const struct hist_args *a) {
        _cleanup_free_ struct plot_vm *pv = calloc(d->n_vms + a->n_vms + 1, sizeof(*pv));
        _cleanup_free_ char *svg = NULL;
        struct plot_options o = { .t0_usec = d->since_usec, .t1_usec = d->now_usec };
        size_t n = 0, len = 0, samples = 0, marks = 0;
        int r;

        if (!pv)
                return ctl_fail(NULL, -ENOMEM);
        r = select_vms(d, a, pv, &n);
        if (r)
                return r;
        if (n == 0) {
                fprintf(stderr, "ppnctl: nothing to plot: ppnd manages no VM\n");
                return CTL_ERR_FAILED;
        }
        r = plot_render_svg(pv, n, &o, &svg, &len);
        if (r < 0)
                return ctl_fail(NULL, r);
        r = write_file(a->output, svg, len);
        if (r < 0) {
                fprintf(stderr, "ppnctl: cannot write %s: %s\n", a->output, strerror(-r));
                return CTL_ERR_FAILED;
        }
        for (size_t i = 0; i < n; i++)
                samples += pv[i].n_samples, marks += pv[i].n_marks;
        printf("wrote %s: %zu VM%s, %zu samples, %zu decisions\n", a->output, n, n == 1 ? "" : "s", samples, marks);
        return CTL_OK;
}

int ctl_plot(const struct ctl_globals *g, const struct ctl_args *args) {
        struct hist_args a = { .since_usec = DEFAULT_PLOT_SINCE };
        struct hist_doc d = { 0 };
        json_object *doc = NULL;
        int r = parse_args(args, &a);

        if (r < 0)
                return r;
        if (!a.output)
                return ctl_usage_error(args, "--output FILE.svg is required");
        if (a.input) {
                doc = json_object_from_file(a.input);
                if (!doc) {
                        fprintf(stderr, "ppnctl: cannot read %s as JSON (the output of 'ppnctl history VM --json'): %s\n",
                                a.input, json_util_get_last_err());
                        return CTL_ERR_FAILED;
                }
        } else if ((r = fetch(g, &a, &doc)))
                return r;
        r = decode(doc, &d);
        json_object_put(doc);
        if (r < 0) {
                hist_doc_done(&d);
                fprintf(stderr, "ppnctl: %s is not a history document (see 'ppnctl history VM --json')\n",
                        a.input ? a.input : "the daemon's reply");
                return CTL_ERR_FAILED;
        }
        r = draw(&d, &a);
        hist_doc_done(&d);
        return r;
}
