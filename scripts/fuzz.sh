#!/usr/bin/env bash
# `make fuzz`: runs the fuzz targets of fuzz/ under AFL++ (afl.rs, stable
# Rust), one after the other, each for FUZZ_SECONDS (default 60), or for
# FUZZ_EXECS executions each (the same work on a fast or a busy machine),
# starting from the committed corpus (fuzz/corpus/TARGET/).
# FUZZ_TARGET=NAME runs one.
# Installs cargo-afl and builds AFL++ from its bundled sources the first
# time. Prints executions, speed and crashes per target; a crash's input is
# in fuzz/out/TARGET/default/crashes/ (hangs in .../hangs/). To keep a fix,
# copy the input to fuzz/regressions/TARGET/: `make test` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
execs=${FUZZ_EXECS:-}
if [ -n "$execs" ]; then
    [[ "$execs" =~ ^[1-9][0-9]*$ ]] || { echo "FUZZ_EXECS=$execs: say a number of executions" >&2; exit 2; }
    limit=(-E "$execs")
    what="$execs executions"
else
    [[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "FUZZ_SECONDS=$seconds: say a number of seconds" >&2; exit 2; }
    limit=(-V "$seconds")
    what="${seconds}s"
fi
all=(descriptors device_ops chain control_line)
if [ -n "${FUZZ_TARGET:-}" ]; then
    if [[ " ${all[*]} " != *" $FUZZ_TARGET "* ]]; then
        echo "FUZZ_TARGET=$FUZZ_TARGET: not a target (${all[*]})" >&2
        exit 2
    fi
    targets=("$FUZZ_TARGET")
else
    targets=("${all[@]}")
fi

if ! cargo afl --version >/dev/null 2>&1; then
    echo "=== installing cargo-afl (crates.io)"
    cargo install --locked cargo-afl@0.18.2
fi
# AFL++ itself, built once per Rust toolchain; "already built" is fine.
echo "=== AFL++ for this toolchain: cargo afl config --build"
if ! out=$(cargo afl config --build 2>&1); then
    if ! grep -q "already built" <<<"$out"; then
        echo "$out" >&2
        exit 1
    fi
    echo "already built"
fi

echo "=== building the targets: cargo afl build --release"
cargo afl build --release --features afl --manifest-path fuzz/Cargo.toml --target-dir fuzz/target/afl \
    $(printf -- '--bin %s ' "${targets[@]}")

# The machine is shared: one fuzzer at a time, at the lowest priority.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_QUIET=1
summary=()
found=0
for t in "${targets[@]}"; do
    out_dir=fuzz/out/$t
    # The last run's findings stay one run long, next to the new ones.
    if [ -d "$out_dir" ]; then
        rm -rf "$out_dir.previous"
        mv "$out_dir" "$out_dir.previous"
    fi
    mkdir -p "$out_dir"
    echo "=== fuzzing $t for $what (corpus fuzz/corpus/$t, output $out_dir)"
    # AFL's own timeout for a hang: well above any input's time.
    nice -n 19 cargo afl fuzz -i "fuzz/corpus/$t" -o "$out_dir" "${limit[@]}" -t 2000 \
        "fuzz/target/afl/release/$t" >"$out_dir/afl.log" 2>&1 || {
        echo "afl-fuzz failed; its log:" >&2
        tail -30 "$out_dir/afl.log" >&2
        exit 1
    }
    stats=$out_dir/default/fuzzer_stats
    get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
    crashes=$(get saved_crashes)
    hangs=$(get saved_hangs)
    line=$(printf '%-13s %12s execs  %6ss  %8s/s  corpus %5s  crashes %s  hangs %s' "$t" "$(get execs_done)" \
        "$(get run_time)" "$(get execs_per_sec)" "$(get corpus_count)" "$crashes" "$hangs")
    echo "$line"
    summary+=("$line")
    if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
        found=1
        ls "$out_dir"/default/crashes/id:* "$out_dir"/default/hangs/id:* 2>/dev/null | sed 's/^/    /'
    fi
done

echo
echo "=== fuzzing summary ($what per target)"
printf '%s\n' "${summary[@]}"
if [ "$found" != 0 ]; then
    echo "crashes or hangs found: their inputs are listed above"
    exit 1
fi
