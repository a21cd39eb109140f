/*
 * internal.h - what the files of libmemquota-event share.  Never installed.
 *
 * libmemquota-event talks to the core through the public API only; this
 * header holds the few things its own files tell each other.
 */
#ifndef MEMQ_EVENT_INTERNAL_H
#define MEMQ_EVENT_INTERNAL_H

#include <memquota/event.h>

/*
 * Cells: the context a callback registered with someone else (the
 * tracker's wakeup, evhttp's new-request callback) is given instead of
 * the object it serves.  Such a callback may already be on its way when
 * the object is freed, on another thread, after it was unregistered (the
 * tracker reads its wakeup under its lock and calls it after dropping
 * it), and some registrations cannot be undone at all (the evhttp may be
 * gone).  So a cell, once published, is never freed: freeing the object
 * retires its cell (target = NULL, under the cells' lock), and a late
 * callback finds nothing to do.  A cell is a few dozen bytes, one per
 * attachment ever made; every cell stays reachable from a global list.
 */
struct memq__cell {
    struct memq__cell *next; /* every published cell */
    void *target;            /* the object served; NULL once retired */
    void (*chained)(void *); /* the wakeup this one chains to, or NULL */
    void *chained_ctx;
};

/* A new, unpublished cell (NULL: out of memory).  An unpublished cell is
 * freed with free(). */
struct memq__cell *memq__cell_new(void);
/* Publish c with its target: from now on it is never freed. */
void memq__cell_publish(struct memq__cell *c, void *target);
/* The cells' lock: target (and what the callback does with it) is read
 * and retired under it. */
void memq__cell_lock(void);
void memq__cell_unlock(void);
/* Retire c: target = NULL under the lock. */
void memq__cell_retire(struct memq__cell *c);

/*
 * Tracked buffers: what evhttp.c needs beyond the public functions.
 */

/* Collapse b now as a reclaim would (drain the evbuffer, release the
 * claim, mark it closed), without calling on_collapse.  Nothing if b is
 * closed already.  Call it outside libevent's buffer calls.  (The
 * on_collapse of a tracked buffer runs only when reclamation collapses
 * it, or in memq_evbuffer_add(), which evhttp.c never calls on the
 * connections' buffers.) */
void memq__evbuffer_collapse(memq_evbuffer *b);

/* The tracker's mode check shared by the constructors: MEMQ_EINVAL for a
 * NULL tracker or one in MEMQ_RECLAIM_THREAD mode, else 0. */
int memq__event_check_manual(const memq_tracker *t);

#endif /* MEMQ_EVENT_INTERNAL_H */
