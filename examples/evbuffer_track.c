/*
 * evbuffer_track.c - a libevent evbuffer as a tracked participant.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Invariant, kept by on_change(): the bytes of the marks add up to what is
 * claimed, which is the buffer's length as the callbacks reported it.
 * Marks are a ring of runs in arrival order; the head run is the oldest
 * unsent data, so the buffer's age is the head's stamp.
 */
#include "evbuffer_track.h"

#include <stdlib.h>

typedef struct mark {
    memq_time stamp;
    size_t bytes;
} mark;

struct evbuffer_track {
    struct evbuffer *buf;
    struct evbuffer_cb_entry *cb;
    memq_participation *p;
    memq_tracker *tracker;
    memq_collapse_fn on_collapse;
    void *ctx;
    size_t claimed;
    bool closed;
    bool in_reclaim;   /* inside our reclaim callback: defer free(self) */
    bool free_pending; /* evbuffer_track_free() was called meanwhile */
    unsigned head, n;  /* the ring of marks */
    mark marks[EVBUFFER_TRACK_MARKS];
};

/* ----------------------------------------------------------------------
 * Marks
 * ---------------------------------------------------------------------- */

static void remember(evbuffer_track *t, size_t bytes)
{
    memq_time now = memq_tracker_now(t->tracker);
    if (t->n > 0) {
        mark *tail = &t->marks[(t->head + t->n - 1) % EVBUFFER_TRACK_MARKS];
        /* Same clock tick, or no room left: the newest run absorbs them
         * (an older stamp than the truth, never a younger one). */
        if (tail->stamp >= now || t->n == EVBUFFER_TRACK_MARKS) {
            tail->bytes += bytes;
            return;
        }
    }
    t->marks[(t->head + t->n) % EVBUFFER_TRACK_MARKS] = (mark){now, bytes};
    t->n++;
}

/* Drop bytes from the front; returns how many were known. */
static size_t forget(evbuffer_track *t, size_t bytes)
{
    size_t done = 0;
    while (bytes > 0 && t->n > 0) {
        mark *m = &t->marks[t->head];
        if (m->bytes > bytes) {
            m->bytes -= bytes; /* a partly drained run keeps its stamp */
            done += bytes;
            break;
        }
        bytes -= m->bytes;
        done += m->bytes;
        t->head = (t->head + 1) % EVBUFFER_TRACK_MARKS;
        t->n--;
    }
    return done;
}

static void forget_all(evbuffer_track *t)
{
    t->head = t->n = 0;
    t->claimed = 0;
}

/* ----------------------------------------------------------------------
 * The evbuffer callback: claims follow the length
 * ---------------------------------------------------------------------- */

static void on_change(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    evbuffer_track *t = arg;
    if (t->closed || t->in_reclaim)
        return;
    /* With deferred callbacks one report may cover an addition and a
     * removal.  Removals take the oldest bytes, so recording the addition
     * first is right in either order. */
    if (info->n_added > 0) {
        if (memq_claim(t->p, info->n_added) != 0) {
            /* The account was closed some other way (or the tracker shut
             * down): nothing is counted from now on; the owner sees
             * evbuffer_track_closed() and closes. */
            t->closed = true;
            forget_all(t);
            return;
        }
        t->claimed += info->n_added;
        remember(t, info->n_added);
    }
    if (info->n_deleted > 0) {
        size_t known = forget(t, info->n_deleted);
        t->claimed -= known;
        memq_release(t->p, known);
    }
}

/* ----------------------------------------------------------------------
 * Participant callbacks
 * ---------------------------------------------------------------------- */

static bool op_oldest(void *self, memq_time *when)
{
    return evbuffer_track_oldest(self, when);
}

static memq_reclaim_status op_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)req; /* a byte stream cannot give back part of itself */
    evbuffer_track *t = self;
    if (t->closed)
        return MEMQ_RECLAIMED_COLLAPSING;
    /* While the owner tears down (draining the buffer), on_change() reports
     * nothing: the COLLAPSING answer forgets the account's memory at once.
     * The owner can still read our age and claim, e.g. to log them. */
    t->in_reclaim = true;
    if (t->on_collapse != NULL)
        t->on_collapse(t->ctx);
    t->in_reclaim = false;
    if (t->free_pending) {
        free(t);
    } else {
        t->closed = true;
        forget_all(t);
    }
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops track_ops = {op_oldest, op_reclaim};

/* ----------------------------------------------------------------------
 * Public functions
 * ---------------------------------------------------------------------- */

int evbuffer_track_new(memq_account *a, struct evbuffer *buf, memq_collapse_fn on_collapse,
                       void *ctx, evbuffer_track **out)
{
    if (a == NULL || buf == NULL || out == NULL)
        return MEMQ_EINVAL;
    evbuffer_track *t = calloc(1, sizeof *t);
    if (t == NULL)
        return MEMQ_ENOMEM;
    t->buf = buf;
    t->tracker = memq_account_tracker(a);
    t->on_collapse = on_collapse;
    t->ctx = ctx;
    int rc = memq_participant_register(a, &track_ops, t, &t->p);
    if (rc != 0) {
        free(t);
        return rc;
    }
    size_t len = evbuffer_get_length(buf);
    if (len > 0) {
        rc = memq_claim(t->p, len);
        if (rc != 0) {
            memq_participation_free(t->p);
            free(t);
            return rc;
        }
        t->claimed = len;
        remember(t, len);
    }
    t->cb = evbuffer_add_cb(buf, on_change, t);
    if (t->cb == NULL) {
        memq_participation_free(t->p);
        free(t);
        return MEMQ_ENOMEM;
    }
    *out = t;
    return 0;
}

bool evbuffer_track_closed(const evbuffer_track *t)
{
    return t == NULL || t->closed || t->in_reclaim;
}

bool evbuffer_track_oldest(const evbuffer_track *t, memq_time *when)
{
    if (t == NULL || t->closed || t->n == 0)
        return false;
    if (when != NULL)
        *when = t->marks[t->head].stamp;
    return true;
}

size_t evbuffer_track_claimed(const evbuffer_track *t)
{
    return t == NULL || t->closed ? 0 : t->claimed;
}

void evbuffer_track_free(evbuffer_track *t)
{
    if (t == NULL || t->free_pending)
        return;
    if (t->cb != NULL)
        evbuffer_remove_cb_entry(t->buf, t->cb);
    t->cb = NULL;
    /* Releases what is still claimed; allowed from our own callback. */
    memq_participation_free(t->p);
    t->p = NULL;
    if (t->in_reclaim)
        t->free_pending = true; /* op_reclaim() frees it on its way out */
    else
        free(t);
}
