/*
 * check_stats.c - memq_tracker_stats() counters and memq_tracker_dump() in
 * its three formats.
 */
#include "testutil.h"

#include <ctype.h>
#include <inttypes.h>

#define AT(ms) (WORLD_START_TIME + (memq_time)(ms) * MS)

/* A name that needs escaping in JSON and Prometheus. */
#define EVIL_NAME "evil\"name\nwith\\tail"

/* ======================================================================
 * A minimal JSON syntax checker.  It also reports whether some string
 * (key or value), once unescaped, equals `target`.
 * ====================================================================== */

typedef struct json_cursor {
    const char *s;
    const char *target;
    bool found;
} json_cursor;

static bool json_value(json_cursor *c);

static void json_ws(json_cursor *c)
{
    while (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r')
        c->s++;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static bool json_string(json_cursor *c)
{
    if (*c->s != '"')
        return false;
    c->s++;
    char buf[1024];
    size_t n = 0;
    for (;;) {
        unsigned char ch = (unsigned char)*c->s++;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return false; /* raw control character, or the end of the text */
        if (ch == '\\') {
            char e = *c->s++;
            switch (e) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u': {
                int code = 0;
                for (int i = 0; i < 4; i++) {
                    int d = hex_digit(*c->s++);
                    if (d < 0)
                        return false;
                    code = code * 16 + d;
                }
                ch = code < 0x80 ? (unsigned char)code : '?';
                break;
            }
            default:
                return false;
            }
        }
        if (n < sizeof buf - 1)
            buf[n++] = (char)ch;
    }
    buf[n] = '\0';
    if (c->target && strcmp(buf, c->target) == 0)
        c->found = true;
    return true;
}

static bool json_number(json_cursor *c)
{
    const char *p = c->s;
    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return false;
    if (*p == '0')
        p++;
    else
        while (isdigit((unsigned char)*p))
            p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    c->s = p;
    return true;
}

static bool json_literal(json_cursor *c, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(c->s, word, n) != 0)
        return false;
    c->s += n;
    return true;
}

static bool json_object(json_cursor *c)
{
    c->s++; /* '{' */
    json_ws(c);
    if (*c->s == '}') {
        c->s++;
        return true;
    }
    for (;;) {
        json_ws(c);
        if (!json_string(c))
            return false;
        json_ws(c);
        if (*c->s++ != ':')
            return false;
        if (!json_value(c))
            return false;
        json_ws(c);
        char ch = *c->s++;
        if (ch == '}')
            return true;
        if (ch != ',')
            return false;
    }
}

static bool json_array(json_cursor *c)
{
    c->s++; /* '[' */
    json_ws(c);
    if (*c->s == ']') {
        c->s++;
        return true;
    }
    for (;;) {
        if (!json_value(c))
            return false;
        json_ws(c);
        char ch = *c->s++;
        if (ch == ']')
            return true;
        if (ch != ',')
            return false;
    }
}

static bool json_value(json_cursor *c)
{
    json_ws(c);
    switch (*c->s) {
    case '{': return json_object(c);
    case '[': return json_array(c);
    case '"': return json_string(c);
    case 't': return json_literal(c, "true");
    case 'f': return json_literal(c, "false");
    case 'n': return json_literal(c, "null");
    default: return json_number(c);
    }
}

/* True if text is exactly one JSON value; *found says whether a string
 * equal to target (may be NULL) occurs in it. */
static bool json_valid(const char *text, const char *target, bool *found)
{
    json_cursor c = { text, target, false };
    bool ok = json_value(&c);
    json_ws(&c);
    if (found)
        *found = c.found;
    return ok && *c.s == '\0';
}

/* A copy of JSON text without the whitespace outside strings, so that
 * substrings such as "id":5 can be searched whatever the layout. */
