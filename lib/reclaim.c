/*
 * reclaim.c - episodes of reclamation: choosing victims oldest-data-first,
 * asking them for memory, collecting their answers, within a time budget.
 *
 * Victim selection uses a lazy min-heap of accounts keyed by the time of
 * their own participants' oldest data, one entry per account.  An episode
 * starts by listing every account that holds memory, in O(accounts) and
 * calling no user code, then sweeps the list: each account's participants
 * are asked for their oldest data, one batch per account with the lock
 * dropped, and the list is heapified by those ages.  Popping an entry
 * asks again: the entry is the victim only if its fresh age is still no
 * newer than the next key in the heap, since every other account's data
 * is then at least as new; otherwise it goes back with its fresh key.  So
 * the heap is never stale, nothing reported in an earlier episode is
 * trusted, and a participant cannot hide by claiming late or lying.
 * Accounts that start holding memory during an episode join the heap as
 * unknown (key 0, looked at first).  The sweep and the checks are small
 * steps, which is what lets a time budget cut an episode into calls.
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
    return atomic_load_explicit(&t->used, memory_order_relaxed);
}

static memq_account *lookup(memq_tracker *t, uint64_t id)
{
    memq_account *a = NULL;
    HASH_FIND(hh, t->accounts, &id, sizeof id, a);
    return a;
}

/* ======================================================================
 * The candidate heap: a binary min-heap on (oldest, id)
 * ====================================================================== */

static bool before(const memq_candidate *x, const memq_candidate *y)
{
    return x->oldest < y->oldest || (x->oldest == y->oldest && x->id < y->id);
}

static void sift_down(memq_candidate *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        if (l < n && before(&h[l], &h[best]))
            best = l;
        if (l + 1 < n && before(&h[l + 1], &h[best]))
            best = l + 1;
        if (best == i)
            return;
        memq_candidate tmp = h[i];
        h[i] = h[best];
        h[best] = tmp;
        i = best;
    }
}

/* Append without ordering (the array while it is swept). */
static bool array_push(memq_episode *ep, memq_candidate c)
{
    if (ep->heap_n == ep->heap_cap) {
        size_t cap = ep->heap_cap ? ep->heap_cap * 2 : 64;
        memq_candidate *h = realloc(ep->heap, cap * sizeof *h);
        if (h == NULL)
            return false;
        ep->heap = h;
        ep->heap_cap = cap;
    }
    ep->heap[ep->heap_n++] = c;
    return true;
}

static bool heap_push(memq_episode *ep, memq_candidate c)
{
    if (!array_push(ep, c))
        return false;
    for (size_t i = ep->heap_n - 1; i > 0 && before(&ep->heap[i], &ep->heap[(i - 1) / 2]);) {
        memq_candidate tmp = ep->heap[i];
        ep->heap[i] = ep->heap[(i - 1) / 2];
        ep->heap[(i - 1) / 2] = tmp;
        i = (i - 1) / 2;
    }
    return true;
}

static memq_candidate heap_pop(memq_episode *ep)
{
    memq_candidate top = ep->heap[0];
    ep->heap[0] = ep->heap[--ep->heap_n];
    sift_down(ep->heap, ep->heap_n, 0);
    return top;
}

/* Every account holding memory, as unknown: O(accounts), no user code.
 * The array becomes a heap once the sweep has asked each for its age. */
static int build_heap(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    size_t n = HASH_COUNT(t->accounts);
    if (n > ep->heap_cap) {
        memq_candidate *h = realloc(ep->heap, n * sizeof *h);
        if (h == NULL)
            return MEMQ_ENOMEM;
        ep->heap = h;
        ep->heap_cap = n;
    }
    ep->heap_n = 0;
    for (memq_account *a = t->accounts; a != NULL; a = a->hh.next)
        if (a->charged > 0) {
            ep->heap[ep->heap_n++] = (memq_candidate){0, a->id};
            a->heaped_episode = (uint32_t)ep->number;
        }
    ep->heap_built = true;
    ep->swept = false;
    ep->sweep_next = 0;
    return 0;
}


/* Put a into the heap (or the array being swept) unless it has an entry
 * already: one entry per account, so no check is spent on duplicates.  On
 * allocation failure the account misses this episode only. */
