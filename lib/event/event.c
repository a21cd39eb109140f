/*
 * event.c - memq_event: reclamation run by a libevent loop at priority 0,
 * started by the tracker's wakeup as soon as a claim crosses max.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Why a wakeup and not only the descriptor.  The tracker's descriptor is
 * readable while reclamation has work to do, but libevent learns it only
 * at its next poll, after running the whole batch of events the last poll
 * made ready: measured under a slow-read attack on evhttp, a batch of
 * 4 MiB responses took a 64 MiB quota to 76-97 MiB.  The wakeup runs
 * inside the claim that crosses max; event_active() on a priority-0 event
 * makes libevent start again from priority 0 as soon as the running
 * callback returns (it checks for a more urgent event after each
 * callback), so reclamation comes before the rest of the batch.
 *
 * Two events, one callback.  `wake` (no descriptor) is what the wakeup
 * activates: always priority 0.  `watch` polls the descriptor
 * (EV_READ|EV_PERSIST): it carries an episode across calls that return
 * MEMQ_EAGAIN (the budget ran out), answers that arrive later, and
 * crossings on threads that may not touch the base.  An episode whose
 * total is above max is urgent, so `watch` stays at priority 0 and the
 * loop runs nothing else until it is at or below max; from there down to
 * low_water it drops to the base's default priority and takes turns with
 * the loop's other work.  A priority can only change while an event is not
 * active, which is true inside its own callback: that is where it changes.
 *
 * Threads.  The wakeup runs on whatever thread claimed.  event_active()
 * from another thread is safe only with libevent's threading on (the
 * MEMQ_EVENT_THREADS flag says so); otherwise only the loop's own thread
 * may call it, and another thread leaves the work to the descriptor,
 * which wakes a sleeping loop by itself.  The loop's thread is the one
 * that last ran our callback (a tag address per thread), which attach
 * makes happen at the loop's first turn; before that every wakeup uses
 * the descriptor.  The wakeup reads its attachment through a cell (see
 * internal.h) under the cells' lock and calls event_active() holding it,
 * so detach, which retires the cell under the same lock before freeing
 * the events, never races with it.  The counters are atomics.
 *
 * Keeping the tracker.  The events hold its descriptor, which the tracker
 * closes when its last handle goes.  An account created at attach and
 * dropped at detach is such a handle, so the tracker may be freed before
 * detach: after memq_tracker_free() the descriptor is quiet and the
 * wakeup is never called again.
 */
#include "internal.h"

#include <event2/event.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct memq_event {
    memq_tracker *tracker;
    memq_account *anchor; /* keeps the tracker and its descriptor */
    struct event_base *base;
    struct event *wake, *watch;
    struct memq__cell *cell;
    bool threads;        /* MEMQ_EVENT_THREADS */
    int watch_priority;  /* the priority `watch` has now */
    int yield_priority;  /* the base's default priority */
    bool running;        /* inside our callback: detach frees at its end */
    bool detached;       /* memq_event_detach() was called from it */
    _Atomic(const char *) loop_thread; /* the tag of the loop's thread */

    _Atomic uint64_t wakeups, wakeups_to_descriptor, runs, unfinished, yields, errors;
    atomic_int last_error;
};

/* One per thread: its address tells threads apart, portably. */
static _Thread_local char thread_tag;

/* ======================================================================
 * Cells (see internal.h)
 * ====================================================================== */

static pthread_mutex_t cells_lock = PTHREAD_MUTEX_INITIALIZER;
static struct memq__cell *cells; /* every published cell, never freed */

struct memq__cell *memq__cell_new(void)
{
    return calloc(1, sizeof(struct memq__cell));
}

void memq__cell_publish(struct memq__cell *c, void *target)
{
    pthread_mutex_lock(&cells_lock);
    c->target = target;
    c->next = cells;
    cells = c;
    pthread_mutex_unlock(&cells_lock);
}

void memq__cell_lock(void)
{
    pthread_mutex_lock(&cells_lock);
}

void memq__cell_unlock(void)
{
    pthread_mutex_unlock(&cells_lock);
}

