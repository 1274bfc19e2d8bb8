#!/usr/bin/env bash
# Folds what `make fuzz` found into the committed corpus of TARGET:
# afl-cmin keeps the inputs of fuzz/out/TARGET/default/queue (and the
# corpus's own) that cover distinct edges; of those, at most
# FUZZ_CORPUS_MAX (default 300), spread over the sizes, become
# fuzz/corpus/TARGET/afl-<sha1>, replacing the earlier afl-* files. The
# seed-* files stay.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:?usage: scripts/fuzz-corpus.sh TARGET}
max=${FUZZ_CORPUS_MAX:-300}
queue=fuzz/out/$t/default/queue
[ -d "$queue" ] || { echo "no $queue: run FUZZ_TARGET=$t make fuzz first" >&2; exit 1; }
# afl-cmin.bash of the AFL++ that `make fuzz` built (afl.rs keeps it here).
bin_dir=$(ls -d "$HOME"/.local/share/afl.rs/rustc-*/afl.rs-*/afl/bin | tail -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/in"
cp "$queue"/id:* "$tmp/in/"
cp fuzz/corpus/"$t"/* "$tmp/in/" 2>/dev/null || true
PATH=$bin_dir:$PATH AFL_SKIP_CPUFREQ=1 nice -n 19 "$bin_dir/afl-cmin.bash" -i "$tmp/in" -o "$tmp/min" -t 2000 \
    -- "fuzz/target/afl/release/$t" >"$tmp/cmin.log" 2>&1 || { tail -5 "$tmp/cmin.log" >&2; exit 1; }
rm -f fuzz/corpus/"$t"/afl-*
# At most $max, spread over the sizes (every k-th in size order): the
# long interleavings stay next to the short cases, and the replay quick.
find "$tmp/min" -type f -printf '%s %p\n' | sort -n | cut -d' ' -f2- >"$tmp/by-size"
total=$(wc -l <"$tmp/by-size")
step=$(((total + max - 1) / max))
[ "$step" -ge 1 ] || step=1
awk -v k="$step" 'NR % k == 0' "$tmp/by-size" | while read -r f; do
    cp "$f" "fuzz/corpus/$t/afl-$(sha1sum "$f" | cut -c1-16)"
done
# A seed that cmin kept is a seed already: no afl- copy of it.
for s in fuzz/corpus/"$t"/seed-*; do
    rm -f "fuzz/corpus/$t/afl-$(sha1sum "$s" | cut -c1-16)"
done
echo "$t: $(ls fuzz/corpus/"$t" | grep -c '^afl-') afl inputs and $(ls fuzz/corpus/"$t" | grep -c '^seed-') seeds in fuzz/corpus/$t ($(du -sh fuzz/corpus/"$t" | cut -f1))"
