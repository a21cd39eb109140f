/*
 * baseline.c - the plain counter the fast path is measured against.
 *
 * It is built as its own shared object with the library's compiler flags,
 * so that a call to base_counter_add() pays exactly what a call to
 * memq_claim() pays from a user's program (a call through the PLT into
 * another object, no inlining) and the difference between the two is the
 * work done inside: here one addition, there the cache checks.
 */
#include <stddef.h>

#define BASE_EXPORT __attribute__((visibility("default")))

typedef struct base_counter {
    size_t value;
} base_counter;

/* The same shapes as memq_claim() and memq_release(). */
BASE_EXPORT int base_counter_add(base_counter *c, size_t n);
BASE_EXPORT void base_counter_sub(base_counter *c, size_t n);

int base_counter_add(base_counter *c, size_t n)
{
    c->value += n;
    return 0;
}

void base_counter_sub(base_counter *c, size_t n)
{
    c->value -= n;
}
