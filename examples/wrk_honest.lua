-- examples/wrk_honest.lua - wrk's honest clients for `make demo` (examples/demo.sh).
--
-- Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
--
--   wrk -t1 -c8 -d6s -s examples/wrk_honest.lua 'http://127.0.0.1:PORT/data?n=65536&tag=h' -- 5
--
-- The argument after "--" paces each connection: it waits that many
-- milliseconds before each request (wrk's delay()), so that the honest load
-- is a steady demand, not a flood that would saturate the CPU by itself and
-- hide what the attack costs.  (wrk measures a request's latency from its
-- send, not including the delay.)  At the end one machine-readable line:
--   WRK requests= bytes= duration_us= connect_errors= read_errors=
--       write_errors= status_errors= timeouts= p50_us= p90_us= p99_us= max_us=
-- status_errors counts responses other than 2xx and 3xx.

local pace = 0

function init(args)
   pace = tonumber(args[1] or "0") or 0
end

function delay()
   return pace
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRK requests=%d bytes=%d duration_us=%d connect_errors=%d read_errors=%d " ..
      "write_errors=%d status_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
      summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
