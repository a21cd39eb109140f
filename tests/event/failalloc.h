/*
 * tests/event/failalloc.h - the libmemquota-event test programs' failing
 * allocator.  Defines malloc, calloc, realloc and strdup: include it in
 * one file of a program only (each check_*.c here is one program).
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 */
#ifndef MEMQ_TESTS_EVENT_FAILALLOC_H
#define MEMQ_TESTS_EVENT_FAILALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------------------
 * Our allocations, made to fail
 *
 * The program links the static libraries, so it interposes malloc,
 * calloc, realloc and strdup for the whole process (as check_oom does).
 * While a call is armed on this thread (fail_arm()), the allocations made
 * from this executable's code (the libraries, and libevent's own when
 * they go through allocator functions of this program) are counted and
 * the n-th fails (tests/interpose.h has the interposers).  Under valgrind
 * they may not be ours: failures_work() says whether they are.
 * ---------------------------------------------------------------------- */

#include "../interpose.h"

static _Thread_local bool fail_armed;
static _Thread_local unsigned fail_counted, fail_at, fail_count;

NO_SANITIZE static bool should_fail(const void *caller)
{
    if (!fail_armed || !from_executable(caller))
        return false;
    if (++fail_counted != fail_at)
        return false;
    fail_count++;
    return true;
}

/* Make the n-th allocation from now on this thread fail (n >= 1). */
static void fail_arm(unsigned n)
{
    fail_counted = 0;
    fail_count = 0;
    fail_at = n;
    fail_armed = true;
}

/* Stop; true if an allocation failed since fail_arm(). */
static bool fail_disarm(void)
{
    fail_armed = false;
    return fail_count > 0;
}

/* True if the allocator above is in force (not valgrind's). */
static bool failures_work(void)
{
    void *(*volatile alloc)(size_t) = malloc;
    fail_arm(1);
    void *p = alloc(64);
    bool failed = fail_disarm();
    free(p);
    return failed && p == NULL;
}

#endif
