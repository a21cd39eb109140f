/*
 * queue.c - memq_queue, a FIFO of items that reports what it holds to a
 * tracker and gives it back when reclaimed.
 *
 * Built only on the public participant API: the queue is one participant
 * of the account it is created on.  Each item costs the caller's cost plus
 * one node (the queue's own per-item overhead), claimed on push and
 * released on pop.  Items are stamped with the tracker's clock when pushed,
 * so the head item is the oldest data the queue holds.
 *
 * Locking.  One mutex guards the list, the claimed total and the closed
 * flag, and serialises every memq_claim()/memq_release() on the
 * participation (the core wants one thread at a time on a participation,
 * and here the producer claims while the consumer and the reclaiming
 * thread release).  The core never calls our callbacks under its own
 * locks, and memq_claim()/memq_release() never call participant callbacks,
 * so the only order is queue lock -> core lock.  Three things are kept
 * outside the mutex:
 *  - the head item's stamp and the length are atomics, so the oldest
 *    callback never takes the mutex and never waits on a busy producer;
 *  - free_item and on_collapse are user code: they run after the mutex is
 *    dropped, on items already unlinked;
 *  - memq_participation_free() waits for a callback running on another
 *    thread, and that callback may be waiting for our mutex, so
 *    memq_queue_free() calls it without the mutex.
 *
 * Stamps.  A push reads the tracker's clock under the mutex, only after a
 * claim of 0 bytes proved the account open (after shutdown the clock's
 * context may be gone), and an empty queue publishes the new head's stamp
 * before claiming, so the tracker never sees memory claimed without an age
 * (it would take the queue for the oldest possible victim).  The claim
 * carries the stamp (memq_claim_at(), without the lock while the stamp is
 * no older than the account's key), so the account's key in the age index
 * is never later than the data.
 *
 * Collapse.  The first path that finds the queue dead (a COLLAPSE reclaim,
 * or a claim answering MEMQ_ECLOSED / MEMQ_ESHUTDOWN because the account was
 * closed some other way) unlinks every item and sets `closed` under the
 * mutex; only that path frees the items and calls on_collapse, so the hook
 * runs once.  on_collapse may free the queue, so it is always the last
 * thing a function does with the queue.
 */
#include <memquota.h>

#include "pool.h" /* whose a pool is */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct queue_node {
    struct queue_node *next;
    void *item;
    size_t cost;     /* claimed for this item: the caller's cost plus the node */
    memq_time stamp; /* when it was pushed, clamped below MEMQ_TIME_MAX */
};

struct memq_queue {
    pthread_mutex_t lock;
    memq_participation *participation;
    memq_tracker *tracker; /* for stamps; used only after a claim succeeded */
    memq_pool *pool;       /* where the nodes come from */
    size_t node_size;      /* what a node takes in the pool, and claims */
    int policy;
    memq_free_fn free_item;
    memq_collapse_fn on_collapse;
    void *ctx;

    /* Under lock. */
    struct queue_node *head, *tail;
    size_t claimed; /* the sum of the nodes' costs */

    /* Written under lock, read without it. */
    _Atomic memq_time head_stamp; /* MEMQ_TIME_MAX: empty */
    _Atomic size_t length;
    atomic_bool closed;
};

/* ======================================================================
 * Helpers (called with the lock held unless said otherwise)
 * ====================================================================== */

static void queue_publish_head(memq_queue *q)
{
    atomic_store_explicit(&q->head_stamp, q->head ? q->head->stamp : MEMQ_TIME_MAX,
                          memory_order_release);
}

/* Mark the queue closed and unlink everything, releasing its claim.
 * Returns the unlinked list (which the caller frees after unlocking) and
 * sets *first if this call did the closing, so that exactly one caller runs
 * on_collapse. */
static struct queue_node *queue_close_locked(memq_queue *q, bool *first)
{
    struct queue_node *list = q->head;

    *first = !atomic_load_explicit(&q->closed, memory_order_relaxed);
    if (!*first)
        return NULL;
    memq_release(q->participation, q->claimed);
    q->claimed = 0;
    q->head = q->tail = NULL;
    /* closed before the length, released by it: whoever reads the length
     * emptied by the collapse then reads closed as true. */
    atomic_store_explicit(&q->closed, true, memory_order_release);
    atomic_store_explicit(&q->length, 0, memory_order_release);
    queue_publish_head(q);
    return list;
}

/* Without the lock: free unlinked nodes and their items, oldest first.
 * Their claims were released under the lock already. */
static void queue_free_nodes(memq_queue *q, struct queue_node *list)
{
    while (list) {
        struct queue_node *next = list->next;
        if (q->free_item)
            q->free_item(list->item, q->ctx);
        memq_pool_dealloc(NULL, list);
        list = next;
    }
}

/* Without the lock: finish a collapse begun by queue_close_locked().  After
 * on_collapse the queue may be gone, so callers return right after. */
