/*
 * reclaim.c - episodes of reclamation: choosing victims oldest-data-first,
 * asking them for memory, collecting their answers, within a time budget.
 *
 * Victim selection uses the age index: a min-heap of every account holding
 * memory, kept as accounts start and stop holding it, keyed by a lower
 * bound of the time of their own participants' oldest data.  An account
 * enters with the time of the claim that made it start holding memory
 * (data claimed is no older than its claim, or memq_claim_at() says so),
 * and is re-keyed with the age it reports whenever it is asked.  To choose
 * a victim, the top is asked (one batch of callbacks, the lock dropped)
 * and re-keyed: if it stays on top, every other account's data is at
 * least as new, since their keys are lower bounds.  Otherwise the new top
 * is asked.  So nothing is built per episode, no step walks every account,
 * and the heap is never trusted without a fresh answer.  A participant
 * that claims memory and reports no data is taken as holding the oldest
 * data once asked, which is no later than the turn of the time it started
 * holding memory: it cannot hide behind newer data.  Accounts set aside
 * for the rest of an episode (the round's victim, those that gave nothing
 * back) are keyed MEMQ_TIME_MAX until their key is given back.
 *
 * A round sends the request to every participant of the victim and its
 * descendants, one callback at a time with the lock dropped.  A victim that
 * frees nothing, collapses nothing and defers nothing is refused for the
 * rest of the episode, so that an episode always ends: at low water, or
 * with nothing reclaimable left, which is logged and counted, never fatal.
 */
#include "internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Log lines are composed under the lock and emitted after it is dropped. */
typedef struct reclaim_log {
    int n;
    int level[4];
    char msg[4][256];
} reclaim_log;

static void note(reclaim_log *log, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(reclaim_log *log, int level, const char *fmt, ...)
{
    if (log->n == 4)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log->msg[log->n], sizeof log->msg[0], fmt, ap);
    va_end(ap);
    log->level[log->n++] = level;
}

static size_t used_of(const memq_tracker *t)
{
    return memq__used(t);
}

static memq_account *lookup(memq_tracker *t, uint64_t id)
{
    memq_account *a = NULL;
    HASH_FIND(hh, t->accounts, &id, sizeof id, a);
    return a;
}

/* Room for one more in a growable array of n items of `size` bytes:
 * returns the array, reallocated (doubling, from `first`) if it was full,
 * or NULL, the array left as it was, if that failed. */
static void *room_for_one(void *items, size_t n, size_t *cap, size_t size, size_t first)
{
    if (n < *cap)
        return items;
    size_t c = *cap ? *cap * 2 : first;
    void *bigger = realloc(items, c * size);
    if (bigger != NULL)
        *cap = c;
    return bigger;
}

/* ======================================================================
 * The age index: a binary min-heap on (key, id) of the accounts holding
 * memory, kept up to date as they start and stop holding it
 * ====================================================================== */

static bool before(const memq_age *x, const memq_age *y)
{
    return x->key < y->key || (x->key == y->key && x->a->id < y->a->id);
}

static void place(memq_tracker *t, size_t i, memq_age e)
{
    t->ages[i] = e;
    e.a->slot = (uint32_t)(i + 1);
}

