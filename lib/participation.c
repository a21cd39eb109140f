/*
 * participation.c - participations: registration, the claim/release fast
 * path with its local cache, and unregistration.
 *
 * The cache is the approximation this library accepts, as Linux's memcg
 * charge stock and Arti's tor-memquota do: each participation holds up to
 * cache_max bytes charged to the tracker but not yet claimed, so most claims
 * and releases touch only the participation.  The tracker's total therefore
 * over-counts by at most cache_max per participation (never under-counts).
 * A participation starts with an empty cache, so one that never claimed
 * costs nothing; one that claimed keeps up to cache_max while idle.
 *
 * Besides its cache the claim fast path reads one byte, the gate: open,
 * closed (the account closed: claims fail), or offer (an episode found the
 * account holding only cache: the next claim goes the slow way and makes
 * it a candidate again).  Releases read no gate: after closing, the slow
 * path they eventually take drops what they return.
 *
 * Invariant, under the tracker lock, for an open participation:
 *     charged == claimed + cache
 * and the tracker's used is the sum of every open participation's charged.
 * Closing forgets charged; claimed keeps the owner's own count.
 *
 * An unlimited tracker uses the same path with an infinite cache:
 * cache == SIZE_MAX - claimed, so claims and releases never leave the fast
 * path and nothing is charged.
 */
#include "internal.h"

#include <stdlib.h>

bool memq__participation_valid(const memq_participation *p)
{
    return p != NULL && p->magic == MEMQ_MAGIC_PARTICIPATION;
}

static size_t load(const _Atomic size_t *x)
{
    return atomic_load_explicit(x, memory_order_relaxed);
}

static void store(_Atomic size_t *x, size_t v)
{
    atomic_store_explicit(x, v, memory_order_relaxed);
}

/* A claim is published with release order, so that a reclaimer that sees
 * it (acquire) also sees whatever the participant wrote before claiming,
 * such as the stamp its oldest callback reports.  A plain store on x86. */
static void publish_claimed(memq_participation *p, size_t v)
{
    atomic_store_explicit(&p->claimed, v, memory_order_release);
}

/* ======================================================================
 * Registration
 * ====================================================================== */

