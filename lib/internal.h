/*
 * internal.h - the library's shared structures and internal functions.
 * Never installed.
 *
 * Locking: one mutex per tracker (t->lock) protects everything below that
 * is not marked otherwise.  The fast path of memq_claim()/memq_release()
 * touches only the owner's fields of a participation (see struct
 * memq_participation) and takes no lock.  User code (participant
 * callbacks, wakeup, log, clock) is never called with t->lock held.
 *
 * Lifetimes: handles are pointers.  A participation struct lives while its
 * owner has not freed it or the reclaimer holds a reference (refs); an
 * account struct while it has user references or participation structs
 * (pins); a tracker struct while its owner has not freed it or any account
 * struct or running reclaim call holds it (refs).
 */
#ifndef MEMQ_INTERNAL_H
#define MEMQ_INTERNAL_H

#include "memquota.h"
#include "core.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>


#define MEMQ_MAGIC_TRACKER 0x54524b52u       /* "TRKR" */
#define MEMQ_MAGIC_ACCOUNT 0x41434354u       /* "ACCT" */
#define MEMQ_MAGIC_PARTICIPATION 0x50415254u /* "PART" */
#define MEMQ_MAGIC_DEAD 0xdeadbeefu

#define MEMQ_DEFAULT_CACHE_MAX ((size_t)16 * 1024)

/* A participation's gate.  OPEN: claims may be served from the cache.
 * CLOSED: its account closed or the tracker shut down; claims fail.
 * OFFER: an episode found its account holding no claims (only cache); the
 * next claim takes the slow path, which reopens the gate and offers the
 * account to the episode again. */
enum { MEMQ_GATE_OPEN = 0, MEMQ_GATE_CLOSED = 1, MEMQ_GATE_OFFER = 2 };

/* ======================================================================
 * Participations
 * ====================================================================== */

struct memq_participation {
    /* --- The owner's fast path: first cache line. --- */
    /* Bytes charged to the tracker but not claimed (owner-only). */
    size_t cache;
    /* Bytes the participant claims.  Written only by the thread using the
     * participation; read by others (relaxed) for statistics and victim
     * selection. */
    _Atomic size_t claimed;
    /* A release keeps at most this much in the cache.  Written under the
     * lock: set to 0 while the participation is asked to reclaim, so that
     * whatever it frees goes back to the tracker at once. */
    _Atomic size_t cache_limit;
    /* MEMQ_GATE_*: written under the lock, read by the claim fast path,
     * which serves a claim only while the gate is open. */
    _Atomic unsigned char gate;

    /* memq_participation_free() was called.  Atomic: the reclaimer checks
     * it between the callbacks of a batch, without the lock. */
    _Atomic unsigned char freed;
    unsigned char pending; /* a PENDING answer is outstanding */
    /* What memq_reclaim_done() said during the reclaim callback, or
     * MEMQ_RECLAIM_PENDING for nothing yet. */
    signed char early_answer;
    uint32_t magic;

    /* claimed + cache, as counted in the tracker: written under the
     * account's spin lock (see memq__spin_lock); read anywhere. */
    _Atomic size_t charged;

    /* --- Under the tracker lock. --- */
    memq_account *account;
    const memq_participant_ops *ops;
    void *self;
    memq_participation *prev, *next; /* in the account's list */
    unsigned refs;                   /* owner + reclaimer snapshots */
    /* A target of the round in progress (or of a PENDING answer): its
     * cache_limit stays 0, so what it frees goes back to the tracker even
     * if it refills meanwhile.  Written under the lock and the account's
     * spin lock; read under either. */
    bool asked;
    /* Reclamation's own marks, under the lock (read_empty: by the
     * reclaimer during a batch): read as holding no claims in the last
     * batch; told that its account was closed by reclamation. */
    bool read_empty;
    unsigned char noticed;
};

/* ======================================================================
 * Accounts
 * ====================================================================== */

/* One end of a parent-child edge: the account at the other end, and the
 * index of this edge in that account's list, so that unlinking is O(1). */
typedef struct memq_link {
    memq_account *a;
    uint32_t back;
} memq_link;

