#!/usr/bin/env bash
# tests/demo/check_demo.sh - the examples' integration test, run by make check
# (and under ASan and TSan by check-asan and check-tsan).
#
# Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
#
# Properties, not timings: every check is something that would fail if the
# defence broke, and every wait is bounded but generous, so that a loaded
# 2-core machine or a sanitizer's slowdown does not fail it.  All on
# 127.0.0.1, with examples/loadgen as the only client (no wrk or
# slowhttptest needed).  About 25 s.
#
#  1. relayd, the short demo (examples/demo.sh --short: a 16 MiB quota, 10
#     honest clients, 20 attackers), from its RESULT lines:
#       - peak tracked <= the bound relayd states (quota + caches + one step),
#       - at least 95% of the attackers killed, no honest client killed,
#       - honest throughput under attack >= 80% of the run without attack;
#     and its responses were in the chunk pool (pool=on);
#  2. relayd's STATS line has cached=, pressure_events=, untracked= (and
#     cgroup_usage= only when it is not 0), pool=on and the pool's figures;
#  3. relayd under memory pressure: a FIFO as $MEMORY_PRESSURE_WATCH, slow
#     readers holding memory below the quota, one event written: tracked
#     memory falls to --pressure-low-water, slow readers closed, no honest,
#     and the pool gave what was reclaimed back to the OS;
#  4. relayd's connection slots: at --max-conns, idle connections are
#     closed for new ones, and a new connection is served (with --no-pool:
#     responses in libevent's chains, STATS says pool=off);
#  5. httpd under a slow-read attack (loadgen --http): every honest request
#     answered 2xx on connections never closed, attackers reclaimed (all but
#     those that still fit under the quota), peak tracked <= its bound;
#  6. httpd's connection slots, as relayd's;
#  7. httpd with fewer descriptors than connections: accept() fails with
#     EMFILE, the listener pauses and the idlest connection makes room: a
#     new connection is served, and the CPU does not spin meanwhile.
# Usage: check_demo.sh --bin DIR --out DIR [--honest N --attackers M]
# (--honest and --attackers lighten every load, for the sanitizers).
set -u
export LC_ALL=C

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
# The lighter load (sanitizers) for the other checks too.
LIGHT=0
[ "$HONEST" -lt 10 ] && LIGHT=1

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
log="$OUT.log"
: >"$log"

passed=0
failed=0
check() { # check DESCRIPTION COMMAND...
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
kv() { printf ' %s\n' "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p" | head -n 1; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 <= b + 0) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 >= b + 0) }'; }
has_key() { case " $1 " in *" $2="*) return 0 ;; *) return 1 ;; esac; }
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

PIDS=
cleanup() { for p in $PIDS; do alive "$p" && kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# start NAME NOFILE ENV cmd...: SPID, SPORT (30 s at most: sanitizers).
start() {
    local name=$1 nofile=$2 envset=$3
    shift 3
    : >"$OUT/$name.out"
    (
        [ -n "$nofile" ] && ulimit -n "$nofile"
        [ -n "$envset" ] && export "${envset?}"
        exec "$@"
    ) >"$OUT/$name.out" 2>"$OUT/$name.log" &
    SPID=$!
    PIDS="$PIDS $SPID"
    SPORT=
    for _ in $(seq 1500); do
        SPORT=$(sed -n 's/^READY port=//p' "$OUT/$name.out")
        [ -n "$SPORT" ] && return 0
        alive "$SPID" || break
        sleep 0.02
    done
    echo "  ($name did not start; see $OUT/$name.log)"
    return 1
}
# stop NAME: SIGTERM, 30 s at most; FINAL gets its FINAL line, RC its code.
stop() {
    alive "$SPID" && kill -TERM "$SPID"
    for _ in $(seq 600); do alive "$SPID" || break; sleep 0.05; done
    alive "$SPID" && kill -KILL "$SPID"
    wait "$SPID" 2>/dev/null
    RC=$?
    FINAL=$(grep '^FINAL ' "$OUT/$1.out" | tail -n 1)
    cat "$OUT/$1.log" >>"$log"
}
relayd_stats() {
    local fd line=
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
    printf 'STATS\n' >&"$fd"
    IFS= read -r -t 10 line <&"$fd"
    exec {fd}<&-
    printf '%s\n' "$line"
}
# The status line and the body of GET /stats on a new connection.
httpd_get_stats() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf 'GET /stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
        timeout 10 cat <&3) 2>/dev/null | tr -d '\r' | sed -n '1p;$p'
}
# wait_for SECONDS COMMAND...: until COMMAND succeeds.
wait_for() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
loadgen() { # loadgen NAME ARGS...: in the background, LPID
    local name=$1
    shift
    "$BIN/loadgen" --port "$SPORT" --label "$name" "$@" >"$OUT/$name.loadgen.out" \
        2>>"$log" &
    LPID=$!
    PIDS="$PIDS $LPID"
}
LOAD=
wait_loadgen() {
    wait "$LPID"
    LOAD=$(grep '^LOADGEN ' "$OUT/$1.loadgen.out" | tail -n 1)
}

