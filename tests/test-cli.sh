#!/usr/bin/env bash
# ppnctl's habits, through the built binary: --help for every command and subcommand of the
# table (exit 0, fits 80 columns), --version, documented exit codes, tables within 80 columns
# (also with a 63-character VM name and with --bytes), colour only on a terminal and never with
# NO_COLOR or TERM=dumb, human sizes and --bytes. Speaks TAP.
# usage: test-cli.sh PATH/TO/ppnctl
set -u
PPNCTL=$1
T=$(mktemp -d /tmp/test-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
export PPN_LEDGER=$T/ledger.db PPN_SOCKET=$T/none.sock LC_ALL=C.UTF-8 TERM=xterm
unset NO_COLOR COLUMNS
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
# Display width of the widest line (wc -L counts columns, not bytes).
width() { wc -L | tr -d ' '; }
# On a pseudo-terminal of 80 columns (script(1) from util-linux).
on_tty() { script -qec "stty cols 80 rows 50 2>/dev/null; $*" /dev/null; }
ESC=$'\033'

# expect_rc RC DESC ARGS...
expect_rc() {
  local rc=$1 desc=$2; shift 2
  "$PPNCTL" "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [ "$got" = "$rc" ]; then ok "$desc: exit $rc"; else not_ok "$desc: exit $rc" "exit $got" "$(head -3 "$T/err")"; fi
}

# ---- --version, --help ----
out=$("$PPNCTL" --version); rc=$?
if [ $rc = 0 ] && [[ $out =~ ^ppnctl\ [0-9]+\.[0-9]+\.[0-9]+$ ]]; then ok "--version: '$out'"; else not_ok "--version" "exit $rc, '$out'"; fi
"$PPNCTL" --help >"$T/help"; rc=$?
w=$(width <"$T/help")
if [ $rc = 0 ] && [ "$w" -le 80 ]; then ok "--help: exit 0, $w columns"; else not_ok "--help: exit 0, <= 80 columns" "exit $rc, $w columns"; fi
if grep -q '^exit status: 0 success, 1 refused or failed, 2 usage error$' "$T/help"; then ok "--help documents the exit codes"; else not_ok "--help documents the exit codes"; fi
commands=$(sed -n '/^commands:/,/^$/p' "$T/help" | awk '/^  [a-z]/ { print $1 }')
if [ "$(echo "$commands" | wc -l)" -ge 4 ]; then ok "--help lists the commands ($(echo $commands))"; else not_ok "--help lists the commands"; fi

# ---- COMMAND --help and GROUP SUBCOMMAND --help ----
for c in $commands; do
  "$PPNCTL" "$c" --help >"$T/out" 2>"$T/err"; rc=$?
  w=$(width <"$T/out")
  if [ $rc = 0 ] && [ ! -s "$T/err" ] && grep -q "ppnctl $c" "$T/out" && [ "$w" -le 80 ]; then
    ok "ppnctl $c --help: exit 0, usage, $w columns"
  else
    not_ok "ppnctl $c --help" "exit $rc, $w columns" "$(head -3 "$T/out" "$T/err")"
  fi
  for sub in $(sed -n "s/^  ppnctl $c \([a-z-]*\).*/\1/p" "$T/out"); do
    "$PPNCTL" "$c" "$sub" --help >"$T/sout" 2>"$T/serr"; rc=$?
    w=$(width <"$T/sout")
    if [ $rc = 0 ] && [ ! -s "$T/serr" ] && grep -q "^usage: ppnctl $c $sub" "$T/sout" && [ "$w" -le 80 ]; then
      ok "ppnctl $c $sub --help: exit 0, usage, $w columns"
    else
      not_ok "ppnctl $c $sub --help" "exit $rc, $w columns" "$(head -3 "$T/sout" "$T/serr")"
    fi
  done
done

# ---- exit codes ----
expect_rc 2 "no command"
expect_rc 2 "unknown command" frobnicate
expect_rc 2 "unknown global option" --frob vm list
expect_rc 2 "unknown subcommand" vm frob
expect_rc 2 "malformed size" vm add x --min lots --max 1G
expect_rc 0 "node set" node set physical=16G reserve=1G
expect_rc 0 "vm add" vm add db --min 1G --max 2G
expect_rc 1 "refused: over capacity" vm add big --min 64G --max 64G
expect_rc 1 "failed: no such VM" vm show nope

# ---- tables fit 80 columns, names cut only when they must be ----
long=a23456789-b23456789-c23456789-d23456789-e23456789-f23456789-g23
"$PPNCTL" vm add "$long" --min 1280M --max 2900M >/dev/null
# (ledger history and events are logs, not tables: their lines carry whole values.)
for args in "vm list" "--bytes vm list" "pool" "--bytes pool" "node show" "--bytes node show" "vm show db"; do
  w=$("$PPNCTL" $args | width)
  if [ "$w" -le 80 ]; then ok "ppnctl $args: $w columns"; else not_ok "ppnctl $args: <= 80 columns" "$w columns"; "$PPNCTL" $args | sed 's/^/# /'; fi
done
if "$PPNCTL" vm list | grep -q '^a23456789-b23456789-c23456789-d2345[0-9]*…  *1280M  *2900M '; then
  ok "a long name is cut with … to keep the row in 80 columns"
else
  not_ok "a long name is cut with …" "$("$PPNCTL" vm list)"
fi
wide=$(script -qec "stty cols 132 rows 50; $PPNCTL vm list" /dev/null)
if echo "$wide" | grep -q "^$long  *1280M"; then ok "on a 132-column terminal the long name is whole"; else not_ok "132 columns: whole name" "$wide"; fi

# ---- sizes: human by default, exact with --bytes ----
if "$PPNCTL" vm show "$long" | grep -q '^min  *1280M$' && "$PPNCTL" vm show "$long" | grep -q '^max  *2900M$'; then
  ok "vm show: human sizes"
else
  not_ok "vm show: human sizes" "$("$PPNCTL" vm show "$long")"
fi
if "$PPNCTL" --bytes vm show "$long" | grep -q '^min  *1342177280$' && "$PPNCTL" --bytes pool | grep -q '^physical  *17179869184$'; then
  ok "--bytes: exact byte counts"
else
  not_ok "--bytes: exact byte counts" "$("$PPNCTL" --bytes vm show "$long" | head -4)"
fi
if [ "$("$PPNCTL" --json vm show db)" = "$("$PPNCTL" --json --bytes vm show db)" ]; then ok "--json is bytes already: --bytes changes nothing"; else not_ok "--json unaffected by --bytes"; fi

# ---- colour: only on a terminal; NO_COLOR and TERM=dumb turn it off ----
if on_tty "$PPNCTL" vm list | grep -q "$ESC\["; then ok "colour on a terminal"; else not_ok "colour on a terminal"; fi
if "$PPNCTL" vm list | grep -q "$ESC"; then not_ok "no colour into a pipe"; else ok "no colour into a pipe"; fi
if NO_COLOR=1 on_tty "$PPNCTL" vm list | grep -q "$ESC"; then not_ok "NO_COLOR=1 on a terminal: no colour"; else ok "NO_COLOR=1 on a terminal: no colour"; fi
if NO_COLOR= on_tty "$PPNCTL" vm list | grep -q "$ESC\["; then ok "NO_COLOR empty: colour"; else not_ok "NO_COLOR empty: colour"; fi
if TERM=dumb on_tty "$PPNCTL" vm list | grep -q "$ESC"; then not_ok "TERM=dumb: no colour"; else ok "TERM=dumb: no colour"; fi

# ---- settings: option > environment > config file (--config, PPN_CONFIG) > built-in default ----
# `start --dry-run` prints the QEMU command line: binary, accelerator, runtime and log dirs.
# The socket shows in status's error (no daemon listens on any of these).
unset PPN_ACCEL PPN_RUNTIME_DIR PPN_LOG_DIR PPN_QEMU PPN_CONFIG PPN_CGROUP_ROOT PPN_CGROUP_PARENT PPN_IMAGE_DIR PPN_SOCKET
dry() { "$PPNCTL" "$@" start db --dry-run 2>&1; }
status_sock() { "$PPNCTL" "$@" status 2>&1 | sed -n 's/.*listening on \([^)]*\)).*/\1/p'; }
# expect_has DESC TEXT WANT...: every WANT (a fixed string) is in TEXT, and TEXT is one line.
expect_has() {
  local desc=$1 text=$2 w; shift 2
  for w in "$@"; do
    if ! grep -qF -- "$w" <<<"$text"; then not_ok "$desc" "missing: $w" "got: $text"; return; fi
  done
  ok "$desc"
}
cat >"$T/ppnd.conf" <<EOF
# as an operator writes it
[daemon]
runtime-dir = $T/cfg-run
[ledger]
path = $T/cfg-ledger.db
[control]
socket = $T/cfg.sock
[qemu]
accel = tcg   ; no KVM on this host
binary = /opt/cfg/qemu
log-dir = $T/cfg-log
EOF
if [ -e /etc/ppn/ppnd.conf ] || [ -e /usr/local/etc/ppn/ppnd.conf ]; then
  n=$((n + 1)); echo "ok $n - no config file: built-in defaults # SKIP a default config file exists on this host"
  n=$((n + 1)); echo "ok $n - no config file: default socket # SKIP a default config file exists on this host"
else
  expect_has "no config file: built-in defaults (qemu-system-x86_64, kvm, /run/ppn, /var/log/ppn)" "$(dry)" \
    "qemu-system-x86_64 -name guest=db " "-accel kvm " "path=/run/ppn/db.qmp," "path=/var/log/ppn/db.log,"
  expect_has "no config file: default socket" "$(status_sock)" /run/ppn/ppnd.sock
fi
expect_has "PPN_CONFIG empty: as if unset" "$(PPN_CONFIG= dry)" "-accel kvm "
expect_has "--config: binary, accel, runtime-dir and log-dir from the file" "$(dry --config "$T/ppnd.conf")" \
  "/opt/cfg/qemu -name guest=db " "-accel tcg " "path=$T/cfg-run/db.qmp," "path=$T/cfg-run/db.ppnctl.qmp," \
  "path=$T/cfg-log/db.log,"
expect_has "PPN_CONFIG: the same file" "$(PPN_CONFIG=$T/ppnd.conf dry)" "-accel tcg " "path=$T/cfg-run/db.qmp,"
expect_has "--config=PATH over PPN_CONFIG" "$(PPN_CONFIG=$T/nonexistent dry --config="$T/ppnd.conf")" "-accel tcg "
expect_has "environment over the file: PPN_ACCEL, PPN_RUNTIME_DIR, PPN_LOG_DIR, PPN_QEMU" \
  "$(PPN_ACCEL=kvm PPN_RUNTIME_DIR=$T/env-run PPN_LOG_DIR=$T/env-log PPN_QEMU=/opt/env/qemu dry --config "$T/ppnd.conf")" \
  "/opt/env/qemu -name guest=db " "-accel kvm " "path=$T/env-run/db.qmp," "path=$T/env-log/db.log,"
expect_has "[control] socket from the file" "$(status_sock --config "$T/ppnd.conf")" "$T/cfg.sock"
expect_has "PPN_SOCKET over the file" "$(PPN_SOCKET=$T/env.sock status_sock --config "$T/ppnd.conf")" "$T/env.sock"
expect_has "--socket over PPN_SOCKET and the file" \
  "$(PPN_SOCKET=$T/env.sock status_sock --config "$T/ppnd.conf" --socket "$T/opt.sock")" "$T/opt.sock"
env -u PPN_LEDGER "$PPNCTL" --config "$T/ppnd.conf" node set physical=2G >/dev/null 2>&1
if [ -s "$T/cfg-ledger.db" ]; then ok "[ledger] path from the file"; else not_ok "[ledger] path from the file" "no $T/cfg-ledger.db"; fi
expect_has "PPN_LEDGER over the file" "$("$PPNCTL" --config "$T/ppnd.conf" vm list)" db
# Problems: every bad line as FILE:LINE, exit 1, for every command (not only the lifecycle).
printf '[qemu]\naccel = xen\n[daemon]\nruntime-dir = run\nfrobnicate = 1\n' >"$T/bad.conf"
for args in "status" "vm list" "start db --dry-run"; do
  "$PPNCTL" --config "$T/bad.conf" $args >"$T/out" 2>"$T/err"; rc=$?
  if [ $rc = 1 ] && [ ! -s "$T/out" ] && grep -qxF "ppnctl: $T/bad.conf:2: accel: 'xen' must be 'kvm' or 'tcg'" "$T/err" &&
     grep -qxF "ppnctl: $T/bad.conf:4: runtime-dir: 'run' must be an absolute path" "$T/err" &&
     grep -qxF "ppnctl: $T/bad.conf:5: unknown key 'frobnicate' in section [daemon]" "$T/err"; then
    ok "bad --config file, ppnctl $args: exit 1, every problem as FILE:LINE"
  else
    not_ok "bad --config file, ppnctl $args: exit 1, FILE:LINE" "exit $rc" "$(cat "$T/err")"
  fi
done
"$PPNCTL" --config "$T/nonexistent.conf" status >/dev/null 2>"$T/err"; rc=$?
if [ $rc = 1 ] && grep -qF "ppnctl: $T/nonexistent.conf: cannot open: No such file or directory" "$T/err"; then
  ok "a missing --config file: exit 1, named"
else
  not_ok "a missing --config file: exit 1, named" "exit $rc" "$(cat "$T/err")"
fi
PPN_CONFIG=$T/bad.conf "$PPNCTL" vm list >/dev/null 2>"$T/err"; rc=$?
if [ $rc = 1 ] && grep -qF "$T/bad.conf:2:" "$T/err"; then ok "a bad PPN_CONFIG file: exit 1"; else not_ok "a bad PPN_CONFIG file: exit 1" "exit $rc"; fi
expect_rc 2 "--config without a value" --config
if PPN_CONFIG=$T/bad.conf "$PPNCTL" vm --help >/dev/null 2>&1; then ok "--help needs no config file"; else not_ok "--help needs no config file"; fi

echo "1..$n"
[ "$failed" -eq 0 ]
