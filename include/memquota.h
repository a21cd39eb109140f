/*
 * memquota.h - keep a daemon's memory under a quota, reclaiming the oldest
 * data first.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * The daemon's data structures (participants) report every allocation and
 * free to a tracker.  When the tracker's total crosses its high-water mark
 * (max), an episode of reclamation starts: the account whose participants
 * hold the oldest data is asked to give memory back, with all its
 * descendants, then the next oldest, until the total is at or below the
 * low-water mark.  This is the defence Tor uses against memory-exhaustion
 * ("sniper") attacks: a client that stops reading makes its queued data
 * old, while honest queues keep draining.
 *
 * Conventions, true of every function below unless its comment says
 * otherwise:
 *  - Functions that can fail return 0 or a negative MEMQ_E* code.  When a
 *    function fails, it has changed nothing and its out-parameters are left
 *    untouched.
 *  - Every function may be called from any thread.  A participation is used
 *    by one thread at a time (as a socket is): the owner serialises its own
 *    calls to memq_claim(), memq_release() and memq_participation_free().
 *  - No callback (participant, wakeup, log, clock) is ever invoked while the
 *    library holds an internal lock; callbacks may call any memq_ function.
 *  - NULL handles are rejected with MEMQ_EINVAL (or ignored by functions
 *    that return void).
 */
#ifndef MEMQUOTA_H
#define MEMQUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MEMQ_BUILDING) && defined(__GNUC__)
#define MEMQ_EXPORT __attribute__((visibility("default")))
#else
#define MEMQ_EXPORT
#endif

/* ======================================================================
 * Version
 * ====================================================================== */

#define MEMQ_VERSION_MAJOR 0
#define MEMQ_VERSION_MINOR 2
#define MEMQ_VERSION_PATCH 0
/* The version as one integer: major * 10000 + minor * 100 + patch. */
#define MEMQ_VERSION_NUMBER                                                 \
    (MEMQ_VERSION_MAJOR * 10000 + MEMQ_VERSION_MINOR * 100 + MEMQ_VERSION_PATCH)

/* The version of the library linked at run time, as MEMQ_VERSION_NUMBER and
 * as "major.minor.patch". */
MEMQ_EXPORT unsigned memq_version(void);
MEMQ_EXPORT const char *memq_version_string(void);

/* ======================================================================
 * Errors
 * ====================================================================== */

enum {
    MEMQ_EINVAL = -1,    /* a NULL or stale handle, or an invalid argument */
    MEMQ_ENOMEM = -2,    /* the library could not allocate memory */
    MEMQ_ECLOSED = -3,   /* the account is closed (unreffed or collapsed) */
    MEMQ_ESHUTDOWN = -4, /* the tracker was freed with memq_tracker_free() */
    MEMQ_EOVERFLOW = -5, /* a size would overflow size_t */
    MEMQ_EAGAIN = -6,    /* not finished yet: call again later */
    MEMQ_ECYCLE = -7,    /* the new parent would make the account tree cyclic */
    MEMQ_EEXIST = -8,    /* the account already has that parent */
    MEMQ_ESYSTEM = -9    /* a system call failed (errno says which) */
};

/* A static English description of a MEMQ_E* code ("success" for 0, "unknown
 * error" for anything else).  Never NULL. */
MEMQ_EXPORT const char *memq_strerror(int err);

/* ======================================================================
 * Time
 * ====================================================================== */

/* Nanoseconds on a monotonic clock; only differences are meaningful. */
typedef uint64_t memq_time;
#define MEMQ_TIME_MAX UINT64_MAX

/* The current time from CLOCK_MONOTONIC_COARSE where available (a few
 * milliseconds of resolution, about as cheap as reading memory), else
 * CLOCK_MONOTONIC. */
MEMQ_EXPORT memq_time memq_now(void);

/* ======================================================================
 * Sizes
 * ====================================================================== */

