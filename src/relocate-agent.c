/* SPDX-License-Identifier: Apache-2.0 */
/* ppnd's receiving side of live moves (see relocate-agent.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "archive.h"
#include "cgroup.h"
#include "config.h"
#include "etcd.h"
#include "jsonutil.h"
#include "fleet-agent.h"
#include "ledger.h"
#include "log.h"
#include "pool.h"
#include "qmp.h"
#include "relocate-agent.h"
#include "relocate.h"
#include "vm.h"

#define SEEN_MAX 256
#define CGROUP_REMOVE_USEC (5 * USEC_PER_SEC)
#define JOURNAL_FILE "incoming-move"   /* beside the ledger: the move being received, while it is */
#define RECOVER_RETRY_USEC (2 * USEC_PER_SEC)

struct relocate_agent {
        struct fleet_identity id;
        struct etcd_options etcd;
        char *endpoints, *ca, *cert, *key;
        char *ledger_path, *runtime_dir, *log_dir, *qemu, *accel, *cgroup_root, *cgroup_parent;
        char *address;
        char *journal_dir, *journal;
        uint16_t port, ports;
        uint64_t timeout_usec;
        pthread_t thread;
        bool started;
        volatile bool stop;
        char seen[SEEN_MAX][FLEET_GRANT_ID_LEN + 1];
        size_t n_seen;
};

/* One move being received. */
struct incoming {
        struct relocate_agent *a;
        struct etcd *e;
        struct relocate_request req;
        struct ledger *l;               /* this node's ledger, for the whole move */
        struct fleet_trusted *trusted;  /* as the ledger had them when the request came */
        size_t n_trusted;
        struct ledger_vm entry;         /* as admitted here */
        bool admitted;
        bool keep_journal;              /* the outcome is not known: the next start settles it */
        pid_t pid;
        char *qmp_in, *qmp, *ctl, *log;
        struct qmp *q;
        struct ppn_cgroup *cg;
};

static bool seen(struct relocate_agent *a, const char *move) {
        for (size_t i = 0; i < a->n_seen; i++)
                if (strcmp(a->seen[i], move) == 0)
                        return true;
        snprintf(a->seen[a->n_seen++ % SEEN_MAX], FLEET_GRANT_ID_LEN + 1, "%s", move);
        if (a->n_seen >= SEEN_MAX)
                a->n_seen = 0;
        return false;
}

static int put_sealed(struct incoming *in, const char *part, json_object *body, bool create, struct ppn_error *err) {
        _cleanup_free_ char *key = relocate_key(in->req.move, part);
        _cleanup_free_ char *text = body ? relocate_seal(&in->a->id, body) : NULL;
        json_object_put(body);
        if (!key || !text)
                return ppn_error_set(err, -ENOMEM, "out of memory");
        return create ? etcd_create(in->e, key, text, strlen(text), 0, NULL, err)
                      : etcd_put(in->e, key, text, strlen(text), 0, NULL, err);
}

static void answer(struct incoming *in, const struct relocate_answer *ans) {
        struct ppn_error e = {};
        if (put_sealed(in, "answer", relocate_answer_to_json(in->req.move, in->a->id.id, ans), false, &e) < 0)
                log_warning("move %s: cannot answer: %s", in->req.move, e.msg);
}

static int refuse(struct incoming *in, const char *fmt, ...) _printf_(2, 3);
static int refuse(struct incoming *in, const char *fmt, ...) {
        struct relocate_answer ans = { .ok = false };
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ans.reason, sizeof(ans.reason), fmt, ap);
        va_end(ap);
        log_warning("move %s of '%s' from node %.12s refused: %s", in->req.move, in->req.vm.name, in->req.source,
                    ans.reason);
        answer(in, &ans);
        return -EPERM;
}

/* ---- the journal ----
 * The move being received is recorded beside the ledger (fsync'd) before anything is admitted
 * and removed once it is settled. A ppnd killed in between finds it when it starts again and
 * settles the move then (recover()): nothing it admitted or started is left behind. */

