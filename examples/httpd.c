/*
 * httpd - an evhttp server whose memory is kept under a quota by
 * libmemquota-event and whose connection slots are defended, for the
 * demonstration (`make demo`) against real attack tools (slowhttptest as
 * the attacker, wrk as the honest load).
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Requests (HTTP/1.1 on 127.0.0.1 only):
 *   GET /data?n=N   answered with N bytes (N <= --max-response), built at
 *                   once, as a server that renders a page or proxies a
 *                   file does; the connection stays open (keep-alive).
 *   GET /stats      one line of key=value pairs (used, peak, killed, rss,
 *                   cached, accounts, conns and more) and "\n".
 * A query may also carry tag=NAME (1 to 12 letters or digits): the
 * statistics count connections and their fates per tag, so that a
 * demonstration can tell its attackers from its honest clients.  The tag
 * is only counted, never used to decide anything.
 *
 * Memory (memq_evhttp): every connection is an account whose output and
 * input buffers are tracked; a response body is built in a tracked buffer
 * on the connection's account, so it is counted as it grows.  When the
 * total crosses --max, reclamation runs at priority 0 in the loop
 * (memq_event_attach(): the claim that crosses max activates it, so it
 * runs as soon as the callback that made the claim returns) and closes the
 * connections holding the oldest data through evhttp's own path.  So the
 * total stays below max + one response + 16 KiB (one read) + the
 * participations' caches: the bound printed in FINAL.  And the kernel is
 * not left holding what the quota cannot see: each socket keeps at most
 * 16 KiB unsent (TCP_NOTSENT_LOWAT) plus one 64 KiB write (without it
 * Linux grows the send buffer of a peer that reads nothing to megabytes).
 *
 * Connection slots (what a slowloris exhausts):
 *  - every accepted connection gets a slot (evhttp_set_bevcb(): libevent
 *    2.1 tells nobody else of a new connection), kept in order of last
 *    activity: a complete request, or response bytes taken by the peer;
 *  - at --max-conns, a new connection closes the one idle the longest
 *    instead of being refused, so a crowd of idle sockets cannot lock
 *    honest clients out.  Connections that never made a complete request
 *    (a slowloris's never do) go first, oldest first: a flood of new
 *    connections takes its own kind's slots, not those of served clients;
 *  - when accept() fails (EMFILE, ENFILE), the listener pauses until a
 *    slot frees or 100 ms pass, closing the idlest connection to make
 *    room, instead of spinning on a listening socket that stays readable.
 *
 * --no-quota turns the quota off (memory is still counted, nothing is
 * reclaimed), --conn-cap SIZE adds what a server without a quota would
 * use instead: a static cap on each connection's output buffer (Redis's
 * client-output-buffer-limit): a connection whose output grows past it is
 * closed, whoever it is.
 *
 * Prints "READY port=<port>" on stdout once it listens, and on SIGTERM or
 * SIGINT (or when --rss-cap stops it) a line "FINAL key=value ...".
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <fcntl.h>
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

#define PATTERN_SIZE 65280   /* fills a 64 KiB libevent chain exactly */
#define CACHE_MAX 16384      /* memq_config cache_max (the library default) */
#define READ_MAX 16384       /* the most a bufferevent reads in one go */
#define NOTSENT_LOWAT 16384  /* unsent bytes the kernel may hold per socket (+ one write) */
#define SINGLE_WRITE 65536   /* the most written to one socket per loop turn */
#define TICK_MS 10           /* housekeeping period */
#define PAUSE_MS 100         /* the listener's pause after accept() fails */
#define FD_RESERVE 64        /* descriptors kept free below RLIMIT_NOFILE */
#define MAX_TAGS 4           /* "none" and three named tags */
#define TAG_LEN 12

/* ======================================================================
 * State
 * ====================================================================== */

typedef struct server server;
typedef struct slot slot;

typedef struct slot_list {
    slot *head, *tail;
} slot_list;

/* Why a connection was closed by the server. */
enum fate { FATE_PEER, FATE_KILLED, FATE_EVICTED, FATE_CUT, FATE_COUNT };
static const char *const fate_name[FATE_COUNT] = {"closed", "killed", "evicted", "cut"};

/* One accepted connection.  Found by descriptor (slot_by_fd) while it is
 * open; in the idle list (oldest activity first) until it starts closing. */
struct slot {
    server *s;
    struct evhttp_connection *evcon;
    struct bufferevent *bev;
    memq_evhttp_conn *mc;    /* once tracked (its first request) */
    struct evbuffer_cb_entry *drain_cb;
    evutil_socket_t fd;
    uint64_t active_ns;      /* last activity */
    struct slot *prev, *next; /* its list: fresh until its first request, then active */
    int tag;                 /* index into server.tags; 0: none */
    bool proven;             /* it made a complete request once */
    bool closing;            /* out of the lists, evhttp closing it */
    enum fate fate;          /* why, if the server closed it */
};

typedef struct options {
    int port;
    size_t max, low_water, max_response, conn_cap, rss_cap;
    bool no_quota;
    long max_conns;          /* 0: from RLIMIT_NOFILE */
    int idle_timeout;
    double stats_interval;
    const char *csv;
    int sample_ms;
    bool verbose;
} options;