static char *json_compact(const char *text)
{
    char *out = malloc(strlen(text) + 1);
    ck_assert_ptr_nonnull(out);
    char *o = out;
    bool in_string = false;
    for (const char *p = text; *p; p++) {
        if (in_string) {
            *o++ = *p;
            if (*p == '\\' && p[1])
                *o++ = *++p;
            else if (*p == '"')
                in_string = false;
        } else if (*p == '"') {
            in_string = true;
            *o++ = *p;
        } else if (!isspace((unsigned char)*p)) {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* ======================================================================
 * A minimal checker of the Prometheus text exposition format.
 * ====================================================================== */

typedef struct prom_report {
    int bad_line;          /* first malformed line (1-based), 0 if none */
    int samples;           /* sample lines */
    int non_memq_samples;  /* samples whose metric does not start with memq_ */
    int used_samples;      /* memq_account_used_bytes samples */
    const char *target;    /* a label value to look for, unescaped */
    bool target_found;
    double target_value;   /* the memq_account_used_bytes sample carrying it */
    bool used_typed;       /* a TYPE line for memq_account_used_bytes */
} prom_report;

static bool prom_name_char(char ch, bool first)
{
    return isalpha((unsigned char)ch) || ch == '_' || ch == ':' ||
           (!first && isdigit((unsigned char)ch));
}

/* Parse one sample line; returns false if malformed. */
static bool prom_sample(const char *line, prom_report *r)
{
    const char *p = line;
    if (!prom_name_char(*p, true))
        return false;
    const char *name = p;
    while (prom_name_char(*p, false))
        p++;
    size_t name_len = (size_t)(p - name);
    bool carries_target = false;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (!prom_name_char(*p, true) || *p == ':')
                return false;
            while (prom_name_char(*p, false) && *p != ':')
                p++;
            if (*p++ != '=' || *p++ != '"')
                return false;
            char value[1024];
            size_t n = 0;
            while (*p != '"') {
                char ch = *p++;
                if (ch == '\0' || ch == '\n')
                    return false;
                if (ch == '\\') {
                    char e = *p++;
                    if (e == 'n')
                        ch = '\n';
                    else if (e == '\\' || e == '"')
                        ch = e;
                    else
                        return false;
                }
                if (n < sizeof value - 1)
                    value[n++] = ch;
            }
            value[n] = '\0';
            p++; /* closing quote */
            if (r->target && strcmp(value, r->target) == 0)
                carries_target = true;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++; /* '}' */
    }
    if (*p++ != ' ')
        return false;
    char *end;
    double value = strtod(p, &end);
    if (end == p)
        return false;
    p = end;
    if (*p == ' ') { /* optional timestamp */
        p++;
        if (!isdigit((unsigned char)*p) && *p != '-')
            return false;
        while (isdigit((unsigned char)*p) || *p == '-')
            p++;
    }
    if (*p != '\0')
        return false;
    r->samples++;
    if (name_len < 5 || strncmp(name, "memq_", 5) != 0)
        r->non_memq_samples++;
    static const char used_metric[] = "memq_account_used_bytes";
    if (name_len == sizeof used_metric - 1 && strncmp(name, used_metric, name_len) == 0)
        r->used_samples++;
    if (carries_target && name_len == sizeof used_metric - 1 &&
        strncmp(name, used_metric, name_len) == 0) {
        r->target_found = true;
        r->target_value = value;
    }
    return true;
}

static prom_report prom_check(const char *text, const char *target)
{
    prom_report r;
    memset(&r, 0, sizeof r);
    r.target = target;
    char *copy = strdup(text);
    ck_assert_ptr_nonnull(copy);
    int lineno = 0;
    char *save = NULL;
    /* strtok_r would skip empty lines, which the format allows anyway. */
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        bool ok;
        if (line[0] == '#') {
            char metric[128], type[32];
            ok = true;
            if (strncmp(line, "# TYPE ", 7) == 0) {
                ok = sscanf(line, "# TYPE %127s %31s", metric, type) == 2 &&
                     (!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                      !strcmp(type, "histogram") || !strcmp(type, "summary") ||
                      !strcmp(type, "untyped"));
                if (ok && strcmp(metric, "memq_account_used_bytes") == 0)
                    r.used_typed = true;
            }
        } else {
            ok = prom_sample(line, &r);
        }
        if (!ok && r.bad_line == 0)
            r.bad_line = lineno;
    }
    free(copy);
    return r;
}

/* ======================================================================
 * Text helpers
 * ====================================================================== */

/* The line of text containing needle (a malloc'd copy), or NULL. */
static char *line_with(const char *text, const char *needle)
{
    const char *hit = strstr(text, needle);
    if (hit == NULL)
        return NULL;
    const char *start = hit;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(hit, '\n');
    size_t n = end ? (size_t)(end - start) : strlen(start);
    char *line = malloc(n + 1);
    ck_assert_ptr_nonnull(line);
    memcpy(line, start, n);
    line[n] = '\0';
    return line;
}

static size_t indentation(const char *line)
{
    size_t n = 0;
    while (line[n] == ' ' || line[n] == '\t' || line[n] == '|' || line[n] == '-' ||
           line[n] == '`' || line[n] == '+')
        n++;
    return n;
}

/* True if the decimal number appears in text as a whole token. */
static bool has_number(const char *text, uint64_t value)
{
    char digits[32];
    snprintf(digits, sizeof digits, "%" PRIu64, value);
    size_t n = strlen(digits);
    for (const char *p = strstr(text, digits); p; p = strstr(p + 1, digits)) {
        bool left = p == text || !isdigit((unsigned char)p[-1]);
        bool right = !isdigit((unsigned char)p[n]);
        if (left && right)
            return true;
    }
    return false;
}

static int count_lines_with(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ======================================================================
 * A small tree to dump: root "root-acct" (123457 bytes) with child
 * "child-acct" (2000 bytes), itself parent of "grandchild-acct"; a second
 * root "other-root"; "shared-child" under both roots.
 * ====================================================================== */

typedef struct tree {
    fake_world w;
    memq_account *root, *child, *grandchild, *other, *shared;
    fake_part parts[5];
} tree;

static void tree_build(tree *tr)
{
    fake_world *w = &tr->w;
    world_new(w, 10 * MIB, 5 * MIB);
    tr->root = world_holder(w, &tr->parts[0], 0, NULL, AT(1), 123457);
    tr->child = world_holder(w, &tr->parts[1], 1, tr->root, AT(2), 2000);
    tr->grandchild = world_holder(w, &tr->parts[2], 2, tr->child, AT(3), 300);
    tr->other = world_holder(w, &tr->parts[3], 3, NULL, AT(4), 40);
    tr->shared = world_holder(w, &tr->parts[4], 4, tr->root, AT(5), 5);
    ck_assert_int_eq(memq_account_add_parent(tr->shared, tr->other), 0);
    ck_assert_int_eq(memq_account_set_name(tr->root, "root-acct"), 0);
    ck_assert_int_eq(memq_account_set_name(tr->child, "child-acct"), 0);
    ck_assert_int_eq(memq_account_set_name(tr->grandchild, "grandchild-acct"), 0);
    ck_assert_int_eq(memq_account_set_name(tr->other, "other-root"), 0);
    ck_assert_int_eq(memq_account_set_name(tr->shared, "shared-child"), 0);
}

/* ======================================================================
 * memq_tracker_stats
 * ====================================================================== */

START_TEST(test_stats_report_used_and_peak)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 1000), 0);
    memq_release(fp.p, 600);
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.used, 500);
    ck_assert_uint_eq(st.peak, 1000);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_peak_survives_reclamation)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(1), 100);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    world_holder(&w, &c, 3, NULL, AT(3), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.used, 100);
    ck_assert_uint_eq(st.peak, 300);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_used_agrees_with_tracker_used)
{
    fake_world w;
    world_init(&w, 10 * MIB, 5 * MIB);
    w.cfg.cache_max = 16 * KIB;
    world_start(&w);
    fake_part parts[5];
    for (int i = 0; i < 5; i++) {
        part_add(&w, &parts[i], i, world_account(&w, NULL));
        ck_assert_int_eq(memq_claim(parts[i].p, 777 * (size_t)(i + 1)), 0);
    }
    ck_assert_uint_eq(world_stats(&w).used, memq_tracker_used(w.t));
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_report_the_marks_in_force)
{
    fake_world w;
    world_new(&w, 10000, 4000);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.max, 10000);
    ck_assert_uint_eq(st.low_water, 4000);
    memq_config cfg = w.cfg;
    cfg.max = 20000;
    cfg.low_water = 0;
    ck_assert_int_eq(memq_tracker_reconfigure(w.t, &cfg), 0);
    st = world_stats(&w);
    ck_assert_uint_eq(st.max, 20000);
    ck_assert_uint_eq(st.low_water, 15000);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_accounts_and_participants)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    world_account(&w, a);
    fake_part p1, p2, p3;
    part_add(&w, &p1, 1, a);
    part_add(&w, &p2, 2, a);
    part_add(&w, &p3, 3, a);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.accounts, 2);
    ck_assert_uint_eq(st.participants, 3);
    part_free(&p2);
    world_unref(&w, a);
    st = world_stats(&w);
    ck_assert_uint_eq(st.accounts, 1);
    ck_assert_uint_eq(st.participants, 2);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_episodes)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(1), 100);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    ck_assert_uint_eq(world_stats(&w).episodes, 0);
    world_holder(&w, &c, 3, NULL, AT(3), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).episodes, 1);
    ck_assert_int_eq(part_claim_at(&c, 200, AT(4)), 0); /* crosses again */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).episodes, 2);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_accounts_reclaimed)
{
    fake_world w;
    world_new(&w, 350, 100);
    fake_part parts[4];
    for (int i = 0; i < 4; i++)
        world_holder(&w, &parts[i], i, NULL, AT(i + 1), 100);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).accounts_reclaimed, 3);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_partial_reclaims)
{
    fake_world w;
    world_new(&w, 350, 100);
    fake_part parts[4];
    for (int i = 0; i < 4; i++)
        world_holder(&w, &parts[i], i, NULL, AT(i + 1), 100);
    parts[1].answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).partial_reclaims, 2);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_collapsed_and_timed_out_accounts)
{
    fake_world w;
    world_new(&w, 250, 50);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(1), 100);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    world_holder(&w, &c, 3, NULL, AT(3), 100);
    a.answer = MEMQ_RECLAIMED_COLLAPSING;
    b.answer = MEMQ_RECLAIM_PENDING;
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    fake_clock_advance(&w.clock, SECOND);
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.accounts_collapsed, 2);
    ck_assert_uint_eq(st.callback_timeouts, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_measure_bytes_reclaimed)
{
    fake_world w;
    world_new(&w, 250, 50);
    fake_part a, b, c;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    world_holder(&w, &c, 3, NULL, AT(3), 30);
    b.free_per_call = 70; /* the rest of B, or C, goes next */
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.bytes_reclaimed, 330 - st.used);
    ck_assert_uint_ge(st.bytes_reclaimed, 270);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_collapsed_usage_as_bytes_reclaimed)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    a.answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).bytes_reclaimed, 200);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_do_not_count_the_owners_own_releases_as_reclaimed)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    part_release(&b, 20); /* not reclamation; 280 is still over max */
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).bytes_reclaimed, 200);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_measure_time_spent_reclaiming)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    a.sleep_ms_in_reclaim = 20;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_ge(world_stats(&w).reclaim_ns_total, 15 * 1000000ULL);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_measure_the_longest_episode_from_the_crossing)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100); /* crosses */
    sleep_ms(30); /* the daemon's loop gets to it later */
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_ge(st.episode_ns_max, 25 * 1000000ULL);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_unreclaimable_events)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    a.free_per_call = 0;
    b.free_per_call = 0;
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_uint_eq(world_stats(&w).unreclaimable_events, 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_bad_reclaim_done_status_as_misuse)
{
    fake_world w;
    world_new(&w, 250, 100);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, AT(1), 200);
    world_holder(&w, &b, 2, NULL, AT(2), 100);
    a.answer = MEMQ_RECLAIM_PENDING;
    ck_assert_int_eq(world_reclaim(&w), MEMQ_EAGAIN);
    part_release(&a, 200);
    memq_reclaim_done(a.p, MEMQ_RECLAIM_PENDING); /* not an answer: PARTIAL */
    ck_assert_int_eq(world_reclaim(&w), 0);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.misuse_events, 1);
    ck_assert_uint_eq(st.callback_timeouts, 0);
    ck_assert(!memq_account_closed(a.account));
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_each_misuse_once)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    memq_release(fp.p, 1);
    memq_release(fp.p, 1);
    ck_assert_int_eq(memq_claim(fp.p, 10), 0);
    memq_release(fp.p, 11);
    ck_assert_uint_eq(world_stats(&w).misuse_events, 3);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_are_zero_for_a_new_tracker)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.used, 0);
    ck_assert_uint_eq(st.peak, 0);
    ck_assert_uint_eq(st.accounts, 0);
    ck_assert_uint_eq(st.participants, 0);
    ck_assert_uint_eq(st.episodes, 0);
    ck_assert_uint_eq(st.accounts_reclaimed, 0);
    ck_assert_uint_eq(st.accounts_collapsed, 0);
    ck_assert_uint_eq(st.partial_reclaims, 0);
    ck_assert_uint_eq(st.bytes_reclaimed, 0);
    ck_assert_uint_eq(st.reclaim_ns_total, 0);
    ck_assert_uint_eq(st.episode_ns_max, 0);
    ck_assert_uint_eq(st.unreclaimable_events, 0);
    ck_assert_uint_eq(st.callback_timeouts, 0);
    ck_assert_uint_eq(st.misuse_events, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_of_a_null_tracker_are_zero)
{
    memq_stats st;
    memset(&st, 0xff, sizeof st);
    memq_tracker_stats(NULL, &st);
    memq_stats zero;
    memset(&zero, 0, sizeof zero);
    ck_assert_mem_eq(&st, &zero, sizeof st);
}
END_TEST

