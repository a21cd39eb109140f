/*
 * ages.c - the age index: which account holds the oldest data, without
 * asking every account.
 *
 * Invariant, under the tracker lock, for every open account a:
 *
 *     a is in the index (a->slot != 0)  <=>  a->charged > 0
 *     a's key <= the time of the oldest data a's own participants hold
 *
 * The index is a binary min-heap on (key, id).  An account enters with the
 * time of the claim that made it start holding memory: data claimed is no
 * older than its claim (memq_claim_at() declares data that is, and gives
 * its time), so that time is a lower bound.  Whenever reclamation asks an
 * account (reclaim.c, refresh), its key becomes the age it reported, a
 * lower bound too since it was true when read and data only gets newer as
 * the account drains (new data is claimed, and claiming lowers the key
 * again if it must).  The heap is never trusted without a fresh answer:
 * the top is asked, re-keyed, and taken as the oldest only if it stays on
 * top; since every other key is a lower bound, nothing else can hold older
 * data.
 *
 * An account can also be set aside for the rest of an episode (keyed
 * MEMQ_TIME_MAX in the heap, the key it gets back kept in a->oldest_seen):
 * the round's victim, one that gave nothing back, one found holding only
 * cache.  The episode's aside list holds each account at most once
 * (a->listed), however often it is set aside and comes back, and pins it
 * until the episode ends, which gives every key back.
 *
 * a->key_hint mirrors the account's key for memq_claim_at(), which may
 * then claim without the lock when its data is no older than the key: it
 * is MEMQ_TIME_MAX whenever the account is out of the index or set aside,
 * so that such claims take the lock and file their time here.
 */
#include "internal.h"

#include <stdlib.h>

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

static void set_hint(memq_account *a, memq_time key)
{
    atomic_store_explicit(&a->key_hint, key, memory_order_relaxed);
}

bool memq__ages_reserve(memq_tracker *t)
{
    memq_age *ages = memq__room_for_one(t->ages, t->ages_n, &t->ages_cap, sizeof *ages, 64);
    if (ages == NULL)
        return false;
    t->ages = ages;
    return true;
}

memq_time memq__ages_key(const memq_tracker *t, const memq_account *a)
{
    return a->slot != 0 ? t->ages[a->slot - 1].key : MEMQ_TIME_MAX;
}

memq_account *memq__ages_top(const memq_tracker *t)
{
    if (t->ages_n == 0 || t->ages[0].key == MEMQ_TIME_MAX)
        return NULL; /* empty, or only accounts set aside */
    return t->ages[0].a;
}

void memq__ages_rekey(memq_tracker *t, memq_account *a, memq_time key)
{
    size_t i = a->slot - 1;
    memq_time old = t->ages[i].key;
    t->ages[i].key = key;
    set_hint(a, a->aside ? MEMQ_TIME_MAX : key);
    if (key < old)
        sift_up(t, i);
    else
        sift_down(t, i);
}

/* ======================================================================
 * Aside for the rest of an episode
 * ====================================================================== */

bool memq__aside_reserve(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    memq_account **v = memq__room_for_one(ep->aside, ep->aside_n, &ep->aside_cap, sizeof *v, 16);
    if (v == NULL)
        return false;
    ep->aside = v;
    return true;
}

void memq__set_aside(memq_tracker *t, memq_account *a, memq_time key)
{
    memq_episode *ep = &t->ep;
    if (a->slot == 0)
        return;
    if (!a->listed) {
        if (ep->aside_n == ep->aside_cap)
            return; /* the caller reserved room; without it, a stays in the running */
        ep->aside[ep->aside_n++] = a;
        a->listed = 1;
        a->pins++; /* the list's: a may close and be unreffed meanwhile */
    }
    a->oldest_seen = key; /* the key it gets back */
    a->aside = 1;
    memq__ages_rekey(t, a, MEMQ_TIME_MAX);
}

void memq__restore(memq_tracker *t, memq_account *a)
{
    if (!a->aside)
        return;
    a->aside = 0;
    a->dropped = 0; /* its gates may stay on offer: harmless */
    if (a->slot != 0)
        memq__ages_rekey(t, a, a->oldest_seen);
}

void memq__restore_all(memq_tracker *t)
{
    memq_episode *ep = &t->ep;
    for (size_t i = 0; i < ep->aside_n; i++) {
        memq_account *a = ep->aside[i];
        memq__restore(t, a);
        a->listed = 0;
        a->pins--;
        memq__account_maybe_free(a);
    }
    ep->aside_n = 0;
}

/* ======================================================================
 * Entering, claiming, leaving
 * ====================================================================== */

void memq__ages_leave(memq_tracker *t, memq_account *a)
{
    a->aside = 0; /* (still listed, if it was: the list ends with the episode) */
    a->dropped = 0;
    set_hint(a, MEMQ_TIME_MAX);
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

void memq__ages_claimed(memq_tracker *t, memq_account *a, memq_time when)
{
    if (a->closed)
        return; /* closing took it out; it never comes back */
    if (t->refreshing == a && when < t->refresh_floor)
        t->refresh_floor = when; /* for the key the batch is about to set */
    if (a->slot == 0) {
        if (t->ages_n == t->ages_cap)
            return; /* the caller reserved room; MEMQ_ENOMEM was its answer */
        t->ages[t->ages_n++] = (memq_age){when, a};
        set_hint(a, when);
        sift_up(t, t->ages_n - 1);
    } else if (a->aside) {
        if (when < a->oldest_seen)
            a->oldest_seen = when; /* the key it gets back */
        if (a->dropped)
            memq__restore(t, a); /* it holds claims again: back in the running */
    } else if (when < t->ages[a->slot - 1].key) {
        memq__ages_rekey(t, a, when);
    }
    a->dropped = 0;
}
