#!/usr/bin/env bash
# examples/demo.sh - relayd under a sniper-style attack, with and without a
# quota.  Run by `make demo` (and, with --short, by `make check`).
#
# Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
#
# Three runs of examples/loadgen against examples/relayd, all on 127.0.0.1:
#   baseline  honest clients only, quota on: their throughput without attack
#   quota     the same honest clients plus attackers that ask and never read,
#             against relayd with the quota (default 64 MiB)
#   noquota   the same load against relayd --no-quota, whose memory is capped
#             at run time (--rss-cap, default 512 MiB: it exits as the OOM
#             killer would kill it)
# Then a table, a CSV time series per run, a PNG chart if gnuplot is
# installed, a verdict, and one RESULT line per run, the quota run last:
#   RESULT quota=<bytes> peak_tracked=<bytes> peak_rss=<bytes>
#          attackers_killed=<k>/<m> honest_killed=<k>/<n>
#          honest_throughput_ratio=<float>
# (quota=18446744073709551615, i.e. MEMQ_UNLIMITED, for the run without).
#
# Every wait is bounded; the whole demo takes about 25 seconds.
set -u
export LC_ALL=C

BIN=build/examples
OUT=build/demo
ALLOCATOR=glibc
QUOTA=64MiB
CAP=512MiB
HONEST=20
ATTACKERS=40
DURATION=8
ATTACK_START=1
HONEST_RATE=2MiB
ATTACK_RATE=16MiB
RUN_NOQUOTA=1

usage() {
    cat <<EOF
usage: examples/demo.sh [options]
  --bin DIR         where relayd and loadgen are (default $BIN)
  --out DIR         CSV files, logs and the chart go there (default $OUT)
  --allocator NAME  glibc, jemalloc or mimalloc (preloaded into relayd)
  --quota SIZE      relayd --max (default $QUOTA)
  --cap SIZE        RSS cap of the run without quota (default $CAP)
  --honest N        honest clients (default $HONEST)
  --attackers M     attackers (default $ATTACKERS)
  --duration S      seconds per run (default $DURATION)
  --attack-start S  when the attack begins (default $ATTACK_START)
  --short           the integration test's version: 16MiB quota, 10 honest,
                    20 attackers, 2.5 s runs, no run without quota
  --no-noquota      skip the run without quota
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --allocator) ALLOCATOR=$2; shift ;;
    --quota) QUOTA=$2; shift ;;
    --cap) CAP=$2; shift ;;
    --honest) HONEST=$2; shift ;;
    --attackers) ATTACKERS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --attack-start) ATTACK_START=$2; shift ;;
    --short) QUOTA=16MiB; HONEST=10; ATTACKERS=20; DURATION=2.5; ATTACK_START=0.5
             RUN_NOQUOTA=0 ;;
    --no-noquota) RUN_NOQUOTA=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

die() { echo "demo.sh: $*" >&2; exit 1; }

for b in relayd loadgen; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make demo"
done
mkdir -p "$OUT" || die "cannot create $OUT"

PRELOAD=
case $ALLOCATOR in
glibc) ;;
jemalloc|mimalloc)
    lib=$([ "$ALLOCATOR" = jemalloc ] && echo libjemalloc.so.2 || echo libmimalloc.so.2)
    PRELOAD=$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l { print $NF; exit }')
    [ -n "$PRELOAD" ] || die "$lib not found: install $([ "$ALLOCATOR" = jemalloc ] &&
        echo libjemalloc2 || echo libmimalloc2.0)"
    ;;
*) die "unknown allocator $ALLOCATOR (glibc, jemalloc or mimalloc)" ;;
esac

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# kv LINE KEY: the value of KEY=value in a line of key=value pairs.
kv() { printf ' %s\n' "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p" | head -n 1; }

# Human-readable bytes and rates.
hsize() {
    awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1
        while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s\n", b, u[i] }'
}
bytes() { awk -v s="$1" 'BEGIN {
        n = s + 0; u = tolower(s); sub(/^[0-9.]+ */, "", u)
        m = 1; if (u ~ /^k/) m = 1024; if (u ~ /^m/) m = 1048576; if (u ~ /^g/) m = 1073741824
        printf "%.0f", n * m }'; }