/* A growable array of edges, allocated only when non-empty (most accounts
 * have no children and at most one parent). */
typedef struct memq_account_list {
    uint32_t n, cap;
    memq_link items[];
} memq_account_list;

static inline uint32_t memq__list_n(const memq_account_list *l)
{
    return l != NULL ? l->n : 0;
}

/* What most accounts do without (a name, children, a second parent),
 * allocated on first use so that a plain account stays small. */
typedef struct memq_account_extra {
    char *name;
    memq_account_list *more_parents; /* its parents after the first */
    memq_account_list *children;
} memq_account_extra;

struct memq_account {
    uint32_t magic;
    uint32_t refs;         /* user references */
    uint64_t id;
    memq_tracker *tracker;
    memq_account_extra *extra;        /* NULL until needed */
    /* Its first parent (a NULL: none), inline: most children have one
     * parent and need no extra part at all.  Its parents in order are
     * this one, then extra->more_parents (memq__parent_link). */
    memq_link parent;
    memq_participation *participants; /* doubly linked, NULL-terminated */
    _Atomic size_t charged;   /* sum of the participants' charged (spin) */
    /* Its key in the age index, for memq_claim_at() without the lock;
     * MEMQ_TIME_MAX when out of the index or set aside (ages.c). */
    _Atomic memq_time key_hint;
    union {
        /* Open: the age of its oldest data as last known to reclamation
         * (a lower bound: what it reported, or the key it gets back when
         * set aside), or MEMQ_TIME_MAX. */
        memq_time oldest_seen;
        /* Closed by reclamation: the next account in the tracker's notice
         * list (reclaim.c). */
        memq_account *notice_next;
    };
    uint32_t visit;           /* traversal mark (t->visit) */
    uint32_t pins;            /* participation structs (and lists) that point here */
    uint32_t slot;            /* 1 + its index in t->ages; 0: not there */
    /* Guards charged, with the participations' charged and gates, for the
     * refills and returns that go through a stock without the tracker's
     * lock; taken after the tracker's lock when both are. */
    _Atomic bool spin;
    bool closed;
    /* Under the lock.  dropped: found holding only cache, set aside, its
     * gates on offer, until one of its participants claims or the episode
     * ends.  aside: set aside for the episode (ages.c); listed: in the
     * episode's aside list (pinned there until the episode ends).  An
     * account in the tracker's notice list (closed by reclamation, its
     * participants not all told yet) is pinned while there. */
    unsigned char dropped : 1, aside : 1, listed : 1;
};

/* ======================================================================
 * The reclamation engine's state (reclaim.c)
 * ====================================================================== */

/* An entry of the age index (t->ages): a min-heap of the accounts holding
 * memory, keyed by a lower bound of the time of their oldest data. */
typedef struct memq_age {
    memq_time key;
    memq_account *a;
} memq_age;

/* An account by id with an age: a round's victim. */
typedef struct memq_candidate {
    memq_time oldest;
    uint64_t id;
} memq_candidate;


typedef struct memq_snapshot {
    memq_participation **items; /* each holds a reference */
    size_t n, cap, next;
} memq_snapshot;

typedef struct memq_pending {
    memq_participation *p; /* holds a reference */
    memq_time deadline;    /* configured clock */
    size_t claimed;        /* what it claimed when asked: gives what it freed */
} memq_pending;

typedef struct memq_episode {
    bool active;
    bool pressure; /* started or joined by a pressure report: ends lower */
    bool rss;      /* started or joined by rss_max */
    bool crossed;  /* used went above max during it: low water at least */
    size_t rss_target;
    bool waiting;    /* the last call returned waiting for PENDING answers */
    uint64_t start_ns; /* real clock */
    /* Accounts set aside in this episode (keyed MEMQ_TIME_MAX in t->ages
     * until their key comes back): the round's victim, those that gave
     * nothing back, those found holding only cache.  Each once (listed),
     * pinned until the episode ends. */
    memq_account **aside;
    size_t aside_n, aside_cap;
    memq_snapshot scratch; /* one account's participants, while re-checked */
    /* The round in progress: the victim's and descendants' participations. */
    bool round_active;
    bool round_progress; /* something was freed, collapsed or deferred */
    bool targets_short;  /* no memory to list a victim's participants */
    memq_candidate victim;
    memq_reclaim_request request;
    memq_snapshot targets;
    memq_pending *pending;
    size_t pending_n, pending_cap;
} memq_episode;

