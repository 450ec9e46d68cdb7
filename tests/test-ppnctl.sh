#!/usr/bin/env bash
# ppnctl over the ledger, through the built binary: golden error messages and exit codes,
# audit uid and old/new, import all-or-nothing, bad ledger files left byte-identical, and
# two concurrent writers plus a reader. Speaks TAP.
# usage: test-ppnctl.sh PATH/TO/ppnctl
set -u
PPNCTL=$1
T=$(mktemp -d /tmp/test-ppnctl.XXXXXX)
trap 'rm -rf "$T"' EXIT
export PPN_LEDGER=$T/ledger.db
# No daemon: ppnctl pool must read the ledger, whatever runs on this machine.
export PPN_SOCKET=$T/no-daemon.sock
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
check() { local desc=$1; shift; if "$@" >/dev/null; then ok "$desc"; else not_ok "$desc" "command failed: $*"; fi; }

# expect RC STDERR -- ARGS...: runs ppnctl ARGS, compares the exit status and the whole stderr.
expect() {
  local rc=$1 want=$2; shift 3
  local got_err got_rc
  got_err=$("$PPNCTL" "$@" 2>&1 >/dev/null)
  got_rc=$?
  if [ "$got_rc" = "$rc" ] && [ "$got_err" = "$want" ]; then
    ok "ppnctl $* -> $rc"
  else
    not_ok "ppnctl $* -> $rc" "exit $got_rc (want $rc)" "stderr: $got_err" "want:   $want"
  fi
}

json_get() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

# ---- setup through the CLI ----
check "node set" "$PPNCTL" node set physical=8G reserve=1G
check "vm add db" "$PPNCTL" vm add db --min 4G --max 6G --disk /srv/db.img --vcpus 2
check "vm add cache (options after the name)" "$PPNCTL" vm add cache --min 2G --max 3G --qmp /run/ppn/cache.qmp
check "--ledger overrides PPN_LEDGER" env PPN_LEDGER=/nonexistent "$PPNCTL" --ledger "$PPN_LEDGER" vm show db

# ---- golden messages and exit codes ----
USAGE_ADD='usage: ppnctl vm add NAME --min SIZE --max SIZE [--base SIZE] [--shares N] [--cpu-weight N] [--vcpus N] [--qmp PATH | --libvirt DOMAIN] [--disk PATH]... [--qemu-arg ARG]...'
USAGE_SET='usage: ppnctl vm set NAME KEY=VALUE... (keys: min max base vmem shares cpu-weight vcpus qmp libvirt disks qemu-args)'
expect 1 "ppnctl: refused: admitting 'web' (min 2048 MiB) needs 2048 MiB but the pool has 1024 MiB available (short by 1024 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB" \
  -- vm add web --min 2G --max 3G
expect 1 "ppnctl: refused: raising the minimum of 'cache' from 2048 MiB to 3584 MiB needs 1536 MiB but the pool has 1024 MiB available (short by 512 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB" \
  -- vm set cache max=4G min=3584M
expect 1 "ppnctl: refused: setting physical=6G needs 2048 MiB but the pool has 1024 MiB available (short by 1024 MiB); biggest reservations: db 4096 MiB, cache 2048 MiB" \
  -- node set physical=6G
expect 1 "ppnctl: vm 'cache': min 3072 MiB is above max 2048 MiB; lower min or raise max" -- vm set cache min=3G max=2G
expect 1 "ppnctl: vm 'tiny': min 64 MiB is below the node's safe floor 128 MiB (a guest ballooned near zero panics); raise min, or lower the floor with 'ppnctl node set min-floor=SIZE'" \
  -- vm add tiny --min 64M --max 1G
