#!/usr/bin/env bash
# Compares two release builds on one benchmark in a single invocation. The builds' benches run
# alternately (old, new, old, new, …), so whatever else loads the machine meanwhile falls on both
# alike; absolute figures move with that load, the ratios much less. Prints each build's medians
# (over every sample of every round) and the ratios.
#
#   deploy/local/bench-compare.sh OLD_TARGET_DIR NEW_TARGET_DIR bench-scan|bench-jobs|bench-fairness [BENCH ARGS]
#   e.g. deploy/local/bench-compare.sh /var/tmp/old /var/tmp/new bench-scan --runs 3 --scales 1
#        BENCH_ROUNDS=2 deploy/local/bench-compare.sh /var/tmp/old /var/tmp/new bench-jobs 2000 3 postgres 2
#
# Each target dir holds a `cargo build --release --bins` of its commit: a bench starts the
# `metasync-worker` next to itself, so each build measures its own worker. BENCH_ROUNDS (default
# 3) is how many times each build's bench runs. The raw outputs stay in a temporary directory,
# named at the end. "perf" is new speed over old (old/new for times and sizes, new/old for rates):
# below 0.95 is flagged. bench-fairness talks only HTTP and SQL, so its file also builds into an
# older commit (copy tests/src/bin/bench-fairness.rs into it) to measure that commit's queue.
set -euo pipefail

usage() {
    sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
(($# >= 3)) || usage
old_dir="$1"
new_dir="$2"
bench="$3"
shift 3
rounds="${BENCH_ROUNDS:-3}"
for dir in "$old_dir" "$new_dir"; do
    for bin in "$bench" metasync-worker; do
        [[ -x "$dir/release/$bin" ]] || {
            echo "bench-compare: $dir/release/$bin is missing: cargo build --release --bins" >&2
            exit 1
        }
    done
done

out="$(mktemp -d "${TMPDIR:-/tmp}/bench-compare.XXXXXX")"
echo "bench-compare: $bench $* | old $old_dir | new $new_dir | $rounds rounds | logs in $out" >&2

# One sample per line: side, metric, value, and whether lower or higher is better.
samples="$out/samples.tsv"
: >"$samples"
for ((round = 1; round <= rounds; round++)); do
    for side in old new; do
        dir="$old_dir"
        [[ $side == new ]] && dir="$new_dir"
        log="$out/$side-$round.txt"
        read -r load1 _ </proc/loadavg
        echo "bench-compare: round $round/$rounds, $side (load average $load1), $(date -u +%T)" >&2
        "$dir/release/$bench" "$@" | tee "$log" >&2
        printf '%s\tload average (1 min) at start\t%s\tinfo\n' "$side" "$load1" >>"$samples"
        # bench-scan: a "postgres-x1 (2100 tables, 3 runs)" header, then "  name  value unit" rows
        # whose "(runs: …)" lists the samples. bench-jobs: one line per fleet, and the totals.
        gawk -v side="$side" '
            function emit(metric, value, better) {
                printf "%s\t%s\t%s\t%s\n", side, metric, value, better
            }
            /^[a-z]+-x[0-9]+ \(/ { section = $1; next }
            section != "" && /^  / {
                name = ""
                for (i = 1; i <= NF && $i !~ /^[0-9.]+$/; i++) name = name (name == "" ? "" : " ") $i
                if (i > NF) next
                unit = (i < NF && $(i + 1) ~ /^(s|MB)$/) ? " (" $(i + 1) ")" : ""
                if (match($0, /\(runs: ([^)]*)\)/, m)) {
                    n = split(m[1], v, " ")
                    for (j = 1; j <= n; j++) emit(section " " name unit, v[j], "lower")
                } else {
                    emit(section " " name unit, $i, "lower")
                }
                next
            }
            match($0, /accepts ([0-9.]+) fresh connections/, m) {
                emit("source server fresh connections/s (reference)", m[1], "higher")
            }
            match($0, /^workers=([0-9]+) \(([a-z]+)/, m) {
                fleet = "workers=" m[1] " " m[2] ":"
                if (match($0, /: ([0-9.]+) jobs\/s/, m)) emit(fleet " jobs/s", m[1], "higher")
                if (match($0, /CPU ([0-9.]+) ms\/job/, m)) emit(fleet " machine CPU ms/job", m[1], "lower")
                if (match($0, /p50 ([0-9.]+) ms/, m)) emit(fleet " idle pickup p50 ms", m[1], "lower")
                if (match($0, /p99 ([0-9.]+) ms/, m)) emit(fleet " idle pickup p99 ms", m[1], "lower")
                if (match($0, /redis ([0-9.]+) commands/, m)) emit(fleet " redis commands/job", m[1], "lower")
            }
            # bench-fairness: one "fairness:" line per run.
            /^fairness: / {
                if (match($0, /: ([0-9.]+) jobs\/s/, m)) emit("fairness: tenant A jobs/s", m[1], "higher")
                if (match($0, /p50 ([0-9.]+) ms/, m)) emit("fairness: tenant B claim wait p50 ms", m[1], "lower")
                if (match($0, /p99 ([0-9.]+) ms/, m)) emit("fairness: tenant B claim wait p99 ms", m[1], "lower")
            }
            match($0, /^catalog PostgreSQL statements per job.*: ([0-9.]+)$/, m) {
                emit("catalog statements/job (1 worker)", m[1], "lower")
            }
        ' "$log" >>"$samples"
    done
done

echo
echo "$bench $* — medians over $rounds alternating rounds (old $old_dir, new $new_dir)"
gawk -F'\t' '
    function median(list,    v, n, i, j, t) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++)
            for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    !($2 in better) { order[++keys] = $2; better[$2] = $4 }
    { values[$1, $2] = values[$1, $2] " " $3; count[$1, $2]++ }
    END {
        printf "%-52s %10s %10s %8s %6s  %s\n", "metric", "old", "new", "new/old", "perf", "samples"
        for (k = 1; k <= keys; k++) {
            key = order[k]
            o = median(values["old", key]); n = median(values["new", key])
            ratio = o == 0 ? 0 : n / o
            perf = better[key] == "higher" ? ratio : (n == 0 ? 0 : o / n)
            flag = better[key] == "info" ? "" : (perf < 0.95 ? "  < 0.95" : "")
            printf "%-52s %10.3f %10.3f %8.3f %6s  %d/%d%s\n", key, o, n, ratio,
                better[key] == "info" ? "-" : sprintf("%.3f", perf), count["old", key], count["new", key], flag
        }
    }
' "$samples"
echo "raw outputs: $out"
