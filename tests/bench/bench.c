/*
 * bench.c - what accounting costs a daemon, against the baselines a daemon
 * author would otherwise pick (issue 5).
 *
 * Every figure is a ratio between libmemquota and a baseline timed in the
 * same run, interleaved repetition by repetition, keeping the best of N
 * repetitions of each so that a noisy neighbour slows a repetition down
 * but never makes one look faster than the machine can go.  The program
 * links against the shared library as a user's program does.
 *
 * Output: a table, then one line per figure for scripts:
 *     BENCH <name> <value> <unit>
 *     RATIO <name> <value> target=<op><value> <PASS|MISS>
 * A MISS is a measurement, not a failure: the exit status is 0 unless the
 * benchmark itself breaks (a library call fails, reclamation does not
 * reach low water or does not pick the oldest data first).
 *
 * Usage: memq_bench [--quick] [--only NAME]...   (--quick: a shorter run;
 *        --only: one figure, e.g. to run it under callgrind or perf)
 */
#include "memquota.h"

#define BENCH_NAME "memq_bench"
#include "bench_util.h"

#include <float.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

/* The plain counter, from its own shared object (baseline.c). */
typedef struct base_counter {
    size_t value;
} base_counter;
int base_counter_add(base_counter *c, size_t n);
void base_counter_sub(base_counter *c, size_t n);

/* ======================================================================
 * Utilities: randomness, allocation (time and fatal errors: bench_util.h)
 * ====================================================================== */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        die("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static size_t rng_range(size_t lo, size_t hi)
{
    return lo + (size_t)(rng() % (uint64_t)(hi - lo + 1));
}

static void shuffle(uint32_t *v, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng() % i);
        uint32_t tmp = v[i - 1];
        v[i - 1] = v[j];
        v[j] = tmp;
    }
}

static memq_tracker *new_tracker(size_t max, memq_time (*clock)(void *))
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = max;
    cfg.clock = clock;
    memq_tracker *t = NULL;
    MUST(memq_tracker_new(&t, &cfg));
    return t;
}

/* A participant that never needs reclaiming (the trackers of the fast-path
 * figures have a quota far above what they hold). */
static bool idle_oldest(void *self, memq_time *when)
{
    (void)self;
    (void)when;
    return false;
}

static memq_reclaim_status idle_reclaim(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops idle_ops = {idle_oldest, idle_reclaim};

static const size_t BIG_MAX = (size_t)1 << 50; /* 1 PiB: never reached */

/* ======================================================================
 * Results: the table and the machine-readable lines
 * ====================================================================== */

static char table[64][160];
static size_t table_n;
static char lines[96][160];
static size_t lines_n;
static unsigned misses;

static void table_row(const char *figure, const char *ours, const char *base, const char *ratio,
                      const char *target, const char *result)
{
    if (table_n == sizeof table / sizeof table[0])
        die("too many table rows");
    snprintf(table[table_n++], sizeof table[0], "%-40s %15s %15s %8s %8s  %s", figure, ours, base,
             ratio, target, result);
}

static void table_section(const char *title)
{
    if (table_n == sizeof table / sizeof table[0])
        die("too many table rows");
    snprintf(table[table_n++], sizeof table[0], "%s", title);
}

static void add_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void add_line(const char *fmt, ...)
{
    if (lines_n == sizeof lines / sizeof lines[0])
        die("too many result lines");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lines[lines_n++], sizeof lines[0], fmt, ap);
    va_end(ap);
}

static void bench_value(const char *name, double value, const char *unit)
{
    add_line("BENCH %s %.6g %s", name, value, unit);
}

/* op is "<=" or ">="; returns "PASS" or "MISS". */
static const char *ratio_value(const char *name, double value, const char *op, double target)
{
    bool pass = op[0] == '<' ? value <= target : value >= target;
    if (!pass)
        misses++;
    add_line("RATIO %s %.3f target=%s%g %s", name, value, op, target, pass ? "PASS" : "MISS");
    return pass ? "PASS" : "MISS";
}

/* Formatting helpers for the table (each returns one of a few rotating
 * buffers, enough for one table_row call). */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *fmt(const char *f, ...)
{
    static char buf[8][96];
    static unsigned next;
    char *b = buf[next++ % 8];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof buf[0], f, ap);
    va_end(ap);
    return b;
}

/* A compared figure: both values, the ratio, the target, and the lines. */
static void compare(const char *figure, const char *name, double ours, double base,
                    const char *unit, const char *op, double target)
{
    double ratio = ours / base;
    const char *result = ratio_value(name, ratio, op, target);
    table_row(figure, fmt("%.2f %s", ours, unit), fmt("%.2f %s", base, unit), fmt("%.3f", ratio),
              fmt("%s%g", op, target), result);
}

/* ======================================================================
 * Timed loops, interleaved repetitions, best of N
 * ====================================================================== */

typedef struct run_config {
    bool quick;
    unsigned reps;       /* repetitions of each micro-benchmark */
    double rep_ns;       /* wall time of one repetition */
    unsigned thread_reps;
    double thread_ns;
    unsigned reclaim_reps;
} run_config;

/* Runs `iters` iterations and returns the elapsed nanoseconds. */
typedef uint64_t (*loop_fn)(void *ctx, size_t iters);

typedef struct variant {
    loop_fn fn;
    void *ctx;
    double per_iter; /* operations (or pairs) per iteration */
    size_t iters;    /* per repetition, calibrated */
    double best;     /* ns per operation (or pair) */
} variant;

static size_t calibrate(loop_fn fn, void *ctx, double rep_ns)
{
    size_t iters = 64;
    for (;;) {
        uint64_t ns = fn(ctx, iters);
        if (ns >= 2000000u)
            return (size_t)((double)iters * rep_ns / (double)ns) + 1;
        iters *= 4;
    }
}

/* Each repetition runs every variant once, starting from a different one,
 * so that drifts of the machine's speed hit them all alike. */
static void run_variants(variant *v, size_t n, const run_config *rc)
{
    for (size_t i = 0; i < n; i++) {
        v[i].iters = calibrate(v[i].fn, v[i].ctx, rc->rep_ns);
        v[i].best = DBL_MAX;
    }
    for (unsigned r = 0; r < rc->reps; r++)
        for (size_t k = 0; k < n; k++) {
            variant *x = &v[(k + r) % n];
            uint64_t ns = x->fn(x->ctx, x->iters);
            double per = (double)ns / ((double)x->iters * x->per_iter);
            if (per < x->best)
                x->best = per;
        }
}

/* ======================================================================
 * 1. The fast path against the baselines
 * ====================================================================== */

typedef struct pair_ctx {
    memq_participation *p;
    base_counter *counter;
    size_t n; /* bytes per claim */
    unsigned long failures;
} pair_ctx;

static _Atomic size_t atomic_counter;
static pthread_mutex_t mutex_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t mutex_counter;

