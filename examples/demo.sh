#!/usr/bin/env bash
# examples/demo.sh - two daemons built on libmemquota under memory and
# connection attacks, with and without their defences.  Run by `make demo`
# (and, with --short, by `make check`).
#
# Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
#
# relayd (examples/relayd.c, a line protocol) against examples/loadgen:
#   baseline   honest clients only, quota on: the reference for throughput
#              and latency
#   quota      the same honest clients plus sniper attackers (they ask, never
#              read), quota on (default 64 MiB)
#   noquota    the same attack against relayd --no-quota, stopped when its
#              RSS passes --cap (default 512 MiB), as the OOM killer would
#   control    the same attackers reading their data at once: the attack's
#              load without the memory it pins (a second reference)
#   pressure   slow readers holding memory below the quota, honest clients,
#              and memory pressure written mid-run into a FIFO given to
#              relayd as systemd's $MEMORY_PRESSURE_WATCH
# httpd (examples/httpd.c, evhttp on libmemquota-event) against real tools,
# wrk as the honest load and slowhttptest as the attacker:
#   http-control    slow-read attack (-X) asking for 0 bytes: the reference
#   http-slowread   slow-read attack on 4 MiB responses, quota on
#   http-noquota    the same with the quota off, stopped at the RSS cap
#   http-slowloris  2,000 slowloris connections (-H) against httpd with 1,024
#                   descriptors; honest clients open a new connection for
#                   every request
#   http-conncap    no quota but a static 512 KiB cap per connection (as
#                   Redis's client-output-buffer-limit), under a slow-read
#                   attack asking for just less than the cap
# In the HTTP runs a client asks for a 2 MiB burst every half second, with
# a new connection each time; the RESULT lines count the bursts served.
#
# relayd keeps its responses in the library's chunk pool (memory that goes
# back to the OS as soon as it is sent or reclaimed); --pool off runs it
# with --no-pool (responses in libevent's malloc'd chains, the design
# before the pool), for comparison.  httpd does not use the pool.  Each
# RESULT line says pool=on|off as the server reported it (its FINAL line).
#
# Then one table, one chart (gnuplot PNG) of every run, the targets and
# whether they hold, and one RESULT line per run, last:
#   RESULT scenario=<name> quota=<bytes> peak_tracked=<bytes> peak_rss=<bytes>
#          attackers_killed=<k>/<m> honest_killed=<k>/<n>
#          honest_throughput_ratio=<x> honest_p99_ms=<ms> honest_p99_ratio=<x>
#          allocator=<name> pool=on|off idle_rss=<bytes> rss_after=<bytes> ...
# (quota=18446744073709551615, MEMQ_UNLIMITED, for the runs without; rss_after
# is "-" when the server was stopped by its cap.)  Ratios are against the
# run's reference: baseline for relayd (and control, in
# honest_p99_ratio_control=), http-control for httpd.
#
# Every wait is bounded and every connection goes to 127.0.0.1.  About a
# minute and a half of runs.
set -u
export LC_ALL=C

BIN=build/examples
OUT=build/demo
ALLOCATOR=glibc
POOL=on
QUOTA=64MiB
CAP=512MiB
HONEST=20
ATTACKERS=40
DURATION=8
ATTACK_START=1
ATTACK_STOP=5
HONEST_RATE=2MiB
ATTACK_RATE=16MiB
SHORT=0
ONLY=
HERE=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
usage: examples/demo.sh [options]
  --bin DIR         where relayd, httpd and loadgen are (default $BIN)
  --out DIR         CSV files, logs and the chart go there (default $OUT)
  --allocator NAME  glibc, jemalloc or mimalloc (preloaded into the servers)
  --pool on|off     relayd's responses in the chunk pool (default) or, off,
                    in libevent's malloc'd chains (relayd --no-pool)
  --quota SIZE      the servers' --max (default $QUOTA)
  --cap SIZE        RSS cap of the runs without quota (default $CAP)
  --honest N        relayd's honest clients (default $HONEST)
  --attackers M     relayd's attackers (default $ATTACKERS)
  --duration S      seconds per relayd run (default $DURATION)
  --only LIST       run only these scenarios (comma-separated names)
  --short           the integration test's version: relayd only, 16MiB quota,
                    10 honest, 20 attackers, 2.5 s runs (baseline and quota)
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift ;;
    --out) OUT=$2; shift ;;
    --allocator) ALLOCATOR=$2; shift ;;
    --pool) POOL=$2; shift ;;
    --quota) QUOTA=$2; shift ;;
    --cap) CAP=$2; shift ;;
    --honest) HONEST=$2; shift ;;
    --attackers) ATTACKERS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --short) SHORT=1; QUOTA=16MiB; HONEST=10; ATTACKERS=20; DURATION=2.5; ATTACK_START=0.5
             ATTACK_STOP=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

die() { echo "demo.sh: $*" >&2; exit 1; }
case $POOL in on|off) ;; *) die "--pool must be on or off (got $POOL)" ;; esac

