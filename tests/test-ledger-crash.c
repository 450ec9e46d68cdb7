/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Crash safety: a writer process streams transactions into the ledger and is SIGKILLed at a
 * random moment, 60 times (plus 12 times while it is still creating the file). After each kill
 * the ledger must open, pass PRAGMA integrity_check, and show every transaction whole: each
 * one writes shares = cpu-weight = N together with their two audit rows, and adds or removes
 * VM 'b' (six audit rows) on every 7th N. A mix would show as shares ≠ cpu-weight, unequal
 * audit counts, or 'b' present without its audit rows.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "ledger.h"

static char dir[64], path[128];

static int setup(void **state) {
        strcpy(dir, "/tmp/test-ledger-crash.XXXXXX");
        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/ledger.db", dir);
        return 0;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static void add(struct ledger *l, const char *name, uint64_t min) {
        struct ledger_vm vm;
        ledger_vm_init(&vm);
        snprintf(vm.name, sizeof(vm.name), "%s", name);
        vm.min_bytes = vm.max_bytes = min;
        vm.shares = vm.cpu_weight = 1;   /* the pair starts equal */
        ledger_vm_add(l, &vm, 0, NULL, NULL);
}

/* The writer: never returns; killed by the parent. Writes a byte to `ready` once the
 * stream of updates begins, so the kill lands inside the stream however loaded the machine. */
static _Noreturn void writer(bool create, int ready) {
        struct ledger *l;
        struct ledger_vm vm;
        const char *node[] = { "physical=8G", "reserve=1G" };

        if (ledger_open(path, NULL, &l, NULL) < 0)
                _exit(3);
        if (create) {
                ledger_node_set(l, node, 2, 0, NULL);
                add(l, "a", GIB);
        }
        if (ledger_vm_get(l, "a", &vm, NULL) < 0)
                _exit(4);
        if (ready >= 0 && write(ready, "x", 1) != 1)
                _exit(6);
        for (uint32_t n = vm.shares % 10000 + 1;; n = n % 10000 + 1) {
                char s[32], w[32];
                snprintf(s, sizeof(s), "shares=%u", n);
                snprintf(w, sizeof(w), "cpu-weight=%u", n);
                const char *pairs[] = { s, w };
                if (ledger_vm_set(l, "a", pairs, 2, 0, NULL) < 0)
                        _exit(5);
                if (n % 7 == 0 && ledger_vm_remove(l, "b", 0, NULL) == -ENOENT)
                        add(l, "b", 256 * MIB);
        }
}

static size_t count_audit(struct ledger_audit *a, size_t n, const char *vm, const char *field) {
        size_t c = 0;
        for (size_t i = 0; i < n; i++)
                c += a[i].vm && strcmp(a[i].vm, vm) == 0 && strcmp(a[i].field, field) == 0;
        return c;
}

/* Checks the invariants; returns the current N (0 if 'a' does not exist yet). */
static uint32_t check(void) {
        struct ledger *l = NULL;
        struct ledger_state *st = NULL;
        struct ledger_audit *a = NULL;
        struct ppn_error e = {};
        size_t n = 0;
        uint32_t cur = 0;

        if (ledger_open(path, NULL, &l, &e) < 0)
                fail_msg("ledger does not open after SIGKILL: %s", e.msg);
        if (ledger_integrity_check(l, &e) < 0 || ledger_load(l, &st, &e) < 0 || ledger_history(l, NULL, &a, &n, &e) < 0)
                fail_msg("after SIGKILL: %s", e.msg);
        const struct ledger_vm *va = ledger_state_find(st, "a"), *vb = ledger_state_find(st, "b");
        if (va) {
                assert_int_equal(va->shares, va->cpu_weight);
                assert_int_equal(count_audit(a, n, "a", "uuid"), 1);
                cur = va->shares;
        }
        /* every committed set wrote both audit rows; the add wrote one of each too */
        assert_int_equal(count_audit(a, n, "a", "shares"), count_audit(a, n, "a", "cpu-weight"));
        /* b: adds and removes alternate; each wrote a uuid row (new on add, old on remove) */
        size_t b_rows = count_audit(a, n, "b", "uuid");
        assert_int_equal(b_rows % 2 == 1, vb != NULL);
        assert_int_equal(count_audit(a, n, "b", "min"), b_rows);
        assert_int_equal(count_audit(a, n, "b", "vcpus"), b_rows);
        ledger_audit_free(a, n);
        ledger_state_free(st);
        ledger_close(l);
        return cur;
}

/* Forks the writer and SIGKILLs it max_us at most after it starts (create) or after its
 * stream of updates begins (!create). */
static void kill_after(bool create, unsigned max_us) {
        int p[2] = { -1, -1 };
        char c;
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                writer(create, create ? -1 : p[1]);
        }
        close(p[1]);
        if (!create && read(p[0], &c, 1) != 1)
                fail_msg("writer died before its stream of updates");
        close(p[0]);
        struct timespec ts = { 0, (long) (rand() % (int) max_us) * 1000L };
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
                fail_msg("writer exited by itself with status %d", WEXITSTATUS(status));
}

static void test_kill_during_creation(void **state) {
        for (int rep = 0; rep < 12; rep++) {
                char cmd[600];
                snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s-wal' '%s-shm' '%s-journal'", path, path, path, path);
                assert_int_equal(system(cmd), 0);
                kill_after(true, 1000 + 2000 * (unsigned) rep);   /* 1–23 ms: open, migrate, first writes */
                check();
        }
}

static void test_kill_during_updates(void **state) {
        struct ledger *l;
        struct ppn_error e = {};
        const char *node[] = { "physical=8G", "reserve=1G" };
        uint32_t prev = 0, last = 0;
        unsigned grew = 0;

        assert_int_equal(ledger_open(path, NULL, &l, &e), 0);
        assert_int_equal(ledger_node_set(l, node, 2, 0, &e), 0);
        add(l, "a", GIB);
        ledger_close(l);
        prev = check();
        for (int rep = 0; rep < 60; rep++) {
                kill_after(false, 50000);   /* 0–50 ms into the stream */
                last = check();
                grew += last != prev;
                prev = last;
        }
        /* The test means something only if the writer got transactions in before most kills. */
        printf("# %u of 60 kills landed after at least one commit; last N %u\n", grew, last);
        assert_true(grew >= 15);
}

int main(void) {
        unsigned seed = (unsigned) time(NULL);
        printf("# seed %u\n", seed);
        srand(seed);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_kill_during_creation, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kill_during_updates, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