static NOINLINE uint64_t loop_memq_pair(void *arg, size_t iters)
{
    pair_ctx *c = arg;
    memq_participation *p = c->p;
    size_t n = c->n;
    unsigned long failures = 0;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
        if (memq_claim(p, n) != 0)
            failures++;
        memq_release(p, n);
    }
    uint64_t ns = now_ns() - t0;
    c->failures += failures;
    return ns;
}

static NOINLINE uint64_t loop_plain_pair(void *arg, size_t iters)
{
    pair_ctx *c = arg;
    base_counter *counter = c->counter;
    size_t n = c->n;
    unsigned long failures = 0;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
        if (base_counter_add(counter, n) != 0)
            failures++;
        base_counter_sub(counter, n);
    }
    uint64_t ns = now_ns() - t0;
    c->failures += failures;
    return ns;
}

static NOINLINE uint64_t loop_atomic_pair(void *arg, size_t iters)
{
    pair_ctx *c = arg;
    size_t n = c->n;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
        atomic_fetch_add(&atomic_counter, n);
        atomic_fetch_sub(&atomic_counter, n);
    }
    return now_ns() - t0;
}

static NOINLINE uint64_t loop_mutex_pair(void *arg, size_t iters)
{
    pair_ctx *c = arg;
    size_t n = c->n;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
        pthread_mutex_lock(&mutex_lock);
        mutex_counter += n;
        pthread_mutex_unlock(&mutex_lock);
        pthread_mutex_lock(&mutex_lock);
        mutex_counter -= n;
        pthread_mutex_unlock(&mutex_lock);
    }
    return now_ns() - t0;
}

static NOINLINE uint64_t loop_malloc_free(void *arg, size_t iters)
{
    pair_ctx *c = arg;
    size_t n = c->n;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
        void *q = malloc(n);
        /* Keeps the compiler from removing the pair. */
        __asm__ volatile("" : : "r"(q) : "memory");
        free(q);
    }
    return now_ns() - t0;
}

static void bench_fast_path(const run_config *rc)
{
    memq_tracker *t = new_tracker(BIG_MAX, NULL);
    memq_account *a;
    memq_participation *p;
    MUST(memq_account_new(t, NULL, &a));
    MUST(memq_participant_register(a, &idle_ops, NULL, &p));
    MUST(memq_claim(p, 1)); /* fills the cache: every pair below is served from it */

    base_counter counter = {0};
    pair_ctx ctx = {p, &counter, 64, 0};
    variant v[] = {
        {loop_memq_pair, &ctx, 1, 0, 0},   {loop_plain_pair, &ctx, 1, 0, 0},
        {loop_atomic_pair, &ctx, 1, 0, 0}, {loop_mutex_pair, &ctx, 1, 0, 0},
        {loop_malloc_free, &ctx, 1, 0, 0},
    };
    run_variants(v, sizeof v / sizeof v[0], rc);
    if (ctx.failures != 0)
        die("memq_claim failed %lu times on the fast path", ctx.failures);
    if (memq_participation_claimed(p) != 1 || counter.value != 0 || atomic_counter != 0 ||
        mutex_counter != 0)
        die("a counter did not return to its start");

    double fast = v[0].best;
    bench_value("fastpath_pair", fast, "ns");
    bench_value("plain_so_pair", v[1].best, "ns");
    bench_value("atomic_pair", v[2].best, "ns");
    bench_value("mutex_pair", v[3].best, "ns");
    bench_value("malloc64_free", v[4].best, "ns");
    table_section("1. Fast path: claim+release of 64 B served from the cache, per pair");
    compare("  vs plain counter in a shared object", "fastpath_vs_plain", fast, v[1].best, "ns",
            "<=", 1.5);
    compare("  vs atomic fetch_add+fetch_sub", "fastpath_vs_atomic", fast, v[2].best, "ns", "<=",
            0.5);
    compare("  vs mutex-protected counter", "fastpath_vs_mutex", fast, v[3].best, "ns", "<=", 0.5);
    compare("  vs malloc(64)+free", "fastpath_vs_malloc", fast, v[4].best, "ns", "<=", 0.75);

    memq_participation_free(p);
    memq_account_unref(a);
    memq_tracker_free(t);
}

/* ======================================================================
 * 2. Mixed sizes, 64 B - 4 KiB
 * ====================================================================== */

/*
 * A daemon's queue: items of 64 B - 4 KiB (cells, buffer chunks) arrive
 * and leave in FIFO order, the queue's length walking randomly between 0
 * and 64 items, so that what the participation holds swings by well over
 * its cache and refills and returns happen as they would.  Positive
 * entries are claims, negative ones releases; a sequence starts and ends
 * empty, so it can be replayed.
 *
 * Two sequences.  The judged one moves in bursts of 1-16 items one way, as
 * a daemon reads a batch of cells from one socket and flushes a batch to
 * another: its claims and releases come from different places in the
 * code.  The other flips a coin before every item; it is shown for
 * information only, because the benchmark's own "claim or release?"
 * branch then mispredicts every other item, which costs the unlocked
 * library calls about as much as the work measured, while an atomic
 * instruction hides it behind its own latency.
 */
#define MIXED_OPS 65536
#define MIXED_QUEUE 64

typedef struct mixed_seq {
    int32_t ops[MIXED_OPS];
    size_t n;
} mixed_seq;

static mixed_seq mixed_bursts, mixed_coin;

static void make_mixed_ops(mixed_seq *seq, size_t max_burst)
{
    int32_t queue[MIXED_QUEUE];
    size_t head = 0, len = 0;
    seq->n = 0;
    while (seq->n < MIXED_OPS - MIXED_QUEUE) {
        bool push = len == 0 || (len < MIXED_QUEUE && (rng() & 1));
        size_t burst = rng_range(1, max_burst);
        for (size_t k = 0; k < burst && seq->n < MIXED_OPS - MIXED_QUEUE; k++) {
            if (push && len < MIXED_QUEUE) {
                int32_t size = (int32_t)rng_range(64, 4096);
                queue[(head + len++) % MIXED_QUEUE] = size;
                seq->ops[seq->n++] = size;
            } else if (!push && len > 0) {
                seq->ops[seq->n++] = -queue[head];
                head = (head + 1) % MIXED_QUEUE;
                len--;
            }
        }
    }
    while (len > 0) {
        seq->ops[seq->n++] = -queue[head];
        head = (head + 1) % MIXED_QUEUE;
        len--;
    }
}

typedef struct mixed_ctx {
    memq_participation *p;
    const mixed_seq *seq;
    unsigned long failures;
} mixed_ctx;

/* iters = passes over the whole sequence. */
static NOINLINE uint64_t loop_mixed_memq(void *arg, size_t iters)
{
    mixed_ctx *c = arg;
    memq_participation *p = c->p;
    const int32_t *ops = c->seq->ops;
    size_t n = c->seq->n;
    unsigned long failures = 0;
    uint64_t t0 = now_ns();
    for (size_t r = 0; r < iters; r++)
        for (size_t i = 0; i < n; i++) {
            int32_t op = ops[i];
            if (op > 0) {
                if (memq_claim(p, (size_t)op) != 0)
                    failures++;
            } else {
                memq_release(p, (size_t)-op);
            }
        }
    uint64_t ns = now_ns() - t0;
    c->failures += failures;
    return ns;
}

