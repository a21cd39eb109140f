/*
 * relayd - a small libevent TCP daemon whose memory is kept under a quota by
 * libmemquota, for the demonstration (`make demo`) of the sniper defence.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Protocol (plain TCP on 127.0.0.1, one request per line):
 *   GET <n>\n   answered with exactly n bytes; the connection stays open.
 *   STATS\n     answered with one line of key=value pairs (used, max,
 *               accounts, reclaimed, rss, and more) and "\n".
 *   anything else: "ERR <reason>\n", then the connection is closed.
 *
 * Like a relay, relayd queues a response as soon as it is asked for, without
 * waiting for the client to read: a client that asks and never reads makes
 * the daemon hold data it can never send (the "sniper" attack).  The
 * defence, built on libmemquota and libmemquota-event (<memquota/event.h>):
 *  - every connection is an account, named by its peer address; its input
 *    evbuffer is a tracked participant (memq_evbuffer_new_bufferevent()),
 *    and so is its output (see "Where responses live" below), so the
 *    tracker knows the age of each connection's oldest unsent byte;
 *  - when the total crosses --max, reclamation runs in the event loop at
 *    priority 0 (memq_event_attach(): the claim that crosses max activates
 *    it, so it runs as soon as the callback that claimed returns) and
 *    closes the connections holding the oldest data, through the normal
 *    close path, until the total is back under the low-water mark;
 *  - requests are admitted only while the total is at or below --max: a
 *    request that arrives during reclamation waits in its connection's
 *    bounded input buffer until reclamation is done.  So the total never
 *    exceeds max + the participations' caches + one response (--max-request)
 *    + the connections' input buffers (1 KiB each): the bound relayd prints;
 *  - the kernel is not left holding what the quota cannot see: each socket
 *    keeps at most 16 KiB unsent (TCP_NOTSENT_LOWAT) plus one 64 KiB write
 *    (without it Linux grows the send buffer of a peer that reads nothing
 *    to megabytes);
 *  - the machine is heard too: the built-in pressure watcher
 *    (memq_config.pressure_watch: systemd's $MEMORY_PRESSURE_WATCH, else
 *    PSI) reclaims the oldest data down to --pressure-low-water when the
 *    OS says memory is short, and --rss-max reclaims when the process's
 *    resident memory passes it.
 *
 * Where responses live.  By default in the tracker's chunk pool
 * (memq_tracker_pool(), <memquota/pool.h>), so that what reclamation frees
 * goes back to the OS at once, whatever the malloc, and RSS follows the
 * tracked total.  Each connection's output is a participant of relayd's
 * own (struct outq): a response is cut into pieces of up to 64 KiB (a
 * pool class), each allocated with memq_pool_alloc_at() stamped with the
 * time it was built (which claims it), filled, and handed to libevent
 * without a copy (evbuffer_add_reference()).  libevent calls the cleanup
 * callback when it has sent or dropped the piece, and the chunk is freed
 * there (memq_pool_dealloc(), which releases it).  The participant's age
 * is the stamp of the oldest piece libevent still holds (a FIFO of the
 * pieces, in the order they were queued); a reclaim closes the connection
 * as for any other victim.  The output evbuffer is not tracked otherwise,
 * so nothing is counted twice.  Lifetimes: the outq is reference-counted,
 * one reference for the connection and one per piece libevent holds, so a
 * cleanup that runs after the connection is gone (libevent finalizes a
 * freed bufferevent later, possibly after the tracker is freed) still
 * finds it; such a cleanup frees its chunk with no participation
 * (memq_pool_dealloc(NULL, chunk): its claim went with the participation).
 * A closing connection drains its output itself first (thawing the start
 * that a bufferevent keeps frozen), so its chunks are freed and released
 * at once, then frees its participation.
 * --no-pool keeps the previous design for comparison: the output evbuffer
 * is tracked by memq_evbuffer_new_bufferevent() too, and responses are
 * copied into libevent's malloc'd chains (pieces of 64 KiB - 256 bytes,
 * which fill 64 KiB chains), so RSS depends on the allocator.
 *
 * Honest latency under attack: requests are served by deficit round robin
 * (a connection earns 64 KiB of responses per loop turn; its backlog waits
 * behind every other connection's), so an attacker's pipelined requests
 * cannot make a turn long, and a honest request waits for one round.
 *
 * Connection slots are defended too: at --max-conns a new connection
 * closes the one idle the longest (no complete request and no response
 * bytes taken for the longest time; one that never made a complete request
 * first) instead of being refused, so a crowd of idle sockets cannot lock
 * honest clients out; when accept() fails (EMFILE, ENFILE) the listener
 * pauses until a connection closes or 100 ms pass, closing the idlest one
 * to make room, instead of spinning.
 *
 * --trace FILE writes the times of each served request (see
 * trace_flushed()), for latency studies with loadgen --trace.
 *
 * Nothing a client sends is allocated without being claimed: request lines
 * are read into a bounded input buffer (tracked), responses into pool
 * chunks (claimed) or, with --no-pool, the tracked output buffer.
 * Per-connection bookkeeping (about 3 KiB: the connection, its
 * bufferevent, two participations, the library's handles) is not claimed
 * but is bounded by --max-conns; nor is, with the pool, libevent's chain
 * header of each piece and its entry in the FIFO (about 100 bytes per
 * piece: 0.15% of a full 64 KiB piece, and a connection has at most one
 * piece smaller than 64 KiB per response); nor is the --prometheus
 * endpoint's (loopback, bounded request size, one dump per request).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include <memquota/event.h>

#include "example_util.h" /* now_ns, say, rss_bytes, peak_rss_bytes, parse_size_opt */

#define MAX_LINE 64          /* longest request line accepted */
#define INPUT_LIMIT 1024     /* a connection's input buffer stops reading here */
#define QUANTUM 65536        /* response bytes a connection earns per loop turn */
#define NOTSENT_LOWAT 16384  /* unsent bytes the kernel may hold per socket (+ one write) */
#define SINGLE_WRITE 65536   /* the most written to one socket per loop turn */
#define POOL_PIECE 65536     /* pool: a response piece, the pool's largest class */
#define CHAIN_PIECE (65536 - 256) /* --no-pool: pieces that fill 64 KiB chains */
#define TICK_MS 10           /* housekeeping period */
#define ERR_LINGER_S 5       /* an ERR line not read within this is dropped */
#define CACHE_MAX 16384      /* memq_config cache_max (the library default) */

/* ======================================================================
 * State
 * ====================================================================== */

typedef struct relay relay;
typedef struct conn conn;

typedef struct slot_list {
    conn *head, *tail;
} slot_list;

/* Pool mode: a connection's output as a participant (see "Where responses
 * live" above).  One reference for the connection and one per piece
 * libevent holds; freed with the last, which may come after the
 * connection (and its participation) are gone. */
typedef struct piece {
    void *chunk;     /* NULL: freed out of order, skipped when it comes to the head */
    memq_time stamp; /* when it was built */
} piece;

