/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * CPU spinners for the cgroup tests: child processes that burn CPU until killed, optionally
 * pinned to one CPU so that two of them contend and the scheduler's weights decide who runs.
 * Header-only so the static guest test binary can use it without the test library.
 */

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Forks a child that spins forever, pinned to cpu (or unpinned if cpu < 0). -errno on failure. */
static inline pid_t spinner_start(int cpu) {
        pid_t pid = fork();

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                volatile unsigned long n = 0;
                if (cpu >= 0) {
                        cpu_set_t set;
                        CPU_ZERO(&set);
                        CPU_SET(cpu, &set);
                        if (sched_setaffinity(0, sizeof(set), &set) < 0)
                                _exit(1);
                }
                for (;;)
                        n++;
        }
        return pid;
}

/* Kills and reaps a child; a no-op for pid <= 0. */
static inline void spinner_stop(pid_t pid) {
        if (pid <= 0)
                return;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
}

/* The highest CPU this process may run on, or -1. */
static inline int spinner_pick_cpu(void) {
        cpu_set_t set;

        if (sched_getaffinity(0, sizeof(set), &set) < 0)
                return -1;
        for (int c = CPU_SETSIZE - 1; c >= 0; c--)
                if (CPU_ISSET(c, &set))
                        return c;
        return -1;
}

/* CPU time a process has used, in ns: /proc/PID/schedstat (ns resolution), else utime+stime
 * from /proc/PID/stat (clock ticks). -1 if the process is gone. */
static inline long long proc_cpu_ns(const char *proc, pid_t pid) {
        char path[128], buf[1024];
        unsigned long long ns, ut, st;
        FILE *f;

        snprintf(path, sizeof(path), "%s/%d/schedstat", proc, (int) pid);
        f = fopen(path, "re");
        if (f) {
                int n = fscanf(f, "%llu", &ns);
                fclose(f);
                if (n == 1)
                        return (long long) ns;
        }
        snprintf(path, sizeof(path), "%s/%d/stat", proc, (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        if (!fgets(buf, sizeof(buf), f)) {
                fclose(f);
                return -1;
        }
        fclose(f);
        /* Fields after the ")" of comm: state is field 3, utime 14, stime 15. */
        char *p = strrchr(buf, ')');
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                         &ut, &st) != 2)
                return -1;
        return (long long) ((ut + st) * (1000000000ULL / (unsigned long long) sysconf(_SC_CLK_TCK)));
}