alive() { # a child that has exited but not been reaped is not alive
    [ -r "/proc/$1/stat" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

RPID=
cleanup() { if [ -n "$RPID" ] && alive "$RPID"; then kill -KILL "$RPID" 2>/dev/null; fi; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# run NAME LOADGEN_EXTRA -- RELAYD_ARGS...: one run; leaves the relayd FINAL
# line in FINAL_<NAME>, the loadgen line in LOAD_<NAME>, relayd's exit code
# in RC_<NAME>.
run() {
    local name=$1 extra=$2
    shift 3
    local rout="$OUT/$name.relayd.out" rerr="$OUT/$name.relayd.log"
    : >"$rout"
    if [ -n "$PRELOAD" ]; then
        LD_PRELOAD=$PRELOAD "$BIN/relayd" --port 0 "$@" >"$rout" 2>"$rerr" &
    else
        "$BIN/relayd" --port 0 "$@" >"$rout" 2>"$rerr" &
    fi
    RPID=$!
    local port=''
    for _ in $(seq 250); do # 5 s at most
        port=$(sed -n 's/^READY port=//p' "$rout")
        [ -n "$port" ] && break
        alive "$RPID" || break
        sleep 0.02
    done
    [ -n "$port" ] || { cat "$rerr" >&2; die "relayd did not start ($name)"; }

    # shellcheck disable=SC2086
    timeout --foreground 60 "$BIN/loadgen" --port "$port" --label "$name" --progress --csv "$OUT/$name.csv" \
        --honest "$HONEST" --duration "$DURATION" --attack-start "$ATTACK_START" \
        --honest-rate "$HONEST_RATE" --attack-rate "$ATTACK_RATE" $extra \
        >"$OUT/$name.loadgen.out" || die "loadgen failed ($name)"

    alive "$RPID" && kill -TERM "$RPID" 2>/dev/null
    for _ in $(seq 100); do alive "$RPID" || break; sleep 0.05; done # 5 s at most
    alive "$RPID" && kill -KILL "$RPID" 2>/dev/null
    wait "$RPID"
    local rc=$?
    RPID=
    printf -v "RC_$name" '%s' "$rc"
    printf -v "FINAL_$name" '%s' "$(grep '^FINAL ' "$rout" | tail -n 1)"
    printf -v "LOAD_$name" '%s' "$(grep '^LOADGEN ' "$OUT/$name.loadgen.out" | tail -n 1)"
}

# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------

echo "relayd under a sniper-style attack: $HONEST honest clients (each asking"
echo "$HONEST_RATE/s), $ATTACKERS attackers (each asking $ATTACK_RATE/s, reading nothing) from"
echo "t=${ATTACK_START}s, ${DURATION}s per run, allocator $ALLOCATOR; all on 127.0.0.1."

run baseline "--attackers 0" -- --max "$QUOTA"
run quota "--attackers $ATTACKERS" -- --max "$QUOTA"
if [ "$RUN_NOQUOTA" = 1 ]; then
    run noquota "--attackers $ATTACKERS" -- --no-quota --rss-cap "$CAP"
fi
if [ -z "$FINAL_baseline" ] || [ -z "$FINAL_quota" ] || [ -z "$LOAD_baseline" ] ||
    [ -z "$LOAD_quota" ]; then
    die "a run produced no statistics; see $OUT/*.relayd.log"
fi

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

base_bps=$(kv "$LOAD_baseline" honest_window_Bps)
ratio() { awk -v x="$1" -v b="$base_bps" 'BEGIN { printf "%.3f", (b > 0 ? x / b : 0) }'; }

RUNS="baseline quota"
[ "$RUN_NOQUOTA" = 1 ] && RUNS="$RUNS noquota"

declare -A T
for r in $RUNS; do
    f=FINAL_$r; l=LOAD_$r; rc=RC_$r
    F=${!f}; L=${!l}
    q=$(kv "$F" quota)
    T[$r,quota]=$q
    if [ "$r" = noquota ]; then
        T[$r,quota_h]="none (cap $(hsize "$(bytes "$CAP")"))"
    else
        T[$r,quota_h]=$(hsize "$q")
    fi
    T[$r,peak]=$(kv "$F" peak)
    T[$r,bound]=$(kv "$F" bound)
    T[$r,rss]=$(kv "$F" peak_rss)
    T[$r,ak]=$(kv "$L" attackers_lost)
    T[$r,am]=$(kv "$L" attackers)
    T[$r,hk]=$(kv "$L" honest_lost)
    T[$r,hn]=$(kv "$L" honest)
    T[$r,bps]=$(kv "$L" honest_window_Bps)
    T[$r,ratio]=$(ratio "${T[$r,bps]}")
    T[$r,p99]=$(kv "$L" latency_p99_ms)
    T[$r,first]=$(kv "$L" first_attacker_loss_ms)
    T[$r,last]=$(kv "$L" last_attacker_loss_ms)
    T[$r,kill]=$(kv "$F" first_kill_ms)
    T[$r,reaction]=$(kv "$F" reaction_us)
    T[$r,reason]=$(kv "$F" reason)
    T[$r,uptime]=$(kv "$F" uptime_ms)
    T[$r,rc]=${!rc}
done

row() { printf '%-34s' "$1"; shift; for v in "$@"; do printf '%-24s' "$v"; done; echo; }
cells() { local key=$1; shift; for r in $RUNS; do printf '%s\n' "$("$@" "$r" "$key")"; done; }
raw() { printf '%s' "${T[$1,$2]}"; }
siz() { hsize "${T[$1,$2]}"; }
killed() { printf '%s/%s\n' "${T[$1,${2}k]}" "${T[$1,${2}m]:-${T[$1,${2}n]}}"; }

mapfile -t H < <(for r in $RUNS; do case $r in baseline) echo "no attack, quota";;
    quota) echo "attack, quota";; noquota) echo "attack, no quota";; esac; done)
