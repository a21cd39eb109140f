/*
 * det_clock.h - a deterministic real clock for tests whose runs must be
 * repeatable to the allocation.
 *
 * The library measures its reclaim budget with CLOCK_MONOTONIC.  While
 * det_clock_on is set on a thread, that thread's reads of it advance by
 * DET_CLOCK_STEP ns each, so a budget of 1 us allows about ten reads,
 * always the same ones, however loaded the machine.  Other threads and
 * other clocks see the real time.  Include it in one translation unit of a
 * test program: it defines clock_gettime() for the whole program.
 */
#ifndef MEMQ_DET_CLOCK_H
#define MEMQ_DET_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DET_CLOCK_STEP 100u

static _Thread_local bool det_clock_on;
static _Thread_local uint64_t det_clock_now;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (det_clock_on && id == CLOCK_MONOTONIC) {
        det_clock_now += DET_CLOCK_STEP;
        ts->tv_sec = (time_t)(det_clock_now / 1000000000u);
        ts->tv_nsec = (long)(det_clock_now % 1000000000u);
        return 0;
    }
    return (int)syscall(SYS_clock_gettime, id, ts);
}

#endif /* MEMQ_DET_CLOCK_H */
