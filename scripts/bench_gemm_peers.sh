#!/usr/bin/env bash
# f32 matrix products, rime against its peers in one run: rime's
# examples/bench_matmul, the `gemm` crate (scripts/gemm_peer, built with its
# AVX-512 feature; on a CPU without AVX-512 its AVX2/FMA kernel runs), and
# torch, numpy and jax through ../shared/bench/py_peers_sweep.py. Square sizes
# (n=...) and the 8 products of one training step of the bench MLP
# (784-256-256-10, batch 128; same labels and transposes everywhere), on 1 and
# 2 threads, one framework after the other for each thread count. Each figure
# is a median GFLOP/s over 7 repetitions of about 50 ms, after a checked
# warm-up product. Then a table per thread count: GFLOP/s of each framework,
# rime / best peer, and rime as % of bench_fma's peak for that thread count.
# Run from the project root (on a quiet machine):
#   PY=/tmp/peers/bin/python scripts/bench_gemm_peers.sh
#   SIZES=256,1024 THREADS=2 PEER_FWS="torch numpy" scripts/bench_gemm_peers.sh
# THREADS=1 pins everything to one core (taskset -c 0, RAYON_NUM_THREADS=1,
# gemm's Parallelism::None, the peers' --threads 1); 2 threads is
# RAYON_NUM_THREADS=2, Parallelism::Rayon(2), --threads 2 (jax: XLA's default).
# NO_BUILD=1 skips the cargo builds (the binaries are already built).
# PEERS=<dir> points at the peers' bench scripts (default ../shared/bench).
set -u
PY=${PY:-python3}
peers=${PEERS:-../shared/bench}
sizes=${SIZES:-256,512,1024,2048}
thread_counts=${THREADS:-1 2}
peer_fws=${PEER_FWS:-torch numpy jax}
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --example bench_matmul --example bench_fma >/dev/null 2>&1 \
    || { echo "cargo build --example bench_matmul/bench_fma failed"; exit 1; }
  cargo build --release --manifest-path scripts/gemm_peer/Cargo.toml --target-dir target/gemm_peer >/dev/null 2>&1 \
    || { echo "cargo build of scripts/gemm_peer failed"; exit 1; }
fi
ex=./target/release/examples
echo "# $(uptime)"
echo "# $(lscpu | grep 'Model name' | tr -s ' ')"
echo "# peers: $("$PY" -c "import importlib.metadata as m, importlib.util as u
print(' '.join(p + ' ' + m.version(p) for p in ('torch', 'numpy', 'jax') if u.find_spec(p)))" 2>/dev/null)"
out=$(mktemp)
RAYON_NUM_THREADS=2 $ex/bench_fma | tee -a "$out"
for t in ${thread_counts//,/ }; do
  pin=(); [ "$t" = 1 ] && pin=(taskset -c 0)
  # every line gets its thread count in front, for the join below
  tag() { sed -u "s/^/T=$t /" | tee -a "$out"; }
  RAYON_NUM_THREADS=$t "${pin[@]}" $ex/bench_matmul --sizes "$sizes" --shapes | tag
  RAYON_NUM_THREADS=$t "${pin[@]}" target/gemm_peer/release/gemm_peer --sizes "$sizes" --shapes --threads "$t" | tag
  for fw in $peer_fws; do
    "$PY" -c "import $fw" 2>/dev/null || { echo "($fw not installed: skipped)"; continue; }
    "${pin[@]}" "$PY" "$peers/py_peers_sweep.py" "$fw" sgemm --sizes "$sizes" --shapes --threads "$t" 2>/dev/null \
      | grep 'GFLOP/s' | tag
    [ "${PIPESTATUS[0]}" = 0 ] || echo "($fw: $peers/py_peers_sweep.py failed)"
  done
done
echo "# $(uptime)"
awk -v fws="rime gemm $peer_fws" '
  $1 == "fma" && $2 == "peak" { peak[substr($3, 9)] = $4; next }
  $1 ~ /^T=/ && $6 == "GFLOP/s" { t = substr($1, 3); fw = $2; label = $4
    if (!((t, label) in seen)) { seen[t, label] = 1; order[t, ++nl[t]] = label }
    if (!(t in tseen)) { tseen[t] = 1; ts[++nt] = t }
    v[t, label, fw] = $5 }
  END { nf = split(fws, f, " ")
    for (i = 1; i <= nt; i++) { t = ts[i]
      printf "\nthreads=%s (fma peak %s GFLOP/s), GFLOP/s:\n", t, (t in peak) ? peak[t] : "?"
      printf "%-22s", "label"; for (j = 1; j <= nf; j++) printf " %7s", f[j]
      printf "  %-6s %10s %10s\n", "best", "rime/best", "rime%peak"
      for (l = 1; l <= nl[t]; l++) { label = order[t, l]; best = 0; who = "-"
        printf "%-22s", label
        for (j = 1; j <= nf; j++) { k = t SUBSEP label SUBSEP f[j]
          printf " %7s", (k in v) ? v[k] : "-"
          if (f[j] != "rime" && (k in v) && v[k] + 0 > best) { best = v[k] + 0; who = f[j] } }
        r = v[t, label, "rime"] + 0; ratio = "-"; ofpeak = "-"
        if (best > 0 && r > 0) ratio = sprintf("%.2f", r / best)
        if ((t in peak) && r > 0) ofpeak = sprintf("%.0f%%", 100 * r / peak[t])
        printf "  %-6s %10s %10s\n", who, ratio, ofpeak } } }
' "$out"
rm -f "$out"
