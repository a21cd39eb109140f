/*
 * model.h - an operation interpreter for libmemquota with a reference model
 * beside it.
 *
 * The interpreter reads a byte string (a fuzzer's input, a regression file)
 * or a seeded random stream and turns it into calls of the public API:
 * accounts created with parents, referenced, found and unreffed;
 * participations registered and freed; claims and releases; a fake clock
 * moved; reclamation run with participants that answer PARTIAL, COLLAPSING,
 * PENDING (completed late or never), an invalid status, or re-enter the
 * library from their callbacks; ages changed; the tracker reconfigured,
 * dumped and shut down.  A plain model (who holds what, which account is
 * open, which answer is pending) predicts every result and counter, and the
 * invariants are checked after every step (see model.c).
 *
 * Everything runs on the calling thread with a manual-mode tracker and a
 * fake clock, so a run is a pure function of its input: the seed printed on
 * a failure replays it exactly.  Even the reclamation time budget is made
 * deterministic: while a run is in progress, CLOCK_MONOTONIC as read by this
 * thread advances by a fixed step per read (model.c interposes
 * clock_gettime), so "the budget ran out" happens at the same point every
 * time.
 *
 * model.c is included by each program that uses it (tests/check_model.c,
 * tests/fuzz/fuzz_model.c), which must be compiled with -Ilib: some
 * invariants read the library's internal structures.
 */
#ifndef MEMQ_MODEL_H
#define MEMQ_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct mm_options {
    /* Print every operation to stderr. */
    bool trace;
    /* Seeded runs: write the bytes consumed to this file, so that the run
     * can be replayed as a fuzzer input or kept as a regression file. */
    const char *save_path;
    /* Comma-separated checks to disable while triaging a known defect:
     * "fd" (the descriptor is readable while reclamation is wanted and
     * nothing is pending), "candidates" (accounts that started holding
     * data during an episode are exempt from the oldest-first check),
     * "free-in-oldest" (an account whose participant freed itself in its
     * oldest() callback may be taken as the oldest for the episode),
     * "stale-victim" (the first round of a call that continues an episode
     * is not checked: its victim may have been chosen in the previous call
     * and not checked again), "older-than" (a round may say MEMQ_TIME_MAX,
     * "no other candidate", while another candidate holds data).
     * NULL in every test: a known defect must keep failing. */
    const char *skip;
} mm_options;

typedef struct mm_result {
    bool failed;
    char message[2048]; /* the first invariant broken, with the step */
    size_t steps;       /* operations run */
    /* What the run exercised, so a suite can tell it did something. */
    uint64_t reclaim_calls, callbacks, rounds, episodes, collapses, pendings, timeouts,
        wakeups, oldest_checks, unreclaimable;
} mm_result;

/* Interpret data[0..len) until it is used up; *res says what happened. */
void mm_run_bytes(const uint8_t *data, size_t len, const mm_options *opt, mm_result *res);

/* Run `steps` operations drawn from a pseudo-random stream seeded with
 * seed. */
void mm_run_seed(uint64_t seed, size_t steps, const mm_options *opt, mm_result *res);

#endif /* MEMQ_MODEL_H */
