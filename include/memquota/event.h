/*
 * memquota/event.h - libmemquota for libevent: reclamation driven by the
 * event loop, tracked evbuffers with a safe lifetime, and one account per
 * evhttp connection.  Library libmemquota-event, pkg-config memquota-event.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Three layers, each usable alone:
 *  - memq_event: attach a tracker to an event_base, so that reclamation
 *    runs in the loop before any other ready event (priority 0), as soon
 *    as a claim crosses max (the tracker's wakeup activates the event).
 *  - memq_evbuffer: an evbuffer as a participant.  It sees every change to
 *    the buffer (evbuffer_add_cb()), including the bytes libevent writes
 *    itself (evhttp's status line and headers), claims what the buffer
 *    holds, reports the age of its oldest byte, and on reclaim frees the
 *    buffer's contents and tells its owner.
 *  - memq_evhttp: an account per evhttp connection, with tracked output and
 *    input buffers; a reclaimed connection is closed through evhttp's own
 *    path (its socket's reading side is shut down, evhttp sees end-of-file
 *    and frees the connection), never freed under evhttp's feet.
 *
 * Threads.  A base, its evbuffers and evhttp are used on the thread that
 * runs the loop, and so are the tracked buffers and connections: the
 * tracker must be in MEMQ_RECLAIM_MANUAL mode and reclamation must run in
 * that loop (memq_event_attach()).  Claims on other participants may be
 * made on any thread: a wakeup from another thread activates the event
 * only with MEMQ_EVENT_THREADS (libevent's threading on); otherwise the
 * tracker's descriptor wakes the loop.
 *
 * Lifetimes.  Each handle here may be freed before or after what it is
 * attached to (the tracker, the bufferevent, the evhttp), in either
 * order; each function says how.
 *
 * Conventions are memquota.h's: functions that can fail return 0 or a
 * negative MEMQ_E* code and change nothing when they fail; NULL handles
 * are rejected with MEMQ_EINVAL or ignored by functions returning void.
 * Include the libevent headers you use (event2/event.h, event2/http.h);
 * this one only declares their types.
 */
#ifndef MEMQUOTA_EVENT_H
#define MEMQUOTA_EVENT_H

#include <memquota.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;
struct evbuffer;
struct bufferevent;
struct evhttp;
struct evhttp_request;
struct evhttp_connection;

/* ======================================================================
 * Reclamation in the event loop
 * ====================================================================== */

typedef struct memq_event memq_event;

/* Flags for memq_event_attach(). */
enum {
    /* libevent's threading is on for the base (evthread_use_pthreads() was
     * called before event_base_new()), so a wakeup on another thread may
     * call event_active() too.  Without it, such a wakeup leaves the work
     * to the tracker's descriptor, which wakes the loop at its next poll. */
    MEMQ_EVENT_THREADS = 1
};

/* Attach tracker t to base, so that reclamation runs in base's loop before
 * any other ready event.  Two events call memq_tracker_reclaim(): one
 * watches memq_tracker_fd() (EV_READ|EV_PERSIST), the other is activated
 * by the tracker's wakeup callback, which attach replaces (reading the
 * configuration with memq_tracker_config() and applying it with
 * memq_tracker_reconfigure()) by one that activates it and then calls the
 * wakeup the tracker had, with its ctx.  Attach also activates that event
 * once, so that the loop's first turn runs it: the loop's thread is the
 * one that last ran the events, and until they first run every wakeup
 * leaves the work to the descriptor.
 *
 * Priorities.  Both events run at priority 0; libevent runs every ready
 * event of priority 0 before any other, and a wakeup during another
 * event's callback makes the loop start again from priority 0 as soon as
 * that callback returns.  If base has fewer than two priorities, attach
 * calls event_base_priority_init(base, 2): events created afterwards get
 * priority 1 by default, but events created before keep priority 0 and
 * run in turn with reclamation.  So attach right after event_base_new(),
 * before creating other events, bufferevents or evhttp, or give your
 * events a priority of at least 1.  While an episode only brings used down
 * from max to low_water (a call returned MEMQ_EAGAIN with used <= max),
 * the descriptor's event runs at the base's default priority (half the
 * number of priorities), in turn with the loop's other work; it goes back
 * to 0 when used is above max or the episode ends.
 *
 * The tracker must be in MEMQ_RECLAIM_MANUAL mode.  Attach creates an
 * account named "memq-event", holding nothing, that keeps the tracker's
 * memory and descriptor valid until memq_event_detach(): the tracker may
 * be freed before or after detaching (it shows in the tracker's account
 * count).
 *
 * Returns 0 and stores the handle in *out; MEMQ_EINVAL for NULL
 * arguments, flags other than 0 and MEMQ_EVENT_THREADS, a tracker in
 * MEMQ_RECLAIM_THREAD mode, or a base with one priority whose priorities
 * cannot be set (event_base_priority_init() fails while events are
 * active); MEMQ_ENOMEM; MEMQ_ESHUTDOWN if the tracker was freed; what
 * memq_tracker_reconfigure() returns.  On failure nothing is attached and
 * *out is untouched (a base whose priorities were set keeps them). */
