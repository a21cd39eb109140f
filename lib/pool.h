/*
 * pool.h - what the core calls in the chunk pool's room (lib/pool.c).
 * Never installed.
 *
 * The room keeps its own registry of pools; the core tells it when a
 * tracker's memory goes, asks it for the pools' part of a dump, and (the
 * tracked containers) whose a pool is.
 */
#ifndef MEMQ_POOL_ROOM_H
#define MEMQ_POOL_ROOM_H

#include "core.h"

/*
 * The tracker's memory is being destroyed (its last reference is gone):
 * forget its own pool.  Called by the core with the tracker's lock held;
 * calls nothing in the core.  The pool's free memory goes back to the OS
 * at once; chunks still allocated stay valid until memq_pool_dealloc(),
 * and the pool's memory goes with the last of them.  No other thread may
 * be freeing a chunk of that pool while this runs.  Ignores a tracker
 * that never had a pool.
 */
void memq__pool_tracker_gone(memq_tracker *t);

/*
 * Write the statistics of every pool of tracker t (its own and those
 * created with memq_pool_new()) to f, in a dump format:
 *  - MEMQ_DUMP_TEXT: one line per pool and one per size class in use,
 *    indented, to follow the tracker's lines;
 *  - MEMQ_DUMP_JSON: one JSON array, [] without pools, to be the value of
 *    a "pools" member of the dump object (no newline after it);
 *  - MEMQ_DUMP_PROMETHEUS: memq_pool_* metrics with pool="<id>" labels
 *    (and class="<size>" for the per-class ones), each with its HELP and
 *    TYPE lines, nothing at all without pools.
 * Takes the room's locks, never the tracker's; call it with no lock held.
 * Returns 0; MEMQ_EINVAL for NULL arguments or an unknown format;
 * MEMQ_ENOMEM.  Write errors are left in f (ferror) for the caller.
 */
int memq__pool_dump(memq_tracker *t, FILE *f, int format);

/*
 * The tracker whose slack pool counts, NULL once the pool is orphaned (freed,
 * or its tracker's memory gone) or for what is not a pool.  For the
 * containers, which check at creation that a pool given to them is their
 * account's tracker's.
 */
memq_tracker *memq__pool_tracker(const memq_pool *pool);

#endif /* MEMQ_POOL_ROOM_H */
