#!/usr/bin/env bash
# tools/lint.sh BUILDDIR: the lint `./run lint` runs, and `./run test` through the meson test
# 'lint' (suite 'lint'). Prints TAP (one case per tool); exits non-zero on any finding.
# - clang-format --Werror over the files in tools/clang-format-files only (.clang-format is
#   close to systemd's; the rest of the tree is not reformatted in one go: a file joins the list
#   once it is clean, and the list grows with the files people touch);
# - clang-tidy over every .c in src/ with the checks below (compile flags from BUILDDIR's
#   compile_commands.json), zero findings allowed; one clang-tidy per core.
set -euo pipefail
build=$(realpath "${1:-build}")
cd "$(dirname "$0")/.."
echo "1..2"
rc=0

mapfile -t fmt < <(grep -v '^#' tools/clang-format-files | grep .)
if clang-format --dry-run --Werror "${fmt[@]}" >&2; then
  echo "ok 1 - clang-format (${#fmt[@]} files)"
else
  echo "not ok 1 - clang-format: see above (clang-format -i FILE, then review the diff)"
  rc=1
fi

checks='-*'
for c in bugprone-suspicious-memset-usage bugprone-suspicious-string-compare bugprone-suspicious-missing-comma \
         bugprone-suspicious-semicolon bugprone-macro-repeated-side-effects bugprone-misplaced-operator-in-strlen-in-alloc \
         bugprone-bool-pointer-implicit-conversion bugprone-infinite-loop bugprone-terminating-continue \
         bugprone-too-small-loop-variable bugprone-integer-division misc-redundant-expression \
         clang-analyzer-deadcode.DeadStores clang-analyzer-security.FloatLoopCounter; do
  checks+=",$c"
done
mapfile -t srcs < <(find src -name '*.c' | sort)
out=$(printf '%s\0' "${srcs[@]}" | nice -n 5 xargs -0 -P "$(nproc)" -n 4 \
        clang-tidy -p "$build" --quiet --checks="$checks" --warnings-as-errors='*' 2>&1) && st=0 || st=$?
findings=$(grep -E 'warning:|error:' <<<"$out" | grep -v 'warnings generated' | sort -u || true)
if [ $st -eq 0 ] && [ -z "$findings" ]; then
  echo "ok 2 - clang-tidy (${#srcs[@]} files)"
else
  [ -n "$findings" ] && echo "$findings" >&2 || echo "$out" >&2
  echo "not ok 2 - clang-tidy: $(grep -c . <<<"${findings:-x}") finding(s), see above"
  rc=1
fi
exit $rc
