/*
 * tests/interpose.h - malloc, calloc, realloc and strdup that fail when
 * the program says so: for the test programs that make the library's
 * allocations fail (check_oom, and the libmemquota-event programs through
 * tests/event/failalloc.h).  The programs link the static libraries, so
 * these interpose for the whole process.  The real allocator is the
 * sanitizer's when there is one (__interceptor_*), else glibc's
 * (__libc_*).  valgrind replaces these functions with its own unless told
 * not to (somalloc=nouserintercepts).
 *
 * The program defines, with NO_SANITIZE,
 *     static bool should_fail(const void *caller);
 * which decides from the caller's return address whether this allocation
 * fails (from_executable() tells the library's calls from libc's own).
 * One file of a program only.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 */
#ifndef MEMQ_TESTS_INTERPOSE_H
#define MEMQ_TESTS_INTERPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

/* Whether a return address is in this executable's code (the libraries
 * are linked in statically), not in libc's or a sanitizer's. */
NO_SANITIZE static bool from_executable(const void *ret)
{
    return (const char *)ret >= &__executable_start && (const char *)ret < &etext;
}

static bool should_fail(const void *caller); /* the program's */

/* An allocation that never fails. */
NO_SANITIZE static void *real_malloc(size_t n)
{
    return __interceptor_malloc ? __interceptor_malloc(n) : __libc_malloc(n);
}

NO_SANITIZE void *malloc(size_t n)
{
    if (should_fail(__builtin_return_address(0)))
        return NULL;
    return real_malloc(n);
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
    char *d = real_malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

#endif
