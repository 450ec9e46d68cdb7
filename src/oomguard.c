/* SPDX-License-Identifier: Apache-2.0 */
#include "oomguard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

static int read_value(int fd, int *ret) {
        char buf[16] = "";
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        char *end;
        long v;

        if (n <= 0)
                return n < 0 ? -errno : -EBADMSG;
        errno = 0;
        v = strtol(buf, &end, 10);
        if (errno || end == buf || (*end && *end != '\n') || v < -1000 || v > 1000)
                return -EBADMSG;
        *ret = (int) v;
        return 0;
}

/* CAP_SYS_RESOURCE in the effective set (capget(2); libcap is not needed for one bit). */
static bool have_sys_resource(void) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};

        return syscall(SYS_capget, &h, d) == 0 && (d[CAP_TO_INDEX(CAP_SYS_RESOURCE)].effective &
                                                   CAP_TO_MASK(CAP_SYS_RESOURCE));
}

/* Why the kernel said EACCES, from what this process really is. */
static const char *refusal_why(void) {
        if (have_sys_resource())
                return " (refused although ppnd has CAP_SYS_RESOURCE: a user namespace that does not own "
                       "this process? ppnd stays as likely an OOM victim as any process)";
        if (geteuid() == 0)
                return " (ppnd runs as root, but CAP_SYS_RESOURCE is not in its effective capabilities: the "
                       "container or the service's capability bounding set removed it; ppnd stays as likely "
                       "an OOM victim as any process)";
        return " (ppnd is not root and lacks CAP_SYS_RESOURCE; ppnd stays as likely an OOM victim as any "
               "process)";
}

int oomguard_apply(const char *path, int value, int *ret_value, struct ppn_error *err) {
        _cleanup_close_ int fd = -1;
        char text[16];
        int cur = 0, len, r;

        if (value < -1000 || value > 1000)
                return ppn_error_set(err, -EINVAL, "oom_score_adj %d is outside -1000..1000", value);
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return ppn_error_set(err, -errno, "cannot open %s: %m", path);
        r = read_value(fd, &cur);
        if (r < 0)
                return ppn_error_set(err, r, "cannot read %s: %s", path, strerror(-r));
        if (cur <= value) {
                if (ret_value)
                        *ret_value = cur;
                return 0;
        }
        len = snprintf(text, sizeof(text), "%d\n", value);
        if (pwrite(fd, text, (size_t) len, 0) != len) {
                int e = errno;
                return ppn_error_set(err, -e, "cannot lower %s from %d to %d: %s%s", path, cur, value, strerror(e),
                                     e == EACCES ? refusal_why() : "");
        }
        if (ret_value)
                *ret_value = value;
        return 0;
}