if [ "$SHORT" = 1 ]; then
    SCENARIOS="baseline quota"
else
    SCENARIOS="baseline quota noquota control pressure http-control http-slowread http-noquota"
    SCENARIOS="$SCENARIOS http-slowloris http-conncap"
fi
if [ -n "$ONLY" ]; then
    SCENARIOS=$(for s in ${ONLY//,/ }; do case " $SCENARIOS " in *" $s "*) echo "$s" ;;
        *) die "unknown scenario $s" ;; esac; done | tr '\n' ' ')
fi
has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
HTTP=0
for s in $SCENARIOS; do case $s in http-*) HTTP=1 ;; esac; done

for b in relayd loadgen; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make demo"; done
if [ "$HTTP" = 1 ]; then
    [ -x "$BIN/httpd" ] || die "$BIN/httpd is missing: run make demo"
    for t in wrk slowhttptest; do
        command -v $t >/dev/null 2>&1 || die "$t is missing: apt-get install $t"
    done
fi
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

hsize() {
    case $1 in ''|-) echo "-"; return ;; esac
    awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1
        while (b >= 1024 && i < 5) { b /= 1024; i++ } printf "%.1f %s\n", b, u[i] }'
}
bytes() { awk -v s="$1" 'BEGIN {
        n = s + 0; u = tolower(s); sub(/^[0-9.]+ */, "", u)
        m = 1; if (u ~ /^k/) m = 1024; if (u ~ /^m/) m = 1048576; if (u ~ /^g/) m = 1073741824
        printf "%.0f", n * m }'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN {
        if (a == "" || b == "" || b + 0 <= 0 || a + 0 < 0) print "-"; else printf f "\n", a / b }'; }

alive() { # a child that has exited but not been reaped is not alive
    [ -r "/proc/$1/stat" ] && [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Every process started here, so that an interrupted demo leaves none.
PIDS=
cleanup() {
    for p in $PIDS; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

TTY=0
[ -t 2 ] && TTY=1
# A status line on stderr: in place on a terminal, once every 2 s otherwise.
LAST_STATUS=0
status() {
    local now
    now=$(date +%s%N)
    if [ "$TTY" = 1 ]; then
        printf '\r%s\033[K' "$1" >&2
    elif [ $((now - LAST_STATUS)) -ge 2000000000 ]; then
        printf '%s\n' "$1" >&2
        LAST_STATUS=$now
    fi
}
status_done() { [ "$TTY" = 1 ] && printf '\n' >&2; LAST_STATUS=0; }

# start_server OUT ERR NOFILE ENV cmd...: a server in the background, with
# the allocator preloaded, the descriptor limit NOFILE (if not empty) and
# the environment assignment ENV (if not empty); SPID is its pid, SPORT its
# port once it says READY (5 s at most).
start_server() {
    local out=$1 err=$2 nofile=$3 envset=$4
    shift 4
    : >"$out"
    (
        [ -n "$nofile" ] && ulimit -n "$nofile"
        [ -n "$PRELOAD" ] && export LD_PRELOAD=$PRELOAD
        [ -n "$envset" ] && export "${envset?}"
        exec "$@"
    ) >"$out" 2>"$err" &
    SPID=$!
    PIDS="$PIDS $SPID"
    SPORT=
    for _ in $(seq 250); do
        SPORT=$(sed -n 's/^READY port=//p' "$out")
        [ -n "$SPORT" ] && break
        alive "$SPID" || break
        sleep 0.02
    done
    [ -n "$SPORT" ] || { cat "$err" >&2; die "$(basename "$1") did not start"; }
}

# stop_server NAME: SIGTERM (5 s at most, then SIGKILL); RC_<NAME> gets its
# exit code, FINAL_<NAME> its FINAL line.
stop_server() {
    local name=$1 out=$2
    alive "$SPID" && kill -TERM "$SPID" 2>/dev/null
    for _ in $(seq 100); do alive "$SPID" || break; sleep 0.05; done
    alive "$SPID" && kill -KILL "$SPID" 2>/dev/null
    wait "$SPID" 2>/dev/null
    local rc=$?
    R[$name,rc]=$rc
    R[$name,final]=$(grep '^FINAL ' "$out" | tail -n 1)
}

# One STATS line from relayd, or /stats from httpd (2 s at most).
relayd_stats() {
    local fd line=
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'STATS\n' >&"$fd"
    IFS= read -r -t 2 line <&"$fd"
    exec {fd}<&-
    printf '%s\n' "$line"
}
httpd_stats() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1" &&
        printf 'GET /stats HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 &&
        timeout 2 cat <&3 | tail -n 1) 2>/dev/null
}

# bursts PORT COUNT FILE: honest bursts, one every half second, each a new
# connection asking for BURST bytes and reading them at once; FILE gets
# "BURSTS served=<k> total=<n>".
BURST=2097152
bursts() {
    local port=$1 n=$2 file=$3 ok=0 got i
    for ((i = 0; i < n; i++)); do
        got=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" &&
            printf 'GET /data?n=%s&tag=b HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$BURST" >&3 &&
            timeout 5 cat <&3) 2>/dev/null | wc -c)
        [ "$got" -gt "$BURST" ] && ok=$((ok + 1))
        sleep 0.5
    done
    echo "BURSTS served=$ok total=$n" >"$file"
}

