#!/usr/bin/env bash
# The performance benchmark in one command, from a clean clone: builds the release binary, runs the
# criterion benchmarks of the pure core, then the load benchmark of the `serve` binary over
# loopback TLS, and prints markdown tables (also saved under $CARGO_TARGET_DIR/bench-report.md).
#
#   scripts/bench.sh                 # everything (about 15 minutes on 2 cores, with a built apiserver)
#   scripts/bench.sh --quick         # shorter runs, for a smoke test
#   scripts/bench.sh --instructions  # also callgrind instruction counts per admission (valgrind)
#
# Settings of the load benchmark are environment variables, listed at the top of
# benches/server_load.rs (WIW_DURATION_SECONDS, WIW_RATE, WIW_SOAK_SECONDS, ...); the ServiceAccount
# cache run takes WIW_SCALE_SERVICE_ACCOUNTS (100000; 2000 with --quick; 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

quick=0
instructions=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --instructions) instructions=1 ;;
    *) echo "usage: $0 [--quick] [--instructions]" >&2; exit 2 ;;
  esac
done

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$target_dir"
report="$target_dir/bench-report.md"
mkdir -p "$target_dir"

echo "==> cargo build --release" >&2
cargo build --release --locked --bin workload-identity-webhook >&2
export WIW_BIN="${WIW_BIN:-$target_dir/release/workload-identity-webhook}"

echo "==> cargo bench --no-run" >&2
cargo bench --locked --workspace --no-run >&2

criterion_args=()
if [ "$quick" = 1 ]; then
  criterion_args=(--warm-up-time 1 --measurement-time 2)
  export WIW_DURATION_SECONDS="${WIW_DURATION_SECONDS:-2}"
  export WIW_LATENCY_SECONDS="${WIW_LATENCY_SECONDS:-3}"
  export WIW_SOAK_SECONDS="${WIW_SOAK_SECONDS:-5}"
  export WIW_SCALE_SERVICE_ACCOUNTS="${WIW_SCALE_SERVICE_ACCOUNTS:-2000}"
  export WIW_SCALE_MAPPINGS="${WIW_SCALE_MAPPINGS:-10000}"
  export WIW_WORST_SECONDS="${WIW_WORST_SECONDS:-5}"
fi

{
  echo "## Benchmark run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -h | awk '/^Mem:/ {print $2}') RAM, $(uname -sr), $(rustc --version)"
} | tee "$report"

echo "==> cargo bench -p workload-identity-core --bench core" >&2
# Criterion's own per-benchmark lines go to stderr; the summary table to the report.
cargo bench --locked -p workload-identity-core --bench core -- "${criterion_args[@]}" 2>&1 \
  | awk '/^### Core/ {table=1} table {print; next} {print > "/dev/stderr"}' | tee -a "$report"

if [ "$instructions" = 1 ]; then
  if command -v valgrind >/dev/null; then
    echo "==> callgrind instruction counts" >&2
    binary=$(ls -t "$target_dir"/release/deps/core_instructions-* | grep -v '\.d$' | head -1)
    {
      echo
      echo "### Core, instructions per operation (valgrind callgrind, setup excluded)"
      echo
      echo "| scenario | instructions per admission |"
      echo "|---|---|"
    } | tee -a "$report"
    for scenario in pod-1-container pod-10-containers+2-init pod-50-containers pod-1-container-3-clouds \
      service-account pod-no-identity lookup-10 lookup-1000 lookup-100000; do
      iterations=500
      case "$scenario" in lookup-*) iterations=20000 ;; pod-50-*) iterations=100 ;; esac
      out=$(mktemp)
      WIW_SCENARIO="$scenario" WIW_ITERATIONS="$iterations" valgrind --tool=callgrind \
        --callgrind-out-file="$out" --collect-atstart=no '--toggle-collect=*core_instructions*measured*' \
        "$binary" >/dev/null 2>&1
      total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
      per=$((total / iterations))
      case "$scenario" in lookup-*) per="$((per / 5)) (per mapping_for call)" ;; esac
      echo "| $scenario | $per |" | tee -a "$report"
      rm -f "$out"
    done
  else
    echo "valgrind not found: skipping instruction counts" >&2
  fi
fi

echo "==> cargo bench --bench server_load" >&2
cargo bench --locked --bench server_load 2>&1 \
  | awk '/^(###|\||RSS|Latency|Webhook|Peak)/ || /^$/ {print; next} {print > "/dev/stderr"}' | tee -a "$report"

if [ "${WIW_SCALE_SERVICE_ACCOUNTS:-100000}" != 0 ]; then
  # Memory with many ServiceAccounts cached needs a real apiserver: built (or taken from its
  # cache) by the same script as the test suite's, then tests/scale.rs creates them and measures.
  echo "==> ServiceAccount cache at scale (tests/scale.rs; WIW_SCALE_SERVICE_ACCOUNTS=0 skips)" >&2
  bash tests/control-plane/build.sh >&2
  cargo test --release --locked --test scale -- --ignored --nocapture --test-threads=1 2>&1 \
    | awk '/^(Webhook memory|\|)/ || /^$/ {print; next} {print > "/dev/stderr"}' | tee -a "$report"
fi

echo >&2
echo "report saved to $report" >&2
