/*
 * account.c - accounts: the tree of reclamation units, their references
 * and their ids.
 *
 * An account may have several parents (never a cycle).  Reclaiming an
 * account reclaims its descendants, never its ancestors.  Open accounts are
 * in the tracker's hash by id, which is what makes memq_account_find() a
 * weak reference: closing removes the entry, and ids are never reused.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

bool memq__account_valid(const memq_account *a)
{
    return a != NULL && a->magic == MEMQ_MAGIC_ACCOUNT;
}

/* The spin lock's contended path, out of line so that taking it stays one
 * exchange inline.  Yields: the holder may be descheduled. */
void memq__spin_wait(memq_account *a)
{
    do {
        while (atomic_load_explicit(&a->spin, memory_order_relaxed))
            sched_yield();
    } while (atomic_exchange_explicit(&a->spin, true, memory_order_acquire));
}

/* ======================================================================
 * Parent and child lists
 *
 * An edge parent -> child is stored twice, once in each account's list,
 * and each copy holds the index of the other, so that unlinking an edge
 * is O(1) (a swap with the last entry, whose other copy is told its new
 * index): closing every child of a parent with 100,000 children costs
 * 100,000 unlinks, not a scan of the parent's list per child.
 * ====================================================================== */

/* Room for one more entry in *lp (allocated on first use); false if that
 * fails, *lp unchanged. */
static bool list_reserve(memq_account_list **lp)
{
    memq_account_list *l = *lp;
    if (l != NULL && l->n < l->cap)
        return true;
    uint32_t cap = l != NULL ? l->cap * 2 : 1;
    l = realloc(l, sizeof *l + cap * sizeof l->items[0]);
    if (l == NULL)
        return false;
    if (*lp == NULL)
        l->n = 0;
    l->cap = cap;
    *lp = l;
    return true;
}

static bool has_parent(memq_account *a, const memq_account *parent)
{
    for (uint32_t i = 0; i < memq__parents_n(a); i++, a->tracker->link_steps++)
        if (memq__parent_link(a, i)->a == parent)
            return true;
    return false;
}

static void list_free(memq_account_list **lp)
{
    free(*lp);
    *lp = NULL;
}

/* a's extra part, allocated if needed; NULL if that fails. */
static memq_account_extra *extra(memq_account *a)
{
    if (a->extra == NULL)
        a->extra = calloc(1, sizeof *a->extra);
    return a->extra;
}

static void extra_free(memq_account *a)
{
    if (a->extra == NULL)
        return;
    free(a->extra->name);
    list_free(&a->extra->more_parents);
    list_free(&a->extra->children);
    free(a->extra);
    a->extra = NULL;
}

/* Link child under parent, both ways, or neither. */
static bool link(memq_account *child, memq_account *parent)
{
    uint32_t j = memq__parents_n(child);
    if (extra(parent) == NULL || !list_reserve(&parent->extra->children))
        return false;
    if (j > 0 && (extra(child) == NULL || !list_reserve(&child->extra->more_parents)))
        return false;
    memq_account_list *children = parent->extra->children;
    children->items[children->n] = (memq_link){child, j};
    if (j > 0)
        child->extra->more_parents->n++;
    *memq__parent_link(child, j) = (memq_link){parent, children->n};
    children->n++;
    return true;
}

/* Remove entry i of parent's children, moving the last entry into its
 * place and telling that edge's other copy its new index. */
static void children_remove_at(memq_account *parent, uint32_t i)
{
    memq_account_list *l = memq__children(parent);
    memq_link last = l->items[--l->n];
    if (i == l->n)
        return;
    l->items[i] = last;
    memq__parent_link(last.a, last.back)->back = i;
}

/* The same for child's i-th parent. */
static void parents_remove_at(memq_account *child, uint32_t i)
{
    uint32_t n = memq__parents_n(child) - 1;
    memq_link last = *memq__parent_link(child, n);
    if (i != n) {
        *memq__parent_link(child, i) = last;
        memq__children(last.a)->items[last.back].back = i;
    }
    if (n == 0)
        child->parent = (memq_link){NULL, 0};
    else
        child->extra->more_parents->n--;
}