static void queue_finish_collapse(memq_queue *q, struct queue_node *list, bool first)
{
    memq_collapse_fn on_collapse = q->on_collapse;
    void *ctx = q->ctx;

    queue_free_nodes(q, list);
    if (first && on_collapse)
        on_collapse(ctx);
}

/* Whether the account is still open.  A claim of 0 bytes only checks. */
static bool queue_account_open(memq_queue *q)
{
    int rc = memq_claim(q->participation, 0);
    return rc != MEMQ_ECLOSED && rc != MEMQ_ESHUTDOWN;
}

/* ======================================================================
 * Participant callbacks
 * ====================================================================== */

static bool queue_oldest(void *self, memq_time *when)
{
    memq_queue *q = self;
    memq_time stamp = atomic_load_explicit(&q->head_stamp, memory_order_acquire);

    if (stamp == MEMQ_TIME_MAX)
        return false;
    *when = stamp;
    return true;
}

/* DROP_OLDEST: unlink items from the head until `want` bytes are freed or
 * the head is no older than the next candidate.  The first item always
 * goes: the tracker chose this queue as holding the oldest data, and with a
 * coarse clock the next candidate's data is often exactly as old; stopping
 * at a tie would let two equally old queues both refuse to give anything. */
static struct queue_node *queue_drop_oldest_locked(memq_queue *q, const memq_reclaim_request *req)
{
    size_t want = req ? req->want : 0;
    memq_time older_than = req ? req->older_than : MEMQ_TIME_MAX;
    struct queue_node *list = NULL, **tailp = &list;
    size_t freed = 0, count = 0;

    while (q->head && (count == 0 || (freed < want && q->head->stamp < older_than))) {
        struct queue_node *node = q->head;
        q->head = node->next;
        node->next = NULL;
        *tailp = node;
        tailp = &node->next;
        freed += node->cost;
        count++;
    }
    if (!q->head)
        q->tail = NULL;
    q->claimed -= freed;
    memq_release(q->participation, freed);
    atomic_fetch_sub_explicit(&q->length, count, memory_order_relaxed);
    queue_publish_head(q);
    return list;
}

static memq_reclaim_status queue_reclaim(void *self, const memq_reclaim_request *req)
{
    memq_queue *q = self;
    struct queue_node *list;
    bool first;

    pthread_mutex_lock(&q->lock);
    if (q->policy == MEMQ_QUEUE_DROP_OLDEST && !atomic_load(&q->closed) &&
        queue_account_open(q)) {
        list = queue_drop_oldest_locked(q, req);
        pthread_mutex_unlock(&q->lock);
        queue_free_nodes(q, list);
        return MEMQ_RECLAIMED_PARTIAL;
    }
    list = queue_close_locked(q, &first);
    pthread_mutex_unlock(&q->lock);
    queue_finish_collapse(q, list, first);
    return MEMQ_RECLAIMED_COLLAPSING;
}

static const memq_participant_ops queue_ops = {
    .oldest = queue_oldest,
    .reclaim = queue_reclaim,
};

/* ======================================================================
 * Public API
 * ====================================================================== */

MEMQ_EXPORT int memq_queue_new(memq_account *a, int policy, memq_free_fn free_item,
                               memq_collapse_fn on_collapse, void *ctx, memq_queue **out)
{
    return memq_queue_new_pool(a, NULL, policy, free_item, on_collapse, ctx, out);
}

MEMQ_EXPORT int memq_queue_new_pool(memq_account *a, memq_pool *pool, int policy,
                                    memq_free_fn free_item, memq_collapse_fn on_collapse,
                                    void *ctx, memq_queue **out)
{
    memq_queue *q;
    int rc;

    if (!a || !out || (policy != MEMQ_QUEUE_COLLAPSE && policy != MEMQ_QUEUE_DROP_OLDEST))
        return MEMQ_EINVAL;
    if (pool != NULL && memq__pool_tracker(pool) != memq_account_tracker(a))
        return MEMQ_EINVAL; /* its claims and its slack would be in two trackers */
    q = calloc(1, sizeof *q);
    if (!q)
        return MEMQ_ENOMEM;
    if (pthread_mutex_init(&q->lock, NULL) != 0) {
        free(q);
        return MEMQ_ENOMEM;
    }
    q->tracker = memq_account_tracker(a);
    q->policy = policy;
    q->free_item = free_item;
    q->on_collapse = on_collapse;
    q->ctx = ctx;
    atomic_init(&q->head_stamp, MEMQ_TIME_MAX);
    atomic_init(&q->length, 0);
    atomic_init(&q->closed, false);

    /* A reclaim callback may run on another thread as soon as the
     * participation exists: holding the lock makes it wait until
     * q->participation is set. */
    pthread_mutex_lock(&q->lock);
    rc = memq_participant_register(a, &queue_ops, q, &q->participation);
    pthread_mutex_unlock(&q->lock);
    q->pool = pool != NULL ? pool : memq_tracker_pool(q->tracker);
    q->node_size = memq_pool_class_size(sizeof(struct queue_node));
    if (rc == 0 && q->pool == NULL) {
        memq_participation_free(q->participation);
        rc = memq_account_closed(a) ? MEMQ_ESHUTDOWN : MEMQ_ENOMEM;
    }
    if (rc != 0) {
        pthread_mutex_destroy(&q->lock);
        free(q);
        return rc;
    }
    *out = q;
    return 0;
}

