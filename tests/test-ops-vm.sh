#!/usr/bin/env bash
# ppnd's metrics, history and plot with a real guest: one guest booted once (testvm), ppnd with
# metrics on a free localhost port, an operator override to make the controller act. The
# scrape passes promtool and agrees with `ppnctl status --json` taken around it; counters move;
# the plot of the recorded run is well-formed and its series match `ppnctl history --json`.
# Speaks TAP.
# usage: test-ops-vm.sh BUILD_ROOT
set -u
B=$1
PPNCTL=$B/src/ppnctl PPND=$B/src/ppnd TESTVM=$B/tests/guest/testvm
SRC=${PPN_SOURCE_ROOT:?}
T=$(mktemp -d /tmp/test-ops-vm.XXXXXX)
TESTVM_PID= TESTVM2_PID= PPND_PID=
cleanup() {
  [ -n "$PPND_PID" ] && kill -TERM "$PPND_PID" 2>/dev/null && wait "$PPND_PID" 2>/dev/null
  [ -n "$TESTVM_PID" ] && kill -TERM "$TESTVM_PID" 2>/dev/null && wait "$TESTVM_PID" 2>/dev/null
  [ -n "$TESTVM2_PID" ] && kill -TERM "$TESTVM2_PID" 2>/dev/null && wait "$TESTVM2_PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
bail() { not_ok "$@"; echo "1..$n"; exit 1; }
note() { echo "# $*"; }
export PPN_LEDGER=$T/ledger.db PPN_SOCKET=$T/ppnd.sock

# ---- a guest and a daemon ----
"$TESTVM" boot "$T/g1" --mem 512 >"$T/testvm.log" 2>&1 &
TESTVM_PID=$!
for _ in $(seq 240); do [ -f "$T/g1/ready" ] && break; kill -0 $TESTVM_PID 2>/dev/null || break; sleep 0.5; done
[ -f "$T/g1/ready" ] || bail "guest booted" "$(tail -5 "$T/testvm.log")"
QMP=$(sed -n 's/^qmp //p' "$T/g1/ready")
ok "guest booted ($(sed -n 's/^boot_ms //p' "$T/g1/ready") ms)"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$T/ppnd.conf" <<EOF
[daemon]
runtime-dir = $T
[ledger]
path = $PPN_LEDGER
[control]
socket = $PPN_SOCKET
[cgroup]
# No cgroup placement here (this test is about what ppnd reports): a root that is not one.
root = $T/no-cgroup
[controller]
tick = 500ms
override-default = 20s
[metrics]
enabled = yes
address = 127.0.0.1
port = $PORT
EOF
"$PPNCTL" node set physical=2G reserve=256M >/dev/null && "$PPNCTL" vm add g1 --min 256M --max 512M --qmp "$QMP" >/dev/null \
  || bail "ledger set up"
"$PPND" --config "$T/ppnd.conf" >"$T/ppnd.log" 2>&1 &
PPND_PID=$!

# Running, with a target, a balloon actual and guest statistics.
status_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["vms"][0].get(sys.argv[1]))' "$1"; }
for _ in $(seq 120); do
  s=$("$PPNCTL" --json status 2>/dev/null)
  [ "$(echo "$s" | status_field state 2>/dev/null)" = running ] && [ "$(echo "$s" | status_field guest_available_bytes)" != None ] \
    && [ "$(echo "$s" | status_field target_bytes)" != None ] && break
  sleep 0.5
done
[ "$(echo "$s" | status_field state 2>/dev/null)" = running ] || bail "ppnd adopted the guest" "$(tail -5 "$T/ppnd.log")"
ok "ppnd adopted the guest"
note "reason: $(echo "$s" | status_field reason)"

# ---- the status table: 80 columns (a long reason goes below its row), colour on a terminal ----
for args in status "--bytes status"; do
  "$PPNCTL" $args >"$T/table" 2>&1
  w=$(LC_ALL=C.UTF-8 wc -L <"$T/table")
  if [ "$w" -le 80 ] && head -1 "$T/table" | grep -q '^VM  *STATE  *MIN  *TARGET  *ACTUAL  *AVAIL  *WEIGHT  *REASON$' \
     && grep -q '^g1  *running ' "$T/table"; then
    ok "ppnctl $args: $w columns"
  else
    not_ok "ppnctl $args: a table within 80 columns" "$w columns" "$(cat "$T/table")"
  fi
