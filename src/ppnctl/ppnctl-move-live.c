/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ppnctl move VM --to NODE --live: the source's side of a live move (docs/relocation.md).
 * The request goes to the destination's ppnd through etcd, sealed with this node's key; the
 * destination admits the VM and answers with an address; this side runs QEMU's migrate to it,
 * follows query-migrate, and then obeys the move's outcome, which whichever side writes it
 * first decides (create-only): "adopted" — QEMU here quits and the entry leaves this ledger;
 * "aborted" — the VM runs on here (resumed if it had been stopped for the switch-over).
 * While the migration runs the controller holds the VM's balloon where it is (an override
 * lease, cleared again if the move fails).
 */
#include <signal.h>
#include <stdarg.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "etcd.h"
#include "fleet-agent.h"
#include "jsonutil.h"
#include "ledger.h"
#include "ppnctl.h"
#include "qmp.h"
#include "relocate.h"
#include "vm.h"

#define ANSWER_WAIT_USEC (UINT64_C(60) * 1000000)       /* admission + a QEMU start under load */
#define OUTCOME_WAIT_USEC (UINT64_C(30) * 1000000)      /* the destination polls every 0.2 s */
#define POLL_USEC (UINT64_C(250) * 1000)

struct live {
        const struct ctl_globals *g;
        bool json;
        const char *name, *to, *grant;
        uint64_t bandwidth;
        struct fleet_identity id;
        struct fleet_trusted *trusted;
        size_t n_trusted;
        struct etcd *e;
        struct ledger *l;
        struct ledger_state *st;
        const struct ledger_vm *vm;
        char move[FLEET_GRANT_ID_LEN + 1];
        struct qmp *q;
        char *ctl;
        struct relocate_progress last;
        bool held;                      /* the balloon hold (override lease) is ours to clear */
        bool cancel;                    /* given up on here: cancelled once "aborted" is written */
        char warning[256];              /* said before the move, and in the JSON object */
        json_object *out;
};

static void live_done(struct live *lv) {
        explicit_bzero(&lv->id, sizeof(lv->id));
        free(lv->trusted);
        etcd_free(lv->e);
        ledger_state_free(lv->st);
        ledger_close(lv->l);
        qmp_free(lv->q);
        free(lv->ctl);
        json_object_put(lv->out);
}

/* --to, --grant and --max-bandwidth into lv; 0 or CTL_ERR_USAGE (printed). */
static int parse(struct live *lv, const struct ctl_args *args) {
        const char *bw = ctl_arg(args, "max-bandwidth");

        lv->to = ctl_arg(args, "to");
        lv->grant = ctl_arg(args, "grant");
        lv->name = args->argv[1];
        if (bw && (parse_size(bw, &lv->bandwidth) < 0 || lv->bandwidth == 0))
                return ctl_usage_error(args, "--max-bandwidth '%s': want bytes per second like 10M", bw);
        if (!fleet_id_valid(lv->to))
                return ctl_usage_error(args, "--to '%s': want a node id (32 hex characters; see "
                                       "'ppnctl fleet')", lv->to);
        if (lv->grant && (strlen(lv->grant) != FLEET_GRANT_ID_LEN || strspn(lv->grant, "0123456789abcdef") !=
                          FLEET_GRANT_ID_LEN))
                return ctl_usage_error(args, "--grant '%s': want a grant id (32 hex characters)",
                                       lv->grant);
        return 0;
}

static void say(const struct live *lv, const char *fmt, ...) _printf_(2, 3);
static void say(const struct live *lv, const char *fmt, ...) {
        va_list ap;
        if (lv->json)
                return;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        fflush(stdout);
}

/* ---- preparing ---- */