static void candidate_push(memq_tracker *t, memq_account *a, memq_time key)
{
    memq_episode *ep = &t->ep;
    uint32_t number = (uint32_t)ep->number;
    if (a->heaped_episode == number)
        return;
    memq_candidate c = {key, a->id};
    if (ep->swept ? heap_push(ep, c) : array_push(ep, c))
        a->heaped_episode = number;
}

/* An entry for this id left the heap. */
static void candidate_popped(memq_tracker *t, uint64_t id)
{
    memq_account *a = lookup(t, id);
    if (a != NULL)
        a->heaped_episode = 0;
}

void memq__episode_offer(memq_tracker *t, memq_account *a)
{
    if (t->ep.active && t->ep.heap_built)
        candidate_push(t, a, 0);
}

/* ======================================================================
 * Snapshots of participations and callbacks
 * ====================================================================== */

static bool snapshot_add(memq_snapshot *s, memq_participation *p)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        memq_participation **items = realloc(s->items, cap * sizeof *items);
        if (items == NULL)
            return false;
        s->items = items;
        s->cap = cap;
    }
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
 * Ask the account's own participants for their oldest data and return the
 * account's age in *fresh; false if the account is gone or holds no
 * claimed memory.  A participant that claims memory but reports no data is
 * taken as holding the oldest possible data.  The whole account is asked
 * in one batch with the lock dropped (freeing one of its participations on
 * another thread waits for the batch).
 */