#define MEMQ_AUTO ((size_t)0)
#define MEMQ_UNLIMITED SIZE_MAX

/* Parse a size as a daemon's configuration file would hold it: an integer
 * or decimal number ("8", "1.5"), optional spaces, then an optional
 * case-insensitive unit among B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB,
 * TiB.  Every unit is a power of 1024 (as in Tor's configuration), so
 * "1 KB" is 1024.  Leading and trailing spaces are allowed; a fractional
 * result is rounded down to whole bytes.
 * Returns 0 and stores the size in *out; MEMQ_EINVAL for NULL arguments, an
 * empty string, a sign, a missing number, an unknown unit or trailing
 * garbage; MEMQ_EOVERFLOW if the size does not fit in size_t. */
MEMQ_EXPORT int memq_parse_size(const char *text, size_t *out);

/* The high-water mark MEMQ_AUTO stands for on this machine: from the
 * smaller of MemTotal (/proc/meminfo) and the process's cgroup memory limit
 * (cgroup v2 memory.max, walking up the hierarchy, or v1
 * memory.limit_in_bytes), L, it is 75% of L up to 8 GiB of L, plus 40% of
 * whatever L exceeds 8 GiB, capped at 8 GiB of quota.  The result never
 * decreases as L grows (see doc/auto-max.md for a table).  Returns 0 if
 * neither source gives a limit. */
MEMQ_EXPORT size_t memq_auto_max(void);

/* ======================================================================
 * Configuration
 * ====================================================================== */

typedef enum {
    MEMQ_RECLAIM_MANUAL = 0, /* the daemon calls memq_tracker_reclaim() */
    MEMQ_RECLAIM_THREAD = 1  /* an internal thread does */
} memq_reclaim_mode;

enum { MEMQ_LOG_ERROR = 0, MEMQ_LOG_WARN = 1, MEMQ_LOG_INFO = 2, MEMQ_LOG_DEBUG = 3 };