START_TEST(test_stats_ignore_a_null_output)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_tracker_stats(w.t, NULL);
    world_teardown(&w);
}
END_TEST

/* ======================================================================
 * memq_tracker_dump: TEXT
 * ====================================================================== */

START_TEST(test_text_dump_shows_names_ids_and_claimed_bytes)
{
    tree tr;
    tree_build(&tr);
    int rc;
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_TEXT, &rc);
    ck_assert_int_eq(rc, 0);
    char *line = line_with(text, "root-acct");
    ck_assert_msg(line != NULL, "no root-acct in:\n%s", text);
    ck_assert_msg(has_number(line, memq_account_id(tr.root)), "no id in \"%s\"", line);
    ck_assert_msg(has_number(line, 123457), "no claimed bytes in \"%s\"", line);
    free(line);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_text_dump_indents_children_under_their_parents)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_TEXT, NULL);
    const char *root = strstr(text, "root-acct");
    const char *child = strstr(text, "child-acct");
    const char *grandchild = strstr(text, "grandchild-acct");
    bool all_there = root && child && grandchild;
    bool in_order = all_there && root < child && child < grandchild;
    ck_assert(all_there);
    ck_assert(in_order);
    char *l1 = line_with(text, "root-acct");
    char *l2 = line_with(text, "child-acct");
    char *l3 = line_with(text, "grandchild-acct");
    ck_assert_uint_lt(indentation(l1), indentation(l2));
    ck_assert_uint_lt(indentation(l2), indentation(l3));
    free(l1);
    free(l2);
    free(l3);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_text_dump_shows_an_account_with_two_parents_once_listing_both)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_TEXT, NULL);
    int lines = count_lines_with(text, "shared-child");
    char parents[64];
    snprintf(parents, sizeof parents, "parents %llu %llu",
             (unsigned long long)memq_account_id(tr.root),
             (unsigned long long)memq_account_id(tr.other));
    int listed = count_lines_with(text, parents);
    free(text);
    ck_assert_int_eq(lines, 1);
    ck_assert_int_eq(listed, 1);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_text_dump_keeps_a_name_with_a_newline_on_one_line)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_account_set_name(a, "evil\nforged line"), 0);
    char *text = dump_to_string(w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_msg(strstr(text, "evil\nforged line") == NULL,
                  "a name's newline forges a line in the text dump:\n%s", text);
    ck_assert_ptr_nonnull(strstr(text, "evil"));
    free(text);
    world_teardown(&w);
}
END_TEST

