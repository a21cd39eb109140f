/*
 * machine.c - the tracker's view of the machine: pressure reports, the
 * process's resident memory held against rss_max, the built-in watcher's
 * life, and the machine's figures in the statistics.
 *
 * The figures (RSS, the cgroup's usage and limit) come from the pressure
 * room (pressure.h), read without the tracker's lock (a dozen small file
 * reads, about 100 us) and stored under it.  They are read at most every
 * MACHINE_READ_NS for the statistics and the dumps, and at most every
 * RSS_CHECK_NS for rss_max, never on a claim's path.
 *
 * rss_max.  RSS counts what the allocator keeps as well as what the
 * participants hold, so crossing rss_max cannot be met by tracked memory
 * alone, and reclaiming tracked memory lowers RSS only if the allocator
 * gives it back.  Hence three rules:
 *  - an RSS episode aims to free the excess (rss - rss_max) plus a quarter
 *    of the hysteresis band, but never goes below low_water because of
 *    RSS alone (an episode started by a crossing of max or by pressure
 *    goes to its own target);
 *  - the first RSS check after such an episode asks whether RSS fell by at
 *    least half of what was reclaimed; if it did not (an allocator keeping
 *    freed memory), reclaiming more would drain honest data for nothing:
 *    the tracker counts a stall (rss_stalls), logs it once, and waits for
 *    RSS to grow by a quarter of the band beyond what it was before trying
 *    again;
 *  - the check runs at most every RSS_CHECK_NS: in thread mode the reclaim
 *    thread wakes for it, in manual mode the notification descriptor
 *    becomes readable for it (a reclaim call that finds nothing to do
 *    returns 0 at once).
 */
#include "internal.h"
#include "pressure.h"

#include <inttypes.h>
#include <stdlib.h>

#define MACHINE_READ_NS ((uint64_t)100 * 1000 * 1000)
#define RSS_CHECK_NS ((uint64_t)250 * 1000 * 1000)

/* ======================================================================
 * The figures
 * ====================================================================== */

static size_t read_rss(memq_tracker *t)
{
    return t->rss_read != NULL ? t->rss_read(t->rss_read_ctx) : memq__machine_rss(NULL);
}

void memq__machine_refresh(memq_tracker *t)
{
    uint64_t now = memq__real_ns();
    memq__lock(t);
    bool due = t->machine_ns == 0 || now - t->machine_ns >= MACHINE_READ_NS;
    memq__unlock(t);
    if (!due)
        return;
    memq_machine m;
    memq__machine_read(NULL, &m);
    if (t->rss_read != NULL)
        m.rss = read_rss(t);
    memq__lock(t);
    t->machine_ns = now;
    t->machine_rss = m.rss;
    t->machine_cgroup_usage = m.cgroup_usage;
    t->machine_cgroup_limit = m.cgroup_limit;
    memq__unlock(t);
}

void memq__machine_stats(const memq_tracker *t, memq_stats *st)
{
    st->rss = t->machine_rss;
    st->cgroup_usage = t->machine_cgroup_usage;
    st->cgroup_limit = t->machine_cgroup_limit;
    st->untracked = (int64_t)st->rss - (int64_t)st->used;
}

/* ======================================================================
 * Pressure reports
 * ====================================================================== */

/* Reclamation becomes wanted without a crossing of max (pressure, RSS):
 * the descriptor, the reclaim thread and, if not wanted yet, the wakeup.
 * Returns true if cfg.wakeup must be called once the lock is dropped. */
static bool want(memq_tracker *t, uint64_t now)
{
    bool wake = false;
    if (!t->wanted) {
        t->wanted = true;
        t->crossed_ns = now;
        memq__lockfree_update(t);
        wake = t->cfg.wakeup != NULL;
    }
    if (!t->reclaiming)
        memq__notify(t, 1);
    pthread_cond_broadcast(&t->cond);
    return wake;
}

int memq_tracker_pressure(memq_tracker *t)
{
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    uint64_t now = memq__real_ns();
    memq__lock(t);
    if (t->shutdown) {
        memq__unlock(t);
        return MEMQ_ESHUTDOWN;
    }
    t->stats.pressure_events++;
    uint64_t interval = (uint64_t)t->cfg.pressure_interval_ms * 1000000u;
    if (t->unlimited || (t->pressure_last_ns != 0 && now - t->pressure_last_ns < interval)) {
        memq__unlock(t);
        return 0;
    }
    t->pressure_last_ns = now;
    t->pressure_wanted = true;
    t->stats.pressure_episodes++;
    bool wake = want(t, now);
    void (*wakeup)(void *) = t->cfg.wakeup;
    void *ctx = t->cfg.wakeup_ctx;
    memq__unlock(t);
    if (wake)
        wakeup(ctx);
    return 1;
}