static NOINLINE uint64_t loop_mixed_atomic(void *arg, size_t iters)
{
    const mixed_ctx *c = arg;
    const int32_t *ops = c->seq->ops;
    size_t n = c->seq->n;
    uint64_t t0 = now_ns();
    for (size_t r = 0; r < iters; r++)
        for (size_t i = 0; i < n; i++) {
            int32_t op = ops[i];
            if (op > 0)
                atomic_fetch_add(&atomic_counter, (size_t)op);
            else
                atomic_fetch_sub(&atomic_counter, (size_t)-op);
        }
    return now_ns() - t0;
}

static void bench_mixed(const run_config *rc)
{
    memq_tracker *t = new_tracker(BIG_MAX, NULL);
    memq_account *a;
    memq_participation *p;
    MUST(memq_account_new(t, NULL, &a));
    MUST(memq_participant_register(a, &idle_ops, NULL, &p));
    mixed_ctx bursts = {p, &mixed_bursts, 0}, coin = {p, &mixed_coin, 0};
    variant v[] = {
        {loop_mixed_memq, &bursts, (double)mixed_bursts.n, 0, 0},
        {loop_mixed_atomic, &bursts, (double)mixed_bursts.n, 0, 0},
        {loop_mixed_memq, &coin, (double)mixed_coin.n, 0, 0},
        {loop_mixed_atomic, &coin, (double)mixed_coin.n, 0, 0},
    };
    run_variants(v, sizeof v / sizeof v[0], rc);
    if (bursts.failures + coin.failures != 0)
        die("memq_claim failed %lu times (mixed sizes)", bursts.failures + coin.failures);
    if (memq_participation_claimed(p) != 0 || atomic_counter != 0)
        die("mixed sizes: the counts did not return to zero");

    bench_value("mixed_op", v[0].best, "ns");
    bench_value("mixed_atomic_op", v[1].best, "ns");
    bench_value("mixed_coinflip_op", v[2].best, "ns");
    bench_value("mixed_coinflip_atomic_op", v[3].best, "ns");
    bench_value("mixed_coinflip_vs_atomic", v[2].best / v[3].best, "x");
    table_section("2. Mixed sizes 64 B-4 KiB, FIFO, refills and returns included, per operation");
    compare("  bursts of 1-16 vs atomic add or sub", "mixed_vs_atomic", v[0].best, v[1].best, "ns",
            "<=", 0.75);
    table_row("  (coin flip per item vs atomic)", fmt("%.2f ns", v[2].best),
              fmt("%.2f ns", v[3].best), fmt("%.3f", v[2].best / v[3].best), "", "");

    memq_participation_free(p);
    memq_account_unref(a);
    memq_tracker_free(t);
}

/* ======================================================================
 * 3. Independence from scale
 * ====================================================================== */

#define SCALE_ACCOUNTS 100000

static void bench_scale(const run_config *rc)
{
    /* One tracker with one account, one with 100,000 accounts holding
     * data; the same pair of calls on a participation of each. */
    memq_tracker *small = new_tracker(BIG_MAX, NULL);
    memq_account *sa;
    memq_participation *sp;
    MUST(memq_account_new(small, NULL, &sa));
    MUST(memq_participant_register(sa, &idle_ops, NULL, &sp));
    MUST(memq_claim(sp, 1024));

    memq_tracker *big = new_tracker(BIG_MAX, NULL);
    memq_account **acc = xcalloc(SCALE_ACCOUNTS, sizeof *acc);
    memq_participation **part = xcalloc(SCALE_ACCOUNTS, sizeof *part);
    for (size_t i = 0; i < SCALE_ACCOUNTS; i++) {
        MUST(memq_account_new(big, NULL, &acc[i]));
        MUST(memq_participant_register(acc[i], &idle_ops, NULL, &part[i]));
        MUST(memq_claim(part[i], rng_range(64, 8192)));
    }
    memq_participation *bp = part[SCALE_ACCOUNTS / 2];

    pair_ctx c1 = {sp, NULL, 64, 0}, c2 = {bp, NULL, 64, 0};
    variant v[] = {
        {loop_memq_pair, &c1, 1, 0, 0},
        {loop_memq_pair, &c2, 1, 0, 0},
    };
    run_variants(v, 2, rc);
    if (c1.failures + c2.failures != 0)
        die("memq_claim failed (scale)");

    bench_value("scale_1_account_pair", v[0].best, "ns");
    bench_value("scale_100000_accounts_pair", v[1].best, "ns");
    table_section("3. Fast path with 100,000 accounts holding data vs with 1 account, per pair");
    compare("  100,000 accounts vs 1 account", "scale_100000_vs_1", v[1].best, v[0].best, "ns",
            "<=", 1.2);

    for (size_t i = 0; i < SCALE_ACCOUNTS; i++) {
        memq_participation_free(part[i]);
        memq_account_unref(acc[i]);
    }
    free(part);
    free(acc);
    memq_tracker_free(big);
    memq_participation_free(sp);
    memq_account_unref(sa);
    memq_tracker_free(small);
}

/* ======================================================================
 * 4. Two threads on separate participations
 * ====================================================================== */

enum { WORK_MIXED, WORK_PAIR, WORK_CONTROL };

typedef struct worker {
    int kind;
    memq_participation *p;
    size_t iters;
    pthread_barrier_t *barrier;
    uint64_t start, end;
    unsigned long failures;
} worker;

/* The machine's own scaling: a loop that touches no memory. */
static NOINLINE uint64_t loop_control(void *arg, size_t iters)
{
    (void)arg;
    uint64_t x = 1;
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < iters; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        __asm__ volatile("" : "+r"(x));
    }
    return now_ns() - t0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->barrier);
    w->start = now_ns();
    if (w->kind == WORK_MIXED) {
        mixed_ctx c = {w->p, &mixed_bursts, 0};
        loop_mixed_memq(&c, w->iters);
        w->failures = c.failures;
    } else if (w->kind == WORK_PAIR) {
        pair_ctx c = {w->p, NULL, 64, 0};
        loop_memq_pair(&c, w->iters);
        w->failures = c.failures;
    } else {
        loop_control(NULL, w->iters);
    }
    w->end = now_ns();
    return NULL;
}

/* Operations per second of nthreads workers started together. */
static double run_workers(int kind, memq_participation **p, unsigned nthreads, size_t iters,
                          double ops_per_iter)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, nthreads);
    worker w[2];
    pthread_t th[2];
    for (unsigned i = 0; i < nthreads; i++) {
        w[i] = (worker){kind, p[i], iters, &barrier, 0, 0, 0};
        if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0)
            die("pthread_create failed");
    }
    uint64_t start = UINT64_MAX, end = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        if (w[i].failures != 0)
            die("memq_claim failed %lu times (threads)", w[i].failures);
        if (w[i].start < start)
            start = w[i].start;
        if (w[i].end > end)
            end = w[i].end;
    }
    pthread_barrier_destroy(&barrier);
    return (double)nthreads * (double)iters * ops_per_iter / ((double)(end - start) / 1e9);
}