MEMQ_EXPORT int memq_event_attach(memq_tracker *t, struct event_base *base, unsigned flags,
                                  memq_event **out);

/* Detach: give the tracker back the wakeup it had before attach (if the
 * one attach installed is still in force; otherwise the configuration is
 * left as it is, and the installed wakeup only calls the one it chained
 * from then on), remove and free both events, and drop the account attach
 * created.  A wakeup running on another thread meanwhile never touches a
 * freed event.  Call it on the loop's thread; it may be called from a
 * participant's callback run by the event itself (the event is then freed
 * when its callback returns).  The base's priorities stay as they are.
 * Ignores NULL. */
MEMQ_EXPORT void memq_event_detach(memq_event *e);

typedef struct memq_event_stats {
    uint64_t wakeups;       /* calls of the wakeup attach installed */
    /* Wakeups on a thread other than the loop's, without
     * MEMQ_EVENT_THREADS: left to the descriptor. */
    uint64_t wakeups_to_descriptor;
    uint64_t runs;          /* memq_tracker_reclaim() calls by the events */
    uint64_t unfinished;    /* calls that returned MEMQ_EAGAIN */
    uint64_t yields;        /* times the descriptor's event left priority 0 */
    uint64_t errors;        /* calls that returned another error */
    int last_error;         /* the last such error, 0 if none */
} memq_event_stats;

/* Fill *st with the attachment's counters (each read atomically; the set
 * is not one snapshot).  Zeroes *st for a NULL e; ignores a NULL st. */
MEMQ_EXPORT void memq_event_get_stats(const memq_event *e, memq_event_stats *st);

/* ======================================================================
 * Tracked evbuffers
 * ====================================================================== */

typedef struct memq_evbuffer memq_evbuffer;

/* Which buffer of a bufferevent memq_evbuffer_new_bufferevent() tracks. */
enum { MEMQ_EVBUFFER_INPUT = 1, MEMQ_EVBUFFER_OUTPUT = 2 };

/* Create a tracked buffer owning a new, empty evbuffer
 * (memq_evbuffer_get()), as a participant of account a.  The evbuffer is
 * freed with the tracked buffer and must not be freed otherwise.
 * on_collapse (may be NULL) is called with ctx once when the buffer
 * collapses (see memq_evbuffer_new_bufferevent()); after a collapse the
 * owned evbuffer's end is frozen (evbuffer_freeze(buf, 0)), so nothing
 * more can be added to it untracked.
 * The tracker must be in MEMQ_RECLAIM_MANUAL mode (see Threads above).
 * Returns 0 and stores the handle in *out; MEMQ_EINVAL for NULL a or out
 * or a tracker in MEMQ_RECLAIM_THREAD mode; MEMQ_ECLOSED if a is closed;
 * MEMQ_ESHUTDOWN if its tracker was freed; MEMQ_ENOMEM.  On failure *out
 * is untouched. */
MEMQ_EXPORT int memq_evbuffer_new(memq_account *a, memq_collapse_fn on_collapse, void *ctx,
                                  memq_evbuffer **out);