START_TEST(test_text_dump_shows_the_tracker_statistics)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert(has_number(text, memq_tracker_used(tr.w.t)));
    ck_assert(has_number(text, 10 * MIB));
    free(text);
    world_teardown(&tr.w);
}
END_TEST

/* ======================================================================
 * memq_tracker_dump: JSON
 * ====================================================================== */

START_TEST(test_json_dump_is_valid_json)
{
    tree tr;
    tree_build(&tr);
    int rc;
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_JSON, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(json_valid(text, NULL, NULL), "invalid JSON:\n%s", text);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_json_dump_of_an_empty_tracker_is_valid_json)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    char *text = dump_to_string(w.t, MEMQ_DUMP_JSON, NULL);
    ck_assert_msg(json_valid(text, NULL, NULL), "invalid JSON:\n%s", text);
    char *compact = json_compact(text);
    ck_assert_ptr_nonnull(strstr(compact, "\"accounts\":[]"));
    free(compact);
    free(text);
    world_teardown(&w);
}
END_TEST

START_TEST(test_json_dump_is_one_object_with_tracker_and_accounts)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_JSON, NULL);
    char *compact = json_compact(text);
    ck_assert_msg(strncmp(compact, "{\"tracker\":{", 12) == 0, "starts: %.40s", compact);
    ck_assert_ptr_nonnull(strstr(compact, "},\"accounts\":["));
    free(compact);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_json_dump_reports_tracker_used_and_max)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_JSON, NULL);
    char *compact = json_compact(text);
    char want[64];
    snprintf(want, sizeof want, "\"used\":%zu", memq_tracker_used(tr.w.t));
    ck_assert_msg(strstr(compact, want) != NULL, "no %s in %s", want, compact);
    snprintf(want, sizeof want, "\"max\":%zu", 10 * MIB);
    ck_assert_msg(strstr(compact, want) != NULL, "no %s in %s", want, compact);
    free(compact);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_json_dump_lists_every_account_by_id_and_name)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_JSON, NULL);
    char *compact = json_compact(text);
    memq_account *all[] = { tr.root, tr.child, tr.grandchild, tr.other, tr.shared };
    for (size_t i = 0; i < 5; i++) {
        char want[64];
        snprintf(want, sizeof want, "\"id\":%" PRIu64, memq_account_id(all[i]));
        ck_assert_msg(strstr(compact, want) != NULL, "no %s in %s", want, compact);
    }
    bool found;
    ck_assert(json_valid(text, "grandchild-acct", &found));
    ck_assert(found);
    ck_assert(has_number(compact, 123457));
    free(compact);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_json_dump_lists_parents_by_id)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_JSON, NULL);
    char *compact = json_compact(text);
    uint64_t root = memq_account_id(tr.root), other = memq_account_id(tr.other);
    char one[64], two_a[64], two_b[64];
    snprintf(one, sizeof one, "\"parents\":[%" PRIu64 "]", memq_account_id(tr.child));
    snprintf(two_a, sizeof two_a, "\"parents\":[%" PRIu64 ",%" PRIu64 "]", root, other);
    snprintf(two_b, sizeof two_b, "\"parents\":[%" PRIu64 ",%" PRIu64 "]", other, root);
    ck_assert_msg(strstr(compact, one) != NULL, "no %s in %s", one, compact);
    ck_assert_msg(strstr(compact, two_a) || strstr(compact, two_b), "no %s in %s", two_a,
                  compact);
    ck_assert_ptr_nonnull(strstr(compact, "\"parents\":[]")); /* the roots */
    free(compact);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_json_dump_escapes_quotes_and_newlines_in_names)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_account_set_name(a, EVIL_NAME), 0);
    char *text = dump_to_string(w.t, MEMQ_DUMP_JSON, NULL);
    bool found = false;
    ck_assert_msg(json_valid(text, EVIL_NAME, &found), "invalid JSON:\n%s", text);
    ck_assert_msg(found, "the name does not come back unescaped:\n%s", text);
    free(text);
    world_teardown(&w);
}
END_TEST

