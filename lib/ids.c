/*
 * ids.c - the open accounts by id: what makes memq_account_find() a weak
 * reference, and how the tracker visits every open account.
 *
 * Invariant, under the tracker lock: an account is in the table exactly
 * while it is open, and t->naccounts counts them.
 *
 * An open-addressing table of account pointers with linear probing in
 * Robin Hood order (each run of slots sorted by home), its capacity a
 * power of two at most half full, and deletion by backward shift that
 * stops at the first account at home (no tombstones).  Ids are never
 * reused and come in order, so an id's home is simply its low bits: ids
 * alive together rarely collide, and accounts created together sit
 * together.  It costs 8 to 16 bytes per open account and nothing in the
 * account itself; the table halves when it falls below an eighth full.
 * Lookups, insertions and deletions are O(1) on average; a failed growth
 * is an out-of-memory error of the account's creation, a failed shrink
 * is no error at all.
 */
#include "internal.h"

#include <stdlib.h>

#define IDS_MIN 16

/* Ids come one after the other: an id's home slot is its low bits, so
 * accounts created together sit together, and closing them in order walks
 * the table instead of jumping about it. */
static size_t home(const memq_tracker *t, uint64_t id)
{
    return (size_t)id & (t->ids_cap - 1);
}

/* How far the account in slot i is from its home. */
static size_t distance(const memq_tracker *t, size_t i)
{
    return (i - home(t, t->ids[i]->id)) & (t->ids_cap - 1);
}

/* Put a into the table, which has room and does not hold it: Robin Hood
 * order, an account never further from its home than the one it passes,
 * so that each run of the table is sorted by home. */
static void place(memq_tracker *t, memq_account *a)
{
    size_t mask = t->ids_cap - 1, i = home(t, a->id), d = 0;
    while (t->ids[i] != NULL) {
        size_t di = distance(t, i);
        if (di < d) {
            memq_account *b = t->ids[i];
            t->ids[i] = a;
            a = b;
            d = di;
        }
        i = (i + 1) & mask;
        d++;
    }
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

/* The slot holding id, or SIZE_MAX.  In Robin Hood order the search ends
 * at an empty slot or at one nearer its home than id would be. */
static size_t slot_of(const memq_tracker *t, uint64_t id)
{
    if (t->ids_cap == 0)
        return SIZE_MAX;
    size_t mask = t->ids_cap - 1;
    for (size_t i = home(t, id), d = 0; t->ids[i] != NULL && distance(t, i) >= d;
         i = (i + 1) & mask, d++)
        if (t->ids[i]->id == id)
            return i;
    return SIZE_MAX;
}

memq_account *memq__ids_find(const memq_tracker *t, uint64_t id)
{
    size_t i = slot_of(t, id);
    return i == SIZE_MAX ? NULL : t->ids[i];
}

void memq__ids_remove(memq_tracker *t, memq_account *a)
{
    size_t i = slot_of(t, a->id);
    if (i == SIZE_MAX || t->ids[i] != a)
        return; /* not there */
    /* Backward shift: the accounts after it that are away from home move
     * one slot back; the first one at home (or an empty slot) ends it. */
    size_t mask = t->ids_cap - 1;
    for (size_t j = (i + 1) & mask; t->ids[j] != NULL && distance(t, j) > 0;
         i = j, j = (j + 1) & mask)
        t->ids[i] = t->ids[j];
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
