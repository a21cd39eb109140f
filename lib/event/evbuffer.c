/*
 * evbuffer.c - memq_evbuffer, a libevent evbuffer as a tracked
 * participant: claims follow what it holds, ages follow Tor's rule, and a
 * reclaim frees its contents.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Seeing every change.  An evbuffer_add_cb() callback is told, after each
 * operation, how many bytes were added and removed, whoever made it: the
 * daemon, a bufferevent reading or writing its socket, evhttp writing a
 * status line and headers or moving a body in.  Invariant, kept by
 * on_change(): `length` is the buffer's length as the callbacks reported
 * it, the marks hold exactly `length` bytes, and `claimed` is
 * claim_for(length).
 *
 * What is claimed.  libevent keeps data in chains it sizes to the power of
 * two above data + header, at least 1 KiB (512 bytes on 32-bit systems).
 * Measured with libevent 2.1.12 against its allocations and the RSS
 * (wip/event/NOTES.md): 64 buffers of 1 MiB appended in 4 to 64 KiB pieces
 * allocate 1.01-1.13 times the bytes held and are 1.01-1.04 times them
 * resident; one 4 MiB append allocates an 8 MiB chain of which 4 MiB is
 * ever touched (resident 1.00 times); a buffer holding 100 bytes costs a
 * whole 1 KiB chain.  So the buffer claims the bytes it holds, and never
 * less than one smallest chain while it holds any: the allocation is no
 * closer to the RSS than that, and it cannot be seen through libevent's
 * public API anyway.  memq_evbuffer_add() avoids the oversized chains:
 * what it adds fills 64 KiB chains, and the rest chains of decreasing
 * powers of two (measured in check_evbuffer: within a few KiB per call).
 *
 * Ages.  A ring of marks (stamp, bytes) in arrival order: additions join
 * the newest mark if it has the same stamp, else take a new one; removals
 * (always from the front) eat the oldest marks, a partly drained mark
 * keeping its stamp (Tor's rule).  With the ring full, new bytes join the
 * newest mark and take its older stamp: the age is never younger than the
 * truth, so a buffer cannot hide from reclamation.  A stamp is read from
 * the tracker's clock only after a claim of 0 bytes proved the account
 * open (after shutdown the clock's context may be gone), and a new head
 * mark is in place before the claim that makes the account hold memory.
 *
 * Lifetimes.  libevent gives no notice when an evbuffer is freed (its
 * callbacks are dropped silently), so a tracked buffer never points at an
 * evbuffer it does not keep alive: it owns its evbuffer, or holds a
 * reference to the bufferevent that owns it (bufferevent_incref()), which
 * keeps the bufferevent and both its evbuffers until we let go.
 *
 * Collapse.  Draining, and calling on_collapse, happen only in the
 * reclaim callback and in memq_evbuffer_add() after its own libevent call
 * returned, never inside the evbuffer callback: there libevent is in the
 * middle of an operation (a bufferevent write thaws the output's start
 * only around its drain; freeing an owned evbuffer from there would free
 * it under libevent).  So a claim that fails in the callback only stops
 * tracking and leaves the collapse owed (`collapse_due`) to the next
 * memq_evbuffer_add().  The callback ignores what a drain reports
 * (`closed` is set first).
 *
 * Threads.  One thread: the loop's.  The tracker is in manual mode and
 * reclamation runs in the loop (memq_event), so the participant callbacks
 * run there too; nothing here takes a lock.
 */
#include "internal.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include <stdlib.h>

#define MARKS 32
/* libevent's MIN_BUFFER_SIZE: its smallest chain, header included. */
#define MIN_CHAIN (sizeof(void *) >= 8 ? (size_t)1024 : (size_t)512)
/* The largest piece that fills a 64 KiB chain with room for its header
 * (48 bytes in 2.1.12 on 64-bit systems), whatever the header's size. */
#define PIECE ((size_t)65536 - 256)
/* Additions up to this go straight in, sharing the last chain: libevent's
 * largest chain grown by doubling (EVBUFFER_CHAIN_MAX_AUTO_SIZE). */
#define SMALL ((size_t)4096)

struct mark {
    memq_time stamp;
    size_t bytes;
};

