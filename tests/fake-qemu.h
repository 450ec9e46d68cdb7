/* SPDX-License-Identifier: Apache-2.0 */
#pragma once
/*
 * The project's one fake QEMU (tests/qmp-peer.c stays for byte-by-byte protocol cases): QMP
 * monitors on Unix sockets, any number of them in one process and one epoll set, each in front
 * of a fake guest. It stands in for QEMU where the real one cannot be used: thousands of VMs
 * on a 2-core machine (the scale benchmark), a monitor that misbehaves on demand (stalls,
 * stops mid-line, floods events), guest statistics that lie or are set by the test, a balloon
 * whose driver never moves. It is not a QEMU model beyond what a QMP client sees.
 *
 * Every message it writes is taken from the transcripts recorded from QEMU 7.2
 * (the .qmp files of tests/fixtures/qmp, compiled in by meson): the greeting verbatim, each reply and the
 * BALLOON_CHANGE event with the guest's current values put in, error replies with the names
 * the request used. It serves qmp_capabilities (required first), query-status, query-balloon,
 * balloon (0 refused, above RAM capped, as QEMU does), qom-list /machine/peripheral,
 * query-memory-devices (none), qom-set/qom-get guest-stats-polling-interval and qom-get
 * guest-stats (every statistic unknown until polling is enabled, as in QEMU); anything else
 * gets CommandNotFound. Without a balloon device it answers as QEMU without one does
 * (DeviceNotActive, DeviceNotFound). Like QEMU's monitor it serves one client at a time
 * (the next waits in the backlog) and sends BALLOON_CHANGE to it, at most once a second,
 * while the balloon moves.
 */
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

struct fake_qemu;
struct fake_qemu_vm;

/* How the monitor behaves. */
enum fake_qemu_monitor {
        FAKE_QEMU_MONITOR_GOOD,         /* QEMU's replies */
        FAKE_QEMU_MONITOR_SILENT,       /* accepts the connection, never writes a byte */
        FAKE_QEMU_MONITOR_HALF,         /* writes the first half of its greeting, then nothing */
        FAKE_QEMU_MONITOR_STALL,        /* answers a connection's first `answer` commands, then none */
        FAKE_QEMU_MONITOR_FLOOD,        /* good, and writes BALLOON_CHANGE and unknown events as
                                         * fast as the socket takes them, from the first byte */
};

/* How the guest's balloon driver follows a target. */
enum fake_qemu_balloon {
        FAKE_QEMU_BALLOON_MOVING,       /* 0.5 GiB/s inflating, 2 GiB/s deflating (TCG, measured) */
        FAKE_QEMU_BALLOON_INSTANT,      /* at once */
        FAKE_QEMU_BALLOON_HELD,         /* never: only fake_qemu_vm_set_actual() moves it */
};

/* What the guest's statistics say once polling is enabled. */
enum fake_qemu_stats {
        FAKE_QEMU_STATS_WORKLOAD,       /* a scripted workload (struct fake_qemu_workload) */
        FAKE_QEMU_STATS_AVAILABLE,      /* `available` bytes free and available, nothing else */
        FAKE_QEMU_STATS_FLIP,           /* pressure (16 MiB available) and idle (all but 64 MiB)
                                         * alternating every second */
        FAKE_QEMU_STATS_HOSTILE,        /* lies: huge, zero, flapping every second, pressure
                                         * forever; each for `hostile_period` s in turn */
        FAKE_QEMU_STATS_PINNED,         /* the values of fake_qemu_vm_set_stats(), as they are */
};

/* The guest uses use(t) = max · use% · (1 + wave% · sin(2π t / period + phase)), plus burst%
 * of max for burst_len s out of every burst_cycle s (phase-shifted) if it bursts; available =
 * actual − use, free = 70 % of that, total = actual; swap-in and major faults grow while the
 * use does not fit. */
struct fake_qemu_workload {
        double use_pct, wave_pct, period, burst_pct, burst_len, burst_cycle;
};