static int journal_write(struct relocate_agent *a, const char *move, struct ppn_error *err) {
        _cleanup_close_ int dfd = open(a->journal_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char line[FLEET_GRANT_ID_LEN + 2];
        if (dfd < 0)
                return ppn_error_set(err, -errno, "%s: %s", a->journal_dir, strerror(errno));
        snprintf(line, sizeof(line), "%s\n", move);
        return archive_write_file_atomic(dfd, a->journal_dir, JOURNAL_FILE, line, strlen(line), 0600, err);
}

static void journal_remove(struct relocate_agent *a) {
        if (unlink(a->journal) < 0 && errno != ENOENT)
                log_warning("live moves: cannot remove %s: %m", a->journal);
}

/* 1 and the move's id, 0 none (an unreadable journal is logged and removed: nothing can be
 * settled from it). */
static int journal_read(struct relocate_agent *a, char ret[FLEET_GRANT_ID_LEN + 1]) {
        _cleanup_close_ int fd = open(a->journal, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ char *text = NULL;
        if (fd < 0 && errno == ENOENT)
                return 0;
        int r = fd < 0 ? -errno : read_full_fd(fd, 128, &text, NULL);
        if (r < 0 || strlen(text) != FLEET_GRANT_ID_LEN + 1 || text[FLEET_GRANT_ID_LEN] != '\n' ||
            strspn(text, "0123456789abcdef") != FLEET_GRANT_ID_LEN) {
                log_error("live moves: %s is unreadable or not a move id (%s); check this node for a half-received "
                          "VM ('ppnctl vm list', a QEMU with an .incoming.qmp socket in the runtime folder)", a->journal,
                          r < 0 ? strerror(-r) : "bad content");
                journal_remove(a);
                return 0;
        }
        snprintf(ret, FLEET_GRANT_ID_LEN + 1, "%.*s", FLEET_GRANT_ID_LEN, text);
        return 1;
}

/* ---- admission ---- */

static int check_disks(const struct ledger_vm *vm, char *why, size_t len) {
        for (size_t i = 0; vm->disks && vm->disks[i]; i++) {
                struct stat st;
                if (stat(vm->disks[i], &st) < 0 || !S_ISREG(st.st_mode) || access(vm->disks[i], R_OK | W_OK) < 0) {
                        snprintf(why, len, "disk %s is not reachable on this node (live moves need storage both nodes "
                                 "reach at the same path; move it cold with ppnctl move --to DIR)", vm->disks[i]);
                        return -ENOENT;
                }
        }
        return 0;
}

/* Reads and judges the grant by this node's clock, for the source as borrower. */
static int check_grant(struct incoming *in, const struct fleet_trusted *t, size_t n, char *why, size_t len) {
        _cleanup_free_ char *gkey = NULL, *rkey = NULL;
        struct etcd_range g = {}, rv = {};
        struct ppn_error e = {};
        struct fleet_grant grant;
        struct fleet_check c = { .verdict = FLEET_MALFORMED };
        _cleanup_free_ struct fleet_revocation *revs = NULL;
        size_t n_revs = 0;
        int r;
        if (asprintf(&gkey, FLEET_PREFIX "grants/%s", in->req.grant) < 0 ||
            asprintf(&rkey, FLEET_PREFIX "revocations/%s", in->req.grant) < 0)
                return -ENOMEM;
        r = etcd_range(in->e, gkey, false, &g, &e);
        if (r >= 0)
                r = etcd_range(in->e, rkey, false, &rv, &e);
        if (r >= 0 && g.n_kvs != 1)
                r = ppn_error_set(&e, -ENOENT, "no such grant in the fleet store");
        if (r >= 0 && !(revs = calloc(rv.n_kvs + 1, sizeof(*revs))))
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < rv.n_kvs; i++)
                if (fleet_revocation_decode((char *) rv.kvs[i].value, rv.kvs[i].value_len, &revs[n_revs], &e) == 0)
                        n_revs++;
        if (r >= 0 && (r = fleet_grant_decode((char *) g.kvs[0].value, g.kvs[0].value_len, &grant, &e)) >= 0) {
                struct fleet_view view = { .self = in->req.source, .trusted = t, .n_trusted = n, .revocations = revs,
                                           .n_revocations = n_revs, .now = (int64_t) (now_realtime_usec() / USEC_PER_SEC) };
                fleet_grant_check(&grant, in->req.grant, g.kvs[0].version, &view, &c);
        }
        etcd_range_done(&g);
        etcd_range_done(&rv);
        if (r < 0) {
                snprintf(why, len, "grant %s: %.400s", in->req.grant, e.msg);
                return r;
        }
        if (c.verdict != FLEET_VALID) {
                snprintf(why, len, "grant %s is not honoured: %s: %.200s", in->req.grant, fleet_verdict_to_string(c.verdict),
                         c.reason);
                return -EPERM;
        }
        if (strcmp(grant.lender, in->a->id.id) != 0) {
                snprintf(why, len, "grant %s was lent by node %.12s, not by this node", in->req.grant, grant.lender);
                return -EPERM;
        }
        return 0;
}

/* What the lending still holds for the source here, to name the shortfall. */
static uint64_t lend_left(const struct ledger_state *st, const char *grant) {
        for (size_t i = 0; i < st->n_lends; i++)
                if (strcmp(st->lends[i].grant_id, grant) == 0 && !st->lends[i].revoked)
                        return st->lends[i].bytes;
        return 0;
}

static int admit(struct incoming *in, char *why, size_t len) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        struct ledger *l = in->l;
        struct ppn_error e = {};
        int r = ledger_load(l, &st, &e);
        if (r < 0) {
                snprintf(why, len, "this node's ledger: %.400s", e.msg);
                return r;
        }
        for (size_t i = 0; i < st->n_vms; i++)
                if (strcmp(st->vms[i].name, in->entry.name) == 0 || strcmp(st->vms[i].uuid, in->entry.uuid) == 0) {
                        snprintf(why, len, "this node's ledger has a VM named '%s' (uuid %s) already", st->vms[i].name,
                                 st->vms[i].uuid);
                        return -EEXIST;
                }
        if (in->req.grant[0]) {
                if ((r = check_grant(in, in->trusted, in->n_trusted, why, len)) < 0)
                        return r;
                uint64_t left = lend_left(st, in->req.grant);
                if (left < in->entry.min_bytes) {
                        snprintf(why, len, "grant %s holds %" PRIu64 " MiB here for node %.12s; '%s' needs a minimum of "
                                 "%" PRIu64 " MiB: short by %" PRIu64 " MiB", in->req.grant, left / MIB, in->req.source,
                                 in->entry.name, in->entry.min_bytes / MIB, (in->entry.min_bytes - left) / MIB);
                        return -ENOSPC;
                }
                r = ledger_vm_add_on_grant(l, &in->entry, in->req.grant, in->req.source, 0, &e);
        } else
                r = ledger_vm_add(l, &in->entry, 0, NULL, &e);
        if (r < 0) {
                snprintf(why, len, "%.480s", e.msg);
                return r;
        }
        in->admitted = true;
        return 0;
}

