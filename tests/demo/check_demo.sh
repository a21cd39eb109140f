#!/usr/bin/env bash
# tests/demo/check_demo.sh - the demo's integration test, run by make check.
#
# Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
#
# Runs the short demo (examples/demo.sh --short: a 16 MiB quota, 10 honest
# clients, 20 attackers, 2.5 s per run, about 6 s in all) and checks, from
# its last RESULT line, what issue 4 calls "defended":
#   - peak tracked <= quota + caches + one reclaim step, where
#       caches = 2 participations per connection x 16 KiB (cache_max),
#       step   = the largest request (1 MiB, relayd's --max-request)
#                + 1 KiB of bounded input per connection,
#     for the honest clients, the attackers and loadgen's monitor;
#   - at least 95% of the attackers killed;
#   - no honest client killed;
#   - honest throughput under attack >= 80% of the run without attack.
# Usage: check_demo.sh --bin DIR --out DIR
set -u

BIN=build/examples
OUT=build/demo-check
HONEST=10
ATTACKERS=20
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --honest) HONEST=$2; shift ;;
    --attackers) ATTACKERS=$2; shift ;;
    *) echo "usage: $0 [--bin DIR] [--out DIR] [--honest N] [--attackers M]" >&2; exit 2 ;;
    esac
    shift
done

QUOTA=$((16 << 20))
CONNS=$((HONEST + ATTACKERS + 1))
BOUND=$((QUOTA + 2 * CONNS * 16384 + (1 << 20) + CONNS * 1024))

here=$(cd "$(dirname "$0")" && pwd)
log="$OUT.log"
mkdir -p "$OUT"
echo "check-demo: examples/demo.sh --short (log: $log)"
"$here/../../examples/demo.sh" --short --bin "$BIN" --out "$OUT" --honest "$HONEST" \
    --attackers "$ATTACKERS" >"$log" 2>&1
status=$?
line=$(tail -n 1 "$log")
echo "check-demo: $line"

passed=0
failed=0
check() { # check DESCRIPTION CONDITION...
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "  ok    $what"
    else
        failed=$((failed + 1))
        echo "  FAIL  $what"
    fi
}

re='^RESULT quota=([0-9]+) peak_tracked=([0-9]+) peak_rss=([0-9]+) attackers_killed=([0-9]+)/([0-9]+) honest_killed=([0-9]+)/([0-9]+) honest_throughput_ratio=([0-9.]+)$'
if [[ $line =~ $re ]]; then
    quota=${BASH_REMATCH[1]} peak=${BASH_REMATCH[2]} ak=${BASH_REMATCH[4]} am=${BASH_REMATCH[5]}
    hk=${BASH_REMATCH[6]} hn=${BASH_REMATCH[7]} ratio=${BASH_REMATCH[8]}
    check "the last line is a RESULT line" true
    check "the quota is $QUOTA bytes (got $quota)" test "$quota" -eq "$QUOTA"
    check "peak tracked $peak <= bound $BOUND (quota + caches + one step)" \
        test "$peak" -le "$BOUND"
    check "peak tracked $peak > quota (the attack reached the quota)" test "$peak" -gt "$quota"
    check "attackers: $ak/$am killed >= 95%" test $((ak * 100)) -ge $((am * 95))
    check "there were $ATTACKERS attackers" test "$am" -eq "$ATTACKERS"
    check "honest: $hk/$hn killed == 0" test "$hk" -eq 0
    check "honest throughput ratio $ratio >= 0.80" \
        awk -v r="$ratio" 'BEGIN { exit !(r >= 0.80) }'
else
    check "the last line is a RESULT line" false
fi
check "demo.sh exited 0 (its own verdict)" test "$status" -eq 0

echo "check-demo: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    echo "---- $log" >&2
    cat "$log" >&2
    exit 1
fi