void memq__cell_retire(struct memq__cell *c)
{
    pthread_mutex_lock(&cells_lock);
    c->target = NULL;
    pthread_mutex_unlock(&cells_lock);
}

int memq__event_check_manual(const memq_tracker *t)
{
    memq_config cfg;
    if (t == NULL || memq_tracker_config(t, &cfg) != 0)
        return MEMQ_EINVAL;
    return cfg.reclaim_mode == MEMQ_RECLAIM_MANUAL ? 0 : MEMQ_EINVAL;
}

/* ======================================================================
 * The wakeup and the events' callback
 * ====================================================================== */

static void count(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* Installed as the tracker's wakeup, with the cell as its context.  It
 * only schedules: it runs inside a claim, often inside libevent's own
 * buffer code. */
static void on_wakeup(void *ctx)
{
    struct memq__cell *c = ctx;
    memq__cell_lock();
    memq_event *e = c->target;
    void (*chained)(void *) = c->chained;
    void *chained_ctx = c->chained_ctx;
    if (e != NULL) {
        count(&e->wakeups);
        if (e->threads ||
            atomic_load_explicit(&e->loop_thread, memory_order_relaxed) == &thread_tag)
            event_active(e->wake, EV_TIMEOUT, 0);
        else
            count(&e->wakeups_to_descriptor);
    }
    memq__cell_unlock();
    if (chained != NULL)
        chained(chained_ctx);
}

static void destroy(memq_event *e)
{
    event_free(e->wake);
    event_free(e->watch);
    memq_account_unref(e->anchor);
    free(e);
}

/* Set `watch`'s priority; fails (and is retried at the next run) while it
 * is active, which only happens when `wake` runs in the same turn. */
static void set_watch_priority(memq_event *e, int priority)
{
    if (priority == e->watch_priority || event_priority_set(e->watch, priority) != 0)
        return;
    if (priority != 0)
        count(&e->yields);
    e->watch_priority = priority;
}

static void on_run(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    memq_event *e = arg;
    atomic_store_explicit(&e->loop_thread, &thread_tag, memory_order_relaxed);
    e->running = true;
    int rc = memq_tracker_reclaim(e->tracker);
    count(&e->runs);
    if (rc == MEMQ_EAGAIN) {
        count(&e->unfinished);
    } else if (rc != 0) {
        count(&e->errors);
        atomic_store_explicit(&e->last_error, rc, memory_order_relaxed);
    }
    e->running = false;
    if (e->detached) {
        destroy(e);
        return;
    }
    /* Urgent while the total is above max; after that the rest of the
     * episode takes turns with the loop's other work. */
    int priority = 0;
    memq_config cfg;
    if (rc == MEMQ_EAGAIN && memq_tracker_config(e->tracker, &cfg) == 0 &&
        memq_tracker_used(e->tracker) <= cfg.max)
        priority = e->yield_priority;
    set_watch_priority(e, priority);
}

/* ======================================================================
 * Attach and detach
 * ====================================================================== */

int memq_event_attach(memq_tracker *t, struct event_base *base, unsigned flags, memq_event **out)
{
    if (t == NULL || base == NULL || out == NULL || (flags & ~(unsigned)MEMQ_EVENT_THREADS) != 0)
        return MEMQ_EINVAL;
    memq_config cfg;
    if (memq_tracker_config(t, &cfg) != 0 || cfg.reclaim_mode != MEMQ_RECLAIM_MANUAL)
        return MEMQ_EINVAL;
    int fd = memq_tracker_fd(t);
    if (fd < 0)
        return MEMQ_EINVAL;

    memq_event *e = calloc(1, sizeof *e);
    struct memq__cell *cell = memq__cell_new();
    if (e == NULL || cell == NULL) {
        free(e);
        free(cell);
        return MEMQ_ENOMEM;
    }
    e->tracker = t;
    e->base = base;
    e->threads = (flags & MEMQ_EVENT_THREADS) != 0;
    e->cell = cell;
    atomic_init(&e->loop_thread, NULL);
    int rc = memq_account_new(t, NULL, &e->anchor);
    if (rc == 0)
        rc = memq_account_set_name(e->anchor, "memq-event");
    if (rc == 0) {
        e->wake = event_new(base, -1, 0, on_run, e);
        e->watch = event_new(base, fd, EV_READ | EV_PERSIST, on_run, e);
        if (e->wake == NULL || e->watch == NULL)
            rc = MEMQ_ENOMEM;
    }
    /* Two priorities at least, so that 0 comes before everything else.
     * libevent refuses while callbacks are active (MEMQ_EINVAL); otherwise
     * it fails only for memory, after freeing the base's queues: give the
     * base back the priorities it had, so that it stays usable. */
    int had = event_base_get_npriorities(base);
    if (rc == 0 && had < 2) {
        if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) > 0) {
            rc = MEMQ_EINVAL;
        } else if (event_base_priority_init(base, 2) != 0) {
            (void)event_base_priority_init(base, had > 0 ? had : 1);
            rc = MEMQ_ENOMEM;
        }
    }
    if (rc == 0) {
        e->yield_priority = event_base_get_npriorities(base) / 2;
        if (event_priority_set(e->wake, 0) != 0 || event_priority_set(e->watch, 0) != 0)
            rc = MEMQ_EINVAL;
        e->watch_priority = 0;
    }
    if (rc == 0 && event_add(e->watch, NULL) != 0)
        rc = MEMQ_ENOMEM;
    if (rc != 0) {
        if (e->wake != NULL)
            event_free(e->wake);
        if (e->watch != NULL)
            event_free(e->watch); /* also deletes it */
        memq_account_unref(e->anchor);
        free(cell);
        free(e);
        return rc;
    }

    /* The wakeup: ours, chaining to the one the tracker had.  The cell is
     * published before the tracker can call it (reconfigure may, at once,
     * if used is above max). */
    cell->chained = cfg.wakeup;
    cell->chained_ctx = cfg.wakeup_ctx;
    memq__cell_publish(cell, e);
    cfg.wakeup = on_wakeup;
    cfg.wakeup_ctx = cell;
    rc = memq_tracker_reconfigure(t, &cfg);
    if (rc != 0) {
        memq__cell_retire(cell);
        destroy(e);
        return rc;
    }
    /* The first turn of the loop runs us once: it learns the loop's thread
     * and catches up with anything already due. */
    event_active(e->wake, EV_TIMEOUT, 0);
    *out = e;
    return 0;
}

