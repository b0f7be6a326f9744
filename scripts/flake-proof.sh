#!/usr/bin/env bash
# Issue 9's proof that the suite does not flake: clone A runs the full suite RUNS times in a row
# while clone B runs it in a loop on the same cores; B is stopped once A is done.
#   scripts/flake-proof.sh [WORKDIR] [RUNS]     (defaults: /tmp/flake-proof, 5)
# Results: WORKDIR/summary (one line per run), logs WORKDIR/A-N.log and WORKDIR/B-N.log.
# Exit 0 only if every run of A passed. About 13 min per run on a 2-core machine.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/flake-proof}
runs=${2:-5}
rm -rf "$work" && mkdir -p "$work"
git clone -q "$here" "$work/A" && git clone -q "$here" "$work/B" || exit 2
for copy in A B; do (cd "$work/$copy" && ./dev test --co -q > "$work/setup-$copy.log" 2>&1) || { echo "setup of $copy failed"; exit 2; }; done
echo "start $(date -u +%H:%M:%S) at $(git -C "$work/A" rev-parse --short HEAD)" >> "$work/summary"
setsid bash -c '
  cd "$1/B"; i=0
  while [ ! -f "$1/done" ]; do
    i=$((i+1)); s=$(date +%s); ./dev test -q > "$1/B-$i.log" 2>&1; rc=$?
    [ -f "$1/done" ] || echo "B run $i rc=$rc $(( $(date +%s) - s ))s: $(tail -1 "$1/B-$i.log")" >> "$1/summary"
  done' _ "$work" &
loader=$!
failed=0
for i in $(seq 1 "$runs"); do
  s=$(date +%s)
  (cd "$work/A" && ./dev test -q > "$work/A-$i.log" 2>&1); rc=$?
  [ "$rc" -eq 0 ] || failed=$((failed+1))
  echo "A run $i rc=$rc $(( $(date +%s) - s ))s: $(tail -1 "$work/A-$i.log")" >> "$work/summary"
done
touch "$work/done"
kill -- "-$loader" 2>/dev/null
echo "A: $((runs - failed)) of $runs passed; done $(date -u +%H:%M:%S)" >> "$work/summary"
cat "$work/summary"
[ "$failed" -eq 0 ]