expect 1 "ppnctl: vm 'db' already exists; change it with 'ppnctl vm set db KEY=VALUE' or remove it first" -- vm add db --min 1G --max 1G
expect 1 "ppnctl: no VM 'nope' in the ledger; see 'ppnctl vm list'" -- vm show nope
expect 1 "ppnctl: no VM 'nope' in the ledger; see 'ppnctl vm list'" -- vm set nope shares=5
expect 2 "ppnctl vm add: vm name 'Web' is not valid: use 1–63 characters from a-z 0-9 _ . - starting with a letter or digit (e.g. web-1)
$USAGE_ADD" -- vm add Web --min 1G --max 2G
expect 2 "ppnctl vm add: min '1.5G' is not a size; use bytes or a number with K, M, G or T (e.g. 512M, 2G, 1048576K)
$USAGE_ADD" -- vm add web --min 1.5G --max 2G
expect 2 "ppnctl vm add: --min and --max are required
$USAGE_ADD" -- vm add web --max 2G
expect 2 "ppnctl vm set: shares '0' is not an integer in 1–100000 (default 1000)
$USAGE_SET" -- vm set db shares=0
expect 2 "ppnctl vm set: unknown key 'colour'; keys are min, max, base, vmem, shares, cpu-weight, vcpus, qmp, libvirt, disks, disk, qemu-args, qemu-arg
$USAGE_SET" -- vm set db colour=blue
expect 2 "ppnctl vm set: 'shares' is not KEY=VALUE (e.g. min=1G)
$USAGE_SET" -- vm set db shares
expect 2 "ppnctl vm set: key 'min' given twice; give each key once
$USAGE_SET" -- vm set db min=1G min=2G
# The memory layout: boot memory plus a virtio-mem region up to max.
expect 1 "ppnctl: vm 'lay': base 4096 MiB leaves no virtio-mem region below max 4096 MiB; lower base or raise max" \
  -- vm add lay --min 256M --max 4G --base 4G
expect 1 "ppnctl: vm 'cache': base 512 MiB applies only with a virtio-mem region; give vmem=on, or unset it with base=default" \
  -- vm set cache base=512M
expect 2 "ppnctl vm set: vmem 'yes' is neither on nor off
$USAGE_SET" -- vm set cache vmem=yes
check "vm set cache base=512M vmem=on" "$PPNCTL" vm set cache base=512M vmem=on
[ "$("$PPNCTL" vm show cache | grep '^memory')" = "memory      512M boot + virtio-mem region 2.5G" ] \
  && ok "vm show: the layout" || not_ok "vm show: the layout" "got: $("$PPNCTL" vm show cache | grep '^memory')"
[ "$("$PPNCTL" vm show cache --json | json_get '["base_bytes"], d["vmem"]')" = "(536870912, True)" ] \
  && ok "vm show --json: base_bytes, vmem" || not_ok "vm show --json: base_bytes, vmem"
check "vm set cache vmem=off base=default" "$PPNCTL" vm set cache vmem=off base=default
expect 2 "ppnctl vm: unknown subcommand 'frobnicate'
usage:
  ppnctl vm add NAME --min SIZE --max SIZE [--base SIZE] [--shares N] [--cpu-weight N] [--vcpus N] [--qmp PATH | --libvirt DOMAIN] [--disk PATH]... [--qemu-arg ARG]...
  ppnctl vm import-libvirt [--uri URI] [--apply] [--json]
  ppnctl vm list [--json]
  ppnctl vm remove NAME
  ppnctl vm set NAME KEY=VALUE... (keys: min max base vmem shares cpu-weight vcpus qmp libvirt disks qemu-args)
  ppnctl vm show NAME [--json]" -- vm frobnicate
expect 1 "ppnctl: ledger '$T/none.db' does not exist; check --ledger or PPN_LEDGER (a write command such as 'ppnctl node set' or 'ppnctl vm add' creates it)" \
  -- --ledger "$T/none.db" vm list
[ ! -e "$T/none.db" ] && ok "a read command does not create the ledger" || not_ok "a read command does not create the ledger"

# the refusals above changed nothing
out=$("$PPNCTL" vm show cache --json)
[ "$(echo "$out" | json_get '["min_bytes"]')" = 2147483648 ] && [ "$(echo "$out" | json_get '["max_bytes"]')" = 3221225472 ] \
  && ok "refused vm set left cache unchanged" || not_ok "refused vm set left cache unchanged" "$out"

