/*
 * evhttp.c - memq_evhttp: an account per evhttp connection, its buffers
 * tracked, and reclaimed connections closed through evhttp's own path.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Finding a connection.  libevent 2.1 gives an evhttp_connection no user
 * data and no callback when it is created, so a connection is tracked
 * when the daemon first asks about one of its requests
 * (memq_evhttp_track()) and found again through a hash keyed by the
 * evhttp_connection pointer.  With 2.2 the new-request callback
 * (evhttp_set_newreqcb()) is called for every request before its first
 * byte is read, so it tracks connections from their start; the hash
 * serves the daemon's own lookups.
 *
 * Forgetting it.  evhttp calls a connection's close callback, if the
 * connection is "connected", from evhttp_connection_free() before it
 * frees the bufferevent (and, for outgoing connections, from its reset).
 * A server connection is connected from its creation (state
 * READING_FIRSTLINE) until it is freed, so for the connections tracked
 * here the callback always runs, exactly once, while the bufferevent and
 * its evbuffers are alive: it is where a connection is forgotten.  Two
 * checks guard against a connection evhttp freed without it (the case
 * libevent's documentation leaves open; counted in `stale`): a hash entry
 * whose bufferevent is not the connection's any more is an older
 * connection's, and evhttp always keeps its error callback on a
 * bufferevent it owns, so one without it is not evhttp's any more and its
 * descriptor is never touched.  The tracked buffers hold a reference to
 * the bufferevent (see evbuffer.c), so an entry never points at freed
 * libevent memory.
 *
 * Closing a reclaimed connection.  The first of its buffers to collapse
 * (which drains it, so the memory is freed before the answer) drains the
 * other too, then the socket is set to reset at close and its reading
 * side shut down: at its next read evhttp sees end-of-file and fails the
 * connection as for a peer that went away.  That path detaches a request
 * still held by a handler (the handler's later answer frees it) and frees
 * the connection; nothing of evhttp's is freed under its feet.  Shutting
 * down only the reading side sends nothing and cannot raise SIGPIPE;
 * evhttp's close with SO_LINGER 0 resets the connection, so the kernel
 * drops what it still holds for the peer.
 *
 * Re-entrance.  on_reclaim is user code running inside a reclaim
 * callback; if it frees the connection anyway (evhttp_connection_free()),
 * the close callback runs under it: `busy` defers freeing the handle to
 * the end of our frame.
 *
 * Threads: the loop's only, as everything evhttp does.
 */
#include "internal.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

struct memq_evhttp_conn {
    memq_evhttp *h;
    struct evhttp_connection *evcon; /* the table's key */
    struct bufferevent *bev;         /* evcon's, when first tracked */
    memq_account *account;
    memq_evbuffer *out, *in; /* in is NULL without track_input */
    void *data;
    bool closing;  /* reclaimed or closed: evhttp is closing it */
    /* What its buffers held when it started closing. */
    size_t gave;
    bool gave_oldest_known;
    memq_time gave_oldest;
    unsigned busy; /* inside on_reclaim */
    bool gone;     /* forgotten while busy: free at the end */
};

/* The tracked connections by evcon: open addressing with linear probing,
 * at most half full, deletion by backward shift (no tombstones). */
typedef struct conn_table {
    memq_evhttp_conn **slot;
    size_t cap, n; /* cap: 0 or a power of two */
} conn_table;

struct memq_evhttp {
    memq_tracker *tracker;
    memq_account *anchor; /* keeps the tracker */
    memq_evhttp_config cfg;
    conn_table conns;
    struct memq__cell *cell; /* 2.2's new-request callback's context */
    memq_evhttp_stats stats; /* connections is conns.n */
};

enum why { RECLAIMED, BY_CALL, STOPPED };

/* ======================================================================
 * The table of connections
 * ====================================================================== */

static size_t home_of(const conn_table *tb, const struct evhttp_connection *evcon)
{
    uint64_t x = (uint64_t)(uintptr_t)evcon; /* murmur3's finalizer */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & (tb->cap - 1);
}

static memq_evhttp_conn *table_find(const conn_table *tb, const struct evhttp_connection *evcon)
{
    if (tb->n == 0)
        return NULL;
    for (size_t i = home_of(tb, evcon);; i = (i + 1) & (tb->cap - 1)) {
        memq_evhttp_conn *c = tb->slot[i];
        if (c == NULL || c->evcon == evcon)
            return c;
    }
}

static void table_put(conn_table *tb, memq_evhttp_conn *c)
{
    size_t i = home_of(tb, c->evcon);
    while (tb->slot[i] != NULL)
        i = (i + 1) & (tb->cap - 1);
    tb->slot[i] = c;
    tb->n++;
}