typedef struct outq {
    conn *c;                /* NULL once the connection is closed */
    memq_participation *p;  /* NULL once freed: chunks then go with no participation */
    size_t refs;
    size_t bytes;           /* pool bytes of the pieces libevent holds: their claims */
    size_t pieces;          /* pieces libevent holds */
    piece *fifo;            /* a ring of n entries from head, oldest first */
    size_t head, n, cap;
} outq;

struct conn {
    relay *r;
    struct bufferevent *bev;
    memq_account *account;
    memq_evbuffer *in_track;
    memq_evbuffer *out_track; /* --no-pool: the output, tracked */
    outq *out;                /* pool: the output's pieces */
    struct conn *prev, *next;   /* its slot list (see struct relay), the idlest first */
    struct conn *wprev, *wnext; /* connections with requests waiting */
    bool waiting;
    bool closing; /* ERR sent: close once flushed */
    size_t credit; /* deficit round robin: response bytes it may queue now */
    uint64_t active_ns; /* last complete request or flushed response */
    bool proven;        /* it made a complete request once */
    /* --trace: when the pending line was first seen, and the last GET's
     * times (served, queued) until its response is flushed. */
    uint64_t seen_ns, tr_seen, tr_admit, tr_queued;
    size_t tr_n;
    bool tr_pending;
    unsigned port;
    char name[64];
};

typedef struct options {
    int port;
    int prometheus_port; /* -1: off */
    size_t max, low_water, max_request, rss_cap, rss_max, pressure_low_water, pool_reserve;
    bool no_quota, no_pressure_watch, no_pool;
    unsigned max_conns;
    double stats_interval;
    const char *trace;
    bool verbose;
} options;

struct relay {
    options opt;
    struct event_base *base;
    memq_tracker *tracker;
    memq_event *mev;
    memq_pool *pool; /* the tracker's own; NULL with --no-pool */
    bool unlimited, paused;
    size_t max, low_water;
    struct event *resume_ev, *tick_ev, *sigint_ev, *sigterm_ev, *relisten_ev;
    struct evconnlistener *listener;
    struct evhttp *http;
    /* Connection slots: those that never made a complete request (fresh,
     * in order of arrival) and the others (active, least recently active
     * first); the slot defence takes the head of fresh, else of active. */
    slot_list fresh, active;
    conn *waiting, *waiting_tail;
    size_t nconns, nwaiting, peak_conns, peak_participants, peak_tracked;
    uint64_t accepted, evicted, accept_errors, killed, errors, requests, bytes_requested,
        http_requests;
    uint64_t resume_runs; /* reclamation runs seen by the last on_resume() */
    uint64_t start_ns, first_crossing_ns, first_kill_ns, last_stats_ns, last_cap_check_ns;
    pthread_t loop_thread; /* the only one that claims */
    bool capped;
    FILE *trace;
    const char *exit_reason;
    int exit_code;
};

static char pattern[POOL_PIECE];

/* ======================================================================
 * Small helpers
 * ====================================================================== */

static uint64_t ms_since_start(const relay *r, uint64_t ns)
{
    return ns == 0 ? 0 : (ns - r->start_ns) / 1000000u;
}

/* --rss-cap: stop as the OOM killer would.  Checked every tick and, at
 * most once a millisecond, while queueing responses (memory can grow by
 * hundreds of MiB a second under attack without a quota). */
static bool check_rss_cap(relay *r)
{
    if (r->opt.rss_cap == 0 || r->capped)
        return r->capped;
    size_t rss = rss_bytes();
    if (rss <= r->opt.rss_cap)
        return false;
    say("RSS %zu bytes exceeds --rss-cap %zu: stopping, as the OOM killer would", rss,
        r->opt.rss_cap);
    r->capped = true;
    r->exit_reason = "rss-cap";
    r->exit_code = 3;
    event_base_loopbreak(r->base);
    return true;
}

static bool over_quota(const relay *r)
{
    return !r->unlimited && memq_tracker_used(r->tracker) > r->max;
}

/* The largest total the admission rule allows (see the top comment). */
static size_t tracked_bound(const relay *r)
{
    if (r->unlimited)
        return SIZE_MAX;
    return r->max + r->peak_participants * CACHE_MAX + r->opt.max_request +
           r->peak_conns * INPUT_LIMIT;
}

/* The highest total tracked.  memq_stats.peak is exact with a quota; with
 * --no-quota (MEMQ_UNLIMITED) the library keeps no peak, so relayd samples
 * memq_tracker_used() every tick. */
static size_t peak_tracked(relay *r, const memq_stats *st)
{
    size_t used = memq_tracker_used(r->tracker);
    size_t peak = r->unlimited ? r->peak_tracked : st->peak;
    return used > peak ? used : peak;
}

/* One line of key=value pairs, without the newline.  cgroup_usage only
 * where the process has a cgroup with a memory controller.  pool= says
 * where responses live; slack= is the pool's slack counted in used, and
 * pool_in_use=, pool_resident=, pool_returned= the pool's own figures
 * (participants' chunks, bytes held from the OS, bytes given back so far;
 * 0 with --no-pool). */
static int format_stats(relay *r, char *buf, size_t len)
{
    memq_stats st;
    memq_tracker_stats(r->tracker, &st);
    memq_pool_stats ps;
    memset(&ps, 0, sizeof ps);
    if (r->pool != NULL)
        memq_pool_get_stats(r->pool, &ps);
    size_t used = r->unlimited ? memq_tracker_used(r->tracker) : st.used;
    size_t peak = peak_tracked(r, &st);
    size_t rss = st.rss != 0 ? st.rss : rss_bytes();
    int n = snprintf(buf, len,
                     "used=%zu max=%zu accounts=%zu reclaimed=%" PRIu64 " rss=%zu peak=%zu "
                     "peak_rss=%zu low_water=%zu cached=%zu conns=%zu participants=%zu"
                     " episodes=%" PRIu64 " killed=%" PRIu64 " evicted=%" PRIu64
                     " requests=%" PRIu64 " pressure_events=%" PRIu64
                     " pressure_episodes=%" PRIu64 " untracked=%" PRId64 " uptime_ms=%" PRIu64
                     " pool=%s slack=%zu pool_in_use=%zu pool_resident=%zu pool_returned=%" PRIu64,
                     used, st.max, st.accounts, st.accounts_reclaimed, rss, peak,
                     peak_rss_bytes(), st.low_water, st.cached, r->nconns, st.participants,
                     st.episodes, r->killed, r->evicted, r->requests, st.pressure_events,
                     st.pressure_episodes,
                     st.rss != 0 ? st.untracked : (int64_t)rss - (int64_t)used,
                     ms_since_start(r, now_ns()), r->pool != NULL ? "on" : "off", st.slack,
                     ps.in_use, ps.resident, ps.returned);
    if (st.cgroup_usage != 0 && n > 0 && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, " cgroup_usage=%zu", st.cgroup_usage);
    return n;
}

/* ======================================================================
 * Connections
 * ====================================================================== */

enum close_how { CLOSE_NORMAL, CLOSE_RECLAIMED, CLOSE_EVICTED };

