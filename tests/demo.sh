#!/usr/bin/env bash
# ./run demo: three small real guests under QEMU, a temporary ledger and config, the real ppnd,
# and a short script of guest workloads. Shows the pool being rebalanced live, then a summary.
#
#   web    1024 MiB, min 256 MiB: its working set grows by 640 MiB, then shrinks again
#   batch  1024 MiB, min 256 MiB: idles with little use; its idle memory is reclaimed
#   tiny    768 MiB, min 384 MiB: sits near its minimum with a 300 MiB working set
#
# The node is configured small (physical 2560 MiB, reserve 256 MiB: 2304 MiB of capacity for
# 2816 MiB of maximums), so the controller must take memory from where it is idle to give it
# where it is needed. Every number printed comes from ppnd (ppnctl --json) or the guests.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${PPN_BUILD:-build}
TESTVM=$B/tests/guest/testvm
PPND=$B/src/ppnd
PPNCTL=$B/src/ppnctl
export PPN_GUEST_DIR=${PPN_GUEST_DIR:-$PWD/$B/guest}
for f in "$TESTVM" "$PPND" "$PPNCTL"; do
  [ -x "$f" ] || { echo "demo: $f is missing; run ./run demo (it builds first)" >&2; exit 1; }
done

D=$(mktemp -d /tmp/ppn-demo-XXXXXX)
export PPN_LEDGER=$D/ledger.db PPN_SOCKET=$D/ppnd.sock
GUESTS=(web batch tiny)
declare -A MEM=([web]=1024 [batch]=1024 [tiny]=768) MIN=([web]=256 [batch]=256 [tiny]=384)
PIDS=()
PPND_PID=