# ---------------------------------------------------------------------------
echo "check-demo: 1. relayd, the short demo (examples/demo.sh --short; log $log)"
"$here/../../examples/demo.sh" --short --bin "$BIN" --out "$OUT" --honest "$HONEST" \
    --attackers "$ATTACKERS" >>"$log" 2>&1
status=$?
QUOTA=$((16 << 20))
line=$(grep '^RESULT scenario=quota ' "$log" | tail -n 1)
echo "check-demo: $line"
check "the demo's last lines are RESULT lines, quota's among them" \
    eval '[ -n "$line" ] && tail -n 1 "$log" | grep -q "^RESULT scenario="'
if [ -n "$line" ]; then
    quota=$(kv "$line" quota) peak=$(kv "$line" peak_tracked) bound=$(kv "$line" bound)
    ak=$(kv "$line" attackers_killed) hk=$(kv "$line" honest_killed)
    ratio=$(kv "$line" honest_throughput_ratio)
    check "the quota is $QUOTA bytes (got $quota)" test "$quota" = "$QUOTA"
    check "peak tracked $peak <= bound $bound (quota + caches + one step)" le "$peak" "$bound"
    check "peak tracked $peak > quota (the attack reached the quota)" test "$peak" -gt "$quota"
    check "attackers: $ak killed >= 95%" eval '[ $((${ak%/*} * 100)) -ge $((${ak#*/} * 95)) ]'
    check "there were $ATTACKERS attackers" test "${ak#*/}" = "$ATTACKERS"
    check "honest: $hk killed == 0" test "${hk%/*}" = 0
    check "honest throughput ratio $ratio >= 0.80" ge "$ratio" 0.80
    for k in honest_p99_ms honest_p99_ratio allocator pool idle_rss rss_after; do
        check "the RESULT line has $k=" has_key "$line" "$k"
    done
    check "relayd's responses were in the chunk pool (pool=$(kv "$line" pool))" \
        test "$(kv "$line" pool)" = on
fi
check "demo.sh exited 0 (its own verdict)" test "$status" -eq 0