/* Track bev's input (MEMQ_EVBUFFER_INPUT) or output (MEMQ_EVBUFFER_OUTPUT)
 * evbuffer as a participant of account a.  The tracked buffer holds a
 * reference to bev (bufferevent_incref()), so the two may be freed in
 * either order: if bev is freed first, libevent finalizes it (and closes
 * its socket, with BEV_OPT_CLOSE_ON_FREE) when the tracked buffer is
 * freed.  A bufferevent without BEV_OPT_CLOSE_ON_FREE whose socket you
 * close yourself keeps its events registered until then, so free the
 * tracked buffer first in that case (evhttp's connections are handled by
 * memq_evhttp, which does).
 *
 * Claims.  Every change to the buffer is seen through evbuffer_add_cb(),
 * whoever makes it (evbuffer_add_printf(), a bufferevent's reads and
 * writes, evhttp's headers).  The buffer claims the bytes it holds, and at
 * least libevent's smallest chain (1 KiB on 64-bit systems) while it holds
 * any: libevent allocates whole chains, but the untouched tail of a large
 * chain is never resident, so the bytes held follow the RSS more closely
 * than the chains' sizes (measured in lib/event/evbuffer.c).  Bytes
 * already in the buffer are claimed now.
 * Ages follow Tor's rule: bytes are stamped with the tracker's clock when
 * they arrive; a partly drained run of bytes keeps its stamp; the age is
 * the oldest byte's stamp.  Up to 32 runs are kept; when all are in use,
 * new bytes join the newest run and take its older stamp, so the age is
 * never younger than the truth.
 * Collapse.  A reclaim request, or a notice that the account was closed
 * by reclamation (memq_reclaim_request.closed), drains the evbuffer (a
 * bufferevent output's frozen start is thawed for the drain and frozen
 * again), releases the claim, marks the buffer closed, calls
 * on_collapse(ctx) once and answers MEMQ_RECLAIMED_COLLAPSING.  If a claim
 * fails because the account was closed some other way (its last reference
 * dropped) or the tracker was freed, the buffer stops tracking at once
 * (memq_evbuffer_closed() turns true); it is drained and on_collapse is
 * called by the next memq_evbuffer_add().  So on_collapse runs inside
 * memq_tracker_reclaim() or memq_evbuffer_add(), never inside a libevent
 * call; it may free the tracked buffer and the bufferevent (the tracked
 * buffer's reference keeps the bufferevent until both are freed), or
 * schedule the owner's teardown.  Once closed, changes are not tracked.
 * Reclamation must run in the loop (memq_event_attach()), never from an
 * evbuffer callback.
 *
 * Returns 0 and stores the handle in *out; MEMQ_EINVAL for NULL a, bev or
 * out, a which other than the two values, or a tracker in
 * MEMQ_RECLAIM_THREAD mode; MEMQ_ECLOSED if a is closed; MEMQ_ESHUTDOWN if
 * its tracker was freed; MEMQ_ENOMEM.  On failure *out is untouched and
 * bev is unchanged. */
MEMQ_EXPORT int memq_evbuffer_new_bufferevent(memq_account *a, struct bufferevent *bev,
                                              int which, memq_collapse_fn on_collapse,
                                              void *ctx, memq_evbuffer **out);

/* The tracked evbuffer (NULL for NULL).  Valid until memq_evbuffer_free()
 * for an owned one, for as long as the bufferevent lives otherwise. */
MEMQ_EXPORT struct evbuffer *memq_evbuffer_get(const memq_evbuffer *b);

/* Append n bytes copied from data, all or nothing, so that libevent's
 * chains are filled: up to 4096 bytes go in with one evbuffer_add(),
 * sharing the buffer's last chain; more are built apart, in pieces of
 * 65280 bytes that fill 64 KiB chains and smaller pieces that fill chains
 * of decreasing powers of two, then moved to the end of the buffer.  (One
 * evbuffer_add() of 4 MiB makes an 8 MiB chain; a new chain is sized after
 * the buffer's last one, so a small addition after a large one may take a
 * 64 KiB chain.)  The bytes are claimed by the buffer's callback, as for
 * any change.
 * Returns 0; MEMQ_ECLOSED if the buffer has collapsed, or collapses now
 * because its account is closed or its tracker freed (the buffer is then
 * drained and on_collapse has run before this returns); MEMQ_EINVAL for a
 * NULL b, NULL data with n > 0, or a bufferevent's input; MEMQ_ENOMEM if
 * libevent could not add the bytes (nothing was added).  n == 0 adds
 * nothing but still detects a closed account. */
