/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helper: writes out a grant as an attacker or a broken lender could, for test-fleet.py.
 * It stands in for what no honest ppnctl produces (an expired grant, a grant signed by a key
 * other than its lender's): the verifiers under test are the real ppnd and ppnctl.
 *
 *   fleet-forge SIGNING_KEY_FILE LENDER BORROWER BYTES NOT_BEFORE EXPIRES
 *
 * The grant is signed with SIGNING_KEY_FILE's key as if that node were the lender, then LENDER
 * is put in its place (so a LENDER other than the key's own node makes a bad signature; "-"
 * keeps the key's own).
 * Prints the grant's JSON; its id is random.
 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "fleet.h"

static void random_hex(char *ret) {
        uint8_t b[FLEET_GRANT_ID_LEN / 2];
        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                abort();
        fleet_hex(b, sizeof(b), ret);
}

int main(int argc, char **argv) {
        struct fleet_identity id;
        struct fleet_grant g = { .fence = 99 };
        struct ppn_error err = {};
        char *text;

        if (argc != 7) {
                fprintf(stderr, "usage: fleet-forge KEY LENDER BORROWER BYTES NOT_BEFORE EXPIRES\n");
                return 2;
        }
        if (fleet_identity_load(argv[1], &id, &err) < 0) {
                fprintf(stderr, "fleet-forge: %s\n", err.msg);
                return 1;
        }
        random_hex(g.id);
        random_hex(g.nonce);
        snprintf(g.lender, sizeof(g.lender), "%s", id.id);
        snprintf(g.borrower, sizeof(g.borrower), "%s", argv[3]);
        g.bytes = strtoull(argv[4], NULL, 10);
        g.not_before = strtoll(argv[5], NULL, 10);
        g.expires = strtoll(argv[6], NULL, 10);
        if (fleet_grant_sign(&g, &id) < 0)
                return 1;
        if (strcmp(argv[2], "-") != 0)
                snprintf(g.lender, sizeof(g.lender), "%s", argv[2]);
        text = fleet_grant_encode(&g);
        if (!text)
                return 1;
        printf("%s\n", text);
        free(text);
        return 0;
}
