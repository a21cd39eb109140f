/*
 * buf.c - memq_buf, a chunked byte buffer that reports the memory it holds
 * to a tracker, with the age of its oldest byte.
 *
 * Built only on the public participant API.  The buffer claims exactly the
 * chunks it has allocated, headers included, so the tracker sees real
 * memory: a one-byte buffer costs a whole chunk.  A chunk is freed as soon
 * as its last byte is drained, so an empty buffer holds and claims nothing.
 *
 * Ages follow Tor's buffers: a chunk is stamped when its first byte
 * arrives; appending to it or draining part of it keeps the stamp; draining
 * it entirely exposes the next chunk's stamp.  The head chunk's stamp is the
 * buffer's age.  A stalled reader's head therefore grows old while a
 * draining one stays young.
 *
 * A byte stream cannot lose bytes from its middle, so reclamation always
 * collapses the buffer: everything is freed, the buffer is closed and
 * on_collapse is called once.
 *
 * Stamps are read from the tracker's clock under the mutex, only after a
 * claim of 0 bytes proved the account open, an empty buffer publishes its
 * new head stamp before claiming, and the claim carries the stamp (see
 * queue.c for why).
 *
 * Locking.  The buffer is used by one thread at a time, and reclamation
 * runs on another, so a mutex guards the chunk list and serialises the
 * participation's claims and releases.  The head stamp, the length and the
 * allocated total are atomics, so the oldest callback takes no lock.  Chunks
 * are freed and on_collapse is called after the mutex is dropped, and
 * memq_participation_free() (which waits for a running callback) is never
 * called with it held.  The first path that finds the buffer dead (a
 * reclaim, or a claim answering MEMQ_ECLOSED / MEMQ_ESHUTDOWN) is the only
 * one that calls on_collapse.
 */
#include <memquota.h>

#include "pool.h" /* whose a pool is */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct buf_chunk {
    struct buf_chunk *next;
    size_t size;       /* bytes allocated, header included: what is claimed */
    size_t start, end; /* the data is data[start, end) */
    memq_time stamp;   /* when the first byte arrived */
    unsigned char data[];
};

#define CHUNK_HEADER offsetof(struct buf_chunk, data)
/* Allocation sizes, header included: the smallest power of two that holds
 * the bytes being added, between these bounds (as Tor's buffers). */
#define CHUNK_MIN ((size_t)4096)
#define CHUNK_MAX ((size_t)65536)

struct memq_buf {
    pthread_mutex_t lock;
    memq_participation *participation;
    memq_tracker *tracker; /* for stamps; used only after a claim succeeded */
    memq_pool *pool;       /* where the chunks come from */
    memq_collapse_fn on_collapse;
    void *ctx;

    /* Under lock. */
    struct buf_chunk *head, *tail;

    /* Written under lock, read without it. */
    _Atomic size_t allocated;     /* the sum of the chunks' sizes = claimed */
    _Atomic size_t length;        /* bytes of data */
    _Atomic memq_time head_stamp; /* MEMQ_TIME_MAX: empty */
    atomic_bool closed;
};

/* ======================================================================
 * Helpers (called with the lock held unless said otherwise)
 * ====================================================================== */

static size_t chunk_capacity(const struct buf_chunk *c)
{
    return c->size - CHUNK_HEADER;
}

/* The allocation size for a chunk meant to hold `bytes` more bytes. */
static size_t chunk_size_for(size_t bytes)
{
    size_t size = CHUNK_MIN;

    while (size < CHUNK_MAX && size - CHUNK_HEADER < bytes)
        size *= 2;
    return size;
}

/* The bytes new chunks holding `bytes` bytes would allocate, or 0 if that
 * total overflows size_t.  Every chunk but the last is a full CHUNK_MAX. */
static size_t chunks_total_for(size_t bytes)
{
    size_t per_chunk = CHUNK_MAX - CHUNK_HEADER;
    size_t full = bytes / per_chunk, rest = bytes % per_chunk;
    size_t total;

    if (full > SIZE_MAX / CHUNK_MAX)
        return 0;
    total = full * CHUNK_MAX;
    if (rest) {
        if (total > SIZE_MAX - CHUNK_MAX)
            return 0;
        total += chunk_size_for(rest);
    }
    return total;
}

