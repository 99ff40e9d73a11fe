#!/usr/bin/env bash
# The MLP (784-W-W-10) at several batch sizes and widths: rime's bench_mlp and
# the peers' ../shared/bench/py_peers_sweep.py in one run, then rime's ratio to
# each peer per (batch, width). Run from the project root:
#   PY=/tmp/peers/bin/python scripts/bench_sweep.sh
#   BATCHES=1,32,128,512,2048 WIDTHS=256,1024,2048 THREADS=1 scripts/bench_sweep.sh
# THREADS=1 pins everything to one core (taskset -c 0, RAYON_NUM_THREADS=1,
# the peers' --threads 1); the default is all cores.
set -u
PY=${PY:-python3}
peers=${PEERS:-../shared/bench}
batches=${BATCHES:-1,32,128,512,2048}
widths=${WIDTHS:-256,1024,2048}
threads=${THREADS:-}
cargo build --release --example bench_mlp >/dev/null 2>&1 || { echo "cargo build --example bench_mlp failed"; exit 1; }
pin=(); peer_threads=()
if [ -n "$threads" ]; then
  export RAYON_NUM_THREADS=$threads
  peer_threads=(--threads "$threads")
  [ "$threads" = 1 ] && pin=(taskset -c 0)
fi
echo "# $(uptime)"
out=$(mktemp)
"${pin[@]}" ./target/release/examples/bench_mlp --batch "$batches" --width "$widths" | tee -a "$out"
runs=""
for w in ${widths//,/ }; do
  for b in ${batches//,/ }; do
    work=$((b * (784 * w + w * w + 10 * w)))
    steps=$(awk -v w="$work" 'BEGIN { s = 4e8 / (w > 0 ? w : 1) / 3; if (s < 10) s = 10; if (s > 2000) s = 2000; printf "%d", s }')
    runs="$runs${runs:+,}$b:$w:$steps"
  done
done
for fw in jax torch tensorflow; do
  "$PY" -c "import $fw" 2>/dev/null || { echo "($fw not installed: skipped)"; continue; }
  "${pin[@]}" "$PY" "$peers/py_peers_sweep.py" "$fw" mlp --runs "$runs" "${peer_threads[@]}" 2>/dev/null \
    | grep 'steps/s' | tee -a "$out"
done
echo "# $(uptime)"
awk '
  /steps\/s/ { b = ""; w = ""; v = ""
               for (i = 1; i <= NF; i++) { if ($i ~ /^batch=/) b = substr($i, 7); if ($i ~ /^width=/) w = substr($i, 7)
                                           if ($(i+1) == "steps/s" && v == "") v = $i }
               k = b " " w; if ($1 == "rime") r[k] = v; else { p[$1 "|" k] = v; names[$1] = 1 } }
  END { for (k in r) for (n in names) if ((n "|" k) in p) { split(k, bw, " ")
          printf "ratio rime/%s batch=%s width=%s %.2f\n", n, bw[1], bw[2], r[k] / p[n "|" k] } }
' "$out" | sort -t= -k3,3n -k2,2n
rm -f "$out"