# ---------------------------------------------------------------------------
echo "check-demo: 2-3. relayd's statistics and memory pressure (a FIFO as \$MEMORY_PRESSURE_WATCH)"
rm -f "$OUT/pressure.fifo"
mkfifo "$OUT/pressure.fifo"
PLOW=$((4 << 20))
if start pressure "" "MEMORY_PRESSURE_WATCH=$(cd "$OUT" && pwd)/pressure.fifo" \
    "$BIN/relayd" --port 0 --max 16MiB --pressure-low-water "$PLOW"; then
    held=$((LIGHT ? 4 : 8))
    # slow readers asking 1 MiB each: held MiB, under the 12 MiB low water
    loadgen pressure --honest $((LIGHT ? 2 : 4)) --attackers "$held" --attack-total 1MiB \
        --attack-start 0.2 --duration 30 --attack-stop 30
    holding() { s=$(relayd_stats "$SPORT"); [ "$(kv "$s" used)" -ge $(((held - 1) << 20)) ]; }
    wait_for 20 holding
    before=$(relayd_stats "$SPORT")
    check "STATS has cached=, pressure_events=, untracked=" \
        eval 'has_key "$before" cached && has_key "$before" pressure_events && has_key "$before" untracked'
    check "STATS shows cgroup_usage= only when it is not 0" \
        eval '! has_key "$before" cgroup_usage || [ "$(kv "$before" cgroup_usage)" != 0 ]'
    check "STATS says pool=on, with slack=, pool_in_use=, pool_resident=, pool_returned=" \
        eval '[ "$(kv "$before" pool)" = on ] && has_key "$before" slack && has_key "$before" pool_in_use &&
              has_key "$before" pool_resident && has_key "$before" pool_returned'
    check "the pool holds what the slow readers wait for ($(kv "$before" pool_in_use) bytes in use)" \
        test "$(kv "$before" pool_in_use)" -ge $(((held - 1) << 20))
    check "slow readers hold $(kv "$before" used) bytes, above the pressure target $PLOW" \
        test "$(kv "$before" used)" -gt "$PLOW"
    timeout 5 sh -c "printf x > '$OUT/pressure.fifo'"
    heard() { s=$(relayd_stats "$SPORT"); [ "$(kv "$s" pressure_events)" -ge 1 ] &&
        [ "$(kv "$s" used)" -le $((PLOW + 1048576)) ]; }
    wait_for 10 heard
    after=$(relayd_stats "$SPORT")
    check "pressure heard: pressure_events=$(kv "$after" pressure_events) >= 1" \
        ge "$(kv "$after" pressure_events)" 1
    check "tracked memory fell to $(kv "$after" used) <= target $PLOW + 1 MiB of honest traffic" \
        le "$(kv "$after" used)" $((PLOW + 1048576))
    gone=$(($(kv "$before" used) - $(kv "$after" used)))
    back=$(($(kv "$after" pool_returned) - $(kv "$before" pool_returned)))
    check "the pool gave back to the OS $back bytes >= half of the $gone reclaimed" \
        eval '[ "$back" -ge $((gone / 2)) ]'
    kill -TERM "$LPID"
    wait_loadgen pressure
    stop pressure
    check "the oldest holders were closed ($(kv "$LOAD" attackers_lost)/$held), no honest client ($(kv "$LOAD" honest_lost))" \
        eval '[ "$(kv "$LOAD" attackers_lost)" -ge 1 ] && [ "$(kv "$LOAD" honest_lost)" = 0 ]'
    check "relayd exited 0 (code $RC)" test "$RC" = 0
else
    check "relayd started" false
fi

# ---------------------------------------------------------------------------
# slots NAME PROBE SERVER...: connection slots at --max-conns 8: 2 honest
# clients and the monitor, then 12 idle connections; once the server closed
# one for a slot, a new connection must be served.
slots() {
    local name=$1 probe=$2 proto=
    shift 2
    [ "$name" = httpd-slots ] && proto=--http
    if ! start "$name" "" "" "$@" --port 0 --max-conns 8; then
        check "$name: the server started" false
        return
    fi
    loadgen "$name" $proto --honest 2 --attackers 0 --idle 12 --attack-start 0.3 --duration 30 --attack-stop 30
    evicting() { s=$(relayd_stats "$SPORT" 2>/dev/null); [ "$proto" = --http ] &&
        s=$(httpd_get_stats "$SPORT" | tail -n 1); [ "$(kv "$s" evicted)" -ge 1 ]; }
    wait_for 20 evicting
    local served
    served=$($probe "$SPORT")
    check "$name: at the limit, a new connection is served ($(printf '%s' "$served" | head -c 40)...)" \
        eval 'case "$served" in HTTP/1.[01]\ 200*|used=*) true ;; *) false ;; esac'
    kill -TERM "$LPID"
    wait_loadgen "$name"
    stop "$name"
    check "$name: idle connections were closed for slots ($(kv "$FINAL" evicted) evicted, $(kv "$LOAD" idle_lost)/12 idle ones lost)" \
        eval '[ "$(kv "$FINAL" evicted)" -ge 1 ] && [ "$(kv "$LOAD" idle_lost)" -ge 1 ]'
    check "$name: no honest client lost ($(kv "$LOAD" honest_lost)/2), no error" \
        eval '[ "$(kv "$LOAD" honest_lost)" = 0 ] && [ "$(kv "$LOAD" http_errors)" = 0 ] && [ "$(kv "$LOAD" protocol_errors)" = 0 ]'
    check "$name: exited 0 (code $RC)" test "$RC" = 0
}
echo "check-demo: 4. relayd's connection slots"
slots relayd-slots relayd_stats "$BIN/relayd" --no-pool
check "relayd --no-pool: STATS says pool=off" \
    test "$(kv "$FINAL" pool)" = off