typedef struct memq_config {
    /* High-water mark in bytes.  MEMQ_AUTO: memq_auto_max().  MEMQ_UNLIMITED:
     * tracking is disabled: claims and releases only keep each
     * participation's own count, nothing is ever reclaimed. */
    size_t max;
    /* Reclamation stops at or below this.  0: 75% of max.  An explicit value
     * needs an explicit max, must be below it, and must leave
     * max - low_water >= 4 * cache_max. */
    size_t low_water;
    /* Bytes each participation may hold in its local cache (default 16 KiB).
     * 0: exact accounting, every claim and release touches the tracker. */
    size_t cache_max;
    memq_reclaim_mode reclaim_mode;
    /* Manual mode: called once when reclamation becomes needed, with no
     * lock held, on the thread that made it needed: a claim (or a pool's
     * slack, or memq_tracker_reconfigure()) crossing max, or a
     * memq_tracker_pressure() report, which with pressure_watch comes from
     * the watcher's own thread.  So it must be thread-safe even in a
     * single-threaded daemon, and only schedule work (event_active() on an
     * event_base made thread-aware, a write to a pipe).  Re-armed when an episode ends or a reclaim call
     * finds used <= max.  After an episode that stopped with nothing
     * reclaimable left, the next one starts only at a true crossing (used
     * back at or below max, then above) or once used has grown by a quarter
     * of max - low_water, so that a tracker stuck above max does not sweep
     * its accounts at every claim.  Also called in thread mode, where it is
     * only informative. */
    void (*wakeup)(void *ctx);
    void *wakeup_ctx;
    /* Diagnostics: one line, no newline, level MEMQ_LOG_*. */
    void (*log)(void *ctx, int level, const char *msg);
    void *log_ctx;
    /* A PENDING reclaim answer not completed within this many milliseconds
     * of the configured clock is treated as COLLAPSING.  Default 10000; must
     * be at least 1. */
    unsigned reclaim_timeout_ms;
    /* Real time one memq_tracker_reclaim() call may spend before it returns
     * MEMQ_EAGAIN (checked between callbacks, so one slow callback can
     * overrun it).  Default 1000; must be at least 1. */
    unsigned reclaim_budget_us;
    /* The clock for data ages, reclaim timeouts and the tracked containers'
     * stamps; NULL means memq_now().  It must be monotonic and thread-safe.
     * Budgets and duration statistics always use the real clock. */
    memq_time (*clock)(void *ctx);
    void *clock_ctx;

    /* ---- The machine's view (see memq_tracker_pressure()) ---- */
    /* A pressure episode reclaims down to this.  0: half of low_water.  An
     * explicit value must be at most low_water (and 0 when max is
     * MEMQ_UNLIMITED, which ignores pressure). */
    size_t pressure_low_water;
    /* At most one pressure episode starts in this many milliseconds of real
     * time; reports in between are counted and absorbed.  Default 1000;
     * must be at least 1. */
    unsigned pressure_interval_ms;
    /* A limit on the process's resident memory (RSS) in bytes; 0 (the
     * default) turns it off.  Crossing it starts an episode that reclaims
     * tracked memory oldest-first, never below low_water because of RSS
     * alone, and that stops (logged, counted in rss_stalls) when reclaiming
     * does not lower RSS.  Needs a tracked max (not MEMQ_UNLIMITED). */
    size_t rss_max;
    /* Opt in to the built-in pressure watcher: systemd's
     * $MEMORY_PRESSURE_WATCH, else the cgroup v2 memory.pressure, else
     * /proc/pressure/memory, else cgroup v1 memory.pressure_level.  A
     * source that refuses is logged, shown in the statistics and skipped;
     * tracker creation never fails because of it.  Default false. */
    bool pressure_watch;
    /* The PSI trigger the watcher writes when systemd gives none ("some
     * <stall> <window>", microseconds).  Defaults: systemd's, 200000 in
     * 2000000.  The kernel wants 500000 <= window <= 10000000 and
     * 0 < stall <= window. */
    unsigned pressure_stall_us, pressure_window_us;

    /* ---- The tracker's own chunk pool (memq_tracker_pool()) ---- */
    /* Bytes of empty spans the pool keeps for reuse instead of returning
     * them to the OS at once (counted as slack).  Default 0: 256 KiB. */
    size_t pool_reserve;
    /* Debug mode: guard pages around spans, freed chunks poisoned and
     * checked when reused (a use after free is reported). */
    bool pool_debug;
} memq_config;

/* Fill *cfg with the defaults: max MEMQ_AUTO, low_water 0 (auto),
 * cache_max 16 KiB, manual mode, no callbacks, reclaim_timeout_ms 10000,
 * reclaim_budget_us 1000, pressure_low_water 0 (auto),
 * pressure_interval_ms 1000, rss_max 0 (off), no pressure watcher,
 * pressure_stall_us 200000, pressure_window_us 2000000, pool_reserve 0
 * (auto), pool_debug false.  Ignores NULL. */
MEMQ_EXPORT void memq_config_init(memq_config *cfg);

/* Validate a configuration without creating anything.  Returns 0 if
 * memq_tracker_new() would accept it, else MEMQ_EINVAL and, if buf is not
 * NULL, a NUL-terminated message naming the field and the rule it breaks,
 * truncated to len bytes ("low_water: must be below max (...)"). */
MEMQ_EXPORT int memq_config_check(const memq_config *cfg, char *buf, size_t len);

/* ======================================================================
 * Tracker
 * ====================================================================== */

typedef struct memq_tracker memq_tracker;
typedef struct memq_account memq_account;
typedef struct memq_participation memq_participation;

/* Create a tracker.  The configuration is copied.  Returns 0 and stores the
 * handle in *out; MEMQ_EINVAL for NULL arguments or a configuration
 * memq_config_check() rejects (the message also goes to cfg->log);
 * MEMQ_ENOMEM; MEMQ_ESYSTEM if the notification descriptor or the reclaim
 * thread cannot be created. */