typedef struct tag_stats {
    char name[TAG_LEN + 1];
    uint64_t conns, fates[FATE_COUNT];
} tag_stats;

struct server {
    options opt;
    struct event_base *base;
    memq_tracker *tracker;
    memq_event *mev;
    struct evhttp *http;
    memq_evhttp *mh;
    struct evconnlistener *listener;
    struct event *adopt_ev, *relisten_ev, *tick_ev, *sigint_ev, *sigterm_ev;
    bool unlimited, paused, capped, stopping;
    size_t max, low_water;
    unsigned max_conns;
    /* Slots: by descriptor; those that never made a complete request
     * (fresh, in order of arrival) and the others (active, least recently
     * active first), the slot defence taking the head of fresh, else of
     * active; the ones accepted but not yet adopted (see on_bev()). */
    slot **slot_by_fd;
    size_t fd_limit;
    slot_list fresh, active;
    struct bufferevent **accepted_bevs;
    size_t naccepted_bevs, accepted_bevs_cap;
    size_t nconns, nclosing, peak_conns, peak_participants, peak_tracked;
    uint64_t accepted, evicted, accept_errors, accept_pauses, requests, cut, killed;
    uint64_t bytes_requested, bad_requests;
    tag_stats tags[MAX_TAGS];
    int ntags;
    uint64_t start_ns, last_cap_check_ns, last_stats_ns, next_sample_ns;
    FILE *csv;
    const char *exit_reason;
    int exit_code;
};

static char pattern[PATTERN_SIZE];

/* The server, for on_accept_error(): a listener's error callback gets the
 * listener's user data, which evhttp set to its struct evhttp. */
static server *the_server;

/* ======================================================================
 * Small helpers
 * ====================================================================== */

/* CPU time used by the process (user + system), in milliseconds. */
static uint64_t cpu_ms(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000u;
}

static uint64_t uptime_ms(const server *s)
{
    return (now_ns() - s->start_ns) / 1000000u;
}

/* The highest total tracked: the library's peak with a quota; sampled
 * every tick without one (MEMQ_UNLIMITED keeps no peak). */
static size_t peak_tracked(server *s, const memq_stats *st)
{
    size_t used = memq_tracker_used(s->tracker);
    size_t peak = s->unlimited ? s->peak_tracked : st->peak;
    return used > peak ? used : peak;
}

/* The largest total the design allows (see the top comment). */
static size_t tracked_bound(const server *s)
{
    if (s->unlimited)
        return SIZE_MAX;
    return s->max + s->peak_participants * CACHE_MAX + s->opt.max_response + READ_MAX;
}

/* --rss-cap: stop as the OOM killer would. */
static bool check_rss_cap(server *s)
{
    if (s->opt.rss_cap == 0 || s->capped)
        return s->capped;
    size_t rss = rss_bytes();
    if (rss <= s->opt.rss_cap)
        return false;
    say("RSS %zu bytes exceeds --rss-cap %zu: stopping, as the OOM killer would", rss,
        s->opt.rss_cap);
    s->capped = true;
    s->exit_reason = "rss-cap";
    s->exit_code = 3;
    event_base_loopbreak(s->base);
    return true;
}

/* One line of key=value pairs, without the newline. */
static void format_stats(server *s, char *buf, size_t len)
{
    memq_stats st;
    memq_evhttp_stats hs;
    memq_tracker_stats(s->tracker, &st);
    memq_evhttp_get_stats(s->mh, &hs);
    size_t used = s->unlimited ? memq_tracker_used(s->tracker) : st.used;
    int off = snprintf(buf, len,
                       "used=%zu peak=%zu max=%zu low_water=%zu cached=%zu killed=%" PRIu64
                       " rss=%zu peak_rss=%zu untracked=%" PRId64 " accounts=%zu"
                       " participants=%zu conns=%zu closing=%zu peak_conns=%zu accepted=%" PRIu64
                       " evicted=%" PRIu64 " accept_errors=%" PRIu64 " accept_pauses=%" PRIu64
                       " cut=%" PRIu64 " requests=%" PRIu64 " bad_requests=%" PRIu64
                       " episodes=%" PRIu64 " reclaim_ms=%.3f cpu_ms=%" PRIu64
                       " uptime_ms=%" PRIu64,
                       used, peak_tracked(s, &st), s->unlimited ? SIZE_MAX : st.max,
                       st.low_water, st.cached, hs.reclaimed, st.rss, peak_rss_bytes(),
                       st.untracked, st.accounts, st.participants, s->nconns, s->nclosing,
                       s->peak_conns, s->accepted, s->evicted, s->accept_errors,
                       s->accept_pauses, s->cut, s->requests, s->bad_requests, st.episodes,
                       (double)st.reclaim_ns_total / 1e6, cpu_ms(), uptime_ms(s));
    for (int i = 0; i < s->ntags && off > 0 && (size_t)off < len; i++) {
        const tag_stats *t = &s->tags[i];
        /* Open now: accepted, not gone (closing ones included). */
        uint64_t gone = 0;
        for (int f = 0; f < FATE_COUNT; f++)
            gone += t->fates[f];
        off += snprintf(buf + off, len - (size_t)off, " %s_conns=%" PRIu64 " %s_open=%" PRIu64,
                        t->name, t->conns, t->name, t->conns - gone);
        for (int f = FATE_KILLED; f < FATE_COUNT && (size_t)off < len; f++)
            off += snprintf(buf + off, len - (size_t)off, " %s_%s=%" PRIu64, t->name,
                            fate_name[f], t->fates[f]);
    }
}

