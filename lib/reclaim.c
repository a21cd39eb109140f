/*
 * reclaim.c - episodes of reclamation: choosing victims oldest-data-first,
 * asking them for memory, telling the participants of collapsed accounts,
 * collecting answers, within a time budget.
 *
 * Victims come from the age index (ages.c): the account on top is asked
 * for its participants' oldest data (one batch of callbacks, the lock
 * dropped) and re-keyed; if it stays on top, every other account's data is
 * at least as new, since their keys are lower bounds.  Otherwise the new
 * top is asked.  So nothing is built per episode, no step walks every
 * account, and the index is never trusted without a fresh answer.  A
 * participant that claims memory and reports no data is taken as holding
 * the oldest data once asked: it cannot hide behind newer data.
 *
 * A round sends the request to every participant of the victim and its
 * descendants, one callback at a time with the lock dropped.  What each
 * participant gave back is measured over its own callback (its claims
 * before and after), so that a sibling claiming on another thread meanwhile
 * cannot make a victim that freed old data look as if it gave nothing.  A
 * victim that frees nothing, collapses nothing and defers nothing is
 * refused for the rest of the episode, so that an episode always ends: at
 * its target, or with nothing reclaimable left, which is logged and
 * counted, never fatal.
 *
 * When reclamation closes an account (a COLLAPSING answer, a timeout),
 * every other participant of that account is told, with a request whose
 * `closed` is true, before anything else happens in the same drive: the
 * tracker stops counting their memory at once, so they must free it, and
 * a stalled reader's queue would never find out by itself.  The accounts
 * to tell wait in a list threaded through them (no allocation can fail);
 * each participant hears once (p->noticed).  bytes_reclaimed counts only
 * what participants released, in their callbacks or by a late answer.
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
    return memq__ids_find(t, id);
}

/* ======================================================================
 * Snapshots of participations and callbacks
 * ====================================================================== */

static bool snapshot_add(memq_snapshot *s, memq_participation *p)
{
    memq_participation **items = memq__room_for_one(s->items, s->n, &s->cap, sizeof *items, 16);
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
 * in the index.  The whole account is asked in one batch with the lock
 * dropped (freeing one of its participations on another thread waits for
 * the batch).  A participant that claims memory but reports no data is
 * taken as holding the oldest possible data.  An account holding only
 * cache is set aside for the episode, its gates on offer, until one of its
 * participants, present or future, claims again.
 *
 * The key must stay a lower bound across the batch, while the account's
 * participants keep claiming: data claimed from the batch's start on is no
 * older than that start, so the fresh age never exceeds it; and a
 * participant read as holding nothing that holds claims after the batch
 * claimed meanwhile, data perhaps stamped before it was read: the account
 * keeps its old key (a lower bound still) and the answer is UNSETTLED, to
 * be asked again.
 */
typedef enum { AGE_HELD, AGE_NONE, AGE_UNSETTLED, AGE_NOMEM } age_answer;

static age_answer refresh(memq_tracker *t, memq_account *a, memq_time *fresh)
{
    memq_snapshot *s = &t->ep.scratch;
    for (memq_participation *p = a->participants; p != NULL; p = p->next) {
        if (!snapshot_add(s, p)) {
            /* Not asked at all: its key, a lower bound, stays. */
            snapshot_clear(s);
            return AGE_NOMEM;
        }
    }
    a->pins++; /* a outlives the batch, whatever is freed meanwhile */
    t->refreshing = a;
    t->refresh_floor = MEMQ_TIME_MAX;
    memq_time old_key = memq__ages_key(t, a);
    memq__unlock(t);
    memq_time start = memq__clock(t);
    /* MEMQ_TIME_MAX marks "set aside": never an age. */
    memq_time min = start < MEMQ_TIME_MAX ? start : MEMQ_TIME_MAX - 1;
    bool has_data = false;
    for (size_t i = 0; i < s->n; i++) {
        memq_participation *p = s->items[i];
        p->read_empty = true;
        if (p->freed)
            continue; /* being freed, maybe by an earlier callback */
        /* Claims first: data that shows up between the two reads must not
         * look like a claim without data (taken as the oldest). */
        bool claims = atomic_load_explicit(&p->claimed, memory_order_acquire) > 0;
        p->read_empty = !claims;
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
    callback_end(t); /* clears t->refreshing */
    if (t->refresh_floor < min)
        min = t->refresh_floor; /* data claimed older than its claim meanwhile */
    bool unsettled = false;
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i]->read_empty && !s->items[i]->freed &&
            atomic_load_explicit(&s->items[i]->claimed, memory_order_relaxed) > 0)
            unsettled = true;
    if (unsettled) {
        has_data = true;
        if (old_key < min)
            min = old_key;
    }
    age_answer answer = AGE_NONE;
    if (a->slot != 0 && !t->shutdown) {
        if (has_data) {
            a->oldest_seen = min;
            memq__ages_rekey(t, a, min);
            answer = unsettled ? AGE_UNSETTLED : AGE_HELD;
        } else {
            /* Cache but no claims: whatever it claims later is no older
             * than the batch's start.  Set aside, so that an episode ends
             * when only such accounts remain; its next claim (gates on
             * offer) or the episode's end puts it back in the running.
             * (Without memory for that, it at least moves down.) */
            memq__ages_rekey(t, a, min);
            if (memq__aside_reserve(t)) {
                memq__set_aside(t, a, min);
                a->dropped = true;
                for (memq_participation *p = a->participants; p != NULL; p = p->next)
                    if (atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_OPEN)
                        atomic_store_explicit(&p->gate, MEMQ_GATE_OFFER, memory_order_relaxed);
            }
        }
    }
    snapshot_clear(s);
    a->pins--;
    memq__account_maybe_free(a);
    *fresh = min;
    return answer;
}