static void process(conn *c);

static void waiting_remove(relay *r, conn *c)
{
    if (!c->waiting)
        return;
    if (c->wprev != NULL)
        c->wprev->wnext = c->wnext;
    else
        r->waiting = c->wnext;
    if (c->wnext != NULL)
        c->wnext->wprev = c->wprev;
    else
        r->waiting_tail = c->wprev;
    c->wprev = c->wnext = NULL;
    c->waiting = false;
    r->nwaiting--;
}

static void schedule_resume(relay *r)
{
    static const struct timeval zero = {0, 0};
    if (r->nwaiting > 0 && !event_pending(r->resume_ev, EV_TIMEOUT, NULL))
        event_add(r->resume_ev, &zero); /* next loop turn, after I/O */
}

/* Park c until the next turn (more lines to serve) or until reclamation
 * has brought the total back under max. */
static void wait_turn(conn *c)
{
    relay *r = c->r;
    if (!c->waiting) {
        c->waiting = true;
        c->wprev = r->waiting_tail;
        c->wnext = NULL;
        if (r->waiting_tail != NULL)
            r->waiting_tail->wnext = c;
        else
            r->waiting = c;
        r->waiting_tail = c;
        r->nwaiting++;
    }
    schedule_resume(r);
}

static slot_list *list_of(conn *c)
{
    return c->proven ? &c->r->active : &c->r->fresh;
}

