#!/usr/bin/env bash
# tools/lint.sh BUILDDIR: the lint `./run lint` runs. Exits non-zero on any finding.
# - clang-format --Werror over the files in tools/clang-format-files only (.clang-format is
#   close to systemd's; the rest of the tree is not reformatted in one go: a file joins the list
#   once it is clean, and the list grows with the files people touch);
# - clang-tidy over every .c in src/ with the checks below (compile flags from BUILDDIR's
#   compile_commands.json), zero findings allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rc=0

mapfile -t fmt < <(grep -v '^#' tools/clang-format-files | grep .)
clang-format --dry-run --Werror "${fmt[@]}" || { echo "lint: clang-format: see above (clang-format -i FILE)" >&2; rc=1; }

checks='-*'
for c in bugprone-suspicious-memset-usage bugprone-suspicious-string-compare bugprone-suspicious-missing-comma \
         bugprone-suspicious-semicolon bugprone-macro-repeated-side-effects bugprone-misplaced-operator-in-strlen-in-alloc \
         bugprone-bool-pointer-implicit-conversion bugprone-infinite-loop bugprone-terminating-continue \
         bugprone-too-small-loop-variable bugprone-integer-division misc-redundant-expression \
         clang-analyzer-deadcode.DeadStores clang-analyzer-security.FloatLoopCounter; do
  checks+=",$c"
done
mapfile -t srcs < <(find src -name '*.c' | sort)
out=$(nice -n 5 clang-tidy -p "$build" --quiet --checks="$checks" --warnings-as-errors='*' "${srcs[@]}" 2>&1) || rc=1
grep -E 'warning:|error:' <<<"$out" | grep -v 'warnings generated' || true
[ $rc -eq 0 ] && echo "lint: clean (${#fmt[@]} files format-checked, ${#srcs[@]} files tidy-checked)"
exit $rc