MEMQ_EXPORT int memq_tracker_new(memq_tracker **out, const memq_config *cfg);

/* Shut the tracker down: stop the reclaim thread (waiting for a callback
 * it is running, unless called from that callback), close every account,
 * and drop the caller's handle, which must not be used again.  Account and
 * participation handles still held stay valid memory: their claims fail
 * with MEMQ_ESHUTDOWN, releases are no-ops, and each must still be freed by
 * its owner; the tracker's memory goes with the last of them.  No callback
 * runs after this returns, except one already running on another thread
 * inside memq_tracker_reclaim().  Ignores NULL. */
MEMQ_EXPORT void memq_tracker_free(memq_tracker *t);

/* Apply a new configuration: marks, budgets, timeouts and the wakeup and
 * log callbacks take effect at once; lowering max below the current use
 * starts reclamation (calling wakeup as a crossing claim would).  A new
 * cache_max applies to each participation from its next refill.
 * Fixed at creation: reclaim_mode, the clock (clock, clock_ctx), the
 * watcher (pressure_watch, pressure_stall_us, pressure_window_us) and the
 * pool (pool_reserve, pool_debug); nor can max switch to or from
 * MEMQ_UNLIMITED.  Returns 0; MEMQ_EINVAL for NULL arguments or a rejected
 * configuration, a change to a field fixed at creation included (nothing
 * changes, the reason goes to cfg->log); MEMQ_ESHUTDOWN. */
MEMQ_EXPORT int memq_tracker_reconfigure(memq_tracker *t, const memq_config *cfg);

/* Copy the configuration in force into *out, with MEMQ_AUTO and the
 * other defaults resolved (max and low_water as bytes, pressure_low_water
 * set): a starting point for memq_tracker_reconfigure().  Returns 0;
 * MEMQ_EINVAL for NULL arguments (out is then untouched). */
MEMQ_EXPORT int memq_tracker_config(const memq_tracker *t, memq_config *out);

/* Bytes currently counted: everything claimed plus the participations'
 * caches (the over-count is at most cache_max per participation).  Exact
 * when no other thread claims or releases meanwhile; while they do, the
 * shared total and the threads' slices (see memq_claim) are read one
 * after the other, so the sum may be off by a refill or two in flight.  0
 * for NULL.  For an unlimited tracker, the sum of the participations' claims,
 * saturating at SIZE_MAX (it keeps no shared total, so a claim is only
 * checked against its own participation's). */
MEMQ_EXPORT size_t memq_tracker_used(const memq_tracker *t);

/* The configured clock's current time (memq_now() if none); 0 for NULL. */
MEMQ_EXPORT memq_time memq_tracker_now(const memq_tracker *t);

/* Do reclamation work now, for at most about reclaim_budget_us of real
 * time.  An episode runs across calls until used <= low_water.  The budget
 * is checked between steps, and every call does at least one: a step is
 * one account's batch of oldest callbacks or one reclaim callback, so only
 * a slow callback can overrun it.  Accounts holding memory are kept in an
 * index keyed by a lower bound of their data's age (see memq_claim_at());
 * a victim is the account on top whose fresh age keeps it there, so the
 * first one is found after a few checks, however many accounts there are.
 * When reclamation closes an account (a COLLAPSING answer, a timeout,
 * also one given through memq_reclaim_done() between calls), its other
 * participants are told (memq_participant_ops.reclaim with req->closed)
 * before any other work: the tracker stops counting their memory at once.
 * Returns 0 when nothing more is needed: used <= max and no episode runs,
 * or the episode just ended (at low water, or stopped because nothing
 * reclaimable was left: logged and counted as an unreclaimable event).
 * Returns MEMQ_EAGAIN when the budget ran out, when it waits for PENDING
 * answers, or when another thread is reclaiming: call again when
 * memq_tracker_fd() is readable.  MEMQ_ESHUTDOWN after the tracker was shut
 * down (from a callback), MEMQ_ENOMEM if it could not allocate a list it
 * works with (accounts set aside, an account's participations, a victim's
 * descendants): nothing is taken as unreclaimable for it, and the episode
 * is retried on the next call (the reclaim thread waits a second); MEMQ_EINVAL
 * for NULL.  Allowed in both modes and from callbacks (a nested call returns
 * MEMQ_EAGAIN). */