static void slot_unlink(conn *c)
{
    slot_list *l = list_of(c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static void slot_append(conn *c)
{
    slot_list *l = list_of(c);
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail != NULL)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

/* c served a request or its peer took a whole response: to the back of
 * the active list, whose head is the connection idle the longest. */
static void touch(conn *c)
{
    c->active_ns = now_ns();
    if (!c->proven || c->r->active.tail != c) {
        slot_unlink(c);
        c->proven = true;
        slot_append(c);
    }
}

/* ======================================================================
 * Pool mode: the output's pieces
 * ====================================================================== */

static void outq_unref(outq *o)
{
    if (--o->refs > 0)
        return;
    free(o->fifo);
    free(o);
}

/* Append a piece to the FIFO (the ring doubles when full). */
static bool fifo_push(outq *o, void *chunk, memq_time stamp)
{
    if (o->n == o->cap) {
        size_t cap = o->cap == 0 ? 16 : o->cap * 2;
        piece *f = malloc(cap * sizeof *f);
        if (f == NULL)
            return false;
        for (size_t i = 0; i < o->n; i++)
            f[i] = o->fifo[(o->head + i) % o->cap];
        free(o->fifo);
        o->fifo = f;
        o->cap = cap;
        o->head = 0;
    }
    o->fifo[(o->head + o->n) % o->cap] = (piece){chunk, stamp};
    o->n++;
    return true;
}

/* Forget a piece libevent gave back.  libevent frees a buffer's chains
 * front to back, so it is the head; any other is marked and skipped when
 * it comes to the head, so that the head is always a piece still held. */
static void fifo_remove(outq *o, const void *chunk)
{
    for (size_t i = 0; i < o->n; i++) {
        piece *e = &o->fifo[(o->head + i) % o->cap];
        if (e->chunk == chunk) {
            e->chunk = NULL;
            break;
        }
    }
    while (o->n > 0 && o->fifo[o->head].chunk == NULL) {
        o->head = (o->head + 1) % o->cap;
        o->n--;
    }
}

/* libevent's cleanup callback for a piece: it was sent, drained or freed
 * with its buffer (then maybe after the connection is gone, and after the
 * tracker is freed).  Free the chunk, releasing it from the connection's
 * participation if that still exists; with NULL otherwise (its claim went
 * with the participation: see memq_pool_dealloc(3)). */
static void piece_done(const void *data, size_t len, void *arg)
{
    (void)len;
    outq *o = arg;
    void *chunk = (void *)(uintptr_t)data;
    size_t size = memq_pool_chunk_size(chunk);
    fifo_remove(o, chunk);
    o->bytes -= size < o->bytes ? size : o->bytes;
    o->pieces--;
    memq_pool_dealloc(o->p, chunk);
    outq_unref(o);
}

/* Empty a bufferevent's output now.  Its start is frozen while the
 * bufferevent lives (only the bufferevent drains it), so evbuffer_drain()
 * alone fails: thaw, drain and freeze again.  With the pool, libevent
 * calls piece_done() for every piece here, so the chunks go back to the
 * pool at once, released from a participation still alive. */
static void drain_output(struct evbuffer *out)
{
    size_t len = evbuffer_get_length(out);
    if (len == 0 || evbuffer_drain(out, len) == 0)
        return;
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, len);
    evbuffer_freeze(out, 1);
}

/* The normal close path: stop tracking, free the buffers at once, close
 * the socket, close the account.  A reclaimed or evicted connection is
 * reset (SO_LINGER 0), so that the kernel drops what it still holds for
 * the peer too.  May run inside on_collapse or the output's reclaim. */
static void conn_close(conn *c, enum close_how how)
{
    relay *r = c->r;
    waiting_remove(r, c);
    slot_unlink(c);
    r->nconns--;

    /* The tracked buffers hold a reference to the bufferevent: free them
     * first, so that bufferevent_free() below closes the socket at once. */
    memq_evbuffer_free(c->in_track);
    memq_evbuffer_free(c->out_track);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    drain_output(out);
    if (c->out != NULL) {
        /* Every piece was freed by the drain, unless libevent still holds
         * one (it never does on Linux, but a pinned chain's cleanup waits
         * for its buffer's end): the participation's claims go with it,
         * and such a piece is freed later with no participation. */
        outq *o = c->out;
        memq_participation_free(o->p);
        o->p = NULL;
        o->c = NULL;
        c->out = NULL;
        outq_unref(o);
    }
    if (how != CLOSE_NORMAL) {
        struct linger lg = {1, 0};
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    bufferevent_free(c->bev);
    memq_account_unref(c->account);
    free(c);
    /* A descriptor is free again: a listener paused by accept() errors
     * may accept. */
    if (r->paused) {
        r->paused = false;
        event_del(r->relisten_ev);
        evconnlistener_enable(r->listener);
    }
}

/* A slot for a new connection: close the one idle the longest.  One that
 * never made a complete request goes first (a slowloris's never do): a
 * flood of new connections then takes the slots of its own kind, never
 * those of clients that were served. */
static bool evict_idlest(relay *r)
{
    conn *c = r->fresh.head != NULL ? r->fresh.head : r->active.head;
    if (c == NULL)
        return false;
    if (r->opt.verbose)
        say("slot defence: closing %s, idle %.0f ms", c->name,
            (double)(now_ns() - c->active_ns) / 1e6);
    r->evicted++;
    conn_close(c, CLOSE_EVICTED);
    return true;
}

/* What c's output claims, and the stamp of its oldest byte. */
static size_t out_claimed(const conn *c)
{
    return c->out != NULL ? c->out->bytes : memq_evbuffer_claimed(c->out_track);
}

static bool out_oldest_stamp(const conn *c, memq_time *when)
{
    if (c->out == NULL)
        return memq_evbuffer_oldest(c->out_track, when);
    if (c->out->n == 0)
        return false;
    *when = c->out->fifo[c->out->head].stamp;
    return true;
}

/* Reclamation chose this connection: the input's on_collapse, the
 * output's on_collapse (--no-pool) or the output's reclaim (pool).  The
 * first to be asked tears it down; the others are freed with it. */
static void conn_reclaimed(void *ctx)
{
    conn *c = ctx;
    relay *r = c->r;
    r->killed++;
    size_t held = out_claimed(c) + memq_evbuffer_claimed(c->in_track);
    if (r->first_kill_ns == 0) {
        r->first_kill_ns = now_ns();
        memq_time oldest = 0;
        double age_ms = 0;
        if (out_oldest_stamp(c, &oldest))
            age_ms = (double)(memq_tracker_now(r->tracker) - oldest) / 1e6;
        say("first reclamation %.1f ms after the first crossing of max: closed %s, "
            "holding %zu bytes, its oldest %.0f ms old",
            (double)(r->first_kill_ns - r->first_crossing_ns) / 1e6, c->name, held, age_ms);
    } else if (r->opt.verbose) {
        say("reclaimed %s (%zu bytes)", c->name, held);
    }
    conn_close(c, CLOSE_RECLAIMED);
}

/* The output's participant callbacks (pool mode).  Its age is the oldest
 * piece libevent holds.  A byte stream cannot lose bytes from its middle,
 * so a reclaim request, like a notice that the account was closed, closes
 * the connection; its pieces are freed and released before this returns
 * (the participation is freed too, which the library allows from its own
 * callback, and the answer is then ignored). */
static bool out_oldest(void *self, memq_time *when)
{
    const outq *o = self;
    if (o->n == 0)
        return false;
    *when = o->fifo[o->head].stamp;
    return true;
}

static memq_reclaim_status out_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)req;
    outq *o = self; /* may be freed by conn_close(): not touched after */
    if (o->c != NULL)
        conn_reclaimed(o->c);
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops out_ops = {out_oldest, out_reclaim};

/* Queue n <= POOL_PIECE bytes as one piece: a pool chunk claimed by the
 * output's participation, stamped now, filled, and referenced by the
 * output evbuffer without a copy.  Returns 0, or what memq_pool_alloc_at()
 * returns (MEMQ_ECLOSED: the account was closed), or MEMQ_ENOMEM; on
 * failure nothing is queued or claimed. */
static int out_piece(conn *c, const void *data, size_t n)
{
    relay *r = c->r;
    outq *o = c->out;
    memq_time now = memq_tracker_now(r->tracker);
    void *chunk;
    int rc = memq_pool_alloc_at(r->pool, o->p, n, now, &chunk);
    if (rc != 0)
        return rc;
    memcpy(chunk, data, n);
    if (!fifo_push(o, chunk, now)) {
        memq_pool_dealloc(o->p, chunk);
        return MEMQ_ENOMEM;
    }
    if (evbuffer_add_reference(bufferevent_get_output(c->bev), chunk, n, piece_done, o) != 0) {
        fifo_remove(o, chunk); /* libevent calls no cleanup when it fails */
        memq_pool_dealloc(o->p, chunk);
        return MEMQ_ENOMEM;
    }
    o->refs++;
    o->pieces++;
    o->bytes += memq_pool_chunk_size(chunk);
    return 0;
}

/* Queue n bytes on c's output: pool pieces of up to 64 KiB, or (with
 * --no-pool) the tracked evbuffer.  Returns 0; MEMQ_ECLOSED if c was
 * reclaimed meanwhile (--no-pool: on_collapse closed it) or its account
 * closed (pool: c is still open); another error. */
static int out_add(conn *c, const void *data, size_t n)
{
    if (c->out == NULL)
        return memq_evbuffer_add(c->out_track, data, n);
    const char *p = data;
    while (n > 0) {
        size_t piece_n = n < POOL_PIECE ? n : POOL_PIECE;
        int rc = out_piece(c, p, piece_n);
        if (rc != 0)
            return rc;
        p += piece_n;
        n -= piece_n;
    }
    return 0;
}

/* out_add() for a response or a STATS line; false if c is gone. */
static bool out_add_or_close(conn *c, const void *data, size_t n)
{
    int rc = out_add(c, data, n);
    if (rc == 0)
        return true;
    if (rc == MEMQ_ECLOSED && c->out == NULL)
        return false; /* collapsed: on_collapse closed c */
    if (rc != MEMQ_ECLOSED)
        say("%s queueing a response to %s: closing it", memq_strerror(rc), c->name);
    conn_close(c, rc == MEMQ_ECLOSED ? CLOSE_RECLAIMED : CLOSE_NORMAL);
    return false;
}

/* Answer "ERR reason" and close once it is flushed (or after
 * ERR_LINGER_S if the peer does not read it). */
static void conn_error(conn *c, const char *reason)
{
    static const struct timeval linger = {ERR_LINGER_S, 0};
    c->r->errors++;
    c->closing = true;
    waiting_remove(c->r, c);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_set_timeouts(c->bev, NULL, &linger);
    if (c->out == NULL) {
        /* Tracked by the output's memq_evbuffer, which never closes c
         * here (a collapse it owes waits for the next memq_evbuffer_add) */
        evbuffer_add_printf(bufferevent_get_output(c->bev), "ERR %s\n", reason);
        return;
    }
    char msg[MAX_LINE];
    int len = snprintf(msg, sizeof msg, "ERR %s\n", reason);
    if (len > 0 && (size_t)len < sizeof msg)
        out_add(c, msg, (size_t)len); /* never closes c; if it fails, the close comes anyway */
}

/* Queue n bytes at once, as a relay queues what its upstream sends: pool
 * pieces of 64 KiB, or with --no-pool pieces that memq_evbuffer_add()
 * lays into libevent's chains so that they fill them (a new chain is
 * sized to the power of two above data + header: one evbuffer_add() of
 * 1 MiB would take a 2 MiB chain), so the claims stay close to the
 * memory.  Returns false if c was closed. */
static bool respond(conn *c, size_t n)
{
    relay *r = c->r;
    if (r->opt.rss_cap > 0) {
        uint64_t now = now_ns();
        if (now - r->last_cap_check_ns >= 1000000u) {
            r->last_cap_check_ns = now;
            check_rss_cap(r);
        }
        if (r->capped)
            return true; /* stopping: queue nothing more */
    }
    size_t step = c->out != NULL ? POOL_PIECE : CHAIN_PIECE;
    while (n > 0) {
        size_t piece_n = n < step ? n : step;
        if (!out_add_or_close(c, pattern, piece_n))
            return false;
        n -= piece_n;
    }
    return true;
}

/* Strictly "GET <decimal>" with 1 to 19 digits. */
static bool parse_get(const char *line, size_t *n)
{
    if (strncmp(line, "GET ", 4) != 0)
        return false;
    const char *p = line + 4;
    size_t v = 0, digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits == 19)
            return false;
        v = v * 10 + (size_t)(*p - '0');
    }
    if (digits == 0 || *p != '\0')
        return false;
    *n = v;
    return true;
}

