#!/usr/bin/env bash
# Scale: ppnd managing N VMs whose QMP sockets are served by the fake QEMU (tests/fake-qemu.c,
# one process for all N; it stands in for QEMU because 2,000 guests cannot boot on this machine). For each N: CPU time per control tick, daemon
# RSS, open fds, time to adopt all VMs, and decision latency (burst start -> growth command,
# measured by the fake); the same CPU split into user and kernel time (/proc/PID/stat) and the
# fake's own CPU per VM and tick (it answers at once: real QEMU costs more); then, with ticks
# still running, `ppnctl status` timed STATUS_RUNS times (wall clock of the whole command, as
# the operator sees it; and the CPU it took in ppnd and in ppnctl). One JSON record per
# measurement, appended to OUT.
#
#   bench/scale.sh OUT.jsonl        env: SCALE_SIZES="10 100 1000 2000", SCALE_WINDOW=40 (s),
#                                        PPND, PPNCTL, FAKEQEMU (default: build/...),
#                                        SCALE_PERF=PREFIX: instead of measuring, profile ppnd
#                                        over the window (perf record, PREFIX-N.data),
#                                        SCALE_FAST_SIGNAL=no: ppnd without its fast signal
#                                        (to measure what the signal costs),
#                                        SCALE_SETTLED=DURATION: [controller]
#                                        settled-stats-interval (0: every VM's statistics
#                                        every round; unset: the daemon's default, so an older
#                                        daemon without the key still runs),
#                                        SCALE_BURST_EVERY=K: every Kth VM bursts (2; 0: none,
#                                        a calm node where only the guests' slow wave moves),
#                                        SCALE_BURST_TOUCH=SIZE: real memory written at each
#                                        burst's start (0: none), so that bursts make the host
#                                        allocate as real guests' do: by the bursting VM's own
#                                        process and held for the burst (40M, above the settled
#                                        rule's 32 MiB mark) with SCALE_PIDS=per-vm; by the
#                                        fake and released at once (8M) with SCALE_PIDS=shared,
#                                        SCALE_PIDS=per-vm|shared: whether each VM has a process
#                                        of its own (fake-qemu --pid-per-vm), whose resident set
#                                        ppnd reads as its QEMU's and which moves with that VM's
#                                        bursts alone (per-vm, the default), or every VM is the
#                                        one fake process (shared, as every run before 7 Dec
#                                        evening: every VM's RSS then moves with any burst),
#                                        SCALE_METRICS=yes: ppnd serves its metrics on
#                                        127.0.0.1:SCALE_METRICS_PORT, read at the window's
#                                        start and end for the fast signal's quiet and bounded
#                                        shares (off by default: at 2,000 VMs a scrape raises
#                                        ppnd's peak RSS),
#                                        SCALE_HOST=synthetic|real: the host ppnd sees (synthetic:
#                                        see below; real: this machine's /proc/meminfo, as every
#                                        run before 7 Dec evening had),
#                                        SCALE_SYSCALLS=yes: also count ppnd's system calls over
#                                        the window by kind (perf stat on the syscall tracepoints,
#                                        per VM and tick; counting costs ppnd a little CPU, so
#                                        its CPU figure is a little higher in such a run),
#                                        SCALE_FPR=yes: every fake balloon reports free pages
#                                        (fake-qemu --free-page-reporting), as `ppnctl start`
#                                        boots a VM, so ppnd's free page reporting rules apply
#                                        (and its round reads each QEMU's CPU time); no: none
#                                        does (the default, as every run before 8 Dec)
#
# The node is overcommitted on purpose (physical = N x 2.25 GiB + 1 GiB reserve, every VM
# 4 GiB max ballooned to 2 GiB, half the VMs bursting by 1.6 GiB for 10 s every 40 s), so
# ticks carry real decisions: growth under pressure and reclaim from idle VMs. The cgroup
# root is an empty directory: CPU placement fails (reported by ppnd, costs nothing per tick)
# instead of creating 2,000 groups on the host. The fake guests' memory is not real, so by
# default (SCALE_HOST=synthetic) the fake also stands in for the host's memory: it writes the
# node's meminfo (fake-qemu --meminfo; MemTotal the ledger's physical size, MemAvailable that
# less 1 GiB and every guest's balloon size) and ppnd reads it as [host] meminfo, with the
# default low mark. With SCALE_HOST=real ppnd reads this machine's /proc/meminfo, a few GiB
# whatever the node declares, so its host gate (growth a tick at most MemAvailable above the
# low mark) throttles the node all the time; the low mark is then the absolute 256 MiB only,
# as 5 % of a declared 4.5 TB node would be above this machine's MemAvailable.
set -euo pipefail
OUT=$1
cd "$(dirname "$0")/.."
PPND=${PPND:-build/src/ppnd}
PPNCTL=${PPNCTL:-build/src/ppnctl}
FAKEQEMU=${FAKEQEMU:-build/tests/fake-qemu}
SIZES=${SCALE_SIZES:-10 100 1000 2000}
WINDOW=${SCALE_WINDOW:-40}
STATUS_RUNS=${SCALE_STATUS_RUNS:-100}
PERF=${SCALE_PERF:-}
FAST_SIGNAL=${SCALE_FAST_SIGNAL:-yes}
SETTLED=${SCALE_SETTLED:-}
BURST_EVERY=${SCALE_BURST_EVERY:-2}
PIDS=${SCALE_PIDS:-per-vm}
case "$PIDS" in per-vm) BURST_TOUCH=${SCALE_BURST_TOUCH:-40M} ;; shared) BURST_TOUCH=${SCALE_BURST_TOUCH:-8M} ;;
  *) echo "scale: SCALE_PIDS is per-vm or shared, not '$PIDS'" >&2; exit 2 ;; esac
