/*
 * evbuffer_track.h - make a libevent evbuffer a tracked participant.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * The library itself has no libevent dependency; this adapter lives in
 * examples/ so that a libevent daemon can copy it (examples/relayd.c uses
 * it for every connection's input and output buffers).
 *
 * What it does:
 *  - Claims follow the buffer's length.  An evbuffer_add_cb() callback sees
 *    every addition and removal (evbuffer_add, evbuffer_drain, the writes a
 *    bufferevent does to its socket ...) and claims or releases exactly the
 *    bytes added or removed.  What is claimed is payload: libevent's chain
 *    headers and the unused tail of the last chain are not counted (a few
 *    percent for large buffers; the gap between tracked bytes and RSS is
 *    shown by the demo).
 *  - Its age is the time its oldest unsent byte arrived: it remembers, in
 *    order, how many bytes arrived at each tick of the tracker's clock, and
 *    forgets them as they are drained from the front.  A partly drained
 *    run keeps its stamp.  At most EVBUFFER_TRACK_MARKS runs are kept, so
 *    the adapter allocates nothing per byte; when they are all in use, new
 *    bytes join the newest run and inherit its older stamp.  So the age it
 *    reports is exact while the buffer holds data from at most that many
 *    clock ticks, and otherwise never younger than the truth: a buffer
 *    cannot hide from reclamation.
 *  - A reclaim collapses it: the adapter stops reporting changes and calls
 *    the owner's on_collapse(ctx), which must tear the owner down through its
 *    normal close path (for a connection: drop its buffers, close the
 *    socket, unref its account).  A byte stream cannot lose bytes from its
 *    middle, so there is no partial answer.  The memory is given back
 *    before the reclaim callback returns, as the library asks.
 *
 * Lifetimes: free the adapter before the evbuffer and before
 * memq_tracker_free() (it stamps data with memq_tracker_now()).
 *
 * Threads: the evbuffer is used on one thread (the event loop's) and the
 * tracker must reclaim on that same thread, i.e. in MEMQ_RECLAIM_MANUAL
 * mode with memq_tracker_reclaim() called from the loop (poll
 * memq_tracker_fd() with EV_READ|EV_PERSIST).  Nothing here takes a lock.
 */
#ifndef EVBUFFER_TRACK_H
#define EVBUFFER_TRACK_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/buffer.h>
#include <memquota.h>

/* Runs of bytes with their arrival time kept per buffer. */
#define EVBUFFER_TRACK_MARKS 64

typedef struct evbuffer_track evbuffer_track;

/* Start tracking buf as a participant of account a.  Bytes already in buf
 * are claimed now and stamped now.  on_collapse(ctx) is called once when
 * the buffer is reclaimed (may be NULL, but then nothing frees the data);
 * it may call evbuffer_track_free() on this tracker and free buf.
 * Returns 0 and stores the tracker in *out; MEMQ_EINVAL for NULL a, buf or
 * out; MEMQ_ENOMEM; or what memq_participant_register() and memq_claim()
 * return (MEMQ_ECLOSED, MEMQ_ESHUTDOWN ...).  On failure nothing is
 * installed and *out is untouched. */
int evbuffer_track_new(memq_account *a, struct evbuffer *buf, memq_collapse_fn on_collapse,
                       void *ctx, evbuffer_track **out);

/* True from the moment the buffer is reclaimed (on_collapse runs with it
 * already true), or once a claim failed because its account was closed some
 * other way (then on_collapse is not called: the owner checks this after
 * adding data and closes).  From then on nothing is claimed or released.
 * True for NULL. */
bool evbuffer_track_closed(const evbuffer_track *t);

/* The stamp of the oldest byte still in the buffer; false if it is empty,
 * closed or NULL.  Still answers inside on_collapse, so the owner can log
 * what it is giving up. */
bool evbuffer_track_oldest(const evbuffer_track *t, memq_time *when);

/* Bytes currently claimed (0 once closed or for NULL; the last value
 * inside on_collapse). */
size_t evbuffer_track_claimed(const evbuffer_track *t);

/* Stop tracking: remove the callback from the evbuffer (which stays the
 * caller's, untouched), release the claim and unregister.  Call it before
 * freeing the evbuffer.  May be called from on_collapse.  Ignores NULL. */
void evbuffer_track_free(evbuffer_track *t);

#endif /* EVBUFFER_TRACK_H */