/* ======================================================================
 * Slots: every accepted connection, in order of last activity
 * ====================================================================== */

static slot_list *list_of(slot *sl)
{
    return sl->proven ? &sl->s->active : &sl->s->fresh;
}

static void idle_unlink(slot *sl)
{
    slot_list *l = list_of(sl);
    if (sl->prev != NULL)
        sl->prev->next = sl->next;
    else
        l->head = sl->next;
    if (sl->next != NULL)
        sl->next->prev = sl->prev;
    else
        l->tail = sl->prev;
    sl->prev = sl->next = NULL;
}

static void idle_append(slot *sl)
{
    slot_list *l = list_of(sl);
    sl->prev = l->tail;
    sl->next = NULL;
    if (l->tail != NULL)
        l->tail->next = sl;
    else
        l->head = sl;
    l->tail = sl;
}

/* The connection made a request or its peer took response bytes: to the
 * back of the active list. */
static void touch(slot *sl)
{
    if (sl->closing)
        return;
    sl->active_ns = now_ns();
    if (!sl->proven || sl->s->active.tail != sl) {
        idle_unlink(sl);
        sl->proven = true;
        idle_append(sl);
    }
}

/* The slot stops counting against --max-conns: evhttp is closing it. */
static void slot_closing(slot *sl, enum fate fate)
{
    if (sl->closing)
        return;
    server *s = sl->s;
    idle_unlink(sl);
    sl->closing = true;
    sl->fate = fate;
    s->nconns--;
    s->nclosing++;
}

/* The connection is gone (evhttp's close callback, directly or through
 * memq_evhttp's on_close): its bufferevent is still alive. */
static void slot_gone(slot *sl)
{
    server *s = sl->s;
    if (!sl->closing) {
        idle_unlink(sl);
        s->nconns--;
    } else {
        s->nclosing--;
    }
    s->tags[sl->tag].fates[sl->closing ? sl->fate : FATE_PEER]++;
    if (sl->drain_cb != NULL)
        evbuffer_remove_cb_entry(bufferevent_get_output(sl->bev), sl->drain_cb);
    if (sl->fd >= 0 && (size_t)sl->fd < s->fd_limit && s->slot_by_fd[sl->fd] == sl)
        s->slot_by_fd[sl->fd] = NULL;
    free(sl);
    /* A descriptor is free again: a paused listener may accept. */
    if (s->paused && !s->stopping) {
        s->paused = false;
        event_del(s->relisten_ev);
        evconnlistener_enable(s->listener);
    }
}

/* Close a connection through evhttp, as reclamation does: drop what it
 * holds, reset it, shut its reading side; evhttp reads end-of-file at
 * once and frees it. */
static void slot_close(slot *sl, enum fate fate)
{
    if (sl->closing)
        return;
    slot_closing(sl, fate);
    if (sl->mc != NULL) {
        memq_evhttp_conn_close(sl->mc);
        return;
    }
    struct linger lg = {1, 0};
    (void)setsockopt(sl->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    (void)shutdown(sl->fd, SHUT_RD);
}

/* Free a slot for a new connection: close the one idle the longest.  One
 * that never made a complete request goes first (a slowloris's never do):
 * a flood of new connections then takes the slots of its own kind, never
 * those of clients that were served.  The new connection (spare) itself
 * is never the one closed. */
static bool evict_idlest(server *s, const slot *spare)
{
    slot *victim = s->fresh.head != NULL && s->fresh.head != spare ? s->fresh.head
                                                                    : s->active.head;
    if (victim == NULL)
        return false;
    if (s->opt.verbose)
        say("slot defence: closing fd %d, idle %.0f ms", (int)victim->fd,
            (double)(now_ns() - victim->active_ns) / 1e6);
    s->evicted++;
    slot_close(victim, FATE_EVICTED);
    return true;
}

/* Response bytes taken by the peer count as activity. */
static void on_output_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_deleted > 0)
        touch(arg);
}

/* evhttp's close callback, while the connection is not tracked. */
static void on_untracked_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    slot_gone(arg);
}

/* evhttp_set_bevcb(): evhttp is accepting a connection and asks for its
 * bufferevent.  The connection object does not exist yet; it does once
 * the listener's callback returns, so the slot is made by on_adopt(), a
 * priority-0 event that libevent runs right after it.  The reference
 * keeps the bufferevent valid meanwhile, even if evhttp gives up on the
 * connection. */
static struct bufferevent *on_bev(struct event_base *base, void *arg)
{
    server *s = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0); /* as evhttp's own */
    if (bev == NULL)
        return NULL;
    if (s->naccepted_bevs == s->accepted_bevs_cap) {
        size_t cap = s->accepted_bevs_cap ? s->accepted_bevs_cap * 2 : 64;
        struct bufferevent **p = realloc(s->accepted_bevs, cap * sizeof *p);
        if (p == NULL)
            return bev; /* served, but without a slot */
        s->accepted_bevs = p;
        s->accepted_bevs_cap = cap;
    }
    bufferevent_incref(bev);
    s->accepted_bevs[s->naccepted_bevs++] = bev;
    event_active(s->adopt_ev, EV_TIMEOUT, 0);
    return bev;
}

