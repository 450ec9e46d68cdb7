#!/usr/bin/env bash
# run-target: fuzz one libFuzzer target for a while, from its committed seeds.
# Usage: smoke.sh TARGET SEED_DIR MAX_LEN SECONDS
# New inputs go to a working corpus beside the binary (<target>.corpus/), never into the
# committed seeds; a crash leaves its input in <target>.artifacts/ and fails (exit 1).
# Appends "date target seconds execs result" to fuzz-history.tsv beside the binary.
set -uo pipefail
target=$1 seeds=$2 max_len=$3 seconds=$4
name=$(basename "$target")
work="$target.corpus" artifacts="$target.artifacts/" log="$target.log"
mkdir -p "$work" "$artifacts"

# detect_leaks: LSan after every input; timeout 10 s per input catches hangs; 1 GiB RSS bound.
"$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=1024 \
  -detect_leaks=1 -print_final_stats=1 -artifact_prefix="$artifacts" "$work" "$seeds" >"$log" 2>&1
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
result=ok
[ $rc -eq 0 ] || result="FAILED (exit $rc)"
printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$name" "$seconds" "${execs:-0}" "$result" \
  >>"$(dirname "$target")/fuzz-history.tsv"
echo "$name: ${seconds}s, ${execs:-0} inputs, ${cov:-cov: ?}, corpus $(ls "$work" | wc -l) files: $result"
if [ $rc -ne 0 ]; then
  grep -E 'ERROR|SUMMARY|check failed|==[0-9]+==' "$log" | head -n 20
  echo "full log: $log; reproducer: $(ls -t "$artifacts" | head -n1)"
fi
exit $rc
