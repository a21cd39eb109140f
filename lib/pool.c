/*
 * pool.c - the chunk pool: memory for participants' data in spans from the
 * OS, given back as soon as it is free, with its slack counted in the
 * tracker.
 *
 * A room beside the core: it uses the public API and lib/core.h only.
 *
 * Memory.  Chunks of up to 64 KiB live in spans of 256 KiB, each span
 * aligned to its size and serving one size class of one pool.  Spans are
 * carved from 16 MiB regions (or mapped one by one with guard pages in
 * debug mode); a chunk larger than 64 KiB gets a mapping of its own.
 * Nothing the pool knows of a chunk lives in the chunk: a table maps each
 * 256 KiB granule to its span's metadata (a flat one for the range of
 * address space reserved at start, a two-level radix table elsewhere),
 * which holds one state byte per chunk (fresh, allocated, free), a bitmap
 * of the chunks free in the span and, per page, the number of chunks
 * taken that overlap it.  So a free finds its chunk's size from the
 * address, and an overrun of a chunk cannot reach the pool's data.
 *
 * Invariants (under the class lock, for each span of a class):
 *  - out = chunks taken from the span: allocated, or in a thread cache;
 *    a chunk is in exactly one place: free in the span, in one cache, or
 *    allocated (its state byte says which of the last two).
 *  - page_out[i] = taken chunks overlapping page i; a page with chunks
 *    taken is resident (counted); a resident page with none is either kept
 *    in the pool's reserve or given back to the OS at once.
 *  - The class's slack = resident pages + metadata - out * size >= 0, and
 *    the pool's `want` = the sum of its classes' slack, its metadata
 *    and its thread caches' allowances.  `applied` is what the
 *    tracker counts; report() brings it to `want`.
 *  - A thread cache is counted at its capacity, its `allowance` (the sum
 *    of its magazines' capacities in bytes, decided at each class's first
 *    use, never above the pool's `cache`), not at what it holds: the
 *    tracker over-counts it by at most `cache`, and the common path of an
 *    allocation or a free touches nothing shared.
 *
 * Placement.  Partly used spans sit in eight bins by occupancy; a chunk
 * comes from the fullest bin, then from an empty span that still has
 * resident pages, then from a new span, and within a span the lowest free
 * chunks first.  Frees thus gather into sparse spans, whose pages go back
 * to the OS as soon as no chunk is left on them.  A thread's cache
 * refills from one span of its own (the fullest when it took it) until
 * that span is full, so that two threads never write the same metadata
 * lines on their common path.
 *
 * Locks, in the only order they are taken: the tracker's (the core, when
 * it calls memq__pool_tracker_gone()), `registry` (pools, thread caches),
 * a class's lock (its spans) or the pool's large lock, `world.lock`
 * (regions, metadata blocks, the tables).  No function of the core is
 * called with any of them held: slack and misuse are reported after
 * unlocking, by report(), which one thread at a time runs (a flag, not a
 * lock: nobody waits for it).  Calls that cannot be sure the tracker still
 * exists (a free with no participation, a thread's exit) leave their
 * changes for the next call that can.
 *
 * The thread caches are per thread and per pool, found from a
 * thread-local pointer; a pool's caches are listed in the registry, so
 * that freeing the pool (or the tracker's going, for its own pool) can
 * take them back, and a thread's exit gives its caches back to their
 * pools.
 */
#include "core.h"
#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline))

/* ======================================================================
 * Size classes
 * ====================================================================== */

#define NCLASSES MEMQ_POOL_CLASSES
#define LARGE_CLASS 255u

/* 16 B steps to 128 B, then four per power of two; 528 holds a 514-byte
 * Tor cell with 14 bytes to spare (640 would waste a fifth). */
static const uint32_t class_sizes[NCLASSES] = {
    16,    32,    48,    64,    80,    96,    112,   128,   160,   192,   224,   256,
    320,   384,   448,   512,   528,   640,   768,   896,   1024,  1280,  1536,  1792,
    2048,  2560,  3072,  3584,  4096,  5120,  6144,  7168,  8192,  10240, 12288, 14336,
    16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536,
};
_Static_assert(sizeof class_sizes / sizeof class_sizes[0] == NCLASSES, "one size per class");

/* Class of n: by 16-byte steps up to 1 KiB, by 256-byte steps above. */
static uint8_t class_small[1024 / 16 + 1];
static uint8_t class_large[65536 / 256 + 1];

static inline unsigned class_of(size_t n)
{
    return n <= 1024 ? class_small[(n + 15) >> 4] : class_large[(n + 255) >> 8];
}

/* ======================================================================
 * Process-wide state: pages, regions, metadata blocks, the radix table
 * ====================================================================== */

#define SPAN_SHIFT 18
#define SPAN_SIZE ((size_t)1 << SPAN_SHIFT)
#define REGION_SPANS 64 /* 16 MiB regions */
#define META_REGION ((size_t)1 << 20)
#define META_GRAIN 256
#define META_MAX ((size_t)32768)
/* offset / size as (offset * recip) >> RECIP_SHIFT: exact for offsets
 * below 2^18 and sizes up to 2^16 (the error stays below 2^-17). */
#define RECIP_SHIFT 35
/* User addresses fit in 48 bits: 15 bits of top level, 15 of leaf. */
#define RADIX_BITS 15
#define RADIX_SIZE ((size_t)1 << RADIX_BITS)

typedef struct span span;
typedef struct region region;
typedef struct tcache tcache;

struct region {
    region *next;
    char *base;
    uint64_t free; /* spans given back, by index */
};

typedef struct meta_free {
    struct meta_free *next;
} meta_free;

static struct {
    pthread_mutex_t lock;
    size_t page;
    unsigned page_shift;
    region *regions, *carving;
    unsigned carved; /* spans of `carving` handed out */
    char *meta_next, *meta_end;
    meta_free *meta_lists[META_MAX / META_GRAIN + 1];
    int init_error;
} world = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Atomic(span *_Atomic *) radix[RADIX_SIZE];
static pthread_once_t world_once = PTHREAD_ONCE_INIT;

/*
 * The range: address space reserved at start (PROT_NONE: it costs no
 * memory, and no commit charge until a region in it is made writable),
 * from which regions are carved while it lasts.  A span in it is found
 * with one load from a flat table instead of two from the radix table,
 * which a free would otherwise wait for.  Set once by world_init().
 */
#define RANGE_MAX ((size_t)64 << 30)
static _Atomic(char *) range_base;
static _Atomic size_t range_len;
static size_t range_carved; /* under world.lock */
static _Atomic(span *) range_spans[RANGE_MAX >> SPAN_SHIFT];

static void world_init(void)
{
    unsigned c = 0;
    for (size_t i = 0; i < sizeof class_small; i++) {
        while (class_sizes[c] < i * 16)
            c++;
        class_small[i] = (uint8_t)c;
    }
    c = 0;
    for (size_t i = 0; i < sizeof class_large; i++) {
        while (class_sizes[c] < i * 256)
            c++;
        class_large[i] = (uint8_t)c;
    }
    long page = sysconf(_SC_PAGESIZE);
    /* One 64-bit word of residency bits per span. */
    if (page < 4096 || page > 65536 || (page & (page - 1)) != 0) {
        world.init_error = MEMQ_ESYSTEM;
        return;
    }
    world.page = (size_t)page;
    world.page_shift = (unsigned)__builtin_ctzl((unsigned long)page);
    /* As much of RANGE_MAX as the process may reserve (RLIMIT_AS,
     * valgrind): a smaller range, or none, only costs speed. */
    for (size_t len = RANGE_MAX; len >= ((size_t)1 << 30); len /= 4) {
        char *base = mmap(NULL, len + SPAN_SIZE, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED)
            continue;
        size_t head = (SPAN_SIZE - (uintptr_t)base % SPAN_SIZE) % SPAN_SIZE;
        if (head > 0)
            munmap(base, head);
        munmap(base + head + len, SPAN_SIZE - head);
        atomic_store_explicit(&range_base, base + head, memory_order_relaxed);
        atomic_store_explicit(&range_len, len, memory_order_relaxed);
        break;
    }
}

static int world_ready(void)
{
    pthread_once(&world_once, world_init);
    return world.init_error;
}

/* An anonymous mapping of len bytes whose address + skip is aligned to
 * align, with nothing mapped around it beyond [addr, addr + len). */
static char *os_map_aligned(size_t len, size_t align, size_t skip)
{
    size_t over = len + align;
    char *raw = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    size_t head = (align - ((uintptr_t)raw + skip) % align) % align, tail = over - head - len;
    if (head > 0)
        munmap(raw, head);
    if (tail > 0)
        munmap(raw + head + len, tail);
    return raw + head;
}

static void os_release(void *addr, size_t len)
{
    /* Cannot fail on a private anonymous range we mapped; the pages read
     * back as zeros. */
    (void)madvise(addr, len, MADV_DONTNEED);
}

/* Metadata blocks: multiples of 256 bytes, page-aligned from a page up
 * (so that a freed one goes back to the OS). */
static size_t meta_round(size_t n)
{
    n = (n + META_GRAIN - 1) / META_GRAIN * META_GRAIN;
    if (n >= world.page)
        n = (n + world.page - 1) & ~(world.page - 1);
    return n;
}