static void sift_up(memq_tracker *t, size_t i)
{
    memq_age e = t->ages[i];
    while (i > 0 && before(&e, &t->ages[(i - 1) / 2])) {
        place(t, i, t->ages[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(t, i, e);
}

static void sift_down(memq_tracker *t, size_t i)
{
    memq_age e = t->ages[i];
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= t->ages_n)
            break;
        if (l + 1 < t->ages_n && before(&t->ages[l + 1], &t->ages[l]))
            best = l + 1;
        if (!before(&t->ages[best], &e))
            break;
        place(t, i, t->ages[best]);
        i = best;
    }
    place(t, i, e);
}

bool memq__ages_reserve(memq_tracker *t)
{
    memq_age *ages = room_for_one(t->ages, t->ages_n, &t->ages_cap, sizeof *ages, 64);
    if (ages == NULL)
        return false;
    t->ages = ages;
    return true;
}

void memq__ages_leave(memq_tracker *t, memq_account *a)
{
    if (a->slot == 0)
        return;
    size_t i = a->slot - 1;
    a->slot = 0;
    memq_age last = t->ages[--t->ages_n];
    if (i == t->ages_n)
        return;
    t->ages[i] = last;
    last.a->slot = (uint32_t)(i + 1);
    sift_up(t, i);
    sift_down(t, last.a->slot - 1);
}

/* A new key for an account in the index. */
static void ages_rekey(memq_tracker *t, memq_account *a, memq_time key)
{
    size_t i = a->slot - 1;
    memq_time old = t->ages[i].key;
    t->ages[i].key = key;
    if (key < old)
        sift_up(t, i);
    else
        sift_down(t, i);
}

static bool aside_reserve(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    memq_candidate *v = room_for_one(ep->aside, ep->aside_n, &ep->aside_cap, sizeof *v, 16);
    if (v == NULL)
        return false;
    ep->aside = v;
    return true;
}

/* Take a out of the running for the rest of the episode (key
 * MEMQ_TIME_MAX), remembering its key; aside_reserve() made room. */
static void set_aside(memq_tracker *t, memq_account *a, memq_time key)
{
    memq_episode *ep = &t->ep;
    if (a == NULL || a->slot == 0 || ep->aside_n == ep->aside_cap)
        return;
    ep->aside[ep->aside_n++] = (memq_candidate){key, a->id};
    ages_rekey(t, a, MEMQ_TIME_MAX);
}

void memq__ages_claimed(memq_tracker *t, memq_account *a, memq_time when)
{
    if (t->refreshing == a && when < t->refresh_floor)
        t->refresh_floor = when; /* for the key the batch is about to set */
    if (a->slot == 0) {
        if (t->ages_n == t->ages_cap)
            return; /* the caller reserved room; MEMQ_ENOMEM was its answer */
        t->ages[t->ages_n++] = (memq_age){when, a};
        sift_up(t, t->ages_n - 1);
    } else if (a->dropped || t->ages[a->slot - 1].key != MEMQ_TIME_MAX) {
        /* In the running, or set aside only for holding nothing. */
        if (when < t->ages[a->slot - 1].key)
            ages_rekey(t, a, when);
    } else {
        /* Set aside for the episode: lower the key it gets back. */
        for (size_t i = 0; i < t->ep.aside_n; i++)
            if (t->ep.aside[i].id == a->id && when < t->ep.aside[i].oldest)
                t->ep.aside[i].oldest = when;
    }
    a->dropped = false;
}

/* Give an account set aside its key back. */
static void restore(memq_tracker *t, memq_candidate c)
{
    memq_account *a = lookup(t, c.id);
    if (a != NULL && a->slot != 0 && t->ages[a->slot - 1].key == MEMQ_TIME_MAX) {
        ages_rekey(t, a, c.oldest);
        a->dropped = false; /* its gates stay on offer: harmless */
    }
}
/* ======================================================================
 * Snapshots of participations and callbacks
 * ====================================================================== */

static bool snapshot_add(memq_snapshot *s, memq_participation *p)
{
    memq_participation **items = room_for_one(s->items, s->n, &s->cap, sizeof *items, 16);
    if (items == NULL)
        return false;
    s->items = items;
    p->refs++;
    s->items[s->n++] = p;
    return true;
}

static void snapshot_clear(memq_snapshot *s)
{
    for (size_t i = 0; i < s->n; i++)
        memq__participation_unref(s->items[i]);
    s->n = s->next = 0;
}

static bool usable(const memq_participation *p)
{
    return !p->freed && !memq__closed(p);
}

/* Mark p as in a callback and drop the lock; callback_end() takes it back.
 * memq_participation_free() on another thread waits while the mark is on. */
static void callback_begin(memq_tracker *t, memq_participation *p)
{
    t->in_callback = p;
    memq__unlock(t);
}

static void callback_end(memq_tracker *t)
{
    memq__lock(t);
    t->in_callback = NULL;
    t->refreshing = NULL;
    if (t->callback_waiters > 0)
        pthread_cond_broadcast(&t->cond);
}

/*
 * Ask a's own participants for their oldest data and give a its fresh key
 * in the index; true, with the age in *fresh, if a holds claimed memory.
 * A participant that claims memory but reports no data is taken as holding
 * the oldest possible data.  An account holding only cache leaves the
 * index until one of its participants, present or future, claims again
 * (the gates).  The whole account is asked in one batch with the lock
 * dropped (freeing one of its participations on another thread waits for
 * the batch).
 */
static bool refresh(memq_tracker *t, memq_account *a, memq_time *fresh)
{
    memq_snapshot *s = &t->ep.scratch;
    for (memq_participation *p = a->participants; p != NULL; p = p->next)
        if (!snapshot_add(s, p))
            break;
    a->pins++; /* a outlives the batch, whatever is freed meanwhile */
    t->refreshing = a;
    t->refresh_floor = MEMQ_TIME_MAX;
    memq__unlock(t);
    memq_time min = MEMQ_TIME_MAX - 1; /* MEMQ_TIME_MAX marks "set aside" */
    bool has_data = false;
    for (size_t i = 0; i < s->n; i++) {
        memq_participation *p = s->items[i];
        if (p->freed)
            continue; /* being freed, maybe by an earlier callback */
        /* Claims first: data that shows up between the two reads must not
         * look like a claim without data (taken as the oldest). */
        bool claims = atomic_load_explicit(&p->claimed, memory_order_acquire) > 0;
        memq_time when = 0;
        bool has = p->ops->oldest(p->self, &when);
        if (p->freed)
            continue; /* it freed itself: its answer means nothing now */
        if (claims) {
            has_data = true;
            if (!has)
                when = 0; /* claims memory but shows no data: oldest */
        } else if (!has) {
            continue;
        }
        if (when < min)
            min = when;
    }
    /* No data is newer than now: an age in the future would let its
     * account skip its turn. */
    memq_time now = memq__clock(t);
    if (min > now)
        min = now;
    callback_end(t); /* clears t->refreshing */
    if (t->refresh_floor < min)
        min = t->refresh_floor; /* data claimed older than its claim meanwhile */
    bool indexed = a->slot != 0 && !t->shutdown;
    if (indexed && has_data) {
        a->oldest_seen = min;
        ages_rekey(t, a, min);
    } else if (indexed) {
        /* Cache but no claims: whatever it claims later is no older than
         * now.  Set aside, so that an episode ends when only such accounts
         * remain; its next claim (gates on offer) or the episode's end
         * puts it back in the running. */
        ages_rekey(t, a, now);
        if (aside_reserve(t)) {
            set_aside(t, a, now);
            a->dropped = true;
            for (memq_participation *p = a->participants; p != NULL; p = p->next)
                if (atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OPEN)
                    atomic_store_explicit(&p->gate, MEMQ_GATE_OFFER, memory_order_relaxed);
        }
    }
    snapshot_clear(s);
    a->pins--;
    memq__account_maybe_free(a);
    *fresh = min;
    return indexed && has_data;
}

typedef enum { SELECT_FOUND, SELECT_NONE, SELECT_BUDGET } select_result;

/* Re-checks spent at most on finding a round's older_than. */
#define RUNNER_UP_CHECKS 4

/* A call's time budget.  The first unit of work is always done, so that
 * every call makes progress however small the budget. */
typedef struct budget {
    uint64_t deadline; /* real clock */
    bool worked;
} budget;

static bool over_budget(const budget *b)
{
    return b->worked && memq__real_ns() >= b->deadline;
}

/*
 * Find the account holding the oldest data.  The index's top has the
 * lowest lower bound; if its fresh age keeps it on top, no other account's
 * data can be older.  Otherwise another account is now on top: check it.
 * Accounts set aside (key MEMQ_TIME_MAX) are not candidates.  Stops when
 * the budget is spent, or after `checks` checks.
 */
static select_result select_oldest(memq_tracker *t, memq_candidate *out, budget *b,
                                   unsigned checks)
{
    while (t->ages_n > 0 && t->ages[0].key != MEMQ_TIME_MAX) {
        if (over_budget(b) || checks-- == 0)
            return SELECT_BUDGET;
        b->worked = true;
        memq_account *a = t->ages[0].a;
        memq_time fresh;
        bool holds = refresh(t, a, &fresh);
        if (t->shutdown)
            return SELECT_NONE;
        if (holds && t->ages[0].a == a) {
            *out = (memq_candidate){fresh, a->id};
            return SELECT_FOUND;
        }
    }
    return SELECT_NONE;
}

/* ======================================================================
 * Rounds
 * ====================================================================== */

static void collect_targets(memq_account *a, void *arg)
{
    memq_tracker *t = arg;
    for (memq_participation *p = a->participants; p != NULL; p = p->next) {
        if (p->pending)
            continue; /* already working on an earlier request */
        if (!snapshot_add(&t->ep.targets, p))
            return;
        /* What it frees now goes back to the tracker, not to its cache. */
        atomic_store_explicit(&p->cache_limit, 0, memory_order_relaxed);
    }
}

static size_t targets_claimed(const memq_snapshot *s)
{
    size_t sum = 0;
    for (size_t i = 0; i < s->n; i++)
        if (usable(s->items[i]))
            sum += atomic_load_explicit(&s->items[i]->claimed, memory_order_relaxed);
    return sum;
}

/* A pressure report lowers the target of the episode it starts or joins. */
static void take_pressure(memq_tracker *t)
{
    if (t->pressure_wanted)
        t->ep.pressure = true;
    t->pressure_wanted = false;
}

/* Where the episode ends: at low water, or lower under pressure (the
 * configuration keeps pressure_low_water <= low_water).  Read afresh, so
 * that a reconfiguration takes effect at once. */
static size_t target_of(const memq_tracker *t)
{
    return t->ep.pressure ? t->cfg.pressure_low_water : t->cfg.low_water;
}

static void start_round(memq_tracker *t, memq_candidate victim, memq_time older_than)
{
    memq_episode *ep = &t->ep;
    memq_account *a = lookup(t, victim.id);
    if (a == NULL)
        return;
    size_t used = used_of(t);
    ep->request.want = used > target_of(t) ? used - target_of(t) : 0;
    ep->request.older_than = older_than;
    ep->victim = victim;
    ep->round_progress = false;
    snapshot_clear(&ep->targets);
    memq__account_walk(a, collect_targets, t);
    ep->round_claimed_before = targets_claimed(&ep->targets);
    ep->round_active = true;
    t->stats.accounts_reclaimed++;
}

/* Close p's account as collapsed (a COLLAPSING answer or a timeout).
 * Within a round the round measures what it freed; outside one (a late
 * answer, a timeout) what the account claimed is counted here. */
static void collapse(memq_tracker *t, memq_participation *p, bool measure)
{
    memq_account *a = p->account;
    if (a->closed)
        return;
    if (measure)
        for (memq_participation *q = a->participants; q != NULL; q = q->next)
            t->stats.bytes_reclaimed += atomic_load_explicit(&q->claimed, memory_order_relaxed);
    t->stats.accounts_collapsed++;
    t->ep.round_progress = true;
    memq__account_close(a);
}

static void answer(memq_tracker *t, memq_participation *p, int st, bool measure)
{
    switch (st) {
    case MEMQ_RECLAIMED_COLLAPSING:
        collapse(t, p, measure);
        break;
    case MEMQ_RECLAIMED_PARTIAL:
        t->stats.partial_reclaims++;
        break;
    default:
        memq__misuse_locked(t, "misuse: a reclaim answer was neither PARTIAL nor COLLAPSING");
        t->stats.partial_reclaims++;
        break;
    }
}

static void add_pending(memq_tracker *t, memq_participation *p, memq_time now)
{
    memq_episode *ep = &t->ep;
    memq_pending *items = room_for_one(ep->pending, ep->pending_n, &ep->pending_cap, sizeof *items, 8);
    if (items == NULL) {
        collapse(t, p, false); /* cannot wait for it: treat as timed out */
        return;
    }
    ep->pending = items;
    p->refs++;
    p->pending = 1;
    ep->pending[ep->pending_n++] =
        (memq_pending){p, now + (memq_time)t->cfg.reclaim_timeout_ms * 1000000u};
    ep->round_progress = true;
}

static void remove_pending(memq_tracker *t, size_t i)
{
    memq_episode *ep = &t->ep;
    memq_participation *p = ep->pending[i].p;
    ep->pending[i] = ep->pending[--ep->pending_n];
    p->pending = 0;
    memq__participation_unref(p);
}

void memq__episode_forget(memq_tracker *t, memq_participation *p)
{
    for (size_t i = 0; i < t->ep.pending_n; i++)
        if (t->ep.pending[i].p == p) {
            remove_pending(t, i);
            /* An episode sleeping on this answer must look again. */
            if (t->ep.waiting) {
                t->ep.waiting = false;
                memq__notify(t, 1);
            }
            return;
        }
}

/* Send the request to the next target; returns with the lock held. */
static void round_step(memq_tracker *t, memq_time *now)
{
    memq_episode *ep = &t->ep;
    memq_participation *p = ep->targets.items[ep->targets.next++];
    if (!usable(p) || p->pending)
        return;
    memq_reclaim_request req = ep->request;
    p->early_answer = MEMQ_RECLAIM_PENDING; /* none */
    callback_begin(t, p);
    int st = (int)p->ops->reclaim(p->self, &req);
    *now = memq__clock(t);
    callback_end(t);
    /* memq_reclaim_done() may come from another thread before we are back
     * under the lock: then the answer is already here. */
    if (st == MEMQ_RECLAIM_PENDING && p->early_answer != MEMQ_RECLAIM_PENDING)
        st = p->early_answer;
    if (t->shutdown)
        return;
    if (p->freed) {
        /* It freed itself from its callback; a collapse still closes its
         * account. */
        if (st == MEMQ_RECLAIMED_COLLAPSING)
            collapse(t, p, false);
        return;
    }
    if (memq__closed(p))
        return; /* its account closed meanwhile (e.g. unreffed) */
    if (st == MEMQ_RECLAIM_PENDING)
        add_pending(t, p, *now);
    else
        answer(t, p, st, false);
}

static void round_finish(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    size_t after = targets_claimed(&ep->targets);
    if (after < ep->round_claimed_before) {
        t->stats.bytes_reclaimed += ep->round_claimed_before - after;
        ep->round_progress = true;
    }
    /* A victim that gave something back may hold more old data: it is a
     * candidate again.  One that gave nothing stays aside. */
    for (size_t i = ep->aside_n; ep->round_progress && i-- > 0;)
        if (ep->aside[i].id == ep->victim.id) {
            memq_candidate c = ep->aside[i];
            ep->aside[i] = ep->aside[--ep->aside_n];
            restore(t, c);
            break;
        }
    snapshot_clear(&ep->targets);
    ep->round_active = false;
}

/* ======================================================================
 * Episodes
 * ====================================================================== */

void memq__episode_clear(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    snapshot_clear(&ep->targets);
    snapshot_clear(&ep->scratch);
    while (ep->pending_n > 0)
        remove_pending(t, ep->pending_n - 1);
    ep->aside_n = 0;
    ep->round_active = false;
    ep->active = false;
}

static void episode_start(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    ep->active = true;
    ep->pressure = false;
    take_pressure(t);
    memq__lockfree_update(t);
    ep->start_ns = t->wanted ? t->crossed_ns : memq__real_ns();
    t->stats.episodes++;
    if (!t->wanted) {
        t->wanted = true;
        memq__notify(t, 1);
    }
}

static void episode_end(memq_tracker *t, bool reached, reclaim_log *log)
{
    memq_episode *ep = &t->ep;
    uint64_t ns = memq__real_ns() - ep->start_ns;
    if (ns > t->stats.episode_ns_max)
        t->stats.episode_ns_max = ns;
    if (reached) {
        note(log, MEMQ_LOG_INFO, "reclamation reached its target: used %zu <= %zu in %" PRIu64 " us",
             used_of(t), target_of(t), ns / 1000);
    } else {
        t->stats.unreclaimable_events++;
        size_t used = used_of(t), step = (t->cfg.max - t->cfg.low_water) / 4;
        t->retry_above = used > SIZE_MAX - step ? SIZE_MAX : used + step;
        note(log, MEMQ_LOG_WARN,
             "reclamation stopped with nothing reclaimable left: used %zu, target %zu, max "
             "%zu; retrying at the next crossing or after growth of a quarter of the band",
             used_of(t), target_of(t), t->cfg.max);
    }
    for (size_t i = 0; i < ep->aside_n; i++)
        restore(t, ep->aside[i]);
    memq__episode_clear(t);
    t->wanted = false;
    memq__lockfree_update(t);
    memq__notify(t, 0);
}

memq_time memq__episode_next_deadline(const memq_tracker *t)
{
    memq_time d = MEMQ_TIME_MAX;
    for (size_t i = 0; i < t->ep.pending_n; i++)
        if (t->ep.pending[i].deadline < d)
            d = t->ep.pending[i].deadline;
    return d;
}

static void expire_pending(memq_tracker *t, memq_time now, reclaim_log *log)
{
    memq_episode *ep = &t->ep;
    for (size_t i = 0; i < ep->pending_n;) {
        if (ep->pending[i].deadline > now) {
            i++;
            continue;
        }
        memq_participation *p = ep->pending[i].p;
        t->stats.callback_timeouts++;
        note(log, MEMQ_LOG_WARN, "reclaim answer of account %" PRIu64 " timed out after %u ms",
             p->account->id, t->cfg.reclaim_timeout_ms);
        /* Hold p: closing its account forgets the pending entry. */
        p->refs++;
        remove_pending(t, i);
        collapse(t, p, true);
        memq__participation_unref(p);
        /* Closing the account forgot its other pending entries, moving
         * later ones into places already passed: look again from the
         * start. */
        i = 0;
    }
}

/* What the pending answers will give back if they collapse. */
static size_t pending_usage(const memq_tracker *t)
{
    size_t sum = 0;
    for (size_t i = 0; i < t->ep.pending_n; i++)
        sum += t->ep.pending[i].p->charged;
    return sum;
}

/* Wait for PENDING answers: readable again at the earliest deadline (or
 * when an answer arrives, see memq_reclaim_done). */
static int wait_pending(memq_tracker *t, memq_time now)
{
    memq_time d = memq__episode_next_deadline(t);
    memq__notify(t, d > now ? (int64_t)(d - now) : 1);
    t->ep.waiting = true;
    return MEMQ_EAGAIN;
}

/* The episode state machine, under the lock; may drop it around
 * callbacks. */
static int run(memq_tracker *t, budget *b, reclaim_log *log)
{
    memq_episode *ep = &t->ep;
    memq__unlock(t);
    memq_time now = memq__clock(t);
    memq__lock(t);
    for (;;) {
        if (t->shutdown) {
            memq__episode_clear(t);
            return MEMQ_ESHUTDOWN;
        }
        expire_pending(t, now, log);
        if (ep->active)
            take_pressure(t);
        if (!ep->active) {
            if (used_of(t) <= t->cfg.max && !t->pressure_wanted) {
                t->wanted = false;
                memq__lockfree_update(t);
                memq__notify(t, 0);
                return 0;
            }
            episode_start(t);
        }
        if (ep->round_active) {
            if (over_budget(b))
                return MEMQ_EAGAIN;
            b->worked = true;
            if (ep->targets.next < ep->targets.n)
                round_step(t, &now);
            else
                round_finish(t);
            continue;
        }
        size_t used = used_of(t);
        if (used <= target_of(t)) {
            episode_end(t, true, log);
            return 0;
        }
        if (ep->pending_n > 0 && used - pending_usage(t) <= target_of(t))
            return wait_pending(t, now);
        memq_candidate victim, next;
        select_result r = select_oldest(t, &victim, b, UINT_MAX);
        if (r == SELECT_BUDGET)
            return MEMQ_EAGAIN;
        if (r == SELECT_NONE) {
            if (t->shutdown)
                continue;
            if (ep->pending_n > 0)
                return wait_pending(t, now);
            episode_end(t, false, log);
            return 0;
        }
        /* The victim sits its round out (aside), and the runner-up's age
         * becomes older_than.  Found in the same call, whatever the budget,
         * so that the victim is acted on while its age is fresh; but after
         * a few checks the next key, a lower bound, is taken as it is (no
         * older than the victim's age). */
        if (!aside_reserve(t))
            return MEMQ_ENOMEM;
        set_aside(t, lookup(t, victim.id), victim.oldest);
        memq_time older_than = MEMQ_TIME_MAX;
        budget unbounded = {UINT64_MAX, true};
        r = select_oldest(t, &next, &unbounded, RUNNER_UP_CHECKS);
        if (r == SELECT_FOUND)
            older_than = next.oldest;
        else if (r == SELECT_BUDGET)
            older_than = t->ages[0].key > victim.oldest ? t->ages[0].key : victim.oldest;
        if (!t->shutdown)
            start_round(t, victim, older_than);
    }
}

int memq_tracker_reclaim(memq_tracker *t)
{
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    uint64_t start = memq__real_ns();
    memq__lock(t);
    if (t->shutdown) {
        memq__unlock(t);
        return MEMQ_ESHUTDOWN;
    }
    if (t->reclaiming) {
        memq__unlock(t);
        return MEMQ_EAGAIN;
    }
    t->reclaiming = true;
    t->reclaimer = pthread_self();
    t->refs++; /* our own: a callback may free the tracker */
    t->ep.waiting = false;
    reclaim_log log = {0};
    budget b = {start + (uint64_t)t->cfg.reclaim_budget_us * 1000u, false};
    int rc = run(t, &b, &log);
    t->reclaiming = false;
    /* Work remains now (not only at a deadline): stay readable. */
    if (rc == MEMQ_EAGAIN && !t->ep.waiting && !t->shutdown)
        memq__notify(t, 1);
    t->stats.reclaim_ns_total += memq__real_ns() - start;
    if (t->misuse_note != NULL) {
        note(&log, MEMQ_LOG_WARN, "%s", t->misuse_note);
        t->misuse_note = NULL;
    }
    void (*fn)(void *, int, const char *) = t->cfg.log;
    void *ctx = t->cfg.log_ctx;
    t->refs--;
    memq__unlock(t);
    for (int i = 0; i < log.n && fn != NULL; i++)
        fn(ctx, log.level[i], log.msg[i]);
    return rc;
}

void memq_reclaim_done(memq_participation *p, memq_reclaim_status st)
{
    if (!memq__participation_valid(p))
        return;
    memq_tracker *t = p->account->tracker;
    /* Only PARTIAL and COLLAPSING complete an answer; -1 stands for the
     * rest, counted as misuse and taken as PARTIAL. */
    int answer_st = st == MEMQ_RECLAIMED_PARTIAL || st == MEMQ_RECLAIMED_COLLAPSING ? (int)st : -1;
    memq__lock(t);
    if (!p->freed && p->pending) {
        memq__episode_forget(t, p);
        answer(t, p, answer_st, true);
        t->ep.waiting = false;
        memq__notify(t, 1);
        pthread_cond_broadcast(&t->cond);
    } else if (!p->freed && t->in_callback == p) {
        p->early_answer = (signed char)answer_st;
    }
    memq__unlock_log(t);
}

/* ======================================================================
 * Thread mode
 * ====================================================================== */

void *memq__reclaim_thread(void *arg)
{
    memq_tracker *t = arg;
    memq__lock(t);
    while (!t->shutdown) {
        if (!t->wanted && !t->ep.active) {
            pthread_cond_wait(&t->cond, &t->lock);
            continue;
        }
        memq__unlock(t);
        int rc = memq_tracker_reclaim(t);
        memq__lock(t);
        if (rc == MEMQ_EAGAIN && (t->ep.waiting || t->reclaiming)) {
            /* Waiting for answers (memq_reclaim_done signals), for their
             * deadlines, which are in the configured clock's time, or for
             * another thread's reclaim call: poll. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 10 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        } else if (rc == MEMQ_ENOMEM) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec++;
            pthread_cond_timedwait(&t->cond, &t->lock, &ts);
        }
    }
    t->refs--;
    memq__unlock(t);
    return NULL;
}
