/* SPDX-License-Identifier: Apache-2.0 */
/* The fleet's pure parts: identity files, capacity records and the publish rule, grant and
 * revocation signatures and every verdict, and lent capacity in the pool. Table-driven. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "fleet.h"
#include "pool.h"

static char dir[] = "/tmp/test-fleet.XXXXXX";

static int setup(void **state) {
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        return system(cmd);
}

static void make_identity(const char *name, struct fleet_identity *ret) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        assert_int_equal(fleet_identity_create(path, ret, NULL), 0);
}

static void test_identity_file(void **state) {
        struct fleet_identity a, b;
        struct ppn_error err = {};
        struct stat st;
        char path[128];

        snprintf(path, sizeof(path), "%s/id-file", dir);
        assert_int_equal(fleet_identity_create(path, &a, NULL), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(fleet_identity_create(path, &b, &err), -EEXIST);  /* never overwritten */
        assert_int_equal(fleet_identity_load(path, &b, NULL), 0);
        assert_memory_equal(a.pub, b.pub, FLEET_KEY_SIZE);
        assert_string_equal(a.id, b.id);
        assert_int_equal(strlen(a.fingerprint), FLEET_FPR_LEN);
        assert_memory_equal(a.fingerprint, a.id, FLEET_ID_LEN);      /* the id is the fingerprint's start */
        assert_true(fleet_id_valid(a.id));
        chmod(path, 0644);
        assert_int_equal(fleet_identity_load(path, &b, &err), -EPERM);
        assert_non_null(strstr(err.msg, "chmod 600"));
        /* A file of the wrong form. */
        snprintf(path, sizeof(path), "%s/junk", dir);
        FILE *f = fopen(path, "w");
        fputs("ppn-node-key-v1 zz\n", f);
        fclose(f);
        chmod(path, 0600);
        assert_int_equal(fleet_identity_load(path, &b, &err), -EINVAL);
}

static void test_identity_path(void **state) {
        char *p = fleet_identity_path("/var/lib/ppn/ledger.db");
        assert_string_equal(p, "/var/lib/ppn/node.key");
        free(p);
        p = fleet_identity_path("ledger.db");
        assert_string_equal(p, "node.key");
        free(p);
}

static const struct fleet_capacity sample = {
        .node = "0123456789abcdef0123456789abcdef", .physical_bytes = 16 * GIB, .reserve_bytes = GIB,
        .reserved_min_bytes = 4 * GIB, .lent_bytes = 2 * GIB, .pool_available_bytes = 9 * (int64_t) GIB,
        .committed_bytes = 8 * GIB, .free_bytes = 7 * (int64_t) GIB, .psi_some_avg10 = 1.5, .n_vms = 3,
        .seq = 7, .time_usec = 1700000000000000,
};

static void test_capacity_roundtrip(void **state) {
        struct fleet_capacity c = {};
        char *text = fleet_capacity_encode(&sample);

        assert_non_null(text);
        assert_int_equal(fleet_capacity_decode(text, strlen(text), &c, NULL), 0);
        assert_memory_equal(&c, &sample, sizeof(c));
        free(text);
}