typedef enum { SELECT_FOUND, SELECT_NONE, SELECT_BUDGET, SELECT_NOMEM } select_result;

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
 * An unsettled answer is asked again once, then taken as it is (its key
 * no later than the account's data).  Stops when the budget is spent, or
 * after `checks` checks.
 */
static select_result select_oldest(memq_tracker *t, memq_candidate *out, budget *b,
                                   unsigned checks)
{
    memq_account *a, *unsettled = NULL;
    while ((a = memq__ages_top(t)) != NULL) {
        if (over_budget(b) || checks-- == 0)
            return SELECT_BUDGET;
        b->worked = true;
        memq_time fresh;
        age_answer r = refresh(t, a, &fresh);
        if (r == AGE_NOMEM)
            return SELECT_NOMEM;
        if (t->shutdown)
            return SELECT_NONE;
        if (r == AGE_UNSETTLED && unsettled != a) {
            unsettled = a;
            continue;
        }
        if (r != AGE_NONE && memq__ages_top(t) == a) {
            *out = (memq_candidate){fresh, a->id};
            return SELECT_FOUND;
        }
    }
    return SELECT_NONE;
}

/* ======================================================================
 * Telling the participants of a collapsed account
 * ====================================================================== */

/* a was closed by reclamation: queue it so that every participant but
 * `answerer` (which answered COLLAPSING itself) hears of it. */
static void queue_notices(memq_tracker *t, memq_account *a, memq_participation *answerer)
{
    if (answerer != NULL)
        answerer->noticed = 1;
    /* Queued once: collapse() closes a right after. */
    a->pins++; /* until every participant has heard */
    a->notice_next = NULL;
    if (t->notice_tail != NULL)
        t->notice_tail->notice_next = a;
    else
        t->notice_head = a;
    t->notice_tail = a;
    if (!t->reclaiming)
        memq__notify(t, 1); /* from memq_reclaim_done(): the next call tells them */
    pthread_cond_broadcast(&t->cond);
}

static void dequeue_notices(memq_tracker *t)
{
    memq_account *a = t->notice_head;
    t->notice_head = a->notice_next;
    if (t->notice_head == NULL)
        t->notice_tail = NULL;
    a->pins--;
    memq__account_maybe_free(a);
}

void memq__notices_clear(memq_tracker *t)
{
    while (t->notice_head != NULL)
        dequeue_notices(t);
}

/* Tell the next participant; one callback, the lock dropped. */
static void notice_step(memq_tracker *t)
{
    memq_account *a = t->notice_head;
    memq_participation *p = a->participants; /* freed ones are unlinked */
    while (p != NULL && p->noticed)
        p = p->next;
    if (p == NULL) {
        dequeue_notices(t);
        return;
    }
    p->noticed = 1;
    p->refs++; /* as a snapshot's: p outlives the callback */
    size_t before = atomic_load_explicit(&p->claimed, memory_order_relaxed);
    memq_reclaim_request req = {before, MEMQ_TIME_MAX, true};
    callback_begin(t, p);
    (void)p->ops->reclaim(p->self, &req); /* the answer means nothing now */
    callback_end(t);
    size_t after = p->freed ? 0 : atomic_load_explicit(&p->claimed, memory_order_relaxed);
    if (after < before)
        t->stats.bytes_reclaimed += before - after;
    memq__participation_unref(p);
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
        if (!snapshot_add(&t->ep.targets, p)) {
            t->ep.targets_short = true;
            return;
        }
        /* What it frees now goes back to the tracker, not to its cache. */
        memq__participation_ask(p, true);
    }
}

