/*
 * examples/example_util.h - the small helpers relayd, httpd and loadgen
 * share: a monotonic clock, a log line on stderr named after the program,
 * the process's resident memory now and at its peak, and a size option.
 * Static functions: each example is one program of one file.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 */
#ifndef MEMQ_EXAMPLE_UTIL_H
#define MEMQ_EXAMPLE_UTIL_H

#include <memquota.h>

#include <errno.h> /* program_invocation_short_name (_GNU_SOURCE) */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Monotonic time in nanoseconds. */
static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One line on stderr: "<program>: <message>". */
static inline void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", program_invocation_short_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Resident set size now and at its peak, from /proc (0 if unreadable). */
static inline size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (f == NULL)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (size_t)resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

static inline size_t peak_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (f == NULL)
        return 0;
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmHWM: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

/* A size option ("64MiB", "1.5GiB", ...: memq_parse_size()); false, and
 * a line saying why, if it is not one. */
static inline bool parse_size_opt(const char *name, const char *text, size_t *out)
{
    int rc = memq_parse_size(text, out);
    if (rc != 0) {
        say("%s %s: %s", name, text, memq_strerror(rc));
        return false;
    }
    return true;
}

#endif