struct fake_qemu_guest {
        uint64_t max;                   /* RAM, bytes */
        uint64_t init;                  /* the balloon's actual at start (0: max) */
        bool no_balloon;                /* no virtio-balloon device */
        bool free_page_reporting;       /* the balloon's free-page-reporting property */
        enum fake_qemu_monitor monitor;
        unsigned answer;                /* FAKE_QEMU_MONITOR_STALL */
        enum fake_qemu_balloon balloon;
        enum fake_qemu_stats stats;
        uint64_t available;             /* FAKE_QEMU_STATS_AVAILABLE */
        uint64_t free;                  /* FAKE_QEMU_STATS_AVAILABLE: stat-free-memory where below available,
                                         * the rest page cache (stat-disk-caches); 0: all of it free */
        double hostile_period;          /* FAKE_QEMU_STATS_HOSTILE, s */
        bool flip_odd;                  /* FAKE_QEMU_STATS_FLIP: pressure in odd seconds, not even */
        struct fake_qemu_workload workload;     /* FAKE_QEMU_STATS_WORKLOAD */
        double phase;                   /* of the workload's wave and bursts, radians */
        bool bursts;                    /* the workload bursts */
        double outside_at;              /* > 0: this many s after start the balloon is set to */
        uint64_t outside_size;          /* outside_size as by another monitor client */
        const char *log;                /* appends "connect", "target BYTES", "outside BYTES",
                                         * "stats" (guest-stats read), "hangup", "events N"
                                         * (written so far), or NULL */
};

/* The statistics as QEMU names them (UINT64_MAX: unknown), and last-update (s). */
struct fake_qemu_stat_values {
        uint64_t swap_in, swap_out, major_faults, minor_faults, free, available, total, disk_caches,
                htlb_pgalloc, htlb_pgfail;
        uint64_t last_update;
};

/* What a test may look at. */
struct fake_qemu_vm_state {
        uint64_t actual;                /* the balloon now */
        uint64_t requested;             /* the value of the last balloon command, 0 before one */
        unsigned poll_interval;         /* guest-stats-polling-interval, s (0: off) */
        unsigned connects;
        unsigned query_balloon, stats_read, balloon_set;        /* commands answered */
};

int fake_qemu_new(struct fake_qemu **ret);
/* Closes every connection and removes every socket. */
void fake_qemu_free(struct fake_qemu *f);

/* A QEMU starts: its monitor listens on path (an old socket there is replaced). */
int fake_qemu_add(struct fake_qemu *f, const char *path, const struct fake_qemu_guest *g,
                  struct fake_qemu_vm **ret);
/* That QEMU exits: its connection and its socket go. */
void fake_qemu_remove(struct fake_qemu_vm *vm);

/* The epoll fd to wait on (readable when there is work), and the work: at most timeout_ms
 * of waiting (0: none, -1: until something happens). Returns < 0 on error. */
int fake_qemu_fd(const struct fake_qemu *f);
int fake_qemu_dispatch(struct fake_qemu *f, int timeout_ms);

const struct fake_qemu_vm_state *fake_qemu_vm_state(struct fake_qemu_vm *vm);
/* The balloon is at actual now, without an event (the guest has not reported it yet). */
void fake_qemu_vm_set_actual(struct fake_qemu_vm *vm, uint64_t actual);
/* The balloon is at actual now and the guest reports it: BALLOON_CHANGE goes out at once. */
void fake_qemu_vm_balloon_change(struct fake_qemu_vm *vm, uint64_t actual);
/* FAKE_QEMU_STATS_PINNED: what qom-get guest-stats answers once polling is on. */
void fake_qemu_vm_set_stats(struct fake_qemu_vm *vm, const struct fake_qemu_stat_values *s);

/* A non-blocking socket listening on path (whatever was there removed first): its fd, or
 * -errno. fake_qemu_add() listens with it; another process may, and hand the fd over. */
int fake_qemu_listen(const char *path);

/* As fake_qemu_add(), on a socket another process bound to path and listens on (fd, taken over
 * and closed on failure): a client's SO_PEERCRED then reads that process's pid, as its QEMU's. */
int fake_qemu_add_listening(struct fake_qemu *f, const char *path, const struct fake_qemu_guest *g, int fd,
                            struct fake_qemu_vm **ret);

/* The workload's burst schedule for a guest: when (s on CLOCK_MONOTONIC) the burst in progress
 * ends (*ret_in true) or the next one begins; -1 if the guest does not burst. */
double fake_qemu_burst_next(const struct fake_qemu_guest *g, double now, bool *ret_in);

/* How many VMs' workload bursts began in (since, now], times in s on CLOCK_MONOTONIC. */
unsigned fake_qemu_burst_onsets(const struct fake_qemu *f, double since, double now);
/* What the host would back for all the fake's guests now: each VM's balloon size, as for a guest
 * without free page reporting that has touched all the memory its balloon leaves it. */
uint64_t fake_qemu_backed(const struct fake_qemu *f);

/* Every command answered and event sent, by name ("balloon", ..., "event BALLOON_CHANGE"). */
json_object *fake_qemu_served(const struct fake_qemu *f);
/* For each workload burst that began after the client enabled statistics (+2 s): ms from its
 * start to the first balloon command that raised that VM's target. */
const double *fake_qemu_latencies(const struct fake_qemu *f, size_t *n);