/* A tab or an escape character in a name is no valid JSON as it is:
 * control characters are written as \u00XX and read back the same. */
START_TEST(test_json_dump_escapes_control_characters_in_names)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    const char *name = "tab\there\x1b[0m";
    ck_assert_int_eq(memq_account_set_name(a, name), 0);
    char *text = dump_to_string(w.t, MEMQ_DUMP_JSON, NULL);
    bool found = false;
    ck_assert_msg(json_valid(text, name, &found), "invalid JSON:\n%s", text);
    ck_assert_msg(found, "the name does not come back unescaped:\n%s", text);
    ck_assert_ptr_nonnull(strstr(text, "tab\\u0009here\\u001b[0m"));
    free(text);
    world_teardown(&w);
}
END_TEST

/* ======================================================================
 * memq_tracker_dump: PROMETHEUS
 * ====================================================================== */

START_TEST(test_prometheus_dump_is_valid_exposition_format)
{
    tree tr;
    tree_build(&tr);
    int rc;
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_PROMETHEUS, &rc);
    ck_assert_int_eq(rc, 0);
    prom_report r = prom_check(text, NULL);
    ck_assert_msg(r.bad_line == 0, "line %d is malformed:\n%s", r.bad_line, text);
    ck_assert_int_gt(r.samples, 0);
    ck_assert(text[0] != '\0' && text[strlen(text) - 1] == '\n');
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_prometheus_metric_names_start_with_memq)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_PROMETHEUS, NULL);
    prom_report r = prom_check(text, NULL);
    ck_assert_int_eq(r.non_memq_samples, 0);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_prometheus_dump_has_one_used_sample_per_account)
{
    tree tr;
    tree_build(&tr);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_PROMETHEUS, NULL);
    prom_report r = prom_check(text, NULL);
    ck_assert_int_eq(r.used_samples, 5);
    ck_assert(r.used_typed);
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_prometheus_dump_escapes_label_values)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    fake_part fp;
    memq_account *a = world_holder(&w, &fp, 1, NULL, AT(1), 4321);
    ck_assert_int_eq(memq_account_set_name(a, EVIL_NAME), 0);
    char *text = dump_to_string(w.t, MEMQ_DUMP_PROMETHEUS, NULL);
    prom_report r = prom_check(text, EVIL_NAME);
    ck_assert_msg(r.bad_line == 0, "line %d is malformed:\n%s", r.bad_line, text);
    ck_assert_msg(r.target_found, "the name is not a label value:\n%s", text);
    ck_assert(r.target_value == 4321.0);
    free(text);
    world_teardown(&w);
}
END_TEST

