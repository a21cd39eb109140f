/*
 * tracker.c - trackers: creation, shutdown, reconfiguration, the counted
 * total, and how the need for reclamation is announced.
 */
#include "internal.h"
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>


memq_time memq__clock(const memq_tracker *t)
{
    /* A copy of cfg.clock made at creation, never written again, so it can
     * be read without the lock (cfg is rewritten by reconfigure). */
    return t->clock != NULL ? t->clock(t->clock_ctx) : memq_now();
}

void memq__misuse_locked(memq_tracker *t, const char *what)
{
    t->stats.misuse_events++;
    if (!t->misuse_logged) {
        t->misuse_logged = true;
        t->misuse_note = what;
    }
}

void memq__unlock_log(memq_tracker *t)
{
    const char *note = t->misuse_note;
    void (*fn)(void *, int, const char *) = t->cfg.log;
    void *ctx = t->cfg.log_ctx;
    t->misuse_note = NULL;
    memq__unlock(t);
    if (note != NULL && fn != NULL)
        fn(ctx, MEMQ_LOG_WARN, note);
}

/* ======================================================================
 * Announcing the need for reclamation
 * ====================================================================== */

/*
 * One timerfd serves every state of the notification descriptor: armed to
 * fire in 1 ns it is readable "now"; armed at a PENDING answer's deadline
 * it becomes readable then, so a daemon's loop sleeps instead of spinning
 * while participants work; disarmed it is not readable.  Re-arming resets
 * its expiration count, so nobody ever needs to read it.
 */
void memq__notify(memq_tracker *t, int64_t delay_ns)
{
    if (delay_ns == t->notify_at && delay_ns <= 1)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(delay_ns / 1000000000);
    its.it_value.tv_nsec = (long)(delay_ns % 1000000000);
    if (timerfd_settime(t->notify_fd, 0, &its, NULL) == 0)
        t->notify_at = delay_ns;
}

/*
 * After an episode stopped with nothing reclaimable left, used may stay
 * above max.  Starting a new episode at every later claim would sweep
 * every account again and again for nothing, so the next episode waits
 * for a true crossing (used back at or below max, then above it) or for
 * used to grow by a quarter of the hysteresis band: new memory that may
 * be reclaimable.
 */
bool memq__check_crossing(memq_tracker *t, size_t added)
{
    if (t->unlimited || t->shutdown || t->wanted)
        return false;
    size_t used = memq__used(t);
    if (used <= t->cfg.max)
        return false;
    if (t->retry_above != 0 && added != 0 && used - added > t->cfg.max && used < t->retry_above)
        return false;
    t->retry_above = 0;
    t->wanted = true;
    memq__lockfree_update(t);
    t->crossed_ns = memq__real_ns();
    memq__notify(t, 1);
    pthread_cond_broadcast(&t->cond);
    return t->cfg.wakeup != NULL;
}

/* ======================================================================
 * Creation and shutdown
 * ====================================================================== */

int memq_tracker_new(memq_tracker **out, const memq_config *cfg)
{
    if (out == NULL || cfg == NULL)
        return MEMQ_EINVAL;
    memq_config resolved;
    char why[256];
    if (memq__config_resolve(cfg, &resolved, why, sizeof why) != 0) {
        if (cfg->log != NULL)
            cfg->log(cfg->log_ctx, MEMQ_LOG_ERROR, why);
        return MEMQ_EINVAL;
    }

    memq_tracker *t = calloc(1, sizeof *t);
    if (t == NULL)
        return MEMQ_ENOMEM;
    t->cfg = resolved;
    t->clock = resolved.clock;
    t->clock_ctx = resolved.clock_ctx;
    t->unlimited = resolved.max == MEMQ_UNLIMITED;
    if (!t->unlimited) {
        t->lockfree.slices = calloc(MEMQ_SLICES, sizeof(memq_slice));
        if (t->lockfree.slices == NULL) {
            free(t);
            return MEMQ_ENOMEM;
        }
    }
    memq__lockfree_update(t);
    t->refs = 1;
    t->next_id = 1;
    t->notify_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (t->notify_fd < 0) {
        free(t->lockfree.slices);
        free(t);
        return MEMQ_ESYSTEM;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&t->lock, NULL);
    t->magic = MEMQ_MAGIC_TRACKER;

    if (resolved.reclaim_mode == MEMQ_RECLAIM_THREAD && !t->unlimited) {
        t->refs++; /* the thread's */
        int rc = pthread_create(&t->thread, NULL, memq__reclaim_thread, t);
        if (rc != 0) {
            t->magic = MEMQ_MAGIC_DEAD;
            close(t->notify_fd);
            pthread_cond_destroy(&t->cond);
            pthread_mutex_destroy(&t->lock);
            free(t->lockfree.slices);
            free(t);
            errno = rc;
            return MEMQ_ESYSTEM;
        }
        t->thread_started = true;
    }
    memq__watcher_begin(t); /* never fails creation: a source that refuses is logged */
    *out = t;
    return 0;
}