/* False without memory for a larger table (nothing changed). */
static bool table_add(conn_table *tb, memq_evhttp_conn *c)
{
    if (2 * (tb->n + 1) > tb->cap) {
        size_t cap = tb->cap != 0 ? 2 * tb->cap : 16;
        memq_evhttp_conn **slot = calloc(cap, sizeof *slot);
        if (slot == NULL)
            return false;
        conn_table old = *tb;
        *tb = (conn_table){slot, cap, 0};
        for (size_t i = 0; i < old.cap; i++)
            if (old.slot[i] != NULL)
                table_put(tb, old.slot[i]);
        free(old.slot);
    }
    table_put(tb, c);
    return true;
}

/* Remove c if it is there; the entries after it in its run move back. */
static void table_del(conn_table *tb, const memq_evhttp_conn *c)
{
    if (tb->n == 0)
        return;
    size_t mask = tb->cap - 1, i = home_of(tb, c->evcon);
    while (tb->slot[i] != c) {
        if (tb->slot[i] == NULL)
            return;
        i = (i + 1) & mask;
    }
    tb->slot[i] = NULL;
    tb->n--;
    for (size_t j = (i + 1) & mask; tb->slot[j] != NULL; j = (j + 1) & mask) {
        /* Move slot[j] to the hole unless its home lies in (i, j]. */
        size_t home = home_of(tb, tb->slot[j]->evcon);
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            tb->slot[i] = tb->slot[j];
            tb->slot[j] = NULL;
            i = j;
        }
    }
}

/* ======================================================================
 * Forgetting and closing
 * ====================================================================== */

static void conn_free(memq_evhttp_conn *c)
{
    memq_evbuffer_free(c->out);
    memq_evbuffer_free(c->in);
    memq_account_unref(c->account);
    free(c);
}

/* Forget c: out of the hash, on_close told, buffers and account dropped.
 * Its close callback must not run after this (it is running, or has been
 * removed, or the connection is gone). */
static void conn_forget(memq_evhttp_conn *c)
{
    memq_evhttp *h = c->h;
    table_del(&h->conns, c);
    if (h->cfg.on_close != NULL)
        h->cfg.on_close(c, h->cfg.ctx);
    if (c->busy > 0)
        c->gone = true;
    else
        conn_free(c);
}

/* True if evhttp still owns c's bufferevent (see the top comment). */
static bool evhttp_owns(const memq_evhttp_conn *c)
{
    bufferevent_event_cb eventcb = NULL;
    void *arg = NULL;
    bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &arg);
    return eventcb != NULL && arg == c->evcon;
}

/* Close c through evhttp: drain its buffers, shut the reading side of its
 * socket; evhttp frees it at its next read. */
static void conn_shut(memq_evhttp_conn *c, enum why why)
{
    if (c->closing)
        return;
    /* What it gives up, for on_reclaim to log (a buffer inside its own
     * collapse still reports what it held). */
    c->gave = memq_evhttp_conn_claimed(c);
    c->gave_oldest_known = memq_evhttp_conn_oldest(c, &c->gave_oldest);
    c->closing = true;
    memq_evhttp *h = c->h;
    if (why == RECLAIMED)
        h->stats.reclaimed++;
    else if (why == BY_CALL)
        h->stats.closed_by_call++;
    memq__evbuffer_collapse(c->out);
    memq__evbuffer_collapse(c->in);
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (evhttp_owns(c) && fd >= 0) {
        if (h->cfg.reset) {
            struct linger lg = {1, 0};
            (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        (void)shutdown(fd, SHUT_RD);
    } else {
        h->stats.stale++;
    }
    if (why != STOPPED && h->cfg.on_reclaim != NULL) {
        c->busy++;
        h->cfg.on_reclaim(c, h->cfg.ctx);
        if (--c->busy == 0 && c->gone)
            conn_free(c);
    }
}

/* A tracked buffer collapsed: reclamation chose this connection (or, for
 * the second buffer, closed its account). */
static void on_collapse(void *ctx)
{
    conn_shut(ctx, RECLAIMED);
}

/* evhttp's close callback: the connection goes, its buffers still alive. */
static void on_evcon_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    memq_evhttp_conn *c = arg;
    c->h->stats.closed++;
    conn_forget(c);
}

/* ======================================================================
 * Tracking
 * ====================================================================== */

static void name_account(memq_account *a, struct evhttp_connection *evcon)
{
    const struct sockaddr *sa = evhttp_connection_get_addr(evcon);
    char ip[INET6_ADDRSTRLEN] = "?", name[INET6_ADDRSTRLEN + 16];
    unsigned port = 0;
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
    } else {
        return;
    }
    snprintf(name, sizeof name, "http %s:%u", ip, port);
    (void)memq_account_set_name(a, name); /* a name is a nicety */
}