static void adopt(server *s, struct bufferevent *bev)
{
    bufferevent_data_cb readcb = NULL;
    bufferevent_event_cb eventcb = NULL;
    void *arg = NULL;
    bufferevent_getcb(bev, &readcb, NULL, &eventcb, &arg);
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (eventcb == NULL || arg == NULL || fd < 0)
        return; /* evhttp gave up on it already */
    s->accepted++;
    slot *sl = calloc(1, sizeof *sl);
    if (sl == NULL || (size_t)fd >= s->fd_limit) {
        free(sl);
        return; /* served, but without a slot */
    }
    sl->s = s;
    sl->evcon = arg;
    sl->bev = bev;
    sl->fd = fd;
    sl->active_ns = now_ns();
    sl->drain_cb = evbuffer_add_cb(bufferevent_get_output(bev), on_output_drained, sl);
    s->slot_by_fd[fd] = sl;
    idle_append(sl);
    s->nconns++;
    if (s->nconns > s->peak_conns)
        s->peak_conns = s->nconns;
    s->tags[0].conns++;
    evhttp_connection_set_closecb(sl->evcon, on_untracked_close, sl);
    /* Nagle plus delayed ACKs would hold a small response ~40 ms.  And the
     * kernel must not hold what the quota does not count: without a limit
     * it grows the send buffer of a connection whose peer reads nothing
     * to megabytes (measured: 15 slow readers, 16 MiB in the kernel's
     * send queues beside 46 MiB tracked).  TCP_NOTSENT_LOWAT keeps the
     * unsent part to NOTSENT_LOWAT plus one write; what was sent and
     * waits for acknowledgement is bounded by the peer's window. */
    int one = 1, lowat = NOTSENT_LOWAT;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
    /* libevent writes 16 KiB per turn by default: a 64 KiB answer would
     * take four turns of the loop. */
    bufferevent_set_max_single_write(bev, SINGLE_WRITE);
    while (s->nconns > s->max_conns && evict_idlest(s, sl))
        ;
}

static void on_adopt(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    for (size_t i = 0; i < s->naccepted_bevs; i++) {
        adopt(s, s->accepted_bevs[i]);
        bufferevent_decref(s->accepted_bevs[i]);
    }
    s->naccepted_bevs = 0;
}

/* accept() failed with something other than EAGAIN (EMFILE, ENFILE,
 * ENOBUFS...): the listening socket stays readable, so without a pause
 * libevent would call accept() again at once, forever. */
static void on_accept_error(struct evconnlistener *lst, void *arg)
{
    (void)arg; /* evhttp's */
    server *s = the_server;
    int err = EVUTIL_SOCKET_ERROR();
    static const struct timeval pause = {0, PAUSE_MS * 1000};
    s->accept_errors++;
    s->accept_pauses++;
    if (s->accept_pauses == 1 || s->opt.verbose)
        say("accept: %s; pausing the listener until a connection closes (at most %d ms)",
            strerror(err), PAUSE_MS);
    evconnlistener_disable(lst);
    s->paused = true;
    event_add(s->relisten_ev, &pause);
    if (err == EMFILE || err == ENFILE)
        evict_idlest(s, NULL);
}

static void on_relisten(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    s->paused = false;
    evconnlistener_enable(s->listener);
}

/* ======================================================================
 * Requests
 * ====================================================================== */

/* The slot of an evhttp connection: found by its descriptor (while it is
 * open, its bufferevent and descriptor are). */
static slot *slot_find(server *s, struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    if (fd < 0 || (size_t)fd >= s->fd_limit)
        return NULL;
    slot *sl = s->slot_by_fd[fd];
    return sl != NULL && sl->evcon == evcon ? sl : NULL;
}

/* The slot of a tracked connection.  memq_evhttp set its own close
 * callback in place of ours when it tracked the connection, and tells us
 * through on_close from then on, even if it was closing already. */
static slot *slot_of(server *s, memq_evhttp_conn *c)
{
    slot *sl = memq_evhttp_conn_get_data(c);
    if (sl == NULL && (sl = slot_find(s, memq_evhttp_conn_connection(c))) != NULL) {
        sl->mc = c;
        memq_evhttp_conn_set_data(c, sl);
    }
    return sl;
}

/* memq_evhttp's callbacks: a tracked connection starts closing, or goes. */
static void on_conn_reclaim(memq_evhttp_conn *c, void *ctx)
{
    server *s = ctx;
    slot *sl = slot_of(s, c);
    if (sl == NULL || sl->closing)
        return; /* closed by the slot defence or the cap: already counted */
    s->killed++;
    if (s->opt.verbose) {
        memq_time oldest = 0;
        double age = memq_evhttp_conn_oldest(c, &oldest)
                         ? (double)(memq_tracker_now(s->tracker) - oldest) / 1e6
                         : 0;
        say("reclaimed fd %d (%s): %zu bytes, oldest %.1f ms old", (int)sl->fd,
            s->tags[sl->tag].name, memq_evhttp_conn_claimed(c), age);
    }
    slot_closing(sl, FATE_KILLED);
}

static void on_conn_close(memq_evhttp_conn *c, void *ctx)
{
    slot *sl = slot_of(ctx, c);
    if (sl != NULL)
        slot_gone(sl);
}