static void release(struct incoming *in) {
        struct ppn_error e = {};
        int r;
        if (!in->admitted)
                return;
        r = in->req.grant[0] ? ledger_vm_remove_to_grant(in->l, &in->entry, in->req.grant, 0, &e)
                             : ledger_vm_remove(in->l, in->entry.name, 0, &e);
        if (r < 0)
                log_error("move %s: the entry of '%s' could not be removed from this node's ledger: %s; remove it with "
                          "'ppnctl vm remove %s'", in->req.move, in->entry.name, e.msg, in->entry.name);
        else
                in->admitted = false;
}

/* ---- QEMU ---- */

static int launch(struct incoming *in, struct ppn_error *err) {
        const struct ledger_vm *vm = &in->entry;
        _cleanup_free_ struct vm_disk *disks = NULL;
        size_t n = 0;
        char **argv = NULL;
        int r = vm_disks_detect(vm->disks, &disks, &n, err);
        if (r < 0)
                return r;
        struct vm_spec s;
        ledger_vm_spec(vm, &s);
        s.qemu = in->a->qemu;
        s.accel = in->a->accel;
        s.qmp_path = in->qmp_in;
        s.ctl_path = in->ctl;
        s.log_path = in->log;
        s.no_deflate_on_oom = in->req.no_deflate_on_oom;
        s.no_free_page_reporting = in->req.no_free_page_reporting;
        s.disks = disks;
        s.n_disks = n;
        s.paused = true;
        s.incoming = true;
        struct ppn_cgroup_options co = { .root = in->a->cgroup_root, .parent = in->a->cgroup_parent };
        struct qmp_error qe = {};
        r = vm_build_argv(&s, &argv, err);
        if (r >= 0)
                r = vm_launch(&s, argv, 0, &in->pid, err);
        strv_free(argv);
        if (r < 0)
                return r;
        if ((r = ppn_cgroup_open(&co, &in->cg, err)) >= 0)
                r = ppn_cgroup_vm_place(in->cg, vm->name, in->pid, vm->cpu_weight, err);
        if (r >= 0 && (r = qmp_connect_sync(in->ctl, 0, &in->q, &qe)) < 0)
                *err = qe.error;
        return r;
}

static int call(struct incoming *in, const char *cmd, json_object *args, json_object **ret, struct ppn_error *err) {
        struct qmp_error qe = {};
        int r = qmp_call_sync(in->q, cmd, args, 5 * USEC_PER_SEC, ret, &qe);
        if (r < 0)
                *err = qe.error;
        return r;
}