MEMQ_EXPORT int memq_tracker_reclaim(memq_tracker *t);

/* A descriptor, owned by the tracker, that is readable exactly when
 * memq_tracker_reclaim() has work to do: from the crossing of max until the
 * episode ends, except while the episode only waits for PENDING answers;
 * then it becomes readable again when an answer arrives or is abandoned,
 * when the earliest answer times out, or when a new claim charges the
 * tracker (the answers may no longer be enough).  Poll it for reading (epoll, libevent EV_READ|
 * EV_PERSIST); never read it yourself.  Returns the descriptor, or
 * MEMQ_EINVAL for NULL. */
MEMQ_EXPORT int memq_tracker_fd(memq_tracker *t);

typedef struct memq_stats {
    size_t used;                   /* as memq_tracker_used() */
    /* Highest used seen (unlimited: = used).  Refills and returns made
     * without the tracker's lock (see memq_claim) raise it when their
     * thread's slice of the total folds, so a short peak more than a
     * sixteenth of max - low_water below max may be missed by up to that. */
    size_t peak;
    size_t max, low_water;         /* the marks in force */
    size_t accounts;               /* open accounts */
    size_t participants;           /* registered participations */
    uint64_t episodes;             /* episodes started */
    uint64_t accounts_reclaimed;   /* victims: accounts sent a reclaim round */
    uint64_t accounts_collapsed;   /* accounts closed by a COLLAPSING answer or timeout */
    uint64_t partial_reclaims;     /* PARTIAL answers */
    /* Claims participants released when asked: over each reclaim callback
     * (whatever other participants claimed meanwhile), by a late answer
     * (memq_reclaim_done) or before a timeout, and over each notice of a
     * closed account.  What a participant keeps is not counted, even when
     * its account's collapse made the tracker forget it. */
    uint64_t bytes_reclaimed;
    uint64_t reclaim_ns_total;     /* real time spent in reclamation */
    uint64_t episode_ns_max;       /* longest episode, crossing to end */
    uint64_t unreclaimable_events; /* episodes stopped with nothing left to reclaim */
    uint64_t callback_timeouts;    /* PENDING answers that timed out */
    uint64_t misuse_events;        /* over-releases, stale handles, bad answers */

    /* What used is made of: claimed by participants, held in their caches
     * (the over-count, at most cache_max each), and slack that belongs to
     * no account (the chunk pools' free space).  used == claimed + cached
     * + slack in a snapshot taken while no other thread claims.  Summing
     * the claims costs one pass over the participations. */
    size_t claimed, cached, slack;

    /* The machine's view, read at memq_tracker_stats() and dump calls and
     * at episode starts (0 where there is no such figure). */
    size_t rss;                    /* the process's resident memory */
    int64_t untracked;             /* rss - used (negative: counted, not resident) */
    size_t cgroup_usage;           /* the process's cgroup's memory use */
    size_t cgroup_limit;           /* its limit (memory.max, memory.high or v1) */
    uint64_t pressure_events;      /* memq_tracker_pressure() reports */
    uint64_t pressure_episodes;    /* episodes they started */
    uint64_t rss_episodes;         /* episodes started by rss_max */
    uint64_t rss_stalls;           /* rss_max episodes that did not lower RSS */
    /* The built-in watcher: the source in use (MEMQ_WATCH_*, NONE if off
     * or none worked) and a mask (1 << MEMQ_WATCH_*) of the sources that
     * were tried and refused. */
    int watch_source;
    unsigned watch_refused;
} memq_stats;