MEMQ_EXPORT int memq_evbuffer_add(memq_evbuffer *b, const void *data, size_t n);

/* Bytes currently claimed (0 for NULL and once closed).  Inside
 * on_collapse called by a reclaim, what it claimed before collapsing, so
 * that the owner can log what it gives up. */
MEMQ_EXPORT size_t memq_evbuffer_claimed(const memq_evbuffer *b);

/* Store the stamp of the oldest byte held in *when (unless when is NULL)
 * and return true; false if the buffer is empty, closed or NULL.  Inside
 * on_collapse called by a reclaim, the stamp of the oldest byte it held
 * before collapsing. */
MEMQ_EXPORT bool memq_evbuffer_oldest(const memq_evbuffer *b, memq_time *when);

/* True once the buffer has collapsed or stopped tracking (true for NULL).
 * on_collapse runs with it already true. */
MEMQ_EXPORT bool memq_evbuffer_closed(const memq_evbuffer *b);

/* Stop tracking and free: remove the callback from the evbuffer, release
 * the claim, unregister, then free an owned evbuffer or drop the reference
 * to the bufferevent (which finalizes it if its owner already freed it).
 * A bufferevent's evbuffer keeps its contents.  May be called from
 * on_collapse.  Ignores NULL. */
MEMQ_EXPORT void memq_evbuffer_free(memq_evbuffer *b);

/* ======================================================================
 * evhttp: an account per connection
 * ====================================================================== */

typedef struct memq_evhttp memq_evhttp;
typedef struct memq_evhttp_conn memq_evhttp_conn;

typedef struct memq_evhttp_config {
    /* The parent of every connection account (NULL: each is a root).  It
     * must belong to the tracker.  Closing a connection's account unlinks
     * it from the parent in constant time. */
    memq_account *parent;
    /* Track each connection's input buffer too (default true): requests
     * waiting behind the one being answered, pipelined by a client that
     * does not read, are held there. */
    bool track_input;
    /* Reset a reclaimed connection when evhttp closes it (SO_LINGER 0,
     * default true), so the kernel drops what it holds for the peer too. */
    bool reset;
    /* Set TCP_NODELAY on each connection when it is first tracked (default
     * true): without it, Nagle's algorithm and delayed ACKs can hold a
     * small response for about 40 ms. */
    bool nodelay;
    /* Bound what the kernel holds for each connection, set when it is
     * first tracked.  A peer that stops reading shuts its TCP window, and
     * Linux keeps growing the socket's send buffer (to tcp_wmem's 4 MiB):
     * what libevent writes there leaves the tracked buffer and the quota's
     * sight.  unsent_limit (default 16384; 0 leaves the socket alone) is
     * set as TCP_NOTSENT_LOWAT: the socket reports writable only while less
     * than that is unsent.  max_single_write (default 65536; 0 keeps
     * libevent's 16384) is the most one write takes from the output per
     * loop turn (bufferevent_set_max_single_write()). */
    size_t unsent_limit, max_single_write;
    /* Told once when a connection starts closing because it was reclaimed
     * or memq_evhttp_conn_close() was called, after its buffers were
     * drained.  It must not free the connection (evhttp does); the handle
     * stays valid until on_close.  May be NULL. */
    void (*on_reclaim)(memq_evhttp_conn *c, void *ctx);
    /* Told once when a tracked connection goes: from evhttp's close
     * callback, before evhttp frees the connection, or from
     * memq_evhttp_free().  The handle is freed when it returns.  May be
     * NULL. */
    void (*on_close)(memq_evhttp_conn *c, void *ctx);
    void *ctx; /* passed to on_reclaim and on_close */
} memq_evhttp_config;

