/*
 * memquota/pool.h - the chunk pool: memory for the data participants hold,
 * taken from the OS in spans and given back as soon as it is free, so that
 * the quota holds for the memory the kernel sees (RSS) whatever the system
 * allocator.  Included by memquota.h; do not include directly.
 *
 * One call allocates a chunk for a participation and claims it; one call
 * frees it and releases it, finding its size from its address.  What a
 * participation is charged is the chunk's size class, not the bytes asked
 * for: exactly the memory it holds.
 *
 * Common rules:
 *  - Requests of 1 byte to 64 KiB are served from size classes (16 B steps
 *    up to 128 B, then four classes per power of two, plus 528 B for Tor's
 *    514-byte cells; every power of two from 4 KiB to 64 KiB, the tracked
 *    buffer's chunk sizes, is a class).  A class chunk wastes less than 16
 *    bytes up to 128 B and less than a fifth of its size above.  Larger
 *    requests get a mapping of their own, rounded up to whole pages, given
 *    back to the OS when freed.
 *  - Chunks are at least 16-byte aligned; a class of 2^k bytes is
 *    2^k-aligned, and a large chunk is page-aligned.
 *  - Memory comes from the OS in 256 KiB spans (mmap), never from malloc.
 *    What the pool knows of a chunk lives outside it, so writing past the
 *    end of a chunk can damage other chunks but never the pool.
 *  - A chunk comes from the fullest span of its class that has room (to
 *    within an eighth of a span), so frees gather into empty spans.  A page
 *    with no chunk on it, in any span, goes back to the OS at once
 *    (madvise(MADV_DONTNEED)) unless the pool keeps it in its reserve.
 *  - Slack: the pool's resident bytes that no participant holds (free
 *    chunks in used pages, the reserve, the threads' caches, its metadata)
 *    are counted in its tracker (memq_stats.slack), so memq_tracker_used()
 *    follows the pool's resident memory.  Slack belongs to no account and
 *    is never a reclamation victim: the pool gives it back to the OS
 *    itself.
 *  - Thread caches: each thread keeps up to `cache` bytes of free chunks
 *    per pool, so an allocation or free usually takes no lock.  The tracker
 *    then counts, for each thread that has used the pool, up to `cache`
 *    bytes more slack than the pool holds, never less; with cache 0 the
 *    count is exact.  A thread's cache goes back to the pool when the
 *    thread exits.
 *  - Misuse (freeing a chunk that is not allocated, a pointer into the
 *    middle of a chunk or of a span, a pointer the pool never gave out, and
 *    in debug mode a write to a free chunk) is detected, counted in the
 *    pool's statistics and the tracker's misuse_events (the tracker's first
 *    misuse is logged), and ignored.  A pointer that belongs to no pool is
 *    counted in every pool's `foreign` figure: the pool cannot tell whose
 *    it is.
 *  - Every function may be called from any thread.  A participation is
 *    used by one thread at a time, as memq_claim() requires.  No callback
 *    runs while the pool holds a lock of its own.
 */
#ifndef MEMQUOTA_POOL_H
#define MEMQUOTA_POOL_H

#ifndef MEMQUOTA_H
#error "include <memquota.h>, not <memquota/pool.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct memq_pool memq_pool;

/* The number of size classes, and the largest class; larger requests get
 * a mapping of their own. */
#define MEMQ_POOL_CLASSES 45
#define MEMQ_POOL_CLASS_MAX ((size_t)65536)

typedef struct memq_pool_config {
    /* Bytes of free pages the pool keeps resident for reuse instead of
     * giving them back to the OS at once (counted as slack).  Default
     * 256 KiB; 0 gives every free page back at once. */
    size_t reserve;
    /* Bytes of free chunks each thread may keep for this pool, which makes
     * allocation and free lock-free in the common case.  Default 128 KiB;
     * 0 turns the thread caches off (exact slack, a lock per call). */
    size_t cache;
    /* Debug mode: guard pages before and after every span and large chunk;
     * freed chunks are filled with a pattern that is checked when they are
     * allocated again, so a write after free is reported as misuse. */
    bool debug;
} memq_pool_config;

/* Fill *cfg with the defaults: reserve 256 KiB, cache 128 KiB, debug off.
 * Ignores NULL. */
MEMQ_EXPORT void memq_pool_config_init(memq_pool_config *cfg);

/* Create a pool whose slack is counted in tracker t.  The configuration is
 * copied; NULL means the defaults.  The pool holds a reference to t's
 * memory until memq_pool_free().  Returns 0 and stores the pool in *out;
 * MEMQ_EINVAL for a NULL t or out; MEMQ_ESHUTDOWN if t was shut down;
 * MEMQ_ENOMEM.  On failure *out is untouched. */
MEMQ_EXPORT int memq_pool_new(memq_tracker *t, const memq_pool_config *cfg, memq_pool **out);

/* Free the pool: its slack stops being counted (it is subtracted from the
 * tracker) and its reference to the tracker is dropped.  Chunks still
 * allocated stay valid and must still be freed with memq_pool_dealloc(),
 * which releases them from their participation as usual; the pool's free
 * memory goes back to the OS at once, the rest with the last of them.  No
 * other call may use the pool handle during or after this one, and no
 * chunk of the pool may be freed while it runs.  Ignores NULL and the
 * tracker's own pool. */
MEMQ_EXPORT void memq_pool_free(memq_pool *pool);

/* The tracker's own pool, created at the first call with the tracker's
 * pool_reserve (0: 256 KiB) and pool_debug, and a thread cache of 128 KiB
 * (none if the tracker's cache_max is 0: an exact tracker gets an exact
 * pool).  It lives as long as the tracker's memory (after the tracker's
 * memory goes, chunks still allocated stay valid until freed; no other use
 * of the handle is allowed), holds no reference to the tracker, and must
 * not be given to memq_pool_free().  Returns NULL for a NULL or shut-down
 * tracker, or if the pool cannot be created (no memory). */
