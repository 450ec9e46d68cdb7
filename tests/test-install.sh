#!/usr/bin/env bash
# `meson install` into a DESTDIR: the tree (binaries, man pages, completion, unit, default
# config), the installed programs run, the man pages render without warnings and document every
# command, option and config key there is, the completion knows every command, subcommand and
# option, and the unit passes `systemd-analyze verify` with a `systemd-analyze security`
# exposure of at most 2.0. Speaks TAP.
# usage: test-install.sh BUILD_ROOT PREFIX BINDIR SBINDIR MANDIR SYSCONFDIR
set -u
BUILD=$1 PREFIX=$2 BINDIR=$3 SBINDIR=$4 MANDIR=$5 SYSCONFDIR=$6
SRC=${PPN_SOURCE_ROOT:?}
T=$(mktemp -d /tmp/test-install.XXXXXX)
trap 'rm -rf "$T"' EXIT
D=$T/dest
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
# abs DIR: meson's dirs are relative to the prefix unless absolute.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PREFIX/$1" ;; esac; }

if meson install -C "$BUILD" --no-rebuild --destdir "$D" >"$T/install.log" 2>&1; then
  ok "meson install --destdir"
else
  not_ok "meson install --destdir" "$(tail -5 "$T/install.log")"
  echo "1..$n"
  exit 1
fi

PPNCTL=$D$(abs "$BINDIR")/ppnctl
PPND=$D$(abs "$SBINDIR")/ppnd
MAN=$D$(abs "$MANDIR")
ETC=$D$(abs "$SYSCONFDIR")

# ---- the tree ----
expect_file() { # PATH MODE
  local got
  got=$(stat -c %a "$1" 2>/dev/null)
  if [ "$got" = "$2" ]; then ok "installed ${1#"$D"} mode $2"; else not_ok "installed ${1#"$D"} mode $2" "mode: ${got:-missing}"; fi
}
expect_file "$PPNCTL" 755
expect_file "$PPND" 755
for p in man8/ppnd.8 man8/ppnctl.8 man5/ppnd.conf.5; do expect_file "$MAN/$p" 644; done
COMPLETION=$(find "$D" -path '*/bash-completion/completions/ppnctl' -type f)
if [ -n "$COMPLETION" ]; then ok "bash completion installed at ${COMPLETION#"$D"}"; else not_ok "bash completion installed"; fi
UNIT=$(find "$D" -path '*/systemd/system/ppnd.service' -type f)
CONF=$ETC/ppn/ppnd.conf
if [ -n "$UNIT" ]; then expect_file "$UNIT" 644; else not_ok "systemd unit installed (*/systemd/system/ppnd.service)"; fi
expect_file "$CONF" 644
unexpected=$(find "$D" -type f | grep -Ev '/(bin/ppnctl|sbin/ppnd|man[58]/ppn[^/]*|completions/ppnctl|system/ppnd\.service|ppn/ppnd\.conf)$')
if [ -z "$unexpected" ]; then ok "nothing else installed (no test programs)"; else not_ok "nothing else installed" $unexpected; fi