static int prepare(struct live *lv) {
        struct ppn_error e = {};
        int r;
        if ((r = ctl_load_identity(lv->g, &lv->id)) || (r = ctl_open_etcd(lv->g, &lv->e)) ||
            (r = ctl_open_ledger(lv->g, true, &lv->l)))
                return r;
        if ((r = ledger_load(lv->l, &lv->st, &e)) < 0 ||
            (r = fleet_trusted_from_ledger(lv->g->ledger, &lv->id, &lv->trusted, &lv->n_trusted, &e)) < 0)
                return ctl_fail(&e, r);
        if (!(lv->vm = ledger_state_find(lv->st, lv->name))) {
                fprintf(stderr, "ppnctl: no VM named '%s' in %s; see 'ppnctl vm list'\n", lv->name, lv->g->ledger);
                return CTL_ERR_FAILED;
        }
        if (strcmp(lv->to, lv->id.id) == 0 || !fleet_trusted_find(lv->trusted, lv->n_trusted, lv->to)) {
                fprintf(stderr, "ppnctl: move: node %s is %s; pair with it first (ppnctl fleet trust)\n", lv->to,
                        strcmp(lv->to, lv->id.id) == 0 ? "this node" : "not trusted here");
                return CTL_ERR_FAILED;
        }
        if (!(lv->ctl = vm_runtime_path(lv->g->runtime_dir, lv->name, VM_CTL_SUFFIX)))
                return ctl_fail(NULL, -ENOMEM);
        struct qmp_error qe = {};
        if (qmp_connect_sync(lv->ctl, 0, &lv->q, &qe) < 0) {
                fprintf(stderr, "ppnctl: move: '%s' is not running from 'ppnctl start' here (%s: %s); a live move "
                        "needs a running VM\n", lv->name, lv->ctl, qe.error.msg);
                return CTL_ERR_FAILED;
        }
        return 0;
}

static int new_move_id(char ret[FLEET_GRANT_ID_LEN + 1]) {
        uint8_t rnd[FLEET_GRANT_ID_LEN / 2];
        FILE *f = fopen("/dev/urandom", "re");
        bool ok = f && fread(rnd, sizeof(rnd), 1, f) == 1;
        if (f)
                fclose(f);
        if (!ok)
                return -EIO;
        fleet_hex(rnd, sizeof(rnd), ret);
        return 0;
}

static int put_sealed(struct live *lv, const char *part, json_object *body, bool create, struct ppn_error *err) {
        _cleanup_free_ char *key = relocate_key(lv->move, part);
        _cleanup_free_ char *text = body ? relocate_seal(&lv->id, body) : NULL;
        json_object_put(body);
        if (!key || !text)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        return create ? etcd_create(lv->e, key, text, strlen(text), 0, NULL, err)
                      : etcd_put(lv->e, key, text, strlen(text), 0, NULL, err);
}

/* Reads PART sealed by `signer` (NULL: either party): 1 and *ret_body, 0 absent, <0 bad. */
static int get_sealed(struct live *lv, const char *part, const char *signer, json_object **ret_body,
                      struct ppn_error *err) {
        _cleanup_free_ char *key = relocate_key(lv->move, part);
        struct etcd_range rg = {};
        int r = key ? etcd_range(lv->e, key, false, &rg, err) : -ENOMEM;
        if (r >= 0 && rg.n_kvs == 1)
                r = relocate_open((char *) rg.kvs[0].value, rg.kvs[0].value_len, signer, lv->trusted, lv->n_trusted,
                                  part, lv->move, ret_body, err) < 0 ? -EPERM : 1;
        etcd_range_done(&rg);
        return r;
}

static int call(struct live *lv, const char *cmd, json_object *args, json_object **ret, struct ppn_error *err) {
        struct qmp_error qe = {};
        int r = qmp_call_sync(lv->q, cmd, args, 10 * 1000000, ret, &qe);
        if (r < 0)
                *err = qe.error;
        return r;
}

/* One boolean property of the running QEMU's balloon (qom-get). */
static int balloon_option(struct live *lv, const char *property, bool *ret, struct ppn_error *err) {
        json_object *reply = NULL, *args = qmp_qom_args(VM_BALLOON_ID, property, NULL);
        int r = args ? call(lv, "qom-get", args, &reply, err) : ppn_error_set(err, -ENOMEM, "out of memory");
        if (r >= 0 && !json_object_is_type(reply, json_type_boolean))
                r = ppn_error_set(err, -EBADMSG, "not true or false");
        if (r >= 0)
                *ret = json_object_get_boolean(reply);
        json_object_put(reply);
        return r < 0 ? ppn_error_prefix(err, r, "the balloon's %s (qom-get %s)", property, VM_BALLOON_ID) : 0;
}