/* migrate-incoming on the first port of the range QEMU can listen on. */
static int listen_incoming(struct incoming *in, uint16_t *ret_port, struct ppn_error *err) {
        int r = -EADDRINUSE;
        for (unsigned i = 0; i < in->a->ports && !in->a->stop; i++) {
                uint16_t port = (uint16_t) (in->a->port + i);
                char uri[128];
                snprintf(uri, sizeof(uri), "tcp:%s:%u", in->a->address, port);
                json_object *args = json_object_new_object();
                json_object_object_add(args, "uri", json_object_new_string(uri));
                r = call(in, "migrate-incoming", args, NULL, err);
                if (r >= 0) {
                        *ret_port = port;
                        return 0;
                }
                if (!in->q)
                        break;
        }
        return ppn_error_prefix(err, r, "no port of %s:%u-%u could be listened on", in->a->address, in->a->port,
                                in->a->port + in->a->ports - 1);
}

static void kill_qemu(struct incoming *in) {
        in->q = qmp_free(in->q);
        if (in->pid > 0) {
                kill(in->pid, SIGKILL);
                vm_wait_exit(in->pid, 10 * USEC_PER_SEC);
                waitpid(in->pid, NULL, WNOHANG);
                in->pid = 0;
        }
        if (in->cg)
                ppn_cgroup_vm_remove(in->cg, in->entry.name, CGROUP_REMOVE_USEC, NULL);
        unlink(in->qmp_in);
        unlink(in->ctl);
}

/* ---- following the migration ---- */

/* The outcome already written, if any: 1 and *ret, 0 none, <0 unreadable. */
static int read_outcome(struct incoming *in, enum relocate_outcome *ret) {
        _cleanup_free_ char *key = relocate_key(in->req.move, "outcome");
        struct etcd_range rg = {};
        struct ppn_error e = {};
        json_object *body = NULL;
        char reason[256];
        int r = key ? etcd_range(in->e, key, false, &rg, &e) : -ENOMEM;
        if (r < 0 || rg.n_kvs == 0) {
                etcd_range_done(&rg);
                return r < 0 ? r : 0;
        }
        /* Only the two parties may decide; anything else reads as "aborted" (never resume). */
        if (relocate_open((char *) rg.kvs[0].value, rg.kvs[0].value_len, NULL, in->trusted, in->n_trusted, "outcome", in->req.move,
                                    &body, &e) >= 0 &&
            (strcmp(json_member_string(body, "node"), in->req.source) == 0 ||
             strcmp(json_member_string(body, "node"), in->a->id.id) == 0) &&
            relocate_outcome_from_json(body, ret, reason, sizeof(reason), &e) >= 0)
                r = 1;
        else {
                *ret = RELOCATE_ABORTED;
                r = 1;
        }
        json_object_put(body);
        etcd_range_done(&rg);
        return r;
}

/* 1 completed, 0 not yet, <0 failed (err says why). */
static int poll_migration(struct incoming *in, struct ppn_error *err) {
        json_object *reply = NULL;
        struct relocate_progress p;
        int r = call(in, "query-migrate", NULL, &reply, err);
        if (r < 0)
                return ppn_error_prefix(err, r, "the destination QEMU stopped answering");
        relocate_progress_parse(reply, &p);
        json_object_put(reply);
        if (strcmp(p.status, "completed") == 0)
                return 1;
        if (strcmp(p.status, "failed") == 0 || strcmp(p.status, "cancelled") == 0)
                return ppn_error_set(err, -EIO, "the migration %s here%s%s", p.status, p.error[0] ? ": " : "", p.error);
        return 0;
}

static int follow(struct incoming *in, struct ppn_error *err) {
        uint64_t deadline = now_usec() + in->a->timeout_usec;
        enum relocate_outcome oc;
        for (;;) {
                if (in->a->stop)
                        return ppn_error_set(err, -ECANCELED, "ppnd is stopping");
                if (now_usec() > deadline)
                        return ppn_error_set(err, -ETIMEDOUT, "not finished within [fleet] migration-timeout");
                int r = poll_migration(in, err);
                if (r != 0)
                        return r;
                if (read_outcome(in, &oc) == 1)
                        return ppn_error_set(err, -ECANCELED, "the source aborted the move");
                usleep(RELOCATE_POLL_USEC);
        }
}

/*
 * Writes "adopted" (create-only). 0: this node decided it; -ECANCELED: the source's "aborted"
 * came first. The VM stays paused here until that is known: a write whose reply was lost may
 * have landed, so an etcd error is retried (reading first), never taken for a refusal.
 */
