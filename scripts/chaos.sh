#!/usr/bin/env bash
# Chaos run: N seeded fault schedules (tests/e2e/test_chaos.py), each one 5-round session on this machine
# with SIGKILLs of the controller, the combiner and clients; the scenario follows from the seed, so
# consecutive seeds rotate through every scenario. Each seed is printed with the command that replays it;
# at the end a table adds up faults injected, sessions run, finished, models checked and anomalies.
#
#   scripts/chaos.sh [N=20] [FIRST_SEED=<seconds since the epoch: new seeds every run>]
#
# Exit code 0 when no session showed an anomaly. Logs of every seed stay in the folder printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
FIRST=${2:-$(date +%s)}
OUT=$(mktemp -d /tmp/scaleout-chaos-XXXXXX)
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
echo "[chaos] $N seeds from $FIRST; logs in $OUT"
for i in $(seq 0 $((N - 1))); do
  seed=$((FIRST + i))
  before=$(wc -l < "$RESULTS")
  start=$(date +%s)
  E2E_CHAOS_SEED=$seed E2E_CHAOS_RESULTS="$RESULTS" timeout 400 .venv/bin/python -m pytest -q -s \
    -p no:cacheprovider tests/e2e/test_chaos.py -k test_chaos_replay > "$OUT/seed-$seed.log" 2>&1
  code=$?
  if [ "$(wc -l < "$RESULTS")" = "$before" ]; then  # the test died before it could record its result
    printf '{"scenario": "?", "seed": %d, "faults": 0, "sessions": 1, "finished": 0, "models_checked": 0, "anomalies": ["no result: pytest exited %d, see %s"]}\n' \
      "$seed" "$code" "$OUT/seed-$seed.log" >> "$RESULTS"
  fi
  verdict=$([ $code = 0 ] && echo ok || echo "FAILED (log: $OUT/seed-$seed.log)")
  echo "[chaos] seed $seed $(tail -n 1 "$RESULTS" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["scenario"])')" \
       "$(($(date +%s) - start))s: $verdict; replay: E2E_CHAOS_SEED=$seed .venv/bin/pytest tests/e2e/test_chaos.py -k replay -s"
done
.venv/bin/python - "$RESULTS" <<'EOF'
import json
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
keys = ("faults", "sessions", "finished", "models_checked")
by = defaultdict(lambda: dict.fromkeys(keys + ("anomalies",), 0))
for row in rows:
    for name in (row["scenario"], "total"):
        for k in keys:
            by[name][k] += row[k]
        by[name]["anomalies"] += len(row["anomalies"])
print("\n| scenario | faults injected | sessions run | finished | models checked | anomalies |")
print("|---|---:|---:|---:|---:|---:|")
for name in sorted(n for n in by if n != "total") + ["total"]:
    b = by[name]
    label = f"**{name}**" if name == "total" else name
    print(f"| {label} | {b['faults']} | {b['sessions']} | {b['finished']} | {b['models_checked']} | {b['anomalies']} |")
for row in rows:
    for anomaly in row["anomalies"]:
        print(f"anomaly (seed {row['seed']}, {row['scenario']}): {anomaly[:400]}")
sys.exit(1 if by["total"]["anomalies"] else 0)
EOF