/* tag=NAME in a query string: the index of its statistics (0: none). */
static int find_tag(server *s, const char *query)
{
    for (const char *p = query; p != NULL && *p != '\0'; p = strchr(p, '&'), p = p ? p + 1 : p) {
        if (strncmp(p, "tag=", 4) != 0)
            continue;
        const char *v = p + 4;
        size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
        if (n == 0 || n > TAG_LEN || (v[n] != '\0' && v[n] != '&'))
            return 0;
        for (int i = 1; i < s->ntags; i++)
            if (strlen(s->tags[i].name) == n && strncmp(s->tags[i].name, v, n) == 0)
                return i;
        if (s->ntags == MAX_TAGS)
            return 0;
        memcpy(s->tags[s->ntags].name, v, n);
        s->tags[s->ntags].name[n] = '\0';
        return s->ntags++;
    }
    return 0;
}

/* n=<digits> in a query string; false if absent or malformed. */
static bool find_n(const char *query, size_t *n)
{
    for (const char *p = query; p != NULL && *p != '\0'; p = strchr(p, '&'), p = p ? p + 1 : p) {
        if (strncmp(p, "n=", 2) != 0)
            continue;
        size_t v = 0, digits = 0;
        for (p += 2; *p >= '0' && *p <= '9'; p++, digits++) {
            if (digits == 19)
                return false;
            v = v * 10 + (size_t)(*p - '0');
        }
        if (digits == 0 || (*p != '\0' && *p != '&'))
            return false;
        *n = v;
        return true;
    }
    return false;
}

static void send_stats(server *s, struct evhttp_request *req)
{
    char line[2048];
    format_stats(s, line, sizeof line - 1);
    struct evbuffer *body = evbuffer_new();
    if (body == NULL) {
        memq_evhttp_send_reply(s->mh, req, 503, "Service Unavailable", NULL);
        return;
    }
    evbuffer_add_printf(body, "%s\n", line);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    memq_evhttp_send_reply(s->mh, req, 200, "OK", body);
    evbuffer_free(body);
}

/* N bytes, built in a tracked buffer on the connection's account so that
 * they are counted as they are made; then --conn-cap, if any, checks the
 * output as Redis checks a client's output buffer. */
static void send_data(server *s, struct evhttp_request *req, memq_evhttp_conn *c, slot *sl,
                      size_t n)
{
    if (s->opt.rss_cap > 0) {
        uint64_t now = now_ns();
        if (now - s->last_cap_check_ns >= 1000000u) {
            s->last_cap_check_ns = now;
            check_rss_cap(s);
        }
    }
    memq_evbuffer *body;
    if (s->capped || memq_evbuffer_new(memq_evhttp_conn_account(c), NULL, NULL, &body) != 0) {
        memq_evhttp_send_reply(s->mh, req, 503, "Service Unavailable", NULL);
        return;
    }
    for (size_t left = n; left > 0;) {
        size_t piece = left < PATTERN_SIZE ? left : PATTERN_SIZE;
        if (memq_evbuffer_add(body, pattern, piece) != 0)
            break; /* reclaimed meanwhile: the reply goes without a body */
        left -= piece;
    }
    s->bytes_requested += n;
    struct bufferevent *bev = sl != NULL ? sl->bev : NULL;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/octet-stream");
    memq_evhttp_send_reply(s->mh, req, 200, "OK", memq_evbuffer_get(body));
    memq_evbuffer_free(body);
    if (s->opt.conn_cap > 0 && bev != NULL && !sl->closing &&
        evbuffer_get_length(bufferevent_get_output(bev)) > s->opt.conn_cap) {
        s->cut++;
        if (s->opt.verbose)
            say("--conn-cap: fd %d holds %zu bytes of output: closing it", (int)sl->fd,
                evbuffer_get_length(bufferevent_get_output(bev)));
        slot_close(sl, FATE_CUT);
    }
}

static void on_request(struct evhttp_request *req, void *arg)
{
    server *s = arg;
    s->requests++;
    memq_evhttp_conn *c;
    int rc = memq_evhttp_track(s->mh, req, &c);
    if (rc != 0) {
        /* Closing (reclaimed, evicted) or not trackable: no body. */
        memq_evhttp_send_reply(s->mh, req, 503, "Service Unavailable", NULL);
        return;
    }
    slot *sl = slot_of(s, c);
    if (sl != NULL)
        touch(sl);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (sl != NULL && sl->tag == 0 && query != NULL) {
        int tag = find_tag(s, query);
        if (tag != 0) {
            s->tags[0].conns--;
            s->tags[tag].conns++;
            sl->tag = tag;
        }
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET || path == NULL) {
        s->bad_requests++;
        memq_evhttp_send_reply(s->mh, req, 405, "Method Not Allowed", NULL);
        return;
    }
    if (strcmp(path, "/stats") == 0) {
        send_stats(s, req);
        return;
    }
    size_t n;
    if (strcmp(path, "/data") != 0 || query == NULL || !find_n(query, &n)) {
        s->bad_requests++;
        memq_evhttp_send_reply(s->mh, req, 404, "Not Found", NULL);
        return;
    }
    if (n > s->opt.max_response) {
        s->bad_requests++;
        memq_evhttp_send_reply(s->mh, req, 413, "Payload Too Large", NULL);
        return;
    }
    send_data(s, req, c, sl, n);
}

