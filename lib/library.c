/*
 * library.c - what belongs to no handle: version, error strings, clocks.
 */
#include "internal.h"

#include <stdlib.h>
#include <time.h>

#define STR2(x) #x
#define STR(x) STR2(x)

unsigned memq_version(void)
{
    return MEMQ_VERSION_NUMBER;
}

const char *memq_version_string(void)
{
    return STR(MEMQ_VERSION_MAJOR) "." STR(MEMQ_VERSION_MINOR) "." STR(MEMQ_VERSION_PATCH);
}

const char *memq_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case MEMQ_EINVAL: return "invalid argument or handle";
    case MEMQ_ENOMEM: return "out of memory";
    case MEMQ_ECLOSED: return "account closed";
    case MEMQ_ESHUTDOWN: return "tracker shut down";
    case MEMQ_EOVERFLOW: return "size overflow";
    case MEMQ_EAGAIN: return "not finished, try again";
    case MEMQ_ECYCLE: return "account tree would have a cycle";
    case MEMQ_EEXIST: return "already a parent of that account";
    case MEMQ_ESYSTEM: return "system call failed";
    default: return "unknown error";
    }
}

static memq_time read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (memq_time)ts.tv_sec * 1000000000u + (memq_time)ts.tv_nsec;
}

memq_time memq_now(void)
{
#ifdef CLOCK_MONOTONIC_COARSE
    return read_clock(CLOCK_MONOTONIC_COARSE);
#else
    return read_clock(CLOCK_MONOTONIC);
#endif
}

uint64_t memq__real_ns(void)
{
    return read_clock(CLOCK_MONOTONIC);
}

void *memq__room_for_one(void *items, size_t n, size_t *cap, size_t size, size_t first)
{
    if (n < *cap)
        return items;
    size_t c = *cap ? *cap * 2 : first;
    void *bigger = realloc(items, c * size);
    if (bigger != NULL)
        *cap = c;
    return bigger;
}