echo
row "" "${H[@]}"
mapfile -t V < <(cells quota_h raw); row "quota (relayd --max)" "${V[@]}"
mapfile -t V < <(cells peak siz); row "peak tracked" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do
    if [ "$r" = noquota ]; then echo "-"; else hsize "${T[$r,bound]}"; fi; done)
row "  bound: quota+caches+one step" "${V[@]}"
mapfile -t V < <(cells rss siz); row "peak RSS" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do killed "$r" a; done); row "attackers killed" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do killed "$r" h; done); row "honest clients killed" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do echo "$(hsize "${T[$r,bps]}")/s"; done)
row "honest throughput (under attack)" "${V[@]}"
mapfile -t V < <(cells ratio raw); row "  ratio to the no-attack run" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do echo "${T[$r,p99]} ms"; done); row "honest request latency p99" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do
    if [ "$r" = quota ] && [ "${T[$r,kill]}" != 0 ]; then
        awk -v a="${T[$r,first]}" -v u="${T[$r,reaction]}" \
            'BEGIN { printf "%.0f ms (+%.1f ms)\n", a, u / 1000 }'
    else echo "-"; fi; done)
row "first reclamation after attack" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do
    if [ "$r" = quota ] && [ "${T[$r,ak]}" = "${T[$r,am]}" ] && [ "${T[$r,am]}" != 0 ]; then
        printf "%.0f ms\n" "${T[$r,last]}"; else echo "-"; fi; done)
row "all attackers gone after" "${V[@]}"
mapfile -t V < <(for r in $RUNS; do
    if [ "${T[$r,reason]}" = rss-cap ]; then echo "killed at cap, ${T[$r,uptime]} ms"
    else echo "ran to the end"; fi; done)
row "relayd" "${V[@]}"
echo
echo "bound = quota + participations x 16 KiB of cache + one step (the largest"
echo "request, 1 MiB, plus 1 KiB of input per connection): relayd admits a request"
echo "only while the total is at or below the quota, and reclaims at once."
echo "'first reclamation': from the attack's start until the first attacker's"
echo "connection was reset (+ from the quota's first crossing to that reclaim)."

# relayd must have exited cleanly (0), or at its RSS cap (3) without quota;
# anything else (a crash, a sanitizer report) fails the demo.
rc_bad=
for r in $RUNS; do
    case $r:${T[$r,rc]} in
    baseline:0|quota:0|noquota:0|noquota:3) ;;
    *) rc_bad="$rc_bad $r:${T[$r,rc]}" ;;
    esac
done

# Verdict for the quota run: the properties issue 4 asks for.
verdict=$(awk -v p="${T[quota,peak]}" -v b="${T[quota,bound]}" -v ak="${T[quota,ak]}" \
    -v am="${T[quota,am]}" -v hk="${T[quota,hk]}" -v r="${T[quota,ratio]}" 'BEGIN {
    bad = ""
    if (p > b) bad = bad " peak tracked above the bound;"
    if (am > 0 && ak < 0.95 * am) bad = bad " fewer than 95% of the attackers killed;"
    if (hk > 0) bad = bad " honest clients killed;"
    if (r < 0.80) bad = bad " honest throughput below 80% of the no-attack run;"
    print bad }')
