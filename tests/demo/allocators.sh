#!/usr/bin/env bash
# tests/demo/allocators.sh - doc/allocators.md's figures: the demo's quota
# run (relayd under attack, 64 MiB quota) for each allocator, with and
# without the chunk pool, RUNS times each, interleaved (run 1 of every
# combination, then run 2 ...), so that a noisy minute of the machine
# falls on all of them.
#
#   tests/demo/allocators.sh [--bin DIR] [--out DIR] [--runs N]
#                            [--allocators "glibc jemalloc mimalloc"]
#
# Writes to OUT (default build/allocators):
#   results.txt     one line per run: allocator, pool, run, the RESULT line
#   table.md        per combination: peak RSS of every run, median, worst,
#                   median peak RSS / quota, idle RSS, RSS 2 s after the
#                   attack, and how many runs met the demo's two RSS targets
#                   (peak RSS <= 1.10 x quota + idle RSS; RSS after <= idle
#                   RSS + 0.10 x quota)
#   allocators.png  tracked bytes and RSS over time, run 1 of each
#                   combination (gnuplot)
#   <allocator>-pool<on|off>-<run>/  each run's demo output (CSV, logs)
# Exits 0 when every run was defended (attackers killed, no honest client
# killed); the RSS targets are reported, not enforced, here.
set -u
export LC_ALL=C
BIN=build/examples
OUT=build/allocators
RUNS=5
ALLOCATORS="glibc jemalloc mimalloc"
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --allocators) ALLOCATORS=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "allocators.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
HERE=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
: >"$OUT/results.txt"
kv() { printf ' %s\n' "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p" | head -n 1; }

SECONDS=0
undefended=0
for run in $(seq 1 "$RUNS"); do
    for a in $ALLOCATORS; do
        for pool in on off; do
            d="$OUT/$a-pool$pool-$run"
            "$HERE/examples/demo.sh" --bin "$BIN" --out "$d" --allocator "$a" --pool "$pool" \
                --only quota >"$d.log" 2>&1
            line=$(grep '^RESULT scenario=quota' "$d.log" || true)
            if [ -z "$line" ]; then
                echo "allocators.sh: $a pool=$pool run $run printed no RESULT line (see $d.log)" >&2
                undefended=$((undefended + 1))
                continue
            fi
            echo "$a $pool $run $line" >>"$OUT/results.txt"
            ak=$(kv "$line" attackers_killed) hk=$(kv "$line" honest_killed)
            [ "${ak%/*}" = "${ak#*/}" ] && [ "${hk%/*}" = 0 ] || undefended=$((undefended + 1))
            printf '%-8s pool=%-3s run %d: peak_rss=%s idle_rss=%s rss_after=%s attackers=%s honest=%s (%d s)\n' \
                "$a" "$pool" "$run" "$(kv "$line" peak_rss)" "$(kv "$line" idle_rss)" \
                "$(kv "$line" rss_after)" "$ak" "$hk" "$SECONDS"
        done
    done
done

# The table.
awk -v runs="$RUNS" '
function mib(b) { return sprintf("%.1f", b / 1048576) }
function median(v, n,    i, j, t, w) {
    for (i = 1; i <= n; i++) w[i] = v[i]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && w[j-1] > w[j]; j--) { t = w[j]; w[j] = w[j-1]; w[j-1] = t }
    return n % 2 ? w[(n+1)/2] : (w[n/2] + w[n/2+1]) / 2
}
{
    k = $1 " " $2
    if (!(k in n)) order[++combos] = k
    i = ++n[k]
    for (f = 4; f <= NF; f++) { split($f, kvp, "="); val[kvp[1]] = kvp[2] }
    peak[k, i] = val["peak_rss"]; idle[k, i] = val["idle_rss"]; after[k, i] = val["rss_after"]
    quota = val["quota"]
    ok = val["peak_rss"] <= 1.10 * quota + val["idle_rss"] && val["rss_after"] != "-" &&
         val["rss_after"] <= val["idle_rss"] + 0.10 * quota
    met[k] += ok
}
END {
    print "| allocator | pool | peak RSS per run (MiB) | median | worst | median / quota | idle RSS (median) | RSS 2 s after, per run (MiB) | runs meeting both RSS targets |"
    print "|---|---|---|---|---|---|---|---|---|"
    for (c = 1; c <= combos; c++) {
        k = order[c]; split(k, ka, " ")
        p = ""; a = ""; worst = 0
        for (i = 1; i <= n[k]; i++) {
            pv[i] = peak[k, i]; iv[i] = idle[k, i]
            p = p (i > 1 ? ", " : "") mib(peak[k, i])
            a = a (i > 1 ? ", " : "") (after[k, i] == "-" ? "-" : mib(after[k, i]))
            if (peak[k, i] > worst) worst = peak[k, i]
        }
        m = median(pv, n[k])
        printf "| %s | %s | %s | %s | %s | %.2f | %s | %s | %d of %d |\n", ka[1], ka[2], p, mib(m),
            mib(worst), m / quota, mib(median(iv, n[k])), a, met[k], n[k]
    }
}' "$OUT/results.txt" >"$OUT/table.md"
cat "$OUT/table.md"

# The chart: run 1 of each combination, tracked and RSS over time.
if command -v gnuplot >/dev/null 2>&1; then
    n=$(echo $ALLOCATORS | wc -w)
    {
        echo "set terminal pngcairo size 1100,$((300 * n)) font ',9'"
        echo "set output '$OUT/allocators.png'"
        echo "set datafile separator ','"
        echo "set key top right font ',8'; set grid; set xlabel 'seconds' offset 0,0.5; set ylabel 'MiB'"
        echo "set yrange [0:*]"
        echo "set multiplot layout $n,2 title 'relayd under attack, 64 MiB quota (run 1 of $RUNS): RSS against tracked bytes'"
        for a in $ALLOCATORS; do
            for pool in on off; do
                csv="$OUT/$a-pool$pool-1/quota.csv"
                echo "set title '$a, pool $pool'"
                echo "plot '$csv' every ::1 using 1:(\$2/1048576) with lines lw 2 title 'tracked'," \
                    "'' every ::1 using 1:(\$3/1048576) with lines lw 2 title 'RSS'," \
                    "'' every ::1 using 1:(\$4/1048576) with lines dt 2 lc rgb 'red' title 'quota'"
            done
        done
        echo "unset multiplot"
    } >"$OUT/allocators.gnuplot"
    if gnuplot "$OUT/allocators.gnuplot" 2>"$OUT/gnuplot.log"; then
        echo "chart: $OUT/allocators.png"
    else
        echo "gnuplot failed: see $OUT/gnuplot.log" >&2
    fi
else
    echo "no chart: gnuplot is not installed (apt-get install gnuplot-nox)"
fi
echo "$(wc -l <"$OUT/results.txt") runs in $SECONDS s; runs not defended: $undefended"
[ "$undefended" = 0 ]
