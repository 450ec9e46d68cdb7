#!/usr/bin/env bash
# ppnd and ppnctl as programs (no VMs): options, --check-config, the control socket's
# requests, SIGHUP reload, clean exit on SIGTERM. TAP output, one line per check.
set -u
B=${PPN_BUILD_ROOT:?}/src
FIX=${PPN_FIXTURES:?}/config
T=$(mktemp -d /tmp/test-ppnd-XXXXXX)
PID=
n=0 failed=0
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi; }
check() { local d=$1; shift; "$@" >/dev/null 2>&1; ok $? "$d"; }

cd "$FIX"
"$B/ppnd" --version | grep -q '^ppnd [0-9]'; ok $? "ppnd --version"
out=$("$B/ppnd" --check-config good-full.conf); ok $(( $? != 0 )) "--check-config on a good file exits 0"
[ "$out" = "good-full.conf: ok" ]; ok $? "--check-config says ok"
"$B/ppnd" --check-config bad-values.conf 2>"$T/err"; rc=$?
ok $(( rc != 1 )) "--check-config on a bad file exits 1"
diff -u bad-values.err "$T/err" >&2; ok $? "--check-config prints the golden problems"
"$B/ppnd" --no-such-option 2>/dev/null; ok $(( $? != 2 )) "unknown option is a usage error (2)"
"$B/ppnd" --help | grep -q -- '--check-config FILE'; ok $? "--help is generated from the option table"

S=$T/run/ppnd.sock
"$B/ppnctl" --socket "$S" status 2>"$T/err"; rc=$?
ok $(( rc != 1 )) "ppnctl status without a daemon exits 1"
grep -q "ppnd is not running (no daemon listening on $S)" "$T/err"; ok $? "and names the socket it tried"

cat >"$T/ppnd.conf" <<EOC
[daemon]
log-level = info
runtime-dir = $T/run
[ledger]
path = $T/ledger.db
[control]
socket = $S
idle-timeout = 1s
[controller]
tick = 200ms
EOC
# Started with a soft open-file limit of 256 (systemd gives services 1,024; ppnd holds three
# descriptors per VM): ppnd raises it to the hard limit.
(ulimit -Sn 256 && exec "$B/ppnd" --config "$T/ppnd.conf") 2>"$T/ppnd.log" &
PID=$!
for _ in $(seq 100); do [ -S "$S" ] && break; sleep 0.05; done
[ -S "$S" ]; ok $? "ppnd creates its control socket"
awk '/^Max open files/ { exit !($4 == $5 && $4 != 256) }' "/proc/$PID/limits"
ok $? "ppnd raises its soft open-file limit to the hard one" "$(grep 'open files' "/proc/$PID/limits")"
[ "$(stat -c %a "$S")" = 660 ]; ok $? "control socket mode is 0660"
"$B/ppnctl" --socket "$S" status >"$T/out" 2>&1; ok $? "ppnctl status exits 0"
head -1 "$T/out" | grep -q '^VM  *STATE  *MIN  *TARGET  *ACTUAL  *AVAIL  *WEIGHT  *REASON'; ok $? "status prints the table header"
PPN_SOCKET=$S "$B/ppnctl" status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert "vms" in d and "pool" in d and "free_bytes" in d["pool"]'
ok $? "status --json is JSON with vms and pool (PPN_SOCKET honoured)"
"$B/ppnctl" --socket "$S" events | grep -q 'start .*ppnd .* started'; ok $? "events lists the start"

"$B/ppnctl" --socket "$S" events --follow --json >"$T/follow" 2>&1 &
FPID=$!
sleep 0.5
kill -HUP "$PID"
for _ in $(seq 40); do grep -q '"kind":"config"' "$T/follow" && break; sleep 0.05; done
grep -q '"kind":"config"' "$T/follow"; ok $? "events --follow streams the SIGHUP reload as it happens"
kill "$FPID" 2>/dev/null; wait "$FPID" 2>/dev/null