void memq__tracker_destroy(memq_tracker *t)
{
    memq__pool_tracker_gone(t); /* its own pool: chunks still out stay valid */
    t->magic = MEMQ_MAGIC_DEAD;
    close(t->notify_fd);
    free(t->ages);
    free(t->ids);
    free(t->ep.aside);
    free(t->ep.targets.items);
    free(t->ep.scratch.items);
    free(t->ep.pending);
    free(t->lockfree.slices);
    pthread_mutex_unlock(&t->lock);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void memq_tracker_free(memq_tracker *t)
{
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return;
    memq__watcher_end(t); /* first: its thread reports to a live tracker */
    memq__lock(t);
    if (t->shutdown) {
        memq__misuse_locked(t, "misuse: memq_tracker_free called twice");
        memq__unlock_log(t);
        return;
    }
    t->shutdown = true;
    t->wanted = false;
    memq__lockfree_update(t);
    memq__notify(t, 0);
    memq__ids_close_all(t); /* each close may free its account */
    memq__notices_clear(t);
    if (!t->reclaiming)
        memq__episode_clear(t);
    pthread_cond_broadcast(&t->cond);
    if (t->thread_started) {
        t->thread_started = false;
        if (pthread_equal(t->thread, pthread_self())) {
            /* Called from a callback on the reclaim thread: it exits by
             * itself when the callback returns. */
            pthread_detach(t->thread);
        } else {
            /* Our own reference keeps t: a plain unlock suffices. */
            pthread_mutex_unlock(&t->lock);
            pthread_join(t->thread, NULL);
            pthread_mutex_lock(&t->lock);
        }
    }
    t->refs--;
    memq__unlock(t);
}

int memq_tracker_reconfigure(memq_tracker *t, const memq_config *cfg)
{
    if (t == NULL || cfg == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    memq_config resolved;
    char why[256];
    int rc = memq__config_resolve(cfg, &resolved, why, sizeof why);
    if (rc == 0 && resolved.reclaim_mode != t->cfg.reclaim_mode) {
        snprintf(why, sizeof why, "reclaim_mode: cannot change after creation");
        rc = MEMQ_EINVAL;
    }
    if (rc == 0 && (resolved.max == MEMQ_UNLIMITED) != t->unlimited) {
        snprintf(why, sizeof why, "max: cannot switch to or from MEMQ_UNLIMITED after creation");
        rc = MEMQ_EINVAL;
    }
    if (rc == 0 && (resolved.clock != t->cfg.clock || resolved.clock_ctx != t->cfg.clock_ctx)) {
        snprintf(why, sizeof why, "clock: cannot change after creation");
        rc = MEMQ_EINVAL;
    }
    /* What was set up at creation: the watcher and the tracker's pool. */
    if (rc == 0 && (resolved.pressure_watch != t->cfg.pressure_watch ||
                    resolved.pressure_stall_us != t->cfg.pressure_stall_us ||
                    resolved.pressure_window_us != t->cfg.pressure_window_us)) {
        snprintf(why, sizeof why, "pressure_watch: the watcher and its trigger cannot change "
                                  "after creation");
        rc = MEMQ_EINVAL;
    }
    if (rc == 0 && (resolved.pool_reserve != t->cfg.pool_reserve ||
                    resolved.pool_debug != t->cfg.pool_debug)) {
        snprintf(why, sizeof why, "pool_reserve, pool_debug: cannot change after creation");
        rc = MEMQ_EINVAL;
    }
    if (rc != 0) {
        if (cfg->log != NULL)
            cfg->log(cfg->log_ctx, MEMQ_LOG_ERROR, why);
        return rc;
    }
    memq__lock(t);
    if (t->shutdown) {
        memq__unlock(t);
        return MEMQ_ESHUTDOWN;
    }
    t->cfg = resolved;
    memq__lockfree_update(t);
    bool wake = memq__check_crossing(t, 0);
    void (*wakeup)(void *) = t->cfg.wakeup;
    void *ctx = t->cfg.wakeup_ctx;
    memq__unlock(t);
    if (wake)
        wakeup(ctx);
    return 0;
}

/* ======================================================================
 * Queries
 * ====================================================================== */

int memq_tracker_config(const memq_tracker *t, memq_config *out)
{
    if (t == NULL || out == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    memq_tracker *mt = (memq_tracker *)t;
    memq__lock(mt);
    *out = t->cfg;
    memq__unlock(mt);
    return 0;
}

void memq__tracker_config(const memq_tracker *t, memq_config *out)
{
    memq_tracker_config(t, out);
}

void memq__tracker_hold(memq_tracker *t)
{
    memq__lock(t);
    t->refs++;
    memq__unlock(t);
}

void memq__tracker_drop(memq_tracker *t)
{
    memq__lock(t);
    t->refs--;
    memq__unlock(t); /* the last reference destroys it */
}

bool memq__tracker_shut_down(memq_tracker *t)
{
    memq__lock(t);
    bool shut = t->shutdown;
    memq__unlock(t);
    return shut;
}

void memq__misuse(memq_tracker *t, const char *what)
{
    memq__lock(t);
    memq__misuse_locked(t, what);
    memq__unlock_log(t);
}

size_t memq_tracker_used(const memq_tracker *t)
{
    if (t == NULL)
        return 0;
    if (!t->unlimited)
        return memq__used(t);
    memq_tracker *mt = (memq_tracker *)t;
    memq__lock(mt);
    size_t sum = memq__claims_sum(t);
    memq__unlock(mt);
    return sum;
}

memq_time memq_tracker_now(const memq_tracker *t)
{
    return t == NULL ? 0 : memq__clock(t);
}

int memq_tracker_fd(memq_tracker *t)
{
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    return t->notify_fd;
}
