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
 * the n-th fails.  The real allocator is the sanitizer's when there is
 * one (__interceptor_*), else glibc's (__libc_*).  valgrind replaces these
 * functions with its own unless told not to (somalloc=nouserintercepts):
 * failures_work() says whether they are ours.
 * ---------------------------------------------------------------------- */

extern void *__interceptor_malloc(size_t) __attribute__((weak));
extern void *__interceptor_calloc(size_t, size_t) __attribute__((weak));
extern void *__interceptor_realloc(void *, size_t) __attribute__((weak));
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern char __executable_start, etext;

/* The sanitizers' start-up allocates before TSan has any thread state:
 * never instrument the interposers.  Never inlined either: the caller's
 * address must be that of the function that called malloc. */
#define NO_SANITIZE                                                                                \
    __attribute__((no_sanitize("thread", "address", "undefined"), noinline))

static _Thread_local bool fail_armed;
static _Thread_local unsigned fail_counted, fail_at, fail_count;

NO_SANITIZE static bool should_fail(const void *caller)
{
    if (!fail_armed || (const char *)caller < &__executable_start || (const char *)caller >= &etext)
        return false;
    if (++fail_counted != fail_at)
        return false;
    fail_count++;
    return true;
}

NO_SANITIZE void *malloc(size_t n)
{
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return __interceptor_malloc ? __interceptor_malloc(n) : __libc_malloc(n);
}

NO_SANITIZE void *calloc(size_t n, size_t size)
{
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return __interceptor_calloc ? __interceptor_calloc(n, size) : __libc_calloc(n, size);
}

NO_SANITIZE void *realloc(void *p, size_t n)
{
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return __interceptor_realloc ? __interceptor_realloc(p, n) : __libc_realloc(p, n);
}

NO_SANITIZE char *strdup(const char *s)
{
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = __interceptor_malloc ? __interceptor_malloc(n) : __libc_malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
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
