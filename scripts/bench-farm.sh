#!/usr/bin/env bash
# bench-farm.sh: end-to-end mask farm time (`samdiffsr run`: embedded NATS, one raft
# voter, local workers, label maps exported) against the local pool (`samdiffsr masks`)
# on the same synthetic images and cores, interleaved ROUNDS times.
# usage: scripts/bench-farm.sh [N_IMAGES] [SIZE] [ROUNDS]
set -euo pipefail
N=${1:-48}; SIZE=${2:-512x512}; ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
go build -o "$W/samdiffsr" ./cmd/samdiffsr
B="$W/samdiffsr"
export SAMDIFFSR_CONFIG= SAMDIFFSR_CLUSTER_COORDINATOR_RAFT_ADDR=127.0.0.1:${RAFT_PORT:-17499}
"$B" data synth --out "$W/data" --n "$N" --size "$SIZE" --log-level warn >/dev/null
CORES=$(nproc)
now() { date +%s.%N; }
for i in $(seq 1 "$ROUNDS"); do
  rm -rf "$W/local" "$W/farm" "$W/state"
  s=$(now); "$B" masks --data "$W/data/train" --out "$W/local" --workers "$CORES" --log-level warn >/dev/null; e=$(now)
  echo "round $i local $(echo "$e - $s" | bc) s"
  s=$(now); "$B" run --data "$W/data/train" --state "$W/state" --masks-out "$W/farm" --workers "$CORES" --log-level warn >/dev/null; e=$(now)
  echo "round $i farm  $(echo "$e - $s" | bc) s"
done
diff -r "$W/local" "$W/farm" >/dev/null && echo "label maps identical" || { echo "label maps differ"; exit 1; }
