#!/usr/bin/env bash
# ppnctl's usage from its one command table, through the built binary: for every command and
# subcommand, `ppnctl CMD --help`, the usage line of a usage error and the section title in
# ppnctl(8) carry the same synopsis, and the options of that synopsis are exactly the options
# --help lists (the command's option table). Speaks TAP.
# usage: test-usage.sh PATH/TO/ppnctl PATH/TO/ppnctl.8
set -u
PPNCTL=$1
MAN=$2
T=$(mktemp -d /tmp/test-usage.XXXXXX)
trap 'rm -rf "$T"' EXIT
export PPN_LEDGER=$T/ledger.db PPN_SOCKET=$T/none.sock LC_ALL=C.UTF-8
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }

# Paragraph N (1-based) of a text, its wrapped lines joined by single spaces.
paragraph() { awk -v want="$1" 'BEGIN { p = 1 } /^$/ { p++; next } p == want { sub(/^ +/, ""); printf "%s%s", sep, $0; sep = " " }'; }
# The section titles of ppnctl(8)'s COMMANDS, as plain text.
sections() {
  sed -n '/^\.SH COMMANDS/,/^\.SH /s/^\.SS //p' "$MAN" | sed -e 's/\\f[IBRP]//g' -e 's/\\-/-/g' -e 's/\\&//g'
}
# The --options of a text, sorted, one a line.
options() { grep -o -- '--[a-z][a-z-]*' | sort -u; }

# check NAME...: the agreement for one command (NAME is "stop" or "vm add").
check() {
  local name="$*" help usage note err want man
  help=$("$PPNCTL" "$@" --help 2>&1)
  usage=$(paragraph 1 <<<"$help")
  usage=${usage#usage: ppnctl }
  note=$(paragraph 2 <<<"$help")
  if [[ $usage != "$name"* ]]; then not_ok "ppnctl $name --help: a usage line" "$help"; return; fi
  # The usage error: its last line is the usage, with the note if the command has one.
  err=$("$PPNCTL" "$@" --no-such-option 2>&1 >/dev/null); local rc=$?
  want="ppnctl $name: unknown option '--no-such-option'"
  if [ $rc = 2 ] && [ "$(head -1 <<<"$err")" = "$want" ] &&
     { [ "$(tail -1 <<<"$err")" = "usage: ppnctl $usage" ] || [ "$(tail -1 <<<"$err")" = "usage: ppnctl $usage $note" ]; }; then
    ok "ppnctl $name: the usage error carries the --help usage"
  else
    not_ok "ppnctl $name: the usage error carries the --help usage" "exit $rc" "$err" "--help: $usage"
  fi
  # ppnctl(8): one section per alternative of the synopsis.
  man=$(sections | awk -v c="$name" '$0 == c || index($0, c " ") == 1 { printf "%s%s", sep, $0; sep = " | " }')
  if [ "$man" = "$usage" ]; then ok "ppnctl(8) titles '$name' with the --help usage"; else not_ok "ppnctl(8) section of '$name'" "man:    $man" "--help: $usage"; fi
  # The options of the synopsis are those of the table (the "options:" list of --help).
  local listed
  listed=$(sed -n '/^options:$/,$p' <<<"$help" | awk '/^  -/ { for (i = 1; i <= NF; i++) if ($i ~ /^--/) { print $i; next } }' | sort -u)
  if [ "$(options <<<"$usage")" = "$listed" ]; then
    ok "ppnctl $name: the synopsis names exactly the options of its table"
  else
    not_ok "ppnctl $name: synopsis and option table" "synopsis: $(options <<<"$usage" | paste -sd ' ')" "table: $(paste -sd ' ' <<<"$listed")"
  fi
}

commands=$("$PPNCTL" --help | sed -n '/^commands:/,/^$/p' | awk '/^  [a-z]/ { print $1 }')
[ "$(wc -l <<<"$commands")" -ge 10 ] && ok "the command table lists $(wc -l <<<"$commands") commands" || not_ok "the command table"
seen=()
for c in $commands; do
  subs=$("$PPNCTL" "$c" --help | sed -n "s/^  ppnctl $c \([a-z-]*\).*/\1/p")
  if [ -z "$subs" ]; then check "$c"; seen+=("$c"); continue; fi
  for s in $subs; do check "$c" "$s"; seen+=("$c $s"); done
done

# Every section title of ppnctl(8) is a command of the table.
stray=
while read -r title; do
  found=
  for s in "${seen[@]}"; do [[ $title == "$s "* || $title == "$s" ]] && found=1; done
  [ -n "$found" ] || stray+=" '$title'"
done < <(sections)
if [ -z "$stray" ]; then ok "every section of ppnctl(8) COMMANDS is a command of the table"; else not_ok "ppnctl(8) sections without a command" "$stray"; fi

echo "1..$n"
[ "$failed" -eq 0 ]