typedef struct scaling {
    int kind;
    size_t iters;
    double per_iter;
    double one, two; /* best operations per second */
} scaling;

/* Each repetition runs every kind on one thread then on two, so that the
 * control loop sees the machine as the others do. */
static void measure_scaling(scaling *s, size_t n, memq_participation **p, const run_config *rc)
{
    for (size_t k = 0; k < n; k++) {
        mixed_ctx mc = {p[0], &mixed_bursts, 0};
        pair_ctx pc = {p[0], NULL, 64, 0};
        if (s[k].kind == WORK_MIXED)
            s[k].iters = calibrate(loop_mixed_memq, &mc, rc->thread_ns);
        else if (s[k].kind == WORK_PAIR)
            s[k].iters = calibrate(loop_memq_pair, &pc, rc->thread_ns);
        else
            s[k].iters = calibrate(loop_control, NULL, rc->thread_ns);
        s[k].per_iter = s[k].kind == WORK_MIXED ? (double)mixed_bursts.n : 1.0;
        s[k].one = s[k].two = 0;
    }
    for (unsigned r = 0; r < rc->thread_reps; r++)
        for (size_t k = 0; k < n; k++) {
            double one = run_workers(s[k].kind, p, 1, s[k].iters, s[k].per_iter);
            double two = run_workers(s[k].kind, p, 2, s[k].iters, s[k].per_iter);
            if (one > s[k].one)
                s[k].one = one;
            if (two > s[k].two)
                s[k].two = two;
        }
}