/* ======================================================================
 * Trackers
 * ====================================================================== */

/* A slice of the tracker's total: what the refills and returns made
 * without the tracker's lock by the threads using it added (modulo 2^64:
 * it goes down too) since it was last folded into used (participation.c).
 * A thread uses one of MEMQ_SLICES, chosen when it first needs one. */
#define MEMQ_SLICES 16
typedef struct memq_slice {
    _Atomic size_t bytes;
    char apart[56]; /* one cache line each (any two 64 bytes apart) */
} memq_slice;

struct memq_tracker {
    uint32_t magic;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* callback finished; thread wakeups */
    memq_config cfg;
    /* The clock, fixed at creation: read without the lock (cfg is not). */
    memq_time (*clock)(void *ctx);
    void *clock_ctx;
    bool unlimited;
    bool shutdown;
    unsigned refs;

    /* Counted bytes: used plus the slices is the total (memq__used).
     * Atomic read-modify-writes, with or without the lock; on a cache
     * line of their own (64 bytes from anything else). */
    char apart1[64];
    _Atomic size_t used;
    _Atomic size_t peak;
    _Atomic size_t slack; /* the part of the total no account holds (core.h) */
    char apart2[64];

    /* What the refills and returns without the lock read
     * (participation.c); written under the lock.  Apart from the lock
     * and the counters. */
    struct {
        _Atomic bool off;      /* none now: an episode is wanted or runs */
        _Atomic size_t batch;  /* a slice folds beyond +-batch; 0: no slices */
        _Atomic bool counted;  /* batch was once on: the slices count */
        _Atomic size_t max;    /* cfg.max and cfg.cache_max, for them */
        _Atomic size_t cache_max;
        memq_slice *slices;    /* MEMQ_SLICES of them */
    } lockfree;
    char apart3[64];

    /* The open accounts by id (ids.c). */
    memq_account **ids;
    size_t ids_cap, naccounts;
    unsigned ids_bits;
    /* The age index: every open account with charged > 0.  See reclaim.c. */
    memq_age *ages;
    size_t ages_n, ages_cap;
    uint64_t next_id;
    uint32_t visit;
    /* List entries visited to link and unlink accounts: what a test
     * counts to prove that closing stays linear. */
    uint64_t link_steps;
    size_t nparticipants;

    /* Wakeup and notification. */
    /* used crossed max and reclamation is wanted.  Its rise calls
     * cfg.wakeup; it falls when an episode ends or a reclaim call finds
     * used <= max, which re-arms the wakeup. */
    bool wanted;
    uint64_t crossed_ns; /* real clock, when wanted rose */
    size_t retry_above;  /* after an unreclaimable stop, see check_crossing */
    int notify_fd;      /* timerfd: readable when reclaim has work */
    int64_t notify_at;  /* 0: disarmed, 1: now, else ns from arming */

    /* The single active reclaimer and the callback it runs. */
    bool reclaiming;
    pthread_t reclaimer;
    memq_participation *in_callback; /* its reclaim callback runs */
    memq_account *refreshing;        /* its participants' oldest run */
    memq_time refresh_floor;         /* claimed on it meanwhile */
    unsigned callback_waiters;

    memq_episode ep;
    /* Accounts closed by reclamation whose participants have not all heard
     * of it yet (reclaim.c), first to last.  Outlive an episode. */
    memq_account *notice_head, *notice_tail;

    /* Thread mode. */
    bool thread_started;
    pthread_t thread;