struct memq_evbuffer {
    struct evbuffer *buf;
    struct bufferevent *bev; /* held with bufferevent_incref(); NULL if owned */
    int which;               /* MEMQ_EVBUFFER_INPUT/OUTPUT; 0 if owned */
    struct evbuffer_cb_entry *cb;
    memq_participation *p;
    memq_tracker *tracker;
    memq_collapse_fn on_collapse;
    void *ctx;
    size_t length;     /* bytes held, as the callbacks reported them */
    size_t claimed;    /* claim_for(length) while open */
    bool closed;       /* collapsed or stopped: nothing is tracked */
    bool collapse_due; /* stopped in the callback: drain and tell owed */
    bool in_reclaim;   /* inside op_reclaim(): a free waits for its end */
    /* What the buffer held when it collapsed, reported inside on_collapse
     * so that the owner can log what it gives up. */
    size_t gave;
    bool gave_oldest_known;
    memq_time gave_oldest;
    bool free_pending; /* memq_evbuffer_free() was called meanwhile */
    unsigned head, n;  /* the ring of marks */
    struct mark marks[MARKS];
};

static size_t claim_for(size_t length)
{
    return length == 0 ? 0 : length < MIN_CHAIN ? MIN_CHAIN : length;
}

/* ======================================================================
 * Marks
 * ====================================================================== */

static void remember(memq_evbuffer *b, memq_time now, size_t bytes)
{
    if (b->n > 0) {
        struct mark *tail = &b->marks[(b->head + b->n - 1) % MARKS];
        if (tail->stamp >= now || b->n == MARKS) {
            tail->bytes += bytes;
            return;
        }
    }
    b->marks[(b->head + b->n) % MARKS] = (struct mark){now, bytes};
    b->n++;
}

static void forget(memq_evbuffer *b, size_t bytes)
{
    while (bytes > 0 && b->n > 0) {
        struct mark *m = &b->marks[b->head];
        if (m->bytes > bytes) {
            m->bytes -= bytes; /* a partly drained run keeps its stamp */
            return;
        }
        bytes -= m->bytes;
        b->head = (b->head + 1) % MARKS;
        b->n--;
    }
}

static void forget_all(memq_evbuffer *b)
{
    b->head = b->n = 0;
    b->length = 0;
}

/* ======================================================================
 * Stopping and collapsing
 * ====================================================================== */

/* Empty the evbuffer.  A bufferevent's output has its start frozen while
 * connected (only the bufferevent drains it, thawing it around its
 * writes): evbuffer_drain() then fails, so thaw, drain and freeze again,
 * as evhttp does. */
static void drain(struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);
    if (len == 0 || evbuffer_drain(buf, len) == 0)
        return;
    evbuffer_unfreeze(buf, 1);
    evbuffer_drain(buf, len);
    evbuffer_freeze(buf, 1);
}

/* Stop tracking: nothing is claimed from now on. */
static void stop(memq_evbuffer *b)
{
    b->closed = true;
    if (b->claimed > 0)
        memq_release(b->p, b->claimed); /* a no-op once the account is closed */
    b->claimed = 0;
    forget_all(b);
}

/* Free the contents and stop, as a reclaim does. */
static void collapse(memq_evbuffer *b)
{
    b->gave = b->claimed;
    b->gave_oldest_known = b->n > 0;
    if (b->n > 0)
        b->gave_oldest = b->marks[b->head].stamp;
    b->closed = true; /* on_change() ignores the drain */
    drain(b->buf);
    stop(b);
    if (b->bev == NULL)
        evbuffer_freeze(b->buf, 0); /* nothing more gets in untracked */
}

void memq__evbuffer_collapse(memq_evbuffer *b)
{
    if (b != NULL && !b->closed)
        collapse(b);
}

static void release_resources(memq_evbuffer *b)
{
    if (b->bev != NULL)
        bufferevent_decref(b->bev);
    else
        evbuffer_free(b->buf);
    free(b);
}

/* ======================================================================
 * The evbuffer callback: claims follow the length
 * ====================================================================== */

