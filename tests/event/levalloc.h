/*
 * tests/event/levalloc.h - libevent's allocations, counted: the functions
 * a program gives event_set_mem_functions() before anything else, so
 * that what libevent holds is known (lev_live) and its allocations can be
 * made to fail.  They allocate with malloc(), so failalloc.h's arming
 * makes them fail as the program's own; lev_fail_in makes only
 * libevent's fail.  One file of a program only, after failalloc.h.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 */
#ifndef MEMQ_TESTS_EVENT_LEVALLOC_H
#define MEMQ_TESTS_EVENT_LEVALLOC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#define MEM_HEADER 16
static atomic_size_t lev_live; /* bytes libevent holds */
static atomic_int lev_fail_in; /* > 0: the n-th allocation from now fails */

static bool lev_should_fail(void)
{
    int n = atomic_load(&lev_fail_in);
    if (n <= 0)
        return false;
    return atomic_fetch_sub(&lev_fail_in, 1) == 1;
}

static void *lev_malloc(size_t n)
{
    if (lev_should_fail())
        return NULL;
    size_t *p = malloc(n + MEM_HEADER);
    if (p == NULL)
        return NULL;
    *p = n;
    atomic_fetch_add(&lev_live, n);
    return (char *)p + MEM_HEADER;
}

static void lev_free(void *q)
{
    if (q == NULL)
        return;
    size_t *p = (size_t *)(void *)((char *)q - MEM_HEADER);
    atomic_fetch_sub(&lev_live, *p);
    free(p);
}

static void *lev_realloc(void *q, size_t n)
{
    if (q == NULL)
        return lev_malloc(n);
    if (lev_should_fail())
        return NULL;
    size_t *p = (size_t *)(void *)((char *)q - MEM_HEADER);
    size_t old = *p;
    p = realloc(p, n + MEM_HEADER);
    if (p == NULL)
        return NULL;
    *p = n;
    atomic_fetch_add(&lev_live, n);
    atomic_fetch_sub(&lev_live, old);
    return (char *)p + MEM_HEADER;
}

#endif