declare -A R

# ---------------------------------------------------------------------------
# relayd runs
# ---------------------------------------------------------------------------

# run_relayd NAME "LOADGEN ARGS" ENV RELAYD_ARGS...
run_relayd() {
    local name=$1 extra=$2 envset=$3
    shift 3
    local rout="$OUT/$name.server.out" rerr="$OUT/$name.server.log" lout="$OUT/$name.loadgen.out"
    start_server "$rout" "$rerr" "" "$envset" "$BIN/relayd" --port 0 "$@"
    local stop=
    [ "$ATTACK_STOP" != 0 ] && stop="--attack-stop $ATTACK_STOP"
    # shellcheck disable=SC2086
    timeout --foreground 60 "$BIN/loadgen" --port "$SPORT" --label "$name" --progress \
        --csv "$OUT/$name.csv" --honest "$HONEST" --duration "$DURATION" \
        --attack-start "$ATTACK_START" $stop --honest-rate "$HONEST_RATE" \
        --attack-rate "$ATTACK_RATE" $extra >"$lout" &
    local lpid=$!
    PIDS="$PIDS $lpid"
    if [ "$name" = pressure ]; then
        # The slow readers hold their memory from t=1.2 s; pressure at 3 s.
        sleep 3
        local before
        before=$(relayd_stats "$SPORT")
        timeout 2 sh -c "printf x > '$OUT/pressure.fifo'" || echo "demo.sh: cannot write the FIFO" >&2
        sleep 1
        R[$name,after_line]=$(relayd_stats "$SPORT")
        R[$name,used_before]=$(kv "$before" used)
    fi
    wait "$lpid" || die "loadgen failed ($name)"
    stop_server "$name" "$rout"
    R[$name,load]=$(grep '^LOADGEN ' "$lout" | tail -n 1)
    R[$name,kind]=relayd
}

# ---------------------------------------------------------------------------
# httpd runs
# ---------------------------------------------------------------------------

WRK_CONNS=8
WRK_PACE=5          # ms between a connection's requests
WRK_SIZE=65536
HTTP_ATTACK=6       # seconds of attack (slowhttptest -l)

