/*
 * memquota/containers.h - ready-made participants: a tracked queue and a
 * tracked byte buffer.  Included by memquota.h; do not include directly.
 *
 * Both are built only on the public participant API.  Each registers
 * itself as a participant of the account it is created on and stamps its
 * data with the tracker's clock (memq_tracker_now()).
 */
#ifndef MEMQUOTA_CONTAINERS_H
#define MEMQUOTA_CONTAINERS_H

#ifndef MEMQUOTA_H
#error "include <memquota.h>, not <memquota/containers.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Frees one item the container owns (called by memq_queue_free() and by
 * reclamation). */
typedef void (*memq_free_fn)(void *item, void *ctx);
/* Told once that the container was reclaimed (collapsed); may free it. */
typedef void (*memq_collapse_fn)(void *ctx);

/* ----------------------------------------------------------------------
 * memq_queue: a FIFO of items
 * ---------------------------------------------------------------------- */

typedef struct memq_queue memq_queue;

enum { MEMQ_QUEUE_COLLAPSE = 0, MEMQ_QUEUE_DROP_OLDEST = 1 };

MEMQ_EXPORT int memq_queue_new(memq_account *a, int policy, memq_free_fn free_item,
                               memq_collapse_fn on_collapse, void *ctx, memq_queue **out);
MEMQ_EXPORT int memq_queue_push(memq_queue *q, void *item, size_t cost);
MEMQ_EXPORT void *memq_queue_pop(memq_queue *q);
MEMQ_EXPORT size_t memq_queue_len(const memq_queue *q);
MEMQ_EXPORT bool memq_queue_closed(const memq_queue *q);
MEMQ_EXPORT void memq_queue_free(memq_queue *q);

/* ----------------------------------------------------------------------
 * memq_buf: a chunked byte buffer with ages
 * ---------------------------------------------------------------------- */

typedef struct memq_buf memq_buf;

MEMQ_EXPORT int memq_buf_new(memq_account *a, memq_collapse_fn on_collapse, void *ctx,
                             memq_buf **out);
MEMQ_EXPORT int memq_buf_add(memq_buf *b, const void *data, size_t n);
MEMQ_EXPORT size_t memq_buf_peek(const memq_buf *b, void *out, size_t n);
MEMQ_EXPORT size_t memq_buf_drain(memq_buf *b, size_t n);
MEMQ_EXPORT size_t memq_buf_len(const memq_buf *b);
MEMQ_EXPORT bool memq_buf_oldest(const memq_buf *b, memq_time *when);
MEMQ_EXPORT bool memq_buf_closed(const memq_buf *b);
MEMQ_EXPORT void memq_buf_free(memq_buf *b);

#ifdef __cplusplus
}
#endif

#endif /* MEMQUOTA_CONTAINERS_H */