/* Fill *cfg with the defaults: no parent, track_input true, reset true,
 * nodelay true, unsent_limit 16384, max_single_write 65536, no callbacks.
 * Ignores NULL. */
MEMQ_EXPORT void memq_evhttp_config_init(memq_evhttp_config *cfg);

/* Defend an evhttp server with tracker t: each connection gets an account,
 * its output buffer (and, with track_input, its input buffer) becomes a
 * tracked buffer (memq_evbuffer_new_bufferevent()), and a reclaimed
 * connection is closed through evhttp's normal path.
 *
 * When connections are tracked.  libevent 2.1 gives no hook at a new
 * connection: a connection is tracked from the first memq_evhttp_track()
 * (or memq_evhttp_send_reply()) for one of its requests, normally at the
 * top of the request callback; what it holds before (the first request's
 * headers and body) is bounded by evhttp_set_max_headers_size() and
 * evhttp_set_max_body_size(), which a defended server must set.  With
 * libevent 2.2 or later, memq_evhttp_new() installs evhttp's new-request
 * callback (evhttp_set_newreqcb(); do not set another): every connection
 * is tracked before its first byte is read.  Connections are found again
 * through a hash keyed by the evhttp_connection, and forgotten from
 * evhttp's close callback, which memq_evhttp sets on each tracked
 * connection, replacing one set before (a server that tracks connections
 * before their first request finds them again through on_close); do not
 * replace it afterwards: use on_close.
 *
 * How a reclaimed connection closes.  Both buffers are drained (their
 * memory is freed before the reclaim callback answers), on_reclaim is
 * told, the socket is set to reset at close (cfg.reset) and its reading
 * side is shut down (shutdown(SHUT_RD)): evhttp reads end-of-file at its
 * next read and frees the connection as for any peer that went away,
 * detaching a request still being answered, so a handler holding one is
 * not broken.  While a handler holds a request evhttp does not read: the
 * connection goes once the handler answers (memq_evhttp_send_reply()
 * sends no body to a closed connection).
 *
 * The memq_evhttp may be freed before or after evhttp_free(), and the
 * tracker before or after it: it holds an account named "memq-evhttp"
 * (holding nothing) that keeps the tracker's memory valid.  cfg NULL
 * means the defaults; it is copied.  The tracker must be in
 * MEMQ_RECLAIM_MANUAL mode and reclamation must run in http's loop.
 * Returns 0 and stores the handle in *out; MEMQ_EINVAL for NULL t, http
 * or out, a tracker in MEMQ_RECLAIM_THREAD mode, or a parent of another
 * tracker; MEMQ_ESHUTDOWN; MEMQ_ENOMEM.  On failure *out is untouched. */
MEMQ_EXPORT int memq_evhttp_new(memq_tracker *t, struct evhttp *http,
                                const memq_evhttp_config *cfg, memq_evhttp **out);

/* Stop defending: every tracked connection is forgotten (its close
 * callback removed, on_close told, its tracked buffers freed with their
 * contents left to evhttp, its account dropped); the connections stay
 * open.  Call it on the loop's thread, outside memq_evhttp's callbacks,
 * before or after evhttp_free().  Ignores NULL. */
MEMQ_EXPORT void memq_evhttp_free(memq_evhttp *h);

/* The tracked connection of req, tracking it now if it is not yet
 * (creating its account, named after the peer's address, and its tracked
 * buffers, and setting evhttp's close callback).  Call it at the top of
 * every request callback (memq_evhttp_send_reply() calls it too).
 * Returns 0 and stores the connection in *out; MEMQ_ECLOSED if the
 * connection is closing (reclaimed, or closed by memq_evhttp_conn_close())
 * or gone (evhttp detached req from it): answer without a body;
 * MEMQ_EINVAL for NULL arguments; MEMQ_ESHUTDOWN if the tracker was freed;
 * MEMQ_ENOMEM.  The last two are counted in track_failures and leave the
 * connection untracked (a later call tries again).  On failure *out is
 * untouched. */
MEMQ_EXPORT int memq_evhttp_track(memq_evhttp *h, struct evhttp_request *req,
                                  memq_evhttp_conn **out);