static bool refresh(memq_tracker *t, uint64_t id, memq_time *fresh)
{
    memq_account *a = lookup(t, id);
    if (a == NULL || a->charged == 0 || a->refused_episode == (uint32_t)t->ep.number)
        return false;
    memq_snapshot *s = &t->ep.scratch;
    for (memq_participation *p = a->participants; p != NULL; p = p->next)
        if (!snapshot_add(s, p))
            break;
    t->refreshing = a;
    memq__unlock(t);
    memq_time min = MEMQ_TIME_MAX;
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
    callback_end(t);
    /* The snapshot's references keep a's memory until it is cleared. */
    bool open = !a->closed && !t->shutdown;
    if (open && !has_data) {
        /* Cache but no claims: leave the heap, but have the next claim of
         * any of its participants, present or future, bring it back. */
        a->dropped = true;
        for (memq_participation *p = a->participants; p != NULL; p = p->next)
            if (atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OPEN)
                atomic_store_explicit(&p->gate, MEMQ_GATE_OFFER, memory_order_relaxed);
    }
    if (open && has_data)
        a->oldest_seen = min;
    snapshot_clear(s);
    *fresh = min;
    return open && has_data;
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
 * Ask every candidate of the new heap for its age, in one linear pass that
 * may span calls, then heapify: cheaper than popping and pushing each.
 * Candidates holding no claims are dropped.  Returns MEMQ_EAGAIN if the
 * budget ran out first.
 */
static int sweep(memq_tracker *t, budget *b)
{
    memq_episode *ep = &t->ep;
    while (ep->sweep_next < ep->heap_n && !t->shutdown) {
        if (over_budget(b))
            return MEMQ_EAGAIN;
        b->worked = true;
        memq_time fresh;
        /* refresh() drops the lock: offers may grow (move) the array. */
        uint64_t id = ep->heap[ep->sweep_next].id;
        if (refresh(t, id, &fresh)) {
            ep->heap[ep->sweep_next++].oldest = fresh;
        } else if (ep->sweep_next < ep->heap_n) {
            candidate_popped(t, id);
            ep->heap[ep->sweep_next] = ep->heap[--ep->heap_n];
        }
    }
    for (size_t i = ep->heap_n / 2; i-- > 0;)
        sift_down(ep->heap, ep->heap_n, i);
    ep->swept = true;
    return 0;
}

/*
 * Pop candidates until one is verified as holding the oldest data (its
 * fresh age is no newer than every other key).  Accounts found younger go
 * back with their fresh key.  Entries for `skip` are dropped.  Stops when
 * the budget is spent, or after `checks` re-checks.
 */
static select_result select_oldest(memq_tracker *t, uint64_t skip, memq_candidate *out,
                                   budget *b, unsigned checks)
{
    memq_episode *ep = &t->ep;
    while (ep->heap_n > 0) {
        if (over_budget(b) || checks-- == 0)
            return SELECT_BUDGET;
        memq_candidate c = heap_pop(ep);
        candidate_popped(t, c.id);
        if (c.id == skip)
            continue;
        memq_time fresh;
        b->worked = true;
        if (!refresh(t, c.id, &fresh)) {
            if (t->shutdown)
                return SELECT_NONE;
            continue;
        }
        c.oldest = fresh;
        if (ep->heap_n > 0 && before(&ep->heap[0], &c)) {
            memq_account *a = lookup(t, c.id);
            if (a != NULL)
                candidate_push(t, a, fresh);
            continue;
        }
        *out = c;
        return SELECT_FOUND;
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

static void start_round(memq_tracker *t, memq_candidate victim, memq_time older_than)
{
    memq_episode *ep = &t->ep;
    memq_account *a = lookup(t, victim.id);
    if (a == NULL)
        return;
    size_t used = used_of(t);
    ep->request.want = used > t->cfg.low_water ? used - t->cfg.low_water : 0;
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
    if (ep->pending_n == ep->pending_cap) {
        size_t cap = ep->pending_cap ? ep->pending_cap * 2 : 8;
        memq_pending *items = realloc(ep->pending, cap * sizeof *items);
        if (items == NULL) {
            collapse(t, p, false); /* cannot wait for it: treat as timed out */
            return;
        }
        ep->pending = items;
        ep->pending_cap = cap;
    }
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
    memq_account *a = lookup(t, ep->victim.id);
    if (a != NULL) {
        if (ep->round_progress)
            candidate_push(t, a, ep->victim.oldest); /* may hold more old data */
        else
            a->refused_episode = (uint32_t)ep->number;
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
    ep->heap_n = 0;
    ep->heap_built = false;
    ep->round_active = false;
    ep->active = false;
}

static void episode_start(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    ep->active = true;
    ep->heap_built = false;
    ep->number++;
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
        note(log, MEMQ_LOG_INFO, "reclamation reached low water: used %zu <= %zu in %" PRIu64 " us",
             used_of(t), t->cfg.low_water, ns / 1000);
    } else {
        t->stats.unreclaimable_events++;
        size_t used = used_of(t), step = (t->cfg.max - t->cfg.low_water) / 4;
        t->retry_above = used > SIZE_MAX - step ? SIZE_MAX : used + step;
        note(log, MEMQ_LOG_WARN,
             "reclamation stopped with nothing reclaimable left: used %zu, low water %zu, max "
             "%zu; retrying at the next crossing or after growth of a quarter of the band",
             used_of(t), t->cfg.low_water, t->cfg.max);
    }
    memq__episode_clear(t);
    t->wanted = false;
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
        if (!ep->active) {
            if (used_of(t) <= t->cfg.max) {
                t->wanted = false;
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
        if (used <= t->cfg.low_water) {
            episode_end(t, true, log);
            return 0;
        }
        if (ep->pending_n > 0 && used - pending_usage(t) <= t->cfg.low_water)
            return wait_pending(t, now);
        if (!ep->heap_built && build_heap(t) != 0)
            return MEMQ_ENOMEM;
        memq_candidate victim, next;
        if (!ep->swept) {
            if (sweep(t, b) != 0)
                return MEMQ_EAGAIN;
            continue;
        }
        select_result r = select_oldest(t, 0, &victim, b, UINT_MAX);
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
        /* The runner-up's age becomes older_than.  Found in the same call,
         * whatever the budget, so that the victim is acted on while its age
         * is fresh; but after a few re-checks the next key is taken as it
         * is (an age from this episode, or unknown: then no older than the
         * victim's). */
        memq_time older_than = MEMQ_TIME_MAX;
        budget unbounded = {UINT64_MAX, true};
        r = select_oldest(t, victim.id, &next, &unbounded, RUNNER_UP_CHECKS);
        if (r == SELECT_FOUND) {
            memq_account *a = lookup(t, next.id);
            if (a != NULL)
                candidate_push(t, a, next.oldest);
            older_than = next.oldest;
        } else if (r == SELECT_BUDGET && ep->heap_n > 0) {
            older_than = ep->heap[0].oldest > victim.oldest ? ep->heap[0].oldest : victim.oldest;
        }
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