METRICS=${SCALE_METRICS:-no}
METRICS_PORT=${SCALE_METRICS_PORT:-$((20000 + $$ % 20000))}
HOST=${SCALE_HOST:-synthetic}
SYSCALLS=${SCALE_SYSCALLS:-no}
FPR=${SCALE_FPR:-no}
SYSCALL_KINDS="pread64 read recvmsg sendto sendmsg write writev epoll_wait"
case "$HOST" in synthetic|real) ;; *) echo "scale: SCALE_HOST is synthetic or real, not '$HOST'" >&2; exit 2 ;; esac
case "$FPR" in yes|no) ;; *) echo "scale: SCALE_FPR is yes or no, not '$FPR'" >&2; exit 2 ;; esac

say() { printf '==> %s\n' "$*" >&2; }
if [ ! -x "$FAKEQEMU" ]; then
  say "scale: no fake QEMU at $FAKEQEMU (it is built with the tests: meson -Dtests=true)"
  exit 1
fi
rec() { printf '{"part":"scale","vms":%d,"metric":"%s","value":%s,"unit":"%s"}\n' "$1" "$2" "$3" "$4" >>"$OUT"; }

DIR='' FAKE_PID='' PPND_PID=''
cleanup() {
  [ -n "$PPND_PID" ] && kill "$PPND_PID" 2>/dev/null && wait "$PPND_PID" 2>/dev/null || true
  [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null || true
  [ -n "$DIR" ] && rm -rf "$DIR"
  DIR='' FAKE_PID='' PPND_PID=''
}
trap cleanup EXIT

# CPU time on the CPU in ns (schedstat: exact, unlike the 10 ms ticks of /proc/PID/stat).
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }
# The fast signal's quiet and busy periods and, in busy periods, its QEMU reads and the VMs it
# left out as bounded so far, and those it deferred under its read cap ("QUIET BUSY READ BOUNDED
# DEFERRED"), from ppnd's metrics.
fast_counters() {
  python3 -c '
import re, sys, urllib.request
try:
    t = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode()
except OSError:
    print("0 0 0 0 0"); sys.exit(0)
def get(name, label, v):
    m = re.search(r"^%s\{%s=\"%s\"\} (\S+)$" % (name, label, v), t, re.M)
    return int(float(m.group(1))) if m else 0
print(get("ppn_fast_signal_periods_total", "host", "quiet"), get("ppn_fast_signal_periods_total", "host", "busy"),
      get("ppn_fast_signal_reads_total", "rss", "read"), get("ppn_fast_signal_reads_total", "rss", "bounded"),
      get("ppn_fast_signal_reads_total", "rss", "deferred"))' "$METRICS_PORT"
}
# utime and stime in clock ticks (for the user/kernel split only).
cpu_split() { awk '{print $14, $15}' "/proc/$1/stat"; }