/* Unlink the edge that is entry i of parent's children. */
static void unlink_child(memq_account *parent, uint32_t i)
{
    memq_link e = memq__children(parent)->items[i];
    parent->tracker->link_steps += 2;
    children_remove_at(parent, i);
    parents_remove_at(e.a, e.back);
}

/*
 * Depth-first over a and its descendants, each once even when reachable
 * by several paths (marked with a fresh traversal number).  Iterative, so
 * a deep chain of accounts cannot overflow the stack.
 */
bool memq__account_walk(memq_account *a, void (*fn)(memq_account *, void *), void *arg)
{
    memq_tracker *t = a->tracker;
    uint32_t mark = ++t->visit;
    if (mark == 0) {
        /* The marks wrapped (once in 2^32 walks): forget them all. */
        memq_account *x;
        for (size_t i = 0; (x = memq__ids_next(t, &i)) != NULL;)
            x->visit = 0;
        mark = t->visit = 1;
    }
    memq_account_list *stack = NULL;
    if (!list_reserve(&stack))
        return false;
    stack->items[stack->n++].a = a;
    a->visit = mark;
    while (stack->n > 0) {
        memq_account *x = stack->items[--stack->n].a;
        fn(x, arg);
        memq_account_list *children = memq__children(x);
        for (uint32_t i = 0; i < memq__list_n(children); i++) {
            memq_account *c = children->items[i].a;
            if (c->visit == mark)
                continue;
            c->visit = mark;
            if (!list_reserve(&stack)) {
                list_free(&stack);
                return false;
            }
            stack->items[stack->n++].a = c;
        }
    }
    list_free(&stack);
    return true;
}

/* ======================================================================
 * Creation, closing, freeing
 * ====================================================================== */

