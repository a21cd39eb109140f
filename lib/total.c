/*
 * total.c - the counted total: the shared sum, the threads' slices of it,
 * the peak, and the slack that belongs to no account.
 *
 * Invariant (exact whenever nothing is in flight):
 *
 *     used + sum(slices)  ==  sum(charged of every open participation)
 *                             + slack
 *
 * where a participation's charge is its claim plus its cache, and slack is
 * what the rooms beside the core count without an account (a chunk pool's
 * free space, core.h).  The sum is taken modulo 2^64: a slice goes below 0
 * when its thread returns more than it refilled since the last fold.
 *
 * Why slices.  A refill or return through the tracker writes `used`, a
 * cache line every thread shares.  While no reclamation is wanted, the
 * refills and returns that change no account's charge to or from 0 go
 * without the tracker's lock (participation.c) and add to the calling
 * thread's slice instead, one of MEMQ_SLICES counters on lines of their
 * own.  A slice folds into `used` only when it drifts beyond +-batch, and
 * only then is the new total compared with max.  A refill takes that path
 * only while `used` is far enough below max that no slice holding at most
 * batch can hide a crossing: every slice holds at most batch between
 * folds, and when batch is lowered (a reconfiguration, an episode) the
 * slices are folded at once so that this stays true.  So a crossing is
 * seen by the claim that makes it, or at the latest by the next fold:
 * late by at most batch per slice in use.  The total and the over-count
 * bound stay exact.
 *
 * The peak is raised whenever a total is computed: at every refill and
 * return through the lock, and at folds; so a short peak more than a
 * sixteenth of max - low_water below max can be missed by up to that.
 */
#include "internal.h"

/* ======================================================================
 * Reading the total
 * ====================================================================== */

/* Whether x, a sum modulo 2^64, stands for a negative number. */
static bool negative(size_t x)
{
    return x > SIZE_MAX / 2;
}

/*
 * Exact when nothing changes meanwhile.  Otherwise the parts are read at
 * slightly different times: a charge added to a slice and then forgotten
 * by a close on used, or a fold, can be seen half done, by the size of one
 * refill or fold at most.  A sum that comes out below 0 that way is 0.
 */
size_t memq__used(const memq_tracker *t)
{
    size_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    if (!atomic_load_explicit(&t->lockfree.counted, memory_order_relaxed))
        return used; /* never on: the slices are all 0 */
    for (size_t i = 0; i < MEMQ_SLICES; i++)
        used += atomic_load_explicit(&t->lockfree.slices[i].bytes, memory_order_relaxed);
    return negative(used) ? 0 : used;
}

/* ======================================================================
 * Slices
 * ====================================================================== */

/* Move everything the slices hold into used.  The exchange and the add
 * are two steps, but the sum stays exact throughout: a thread folding its
 * own slice meanwhile adds to used what it then takes from the slice. */
static void fold_all(memq_tracker *t)
{
    for (size_t i = 0; i < MEMQ_SLICES; i++) {
        size_t v = atomic_exchange_explicit(&t->lockfree.slices[i].bytes, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->used, v, memory_order_relaxed);
    }
}

void memq__lockfree_update(memq_tracker *t)
{
    size_t band = t->cfg.max - t->cfg.low_water, batch = band / 256;
    if (batch > 256 * 1024)
        batch = 256 * 1024;
    if (t->unlimited || t->lockfree.slices == NULL || batch < t->cfg.cache_max ||
        t->cfg.cache_max == 0)
        batch = 0;
    /* Once on, readers sum the slices from then on (they may hold bytes
     * after batch goes back to 0). */
    if (batch > 0)
        atomic_store(&t->lockfree.counted, true);
    size_t old = atomic_load(&t->lockfree.batch);
    atomic_store(&t->lockfree.max, t->cfg.max);
    atomic_store(&t->lockfree.cache_max, t->cfg.cache_max);
    atomic_store(&t->lockfree.batch, batch);
    bool off = batch == 0 || t->shutdown || t->wanted || t->ep.active;
    atomic_store(&t->lockfree.off, off);
    /* The reach of a refill without the lock assumes every slice holds at
     * most batch: a smaller batch must not inherit larger slices. */
    if (batch < old && atomic_load(&t->lockfree.counted))
        fold_all(t);
}

_Atomic unsigned memq__next_slice;
_Thread_local unsigned memq__my_slice;
unsigned memq__pick_slice(void)
{
    memq__my_slice = 1 + atomic_fetch_add_explicit(&memq__next_slice, 1, memory_order_relaxed) % MEMQ_SLICES;
    return memq__my_slice;
}

/* ======================================================================
 * Slack: what the rooms beside the core count without an account
 * ====================================================================== */

void memq__slack_add(memq_tracker *t, size_t n)
{
    if (t->unlimited || n == 0)
        return;
    atomic_fetch_add_explicit(&t->slack, n, memory_order_relaxed);
    memq__used_add(t, n);
    if (memq__used(t) <= atomic_load_explicit(&t->lockfree.max, memory_order_relaxed))
        return;
    memq__lock(t);
    bool wake = memq__check_crossing(t, n);
    void (*wakeup)(void *) = t->cfg.wakeup;
    void *ctx = t->cfg.wakeup_ctx;
    memq__unlock(t);
    if (wake)
        wakeup(ctx);
}

void memq__slack_sub(memq_tracker *t, size_t n)
{
    if (t->unlimited || n == 0)
        return;
    size_t slack = atomic_load_explicit(&t->slack, memory_order_relaxed);
    bool misuse = false;
    size_t take;
    do {
        take = n > slack ? slack : n;
        misuse = n > slack;
    } while (!atomic_compare_exchange_weak_explicit(&t->slack, &slack, slack - take,
                                                    memory_order_relaxed, memory_order_relaxed));
    memq__used_sub(t, take);
    if (misuse)
        memq__misuse(t, "misuse: more slack given back than was counted");
}