static int conn_new(memq_evhttp *h, struct evhttp_connection *evcon, struct bufferevent *bev,
                    memq_evhttp_conn **out)
{
    memq_evhttp_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return MEMQ_ENOMEM;
    c->h = h;
    c->evcon = evcon;
    c->bev = bev;
    int rc = memq_account_new(h->tracker, h->cfg.parent, &c->account);
    if (rc == 0) {
        name_account(c->account, evcon);
        rc = memq_evbuffer_new_bufferevent(c->account, bev, MEMQ_EVBUFFER_OUTPUT, on_collapse,
                                           c, &c->out);
    }
    if (rc == 0 && h->cfg.track_input)
        rc = memq_evbuffer_new_bufferevent(c->account, bev, MEMQ_EVBUFFER_INPUT, on_collapse, c,
                                           &c->in);
    if (rc == 0) {
        if (!table_add(&h->conns, c))
            rc = MEMQ_ENOMEM;
    }
    if (rc != 0) {
        conn_free(c);
        return rc;
    }
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (h->cfg.nodelay && fd >= 0) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (h->cfg.unsent_limit > 0 && fd >= 0) {
        int lowat = h->cfg.unsent_limit > INT_MAX ? INT_MAX : (int)h->cfg.unsent_limit;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
    }
    if (h->cfg.max_single_write > 0) {
        size_t most = h->cfg.max_single_write;
        (void)bufferevent_set_max_single_write(bev, most > EV_SSIZE_MAX ? EV_SSIZE_MAX
                                                                        : (ev_ssize_t)most);
    }
    evhttp_connection_set_closecb(evcon, on_evcon_close, c);
    h->stats.tracked++;
    *out = c;
    return 0;
}

int memq_evhttp_track(memq_evhttp *h, struct evhttp_request *req, memq_evhttp_conn **out)
{
    if (h == NULL || req == NULL || out == NULL)
        return MEMQ_EINVAL;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon == NULL)
        return MEMQ_ECLOSED; /* evhttp detached req: its connection is gone */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    memq_evhttp_conn *c = table_find(&h->conns, evcon);
    if (c != NULL && c->bev != bev) {
        /* An older connection at the same address, freed without its
         * close callback: forget it without touching it. */
        h->stats.stale++;
        conn_forget(c);
        c = NULL;
    }
    if (c == NULL) {
        int rc = bev == NULL ? MEMQ_EINVAL : conn_new(h, evcon, bev, &c);
        if (rc != 0) {
            h->stats.track_failures++;
            return rc;
        }
    }
    if (!c->closing && (memq_evbuffer_closed(c->out) || (c->in != NULL &&
                                                         memq_evbuffer_closed(c->in))))
        conn_shut(c, STOPPED); /* its account was closed, or the tracker freed */
    if (c->closing)
        return MEMQ_ECLOSED;
    *out = c;
    return 0;
}

int memq_evhttp_send_reply(memq_evhttp *h, struct evhttp_request *req, int code,
                           const char *reason, struct evbuffer *body)
{
    if (h == NULL || req == NULL)
        return MEMQ_EINVAL;
    memq_evhttp_conn *c;
    int rc = memq_evhttp_track(h, req, &c);
    if (rc == 0)
        evhttp_send_reply(req, code, reason, body);
    else if (rc == MEMQ_ECLOSED)
        evhttp_send_reply(req, code, reason, NULL); /* the peer will not read it */
    else
        evhttp_send_reply(req, 503, "Service Unavailable", NULL);
    return rc;
}

#if LIBEVENT_VERSION_NUMBER >= 0x02020000
/* libevent 2.2: every request, before its first byte is read.  Only the
 * first of a connection tracks it.  Never refuses a connection: one that
 * cannot be tracked is served untracked (and counted). */
static int on_newreq(struct evhttp_request *req, void *arg)
{
    struct memq__cell *cell = arg;
    memq_evhttp *h = cell->target; /* written on this same thread */
    memq_evhttp_conn *c;
    if (h != NULL)
        (void)memq_evhttp_track(h, req, &c);
    return 0;
}
#endif

/* ======================================================================
 * Creation and freeing
 * ====================================================================== */