/* A pressure report or an RSS check joins the episode (or starts it). */
static void take_requests(memq_tracker *t)
{
    if (t->pressure_wanted)
        t->ep.pressure = true;
    if (t->rss_wanted) {
        t->ep.rss = true;
        t->ep.rss_target = t->rss_target;
    }
    t->pressure_wanted = t->rss_wanted = false;
    if (memq__used(t) > t->cfg.max)
        t->ep.crossed = true;
}

/* Where the episode ends: at low water; lower under pressure (the
 * configuration keeps pressure_low_water <= low_water); higher when only
 * RSS asked for it (RSS alone never takes it below low water).  Read
 * afresh, so that a reconfiguration takes effect at once. */
static size_t target_of(const memq_tracker *t)
{
    if (t->ep.pressure)
        return t->cfg.pressure_low_water;
    if (t->ep.rss && !t->ep.crossed && t->ep.rss_target > t->cfg.low_water)
        return t->ep.rss_target;
    return t->cfg.low_water;
}

/* Start a round on the victim (set aside).  False when there was no
 * memory to list its participants: nobody is asked, the victim is back in
 * the running, and the call returns MEMQ_ENOMEM (a round asking only some
 * of them could leave the victim aside as if it had nothing to give). */
static bool start_round(memq_tracker *t, memq_candidate victim, memq_time older_than)
{
    memq_episode *ep = &t->ep;
    memq_account *a = lookup(t, victim.id);
    if (a == NULL)
        return true;
    size_t used = used_of(t);
    ep->request = (memq_reclaim_request){used > target_of(t) ? used - target_of(t) : 0,
                                         older_than, false};
    ep->victim = victim;
    ep->round_progress = false;
    snapshot_clear(&ep->targets);
    ep->targets_short = false;
    if (!memq__account_walk(a, collect_targets, t) || ep->targets_short) {
        for (size_t i = 0; i < ep->targets.n; i++)
            memq__participation_ask(ep->targets.items[i], false);
        snapshot_clear(&ep->targets);
        memq__restore(t, a);
        return false;
    }
    ep->round_active = true;
    t->stats.accounts_reclaimed++;
    return true;
}

/* Close a as collapsed (a COLLAPSING answer from `answerer`, or a timeout
 * with answerer NULL); its other participants will hear of it. */
static void collapse(memq_tracker *t, memq_account *a, memq_participation *answerer)
{
    if (a->closed)
        return;
    t->stats.accounts_collapsed++;
    t->ep.round_progress = true;
    queue_notices(t, a, answerer);
    memq__account_close(a);
}