static int decide_adopted(struct incoming *in, struct ppn_error *err) {
        enum relocate_outcome oc;
        for (unsigned attempt = 0;; attempt++) {
                int r = read_outcome(in, &oc);
                if (r == 1)
                        return oc == RELOCATE_ADOPTED ? 0 : ppn_error_set(err, -ECANCELED, "the source aborted the move first");
                if (r == 0) {
                        r = put_sealed(in, "outcome", relocate_outcome_to_json(in->req.move, in->a->id.id,
                                                                               RELOCATE_ADOPTED, ""), true, err);
                        if (r == 0)
                                return 0;
                        if (r == -EEXIST)
                                continue;
                }
                if (in->a->stop) {
                        log_error("move %s: ppnd stops before the outcome is known: '%s' stays paused here (pid %d) and "
                                  "its entry stays until ppnd starts again and settles the move (%s)",
                                  in->req.move, in->entry.name, (int) in->pid, in->a->journal);
                        in->pid = 0;
                        in->admitted = false;
                        in->keep_journal = true;
                        return ppn_error_set(err, -ECANCELED, "ppnd is stopping");
                }
                if (attempt % 10 == 0)
                        log_warning("move %s: the outcome cannot be written yet (%s); retrying", in->req.move, err->msg);
                usleep(USEC_PER_SEC);
        }
}

static int adopt(struct incoming *in, struct ppn_error *err) {
        int r = decide_adopted(in, err);
        if (r < 0)
                return r;
        /* From here on the VM is this node's: the controller finds its socket and takes over. */
        if (rename(in->qmp_in, in->qmp) < 0)
                log_error("move %s: cannot rename %s to %s: %m; adopt it with 'ppnctl adopt %s --qmp %s'",
                          in->req.move, in->qmp_in, in->qmp, in->entry.name, in->qmp_in);
        r = call(in, "cont", NULL, NULL, err);
        if (r < 0)
                log_error("move %s: '%s' is adopted but did not resume: %s", in->req.move, in->entry.name, err->msg);
        return 0;
}

static void abort_move(struct incoming *in, const char *why) {
        struct ppn_error e = {};
        int r = put_sealed(in, "outcome", relocate_outcome_to_json(in->req.move, in->a->id.id, RELOCATE_ABORTED, why),
                           true, &e);
        if (r < 0 && r != -EEXIST)
                log_warning("move %s: cannot write the outcome: %s", in->req.move, e.msg);
        kill_qemu(in);
        release(in);
        log_warning("move %s of '%s' from node %.12s aborted: %s; this node's ledger is as before", in->req.move,
                    in->entry.name, in->req.source, why);
}

static int paths(struct incoming *in) {
        in->qmp_in = vm_runtime_path(in->a->runtime_dir, in->entry.name, ".incoming.qmp");
        in->qmp = vm_runtime_path(in->a->runtime_dir, in->entry.name, VM_QMP_SUFFIX);
        in->ctl = vm_runtime_path(in->a->runtime_dir, in->entry.name, VM_CTL_SUFFIX);
        in->log = vm_runtime_path(in->a->log_dir, in->entry.name, VM_LOG_SUFFIX);
        return in->qmp_in && in->qmp && in->ctl && in->log ? 0 : -ENOMEM;
}

/* The entry as this node admits it: the request's, without the source's socket and lease. */
static int entry_from_request(struct incoming *in) {
        if (ledger_vm_copy(&in->req.vm, &in->entry) < 0 || paths(in) < 0)
                return -ENOMEM;
        free(in->entry.qmp);
        in->entry.qmp = NULL;
        in->entry.override_set = false;
        return 0;
}

static int receive(struct incoming *in) {
        char why[512];
        struct relocate_answer ans = { .ok = true };
        struct ppn_error e = {};
        int64_t now = (int64_t) (now_realtime_usec() / USEC_PER_SEC);
        if (in->req.time < now - RELOCATE_SKEW_SEC || in->req.time > now + RELOCATE_SKEW_SEC)
                return refuse(in, "the request's time is more than %d s from this node's clock", RELOCATE_SKEW_SEC);
        if (entry_from_request(in) < 0)
                return refuse(in, "out of memory");
        if (check_disks(&in->entry, why, sizeof(why)) < 0)
                return refuse(in, "%s", why);
        if (journal_write(in->a, in->req.move, &e) < 0)
                return refuse(in, "cannot record the move: %.400s", e.msg);
        if (admit(in, why, sizeof(why)) < 0)
                return refuse(in, "%s", why);
        log_info("move %s: admitted '%s' (min %" PRIu64 " MiB) from node %.12s %s%s", in->req.move, in->entry.name,
                 in->entry.min_bytes / MIB, in->req.source, in->req.grant[0] ? "on grant " : "into this node's pool",
                 in->req.grant);
        if (launch(in, &e) < 0 || listen_incoming(in, &ans.port, &e) < 0) {
                kill_qemu(in);
                release(in);
                return refuse(in, "the destination QEMU: %.400s", e.msg);
        }
        snprintf(ans.address, sizeof(ans.address), "%s", in->a->address);
        answer(in, &ans);
        if (follow(in, &e) < 0 || adopt(in, &e) < 0) {
                abort_move(in, e.msg);
                return -ECANCELED;
        }
        log_info("move %s: '%s' (uuid %s) adopted from node %.12s and running here", in->req.move, in->entry.name,
                 in->entry.uuid, in->req.source);
        in->q = qmp_free(in->q);
        ppn_cgroup_free(in->cg);
        in->cg = NULL;
        return 0;
}

