/*
 * memquota/containers.h - ready-made participants: a tracked queue and a
 * tracked byte buffer.  Included by memquota.h; do not include directly.
 *
 * Both are built only on the public participant API.  Each registers
 * itself as a participant of the account it is created on and stamps its
 * data with the tracker's clock (memq_tracker_now()).
 *
 * Common rules:
 *  - A container does not hold a reference to its account.  It keeps
 *    working while the account is open.  When reclamation closes the
 *    account (a sibling participant's COLLAPSING answer, or a reclaim
 *    timeout), the container is told in the same reclamation call and
 *    collapses there, exactly as if it had been reclaimed, even if its
 *    owner never touches it again (a stalled reader).  When the account
 *    is closed otherwise (its last reference dropped, the tracker shut
 *    down), the container collapses at its next push, pop, add or drain.
 *  - Collapsing frees every item (or byte) the container holds, releases
 *    its claim, marks it closed and then calls on_collapse(ctx) once, on
 *    the thread that collapsed it (the tracker's reclaiming thread, or the
 *    caller of the operation that found the account closed).  on_collapse
 *    may free the container (if no other thread is using or freeing it
 *    then), unref the account, or schedule the owner's teardown.
 *  - A closed container stays valid memory until its owner frees it.
 *  - The container calls memq_claim() (and so possibly the tracker's wakeup
 *    callback) and the tracker's clock while holding its own lock: neither
 *    may call back into the same container.  free_item and on_collapse run
 *    with no lock held.
 */
#ifndef MEMQUOTA_CONTAINERS_H
#define MEMQUOTA_CONTAINERS_H

#ifndef MEMQUOTA_H
#error "include <memquota.h>, not <memquota/containers.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Frees one item a queue owns, with the ctx given to memq_queue_new().
 * Called when the queue drops items under reclamation (on the reclaiming
 * thread), when it collapses, and by memq_queue_free(); never for an item
 * that memq_queue_pop() returned or memq_queue_push() refused. */
typedef void (*memq_free_fn)(void *item, void *ctx);

/* Told once, with the container's ctx, that the container collapsed and
 * now holds nothing; it may free the container. */
typedef void (*memq_collapse_fn)(void *ctx);

/* ----------------------------------------------------------------------
 * memq_queue: a FIFO of items
 *
 * Safe for one producer thread (push) and one consumer thread (pop) at
 * once, with reclamation on a third; the tracker reads the queue's age
 * without taking its lock, so it never waits on a busy producer.  Nodes
 * come from the tracker's chunk pool (memquota/pool.h) or one given at
 * creation, so what reclamation frees goes back to the OS.
 * ---------------------------------------------------------------------- */

typedef struct memq_queue memq_queue;

/* Reclaim policies.
 * MEMQ_QUEUE_COLLAPSE: a reclaim frees every item, closes the queue, calls
 *   on_collapse and answers MEMQ_RECLAIMED_COLLAPSING (the account closes).
 * MEMQ_QUEUE_DROP_OLDEST: a reclaim frees items from the head (oldest
 *   first) until it has freed the request's `want` bytes or the head is no
 *   older than its `older_than`, always at least one item if the queue holds
 *   any (so that equally old queues still make progress), and answers
 *   MEMQ_RECLAIMED_PARTIAL; the queue stays open. */
enum { MEMQ_QUEUE_COLLAPSE = 0, MEMQ_QUEUE_DROP_OLDEST = 1 };

/* Create an empty queue as a participant of account a, with reclaim
 * policy `policy`.  free_item frees one item (NULL: the queue does not own
 * its items and drops them without a call); on_collapse (may be NULL) is
 * told of a collapse; ctx is passed to both.
 * Returns 0 and stores the queue in *out; MEMQ_EINVAL for a NULL a or out or
 * an unknown policy; MEMQ_ECLOSED if a is closed; MEMQ_ESHUTDOWN if its
 * tracker was freed; MEMQ_ENOMEM.  On failure *out is untouched. */