/* ======================================================================
 * Housekeeping, signals
 * ====================================================================== */

static void sample(server *s, uint64_t now)
{
    if (s->csv == NULL || now < s->next_sample_ns)
        return;
    s->next_sample_ns = now + (uint64_t)s->opt.sample_ms * 1000000u;
    memq_stats st;
    memq_tracker_stats(s->tracker, &st);
    size_t used = s->unlimited ? memq_tracker_used(s->tracker) : st.used;
    fprintf(s->csv, "%.3f,%zu,%zu,%zu,%zu,%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                    ",%" PRIu64 "\n",
            (double)(now - s->start_ns) / 1e9, used, st.rss ? st.rss : rss_bytes(), st.cached,
            s->nconns, s->killed, s->evicted, s->cut, s->accept_errors, s->requests, cpu_ms());
    fflush(s->csv);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server *s = arg;
    size_t used = memq_tracker_used(s->tracker);
    if (used > s->peak_tracked)
        s->peak_tracked = used;
    memq_stats st;
    memq_tracker_stats(s->tracker, &st);
    if (st.participants > s->peak_participants)
        s->peak_participants = st.participants;
    if (check_rss_cap(s))
        return;
    uint64_t now = now_ns();
    sample(s, now);
    if (s->opt.stats_interval > 0 &&
        (double)(now - s->last_stats_ns) >= s->opt.stats_interval * 1e9) {
        char buf[2048];
        format_stats(s, buf, sizeof buf);
        say("%s", buf);
        s->last_stats_ns = now;
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    server *s = arg;
    s->exit_reason = sig == SIGINT ? "SIGINT" : "SIGTERM";
    event_base_loopbreak(s->base);
}

static void on_log(void *ctx, int level, const char *msg)
{
    server *s = ctx;
    if (level <= MEMQ_LOG_WARN || s->opt.verbose)
        say("memquota: %s", msg);
}

/* ======================================================================
 * Options and main
 * ====================================================================== */

static void usage(FILE *f)
{
    fputs("usage: httpd [options]\n"
          "  --port N             listen on 127.0.0.1:N (0: a free port; default 0)\n"
          "  --max SIZE           quota, the high-water mark (default 64MiB)\n"
          "  --low-water SIZE     reclamation stops at or below this (default 75% of max)\n"
          "  --no-quota           no quota: memory is counted, never reclaimed\n"
          "  --max-response SIZE  largest /data answered (default 16MiB)\n"
          "  --max-conns N        connection slots; at the limit the connection idle the\n"
          "                       longest is closed for a new one (default: the descriptor\n"
          "                       limit minus 64)\n"
          "  --conn-cap SIZE      close a connection whose output exceeds SIZE (a static\n"
          "                       per-connection cap, as Redis's client-output-buffer-limit;\n"
          "                       default 0: off)\n"
          "  --idle-timeout S     evhttp's read/write timeout (default 60)\n"
          "  --rss-cap SIZE       exit (code 3) when RSS exceeds SIZE, as an OOM kill\n"
          "  --csv FILE           write a time series there (every --sample-ms, default 100)\n"
          "  --stats-interval S   print statistics every S seconds (default 0: off)\n"
          "  --verbose            log every reclaimed, evicted or cut connection\n"
          "Prints 'READY port=<port>' on stdout once listening; SIGINT or SIGTERM stop it\n"
          "and print 'FINAL key=value ...' on stdout.\n",
          f);
}

static bool parse_long(const char *name, const char *text, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < lo || v > hi) {
        say("%s %s: expected %ld to %ld", name, text, lo, hi);
        return false;
    }
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, options *o)
{
    enum { O_PORT = 1, O_MAX, O_LOW, O_NOQ, O_MAXRESP, O_MAXCONN, O_CAP, O_CONNCAP, O_IDLE,
           O_CSV, O_SAMPLE, O_STATS, O_VERB, O_HELP };
    static const struct option longs[] = {
        {"port", required_argument, NULL, O_PORT},
        {"max", required_argument, NULL, O_MAX},
        {"low-water", required_argument, NULL, O_LOW},
        {"no-quota", no_argument, NULL, O_NOQ},
        {"max-response", required_argument, NULL, O_MAXRESP},
        {"max-conns", required_argument, NULL, O_MAXCONN},
        {"rss-cap", required_argument, NULL, O_CAP},
        {"conn-cap", required_argument, NULL, O_CONNCAP},
        {"idle-timeout", required_argument, NULL, O_IDLE},
        {"csv", required_argument, NULL, O_CSV},
        {"sample-ms", required_argument, NULL, O_SAMPLE},
        {"stats-interval", required_argument, NULL, O_STATS},
        {"verbose", no_argument, NULL, O_VERB},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    *o = (options){.port = 0, .max = 64u << 20, .max_response = 16u << 20, .idle_timeout = 60,
                   .sample_ms = 100};
    int ch;
    long v;
    char *end;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case O_PORT:
            if (!parse_long("--port", optarg, 0, 65535, &v))
                return 2;
            o->port = (int)v;
            break;
        case O_MAX:
            if (!parse_size_opt("--max", optarg, &o->max))
                return 2;
            break;
        case O_LOW:
            if (!parse_size_opt("--low-water", optarg, &o->low_water))
                return 2;
            break;
        case O_NOQ:
            o->no_quota = true;
            break;
        case O_MAXRESP:
            if (!parse_size_opt("--max-response", optarg, &o->max_response))
                return 2;
            if (o->max_response > ((size_t)1 << 30)) {
                say("--max-response %s: at most 1GiB", optarg);
                return 2;
            }
            break;
        case O_MAXCONN:
            if (!parse_long("--max-conns", optarg, 1, 1000000, &o->max_conns))
                return 2;
            break;
        case O_CAP:
            if (!parse_size_opt("--rss-cap", optarg, &o->rss_cap))
                return 2;
            break;
        case O_CONNCAP:
            if (!parse_size_opt("--conn-cap", optarg, &o->conn_cap))
                return 2;
            break;
        case O_IDLE:
            if (!parse_long("--idle-timeout", optarg, 1, 86400, &v))
                return 2;
            o->idle_timeout = (int)v;
            break;
        case O_CSV:
            o->csv = optarg;
            break;
        case O_SAMPLE:
            if (!parse_long("--sample-ms", optarg, 10, 10000, &v))
                return 2;
            o->sample_ms = (int)v;
            break;
        case O_STATS:
            o->stats_interval = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || !(o->stats_interval >= 0) ||
                o->stats_interval > 86400) {
                say("--stats-interval %s: expected seconds, 0 to 86400", optarg);
                return 2;
            }
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

static int setup_tracker(server *s)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = s->opt.no_quota ? MEMQ_UNLIMITED : s->opt.max;
    cfg.low_water = s->opt.no_quota ? 0 : s->opt.low_water;
    cfg.cache_max = CACHE_MAX;
    cfg.log = on_log;
    cfg.log_ctx = s;
    char why[256];
    if (memq_config_check(&cfg, why, sizeof why) != 0) {
        say("bad quota configuration: %s", why);
        return -1;
    }
    int rc = memq_tracker_new(&s->tracker, &cfg);
    if (rc != 0) {
        say("memq_tracker_new: %s", memq_strerror(rc));
        return -1;
    }
    memq_stats st;
    memq_tracker_stats(s->tracker, &st);
    s->unlimited = s->opt.no_quota;
    s->max = st.max;
    s->low_water = st.low_water;
    return 0;
}