done
if script -qec "stty cols 80; $PPNCTL status" /dev/null | grep -q $'\033\[32mrunning'; then ok "status: running in green on a terminal"; else not_ok "status colours the state on a terminal"; fi
if NO_COLOR=1 script -qec "stty cols 80; $PPNCTL status" /dev/null | grep -q $'\033'; then not_ok "status: NO_COLOR honoured"; else ok "status: NO_COLOR honoured"; fi

# ---- metrics against status ----
scrape() { curl -sf --max-time 10 "http://127.0.0.1:$PORT/metrics"; }
"$PPNCTL" --json status >"$T/before.json"
scrape >"$T/metrics.txt" || bail "scrape http://127.0.0.1:$PORT/metrics" "curl failed"
"$PPNCTL" --json status >"$T/after.json"
ok "scraped $(wc -l <"$T/metrics.txt") lines"
if out=$(promtool check metrics <"$T/metrics.txt" 2>&1); then ok "promtool check metrics: clean"; else not_ok "promtool check metrics" "$out"; fi
# Each metric equals the status value before or after the scrape (targets move between them).
if out=$(python3 - "$T/metrics.txt" "$T/before.json" "$T/after.json" <<'PY'
import json, re, sys
m = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    k, v = line.rsplit(" ", 1)
    m[k] = float(v)
st = [json.load(open(p)) for p in sys.argv[2:]]
pairs = [("ppn_node_physical_bytes", "physical_bytes"), ("ppn_node_reserve_bytes", "reserve_bytes"),
         ("ppn_node_reserved_min_bytes", "reserved_min_bytes"), ("ppn_node_pool_available_bytes", "pool_available_bytes"),
         ("ppn_node_committed_bytes", "committed_bytes"), ("ppn_node_free_bytes", "free_bytes"),
         ("ppn_node_host_available_bytes", "host_available_bytes"),
         ("ppn_node_vms", "vms"), ("ppn_node_vms_running", "vms_running")]
vm_pairs = [("min_bytes", "min_bytes"), ("max_bytes", "max_bytes"), ("target_bytes", "target_bytes"),
            ("actual_bytes", "actual_bytes"), ("guest_available_bytes", "guest_available_bytes"),
            ("cpu_weight", "cpu_weight")]
bad, checked = [], 0
for metric, field in pairs:
    want = {s["pool"][field] for s in st}
    if m.get(metric) not in want:
        bad.append(f"{metric} = {m.get(metric)}, status {sorted(want)}")
    checked += 1
for metric, field in vm_pairs:
    key = f'ppn_vm_{metric}{{vm="g1"}}'
    want = {s["vms"][0][field] for s in st}
    if m.get(key) not in want:
        bad.append(f"{key} = {m.get(key)}, status {sorted(want)}")
    checked += 1
psi = {None if s["pool"]["psi_some_avg10"] is None else round(s["pool"]["psi_some_avg10"] / 100, 4) for s in st}
if m.get("ppn_node_memory_pressure_some_avg10_ratio") not in psi:
    bad.append(f"psi ratio {m.get('ppn_node_memory_pressure_some_avg10_ratio')}, status {psi}")
if m.get('ppn_vm_state{vm="g1",state="running"}') != 1:
    bad.append("ppn_vm_state running != 1")
age = m.get('ppn_vm_stats_age_seconds{vm="g1"}')
ages = [s["vms"][0]["stats_age_usec"] / 1e6 for s in st]
if age is None or not (min(ages) - 1.5 <= age <= max(ages) + 1.5):
    bad.append(f"stats age {age} s, status {ages}")
if bad:
    print("; ".join(bad))
    sys.exit(1)
print(f"{checked + 3} values agree")
PY
); then ok "metrics agree with ppnctl status --json: $out"; else not_ok "metrics agree with ppnctl status --json" "$out"; fi

metric() { scrape | awk -v k="$1" '$1 == k { print $2 }'; }
c0=$(metric ppn_balloon_commands_total)
d0=$(scrape | awk '/^ppn_decisions_total/ { s += $2 } END { print s }')

# ---- an override lease: the controller acts, the counters and flags move ----
"$PPNCTL" balloon g1 320M --for 30s >/dev/null || not_ok "ppnctl balloon g1 320M"
for _ in $(seq 60); do
  [ "$(metric 'ppn_vm_actual_bytes{vm="g1"}')" = $((320 << 20)) ] && break
  sleep 0.5