static int send_request(struct live *lv, struct ppn_error *err) {
        struct relocate_request rq = { .time = (int64_t) (now_realtime_usec() / 1000000) };
        bool deflate, fpr;
        int r = new_move_id(lv->move);
        if (r < 0)
                return ppn_error_set(err, r, "cannot read /dev/urandom");
        /* The destination starts its QEMU with the device options this one runs with (ppnctl
         * start's flags are not in the entry). */
        if ((r = balloon_option(lv, "deflate-on-oom", &deflate, err)) < 0 ||
            (r = balloon_option(lv, "free-page-reporting", &fpr, err)) < 0)
                return ppn_error_prefix(err, r, "'%s' cannot be described to the destination", lv->name);
        rq.no_deflate_on_oom = !deflate;
        rq.no_free_page_reporting = !fpr;
        snprintf(rq.move, sizeof(rq.move), "%s", lv->move);
        snprintf(rq.source, sizeof(rq.source), "%s", lv->id.id);
        snprintf(rq.dest, sizeof(rq.dest), "%s", lv->to);
        snprintf(rq.grant, sizeof(rq.grant), "%s", lv->grant ? lv->grant : "");
        if ((r = ledger_vm_copy(lv->vm, &rq.vm)) < 0)
                return ppn_error_set(err, r, "out of memory");
        free(rq.vm.qmp);
        rq.vm.qmp = NULL;
        rq.vm.override_set = false;
        rq.vm.override_target_bytes = 0;
        rq.vm.override_expires = 0;
        r = put_sealed(lv, "request", relocate_request_to_json(&rq), true, err);
        relocate_request_done(&rq);
        return r;
}

static int wait_answer(struct live *lv, struct relocate_answer *ret, struct ppn_error *err) {
        uint64_t deadline = now_usec() + ANSWER_WAIT_USEC;
        json_object *body = NULL;
        int r;
        while ((r = get_sealed(lv, "answer", lv->to, &body, err)) == 0 || r == -ECONNREFUSED) {
                if (now_usec() > deadline)
                        return ppn_error_set(err, -ETIMEDOUT, "node %.12s did not answer within %" PRIu64 " s (is its "
                                             "ppnd running with [fleet] enabled?)", lv->to, ANSWER_WAIT_USEC / 1000000);
                usleep(POLL_USEC / 2);
        }
        if (r > 0)
                r = relocate_answer_from_json(body, ret, err);
        json_object_put(body);
        return r < 0 ? ppn_error_prefix(err, r, "the answer of node %.12s", lv->to) : 0;
}

/* ---- migrating ---- */

/* Holds the balloon where it is for the migration: an override lease at the current size. */
static void hold_balloon(struct live *lv, uint64_t timeout_usec) {
        json_object *reply = NULL;
        struct ppn_error e = {};
        uint64_t actual = 0;
        if (lv->vm->override_set || call(lv, "query-balloon", NULL, &reply, &e) < 0 ||
            json_member_uint64(reply, "actual", &actual) < 0 || actual < lv->vm->min_bytes || actual > lv->vm->max_bytes) {
                json_object_put(reply);
                return;   /* a lease already holds it, or there is no balloon to hold */
        }
        json_object_put(reply);
        int64_t expires = (int64_t) ((now_realtime_usec() + timeout_usec) / 1000000) + 60;
        if (ledger_override_set(lv->l, lv->name, actual, expires, getuid(), &e) == 0)
                lv->held = true;
        else
                fprintf(stderr, "ppnctl: warning: the balloon of '%s' could not be held during the move: %s\n",
                        lv->name, e.msg);
}

static void release_balloon(struct live *lv) {
        struct ppn_error e = {};
        if (lv->held && ledger_override_clear(lv->l, lv->name, getuid(), &e) < 0)
                fprintf(stderr, "ppnctl: warning: %s; end it with 'ppnctl release %s'\n", e.msg, lv->name);
        lv->held = false;
}