static void incoming_done(struct incoming *in) {
        qmp_free(in->q);
        ledger_close(in->l);
        free(in->trusted);
        ppn_cgroup_free(in->cg);
        relocate_request_done(&in->req);
        ledger_vm_done(&in->entry);
        free(in->qmp_in);
        free(in->qmp);
        free(in->ctl);
        free(in->log);
}

/* A request whose destination is this node; others are none of its business. */
/* Whether the (not yet verified) request names this node: others' moves never touch the ledger. */
static bool for_us(const struct relocate_agent *a, const struct etcd_kv *kv) {
        json_object *env = json_tokener_parse((const char *) kv->value), *body = NULL;
        const char *text = env && json_object_is_type(env, json_type_object) ? json_member_string(env, "body") : NULL;
        const char *dest;
        bool ok = text && (body = json_tokener_parse(text)) && json_object_is_type(body, json_type_object) &&
                  (dest = json_member_string(body, "dest")) && strcmp(dest, a->id.id) == 0;
        json_object_put(body);
        json_object_put(env);
        return ok;
}

static int load_trusted(struct incoming *in, struct ppn_error *err) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        int r = ledger_open(in->a->ledger_path, &(struct ledger_options) {}, &in->l, err);
        if (r >= 0)
                r = ledger_load(in->l, &st, err);
        if (r >= 0)
                r = fleet_trusted_convert(st->trusted, st->n_trusted, &in->a->id, &in->trusted, &in->n_trusted);
        return r;
}

static void handle(struct relocate_agent *a, struct etcd *e, const char *move, const struct etcd_kv *kv) {
        _cleanup_(incoming_done) struct incoming in = { .a = a, .e = e };
        struct ppn_error err = {};
        json_object *body = NULL;
        if (kv->value_len > RELOCATE_BODY_MAX || !for_us(a, kv))
                return;
        int r = load_trusted(&in, &err);
        if (r >= 0)
                r = relocate_open((char *) kv->value, kv->value_len, NULL, in.trusted, in.n_trusted, "request", move,
                                  &body, &err);
        if (r >= 0)
                r = relocate_request_from_json(body, &in.req, &err);
        json_object_put(body);
        if (r < 0 || strcmp(in.req.dest, a->id.id) != 0) {
                log_warning("move %s: request ignored: %s", move, r < 0 ? err.msg : "names another node");
                return;
        }
        snprintf(in.req.move, sizeof(in.req.move), "%s", move);
        if (kv->version != 1)
                refuse(&in, "the request was rewritten in the fleet store");
        else {
                receive(&in);
                if (!in.keep_journal)
                        journal_remove(a);
        }
}

/* Whether this node's ledger holds the entry the move admitted (same name and uuid). */
static bool entry_admitted(struct incoming *in) {
        _cleanup_(ledger_state_freep) struct ledger_state *st = NULL;
        const struct ledger_vm *vm;
        return ledger_load(in->l, &st, NULL) >= 0 && (vm = ledger_state_find(st, in->entry.name)) &&
               strcmp(vm->uuid, in->entry.uuid) == 0;
}

/*
 * Settles the move the journal names, left by a ppnd that died while receiving it: the
 * outcome that stands (this node writes "aborted" create-only if there is none yet, so the
 * source resumes the VM) is carried out here. "adopted": the incoming QEMU gets the entry's
 * socket and runs on. "aborted": the incoming QEMU (found by its own socket, the pid from
 * SO_PEERCRED) is killed, its group removed, the entry removed and the lending given back.
 * 0 settled (or nothing to settle), <0 to be retried (etcd unreachable).
 */