# run_httpd NAME NOFILE "SLOWHTTPTEST ARGS" NEWCONN HTTPD_ARGS...: with
# NEWCONN=1, wrk opens a new connection for every request.
run_httpd() {
    local name=$1 nofile=$2 slow=$3 newconn=$4
    shift 4
    local wrkx=()
    [ "$newconn" = 1 ] && wrkx=(-H "Connection: close")
    local out="$OUT/$name.server.out" err="$OUT/$name.server.log"
    start_server "$out" "$err" "$nofile" "" "$BIN/httpd" --port 0 --csv "$OUT/$name.csv" "$@"
    local port=$SPORT base="http://127.0.0.1:$SPORT"
    slow=${slow//PORT/$port}
    local wdur=$((HTTP_ATTACK + 1))
    timeout $((wdur + 10)) wrk -t1 -c"$WRK_CONNS" -d"${wdur}s" --timeout 5s "${wrkx[@]}" \
        -s "$HERE/wrk_honest.lua" "$base/data?n=$WRK_SIZE&tag=h" -- "$WRK_PACE" \
        >"$OUT/$name.wrk.out" 2>&1 &
    local wpid=$!
    PIDS="$PIDS $wpid"
    sleep 0.5
    R[$name,idle_rss]=$(kv "$(httpd_stats "$port")" rss)
    local t0
    t0=$(date +%s%N)
    # shellcheck disable=SC2086
    timeout $((HTTP_ATTACK + 15)) slowhttptest $slow -l "$HTTP_ATTACK" -p 3 \
        >"$OUT/$name.slowhttptest.log" 2>&1 &
    local apid=$!
    PIDS="$PIDS $apid"
    bursts "$port" $((HTTP_ATTACK * 2 - 1)) "$OUT/$name.bursts" &
    local bpid=$!
    PIDS="$PIDS $bpid"
    local line t
    while alive "$apid"; do
        line=$(tail -n 1 "$OUT/$name.csv" 2>/dev/null)
        t=$(( ($(date +%s%N) - t0) / 100000000 ))
        IFS=, read -r _ used rss _ conns killed evicted cut _ <<<"$line"
        status "[$name] $((t / 10)).$((t % 10))s  tracked $(hsize "${used:-0}")  rss $(hsize "${rss:-0}")  conns ${conns:-0}  killed ${killed:-0}  evicted ${evicted:-0}  cut ${cut:-0}$(alive "$SPID" || echo '  SERVER GONE')"
        sleep 0.25
    done
    wait "$apid"
    status_done
    # The attack is over (slowhttptest closed its connections when it
    # exited): RSS 2 s later.
    sleep 2
    R[$name,rss_after]=-
    if alive "$SPID"; then
        R[$name,rss_after]=$(kv "$(httpd_stats "$port")" rss)
    fi
    wait "$wpid" "$bpid"
    stop_server "$name" "$out"
    R[$name,wrk]=$(grep '^WRK ' "$OUT/$name.wrk.out" | tail -n 1)
    R[$name,bursts]=$(cat "$OUT/$name.bursts" 2>/dev/null)
    R[$name,kind]=httpd
}

# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------

SECONDS=0
echo "libmemquota demonstration, allocator $ALLOCATOR, relayd's pool $POOL, quota $QUOTA; all on 127.0.0.1."
echo "relayd: $HONEST honest clients (each asking $HONEST_RATE/s), $ATTACKERS attackers (each"
echo "asking $ATTACK_RATE/s, reading nothing) from t=${ATTACK_START}s, ${DURATION}s per run."

RQ=(--max "$QUOTA")
NOPOOL=()
[ "$POOL" = off ] && NOPOOL=(--no-pool) && RQ+=(--no-pool)
has baseline && run_relayd baseline "--attackers 0" "" "${RQ[@]}"
has quota && run_relayd quota "--attackers $ATTACKERS" "" "${RQ[@]}"
has noquota && run_relayd noquota "--attackers $ATTACKERS" "" --no-quota --rss-cap "$CAP" \
    "${NOPOOL[@]}"
has control && run_relayd control "--attackers $ATTACKERS --attackers-read" "" "${RQ[@]}"
PLOW=$(( $(bytes "$QUOTA") / 4 ))
if has pressure; then
    rm -f "$OUT/pressure.fifo"
    mkfifo "$OUT/pressure.fifo" || die "cannot create $OUT/pressure.fifo"
    # 20 slow readers asking 2 MiB each (40 MiB, under the low-water mark)
    run_relayd pressure "--attackers 20 --attack-total 2MiB" \
        "MEMORY_PRESSURE_WATCH=$(cd "$OUT" && pwd)/pressure.fifo" \
        "${RQ[@]}" --pressure-low-water "$PLOW"
fi

if [ "$HTTP" = 1 ]; then
    echo "httpd: wrk, $WRK_CONNS connections asking ${WRK_SIZE}-byte responses every ${WRK_PACE} ms,"
    echo "against slowhttptest for ${HTTP_ATTACK}s; a 2 MiB burst every 0.5 s on a new connection."
fi
XR="-X -k 1 -n 1 -z 32 -w 1 -y 512"
HQ=(--max "$QUOTA" --max-response 4MiB)
has http-control && run_httpd http-control "" \
    "$XR -c 800 -r 200 -u http://127.0.0.1:PORT/data?n=0&tag=a" 0 "${HQ[@]}"
has http-slowread && run_httpd http-slowread "" \
    "$XR -c 800 -r 200 -u http://127.0.0.1:PORT/data?n=4194304&tag=a" 0 "${HQ[@]}"
has http-noquota && run_httpd http-noquota "" \
    "$XR -c 800 -r 200 -u http://127.0.0.1:PORT/data?n=4194304&tag=a" 0 \
    --no-quota --max-response 4MiB --rss-cap "$CAP"
has http-slowloris && run_httpd http-slowloris 1024 \
    "-H -c 2000 -r 400 -i 5 -u http://127.0.0.1:PORT/data?n=0&tag=s" \
    1 "${HQ[@]}"
has http-conncap && run_httpd http-conncap "" \
    "$XR -c 600 -r 200 -u http://127.0.0.1:PORT/data?n=500000&tag=a" 0 \
    --no-quota --max-response 4MiB --conn-cap 512KiB --rss-cap "$CAP"
ELAPSED=$SECONDS

# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

ORDER="baseline quota noquota control pressure http-control http-slowread http-noquota"
ORDER="$ORDER http-slowloris http-conncap"
RUNS=$(for s in $ORDER; do has "$s" && echo "$s"; done | tr '\n' ' ')
for s in $RUNS; do
    [ -n "${R[$s,final]}" ] || die "$s produced no FINAL line; see $OUT/$s.server.log"
done

# The references: relayd's baseline (and control), httpd's http-control.
ref_p99() {
    case $1 in
    http-*) kv "${R[http-control,wrk]:-}" p99_us | awk '{ if ($1 != "") printf "%.3f\n", $1 / 1000 }' ;;
    *) kv "${R[baseline,load]:-}" latency_p99_attack_ms ;;
    esac
}
ref_thr() {
    case $1 in
    http-*) wrk_rate "${R[http-control,wrk]:-}" ;;
    *) kv "${R[baseline,load]:-}" honest_window_Bps ;;
    esac
}
wrk_rate() { # requests per second in a WRK line
    awk -v r="$(kv "$1" requests)" -v d="$(kv "$1" duration_us)" \
        'BEGIN { if (d > 0) printf "%.3f\n", r / (d / 1e6); else print 0 }'
}
num() { printf '%s\n' "${1:-0}"; }