int memq_account_new(memq_tracker *t, memq_account *parent, memq_account **out)
{
    if (t == NULL || out == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    if (parent != NULL && (!memq__account_valid(parent) || parent->tracker != t))
        return MEMQ_EINVAL;
    memq_account *a = calloc(1, sizeof *a);
    if (a == NULL)
        return MEMQ_ENOMEM;
    a->magic = MEMQ_MAGIC_ACCOUNT;
    a->refs = 1;
    a->tracker = t;
    a->oldest_seen = MEMQ_TIME_MAX;

    int rc = 0;
    memq__lock(t);
    if (t->shutdown)
        rc = MEMQ_ESHUTDOWN;
    else if (parent != NULL && parent->closed)
        rc = MEMQ_ECLOSED;
    else if (parent != NULL && !link(a, parent))
        rc = MEMQ_ENOMEM;
    if (rc == 0) {
        a->id = t->next_id;
        if (!memq__ids_add(t, a)) {
            if (parent != NULL)
                unlink_child(parent, memq__children(parent)->n - 1);
            rc = MEMQ_ENOMEM;
        }
    }
    if (rc == 0) {
        t->next_id++;
        t->refs++;
    }
    memq__unlock(t);
    if (rc != 0) {
        a->magic = MEMQ_MAGIC_DEAD;
        extra_free(a);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

/* Free the struct once nothing refers to it.  Under the lock; the tracker
 * itself goes at the next memq__unlock() if this was its last holder. */
void memq__account_maybe_free(memq_account *a)
{
    if (a->refs > 0 || a->pins > 0 || !a->closed)
        return;
    memq_tracker *t = a->tracker;
    a->magic = MEMQ_MAGIC_DEAD;
    extra_free(a);
    free(a);
    t->refs--;
}

void memq__account_close(memq_account *a)
{
    if (!a->closed) {
        memq_tracker *t = a->tracker;
        a->closed = true;
        for (memq_participation *p = a->participants; p != NULL; p = p->next)
            memq__participation_close(p);
        memq__ids_remove(t, a);
        uint32_t n;
        while ((n = memq__parents_n(a)) > 0) {
            memq_link e = *memq__parent_link(a, n - 1);
            unlink_child(e.a, e.back);
        }
        while (memq__list_n(memq__children(a)) > 0)
            unlink_child(a, memq__children(a)->n - 1);
        if (a->extra != NULL) {
            list_free(&a->extra->more_parents);
            list_free(&a->extra->children);
        }
    }
    memq__account_maybe_free(a);
}

/* ======================================================================
 * The public account functions
 * ====================================================================== */

struct find_arg {
    const memq_account *target;
    bool found;
};

static void find_in(memq_account *a, void *arg)
{
    struct find_arg *f = arg;
    if (a == f->target)
        f->found = true;
}

int memq_account_add_parent(memq_account *a, memq_account *parent)
{
    if (!memq__account_valid(a) || !memq__account_valid(parent) || a->tracker != parent->tracker)
        return MEMQ_EINVAL;
    memq_tracker *t = a->tracker;
    int rc = 0;
    memq__lock(t);
    struct find_arg f = {parent, false};
    if (t->shutdown)
        rc = MEMQ_ESHUTDOWN;
    else if (a->closed || parent->closed)
        rc = MEMQ_ECLOSED;
    else if (has_parent(a, parent))
        rc = MEMQ_EEXIST;
    else if (!memq__account_walk(a, find_in, &f))
        rc = MEMQ_ENOMEM;
    else if (f.found)
        rc = MEMQ_ECYCLE;
    else if (!link(a, parent))
        rc = MEMQ_ENOMEM;
    memq__unlock(t);
    return rc;
}

memq_account *memq_account_ref(memq_account *a)
{
    if (!memq__account_valid(a))
        return NULL;
    memq_tracker *t = a->tracker;
    memq__lock(t);
    a->refs++;
    memq__unlock(t);
    return a;
}

void memq_account_unref(memq_account *a)
{
    if (!memq__account_valid(a))
        return;
    memq_tracker *t = a->tracker;
    memq__lock(t);
    if (a->refs == 0)
        memq__misuse_locked(t, "misuse: memq_account_unref on an account with no references");
    else if (--a->refs == 0)
        memq__account_close(a); /* may free a, and then t at unlock */
    memq__unlock_log(t);
}

uint64_t memq_account_id(const memq_account *a)
{
    return memq__account_valid(a) ? a->id : 0;
}

memq_account *memq_account_find(memq_tracker *t, uint64_t id)
{
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return NULL;
    memq__lock(t);
    memq_account *a = memq__ids_find(t, id);
    if (a != NULL)
        a->refs++;
    memq__unlock(t);
    return a;
}

int memq_account_set_name(memq_account *a, const char *name)
{
    if (!memq__account_valid(a))
        return MEMQ_EINVAL;
    char *copy = NULL;
    if (name != NULL && (copy = strdup(name)) == NULL)
        return MEMQ_ENOMEM;
    memq_tracker *t = a->tracker;
    char *old = NULL;
    int rc = 0;
    memq__lock(t);
    if (copy != NULL || a->extra != NULL) {
        if (extra(a) == NULL) {
            rc = MEMQ_ENOMEM;
        } else {
            old = a->extra->name;
            a->extra->name = copy;
            copy = NULL;
        }
    }
    memq__unlock(t);
    free(old);
    free(copy);
    return rc;
}

memq_tracker *memq_account_tracker(const memq_account *a)
{
    return memq__account_valid(a) ? a->tracker : NULL;
}

size_t memq_account_used(const memq_account *a)
{
    if (!memq__account_valid(a))
        return 0;
    memq_tracker *t = a->tracker;
    size_t sum = 0;
    memq__lock(t);
    if (!a->closed)
        for (memq_participation *p = a->participants; p != NULL; p = p->next)
            sum += atomic_load_explicit(&p->claimed, memory_order_relaxed);
    memq__unlock(t);
    return sum;
}

bool memq_account_closed(const memq_account *a)
{
    if (!memq__account_valid(a))
        return true;
    memq_tracker *t = a->tracker;
    memq__lock(t);
    bool closed = a->closed;
    memq__unlock(t);
    return closed;
}