static void show_progress(const struct live *lv, const struct relocate_progress *p) {
        if (lv->json || !isatty(STDERR_FILENO))
                return;
        fprintf(stderr, "\r%-9s %6.1f s  %8" PRIu64 " MiB sent  %8" PRIu64 " MiB left  ", p->status,
                (double) p->total_time_ms / 1000, p->transferred_bytes / MIB, p->remaining_bytes / MIB);
}

/* Starts the migration and follows it: 0 completed (the VM stopped here), <0 failed. */
static int migrate(struct live *lv, const struct relocate_answer *a, struct ppn_error *err) {
        uint64_t deadline = now_usec() + lv->g->migration_timeout_usec, moved = now_usec(), sent = 0;
        json_object *args = json_object_new_object(), *reply = NULL;
        char uri[128];
        int r = 0;
        if (lv->bandwidth) {
                json_object_object_add(args, "max-bandwidth", json_object_new_int64((int64_t) lv->bandwidth));
                r = call(lv, "migrate-set-parameters", args, NULL, err);
                args = json_object_new_object();
        }
        snprintf(uri, sizeof(uri), strchr(a->address, ':') ? "tcp:[%s]:%u" : "tcp:%s:%u", a->address, a->port);
        json_object_object_add(args, "uri", json_object_new_string(uri));
        if (r < 0 || (r = call(lv, "migrate", args, NULL, err)) < 0)
                return ppn_error_prefix(err, r, "migrate");
        for (;;) {
                if ((r = call(lv, "query-migrate", NULL, &reply, err)) < 0)
                        return ppn_error_prefix(err, r, "query-migrate");
                struct relocate_progress p;
                relocate_progress_parse(reply, &p);
                json_object_put(reply);
                /* A failed migration reports no RAM figures: keep the last ones seen. */
                if (p.transferred_bytes == 0 && lv->last.transferred_bytes > 0) {
                        memcpy(lv->last.status, p.status, sizeof(p.status));
                        memcpy(lv->last.error, p.error, sizeof(p.error));
                } else
                        lv->last = p;
                show_progress(lv, &lv->last);
                if (strcmp(lv->last.status, "completed") == 0)
                        return 0;
                if (strcmp(lv->last.status, "failed") == 0 || strcmp(lv->last.status, "cancelled") == 0)
                        return ppn_error_set(err, -EIO, "the migration %s%s%s", lv->last.status,
                                             lv->last.error[0] ? ": " : "", lv->last.error);
                /* Given up on: the caller writes "aborted" with this reason first, then cancels (a
                 * cancel first would let the destination, whose stream ends, record its own reason). */
                if (now_usec() > deadline) {
                        lv->cancel = true;
                        return ppn_error_set(err, -ETIMEDOUT, "not finished within [fleet] migration-timeout: cancelled");
                }
                /* A cut network shows only as a stream that no longer moves (TCP retries for minutes). */
                if (lv->last.transferred_bytes != sent) {
                        sent = lv->last.transferred_bytes;
                        moved = now_usec();
                } else if (now_usec() - moved > RELOCATE_STALL_USEC) {
                        lv->cancel = true;
                        return ppn_error_set(err, -ETIMEDOUT, "no migration traffic for %" PRIu64 " s (network cut, or "
                                             "the destination stopped): cancelled", RELOCATE_STALL_USEC / USEC_PER_SEC);
                }
                usleep(POLL_USEC);
        }
}

/* The outcome: the destination's "adopted", or "aborted" by either side; on a timeout this side
 * tries to write "aborted" itself. Returns the outcome that stands. */