for s in $RUNS; do
    F=${R[$s,final]}
    R[$s,quota]=$(kv "$F" quota)
    R[$s,peak]=$(kv "$F" peak)
    R[$s,peak_rss]=$(kv "$F" peak_rss)
    R[$s,bound]=$(kv "$F" bound)
    R[$s,reason]=$(kv "$F" reason)
    R[$s,uptime]=$(kv "$F" uptime_ms)
    R[$s,pool]=$(kv "$F" pool)
    [ -n "${R[$s,pool]}" ] || R[$s,pool]=off # httpd: no pool, no pool= field
    if [ "${R[$s,kind]}" = relayd ]; then
        L=${R[$s,load]}
        R[$s,ak]=$(kv "$L" attackers_lost)
        R[$s,am]=$(kv "$L" attackers)
        R[$s,hk]=$(kv "$L" honest_lost)
        R[$s,hn]=$(kv "$L" honest)
        R[$s,thr]=$(kv "$L" honest_window_Bps)
        R[$s,p99]=$(kv "$L" latency_p99_attack_ms)
        R[$s,idle_rss]=$(kv "$L" idle_rss)
        R[$s,rss_after]=$(kv "$L" rss_after)
        [ "${R[$s,reason]}" = rss-cap ] && R[$s,rss_after]=-
    else
        W=${R[$s,wrk]:-}
        if [ "$s" = http-slowloris ]; then
            # Slowloris connections never finish a request: untagged ("none").
            R[$s,am]=$(num "$(kv "$F" none_conns)")
            R[$s,ak]=$(( $(num "$(kv "$F" none_killed)") + $(num "$(kv "$F" none_evicted)") ))
        else
            R[$s,am]=$(num "$(kv "$F" a_conns)")
            R[$s,ak]=$(( $(num "$(kv "$F" a_killed)") + $(num "$(kv "$F" a_evicted)") +
                $(num "$(kv "$F" a_cut)") ))
        fi
        R[$s,hn]=$(num "$(kv "$F" h_conns)")
        R[$s,hk]=$(( $(num "$(kv "$F" h_killed)") + $(num "$(kv "$F" h_evicted)") +
            $(num "$(kv "$F" h_cut)") ))
        # Stopped at its RSS cap: the connections still open died with it.
        if [ "${R[$s,reason]}" = rss-cap ]; then
            R[$s,hk]=$((R[$s,hk] + $(num "$(kv "$F" h_open)")))
            R[$s,ak]=$((R[$s,ak] + $(num "$(kv "$F" a_open)")))
        fi
        R[$s,thr]=$(wrk_rate "$W")
        R[$s,p99]=$(kv "$W" p99_us | awk '{ if ($1 != "") printf "%.3f\n", $1 / 1000 }')
        R[$s,sockerr]=$(( $(num "$(kv "$W" connect_errors)") + $(num "$(kv "$W" read_errors)") +
            $(num "$(kv "$W" write_errors)") + $(num "$(kv "$W" timeouts)") ))
        R[$s,connerr]=$(num "$(kv "$W" connect_errors)")
        R[$s,statuserr]=$(num "$(kv "$W" status_errors)")
        R[$s,hreq]=$(num "$(kv "$W" requests)")
        R[$s,bs]=$(num "$(kv "${R[$s,bursts]:-}" served)")
        R[$s,bn]=$(num "$(kv "${R[$s,bursts]:-}" total)")
        R[$s,cpu]=$(div "$(kv "$F" cpu_ms)" "$(awk -v u="$(kv "$F" uptime_ms)" \
            'BEGIN { print u / 100 }')" "%.0f")
        R[$s,evicted]=$(kv "$F" evicted)
        R[$s,accept_errors]=$(kv "$F" accept_errors)
        R[$s,cut]=$(kv "$F" cut)
        R[$s,peak_conns]=$(kv "$F" peak_conns)
        R[$s,fd_limit]=$(kv "$F" fd_limit)
        R[$s,max_conns]=$(kv "$F" max_conns)
    fi
    R[$s,thr_ratio]=$(div "${R[$s,thr]}" "$(ref_thr "$s")")
    R[$s,p99_ratio]=$(div "${R[$s,p99]}" "$(ref_p99 "$s")" "%.2f")
done
if has quota && has control; then
    R[quota,p99_ratio_control]=$(div "${R[quota,p99]}" "${R[control,p99]}" "%.2f")
    R[control,p99_ratio_control]=1.00
fi
if has pressure; then
    R[pressure,events]=$(kv "${R[pressure,after_line]}" pressure_events)
    R[pressure,used_after]=$(kv "${R[pressure,after_line]}" used)
    # Honest clients keep claiming in the second after the episode: each
    # may hold a response in flight and its two caches.
    R[pressure,slack]=$((HONEST * (65536 + 2 * 16384)))
fi

# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%d%%\n", 100 * a / b; else print "-" }'; }
quota_h() { if [ "$1" = 18446744073709551615 ]; then echo none; else hsize "$1"; fi; }
secs_h() { awk -v u="$1" 'BEGIN { printf "%.1f s\n", u / 1000 }'; }
note() {
    local s=$1
    case $s in
    baseline) echo "the reference: no attack" ;;
    quota) echo "bound $(hsize "${R[$s,bound]}"); last attacker gone at $(kv "${R[$s,load]}" last_attacker_loss_ms | cut -d. -f1) ms" ;;
    control) echo "attackers read everything: the attack's load, no memory pinned" ;;
    noquota|http-noquota)
        if [ "${R[$s,reason]}" = rss-cap ]; then
            echo "stopped at the $(hsize "$(bytes "$CAP")") RSS cap after $(secs_h "${R[$s,uptime]}")"
        else
            echo "ran to the end"
        fi ;;
    pressure) echo "used $(hsize "${R[$s,used_before]}") -> $(hsize "${R[$s,used_after]}") 1 s after pressure (target $(hsize "$PLOW"))" ;;
    http-control) echo "bursts ${R[$s,bs]}/${R[$s,bn]} served" ;;
    http-slowread) echo "bound $(hsize "${R[$s,bound]}"); bursts ${R[$s,bs]}/${R[$s,bn]} served" ;;
    http-slowloris) echo "${R[$s,max_conns]} slots for ${R[$s,fd_limit]} fds: ${R[$s,evicted]} idlest closed, ${R[$s,connerr]} refused, CPU ${R[$s,cpu]}%" ;;
    http-conncap) echo "$(hsize "$(div "${R[$s,peak]}" "${R[$s,peak_conns]}" "%.0f")") x ${R[$s,peak_conns]} conns; bursts ${R[$s,bs]}/${R[$s,bn]} served" ;;
    esac
}
FMT='%-15s %-9s %-10s %-10s %-20s %-10s %-9s %-6s %-15s %s\n'
echo
# shellcheck disable=SC2059
printf "$FMT" scenario quota "peak" "peak RSS" "RSS idle -> after" attackers honest thr "honest p99" ""
# shellcheck disable=SC2059
printf "$FMT" "" "" tracked "" "" killed killed ratio "ms (ratio)" notes
for s in $RUNS; do
    # shellcheck disable=SC2059
    printf "$FMT" "$s" "$(quota_h "${R[$s,quota]}")" "$(hsize "${R[$s,peak]}")" \
        "$(hsize "${R[$s,peak_rss]}")" \
        "$(hsize "${R[$s,idle_rss]}") -> $(hsize "${R[$s,rss_after]}")" \
        "$(pct "${R[$s,ak]}" "${R[$s,am]}")" "${R[$s,hk]}/${R[$s,hn]}" "${R[$s,thr_ratio]}" \
        "${R[$s,p99]:--} (${R[$s,p99_ratio]})" "$(note "$s")"
done
echo
echo "How to read it: 'peak tracked' is the most the quota counted (it may pass the"
echo "quota by one response before reclamation runs: 'bound'); 'peak RSS' the process's"
echo "resident memory at its worst; 'RSS idle -> after' its RSS just before the attack"
echo "and 2 s after the last attacker was gone (what the allocator gave back). 'killed'"
echo "counts connections the server closed (reclaimed, or closed for a slot), of all"
echo "the attack's or the honest clients' connections. 'thr ratio' and 'honest p99'"
echo "are the honest clients' throughput and 99th-percentile latency during the attack,"
echo "against the reference run: baseline for relayd, http-control for httpd."

# ---------------------------------------------------------------------------
# The chart
# ---------------------------------------------------------------------------

if command -v gnuplot >/dev/null 2>&1; then
    n=$(echo "$RUNS" | wc -w)
    rows=$(((n + 1) / 2))
    qb=$(bytes "$QUOTA")
    cb=$(bytes "$CAP")
    {
        echo "set terminal pngcairo size 1400,$((rows * 300 + 60)) font ',9'"
        echo "set output '$OUT/demo.png'"
        echo "set datafile separator ','"
        echo "set key below horizontal font ',8'; set grid; set xlabel 'seconds' offset 0,0.5"
        echo "set ylabel 'MiB'; set y2label 'connections'; set y2tics; set ytics nomirror"
        echo "set yrange [0:*]; set y2range [0:*]"
        echo "set multiplot layout $rows,2 title 'libmemquota demonstration ($ALLOCATOR, relayd pool $POOL): tracked memory, RSS and open connections'"
        for s in $RUNS; do
            if [ "${R[$s,kind]}" = relayd ]; then cc=7; else cc=5; fi
            limit="$qb/1048576 with lines dt 2 lc rgb 'red' title 'quota'"
            [ "${R[$s,quota]}" = 18446744073709551615 ] &&
                limit="$cb/1048576 with lines dt 2 lc rgb 'red' title 'RSS cap'"
            echo "set title '$s'"
            echo "plot '$OUT/$s.csv' every ::1 using 1:(\$2/1048576) with lines lw 2 title 'tracked'," \
                "'' every ::1 using 1:(\$3/1048576) with lines lw 2 title 'RSS'," \
                "'' every ::1 using 1:$cc axes x1y2 with lines lc rgb 'gray' title 'connections'," \
                "$limit"
        done
        echo "unset multiplot"
    } >"$OUT/demo.gnuplot"
    if gnuplot "$OUT/demo.gnuplot" 2>"$OUT/gnuplot.log"; then
        CHART="$OUT/demo.png"
    else
        CHART="gnuplot failed, see $OUT/gnuplot.log"
    fi