/* Sources of the built-in pressure watcher, in the order they are tried. */
enum {
    MEMQ_WATCH_NONE = 0,
    MEMQ_WATCH_SYSTEMD = 1, /* $MEMORY_PRESSURE_WATCH / $MEMORY_PRESSURE_WRITE */
    MEMQ_WATCH_CGROUP2 = 2, /* the process's cgroup v2 memory.pressure */
    MEMQ_WATCH_PSI = 3,     /* /proc/pressure/memory */
    MEMQ_WATCH_CGROUP1 = 4  /* cgroup v1 memory.pressure_level */
};

/* Report that the machine is short of memory (a PSI trigger, a cgroup
 * event, a SIGDANGER of the daemon's own, or the built-in watcher).  The
 * report is counted in pressure_events; unless a pressure episode started
 * less than pressure_interval_ms ago, it starts one even when used <= max
 * (an episode already running takes its target): it reclaims oldest-first
 * down to pressure_low_water and stops there, however long the pressure
 * lasts.  It is driven like any episode (the wakeup callback,
 * memq_tracker_fd(), the reclaim thread).  Returns 1 if a pressure episode
 * was scheduled; 0 if the report was absorbed by the rate limit, or the
 * tracker is unlimited (nothing is tracked); MEMQ_EINVAL for NULL;
 * MEMQ_ESHUTDOWN.  Never calls a participant callback itself. */
MEMQ_EXPORT int memq_tracker_pressure(memq_tracker *t);

/* Fill *st with a consistent snapshot.  Zeroes *st for a NULL tracker;
 * ignores a NULL st. */
MEMQ_EXPORT void memq_tracker_stats(const memq_tracker *t, memq_stats *st);

enum { MEMQ_DUMP_TEXT = 0, MEMQ_DUMP_JSON = 1, MEMQ_DUMP_PROMETHEUS = 2 };

/* Write the tracker's statistics and its account tree to f: TEXT, an
 * indented tree, each account once (under the first of its parents
 * reached; an account with several parents lists them);
 * JSON, one object {"tracker":{...},"accounts":[...]} with each account's
 * parents by id; PROMETHEUS, the text exposition format (memq_* metrics,
 * one memq_account_used_bytes sample per account).  Each account shows its
 * id, name, claimed bytes, participants and the age of its oldest data as
 * last known to reclamation, a lower bound (omitted, or null in JSON,
 * before it was first asked).
 * Dumps call no participant callback.
 * The snapshot is taken under the lock and written after it is dropped.
 * Returns 0; MEMQ_EINVAL for NULL arguments or an unknown format;
 * MEMQ_ENOMEM; MEMQ_ESYSTEM if writing fails. */
MEMQ_EXPORT int memq_tracker_dump(memq_tracker *t, FILE *f, int format);

/* ======================================================================
 * Accounts
 * ====================================================================== */

/* Create an account, optionally as a child of parent (which must belong to
 * the same tracker and be open).  The caller holds one reference.  Returns
 * 0; MEMQ_EINVAL for NULL t or out, or a parent of another tracker;
 * MEMQ_ECLOSED if parent is closed; MEMQ_ESHUTDOWN; MEMQ_ENOMEM. */
MEMQ_EXPORT int memq_account_new(memq_tracker *t, memq_account *parent, memq_account **out);

/* Add one more parent to a.  Reclaiming any parent then reclaims a too.
 * Returns 0; MEMQ_EEXIST if parent already is one of a's parents;
 * MEMQ_ECYCLE if parent is a or one of its descendants; MEMQ_EINVAL for
 * NULL or accounts of different trackers; MEMQ_ECLOSED if either is closed;
 * MEMQ_ESHUTDOWN; MEMQ_ENOMEM. */
MEMQ_EXPORT int memq_account_add_parent(memq_account *a, memq_account *parent);

