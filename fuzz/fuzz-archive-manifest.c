/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: an archive's manifest.json as 'ppnctl import' reads it (distinct from
 * fuzz-ledger-import, which takes a whole ledger document). Whoever writes an archive also
 * writes its manifest and checksums, so every byte of it is hostile.
 *
 * Each input is written to DIR/manifest.json in a private folder on tmpfs and read back with
 * archive_manifest_read(), the function import calls; an accepted manifest's "vm" object then
 * goes through ledger_vm_from_json(), as import turns it into a ledger entry.
 *
 * Invariants checked on every input besides ASan/LSan/UBSan:
 *   - a refusal is -EBADMSG / -EINVAL / -E2BIG / -ENOENT with words, never a crash;
 *   - an accepted manifest has a name and uuid, and every disk a valid, unique file name, a
 *     known format and a 64-digit lowercase sha256;
 *   - it survives a round trip: to_json, then from_json, accepts and gives the same JSON.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "archive.h"
#include "ledger-entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "check failed: %s\n", #x); abort(); } } while (0)

static char dir[] = "/dev/shm/ppn-fuzz-manifest.XXXXXX";
static char path[96];

static void cleanup(void) {
        unlink(path);
        rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        CHECK(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/%s", dir, ARCHIVE_MANIFEST);
        atexit(cleanup);
        return 0;
}

static void write_input(const uint8_t *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        CHECK(write(fd, data, size) == (ssize_t) size);
        CHECK(close(fd) == 0);
}

static bool hex64(const char *s) {
        if (strlen(s) != ARCHIVE_SHA256_HEX)
                return false;
        for (; *s; s++)
                if (!strchr("0123456789abcdef", *s))
                        return false;
        return true;
}

static void check_accepted(const struct archive_manifest *m) {
        CHECK(m->name && m->name[0] && m->uuid && m->uuid[0]);
        for (size_t i = 0; i < m->n_disks; i++) {
                const struct archive_disk *d = &m->disks[i];
                CHECK(archive_file_name_valid(d->file));
                CHECK(strcmp(d->format, "raw") == 0 || strcmp(d->format, "qcow2") == 0);
                CHECK(hex64(d->sha256));
                for (size_t k = 0; k < i; k++)
                        CHECK(strcmp(m->disks[k].file, d->file) != 0);
        }
}

static void check_round_trip(const struct archive_manifest *m) {
        struct archive_manifest again = { 0 };
        struct ppn_error err = { 0 };
        json_object *o = archive_manifest_to_json(m), *o2;

        CHECK(o);
        if (archive_manifest_from_json(o, &again, &err) != 0) {
                fprintf(stderr, "round trip refused: %s\n", err.msg);
                abort();
        }
        o2 = archive_manifest_to_json(&again);
        CHECK(o2);
        CHECK(strcmp(json_object_to_json_string(o), json_object_to_json_string(o2)) == 0);
        json_object_put(o);
        json_object_put(o2);
        archive_manifest_done(&again);
}

/* What import does next with the manifest's entry: a refusal has words; an entry has a name. */
static void check_entry(const struct archive_manifest *m) {
        struct ppn_error err = { 0 };
        struct ledger_vm vm;
        int r;

        ledger_vm_init(&vm);
        r = ledger_vm_from_json(m->vm, &vm, &err);
        CHECK(r == 0 ? vm.name[0] != '\0' : (r < 0 && err.msg[0]));
        ledger_vm_done(&vm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct archive_manifest m = { 0 };
        struct ppn_error err = { 0 };
        int r;

        write_input(data, size);
        r = archive_manifest_read(dir, &m, &err);
        if (r < 0) {
                if (!(r == -EBADMSG || r == -EINVAL || r == -E2BIG || r == -EFBIG || r == -ENOENT) || !err.msg[0])
                        fprintf(stderr, "unexpected %d: %s\n", r, err.msg);
                CHECK((r == -EBADMSG || r == -EINVAL || r == -E2BIG || r == -EFBIG || r == -ENOENT) && err.msg[0]);
                return 0;
        }
        check_accepted(&m);
        check_round_trip(&m);
        check_entry(&m);
        archive_manifest_done(&m);
        return 0;
}