else
    CHART="install gnuplot-nox for $OUT/demo.png"
fi

# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

FATAL=
# target FATAL DESCRIPTION COMMAND...: "holds" or "MISSED"; a missed fatal
# target (a defence that failed, not a latency figure) fails the demo.
target() {
    local fatal=$1 what=$2
    shift 2
    if "$@"; then
        printf '  holds   %s\n' "$what"
    else
        printf '  MISSED  %s\n' "$what"
        [ "$fatal" = 1 ] && FATAL="$FATAL; $what"
    fi
    return 0
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a != "-" && a + 0 <= b + 0) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a != "-" && a + 0 >= b + 0) }'; }
rc_ok() { # servers exit 0 on SIGTERM, 3 at their RSS cap (only without quota)
    case ${R[$1,rc]}:${R[$1,quota]} in 0:*|3:18446744073709551615) return 0 ;; *) return 1 ;; esac
}
all_zero() { for v in "$@"; do [ "$v" = 0 ] || return 1; done; }
some_and_none() { [ "${1:-0}" -gt 0 ] && [ "$2" = 0 ]; }
lt() { [ "${1:-0}" -lt "${2:-0}" ]; }
echo
echo "Targets (each run against its reference, in this same demo):"
for s in $RUNS; do
    target 1 "$s: the server exited cleanly (code ${R[$s,rc]}, ${R[$s,reason]})" rc_ok "$s"
done
if has quota; then
    s=quota
    target 1 "quota: peak tracked $(hsize "${R[$s,peak]}") <= bound $(hsize "${R[$s,bound]}")" \
        le "${R[$s,peak]}" "${R[$s,bound]}"
    target 1 "quota: attackers killed ${R[$s,ak]}/${R[$s,am]} >= 95%" \
        ge "$(div "${R[$s,ak]}" "${R[$s,am]}")" 0.95
    target 1 "quota: no honest client killed (${R[$s,hk]}/${R[$s,hn]})" all_zero "${R[$s,hk]}"
    if has baseline; then
        target 1 "quota: honest throughput ratio ${R[$s,thr_ratio]} >= 0.80" ge "${R[$s,thr_ratio]}" 0.80
        target 0 "quota: honest p99 ${R[$s,p99]} ms <= 3 x the no-attack run's ${R[baseline,p99]} ms (ratio ${R[$s,p99_ratio]})" \
            le "${R[$s,p99_ratio]}" 3
    fi
    if has control; then
        target 0 "quota: honest p99 <= 3 x the control run's ${R[control,p99]} ms (ratio ${R[$s,p99_ratio_control]})" \
            le "${R[$s,p99_ratio_control]}" 3
    fi
    # Real memory (issue 11): with the pool, RSS follows the quota.  Fatal
    # in the full demo with the pool; without it they are shown for
    # comparison, and the short run (make check, sanitizers included)
    # only reports them (check_demo.sh checks its own shape of them).
    qb=$(bytes "$QUOTA")
    idle=${R[$s,idle_rss]:-}
    rf=0 rnote=" (without the pool: for comparison, not a target)"
    [ "${R[$s,pool]}" = on ] && rnote=" (pool on)"
    [ "${R[$s,pool]}" = on ] && [ "$SHORT" = 0 ] && rf=1
    peak_lim=$(awk -v q="$qb" -v i="${idle:-0}" 'BEGIN { printf "%.0f", 1.10 * q + i }')
    after_lim=$(awk -v q="$qb" -v i="${idle:-0}" 'BEGIN { printf "%.0f", i + 0.10 * q }')
    R[$s,peak_rss_limit]=$peak_lim
    R[$s,rss_after_limit]=$after_lim
    target "$rf" "quota: peak RSS $(hsize "${R[$s,peak_rss]}") <= 1.10 x quota + idle RSS $(hsize "$idle") = $(hsize "$peak_lim")$rnote" \
        le "${R[$s,peak_rss]}" "$peak_lim"
    target "$rf" "quota: RSS 2 s after the attack $(hsize "${R[$s,rss_after]}") <= idle RSS + 0.10 x quota = $(hsize "$after_lim")$rnote" \
        le "${R[$s,rss_after]}" "$after_lim"
fi
if has pressure; then
    s=pressure
    target 1 "pressure: used $(hsize "${R[$s,used_after]}") 1 s after the event <= target $(hsize "$PLOW") (+ $(hsize "${R[$s,slack]}") of honest traffic)" \
        le "${R[$s,used_after]}" $((PLOW + R[$s,slack]))
    target 1 "pressure: the watcher heard it (pressure_events=${R[$s,events]})" ge "${R[$s,events]}" 1
    target 1 "pressure: the oldest holders closed (${R[$s,ak]}/${R[$s,am]} slow readers), no honest client (${R[$s,hk]}/${R[$s,hn]})" \
        some_and_none "${R[$s,ak]}" "${R[$s,hk]}"