int memq_participant_register(memq_account *a, const memq_participant_ops *ops, void *self,
                              memq_participation **out)
{
    if (!memq__account_valid(a) || ops == NULL || ops->oldest == NULL || ops->reclaim == NULL ||
        out == NULL)
        return MEMQ_EINVAL;
    memq_participation *p = calloc(1, sizeof *p);
    if (p == NULL)
        return MEMQ_ENOMEM;
    p->magic = MEMQ_MAGIC_PARTICIPATION;
    p->ops = ops;
    p->self = self;
    p->account = a;
    p->refs = 1;

    memq_tracker *t = a->tracker;
    int rc = 0;
    memq__lock(t);
    if (t->shutdown)
        rc = MEMQ_ESHUTDOWN;
    else if (a->closed)
        rc = MEMQ_ECLOSED;
    if (rc == 0) {
        p->cache = t->unlimited ? SIZE_MAX : 0;
        atomic_store_explicit(&p->gate, a->dropped ? MEMQ_GATE_OFFER : MEMQ_GATE_OPEN,
                              memory_order_relaxed);
        store(&p->cache_limit, t->unlimited ? SIZE_MAX : t->cfg.cache_max);
        p->next = a->participants;
        if (p->next != NULL)
            p->next->prev = p;
        a->participants = p;
        a->pins++;
        t->nparticipants++;
    }
    memq__unlock(t);
    if (rc != 0) {
        p->magic = MEMQ_MAGIC_DEAD;
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ======================================================================
 * Claims and releases
 * ====================================================================== */

/* Kept out of line so that the fast paths stay leaf functions that save
 * no registers. */
#define SLOW __attribute__((noinline, cold))
static SLOW int claim_slow(memq_participation *p, size_t n);
static SLOW void release_slow(memq_participation *p, size_t n);

int memq_claim(memq_participation *p, size_t n)
{
    if (p != NULL) {
        size_t cache = p->cache;
        if (n <= cache && atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OPEN) {
            p->cache = cache - n;
            publish_claimed(p, load(&p->claimed) + n);
            return 0;
        }
    }
    return claim_slow(p, n);
}

void memq_release(memq_participation *p, size_t n)
{
    if (p != NULL) {
        size_t claimed = load(&p->claimed);
        size_t cache = p->cache;
        /* No overflow: cache + claimed <= SIZE_MAX and n <= claimed. */
        if (n <= claimed && cache + n <= load(&p->cache_limit)) {
            p->cache = cache + n;
            store(&p->claimed, claimed - n);
            return;
        }
    }
    release_slow(p, n);
}

int memq_claim_at(memq_participation *p, size_t n, memq_time when)
{
    int rc = memq_claim(p, n);
    if (rc != 0 || n == 0)
        return rc;
    memq_tracker *t = p->account->tracker;
    memq__lock(t);
    memq__ages_claimed(t, p->account, when);
    memq__unlock(t);
    return 0;
}

/* ======================================================================
 * Refills and returns without the lock
 *
 * A refill or return through the tracker takes its lock and writes its
 * total, cache lines that every thread shares.  So while no reclamation is
 * wanted, a refill or return that changes no account's charge to or from
 * 0 takes neither: the account's and the participation's charges change
 * under the account's spin lock (which closing takes too, so a refill
 * that meets a closed gate gives up), and the total changes in the calling
 * thread's slice.  The total is used plus the slices, exact whenever it
 * is read; a slice folds into used only when it drifts beyond +-batch,
 * and only then is the new total compared with max.  A crossing may
 * therefore be seen late, by at most batch per slice in use (batch is a
 * 256th of the hysteresis band, at most 256 KiB; MEMQ_SLICES slices);
 * nothing else changes: the total and the over-count bound are exact.
 * Once reclamation is wanted the lock is taken again, for every refill
 * and return.
 * ====================================================================== */

static _Atomic unsigned next_slice;
/* initial-exec: a plain %fs-relative load, not a __tls_get_addr call. */
static _Thread_local unsigned my_slice __attribute__((tls_model("initial-exec"))); /* 1 + index */

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
    atomic_store(&t->lockfree.max, t->cfg.max);
    atomic_store(&t->lockfree.cache_max, t->cfg.cache_max);
    atomic_store(&t->lockfree.batch, batch);
    atomic_store(&t->lockfree.off, batch == 0 || t->shutdown || t->wanted || t->ep.active);
}

/* Add delta (modulo 2^64) to this thread's slice; fold it into used if it
 * drifted beyond +-batch.  Returns what it folded (modulo 2^64), or 0. */
static size_t slice_add(memq_tracker *t, size_t delta)
{
    if (my_slice == 0)
        my_slice = 1 + atomic_fetch_add_explicit(&next_slice, 1, memory_order_relaxed) % MEMQ_SLICES;
    memq_slice *s = &t->lockfree.slices[my_slice - 1];
    size_t v = atomic_fetch_add_explicit(&s->bytes, delta, memory_order_relaxed) + delta;
    size_t batch = atomic_load_explicit(&t->lockfree.batch, memory_order_relaxed);
    if (v <= batch || v >= (size_t)0 - batch)
        return 0;
    atomic_fetch_add_explicit(&t->used, v, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->bytes, v, memory_order_relaxed);
    return v;
}

static bool gate_open(const memq_participation *p)
{
    return atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OPEN;
}

/* The claim the cache could not serve, without the lock: true if done. */
static bool claim_lockfree(memq_participation *p, size_t n)
{
    memq_account *a = p->account;
    memq_tracker *t = a->tracker;
    if (atomic_load_explicit(&t->lockfree.off, memory_order_relaxed) || !gate_open(p))
        return false;
    size_t cache_max = atomic_load_explicit(&t->lockfree.cache_max, memory_order_relaxed);
    size_t claimed = load(&p->claimed), cache = p->cache;
    if (n <= cache || n > SIZE_MAX / 4 || claimed > SIZE_MAX / 4 || load(&a->charged) == 0)
        return false;
    size_t charge = n - cache + (cache_max - cache_max / 4);
    /* Only far enough below max that this cannot cross it, whatever the
     * slices hold (at most batch each, until they fold): the claim that
     * crosses takes the lock, and sees it at once. */
    size_t max = atomic_load_explicit(&t->lockfree.max, memory_order_relaxed);
    size_t reach = MEMQ_SLICES * atomic_load_explicit(&t->lockfree.batch, memory_order_relaxed) + charge;
    /* (used alone goes below 0 when closes forget charges still in slices.) */
    size_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    if (max < reach || (!negative(used) && used > max - reach))
        return false;
    /* The total first: a close in between must not take it below what
     * is charged. */
    size_t folded = slice_add(t, charge);
    memq__spin_lock(a);
    /* Open, and holding memory: no age index to see to. */
    bool ok = gate_open(p) && load(&a->charged) > 0;
    if (ok) {
        store(&a->charged, load(&a->charged) + charge);
        store(&p->charged, load(&p->charged) + charge);
    }
    memq__spin_unlock(a);
    if (!ok) {
        slice_add(t, (size_t)0 - charge);
        return false;
    }
    p->cache = cache + charge - n;
    store(&p->cache_limit, cache_max);
    publish_claimed(p, claimed + n);
    if (folded > 0 && !negative(folded)) {
        size_t total = memq__used(t);
        memq__peak(t, total);
        if (total > max) {
            memq__lock(t);
            bool wake = memq__check_crossing(t, folded);
            void (*wakeup)(void *) = t->cfg.wakeup;
            void *ctx = t->cfg.wakeup_ctx;
            memq__unlock(t);
            if (wake)
                wakeup(ctx);
        }
    }
    return true;
}

/* The release the cache could not keep, without the lock: true if done. */
static bool release_lockfree(memq_participation *p, size_t n)
{
    memq_account *a = p->account;
    memq_tracker *t = a->tracker;
    if (atomic_load_explicit(&t->lockfree.off, memory_order_relaxed) || !gate_open(p))
        return false;
    size_t cache_max = atomic_load_explicit(&t->lockfree.cache_max, memory_order_relaxed);
    size_t claimed = load(&p->claimed), cache = p->cache;
    /* Not while asked to reclaim (limit 0) or after a reconfiguration. */
    if (n > claimed || load(&p->cache_limit) != cache_max || cache + n <= cache_max)
        return false;
    size_t keep = cache_max / 4, give = cache + n - keep;
    memq__spin_lock(a);
    /* Open, and still holding memory after: no age index to see to. */
    bool ok = gate_open(p) && load(&a->charged) > give;
    if (ok) {
        store(&a->charged, load(&a->charged) - give);
        store(&p->charged, load(&p->charged) - give);
    }
    memq__spin_unlock(a);
    if (!ok)
        return false;
    store(&p->claimed, claimed - n);
    p->cache = keep;
    slice_add(t, (size_t)0 - give);
    return true;
}

/*
 * The cache could not serve the claim: charge the tracker for what is
 * missing plus a refill of three quarters of cache_max, so that the next
 * claims are served locally.  This is also where a claim notices that the
 * account is closed or the tracker shut down, and where crossing max is
 * detected.
 */
static SLOW int claim_slow(memq_participation *p, size_t n)
{
    if (!memq__participation_valid(p))
        return MEMQ_EINVAL;
    if (claim_lockfree(p, n))
        return 0;
    memq_account *a = p->account;
    memq_tracker *t = a->tracker;
    int rc = 0;
    bool wake = false;
    /* The time this claim may give its account in the age index (read
     * before locking: the clock is a callback).  Only a participation
     * holding nothing or behind an offer gate can need it: any other keeps
     * its account charged, so in the index and not dropped. */
    memq_time now = 0;
    if ((load(&p->claimed) == 0 && p->cache == 0) ||
        atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OFFER)
        now = memq__clock(t);

    memq__lock(t);
    size_t claimed = load(&p->claimed);
    if (p->freed) {
        memq__misuse_locked(t, "misuse: memq_claim on a freed participation");
        rc = MEMQ_EINVAL;
    }
    else if (t->shutdown)
        rc = MEMQ_ESHUTDOWN;
    else if (memq__closed(p))
        rc = MEMQ_ECLOSED;
    else if (n > SIZE_MAX - claimed - p->cache)
        rc = MEMQ_EOVERFLOW; /* also: an unlimited participation's infinite cache ran out */
    /* Data claimed now is no older than now: a lower bound for the index,
     * which the account enters, or returns to if it was dropped.  (0, the
     * oldest possible, if the clock was not read.) */
    bool enter = rc == 0 && n > 0 && !t->unlimited && (a->slot == 0 || a->dropped);
    /* (a->slot == 0 means a->charged == 0 here: refills and returns
     * without the lock never take an account's charge to or from 0.) */
    if (enter && a->slot == 0 && !memq__ages_reserve(t))
        rc = MEMQ_ENOMEM;
    if (rc == 0 && n > 0)
        atomic_store_explicit(&p->gate, MEMQ_GATE_OPEN, memory_order_relaxed);
    if (rc == 0 && n > p->cache) {
        size_t need = n - p->cache;
        size_t refill = t->cfg.cache_max - t->cfg.cache_max / 4;
        size_t used = memq__used(t);
        if (need > SIZE_MAX - used)
            rc = MEMQ_EOVERFLOW;
        else {
            if (refill > SIZE_MAX - used - need)
                refill = 0;
            size_t charge = need + refill;
            memq__used_add(t, charge);
            memq__spin_lock(a);
            store(&a->charged, load(&a->charged) + charge);
            store(&p->charged, load(&p->charged) + charge);
            memq__spin_unlock(a);
            p->cache += charge;
            store(&p->cache_limit, t->cfg.cache_max);
            wake = used + charge > t->cfg.max && memq__check_crossing(t, charge);
            if (t->ep.waiting) {
                /* The episode sleeps on PENDING answers because they would
                 * be enough; with more claimed, maybe no longer. */
                t->ep.waiting = false;
                memq__notify(t, 1);
            }
        }
    }
    if (rc == 0) {
        p->cache -= n;
        publish_claimed(p, claimed + n);
        if (enter)
            memq__ages_claimed(t, a, now);
    }
    void (*wakeup)(void *) = t->cfg.wakeup;
    void *ctx = t->cfg.wakeup_ctx;
    memq__unlock_log(t);
    if (wake)
        wakeup(ctx);
    return rc;
}

/*
 * Either the release exceeds the claim (clamped, counted as misuse, as
 * Linux clamps an uncharge underflow), or the cache would exceed its limit:
 * then all but a quarter of cache_max goes back to the tracker, all of it
 * while the participation is being reclaimed (limit 0).
 */
static SLOW void release_slow(memq_participation *p, size_t n)
{
    if (!memq__participation_valid(p))
        return;
    if (release_lockfree(p, n))
        return;
    memq_account *a = p->account;
    memq_tracker *t = a->tracker;
    memq__lock(t);
    if (p->freed) {
        memq__misuse_locked(t, "misuse: memq_release on a freed participation");
    } else {
        size_t claimed = load(&p->claimed);
        if (n > claimed) {
            memq__misuse_locked(t, "misuse: memq_release of more than was claimed");
            n = claimed;
        }
        store(&p->claimed, claimed - n);
        if (memq__closed(p)) {
            p->cache = 0; /* its charge was forgotten when it closed */
        } else {
            size_t cache = p->cache + n;
            size_t limit = load(&p->cache_limit);
            if (cache > limit) {
                size_t keep = t->cfg.cache_max / 4;
                if (keep > limit)
                    keep = limit;
                size_t give = cache - keep;
                memq__used_sub(t, give);
                memq__spin_lock(a);
                store(&a->charged, load(&a->charged) - give);
                store(&p->charged, load(&p->charged) - give);
                memq__spin_unlock(a);
                if (load(&a->charged) == 0)
                    memq__ages_leave(t, a);
                cache = keep;
            }
            p->cache = cache;
        }
    }
    memq__unlock_log(t);
}

/* ======================================================================
 * Closing and freeing
 * ====================================================================== */

void memq__participation_close(memq_participation *p)
{
    memq_account *a = p->account;
    memq__spin_lock(a);
    size_t charged = load(&p->charged);
    store(&a->charged, load(&a->charged) - charged);
    store(&p->charged, 0);
    atomic_store_explicit(&p->gate, MEMQ_GATE_CLOSED, memory_order_relaxed);
    memq__spin_unlock(a);
    memq__used_sub(a->tracker, charged);
    if (load(&a->charged) == 0)
        memq__ages_leave(a->tracker, a);
    store(&p->cache_limit, 0);
    if (p->pending)
        memq__episode_forget(a->tracker, p);
}

void memq__participation_unref(memq_participation *p)
{
    if (--p->refs > 0)
        return;
    memq_account *a = p->account;
    p->magic = MEMQ_MAGIC_DEAD;
    free(p);
    a->pins--;
    memq__account_maybe_free(a);
}

void memq_participation_free(memq_participation *p)
{
    if (!memq__participation_valid(p))
        return;
    memq_account *a = p->account;
    memq_tracker *t = a->tracker;
    memq__lock(t);
    /* A callback of p running on another thread finishes first, before
     * anything it may use changes; one running on this thread is our
     * caller, and the reclaimer's reference keeps p alive until it
     * returns. */
    while ((t->in_callback == p || t->refreshing == a) &&
           !pthread_equal(t->reclaimer, pthread_self())) {
        t->callback_waiters++;
        pthread_cond_wait(&t->cond, &t->lock);
        t->callback_waiters--;
    }
    if (p->freed) {
        memq__misuse_locked(t, "misuse: memq_participation_free called twice");
        memq__unlock_log(t);
        return;
    }
    p->freed = 1; /* no callback starts from now on */
    if (!memq__closed(p))
        memq__participation_close(p);
    else if (p->pending)
        memq__episode_forget(t, p);
    p->cache = 0;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        a->participants = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    t->nparticipants--;
    memq__participation_unref(p);
    memq__unlock(t);
}

size_t memq_participation_claimed(const memq_participation *p)
{
    if (!memq__participation_valid(p) || memq__closed(p))
        return 0;
    return load(&p->claimed);
}
