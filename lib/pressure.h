/*
 * pressure.h - what the core calls in the pressure room: the built-in
 * pressure watcher and the readers of the machine's memory figures.
 * Never installed.
 *
 * Every path is taken under a root directory: "/" (or "") in production,
 * a temporary directory holding a fake proc/ and sys/ in the tests.
 */
#ifndef MEMQ_PRESSURE_H
#define MEMQ_PRESSURE_H

#include "memquota.h"

#include <stdint.h>

/* ======================================================================
 * The machine's figures
 * ====================================================================== */

typedef struct memq_machine {
    size_t rss;          /* the process's resident memory (statm) */
    size_t cgroup_usage; /* its cgroup's usage: v2 memory.current, else v1 usage_in_bytes */
    size_t cgroup_limit; /* the tightest v2 memory.max / memory.high or v1
                          * memory.limit_in_bytes from its cgroup up */
} memq_machine;

/*
 * Fill *out; each figure is 0 where it cannot be read (no such file,
 * "max", v1's "unlimited").  No allocation and no FILE: a handful of
 * open/read/close calls on small files (statm, /proc/self/cgroup, one or
 * two files per level of the cgroup hierarchy), so it may be called at
 * every episode start and stats call, from any thread, with no lock.
 * Ignores a NULL out; a NULL root means "/".
 */
void memq__machine_read(const char *root, memq_machine *out);

/* The process's resident memory alone (<root>/proc/self/statm, second
 * field times the page size): one open, read and close, for rss_max checks
 * that must be cheaper than a full read.  0 if unreadable. */
size_t memq__machine_rss(const char *root);

/* MemTotal from <root>/proc/meminfo in bytes; 0 if unreadable. */
uint64_t memq__machine_ram(const char *root);

/* The tightest hard limit on the process's cgroups: v2 memory.max or v1
 * memory.limit_in_bytes, walking up the hierarchy (memory.high is not a
 * hard limit and does not count here).  UINT64_MAX if there is none.
 * memq_auto_max() is built on this and memq__machine_ram(). */
uint64_t memq__machine_cgroup_max(const char *root);

/* ======================================================================
 * The watcher
 * ====================================================================== */

typedef struct memq_watcher memq_watcher;

/*
 * Find a source of memory-pressure events, in order: systemd's watch
 * (watch_env, the value of $MEMORY_PRESSURE_WATCH, with write_env, that of
 * $MEMORY_PRESSURE_WRITE; NULL when unset), the process's cgroup v2
 * memory.pressure, /proc/pressure/memory, the cgroup v1
 * memory.pressure_level; the PSI trigger for the last three is "some
 * <pressure_stall_us> <pressure_window_us>" from the tracker's
 * configuration.  Each source that refuses is logged in one line through
 * the tracker's log callback and its bit (1 << MEMQ_WATCH_x) set in
 * *refused.  A watch_env of "/dev/null" or "" turns the watcher off (one
 * line at MEMQ_LOG_INFO, nothing refused, no fallback).
 *
 * On success a thread of its own calls memq_tracker_pressure(t) once per
 * event, and *source says which source it watches.  Returns NULL (and
 * *source = MEMQ_WATCH_NONE) when no source works, when it is turned off,
 * or when memory or a thread could not be had (logged; the source that
 * opened is then marked refused).  Tracker creation should go on either
 * way.
 *
 * Call it once the tracker is fully set up (memq_tracker_config() works on
 * it), without holding its lock: it reads the configuration and may call
 * the log callback.  root NULL means "/"; source and refused may be NULL.
 */
memq_watcher *memq__watcher_start(memq_tracker *t, const char *root, const char *watch_env,
                                  const char *write_env, int *source, unsigned *refused);

/*
 * Stop the thread, wait for it (and for a memq_tracker_pressure() call it
 * is making, with the wakeup callback that call may run), close every
 * descriptor and free w.  No report is made after it returns.  Call it
 * before the tracker shuts down, and not while holding a lock that the
 * wakeup or log callbacks take.  Called on the watcher thread itself (a
 * wakeup callback freeing the tracker), it cannot wait for itself: the
 * thread then makes no further report and frees w on its way out.
 * Ignores NULL.
 */
void memq__watcher_stop(memq_watcher *w);

#endif /* MEMQ_PRESSURE_H */