# ---- pool --json keys (the documented keys, README and ppnctl(8)) ----
pool=$("$PPNCTL" pool --json)
want='8589934592 1073741824 6442450944 1073741824 9663676416 -2147483648'
got=$(echo "$pool" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(*[d[k] for k in ("physical_bytes","reserve_bytes","reserved_min_bytes","pool_available_bytes","committed_bytes","free_bytes")])')
[ "$got" = "$want" ] && ok "pool --json figures" || not_ok "pool --json figures" "got $got" "want $want"
"$PPNCTL" --json pool | grep -q '"actual_source": "ledger"' && ok "--json before the command works too" || not_ok "--json before the command"

# ---- audit: uid and old/new through the CLI ----
"$PPNCTL" vm set db shares=1234 cpu-weight=77 >/dev/null
hist=$("$PPNCTL" ledger history db --json)
got=$(echo "$hist" | python3 -c '
import json,sys
rows=[r for r in json.load(sys.stdin) if r["field"] in ("shares","cpu-weight") and r["old"] is not None]
print(*[(r["field"],r["uid"],r["old"],r["new"]) for r in rows])')
want="('shares', $(id -u), '1000', '1234') ('cpu-weight', $(id -u), '100', '77')"
[ "$got" = "$want" ] && ok "audit records uid, old and new" || not_ok "audit records uid, old and new" "got $got" "want $want"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  chmod 777 "$T" && chmod 666 "$T"/ledger.db*
  setpriv --reuid=65534 --regid=65534 --clear-groups "$PPNCTL" vm set db shares=99 >/dev/null
  last=$("$PPNCTL" ledger history db --json | json_get '[-1]')
  echo "$last" | grep -q "'uid': 65534" && echo "$last" | grep -q "'old': '1234', 'new': '99'" \
    && ok "audit records another caller's uid (65534)" || not_ok "audit records another caller's uid" "$last"
else
  echo "ok $((n += 1)) - audit of another uid # SKIP not root"
fi
"$PPNCTL" ledger history db | grep -q "uid=$(id -u) db cpu-weight: 100 -> 77" && ok "history, human form" || not_ok "history, human form"
"$PPNCTL" node set min-floor=256M >/dev/null
"$PPNCTL" ledger history | grep -q "(node) min-floor: (none) -> 256M" && ok "node changes are audited" || not_ok "node changes are audited"

# ---- an operator without write access reads (no daemon holding the ledger open) ----
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  mkdir -m 755 "$T/ro" && PPN_LEDGER=$T/ro/l.db "$PPNCTL" node set physical=8G >/dev/null
  # A new ledger is 0640: readable by its group (here 65534), by nobody else.
  [ "$(stat -c %a "$T/ro/l.db")" = 640 ] && ok "a new ledger file is mode 0640" || not_ok "a new ledger file is mode 0640" "$(stat -c %a "$T/ro/l.db")"
  chgrp 65534 "$T/ro/l.db"
  as_nobody() { PPN_LEDGER=$T/ro/l.db setpriv --reuid=65534 --regid=65534 --clear-groups "$PPNCTL" "$@"; }
  as_nobody node show >/dev/null && ok "a reader in the ledger's group, without write access, can read" || not_ok "a reader without write access can read"
  err=$(PPN_LEDGER=$T/ro/l.db setpriv --reuid=65534 --regid=65533 --clear-groups "$PPNCTL" vm list 2>&1); rc=$?
  [ $rc = 1 ] && [[ "$err" == *"Permission denied"* ]] \
    && ok "a user outside the ledger's group cannot read it: exit 1 and why" || not_ok "outsider reads the ledger" "$rc $err"
  err=$(as_nobody node set reserve=1G 2>&1); rc=$?
  [ $rc = 1 ] && [[ "$err" == *"writing needs write access to the file and its folder (this is uid 65534)" ]] \
    && ok "a writer without write access: exit 1 and why" || not_ok "a writer without write access" "$rc $err"
else
  echo "ok $((n += 1)) - new ledger mode # SKIP not root"
  echo "ok $((n += 1)) - reader without write access # SKIP not root"
  echo "ok $((n += 1)) - outsider cannot read # SKIP not root"
  echo "ok $((n += 1)) - writer without write access # SKIP not root"
fi

# ---- export / import ----
"$PPNCTL" ledger export >"$T/before.json" || not_ok "export"
python3 - "$T/before.json" "$T/bad.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["vms"][0]["shares"] = 5                       # a valid change in entry 0 ...
d["vms"].append(dict(d["vms"][1], name="web", uuid="00000000-0000-4000-8000-0000000000aa",
                     min_bytes=268435456, max_bytes=536870912, cpu_weight=0))   # ... and a bad entry 2
json.dump(d, open(sys.argv[2], "w"))
PY
expect 1 "ppnctl: import: vms[2] ('web'): vm 'web': cpu-weight 0 is out of range 1–10000 (default 100)" -- ledger import "$T/bad.json"
"$PPNCTL" ledger export >"$T/after.json"
cmp -s "$T/before.json" "$T/after.json" && ok "import with one bad entry changed nothing" || not_ok "import with one bad entry changed nothing"
echo '{"vms": [' >"$T/broken.json"
err=$("$PPNCTL" ledger import "$T/broken.json" 2>&1); rc=$?
[ $rc = 1 ] && [[ "$err" == "ppnctl: cannot import '$T/broken.json': "* ]] && ok "import of broken JSON -> 1" || not_ok "import of broken JSON" "$rc $err"
PPN_LEDGER=$T/copy.db "$PPNCTL" ledger import "$T/before.json" >/dev/null
PPN_LEDGER=$T/copy.db "$PPNCTL" ledger export >"$T/copy.json"
cmp -s "$T/before.json" "$T/copy.json" && ok "export -> import -> export round trip" || not_ok "round trip"

# ---- bad ledger files: clear error, exit 1, bytes unchanged ----
bad_file() {
  local desc=$1 file=$2 want=$3 cmd
  cp "$file" "$T/orig"
  for cmd in "vm list" "vm add x --min 1G --max 1G" "node set reserve=1G"; do
    err=$("$PPNCTL" --ledger "$file" $cmd 2>&1 >/dev/null); rc=$?
    if [ $rc = 1 ] && [[ "$err" == *"$want"* ]] && cmp -s "$file" "$T/orig"; then
      ok "$desc: ppnctl $cmd -> 1, file unchanged"
    else
      not_ok "$desc: ppnctl $cmd" "exit $rc: $err"
    fi
  done
}
head -c 8192 /dev/urandom | base64 >"$T/text.db"
bad_file "not SQLite" "$T/text.db" "ledger '$T/text.db' is not an SQLite database; check --ledger or PPN_LEDGER (the file was not modified)"
cp "$PPN_LEDGER" "$T/trunc.db"
PPN_LEDGER=$T/trunc.db "$PPNCTL" vm list >/dev/null   # read-only: leaves no -wal behind
truncate -s 4096 "$T/trunc.db"
bad_file "truncated" "$T/trunc.db" "is truncated"
cp "$PPN_LEDGER" "$T/newer.db"
sqlite3 "$T/newer.db" 'PRAGMA user_version = 7'
bad_file "newer schema" "$T/newer.db" "has schema version 7 but this build knows versions up to 4; use a newer ppnctl/ppnd (the file was not modified)"

# ---- concurrency: two CLI writers and a reader at once ----
"$PPNCTL" node set physical=64G >/dev/null
"$PPNCTL" vm add a --min 256M --max 512M >/dev/null
N=40
writer() {  # writer KEY LOGFILE
  local i
  for i in $(seq 1 $N); do "$PPNCTL" vm set a "$1=$i" || echo "FAILED $1=$i"; done >"$2" 2>&1
  for i in $(seq 1 10); do "$PPNCTL" vm add "$1-$i" --min 256M --max 256M >/dev/null || echo "FAILED add $1-$i"; done >>"$2" 2>&1
}
reader() {
  while [ ! -e "$T/stop" ]; do
    "$PPNCTL" pool --json >/dev/null || echo "FAILED pool"
    "$PPNCTL" vm show a --json >/dev/null || echo "FAILED show"
  done >"$T/reader.log" 2>&1
}
reader & rpid=$!
writer shares "$T/w1.log" & w1=$!
writer cpu-weight "$T/w2.log" & w2=$!
wait $w1 $w2; touch "$T/stop"; wait $rpid
if grep -qi 'locked\|busy\|FAILED' "$T/w1.log" "$T/w2.log" "$T/reader.log"; then
  not_ok "concurrent writers and reader: no failure, no 'locked'" "$(cat "$T"/w1.log "$T"/w2.log "$T"/reader.log | head -5)"
else
  ok "concurrent writers and reader: no failure, no 'locked'"
fi
a=$("$PPNCTL" vm show a --json)
[ "$(echo "$a" | json_get '["shares"]')" = $N ] && [ "$(echo "$a" | json_get '["cpu_weight"]')" = $N ] \
  && ok "both writers' last values stand" || not_ok "both writers' last values stand" "$a"
got=$("$PPNCTL" ledger history a --json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
bad = 0
for f, start in (("shares", "1000"), ("cpu-weight", "100")):
    chain = [r for r in rows if r["field"] == f]
    prev = None
    for r in chain:                       # each update read what the previous one wrote
        bad += r["old"] != prev
        prev = r["new"]
    bad += len(chain) != 41 or chain[1]["old"] != start
print(bad)')
[ "$got" = 0 ] && ok "audit chain unbroken: no lost update (2 x $N sets)" || not_ok "audit chain unbroken" "$got breaks"
cnt=$("$PPNCTL" vm list --json | python3 -c 'import json,sys; print(sum(v["name"].startswith(("shares-","cpu-weight-")) for v in json.load(sys.stdin)))')
[ "$cnt" = 20 ] && ok "concurrent adds: all 20 present" || not_ok "concurrent adds" "$cnt"
check "ledger check after it all" "$PPNCTL" ledger check

# ---- an archive may not bring QEMU options into the node ----
# The attacker writes the archive, so it rewrites the manifest as it likes (the checksums cover
# the images, and whoever writes them writes the sums too).
truncate -s 1M "$T/arc.img"
check "vm add arc with a disk" "$PPNCTL" vm add arc --min 256M --max 512M --disk "$T/arc.img"
check "export arc" "$PPNCTL" export arc "$T/arc-archive"
python3 - "$T/arc-archive/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m['vm']['qemu_args'] = ['-netdev', 'tap,id=n0,script=/tmp/evil.sh', '-drive', 'file=/dev/sda,format=raw',
                        '-chardev', 'file,id=c0,path=/etc/shadow']
json.dump(m, open(sys.argv[1], 'w'))
PY
PPN_LEDGER=$T/arc-dest.db "$PPNCTL" node set physical=8G reserve=1G >/dev/null
err=$(PPN_LEDGER=$T/arc-dest.db "$PPNCTL" import "$T/arc-archive" --image-dir "$T/arc-images" 2>&1 >/dev/null); rc=$?
[ $rc = 0 ] && [[ "$err" == *"dropped the archive's QEMU options for 'arc'"*"script=/tmp/evil.sh"*"ppnctl vm set arc qemu-args="* ]] \
  && ok "import drops the archive's QEMU options and names them" || not_ok "import drops QEMU options" "rc $rc" "$err"
args=$(PPN_LEDGER=$T/arc-dest.db "$PPNCTL" vm show arc --json | json_get '["qemu_args"]')
[ "$args" = "[]" ] || [ "$args" = "None" ] && ok "the imported entry has no QEMU options" || not_ok "imported qemu_args" "$args"

# A vm entry whose name differs from the manifest's: refused, quoting both (it once printed
# "(, )": the message was made after the entry it quotes was freed).
cp -a "$T/arc-archive" "$T/arc-renamed"
uuid=$(python3 - "$T/arc-renamed/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m['vm']['name'] = 'other'
json.dump(m, open(sys.argv[1], 'w'))
print(m['uuid'])
PY
)
err=$(PPN_LEDGER=$T/arc-dest2.db "$PPNCTL" import "$T/arc-renamed" --image-dir "$T/arc-images2" 2>&1 >/dev/null); rc=$?
[ $rc = 1 ] && [ "$err" = "ppnctl: manifest: name/uuid (arc, $uuid) differ from its vm entry (other, $uuid)" ] \
  && ok "import of a manifest whose vm entry has another name: refused, quoting both" \
  || not_ok "import name mismatch" "rc $rc" "$err"

# ---- a lease length is bounded: a huge one used to wrap into the past ----
expect 2 "ppnctl balloon: '18446744073709s' is not a duration from 1s to 366d (examples: 90s, 10m, 2h)
usage: ppnctl balloon VM SIZE [--for DURATION]" -- balloon arc 300M --for 18446744073709s
expect 2 "ppnctl balloon: '400d' is not a duration from 1s to 366d
usage: ppnctl balloon VM SIZE [--for DURATION]" -- balloon arc 300M --for=400d

# ---- a lease is whole MiB, like every size in the ledger ----
expect 2 "ppnctl balloon: '300000001' is not a whole number of MiB (QEMU's balloon and the ledger count in MiB); e.g. 512M, 2G
usage: ppnctl balloon VM SIZE [--for DURATION]" -- balloon arc 300000001
expect 2 "ppnctl balloon: '1536K' is not a whole number of MiB (QEMU's balloon and the ledger count in MiB); e.g. 512M, 2G
usage: ppnctl balloon VM SIZE [--for DURATION]" -- balloon arc 1536K

echo "1..$n"
exit $((failed > 0))