static void on_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    memq_evbuffer *b = arg;
    if (b->closed)
        return;
    /* One report may hold an addition and a removal (deferred callbacks).
     * Removals take the oldest bytes, so recording the addition first is
     * right in either order. */
    if (info->n_added > 0) {
        if (memq_claim(b->p, 0) != 0)
            goto dead;
        remember(b, memq_tracker_now(b->tracker), info->n_added);
    }
    forget(b, info->n_deleted);
    size_t length = b->length + info->n_added;
    b->length = info->n_deleted < length ? length - info->n_deleted : 0;
    size_t want = claim_for(b->length);
    if (want > b->claimed) {
        if (memq_claim(b->p, want - b->claimed) != 0)
            goto dead;
    } else if (want < b->claimed) {
        memq_release(b->p, b->claimed - want);
    }
    b->claimed = want;
    return;
dead:
    /* The account was closed other than by our answer (its last reference
     * dropped, the tracker freed): stop now; the drain and on_collapse
     * wait for memq_evbuffer_add(), outside libevent's operation. */
    stop(b);
    b->collapse_due = true;
}

/* ======================================================================
 * Participant callbacks
 * ====================================================================== */

static bool op_oldest(void *self, memq_time *when)
{
    const memq_evbuffer *b = self;
    if (b->closed || b->n == 0)
        return false;
    *when = b->marks[b->head].stamp;
    return true;
}

static memq_reclaim_status op_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)req; /* a byte stream cannot give back part of itself; a closed
                * notice asks for the same as a request */
    memq_evbuffer *b = self;
    if (b->closed)
        return MEMQ_RECLAIMED_COLLAPSING;
    collapse(b);
    b->in_reclaim = true;
    if (b->on_collapse != NULL)
        b->on_collapse(b->ctx);
    b->in_reclaim = false;
    if (b->free_pending)
        release_resources(b); /* memq_evbuffer_free() ran in on_collapse */
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops evbuffer_ops = {op_oldest, op_reclaim};

/* ======================================================================
 * Creation
 * ====================================================================== */

static int track(memq_account *a, struct evbuffer *buf, struct bufferevent *bev, int which,
                 memq_collapse_fn on_collapse, void *ctx, memq_evbuffer **out)
{
    memq_tracker *t = memq_account_tracker(a);
    int rc = memq__event_check_manual(t);
    if (rc != 0)
        return rc;
    memq_evbuffer *b = calloc(1, sizeof *b);
    if (b == NULL)
        return MEMQ_ENOMEM;
    b->buf = buf;
    b->bev = bev;
    b->which = which;
    b->tracker = t;
    b->on_collapse = on_collapse;
    b->ctx = ctx;
    rc = memq_participant_register(a, &evbuffer_ops, b, &b->p);
    if (rc != 0) {
        free(b);
        return rc;
    }
    size_t len = evbuffer_get_length(buf);
    if (len > 0) {
        rc = memq_claim(b->p, 0);
        if (rc == 0) {
            remember(b, memq_tracker_now(t), len);
            b->length = len;
            rc = memq_claim(b->p, claim_for(len));
        }
        if (rc == 0)
            b->claimed = claim_for(len);
    }
    if (rc == 0 && (b->cb = evbuffer_add_cb(buf, on_change, b)) == NULL)
        rc = MEMQ_ENOMEM;
    if (rc != 0) {
        memq_participation_free(b->p); /* releases the claim */
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

int memq_evbuffer_new(memq_account *a, memq_collapse_fn on_collapse, void *ctx,
                      memq_evbuffer **out)
{
    if (a == NULL || out == NULL)
        return MEMQ_EINVAL;
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL)
        return MEMQ_ENOMEM;
    int rc = track(a, buf, NULL, 0, on_collapse, ctx, out);
    if (rc != 0)
        evbuffer_free(buf);
    return rc;
}

int memq_evbuffer_new_bufferevent(memq_account *a, struct bufferevent *bev, int which,
                                  memq_collapse_fn on_collapse, void *ctx, memq_evbuffer **out)
{
    if (a == NULL || bev == NULL || out == NULL)
        return MEMQ_EINVAL;
    struct evbuffer *buf;
    if (which == MEMQ_EVBUFFER_INPUT)
        buf = bufferevent_get_input(bev);
    else if (which == MEMQ_EVBUFFER_OUTPUT)
        buf = bufferevent_get_output(bev);
    else
        return MEMQ_EINVAL;
    int rc = track(a, buf, bev, which, on_collapse, ctx, out);
    if (rc == 0)
        bufferevent_incref(bev);
    return rc;
}

/* ======================================================================
 * Use
 * ====================================================================== */

struct evbuffer *memq_evbuffer_get(const memq_evbuffer *b)
{
    return b == NULL ? NULL : b->buf;
}

/* After a libevent call on the buffer returned: pay a collapse the
 * callback owes (drain, freeze an owned buffer, tell the owner).  Returns
 * MEMQ_ECLOSED if b is closed, else 0; b may be freed by on_collapse, so
 * it is not touched after. */
static int settle(memq_evbuffer *b)
{
    if (!b->closed)
        return 0;
    if (b->collapse_due) {
        b->collapse_due = false;
        drain(b->buf);
        if (b->bev == NULL)
            evbuffer_freeze(b->buf, 0);
        if (b->on_collapse != NULL)
            b->on_collapse(b->ctx);
    }
    return MEMQ_ECLOSED;
}

/* Append n < PIECE bytes to tmp in pieces that fill chains of decreasing
 * powers of two (1 KiB at least), each built in an evbuffer of its own so
 * that its chain is sized after it, not after tmp's last chain. */
static int add_fitted(struct evbuffer *tmp, const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t chain = MIN_CHAIN;
        while (chain * 2 - 256 <= n)
            chain *= 2;
        size_t piece = n < chain - 256 ? n : chain - 256;
        struct evbuffer *part = evbuffer_new();
        if (part == NULL)
            return -1;
        int rc = evbuffer_add(part, p, piece);
        if (rc == 0)
            rc = evbuffer_add_buffer(tmp, part);
        evbuffer_free(part);
        if (rc != 0)
            return -1;
        p += piece;
        n -= piece;
    }
    return 0;
}