static void bench_threads(const run_config *rc)
{
    memq_tracker *t = new_tracker(BIG_MAX, NULL);
    memq_account *a[2];
    memq_participation *p[2];
    for (int i = 0; i < 2; i++) {
        MUST(memq_account_new(t, NULL, &a[i]));
        MUST(memq_participant_register(a[i], &idle_ops, NULL, &p[i]));
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* The mixed sequence leaves nothing claimed; the pairs run on a claim
     * of 1 byte, so each participation's cache stays filled. */
    MUST(memq_claim(p[0], 1));
    MUST(memq_claim(p[1], 1));
    scaling s[3] = {{.kind = WORK_CONTROL}, {.kind = WORK_MIXED}, {.kind = WORK_PAIR}};
    measure_scaling(s, 3, p, rc);
    scaling control = s[0], mixed = s[1], pair = s[2];

    double control_ratio = control.two / control.one;
    bench_value("cpus_online", (double)cpus, "cpus");
    bench_value("control_2_threads_vs_1", control_ratio, "x");
    bench_value("threads_1_mixed", mixed.one / 1e6, "Mops/s");
    bench_value("threads_2_mixed", mixed.two / 1e6, "Mops/s");
    bench_value("threads_1_pair", pair.one / 1e6, "Mpairs/s");
    bench_value("threads_2_pair", pair.two / 1e6, "Mpairs/s");
    bench_value("threads_2_vs_1_pair", pair.two / pair.one, "x");

    table_section(fmt("4. Two threads on separate participations (%ld CPUs online)", cpus));
    const char *r = ratio_value("threads_2_vs_1", mixed.two / mixed.one, ">=", 1.8);
    table_row("  mixed sizes, 2 threads vs 1", fmt("%.1f Mop/s", mixed.two / 1e6),
              fmt("%.1f Mop/s", mixed.one / 1e6), fmt("%.3f", mixed.two / mixed.one), ">=1.8", r);
    table_row("  (fast-path pairs, 2 threads vs 1)", fmt("%.1f Mp/s", pair.two / 1e6),
              fmt("%.1f Mp/s", pair.one / 1e6), fmt("%.3f", pair.two / pair.one), "", "");
    table_row("  (control: no memory, 2 threads vs 1)", "", "", fmt("%.3f", control_ratio), "",
              control_ratio < 1.8 ? "fewer than 2 cores free" : "");

    for (int i = 0; i < 2; i++) {
        memq_participation_free(p[i]);
        memq_account_unref(a[i]);
    }
    memq_tracker_free(t);
}

/* ======================================================================
 * 5. Reclamation at scale, against sorting every participant by age
 * ====================================================================== */

#define RECLAIM_ACCOUNTS 100000u
#define RECLAIM_PER_ACCOUNT 10u
#define RECLAIM_PARTICIPANTS (RECLAIM_ACCOUNTS * RECLAIM_PER_ACCOUNT)

/* A participant: a queue whose oldest data arrived at `stamp`.  Asked to
 * reclaim, it frees everything (as a circuit's queue that is cleared). */
typedef struct fake {
    memq_time stamp;
    uint32_t bytes;
    uint32_t account;
    memq_participation *p;
} fake;

/* The configured clock: stamps are whatever the benchmark says, so the
 * data's ages are laid out exactly, and every stamp is at or after the
 * moment its account started holding memory, as with a real clock. */
static _Atomic memq_time fake_now;

static memq_time fake_clock(void *ctx)
{
    (void)ctx;
    return atomic_load_explicit(&fake_now, memory_order_relaxed);
}

static uint64_t first_reclaim_ns, oldest_calls, reclaim_calls, oldest_calls_first;

static NOINLINE bool fake_oldest(void *self, memq_time *when)
{
    const fake *f = self;
    oldest_calls++;
    *when = f->stamp;
    return f->bytes > 0;
}

static NOINLINE memq_reclaim_status fake_reclaim(void *self, const memq_reclaim_request *req)
{
    fake *f = self;
    (void)req;
    if (first_reclaim_ns == 0) {
        first_reclaim_ns = now_ns();
        oldest_calls_first = oldest_calls;
    }
    reclaim_calls++;
    memq_release(f->p, f->bytes);
    f->bytes = 0;
    return MEMQ_RECLAIMED_PARTIAL;
}

static const memq_participant_ops fake_ops = {fake_oldest, fake_reclaim};

typedef struct world {
    memq_tracker *t;
    memq_account **accounts;
    fake *fakes;
    memq_time *account_age; /* true age of each account at the crossing */
} world;

/*
 * 100,000 accounts of 10 participants each.  Data arrives in random order
 * across all participants, then half of them drain and receive new data
 * (their oldest data becomes newer), as honest queues do while attackers'
 * stay put.  The order in which accounts started holding memory is then
 * no longer the order of their oldest data: a selector that trusted it
 * would go wrong, so reclamation gets no easy case.
 */
static void world_build(world *w)
{
    w->t = new_tracker(BIG_MAX, fake_clock);
    w->accounts = xcalloc(RECLAIM_ACCOUNTS, sizeof *w->accounts);
    w->fakes = xcalloc(RECLAIM_PARTICIPANTS, sizeof *w->fakes);
    w->account_age = xcalloc(RECLAIM_ACCOUNTS, sizeof *w->account_age);
    atomic_store(&fake_now, 1000000000u);
    for (uint32_t i = 0; i < RECLAIM_ACCOUNTS; i++)
        MUST(memq_account_new(w->t, NULL, &w->accounts[i]));
    for (uint32_t i = 0; i < RECLAIM_PARTICIPANTS; i++) {
        fake *f = &w->fakes[i];
        f->account = i / RECLAIM_PER_ACCOUNT;
        MUST(memq_participant_register(w->accounts[f->account], &fake_ops, f, &f->p));
    }
    uint32_t *order = xcalloc(RECLAIM_PARTICIPANTS, sizeof *order);
    for (uint32_t i = 0; i < RECLAIM_PARTICIPANTS; i++)
        order[i] = i;
    shuffle(order, RECLAIM_PARTICIPANTS);
    for (uint32_t k = 0; k < RECLAIM_PARTICIPANTS; k++) {
        fake *f = &w->fakes[order[k]];
        atomic_fetch_add(&fake_now, 1000u);
        f->stamp = atomic_load(&fake_now);
        f->bytes = (uint32_t)rng_range(512, 8192);
        MUST(memq_claim(f->p, f->bytes));
    }
    shuffle(order, RECLAIM_PARTICIPANTS);
    for (uint32_t k = 0; k < RECLAIM_PARTICIPANTS / 2; k++) {
        fake *f = &w->fakes[order[k]];
        atomic_fetch_add(&fake_now, 1000u);
        memq_release(f->p, f->bytes);
        f->stamp = atomic_load(&fake_now);
        MUST(memq_claim(f->p, f->bytes));
    }
    free(order);
    for (uint32_t i = 0; i < RECLAIM_ACCOUNTS; i++)
        w->account_age[i] = MEMQ_TIME_MAX;
    for (uint32_t i = 0; i < RECLAIM_PARTICIPANTS; i++) {
        fake *f = &w->fakes[i];
        if (f->stamp < w->account_age[f->account])
            w->account_age[f->account] = f->stamp;
    }
}

static void world_free(world *w)
{
    for (uint32_t i = 0; i < RECLAIM_PARTICIPANTS; i++)
        memq_participation_free(w->fakes[i].p);
    for (uint32_t i = 0; i < RECLAIM_ACCOUNTS; i++)
        memq_account_unref(w->accounts[i]);
    memq_tracker_free(w->t);
    free(w->accounts);
    free(w->fakes);
    free(w->account_age);
}

typedef struct reclaim_result {
    double first_ms, total_ms;
    /* CPU time, except longest_wall_us */
    double longest_us, longest_wall_us, first_call_us, longest_later_us;
    unsigned long calls;
    uint64_t oldest_calls, reclaim_calls, oldest_calls_first;
    unsigned budget_us;
} reclaim_result;

/* Lower max just below what is used, then call memq_tracker_reclaim() as
 * a daemon's loop would until it says the episode is over. */
static reclaim_result reclaim_episode(world *w)
{
    reclaim_result r = {0};
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.clock = fake_clock;
    cfg.max = memq_tracker_used(w->t) - 1;
    r.budget_us = cfg.reclaim_budget_us;
    first_reclaim_ns = oldest_calls = reclaim_calls = oldest_calls_first = 0;

    uint64_t t0 = now_ns(), longest = 0, longest_wall = 0, longest_later = 0;
    MUST(memq_tracker_reconfigure(w->t, &cfg));
    int rc;
    do {
        uint64_t c0 = now_ns(), cpu0 = thread_cpu_ns();
        rc = memq_tracker_reclaim(w->t);
        uint64_t cpu = thread_cpu_ns() - cpu0, wall = now_ns() - c0;
        if (cpu > longest)
            longest = cpu;
        if (wall > longest_wall)
            longest_wall = wall;
        if (r.calls++ == 0)
            r.first_call_us = (double)cpu / 1e3;
        else if (cpu > longest_later)
            longest_later = cpu;
    } while (rc == MEMQ_EAGAIN);
    uint64_t t1 = now_ns();
    if (rc != 0)
        die("memq_tracker_reclaim: %s", memq_strerror(rc));
    memq_stats st;
    memq_tracker_stats(w->t, &st);
    if (st.used > st.low_water || st.unreclaimable_events != 0 || first_reclaim_ns == 0)
        die("reclamation did not reach low water (used %zu, low water %zu)", st.used,
            st.low_water);

    /* Oldest data first: every account reclaimed held older data than
     * every account left alone. */
    bool *reclaimed = xcalloc(RECLAIM_ACCOUNTS, sizeof *reclaimed);
    for (uint32_t i = 0; i < RECLAIM_PARTICIPANTS; i++)
        if (w->fakes[i].bytes == 0)
            reclaimed[w->fakes[i].account] = true;
    memq_time newest_victim = 0, oldest_spared = MEMQ_TIME_MAX;
    for (uint32_t i = 0; i < RECLAIM_ACCOUNTS; i++) {
        if (reclaimed[i] && w->account_age[i] > newest_victim)
            newest_victim = w->account_age[i];
        if (!reclaimed[i] && w->account_age[i] < oldest_spared)
            oldest_spared = w->account_age[i];
    }
    free(reclaimed);
    if (newest_victim > oldest_spared)
        die("reclamation was not oldest-first");

    r.first_ms = (double)(first_reclaim_ns - t0) / 1e6;
    r.total_ms = (double)(t1 - t0) / 1e6;
    r.longest_us = (double)longest / 1e3;
    r.longest_wall_us = (double)longest_wall / 1e3;
    r.longest_later_us = (double)longest_later / 1e3;
    r.oldest_calls = oldest_calls;
    r.oldest_calls_first = oldest_calls_first;
    r.reclaim_calls = reclaim_calls;
    return r;
}

/*
 * The baseline: what C Tor's OOM handler does on every run, made as fast
 * as it can be: ask every participant for its age once (through the same
 * callback, in one contiguous array, not a linked list), sort them all by
 * age, then free the oldest first until the total is at 75% of where it
 * started.  It changes nothing in the world (its own freed marks).
 */
typedef struct aged {
    memq_time age;
    uint32_t index;
} aged;

static int aged_cmp(const void *x, const void *y)
{
    const aged *a = x, *b = y;
    return (a->age > b->age) - (a->age < b->age);
}

static NOINLINE void baseline_free(const fake *f, unsigned char *freed, size_t index,
                                   size_t *used)
{
    *used -= f->bytes;
    freed[index] = 1;
}

static void (*volatile baseline_free_fn)(const fake *, unsigned char *, size_t,
                                         size_t *) = baseline_free;
static const memq_participant_ops *volatile baseline_ops = &fake_ops;

static void baseline_sort(const world *w, double *first_ms, double *total_ms)
{
    aged *v = xcalloc(RECLAIM_PARTICIPANTS, sizeof *v);
    unsigned char *freed = xcalloc(RECLAIM_PARTICIPANTS, 1);
    const memq_participant_ops *ops = baseline_ops;
    void (*free_fn)(const fake *, unsigned char *, size_t, size_t *) = baseline_free_fn;

    uint64_t t0 = now_ns();
    size_t n = 0, used = 0;
    for (uint32_t i = 0; i < RECLAIM_PARTICIPANTS; i++) {
        memq_time when;
        if (ops->oldest(&w->fakes[i], &when)) {
            v[n++] = (aged){when, i};
            used += w->fakes[i].bytes;
        }
    }
    size_t low = used / 4 * 3;
    qsort(v, n, sizeof *v, aged_cmp);
    uint64_t first = 0;
    for (size_t k = 0; k < n && used > low; k++) {
        free_fn(&w->fakes[v[k].index], freed, v[k].index, &used);
        if (first == 0)
            first = now_ns();
    }
    uint64_t t1 = now_ns();
    *first_ms = (double)(first - t0) / 1e6;
    *total_ms = (double)(t1 - t0) / 1e6;
    free(v);
    free(freed);
}

static void bench_reclaim(const run_config *rc)
{
    reclaim_result best = {.first_ms = DBL_MAX, .total_ms = DBL_MAX};
    double base_first = DBL_MAX, base_total = DBL_MAX;
    double setup_ms = 0;
    for (unsigned r = 0; r < rc->reclaim_reps; r++) {
        world w;
        uint64_t s0 = now_ns();
        world_build(&w);
        setup_ms = (double)(now_ns() - s0) / 1e6;
        for (int b = 0; b < 2; b++) {
            double f, t;
            baseline_sort(&w, &f, &t);
            if (f < base_first)
                base_first = f;
            if (t < base_total)
                base_total = t;
        }
        reclaim_result x = reclaim_episode(&w);
        if (x.first_ms < best.first_ms) {
            best.first_ms = x.first_ms;
            best.oldest_calls_first = x.oldest_calls_first;
        }
        if (x.total_ms < best.total_ms) {
            best.total_ms = x.total_ms;
            best.calls = x.calls;
            best.oldest_calls = x.oldest_calls;
            best.reclaim_calls = x.reclaim_calls;
        }
        /* The longest call is a worst case: keep the worst. */
        if (x.longest_us > best.longest_us)
            best.longest_us = x.longest_us;
        if (x.longest_wall_us > best.longest_wall_us)
            best.longest_wall_us = x.longest_wall_us;
        if (x.first_call_us > best.first_call_us)
            best.first_call_us = x.first_call_us;
        if (x.longest_later_us > best.longest_later_us)
            best.longest_later_us = x.longest_later_us;
        best.budget_us = x.budget_us;
        world_free(&w);
    }
    fprintf(stderr, "memq_bench:   (setting up 1,000,000 participants took %.0f ms)\n", setup_ms);

    bench_value("reclaim_first_victim", best.first_ms, "ms");
    bench_value("sort_first_victim", base_first, "ms");
    bench_value("reclaim_total", best.total_ms, "ms");
    bench_value("sort_total", base_total, "ms");
    bench_value("reclaim_total_vs_sort", best.total_ms / base_total, "x");
    bench_value("reclaim_calls", (double)best.calls, "calls");
    bench_value("reclaim_oldest_callbacks", (double)best.oldest_calls, "calls");
    bench_value("reclaim_oldest_callbacks_before_first_victim", (double)best.oldest_calls_first,
                "calls");
    bench_value("reclaim_reclaim_callbacks", (double)best.reclaim_calls, "calls");
    bench_value("reclaim_longest_call", best.longest_us, "us");
    bench_value("reclaim_longest_call_wall", best.longest_wall_us, "us");
    bench_value("reclaim_first_call", best.first_call_us, "us");
    bench_value("reclaim_longest_later_call", best.longest_later_us, "us");
    bench_value("reclaim_budget", (double)best.budget_us, "us");

    table_section("5. Reclamation: 1,000,000 participants in 100,000 accounts, all holding data");
    compare("  first victim's callback vs sort", "reclaim_first_victim_vs_sort", best.first_ms,
            base_first, "ms", "<=", 0.2);
    table_row("  max to low water vs sort", fmt("%.2f ms", best.total_ms),
              fmt("%.2f ms", base_total), fmt("%.3f", best.total_ms / base_total), "", "");
    const char *res = ratio_value("reclaim_longest_call_vs_budget",
                                  best.longest_us / (double)best.budget_us, "<=", 2);
    table_row(fmt("  longest of %lu calls (CPU) vs budget", best.calls),
              fmt("%.0f us", best.longest_us), fmt("%u us", best.budget_us),
              fmt("%.3f", best.longest_us / (double)best.budget_us), "<=2", res);
    table_row("  (longest call, wall clock)", fmt("%.0f us", best.longest_wall_us), "", "", "", "");
}

/* ======================================================================
 * 6. Memory overhead
 * ====================================================================== */

/* Bytes the heap has handed out, malloc's headers and rounding included:
 * what the process really pays. */
static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

#define MEMORY_N 100000

static double tenths(double x)
{
    return (double)(long long)(x * 10 + 0.5) / 10;
}

static void bench_memory(const run_config *rc)
{
    (void)rc;
    memq_tracker *t = new_tracker(BIG_MAX, NULL);
    memq_account **acc = xcalloc(MEMORY_N, sizeof *acc);
    memq_account **child = xcalloc(MEMORY_N, sizeof *child);
    memq_participation **part = xcalloc(MEMORY_N, sizeof *part);

    size_t h0 = heap_in_use();
    for (size_t i = 0; i < MEMORY_N; i++)
        MUST(memq_account_new(t, NULL, &acc[i]));
    size_t h1 = heap_in_use();
    for (size_t i = 0; i < MEMORY_N; i++)
        MUST(memq_participant_register(acc[i / 10], &idle_ops, NULL, &part[i]));
    size_t h2 = heap_in_use();
    /* Each account starts holding memory: it enters the age index. */
    for (size_t i = 0; i < MEMORY_N; i += 10)
        MUST(memq_claim(part[i], 1));
    size_t h2i = heap_in_use();
    /* Children: ten under each of the first tenth of the accounts, as
     * circuits under a channel. */
    for (size_t i = 0; i < MEMORY_N; i++)
        MUST(memq_account_new(t, acc[i / 10], &child[i]));
    size_t h3 = heap_in_use();
    if (h1 <= h0 || h2 <= h1 || h3 <= h2)
        die("mallinfo2() saw no allocations (another malloc, or a sanitizer?): "
            "cannot measure memory");

    /* To a tenth of a byte: the heap's bookkeeping moves a few bytes
     * once in a while, which is no one object's cost. */
    double per_account = tenths((double)(h1 - h0) / MEMORY_N);
    double per_participation = tenths((double)(h2 - h1) / MEMORY_N);
    double per_child = tenths((double)(h3 - h2i) / MEMORY_N);
    double per_indexed = tenths((double)(h2i - h2) / (MEMORY_N / 10));
    bench_value("memory_per_account", per_account, "B");
    bench_value("memory_per_participation", per_participation, "B");
    bench_value("memory_per_child_account", per_child, "B");
    bench_value("memory_age_index_per_account", per_indexed, "B");

    table_section("6. Memory the library allocates (malloc headers included, mallinfo2 deltas)");
    const char *r1 = ratio_value("memory_per_account_bytes", per_account, "<=", 160);
    table_row("  per account (no parent)", fmt("%.1f B", per_account), "", "", "<=160", r1);
    table_row("  (per child account, 10 per parent)", fmt("%.1f B", per_child), "", "", "", "");
    table_row("  (age index, per account holding memory)", fmt("%.1f B", per_indexed), "", "", "",
              "");
    const char *r2 = ratio_value("memory_per_participation_bytes", per_participation, "<=", 96);
    table_row("  per participation", fmt("%.1f B", per_participation), "", "", "<=96", r2);

    for (size_t i = 0; i < MEMORY_N; i++) {
        memq_account_unref(child[i]);
        memq_participation_free(part[i]);
        memq_account_unref(acc[i]);
    }
    memq_tracker_free(t);
    free(acc);
    free(child);
    free(part);
}

/* ======================================================================
 * 7. Over-count
 * ====================================================================== */

#define OVERCOUNT_N 10000
#define OVERCOUNT_QUEUE 16

/*
 * The tracker's total minus what the participants truly claim, with
 * 10,000 participations: idle ones (registered, nothing claimed), random
 * FIFO traffic of 64 B - 4 KiB items, and the worst pattern there is: a
 * claim that refills the cache, then a release that tops it up to exactly
 * cache_max.  The documented bound is cache_max per participation.
 */
static void bench_overcount(const run_config *rc)
{
    memq_tracker *t = new_tracker(BIG_MAX, NULL);
    memq_config cfg;
    memq_config_init(&cfg);
    size_t cache_max = cfg.cache_max;
    memq_account *acc[100];
    for (int i = 0; i < 100; i++)
        MUST(memq_account_new(t, NULL, &acc[i]));
    memq_participation **p = xcalloc(OVERCOUNT_N, sizeof *p);
    for (size_t i = 0; i < OVERCOUNT_N; i++)
        MUST(memq_participant_register(acc[i % 100], &idle_ops, NULL, &p[i]));
    size_t idle_gap = memq_tracker_used(t);

    /* Random traffic: each participation a FIFO queue of up to 16 items. */
    uint32_t (*queue)[OVERCOUNT_QUEUE] = xcalloc(OVERCOUNT_N, sizeof *queue);
    unsigned char *head = xcalloc(OVERCOUNT_N, 1), *len = xcalloc(OVERCOUNT_N, 1);
    size_t claimed = 0, traffic_gap = 0;
    unsigned rounds = rc->quick ? 100 : 400;
    for (unsigned r = 0; r < rounds; r++) {
        for (size_t i = 0; i < OVERCOUNT_N; i++) {
            bool push = len[i] == 0 || (len[i] < OVERCOUNT_QUEUE && (rng() & 1));
            if (push) {
                uint32_t size = (uint32_t)rng_range(64, 4096);
                queue[i][(head[i] + len[i]++) % OVERCOUNT_QUEUE] = size;
                MUST(memq_claim(p[i], size));
                claimed += size;
            } else {
                uint32_t size = queue[i][head[i]];
                head[i] = (unsigned char)((head[i] + 1) % OVERCOUNT_QUEUE);
                len[i]--;
                memq_release(p[i], size);
                claimed -= size;
            }
        }
        size_t gap = memq_tracker_used(t) - claimed;
        if (gap > traffic_gap)
            traffic_gap = gap;
    }

    /* The worst pattern, on top of whatever each one holds. */
    for (size_t i = 0; i < OVERCOUNT_N; i++) {
        MUST(memq_claim(p[i], cache_max + 1));
        memq_release(p[i], cache_max / 4);
        claimed += cache_max + 1 - cache_max / 4;
    }
    size_t worst_gap = memq_tracker_used(t) - claimed;
    size_t check = 0;
    for (size_t i = 0; i < OVERCOUNT_N; i++)
        check += memq_participation_claimed(p[i]);
    if (check != claimed)
        die("over-count: the participations claim %zu, expected %zu", check, claimed);

    size_t bound = cache_max * OVERCOUNT_N;
    size_t gap = worst_gap > traffic_gap ? worst_gap : traffic_gap;
    bench_value("overcount_samples", (double)rounds, "samples");
    bench_value("overcount_idle", (double)idle_gap, "B");
    bench_value("overcount_traffic", (double)traffic_gap, "B");
    bench_value("overcount_worst", (double)gap, "B");
    bench_value("overcount_bound", (double)bound, "B");
    table_section("7. Over-count with 10,000 participations (tracked minus truly claimed)");
    table_row("  idle participations", fmt("%zu B", idle_gap), "", "", "", "");
    table_row("  random FIFO traffic, worst sample", fmt("%.1f MiB", (double)traffic_gap / 1048576),
              "", "", "", "");
    const char *res = ratio_value("overcount_vs_bound", (double)gap / (double)bound, "<=", 1);
    table_row("  worst pattern vs cache_max each", fmt("%.1f MiB", (double)gap / 1048576),
              fmt("%.1f MiB", (double)bound / 1048576), fmt("%.3f", (double)gap / (double)bound),
              "<=1", res);

    for (size_t i = 0; i < OVERCOUNT_N; i++)
        memq_participation_free(p[i]);
    for (int i = 0; i < 100; i++)
        memq_account_unref(acc[i]);
    memq_tracker_free(t);
    free(p);
    free(queue);
    free(head);
    free(len);
}

/* ======================================================================
 * 8. Closing many children of one parent
 * ====================================================================== */

/* Seconds to close (last unref, in creation order) n children of one
 * parent: each close unlinks one edge from the parent's list. */
static double close_children_s(size_t n)
{
    memq_tracker *t = new_tracker(BIG_MAX, NULL);
    memq_account *parent, **children = xcalloc(n, sizeof *children);
    MUST(memq_account_new(t, NULL, &parent));
    for (size_t i = 0; i < n; i++)
        MUST(memq_account_new(t, parent, &children[i]));
    uint64_t t0 = thread_cpu_ns();
    for (size_t i = 0; i < n; i++)
        memq_account_unref(children[i]);
    double s = (double)(thread_cpu_ns() - t0) / 1e9;
    memq_account_unref(parent);
    memq_tracker_free(t);
    free(children);
    return s;
}

static void bench_close(const run_config *rc)
{
    double small = DBL_MAX, large = DBL_MAX;
    for (unsigned r = 0; r < (rc->quick ? 3u : 7u); r++) {
        double a = close_children_s(25000), b = close_children_s(100000);
        if (a < small)
            small = a;
        if (b < large)
            large = b;
    }
    bench_value("close_25k_children", small * 1e3, "ms");
    bench_value("close_100k_children", large * 1e3, "ms");
    table_section("8. Closing the children of one parent (CPU time)");
    compare("  100,000 children vs 25,000 (linear: 4)", "close_100k_vs_25k", large * 1e3,
            small * 1e3, "ms", "<=", 5);
}

/* ======================================================================
 * 9. One episode across a million accounts
 * ====================================================================== */

/*
 * A million accounts of one participant each, data arriving in random
 * order, then half of them drained and refilled (as in figure 5, with
 * ten times the accounts); max lowered just below what is used; the
 * daemon's loop calls memq_tracker_reclaim() until the episode is over
 * (a quarter of the bytes, oldest first).  What the episode costs in all,
 * and per account reclaimed.
 */
static void bench_episode(const run_config *rc)
{
    const uint32_t n = rc->quick ? 200000u : 1000000u;
    memq_tracker *t = new_tracker(BIG_MAX, fake_clock);
    memq_account **accounts = xcalloc(n, sizeof *accounts);
    fake *fakes = xcalloc(n, sizeof *fakes);
    uint32_t *order = xcalloc(n, sizeof *order);
    atomic_store(&fake_now, 1000000000u);
    for (uint32_t i = 0; i < n; i++) {
        MUST(memq_account_new(t, NULL, &accounts[i]));
        fakes[i].account = i;
        MUST(memq_participant_register(accounts[i], &fake_ops, &fakes[i], &fakes[i].p));
        order[i] = i;
    }
    shuffle(order, n);
    for (uint32_t k = 0; k < n; k++) {
        fake *f = &fakes[order[k]];
        atomic_fetch_add(&fake_now, 1000u);
        f->stamp = atomic_load(&fake_now);
        f->bytes = (uint32_t)rng_range(512, 8192);
        MUST(memq_claim(f->p, f->bytes));
    }
    shuffle(order, n);
    for (uint32_t k = 0; k < n / 2; k++) {
        fake *f = &fakes[order[k]];
        atomic_fetch_add(&fake_now, 1000u);
        memq_release(f->p, f->bytes);
        f->stamp = atomic_load(&fake_now);
        MUST(memq_claim(f->p, f->bytes));
    }
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.clock = fake_clock;
    cfg.max = memq_tracker_used(t) - 1;
    first_reclaim_ns = oldest_calls = reclaim_calls = oldest_calls_first = 0;
    unsigned long calls = 0;
    uint64_t longest = 0, cpu_total = 0, t0 = now_ns();
    MUST(memq_tracker_reconfigure(t, &cfg));
    int rc_;
    do {
        uint64_t c0 = thread_cpu_ns();
        rc_ = memq_tracker_reclaim(t);
        uint64_t c = thread_cpu_ns() - c0;
        cpu_total += c;
        if (c > longest)
            longest = c;
        calls++;
    } while (rc_ == MEMQ_EAGAIN);
    double wall_ms = (double)(now_ns() - t0) / 1e6;
    if (rc_ != 0)
        die("memq_tracker_reclaim: %s", memq_strerror(rc_));
    memq_stats st;
    memq_tracker_stats(t, &st);
    if (st.used > st.low_water || st.unreclaimable_events != 0)
        die("the episode across %u accounts did not reach low water", n);
    bench_value(fmt("episode_%uk_accounts_total", n / 1000), wall_ms, "ms");
    bench_value(fmt("episode_%uk_accounts_cpu", n / 1000), (double)cpu_total / 1e6, "ms");
    bench_value("episode_victims", (double)reclaim_calls, "accounts");
    bench_value("episode_per_victim", (double)cpu_total / (double)reclaim_calls, "ns");
    bench_value("episode_oldest_callbacks", (double)oldest_calls, "calls");
    bench_value("episode_calls", (double)calls, "calls");
    bench_value("episode_longest_call", (double)longest / 1e3, "us");
    table_section(fmt("9. One episode across %u accounts (a quarter of the bytes)", n));
    table_row("  crossing to low water (wall)", fmt("%.0f ms", wall_ms), "", "", "", "");
    table_row(fmt("  per victim (%lu victims, CPU)", (unsigned long)reclaim_calls),
              fmt("%.0f ns", (double)cpu_total / (double)reclaim_calls), "", "", "", "");
    table_row(fmt("  longest of %lu calls (CPU)", calls), fmt("%.0f us", (double)longest / 1e3),
              fmt("%u us", cfg.reclaim_budget_us), "", "", "");
    for (uint32_t i = 0; i < n; i++) {
        memq_participation_free(fakes[i].p);
        memq_account_unref(accounts[i]);
    }
    memq_tracker_free(t);
    free(accounts);
    free(fakes);
    free(order);
}

/* ======================================================================
 * Main
 * ====================================================================== */

static const struct figure {
    const char *name;
    const char *what;
    void (*run)(const run_config *rc);
} figures[] = {
    {"fastpath", "fast path against the baselines", bench_fast_path},
    {"mixed", "mixed sizes", bench_mixed},
    {"scale", "1 account vs 100,000 accounts", bench_scale},
    {"threads", "two threads", bench_threads},
    {"reclaim", "reclamation at scale", bench_reclaim},
    {"memory", "memory overhead", bench_memory},
    {"overcount", "over-count", bench_overcount},
    {"close", "closing 100,000 children", bench_close},
    {"episode", "one episode across a million accounts", bench_episode},
};
#define NFIGURES (sizeof figures / sizeof figures[0])

static void usage(void)
{
    fprintf(stderr, "usage: memq_bench [--quick] [--only NAME]...\nNAME:");
    for (size_t i = 0; i < NFIGURES; i++)
        fprintf(stderr, " %s", figures[i].name);
    fprintf(stderr, "\n");
    exit(2);
}

int main(int argc, char **argv)
{
    run_config rc = {false, 101, 8e6, 81, 40e6, 7};
    bool only[NFIGURES] = {false}, some = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            rc = (run_config){true, 25, 4e6, 11, 20e6, 2};
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            size_t k = 0;
            while (k < NFIGURES && strcmp(figures[k].name, argv[i + 1]) != 0)
                k++;
            if (k == NFIGURES)
                usage();
            only[k] = some = true;
            i++;
        } else {
            usage();
        }
    }
    uint64_t t0 = now_ns();
    make_mixed_ops(&mixed_bursts, 16);
    make_mixed_ops(&mixed_coin, 1);
    for (size_t k = 0; k < NFIGURES; k++) {
        if (some && !only[k])
            continue;
        fprintf(stderr, "memq_bench: %zu/%zu %s\n", k + 1, NFIGURES, figures[k].what);
        figures[k].run(&rc);
    }
    double seconds = (double)(now_ns() - t0) / 1e9;

    printf("libmemquota %s benchmark, %s run, %.0f s: best of %u repetitions (figures 1-3), "
           "%u (4), %u (5)\n\n",
           memq_version_string(), rc.quick ? "quick" : "full", seconds, rc.reps, rc.thread_reps,
           rc.reclaim_reps);
    printf("%-40s %15s %15s %8s %8s  %s\n", "figure", "libmemquota", "baseline", "ratio",
           "target", "result");
    for (size_t i = 0; i < table_n; i++)
        printf("%s\n", table[i]);
    printf("\n");
    for (size_t i = 0; i < lines_n; i++)
        printf("%s\n", lines[i]);
    bench_value("duration", seconds, "s");
    printf("%s\n", lines[lines_n - 1]);
    printf("\n%u target%s missed\n", misses, misses == 1 ? "" : "s");
    return 0;
}