    /* The machine (machine.c).  Pressure reports: */
    bool pressure_wanted;      /* an episode down to pressure_low_water is due */
    uint64_t pressure_last_ns; /* real clock, when the last one was scheduled */
    struct memq_watcher *watcher; /* the built-in watcher, if any */
    /* The figures, as last read (machine_ns, real clock; 0: never). */
    uint64_t machine_ns;
    size_t machine_rss, machine_cgroup_usage, machine_cgroup_limit;
    /* rss_max: where RSS comes from (NULL: /proc/self/statm; tests inject
     * one), the last check, and the state of RSS episodes. */
    size_t (*rss_read)(void *ctx);
    void *rss_read_ctx;
    uint64_t rss_checked_ns;
    bool rss_wanted, rss_after_episode, rss_stall_logged;
    size_t rss_target;     /* what an RSS episode aims at (never below low_water) */
    size_t rss_before;     /* RSS when the last RSS episode started */
    uint64_t rss_reclaimed_before; /* bytes_reclaimed then */
    size_t rss_retry_above; /* after a stall: no RSS episode below this */

    memq_stats stats; /* counters; used/peak/max/... filled on read */
    bool misuse_logged;
    const char *misuse_note; /* a first misuse seen under the lock, to log */
};

/* ---- ids.c: the open accounts by id, under the lock ---- */
bool memq__ids_add(memq_tracker *t, memq_account *a); /* false: out of memory */
void memq__ids_remove(memq_tracker *t, memq_account *a);
memq_account *memq__ids_find(const memq_tracker *t, uint64_t id);
/* The next open account from slot *i on (advancing *i), NULL at the end:
 * for (size_t i = 0; (a = memq__ids_next(t, &i)) != NULL;) visits each
 * once, as long as nothing is added or removed meanwhile. */
memq_account *memq__ids_next(const memq_tracker *t, size_t *i);
/* Close every open account (tracker shutdown). */
void memq__ids_close_all(memq_tracker *t);

/* ---- library.c ---- */
/* Room for one more in a growable array of n items of `size` bytes:
 * returns the array, reallocated (doubling, from `first`) if it was full,
 * or NULL, the array left as it was, if that failed. */
void *memq__room_for_one(void *items, size_t n, size_t *cap, size_t size, size_t first);

/* ---- tracker.c ---- */
/* Free the tracker, whose lock is held and whose last reference is gone. */
void memq__tracker_destroy(memq_tracker *t);

/* Inline: the claim and release slow paths take them. */
static inline void memq__lock(memq_tracker *t)
{
    pthread_mutex_lock(&t->lock);
}

/* Unlock; if t->refs dropped to 0 meanwhile, destroy the tracker instead:
 * the one place a tracker's memory goes. */
static inline void memq__unlock(memq_tracker *t)
{
    if (t->refs == 0)
        memq__tracker_destroy(t);
    else
        pthread_mutex_unlock(&t->lock);
}

/* ---- total.c ---- */
/* The total: used plus the slices (exact when nothing is in flight). */
size_t memq__used(const memq_tracker *t);
/* Under the lock, after what decides it changed (a crossing, an episode,
 * shutdown, reconfiguration): allow refills and returns without the lock,
 * or not; folds the slices when their batch shrinks. */
void memq__lockfree_update(memq_tracker *t);
/* The calling thread's slice, 1 + its index (0: none yet); chosen once,
 * round robin.  initial-exec: a plain %fs-relative load, not a
 * __tls_get_addr call (which cost more than the rest of a refill). */
extern _Thread_local unsigned memq__my_slice __attribute__((tls_model("initial-exec")));
unsigned memq__pick_slice(void);

/* Add delta (modulo 2^64) to the calling thread's slice; fold it into used
 * if it drifted beyond +-batch.  Returns what it folded, or 0.  Inline:
 * it is most of a refill without the lock. */
static inline size_t memq__slice_add(memq_tracker *t, size_t delta)
{
    unsigned i = memq__my_slice != 0 ? memq__my_slice : memq__pick_slice();
    memq_slice *s = &t->lockfree.slices[i - 1];
    size_t v = atomic_fetch_add_explicit(&s->bytes, delta, memory_order_relaxed) + delta;
    size_t batch = atomic_load_explicit(&t->lockfree.batch, memory_order_relaxed);
    if (v <= batch || v >= (size_t)0 - batch)
        return 0;
    atomic_fetch_add_explicit(&t->used, v, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->bytes, v, memory_order_relaxed);
    return v;
}

/* Whether a refill of `charge` without the lock cannot cross max, however
 * full the slices are (each holds at most batch until it folds).  used
 * alone goes below 0 when closes forget charges still in slices. */