/* --trace: one line per GET whose response was flushed (an attacker's
 * never is): "R <peer port> <seen> <served> <queued> <flushed> <bytes>",
 * CLOCK_MONOTONIC nanoseconds; seen is the read callback that found the
 * line, served when it passed admission, queued when its bytes were in
 * the output buffer, flushed when the output was empty again.
 * tests/demo/latency.sh joins it with loadgen's trace. */
static void trace_flushed(conn *c)
{
    if (c->r->trace == NULL || !c->tr_pending)
        return;
    c->tr_pending = false;
    fprintf(c->r->trace, "R %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %zu\n", c->port,
            c->tr_seen, c->tr_admit, c->tr_queued, now_ns(), c->tr_n);
}

/* Serve one request line.  Returns false if c was closed or is closing. */
static bool handle(conn *c, char *line)
{
    relay *r = c->r;
    size_t n;
    r->requests++;
    touch(c);
    if (parse_get(line, &n)) {
        if (n > r->opt.max_request) {
            conn_error(c, "request too large");
            return false;
        }
        r->bytes_requested += n;
        if (r->trace == NULL)
            return respond(c, n);
        uint64_t seen = c->seen_ns, admit = now_ns();
        c->seen_ns = evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ? admit : 0;
        if (!respond(c, n))
            return false;
        c->tr_pending = true;
        c->tr_seen = seen != 0 ? seen : admit;
        c->tr_admit = admit;
        c->tr_queued = now_ns();
        c->tr_n = n;
        return true;
    }
    if (strcmp(line, "STATS") == 0) {
        char buf[2048];
        int len = format_stats(r, buf, sizeof buf - 1);
        if (len < 0 || (size_t)len >= sizeof buf - 1)
            len = (int)strlen(buf);
        buf[len++] = '\n';
        return out_add_or_close(c, buf, (size_t)len);
    }
    conn_error(c, line[0] == '\0' ? "empty request" : "unknown request");
    return false;
}

/* The bytes a request line will queue: its cost in the round robin. */
static size_t line_cost(const char *line)
{
    size_t n;
    return parse_get(line, &n) ? n : 0;
}

/* One turn of connection c: serve its complete lines, if the total allows,
 * by deficit round robin.  Each turn with work waiting earns it QUANTUM
 * bytes of credit; a line is served while its response fits the credit;
 * what is left over waits for the next turn, behind every other
 * connection's, and a connection with nothing to do keeps no credit.  So
 * one loop turn queues at most about QUANTUM bytes per busy connection,
 * and a honest request waits for one round of everybody's quantum, not
 * for every attacker's backlog of requests (the old rule, 8 lines per
 * connection per turn, let 40 attackers queue 80 MiB in one turn). */
static void process(conn *c)
{
    relay *r = c->r;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    bool earned = false;
    for (;;) {
        if (c->closing)
            return;
        size_t len = evbuffer_get_length(in);
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
        if (len == 0 || eol.pos < 0) {
            if (len > MAX_LINE)
                conn_error(c, "line too long");
            c->credit = 0; /* nothing to do: no credit banked */
            return;
        }
        if ((size_t)eol.pos > MAX_LINE) {
            conn_error(c, "line too long");
            return;
        }
        if (over_quota(r)) {
            wait_turn(c); /* reclamation first; the line stays buffered */
            return;
        }
        char line[MAX_LINE + 2];
        size_t take = (size_t)eol.pos + 1;
        evbuffer_copyout(in, line, take);
        line[take - 1] = '\0';
        if (take >= 2 && line[take - 2] == '\r')
            line[take - 2] = '\0';
        size_t cost = line_cost(line);
        if (!earned) {
            c->credit += QUANTUM;
            earned = true;
        }
        if (cost > c->credit && cost <= r->opt.max_request) {
            wait_turn(c); /* the rest next turn, after the others */
            return;
        }
        c->credit -= cost < c->credit ? cost : c->credit;
        evbuffer_drain(in, take);
        if (!handle(c, line))
            return;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (c->r->trace != NULL && c->seen_ns == 0)
        c->seen_ns = now_ns();
    if (!c->waiting)
        process(c);
}

/* The output is flushed: the peer took everything it asked for. */
static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (c->closing) {
        conn_close(c, CLOSE_NORMAL); /* the ERR line is flushed */
        return;
    }
    touch(c);
    trace_flushed(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what; /* EOF, error or the ERR line's timeout: all close */
    conn_close(arg, CLOSE_NORMAL);
}

static void on_accept(struct evconnlistener *lst, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    (void)lst;
    (void)socklen;
    relay *r = arg;
    r->accepted++;
    /* At the limit, the connection idle the longest makes room: refusing
     * the new one would let idle sockets lock honest clients out. */
    while (r->nconns >= r->opt.max_conns && evict_idlest(r))
        ;
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        evutil_closesocket(fd);
        return;
    }
    c->r = r;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        c->port = ntohs(in->sin_port);
        snprintf(c->name, sizeof c->name, "%s:%u", ip, c->port);
    } else {
        snprintf(c->name, sizeof c->name, "fd %d", (int)fd);
    }
    c->bev = bufferevent_socket_new(r->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    int rc = memq_account_new(r->tracker, NULL, &c->account);
    if (rc == 0)
        rc = memq_account_set_name(c->account, c->name);
    if (rc == 0)
        rc = memq_evbuffer_new_bufferevent(c->account, c->bev, MEMQ_EVBUFFER_INPUT,
                                           conn_reclaimed, c, &c->in_track);
    if (rc == 0 && r->pool == NULL) {
        rc = memq_evbuffer_new_bufferevent(c->account, c->bev, MEMQ_EVBUFFER_OUTPUT,
                                           conn_reclaimed, c, &c->out_track);
    } else if (rc == 0) {
        /* The output as a participant of our own: its pieces are pool
         * chunks (see "Where responses live"). */
        c->out = calloc(1, sizeof *c->out);
        rc = c->out == NULL ? MEMQ_ENOMEM
                            : memq_participant_register(c->account, &out_ops, c->out, &c->out->p);
        if (rc == 0) {
            c->out->c = c;
            c->out->refs = 1;
        } else {
            free(c->out);
            c->out = NULL;
        }
    }
    if (rc != 0) {
        say("cannot track connection %s: %s", c->name, memq_strerror(rc));
        memq_evbuffer_free(c->in_track);
        bufferevent_free(c->bev);
        memq_account_unref(c->account);
        free(c);
        return;
    }
    bufferevent_priority_set(c->bev, 1);
    bufferevent_setwatermark(c->bev, EV_READ, 0, INPUT_LIMIT);
    bufferevent_set_max_single_write(c->bev, SINGLE_WRITE);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    /* Nagle plus delayed ACKs would hold a small response ~40 ms.  And the
     * kernel must not hold what the quota does not count: without a limit
     * it grows a socket's send buffer to 4 MiB (tcp_wmem) even when the
     * peer's window is shut, and takes 2 MiB per attacker in one write
     * burst (measured: 40 attackers, 80 MiB copied in one loop turn, a
     * 30 ms stall).  TCP_NOTSENT_LOWAT keeps the unsent part small; sent
     * data waiting for acknowledgement is bounded by the peer's window. */
    int one = 1, lowat = NOTSENT_LOWAT;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
    c->active_ns = now_ns();
    slot_append(c);
    r->nconns++;
    if (r->nconns > r->peak_conns)
        r->peak_conns = r->nconns;
}