# Settings read only at start: a reload that changes them must say a restart is needed (it once
# logged "reloaded" and silently kept the old values).
cp "$T/ppnd.conf" "$T/ppnd.conf.orig"
printf '[metrics]\nport = 9999\n' >>"$T/ppnd.conf"
sed -i 's/^idle-timeout = 1s$/idle-timeout = 1s\nmax-request = 8K/' "$T/ppnd.conf"
kill -HUP "$PID"
for _ in $(seq 40); do grep -q 'takes effect only after a restart' "$T/ppnd.log" && break; sleep 0.05; done
grep -q 'reload: control.max-request, metrics.port changed; it takes effect only after a restart' "$T/ppnd.log"; rc=$?
ok $rc "SIGHUP: [control] max-request and [metrics] port changes are named as needing a restart"
[ $rc = 0 ] || grep reload "$T/ppnd.log" >&2
cp "$T/ppnd.conf.orig" "$T/ppnd.conf"

# One control request's reply line (raw JSON), sent by hand.
ask() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()+b"\n"); print(s.makefile().readline().strip())' "$S" "$1"; }
ask '{"request":"events","follow":"no"}' | grep -q '"follow\\" must be true or false'
ok $? 'events: "follow":"no" is refused, naming the key'
ask '{"request":"events","follow":1}' | grep -q 'must be true or false'; ok $? 'events: "follow":1 is refused'
ask '{"request":"events","follow":false}' | grep -q '"last_seq"'; ok $? 'events: "follow":false is a boolean'
# status: the brief form's fields are checked as strictly (a mistyped one is named, not ignored).
ask '{"request":"status","brief":"yes"}' | grep -q '"brief\\" must be true or false'
ok $? 'status: "brief":"yes" is refused, naming the key'
ask '{"request":"status","brief":1}' | grep -q 'must be true or false'; ok $? 'status: "brief":1 is refused'
for w in 0 -3 7.5 '"80"' true; do
  ask '{"request":"status","brief":true,"reason_width":'"$w"'}' | grep -q '"reason_width\\" must be a whole number of columns'
  ok $? "status: \"reason_width\":$w is refused"
done
ask '{"request":"status","reason_width":78}' | grep -q 'for the brief form only'
ok $? 'status: "reason_width" without "brief" is refused'
ask '{"request":"status","brief":true,"reason_width":78}' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert set(d) == {"vms","pool"}'
ok $? 'status: "brief":true with "reason_width" is answered'

# 64 silent clients fill the table; the idle deadline (1 s here) frees it.
python3 -c 'import socket,sys,time
c=[socket.socket(socket.AF_UNIX) for _ in range(64)]
[s.connect(sys.argv[1]) for s in c]
open(sys.argv[2],"w").close(); time.sleep(3)' "$S" "$T/idle-up" &
IPID=$!
for _ in $(seq 40); do [ -e "$T/idle-up" ] && break; sleep 0.05; done
sleep 0.2
"$B/ppnctl" --socket "$S" status 2>"$T/err" >/dev/null; rc=$?
# Even when ppnd closes before ppnctl's request is out, ppnctl reads the refusal's own words.
[ $rc -ne 0 ] && grep -q "too many connections" "$T/err"; ok $? "64 idle clients fill the control table: ppnctl status is refused, saying why" "$(cat "$T/err")"
sleep 1.5
"$B/ppnctl" --socket "$S" status >/dev/null 2>"$T/err"; ok $? "after idle-timeout they are closed and ppnctl status works again"
kill "$IPID" 2>/dev/null; wait "$IPID" 2>/dev/null

echo "[daemon]
log-level = loud" >"$T/ppnd.conf.bad"
cp "$T/ppnd.conf" "$T/ppnd.conf.good"; cp "$T/ppnd.conf.bad" "$T/ppnd.conf"
kill -HUP "$PID"; sleep 0.5
kill -0 "$PID" 2>/dev/null; ok $? "a bad config on SIGHUP does not stop the daemon"
grep -q "ppnd.conf:2: log-level: 'loud' is not a log level" "$T/ppnd.log"; ok $? "and its problems are logged with line numbers"
"$B/ppnctl" --socket "$S" status >/dev/null; ok $? "the daemon still answers"

