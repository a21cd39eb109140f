/*
 * core.h - the narrow interface through which the rooms beside the core
 * (the chunk pool, the pressure watcher) reach into it.  Never installed.
 *
 * A room uses the public API for everything else.  It must not include
 * internal.h: what the core's circle of files share stays theirs.
 */
#ifndef MEMQ_CORE_H
#define MEMQ_CORE_H

#include "memquota.h"

/*
 * Slack: bytes the tracker counts that belong to no account, such as a
 * chunk pool's free chunks and the spans it keeps for reuse.  They are
 * part of used (so they count against max and can start an episode) and
 * shown as memq_stats.slack, but no account holds them, so they are never
 * a victim: reclamation frees participants' data, and the slack shrinks
 * when the room gives memory back to the OS.  Thread-safe, no lock on the
 * way unless the total crosses max; memq__slack_add() may then call the
 * tracker's wakeup callback, so never call it while holding a lock that
 * user callbacks may take (or any lock of the room's own).  Ignored by an
 * unlimited tracker and after shutdown.  Subtracting more than was added
 * is clamped and counted as misuse.
 */
void memq__slack_add(memq_tracker *t, size_t n);
void memq__slack_sub(memq_tracker *t, size_t n);

/* Keep the tracker's memory until memq__tracker_drop() (its service ends
 * at memq_tracker_free() all the same: claims fail, slack is ignored). */
void memq__tracker_hold(memq_tracker *t);
void memq__tracker_drop(memq_tracker *t);

/* The configuration in force (memq_tracker_config() for the rooms). */
void memq__tracker_config(const memq_tracker *t, memq_config *out);

/* Count one misuse in the tracker's misuse_events; the first one of the
 * tracker's life is logged through its log callback, with no lock held. */
void memq__misuse(memq_tracker *t, const char *what);

/* Whether memq_tracker_free() was called on t: the rooms take no new work
 * for it then. */
bool memq__tracker_shut_down(memq_tracker *t);

/* The tracker a participation belongs to; NULL for NULL or a handle whose
 * memory the library no longer holds (best effort, as every handle
 * check). */
memq_tracker *memq__participation_tracker(const memq_participation *p);

#endif /* MEMQ_CORE_H */