void memq_evhttp_config_init(memq_evhttp_config *cfg)
{
    if (cfg == NULL)
        return;
    *cfg = (memq_evhttp_config){.track_input = true,
                                .reset = true,
                                .nodelay = true,
                                .unsent_limit = 16384,
                                .max_single_write = 65536};
}

int memq_evhttp_new(memq_tracker *t, struct evhttp *http, const memq_evhttp_config *cfg,
                    memq_evhttp **out)
{
    if (t == NULL || http == NULL || out == NULL)
        return MEMQ_EINVAL;
    int rc = memq__event_check_manual(t);
    if (rc != 0)
        return rc;
    if (cfg != NULL && cfg->parent != NULL && memq_account_tracker(cfg->parent) != t)
        return MEMQ_EINVAL;
    memq_evhttp *h = calloc(1, sizeof *h);
    if (h == NULL)
        return MEMQ_ENOMEM;
    h->tracker = t;
    if (cfg != NULL)
        h->cfg = *cfg;
    else
        memq_evhttp_config_init(&h->cfg);
    rc = memq_account_new(t, NULL, &h->anchor);
    if (rc == 0)
        rc = memq_account_set_name(h->anchor, "memq-evhttp");
#if LIBEVENT_VERSION_NUMBER >= 0x02020000
    if (rc == 0 && (h->cell = memq__cell_new()) == NULL)
        rc = MEMQ_ENOMEM;
#endif
    if (rc != 0) {
        memq_account_unref(h->anchor);
        free(h);
        return rc;
    }
#if LIBEVENT_VERSION_NUMBER >= 0x02020000
    /* The evhttp may be freed before us, so the callback is never
     * unregistered: its cell is retired instead. */
    memq__cell_publish(h->cell, h);
    evhttp_set_newreqcb(http, on_newreq, h->cell);
#endif
    *out = h;
    return 0;
}

void memq_evhttp_free(memq_evhttp *h)
{
    if (h == NULL)
        return;
    /* Taken out first: forgetting each then finds nothing to delete. */
    conn_table all = h->conns;
    h->conns = (conn_table){NULL, 0, 0};
    for (size_t i = 0; i < all.cap; i++) {
        memq_evhttp_conn *c = all.slot[i];
        if (c == NULL)
            continue;
        if (evhttp_owns(c))
            evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        conn_forget(c);
    }
    free(all.slot);
    if (h->cell != NULL)
        memq__cell_retire(h->cell);
    memq_account_unref(h->anchor);
    free(h);
}

/* ======================================================================
 * Connections and statistics
 * ====================================================================== */

void memq_evhttp_conn_close(memq_evhttp_conn *c)
{
    if (c != NULL)
        conn_shut(c, BY_CALL);
}

memq_account *memq_evhttp_conn_account(const memq_evhttp_conn *c)
{
    return c == NULL ? NULL : c->account;
}

struct evhttp_connection *memq_evhttp_conn_connection(const memq_evhttp_conn *c)
{
    return c == NULL ? NULL : c->evcon;
}

bool memq_evhttp_conn_closed(const memq_evhttp_conn *c)
{
    return c == NULL || c->closing;
}

size_t memq_evhttp_conn_claimed(const memq_evhttp_conn *c)
{
    if (c == NULL)
        return 0;
    if (c->closing)
        return c->gave;
    return memq_evbuffer_claimed(c->out) + memq_evbuffer_claimed(c->in);
}

bool memq_evhttp_conn_oldest(const memq_evhttp_conn *c, memq_time *when)
{
    if (c == NULL)
        return false;
    if (c->closing) {
        if (c->gave_oldest_known && when != NULL)
            *when = c->gave_oldest;
        return c->gave_oldest_known;
    }
    memq_time out, in;
    bool has_out = memq_evbuffer_oldest(c->out, &out);
    bool has_in = memq_evbuffer_oldest(c->in, &in);
    if (!has_out && !has_in)
        return false;
    if (when != NULL)
        *when = !has_in || (has_out && out < in) ? out : in;
    return true;
}

void memq_evhttp_conn_set_data(memq_evhttp_conn *c, void *data)
{
    if (c != NULL)
        c->data = data;
}

void *memq_evhttp_conn_get_data(const memq_evhttp_conn *c)
{
    return c == NULL ? NULL : c->data;
}

void memq_evhttp_get_stats(const memq_evhttp *h, memq_evhttp_stats *st)
{
    if (st == NULL)
        return;
    *st = (memq_evhttp_stats){0};
    if (h == NULL)
        return;
    *st = h->stats;
    st->connections = h->conns.n;
}