done
a=$(metric 'ppn_vm_actual_bytes{vm="g1"}')
if [ "$a" = $((320 << 20)) ]; then ok "balloon actual 320M in the metrics"; else not_ok "balloon actual 320M in the metrics" "actual $a"; fi
if [ "$(metric 'ppn_vm_override_active{vm="g1"}')" = 1 ]; then ok "override active while leased"; else not_ok "override active while leased"; fi
c1=$(metric ppn_balloon_commands_total)
d1=$(scrape | awk '/^ppn_decisions_total/ { s += $2 } END { print s }')
if [ "${c1:-0}" -gt "${c0:-0}" ]; then ok "balloon commands counted ($c0 -> $c1)"; else not_ok "balloon commands counted" "$c0 -> $c1"; fi
if [ "${d1:-0}" -gt "${d0:-0}" ]; then ok "decisions counted ($d0 -> $d1)"; else not_ok "decisions counted" "$d0 -> $d1"; fi
"$PPNCTL" release g1 >/dev/null
sleep 3

# ---- history and plot of the recorded run ----
"$PPNCTL" history g1 --since 5m --json >"$T/history.json" || not_ok "ppnctl history g1 --json"
n_samples=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["vms"][0]["samples"]))' "$T/history.json")
n_events=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["vms"][0]["events"]))' "$T/history.json")
if [ "${n_samples:-0}" -ge 5 ] && [ "${n_events:-0}" -ge 2 ]; then ok "history: $n_samples samples, $n_events decisions"; else not_ok "history has samples and decisions" "$n_samples samples, $n_events decisions"; fi
if python3 - "$T/history.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["vms"][0]["samples"]
sys.exit(0 if any(x["actual_bytes"] == 320 << 20 for x in s) else 1)
PY
then ok "history recorded the leased size"; else not_ok "history recorded the leased size"; fi
out=$("$PPNCTL" history g1 --since 5m)
if echo "$out" | grep -q '^TIME ' && echo "$out" | grep -q '\* lease'; then ok "history table with decisions"; else not_ok "history table" "$(echo "$out" | head -5)"; fi
"$PPNCTL" plot g1 --since 5m -o "$T/live.svg" >/dev/null || not_ok "ppnctl plot (live)"
if xmllint --noout "$T/live.svg" 2>&1; then ok "live plot well-formed (xmllint)"; else not_ok "live plot well-formed"; fi
"$PPNCTL" plot --input "$T/history.json" -o "$T/recorded.svg" >/dev/null || not_ok "ppnctl plot --input"
if out=$(python3 "$SRC/tests/check-plot.py" "$T/recorded.svg" "$T/history.json" 2>&1); then
  ok "plot of the recorded run matches its history: $out"
else
  not_ok "plot of the recorded run matches its history" "$out"
fi

# ---- QMP errors by class, reconnects: a guest without a balloon device, restarted ----
boot_g2() {
  rm -f "$T/g2/ready"
  "$TESTVM" boot "$T/g2" --mem 256 --no-balloon >>"$T/testvm2.log" 2>&1 &
  TESTVM2_PID=$!
  for _ in $(seq 240); do [ -f "$T/g2/ready" ] && return 0; kill -0 $TESTVM2_PID 2>/dev/null || return 1; sleep 0.5; done
  return 1
}
# wait_metric KEY: until the metric exists and is above $2 (default 0), at most 60 s.
wait_metric() {
  local v
  for _ in $(seq 120); do
    v=$(metric "$1")
    [ -n "$v" ] && awk -v a="$v" -v b="${2:-0}" 'BEGIN { exit !(a > b) }' && { echo "$v"; return 0; }
    sleep 0.5
  done
  echo "${v:-absent}"
  return 1
}
boot_g2 || bail "second guest booted" "$(tail -5 "$T/testvm2.log")"
"$PPNCTL" vm add g2 --min 128M --max 256M --qmp "$(sed -n 's/^qmp //p' "$T/g2/ready")" >/dev/null || not_ok "vm add g2"
if v=$(wait_metric 'ppn_qmp_errors_total{class="DeviceNotActive"}'); then
  ok "QMP errors counted by class: DeviceNotActive $v"
else
  not_ok "QMP errors counted by class (DeviceNotActive)" "got $v" "$(scrape | grep qmp_errors)"
fi
r0=$(metric ppn_qmp_reconnects_total)
kill -TERM "$TESTVM2_PID"; wait "$TESTVM2_PID" 2>/dev/null
boot_g2 || bail "second guest booted again" "$(tail -5 "$T/testvm2.log")"
if v=$(wait_metric ppn_qmp_reconnects_total "$r0"); then ok "reconnect counted ($r0 -> $v)"; else not_ok "reconnect counted" "$r0 -> $v"; fi

echo "1..$n"
[ "$failed" -eq 0 ]