/* Under world.lock.  Returns a zeroed block of meta_round(n) bytes. */
static void *meta_alloc(size_t n)
{
    n = meta_round(n);
    if (n > META_MAX)
        return NULL;
    meta_free *f = world.meta_lists[n / META_GRAIN];
    if (f != NULL) {
        world.meta_lists[n / META_GRAIN] = f->next;
        memset(f, 0, n);
        return f;
    }
    char *p = world.meta_next;
    if (p != NULL && n >= world.page)
        p += (world.page - (uintptr_t)p % world.page) % world.page;
    if (p == NULL || p + n > world.meta_end) {
        /* The rest of the old block is abandoned: at most META_MAX. */
        p = mmap(NULL, META_REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        world.meta_end = p + META_REGION;
    }
    world.meta_next = p + n;
    return p; /* fresh pages are zero */
}

static void meta_release(void *block, size_t n)
{
    n = meta_round(n);
    if (n >= world.page)
        os_release(block, n);
    meta_free *f = block;
    f->next = world.meta_lists[n / META_GRAIN];
    world.meta_lists[n / META_GRAIN] = f;
}

static span *span_of_radix(uintptr_t a)
{
    if (a >> (SPAN_SHIFT + 2 * RADIX_BITS))
        return NULL;
    span *_Atomic *leaf = atomic_load_explicit(&radix[a >> (SPAN_SHIFT + RADIX_BITS)],
                                               memory_order_acquire);
    if (leaf == NULL)
        return NULL;
    return atomic_load_explicit(&leaf[(a >> SPAN_SHIFT) & (RADIX_SIZE - 1)], memory_order_acquire);
}

/* Lock-free lookup: a pointer whose span is being freed is a stale one. */
static inline span *span_of(uintptr_t a)
{
    uintptr_t off = a - (uintptr_t)atomic_load_explicit(&range_base, memory_order_relaxed);
    if (LIKELY(off < atomic_load_explicit(&range_len, memory_order_relaxed)))
        return atomic_load_explicit(&range_spans[off >> SPAN_SHIFT], memory_order_acquire);
    return span_of_radix(a);
}

/* Under world.lock: map granules [base, base + len) to s (NULL: unmap).
 * Fails only to map, for want of memory for the table, and then maps
 * nothing. */
static bool radix_set(const char *base, size_t len, span *s)
{
    uintptr_t start = (uintptr_t)base;
    uintptr_t in_range = start - (uintptr_t)atomic_load_explicit(&range_base, memory_order_relaxed);
    if (in_range < atomic_load_explicit(&range_len, memory_order_relaxed)) {
        /* Spans in the range are only ever one granule. */
        atomic_store_explicit(&range_spans[in_range >> SPAN_SHIFT], s, memory_order_release);
        return true;
    }
    for (uintptr_t a = start; a < start + len; a += SPAN_SIZE) {
        size_t top = a >> (SPAN_SHIFT + RADIX_BITS);
        span *_Atomic *leaf = atomic_load_explicit(&radix[top], memory_order_relaxed);
        if (leaf == NULL) {
            if (s == NULL)
                continue;
            leaf = mmap(NULL, RADIX_SIZE * sizeof *leaf, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (leaf == MAP_FAILED) {
                for (uintptr_t b = start; b < a; b += SPAN_SIZE)
                    atomic_store_explicit(&atomic_load_explicit(&radix[b >> (SPAN_SHIFT + RADIX_BITS)],
                                                                memory_order_relaxed)
                                               [(b >> SPAN_SHIFT) & (RADIX_SIZE - 1)],
                                          NULL, memory_order_release);
                return false;
            }
            atomic_store_explicit(&radix[top], leaf, memory_order_release);
        }
        atomic_store_explicit(&leaf[(a >> SPAN_SHIFT) & (RADIX_SIZE - 1)], s, memory_order_release);
    }
    return true;
}

/* Under world.lock: a span's worth of address space from a region. */
static char *region_take(region **from)
{
    for (region *r = world.regions; r != NULL; r = r->next)
        if (r->free != 0) {
            unsigned i = (unsigned)__builtin_ctzll(r->free);
            r->free &= r->free - 1;
            *from = r;
            return r->base + (size_t)i * SPAN_SIZE;
        }
    if (world.carving == NULL || world.carved == REGION_SPANS) {
        region *r = meta_alloc(sizeof *r);
        if (r == NULL)
            return NULL;
        size_t len = REGION_SPANS * SPAN_SIZE;
        char *base = NULL;
        if (range_carved + len <= atomic_load_explicit(&range_len, memory_order_relaxed)) {
            base = atomic_load_explicit(&range_base, memory_order_relaxed) + range_carved;
            if (mprotect(base, len, PROT_READ | PROT_WRITE) == 0)
                range_carved += len;
            else
                base = NULL;
        }
        if (base == NULL)
            base = os_map_aligned(len, SPAN_SIZE, 0);
        if (base == NULL) {
            meta_release(r, sizeof *r);
            return NULL;
        }
        /* Pages go back one by one: a transparent huge page would keep
         * 2 MiB resident for one chunk in use (THP set to "always"). */
        (void)madvise(base, len, MADV_NOHUGEPAGE);
        r->base = base;
        r->next = world.regions;
        world.regions = r;
        world.carving = r;
        world.carved = 0;
    }
    *from = world.carving;
    return world.carving->base + (size_t)world.carved++ * SPAN_SIZE;
}

/* ======================================================================
 * Pools, spans and thread caches
 * ====================================================================== */

enum { CHUNK_FRESH = 0, CHUNK_ALLOCATED = 1, CHUNK_FREE = 2 };
enum { MISUSE_DOUBLE_FREE, MISUSE_INTERIOR, MISUSE_USE_AFTER_FREE, MISUSE_KINDS };

#define NBINS 8
#define LIST_FULL NBINS
#define LIST_EMPTY (NBINS + 1)
#define LIST_OWNED (NBINS + 2) /* a thread's cache refills from it */
#define NLISTS (NBINS + 3)
#define LIST_NONE NLISTS
#define MAG_MAX 31
#define POOL_MAGIC 0x506f6f6cu
#define POOL_DEAD 0xdeadb001u
#define POISON 0xdbu
#define DEFAULT_RESERVE ((size_t)256 * 1024)
#define DEFAULT_CACHE ((size_t)128 * 1024)

struct span {
    /* Set before the span is published in the radix table, and unchanged
     * while any of its chunks is taken: a free reads them without a lock. */
    memq_pool *pool;
    char *base; /* the first chunk (the span's granule) */
    size_t size;    /* chunk size; a large chunk's bytes */
    uint64_t recip;
    uint32_t nchunks;
    uint32_t cls; /* LARGE_CLASS for a large chunk */
    _Atomic uint8_t *state;
    /* Under the class lock, on a line of their own: a refill or flush on
     * another thread does not evict what frees read. */
    span *prev __attribute__((aligned(64)));
    span *next;
    unsigned list;
    tcache *owner; /* the thread cache refilling from it (LIST_OWNED) */
    uint32_t out;
    uint32_t hint; /* no chunk free in the span below word hint of freemap */
    uint64_t resident;  /* page i is resident: bit i */
    uint64_t *freemap; /* chunk i is free in the span: bit i */
    uint16_t *page_out;
    /* Where it came from. */
    region *region;     /* NULL: mapped on its own */
    void *map;          /* the mapping, guard pages included */
    size_t map_len;
    size_t meta_bytes;
    _Atomic uint8_t large_state;
};

typedef struct pool_class {
    pthread_mutex_t lock;
    span *lists[NLISTS]; /* bins by occupancy, full, empty, owned */
    unsigned binmask;
    size_t nspans[NLISTS];
    size_t out, resident, meta;
    size_t slack; /* resident + meta - out * size, as put into want */
    uint64_t returned;
    bool orphaned; /* pool_orphan() counted out: a chunk freed from now on counts itself gone */
    _Atomic uint64_t misuse;
} __attribute__((aligned(64))) pool_class;

/* 512 bytes: a magazine is found with a shift.  A chunk and its state
 * byte are kept in two arrays: loaded as one 16-byte pair just after two
 * 8-byte stores, they would stall store forwarding. */
typedef struct magazine {
    _Atomic uint32_t n; /* written by the owner, read by statistics */
    uint32_t cap;       /* 0 until the class's first use decides it */
    void *chunk[MAG_MAX];
    _Atomic uint8_t *state[MAG_MAX];
    uint64_t pad;
} magazine;

static inline void mag_push(magazine *m, uint32_t have, void *chunk, _Atomic uint8_t *state)
{
    m->chunk[have] = chunk;
    m->state[have] = state;
    atomic_store_explicit(&m->n, have + 1, memory_order_relaxed);
}

struct tcache {
    memq_pool *_Atomic pool; /* NULL once taken back by the pool */
    tcache *thread_next;     /* the owner's caches */
    tcache *pool_prev, *pool_next; /* the pool's, under registry */
    /* The magazines' capacity in bytes, counted as slack in want: never
     * above the pool's cache. */
    size_t allowance;
    uint64_t decided; /* classes whose capacity is decided: bit k */
    span *current[NCLASSES]; /* the span each magazine refills from */
    /* The span of the last free's granule, valid while span_gen has not
     * moved (no span was freed since): a free of a chunk in that span
     * skips the table, whose load it would otherwise wait for. */
    uintptr_t memo_granule;
    span *memo_span;
    uint64_t memo_gen;
    magazine mags[NCLASSES] __attribute__((aligned(64)));
};

struct memq_pool {
    /* Read by every call. */
    uint32_t magic;
    bool debug;
    bool own;
    size_t cache;
    _Atomic bool deferred; /* changes or misuse not yet reported */
    _Atomic bool orphan;   /* freed, or its tracker gone: counts nothing */
    memq_tracker *_Atomic tracker; /* NULL once orphaned */
    uint8_t cap[NCLASSES]; /* magazine capacity per class */

    /* Slack reporting, shared by the slow paths. */
    _Atomic size_t want __attribute__((aligned(64)));
    _Atomic size_t applied;
    atomic_flag reporting;
    _Atomic uint32_t misuse_pending;
    _Atomic(const char *) misuse_note;
    _Atomic size_t kept; /* free resident pages kept for reuse */
    size_t reserve;
    _Atomic uint64_t misuse[MISUSE_KINDS];
    _Atomic size_t orphan_live; /* chunks left once orphaned */

    /* Large chunks. */
    pthread_mutex_t large_lock;
    size_t large_n, large_bytes, large_meta;
    uint64_t large_returned; /* bytes of large chunks unmapped */
    bool large_orphaned;     /* pool_orphan() counted large_n */

    /* Under registry. */
    memq_pool *reg_prev, *reg_next;
    tcache *caches;
    uint64_t id;
    size_t struct_bytes;

    pool_class cls[NCLASSES];
};

static pthread_mutex_t registry = PTHREAD_MUTEX_INITIALIZER;
static memq_pool *pools;      /* every pool with a tracker, under registry */
static uint64_t next_pool_id; /* under registry */
static _Atomic uint64_t foreign_frees;
static _Atomic uint64_t span_gen; /* spans freed so far */

static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;
static int cache_key_error;
static _Thread_local tcache *cache_last __attribute__((tls_model("initial-exec")));
static _Thread_local tcache *cache_list __attribute__((tls_model("initial-exec")));
static _Thread_local bool cache_gone __attribute__((tls_model("initial-exec")));

static const char *const misuse_text[MISUSE_KINDS] = {
    "misuse: memq_pool_dealloc of a chunk that is not allocated (double free)",
    "misuse: memq_pool_dealloc of a pointer into the middle of a chunk or span",
    "misuse: a free pool chunk was written to (use after free)",
};

/* ======================================================================
 * Reporting to the tracker
 * ====================================================================== */

static inline void want_add(memq_pool *pool, size_t delta)
{
    /* delta is a difference modulo 2^64: the sum stays exact. */
    if (delta != 0)
        atomic_fetch_add_explicit(&pool->want, delta, memory_order_relaxed);
}

/*
 * Bring the tracker's count of this pool's slack to `want`, and pass on
 * the misuse seen, with no lock held (memq__slack_add() may call the
 * wakeup callback, which may call the pool).  One thread at a time does
 * it; another that finds it busy leaves its change to that one, which
 * looks again after clearing the flag.
 */
static void report(memq_pool *pool)
{
    memq_tracker *t = atomic_load_explicit(&pool->tracker, memory_order_relaxed);
    if (t == NULL || atomic_load_explicit(&pool->orphan, memory_order_relaxed))
        return;
    while (!atomic_flag_test_and_set_explicit(&pool->reporting, memory_order_acquire)) {
        atomic_store_explicit(&pool->deferred, false, memory_order_relaxed);
        for (;;) {
            size_t want = atomic_load_explicit(&pool->want, memory_order_relaxed);
            size_t applied = atomic_load_explicit(&pool->applied, memory_order_relaxed);
            if (want == applied)
                break;
            if (want > applied)
                memq__slack_add(t, want - applied);
            else
                memq__slack_sub(t, applied - want);
            atomic_store_explicit(&pool->applied, want, memory_order_relaxed);
        }
        uint32_t n = atomic_exchange_explicit(&pool->misuse_pending, 0, memory_order_relaxed);
        const char *note = atomic_load_explicit(&pool->misuse_note, memory_order_relaxed);
        for (; n > 0; n--)
            memq__misuse(t, note);
        atomic_flag_clear_explicit(&pool->reporting, memory_order_release);
        if (atomic_load_explicit(&pool->want, memory_order_relaxed) ==
                atomic_load_explicit(&pool->applied, memory_order_relaxed) &&
            atomic_load_explicit(&pool->misuse_pending, memory_order_relaxed) == 0)
            return;
    }
}

/* After a change to want or a misuse: report now if the caller holds a
 * participation (so the tracker exists), else leave it for later. */
static inline void settle(memq_pool *pool, bool can_report)
{
    if (can_report)
        report(pool);
    else
        atomic_store_explicit(&pool->deferred, true, memory_order_relaxed);
}

static void misuse(memq_pool *pool, pool_class *c, int kind)
{
    atomic_fetch_add_explicit(&pool->misuse[kind], 1, memory_order_relaxed);
    if (c != NULL)
        atomic_fetch_add_explicit(&c->misuse, 1, memory_order_relaxed);
    atomic_store_explicit(&pool->misuse_note, misuse_text[kind], memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->misuse_pending, 1, memory_order_relaxed);
}

/* ======================================================================
 * Spans (under their class lock)
 * ====================================================================== */

static inline size_t class_slack(const pool_class *c, size_t size)
{
    return c->resident + c->meta - c->out * size;
}

/* Put the class's change of slack into want (end of every locked step). */
static void class_settle(memq_pool *pool, pool_class *c, size_t size)
{
    size_t slack = class_slack(c, size);
    want_add(pool, slack - c->slack);
    c->slack = slack;
}

static unsigned span_list_of(const span *s)
{
    if (s->out == 0)
        return LIST_EMPTY;
    if (s->out == s->nchunks)
        return LIST_FULL;
    return (unsigned)((size_t)s->out * NBINS / s->nchunks);
}

static void list_remove(pool_class *c, span *s)
{
    if (s->list == LIST_NONE)
        return;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        c->lists[s->list] = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    if (s->list < NBINS && c->lists[s->list] == NULL)
        c->binmask &= ~(1u << s->list);
    c->nspans[s->list]--;
    s->list = LIST_NONE;
    s->prev = s->next = NULL;
}

static void list_insert(pool_class *c, span *s, unsigned list)
{
    s->list = list;
    s->prev = NULL;
    s->next = c->lists[list];
    if (s->next != NULL)
        s->next->prev = s;
    c->lists[list] = s;
    if (list < NBINS)
        c->binmask |= 1u << list;
    c->nspans[list]++;
}

static void span_relist(pool_class *c, span *s)
{
    if (s->owner != NULL)
        return;
    unsigned list = span_list_of(s);
    if (list != s->list) {
        list_remove(c, s);
        list_insert(c, s, list);
    }
}

/* A new span for class k, with no page resident. */
static span *span_new(memq_pool *pool, pool_class *c, unsigned k)
{
    size_t size = class_sizes[k];
    uint32_t nchunks = (uint32_t)(SPAN_SIZE / size);
    size_t npages = SPAN_SIZE >> world.page_shift;
    size_t words = (nchunks + 63) / 64;
    size_t state_at = sizeof(span);
    size_t map_at = (state_at + nchunks + 7) & ~(size_t)7;
    size_t pages_at = map_at + words * sizeof(uint64_t);
    size_t bytes = pages_at + npages * sizeof(uint16_t);

    pthread_mutex_lock(&world.lock);
    span *s = meta_alloc(bytes);
    char *base = NULL;
    region *from = NULL;
    char *map = NULL;
    size_t map_len = 0;
    if (s != NULL && pool->debug) {
        /* Guard pages on both sides, outside the span's granule. */
        map_len = SPAN_SIZE + 2 * world.page;
        map = os_map_aligned(map_len, SPAN_SIZE, world.page);
        if (map != NULL && (mprotect(map, world.page, PROT_NONE) != 0 ||
                            mprotect(map + world.page + SPAN_SIZE, world.page, PROT_NONE) != 0)) {
            munmap(map, map_len);
            map = NULL;
        }
        base = map != NULL ? map + world.page : NULL;
    } else if (s != NULL) {
        base = region_take(&from);
    }
    if (s != NULL && base != NULL) {
        s->pool = pool;
        s->base = base;
        s->size = size;
        s->recip = (((uint64_t)1 << RECIP_SHIFT) + size - 1) / size;
        s->nchunks = nchunks;
        s->cls = k;
        s->state = (_Atomic uint8_t *)((char *)s + state_at);
        s->freemap = (uint64_t *)(void *)((char *)s + map_at);
        s->page_out = (uint16_t *)(void *)((char *)s + pages_at);
        s->list = LIST_NONE;
        s->region = from;
        s->map = map;
        s->map_len = map_len;
        s->meta_bytes = meta_round(bytes);
        for (size_t i = 0; i < words; i++)
            s->freemap[i] = i + 1 < words || nchunks % 64 == 0 ? ~(uint64_t)0
                                                              : ((uint64_t)1 << (nchunks % 64)) - 1;
        if (radix_set(base, SPAN_SIZE, s)) {
            pthread_mutex_unlock(&world.lock);
            c->meta += s->meta_bytes;
            return s;
        }
    }
    if (map != NULL)
        munmap(map, map_len);
    else if (base != NULL)
        from->free |= (uint64_t)1 << ((size_t)(base - from->base) / SPAN_SIZE);
    if (s != NULL)
        meta_release(s, bytes);
    pthread_mutex_unlock(&world.lock);
    return NULL;
}

/* Give an empty span back: its pages, its address space, its metadata. */
static void span_free(memq_pool *pool, pool_class *c, span *s)
{
    list_remove(c, s);
    size_t resident = (size_t)__builtin_popcountll(s->resident) << world.page_shift;
    if (resident > 0 && s->map == NULL)
        os_release(s->base, SPAN_SIZE);
    c->resident -= resident;
    c->returned += resident;
    /* Pages kept for reuse stop counting against the reserve. */
    size_t kept = 0;
    for (uint64_t pages = s->resident; pages != 0; pages &= pages - 1)
        if (s->page_out[__builtin_ctzll(pages)] == 0)
            kept += world.page;
    if (kept > 0)
        atomic_fetch_sub_explicit(&pool->kept, kept, memory_order_relaxed);
    c->meta -= s->meta_bytes;
    pthread_mutex_lock(&world.lock);
    atomic_fetch_add_explicit(&span_gen, 1, memory_order_relaxed);
    radix_set(s->base, SPAN_SIZE, NULL);
    if (s->map != NULL)
        munmap(s->map, s->map_len);
    else
        s->region->free |= (uint64_t)1 << ((size_t)(s->base - s->region->base) / SPAN_SIZE);
    meta_release(s, s->meta_bytes);
    pthread_mutex_unlock(&world.lock);
}

/* The span the next chunk of class k comes from: the fullest with room. */
static span *span_pick(memq_pool *pool, pool_class *c, unsigned k)
{
    if (c->binmask != 0)
        return c->lists[31 - __builtin_clz(c->binmask)];
    if (c->lists[LIST_EMPTY] != NULL)
        return c->lists[LIST_EMPTY];
    span *s = span_new(pool, c, k);
    if (s != NULL)
        list_insert(c, s, LIST_EMPTY);
    return s;
}

/* Take the span's lowest free chunk (it has one); returns its index. */
static uint32_t span_take(memq_pool *pool, pool_class *c, span *s)
{
    uint32_t w = s->hint;
    while (s->freemap[w] == 0)
        w++;
    s->hint = w;
    uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(s->freemap[w]);
    s->freemap[w] &= s->freemap[w] - 1;
    s->out++;
    c->out++;
    size_t off = (size_t)i * s->size;
    size_t first = off >> world.page_shift, last = (off + s->size - 1) >> world.page_shift;
    size_t unkept = 0;
    for (size_t pg = first; pg <= last; pg++) {
        if (s->page_out[pg]++ != 0)
            continue;
        if (s->resident >> pg & 1) {
            unkept += world.page; /* was kept in the reserve */
        } else {
            s->resident |= (uint64_t)1 << pg;
            c->resident += world.page;
        }
    }
    if (unkept > 0)
        atomic_fetch_sub_explicit(&pool->kept, unkept, memory_order_relaxed);
    return i;
}

/* Keep a page that has just become free, if the reserve has room. */
static bool reserve_page(memq_pool *pool)
{
    size_t kept = atomic_load_explicit(&pool->kept, memory_order_relaxed);
    do {
        if (kept + world.page > pool->reserve)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&pool->kept, &kept, kept + world.page,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

/* Forget what a chunk held: its page is going back to the OS. */
static void chunks_fresh(span *s, size_t first, size_t last)
{
    size_t from = (first << world.page_shift) / s->size;
    size_t to = (((last + 1) << world.page_shift) - 1) / s->size;
    if (to >= s->nchunks)
        to = s->nchunks - 1;
    for (size_t i = from; i <= to; i++)
        atomic_store_explicit(&s->state[i], CHUNK_FRESH, memory_order_relaxed);
}

/* Put chunk i back in its span; pages left with no chunk go back to the
 * OS unless the reserve keeps them; an empty span with nothing resident
 * goes back altogether. */
static void span_put(memq_pool *pool, pool_class *c, span *s, uint32_t i)
{
    /* Never taken: the state bytes keep a chunk from coming back twice,
     * and the span must not count one twice whatever happens. */
    if (s->freemap[i / 64] >> (i % 64) & 1)
        return;
    s->freemap[i / 64] |= (uint64_t)1 << (i % 64);
    if (i / 64 < s->hint)
        s->hint = i / 64;
    s->out--;
    c->out--;
    size_t off = (size_t)i * s->size;
    size_t first = off >> world.page_shift, last = (off + s->size - 1) >> world.page_shift;
    size_t run = SIZE_MAX; /* first page of a run to give back */
    for (size_t pg = first; pg <= last + 1; pg++) {
        bool give = pg <= last && --s->page_out[pg] == 0 && !reserve_page(pool);
        if (give && run == SIZE_MAX)
            run = pg;
        if (!give && run != SIZE_MAX) {
            os_release(s->base + (run << world.page_shift), (pg - run) << world.page_shift);
            for (size_t r = run; r < pg; r++)
                s->resident &= ~((uint64_t)1 << r);
            c->resident -= (pg - run) << world.page_shift;
            c->returned += (pg - run) << world.page_shift;
            chunks_fresh(s, run, pg - 1);
            run = SIZE_MAX;
        }
    }
    if (s->out == 0 && s->resident == 0 && s->owner == NULL)
        span_free(pool, c, s);
    else
        span_relist(c, s);
}

/* Put one taken chunk of class k back in its span. */
static void span_put_one(memq_pool *pool, unsigned k, void *chunk)
{
    pool_class *c = &pool->cls[k];
    span *s = span_of((uintptr_t)chunk);
    pthread_mutex_lock(&c->lock);
    span_put(pool, c, s, (uint32_t)((size_t)((char *)chunk - s->base) / s->size));
    class_settle(pool, c, class_sizes[k]);
    pthread_mutex_unlock(&c->lock);
}

/* Give back every free page and empty span of a class (orphaning). */
static void class_trim(memq_pool *pool, pool_class *c)
{
    for (unsigned l = 0; l < NLISTS; l++) {
        span *next;
        for (span *s = c->lists[l]; s != NULL; s = next) {
            next = s->next;
            if (s->out == 0) {
                span_free(pool, c, s);
                continue;
            }
            for (uint64_t pages = s->resident; pages != 0; pages &= pages - 1) {
                size_t pg = (size_t)__builtin_ctzll(pages);
                if (s->page_out[pg] == 0) {
                    os_release(s->base + (pg << world.page_shift), world.page);
                    s->resident &= ~((uint64_t)1 << pg);
                    c->resident -= world.page;
                    c->returned += world.page;
                    chunks_fresh(s, pg, pg);
                    atomic_fetch_sub_explicit(&pool->kept, world.page, memory_order_relaxed);
                }
            }
        }
    }
}

/* ======================================================================
 * Debug mode: poison
 * ====================================================================== */

static void poison(void *chunk, size_t size)
{
    memset(chunk, POISON, size);
}

static bool poisoned(const void *chunk, size_t size)
{
    const unsigned char *b = chunk;
    for (size_t i = 0; i < size; i++)
        if (b[i] != POISON)
            return false;
    return true;
}

/* ======================================================================
 * Thread caches
 * ====================================================================== */

static void span_put_one(memq_pool *pool, unsigned k, void *chunk);

/* Decide magazine k's capacity at its first use: the pool's capacity for
 * the class, as far as the cache's allowance has room. */
static void cache_decide(memq_pool *pool, tcache *tc, unsigned k)
{
    size_t size = class_sizes[k], cap = pool->cap[k];
    if (tc->allowance + cap * size > pool->cache)
        cap = (pool->cache - tc->allowance) / size;
    tc->mags[k].cap = (uint32_t)cap;
    tc->decided |= (uint64_t)1 << k;
    if (cap > 0) {
        tc->allowance += cap * size;
        want_add(pool, cap * size);
        atomic_store_explicit(&pool->deferred, true, memory_order_relaxed);
    }
}

/* Give the n oldest chunks of magazine k back to their spans. */
static void cache_flush(memq_pool *pool, tcache *tc, unsigned k, uint32_t n)
{
    magazine *m = &tc->mags[k];
    uint32_t have = atomic_load_explicit(&m->n, memory_order_relaxed);
    if (n > have)
        n = have;
    if (n == 0)
        return;
    pool_class *c = &pool->cls[k];
    pthread_mutex_lock(&c->lock);
    for (uint32_t j = 0; j < n; j++) {
        span *s = span_of((uintptr_t)m->chunk[j]);
        span_put(pool, c, s, (uint32_t)(m->state[j] - s->state));
    }
    class_settle(pool, c, class_sizes[k]);
    pthread_mutex_unlock(&c->lock);
    memmove(&m->chunk[0], &m->chunk[n], (have - n) * sizeof m->chunk[0]);
    memmove(&m->state[0], &m->state[n], (have - n) * sizeof m->state[0]);
    atomic_store_explicit(&m->n, have - n, memory_order_relaxed);
}

/* Under the class lock: a thread's cache stops refilling from its span
 * (full, or the cache is going), which goes back to the lists. */
static void span_disown(memq_pool *pool, pool_class *c, tcache *tc, unsigned k)
{
    span *s = tc->current[k];
    tc->current[k] = NULL;
    list_remove(c, s);
    s->owner = NULL;
    if (s->out == 0 && s->resident == 0)
        span_free(pool, c, s);
    else
        span_relist(c, s);
}

/*
 * Under the class lock: the span magazine k refills from.  Each thread's
 * cache keeps taking from one span until it is full, then takes the
 * fullest span no other thread refills from: two threads' chunks then
 * live in different spans, and their state bytes in different cache
 * lines (frees write them).
 */
static span *cache_span(memq_pool *pool, pool_class *c, tcache *tc, unsigned k)
{
    span *s = tc->current[k];
    if (s != NULL && s->out < s->nchunks)
        return s;
    if (s != NULL)
        span_disown(pool, c, tc, k);
    s = span_pick(pool, c, k);
    if (s != NULL) {
        list_remove(c, s);
        list_insert(c, s, LIST_OWNED);
        s->owner = tc;
        tc->current[k] = s;
    }
    return s;
}

/* Fill half of the empty magazine k from the spans.  Returns MEMQ_ENOMEM
 * if not even one chunk could be had. */
static int cache_refill(memq_pool *pool, tcache *tc, unsigned k)
{
    magazine *m = &tc->mags[k];
    pool_class *c = &pool->cls[k];
    size_t size = class_sizes[k];
    uint32_t want = m->cap > 1 ? m->cap / 2 : 1, got = 0;
    pthread_mutex_lock(&c->lock);
    while (got < want) {
        span *s = cache_span(pool, c, tc, k);
        if (s == NULL)
            break;
        uint32_t i = span_take(pool, c, s);
        m->chunk[got] = s->base + (size_t)i * size;
        m->state[got++] = &s->state[i];
    }
    class_settle(pool, c, size);
    pthread_mutex_unlock(&c->lock);
    atomic_store_explicit(&m->n, got, memory_order_relaxed);
    return got > 0 ? 0 : MEMQ_ENOMEM;
}

/* Under registry: give every chunk of the cache back and detach it from
 * its pool; the owner frees it when it next looks. */
static void cache_detach(memq_pool *pool, tcache *tc)
{
    for (unsigned k = 0; k < NCLASSES; k++) {
        cache_flush(pool, tc, k, MAG_MAX);
        if (tc->current[k] != NULL) {
            pthread_mutex_lock(&pool->cls[k].lock);
            span_disown(pool, &pool->cls[k], tc, k);
            class_settle(pool, &pool->cls[k], class_sizes[k]); /* it may have freed the span */
            pthread_mutex_unlock(&pool->cls[k].lock);
        }
    }
    want_add(pool, (size_t)0 - tc->allowance);
    tc->allowance = 0;
    if (tc->pool_prev != NULL)
        tc->pool_prev->pool_next = tc->pool_next;
    else
        pool->caches = tc->pool_next;
    if (tc->pool_next != NULL)
        tc->pool_next->pool_prev = tc->pool_prev;
    atomic_store_explicit(&tc->pool, NULL, memory_order_relaxed);
}

/* Under registry: free this thread's caches that pools took back. */
static void cache_sweep(void)
{
    tcache **link = &cache_list;
    while (*link != NULL) {
        tcache *tc = *link;
        if (atomic_load_explicit(&tc->pool, memory_order_relaxed) != NULL) {
            link = &tc->thread_next;
            continue;
        }
        *link = tc->thread_next;
        if (cache_last == tc)
            cache_last = NULL;
        munmap(tc, sizeof *tc);
    }
}

/* A thread's exit: its caches go back to their pools (their slack is
 * reported by the pools' next calls: the trackers may be gone). */
static void cache_thread_exit(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&registry);
    for (tcache *tc = cache_list; tc != NULL; tc = tc->thread_next) {
        memq_pool *pool = atomic_load_explicit(&tc->pool, memory_order_relaxed);
        if (pool != NULL) {
            cache_detach(pool, tc);
            atomic_store_explicit(&pool->deferred, true, memory_order_relaxed);
        }
    }
    cache_sweep();
    cache_gone = true;
    pthread_mutex_unlock(&registry);
}

static void cache_key_init(void)
{
    if (pthread_key_create(&cache_key, cache_thread_exit) != 0)
        cache_key_error = 1;
}

/* This thread's cache for the pool, created if need be; NULL when the
 * pool has none, or the thread is exiting, or no memory. */
static tcache *cache_for(memq_pool *pool)
{
    if (pool->cache == 0 || cache_gone)
        return NULL;
    for (tcache *tc = cache_list; tc != NULL; tc = tc->thread_next)
        if (atomic_load_explicit(&tc->pool, memory_order_relaxed) == pool) {
            cache_last = tc;
            return tc;
        }
    pthread_once(&cache_key_once, cache_key_init);
    if (cache_key_error != 0 || pthread_setspecific(cache_key, &cache_list) != 0)
        return NULL;
    tcache *tc = mmap(NULL, sizeof *tc, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tc == MAP_FAILED)
        return NULL;
    pthread_mutex_lock(&registry);
    cache_sweep();
    if (atomic_load_explicit(&pool->orphan, memory_order_relaxed)) {
        pthread_mutex_unlock(&registry);
        munmap(tc, sizeof *tc);
        return NULL;
    }
    atomic_store_explicit(&tc->pool, pool, memory_order_relaxed);
    tc->memo_granule = UINTPTR_MAX;
    tc->pool_next = pool->caches;
    if (pool->caches != NULL)
        pool->caches->pool_prev = tc;
    pool->caches = tc;
    tc->thread_next = cache_list;
    cache_list = tc;
    pthread_mutex_unlock(&registry);
    cache_last = tc;
    return tc;
}

/* ======================================================================
 * Pools: creation, orphaning, destruction
 * ====================================================================== */

void memq_pool_config_init(memq_pool_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->reserve = DEFAULT_RESERVE;
    cfg->cache = DEFAULT_CACHE;
}

/* MEMQ_ESHUTDOWN if the tracker was shut down, else 0. */
static int tracker_open(memq_tracker *t)
{
    return memq__tracker_shut_down(t) ? MEMQ_ESHUTDOWN : 0;
}

/* A new pool, not yet listed (see pool_list()). */
static memq_pool *pool_create(memq_tracker *t, const memq_pool_config *cfg, bool own)
{
    pthread_mutex_lock(&world.lock);
    size_t bytes = meta_round(sizeof(memq_pool));
    memq_pool *pool = meta_alloc(sizeof(memq_pool));
    pthread_mutex_unlock(&world.lock);
    if (pool == NULL)
        return NULL;
    pool->magic = POOL_MAGIC;
    pool->debug = cfg->debug;
    pool->own = own;
    pool->cache = cfg->cache;
    pool->reserve = cfg->reserve;
    pool->tracker = t;
    pool->struct_bytes = bytes;
    atomic_flag_clear(&pool->reporting);
    pthread_mutex_init(&pool->large_lock, NULL);
    for (unsigned k = 0; k < NCLASSES; k++) {
        pthread_mutex_init(&pool->cls[k].lock, NULL);
        for (unsigned l = 0; l < NLISTS; l++)
            pool->cls[k].lists[l] = NULL;
        /* A quarter of the cache per class at most, MAG_MAX chunks at
         * most, none for a class bigger than half the cache. */
        size_t size = class_sizes[k], cap = 0;
        if (cfg->cache > 0 && size <= cfg->cache / 2) {
            cap = cfg->cache / 4 / size;
            cap = cap < 1 ? 1 : cap > MAG_MAX ? MAG_MAX : cap;
        }
        pool->cap[k] = (uint8_t)cap;
    }
    /* The pool's own structure is metadata, counted as slack. */
    atomic_store_explicit(&pool->want, bytes, memory_order_relaxed);
    return pool;
}

/* Under registry: list the pool, for dumps and for its tracker. */
static void pool_list(memq_pool *pool)
{
    pool->id = ++next_pool_id;
    pool->reg_next = pools;
    if (pools != NULL)
        pools->reg_prev = pool;
    pools = pool;
}

/* Under registry: the tracker's own pool, or NULL. */
static memq_pool *own_pool_of(const memq_tracker *t)
{
    for (memq_pool *pool = pools; pool != NULL; pool = pool->reg_next)
        if (pool->own && atomic_load_explicit(&pool->tracker, memory_order_relaxed) == t)
            return pool;
    return NULL;
}

static void pool_destroy(memq_pool *pool)
{
    for (unsigned k = 0; k < NCLASSES; k++) {
        pool_class *c = &pool->cls[k];
        pthread_mutex_lock(&c->lock);
        for (unsigned l = 0; l < NLISTS; l++)
            while (c->lists[l] != NULL)
                span_free(pool, c, c->lists[l]);
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_destroy(&c->lock);
    }
    pthread_mutex_destroy(&pool->large_lock);
    pool->magic = POOL_DEAD;
    pthread_mutex_lock(&world.lock);
    meta_release(pool, pool->struct_bytes);
    pthread_mutex_unlock(&world.lock);
}

/*
 * Under registry: stop counting.  The caches are taken back, free pages
 * and empty spans go back to the OS, the tracker is forgotten (its slack
 * applied so far is stored in *applied), and the pool is left to the
 * chunks still allocated.  Returns true when none is left: the caller
 * destroys the pool; otherwise the last free does.
 *
 * The chunks are counted class by class under each class's lock, which
 * marks the class orphaned: a chunk freed before its class was counted is
 * not in the count, one freed after counts itself gone (dealloc_slow(),
 * dealloc_large()), even while other classes are still being counted.  A
 * reference of our own keeps the count above zero until the end.
 */
static bool pool_orphan(memq_pool *pool, size_t *applied)
{
    while (pool->caches != NULL)
        cache_detach(pool, pool->caches);
    if (pool->reg_prev != NULL)
        pool->reg_prev->reg_next = pool->reg_next;
    else
        pools = pool->reg_next;
    if (pool->reg_next != NULL)
        pool->reg_next->reg_prev = pool->reg_prev;
    pool->reg_prev = pool->reg_next = NULL;
    pool->reserve = 0;
    atomic_store_explicit(&pool->orphan_live, 1, memory_order_relaxed);
    for (unsigned k = 0; k < NCLASSES; k++) {
        pool_class *c = &pool->cls[k];
        pthread_mutex_lock(&c->lock);
        class_trim(pool, c);
        c->orphaned = true;
        atomic_fetch_add_explicit(&pool->orphan_live, c->out, memory_order_relaxed);
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_lock(&pool->large_lock);
    pool->large_orphaned = true;
    atomic_fetch_add_explicit(&pool->orphan_live, pool->large_n, memory_order_relaxed);
    pthread_mutex_unlock(&pool->large_lock);
    atomic_store_explicit(&pool->orphan, true, memory_order_release);
    atomic_store_explicit(&pool->tracker, NULL, memory_order_relaxed);
    *applied = atomic_exchange_explicit(&pool->applied, 0, memory_order_relaxed);
    return atomic_fetch_sub_explicit(&pool->orphan_live, 1, memory_order_acq_rel) == 1;
}

/* One chunk of an orphaned pool came back. */
static void orphan_chunk_gone(memq_pool *pool)
{
    if (atomic_fetch_sub_explicit(&pool->orphan_live, 1, memory_order_acq_rel) == 1)
        pool_destroy(pool);
}

int memq_pool_new(memq_tracker *t, const memq_pool_config *cfg, memq_pool **out)
{
    if (t == NULL || out == NULL)
        return MEMQ_EINVAL;
    int rc = world_ready();
    if (rc != 0)
        return rc;
    memq_pool_config defaults;
    if (cfg == NULL) {
        memq_pool_config_init(&defaults);
        cfg = &defaults;
    }
    rc = tracker_open(t);
    if (rc != 0)
        return rc;
    memq__tracker_hold(t);
    memq_pool *pool = pool_create(t, cfg, false);
    if (pool == NULL) {
        memq__tracker_drop(t);
        return MEMQ_ENOMEM;
    }
    pthread_mutex_lock(&registry);
    pool_list(pool);
    pthread_mutex_unlock(&registry);
    report(pool);
    *out = pool;
    return 0;
}

void memq_pool_free(memq_pool *pool)
{
    if (pool == NULL || pool->magic != POOL_MAGIC || pool->own ||
        atomic_load_explicit(&pool->orphan, memory_order_relaxed))
        return;
    report(pool); /* misuse still pending */
    memq_tracker *t = atomic_load_explicit(&pool->tracker, memory_order_relaxed);
    size_t applied;
    pthread_mutex_lock(&registry);
    bool none_left = pool_orphan(pool, &applied);
    pthread_mutex_unlock(&registry);
    if (none_left)
        pool_destroy(pool);
    memq__slack_sub(t, applied);
    memq__tracker_drop(t);
}

memq_tracker *memq__pool_tracker(const memq_pool *pool)
{
    if (pool == NULL || pool->magic != POOL_MAGIC)
        return NULL;
    return atomic_load_explicit(&((memq_pool *)pool)->tracker, memory_order_relaxed);
}

memq_pool *memq_tracker_pool(memq_tracker *t)
{
    if (t == NULL || world_ready() != 0 || tracker_open(t) != 0)
        return NULL;
    pthread_mutex_lock(&registry);
    memq_pool *pool = own_pool_of(t);
    pthread_mutex_unlock(&registry);
    if (pool != NULL)
        return pool;

    /* The tracker's settings are read with no lock of ours held (the
     * core's lock comes first), then the pool is made and listed under
     * the registry, unless another thread did it meanwhile. */
    memq_config tcfg;
    memq__tracker_config(t, &tcfg);
    memq_pool_config cfg;
    memq_pool_config_init(&cfg);
    if (tcfg.pool_reserve != 0)
        cfg.reserve = tcfg.pool_reserve;
    cfg.debug = tcfg.pool_debug;
    if (tcfg.cache_max == 0)
        cfg.cache = 0;
    pthread_mutex_lock(&registry);
    pool = own_pool_of(t);
    bool made = pool == NULL;
    if (made) {
        pool = pool_create(t, &cfg, true);
        if (pool != NULL)
            pool_list(pool);
    }
    pthread_mutex_unlock(&registry);
    if (made && pool != NULL)
        report(pool);
    return pool;
}

void memq__pool_tracker_gone(memq_tracker *t)
{
    pthread_mutex_lock(&registry);
    memq_pool *pool = own_pool_of(t);
    size_t applied; /* the tracker's memory goes: nothing to subtract from */
    bool none_left = pool != NULL && pool_orphan(pool, &applied);
    pthread_mutex_unlock(&registry);
    if (none_left)
        pool_destroy(pool);
}

/* ======================================================================
 * Allocation
 * ====================================================================== */

size_t memq_pool_class_size(size_t n)
{
    if (n == 0 || world_ready() != 0)
        return 0;
    if (n <= MEMQ_POOL_CLASS_MAX)
        return class_sizes[class_of(n)];
    if (n > SIZE_MAX - world.page + 1)
        return 0;
    return (n + world.page - 1) & ~(world.page - 1);
}

/* The claim of an allocation: of data stamped `when` (memq_claim_at), or
 * MEMQ_TIME_MAX for a plain claim. */
static int claim(memq_participation *p, size_t n, memq_time when)
{
    return when == MEMQ_TIME_MAX ? memq_claim(p, n) : memq_claim_at(p, n, when);
}

static int alloc_large(memq_pool *pool, memq_participation *p, size_t n, memq_time when,
                       void **out)
{
    size_t bytes = memq_pool_class_size(n);
    if (bytes == 0)
        return MEMQ_EOVERFLOW;
    size_t guard = pool->debug ? world.page : 0;
    if (bytes > SIZE_MAX - SPAN_SIZE - 2 * guard)
        return MEMQ_ENOMEM; /* no mapping, aligned and guarded, can hold it */
    size_t map_len = bytes + 2 * guard;
    char *map = os_map_aligned(map_len, SPAN_SIZE, guard);
    if (map == NULL)
        return MEMQ_ENOMEM;
    if (guard > 0 && (mprotect(map, guard, PROT_NONE) != 0 ||
                      mprotect(map + guard + bytes, guard, PROT_NONE) != 0)) {
        munmap(map, map_len);
        return MEMQ_ENOMEM;
    }
    char *base = map + guard;
    pthread_mutex_lock(&world.lock);
    span *s = meta_alloc(sizeof *s);
    if (s != NULL) {
        s->pool = pool;
        s->base = base;
        s->size = bytes;
        s->nchunks = 1;
        s->cls = LARGE_CLASS;
        s->state = &s->large_state;
        s->map = map;
        s->map_len = map_len;
        s->meta_bytes = meta_round(sizeof *s);
        s->list = LIST_NONE;
        atomic_store_explicit(&s->large_state, CHUNK_ALLOCATED, memory_order_relaxed);
        if (!radix_set(base, bytes, s)) {
            meta_release(s, sizeof *s);
            s = NULL;
        }
    }
    pthread_mutex_unlock(&world.lock);
    if (s == NULL) {
        munmap(map, map_len);
        return MEMQ_ENOMEM;
    }
    int rc = claim(p, bytes, when);
    if (rc != 0) {
        pthread_mutex_lock(&world.lock);
        radix_set(base, bytes, NULL);
        meta_release(s, sizeof *s);
        pthread_mutex_unlock(&world.lock);
        munmap(map, map_len);
        return rc;
    }
    pthread_mutex_lock(&pool->large_lock);
    pool->large_n++;
    pool->large_bytes += bytes;
    pool->large_meta += s->meta_bytes;
    want_add(pool, s->meta_bytes);
    pthread_mutex_unlock(&pool->large_lock);
    report(pool);
    *out = base;
    return 0;
}

/* The claim of a chunk just taken from magazine k failed: put it back,
 * on top if there is room (the claim may have run the wakeup callback,
 * which may have used the cache meanwhile), else in its span. */
static NOINLINE int cache_unpop(memq_pool *pool, tcache *tc, unsigned k, void *chunk,
                                _Atomic uint8_t *state, int rc)
{
    magazine *m = &tc->mags[k];
    uint32_t have = atomic_load_explicit(&m->n, memory_order_relaxed);
    if (have < m->cap)
        mag_push(m, have, chunk, state);
    else
        span_put_one(pool, k, chunk);
    report(pool);
    return rc;
}

/* Everything but a class chunk served from the calling thread's cache. */
static NOINLINE int alloc_slow(memq_pool *pool, memq_participation *p, size_t n,
                               memq_time when, void **out)
{
    if (pool == NULL || p == NULL || out == NULL || n == 0 || pool->magic != POOL_MAGIC)
        return MEMQ_EINVAL;
    if (atomic_load_explicit(&pool->orphan, memory_order_acquire))
        return MEMQ_ESHUTDOWN;
    if (n > MEMQ_POOL_CLASS_MAX)
        return alloc_large(pool, p, n, when, out);
    unsigned k = class_of(n);
    size_t size = class_sizes[k];
    pool_class *c = &pool->cls[k];
    void *chunk = NULL;
    _Atomic uint8_t *state = NULL;
    int rc;
    tcache *tc = pool->cap[k] > 0 ? cache_for(pool) : NULL;
    if (tc != NULL && !(tc->decided >> k & 1))
        cache_decide(pool, tc, k);
    if (tc != NULL && tc->mags[k].cap > 0) {
        magazine *m = &tc->mags[k];
        rc = atomic_load_explicit(&m->n, memory_order_relaxed) == 0 ? cache_refill(pool, tc, k) : 0;
        report(pool);
        if (rc != 0)
            return rc;
        uint32_t have = atomic_load_explicit(&m->n, memory_order_relaxed);
        chunk = m->chunk[have - 1];
        state = m->state[have - 1];
        atomic_store_explicit(&m->n, have - 1, memory_order_relaxed);
        rc = claim(p, size, when);
        if (rc != 0)
            return cache_unpop(pool, tc, k, chunk, state, rc);
    } else {
        /* No cache: one chunk straight from the spans. */
        pthread_mutex_lock(&c->lock);
        span *s = span_pick(pool, c, k);
        if (s != NULL) {
            uint32_t i = span_take(pool, c, s);
            span_relist(c, s);
            chunk = s->base + (size_t)i * size;
            state = &s->state[i];
        }
        class_settle(pool, c, size);
        pthread_mutex_unlock(&c->lock);
        report(pool);
        if (chunk == NULL)
            return MEMQ_ENOMEM;
        rc = claim(p, size, when);
        if (rc != 0) {
            span_put_one(pool, k, chunk);
            report(pool);
            return rc;
        }
    }
    if (UNLIKELY(pool->debug) && atomic_load_explicit(state, memory_order_relaxed) == CHUNK_FREE &&
        !poisoned(chunk, size))
        misuse(pool, c, MISUSE_USE_AFTER_FREE);
    atomic_store_explicit(state, CHUNK_ALLOCATED, memory_order_relaxed);
    report(pool);
    *out = chunk;
    return 0;
}

/* The common path of memq_pool_alloc() and memq_pool_alloc_at(): a chunk
 * from the calling thread's cache, claimed. */
static inline int pool_alloc(memq_pool *pool, memq_participation *p, size_t n, memq_time when,
                             void **out)
{
    /* n - 1 wraps for n == 0: the slow path rejects it. */
    if (LIKELY(pool != NULL && p != NULL && out != NULL && n - 1 < MEMQ_POOL_CLASS_MAX)) {
        unsigned k = class_of(n);
        tcache *tc = cache_last;
        if (LIKELY(tc != NULL && atomic_load_explicit(&tc->pool, memory_order_relaxed) == pool &&
                   !pool->debug)) {
            magazine *m = &tc->mags[k];
            uint32_t have = atomic_load_explicit(&m->n, memory_order_relaxed);
            if (LIKELY(have > 0)) {
                void *chunk = m->chunk[have - 1];
                _Atomic uint8_t *state = m->state[have - 1];
                atomic_store_explicit(&m->n, have - 1, memory_order_relaxed);
                int rc = claim(p, class_sizes[k], when);
                if (UNLIKELY(rc != 0))
                    return cache_unpop(pool, tc, k, chunk, state, rc);
                atomic_store_explicit(state, CHUNK_ALLOCATED, memory_order_relaxed);
                *out = chunk;
                if (UNLIKELY(atomic_load_explicit(&pool->deferred, memory_order_relaxed)))
                    report(pool);
                return 0;
            }
        }
    }
    return alloc_slow(pool, p, n, when, out);
}

int memq_pool_alloc(memq_pool *pool, memq_participation *p, size_t n, void **out)
{
    return pool_alloc(pool, p, n, MEMQ_TIME_MAX, out);
}

int memq_pool_alloc_at(memq_pool *pool, memq_participation *p, size_t n, memq_time when,
                       void **out)
{
    if (when == MEMQ_TIME_MAX)
        when = MEMQ_TIME_MAX - 1; /* MEMQ_TIME_MAX stands for "no stamp" here */
    return pool_alloc(pool, p, n, when, out);
}

/* ======================================================================
 * Free
 * ====================================================================== */

/* A pointer no pool allocated: no pool knows the address, so the
 * participation's tracker hears of it, if there is one. */
static void foreign_free(memq_participation *p)
{
    atomic_fetch_add_explicit(&foreign_frees, 1, memory_order_relaxed);
    memq_tracker *t = memq__participation_tracker(p);
    if (t != NULL)
        memq__misuse(t, "misuse: memq_pool_dealloc of a pointer no pool allocated");
}

static void dealloc_large(memq_participation *p, span *s, uintptr_t a)
{
    memq_pool *pool = s->pool;
    if (a != (uintptr_t)s->base) {
        if (a - (uintptr_t)s->base < s->size)
            misuse(pool, NULL, MISUSE_INTERIOR);
        else
            foreign_free(p); /* past its end, in the last granule */
        settle(pool, p != NULL);
        return;
    }
    uint8_t expect = CHUNK_ALLOCATED;
    if (!atomic_compare_exchange_strong_explicit(&s->large_state, &expect, CHUNK_FREE,
                                                 memory_order_relaxed, memory_order_relaxed)) {
        misuse(pool, NULL, MISUSE_DOUBLE_FREE);
        settle(pool, p != NULL);
        return;
    }
    size_t bytes = s->size, meta = s->meta_bytes;
    if (p != NULL)
        memq_release(p, bytes);
    pthread_mutex_lock(&world.lock);
    radix_set(s->base, bytes, NULL);
    void *map = s->map;
    size_t map_len = s->map_len;
    meta_release(s, meta);
    pthread_mutex_unlock(&world.lock);
    munmap(map, map_len);
    pthread_mutex_lock(&pool->large_lock);
    pool->large_n--;
    pool->large_bytes -= bytes;
    pool->large_meta -= meta;
    pool->large_returned += bytes;
    want_add(pool, (size_t)0 - meta);
    bool counted = pool->large_orphaned;
    pthread_mutex_unlock(&pool->large_lock);
    if (counted)
        orphan_chunk_gone(pool);
    else
        settle(pool, p != NULL);
}

/* The free the calling thread's cache could not take (the chunk's state
 * says free already; p's claim is not released yet). */
static NOINLINE void dealloc_slow(memq_participation *p, memq_pool *pool, span *s, uint32_t i)
{
    unsigned k = s->cls;
    size_t size = s->size;
    void *chunk = s->base + (size_t)i * size;
    if (UNLIKELY(pool->debug))
        poison(chunk, size);
    if (p != NULL)
        memq_release(p, size);
    bool orphan = atomic_load_explicit(&pool->orphan, memory_order_acquire);
    tcache *tc = !orphan && pool->cap[k] > 0 ? cache_for(pool) : NULL;
    if (tc != NULL && !(tc->decided >> k & 1))
        cache_decide(pool, tc, k);
    if (tc != NULL && tc->mags[k].cap > 0) {
        magazine *m = &tc->mags[k];
        if (atomic_load_explicit(&m->n, memory_order_relaxed) == m->cap)
            cache_flush(pool, tc, k, m->cap > 1 ? m->cap / 2 : 1);
        mag_push(m, atomic_load_explicit(&m->n, memory_order_relaxed), chunk, &s->state[i]);
        settle(pool, p != NULL);
        return;
    }
    pool_class *c = &pool->cls[k];
    pthread_mutex_lock(&c->lock);
    span_put(pool, c, s, i);
    class_settle(pool, c, size);
    /* Whether pool_orphan() counted this chunk is decided here, not by
     * `orphan` above: the pool may have been orphaned meanwhile. */
    bool counted = c->orphaned;
    pthread_mutex_unlock(&c->lock);
    if (counted)
        orphan_chunk_gone(pool);
    else
        settle(pool, p != NULL);
}

/* A pointer that is not an allocated class chunk at the start of one. */
static NOINLINE void dealloc_odd(memq_participation *p, void *chunk, span *s)
{
    uintptr_t a = (uintptr_t)chunk;
    if (s == NULL) {
        if (chunk != NULL)
            foreign_free(p);
        return;
    }
    if (s->cls == LARGE_CLASS) {
        dealloc_large(p, s, a);
        return;
    }
    memq_pool *pool = s->pool;
    size_t off = a - (uintptr_t)s->base;
    uint32_t i = (uint32_t)((off * s->recip) >> RECIP_SHIFT);
    int kind = i >= s->nchunks || (size_t)i * s->size != off ? MISUSE_INTERIOR : MISUSE_DOUBLE_FREE;
    misuse(pool, &pool->cls[s->cls], kind);
    settle(pool, p != NULL);
}

void memq_pool_dealloc(memq_participation *p, void *chunk)
{
    uintptr_t a = (uintptr_t)chunk;
    tcache *tc = cache_last;
    span *s;
    if (LIKELY(tc != NULL && tc->memo_granule == a >> SPAN_SHIFT &&
               tc->memo_gen == atomic_load_explicit(&span_gen, memory_order_relaxed))) {
        s = tc->memo_span;
    } else {
        s = span_of(a);
        if (UNLIKELY(s == NULL || s->cls == LARGE_CLASS)) {
            dealloc_odd(p, chunk, s);
            return;
        }
        if (tc != NULL) {
            tc->memo_granule = a >> SPAN_SHIFT;
            tc->memo_span = s;
            tc->memo_gen = atomic_load_explicit(&span_gen, memory_order_relaxed);
        }
    }
    size_t off = a - (uintptr_t)s->base, size = s->size;
    uint32_t i = (uint32_t)((off * s->recip) >> RECIP_SHIFT);
    _Atomic uint8_t *state = &s->state[i];
    /* A compare-and-swap (about 1 ns a pair), so that two frees of one
     * chunk racing each other on two threads cannot both succeed. */
    uint8_t expect = CHUNK_ALLOCATED;
    if (UNLIKELY(i >= s->nchunks || (size_t)i * size != off ||
                 !atomic_compare_exchange_strong_explicit(state, &expect, CHUNK_FREE,
                                                          memory_order_relaxed,
                                                          memory_order_relaxed))) {
        dealloc_odd(p, chunk, s);
        return;
    }
    memq_pool *pool = s->pool;
    if (LIKELY(tc != NULL && atomic_load_explicit(&tc->pool, memory_order_relaxed) == pool &&
               !pool->debug)) {
        magazine *m = &tc->mags[s->cls];
        uint32_t have = atomic_load_explicit(&m->n, memory_order_relaxed);
        if (LIKELY(have < m->cap)) {
            mag_push(m, have, chunk, state);
            if (UNLIKELY(atomic_load_explicit(&pool->deferred, memory_order_relaxed)) && p != NULL)
                report(pool);
            /* Last, so that nothing is live across the call. */
            if (p != NULL)
                memq_release(p, size);
            return;
        }
    }
    dealloc_slow(p, pool, s, i);
}

size_t memq_pool_chunk_size(const void *chunk)
{
    if (chunk == NULL)
        return 0;
    uintptr_t a = (uintptr_t)chunk;
    const span *s = span_of(a);
    if (s == NULL)
        return 0;
    size_t off = a - (uintptr_t)s->base;
    size_t i = s->cls == LARGE_CLASS ? (off == 0 ? 0 : SIZE_MAX)
                                     : (size_t)((off * s->recip) >> RECIP_SHIFT);
    if (i >= s->nchunks || i * s->size != off ||
        atomic_load_explicit(&s->state[i], memory_order_relaxed) != CHUNK_ALLOCATED)
        return 0;
    return s->size;
}

/* ======================================================================
 * Statistics and dumps
 * ====================================================================== */

/* Under registry (for the caches). */
static void stats_locked(memq_pool *pool, memq_pool_stats *st)
{
    memset(st, 0, sizeof *st);
    size_t cached[NCLASSES] = {0};
    for (tcache *tc = pool->caches; tc != NULL; tc = tc->pool_next)
        for (unsigned k = 0; k < NCLASSES; k++)
            cached[k] += atomic_load_explicit(&tc->mags[k].n, memory_order_relaxed);
    for (unsigned k = 0; k < NCLASSES; k++) {
        pool_class *c = &pool->cls[k];
        memq_pool_class_stats *cs = &st->class_stats[k];
        pthread_mutex_lock(&c->lock);
        cs->size = class_sizes[k];
        cs->chunks_cached = cached[k] < c->out ? cached[k] : c->out;
        cs->chunks_in_use = c->out - cs->chunks_cached;
        for (unsigned l = 0; l < NBINS; l++)
            cs->spans_partial += c->nspans[l];
        cs->spans_full = c->nspans[LIST_FULL];
        cs->spans_empty = c->nspans[LIST_EMPTY];
        for (const span *s = c->lists[LIST_OWNED]; s != NULL; s = s->next) {
            unsigned l = span_list_of(s);
            if (l == LIST_FULL)
                cs->spans_full++;
            else if (l == LIST_EMPTY)
                cs->spans_empty++;
            else
                cs->spans_partial++;
        }
        cs->resident = c->resident;
        cs->returned = c->returned;
        cs->misuse = atomic_load_explicit(&c->misuse, memory_order_relaxed);
        st->metadata += c->meta;
        pthread_mutex_unlock(&c->lock);
        st->in_use += cs->chunks_in_use * cs->size;
        st->cached += cs->chunks_cached * cs->size;
        st->resident += cs->resident;
        st->returned += cs->returned;
    }
    pthread_mutex_lock(&pool->large_lock);
    st->large_chunks = pool->large_n;
    st->large_bytes = pool->large_bytes;
    st->metadata += pool->large_meta;
    st->returned += pool->large_returned;
    pthread_mutex_unlock(&pool->large_lock);
    st->metadata += pool->struct_bytes;
    st->in_use += st->large_bytes;
    st->resident += st->large_bytes + st->metadata;
    st->reserved = atomic_load_explicit(&pool->kept, memory_order_relaxed);
    st->slack = atomic_load_explicit(&pool->applied, memory_order_relaxed);
    st->double_frees = atomic_load_explicit(&pool->misuse[MISUSE_DOUBLE_FREE], memory_order_relaxed);
    st->interior = atomic_load_explicit(&pool->misuse[MISUSE_INTERIOR], memory_order_relaxed);
    st->use_after_free =
        atomic_load_explicit(&pool->misuse[MISUSE_USE_AFTER_FREE], memory_order_relaxed);
    st->foreign = atomic_load_explicit(&foreign_frees, memory_order_relaxed);
}

int memq_pool_get_stats(memq_pool *pool, memq_pool_stats *st)
{
    if (pool == NULL || st == NULL || pool->magic != POOL_MAGIC)
        return MEMQ_EINVAL;
    report(pool);
    pthread_mutex_lock(&registry);
    stats_locked(pool, st);
    pthread_mutex_unlock(&registry);
    return 0;
}

typedef struct pool_snapshot {
    uint64_t id;
    bool own;
    memq_pool_stats st;
} pool_snapshot;

static bool class_shown(const memq_pool_class_stats *cs)
{
    return cs->chunks_in_use || cs->chunks_cached || cs->spans_partial || cs->spans_full ||
           cs->spans_empty || cs->resident || cs->returned || cs->misuse;
}

static void dump_text(FILE *f, const pool_snapshot *ps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const memq_pool_stats *st = &ps[i].st;
        fprintf(f,
                "pool %" PRIu64 "%s: in use %zu, resident %zu, slack %zu, cached %zu, reserved %zu, "
                "metadata %zu, large %zu (%zu bytes), returned %" PRIu64
                ", misuse: double free %" PRIu64 ", interior %" PRIu64 ", use after free %" PRIu64
                ", foreign %" PRIu64 "\n",
                ps[i].id, ps[i].own ? " (tracker's own)" : "", st->in_use, st->resident, st->slack,
                st->cached, st->reserved, st->metadata, st->large_chunks, st->large_bytes,
                st->returned, st->double_frees, st->interior, st->use_after_free, st->foreign);
        for (unsigned k = 0; k < NCLASSES; k++) {
            const memq_pool_class_stats *cs = &st->class_stats[k];
            if (!class_shown(cs))
                continue;
            fprintf(f,
                    "  class %zu: in use %zu, cached %zu, spans %zu partial %zu full %zu empty, "
                    "resident %zu, returned %" PRIu64 ", misuse %" PRIu64 "\n",
                    cs->size, cs->chunks_in_use, cs->chunks_cached, cs->spans_partial,
                    cs->spans_full, cs->spans_empty, cs->resident, cs->returned, cs->misuse);
        }
    }
}

static void dump_json(FILE *f, const pool_snapshot *ps, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++) {
        const memq_pool_stats *st = &ps[i].st;
        fprintf(f,
                "%s{\"id\":%" PRIu64 ",\"own\":%s,\"in_use\":%zu,\"resident\":%zu,\"slack\":%zu,"
                "\"cached\":%zu,\"reserved\":%zu,\"metadata\":%zu,\"large_chunks\":%zu,"
                "\"large_bytes\":%zu,\"returned\":%" PRIu64 ",\"double_frees\":%" PRIu64
                ",\"interior\":%" PRIu64 ",\"use_after_free\":%" PRIu64 ",\"foreign\":%" PRIu64
                ",\"classes\":[",
                i ? "," : "", ps[i].id, ps[i].own ? "true" : "false", st->in_use, st->resident,
                st->slack, st->cached, st->reserved, st->metadata, st->large_chunks,
                st->large_bytes, st->returned, st->double_frees, st->interior, st->use_after_free,
                st->foreign);
        bool first = true;
        for (unsigned k = 0; k < NCLASSES; k++) {
            const memq_pool_class_stats *cs = &st->class_stats[k];
            if (!class_shown(cs))
                continue;
            fprintf(f,
                    "%s{\"size\":%zu,\"chunks_in_use\":%zu,\"chunks_cached\":%zu,"
                    "\"spans_partial\":%zu,\"spans_full\":%zu,\"spans_empty\":%zu,"
                    "\"resident\":%zu,\"returned\":%" PRIu64 ",\"misuse\":%" PRIu64 "}",
                    first ? "" : ",", cs->size, cs->chunks_in_use, cs->chunks_cached,
                    cs->spans_partial, cs->spans_full, cs->spans_empty, cs->resident,
                    cs->returned, cs->misuse);
            first = false;
        }
        fputs("]}", f);
    }
    fputc(']', f);
}

static void prom_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

typedef struct metric {
    const char *name, *type, *help;
} metric;

/* The pool's figures, in the order of pool_metrics. */
static const metric pool_metrics[] = {
    {"memq_pool_in_use_bytes", "gauge", "Bytes of chunks held by participants."},
    {"memq_pool_resident_bytes", "gauge", "Bytes the pool holds from the OS."},
    {"memq_pool_slack_bytes", "gauge", "Slack the pool counts in its tracker."},
    {"memq_pool_cached_bytes", "gauge", "Bytes of free chunks in threads' caches."},
    {"memq_pool_reserved_bytes", "gauge", "Bytes of free pages kept resident for reuse."},
    {"memq_pool_metadata_bytes", "gauge", "Bytes of out-of-band metadata."},
    {"memq_pool_large_chunks", "gauge", "Chunks with a mapping of their own."},
    {"memq_pool_large_bytes", "gauge", "Bytes of chunks with a mapping of their own."},
    {"memq_pool_returned_bytes_total", "counter", "Bytes given back to the OS."},
    {"memq_pool_double_frees_total", "counter", "Frees of chunks that were not allocated."},
    {"memq_pool_interior_frees_total", "counter", "Frees of pointers into a chunk or span."},
    {"memq_pool_use_after_free_total", "counter", "Free chunks found written to (debug mode)."},
    {"memq_pool_foreign_frees_total", "counter",
     "Frees of pointers that belong to no pool, in the whole process."},
};
#define POOL_METRICS (sizeof pool_metrics / sizeof pool_metrics[0])

static void pool_values(const memq_pool_stats *st, uint64_t v[POOL_METRICS])
{
    const uint64_t values[POOL_METRICS] = {
        st->in_use,       st->resident,    st->slack,        st->cached,   st->reserved,
        st->metadata,     st->large_chunks, st->large_bytes, st->returned, st->double_frees,
        st->interior,     st->use_after_free, st->foreign,
    };
    memcpy(v, values, sizeof values);
}

static const metric class_metrics[] = {
    {"memq_pool_class_chunks_in_use", "gauge", "Chunks held by participants."},
    {"memq_pool_class_chunks_cached", "gauge", "Free chunks in threads' caches."},
    {"memq_pool_class_spans_partial", "gauge", "Spans with chunks taken and chunks free."},
    {"memq_pool_class_spans_full", "gauge", "Spans with every chunk taken."},
    {"memq_pool_class_spans_empty", "gauge", "Empty spans kept with resident pages."},
    {"memq_pool_class_resident_bytes", "gauge", "Resident bytes of the class's spans."},
    {"memq_pool_class_returned_bytes_total", "counter",
     "Bytes of the class's pages given back to the OS."},
    {"memq_pool_class_misuse_total", "counter",
     "Double frees, interior pointers and writes after free in the class."},
};
#define CLASS_METRICS (sizeof class_metrics / sizeof class_metrics[0])

static void class_values(const memq_pool_class_stats *cs, uint64_t v[CLASS_METRICS])
{
    const uint64_t values[CLASS_METRICS] = {
        cs->chunks_in_use, cs->chunks_cached, cs->spans_partial, cs->spans_full,
        cs->spans_empty,   cs->resident,      cs->returned,      cs->misuse,
    };
    memcpy(v, values, sizeof values);
}

static void dump_prometheus(FILE *f, const pool_snapshot *ps, size_t n)
{
    if (n == 0)
        return;
    uint64_t v[POOL_METRICS > CLASS_METRICS ? POOL_METRICS : CLASS_METRICS];
    for (size_t m = 0; m < POOL_METRICS; m++) {
        prom_head(f, pool_metrics[m].name, pool_metrics[m].type, pool_metrics[m].help);
        for (size_t i = 0; i < n; i++) {
            pool_values(&ps[i].st, v);
            fprintf(f, "%s{pool=\"%" PRIu64 "\"} %" PRIu64 "\n", pool_metrics[m].name, ps[i].id,
                    v[m]);
        }
    }
    for (size_t m = 0; m < CLASS_METRICS; m++) {
        prom_head(f, class_metrics[m].name, class_metrics[m].type, class_metrics[m].help);
        for (size_t i = 0; i < n; i++)
            for (unsigned k = 0; k < NCLASSES; k++) {
                const memq_pool_class_stats *cs = &ps[i].st.class_stats[k];
                if (!class_shown(cs))
                    continue;
                class_values(cs, v);
                fprintf(f, "%s{pool=\"%" PRIu64 "\",class=\"%zu\"} %" PRIu64 "\n",
                        class_metrics[m].name, ps[i].id, cs->size, v[m]);
            }
    }
}

int memq__pool_dump(memq_tracker *t, FILE *f, int format)
{
    if (t == NULL || f == NULL)
        return MEMQ_EINVAL;
    if (format != MEMQ_DUMP_TEXT && format != MEMQ_DUMP_JSON && format != MEMQ_DUMP_PROMETHEUS)
        return MEMQ_EINVAL;
    pthread_mutex_lock(&registry);
    size_t n = 0;
    for (memq_pool *pool = pools; pool != NULL; pool = pool->reg_next)
        n += atomic_load_explicit(&pool->tracker, memory_order_relaxed) == t;
    pool_snapshot *ps = calloc(n ? n : 1, sizeof *ps);
    if (ps == NULL) {
        pthread_mutex_unlock(&registry);
        return MEMQ_ENOMEM;
    }
    size_t i = 0;
    for (memq_pool *pool = pools; pool != NULL; pool = pool->reg_next)
        if (atomic_load_explicit(&pool->tracker, memory_order_relaxed) == t) {
            ps[i].id = pool->id;
            ps[i].own = pool->own;
            stats_locked(pool, &ps[i].st);
            i++;
        }
    pthread_mutex_unlock(&registry);
    /* Oldest pool first: the list is newest first. */
    for (size_t j = 0; j < n / 2; j++) {
        pool_snapshot tmp = ps[j];
        ps[j] = ps[n - 1 - j];
        ps[n - 1 - j] = tmp;
    }
    if (format == MEMQ_DUMP_TEXT)
        dump_text(f, ps, n);
    else if (format == MEMQ_DUMP_JSON)
        dump_json(f, ps, n);
    else
        dump_prometheus(f, ps, n);
    free(ps);
    return 0;
}