static enum relocate_outcome settle(struct live *lv, bool completed, const char *why, char *reason, size_t len) {
        uint64_t deadline = now_usec() + (completed ? OUTCOME_WAIT_USEC : 0);
        enum relocate_outcome oc = RELOCATE_ABORTED;
        struct ppn_error e = {};
        json_object *body = NULL;
        for (;;) {
                int r = get_sealed(lv, "outcome", NULL, &body, &e);
                if (r > 0 && relocate_outcome_from_json(body, &oc, reason, len, &e) == 0) {
                        const char *who = json_member_string(body, "node");
                        if (oc == RELOCATE_ADOPTED && (!who || strcmp(who, lv->to) != 0))
                                oc = RELOCATE_ABORTED;   /* only the destination adopts */
                        json_object_put(body);
                        return oc;
                }
                json_object_put(body);
                body = NULL;
                if (r == -EPERM)
                        return RELOCATE_ABORTED;   /* not sealed by a party: the destination reads it so too */
                if (r < 0 && r != -ECONNREFUSED)
                        fprintf(stderr, "ppnctl: move: the outcome cannot be read yet: %s; retrying\n", e.msg);
                if (now_usec() >= deadline) {
                        r = put_sealed(lv, "outcome", relocate_outcome_to_json(lv->move, lv->id.id, RELOCATE_ABORTED, why),
                                       true, &e);
                        if (r == 0) {
                                snprintf(reason, len, "%s", why);
                                return RELOCATE_ABORTED;
                        }
                        if (r != -EEXIST) {
                                /* Neither written nor read: the destination cannot have written "adopted"
                                 * unseen for long; keep trying (the VM stays stopped here until it is known). */
                                fprintf(stderr, "ppnctl: move: the outcome cannot be written yet: %s; retrying\n", e.msg);
                                usleep(1000000);
                        }
                        continue;
                }
                usleep(POLL_USEC / 2);
        }
}

/* After "adopted": QEMU here quits, its group and sockets go, the entry leaves this ledger. */
static int finish_here(struct live *lv) {
        struct ppn_error e = {};
        pid_t pid = 0;
        qmp_peer_pid(lv->q, &pid);
        call(lv, "quit", NULL, NULL, &e);
        lv->q = qmp_free(lv->q);
        if (pid > 0 && vm_wait_exit(pid, 10 * 1000000) != 1)
                kill(pid, SIGKILL);
        unlink(lv->ctl);
        _cleanup_free_ char *qmp = lv->vm->qmp ? strdup(lv->vm->qmp) : vm_runtime_path(lv->g->runtime_dir, lv->name,
                                                                                        VM_QMP_SUFFIX);
        if (qmp && vm_qmp_alive(qmp) == 0)
                unlink(qmp);
        int r = ledger_vm_remove(lv->l, lv->name, getuid(), &e);
        if (r < 0)
                fprintf(stderr, "ppnctl: move: '%s' runs on node %.12s now, but its entry here could not be removed: "
                        "%s; remove it with 'ppnctl vm remove %s'\n", lv->name, lv->to, e.msg, lv->name);
        return r;
}

/* After "aborted": the VM runs on here. */
static void resume_here(struct live *lv) {
        json_object *reply = NULL;
        struct ppn_error e = {};
        const char *s;
        if (call(lv, "query-status", NULL, &reply, &e) >= 0 && (s = json_member_string(reply, "status")) &&
            strcmp(s, "running") != 0 && call(lv, "cont", NULL, NULL, &e) < 0)
                fprintf(stderr, "ppnctl: move: '%s' could not be resumed here: %s; resume it with QMP \"cont\" on %s\n",
                        lv->name, e.msg, lv->ctl);
        json_object_put(reply);
        release_balloon(lv);
}

/* QEMU before 9.0 under TCG loses guest writes during a migration: its dirty-bitmap sync leaves
 * TCG's TLB entries writable without dirty tracking (QEMU commit 03bfc2188f, 9.0), and a guest
 * that writes memory arrives corrupt (docs/relocation.md, "Limits": reproduced here with two
 * plain QEMU 7.2). The move goes on; the operator is told. KVM tracks dirty pages itself. */
