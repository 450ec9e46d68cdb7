/* SPDX-License-Identifier: Apache-2.0 */
/* ppnd: the per-node pool daemon. Wiring only. */
#include <stdio.h>
#include <string.h>

#include "log.h"

int main(int argc, char **argv) {
        log_set_ident("ppnd");
        if (argc > 1 && strcmp(argv[1], "--version") == 0) {
                printf("ppnd %s\n", PPN_VERSION);
                return 0;
        }
        log_error("the balloon controller is not built yet; nothing to run");
        return 1;
}
