/*
 * ids.c - the open accounts by id: what makes memq_account_find() a weak
 * reference, and how the tracker visits every open account.
 *
 * Invariant, under the tracker lock: an account is in the table exactly
 * while it is open, and t->naccounts counts them.
 *
 * An open-addressing table of account pointers with linear probing, its
 * capacity a power of two at most half full, and deletion by backward
 * shift (no tombstones, so a lookup never walks past a cluster's end).
 * Ids are never reused and come in order, so Fibonacci hashing spreads
 * them evenly.  It costs 8 to 16 bytes per open account and nothing in the
 * account itself; the table halves when it falls below an eighth full.
 * Lookups, insertions and deletions are O(1) on average; a failed growth
 * is an out-of-memory error of the account's creation, a failed shrink
 * is no error at all.
 */
#include "internal.h"

#include <stdlib.h>

#define IDS_MIN 16

static size_t home(const memq_tracker *t, uint64_t id)
{
    /* The top bits of id * 2^64 / phi. */
    return (size_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - t->ids_bits));
}

/* Put a into the table, which has room and does not hold it. */
static void place(memq_tracker *t, memq_account *a)
{
    size_t mask = t->ids_cap - 1, i = home(t, a->id);
    while (t->ids[i] != NULL)
        i = (i + 1) & mask;
    t->ids[i] = a;
}

/* Rebuild the table with 2^bits slots; false (the table unchanged) if
 * they cannot be allocated. */
static bool rebuild(memq_tracker *t, unsigned bits)
{
    memq_account **old = t->ids;
    size_t old_cap = t->ids_cap;
    memq_account **ids = calloc((size_t)1 << bits, sizeof *ids);
    if (ids == NULL)
        return false;
    t->ids = ids;
    t->ids_cap = (size_t)1 << bits;
    t->ids_bits = bits;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i] != NULL)
            place(t, old[i]);
    free(old);
    return true;
}

bool memq__ids_add(memq_tracker *t, memq_account *a)
{
    if (2 * (t->naccounts + 1) > t->ids_cap &&
        !rebuild(t, t->ids_cap == 0 ? 4 : t->ids_bits + 1))
        return false;
    place(t, a);
    t->naccounts++;
    return true;
}

memq_account *memq__ids_find(const memq_tracker *t, uint64_t id)
{
    if (t->ids_cap == 0)
        return NULL;
    size_t mask = t->ids_cap - 1;
    for (size_t i = home(t, id); t->ids[i] != NULL; i = (i + 1) & mask)
        if (t->ids[i]->id == id)
            return t->ids[i];
    return NULL;
}

void memq__ids_remove(memq_tracker *t, memq_account *a)
{
    if (t->ids_cap == 0)
        return;
    size_t mask = t->ids_cap - 1, i = home(t, a->id);
    while (t->ids[i] != a) {
        if (t->ids[i] == NULL)
            return; /* not there */
        i = (i + 1) & mask;
    }
    /* Backward shift: move later members of the cluster into the hole
     * unless that would put one before its home. */
    for (size_t j = (i + 1) & mask; t->ids[j] != NULL; j = (j + 1) & mask) {
        size_t h = home(t, t->ids[j]->id);
        /* Movable if its home is not cyclically in (i, j]. */
        if (i <= j ? (h <= i || h > j) : (h <= i && h > j)) {
            t->ids[i] = t->ids[j];
            i = j;
        }
    }
    t->ids[i] = NULL;
    t->naccounts--;
    if (t->ids_cap > IDS_MIN && 8 * t->naccounts < t->ids_cap)
        (void)rebuild(t, t->ids_bits - 1);
}

memq_account *memq__ids_next(const memq_tracker *t, size_t *i)
{
    while (*i < t->ids_cap) {
        memq_account *a = t->ids[(*i)++];
        if (a != NULL)
            return a;
    }
    return NULL;
}

void memq__ids_close_all(memq_tracker *t)
{
    /* Closing removes an account: the backward shift may bring a later one
     * into a slot already passed (across the end), and the table may
     * shrink.  So go round, closing what is found, until it is empty. */
    size_t i = 0;
    while (t->naccounts > 0) {
        i &= t->ids_cap - 1;
        if (t->ids[i] != NULL)
            memq__account_close(t->ids[i]);
        else
            i++;
    }
}
