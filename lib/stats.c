/*
 * stats.c - statistics and dumps of the account tree.
 *
 * A dump copies what it shows under the lock and writes after dropping
 * it, so a slow FILE never stalls claims.
 */
#include "internal.h"
#include "pool.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Nothing is charged when tracking is off: an unlimited tracker reports
 * the sum of the claims, saturating (it keeps no shared total). */
size_t memq__claims_sum(const memq_tracker *t)
{
    size_t sum = 0;
    memq_account *a;
    for (size_t i = 0; (a = memq__ids_next(t, &i)) != NULL;)
        for (memq_participation *p = a->participants; p != NULL; p = p->next) {
            size_t c = atomic_load_explicit(&p->claimed, memory_order_relaxed);
            sum = c > SIZE_MAX - sum ? SIZE_MAX : sum + c;
        }
    return sum;
}

static void stats_locked(const memq_tracker *t, memq_stats *st)
{
    *st = t->stats;
    st->used = memq__used(t);
    /* The peak is raised whenever a total is computed; refills without the
     * lock compute one only when their slice folds (see participation.c). */
    st->peak = atomic_load_explicit(&t->peak, memory_order_relaxed);
    if (st->peak < st->used)
        st->peak = st->used;
    st->max = t->cfg.max;
    st->low_water = t->cfg.low_water;
    st->accounts = t->naccounts;
    st->participants = t->nparticipants;
    st->claimed = memq__claims_sum(t);
    st->slack = atomic_load_explicit(&t->slack, memory_order_relaxed);
    st->cached = 0;
    if (t->unlimited) {
        st->used = st->claimed;
        st->peak = st->used;
        memq__machine_stats(t, st);
        return;
    }
    memq__machine_stats(t, st);
    /* A participation's charge is its claim plus its cache. */
    memq_account *a;
    for (size_t i = 0; (a = memq__ids_next(t, &i)) != NULL;)
        for (memq_participation *p = a->participants; p != NULL; p = p->next) {
            size_t charged = atomic_load_explicit(&p->charged, memory_order_relaxed);
            size_t claimed = atomic_load_explicit(&p->claimed, memory_order_relaxed);
            if (charged > claimed)
                st->cached += charged - claimed;
        }
}

void memq_tracker_stats(const memq_tracker *t, memq_stats *st)
{
    if (st == NULL)
        return;
    memset(st, 0, sizeof *st);
    if (t == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return;
    memq_tracker *mt = (memq_tracker *)t;
    memq__machine_refresh(mt);
    memq__lock(mt);
    stats_locked(t, st);
    memq__unlock(mt);
}

/* ======================================================================
 * Dumps
 * ====================================================================== */

typedef struct dump_account {
    uint64_t id;
    char *name;
    size_t used;
    uint32_t participants;
    memq_time oldest;
    uint64_t *parents, *children;
    uint32_t nparents, nchildren;
} dump_account;

typedef struct dump {
    memq_stats stats;
    memq_time now;
    dump_account *accounts; /* sorted by id */
    size_t n;
} dump;

static void dump_free(dump *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->accounts[i].name);
        free(d->accounts[i].parents);
        free(d->accounts[i].children);
    }
    free(d->accounts);
}

static uint64_t *ids_of_children(const memq_account *a)
{
    const memq_account_list *l = memq__children(a);
    uint32_t n = memq__list_n(l);
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (ids != NULL)
        for (uint32_t i = 0; i < n; i++)
            ids[i] = l->items[i].a->id;
    return ids;
}

static uint64_t *ids_of_parents(memq_account *a)
{
    uint32_t n = memq__parents_n(a);
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (ids != NULL)
        for (uint32_t i = 0; i < n; i++)
            ids[i] = memq__parent_link(a, i)->a->id;
    return ids;
}