/* Give chunks back to the pool; their claims were released already (or
 * the participation is gone), so nothing is released here. */
static void chunks_free(struct buf_chunk *list)
{
    while (list) {
        struct buf_chunk *next = list->next;
        memq_pool_dealloc(NULL, list);
        list = next;
    }
}

static void buf_publish_head(memq_buf *b)
{
    atomic_store_explicit(&b->head_stamp, b->head ? b->head->stamp : MEMQ_TIME_MAX,
                          memory_order_release);
}

/* Mark the buffer closed and unlink every chunk, releasing the claim.
 * Returns the chunks (freed by the caller after unlocking) and sets *first
 * if this call did the closing. */
static struct buf_chunk *buf_close_locked(memq_buf *b, bool *first)
{
    struct buf_chunk *list = b->head;

    *first = !atomic_load_explicit(&b->closed, memory_order_relaxed);
    if (!*first)
        return NULL;
    memq_release(b->participation, atomic_load_explicit(&b->allocated, memory_order_relaxed));
    b->head = b->tail = NULL;
    /* closed before the counts, released by them: whoever reads a count
     * emptied by the collapse then reads closed as true. */
    atomic_store_explicit(&b->closed, true, memory_order_release);
    atomic_store_explicit(&b->allocated, 0, memory_order_release);
    atomic_store_explicit(&b->length, 0, memory_order_release);
    buf_publish_head(b);
    return list;
}

/* Without the lock: free what buf_close_locked() unlinked and tell the
 * owner.  The buffer may be gone after on_collapse: callers return. */
static void buf_finish_collapse(memq_buf *b, struct buf_chunk *list, bool first)
{
    memq_collapse_fn on_collapse = b->on_collapse;
    void *ctx = b->ctx;

    chunks_free(list);
    if (first && on_collapse)
        on_collapse(ctx);
}

static bool buf_account_open(memq_buf *b)
{
    int rc = memq_claim(b->participation, 0);
    return rc != MEMQ_ECLOSED && rc != MEMQ_ESHUTDOWN;
}

/* ======================================================================
 * Participant callbacks
 * ====================================================================== */

static bool buf_oldest(void *self, memq_time *when)
{
    memq_buf *b = self;
    memq_time stamp = atomic_load_explicit(&b->head_stamp, memory_order_acquire);

    if (stamp == MEMQ_TIME_MAX)
        return false;
    *when = stamp;
    return true;
}

