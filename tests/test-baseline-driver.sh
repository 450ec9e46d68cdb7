#!/usr/bin/env bash
# bench/ppn-baseline (the MOM and Proxmox ports driving guests over QMP) against the fake
# QEMU (tests/fake-qemu.c), which stands in for two QEMUs here because a real guest's
# statistics and balloon cannot be set to a known state in a fast test (the overcommit
# benchmark drives real guests). One decision per run (--once), checked against the numbers
# the tools' rules give. TAP output. Usage: test-baseline-driver.sh PPN-BASELINE FAKE-QEMU
set -u
BASE=$1 FAKE=$2
T=$(mktemp -d /tmp/test-baseline-driver-XXXXXX)
FPID=
n=0 failed=0
cleanup() { [ -n "$FPID" ] && kill "$FPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
ok() { n=$((n + 1)); if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi; }
G=$((1 << 30)) M=$((1 << 20))

"$FAKE" --dir "$T" --count 2 --max 4G --use-pct 30 >"$T/fake.out" &
FPID=$!
for _ in $(seq 100); do grep -q '^ready' "$T/fake.out" && break; sleep 0.1; done
vms() { echo "a,$T/vm0000.sock,$FPID,1G,4G" "b,$T/vm0001.sock,$FPID,1G,4G"; }
# field NAME LINE: a number from a JSON line of the driver
field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p" <<<"$2"; }

# Proxmox, node short (7 of 8 GiB used by the host): goal < 0, each VM gives 100 MiB.
out=$("$BASE" pve --physical 8G --host-use 7G --once $(vms)); ok $? "pve --once exits 0"
[ "$(grep -c "\"target\": $((4 * G - 100 * M))}" <<<"$out")" = 2 ]
ok $? "pve: both VMs shrink by Proxmox's 100 MiB per cycle (4 GiB -> 3996 MiB)"
grep -q '"commands": 2, "errors": 0' <<<"$out"; ok $? "pve: two balloon commands, no error"
sleep 1   # the fake's balloon reaches 3996 MiB (0.5 GiB/s)

# MOM, node short (free 12.5 % < 20 %): each guest shrinks by 5 % of its current size.
out=$("$BASE" mom --physical 8G --host-use 7G --once $(vms)); ok $? "mom --once exits 0"
line=$(grep '"vm": "a"' <<<"$out")
a=$(field actual "$line") t=$(field target "$line")
[ -n "$a" ] && [ "$a" -eq $((4 * G - 100 * M)) ]; ok $? "mom read actual over QMP ($a)"
[ -n "$t" ] && [ "$t" -eq $((a * 95 / 100)) ]; ok $? "mom: target = 95 % of actual ($t)"
sleep 1

# MOM, node with room (free 87.5 % ≥ 20 %): grows to max(105 % of actual, used + 87.5 % of
# actual), capped at the maximum. The fake's guest is 30 % of 4 GiB used and reports 70 % of
# the rest free: used = 0.3 actual + 0.84 GiB, so the floor is above 4 GiB: target = max.
out=$("$BASE" mom --physical 8G --host-use 1G --once $(vms))
line=$(grep '"vm": "a"' <<<"$out")
a=$(field actual "$line") t=$(field target "$line")
[ -n "$a" ] && [ "$a" -lt $((4 * G - 100 * M)) ] && [ "$t" = $((4 * G)) ]
ok $? "mom: a guest below its max with room on the node grows to its max ($a -> $t)"

"$BASE" mom --physical 8G --host-use 1G "a,$T/vm0000.sock,$FPID,4G,1G" 2>"$T/err"; rc=$?
[ $rc -eq 2 ] && grep -q "want NAME,QMP-SOCKET,QEMU-PID,MIN,MAX (min ≤ max" "$T/err"; ok $? "min > max is refused with the format"
"$BASE" pve --physical 8G --host-use 1G "a,$T/missing.sock,$FPID,1G,4G" >/dev/null 2>"$T/err"; rc=$?
[ $rc -eq 1 ] && grep -q "missing.sock" "$T/err"; ok $? "a socket that does not answer is named, exit 1"

"$BASE" pve --physical 2X --host-use 1G "a,$T/vm0000.sock,$FPID,1G,4G" 2>"$T/err"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--physical: '2X' is not a size" "$T/err"; ok $? "a bad size is named, usage error"

echo "1..$n"
exit $failed