static void answer(memq_tracker *t, memq_participation *p, int st)
{
    switch (st) {
    case MEMQ_RECLAIMED_COLLAPSING:
        collapse(t, p->account, p);
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

/* What p released since it claimed `before`: counted as reclaimed. */
static void count_given(memq_tracker *t, memq_participation *p, size_t before)
{
    size_t after = p->freed ? 0 : atomic_load_explicit(&p->claimed, memory_order_relaxed);
    if (after < before) {
        t->stats.bytes_reclaimed += before - after;
        t->ep.round_progress = true;
    }
}

static void add_pending(memq_tracker *t, memq_participation *p, memq_time now)
{
    memq_episode *ep = &t->ep;
    memq_pending *items =
        memq__room_for_one(ep->pending, ep->pending_n, &ep->pending_cap, sizeof *items, 8);
    if (items == NULL) {
        collapse(t, p->account, NULL); /* cannot wait for it: treat as timed out */
        return;
    }
    ep->pending = items;
    p->refs++;
    p->pending = 1;
    ep->pending[ep->pending_n++] =
        (memq_pending){p, now + (memq_time)t->cfg.reclaim_timeout_ms * 1000000u,
                       atomic_load_explicit(&p->claimed, memory_order_relaxed)};
    ep->round_progress = true;
}

static void remove_pending(memq_tracker *t, size_t i)
{
    memq_episode *ep = &t->ep;
    memq_participation *p = ep->pending[i].p;
    ep->pending[i] = ep->pending[--ep->pending_n];
    p->pending = 0;
    if (!p->freed)
        memq__participation_ask(p, false);
    memq__participation_unref(p);
}

static ptrdiff_t find_pending(const memq_tracker *t, const memq_participation *p)
{
    for (size_t i = 0; i < t->ep.pending_n; i++)
        if (t->ep.pending[i].p == p)
            return (ptrdiff_t)i;
    return -1;
}

void memq__episode_forget(memq_tracker *t, memq_participation *p)
{
    ptrdiff_t i = find_pending(t, p);
    if (i < 0)
        return;
    remove_pending(t, (size_t)i);
    /* An episode sleeping on this answer must look again. */
    if (t->ep.waiting) {
        t->ep.waiting = false;
        memq__notify(t, 1);
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
    size_t before = atomic_load_explicit(&p->claimed, memory_order_relaxed);
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
    /* What it gave back over its own callback; one that freed itself gave
     * everything back. */
    count_given(t, p, before);
    if (p->freed) {
        /* A collapse still closes its account. */
        if (st == MEMQ_RECLAIMED_COLLAPSING)
            collapse(t, p->account, p);
        return;
    }
    if (memq__closed(p))
        return; /* its account closed meanwhile (e.g. unreffed) */
    if (st == MEMQ_RECLAIM_PENDING)
        add_pending(t, p, *now);
    else
        answer(t, p, st);
}

static void round_finish(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    for (size_t i = 0; i < ep->targets.n; i++) {
        memq_participation *p = ep->targets.items[i];
        if (!p->pending && !p->freed)
            memq__participation_ask(p, false);
    }
    /* A victim that gave something back may hold more old data: it is a
     * candidate again.  One that gave nothing stays aside. */
    memq_account *victim = lookup(t, ep->victim.id);
    if (ep->round_progress && victim != NULL)
        memq__restore(t, victim);
    snapshot_clear(&ep->targets);
    ep->round_active = false;
}

/* ======================================================================
 * Episodes
 * ====================================================================== */

void memq__episode_clear(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    for (size_t i = 0; i < ep->targets.n; i++)
        if (!ep->targets.items[i]->freed)
            memq__participation_ask(ep->targets.items[i], false);
    snapshot_clear(&ep->targets);
    snapshot_clear(&ep->scratch);
    while (ep->pending_n > 0)
        remove_pending(t, ep->pending_n - 1);
    memq__restore_all(t);
    ep->round_active = false;
    ep->active = false;
}

static void episode_start(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    ep->active = true;
    ep->pressure = ep->rss = ep->crossed = false;
    take_requests(t);
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
    if (ep->rss)
        memq__rss_episode_ended(t);
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
        count_given(t, p, ep->pending[i].claimed);
        remove_pending(t, i);
        collapse(t, p->account, NULL); /* it hears of it too */
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
        /* Then the participants of closed accounts: the tracker no longer
         * counts what they hold. */
        if (t->notice_head != NULL) {
            if (over_budget(b))
                return MEMQ_EAGAIN;
            b->worked = true;
            notice_step(t);
            continue;
        }
        if (ep->active)
            take_requests(t);
        if (!ep->active) {
            if (used_of(t) <= t->cfg.max && !t->pressure_wanted && !t->rss_wanted) {
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
        if (r == SELECT_NOMEM)
            return MEMQ_ENOMEM;
        if (r == SELECT_NONE) {
            if (t->shutdown || t->notice_head != NULL)
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
        if (!memq__aside_reserve(t))
            return MEMQ_ENOMEM;
        memq_account *va = lookup(t, victim.id);
        if (va != NULL)
            memq__set_aside(t, va, victim.oldest);
        memq_time older_than = MEMQ_TIME_MAX;
        budget unbounded = {UINT64_MAX, true};
        r = select_oldest(t, &next, &unbounded, RUNNER_UP_CHECKS);
        if (r == SELECT_FOUND) {
            older_than = next.oldest;
        } else if (r == SELECT_BUDGET || r == SELECT_NOMEM) {
            memq_account *top = memq__ages_top(t);
            memq_time key = top != NULL ? memq__ages_key(t, top) : MEMQ_TIME_MAX;
            older_than = key > victim.oldest ? key : victim.oldest;
        }
        if (!t->shutdown && !start_round(t, victim, older_than))
            return MEMQ_ENOMEM;
    }
}

int memq_tracker_reclaim(memq_tracker *t)
{
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    uint64_t start = memq__real_ns();
    int64_t rss_period = memq__rss_check(t); /* reads RSS if due: no lock */
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
    /* Work remains now (not only at a deadline): stay readable.  Nothing
     * more to do, but rss_max set: readable again at the next RSS check. */
    if (rc == MEMQ_EAGAIN && !t->ep.waiting && !t->shutdown)
        memq__notify(t, 1);
    else if (rc == 0 && rss_period > 0 && !t->wanted && !t->shutdown)
        memq__notify(t, rss_period);
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
    ptrdiff_t i = !p->freed && p->pending ? find_pending(t, p) : -1;
    if (i >= 0) {
        count_given(t, p, t->ep.pending[i].claimed);
        memq__episode_forget(t, p);
        answer(t, p, answer_st);
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
        if (!t->wanted && !t->ep.active && t->notice_head == NULL) {
            if (t->cfg.rss_max == 0) {
                pthread_cond_wait(&t->cond, &t->lock);
                continue;
            }
            /* rss_max: wake for the RSS check, and do it. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 250 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            if (pthread_cond_timedwait(&t->cond, &t->lock, &ts) == 0 || t->shutdown)
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