/* ======================================================================
 * memq_tracker_dump: arguments and files
 * ====================================================================== */

START_TEST(test_dump_rejects_null_arguments_and_unknown_formats)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(memq_tracker_dump(NULL, f, MEMQ_DUMP_TEXT), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_dump(w.t, NULL, MEMQ_DUMP_TEXT), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_dump(w.t, f, 3), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_dump(w.t, f, -1), MEMQ_EINVAL);
    ck_assert_int_eq(ftell(f), 0);
    fclose(f);
    world_teardown(&w);
}
END_TEST

START_TEST(test_dump_writes_to_a_tmpfile)
{
    tree tr;
    tree_build(&tr);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(memq_tracker_dump(tr.w.t, f, MEMQ_DUMP_JSON), 0);
    long size = ftell(f);
    ck_assert_int_gt(size, 0);
    rewind(f);
    char *text = calloc(1, (size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_uint_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    ck_assert(json_valid(text, NULL, NULL));
    ck_assert_ptr_nonnull(strstr(text, "other-root"));
    free(text);
    world_teardown(&tr.w);
}
END_TEST

START_TEST(test_dump_reports_write_errors)
{
    tree tr;
    tree_build(&tr);
    for (int format = MEMQ_DUMP_TEXT; format <= MEMQ_DUMP_PROMETHEUS; format++) {
        FILE *f = fopen("/dev/full", "w");
        ck_assert_ptr_nonnull(f);
        setvbuf(f, NULL, _IONBF, 0); /* every write reaches the device */
        ck_assert_msg(memq_tracker_dump(tr.w.t, f, format) == MEMQ_ESYSTEM, "format %d",
                      format);
        fclose(f);
    }
    world_teardown(&tr.w);
}
END_TEST

/* ======================================================================
 * What used is made of, and the machine's figures, in every format
 * ====================================================================== */

START_TEST(test_stats_split_used_into_claimed_cached_and_slack)
{
    fake_world w;
    world_init(&w, 64 * MIB, 0);
    w.cfg.cache_max = 16 * KIB;
    world_start(&w);
    fake_part a, b;
    world_holder(&w, &a, 1, NULL, world_now(&w), 1000);
    world_holder(&w, &b, 2, NULL, world_now(&w), 3000);
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.claimed, 4000);
    ck_assert_uint_gt(st.cached, 0);
    ck_assert_uint_le(st.cached, 2 * 16 * KIB);
    ck_assert_uint_eq(st.slack, 0);
    ck_assert_uint_eq(st.used, st.claimed + st.cached + st.slack);
    world_teardown(&w);
}
END_TEST

START_TEST(test_every_dump_shows_what_used_is_made_of_and_the_machines_figures)
{
    tree tr;
    tree_build(&tr);
    (void)memq_tracker_pressure(tr.w.t);
    memq_stats st = world_stats(&tr.w);
    char *text = dump_to_string(tr.w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_ptr_nonnull(strstr(text, "claimed"));
    ck_assert_ptr_nonnull(strstr(text, "cached"));
    ck_assert_ptr_nonnull(strstr(text, "untracked"));
    ck_assert_ptr_nonnull(strstr(text, "pressure events 1"));
    ck_assert(has_number(text, st.claimed));
    free(text);
    char *json = dump_to_string(tr.w.t, MEMQ_DUMP_JSON, NULL);
    ck_assert_msg(json_valid(json, NULL, NULL), "invalid JSON:\n%s", json);
    ck_assert_ptr_nonnull(strstr(json, "\"cached\":"));
    ck_assert_ptr_nonnull(strstr(json, "\"slack\":0"));
    ck_assert_ptr_nonnull(strstr(json, "\"rss\":"));
    ck_assert_ptr_nonnull(strstr(json, "\"pressure_events\":1"));
    ck_assert_ptr_nonnull(strstr(json, "\"watch_source\":\"none\""));
    free(json);
    char *prom = dump_to_string(tr.w.t, MEMQ_DUMP_PROMETHEUS, NULL);
    ck_assert_ptr_nonnull(strstr(prom, "\nmemq_cached_bytes "));
    ck_assert_ptr_nonnull(strstr(prom, "\nmemq_rss_bytes "));
    ck_assert_ptr_nonnull(strstr(prom, "\nmemq_untracked_bytes "));
    ck_assert_ptr_nonnull(strstr(prom, "\nmemq_pressure_events_total 1\n"));
    ck_assert_ptr_nonnull(strstr(prom, "memq_pressure_watch{source=\"none\"} 1"));
    free(prom);
    world_teardown(&tr.w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stats");
    TCase *tc;

    tc = test_case("stats");
    tcase_add_test(tc, test_stats_report_used_and_peak);
    tcase_add_test(tc, test_stats_peak_survives_reclamation);
    tcase_add_test(tc, test_stats_used_agrees_with_tracker_used);
    tcase_add_test(tc, test_stats_report_the_marks_in_force);
    tcase_add_test(tc, test_stats_count_accounts_and_participants);
    tcase_add_test(tc, test_stats_count_episodes);
    tcase_add_test(tc, test_stats_count_accounts_reclaimed);
    tcase_add_test(tc, test_stats_count_partial_reclaims);
    tcase_add_test(tc, test_stats_count_collapsed_and_timed_out_accounts);
    tcase_add_test(tc, test_stats_measure_bytes_reclaimed);
    tcase_add_test(tc, test_stats_count_collapsed_usage_as_bytes_reclaimed);
    tcase_add_test(tc, test_stats_do_not_count_the_owners_own_releases_as_reclaimed);
    tcase_add_test(tc, test_stats_measure_time_spent_reclaiming);
    tcase_add_test(tc, test_stats_measure_the_longest_episode_from_the_crossing);
    tcase_add_test(tc, test_stats_count_unreclaimable_events);
    tcase_add_test(tc, test_stats_count_bad_reclaim_done_status_as_misuse);
    tcase_add_test(tc, test_stats_count_each_misuse_once);
    tcase_add_test(tc, test_stats_are_zero_for_a_new_tracker);
    tcase_add_test(tc, test_stats_of_a_null_tracker_are_zero);
    tcase_add_test(tc, test_stats_ignore_a_null_output);
    suite_add_tcase(s, tc);

    tc = test_case("dump_text");
    tcase_add_test(tc, test_text_dump_shows_names_ids_and_claimed_bytes);
    tcase_add_test(tc, test_text_dump_indents_children_under_their_parents);
    tcase_add_test(tc, test_text_dump_shows_an_account_with_two_parents_once_listing_both);
    tcase_add_test(tc, test_text_dump_keeps_a_name_with_a_newline_on_one_line);
    tcase_add_test(tc, test_text_dump_shows_the_tracker_statistics);
    suite_add_tcase(s, tc);

    tc = test_case("dump_json");
    tcase_add_test(tc, test_json_dump_is_valid_json);
    tcase_add_test(tc, test_stats_split_used_into_claimed_cached_and_slack);
    tcase_add_test(tc, test_every_dump_shows_what_used_is_made_of_and_the_machines_figures);
    tcase_add_test(tc, test_json_dump_of_an_empty_tracker_is_valid_json);
    tcase_add_test(tc, test_json_dump_is_one_object_with_tracker_and_accounts);
    tcase_add_test(tc, test_json_dump_reports_tracker_used_and_max);
    tcase_add_test(tc, test_json_dump_lists_every_account_by_id_and_name);
    tcase_add_test(tc, test_json_dump_lists_parents_by_id);
    tcase_add_test(tc, test_json_dump_escapes_quotes_and_newlines_in_names);
    tcase_add_test(tc, test_json_dump_escapes_control_characters_in_names);
    suite_add_tcase(s, tc);

    tc = test_case("dump_prometheus");
    tcase_add_test(tc, test_prometheus_dump_is_valid_exposition_format);
    tcase_add_test(tc, test_prometheus_metric_names_start_with_memq);
    tcase_add_test(tc, test_prometheus_dump_has_one_used_sample_per_account);
    tcase_add_test(tc, test_prometheus_dump_escapes_label_values);
    suite_add_tcase(s, tc);

    tc = test_case("dump_files");
    tcase_add_test(tc, test_dump_rejects_null_arguments_and_unknown_formats);
    tcase_add_test(tc, test_dump_writes_to_a_tmpfile);
    tcase_add_test(tc, test_dump_reports_write_errors);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