int memq_evbuffer_add(memq_evbuffer *b, const void *data, size_t n)
{
    if (b == NULL || (data == NULL && n > 0) || b->which == MEMQ_EVBUFFER_INPUT)
        return MEMQ_EINVAL;
    if (b->closed)
        return settle(b);
    if (n == 0) {
        if (memq_claim(b->p, 0) != 0) {
            stop(b);
            b->collapse_due = true;
        }
        return settle(b);
    }
    if (n <= SMALL) {
        /* Small: share the buffer's last chain, as libevent would. */
        if (evbuffer_add(b->buf, data, n) != 0)
            return MEMQ_ENOMEM;
        return settle(b);
    }
    /* Build the chains apart, then move them in, all or nothing: full
     * pieces fill 64 KiB chains (a new chain in the buffer itself would be
     * sized after its last one), and the rest fills smaller ones. */
    struct evbuffer *tmp = evbuffer_new();
    if (tmp == NULL)
        return MEMQ_ENOMEM;
    const unsigned char *p = data;
    size_t rest = n % PIECE;
    int rc = 0;
    for (size_t left = n - rest; rc == 0 && left > 0; left -= PIECE, p += PIECE)
        rc = evbuffer_add(tmp, p, PIECE);
    if (rc == 0)
        rc = add_fitted(tmp, p, rest);
    if (rc == 0)
        rc = evbuffer_add_buffer(b->buf, tmp);
    evbuffer_free(tmp);
    if (rc != 0)
        return MEMQ_ENOMEM;
    return settle(b);
}

size_t memq_evbuffer_claimed(const memq_evbuffer *b)
{
    if (b == NULL)
        return 0;
    if (b->in_reclaim)
        return b->gave;
    return b->closed ? 0 : b->claimed;
}

bool memq_evbuffer_oldest(const memq_evbuffer *b, memq_time *when)
{
    if (b == NULL)
        return false;
    if (b->in_reclaim) {
        if (b->gave_oldest_known && when != NULL)
            *when = b->gave_oldest;
        return b->gave_oldest_known;
    }
    if (b->closed || b->n == 0)
        return false;
    if (when != NULL)
        *when = b->marks[b->head].stamp;
    return true;
}

bool memq_evbuffer_closed(const memq_evbuffer *b)
{
    return b == NULL || b->closed;
}

void memq_evbuffer_free(memq_evbuffer *b)
{
    if (b == NULL || b->free_pending)
        return;
    if (b->cb != NULL)
        evbuffer_remove_cb_entry(b->buf, b->cb);
    b->cb = NULL;
    /* Releases what is still claimed; allowed from our own callback. */
    memq_participation_free(b->p);
    b->p = NULL;
    if (b->in_reclaim)
        b->free_pending = true; /* op_reclaim() finishes it */
    else
        release_resources(b);
}
