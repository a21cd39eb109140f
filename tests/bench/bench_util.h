/*
 * bench_util.h - what the two benchmark programs (bench.c, pool_bench.c)
 * share: clocks, a fatal error, and MUST() for library calls that must
 * succeed.  Each program defines BENCH_NAME before including it.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <memquota.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the calling thread: what it did, not what the scheduler
 * gave to others while it waited. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", BENCH_NAME);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* A library call that must succeed for the measurement to mean anything. */
#define MUST(call)                                                                  \
    do {                                                                            \
        int must_rc_ = (call);                                                      \
        if (must_rc_ != 0)                                                          \
            die("%s:%d: %s: %s", __FILE__, __LINE__, #call, memq_strerror(must_rc_)); \
    } while (0)

#endif /* BENCH_UTIL_H */