/* Answer req with evhttp_send_reply(req, code, reason, body) once its
 * connection is tracked (memq_evhttp_track()), so every byte of the
 * answer, status line and headers included, is claimed by the
 * connection's output buffer as evhttp writes it.  Build a large body with
 * memq_evbuffer_add() in a tracked buffer on the connection's account
 * (memq_evbuffer_new(memq_evhttp_conn_account(c), ...)) so it is counted
 * as it grows.  body may be NULL; its bytes are moved, as by evhttp.
 * If the connection is closing or gone, the answer is sent without the
 * body (left in body) and MEMQ_ECLOSED returned; if it cannot be tracked,
 * a 503 without a body is sent and the error returned.  Either way req is
 * answered (evhttp frees it) and must not be used again.
 * Returns 0; MEMQ_ECLOSED; MEMQ_EINVAL for NULL h or req (req is then not
 * answered); MEMQ_ESHUTDOWN or MEMQ_ENOMEM from memq_evhttp_track(). */
MEMQ_EXPORT int memq_evhttp_send_reply(memq_evhttp *h, struct evhttp_request *req, int code,
                                       const char *reason, struct evbuffer *body);

/* Close c as reclamation would: drain its buffers, tell on_reclaim, shut
 * its socket's reading side so evhttp frees it at its next read.  Use it
 * to free a connection slot (the longest idle connection, say).  Counted
 * in closed_by_call.  Idempotent.  Ignores NULL. */
MEMQ_EXPORT void memq_evhttp_conn_close(memq_evhttp_conn *c);

/* The connection's account (NULL for NULL): make it the parent of other
 * participants whose data dies with the connection.  Valid until on_close;
 * take a reference (memq_account_ref()) to keep it longer. */
MEMQ_EXPORT memq_account *memq_evhttp_conn_account(const memq_evhttp_conn *c);

/* The evhttp connection (NULL for NULL). */
MEMQ_EXPORT struct evhttp_connection *memq_evhttp_conn_connection(const memq_evhttp_conn *c);

/* True once the connection is closing: reclaimed, or closed by
 * memq_evhttp_conn_close() (true for NULL).  A handler that answers later
 * (asynchronously) should check it and answer at once. */
MEMQ_EXPORT bool memq_evhttp_conn_closed(const memq_evhttp_conn *c);

/* Bytes its tracked buffers claim now (0 for NULL).  Once the connection
 * is closing (and so inside on_reclaim), what they claimed when it started
 * closing: what it gave up. */
MEMQ_EXPORT size_t memq_evhttp_conn_claimed(const memq_evhttp_conn *c);

/* Store the stamp of the oldest byte its tracked buffers hold in *when
 * (unless when is NULL) and return true; false if they hold nothing or c
 * is NULL.  Once the connection is closing, the oldest byte they held
 * when it started closing. */
MEMQ_EXPORT bool memq_evhttp_conn_oldest(const memq_evhttp_conn *c, memq_time *when);

/* The user data of a connection: evhttp 2.1 has none, memq_evhttp keeps
 * one pointer per tracked connection (NULL until set; NULL for a NULL c).
 * Free what it points to in on_close. */
MEMQ_EXPORT void memq_evhttp_conn_set_data(memq_evhttp_conn *c, void *data);
MEMQ_EXPORT void *memq_evhttp_conn_get_data(const memq_evhttp_conn *c);

typedef struct memq_evhttp_stats {
    size_t connections;      /* tracked connections now */
    uint64_t tracked;        /* connections tracked since memq_evhttp_new() */
    uint64_t closed;         /* tracked connections evhttp closed since */
    uint64_t reclaimed;      /* connections closed by reclamation: the killed */
    uint64_t closed_by_call; /* connections closed by memq_evhttp_conn_close() */
    uint64_t track_failures; /* requests whose connection could not be tracked */
    uint64_t stale;          /* entries found for a connection evhttp freed
                              * without its close callback (should stay 0) */
} memq_evhttp_stats;

/* Fill *st (zeroes it for a NULL h; ignores a NULL st). */
MEMQ_EXPORT void memq_evhttp_get_stats(const memq_evhttp *h, memq_evhttp_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* MEMQUOTA_EVENT_H */