static memq_reclaim_status buf_reclaim(void *self, const memq_reclaim_request *req)
{
    memq_buf *b = self;
    struct buf_chunk *list;
    bool first;

    (void)req;
    pthread_mutex_lock(&b->lock);
    list = buf_close_locked(b, &first);
    pthread_mutex_unlock(&b->lock);
    buf_finish_collapse(b, list, first);
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops buf_ops = {
    .oldest = buf_oldest,
    .reclaim = buf_reclaim,
};

/* ======================================================================
 * Public API
 * ====================================================================== */

MEMQ_EXPORT int memq_buf_new(memq_account *a, memq_collapse_fn on_collapse, void *ctx,
                             memq_buf **out)
{
    return memq_buf_new_pool(a, NULL, on_collapse, ctx, out);
}

MEMQ_EXPORT int memq_buf_new_pool(memq_account *a, memq_pool *pool, memq_collapse_fn on_collapse,
                                  void *ctx, memq_buf **out)
{
    memq_buf *b;
    int rc;

    if (!a || !out)
        return MEMQ_EINVAL;
    if (pool != NULL && memq__pool_tracker(pool) != memq_account_tracker(a))
        return MEMQ_EINVAL; /* its claims and its slack would be in two trackers */
    b = calloc(1, sizeof *b);
    if (!b)
        return MEMQ_ENOMEM;
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        free(b);
        return MEMQ_ENOMEM;
    }
    b->tracker = memq_account_tracker(a);
    b->on_collapse = on_collapse;
    b->ctx = ctx;
    atomic_init(&b->allocated, 0);
    atomic_init(&b->length, 0);
    atomic_init(&b->head_stamp, MEMQ_TIME_MAX);
    atomic_init(&b->closed, false);

    /* A reclaim may run on another thread as soon as the participation
     * exists; the lock makes it wait until b->participation is set. */
    pthread_mutex_lock(&b->lock);
    rc = memq_participant_register(a, &buf_ops, b, &b->participation);
    pthread_mutex_unlock(&b->lock);
    b->pool = pool != NULL ? pool : memq_tracker_pool(b->tracker);
    if (rc == 0 && b->pool == NULL) {
        memq_participation_free(b->participation);
        rc = memq_account_closed(a) ? MEMQ_ESHUTDOWN : MEMQ_ENOMEM;
    }
    if (rc != 0) {
        pthread_mutex_destroy(&b->lock);
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

MEMQ_EXPORT int memq_buf_add(memq_buf *b, const void *data, size_t n)
{
    const unsigned char *bytes = data;
    struct buf_chunk *fresh = NULL, **freshp = &fresh, *list, *c;
    size_t room, fit, rest, fresh_total, left;
    memq_time now = 0;
    bool first;
    int rc;

    if (!b || (!data && n > 0))
        return MEMQ_EINVAL;
    if (atomic_load_explicit(&b->closed, memory_order_acquire))
        return MEMQ_ECLOSED;

    pthread_mutex_lock(&b->lock);
    if (atomic_load_explicit(&b->closed, memory_order_relaxed)) {
        pthread_mutex_unlock(&b->lock);
        return MEMQ_ECLOSED;
    }
    /* Also when nothing new is allocated: this is how an add notices that
     * the account was closed.  The clock is read only once the account
     * proved open: after tracker shutdown its context may be gone. */
    if (!buf_account_open(b))
        goto collapse;
    room = b->tail ? chunk_capacity(b->tail) - b->tail->end : 0;
    fit = n < room ? n : room;
    rest = n - fit;
    fresh_total = chunks_total_for(rest);
    if (rest > 0 && fresh_total == 0) {
        pthread_mutex_unlock(&b->lock);
        return MEMQ_EOVERFLOW;
    }

    /* Allocate (and claim, with their stamp) every new chunk before
     * changing anything, so that a failed add leaves the buffer as it
     * was.  An empty buffer publishes its age before claiming, so the
     * tracker never sees it claim memory without an age (which would make
     * it the oldest possible victim). */
    if (rest > 0) {
        now = memq_tracker_now(b->tracker);
        if (now == MEMQ_TIME_MAX)
            now = MEMQ_TIME_MAX - 1;
        if (!b->head)
            atomic_store_explicit(&b->head_stamp, now, memory_order_release);
    }
    for (left = rest; left > 0;) {
        size_t size = chunk_size_for(left);
        void *mem = NULL;
        rc = memq_pool_alloc_at(b->pool, b->participation, size, now, &mem);
        if (rc != 0) {
            /* Give back what this add took, releasing it. */
            while (fresh) {
                c = fresh->next;
                memq_pool_dealloc(b->participation, fresh);
                fresh = c;
            }
            if (rc == MEMQ_ECLOSED || rc == MEMQ_ESHUTDOWN)
                goto collapse;
            buf_publish_head(b);
            pthread_mutex_unlock(&b->lock);
            return rc;
        }
        c = mem;
        c->next = NULL;
        c->size = size;
        c->start = c->end = 0;
        c->stamp = now;
        *freshp = c;
        freshp = &c->next;
        left -= left < chunk_capacity(c) ? left : chunk_capacity(c);
    }

    if (fit > 0) {
        memcpy(b->tail->data + b->tail->end, bytes, fit);
        b->tail->end += fit;
        bytes += fit;
    }
    if (fresh) {
        for (c = fresh, left = rest; c; c = c->next) {
            size_t part = left < chunk_capacity(c) ? left : chunk_capacity(c);
            memcpy(c->data, bytes, part);
            c->end = part;
            bytes += part;
            left -= part;
        }
        if (b->tail)
            b->tail->next = fresh;
        else
            b->head = fresh;
        for (c = fresh; c->next; c = c->next)
            ;
        b->tail = c;
        atomic_fetch_add_explicit(&b->allocated, fresh_total, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&b->length, n, memory_order_relaxed);
    pthread_mutex_unlock(&b->lock);
    return 0;

collapse:
    list = buf_close_locked(b, &first);
    pthread_mutex_unlock(&b->lock);
    buf_finish_collapse(b, list, first);
    return MEMQ_ECLOSED;
}

MEMQ_EXPORT size_t memq_buf_peek(const memq_buf *b, void *out, size_t n)
{
    memq_buf *mb = (memq_buf *)b; /* the lock only; the buffer is not changed */
    unsigned char *dst = out;
    const struct buf_chunk *c;
    size_t copied = 0;

    if (!b || !out)
        return 0;
    pthread_mutex_lock(&mb->lock);
    for (c = b->head; c && copied < n; c = c->next) {
        size_t avail = c->end - c->start;
        size_t part = n - copied < avail ? n - copied : avail;
        memcpy(dst + copied, c->data + c->start, part);
        copied += part;
    }
    pthread_mutex_unlock(&mb->lock);
    return copied;
}

MEMQ_EXPORT size_t memq_buf_drain(memq_buf *b, size_t n)
{
    struct buf_chunk *done = NULL, **donep = &done, *list;
    size_t drained = 0, freed = 0;
    bool first;

    if (!b || atomic_load_explicit(&b->closed, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&b->lock);
    if (!buf_account_open(b)) {
        list = buf_close_locked(b, &first);
        pthread_mutex_unlock(&b->lock);
        buf_finish_collapse(b, list, first);
        return 0;
    }
    while (drained < n && b->head) {
        struct buf_chunk *c = b->head;
        size_t avail = c->end - c->start;
        size_t part = n - drained < avail ? n - drained : avail;

        c->start += part;
        drained += part;
        if (c->start == c->end) {
            b->head = c->next;
            c->next = NULL;
            *donep = c;
            donep = &c->next;
            freed += c->size;
        }
    }
    if (!b->head)
        b->tail = NULL;
    if (freed > 0) {
        memq_release(b->participation, freed);
        atomic_fetch_sub_explicit(&b->allocated, freed, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&b->length, drained, memory_order_relaxed);
    buf_publish_head(b);
    pthread_mutex_unlock(&b->lock);
    chunks_free(done);
    return drained;
}

MEMQ_EXPORT size_t memq_buf_len(const memq_buf *b)
{
    return b ? atomic_load_explicit(&b->length, memory_order_acquire) : 0;
}

MEMQ_EXPORT size_t memq_buf_allocated(const memq_buf *b)
{
    return b ? atomic_load_explicit(&b->allocated, memory_order_acquire) : 0;
}

MEMQ_EXPORT bool memq_buf_oldest(const memq_buf *b, memq_time *when)
{
    memq_time stamp;

    if (!b)
        return false;
    stamp = atomic_load_explicit(&b->head_stamp, memory_order_acquire);
    if (stamp == MEMQ_TIME_MAX)
        return false;
    if (when)
        *when = stamp;
    return true;
}

MEMQ_EXPORT bool memq_buf_closed(const memq_buf *b)
{
    return b ? atomic_load_explicit(&b->closed, memory_order_acquire) : true;
}

MEMQ_EXPORT void memq_buf_free(memq_buf *b)
{
    struct buf_chunk *list;

    if (!b)
        return;
    /* First, and without our lock: it waits for a callback running on
     * another thread, which may be waiting for that lock. */
    memq_participation_free(b->participation);
    pthread_mutex_lock(&b->lock);
    list = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->lock);
    chunks_free(list);
    pthread_mutex_destroy(&b->lock);
    free(b);
}