static void on_relisten(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    r->paused = false;
    evconnlistener_enable(r->listener);
}

/* accept() failed with something other than EAGAIN (EMFILE, ENFILE,
 * ENOBUFS...): the listening socket stays readable, so without a pause
 * libevent would call accept() again at once, forever.  The listener
 * waits for a connection to close (conn_close() resumes it) or 100 ms. */
static void on_accept_error(struct evconnlistener *lst, void *arg)
{
    relay *r = arg;
    int err = EVUTIL_SOCKET_ERROR();
    static const struct timeval pause = {0, 100000};
    if (r->accept_errors++ == 0 || r->opt.verbose)
        say("accept: %s; pausing the listener until a connection closes (at most 100 ms)",
            strerror(err));
    evconnlistener_disable(lst);
    r->paused = true;
    event_add(r->relisten_ev, &pause);
    if (err == EMFILE || err == ENFILE)
        evict_idlest(r);
}

/* ======================================================================
 * Reclamation in the loop
 * ====================================================================== */

/* The tracker's wakeup, chained by memq_event_attach() after its own
 * (which activates reclamation at priority 0): notes the time of the first
 * crossing of max.  It runs on the thread that claimed (the loop's), or on
 * the pressure watcher's thread for a pressure episode, which is no
 * crossing and must not touch the relay. */
static void on_wakeup(void *ctx)
{
    relay *r = ctx;
    if (!pthread_equal(pthread_self(), r->loop_thread))
        return;
    if (r->first_crossing_ns == 0 && over_quota(r))
        r->first_crossing_ns = now_ns();
}

/* Serve the connections that waited, once each, in arrival order.  It runs
 * at priority 1, after reclamation (priority 0) had its turn in the same
 * loop turn.  While the total is still above max: if reclamation ran since
 * the last look, look again next turn; if it did not (an episode that
 * stopped with nothing reclaimable left), the tick looks again. */
static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    if (r->trace != NULL) /* "T <now> <waiting>": a turn that serves backlogs */
        fprintf(r->trace, "T %" PRIu64 " %zu\n", now_ns(), r->nwaiting);
    if (over_quota(r)) {
        memq_event_stats es;
        memq_event_get_stats(r->mev, &es);
        if (es.runs != r->resume_runs) {
            r->resume_runs = es.runs;
            schedule_resume(r);
        }
        return;
    }
    for (size_t n = r->nwaiting; n > 0 && r->waiting != NULL && !over_quota(r); n--) {
        conn *c = r->waiting;
        waiting_remove(r, c);
        process(c); /* may park it again, at the tail */
    }
}

static void on_log(void *ctx, int level, const char *msg)
{
    relay *r = ctx;
    if (level <= MEMQ_LOG_WARN || r->opt.verbose)
        say("memquota: %s", msg);
}