/* Records from etcd are hostile: each of these is refused, naming the field. */
static void test_capacity_hostile(void **state) {
        static const struct { const char *text, *why; } cases[] = {
                { "", "not one JSON object" },
                { "[1,2]", "not one JSON object" },
                { "{} trailing", "not one JSON object" },
                { "{\"node\":\"x\"}", "'node'" },
                { "{\"node\":\"0123456789abcdef0123456789abcdeg\"}", "'node'" },
                { "{\"node\":\"0123456789abcdef0123456789abcdef\",\"physical_bytes\":-1}", "'physical_bytes'" },
                { "{\"node\":\"0123456789abcdef0123456789abcdef\",\"physical_bytes\":\"1\"}", "'physical_bytes'" },
                { "{\"node\":\"0123456789abcdef0123456789abcdef\",\"physical_bytes\":9223372036854775807}",
                  "'physical_bytes'" },
                { "{\"node\":\"0123456789abcdef0123456789abcdef\",\"physical_bytes\":1,\"reserve_bytes\":1,"
                  "\"reserved_min_bytes\":0,\"lent_bytes\":0,\"pool_available_bytes\":0,\"committed_bytes\":0,"
                  "\"free_bytes\":0,\"psi_some_avg10\":101,\"vms\":0,\"seq\":1,\"time_usec\":1}", "percentage" },
                { "{\"node\":\"0123456789abcdef0123456789abcdef\",\"physical_bytes\":1,\"reserve_bytes\":1,"
                  "\"reserved_min_bytes\":0,\"lent_bytes\":0,\"pool_available_bytes\":0,\"committed_bytes\":0,"
                  "\"free_bytes\":0,\"psi_some_avg10\":null,\"vms\":true,\"seq\":1,\"time_usec\":1}", "'vms'" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct ppn_error err = {};
                struct fleet_capacity c;
                int r = fleet_capacity_decode(cases[i].text, strlen(cases[i].text), &c, &err);
                if (r != -EINVAL || !strstr(err.msg, cases[i].why))
                        fail_msg("case %zu: r=%d msg '%s', want '%s'", i, r, err.msg, cases[i].why);
        }
        char big[70000];
        memset(big, ' ', sizeof(big));
        struct fleet_capacity c;
        assert_int_equal(fleet_capacity_decode(big, sizeof(big), &c, NULL), -EINVAL);
}

static void test_publish_rule(void **state) {
        const struct fleet_publish_rule rule = { .threshold_bytes = 64 * MIB, .psi_points = 5,
                                                 .republish_usec = 60000000 };
        struct fleet_capacity moved = sample, small = sample, vms = sample, psi = sample;
        char buf[128];

        moved.pool_available_bytes -= 65 * (int64_t) MIB;
        small.free_bytes -= 64 * (int64_t) MIB;         /* exactly the threshold: not more than it */
        vms.n_vms = 4;
        psi.psi_some_avg10 = 7;
        const struct { const struct fleet_capacity *last, *now; uint64_t last_usec, now_usec; const char *want; } cases[] = {
                { NULL, &sample, 0, 1, "first record" },
                { &sample, &sample, 0, 1000000, NULL },
                { &sample, &moved, 0, 1000000, "pool_available moved by 65 MiB" },
                { &sample, &small, 0, 1000000, NULL },
                { &sample, &vms, 0, 1000000, "VM count 3 -> 4" },
                { &sample, &psi, 0, 1000000, "host PSI moved" },
                { &sample, &sample, 0, 59999999, NULL },
                { &sample, &sample, 0, 60000000, "60 s since the last write" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *got = fleet_should_publish(cases[i].last, cases[i].last_usec, cases[i].now,
                                                       cases[i].now_usec, &rule, buf, sizeof(buf));
                if (!cases[i].want ? got != NULL : !got || strcmp(got, cases[i].want) != 0)
                        fail_msg("case %zu: got '%s', want '%s'", i, got ? got : "(hold)",
                                 cases[i].want ? cases[i].want : "(hold)");
        }
}

/* ---- grants ---- */

static struct fleet_identity lender, borrower, other, stranger;

static void identities(void) {
        static bool made;
        if (made)
                return;
        make_identity("lender", &lender);
        make_identity("borrower", &borrower);
        make_identity("other", &other);
        make_identity("stranger", &stranger);
        made = true;
}

static struct fleet_grant grant_of(const struct fleet_identity *from, const struct fleet_identity *to) {
        struct fleet_grant g = { .id = "00112233445566778899aabbccddeeff", .bytes = GIB, .not_before = 1000,
                                 .expires = 2000, .nonce = "ffeeddccbbaa99887766554433221100", .fence = 3 };
        memcpy(g.lender, from->id, sizeof(g.lender));
        memcpy(g.borrower, to->id, sizeof(g.borrower));
        assert_int_equal(fleet_grant_sign(&g, from), 0);
        return g;
}

static struct fleet_revocation revocation_of(const struct fleet_grant *g, const struct fleet_identity *by) {
        struct fleet_revocation v = { .time = 1500 };
        memcpy(v.grant, g->id, sizeof(v.grant));
        memcpy(v.lender, by->id, sizeof(v.lender));
        assert_int_equal(fleet_revocation_sign(&v, by), 0);
        return v;
}

static void test_grant_verdicts(void **state) {
        identities();
        struct fleet_trusted trusted[3];
        const struct fleet_identity *ids[] = { &borrower, &lender, &other };
        for (size_t i = 0; i < 3; i++) {
                memcpy(trusted[i].id, ids[i]->id, sizeof(trusted[i].id));
                memcpy(trusted[i].pub, ids[i]->pub, FLEET_KEY_SIZE);
        }
        struct fleet_grant good = grant_of(&lender, &borrower), tampered = good, wrong_key = grant_of(&stranger, &borrower),
                           as_lender = wrong_key, untrusted_to = grant_of(&lender, &stranger), to_other = grant_of(&lender, &other);
        tampered.bytes = 2 * GIB;
        memcpy(as_lender.lender, lender.id, sizeof(as_lender.lender));  /* claims the lender, signed by another */
        struct fleet_revocation real = revocation_of(&good, &lender), forged = revocation_of(&good, &other);
        memcpy(forged.lender, lender.id, sizeof(forged.lender));          /* claims the lender's name */
        struct fleet_revocation by_other = revocation_of(&good, &other);  /* signed by a trusted non-lender */

        const struct {
                const struct fleet_grant *g; const char *key_id; int64_t version; int64_t now;
                const struct fleet_revocation *rev; enum fleet_verdict want; const char *reason;
        } cases[] = {
                { &good, good.id, 1, 1500, NULL, FLEET_VALID, "honoured here until 2000 (500 s)" },
                { &good, good.id, 1, 999, NULL, FLEET_NOT_YET_VALID, "valid from 1000, 1 s from now" },
                { &good, good.id, 1, 2000, NULL, FLEET_EXPIRED, "expired at 2000, 0 s ago by this node's clock" },
                { &good, good.id, 2, 1500, NULL, FLEET_REWRITTEN, "rewritten in etcd (version 2)" },
                { &good, "ffffffffffffffffffffffffffffffff", 1, 1500, NULL, FLEET_REWRITTEN, "does not match its etcd key" },
                { &tampered, good.id, 1, 1500, NULL, FLEET_BAD_SIGNATURE, "forged or altered" },
                { &as_lender, as_lender.id, 1, 1500, NULL, FLEET_BAD_SIGNATURE, "forged or altered" },
                { &wrong_key, wrong_key.id, 1, 1500, NULL, FLEET_UNTRUSTED_LENDER, "is not a trusted node here" },
                { &untrusted_to, untrusted_to.id, 1, 1500, NULL, FLEET_UNTRUSTED_BORROWER, "borrower" },
                { &to_other, to_other.id, 1, 1500, NULL, FLEET_VALID_ELSEWHERE, "names node" },
                { &good, good.id, 1, 1500, &real, FLEET_REVOKED, "revoked by its lender" },
                { &good, good.id, 1, 1500, &forged, FLEET_VALID, "honoured" },      /* a forged revocation is ignored */
                { &good, good.id, 1, 1500, &by_other, FLEET_VALID, "honoured" },    /* only the lender revokes */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct fleet_view view = { .self = borrower.id, .trusted = trusted, .n_trusted = 3,
                                           .revocations = cases[i].rev, .n_revocations = cases[i].rev ? 1 : 0,
                                           .now = cases[i].now };
                struct fleet_check chk;
                fleet_grant_check(cases[i].g, cases[i].key_id, cases[i].version, &view, &chk);
                if (chk.verdict != cases[i].want || !strstr(chk.reason, cases[i].reason))
                        fail_msg("case %zu: %s '%s', want %s '%s'", i, fleet_verdict_to_string(chk.verdict), chk.reason,
                                 fleet_verdict_to_string(cases[i].want), cases[i].reason);
        }
}

static void test_grant_encoding(void **state) {
        identities();
        struct fleet_grant g = grant_of(&lender, &borrower), back;
        struct fleet_revocation v = revocation_of(&g, &lender), vback;
        struct ppn_error err = {};
        char *text = fleet_grant_encode(&g), *vtext = fleet_revocation_encode(&v);

        assert_int_equal(fleet_grant_decode(text, strlen(text), &back, NULL), 0);
        assert_memory_equal(&g, &back, sizeof(g));
        assert_int_equal(fleet_revocation_decode(vtext, strlen(vtext), &vback, NULL), 0);
        assert_memory_equal(&v, &vback, sizeof(v));
        free(text);
        free(vtext);
        static const struct { const char *text, *why; } bad[] = {
                { "{\"id\":\"00112233445566778899aabbccddeeff\"}", "'lender'" },
                { "{\"id\":\"00112233445566778899aabbccddeeff\",\"lender\":\"0123456789abcdef0123456789abcdef\","
                  "\"borrower\":\"0123456789abcdef0123456789abcdef\",\"bytes\":0,\"not_before\":1,\"expires\":2,"
                  "\"nonce\":\"00112233445566778899aabbccddeeff\",\"fence\":1,\"signature\":\"00\"}", "'signature'" },
                { "{\"id\":\"00112233445566778899aabbccddeeff\",\"lender\":\"0123456789abcdef0123456789abcdef\","
                  "\"borrower\":\"0123456789abcdef0123456789abcdef\",\"bytes\":5,\"not_before\":3,\"expires\":2,"
                  "\"nonce\":\"00112233445566778899aabbccddeeff\",\"fence\":1,\"signature\":\"" 
                  "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                  "\"}", "validity window" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                err = (struct ppn_error) {};
                if (fleet_grant_decode(bad[i].text, strlen(bad[i].text), &back, &err) != -EINVAL ||
                    !strstr(err.msg, bad[i].why))
                        fail_msg("bad case %zu: '%s', want '%s'", i, err.msg, bad[i].why);
        }
}

static void test_pool_lent(void **state) {
        struct pool_node before = { 8 * GIB, GIB, 0 }, after = { 8 * GIB, GIB, 6 * GIB };
        struct pool_vm vms[] = { { .name = "web", .min_bytes = 2 * GIB, .max_bytes = 4 * GIB } };
        struct pool_figures f;
        struct ppn_error err = {};

        pool_compute(&after, vms, 1, &f);
        assert_int_equal(f.lent_bytes, 6 * GIB);
        assert_int_equal(f.pool_available_bytes, -(int64_t) GIB);
        assert_int_equal(f.committed_bytes, 10 * GIB);         /* lent, and web at its max */
        assert_int_equal(pool_admit(&before, vms, 1, &after, vms, 1, "lending 6G", &err), -ENOSPC);
        assert_non_null(strstr(err.msg, "refused: lending 6G needs 6144 MiB but the pool has 5120 MiB"));
        after.lent_bytes = 5 * GIB;
        assert_int_equal(pool_admit(&before, vms, 1, &after, vms, 1, "lending 5G", NULL), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_identity_file),
                cmocka_unit_test(test_identity_path),
                cmocka_unit_test(test_capacity_roundtrip),
                cmocka_unit_test(test_capacity_hostile),
                cmocka_unit_test(test_publish_rule),
                cmocka_unit_test(test_grant_verdicts),
                cmocka_unit_test(test_grant_encoding),
                cmocka_unit_test(test_pool_lent),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