fi
if has http-slowread; then
    s=http-slowread
    target 1 "http-slowread: peak tracked $(hsize "${R[$s,peak]}") <= quota + one response + caches = $(hsize "${R[$s,bound]}")" \
        le "${R[$s,peak]}" "${R[$s,bound]}"
    target 1 "http-slowread: attack connections reclaimed ${R[$s,ak]}/${R[$s,am]} >= 95%" \
        ge "$(div "${R[$s,ak]}" "${R[$s,am]}")" 0.95
    target 1 "http-slowread: every honest request 2xx, no socket error (${R[$s,hreq]} requests: ${R[$s,statuserr]} not 2xx, ${R[$s,sockerr]} socket errors; ${R[$s,hk]} honest connections closed)" \
        all_zero "${R[$s,statuserr]}" "${R[$s,sockerr]}" "${R[$s,hk]}"
    if has http-control; then
        target 0 "http-slowread: honest p99 ${R[$s,p99]} ms <= 3 x http-control's ${R[http-control,p99]} ms (ratio ${R[$s,p99_ratio]})" \
            le "${R[$s,p99_ratio]}" 3
    fi
fi
if has http-slowloris; then
    s=http-slowloris
    target 1 "http-slowloris: honest clients served, none refused (${R[$s,hreq]} requests on new connections, ${R[$s,connerr]} refused, ${R[$s,sockerr]} socket errors)" \
        some_and_none "${R[$s,hreq]}" "${R[$s,sockerr]}"
    target 1 "http-slowloris: the CPU does not spin (the server used ${R[$s,cpu]}% of a core)" \
        le "${R[$s,cpu]}" 80
fi
if has http-conncap; then
    s=http-conncap
    target 0 "http-conncap: memory grows with the connections ($(hsize "${R[$s,peak]}") for ${R[$s,peak_conns]} connections)" \
        ge "${R[$s,peak]}" $((${R[$s,peak_conns]:-0} * 400000))
    target 0 "http-conncap: honest bursts cut (${R[$s,bs]}/${R[$s,bn]} served)" \
        lt "${R[$s,bs]}" "${R[$s,bn]}"
fi

echo
echo "Time series (CSV): $OUT/<run>.csv; logs: $OUT/<run>.server.log and the clients' outputs"
echo "Chart: $CHART"
echo "Demo time: ${ELAPSED}s"
[ -z "$FATAL" ] || echo "NOT DEFENDED:${FATAL#;}"

# ---------------------------------------------------------------------------
# RESULT lines, last
# ---------------------------------------------------------------------------

echo
for s in $RUNS; do
    line="RESULT scenario=$s quota=${R[$s,quota]} peak_tracked=${R[$s,peak]} peak_rss=${R[$s,peak_rss]}"
    line="$line attackers_killed=${R[$s,ak]}/${R[$s,am]} honest_killed=${R[$s,hk]}/${R[$s,hn]}"
    line="$line honest_throughput_ratio=${R[$s,thr_ratio]} honest_p99_ms=${R[$s,p99]:--}"
    line="$line honest_p99_ratio=${R[$s,p99_ratio]} allocator=$ALLOCATOR pool=${R[$s,pool]}"
    line="$line idle_rss=${R[$s,idle_rss]:--} rss_after=${R[$s,rss_after]:--}"
    case $s in
    quota|control)
        [ -n "${R[$s,p99_ratio_control]:-}" ] &&
            line="$line honest_p99_ratio_control=${R[$s,p99_ratio_control]}"
        [ "$s" = quota ] && line="$line bound=${R[$s,bound]}" &&
            line="$line peak_rss_limit=${R[$s,peak_rss_limit]:--} rss_after_limit=${R[$s,rss_after_limit]:--}"
        ;;
    pressure)
        line="$line pressure_events=${R[$s,events]} used_after_pressure=${R[$s,used_after]}"
        line="$line pressure_low_water=$PLOW used_before_pressure=${R[$s,used_before]}"
        ;;
    http-*)
        line="$line bursts_served=${R[$s,bs]}/${R[$s,bn]} honest_socket_errors=${R[$s,sockerr]}"
        line="$line honest_non2xx=${R[$s,statuserr]} server_cpu_pct=${R[$s,cpu]}"
        case $s in
        http-slowread) line="$line bound=${R[$s,bound]}" ;;
        http-slowloris)
            line="$line evicted=${R[$s,evicted]} accept_errors=${R[$s,accept_errors]}"
            line="$line max_conns=${R[$s,max_conns]}"
            ;;
        http-conncap) line="$line cut=${R[$s,cut]} peak_conns=${R[$s,peak_conns]}" ;;
        esac
        ;;
    esac
    echo "$line"
done
[ -z "$FATAL" ]