kill -TERM "$PID"
for _ in $(seq 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
wait "$PID"; rc=$?; PID=
ok $rc "SIGTERM: clean exit 0"
[ ! -e "$S" ]; ok $? "the control socket is removed on exit"
# [host]: the node's memory read from the files named, every tick (a node that is a slice of a
# larger machine, or a container's LXCFS view); MemTotal gives the physical default.
printf 'MemTotal:        2097152 kB\nMemFree:          524288 kB\nMemAvailable:     524288 kB\n' >"$T/meminfo"
printf 'some avg10=7.50 avg60=1.00 avg300=0.50 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n' >"$T/psi"
sed -e "s|^path = .*ledger.db|path = $T/host-ledger.db|" "$T/ppnd.conf.good" >"$T/host.conf"
printf '[host]\nmeminfo = %s\npressure = %s\n' "$T/meminfo" "$T/psi" >>"$T/host.conf"
"$B/ppnd" --config "$T/host.conf" 2>"$T/host.log" &
PID=$!
for _ in $(seq 100); do [ -S "$S" ] && "$B/ppnctl" --socket "$S" status >/dev/null 2>&1 && break; sleep 0.05; done
pool() { "$B/ppnctl" --socket "$S" status --json | python3 -c "import json,sys; print(json.load(sys.stdin)['pool'][sys.argv[1]])" "$1"; }
got=""; for _ in $(seq 40); do got=$(pool host_available_bytes); [ "$got" = 536870912 ] && break; sleep 0.05; done
[ "$got" = 536870912 ]; ok $? "[host] meminfo: host_available is the file's MemAvailable (got $got)"
[ "$(pool physical_bytes)" = 2147483648 ]; ok $? "[host] meminfo: the physical default is the file's MemTotal"
[ "$(pool psi_some_avg10)" = 7.5 ]; ok $? "[host] pressure: PSI some avg10 read from the file"
printf 'MemTotal:        2097152 kB\nMemFree:          262144 kB\nMemAvailable:     262144 kB\n' >"$T/meminfo.new"
mv "$T/meminfo.new" "$T/meminfo"
got=""; for _ in $(seq 40); do got=$(pool host_available_bytes); [ "$got" = 268435456 ] && break; sleep 0.05; done
[ "$got" = 268435456 ]; ok $? "[host] meminfo is re-read every tick (got $got)"
kill -TERM "$PID"; wait "$PID"; PID=
# sd_notify as systemd would see it (Type=notify, WatchdogSec): READY=1, STATUS=, WATCHDOG=1.
python3 - "$B/ppnd" "$T" <<'EOP' >"$T/notify" 2>&1
import os, socket, subprocess, sys, time
ppnd, t = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(t + "/notify.sock")
sock.settimeout(0.2)
env = dict(os.environ, NOTIFY_SOCKET=t + "/notify.sock", WATCHDOG_USEC="400000")
p = subprocess.Popen([ppnd, "--config", t + "/ppnd.conf.good"], env=env, stderr=subprocess.DEVNULL)
end = time.time() + 2.5
msgs = []
while time.time() < end:
    try:
        msgs.append(sock.recv(4096).decode())
    except socket.timeout:
        pass
p.terminate()
p.wait()
for m in msgs:
    print(m.replace("\n", " | "))
EOP
grep -q "READY=1" "$T/notify"; ok $? "READY=1 is sent to NOTIFY_SOCKET"
grep -q "STATUS=0 VMs, 0 running" "$T/notify"; ok $? "STATUS= says how many VMs run"
[ "$(grep -c WATCHDOG=1 "$T/notify")" -ge 3 ]; ok $? "WATCHDOG=1 at half the watchdog period"
echo "1..$n"
exit $failed