static int by_id(const void *x, const void *y)
{
    const dump_account *a = x, *b = y;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int snapshot(memq_tracker *t, dump *d)
{
    memset(d, 0, sizeof *d);
    d->now = memq__clock(t);
    memq__machine_refresh(t);
    int rc = 0;
    memq__lock(t);
    stats_locked(t, &d->stats);
    size_t n = t->naccounts;
    d->accounts = calloc(n ? n : 1, sizeof *d->accounts);
    if (d->accounts == NULL) {
        memq__unlock(t);
        return MEMQ_ENOMEM;
    }
    memq_account *a;
    for (size_t i = 0; rc == 0 && (a = memq__ids_next(t, &i)) != NULL;) {
        dump_account *x = &d->accounts[d->n++];
        x->id = a->id;
        x->oldest = a->oldest_seen;
        for (memq_participation *p = a->participants; p != NULL; p = p->next) {
            x->used += atomic_load_explicit(&p->claimed, memory_order_relaxed);
            x->participants++;
        }
        const char *name = memq__name(a);
        x->nparents = memq__parents_n(a);
        x->nchildren = memq__list_n(memq__children(a));
        x->parents = ids_of_parents(a);
        x->children = ids_of_children(a);
        if (name != NULL)
            x->name = strdup(name);
        if (x->parents == NULL || x->children == NULL || (name != NULL && x->name == NULL))
            rc = MEMQ_ENOMEM;
    }
    memq__unlock(t);
    if (rc != 0) {
        dump_free(d);
        return rc;
    }
    qsort(d->accounts, d->n, sizeof *d->accounts, by_id);
    return 0;
}

static const dump_account *find(const dump *d, uint64_t id)
{
    dump_account key = {.id = id};
    return bsearch(&key, d->accounts, d->n, sizeof key, by_id);
}

static double age_s(const dump *d, const dump_account *a)
{
    return d->now > a->oldest ? (double)(d->now - a->oldest) / 1e9 : 0.0;
}

/* A string as a JSON string or a Prometheus label value: both escape the
 * backslash, the double quote and the newline the same way; JSON also
 * needs the other control characters. */
static void put_quoted(FILE *f, const char *s, bool json)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (json && c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* The built-in watcher's sources, by MEMQ_WATCH_* value. */
static const char *watch_name(int source)
{
    static const char *const names[] = {"none", "systemd", "cgroup2", "psi", "cgroup1"};
    return source >= 0 && source <= MEMQ_WATCH_CGROUP1 ? names[source] : "none";
}

/* ---- text ---- */

static void text_account(FILE *f, const dump *d, const dump_account *a, size_t depth)
{
    fprintf(f, "%*saccount %" PRIu64, (int)(2 * (depth < 64 ? depth : 64)), "", a->id);
    if (a->name != NULL) {
        fputc(' ', f);
        put_quoted(f, a->name, true);
    }
    fprintf(f, ": used %zu, participants %" PRIu32, a->used, a->participants);
    if (a->used > 0 && a->oldest != MEMQ_TIME_MAX)
        fprintf(f, ", oldest data %.3f s old", age_s(d, a));
    if (a->nparents > 1) {
        fputs(", parents", f);
        for (uint32_t i = 0; i < a->nparents; i++)
            fprintf(f, " %" PRIu64, a->parents[i]);
    }
    fputc('\n', f);
}

typedef struct text_frame {
    size_t index, depth;
} text_frame;

/*
 * The tree, depth first, each account once: under the first of its parents
 * reached (its line lists all its parents), so that a deep chain cannot
 * overflow the stack and a layered graph does not print exponentially many
 * lines.  Indentation stops growing at 64 levels.
 */
static int dump_text(FILE *f, const dump *d)
{
    const memq_stats *s = &d->stats;
    fprintf(f,
            "tracker: used %zu, peak %zu, max %zu, low_water %zu, accounts %zu, participants %zu\n"
            "reclamation: episodes %" PRIu64 ", victims %" PRIu64 ", collapsed %" PRIu64
            ", partial %" PRIu64 ", bytes %" PRIu64 ", unreclaimable %" PRIu64
            ", timeouts %" PRIu64 ", misuse %" PRIu64 ", time %.3f ms, longest episode %.3f ms\n",
            s->used, s->peak, s->max, s->low_water, s->accounts, s->participants, s->episodes,
            s->accounts_reclaimed, s->accounts_collapsed, s->partial_reclaims, s->bytes_reclaimed,
            s->unreclaimable_events, s->callback_timeouts, s->misuse_events,
            (double)s->reclaim_ns_total / 1e6, (double)s->episode_ns_max / 1e6);
    fprintf(f,
            "memory: claimed %zu, cached %zu, slack %zu; rss %zu, untracked %" PRId64
            ", cgroup usage %zu, cgroup limit %zu\n"
            "machine: pressure events %" PRIu64 ", pressure episodes %" PRIu64
            ", rss episodes %" PRIu64 ", rss stalls %" PRIu64 ", watcher %s, refused 0x%x\n",
            s->claimed, s->cached, s->slack, s->rss, s->untracked, s->cgroup_usage,
            s->cgroup_limit, s->pressure_events, s->pressure_episodes, s->rss_episodes,
            s->rss_stalls, watch_name(s->watch_source), s->watch_refused);
    bool *shown = calloc(d->n ? d->n : 1, sizeof *shown);
    text_frame *stack = malloc((d->n ? d->n : 1) * sizeof *stack);
    if (shown == NULL || stack == NULL) {
        free(shown);
        free(stack);
        return MEMQ_ENOMEM;
    }
    for (size_t r = 0; r < d->n; r++) {
        if (d->accounts[r].nparents != 0)
            continue;
        /* Each account is pushed at most once (marked when pushed), so the
         * stack never holds more than d->n frames. */
        size_t top = 0;
        stack[top++] = (text_frame){r, 0};
        shown[r] = true;
        while (top > 0) {
            text_frame fr = stack[--top];
            const dump_account *a = &d->accounts[fr.index];
            text_account(f, d, a, fr.depth);
            for (uint32_t i = a->nchildren; i-- > 0;) {
                const dump_account *c = find(d, a->children[i]);
                if (c == NULL || shown[c - d->accounts])
                    continue;
                shown[c - d->accounts] = true;
                stack[top++] = (text_frame){(size_t)(c - d->accounts), fr.depth + 1};
            }
        }
    }
    free(shown);
    free(stack);
    return 0;
}

/* ---- JSON ---- */

static void dump_json(FILE *f, const dump *d)
{
    const memq_stats *s = &d->stats;
    fprintf(f,
            "{\"tracker\":{\"used\":%zu,\"peak\":%zu,\"max\":%zu,\"low_water\":%zu,"
            "\"accounts\":%zu,\"participants\":%zu,\"episodes\":%" PRIu64
            ",\"accounts_reclaimed\":%" PRIu64 ",\"accounts_collapsed\":%" PRIu64
            ",\"partial_reclaims\":%" PRIu64 ",\"bytes_reclaimed\":%" PRIu64
            ",\"reclaim_ns_total\":%" PRIu64 ",\"episode_ns_max\":%" PRIu64
            ",\"unreclaimable_events\":%" PRIu64 ",\"callback_timeouts\":%" PRIu64
            ",\"misuse_events\":%" PRIu64 ",\"claimed\":%zu,\"cached\":%zu,\"slack\":%zu"
            ",\"rss\":%zu,\"untracked\":%" PRId64 ",\"cgroup_usage\":%zu,\"cgroup_limit\":%zu"
            ",\"pressure_events\":%" PRIu64 ",\"pressure_episodes\":%" PRIu64
            ",\"rss_episodes\":%" PRIu64 ",\"rss_stalls\":%" PRIu64
            ",\"watch_source\":\"%s\",\"watch_refused\":%u},\"accounts\":[",
            s->used, s->peak, s->max, s->low_water, s->accounts, s->participants, s->episodes,
            s->accounts_reclaimed, s->accounts_collapsed, s->partial_reclaims, s->bytes_reclaimed,
            s->reclaim_ns_total, s->episode_ns_max, s->unreclaimable_events,
            s->callback_timeouts, s->misuse_events, s->claimed, s->cached, s->slack, s->rss,
            s->untracked, s->cgroup_usage, s->cgroup_limit, s->pressure_events,
            s->pressure_episodes, s->rss_episodes, s->rss_stalls, watch_name(s->watch_source),
            s->watch_refused);
    for (size_t i = 0; i < d->n; i++) {
        const dump_account *a = &d->accounts[i];
        fprintf(f, "%s{\"id\":%" PRIu64 ",\"name\":", i ? "," : "", a->id);
        if (a->name != NULL)
            put_quoted(f, a->name, true);
        else
            fputs("null", f);
        fputs(",\"parents\":[", f);
        for (uint32_t j = 0; j < a->nparents; j++)
            fprintf(f, "%s%" PRIu64, j ? "," : "", a->parents[j]);
        fprintf(f, "],\"used\":%zu,\"participants\":%" PRIu32 ",\"oldest_age_s\":", a->used,
                a->participants);
        if (a->used > 0 && a->oldest != MEMQ_TIME_MAX)
            fprintf(f, "%.3f}", age_s(d, a));
        else
            fputs("null}", f);
    }
    fputc(']', f); /* the object is closed after the pools' part */
}

/* ---- Prometheus ---- */

static void metric(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type, name, v);
}

static void account_labels(FILE *f, const dump_account *a)
{
    fprintf(f, "{id=\"%" PRIu64 "\"", a->id);
    if (a->name != NULL) {
        fputs(",name=", f);
        put_quoted(f, a->name, false);
    }
    fputc('}', f);
}

static void dump_prometheus(FILE *f, const dump *d)
{
    const memq_stats *s = &d->stats;
    metric(f, "memq_used_bytes", "gauge", "Bytes counted: claims plus participation caches.",
           s->used);
    metric(f, "memq_peak_bytes", "gauge", "Highest memq_used_bytes so far.", s->peak);
    metric(f, "memq_max_bytes", "gauge", "High-water mark.", s->max);
    metric(f, "memq_low_water_bytes", "gauge", "Low-water mark.", s->low_water);
    metric(f, "memq_accounts", "gauge", "Open accounts.", s->accounts);
    metric(f, "memq_participants", "gauge", "Registered participations.", s->participants);
    metric(f, "memq_episodes_total", "counter", "Reclamation episodes started.", s->episodes);
    metric(f, "memq_accounts_reclaimed_total", "counter", "Victim accounts asked to reclaim.",
           s->accounts_reclaimed);
    metric(f, "memq_accounts_collapsed_total", "counter",
           "Accounts closed by a collapse or a timeout.", s->accounts_collapsed);
    metric(f, "memq_partial_reclaims_total", "counter", "PARTIAL reclaim answers.",
           s->partial_reclaims);
    metric(f, "memq_reclaimed_bytes_total", "counter", "Claimed bytes victims gave up.",
           s->bytes_reclaimed);
    metric(f, "memq_reclaim_nanoseconds_total", "counter", "Time spent reclaiming.",
           s->reclaim_ns_total);
    metric(f, "memq_episode_max_nanoseconds", "gauge", "Longest episode.", s->episode_ns_max);
    metric(f, "memq_unreclaimable_total", "counter",
           "Episodes stopped with nothing reclaimable left.", s->unreclaimable_events);
    metric(f, "memq_callback_timeouts_total", "counter", "PENDING answers that timed out.",
           s->callback_timeouts);
    metric(f, "memq_misuse_total", "counter", "Over-releases, stale handles, bad answers.",
           s->misuse_events);
    metric(f, "memq_claimed_bytes", "gauge", "Bytes the participants claim.", s->claimed);
    metric(f, "memq_cached_bytes", "gauge",
           "Bytes counted in the participations' caches (the over-count).", s->cached);
    metric(f, "memq_slack_bytes", "gauge", "Bytes counted that no account holds (pool slack).",
           s->slack);
    metric(f, "memq_rss_bytes", "gauge", "The process's resident memory.", s->rss);
    fprintf(f, "# HELP memq_untracked_bytes Resident memory minus used (negative: counted, not "
               "resident).\n# TYPE memq_untracked_bytes gauge\nmemq_untracked_bytes %" PRId64 "\n",
            s->untracked);
    metric(f, "memq_cgroup_usage_bytes", "gauge", "The process's cgroup's memory use.",
           s->cgroup_usage);
    metric(f, "memq_cgroup_limit_bytes", "gauge", "The cgroup's memory limit (0: none).",
           s->cgroup_limit);
    metric(f, "memq_pressure_events_total", "counter", "Memory pressure reports.",
           s->pressure_events);
    metric(f, "memq_pressure_episodes_total", "counter", "Episodes started by pressure.",
           s->pressure_episodes);
    metric(f, "memq_rss_episodes_total", "counter", "Episodes started by rss_max.",
           s->rss_episodes);
    metric(f, "memq_rss_stalls_total", "counter", "rss_max episodes that did not lower RSS.",
           s->rss_stalls);
    fprintf(f, "# HELP memq_pressure_watch The built-in pressure watcher's source.\n"
               "# TYPE memq_pressure_watch gauge\nmemq_pressure_watch{source=\"%s\"} 1\n",
            watch_name(s->watch_source));
    fputs("# HELP memq_account_used_bytes Bytes claimed by an account's own participants.\n"
          "# TYPE memq_account_used_bytes gauge\n", f);
    for (size_t i = 0; i < d->n; i++) {
        fputs("memq_account_used_bytes", f);
        account_labels(f, &d->accounts[i]);
        fprintf(f, " %zu\n", d->accounts[i].used);
    }
    fputs("# HELP memq_account_oldest_age_seconds Age of an account's oldest data, as last "
          "reported to reclamation.\n# TYPE memq_account_oldest_age_seconds gauge\n", f);
    for (size_t i = 0; i < d->n; i++) {
        if (d->accounts[i].used == 0 || d->accounts[i].oldest == MEMQ_TIME_MAX)
            continue;
        fputs("memq_account_oldest_age_seconds", f);
        account_labels(f, &d->accounts[i]);
        fprintf(f, " %.3f\n", age_s(d, &d->accounts[i]));
    }
}

int memq_tracker_dump(memq_tracker *t, FILE *f, int format)
{
    if (t == NULL || f == NULL || t->magic != MEMQ_MAGIC_TRACKER)
        return MEMQ_EINVAL;
    if (format != MEMQ_DUMP_TEXT && format != MEMQ_DUMP_JSON && format != MEMQ_DUMP_PROMETHEUS)
        return MEMQ_EINVAL;
    dump d;
    int rc = snapshot(t, &d);
    if (rc != 0)
        return rc;
    if (format == MEMQ_DUMP_TEXT)
        rc = dump_text(f, &d);
    else if (format == MEMQ_DUMP_JSON)
        dump_json(f, &d);
    else
        dump_prometheus(f, &d);
    dump_free(&d);
    /* The chunk pools' statistics, per size class (their room, no lock
     * of ours held). */
    if (rc == 0 && format == MEMQ_DUMP_JSON)
        fputs(",\"pools\":", f);
    if (rc == 0)
        rc = memq__pool_dump(t, f, format);
    if (format == MEMQ_DUMP_JSON)
        fputs("}\n", f);
    if (rc != 0)
        return rc;
    return fflush(f) != 0 || ferror(f) ? MEMQ_ESYSTEM : 0;
}
