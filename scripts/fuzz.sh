#!/usr/bin/env bash
# Fuzzes the /mutate request body and the config.yaml parser for a bounded time per target.
#
#   scripts/fuzz.sh                  # 60 s per target
#   scripts/fuzz.sh 3600             # an hour per target
#   FUZZ_JOBS=2 scripts/fuzz.sh 600  # two fuzzing processes per target
#   FUZZ_KEEP=1 scripts/fuzz.sh 600  # also add the new interesting inputs to the committed corpus
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly --profile minimal`,
# `cargo install cargo-fuzz`). Without them it only replays the committed corpus on stable
# (tests/fuzz_corpus.rs), which `cargo test` also does in CI.
#
# The committed corpus is fuzz/corpus/<target>/; new inputs go to fuzz/new-corpus/<target>/ (ignored
# by git) unless FUZZ_KEEP=1. A crash is copied into fuzz/corpus/<target>/ so that it stays a
# regression test (commit it with the fix), and the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
jobs="${FUZZ_JOBS:-1}"
targets=(review config)

have_fuzzer() {
  rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo fuzz --version >/dev/null 2>&1
}

status=0
if have_fuzzer; then
  for target in "${targets[@]}"; do
    corpus="fuzz/corpus/${target}"
    new="fuzz/new-corpus/${target}"
    artifacts="fuzz/artifacts/${target}"
    mkdir -p "${corpus}" "${new}" "${artifacts}"
    [[ "${FUZZ_KEEP:-0}" == 1 ]] && new="${corpus}"
    parallel=()
    (( jobs > 1 )) && parallel=(-jobs="${jobs}" -workers="${jobs}")
    echo "==> cargo +nightly fuzz run ${target} for ${seconds} s"
    before=$(ls "${artifacts}" | wc -l)
    # Built with sanitizers, the whole dependency tree takes minutes: keep it outside the clone.
    if ! cargo +nightly fuzz run --target-dir "${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/workload-identity-webhook/fuzz-target}" \
        "${target}" "${new}" "${corpus}" -- \
        -max_total_time="${seconds}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${parallel[@]}"; then
      status=1
    fi
    if (( $(ls "${artifacts}" | wc -l) > before )); then
      for crash in "${artifacts}"/*; do
        cp -n "${crash}" "${corpus}/regression-$(basename "${crash}")"
      done
      echo "!!! ${target}: crash inputs copied into ${corpus}/regression-*; fix the bug and commit them" >&2
      status=1
    fi
  done
else
  echo "nightly Rust or cargo-fuzz missing: only replaying the committed corpus" >&2
fi
echo "==> corpus replay (cargo test --test fuzz_corpus)"
cargo test --test fuzz_corpus --locked || status=1
exit "${status}"