/* ======================================================================
 * rss_max
 * ====================================================================== */

/* Under the lock, with a fresh RSS reading: start an RSS episode, record a
 * stall, or nothing.  Returns true if cfg.wakeup must be called. */
static bool rss_evaluate(memq_tracker *t, size_t rss, uint64_t now, char *log, size_t len)
{
    size_t band = t->cfg.max - t->cfg.low_water, step = band / 4;
    t->machine_rss = rss;
    if (t->rss_after_episode) {
        /* The first check after an RSS episode: did reclaiming lower RSS? */
        t->rss_after_episode = false;
        size_t freed = (size_t)(t->stats.bytes_reclaimed - t->rss_reclaimed_before);
        if (rss > t->cfg.rss_max && rss + freed / 2 > t->rss_before) {
            t->stats.rss_stalls++;
            t->rss_retry_above = t->rss_before > SIZE_MAX - step ? SIZE_MAX : t->rss_before + step;
            if (!t->rss_stall_logged) {
                t->rss_stall_logged = true;
                snprintf(log, len,
                         "rss_max: reclaiming %zu bytes did not lower RSS (%zu bytes, rss_max "
                         "%zu); the allocator keeps freed memory: waiting until RSS passes %zu",
                         freed, rss, t->cfg.rss_max, t->rss_retry_above);
            }
            return false;
        }
    }
    if (rss <= t->cfg.rss_max) {
        t->rss_retry_above = 0;
        return false;
    }
    if (t->rss_retry_above != 0 && rss < t->rss_retry_above)
        return false;
    t->rss_retry_above = 0;
    size_t used = memq__used(t);
    size_t excess = rss - t->cfg.rss_max;
    excess = excess > SIZE_MAX - step ? SIZE_MAX : excess + step;
    t->rss_target = used > excess ? used - excess : 0;
    t->rss_wanted = true;
    t->rss_before = rss;
    t->rss_reclaimed_before = t->stats.bytes_reclaimed;
    t->stats.rss_episodes++;
    return want(t, now);
}

int64_t memq__rss_check(memq_tracker *t)
{
    uint64_t now = memq__real_ns();
    memq__lock(t);
    bool due = t->cfg.rss_max != 0 && !t->shutdown && !t->ep.active &&
               (t->rss_checked_ns == 0 || now - t->rss_checked_ns >= RSS_CHECK_NS);
    if (due)
        t->rss_checked_ns = now;
    memq__unlock(t);
    if (!due)
        return t->cfg.rss_max != 0 ? (int64_t)RSS_CHECK_NS : 0;
    size_t rss = read_rss(t);
    char log[256] = "";
    memq__lock(t);
    bool wake = !t->shutdown && t->cfg.rss_max != 0 && rss_evaluate(t, rss, now, log, sizeof log);
    void (*wakeup)(void *) = t->cfg.wakeup;
    void *wctx = t->cfg.wakeup_ctx;
    void (*logfn)(void *, int, const char *) = t->cfg.log;
    void *lctx = t->cfg.log_ctx;
    memq__unlock(t);
    if (log[0] != '\0' && logfn != NULL)
        logfn(lctx, MEMQ_LOG_WARN, log);
    if (wake)
        wakeup(wctx);
    return (int64_t)RSS_CHECK_NS;
}

void memq__rss_episode_ended(memq_tracker *t)
{
    /* Check soon whether RSS followed what was reclaimed. */
    t->rss_after_episode = true;
}

/* ======================================================================
 * The built-in watcher
 * ====================================================================== */

void memq__watcher_begin(memq_tracker *t)
{
    if (!t->cfg.pressure_watch || t->unlimited)
        return;
    int source = MEMQ_WATCH_NONE;
    unsigned refused = 0;
    memq_watcher *w = memq__watcher_start(t, NULL, secure_getenv("MEMORY_PRESSURE_WATCH"),
                                          secure_getenv("MEMORY_PRESSURE_WRITE"), &source,
                                          &refused);
    memq__lock(t);
    t->watcher = w;
    t->stats.watch_source = source;
    t->stats.watch_refused = refused;
    memq__unlock(t);
}

void memq__watcher_end(memq_tracker *t)
{
    memq__lock(t);
    memq_watcher *w = t->watcher;
    t->watcher = NULL;
    memq__unlock(t);
    memq__watcher_stop(w);
}