# STATUS_RUNS runs of `ppnctl status`, 0.1 s apart; prints each one's wall time in ms, and
# appends ppnctl's own CPU time (user + system, ms) to DIR/status-cpu.ms.
status_times() {  # DIR
  local i t0 t1
  for ((i = 0; i < STATUS_RUNS; i++)); do
    t0=$(date +%s%N)
    /usr/bin/time -f '%U %S' -o "$1/time.out" "$PPNCTL" --socket "$1/run/ppnd.sock" status >/dev/null
    t1=$(date +%s%N)
    awk '{printf "%.0f\n", ($1 + $2) * 1000}' "$1/time.out" >>"$1/status-cpu.ms"
    echo $(((t1 - t0) / 1000))
    sleep 0.1
  done | awk '{printf "%.1f\n", $1 / 1000}'
}

ledger_json() {  # N DIR PHYSICAL_BYTES
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys, uuid
n, d, physical = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
G = 1 << 30
vms = [{'name': 'vm%04d' % i, 'uuid': str(uuid.UUID(int=i + 1, version=4)),
        'min_bytes': G // 2, 'max_bytes': 4 * G, 'shares': 1000, 'cpu_weight': 100, 'vcpus': 1,
        'qmp': '%s/qmp/vm%04d.sock' % (d, i), 'disks': [], 'qemu_args': [], 'override': None}
       for i in range(n)]
node = {'physical_bytes': physical, 'reserve_bytes': G, 'min_floor_bytes': None}
print(json.dumps({'schema': 1, 'node': node, 'vms': vms}))
EOF
}

write_config() {  # DIR
  local low='host-low-percent = 0' host=''
  if [ "$HOST" = synthetic ]; then low='' host="[host]
meminfo = $1/meminfo"; fi
  cat >"$1/ppnd.conf" <<EOF
[daemon]
log-level = warning
runtime-dir = $1/run
[ledger]
path = $1/ledger.db
[control]
socket = $1/run/ppnd.sock
[cgroup]
root = $1/no-cgroup
[policy]
$low
$host
[controller]
fast-signal = $FAST_SIGNAL
[metrics]
enabled = $METRICS
address = 127.0.0.1
port = $METRICS_PORT
EOF
  if [ -n "$SETTLED" ]; then echo "settled-stats-interval = $SETTLED" >>"$1/ppnd.conf"; fi
}

running_count() {  # DIR
  "$PPNCTL" --socket "$1/run/ppnd.sock" --json status 2>/dev/null |
    python3 -c 'import json,sys; print(sum(v.get("state") == "running" for v in json.load(sys.stdin)["vms"]))' \
    2>/dev/null || echo 0
}

wait_running() {  # N DIR -> seconds on stdout
  local n=$1 t0 now
  t0=$(date +%s.%N)
  while [ "$(running_count "$2")" -lt "$n" ]; do
    now=$(date +%s.%N)
    if awk -v a="$t0" -v b="$now" 'BEGIN{exit !(b - a > 180)}'; then
      say "scale: only $(running_count "$2") of $n VMs running after 180 s"; return 1
    fi
    sleep 0.5
  done
  now=$(date +%s.%N)
  awk -v a="$t0" -v b="$now" 'BEGIN{printf "%.2f", b - a}'
}