cleanup() {
  set +e
  [ -n "$PPND_PID" ] && kill "$PPND_PID" 2>/dev/null && wait "$PPND_PID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rmdir /sys/fs/cgroup/cpu/ppn-demo-$$/vm-* /sys/fs/cgroup/cpu/ppn-demo-$$ 2>/dev/null
  rmdir /sys/fs/cgroup/ppn-demo-$$/vm-* /sys/fs/cgroup/ppn-demo-$$ 2>/dev/null
  if [ -n "${PPN_DEMO_KEEP:-}" ]; then echo "demo: kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
[ -t 1 ] && [ -z "${NO_COLOR:-}" ] || say() { printf '\n== %s\n' "$*"; }
ctl() { "$PPNCTL" "$@"; }
gexec() { local g=$1; shift; "$TESTVM" exec "$D/$g" --timeout 120 "$@"; }
now_ms() { date +%s%3N; }

# json QUERY: evaluates a Python expression over `ppnctl --json status` (bound to s).
json() { ctl --json status | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
vmfield() { json "next(v for v in s['vms'] if v['name']=='$1')['$2']"; }

say "Booting three guests under QEMU (accelerator ${PPN_ACCEL:-tcg})"
for g in "${GUESTS[@]}"; do
  mkdir -p "$D/$g"
  "$TESTVM" boot "$D/$g" --mem "${MEM[$g]}" --deflate-on-oom --free-page-reporting \
    >"$D/$g.boot.log" 2>&1 &
  PIDS+=($!)
done
for g in "${GUESTS[@]}"; do
  for _ in $(seq 600); do [ -f "$D/$g/ready" ] && break; sleep 0.1; done
  [ -f "$D/$g/ready" ] || { echo "demo: guest $g did not boot:" >&2; tail "$D/$g.boot.log" >&2; exit 1; }
  echo "$g: $(grep boot_ms "$D/$g/ready" | cut -d' ' -f2) ms to boot, ${MEM[$g]} MiB"
done

say "Ledger: node capacity and one entry per VM"
ctl node set physical=2560M reserve=256M >/dev/null
for g in "${GUESTS[@]}"; do
  ctl vm add "$g" --min "${MIN[$g]}M" --max "${MEM[$g]}M" \
    --qmp "$(awk '$1=="qmp"{print $2}' "$D/$g/ready")" >/dev/null
done
ctl vm list
ctl pool

cat >"$D/ppnd.conf" <<EOF
[daemon]
runtime-dir = $D
[ledger]
path = $PPN_LEDGER
[control]
socket = $PPN_SOCKET
[cgroup]
parent = ppn-demo-$$
EOF
"$PPND" --config "$D/ppnd.conf" >"$D/ppnd.log" 2>&1 &
PPND_PID=$!
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done

# watch SECONDS [UNTIL-EXPR]: the status table every 2 s; stops early when the Python
# expression over the status JSON becomes true.
watch() {
  local end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    printf '\n[t+%3ss]\n' $(( ($(now_ms) - T0) / 1000 ))
    ctl status
    if [ -n "${2:-}" ] && [ "$(json "$2")" = True ]; then return 0; fi
    sleep 2
  done
}
T0=$(now_ms)

say "1. tiny holds 300 MiB near its minimum; the over-committed node is rebalanced"
gexec tiny guest-work hog ws 300 >/dev/null
watch 30 "sum(v['target_bytes'] or 0 for v in s['vms']) <= 2304*2**20 and all(v['reason'] in ('steady','small-change') for v in s['vms'])"
CAP=$((2304 * 1024 * 1024))
SUM_MAX=0; for g in "${GUESTS[@]}"; do SUM_MAX=$((SUM_MAX + MEM[$g])); done
RECLAIMED=$(json "sum(v['max_bytes']-(v['actual_bytes'] or v['max_bytes']) for v in s['vms'])//2**20")

say "2. web's working set grows by 640 MiB (64 MiB every ~1.5 s)"
# Reaction: from the first sample where web's guest-available memory fell under the policy's
# headroom (128 MiB: from then on it needs more than its target) to its target rising.
WEB_BEFORE=$(vmfield web target_bytes)
T_NEED= ; REACT=
web_sample() {
  local avail target
  read -r avail target < <(json "(lambda v: '%d %d' % ((v['guest_available_bytes'] or 0)//2**20, v['target_bytes']//2**20))(next(v for v in s['vms'] if v['name']=='web'))")
  [ -z "$T_NEED" ] && [ "$avail" -lt 128 ] && T_NEED=$(now_ms)
  if [ -z "$REACT" ] && [ "$target" -gt $((WEB_BEFORE / 1048576)) ]; then
    REACT=$(( $(now_ms) - ${T_NEED:-$(now_ms)} ))
  fi
  printf '  web: target %d MiB, guest available %d MiB\n' "$target" "$avail"
}
for i in $(seq 10); do
  gexec web guest-work hog ws$i 64 >/dev/null
  printf '  +%d MiB' $((i * 64)); web_sample
done
for _ in $(seq 40); do [ -n "$REACT" ] && break; sleep 0.25; web_sample >/dev/null; done
watch 6
WEB_PEAK=$(( $(vmfield web actual_bytes) / 1048576 ))

say "3. web frees its working set; batch starts to need memory, web's idle memory goes to it"
for i in $(seq 10); do gexec web guest-work free ws$i >/dev/null; done
WEB_HIGH=$(vmfield web target_bytes)
gexec batch guest-work hog ws 450 >/dev/null
# Until web has given memory up and batch no longer waits for any (at most 40 s).
watch 40 "(lambda w, b: w['target_bytes'] < $WEB_HIGH and b['reason'].split(':')[0] in ('steady', 'small-change'))(*[next(v for v in s['vms'] if v['name']==n) for n in ('web', 'batch')])"

say "Decisions (ppnctl events)"
ctl events | tail -25

PLOT=$B/demo-memory.svg
ctl plot --since "$(( ($(now_ms) - T0) / 1000 + 10 ))s" -o "$PLOT" >/dev/null && echo "memory over time: $PLOT (open it in a browser)"

say "Summary"
OOM=0
for g in "${GUESTS[@]}"; do
  if grep -qE 'Out of memory|Killed process' "$D/$g/console.log" 2>/dev/null; then
    echo "$g: OOM kill in the guest console"; OOM=1
  fi
done
BELOW=$(json "[v['name'] for v in s['vms'] if v['actual_bytes'] is not None and v['actual_bytes'] < v['min_bytes']]")
echo "memory reclaimed from idle guests while settling: ${RECLAIMED} MiB of ${SUM_MAX} MiB of maximums"
echo "web grew to ${WEB_PEAK} MiB; its target rose ${REACT:-(not seen)} ms after its available memory fell under the headroom"
echo "web after its working set shrank: $(( $(vmfield web actual_bytes) / 1048576 )) MiB; batch: $(( $(vmfield batch actual_bytes) / 1048576 )) MiB"
echo "capacity $((CAP / 1048576)) MiB; committed now: $(ctl --json pool | python3 -c 'import json,sys; print(json.load(sys.stdin)["committed_bytes"]//2**20)') MiB"
echo "guests below their minimum: ${BELOW}; OOM kills: $([ $OOM = 0 ] && echo none || echo yes)"