static int recover(struct relocate_agent *a, struct etcd *e) {
        _cleanup_(incoming_done) struct incoming in = { .a = a, .e = e };
        _cleanup_free_ char *key = NULL;
        struct etcd_range rg = {};
        struct ppn_error err = {};
        struct qmp_error qe = {};
        json_object *body = NULL;
        enum relocate_outcome oc;
        char move[FLEET_GRANT_ID_LEN + 1];
        int r = journal_read(a, move);
        if (r <= 0)
                return r;
        if (!(key = relocate_key(move, "request")))
                return -ENOMEM;
        if ((r = load_trusted(&in, &err)) < 0 || (r = etcd_range(e, key, false, &rg, &err)) < 0) {
                log_warning("move %s: cannot settle the move this node was receiving yet: %s; retrying", move, err.msg);
                etcd_range_done(&rg);
                return r;
        }
        if (rg.n_kvs != 1 ||
            relocate_open((char *) rg.kvs[0].value, rg.kvs[0].value_len, NULL, in.trusted, in.n_trusted, "request",
                          move, &body, &err) < 0 ||
            relocate_request_from_json(body, &in.req, &err) < 0) {
                log_error("move %s: its request is %s: nothing here can be settled from it; check this node by hand "
                          "('ppnctl vm list', a QEMU with an .incoming.qmp socket in the runtime folder)", move,
                          rg.n_kvs != 1 ? "gone from the fleet store" : err.msg);
                json_object_put(body);
                etcd_range_done(&rg);
                journal_remove(a);
                return 0;
        }
        json_object_put(body);
        etcd_range_done(&rg);
        snprintf(in.req.move, sizeof(in.req.move), "%s", move);
        if (entry_from_request(&in) < 0)
                return -ENOMEM;
        in.admitted = entry_admitted(&in);
        r = read_outcome(&in, &oc);
        if (r == 0) {
                r = put_sealed(&in, "outcome", relocate_outcome_to_json(move, a->id.id, RELOCATE_ABORTED,
                                                                        "the destination's ppnd restarted during the move"),
                               true, &err);
                if (r == 0) {
                        oc = RELOCATE_ABORTED;
                        r = 1;
                } else if (r == -EEXIST)
                        r = read_outcome(&in, &oc);
        }
        if (r <= 0) {
                log_warning("move %s: the outcome cannot be %s yet: %s; retrying", move, r == 0 ? "read" : "written",
                            r == 0 ? "none after a failed create" : err.msg);
                return r < 0 ? r : -EAGAIN;
        }
        /* The incoming QEMU, if it still runs: its own socket says so (nothing else uses it). */
        if (vm_qmp_alive(in.qmp_in) == 1 && qmp_connect_sync(in.qmp_in, 5 * USEC_PER_SEC, &in.q, &qe) >= 0)
                qmp_peer_pid(in.q, &in.pid);
        if (oc == RELOCATE_ADOPTED) {
                if (in.q) {
                        if (rename(in.qmp_in, in.qmp) < 0)
                                log_error("move %s: cannot rename %s to %s: %m", move, in.qmp_in, in.qmp);
                        if (call(&in, "cont", NULL, NULL, &err) < 0)
                                log_error("move %s: '%s' did not resume: %s", move, in.entry.name, err.msg);
                        log_info("move %s: '%s' was adopted before ppnd restarted; it runs here now", move,
                                 in.entry.name);
                } else if (vm_qmp_alive(in.qmp) != 1)
                        log_error("move %s: '%s' was adopted here, but its QEMU is gone; its entry stays (start it "
                                  "with 'ppnctl start %s')", move, in.entry.name, in.entry.name);
                in.pid = 0;
        } else {
                struct ppn_cgroup_options co = { .root = a->cgroup_root, .parent = a->cgroup_parent };
                if (ppn_cgroup_open(&co, &in.cg, &err) < 0)
                        in.cg = NULL;
                kill_qemu(&in);
                release(&in);
                log_warning("move %s of '%s' from node %.12s settled after a restart: aborted; the incoming QEMU is "
                            "gone and this node's ledger is as before", move, in.entry.name, in.req.source);
        }
        journal_remove(a);
        return 0;
}

/* The move id of KEY if it is "/ppn/moves/ID/request". */
static bool request_key(const char *key, char move[FLEET_GRANT_ID_LEN + 1]) {
        const char *p = key + strlen(RELOCATE_PREFIX);
        if (strncmp(key, RELOCATE_PREFIX, strlen(RELOCATE_PREFIX)) != 0 || strlen(p) != FLEET_GRANT_ID_LEN + 8 ||
            strcmp(p + FLEET_GRANT_ID_LEN, "/request") != 0)
                return false;
        snprintf(move, FLEET_GRANT_ID_LEN + 1, "%.*s", FLEET_GRANT_ID_LEN, p);
        return fleet_id_valid(move) || strspn(move, "0123456789abcdef") == FLEET_GRANT_ID_LEN;
}

static bool answered(const struct etcd_range *rg, const char *move) {
        char k[128];
        snprintf(k, sizeof(k), RELOCATE_PREFIX "%s/answer", move);
        for (size_t i = 0; i < rg->n_kvs; i++)
                if (strcmp(rg->kvs[i].key, k) == 0)
                        return true;
        return false;
}