MEMQ_EXPORT int memq_queue_new(memq_account *a, int policy, memq_free_fn free_item,
                               memq_collapse_fn on_collapse, void *ctx, memq_queue **out);

/* memq_queue_new() with the nodes taken from `pool` (NULL: the tracker's
 * own pool, memq_tracker_pool(), as memq_queue_new() does), a pool of a's
 * tracker (memq_pool_new()) that outlives the queue.  Returns what
 * memq_queue_new() returns; MEMQ_EINVAL also for a pool of another tracker
 * or one already freed; MEMQ_ENOMEM also if the tracker's own pool cannot
 * be made. */
MEMQ_EXPORT int memq_queue_new_pool(memq_account *a, memq_pool *pool, int policy,
                                    memq_free_fn free_item, memq_collapse_fn on_collapse,
                                    void *ctx, memq_queue **out);

/* Append item (any pointer, NULL included) at the tail.  The queue claims
 * cost plus its own per-item overhead (one node, a 32-byte pool chunk) from
 * the account and stamps the item with the tracker's clock; the claim is
 * released when the item leaves the queue.  Like memq_claim(), never
 * refused for being over quota.
 * Returns 0 and takes ownership of item; MEMQ_ECLOSED if the queue has
 * collapsed, or collapses now because its account is closed or its tracker
 * shut down (on_collapse then runs before this returns); MEMQ_EOVERFLOW if
 * cost plus the overhead, or the account's total, would overflow;
 * MEMQ_EINVAL for a NULL queue; MEMQ_ENOMEM.  On any error the item is NOT
 * taken: the caller still owns it. */
MEMQ_EXPORT int memq_queue_push(memq_queue *q, void *item, size_t cost);

/* Remove the head (oldest) item and return it; the caller owns it and its
 * claim is released.  Returns NULL if the queue is empty, closed or NULL;
 * if the account was closed meanwhile, the queue collapses now (its items
 * are freed, on_collapse runs before this returns) and NULL is returned.
 * An item pushed as NULL comes back as NULL: use memq_queue_len() to tell
 * it from an empty queue. */
MEMQ_EXPORT void *memq_queue_pop(memq_queue *q);

/* The number of items held (0 for NULL).  Read without the lock: exact
 * when no other thread pushes, pops or reclaims at the same time. */
MEMQ_EXPORT size_t memq_queue_len(const memq_queue *q);

/* True once the queue has collapsed (true for NULL).  A queue whose account
 * was closed other than by reclamation (last unref, tracker shutdown)
 * reports false until its next push or pop. */
MEMQ_EXPORT bool memq_queue_closed(const memq_queue *q);

/* Unregister the queue, free every item still held with free_item (oldest
 * first) and free the queue.  on_collapse is not called.  If a reclaim
 * callback is running on another thread, this waits for it (see
 * memq_participation_free()).  May be called from on_collapse and on a
 * closed queue; no other call on the queue may run or follow.  Ignores
 * NULL. */
MEMQ_EXPORT void memq_queue_free(memq_queue *q);

/* ----------------------------------------------------------------------
 * memq_buf: a chunked byte buffer with ages
 *
 * Used by one thread at a time, with reclamation on another.  Bytes live
 * in chunks of 4 KiB to 64 KiB, taken from the tracker's chunk pool
 * (memquota/pool.h) or one given at creation; the buffer claims exactly the chunks it
 * has allocated, headers included, frees a chunk as soon as its last byte
 * is drained, and claims nothing when empty.  A chunk is stamped with the
 * tracker's clock when its first byte arrives; the buffer's age is its head
 * chunk's stamp.  A reclaim always collapses the buffer (a byte stream
 * cannot lose bytes from its middle) and answers
 * MEMQ_RECLAIMED_COLLAPSING.
 * ---------------------------------------------------------------------- */

typedef struct memq_buf memq_buf;

