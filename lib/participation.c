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

memq_tracker *memq__participation_tracker(const memq_participation *p)
{
    return memq__participation_valid(p) ? p->account->tracker : NULL;
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
static SLOW int claim_slow(memq_participation *p, size_t n, memq_time when, bool at);
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
    return claim_slow(p, n, 0, false);
}

/* The same path, and also without the lock when the data is no older than
 * the account's key in the age index (a->key_hint): then the key already
 * bounds it.  Otherwise the slow path files `when` in the index. */
int memq_claim_at(memq_participation *p, size_t n, memq_time when)
{
    if (p != NULL) {
        size_t cache = p->cache;
        if (n <= cache && atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OPEN &&
            when >= atomic_load_explicit(&p->account->key_hint, memory_order_relaxed)) {
            p->cache = cache - n;
            publish_claimed(p, load(&p->claimed) + n);
            return 0;
        }
    }
    return claim_slow(p, n, when, true);
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


/* ======================================================================
 * Refills and returns without the lock
 *
 * A refill or return through the tracker takes its lock and writes its
 * total, cache lines that every thread shares.  So while no reclamation is
 * wanted, a refill or return that changes no account's charge to or from
 * 0 takes neither: the account's and the participation's charges change
 * under the account's spin lock (which closing takes too, so a refill
 * that meets a closed gate gives up), and the total changes in the calling
 * thread's slice (total.c, which says how far from max that is allowed
 * and what it costs in precision: nothing in the total, a crossing seen
 * late by at most a slice's batch).  Once reclamation is wanted the lock
 * is taken again, for every refill and return.
 * ====================================================================== */

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
     * slices hold: the claim that crosses takes the lock, and sees it. */
    if (!memq__far_below_max(t, charge))
        return false;
    /* The total first: a close in between must not take it below what
     * is charged. */
    size_t folded = memq__slice_add(t, charge);
    memq__spin_lock(a);
    /* Open, and holding memory: no age index to see to. */
    bool ok = gate_open(p) && load(&a->charged) > 0;
    if (ok) {
        store(&a->charged, load(&a->charged) + charge);
        store(&p->charged, load(&p->charged) + charge);
        /* Not for a target of reclamation: what it frees goes back. */
        if (!p->asked)
            store(&p->cache_limit, cache_max);
    }
    memq__spin_unlock(a);
    if (!ok) {
        memq__slice_add(t, (size_t)0 - charge);
        return false;
    }
    p->cache = cache + charge - n;
    publish_claimed(p, claimed + n);
    if (folded > 0 && folded <= SIZE_MAX / 2) {
        size_t total = memq__used(t);
        size_t max = atomic_load_explicit(&t->lockfree.max, memory_order_relaxed);
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
    memq__slice_add(t, (size_t)0 - give);
    return true;
}

/*
 * The cache could not serve the claim (or memq_claim_at() must file an age
 * older than its account's key): charge the tracker for what is missing
 * plus a refill of three quarters of cache_max, so that the next claims are
 * served locally.  This is also where a claim notices that the account is
 * closed or the tracker shut down, and where crossing max is detected.
 * Every check comes before the first change: a claim that fails changes
 * nothing.
 */
static SLOW int claim_slow(memq_participation *p, size_t n, memq_time when, bool at)
{
    if (!memq__participation_valid(p))
        return MEMQ_EINVAL;
    memq_account *a = p->account;
    memq_tracker *t = a->tracker;
    if ((!at || when >= atomic_load_explicit(&a->key_hint, memory_order_relaxed)) &&
        claim_lockfree(p, n))
        return 0;
    /* The time this claim may give its account in the age index: the
     * data's own (memq_claim_at), else now, read before locking (the clock
     * is a callback).  Only a participation holding nothing or behind an
     * offer gate can need the clock: any other keeps its account charged,
     * so in the index and not set aside for holding only cache.  (0, the
     * oldest possible, if the clock was not read and the account was set
     * aside meanwhile.) */
    memq_time now = when;
    if (!at && ((load(&p->claimed) == 0 && p->cache == 0) ||
                atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OFFER))
        now = memq__clock(t);

    memq__lock(t);
    size_t claimed = load(&p->claimed);
    int rc = 0;
    if (p->freed) {
        memq__misuse_locked(t, "misuse: memq_claim on a freed participation");
        rc = MEMQ_EINVAL;
    } else if (t->shutdown)
        rc = MEMQ_ESHUTDOWN;
    else if (memq__closed(p))
        rc = MEMQ_ECLOSED;
    else if (n > SIZE_MAX - claimed - p->cache)
        rc = MEMQ_EOVERFLOW; /* also: an unlimited participation's infinite cache ran out */
    size_t charge = 0;
    if (rc == 0 && n > p->cache) {
        size_t need = n - p->cache, used = memq__used(t);
        size_t refill = t->cfg.cache_max - t->cfg.cache_max / 4;
        if (used > MEMQ_TOTAL_MAX || need > MEMQ_TOTAL_MAX - used)
            rc = MEMQ_EOVERFLOW;
        else
            charge = need + (refill > MEMQ_TOTAL_MAX - used - need ? 0 : refill);
    }
    /* The account enters the index, or returns to it if it was set aside
     * for holding only cache: data claimed now is no older than `now`.
     * (a->slot == 0 means a->charged == 0 here: refills and returns
     * without the lock never take an account's charge to or from 0.) */
    bool index = rc == 0 && n > 0 && !t->unlimited && (at || a->slot == 0 || a->dropped);
    if (index && a->slot == 0 && !memq__ages_reserve(t))
        rc = MEMQ_ENOMEM;

    bool wake = false;
    if (rc == 0) {
        if (n > 0)
            atomic_store_explicit(&p->gate, MEMQ_GATE_OPEN, memory_order_relaxed);
        if (charge > 0) {
            size_t used = memq__used(t);
            memq__used_add(t, charge);
            memq__spin_lock(a);
            store(&a->charged, load(&a->charged) + charge);
            store(&p->charged, load(&p->charged) + charge);
            store(&p->cache_limit, p->asked ? 0 : t->cfg.cache_max);
            memq__spin_unlock(a);
            p->cache += charge;
            wake = used + charge > t->cfg.max && memq__check_crossing(t, charge);
            if (t->ep.waiting) {
                /* The episode sleeps on PENDING answers because they would
                 * be enough; with more claimed, maybe no longer. */
                t->ep.waiting = false;
                memq__notify(t, 1);
            }
        }
        p->cache -= n;
        publish_claimed(p, claimed + n);
        if (index)
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

void memq__participation_ask(memq_participation *p, bool asked)
{
    memq_account *a = p->account;
    memq__spin_lock(a);
    p->asked = asked;
    store(&p->cache_limit, asked || memq__closed(p) ? 0 : a->tracker->cfg.cache_max);
    memq__spin_unlock(a);
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
        memq__participation_close(p); /* (closing forgets a pending answer) */
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
