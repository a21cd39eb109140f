/*
 * soak.c - threads doing random operations against one tracker in thread
 * mode for SOAK_SECONDS (argv[1], default 600), while its reclaim thread
 * keeps the total under the quota.
 *
 * Each worker owns raw participations (claims and releases guarded by the
 * participant's own mutex, which its reclaim callback also takes, as a real
 * participant must), tracked queues and buffers holding real memory, and
 * accounts under a shared root; it creates, uses and frees them at random.
 * Every 10 seconds the main thread prints operations per second, RSS and
 * the tracker's statistics.
 *
 * Fails (exit 1) if:
 *  - an owner finds memq_participation_claimed() different from what its
 *    participant holds (open account) or non-zero (closed account);
 *  - a call returns an error it should not (anything but MEMQ_ECLOSED on a
 *    closed account);
 *  - once everything is freed, something is still claimed or cached, or
 *    used is more than the chunk pool's slack (counted in used: its
 *    reserve and metadata), or that slack more than the pool holds from
 *    the OS; or peak < used;
 *  - RSS grows after warm-up (the first fifth of the run, at least 10 s):
 *    the last sample may exceed the warm-up one by at most 10% + 8 MiB.
 */
#include <memquota.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)
#define WORKERS 4
#define SLOTS 64 /* participants per worker */