/* A listening socket of our own, for a backlog longer than evhttp's 128:
 * a burst of connections must wait in the kernel, not be dropped. */
static evutil_socket_t listen_loopback(int port)
{
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 1024) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static int setup_server(server *s)
{
    /* The base, then reclamation attached to it, then everything else:
     * events created afterwards get priority 1, after reclamation's 0. */
    s->base = event_base_new();
    if (s->base == NULL || event_base_priority_init(s->base, 2) != 0) {
        say("cannot create the event base");
        return -1;
    }
    int rc = memq_event_attach(s->tracker, s->base, 0, &s->mev);
    if (rc != 0) {
        say("memq_event_attach: %s", memq_strerror(rc));
        return -1;
    }
    s->adopt_ev = event_new(s->base, -1, 0, on_adopt, s);
    s->relisten_ev = evtimer_new(s->base, on_relisten, s);
    s->tick_ev = event_new(s->base, -1, EV_PERSIST, on_tick, s);
    s->sigint_ev = evsignal_new(s->base, SIGINT, on_signal, s);
    s->sigterm_ev = evsignal_new(s->base, SIGTERM, on_signal, s);
    if (s->adopt_ev == NULL || s->relisten_ev == NULL || s->tick_ev == NULL ||
        s->sigint_ev == NULL || s->sigterm_ev == NULL) {
        say("cannot create events");
        return -1;
    }
    /* Right after the listener's callback, before anything can free the
     * connections it accepted. */
    event_priority_set(s->adopt_ev, 0);
    static const struct timeval tick = {0, TICK_MS * 1000};
    event_add(s->tick_ev, &tick);
    event_add(s->sigint_ev, NULL);
    event_add(s->sigterm_ev, NULL);

    s->http = evhttp_new(s->base);
    memq_evhttp_config hcfg;
    memq_evhttp_config_init(&hcfg);
    hcfg.nodelay = true;
    hcfg.on_reclaim = on_conn_reclaim;
    hcfg.on_close = on_conn_close;
    hcfg.ctx = s;
    if (s->http == NULL) {
        say("cannot create evhttp");
        return -1;
    }
    rc = memq_evhttp_new(s->tracker, s->http, &hcfg, &s->mh);
    if (rc != 0) {
        say("memq_evhttp_new: %s", memq_strerror(rc));
        return -1;
    }
    /* What a connection holds before its first request is not tracked
     * (libevent 2.1 tells nobody of a new connection): evhttp's limits
     * bound it. */
    evhttp_set_max_headers_size(s->http, 8192);
    evhttp_set_max_body_size(s->http, 4096);
    evhttp_set_timeout(s->http, s->opt.idle_timeout);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(s->http, on_request, s);
    evhttp_set_bevcb(s->http, on_bev, s);

    evutil_socket_t fd = listen_loopback(s->opt.port);
    struct evhttp_bound_socket *bound = fd >= 0 ? evhttp_accept_socket_with_handle(s->http, fd)
                                                : NULL;
    if (bound == NULL) {
        say("cannot listen on 127.0.0.1:%d: %s", s->opt.port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    s->listener = evhttp_bound_socket_get_listener(bound);
    the_server = s;
    evconnlistener_set_error_cb(s->listener, on_accept_error);
    return 0;
}

/* Slots are found by descriptor: one pointer per possible descriptor. */
static int setup_slots(server *s)
{
    struct rlimit rl;
    size_t limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        limit = (size_t)rl.rlim_cur;
    if (limit > 1048576)
        limit = 1048576;
    s->fd_limit = limit;
    s->slot_by_fd = calloc(limit, sizeof *s->slot_by_fd);
    if (s->slot_by_fd == NULL)
        return -1;
    if (s->opt.max_conns > 0)
        s->max_conns = (unsigned)s->opt.max_conns;
    else
        s->max_conns = limit > 2 * FD_RESERVE ? (unsigned)(limit - FD_RESERVE) : (unsigned)limit / 2;
    strcpy(s->tags[0].name, "none");
    s->ntags = 1;
    return 0;
}

static void print_final(server *s)
{
    char buf[2048];
    format_stats(s, buf, sizeof buf);
    memq_stats st;
    memq_tracker_stats(s->tracker, &st);
    memq_event_stats es;
    memq_event_get_stats(s->mev, &es);
    printf("FINAL %s reason=%s quota=%zu bound=%zu cache_max=%d max_response=%zu conn_cap=%zu "
           "max_conns=%u fd_limit=%zu peak_participants=%zu episode_ms_max=%.3f "
           "unreclaimable=%" PRIu64 " reclaim_runs=%" PRIu64 "\n",
           buf, s->exit_reason, s->unlimited ? SIZE_MAX : s->max, tracked_bound(s), CACHE_MAX,
           s->opt.max_response, s->opt.conn_cap, s->max_conns, s->fd_limit,
           s->peak_participants, (double)st.episode_ns_max / 1e6, st.unreclaimable_events,
           es.runs);
    fflush(stdout);
    say("stopped (%s): %" PRIu64 " connections accepted, %" PRIu64 " reclaimed, %" PRIu64
        " evicted, %" PRIu64 " cut; peak tracked %zu bytes, peak RSS %zu bytes",
        s->exit_reason, s->accepted, s->killed, s->evicted, s->cut, peak_tracked(s, &st),
        peak_rss_bytes());
}

static void teardown(server *s)
{
    /* memq_evhttp first: its on_close frees the tracked connections'
     * slots; evhttp_free() then frees its listener and closes the rest
     * (our close callback, which must not touch the listener now). */
    s->stopping = true;
    memq_evhttp_free(s->mh);
    if (s->http != NULL)
        evhttp_free(s->http);
    for (size_t i = 0; i < s->naccepted_bevs; i++)
        bufferevent_decref(s->accepted_bevs[i]);
    free(s->accepted_bevs);
    struct event *evs[] = {s->adopt_ev, s->relisten_ev, s->tick_ev, s->sigint_ev, s->sigterm_ev};
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    memq_event_detach(s->mev);
    memq_tracker_free(s->tracker);
    if (s->base != NULL)
        event_base_free(s->base);
    free(s->slot_by_fd);
    if (s->csv != NULL)
        fclose(s->csv);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    server s;
    memset(&s, 0, sizeof s);
    int rc = parse_options(argc, argv, &s.opt);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < PATTERN_SIZE; i++)
        pattern[i] = "0123456789abcdefghijklmnopqrstuvwxyz\n"[i % 37];
    s.start_ns = s.last_stats_ns = now_ns();
    s.exit_reason = "error";
    s.exit_code = 1;
    if (s.opt.csv != NULL) {
        s.csv = fopen(s.opt.csv, "we");
        if (s.csv == NULL) {
            say("%s: %s", s.opt.csv, strerror(errno));
            return 1;
        }
        fputs("t_s,used,rss,cached,conns,killed,evicted,cut,accept_errors,requests,cpu_ms\n",
              s.csv);
    }
    if (setup_slots(&s) != 0 || setup_tracker(&s) != 0 || setup_server(&s) != 0) {
        teardown(&s);
        return 1;
    }
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    getsockname(evconnlistener_get_fd(s.listener), (struct sockaddr *)&sin, &len);
    if (s.unlimited)
        say("quota off (--no-quota)%s%s", s.opt.conn_cap ? ", per-connection output cap" : "",
            s.opt.rss_cap ? ", RSS capped" : "");
    else
        say("quota %zu bytes, low water %zu, largest response %zu", s.max, s.low_water,
            s.opt.max_response);
    say("%u connection slots (descriptor limit %zu)", s.max_conns, s.fd_limit);
    printf("READY port=%u\n", (unsigned)ntohs(sin.sin_port));
    fflush(stdout);

    s.exit_code = 0;
    event_base_dispatch(s.base);
    /* A late SIGTERM must not kill us half-way through the teardown:
     * freeing a signal event gives the signal its previous (default)
     * action back, so free them first, then ignore the signals. */
    event_free(s.sigint_ev);
    event_free(s.sigterm_ev);
    s.sigint_ev = s.sigterm_ev = NULL;
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    print_final(&s);
    int code = s.exit_code;
    teardown(&s);
    return code;
}