static inline bool memq__far_below_max(const memq_tracker *t, size_t charge)
{
    size_t max = atomic_load_explicit(&t->lockfree.max, memory_order_relaxed);
    size_t reach =
        MEMQ_SLICES * atomic_load_explicit(&t->lockfree.batch, memory_order_relaxed) + charge;
    size_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    return max >= reach && (used > SIZE_MAX / 2 || used <= max - reach);
}

/* Raise the peak to a total seen. */
static inline void memq__peak(memq_tracker *t, size_t used)
{
    size_t peak = atomic_load_explicit(&t->peak, memory_order_relaxed);
    while (used > peak && !atomic_compare_exchange_weak_explicit(
                              &t->peak, &peak, used, memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* Add to/subtract from the counted total (with or without the lock). */
/* The most a claim may take the shared total to (MEMQ_EOVERFLOW beyond).
 * The rest of size_t's range is room for slack, which is real memory the
 * rooms beside the core cannot refuse to count (a user address space is
 * at most 2^56 bytes): the total never wraps. */
#define MEMQ_TOTAL_MAX (SIZE_MAX - SIZE_MAX / 256)

static inline void memq__used_add(memq_tracker *t, size_t n)
{
    atomic_fetch_add_explicit(&t->used, n, memory_order_relaxed);
    memq__peak(t, memq__used(t));
}

static inline void memq__used_sub(memq_tracker *t, size_t n)
{
    atomic_fetch_sub_explicit(&t->used, n, memory_order_relaxed);
}

/* An account's spin lock: held for a few loads and stores. */
void memq__spin_wait(memq_account *a);
static inline void memq__spin_lock(memq_account *a)
{
    if (atomic_exchange_explicit(&a->spin, true, memory_order_acquire))
        memq__spin_wait(a);
}

static inline void memq__spin_unlock(memq_account *a)
{
    atomic_store_explicit(&a->spin, false, memory_order_release);
}
memq_time memq__clock(const memq_tracker *t);
uint64_t memq__real_ns(void);
/* Make the notification descriptor readable now (delay 1), after delay ns,
 * or never (0).  Under the lock. */
void memq__notify(memq_tracker *t, int64_t delay_ns);
/* Under the lock, after `added` bytes were charged (0: an explicit
 * reconfiguration): does used > max start reclamation now?  If so, marks
 * the need (fd, thread) and returns true if cfg.wakeup must be called once
 * the lock is dropped. */
bool memq__check_crossing(memq_tracker *t, size_t added);
/* Count one misuse, under the lock; the first one is logged (as `what`)
 * by the next memq__unlock_log() or reclaim call. */
void memq__misuse_locked(memq_tracker *t, const char *what);
/* Unlock, then log a misuse noted meanwhile, touching nothing of t after
 * unlocking (the tracker may be gone by then). */
void memq__unlock_log(memq_tracker *t);

/* ---- config.c ---- */
/* Resolve MEMQ_AUTO marks into *out; returns what memq_config_check would. */
int memq__config_resolve(const memq_config *cfg, memq_config *out, char *buf, size_t len);
/* memq_auto_max from a root directory holding proc/ and sys/ (tests). */
size_t memq__auto_max_at(const char *root);
size_t memq__auto_max_from(uint64_t limit_bytes);

/* ---- account.c ---- */
static inline memq_account_list *memq__more_parents(const memq_account *a)
{
    return a->extra != NULL ? a->extra->more_parents : NULL;
}

/* How many parents a has, and the edge to its i-th (0: the inline one). */
static inline uint32_t memq__parents_n(const memq_account *a)
{
    return a->parent.a == NULL ? 0 : 1 + memq__list_n(memq__more_parents(a));
}

static inline memq_link *memq__parent_link(memq_account *a, uint32_t i)
{
    return i == 0 ? &a->parent : &a->extra->more_parents->items[i - 1];
}

static inline memq_account_list *memq__children(const memq_account *a)
{
    return a->extra != NULL ? a->extra->children : NULL;
}

static inline const char *memq__name(const memq_account *a)
{
    return a->extra != NULL ? a->extra->name : NULL;
}

/* Close a if open, forgetting its participants' usage, then free it if
 * nothing holds it.  Under the lock. */
void memq__account_close(memq_account *a);
/* Free a if closed and nothing refers to it; under the lock. */
void memq__account_maybe_free(memq_account *a);
bool memq__account_valid(const memq_account *a);
/* Call fn on a and each descendant once, under the lock.  Returns false
 * on allocation failure. */
bool memq__account_walk(memq_account *a, void (*fn)(memq_account *, void *), void *arg);

/* ---- participation.c ---- */
static inline bool memq__closed(const memq_participation *p)
{
    return atomic_load_explicit(&p->gate, memory_order_relaxed) == MEMQ_GATE_CLOSED;
}
void memq__participation_unref(memq_participation *p);
bool memq__participation_valid(const memq_participation *p);
/* Forget p's charge (account closing or shutdown).  Under the lock. */
void memq__participation_close(memq_participation *p);
/* Mark p as a target of reclamation (its cache_limit 0), or no longer.
 * Under the lock. */
void memq__participation_ask(memq_participation *p, bool asked);

/* ---- machine.c ---- */
/* Read the machine's figures if the last reading is old; no lock held. */
void memq__machine_refresh(memq_tracker *t);
/* The figures into *st (used already set), under the lock. */
void memq__machine_stats(const memq_tracker *t, memq_stats *st);
/* No lock held: check RSS against rss_max if due (maybe starting an RSS
 * episode).  Returns the delay until the next check (ns), 0 if none. */
int64_t memq__rss_check(memq_tracker *t);
/* Under the lock: an episode that RSS took part in ended. */
void memq__rss_episode_ended(memq_tracker *t);
/* Start the built-in watcher if configured (tracker creation, no lock);
 * stop it (tracker shutdown, first, no lock). */
void memq__watcher_begin(memq_tracker *t);
void memq__watcher_end(memq_tracker *t);

/* ---- stats.c ---- */
/* The sum of the open participations' claims, saturating; under the lock. */
size_t memq__claims_sum(const memq_tracker *t);

/* ---- ages.c: the age index, under the lock ---- */
/* Make room for one more entry (false: out of memory). */
bool memq__ages_reserve(memq_tracker *t);
/* Take a out (it holds nothing any more), and out of the aside list. */
void memq__ages_leave(memq_tracker *t, memq_account *a);
/* a holds data from `when` on: enter it (room was reserved) or lower its
 * key (or the key it gets back) to `when`; an account set aside for
 * holding only cache is a candidate again.  Ignores a closed account. */
void memq__ages_claimed(memq_tracker *t, memq_account *a, memq_time when);
void memq__ages_rekey(memq_tracker *t, memq_account *a, memq_time key);
memq_time memq__ages_key(const memq_tracker *t, const memq_account *a);
/* The account on top, NULL if none is in the running. */
memq_account *memq__ages_top(const memq_tracker *t);
/* Set a aside for the episode (room reserved with memq__aside_reserve(),
 * else a stays in the running) remembering `key`; give it back. */
bool memq__aside_reserve(memq_tracker *t);
void memq__set_aside(memq_tracker *t, memq_account *a, memq_time key);
void memq__restore(memq_tracker *t, memq_account *a);
void memq__restore_all(memq_tracker *t);

/* ---- reclaim.c ---- */
/* Abandon p's pending answer (freed or closed).  Under the lock. */
void memq__episode_forget(memq_tracker *t, memq_participation *p);
/* End the episode's state: targets, pending answers, accounts set aside.
 * Under the lock. */
void memq__episode_clear(memq_tracker *t);
/* Forget the accounts whose participants were still to be told of their
 * collapse (tracker shutdown: no callback runs after it).  Under the lock. */
void memq__notices_clear(memq_tracker *t);
/* Thread mode: the reclaim thread's body. */
void *memq__reclaim_thread(void *arg);
/* Earliest pending deadline or MEMQ_TIME_MAX.  Under the lock. */
memq_time memq__episode_next_deadline(const memq_tracker *t);

#endif /* MEMQ_INTERNAL_H */