[ -z "$rc_bad" ] || verdict="$verdict relayd exited badly (run:code$rc_bad, see $OUT/*.relayd.log);"
[ -n "$verdict" ] || verdict=ok
echo
if [ "$verdict" = ok ]; then
    echo "DEFENDED with the quota: peak tracked $(hsize "${T[quota,peak]}") <= bound" \
        "$(hsize "${T[quota,bound]}"), ${T[quota,ak]}/${T[quota,am]} attackers killed,"
    echo "${T[quota,hk]}/${T[quota,hn]} honest clients killed, honest throughput ratio" \
        "${T[quota,ratio]} >= 0.80."
else
    echo "NOT DEFENDED with the quota:$verdict"
fi
if [ "$RUN_NOQUOTA" = 1 ]; then
    if [ "${T[noquota,reason]}" = rss-cap ]; then
        echo "Without the quota relayd's memory grew with the attack to its" \
            "$(hsize "$(bytes "$CAP")") cap in $(awk -v u="${T[noquota,uptime]}" \
                -v a="$ATTACK_START" 'BEGIN { printf "%.1f", u / 1000 - a }') s"
        echo "of attack and it was stopped, as the OOM killer would stop it:" \
            "${T[noquota,hk]}/${T[noquota,hn]} honest clients"
        echo "lost their connections."
    else
        echo "Without the quota relayd held $(hsize "${T[noquota,peak]}") at its peak (the" \
            "$(hsize "$(bytes "$CAP")") cap was not reached in ${DURATION}s)."
    fi
fi

# Time series and chart.
echo
echo "time series (CSV, one row per STATS sample): $(for r in $RUNS; do printf '%s ' "$OUT/$r.csv"; done)"
echo "relayd logs: $OUT/<run>.relayd.log"
if command -v gnuplot >/dev/null 2>&1; then
    qb=$(bytes "$QUOTA"); cb=$(bytes "$CAP")
    {
        echo "set terminal pngcairo size 1000,$([ "$RUN_NOQUOTA" = 1 ] && echo 800 || echo 420) font ',10'"
        echo "set output '$OUT/demo.png'"
        echo "set datafile separator ','"
        echo "set key top left; set grid; set xlabel 'seconds'; set ylabel 'MiB'"
        [ "$RUN_NOQUOTA" = 1 ] && echo "set multiplot layout 2,1"
        echo "set title 'relayd with a $(hsize "$qb") quota under attack ($ALLOCATOR)'"
        echo "plot '$OUT/quota.csv' every ::1 using 1:(\$2/1048576) with lines lw 2 title 'tracked'," \
            "'' every ::1 using 1:(\$3/1048576) with lines lw 2 title 'RSS'," \
            "$qb/1048576 with lines dt 2 lc rgb 'red' title 'quota'"
        if [ "$RUN_NOQUOTA" = 1 ]; then
            echo "set title 'relayd without quota under the same attack (RSS capped)'"
            echo "plot '$OUT/noquota.csv' every ::1 using 1:(\$2/1048576) with lines lw 2 title 'tracked'," \
                "'' every ::1 using 1:(\$3/1048576) with lines lw 2 title 'RSS'," \
                "$cb/1048576 with lines dt 2 lc rgb 'red' title 'RSS cap'," \
                "'-' using 1:2 with points pt 7 ps 1.5 lc rgb 'black' title 'peak RSS when stopped'"
            # relayd's clock starts a few ms before loadgen's: close enough.
            awk -v u="${T[noquota,uptime]}" -v r="${T[noquota,rss]}" \
                'BEGIN { printf "%.3f,%.3f\ne\n", u / 1000, r / 1048576 }'
            echo "unset multiplot"
        fi
    } >"$OUT/demo.gnuplot"
    if gnuplot "$OUT/demo.gnuplot" 2>"$OUT/gnuplot.log"; then
        echo "chart: $OUT/demo.png"
    else
        echo "chart: gnuplot failed, see $OUT/gnuplot.log"
    fi
else
    echo "chart: install gnuplot for $OUT/demo.png"
fi

# RESULT lines, the quota run last.
echo
for r in baseline noquota quota; do
    case " $RUNS " in *" $r "*) ;; *) continue ;; esac
    echo "RESULT quota=${T[$r,quota]} peak_tracked=${T[$r,peak]} peak_rss=${T[$r,rss]}" \
        "attackers_killed=${T[$r,ak]}/${T[$r,am]} honest_killed=${T[$r,hk]}/${T[$r,hn]}" \
        "honest_throughput_ratio=${T[$r,ratio]}"
done
[ "$verdict" = ok ]