static void *run(void *userdata) {
        struct relocate_agent *a = userdata;
        _cleanup_etcd_ struct etcd *e = NULL;
        struct ppn_error err = {};
        if (etcd_new(&a->etcd, &e, &err) < 0) {
                log_error("live moves: %s", err.msg);
                return NULL;
        }
        while (!a->stop) {
                struct etcd_range rg = {};
                char move[FLEET_GRANT_ID_LEN + 1];
                /* A move left by an earlier run is settled before any other is received. */
                if (recover(a, e) < 0) {
                        for (uint64_t until = now_usec() + RECOVER_RETRY_USEC; !a->stop && now_usec() < until;)
                                usleep(RELOCATE_POLL_USEC);
                        continue;
                }
                if (etcd_range(e, RELOCATE_PREFIX, true, &rg, &err) >= 0)
                        for (size_t i = 0; i < rg.n_kvs && !a->stop; i++)
                                if (request_key(rg.kvs[i].key, move) && !answered(&rg, move) && !seen(a, move))
                                        handle(a, e, move, &rg.kvs[i]);
                etcd_range_done(&rg);
                usleep(RELOCATE_POLL_USEC);
        }
        return NULL;
}

static char *dup_or_null(const char *s) {
        return s ? strdup(s) : NULL;
}

int relocate_agent_from_config(const struct ppn_config *cfg, struct relocate_agent **ret, struct ppn_error *err) {
        _cleanup_free_ char *path = NULL;
        *ret = NULL;
        if (!cfg->fleet_enabled)
                return 0;
        struct relocate_agent *a = calloc(1, sizeof(*a));
        if (!a || !(path = fleet_identity_path(cfg->ledger_path))) {
                free(a);
                return ppn_error_set(err, -ENOMEM, "out of memory");
        }
        int r = fleet_identity_load(path, &a->id, err);
        a->endpoints = dup_or_null(cfg->fleet_endpoints);
        a->ca = dup_or_null(cfg->fleet_ca);
        a->cert = dup_or_null(cfg->fleet_cert);
        a->key = dup_or_null(cfg->fleet_key);
        a->etcd = (struct etcd_options) { .endpoints = a->endpoints, .ca = a->ca, .cert = a->cert, .key = a->key };
        a->ledger_path = dup_or_null(cfg->ledger_path);
        a->runtime_dir = dup_or_null(cfg->runtime_dir);
        a->log_dir = dup_or_null(cfg->log_dir);
        a->qemu = dup_or_null(cfg->qemu_binary);
        a->accel = dup_or_null(cfg->accel);
        a->cgroup_root = strcmp(cfg->cgroup_root, "auto") == 0 ? NULL : dup_or_null(cfg->cgroup_root);
        a->cgroup_parent = dup_or_null(cfg->cgroup_parent);
        a->address = dup_or_null(cfg->migration_address);
        a->journal = path_beside(cfg->ledger_path, JOURNAL_FILE);
        a->journal_dir = path_beside(cfg->ledger_path, ".");
        if (r >= 0 && (!a->journal || !a->journal_dir))
                r = ppn_error_set(err, -ENOMEM, "out of memory");
        a->port = (uint16_t) cfg->migration_port;
        a->ports = (uint16_t) (cfg->migration_ports < 65536 - cfg->migration_port ? cfg->migration_ports : 65536 - cfg->migration_port);
        a->timeout_usec = cfg->migration_timeout_usec;
        if (r >= 0 && (r = -pthread_create(&a->thread, NULL, run, a)) < 0)
                ppn_error_set(err, r, "cannot start the live-move thread: %s", strerror(-r));
        a->started = r >= 0;
        if (r < 0) {
                relocate_agent_free(a);
                return ppn_error_prefix(err, r, "[fleet] enabled");
        }
        log_info("live moves: receiving on %s, ports %u-%u", a->address, a->port, a->port + a->ports - 1);
        *ret = a;
        return 0;
}

struct relocate_agent *relocate_agent_free(struct relocate_agent *a) {
        if (!a)
                return NULL;
        a->stop = true;
        if (a->started)
                pthread_join(a->thread, NULL);
        explicit_bzero(&a->id, sizeof(a->id));
        free(a->endpoints);
        free(a->ca);
        free(a->cert);
        free(a->key);
        free(a->ledger_path);
        free(a->runtime_dir);
        free(a->log_dir);
        free(a->qemu);
        free(a->accel);
        free(a->cgroup_root);
        free(a->cgroup_parent);
        free(a->address);
        free(a->journal);
        free(a->journal_dir);
        free(a);
        return NULL;
}