static memq_tracker *tracker;
static memq_account *root;
static atomic_bool stop;
static atomic_ullong ops;
static atomic_int failures;
static char first_failure[512];
static pthread_mutex_t failure_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#include <stdarg.h>
static void fail(const char *fmt, ...)
{
    pthread_mutex_lock(&failure_lock);
    if (atomic_fetch_add(&failures, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_failure, sizeof first_failure, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&failure_lock);
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ======================================================================
 * A raw participant, guarded by its own mutex
 * ====================================================================== */

typedef struct raw {
    pthread_mutex_t lock;
    memq_participation *p;
    size_t held;
    memq_time stamp;
    bool collapse;  /* answers COLLAPSING rather than freeing */
    bool collapsed; /* did: its account closes once the answer is taken */
} raw;

static bool raw_oldest(void *self, memq_time *when)
{
    raw *r = self;
    pthread_mutex_lock(&r->lock);
    bool has = r->held > 0;
    if (has)
        *when = r->stamp;
    pthread_mutex_unlock(&r->lock);
    return has;
}

static memq_reclaim_status raw_reclaim(void *self, const memq_reclaim_request *req)
{
    raw *r = self;
    (void)req;
    pthread_mutex_lock(&r->lock);
    memq_reclaim_status st = MEMQ_RECLAIMED_PARTIAL;
    if (r->collapse) {
        r->held = 0;
        r->collapsed = true;
        st = MEMQ_RECLAIMED_COLLAPSING;
    } else if (r->held > 0) {
        size_t n = r->held / 2 + 1;
        memq_release(r->p, n);
        r->held -= n;
    }
    pthread_mutex_unlock(&r->lock);
    return st;
}

static const memq_participant_ops raw_ops = {raw_oldest, raw_reclaim};

/* ======================================================================
 * A worker
 * ====================================================================== */

typedef enum { EMPTY, RAW, QUEUE, BUF } kind;

typedef struct slot {
    kind k;
    memq_account *a;
    raw *r;
    memq_queue *q;
    memq_buf *b;
} slot;

static void free_item(void *item, void *ctx)
{
    (void)ctx;
    free(item);
}

static void slot_free(slot *s)
{
    switch (s->k) {
    case RAW:
        memq_participation_free(s->r->p); /* not holding r->lock: may wait */
        pthread_mutex_destroy(&s->r->lock);
        free(s->r);
        break;
    case QUEUE:
        memq_queue_free(s->q);
        break;
    case BUF:
        memq_buf_free(s->b);
        break;
    default:
        break;
    }
    if (s->a != NULL)
        memq_account_unref(s->a);
    memset(s, 0, sizeof *s);
}

static void slot_new(slot *s, uint64_t *rng)
{
    memq_account *parent = next_rand(rng) % 2 ? root : NULL;
    int rc = memq_account_new(tracker, parent, &s->a);
    if (rc != 0) {
        fail("memq_account_new: %s", memq_strerror(rc));
        return;
    }
    s->k = (kind)(1 + next_rand(rng) % 3);
    if (s->k == RAW) {
        s->r = calloc(1, sizeof *s->r);
        pthread_mutex_init(&s->r->lock, NULL);
        s->r->collapse = next_rand(rng) % 4 == 0;
        rc = memq_participant_register(s->a, &raw_ops, s->r, &s->r->p);
    } else if (s->k == QUEUE) {
        int policy = next_rand(rng) % 2 ? MEMQ_QUEUE_DROP_OLDEST : MEMQ_QUEUE_COLLAPSE;
        rc = memq_queue_new(s->a, policy, free_item, NULL, NULL, &s->q);
    } else {
        rc = memq_buf_new(s->a, NULL, NULL, &s->b);
    }
    if (rc != 0) {
        fail("registering a participant: %s", memq_strerror(rc));
        if (s->k == RAW) {
            pthread_mutex_destroy(&s->r->lock);
            free(s->r);
        }
        s->k = EMPTY;
        memq_account_unref(s->a);
        s->a = NULL;
    }
}

static void slot_use(slot *s, uint64_t *rng)
{
    size_t n = 1 + next_rand(rng) % (16 * KIB);
    switch (s->k) {
    case RAW: {
        raw *r = s->r;
        pthread_mutex_lock(&r->lock);
        bool closed = memq_account_closed(s->a);
        size_t claimed = memq_participation_claimed(r->p);
        /* Between a COLLAPSING answer and the account's closing, the
         * library still counts what the participant gave up. */
        if (!closed && !r->collapsed && claimed != r->held)
            fail("participation claims %zu, participant holds %zu", claimed, r->held);
        if (next_rand(rng) % 3 != 0) {
            int rc = memq_claim(r->p, n);
            if (rc == 0) {
                if (r->held == 0)
                    r->stamp = memq_tracker_now(tracker);
                r->held += n;
            } else if (rc != MEMQ_ECLOSED) {
                fail("memq_claim: %s", memq_strerror(rc));
            }
        } else if (r->held > 0) {
            size_t k = n < r->held ? n : r->held;
            memq_release(r->p, k);
            r->held -= k;
        }
        pthread_mutex_unlock(&r->lock);
        break;
    }
    case QUEUE:
        if (next_rand(rng) % 3 != 0) {
            void *item = malloc(64);
            int rc = memq_queue_push(s->q, item, n);
            if (rc != 0) {
                free(item);
                if (rc != MEMQ_ECLOSED)
                    fail("memq_queue_push: %s", memq_strerror(rc));
            }
        } else {
            free(memq_queue_pop(s->q));
        }
        break;
    case BUF: {
        static const char data[4096];
        if (next_rand(rng) % 3 != 0) {
            int rc = memq_buf_add(s->b, data, n % sizeof data + 1);
            if (rc != 0 && rc != MEMQ_ECLOSED)
                fail("memq_buf_add: %s", memq_strerror(rc));
        } else {
            memq_buf_drain(s->b, n);
        }
        break;
    }
    default:
        break;
    }
}

static void *worker(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL | 1;
    slot slots[SLOTS];
    memset(slots, 0, sizeof slots);
    while (!atomic_load(&stop)) {
        slot *s = &slots[next_rand(&rng) % SLOTS];
        unsigned what = (unsigned)(next_rand(&rng) % 100);
        if (s->k == EMPTY)
            slot_new(s, &rng);
        else if (what < 2 || memq_account_closed(s->a))
            slot_free(s); /* closed ones are replaced, as a daemon drops them */
        else
            slot_use(s, &rng);
        atomic_fetch_add_explicit(&ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < SLOTS; i++)
        slot_free(&slots[i]);
    return NULL;
}

/* ======================================================================
 * Main
 * ====================================================================== */

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long pages = 0, resident = 0;
    if (fscanf(f, "%lu %lu", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

int main(int argc, char **argv)
{
    long seconds = argc > 1 ? strtol(argv[1], NULL, 10) : 600;
    if (seconds < 10)
        seconds = 10;
    long warmup = seconds / 5 < 10 ? 10 : seconds / 5;

    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 32 * MIB;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    cfg.reclaim_timeout_ms = 100;
    int rc = memq_tracker_new(&tracker, &cfg);
    if (rc != 0 || memq_account_new(tracker, NULL, &root) != 0) {
        fprintf(stderr, "soak: cannot create the tracker: %s\n", memq_strerror(rc));
        return 1;
    }
    pthread_t th[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        pthread_create(&th[i], NULL, worker, (void *)(i + 1));

    size_t rss_warm = 0, rss_last = 0;
    unsigned long long last_ops = 0;
    printf("soak: %ld s, %d workers, max %zu MiB, warm-up %ld s\n", seconds, WORKERS,
           cfg.max / MIB, warmup);
    for (long t = 10; t <= seconds && atomic_load(&failures) == 0; t += 10) {
        sleep(10);
        unsigned long long now_ops = atomic_load(&ops);
        memq_stats st;
        memq_tracker_stats(tracker, &st);
        rss_last = rss_bytes();
        if (t <= warmup)
            rss_warm = rss_last;
        printf("soak: %4ld s  %9.0f ops/s  rss %6.1f MiB  used %6.1f MiB  peak %6.1f MiB  "
               "episodes %llu  collapsed %llu  unreclaimable %llu\n",
               t, (double)(now_ops - last_ops) / 10.0, (double)rss_last / MIB,
               (double)st.used / MIB, (double)st.peak / MIB, (unsigned long long)st.episodes,
               (unsigned long long)st.accounts_collapsed,
               (unsigned long long)st.unreclaimable_events);
        fflush(stdout);
        if (st.peak < st.used)
            fail("peak %zu < used %zu", st.peak, st.used);
        last_ops = now_ops;
    }
    atomic_store(&stop, true);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(th[i], NULL);
    /* The pool's statistics first: they settle what the workers' exits
     * changed in its slack (counted at its next call). */
    memq_pool_stats ps;
    int prc = memq_pool_get_stats(memq_tracker_pool(tracker), &ps);
    memq_stats st;
    memq_tracker_stats(tracker, &st);
    /* What is left is the chunk pool's slack (its reserve and metadata),
     * which the containers' pool counts in used: nothing claimed or
     * cached. */
    if (st.claimed != 0 || st.cached != 0 || st.used != st.slack)
        fail("used %zu (claimed %zu, cached %zu, slack %zu) after every participant was freed",
             st.used, st.claimed, st.cached, st.slack);
    /* The slack is what the pool holds from the OS with no chunk in use,
     * plus at most a cache's worth (128 KiB) for the one thread whose
     * cache is still live, this one (memquota/pool.h: never less). */
    if (prc != 0 || ps.slack != st.slack || ps.slack < ps.resident - ps.in_use ||
        ps.slack > ps.resident - ps.in_use + 128 * KIB)
        fail("the pool's slack %zu (tracker: %zu) is not what it holds from the OS (%zu resident; "
             "in use %zu, cached %zu, metadata %zu, reserved %zu)",
             ps.slack, st.slack, ps.resident, ps.in_use, ps.cached, ps.metadata, ps.reserved);
    if (st.participants != 0 || st.accounts != 1)
        fail("%zu participants, %zu accounts left", st.participants, st.accounts);
    memq_account_unref(root);
    memq_tracker_free(tracker);

    if (rss_warm > 0 && rss_last > rss_warm + rss_warm / 10 + 8 * MIB)
        fail("RSS grew after warm-up: %.1f MiB -> %.1f MiB", (double)rss_warm / MIB,
             (double)rss_last / MIB);
    if (atomic_load(&failures) > 0) {
        fprintf(stderr, "soak: FAILED (%d failures); first: %s\n", atomic_load(&failures),
                first_failure);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    printf("soak: %llu operations, no invariant broken, RSS stable\n", atomic_load(&ops));
    printf("1 passed, 0 failed\n");
    return 0;
}
