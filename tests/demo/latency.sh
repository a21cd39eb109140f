#!/usr/bin/env bash
# tests/demo/latency.sh - where honest requests wait: one relayd run with
# loadgen, both tracing every honest request, and the time of each split
# into its parts.  Not part of make check (it measures, it asserts nothing).
#
# Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
#
#   tests/demo/latency.sh [--bin DIR] [--out DIR] [--attackers N] [--read]
#                         [--duration S] [-- RELAYD OPTIONS]
#
# 20 honest clients (64 KiB requests at 2 MiB/s each), N attackers (default
# 40; 0 for the reference) from t=1 s to t=5 s asking 16 MiB/s each and never
# reading (--read: reading everything, the control), relayd with a 64 MiB
# quota.  relayd --trace logs, per honest GET whose response was flushed,
# when its read callback saw the line, when it passed admission, when its
# bytes were queued and when the output was empty again; loadgen --trace
# logs when each request was sent and read in full.  Joined by client port,
# over the requests sent during the attack, each request's time is:
#   to_server  sent -> relayd's read callback (kernel, relayd's loop turn)
#   admission  read -> served (above max, waiting for reclamation; or its
#              turn in the round robin)
#   build      served -> its bytes queued
#   writeout   queued -> flushed to the kernel (write events, the client's
#              window)
#   client     flushed -> read in full by loadgen
# and the run's CPU time and run-queue wait (schedstat) for relayd and
# loadgen.  Percentiles of each part, and the mean of each part over the
# slowest 1% of requests (what makes the p99).
set -u
export LC_ALL=C

BIN=build/examples
OUT=build/latency
ATTACKERS=40
READ=
DURATION=6
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --attackers) ATTACKERS=$2; shift ;;
    --read) READ=--attackers-read ;;
    --duration) DURATION=$2; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [--bin DIR] [--out DIR] [--attackers N] [--read] [--duration S] [-- RELAYD OPTIONS]" >&2
       exit 2 ;;
    esac
    shift
done
mkdir -p "$OUT"

"$BIN/relayd" --port 0 --trace "$OUT/relayd.trace" "$@" >"$OUT/relayd.out" 2>"$OUT/relayd.log" &
rp=$!
port=
for _ in $(seq 250); do
    port=$(sed -n 's/^READY port=//p' "$OUT/relayd.out")
    [ -n "$port" ] && break
    sleep 0.02
done
[ -n "$port" ] || { cat "$OUT/relayd.log" >&2; exit 1; }
read -r rc0 rw0 _ <"/proc/$rp/schedstat"
"$BIN/loadgen" --port "$port" --trace "$OUT/loadgen.trace" --honest 20 \
    --attackers "$ATTACKERS" $READ --duration "$DURATION" --attack-start 1 --attack-stop 5 \
    >"$OUT/loadgen.out" 2>/dev/null &
lp=$!
sleep "$(awk -v d="$DURATION" 'BEGIN { print d - 0.1 }')"
read -r lc lw _ <"/proc/$lp/schedstat"
wait "$lp"
read -r rc1 rw1 _ <"/proc/$rp/schedstat"
kill -TERM "$rp"
wait "$rp"

echo "$(grep -o 'latency_p99_attack_ms=[^ ]*' "$OUT/loadgen.out"), attackers $ATTACKERS${READ:+ (reading)}"
echo "relayd: CPU $(((rc1 - rc0) / 1000000)) ms, waiting for a CPU $(((rw1 - rw0) / 1000000)) ms;" \
    "loadgen: CPU $((lc / 1000000)) ms, waiting $((lw / 1000000)) ms"

# Join (awk), then percentiles (sort).  Times are CLOCK_MONOTONIC ns.
awk '
    $1 == "L" { n = ++nl[$2]; sent[$2, n] = $3; done[$2, n] = $5; if (!t0 || $3 < t0) t0 = $3 }
    $1 == "R" { n = ++nr[$2]; seen[$2, n] = $3; admit[$2, n] = $4; queued[$2, n] = $5; flushed[$2, n] = $6 }
    END {
        for (k in sent) {
            split(k, a, SUBSEP)
            p = a[1]; i = a[2]
            if (!((p, i) in seen)) continue
            s = sent[k]
            if (s < t0 + 1e9 || s >= t0 + 5e9) continue
            ts = seen[p, i] - s; if (ts < 0) ts = 0
            cl = done[k] - flushed[p, i]; if (cl < 0) cl = 0
            printf "%.3f %.3f %.3f %.3f %.3f %.3f\n", (done[k] - s) / 1e6, ts / 1e6,
                (admit[p, i] - seen[p, i]) / 1e6, (queued[p, i] - admit[p, i]) / 1e6,
                (flushed[p, i] - queued[p, i]) / 1e6, cl / 1e6
        }
    }' "$OUT/loadgen.trace" "$OUT/relayd.trace" | sort -n >"$OUT/joined"

n=$(wc -l <"$OUT/joined")
echo "requests sent during the attack: $n"
printf '%-10s %8s %8s %8s %8s\n' ms p50 p90 p99 max
col=0
for name in total to_server admission build writeout client; do
    col=$((col + 1))
    cut -d' ' -f"$col" "$OUT/joined" | sort -n | awk -v name="$name" '
        { v[NR] = $1 }
        END {
            if (NR == 0) exit
            i50 = int(0.50 * NR); if (i50 < 1) i50 = 1
            i90 = int(0.90 * NR); if (i90 < 1) i90 = 1
            i99 = int(0.99 * NR); if (i99 < 1) i99 = 1
            printf "%-10s %8.2f %8.2f %8.2f %8.2f\n", name, v[i50], v[i90], v[i99], v[NR]
        }'
done
tail -n "$(( (n + 99) / 100 ))" "$OUT/joined" | awk '
    { for (i = 1; i <= 6; i++) s[i] += $i; n++ }
    END { if (n) printf "slowest 1%% (%d), mean ms: total %.2f to_server %.2f admission %.2f build %.2f writeout %.2f client %.2f\n",
              n, s[1] / n, s[2] / n, s[3] / n, s[4] / n, s[5] / n, s[6] / n }'