MEMQ_EXPORT memq_pool *memq_tracker_pool(memq_tracker *t);

/* Allocate a chunk of at least n bytes and claim its size,
 * memq_pool_chunk_size() of it, from p, which must belong to the pool's
 * tracker.  All or nothing: if the claim fails, nothing is allocated; if
 * the allocation fails, nothing is claimed.  The chunk's contents are
 * undefined.  Like memq_claim(), never refused for being over quota.
 * Returns 0 and stores the chunk in *out; MEMQ_EINVAL for a NULL pool, p
 * or out, or n == 0; MEMQ_EOVERFLOW if n rounded up to whole pages does
 * not fit in size_t, or the claim would overflow; MEMQ_ENOMEM if the OS
 * gives no memory (mmap fails); MEMQ_ESHUTDOWN if the pool's tracker is
 * gone or p's tracker was shut down; MEMQ_ECLOSED if p's account is
 * closed; otherwise any error memq_claim() returns.  On failure *out is
 * untouched. */
MEMQ_EXPORT int memq_pool_alloc(memq_pool *pool, memq_participation *p, size_t n, void **out);

/* memq_pool_alloc() for data stamped `when`: the claim is memq_claim_at()'s
 * (see memquota.h), so that the account's key in the age index is never
 * later than the data that the chunk is for.  The tracked containers
 * allocate this way with the stamp of what they store.  Returns what
 * memq_pool_alloc() returns. */
MEMQ_EXPORT int memq_pool_alloc_at(memq_pool *pool, memq_participation *p, size_t n,
                                   memq_time when, void **out);

/* Free a chunk memq_pool_alloc() returned and release its size from p,
 * the participation that claims it.  p may be NULL when that participation
 * is gone (its claims went with it): the chunk is freed and nothing is
 * released, and the change in the pool's slack is counted at the pool's
 * next call with a participation.  A chunk freed twice, a pointer into the
 * middle of a chunk or span, or one the pool never gave out is counted as
 * misuse and ignored (nothing is freed or released).  Ignores a NULL
 * chunk. */
MEMQ_EXPORT void memq_pool_dealloc(memq_participation *p, void *chunk);

/* The size of an allocated chunk: what memq_pool_alloc() claimed for it.
 * 0 for NULL, a free chunk, a pointer into the middle of a chunk, or a
 * pointer that belongs to no pool. */
MEMQ_EXPORT size_t memq_pool_chunk_size(const void *chunk);

/* The size of the chunk memq_pool_alloc() would give for n bytes, which is
 * what it would claim: n's size class, or n rounded up to whole pages
 * above MEMQ_POOL_CLASS_MAX.  0 for n == 0 or when the rounding does not
 * fit in size_t. */
MEMQ_EXPORT size_t memq_pool_class_size(size_t n);

/* One size class of a pool.  Chunks counted in a thread's cache are free
 * for the participants but taken from the spans. */
typedef struct memq_pool_class_stats {
    size_t size;            /* the class's chunk size */
    size_t chunks_in_use;   /* allocated: held by participants */
    size_t chunks_cached;   /* free, in threads' caches */
    size_t spans_partial;   /* spans with some chunks taken and some free */
    size_t spans_full;      /* spans with every chunk taken */
    size_t spans_empty;     /* spans with no chunk taken, kept with resident pages */
    size_t resident;        /* bytes of the class's spans' pages held from the OS */
    uint64_t returned;      /* bytes of its pages given back to the OS so far */
    uint64_t misuse;        /* double frees, interior pointers, writes after free */
} memq_pool_class_stats;

typedef struct memq_pool_stats {
    /* Bytes held by participants: class sizes plus large chunks. */
    size_t in_use;
    /* Bytes the pool holds from the OS: resident span pages, large chunks
     * and metadata. */
    size_t resident;
    /* The pool's slack as counted in its tracker now (see the header's
     * rules: with thread caches, up to cache bytes per thread above
     * resident - in_use, never below it, apart from changes made by frees
     * with a NULL participation that are still to be counted). */
    size_t slack;
    size_t cached;          /* bytes of free chunks in threads' caches */
    size_t reserved;        /* bytes of free pages kept resident for reuse */
    size_t metadata;        /* bytes of the pool's out-of-band metadata */
    size_t large_chunks;    /* chunks with a mapping of their own */
    size_t large_bytes;     /* their size */
    uint64_t returned;      /* bytes given back to the OS so far: the classes' pages
                             * and the large chunks unmapped when freed */
    uint64_t double_frees;  /* frees of chunks that were not allocated */
    uint64_t interior;      /* pointers into the middle of a chunk or span */
    uint64_t use_after_free; /* debug mode: free chunks found written to */
    /* Pointers that belong to no pool, given to memq_pool_dealloc() in
     * this process (not only for this pool: the pool cannot tell). */
    uint64_t foreign;
    /* Per class, in increasing size; class_stats[i].size is the class. */
    memq_pool_class_stats class_stats[MEMQ_POOL_CLASSES];
} memq_pool_stats;

/* Fill *st with the pool's statistics, each class read under its lock
 * (the snapshot is consistent per class, not across classes), after
 * counting in the tracker what frees with no participation left to count.
 * Returns 0; MEMQ_EINVAL for a NULL pool or st (st is then untouched). */
MEMQ_EXPORT int memq_pool_get_stats(memq_pool *pool, memq_pool_stats *st);

#ifdef __cplusplus
}
#endif

#endif /* MEMQUOTA_POOL_H */