one_size() {
  local n=$1
  DIR=$(mktemp -d /tmp/ppn-scale.XXXXXX)
  mkdir -p "$DIR/qmp" "$DIR/run" "$DIR/no-cgroup"
  # The node: 2.25 GiB a VM and the 1 GiB reserve (the ledger's and, synthetic, the host's).
  local physical=$((n * 9 * 1024 * 1024 * 1024 / 4 + 1024 * 1024 * 1024)) fake_args=()
  if [ "$HOST" = synthetic ]; then fake_args=(--meminfo "$DIR/meminfo:$physical"); fi
  if [ "$PIDS" = per-vm ]; then fake_args+=(--pid-per-vm); fi
  if [ "$FPR" = yes ]; then fake_args+=(--free-page-reporting); fi
  "$FAKEQEMU" --dir "$DIR/qmp" --count "$n" --max 4G --init 2G --use-pct 30 --wave-pct 10 \
    --burst-every "$BURST_EVERY" --burst-pct 40 --burst-len 10 --burst-cycle 40 --burst-touch "$BURST_TOUCH" \
    "${fake_args[@]}" >"$DIR/fake.out" &
  FAKE_PID=$!
  until grep -q '^ready' "$DIR/fake.out" 2>/dev/null; do sleep 0.1; done
  ledger_json "$n" "$DIR" "$physical" >"$DIR/ledger.json"
  "$PPNCTL" --ledger "$DIR/ledger.db" ledger import "$DIR/ledger.json" >/dev/null
  write_config "$DIR"
  "$PPND" --config "$DIR/ppnd.conf" 2>"$DIR/ppnd.log" &
  PPND_PID=$!
  local adopt
  adopt=$(wait_running "$n" "$DIR")
  sleep 5
  local c0 c1 f0 f1 s0 s1 load
  if [ -n "$PERF" ]; then
    # A profile, not a measurement: perf's own sampling costs ppnd time.
    perf record -q -F 1000 --call-graph dwarf,8192 -p "$PPND_PID" -o "$PERF-$n.data" -- sleep "$WINDOW" >/dev/null 2>&1
    kill "$PPND_PID"; wait "$PPND_PID" 2>/dev/null || true; PPND_PID=''
    kill "$FAKE_PID"; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=''
    rm -rf "$DIR"; DIR=''
    return 0
  fi
  local p0='0 0 0 0 0' p1='0 0 0 0 0'
  if [ "$METRICS" = yes ]; then p0=$(fast_counters); fi
  c0=$(cpu_ns "$PPND_PID") f0=$(cpu_ns "$FAKE_PID") s0=$(cpu_split "$PPND_PID")
  if [ "$SYSCALLS" = yes ]; then
    local ev='' k
    for k in $SYSCALL_KINDS; do ev+="${ev:+,}syscalls:sys_enter_$k"; done
    perf stat -x, -e "$ev" -p "$PPND_PID" -o "$DIR/syscalls.csv" -- sleep "$WINDOW" >/dev/null 2>&1
  else
    sleep "$WINDOW"
  fi
  c1=$(cpu_ns "$PPND_PID") f1=$(cpu_ns "$FAKE_PID") s1=$(cpu_split "$PPND_PID")
  if [ "$METRICS" = yes ]; then p1=$(fast_counters); fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  local c2 c3 t2 t3
  c2=$(cpu_ns "$PPND_PID") t2=$(date +%s%N)
  status_times "$DIR" >"$DIR/status.ms"
  c3=$(cpu_ns "$PPND_PID") t3=$(date +%s%N)
  local rss hwm fds
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PPND_PID/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$PPND_PID/status")
  fds=$(ls "/proc/$PPND_PID/fd" | wc -l)
  kill "$PPND_PID"; wait "$PPND_PID" 2>/dev/null || true; PPND_PID=''
  kill "$FAKE_PID"; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=''
  rec "$n" adopt_all "$adopt" s
  # The tick is 1 s (ppnd's default): CPU per tick = CPU seconds per wall second.
  rec "$n" cpu_per_tick "$(awk -v d=$((c1 - c0)) -v w="$WINDOW" 'BEGIN{printf "%.3f", d / 1e6 / w}')" ms
  rec "$n" cpu_per_vm_tick "$(awk -v d=$((c1 - c0)) -v w="$WINDOW" -v n="$n" 'BEGIN{printf "%.2f", d / 1e3 / w / n}')" us
  rec "$n" fake_cpu_per_vm_tick "$(awk -v d=$((f1 - f0)) -v w="$WINDOW" -v n="$n" 'BEGIN{printf "%.2f", d / 1e3 / w / n}')" us
  rec "$n" kernel_share "$(echo "$s0 $s1" | awk '{u = $3 - $1; k = $4 - $2; printf "%.0f", u + k ? 100 * k / (u + k) : 0}')" '%'
  rec "$n" loadavg "$load" load
  # Share of the window's fast-signal periods in which the host was quiet (no QEMU read).
  if [ "$METRICS" = yes ]; then
    rec "$n" fast_quiet_share "$(echo "$p0 $p1" | awk '{q = $6 - $1; b = $7 - $2; printf "%.1f", q + b ? 100 * q / (q + b) : 0}')" '%'
    # In busy periods, the share of the VMs the fast signal would have read that it left out
    # (fastgrow_bounded_out()); 0 for a daemon without the counter.
    rec "$n" fast_bounded_share "$(echo "$p0 $p1" | awk '{r = $8 - $3; b = $9 - $4; printf "%.1f", r + b ? 100 * b / (r + b) : 0}')" '%'
    # The timer's reads of QEMU's resident set, and the VMs its read cap left for later, per VM
    # and tick.
    rec "$n" fast_reads "$(echo "$p0 $p1" | awk -v w="$WINDOW" -v n="$n" '{printf "%.3f", ($8 - $3) / w / n}')" per_vm_tick
    rec "$n" fast_deferred "$(echo "$p0 $p1" | awk -v w="$WINDOW" -v n="$n" '{printf "%.3f", ($10 - $5) / w / n}')" per_vm_tick
  fi
  if [ "$SYSCALLS" = yes ]; then
    # One record per kind: calls per VM and tick over the window.
    local kind count
    while IFS=, read -r count _ kind _; do
      case "$kind" in syscalls:sys_enter_*) ;; *) continue ;; esac
      rec "$n" "syscalls_${kind#syscalls:sys_enter_}" "$(awk -v c="$count" -v w="$WINDOW" -v n="$n" 'BEGIN{printf "%.3f", c / w / n}')" per_vm_tick
    done <"$DIR/syscalls.csv"
  fi
  rec "$n" rss "$(awk -v k="$rss" 'BEGIN{printf "%.1f", k / 1024}')" MiB
  rec "$n" rss_peak "$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k / 1024}')" MiB
  sort -n "$DIR/status.ms" | awk -v n="$n" '{v[NR] = $1} END {
    i50 = int((NR - 1) * 0.50) + 1; i99 = int((NR - 1) * 0.99) + 1
    printf "{\"part\":\"scale\",\"vms\":%d,\"metric\":\"status_p50\",\"value\":%s,\"unit\":\"ms\"}\n", n, v[i50]
    printf "{\"part\":\"scale\",\"vms\":%d,\"metric\":\"status_p99\",\"value\":%s,\"unit\":\"ms\"}\n", n, v[i99]
    printf "{\"part\":\"scale\",\"vms\":%d,\"metric\":\"status_max\",\"value\":%s,\"unit\":\"ms\"}\n", n, v[NR]
  }' >>"$OUT"
  rec "$n" fds "$fds" count
  # ppnd's CPU per status request: its CPU over the status runs less its ticks' (the window's
  # rate over the same time), per run. ppnctl's own CPU per run, median.
  rec "$n" status_ppnd_cpu "$(awk -v a=$((c3 - c2)) -v t=$((t3 - t2)) -v d=$((c1 - c0)) -v w="$WINDOW" -v r="$STATUS_RUNS" \
    'BEGIN{printf "%.1f", (a - d / (w * 1e9) * t) / 1e6 / r}')" ms
  rec "$n" status_ppnctl_cpu "$(sort -n "$DIR/status-cpu.ms" | awk '{v[NR] = $1} END {print v[int((NR - 1) / 2) + 1]}')" ms
  tail -1 "$DIR/fake.out" | python3 -c '
import json, sys
n = int(sys.argv[1])
d = json.loads(sys.stdin.read())
lat = sorted(d["latency_ms"])
def rec(m, v, u):
    print(json.dumps({"part": "scale", "vms": n, "metric": m, "value": v, "unit": u}))
rec("latency_samples", len(lat), "count")
if lat:
    rec("latency_median", lat[len(lat) // 2], "ms")
    rec("latency_p95", lat[min(len(lat) - 1, int(len(lat) * 0.95))], "ms")
    rec("latency_max", lat[-1], "ms")
rec("balloon_cmds", d["served"].get("balloon", 0), "count")
rec("query_balloon_cmds", d["served"].get("query-balloon", 0), "count")
rec("stats_cmds", d["served"].get("qom-get", 0), "count")
rec("balloon_events", d["served"].get("event BALLOON_CHANGE", 0), "count")
' "$n" >>"$OUT"
  rm -rf "$DIR"; DIR=''
}

: >"$OUT"
for n in $SIZES; do
  say "scale: $n VMs (window ${WINDOW}s)"
  one_size "$n"
done