# ---------------------------------------------------------------------------
echo "check-demo: 5. httpd under a slow-read attack (loadgen --http)"
HQ=$((8 << 20))
HA=$((LIGHT ? 12 : 24))
if start httpd-slowread "" "" "$BIN/httpd" --port 0 --max 8MiB --max-response 1MiB; then
    loadgen httpd-slowread --http --honest $((LIGHT ? 2 : 4)) --attackers "$HA" \
        --attack-size 1MiB --attack-start 0.3 --duration 30 --attack-stop 30
    # Attackers that still fit under the quota are not reclaimed: one
    # response each, all that evhttp queues before the client reads.
    reclaimed() { s=$(httpd_get_stats "$SPORT" | tail -n 1);
        [ "$(kv "$s" a_killed)" -ge $((HA - HQ / 1048576)) ]; }
    wait_for 30 reclaimed
    stats=$(httpd_get_stats "$SPORT")
    check "/stats answers 200" eval 'printf "%s" "$stats" | head -n 1 | grep -q "^HTTP/1.[01] 200"'
    stats=$(printf '%s\n' "$stats" | tail -n 1)
    for k in used peak killed rss cached accounts conns; do
        check "/stats has $k=" has_key "$stats" "$k"
    done
    sleep 1 # honest requests go on once the attack is beaten
    kill -TERM "$LPID"
    wait_loadgen httpd-slowread
    stop httpd-slowread
    ak=$(kv "$FINAL" a_killed)
    check "attackers reclaimed: $ak of $HA >= $((HA - HQ / 1048576)) (those not fitting under the quota)" \
        ge "$ak" $((HA - HQ / 1048576))
    check "peak tracked $(kv "$FINAL" peak) <= bound $(kv "$FINAL" bound) (quota + one response + caches)" \
        le "$(kv "$FINAL" peak)" "$(kv "$FINAL" bound)"
    check "honest: $(kv "$LOAD" requests) requests answered 2xx ($(kv "$LOAD" http_errors) not), $(kv "$LOAD" honest_lost) connections lost, h_killed=$(kv "$FINAL" h_killed)" \
        eval '[ "$(kv "$LOAD" requests)" -gt 0 ] && [ "$(kv "$LOAD" http_errors)" = 0 ] && [ "$(kv "$LOAD" protocol_errors)" = 0 ] && [ "$(kv "$LOAD" honest_lost)" = 0 ] && [ "$(kv "$FINAL" h_killed)" = 0 ]'
    check "httpd exited 0 (code $RC)" test "$RC" = 0
else
    check "httpd started" false
fi

# ---------------------------------------------------------------------------
echo "check-demo: 6. httpd's connection slots"
slots httpd-slots httpd_get_stats "$BIN/httpd"

# ---------------------------------------------------------------------------
echo "check-demo: 7. httpd with fewer descriptors than connections (EMFILE)"
if start httpd-emfile 32 "" "$BIN/httpd" --port 0 --max-conns 1000; then
    loadgen httpd-emfile --http --honest 1 --attackers 0 --idle 40 --attack-start 0.3 --duration 30 \
        --attack-stop 30
    failing() { s=$(httpd_get_stats "$SPORT" | tail -n 1); [ "$(kv "$s" accept_errors)" -ge 1 ]; }
    wait_for 20 failing
    c0=$(awk '{ print $14 + $15 }' "/proc/$SPID/stat")
    t0=$(date +%s%N)
    served=$(httpd_get_stats "$SPORT")
    sleep 1
    c1=$(awk '{ print $14 + $15 }' "/proc/$SPID/stat")
    t1=$(date +%s%N)
    hz=$(getconf CLK_TCK)
    cpu=$(awk -v c=$((c1 - c0)) -v hz="$hz" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * (c / hz) / (ns / 1e9) }')
    check "accept() failed (EMFILE) and a new connection was still served" \
        eval 'printf "%s" "$served" | head -n 1 | grep -q "^HTTP/1.[01] 200"'
    check "the CPU does not spin: httpd used ${cpu}% of a core meanwhile (< 50%)" le "$cpu" 50
    kill -TERM "$LPID"
    wait_loadgen httpd-emfile
    stop httpd-emfile
    check "accept errors counted ($(kv "$FINAL" accept_errors)), the idlest closed ($(kv "$FINAL" evicted))" \
        eval '[ "$(kv "$FINAL" accept_errors)" -ge 1 ] && [ "$(kv "$FINAL" evicted)" -ge 1 ]'
    check "the honest client kept its connection ($(kv "$LOAD" honest_lost) lost)" \
        test "$(kv "$LOAD" honest_lost)" = 0
    check "httpd exited 0 (code $RC)" test "$RC" = 0
else
    check "httpd started with 32 descriptors" false
fi

echo "check-demo: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    echo "---- $log" >&2
    tail -n 80 "$log" >&2
    exit 1
fi