/* Take one more reference to a; returns a (NULL for NULL).  Works on a
 * closed account too: handles stay valid until their last unref. */
MEMQ_EXPORT memq_account *memq_account_ref(memq_account *a);

/* Drop one reference.  The last one closes the account if it is still
 * open: everything its participants claim is released, they fail further
 * claims with MEMQ_ECLOSED (their handles must still be freed by their
 * owners), and its children stay open but lose this parent.  Unreffing an
 * account with no references left is counted as misuse and ignored.
 * Ignores NULL. */
MEMQ_EXPORT void memq_account_unref(memq_account *a);

/* The account's id: unique in its tracker, never reused.  0 for NULL. */
MEMQ_EXPORT uint64_t memq_account_id(const memq_account *a);

/* A weak reference: the account with that id, with its count raised (the
 * caller must unref it), or NULL if there is none or it is closed. */
MEMQ_EXPORT memq_account *memq_account_find(memq_tracker *t, uint64_t id);

/* Set the name shown in dumps and logs (copied; NULL clears it).
 * Returns 0; MEMQ_EINVAL for a NULL account; MEMQ_ENOMEM. */
MEMQ_EXPORT int memq_account_set_name(memq_account *a, const char *name);

/* The tracker the account belongs to (NULL for NULL).  After
 * memq_tracker_free() the pointer must not be used. */
MEMQ_EXPORT memq_tracker *memq_account_tracker(const memq_account *a);

/* Bytes currently claimed by the account's own participants (not its
 * descendants', not the caches).  0 for NULL or a closed account. */
MEMQ_EXPORT size_t memq_account_used(const memq_account *a);

/* True once the account is closed (last unref, a COLLAPSING answer, a
 * reclaim timeout, or tracker shutdown).  True for NULL. */
MEMQ_EXPORT bool memq_account_closed(const memq_account *a);

/* ======================================================================
 * Participants
 * ====================================================================== */

typedef struct memq_reclaim_request {
    /* used - low_water when the round started: a hint of how much to free. */
    size_t want;
    /* The next candidate's oldest data time (MEMQ_TIME_MAX: there is none).
     * Free oldest first until you have freed want or hold nothing older
     * than this. */
    memq_time older_than;
    /* True when this is not a request but a notice: the account was
     * closed by reclamation (a participant's COLLAPSING answer, or a
     * reclaim timeout).  Free everything you hold and release it; the
     * answer is ignored.  want is then what you claim, older_than
     * MEMQ_TIME_MAX. */
    bool closed;
} memq_reclaim_request;

typedef enum {
    MEMQ_RECLAIMED_PARTIAL = 0,    /* freed some (already released); ask again if needed */
    MEMQ_RECLAIMED_COLLAPSING = 1, /* tearing down: forget this account's memory now */
    MEMQ_RECLAIM_PENDING = 2       /* will answer later with memq_reclaim_done() */
} memq_reclaim_status;

typedef struct memq_participant_ops {
    /* Store the time of the oldest data held and return true, or return
     * false if none is held.  A participant that claims memory but says it
     * holds no data is treated as holding the oldest possible data: it
     * cannot hide from reclamation. */
    bool (*oldest)(void *self, memq_time *when);
    /* Give memory back (see memq_reclaim_status).  Memory freed must be
     * released with memq_release() before the answer is given.  Any other
     * value is counted as misuse and treated as PARTIAL.  Also called, once,
     * with req->closed true when reclamation closed the participant's
     * account (another participant's COLLAPSING answer, or a reclaim
     * timeout): then free and release everything; the answer is ignored. */
    memq_reclaim_status (*reclaim)(void *self, const memq_reclaim_request *req);
} memq_participant_ops;

/* Register a participant on account a.  ops must stay valid until the
 * participation is freed; self is passed to its callbacks.  The new
 * participation holds no cache until its first claim.  Returns 0;
 * MEMQ_EINVAL for NULL arguments or NULL callbacks; MEMQ_ECLOSED;
 * MEMQ_ESHUTDOWN; MEMQ_ENOMEM. */