static void check_tcg(struct live *lv) {
        json_object *kvm = NULL, *ver = NULL, *qemu = NULL;
        bool enabled = true;
        int64_t major = 0, minor = 0;
        struct ppn_error e = {};
        if (call(lv, "query-kvm", NULL, &kvm, &e) >= 0 && json_member_bool(kvm, "enabled", &enabled) == 0 && !enabled &&
            call(lv, "query-version", NULL, &ver, &e) >= 0 && json_object_object_get_ex(ver, "qemu", &qemu) &&
            json_member_int64(qemu, "major", &major) == 0 && json_member_int64(qemu, "minor", &minor) == 0 &&
            major < 9) {
                snprintf(lv->warning, sizeof(lv->warning), "'%s' runs under TCG on QEMU %" PRId64 ".%" PRId64 ", which can "
                         "lose the guest's memory writes during a live migration (fixed in QEMU 9.0): a guest that "
                         "writes memory may arrive corrupt", lv->name, major, minor);
                fprintf(stderr, "ppnctl: warning: %s\n", lv->warning);
        }
        json_object_put(kvm);
        json_object_put(ver);
}

static int report(struct live *lv, bool ok, const char *what, const char *reason) {
        if (lv->json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "vm", json_object_new_string(lv->name));
                json_object_object_add(o, "move", json_object_new_string(lv->move));
                json_object_object_add(o, "to", json_object_new_string(lv->to));
                json_object_object_add(o, "outcome", json_object_new_string(what));
                json_object_object_add(o, "reason", json_object_new_string(reason ? reason : ""));
                json_object_object_add(o, "warning", json_object_new_string(lv->warning));
                json_object_object_add(o, "migration", relocate_progress_to_json(&lv->last));
                ctl_print_json(o);
        } else if (ok)
                printf("\n%s (uuid %s) moved live to node %.12s in %.1f s (downtime %" PRIu64 " ms, %" PRIu64
                       " MiB sent); removed from this node's ledger\n", lv->name, lv->vm->uuid, lv->to,
                       (double) lv->last.total_time_ms / 1000, lv->last.downtime_ms, lv->last.transferred_bytes / MIB);
        if (!ok)
                fprintf(stderr, "ppnctl: move: %s %s: %s; it runs on here, and node %.12s holds nothing for it\n",
                        lv->name, what, reason, lv->to);
        return ok ? CTL_OK : CTL_ERR_FAILED;
}

int ctl_move_live(const struct ctl_globals *g, const struct ctl_args *args) {
        _cleanup_(live_done) struct live lv = { .g = g, .json = args->json };
        struct relocate_answer ans;
        struct ppn_error e = {};
        char reason[512] = "";
        int r = parse(&lv, args);
        if (r < 0)
                return r;
        if ((r = prepare(&lv)))
                return r;
        check_tcg(&lv);
        if (send_request(&lv, &e) < 0 || wait_answer(&lv, &ans, &e) < 0) {
                if (lv.move[0])
                        put_sealed(&lv, "outcome", relocate_outcome_to_json(lv.move, lv.id.id, RELOCATE_ABORTED, e.msg),
                                   true, &(struct ppn_error) {});
                return report(&lv, false, "not started", e.msg);
        }
        if (!ans.ok)
                return report(&lv, false, "refused by the destination", ans.reason);
        if (!relocate_address_allowed(g->migration_peers, ans.address)) {
                snprintf(reason, sizeof(reason), "node %.12s answered with address %s, which [fleet] migration-peers "
                         "(%s) does not list", lv.to, ans.address, g->migration_peers);
                settle(&lv, false, reason, reason, sizeof(reason));
                return report(&lv, false, "not started", reason);
        }
        say(&lv, "node %.12s admitted %s; migrating to %s:%u\n", lv.to, lv.name, ans.address, ans.port);
        hold_balloon(&lv, g->migration_timeout_usec);
        r = migrate(&lv, &ans, &e);
        enum relocate_outcome oc = settle(&lv, r == 0, r < 0 ? e.msg : "the destination did not adopt in time",
                                          reason, sizeof(reason));
        if (oc == RELOCATE_ADOPTED)
                return finish_here(&lv) < 0 ? CTL_ERR_FAILED : report(&lv, true, "adopted", NULL);
        if (lv.cancel)
                call(&lv, "migrate_cancel", NULL, NULL, &(struct ppn_error) {});
        resume_here(&lv);
        return report(&lv, false, "aborted", reason[0] ? reason : e.msg);
}