/* Create an empty buffer as a participant of account a; on_collapse (may
 * be NULL) is called with ctx when the buffer collapses.
 * Returns 0 and stores the buffer in *out; MEMQ_EINVAL for a NULL a or out;
 * MEMQ_ECLOSED if a is closed; MEMQ_ESHUTDOWN if its tracker was freed;
 * MEMQ_ENOMEM.  On failure *out is untouched. */
MEMQ_EXPORT int memq_buf_new(memq_account *a, memq_collapse_fn on_collapse, void *ctx,
                             memq_buf **out);

/* memq_buf_new() with the chunks taken from `pool` (NULL: the tracker's
 * own pool, memq_tracker_pool(), as memq_buf_new() does), a pool of a's
 * tracker (memq_pool_new()) that outlives the buffer.  Returns what
 * memq_buf_new() returns; MEMQ_EINVAL also for a pool of another tracker
 * or one already freed; MEMQ_ENOMEM also if the tracker's own pool cannot
 * be made. */
MEMQ_EXPORT int memq_buf_new_pool(memq_account *a, memq_pool *pool, memq_collapse_fn on_collapse,
                                  void *ctx, memq_buf **out);

/* Append n bytes copied from data.  Bytes go into the tail chunk while it
 * has room (keeping its stamp), then into new chunks stamped now; the new
 * chunks are claimed.  All or nothing: on error nothing was appended or
 * claimed.  Never refused for being over quota.
 * Returns 0; MEMQ_ECLOSED if the buffer has collapsed, or collapses now
 * because its account is closed or its tracker shut down (on_collapse then
 * runs before this returns); MEMQ_EINVAL for a NULL buffer, or NULL data
 * with n > 0; MEMQ_EOVERFLOW if the chunks' size or the account's total
 * would overflow; MEMQ_ENOMEM.  n == 0 appends nothing but still detects a
 * closed account. */
MEMQ_EXPORT int memq_buf_add(memq_buf *b, const void *data, size_t n);

/* Copy up to n bytes from the front of the buffer into out without
 * removing them.  Returns the number copied: min(n, memq_buf_len(b)); 0
 * for a NULL buffer or out, or a closed buffer. */
MEMQ_EXPORT size_t memq_buf_peek(const memq_buf *b, void *out, size_t n);

/* Remove up to n bytes from the front.  Every chunk fully drained is freed
 * and released at once; a partly drained head chunk keeps its stamp, and
 * draining a whole chunk makes the next chunk's stamp the buffer's age.
 * Returns the number removed: min(n, memq_buf_len(b)); 0 for NULL or a
 * closed buffer, and 0 if the account was closed meanwhile (the buffer
 * then collapses now, on_collapse running before this returns). */
MEMQ_EXPORT size_t memq_buf_drain(memq_buf *b, size_t n);

/* Bytes of data held (0 for NULL).  Read without the lock. */
MEMQ_EXPORT size_t memq_buf_len(const memq_buf *b);

/* Bytes of memory the buffer's chunks take, headers included: exactly what
 * it claims from its account (0 for NULL, when empty, or once closed). */
MEMQ_EXPORT size_t memq_buf_allocated(const memq_buf *b);

/* If the buffer holds data, store its head chunk's stamp in *when (unless
 * when is NULL) and return true; return false for an empty, closed or NULL
 * buffer.  Read without the lock. */
MEMQ_EXPORT bool memq_buf_oldest(const memq_buf *b, memq_time *when);

/* True once the buffer has collapsed (true for NULL).  A buffer whose
 * account was closed other than by reclamation (last unref, tracker
 * shutdown) reports false until its next add or drain. */
MEMQ_EXPORT bool memq_buf_closed(const memq_buf *b);

/* Unregister the buffer and free it with everything it holds; on_collapse
 * is not called.  If a reclaim callback is running on another thread, this
 * waits for it.  May be called from on_collapse and on a closed buffer; no
 * other call on the buffer may run or follow.  Ignores NULL. */
MEMQ_EXPORT void memq_buf_free(memq_buf *b);

#ifdef __cplusplus
}
#endif

#endif /* MEMQUOTA_CONTAINERS_H */