# ---- the programs run from where they were installed ----
v=$(meson introspect --projectinfo "$BUILD" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
for prog in "$PPNCTL" "$PPND"; do
  got=$("$prog" --version 2>&1)
  if [ "$got" = "$(basename "$prog") $v" ]; then ok "$(basename "$prog") --version"; else not_ok "$(basename "$prog") --version" "got: $got"; fi
done

# ---- man pages: render without warnings, carry the version ----
for p in man8/ppnd.8 man8/ppnctl.8 man5/ppnd.conf.5; do
  warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$MAN/$p" 2>&1 >/dev/null)
  if [ -z "$warn" ]; then ok "man -l $p: no warnings"; else not_ok "man -l $p: no warnings" "$warn"; fi
  if grep -q "ppn-pool $v" "$MAN/$p"; then ok "$p names version $v"; else not_ok "$p names version $v"; fi
done

# Every command of ppnctl's table (from --help) has a section in ppnctl(8), and every section
# names a real command.
commands=$("$PPNCTL" --help | sed -n '/^commands:/,/^$/p' | awk '/^  [a-z]/ { print $1 }')
documented=$(sed -n 's/^\.SS \([a-z]*\).*/\1/p' "$SRC/man/ppnctl.8" | sort -u)
if [ "$(echo "$commands" | sort -u)" = "$documented" ]; then
  ok "ppnctl(8) documents exactly the commands of the table"
else
  not_ok "ppnctl(8) documents exactly the commands of the table" "table: $(echo $commands)" "man:   $(echo $documented)"
fi
# Every global option of ppnctl and every option of ppnd is in its page.
for pair in "$PPNCTL:ppnctl.8" "$PPND:ppnd.8"; do
  prog=${pair%%:*} page=$SRC/man/${pair#*:}
  missing=
  for o in $("$prog" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
    grep -q -- "$(echo "$o" | sed 's/-/\\\\-/g')" "$page" || missing="$missing $o"
  done
  if [ -z "$missing" ]; then ok "${pair#*:} documents every option of $(basename "$prog") --help"; else not_ok "${pair#*:} documents every option" "missing:$missing"; fi
done
# Every config key of the table in src/config.c is in ppnd.conf(5) and in the installed
# default config, and that config, every line uncommented, is valid.
table_keys=$(python3 - "$SRC/src/config.c" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
table = text[text.index("keys[] = {"):]
table = table[:table.index("\n};")]
for m in re.finditer(r'(?:\{|NUM\()\s*"([a-z]+)",\s*"([a-z-]+)"|POLICY_[A-Z]+\("([a-z-]+)"', table):
    print(f"{m[1]}.{m[2]}" if m[1] else f"policy.{m[3]}")
PY
)
table_keys=$(echo "$table_keys" | sort -u)
# ppnd.conf(5): ".SH [section]", then ".BI key " = default"" (several keys per line joined by \fR, \fP).
man_keys=$(python3 - "$SRC/man/ppnd.conf.5" <<'PY'
import re, sys
section = None
for line in open(sys.argv[1]):
    m = re.match(r'\.SH \[([a-z]+)\]', line)
    if m:
        section = m[1]
    elif section and line.startswith(".BI "):
        for key in re.findall(r'(?:^\.BI |\\fP)([a-z\\-]+) "? ?=', line):
            print(f"{section}.{key.replace(chr(92) + '-', '-')}")
PY
)
man_keys=$(echo "$man_keys" | sort -u)
conf_keys=$(awk '/^\[/ { s = substr($1, 2, length($1) - 2) } /^#?[a-z-]+ *=/ { sub(/^#/, ""); split($0, a, " *= *"); print s "." a[1] }' "$CONF" 2>/dev/null | sort -u)
if [ -n "$table_keys" ] && [ "$table_keys" = "$man_keys" ]; then
  ok "ppnd.conf(5) documents exactly the keys of the config table ($(echo "$table_keys" | wc -l))"
else
  not_ok "ppnd.conf(5) documents exactly the keys of the config table" "only in table: $(comm -23 <(echo "$table_keys") <(echo "$man_keys") | tr '\n' ' ')" \
    "only in man: $(comm -13 <(echo "$table_keys") <(echo "$man_keys") | tr '\n' ' ')"
fi
# The defaults ppnd.conf(5) states are the built-in ones (config_default_text).
if out=$(python3 - "$SRC/src/config.c" "$SRC/man/ppnd.conf.5" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = text[text.index("config_default_text[] ="):]
block = block[:block.index(";")]
section, default = None, {}
for line in re.findall(r'"((?:[^"\\]|\\.)*)\\n"', block):
    m = re.match(r"\[([a-z]+)\]", line)
    if m:
        section = m[1]
    elif "=" in line:
        k, v = (x.strip() for x in line.split("=", 1))
        default[f"{section}.{k}"] = v
section, bad, n = None, [], 0
for line in open(sys.argv[2]):
    m = re.match(r"\.SH \[([a-z]+)\]", line)
    if m:
        section = m[1]
    elif section and line.startswith(".BI "):
        for k, v in re.findall(r'(?:^\.BI |\\fP)([a-z\\-]+) "? ?= ?([^"\\]*)', line):
            key = f"{section}.{k.replace(chr(92) + '-', '-')}"
            if key in default:
                n += 1
                if v.strip() != default[key]:
                    bad.append(f"{key}: man says '{v.strip()}', built-in '{default[key]}'")
if bad or n == 0:
    print("; ".join(bad) or "no default compared")
    sys.exit(1)
print(f"{n} defaults")
PY
); then
  ok "ppnd.conf(5) states the built-in defaults ($out)"
else
  not_ok "ppnd.conf(5) states the built-in defaults" "$out"
fi
if [ -n "$table_keys" ] && [ "$table_keys" = "$conf_keys" ]; then
  ok "the installed ppnd.conf shows exactly the keys of the config table"
else
  not_ok "the installed ppnd.conf shows exactly the keys of the config table" "only in table: $(comm -23 <(echo "$table_keys") <(echo "$conf_keys") | tr '\n' ' ')" \
    "only in ppnd.conf: $(comm -13 <(echo "$table_keys") <(echo "$conf_keys") | tr '\n' ' ')"
fi
sed 's/^#\([a-z-]* *=\)/\1/' "$CONF" >"$T/uncommented.conf" 2>/dev/null
if out=$("$PPND" --check-config "$T/uncommented.conf" 2>&1); then
  ok "the installed ppnd.conf with every default uncommented passes --check-config"
else
  not_ok "the installed ppnd.conf with every default uncommented passes --check-config" "$out"
fi

# ---- bash completion against the command table ----
# shellcheck disable=SC1090
source "$COMPLETION" 2>/dev/null
if [ "$(echo $_ppnctl_commands | tr ' ' '\n' | sort)" = "$(echo "$commands" | sort)" ]; then
  ok "completion lists exactly the commands of the table"
else
  not_ok "completion lists exactly the commands of the table" "completion: $_ppnctl_commands" "table: $(echo $commands)"
fi
# Subcommands: the usage lines of `ppnctl GROUP --help`.
for group in "${!_ppnctl_subcommands[@]}"; do
  subs=$("$PPNCTL" "$group" --help | sed -n "s/^  ppnctl $group \([a-z-]*\).*/\1/p" | sort -u)
  if [ "$(echo ${_ppnctl_subcommands[$group]} | tr ' ' '\n' | sort)" = "$subs" ]; then
    ok "completion: subcommands of $group"
  else
    not_ok "completion: subcommands of $group" "completion: ${_ppnctl_subcommands[$group]}" "ppnctl: $(echo $subs)"
  fi
done
# Options: every --option in a command's usage is offered, and nothing else but --help.
for key in "${!_ppnctl_opts[@]}"; do
  usage=$("$PPNCTL" $key --help 2>&1)
  want=$( (echo "$usage" | grep -o -- '--[a-z][a-z-]*'; echo --help) | sort -u)
  got=$(echo ${_ppnctl_opts[$key]} | tr ' ' '\n' | sort -u)
  if [ "$want" = "$got" ]; then ok "completion: options of '$key'"; else not_ok "completion: options of '$key'" "ppnctl $key --help: $(echo $want)" "completion: $(echo $got)"; fi
done
# Global options: those of `ppnctl --help`.
want=$("$PPNCTL" --help | sed -n '/^global options:/,/^$/p' | grep -o -- '--[a-z][a-z-]*' | sort -u)
if [ "$want" = "$(echo $_ppnctl_global_opts | tr ' ' '\n' | sort -u)" ]; then
  ok "completion: global options"
else
  not_ok "completion: global options" "ppnctl --help: $(echo $want)" "completion: $_ppnctl_global_opts"
fi
# And it completes: "ppnctl v<TAB>" -> vm, "ppnctl vm s<TAB>" -> set show.
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _ppnctl; echo "${COMPREPLY[*]}"; }
got=$(complete_words ppnctl v)
if [ "$got" = "vm" ]; then ok "completion: 'ppnctl v' -> vm"; else not_ok "completion: 'ppnctl v' -> vm" "got: $got"; fi
got=$(complete_words ppnctl --json vm s)
if [ "$got" = "set show" ]; then ok "completion: 'ppnctl --json vm s' -> set show"; else not_ok "completion: 'ppnctl vm s'" "got: $got"; fi
got=$(complete_words ppnctl node set p)
if [ "$got" = "physical=" ]; then ok "completion: 'ppnctl node set p' -> physical="; else not_ok "completion: node set keys" "got: $got"; fi

# VM names come from the ledger, through the installed ppnctl.
export PPN_LEDGER=$T/ledger.db
PATH="$(dirname "$PPNCTL"):$PATH" ppnctl node set physical=4G >/dev/null
PATH="$(dirname "$PPNCTL"):$PATH" ppnctl vm add web-1 --min 256M --max 512M >/dev/null
got=$(PATH="$(dirname "$PPNCTL"):$PATH" complete_words ppnctl vm show w)
if [ "$got" = "web-1" ]; then ok "completion: 'ppnctl vm show w' -> web-1 (from the ledger)"; else not_ok "completion: VM names" "got: $got"; fi
got=$(PATH="$(dirname "$PPNCTL"):$PATH" complete_words ppnctl --ledger "$PPN_LEDGER" vm set web-1 m)
if [ "$got" = "min= max=" ]; then ok "completion: 'ppnctl vm set web-1 m' -> min= max="; else not_ok "completion: vm set keys" "got: $got"; fi

# ---- the unit ----
if [ -z "$UNIT" ]; then
  not_ok "systemd unit present for the checks below"
else
  for d in 'Type=notify' 'Delegate=yes' 'ProtectSystem=strict' 'RuntimeDirectory=ppn' 'StateDirectory=ppn' 'WatchdogSec='; do
    if grep -q "^$d" "$UNIT"; then ok "unit has $d"; else not_ok "unit has $d"; fi
  done
  exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
  want="$(abs "$SBINDIR")/ppnd --config $(abs "$SYSCONFDIR")/ppn/ppnd.conf"
  if [ "$exec_start" = "$want" ]; then ok "unit runs the installed ppnd with the installed config"; else not_ok "unit ExecStart" "got:  $exec_start" "want: $want"; fi
  if command -v systemd-analyze >/dev/null; then
    # verify resolves ExecStart on the real root: point it at the DESTDIR copy of ppnd; and
    # Documentation=man:ppnd(8) through MANPATH, at the installed page.
    sed "s|^ExecStart=[^ ]*|ExecStart=$PPND|" "$UNIT" >"$T/ppnd.service"
    out=$(cd "$T" && MANPATH=$MAN SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=yes "$T/ppnd.service" 2>&1)
    if [ -z "$out" ]; then ok "systemd-analyze verify ppnd.service: clean"; else not_ok "systemd-analyze verify ppnd.service" "$out"; fi
    # Least privilege (docs/operations.md, "Privileges"): the exposure score stays <= 2.0.
    # --threshold is in tenths; the score is the last line ("... level for X: 2.0 OK").
    out=$(cd "$T" && SYSTEMD_LOG_LEVEL=warning systemd-analyze security --offline=yes --threshold=20 "$T/ppnd.service" 2>&1)
    rc=$?
    score=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ "$rc" -eq 0 ] && [ -n "$score" ]; then
      ok "systemd-analyze security ppnd.service: exposure $score <= 2.0"
    else
      not_ok "systemd-analyze security ppnd.service: exposure <= 2.0" "exposure: ${score:-unknown} (exit $rc)" \
        "$(echo "$out" | grep '✗' | sort -k2 -t' ' | tail -8)"
    fi
  else
    skip "systemd-analyze verify ppnd.service" "systemd-analyze not installed"
    skip "systemd-analyze security ppnd.service: exposure <= 2.0" "systemd-analyze not installed"
  fi
fi

echo "1..$n"
[ "$failed" -eq 0 ]