MEMQ_EXPORT int memq_queue_push(memq_queue *q, void *item, size_t cost)
{
    struct queue_node *node, *list;
    memq_time now;
    bool first;
    int rc;

    if (!q)
        return MEMQ_EINVAL;
    if (cost > SIZE_MAX - q->node_size)
        return MEMQ_EOVERFLOW;
    if (atomic_load_explicit(&q->closed, memory_order_acquire))
        return MEMQ_ECLOSED;

    pthread_mutex_lock(&q->lock);
    if (atomic_load_explicit(&q->closed, memory_order_relaxed)) {
        pthread_mutex_unlock(&q->lock);
        return MEMQ_ECLOSED;
    }
    /* The clock is read only once the account proved open: after tracker
     * shutdown its context may be gone. */
    if (!queue_account_open(q))
        goto collapse;
    now = memq_tracker_now(q->tracker);
    memq_time stamp = now < MEMQ_TIME_MAX ? now : MEMQ_TIME_MAX - 1;
    /* An empty queue publishes its age before claiming, so the tracker
     * never sees it claim memory without an age (which would make it the
     * oldest possible victim). */
    if (q->head == NULL)
        atomic_store_explicit(&q->head_stamp, stamp, memory_order_release);
    /* The node from the pool (claiming its size), then the item's cost,
     * both with the stamp: the age index files the data's own time, not
     * the moment the claim reads the clock again (a little later). */
    void *mem = NULL;
    rc = memq_pool_alloc_at(q->pool, q->participation, q->node_size, stamp, &mem);
    if (rc == 0 && cost > 0) {
        rc = memq_claim_at(q->participation, cost, stamp);
        if (rc != 0)
            memq_pool_dealloc(q->participation, mem);
    }
    if (rc == MEMQ_ECLOSED || rc == MEMQ_ESHUTDOWN)
        goto collapse;
    if (rc != 0) {
        queue_publish_head(q);
        pthread_mutex_unlock(&q->lock);
        return rc;
    }
    node = mem;
    node->next = NULL;
    node->item = item;
    node->cost = cost + q->node_size;
    node->stamp = stamp;
    if (q->tail)
        q->tail->next = node;
    else
        q->head = node;
    q->tail = node;
    q->claimed += node->cost;
    atomic_fetch_add_explicit(&q->length, 1, memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);
    return 0;

collapse:
    list = queue_close_locked(q, &first);
    pthread_mutex_unlock(&q->lock);
    queue_finish_collapse(q, list, first);
    return MEMQ_ECLOSED;
}

MEMQ_EXPORT void *memq_queue_pop(memq_queue *q)
{
    struct queue_node *node, *list;
    void *item;
    bool first;

    if (!q || atomic_load_explicit(&q->closed, memory_order_acquire))
        return NULL;
    pthread_mutex_lock(&q->lock);
    if (!queue_account_open(q)) {
        list = queue_close_locked(q, &first);
        pthread_mutex_unlock(&q->lock);
        queue_finish_collapse(q, list, first);
        return NULL;
    }
    node = q->head;
    if (!node) {
        pthread_mutex_unlock(&q->lock);
        return NULL;
    }
    q->head = node->next;
    if (!q->head)
        q->tail = NULL;
    q->claimed -= node->cost;
    memq_release(q->participation, node->cost);
    atomic_fetch_sub_explicit(&q->length, 1, memory_order_relaxed);
    queue_publish_head(q);
    pthread_mutex_unlock(&q->lock);

    item = node->item;
    memq_pool_dealloc(NULL, node); /* released above */
    return item;
}

MEMQ_EXPORT size_t memq_queue_len(const memq_queue *q)
{
    return q ? atomic_load_explicit(&q->length, memory_order_acquire) : 0;
}

MEMQ_EXPORT bool memq_queue_closed(const memq_queue *q)
{
    return q ? atomic_load_explicit(&q->closed, memory_order_acquire) : true;
}

MEMQ_EXPORT void memq_queue_free(memq_queue *q)
{
    struct queue_node *list;

    if (!q)
        return;
    /* First, so that no callback runs any more (this waits for one running
     * on another thread); never under our lock, which that callback may be
     * waiting for. */
    memq_participation_free(q->participation);
    pthread_mutex_lock(&q->lock);
    list = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->lock);
    queue_free_nodes(q, list);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