MEMQ_EXPORT int memq_participant_register(memq_account *a, const memq_participant_ops *ops,
                                          void *self, memq_participation **out);

/* Report that the participant now holds n more bytes.  Never refused for
 * being over quota: crossing max starts reclamation instead.  Usually
 * served from the participation's cache with no lock and no atomic
 * read-modify-write.  A refill of the cache (or a release that overflows
 * it) takes the tracker's lock only when it must: while no reclamation is
 * wanted, the total is more than a sixteenth of max - low_water below max
 * and the account keeps holding memory, it takes the account's spin lock
 * and adds to the calling thread's slice of the total instead, so threads
 * using different accounts share no cache line.  The total stays exact.
 * Returns 0; MEMQ_ECLOSED once the account is closed; MEMQ_ESHUTDOWN
 * after memq_tracker_free() (it wins over MEMQ_ECLOSED); MEMQ_EOVERFLOW if the participation's claim would overflow size_t, or
 * the tracker's total exceed SIZE_MAX - SIZE_MAX / 256 (the rest is room
 * for the pools' slack, which is never refused); MEMQ_ENOMEM if the
 * account starts holding memory and its entry in the age index cannot be
 * allocated (16 bytes, never in the fast path); MEMQ_EINVAL for NULL,
 * or for a freed participation while the library still holds its memory
 * (using a freed handle is otherwise undefined).  A claim of 0 bytes only
 * checks these.  Data claimed is taken to be no older than the claim (see
 * memq_claim_at()). */
MEMQ_EXPORT int memq_claim(memq_participation *p, size_t n);

/* memq_claim() for data stamped `when`: data that arrived then and is
 * claimed only now, such as cells moved from another account's queue with
 * their stamps, or a container's data stamped just before the claim.
 * Victim selection assumes that what an account claims is no older than
 * the claim (or than the oldest data it last reported); this gives it the
 * data's own time instead.  Served from the cache without a lock, as
 * memq_claim(), while `when` is no older than the account's key in the age
 * index (a lower bound of its data's age); otherwise it takes the
 * tracker's lock and files `when`, in the same step as the claim.
 * Returns what memq_claim() returns. */
MEMQ_EXPORT int memq_claim_at(memq_participation *p, size_t n, memq_time when);

/* Report that the participant freed n bytes.  Cannot fail: releasing more
 * than is claimed is clamped and counted as misuse; after the account is
 * closed, releases change nothing.  Ignores NULL. */
MEMQ_EXPORT void memq_release(memq_participation *p, size_t n);

/* Unregister: release whatever is still claimed and free the handle.  No
 * callback for this participant runs after it returns: if one is running
 * on another thread, this waits for it (so do not call it holding a lock
 * your callbacks take); it may be called from the participant's own
 * callback.  A PENDING answer is abandoned.  Ignores NULL; a second free
 * is counted as misuse while the library still holds the memory (for
 * example during a callback), and is undefined otherwise. */
MEMQ_EXPORT void memq_participation_free(memq_participation *p);

/* Complete a MEMQ_RECLAIM_PENDING answer with MEMQ_RECLAIMED_PARTIAL or
 * MEMQ_RECLAIMED_COLLAPSING.  Ignored if no answer is pending (it timed
 * out, or the account closed meanwhile); any other status is counted as
 * misuse and treated as PARTIAL.  Ignores NULL. */
MEMQ_EXPORT void memq_reclaim_done(memq_participation *p, memq_reclaim_status st);

/* The bytes currently claimed through p (0 for NULL or once closed). */
MEMQ_EXPORT size_t memq_participation_claimed(const memq_participation *p);

#ifdef __cplusplus
}
#endif

/* The chunk pool, then the tracked queue and byte buffer built on it. */
#include "memquota/pool.h"
#include "memquota/containers.h"

#endif /* MEMQUOTA_H */