/* ======================================================================
 * Housekeeping, statistics, Prometheus, signals
 * ====================================================================== */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay *r = arg;
    size_t used = memq_tracker_used(r->tracker);
    if (used > r->peak_tracked)
        r->peak_tracked = used;
    memq_stats st;
    memq_tracker_stats(r->tracker, &st);
    if (st.participants > r->peak_participants)
        r->peak_participants = st.participants;
    if (check_rss_cap(r))
        return;
    if (!over_quota(r))
        schedule_resume(r);
    uint64_t now = now_ns();
    if (r->opt.stats_interval > 0 &&
        (double)(now - r->last_stats_ns) >= r->opt.stats_interval * 1e9) {
        char buf[2048];
        format_stats(r, buf, sizeof buf);
        say("%s", buf);
        r->last_stats_ns = now;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    relay *r = arg;
    r->exit_reason = sig == SIGINT ? "SIGINT" : "SIGTERM";
    event_base_loopbreak(r->base);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
    relay *r = arg;
    r->http_requests++;
    const char *uri = evhttp_request_get_uri(req);
    if (uri == NULL || strcmp(uri, "/metrics") != 0) {
        evhttp_send_error(req, 404, "try /metrics");
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    int rc = memq_tracker_dump(r->tracker, f, MEMQ_DUMP_PROMETHEUS);
    fprintf(f,
            "# HELP relayd_rss_bytes Resident set size.\n# TYPE relayd_rss_bytes gauge\n"
            "relayd_rss_bytes %zu\n"
            "# HELP relayd_connections Open client connections.\n"
            "# TYPE relayd_connections gauge\nrelayd_connections %zu\n"
            "# HELP relayd_connections_reclaimed_total Connections closed by reclamation.\n"
            "# TYPE relayd_connections_reclaimed_total counter\n"
            "relayd_connections_reclaimed_total %" PRIu64 "\n",
            rss_bytes(), r->nconns, r->killed);
    if (fclose(f) != 0 || rc != 0 || text == NULL) {
        free(text);
        evhttp_send_error(req, 500, "dump failed");
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (body == NULL) {
        free(text);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(body, text, len);
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", body);
    evbuffer_free(body);
}

/* ======================================================================
 * Options and main
 * ====================================================================== */

static void usage(FILE *f)
{
    fputs("usage: relayd [options]\n"
          "  --port N             listen on 127.0.0.1:N (0: a free port; default 0)\n"
          "  --max SIZE           quota, the high-water mark (default 64MiB; 'auto')\n"
          "  --low-water SIZE     reclamation stops at or below this (default 75% of max)\n"
          "  --no-quota           tracking off (MEMQ_UNLIMITED): the unprotected baseline\n"
          "  --no-pool            responses in libevent's malloc'd chains, tracked as an\n"
          "                       evbuffer (the design before the pool), instead of\n"
          "                       chunks of the tracker's pool handed to libevent by\n"
          "                       reference, which go back to the OS as soon as they are\n"
          "                       sent or reclaimed\n"
          "  --pool-reserve SIZE  free pool pages kept resident for reuse (default 256KiB)\n"
          "  --max-request SIZE   largest GET served (default 1MiB)\n"
          "  --max-conns N        connection slots (default 1024); at the limit a new\n"
          "                       connection closes the one idle the longest\n"
          "  --rss-cap SIZE       exit (code 3) when RSS exceeds SIZE, as an OOM kill\n"
          "  --rss-max SIZE       reclaim tracked memory when RSS exceeds SIZE (never below\n"
          "                       the low-water mark; default 0: off)\n"
          "  --pressure-low-water SIZE  what a memory-pressure episode reclaims down to\n"
          "                       (default half the low-water mark); pressure is heard\n"
          "                       through $MEMORY_PRESSURE_WATCH (systemd), else PSI\n"
          "  --no-pressure-watch  do not watch for memory pressure\n"
          "  --stats-interval S   print statistics every S seconds (default 0: off)\n"
          "  --prometheus PORT    serve the stats at http://127.0.0.1:PORT/metrics\n"
          "  --trace FILE         one line per served GET's times, for latency studies\n"
          "  --verbose            log every reclaimed connection and episode\n"
          "Prints 'READY port=<port>' on stdout once listening; SIGINT or SIGTERM stop it\n"
          "and print 'FINAL key=value ...' on stdout.\n",
          f);
}

static bool parse_port(const char *name, const char *text, int *out)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0 || v > 65535) {
        say("%s %s: not a port number", name, text);
        return false;
    }
    *out = (int)v;
    return true;
}

static int parse_options(int argc, char **argv, options *o)
{
    enum { O_PORT = 1, O_MAX, O_LOW, O_NOQ, O_NOPOOL, O_RESERVE, O_MAXREQ, O_MAXCONN, O_CAP, O_RSSMAX, O_PLOW,
           O_NOPW, O_STATS, O_PROM, O_TRACE, O_VERB, O_HELP };
    static const struct option longs[] = {
        {"port", required_argument, NULL, O_PORT},
        {"max", required_argument, NULL, O_MAX},
        {"low-water", required_argument, NULL, O_LOW},
        {"no-quota", no_argument, NULL, O_NOQ},
        {"no-pool", no_argument, NULL, O_NOPOOL},
        {"pool-reserve", required_argument, NULL, O_RESERVE},
        {"max-request", required_argument, NULL, O_MAXREQ},
        {"max-conns", required_argument, NULL, O_MAXCONN},
        {"rss-cap", required_argument, NULL, O_CAP},
        {"rss-max", required_argument, NULL, O_RSSMAX},
        {"pressure-low-water", required_argument, NULL, O_PLOW},
        {"no-pressure-watch", no_argument, NULL, O_NOPW},
        {"stats-interval", required_argument, NULL, O_STATS},
        {"prometheus", required_argument, NULL, O_PROM},
        {"trace", required_argument, NULL, O_TRACE},
        {"verbose", no_argument, NULL, O_VERB},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *o = (options){.port = 0, .prometheus_port = -1, .max = 64u << 20,
                   .max_request = 1u << 20, .max_conns = 1024};
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case O_PORT:
            if (!parse_port("--port", optarg, &o->port))
                return 2;
            break;
        case O_MAX:
            if (strcmp(optarg, "auto") == 0)
                o->max = MEMQ_AUTO;
            else if (!parse_size_opt("--max", optarg, &o->max))
                return 2;
            break;
        case O_LOW:
            if (!parse_size_opt("--low-water", optarg, &o->low_water))
                return 2;
            break;
        case O_NOQ:
            o->no_quota = true;
            break;
        case O_NOPOOL:
            o->no_pool = true;
            break;
        case O_RESERVE:
            if (!parse_size_opt("--pool-reserve", optarg, &o->pool_reserve))
                return 2;
            break;
        case O_MAXREQ:
            if (!parse_size_opt("--max-request", optarg, &o->max_request))
                return 2;
            break;
        case O_MAXCONN: {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 1 || v > 100000) {
                say("--max-conns %s: expected 1 to 100000", optarg);
                return 2;
            }
            o->max_conns = (unsigned)v;
            break;
        }
        case O_CAP:
            if (!parse_size_opt("--rss-cap", optarg, &o->rss_cap))
                return 2;
            break;
        case O_RSSMAX:
            if (!parse_size_opt("--rss-max", optarg, &o->rss_max))
                return 2;
            break;
        case O_PLOW:
            if (!parse_size_opt("--pressure-low-water", optarg, &o->pressure_low_water))
                return 2;
            break;
        case O_NOPW:
            o->no_pressure_watch = true;
            break;
        case O_STATS:
            o->stats_interval = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(o->stats_interval >= 0) ||
                o->stats_interval > 86400) {
                say("--stats-interval %s: expected seconds, 0 to 86400", optarg);
                return 2;
            }
            break;
        case O_PROM:
            if (!parse_port("--prometheus", optarg, &o->prometheus_port))
                return 2;
            break;
        case O_TRACE:
            o->trace = optarg;
            break;
        case O_VERB:
            o->verbose = true;
            break;
        case O_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        say("unexpected argument: %s", argv[optind]);
        return 2;
    }
    return 0;
}

static int setup_tracker(relay *r)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = r->opt.no_quota ? MEMQ_UNLIMITED : r->opt.max;
    cfg.low_water = r->opt.no_quota ? 0 : r->opt.low_water;
    cfg.cache_max = CACHE_MAX;
    cfg.pool_reserve = r->opt.pool_reserve;
    cfg.reclaim_mode = MEMQ_RECLAIM_MANUAL;
    cfg.wakeup = on_wakeup;
    cfg.wakeup_ctx = r;
    cfg.log = on_log;
    cfg.log_ctx = r;
    if (!r->opt.no_quota) {
        /* The machine's view: pressure from the OS, and a limit on RSS. */
        cfg.pressure_watch = !r->opt.no_pressure_watch;
        cfg.pressure_low_water = r->opt.pressure_low_water;
        cfg.rss_max = r->opt.rss_max;
    } else if (r->opt.rss_max != 0 || r->opt.pressure_low_water != 0) {
        say("--rss-max and --pressure-low-water need a quota (not --no-quota)");
        return -1;
    }
    char why[256];
    if (memq_config_check(&cfg, why, sizeof why) != 0) {
        say("bad quota configuration: %s", why);
        return -1;
    }
    int rc = memq_tracker_new(&r->tracker, &cfg);
    if (rc != 0) {
        say("memq_tracker_new: %s", memq_strerror(rc));
        return -1;
    }
    memq_stats st;
    memq_tracker_stats(r->tracker, &st);
    r->unlimited = r->opt.no_quota;
    r->max = st.max;
    r->low_water = st.low_water;
    if (!r->opt.no_pool && (r->pool = memq_tracker_pool(r->tracker)) == NULL) {
        say("cannot create the chunk pool (try --no-pool)");
        return -1;
    }
    return 0;
}

