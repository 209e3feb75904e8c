#!/usr/bin/env bash
# Fuzzing: installs cargo-fuzz when it is missing, builds the fuzz targets of fuzz/ (libFuzzer
# coverage on the stable toolchain: RUSTC_BOOTSTRAP=1, no sanitizer) and runs each one for a
# bounded time, starting from its committed seeds and the corpus of earlier runs. A crash, a
# panic, a failed invariant or an input that hangs fails the script and names the input that
# did it.
#
# FUZZ_SECONDS: seconds per target (default 45). FUZZ_TARGETS: the targets to run (default all).
# Measured on the 2-core test machine: installing cargo-fuzz 0.5 to 1 min (once per machine),
# building the targets 4.5 to 6 min (once per checkout), the three runs 2.3 min.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-45}"
jobs="${CARGO_BUILD_JOBS:-2}"
read -r -a targets <<<"${FUZZ_TARGETS:-manifest_parse template_render jmespath_map}"
cargo_fuzz_version=0.13.2

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  cargo install --locked -j"$jobs" --version "$cargo_fuzz_version" cargo-fuzz
fi
# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++
fi

echo "== cargo fmt --check (fuzz)"
cargo fmt --check

echo "== building the fuzz targets"
started=$(date +%s)
RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS="$jobs" cargo fuzz build -s none
echo "== built in $(( $(date +%s) - started )) s"

mkdir -p target/fuzz-logs
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  inputs=("corpus/$target")
  [ -d "seeds/$target" ] && inputs+=("seeds/$target")
  extra=()
  case "$target" in
    manifest_parse)
      # The shipped manifests are seeds too.
      mkdir -p target/shipped-manifests
      cp ../manifests/*.yaml target/shipped-manifests/
      inputs+=(target/shipped-manifests)
      extra+=(-dict=dicts/manifest.dict -max_len=16384) ;;
    jmespath_map) extra+=(-dict=dicts/jmespath.dict) ;;
  esac
  log="target/fuzz-logs/$target.log"
  stamp="target/fuzz-logs/$target.started"
  touch "$stamp"
  echo "== fuzzing $target for ${seconds} s"
  status=0
  RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -j1 "$target" "${inputs[@]}" -- \
    -max_total_time="$seconds" -timeout=20 -len_control=0 -print_final_stats=1 "${extra[@]}" \
    >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+[[:space:]]+DONE|Done [0-9]+ runs|stat::number_of_executed_units)' "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "!! $target failed (exit $status); the last lines of $PWD/$log:"
    grep -v -E '^ +([0-9]+: |at )' "$log" | tail -n 40 | cut -c 1-400
    while IFS= read -r artifact; do
      echo "!! input: $PWD/$artifact"
      echo "!! reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $target $artifact"
    done < <(find "artifacts/$target" -type f -newer "$stamp")
    failed+=("$target")
  fi
done

passed=$(( ${#targets[@]} - ${#failed[@]} ))
if [ "${#failed[@]}" -gt 0 ]; then
  echo "!! fuzzing failed: ${failed[*]}"
  echo "fuzzing: $passed passed, ${#failed[@]} failed"
  exit 1
fi
echo "== fuzzing: no crash in ${targets[*]}"
echo "fuzzing: $passed passed, 0 failed"
