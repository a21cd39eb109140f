/*
 * model.c - the operation interpreter, its reference model and the
 * invariants (see model.h).
 *
 * The model is plain data: which accounts exist, their parents, how many
 * references the interpreter holds, whether they are open; which
 * participations are registered, the chunks of data each holds with their
 * stamps, how each answers a reclaim request, and whether the library owes
 * it an answer (a PENDING one outstanding, with its deadline).  From it the
 * interpreter predicts every return code and counter.
 *
 * Invariants checked after every step (check_state) and in callbacks:
 *  - used equals the sum of the library's records (the participations'
 *    charges, internally: claimed + cache), and lies within
 *    [true total, true total + cache_max * open participations], the true
 *    total being what the model's participants hold in open accounts;
 *    every participation's and account's claimed bytes equal the model's;
 *  - open/closed state of every account, the number of accounts and
 *    participations, and the counters misuse_events, accounts_collapsed,
 *    partial_reclaims and callback_timeouts equal the model's predictions;
 *  - victims are chosen oldest-first: when a round starts, the account
 *    asked is a descendant of a candidate whose data is no newer than that
 *    of every account not yet asked in this episode (participants that
 *    report no data while holding some are exempt: check_hostile.c covers
 *    them); every participant asked in the round is a descendant of such a
 *    victim; the request's `want` is used - low_water and `older_than` is
 *    no newer than any other candidate's data;
 *  - no callback reaches a freed participation or a closed account, and a
 *    PENDING answer is never asked again while outstanding, except the
 *    notice (req->closed) that every participant of an account closed by
 *    reclamation (a COLLAPSING answer, a timeout) gets, once, but the one
 *    that answered COLLAPSING: all of them before the reclaim call that
 *    runs the episode returns 0;
 *  - closed accounts refuse claims (MEMQ_ECLOSED), a shut-down tracker's
 *    handles refuse them with MEMQ_ESHUTDOWN; ids are never reused and
 *    memq_account_find() is a weak reference;
 *  - an episode that ends without being counted as unreclaimable leaves
 *    used <= low_water; a reclaim call that returns 0 without an episode
 *    leaves used <= max; wakeup is called exactly once per crossing; the
 *    descriptor is readable while reclamation is wanted and nothing is
 *    pending, and not readable once it is not wanted;
 *  - at the end of a run every participant is made cooperative, and
 *    reclamation must finish (no wedge) below max, never declaring an
 *    episode unreclaimable while cooperative participants hold data.
 */
#include "model.h"

#include "internal.h" /* -Ilib: the library's own records, for invariants */

#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../det_clock.h" /* the budget, repeatable: see there */

/* ======================================================================
 * The model's data
 * ====================================================================== */

#define MM_ACC 64    /* accounts per run; a bit mask holds a set of them */
#define MM_PART 128  /* participations per run */
#define MM_CHUNKS 16 /* stamped chunks per participant */
#define MS ((memq_time)1000000)

/* How a participant answers a reclaim request. */
enum {
    B_GOOD,          /* frees oldest first per the request (at least one chunk): PARTIAL */
    B_ALL,           /* frees everything: PARTIAL */
    B_NONE,          /* frees nothing: PARTIAL */
    B_COLLAPSE,      /* COLLAPSING (sometimes after freeing half) */
    B_PENDING,       /* PENDING, completed later by OP_COMPLETE */
    B_NEVER,         /* PENDING, never completed: times out */
    B_INVALID,       /* returns a status that does not exist */
    B_CLAIM_MORE,    /* claims more memory while being reclaimed */
    B_FREE_SELF,     /* frees its own participation, answers PARTIAL */
    B_FREE_SELF_COLLAPSE, /* frees its own participation, answers COLLAPSING */
    B_UNREF_ACCOUNT, /* drops the interpreter's reference to its account */
    B_FREE_OTHER,    /* frees another participation */
    B_NESTED,        /* calls memq_tracker_reclaim() (must get MEMQ_EAGAIN) */
    B_REGISTER,      /* registers a new participant on its account and claims */
    B_DONE_INSIDE,   /* calls memq_reclaim_done() itself, then answers PENDING */
    B_COUNT
};
static const char *const behaviour_names[B_COUNT] = {
    "good", "all", "none", "collapse", "pending", "never", "invalid", "claim-more",
    "free-self", "free-self-collapse", "unref-account", "free-other", "nested", "register",
    "done-inside"};
static const uint8_t behaviour_weights[B_COUNT] = {40, 8, 10, 12, 8, 3, 3, 5, 2, 2, 2, 2, 2, 2, 3};

/* How a participant answers oldest(). */
enum { O_TRUE, O_LIAR, O_FREE_SELF };

typedef struct mm mm;

/* The participants' callbacks, defined below. */
static const memq_participant_ops mm_ops;

typedef struct mm_part {
    mm *m;
    int idx;
    memq_participation *h;
    int acc;
    bool registered; /* not freed */
    size_t claimed;     /* bytes held (0 once the account is closed) */
    size_t lib_claimed; /* the library's own count for this handle */
    memq_time when[MM_CHUNKS];
    size_t size[MM_CHUNKS];
    int head, n;
    int behaviour;
    unsigned arg;
    int oldest_mode;
    memq_time offset; /* reports its data this much newer (never decreases) */
    bool pending;     /* the library holds a PENDING answer of ours */
    memq_time deadline;
    bool awaiting; /* answered PENDING and has not completed (its own view) */
    bool owed;     /* its account was closed by reclamation: a notice is due */
    int early;     /* B_DONE_INSIDE: the answer it gave with memq_reclaim_done() */
    memq_reclaim_request req;
} mm_part;

typedef struct mm_acc {
    memq_account *h;
    uint64_t id;
    int refs; /* references the interpreter holds */
    bool closed;
    bool touched; /* a participant of it was asked in the current episode */
    bool late;    /* started holding data while an episode was open */
    bool ghost;   /* a participant freed itself in oldest() in this episode */
    uint64_t parents; /* mask of model indices */
} mm_acc;

struct mm {
    const mm_options *opt;
    mm_result *res;
    /* Input. */
    const uint8_t *data;
    size_t len, pos;
    bool exhausted;
    bool rng_mode;
    uint64_t rng;
    uint8_t *saved;
    size_t saved_len, saved_cap;
    /* The tracker and its configuration. */
    memq_tracker *t;
    memq_config cfg;
    bool unlimited, shutdown;
    size_t max, low, cache_bound, size_base;
    unsigned timeout_ms;
    memq_time clock;
    FILE *devnull;
    mm_acc acc[MM_ACC];
    int nacc;
    mm_part part[MM_PART];
    int npart;
    uint64_t ids_max;
    /* Predictions. */
    uint64_t exp_misuse, exp_collapsed, exp_partial, exp_timeouts;
    bool wanted;       /* reclamation wanted: from a crossing until reclaim returns 0 */
    size_t retry_above; /* after an unreclaimable stop: no new start below this */
    bool episode_open; /* the last reclaim call returned MEMQ_EAGAIN */
    int wakeups_in_op;
    /* Rounds, seen from inside callbacks. */
    int depth;
    uint64_t call_rounds_start, seen_rounds, seen_episode;
    bool round_checked;
    uint64_t round_set;
    /* The final drain. */
    bool draining, episode_fresh;
    unsigned teardown_how; /* from the configuration bytes */
    /* Checks disabled for triage (options.skip). */
    bool skip_fd, skip_candidates, skip_ghost, skip_stale, skip_older_than;
    bool continues; /* this reclaim call continues an open episode */
    /* Where we are. */
    size_t step;
    const char *op;
};

/* ======================================================================
 * Failures and tracing
 * ====================================================================== */

static void fail_at(mm *m, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail_at(mm *m, int line, const char *fmt, ...)
{
    if (m->res->failed)
        return;
    m->res->failed = true;
    int k = snprintf(m->res->message, sizeof m->res->message, "model.c:%d: step %zu (%s): ",
                     line, m->step, m->op ? m->op : "setup");
    if (k < 0 || (size_t)k >= sizeof m->res->message)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->res->message + k, sizeof m->res->message - (size_t)k, fmt, ap);
    va_end(ap);
}