static int setup_events(relay *r)
{
    /* The base, then reclamation attached to it (priority 0), then every
     * other event (priority 1). */
    r->base = event_base_new();
    if (r->base == NULL || event_base_priority_init(r->base, 2) != 0) {
        say("cannot create the event base");
        return -1;
    }
    int rc = memq_event_attach(r->tracker, r->base, 0, &r->mev);
    if (rc != 0) {
        say("memq_event_attach: %s", memq_strerror(rc));
        return -1;
    }
    r->resume_ev = evtimer_new(r->base, on_resume, r);
    r->tick_ev = event_new(r->base, -1, EV_PERSIST, on_tick, r);
    r->relisten_ev = evtimer_new(r->base, on_relisten, r);
    r->sigint_ev = evsignal_new(r->base, SIGINT, on_signal, r);
    r->sigterm_ev = evsignal_new(r->base, SIGTERM, on_signal, r);
    if (r->resume_ev == NULL || r->tick_ev == NULL ||
        r->relisten_ev == NULL || r->sigint_ev == NULL || r->sigterm_ev == NULL) {
        say("cannot create events");
        return -1;
    }
    event_priority_set(r->resume_ev, 1);
    event_priority_set(r->tick_ev, 1);
    static const struct timeval tick = {0, TICK_MS * 1000};
    event_add(r->tick_ev, &tick);
    event_add(r->sigint_ev, NULL);
    event_add(r->sigterm_ev, NULL);

    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)r->opt.port);
    r->listener = evconnlistener_new_bind(r->base, on_accept, r,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 512,
                                          (struct sockaddr *)&sin, sizeof sin);
    if (r->listener == NULL) {
        say("cannot listen on 127.0.0.1:%d: %s", r->opt.port, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(r->listener, on_accept_error);

    if (r->opt.prometheus_port >= 0) {
        r->http = evhttp_new(r->base);
        struct evhttp_bound_socket *hs =
            r->http ? evhttp_bind_socket_with_handle(r->http, "127.0.0.1",
                                                     (ev_uint16_t)r->opt.prometheus_port)
                    : NULL;
        if (hs == NULL) {
            say("cannot serve Prometheus on 127.0.0.1:%d", r->opt.prometheus_port);
            return -1;
        }
        evhttp_set_max_headers_size(r->http, 8192);
        evhttp_set_max_body_size(r->http, 1024);
        evhttp_set_timeout(r->http, 5);
        evhttp_set_allowed_methods(r->http, EVHTTP_REQ_GET);
        evhttp_set_gencb(r->http, on_metrics, r);
        struct sockaddr_in hsin;
        socklen_t hlen = sizeof hsin;
        if (getsockname(evhttp_bound_socket_get_fd(hs), (struct sockaddr *)&hsin, &hlen) == 0)
            r->opt.prometheus_port = ntohs(hsin.sin_port);
    }
    return 0;
}

static void print_final(relay *r)
{
    char buf[2048];
    format_stats(r, buf, sizeof buf);
    memq_stats st;
    memq_tracker_stats(r->tracker, &st);
    memq_event_stats es;
    memq_event_get_stats(r->mev, &es);
    size_t bound = tracked_bound(r);
    uint64_t first_crossing_ns = r->first_crossing_ns;
    struct rusage ru;
    double cpu_ms = -1;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu_ms = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
    printf("FINAL %s reason=%s quota=%zu bound=%zu cache_max=%d max_request=%zu "
           "input_limit=%d peak_conns=%zu peak_participants=%zu first_crossing_ms=%" PRIu64
           " first_kill_ms=%" PRIu64 " reaction_us=%.0f reclaim_ms_total=%.3f episode_ms_max=%.3f"
           " unreclaimable=%" PRIu64 " errors=%" PRIu64 " accept_errors=%" PRIu64
           " reclaim_runs=%" PRIu64 " rss_episodes=%" PRIu64 " watch_source=%d cpu_ms=%.0f\n",
           buf, r->exit_reason, r->unlimited ? SIZE_MAX : r->max, bound, CACHE_MAX,
           r->opt.max_request, INPUT_LIMIT, r->peak_conns, r->peak_participants,
           ms_since_start(r, first_crossing_ns), ms_since_start(r, r->first_kill_ns),
           r->first_kill_ns > first_crossing_ns && first_crossing_ns != 0
               ? (double)(r->first_kill_ns - first_crossing_ns) / 1e3
               : -1.0,
           (double)st.reclaim_ns_total / 1e6, (double)st.episode_ns_max / 1e6,
           st.unreclaimable_events, r->errors, r->accept_errors, es.runs, st.rss_episodes,
           st.watch_source, cpu_ms);
    fflush(stdout);
    say("stopped (%s): %zu connections accepted, %" PRIu64 " reclaimed, %" PRIu64
        " episodes, peak tracked %zu bytes, peak RSS %zu bytes",
        r->exit_reason, (size_t)r->accepted, r->killed, st.episodes, peak_tracked(r, &st),
        peak_rss_bytes());
}

static void teardown(relay *r)
{
    r->paused = false; /* closing connections must not resume the listener */
    while (r->fresh.head != NULL)
        conn_close(r->fresh.head, CLOSE_NORMAL);
    while (r->active.head != NULL)
        conn_close(r->active.head, CLOSE_NORMAL);
    if (r->http != NULL)
        evhttp_free(r->http);
    if (r->listener != NULL)
        evconnlistener_free(r->listener);
    struct event *evs[] = {r->resume_ev, r->tick_ev, r->relisten_ev, r->sigint_ev,
                           r->sigterm_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    memq_event_detach(r->mev);
    memq_tracker_free(r->tracker);
    if (r->base != NULL)
        event_base_free(r->base);
    if (r->trace != NULL)
        fclose(r->trace);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    relay r;
    memset(&r, 0, sizeof r);
    int rc = parse_options(argc, argv, &r.opt);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < POOL_PIECE; i++)
        pattern[i] = "0123456789abcdefghijklmnopqrstuvwxyz\n"[i % 37];
    r.start_ns = r.last_stats_ns = now_ns();
    r.loop_thread = pthread_self();
    r.exit_reason = "error";
    r.exit_code = 1;
    if (r.opt.trace != NULL && (r.trace = fopen(r.opt.trace, "we")) == NULL) {
        say("%s: %s", r.opt.trace, strerror(errno));
        return 1;
    }
    if (setup_tracker(&r) != 0 || setup_events(&r) != 0) {
        teardown(&r);
        return 1;
    }
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    getsockname(evconnlistener_get_fd(r.listener), (struct sockaddr *)&sin, &len);
    if (r.unlimited)
        say("quota off (--no-quota): tracking disabled%s", r.opt.rss_cap ? ", RSS capped" : "");
    else
        say("quota %zu bytes, low water %zu, largest request %zu, responses in %s", r.max,
            r.low_water, r.opt.max_request,
            r.pool != NULL ? "the chunk pool" : "libevent's chains (--no-pool)");
    if (r.http != NULL)
        printf("PROMETHEUS port=%d\n", r.opt.prometheus_port);
    printf("READY port=%u\n", (unsigned)ntohs(sin.sin_port));
    fflush(stdout);

    r.exit_code = 0;
    event_base_dispatch(r.base);
    /* A late SIGTERM must not kill us half-way through the teardown:
     * freeing a signal event gives the signal its previous (default)
     * action back, so free them first, then ignore the signals. */
    event_free(r.sigint_ev);
    event_free(r.sigterm_ev);
    r.sigint_ev = r.sigterm_ev = NULL;
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    print_final(&r);
    int code = r.exit_code;
    teardown(&r);
    return code;
}