void memq_event_detach(memq_event *e)
{
    if (e == NULL || e->detached)
        return;
    memq_config cfg;
    if (memq_tracker_config(e->tracker, &cfg) == 0 && cfg.wakeup == on_wakeup &&
        cfg.wakeup_ctx == e->cell) {
        cfg.wakeup = e->cell->chained;
        cfg.wakeup_ctx = e->cell->chained_ctx;
        /* Fails only after memq_tracker_free(), which calls no wakeup. */
        (void)memq_tracker_reconfigure(e->tracker, &cfg);
    }
    /* After this no wakeup touches the events. */
    memq__cell_retire(e->cell);
    if (e->running) {
        /* Called from a callback inside our own run: free on the way out. */
        event_del(e->watch);
        e->detached = true;
        return;
    }
    destroy(e);
}

void memq_event_get_stats(const memq_event *e, memq_event_stats *st)
{
    if (st == NULL)
        return;
    *st = (memq_event_stats){0};
    if (e == NULL)
        return;
    st->wakeups = atomic_load_explicit(&e->wakeups, memory_order_relaxed);
    st->wakeups_to_descriptor =
        atomic_load_explicit(&e->wakeups_to_descriptor, memory_order_relaxed);
    st->runs = atomic_load_explicit(&e->runs, memory_order_relaxed);
    st->unfinished = atomic_load_explicit(&e->unfinished, memory_order_relaxed);
    st->yields = atomic_load_explicit(&e->yields, memory_order_relaxed);
    st->errors = atomic_load_explicit(&e->errors, memory_order_relaxed);
    st->last_error = atomic_load_explicit(&e->last_error, memory_order_relaxed);
}