#define FAIL(m, ...) fail_at((m), __LINE__, __VA_ARGS__)
#define CHECK(m, cond, ...)                                                                  \
    do {                                                                                     \
        if (!(cond))                                                                         \
            fail_at((m), __LINE__, __VA_ARGS__);                                             \
    } while (0)

static void trace(mm *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void trace(mm *m, const char *fmt, ...)
{
    if (!m->opt->trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%zu] ", m->step);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ======================================================================
 * Input
 * ====================================================================== */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static unsigned byte(mm *m)
{
    uint8_t b;
    if (m->rng_mode) {
        b = (uint8_t)(rng_next(&m->rng) >> 56);
        if (m->opt->save_path != NULL) {
            if (m->saved_len == m->saved_cap) {
                m->saved_cap = m->saved_cap ? 2 * m->saved_cap : 4096;
                m->saved = realloc(m->saved, m->saved_cap);
                if (m->saved == NULL)
                    abort();
            }
            m->saved[m->saved_len++] = b;
        }
    } else if (m->pos < m->len) {
        b = m->data[m->pos++];
    } else {
        m->exhausted = true;
        b = 0;
    }
    return b;
}

static unsigned u16(mm *m)
{
    unsigned hi = byte(m);
    return hi << 8 | byte(m);
}

/* ======================================================================
 * Model helpers
 * ====================================================================== */

static uint64_t bit(int i)
{
    return (uint64_t)1 << i;
}

static size_t used_now(mm *m)
{
    return memq_tracker_used(m->t);
}

static bool part_open(const mm *m, const mm_part *p)
{
    return p->registered && !m->acc[p->acc].closed;
}

static int registered_in(const mm *m, int a)
{
    int n = 0;
    for (int i = 0; i < m->npart; i++)
        if (m->part[i].registered && m->part[i].acc == a)
            n++;
    return n;
}

static bool any_pending(const mm *m)
{
    for (int i = 0; i < m->npart; i++)
        if (m->part[i].pending)
            return true;
    return false;
}

/* What a truthful participant reports: its head chunk's stamp plus its
 * offset, never in the future. */
static memq_time reported(const mm *m, const mm_part *p)
{
    memq_time w = p->when[p->head];
    w = w > MEMQ_TIME_MAX - p->offset ? MEMQ_TIME_MAX : w + p->offset;
    return w < m->clock ? w : m->clock;
}

static void chunks_clear(mm_part *p)
{
    p->head = p->n = 0;
    p->claimed = 0;
}

static void chunk_push(mm *m, mm_part *p, size_t n)
{
    if (p->n == MM_CHUNKS) {
        /* Merge into the tail: its stamp is older, so the head (the
         * participant's age) is unchanged. */
        p->size[(p->head + p->n - 1) % MM_CHUNKS] += n;
    } else {
        int i = (p->head + p->n) % MM_CHUNKS;
        p->when[i] = m->clock;
        p->size[i] = n;
        p->n++;
    }
    p->claimed += n;
}

/* Drop n bytes from the oldest chunks. */
static void chunk_drop(mm_part *p, size_t n)
{
    p->claimed -= n;
    while (n > 0 && p->n > 0) {
        size_t *s = &p->size[p->head];
        if (*s > n) {
            *s -= n;
            return;
        }
        n -= *s;
        p->head = (p->head + 1) % MM_CHUNKS;
        p->n--;
    }
}

static uint64_t desc_mask(const mm *m, int a)
{
    uint64_t mask = bit(a), prev;
    do {
        prev = mask;
        for (int x = 0; x < m->nacc; x++)
            if (!m->acc[x].closed && (m->acc[x].parents & mask))
                mask |= bit(x);
    } while (mask != prev);
    return mask;
}

static uint64_t anc_mask(const mm *m, int a)
{
    uint64_t mask = bit(a), prev;
    do {
        prev = mask;
        for (int x = 0; x < m->nacc; x++)
            if (mask & bit(x))
                mask |= m->acc[x].parents;
    } while (mask != prev);
    return mask;
}

/* The account closes: its participants' memory is forgotten, pending
 * answers are abandoned, children lose it as a parent. */
static void close_account(mm *m, int a)
{
    mm_acc *x = &m->acc[a];
    if (x->closed)
        return;
    x->closed = true;
    for (int i = 0; i < m->npart; i++) {
        mm_part *p = &m->part[i];
        if (p->acc == a) {
            chunks_clear(p);
            p->pending = false;
        }
    }
    for (int y = 0; y < m->nacc; y++)
        m->acc[y].parents &= ~bit(a);
    x->parents = 0;
}

/* A COLLAPSING answer (by `answerer`, which knows) or a timeout
 * (answerer NULL): counted if the account was open; every other
 * participant of it is owed a notice. */
static void collapse_account(mm *m, int a, const mm_part *answerer)
{
    if (m->acc[a].closed)
        return;
    m->exp_collapsed++;
    m->res->collapses++;
    for (int i = 0; i < m->npart; i++) {
        mm_part *p = &m->part[i];
        if (p->registered && p->acc == a && p != answerer)
            p->owed = true;
    }
    close_account(m, a);
}

static bool any_owed(const mm *m)
{
    for (int i = 0; i < m->npart; i++)
        if (m->part[i].registered && m->part[i].owed)
            return true;
    return false;
}

/* ======================================================================
 * Library calls with their predicted results
 * ====================================================================== */

static void do_claim(mm *m, mm_part *p, size_t n)
{
    bool shut = m->shutdown;
    size_t held = 0;
    for (int i = 0; i < m->npart; i++)
        if (m->part[i].registered && m->part[i].acc == p->acc)
            held += m->part[i].claimed;
    size_t before = shut ? 0 : used_now(m);
    bool wanted_before = m->wanted;
    int wakes = m->wakeups_in_op;
    int rc = memq_claim(p->h, n);
    int expected = shut ? MEMQ_ESHUTDOWN : m->acc[p->acc].closed ? MEMQ_ECLOSED : 0;
    trace(m, "claim p%d %zu -> %d", p->idx, n, rc);
    CHECK(m, rc == expected, "memq_claim(p%d, %zu) returned %d (%s), expected %d", p->idx, n,
          rc, memq_strerror(rc), expected);
    if (rc != 0)
        return;
    if (n > 0) {
        chunk_push(m, p, n);
        p->lib_claimed += n;
        if (held == 0 && (m->episode_open || m->depth > 0) && !m->acc[p->acc].late) {
            m->acc[p->acc].late = true;
            trace(m, "  a%d starts holding data during an episode", p->acc);
        }
    }
    if (shut)
        return;
    size_t after = used_now(m);
    bool expect_wake = !m->unlimited && after > before && after > m->max && !wanted_before &&
                       (m->retry_above == 0 || before <= m->max || after >= m->retry_above);
    int woke = m->wakeups_in_op - wakes;
    CHECK(m, woke == (expect_wake ? 1 : 0),
          "claim of %zu: used %zu -> %zu (max %zu, wanted %d): wakeup called %d times, "
          "expected %d", n, before, after, m->max, wanted_before, woke, expect_wake ? 1 : 0);
}

static void do_release(mm *m, mm_part *p, size_t n)
{
    memq_release(p->h, n);
    trace(m, "release p%d %zu", p->idx, n);
    chunk_drop(p, n);
    p->lib_claimed -= n;
}

/* Free oldest first until `want` is freed or nothing older than
 * `older_than` is held, always at least one chunk. */
static void free_per_request(mm *m, mm_part *p, const memq_reclaim_request *req)
{
    size_t freed = 0;
    while (p->n > 0 && part_open(m, p)) {
        if (freed > 0 && (freed >= req->want || reported(m, p) >= req->older_than))
            break;
        size_t s = p->size[p->head];
        do_release(m, p, s);
        freed += s;
    }
}

static void free_part(mm *m, mm_part *p)
{
    trace(m, "free p%d", p->idx);
    memq_participation_free(p->h);
    p->registered = false;
    p->pending = false;
    p->awaiting = false;
    p->owed = false;
    chunks_clear(p);
}

static void unref_account(mm *m, int a)
{
    mm_acc *x = &m->acc[a];
    trace(m, "unref a%d (refs %d)", a, x->refs);
    memq_account_unref(x->h);
    if (--x->refs == 0)
        close_account(m, a);
}

static mm_part *register_part(mm *m, int a, int behaviour, unsigned arg, int oldest_mode)
{
    if (m->npart == MM_PART)
        return NULL;
    mm_part *p = &m->part[m->npart];
    memset(p, 0, sizeof *p);
    p->m = m;
    p->idx = m->npart;
    p->acc = a;
    p->behaviour = behaviour;
    p->arg = arg;
    p->oldest_mode = oldest_mode;
    memq_participation *h = NULL;
    int rc = memq_participant_register(m->acc[a].h, &mm_ops, p, &h);
    int expected = m->shutdown ? MEMQ_ESHUTDOWN : m->acc[a].closed ? MEMQ_ECLOSED : 0;
    trace(m, "register p%d on a%d (%s, oldest %d) -> %d", p->idx, a, behaviour_names[behaviour],
          oldest_mode, rc);
    CHECK(m, rc == expected, "memq_participant_register on a%d returned %d, expected %d", a, rc,
          expected);
    if (rc != 0) {
        CHECK(m, h == NULL, "a failed registration wrote its out-parameter");
        return NULL;
    }
    p->h = h;
    p->registered = true;
    m->npart++;
    return p;
}

/* ======================================================================
 * Victim checks, from inside a reclaim callback
 * ====================================================================== */

typedef struct ages {
    memq_time age[MM_ACC];
    uint64_t cand, liar;
} ages;

/* Each open account's age as the library computes it from oldest()
 * answers: the minimum over its registered participants holding data of
 * their data's age, 0 for those that hold data and say they hold none.
 * Candidates are the accounts with data. */
static void compute_ages(const mm *m, ages *g)
{
    g->cand = g->liar = 0;
    for (int a = 0; a < m->nacc; a++) {
        g->age[a] = MEMQ_TIME_MAX;
        if (m->acc[a].closed)
            continue;
        if (m->skip_ghost && m->acc[a].ghost) {
            g->cand |= bit(a);
            g->liar |= bit(a);
            g->age[a] = 0;
        }
        for (int i = 0; i < m->npart; i++) {
            const mm_part *p = &m->part[i];
            if (!p->registered || p->acc != a)
                continue;
            if (p->claimed == 0)
                continue; /* reports nothing, counts for nothing */
            memq_time x;
            g->cand |= bit(a);
            if (p->oldest_mode != O_TRUE) {
                g->liar |= bit(a);
                x = 0;
            } else {
                x = reported(m, p);
            }
            if (x < g->age[a])
                g->age[a] = x;
        }
    }
}

static void check_victim(mm *m, const mm_part *p, const memq_reclaim_request *req)
{
    ages g;
    compute_ages(m, &g);
    uint64_t strict = 0;
    memq_time oldest = MEMQ_TIME_MAX;
    int oldest_acc = -1;
    for (int a = 0; a < m->nacc; a++) {
        if ((g.cand & bit(a)) && !(g.liar & bit(a)) && !m->acc[a].touched &&
            !(m->skip_candidates && m->acc[a].late)) {
            strict |= bit(a);
            if (g.age[a] < oldest) {
                oldest = g.age[a];
                oldest_acc = a;
            }
        }
    }
    uint64_t anc = anc_mask(m, p->acc), victims = 0;
    for (int v = 0; v < m->nacc; v++)
        if ((anc & bit(v)) && (g.cand & bit(v)) && g.age[v] <= oldest)
            victims |= bit(v);
    m->res->oldest_checks++;
    if (victims == 0) {
        if (oldest_acc >= 0)
            FAIL(m, "not oldest-first: p%d of a%d asked to reclaim; no ancestor of a%d holding "
                    "data is as old as a%d (age %" PRIu64 ", never asked in this episode); "
                    "a%d's own age %" PRIu64,
                 p->idx, p->acc, p->acc, oldest_acc, oldest, p->acc, g.age[p->acc]);
        else
            FAIL(m, "p%d of a%d asked to reclaim, but neither a%d nor an ancestor holds data",
                 p->idx, p->acc, p->acc);
        m->round_set = ~(uint64_t)0;
        return;
    }
    m->round_set = 0;
    for (int v = 0; v < m->nacc; v++)
        if (victims & bit(v))
            m->round_set |= desc_mask(m, v);
    size_t used = used_now(m);
    size_t want = used > m->low ? used - m->low : 0;
    CHECK(m, req->want == want, "round's want is %zu, expected used %zu - low_water %zu",
          req->want, used, m->low);
    memq_time next = MEMQ_TIME_MAX;
    int next_acc = -1;
    for (int a = 0; a < m->nacc; a++)
        if ((strict & bit(a)) && !(victims & bit(a)) && g.age[a] < next) {
            next = g.age[a];
            next_acc = a;
        }
    CHECK(m, req->older_than <= next || (m->skip_older_than && req->older_than == MEMQ_TIME_MAX),
          "round's older_than %" PRIu64 " is newer than the data of a%d (age %" PRIu64
          ", never asked in this episode): a%d is missing from the candidates",
          req->older_than, next_acc, next, next_acc);
}

/* A new episode forgets which accounts were asked or started late. */
static void observe_episode(mm *m, const memq_stats *st)
{
    if (st->episodes != m->seen_episode) {
        m->seen_episode = st->episodes;
        for (int a = 0; a < m->nacc; a++)
            m->acc[a].touched = m->acc[a].late = m->acc[a].ghost = false;
    }
}

/* A reclaim callback learns from the statistics whether a new episode or
 * a new round started, and checks the victim if the round started during
 * the current reclaim call (else the interpreter may have changed ages
 * since the library chose it). */
static void observe_round(mm *m, const mm_part *p, const memq_reclaim_request *req)
{
    memq_stats st;
    memq_tracker_stats(m->t, &st);
    observe_episode(m, &st);
    if (st.accounts_reclaimed != m->seen_rounds) {
        m->res->rounds++;
        m->seen_rounds = st.accounts_reclaimed;
        m->round_checked = st.accounts_reclaimed > m->call_rounds_start;
        /* Triage: its victim may have been chosen in the previous call. */
        if (m->skip_stale && m->continues)
            m->round_checked = false;
        m->continues = false;
        if (m->round_checked)
            check_victim(m, p, req);
    }
    if (m->round_checked)
        CHECK(m, (m->round_set & bit(p->acc)) != 0,
              "p%d of a%d asked in a round whose victims do not include a%d or an ancestor",
              p->idx, p->acc, p->acc);
}

/* ======================================================================
 * The participant's callbacks
 * ====================================================================== */

static bool mm_oldest(void *self, memq_time *when)
{
    mm_part *p = self;
    mm *m = p->m;
    CHECK(m, p->registered, "oldest() called for p%d after it was freed", p->idx);
    CHECK(m, !m->acc[p->acc].closed, "oldest() called for p%d of closed account a%d", p->idx,
          p->acc);
    CHECK(m, m->depth > 0, "oldest() called outside memq_tracker_reclaim()");
    if (!p->registered)
        return false;
    memq_stats st;
    memq_tracker_stats(m->t, &st);
    observe_episode(m, &st);
    if (p->oldest_mode == O_FREE_SELF && p->claimed > 0) {
        free_part(m, p);
        m->acc[p->acc].ghost = true;
        return false;
    }
    if (p->oldest_mode != O_TRUE || p->n == 0)
        return false;
    *when = reported(m, p);
    return true;
}

static memq_reclaim_status behave(mm *m, mm_part *p, const memq_reclaim_request *req)
{
    switch (p->behaviour) {
    case B_GOOD:
        free_per_request(m, p, req);
        return MEMQ_RECLAIMED_PARTIAL;
    case B_ALL:
        if (p->claimed > 0)
            do_release(m, p, p->claimed);
        return MEMQ_RECLAIMED_PARTIAL;
    case B_NONE:
        return MEMQ_RECLAIMED_PARTIAL;
    case B_COLLAPSE:
        if ((p->arg & 1) && p->claimed > 1)
            do_release(m, p, p->claimed / 2);
        return MEMQ_RECLAIMED_COLLAPSING;
    case B_PENDING:
    case B_NEVER:
        p->awaiting = true;
        p->req = *req;
        return MEMQ_RECLAIM_PENDING;
    case B_INVALID:
        if (p->arg & 1)
            free_per_request(m, p, req);
        return (memq_reclaim_status)(3 + (int)(p->arg % 5));
    case B_CLAIM_MORE:
        do_claim(m, p, 64 * (p->arg % 8 + 1));
        if (p->arg & 8)
            free_per_request(m, p, req);
        return MEMQ_RECLAIMED_PARTIAL;
    case B_FREE_SELF:
        free_part(m, p);
        return MEMQ_RECLAIMED_PARTIAL;
    case B_FREE_SELF_COLLAPSE:
        free_part(m, p);
        return MEMQ_RECLAIMED_COLLAPSING;
    case B_UNREF_ACCOUNT:
        if (m->acc[p->acc].refs > 0)
            unref_account(m, p->acc);
        return (p->arg & 1) ? MEMQ_RECLAIMED_COLLAPSING : MEMQ_RECLAIMED_PARTIAL;
    case B_FREE_OTHER: {
        for (int k = 0; k < m->npart; k++) {
            mm_part *q = &m->part[(p->arg + (unsigned)k) % (unsigned)m->npart];
            if (q != p && q->registered) {
                free_part(m, q);
                break;
            }
        }
        free_per_request(m, p, req);
        return MEMQ_RECLAIMED_PARTIAL;
    }
    case B_NESTED: {
        int rc = memq_tracker_reclaim(m->t);
        CHECK(m, rc == MEMQ_EAGAIN, "nested memq_tracker_reclaim() returned %d, expected %d", rc,
              MEMQ_EAGAIN);
        free_per_request(m, p, req);
        return MEMQ_RECLAIMED_PARTIAL;
    }
    case B_REGISTER: {
        mm_part *q = register_part(m, p->acc, B_GOOD, 0, O_TRUE);
        if (q != NULL)
            do_claim(m, q, 32 * (p->arg % 16 + 1));
        free_per_request(m, p, req);
        return MEMQ_RECLAIMED_PARTIAL;
    }
    case B_DONE_INSIDE: {
        /* The answer given early, from the callback itself, counts. */
        free_per_request(m, p, req);
        static const int answers[] = {MEMQ_RECLAIMED_PARTIAL, MEMQ_RECLAIMED_COLLAPSING,
                                      MEMQ_RECLAIM_PENDING, 9};
        int st = answers[p->arg % 4];
        memq_reclaim_done(p->h, (memq_reclaim_status)st);
        p->early = st == MEMQ_RECLAIMED_PARTIAL || st == MEMQ_RECLAIMED_COLLAPSING ? st : -1;
        return MEMQ_RECLAIM_PENDING;
    }
    default:
        return MEMQ_RECLAIMED_PARTIAL;
    }
}

/* The account was closed by reclamation: free everything (a participant
 * that frees nothing when asked frees nothing here either). */
static memq_reclaim_status mm_notice(mm *m, mm_part *p, const memq_reclaim_request *req)
{
    CHECK(m, p->registered, "notice for p%d after it was freed", p->idx);
    CHECK(m, m->acc[p->acc].closed, "notice for p%d of open account a%d", p->idx, p->acc);
    CHECK(m, p->owed, "notice for p%d, told already or never owed one", p->idx);
    CHECK(m, req->want == p->lib_claimed && req->older_than == MEMQ_TIME_MAX,
          "notice for p%d: want %zu older_than %" PRIu64 ", expected %zu and MEMQ_TIME_MAX",
          p->idx, req->want, req->older_than, p->lib_claimed);
    CHECK(m, m->depth > 0, "notice outside memq_tracker_reclaim()");
    trace(m, "  notice p%d of a%d (%zu claimed)", p->idx, p->acc, p->lib_claimed);
    p->owed = false;
    if (p->behaviour != B_NONE && p->lib_claimed > 0) {
        memq_release(p->h, p->lib_claimed);
        p->lib_claimed = 0;
    }
    return MEMQ_RECLAIMED_COLLAPSING; /* ignored */
}

static memq_reclaim_status mm_reclaim(void *self, const memq_reclaim_request *req)
{
    mm_part *p = self;
    mm *m = p->m;
    m->res->callbacks++;
    if (req->closed)
        return mm_notice(m, p, req);
    CHECK(m, p->registered, "reclaim() called for p%d after it was freed", p->idx);
    CHECK(m, !m->acc[p->acc].closed, "reclaim() called for p%d of closed account a%d", p->idx,
          p->acc);
    CHECK(m, !p->pending, "reclaim() called for p%d while its PENDING answer is outstanding",
          p->idx);
    CHECK(m, m->depth > 0, "reclaim() called outside memq_tracker_reclaim()");
    if (!p->registered || m->acc[p->acc].closed)
        return MEMQ_RECLAIMED_PARTIAL;
    observe_round(m, p, req);
    m->acc[p->acc].touched = true;
    trace(m, "  reclaim p%d of a%d (%s) want %zu older_than %" PRIu64, p->idx, p->acc,
          behaviour_names[p->behaviour], req->want, req->older_than);

    int acc = p->acc;
    p->early = MEMQ_RECLAIM_PENDING;
    int st = (int)behave(m, p, req);
    if (st == MEMQ_RECLAIM_PENDING && p->early != MEMQ_RECLAIM_PENDING)
        st = p->early; /* -1: an invalid status, counted as misuse */

    /* What the library does with the answer once the callback returns. */
    if (!p->registered) {
        if (st == MEMQ_RECLAIMED_COLLAPSING)
            collapse_account(m, acc, p);
    } else if (m->acc[acc].closed) {
        /* its account closed meanwhile: the answer is dropped */
    } else if (st == MEMQ_RECLAIM_PENDING) {
        p->pending = true;
        p->deadline = m->clock + (memq_time)m->timeout_ms * MS;
        m->res->pendings++;
    } else if (st == MEMQ_RECLAIMED_COLLAPSING) {
        collapse_account(m, acc, p);
    } else if (st == MEMQ_RECLAIMED_PARTIAL) {
        m->exp_partial++;
    } else {
        m->exp_misuse++;
        m->exp_partial++;
    }
    return (memq_reclaim_status)st;
}

static const memq_participant_ops mm_ops = {mm_oldest, mm_reclaim};

/* ======================================================================
 * Tracker callbacks
 * ====================================================================== */

static memq_time mm_clock(void *ctx)
{
    return ((mm *)ctx)->clock;
}

static void mm_wakeup(void *ctx)
{
    mm *m = ctx;
    m->res->wakeups++;
    m->wakeups_in_op++;
    CHECK(m, !m->wanted, "wakeup called while reclamation was already wanted");
    CHECK(m, !m->unlimited, "wakeup on an unlimited tracker");
    m->wanted = true;
    m->retry_above = 0;
}

static void mm_log(void *ctx, int level, const char *msg)
{
    mm *m = ctx;
    CHECK(m, msg != NULL && msg[0] != '\0' && strchr(msg, '\n') == NULL,
          "log message empty or with a newline");
    CHECK(m, level >= MEMQ_LOG_ERROR && level <= MEMQ_LOG_DEBUG, "log level %d", level);
}

/* ======================================================================
 * Reclamation
 * ====================================================================== */

static bool fd_readable(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN) != 0;
}

static size_t true_total(const mm *m)
{
    size_t sum = 0;
    for (int i = 0; i < m->npart; i++)
        if (part_open(m, &m->part[i]))
            sum += m->part[i].claimed;
    return sum;
}

static int do_reclaim(mm *m)
{
    memq_stats before, after;
    memq_tracker_stats(m->t, &before);

    /* Answers past their deadline time out first: the first of an account
     * collapses it, which abandons its siblings' answers. */
    for (int i = 0; i < m->npart; i++) {
        mm_part *p = &m->part[i];
        if (p->pending && p->deadline <= m->clock) {
            trace(m, "  p%d's answer times out", p->idx);
            m->exp_timeouts++;
            m->res->timeouts++;
            p->pending = false;
            collapse_account(m, p->acc, NULL); /* it is told too */
        }
    }
    if (!m->unlimited)
        m->wanted = m->episode_open || before.used > m->max;
    m->call_rounds_start = before.accounts_reclaimed;
    m->continues = m->episode_open;

    m->depth++;
    int rc = memq_tracker_reclaim(m->t);
    m->depth--;
    m->res->reclaim_calls++;
    memq_tracker_stats(m->t, &after);
    observe_episode(m, &after);
    trace(m, "reclaim -> %d (used %zu -> %zu, episodes %" PRIu64 ", rounds %" PRIu64 ")", rc,
          before.used, after.used, after.episodes, after.accounts_reclaimed);
    m->res->episodes += after.episodes - before.episodes;
    CHECK(m, after.episodes - before.episodes <= 1, "one reclaim call started %" PRIu64
          " episodes", after.episodes - before.episodes);
    if (after.episodes > before.episodes)
        m->episode_fresh = m->draining;

    if (rc == 0) {
        bool ended = m->episode_open || after.episodes > before.episodes;
        if (ended && after.unreclaimable_events == before.unreclaimable_events) {
            CHECK(m, after.used <= m->low,
                  "the episode ended (not as unreclaimable) with used %zu > low_water %zu",
                  after.used, m->low);
        } else if (ended) {
            m->res->unreclaimable++;
            size_t band = (m->max - m->low) / 4;
            m->retry_above = after.used > SIZE_MAX - band ? SIZE_MAX : after.used + band;
            CHECK(m, !any_pending(m), "episode stopped as unreclaimable with answers pending");
            if (m->draining && m->episode_fresh) {
                size_t held = true_total(m);
                CHECK(m, held == 0,
                      "episode stopped as unreclaimable while cooperative participants held "
                      "%zu bytes (used %zu, low_water %zu)", held, after.used, m->low);
            }
        } else {
            CHECK(m, after.used <= m->max, "reclaim returned 0 with used %zu > max %zu",
                  after.used, m->max);
        }
        CHECK(m, !any_owed(m), "reclaim returned 0 with notices still owed");
        m->episode_open = false;
        m->wanted = false;
        for (int i = 0; i < m->npart; i++)
            m->part[i].pending = false;
        CHECK(m, !fd_readable(memq_tracker_fd(m->t)),
              "descriptor readable after reclaim returned 0");
    } else if (rc == MEMQ_EAGAIN) {
        CHECK(m, !m->unlimited, "an unlimited tracker's reclaim returned MEMQ_EAGAIN");
        m->episode_open = true;
        m->wanted = true;
    } else {
        FAIL(m, "memq_tracker_reclaim returned %d (%s)", rc, memq_strerror(rc));
    }
    return rc;
}

/* ======================================================================
 * Invariants after every step
 * ====================================================================== */

static void check_internal(mm *m, size_t *records)
{
    memq_tracker *t = m->t;
    size_t sum = 0, bad_p = SIZE_MAX, bad_a = SIZE_MAX, big_cache = 0;
    memq__lock(t);
    memq_account *a;
    for (size_t slot = 0; (a = memq__ids_next(t, &slot)) != NULL;) {
        size_t asum = 0;
        for (memq_participation *p = a->participants; p != NULL; p = p->next) {
            size_t claimed = atomic_load_explicit(&p->claimed, memory_order_relaxed);
            if (!m->unlimited && p->charged != claimed + p->cache)
                bad_p = p->charged;
            if (!m->unlimited && p->cache > m->cache_bound)
                big_cache = p->cache;
            asum += p->charged;
        }
        if (asum != a->charged)
            bad_a = a->charged;
        sum += a->charged;
    }
    size_t used = memq__used(t);
    memq__unlock(t);
    *records = sum;
    CHECK(m, bad_p == SIZE_MAX, "a participation's charge %zu != claimed + cache", bad_p);
    CHECK(m, bad_a == SIZE_MAX, "an account's charge %zu != the sum of its participations'",
          bad_a);
    CHECK(m, big_cache == 0, "a participation caches %zu bytes > cache_max %zu", big_cache,
          m->cache_bound);
    if (!m->unlimited)
        CHECK(m, sum == used, "used %zu != the sum of the accounts' charges %zu", used, sum);
}

static void check_state(mm *m)
{
    if (m->res->failed)
        return;
    if (m->shutdown) {
        for (int i = 0; i < m->npart; i++) {
            mm_part *p = &m->part[i];
            if (p->registered)
                CHECK(m, memq_participation_claimed(p->h) == 0,
                      "p%d reports claims after shutdown", i);
        }
        for (int a = 0; a < m->nacc; a++)
            if (m->acc[a].refs > 0)
                CHECK(m, memq_account_closed(m->acc[a].h) && memq_account_used(m->acc[a].h) == 0,
                      "a%d open or holding memory after shutdown", a);
        return;
    }
    memq_stats st;
    memq_tracker_stats(m->t, &st);
    size_t truth = 0, open_parts = 0, registered = 0, lib_claims = 0;
    for (int i = 0; i < m->npart; i++) {
        mm_part *p = &m->part[i];
        if (!p->registered)
            continue;
        registered++;
        size_t c = memq_participation_claimed(p->h);
        lib_claims += c;
        if (part_open(m, p)) {
            open_parts++;
            truth += p->claimed;
            CHECK(m, c == p->claimed, "p%d: memq_participation_claimed %zu, model %zu", i, c,
                  p->claimed);
        } else {
            CHECK(m, c == 0, "p%d of closed a%d: memq_participation_claimed %zu", i, p->acc, c);
        }
    }
    CHECK(m, lib_claims == truth, "sum of participations' claims %zu != model's %zu", lib_claims,
          truth);
    if (m->unlimited) {
        CHECK(m, st.used == truth, "unlimited: used %zu != claims %zu", st.used, truth);
    } else {
        size_t slack = m->cache_bound * open_parts;
        CHECK(m, st.used >= truth && st.used - truth <= slack,
              "used %zu outside [true total %zu, + %zu cache_max x %zu participations]", st.used,
              truth, m->cache_bound, open_parts);
    }
    size_t records;
    check_internal(m, &records);

    size_t open_accounts = 0;
    for (int a = 0; a < m->nacc; a++) {
        mm_acc *x = &m->acc[a];
        if (!x->closed)
            open_accounts++;
        if (x->refs == 0 && registered_in(m, a) == 0)
            continue; /* the handle may be gone */
        bool closed = memq_account_closed(x->h);
        CHECK(m, closed == x->closed, "a%d: memq_account_closed %d, model %d", a, closed,
              x->closed);
        size_t held = 0;
        if (!x->closed)
            for (int i = 0; i < m->npart; i++)
                if (m->part[i].registered && m->part[i].acc == a)
                    held += m->part[i].claimed;
        size_t u = memq_account_used(x->h);
        CHECK(m, u == held, "a%d: memq_account_used %zu, model %zu", a, u, held);
    }
    CHECK(m, st.accounts == open_accounts, "stats.accounts %zu, model %zu", st.accounts,
          open_accounts);
    CHECK(m, st.participants == registered, "stats.participants %zu, model %zu", st.participants,
          registered);
    CHECK(m, st.misuse_events == m->exp_misuse, "misuse_events %" PRIu64 ", expected %" PRIu64,
          st.misuse_events, m->exp_misuse);
    CHECK(m, st.accounts_collapsed == m->exp_collapsed,
          "accounts_collapsed %" PRIu64 ", expected %" PRIu64, st.accounts_collapsed,
          m->exp_collapsed);
    CHECK(m, st.partial_reclaims == m->exp_partial,
          "partial_reclaims %" PRIu64 ", expected %" PRIu64, st.partial_reclaims, m->exp_partial);
    CHECK(m, st.callback_timeouts == m->exp_timeouts,
          "callback_timeouts %" PRIu64 ", expected %" PRIu64, st.callback_timeouts,
          m->exp_timeouts);
    CHECK(m, st.peak >= st.used, "peak %zu < used %zu", st.peak, st.used);
    if (!m->unlimited) {
        CHECK(m, st.max == m->max && st.low_water == m->low, "marks %zu/%zu, expected %zu/%zu",
              st.max, st.low_water, m->max, m->low);
        bool readable = fd_readable(memq_tracker_fd(m->t));
        if (!m->wanted)
            CHECK(m, !readable, "descriptor readable while reclamation is not wanted");
        else if (!any_pending(m) && !m->skip_fd)
            CHECK(m, readable,
                  "reclamation is wanted (used %zu, max %zu), no answer is pending, but the "
                  "descriptor is not readable", st.used, m->max);
    }
}

/* ======================================================================
 * Operations
 * ====================================================================== */

enum {
    OP_ACC_NEW, OP_ACC_UNREF, OP_ACC_REF, OP_ACC_FIND, OP_ADD_PARENT, OP_OVER_UNREF, OP_SET_NAME,
    OP_REGISTER, OP_FREE, OP_CLAIM, OP_RELEASE, OP_OVER_RELEASE, OP_HUGE_CLAIM, OP_CLOCK,
    OP_RECLAIM, OP_RECLAIM_LOOP, OP_BEHAVE, OP_AGE, OP_COMPLETE, OP_DONE_STRAY, OP_RECONFIGURE,
    OP_DUMP, OP_SHUTDOWN, OP_COUNT
};
static const struct {
    const char *name;
    unsigned weight;
} op_table[OP_COUNT] = {
    {"account_new", 10}, {"account_unref", 4}, {"account_ref", 2}, {"account_find", 3},
    {"add_parent", 5},   {"over_unref", 1},    {"set_name", 1},    {"register", 12},
    {"free", 4},         {"claim", 60},        {"release", 30},    {"over_release", 2},
    {"huge_claim", 1},   {"clock", 16},        {"reclaim", 20},    {"reclaim_loop", 8},
    {"behave", 8},       {"age", 4},           {"complete", 8},    {"done_stray", 2},
    {"reconfigure", 2},  {"dump", 1},          {"shutdown", 1},
};

static uint8_t op_of_byte[256];

static void op_table_init(void)
{
    unsigned total = 0, acc = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += op_table[i].weight;
    int op = 0;
    for (unsigned b = 0; b < 256; b++) {
        while (op < OP_COUNT - 1 && b * total >= (acc + op_table[op].weight) * 256u) {
            acc += op_table[op].weight;
            op++;
        }
        op_of_byte[b] = (uint8_t)op;
    }
}

static int pick_behaviour(unsigned b)
{
    unsigned total = 0;
    for (int i = 0; i < B_COUNT; i++)
        total += behaviour_weights[i];
    unsigned x = b % total;
    for (int i = 0; i < B_COUNT; i++) {
        if (x < behaviour_weights[i])
            return i;
        x -= behaviour_weights[i];
    }
    return B_GOOD;
}

static int pick_oldest_mode(unsigned b)
{
    return b < 232 ? O_TRUE : b < 250 ? O_LIAR : O_FREE_SELF;
}

/* An account whose handle the interpreter may use (it holds a reference). */
static int pick_acc(mm *m)
{
    if (m->nacc == 0)
        return -1;
    int start = (int)(byte(m) % (unsigned)m->nacc);
    for (int k = 0; k < m->nacc; k++) {
        int a = (start + k) % m->nacc;
        if (m->acc[a].refs > 0)
            return a;
    }
    return -1;
}

static mm_part *pick_part(mm *m, bool (*ok)(const mm *, const mm_part *))
{
    if (m->npart == 0)
        return NULL;
    int start = (int)(byte(m) % (unsigned)m->npart);
    for (int k = 0; k < m->npart; k++) {
        mm_part *p = &m->part[(start + k) % m->npart];
        if (p->registered && (ok == NULL || ok(m, p)))
            return p;
    }
    return NULL;
}

static bool has_data(const mm *m, const mm_part *p)
{
    (void)m;
    return p->claimed > 0;
}

static bool is_open(const mm *m, const mm_part *p)
{
    return part_open(m, p);
}

static bool can_complete(const mm *m, const mm_part *p)
{
    (void)m;
    return p->awaiting && p->behaviour != B_NEVER;
}

static bool not_pending(const mm *m, const mm_part *p)
{
    (void)m;
    return !p->pending;
}

static size_t claim_size(mm *m)
{
    unsigned c = byte(m);
    unsigned x = u16(m);
    switch (c & 7) {
    case 0: case 1: case 2: case 3:
        return 1 + x % 256;
    case 4: case 5:
        return 1 + x % (m->size_base / 64 + 1);
    case 6:
        return 1 + (size_t)x * (m->size_base / 4) / 65536;
    default:
        return 0;
    }
}

static void complete(mm *m, mm_part *p, unsigned how)
{
    free_per_request(m, p, &p->req);
    int st = how < 6 ? MEMQ_RECLAIMED_PARTIAL : how < 9 ? MEMQ_RECLAIMED_COLLAPSING
           : how < 10 ? MEMQ_RECLAIM_PENDING : 7;
    trace(m, "reclaim_done p%d %d (pending %d)", p->idx, st, p->pending);
    memq_reclaim_done(p->h, (memq_reclaim_status)st);
    p->awaiting = false;
    if (!p->pending)
        return; /* ignored */
    p->pending = false;
    if (st == MEMQ_RECLAIMED_COLLAPSING)
        collapse_account(m, p->acc, p);
    else if (st == MEMQ_RECLAIMED_PARTIAL)
        m->exp_partial++;
    else {
        m->exp_misuse++;
        m->exp_partial++;
    }
}

static const size_t max_classes[] = {24 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024};
static const size_t cache_classes[] = {0, 64, 1024, 4096, 16384};
static const unsigned timeout_classes[] = {1, 2, 10, 100};
static const unsigned budget_classes[] = {1, 3, 20, 10000000};

/* A configuration from four bytes; cache_max is lowered until valid. */
static unsigned config_from(mm *m, memq_config *cfg, bool allow_unlimited)
{
    unsigned b0 = byte(m), b1 = byte(m), b2 = byte(m), b3 = byte(m);
    cfg->max = max_classes[b0 % 4];
    if (allow_unlimited && (b0 >> 2) % 16 == 0)
        cfg->max = MEMQ_UNLIMITED;
    cfg->cache_max = cache_classes[b1 % 5];
    switch ((b1 >> 3) % 4) {
    case 0: cfg->low_water = 0; break;
    case 1: cfg->low_water = cfg->max / 4; break;
    case 2: cfg->low_water = cfg->max / 2; break;
    default: cfg->low_water = cfg->max / 8 * 7; break;
    }
    if (cfg->max == MEMQ_UNLIMITED)
        cfg->low_water = 0;
    cfg->reclaim_timeout_ms = timeout_classes[b2 % 4];
    cfg->reclaim_budget_us = (b3 % 8) < 3 ? budget_classes[b3 % 8] : budget_classes[3];
    if (cfg->max != MEMQ_UNLIMITED) {
        size_t low = cfg->low_water ? cfg->low_water : cfg->max / 4 * 3;
        while (cfg->cache_max > 0 && cfg->max - low < 4 * cfg->cache_max)
            cfg->cache_max /= 2;
    }
    return b3 >> 3;
}

/* Whether memq_config_check() must accept it. */
static bool config_valid(const memq_config *cfg)
{
    if (cfg->max == MEMQ_UNLIMITED)
        return cfg->low_water == 0;
    size_t low = cfg->low_water ? cfg->low_water : cfg->max / 4 * 3 + (cfg->max % 4) * 3 / 4;
    return low < cfg->max && cfg->cache_max <= SIZE_MAX / 4 && cfg->max - low >= 4 * cfg->cache_max;
}

static void apply_marks(mm *m)
{
    memq_stats st;
    memq_tracker_stats(m->t, &st);
    m->max = st.max;
    m->low = st.low_water;
    if (m->cfg.cache_max > m->cache_bound)
        m->cache_bound = m->cfg.cache_max;
    m->timeout_ms = m->cfg.reclaim_timeout_ms;
}

static void op_account_new(mm *m)
{
    unsigned b = byte(m);
    if (m->nacc == MM_ACC || m->shutdown)
        return;
    int parent = b % 3 == 0 ? -1 : pick_acc(m);
    memq_account *h = NULL;
    int rc = memq_account_new(m->t, parent >= 0 ? m->acc[parent].h : NULL, &h);
    int expected = parent >= 0 && m->acc[parent].closed ? MEMQ_ECLOSED : 0;
    trace(m, "account_new a%d parent a%d -> %d", m->nacc, parent, rc);
    CHECK(m, rc == expected, "memq_account_new(parent a%d) returned %d, expected %d", parent, rc,
          expected);
    if (rc != 0) {
        CHECK(m, h == NULL, "a failed memq_account_new wrote its out-parameter");
        return;
    }
    uint64_t id = memq_account_id(h);
    CHECK(m, id != 0, "account id 0");
    for (int a = 0; a < m->nacc; a++)
        CHECK(m, m->acc[a].id != id, "account id %" PRIu64 " reused (a%d had it)", id, a);
    if (id > m->ids_max)
        m->ids_max = id;
    mm_acc *x = &m->acc[m->nacc++];
    memset(x, 0, sizeof *x);
    x->h = h;
    x->id = id;
    x->refs = 1;
    x->parents = parent >= 0 ? bit(parent) : 0;
    CHECK(m, memq_account_tracker(h) == m->t, "memq_account_tracker is not the tracker");
}

static void op_add_parent(mm *m)
{
    int a = pick_acc(m), p = pick_acc(m);
    if (a < 0 || p < 0)
        return;
    int rc = memq_account_add_parent(m->acc[a].h, m->acc[p].h);
    int expected;
    if (m->shutdown)
        expected = MEMQ_ESHUTDOWN;
    else if (m->acc[a].closed || m->acc[p].closed)
        expected = MEMQ_ECLOSED;
    else if (m->acc[a].parents & bit(p))
        expected = MEMQ_EEXIST;
    else if (desc_mask(m, a) & bit(p))
        expected = MEMQ_ECYCLE;
    else
        expected = 0;
    trace(m, "add_parent a%d <- a%d -> %d", a, p, rc);
    CHECK(m, rc == expected, "memq_account_add_parent(a%d, a%d) returned %d, expected %d", a, p,
          rc, expected);
    if (rc == 0)
        m->acc[a].parents |= bit(p);
}

static void op_find(mm *m)
{
    unsigned b = byte(m);
    if (m->shutdown)
        return;
    if (m->nacc == 0 || b % 4 == 0) {
        uint64_t id = m->ids_max + 1 + b;
        memq_account *h = memq_account_find(m->t, id);
        CHECK(m, h == NULL, "memq_account_find(%" PRIu64 ") found an account never created", id);
        if (h != NULL)
            memq_account_unref(h);
        CHECK(m, memq_account_find(m->t, 0) == NULL, "memq_account_find(0) found something");
        return;
    }
    int a = (int)(b % (unsigned)m->nacc);
    mm_acc *x = &m->acc[a];
    memq_account *h = memq_account_find(m->t, x->id);
    trace(m, "find a%d -> %p", a, (void *)h);
    if (x->closed) {
        CHECK(m, h == NULL, "memq_account_find found closed account a%d", a);
    } else {
        CHECK(m, h == x->h, "memq_account_find(a%d) returned %p, not its handle", a, (void *)h);
        if (h == x->h)
            x->refs++;
    }
}

static void op_shutdown(mm *m)
{
    unsigned b = byte(m);
    if (b >= 8 || m->shutdown)
        return;
    trace(m, "tracker_free");
    memq_tracker_free(m->t);
    m->shutdown = true;
    m->wanted = false;
    m->episode_open = false;
    for (int a = 0; a < m->nacc; a++)
        close_account(m, a);
}

static void op_reconfigure(mm *m)
{
    memq_config cfg = m->cfg;
    config_from(m, &cfg, false);
    unsigned b = byte(m);
    if (m->shutdown || m->unlimited)
        return;
    if (b % 4 == 0)
        cfg.cache_max = (cfg.max - (cfg.low_water ? cfg.low_water : cfg.max / 4 * 3)) / 4 + 1;
    bool valid = config_valid(&cfg);
    size_t used = used_now(m);
    bool wanted_before = m->wanted;
    int wakes = m->wakeups_in_op;
    int rc = memq_tracker_reconfigure(m->t, &cfg);
    trace(m, "reconfigure max %zu low %zu cache %zu -> %d", cfg.max, cfg.low_water, cfg.cache_max,
          rc);
    CHECK(m, rc == (valid ? 0 : MEMQ_EINVAL), "memq_tracker_reconfigure returned %d, expected %d",
          rc, valid ? 0 : MEMQ_EINVAL);
    if (rc != 0)
        return;
    m->cfg = cfg;
    apply_marks(m);
    bool expect_wake = used > m->max && !wanted_before;
    CHECK(m, m->wakeups_in_op - wakes == (expect_wake ? 1 : 0),
          "reconfigure to max %zu with used %zu: %d wakeups, expected %d", m->max, used,
          m->wakeups_in_op - wakes, expect_wake ? 1 : 0);
}

static void op_dump(mm *m)
{
    unsigned b = byte(m);
    if (m->shutdown)
        return;
    int format = (int)(b % 3);
    if (format != MEMQ_DUMP_JSON) {
        CHECK(m, memq_tracker_dump(m->t, m->devnull, format) == 0, "memq_tracker_dump failed");
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return;
    int rc = memq_tracker_dump(m->t, f, format);
    fclose(f);
    CHECK(m, rc == 0, "memq_tracker_dump(JSON) returned %d", rc);
    char want[64];
    snprintf(want, sizeof want, "{\"tracker\":{\"used\":%zu,", used_now(m));
    CHECK(m, text != NULL && strncmp(text, want, strlen(want)) == 0,
          "JSON dump does not start with %s", want);
    free(text);
}

static void step(mm *m, unsigned opcode)
{
    int op = op_of_byte[opcode];
    m->op = op_table[op].name;
    m->wakeups_in_op = 0;
    mm_part *p;
    int a;
    switch (op) {
    case OP_ACC_NEW:
        op_account_new(m);
        break;
    case OP_ACC_UNREF:
        if ((a = pick_acc(m)) >= 0)
            unref_account(m, a);
        break;
    case OP_ACC_REF:
        if ((a = pick_acc(m)) >= 0) {
            memq_account *h = memq_account_ref(m->acc[a].h);
            CHECK(m, h == m->acc[a].h, "memq_account_ref returned another pointer");
            m->acc[a].refs++;
        }
        break;
    case OP_ACC_FIND:
        op_find(m);
        break;
    case OP_ADD_PARENT:
        op_add_parent(m);
        break;
    case OP_OVER_UNREF:
        /* Only while a participation keeps the struct alive. */
        for (a = 0; a < m->nacc; a++)
            if (m->acc[a].refs == 0 && registered_in(m, a) > 0) {
                trace(m, "over-unref a%d", a);
                memq_account_unref(m->acc[a].h);
                m->exp_misuse++;
                break;
            }
        break;
    case OP_SET_NAME: {
        unsigned b = byte(m);
        if ((a = pick_acc(m)) >= 0) {
            char name[32];
            snprintf(name, sizeof name, "acc \"%u\"\n\\", b);
            int rc = memq_account_set_name(m->acc[a].h, b % 5 == 0 ? NULL : name);
            CHECK(m, rc == 0, "memq_account_set_name returned %d", rc);
        }
        break;
    }
    case OP_REGISTER: {
        unsigned b1 = byte(m), b2 = byte(m), b3 = byte(m);
        if ((a = pick_acc(m)) >= 0)
            register_part(m, a, pick_behaviour(b1), b2, pick_oldest_mode(b3));
        break;
    }
    case OP_FREE:
        if ((p = pick_part(m, NULL)) != NULL)
            free_part(m, p);
        break;
    case OP_CLAIM: {
        size_t n = claim_size(m);
        if ((p = pick_part(m, NULL)) != NULL)
            do_claim(m, p, n);
        break;
    }
    case OP_RELEASE: {
        size_t n = claim_size(m);
        if ((p = pick_part(m, has_data)) != NULL)
            do_release(m, p, n < p->claimed ? n : p->claimed);
        break;
    }
    case OP_OVER_RELEASE: {
        unsigned b = byte(m);
        if ((p = pick_part(m, is_open)) != NULL) {
            size_t n = p->lib_claimed + 1 + b;
            memq_release(p->h, n);
            trace(m, "over-release p%d %zu", p->idx, n);
            m->exp_misuse++;
            p->lib_claimed = 0;
            chunks_clear(p);
        }
        break;
    }
    case OP_HUGE_CLAIM:
        if ((p = pick_part(m, NULL)) != NULL) {
            bool closed = m->shutdown || m->acc[p->acc].closed;
            if (!closed && (m->unlimited ? p->lib_claimed == 0 : used_now(m) == 0))
                break;
            int rc = memq_claim(p->h, SIZE_MAX);
            int expected = m->shutdown ? MEMQ_ESHUTDOWN : closed ? MEMQ_ECLOSED : MEMQ_EOVERFLOW;
            CHECK(m, rc == expected, "memq_claim(SIZE_MAX) returned %d, expected %d", rc,
                  expected);
        }
        break;
    case OP_CLOCK: {
        static const memq_time steps[] = {MS / 10, MS, 5 * MS, 50 * MS, 500 * MS};
        m->clock += steps[byte(m) % 5];
        trace(m, "clock %" PRIu64, m->clock);
        break;
    }
    case OP_RECLAIM:
        if (!m->shutdown)
            do_reclaim(m);
        break;
    case OP_RECLAIM_LOOP: {
        unsigned n = 4 + byte(m) % 60;
        for (unsigned i = 0; i < n && !m->shutdown && !m->res->failed; i++)
            if (do_reclaim(m) != MEMQ_EAGAIN)
                break;
        break;
    }
    case OP_BEHAVE: {
        unsigned b1 = byte(m), b2 = byte(m);
        if ((p = pick_part(m, NULL)) != NULL) {
            p->behaviour = pick_behaviour(b1);
            p->arg = b2;
            trace(m, "p%d behaves %s", p->idx, behaviour_names[p->behaviour]);
        }
        break;
    }
    case OP_AGE: {
        unsigned b = byte(m);
        if ((p = pick_part(m, NULL)) != NULL) {
            if (b % 8 == 0)
                p->oldest_mode = p->oldest_mode == O_TRUE ? O_LIAR : O_TRUE;
            else
                p->offset += (memq_time)(b % 8) * MS;
        }
        break;
    }
    case OP_COMPLETE: {
        unsigned b = byte(m);
        if ((p = pick_part(m, can_complete)) != NULL)
            complete(m, p, b % 11);
        break;
    }
    case OP_DONE_STRAY: {
        unsigned b = byte(m);
        if ((p = pick_part(m, not_pending)) != NULL) {
            trace(m, "stray reclaim_done p%d", p->idx);
            memq_reclaim_done(p->h, (memq_reclaim_status)(b % 4));
        }
        break;
    }
    case OP_RECONFIGURE:
        op_reconfigure(m);
        break;
    case OP_DUMP:
        op_dump(m);
        break;
    case OP_SHUTDOWN:
        op_shutdown(m);
        break;
    default:
        break;
    }
    check_state(m);
}

/* ======================================================================
 * A run
 * ====================================================================== */

/* Make every participant cooperative and reclaim until done: the tracker
 * must not wedge, and must get below max unless only caches remain. */
static void final_drain(mm *m)
{
    m->op = "final drain";
    m->draining = true;
    m->episode_fresh = false;
    for (int i = 0; i < m->npart; i++) {
        mm_part *p = &m->part[i];
        if (!p->registered)
            continue;
        if (p->oldest_mode == O_FREE_SELF)
            p->oldest_mode = O_TRUE;
        if (p->awaiting)
            complete(m, p, 0);
        p->behaviour = B_GOOD;
    }
    check_state(m);
    int rc = MEMQ_EAGAIN;
    size_t used = 0;
    for (int i = 0; i < 20000 && !m->res->failed; i++) {
        if (any_pending(m))
            m->clock += (memq_time)(m->timeout_ms + 1) * MS;
        rc = do_reclaim(m);
        used = used_now(m);
        if (rc == 0 && (used <= m->max || true_total(m) == 0))
            break;
    }
    CHECK(m, rc == 0, "reclamation never finished: wedged (last answer %d)", rc);
    CHECK(m, m->unlimited || used <= m->max || true_total(m) == 0,
          "after the final drain used %zu > max %zu with %zu bytes held", used, m->max,
          true_total(m));
    check_state(m);
}

static void teardown(mm *m, unsigned how)
{
    m->op = "teardown";
    if (!m->shutdown && (how & 1)) {
        memq_tracker_free(m->t);
        m->shutdown = true;
        for (int a = 0; a < m->nacc; a++)
            close_account(m, a);
        for (int i = 0; i < m->npart; i++)
            if (m->part[i].registered)
                do_claim(m, &m->part[i], 1);
        check_state(m);
    }
    for (int i = 0; i < m->npart; i++)
        if (m->part[i].registered)
            free_part(m, &m->part[i]);
    for (int a = 0; a < m->nacc; a++)
        while (m->acc[a].refs > 0)
            unref_account(m, a);
    if (!m->shutdown) {
        CHECK(m, used_now(m) == 0, "used %zu after everything was freed", used_now(m));
        memq_tracker_free(m->t);
    }
    m->t = NULL;
}

static void run(mm *m, size_t max_steps)
{
    static bool table_ready;
    if (!table_ready) {
        op_table_init();
        table_ready = true;
    }
    det_clock_on = true;
    det_clock_now = (uint64_t)1 << 40;
    m->clock = 1000 * 1000 * MS;
    m->devnull = fopen("/dev/null", "w");

    memq_config_init(&m->cfg);
    m->teardown_how = config_from(m, &m->cfg, true);
    m->cfg.wakeup = mm_wakeup;
    m->cfg.wakeup_ctx = m;
    m->cfg.log = mm_log;
    m->cfg.log_ctx = m;
    m->cfg.clock = mm_clock;
    m->cfg.clock_ctx = m;
    m->unlimited = m->cfg.max == MEMQ_UNLIMITED;
    m->size_base = m->unlimited ? 1024 * 1024 : m->cfg.max;
    int rc = memq_tracker_new(&m->t, &m->cfg);
    if (rc != 0) {
        FAIL(m, "memq_tracker_new returned %d for max %zu low %zu cache %zu", rc, m->cfg.max,
             m->cfg.low_water, m->cfg.cache_max);
        goto out;
    }
    m->cache_bound = m->cfg.cache_max;
    apply_marks(m);
    trace(m, "tracker max %zu low %zu cache %zu timeout %u budget %u", m->max, m->low,
          m->cache_bound, m->cfg.reclaim_timeout_ms, m->cfg.reclaim_budget_us);

    for (m->step = 1; m->step <= max_steps && !m->res->failed; m->step++) {
        unsigned opcode = byte(m);
        if (m->exhausted)
            break;
        step(m, opcode);
        m->res->steps++;
    }
    if (!m->res->failed && !m->shutdown)
        final_drain(m);
    teardown(m, m->teardown_how);
out:
    if (m->devnull != NULL)
        fclose(m->devnull);
    det_clock_on = false;
}

static void options_apply(mm *m)
{
    const char *skip = m->opt->skip;
    m->skip_fd = skip != NULL && strstr(skip, "fd") != NULL;
    m->skip_candidates = skip != NULL && strstr(skip, "candidates") != NULL;
    m->skip_ghost = skip != NULL && strstr(skip, "free-in-oldest") != NULL;
    m->skip_stale = skip != NULL && strstr(skip, "stale-victim") != NULL;
    m->skip_older_than = skip != NULL && strstr(skip, "older-than") != NULL;
}

static void result_init(mm_result *res)
{
    memset(res, 0, sizeof *res);
}

void mm_run_bytes(const uint8_t *data, size_t len, const mm_options *opt, mm_result *res)
{
    static const mm_options none;
    mm *m = calloc(1, sizeof *m);
    if (m == NULL)
        abort();
    result_init(res);
    m->opt = opt ? opt : &none;
    m->res = res;
    options_apply(m);
    m->data = data;
    m->len = len;
    run(m, SIZE_MAX);
    free(m);
}

void mm_run_seed(uint64_t seed, size_t steps, const mm_options *opt, mm_result *res)
{
    static const mm_options none;
    mm *m = calloc(1, sizeof *m);
    if (m == NULL)
        abort();
    result_init(res);
    m->opt = opt ? opt : &none;
    m->res = res;
    options_apply(m);
    m->rng_mode = true;
    /* splitmix64, so that neighbouring seeds give unrelated streams */
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    m->rng = (z ^ (z >> 31)) | 1;
    run(m, steps);
    if (m->opt->save_path != NULL) {
        FILE *f = fopen(m->opt->save_path, "wb");
        if (f != NULL) {
            fwrite(m->saved, 1, m->saved_len, f);
            fclose(f);
        }
    }
    free(m->saved);
    free(m);
}
