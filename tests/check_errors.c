/*
 * check_errors.c - every public function against each bad input it can
 * receive, and the documented result.  Each row of doc/errors.md is one
 * test here, named by the id in the row's last column; a test checks that
 * the two lists are the same.
 *
 * Conventions checked throughout (include/memquota.h): a function that
 * fails changes nothing and leaves its out-parameters untouched; NULL
 * handles get MEMQ_EINVAL or are ignored by functions returning void.
 */
#include <check.h>
#include <memquota.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The most claims may take a tracker's total to (memq_claim(3)). */
#define TOTAL_MAX (SIZE_MAX - SIZE_MAX / 256)

#define KIB ((size_t)1024)
#define MIB (KIB * 1024)

/* ======================================================================
 * Fixture: a tracker, an account, a participation
 * ====================================================================== */

static int log_calls;
static int misuse_logs; /* lines saying "misuse" */
static char last_log[512];

static void on_log(void *ctx, int level, const char *msg)
{
    (void)ctx;
    (void)level;
    log_calls++;
    misuse_logs += strstr(msg, "misuse") != NULL;
    snprintf(last_log, sizeof last_log, "%s", msg);
}

static bool no_data(void *self, memq_time *when)
{
    (void)self;
    (void)when;
    return false;
}

static memq_reclaim_status pending_answer(void *self, const memq_reclaim_request *req)
{
    (void)self;
    (void)req;
    return MEMQ_RECLAIM_PENDING;
}

static const memq_participant_ops ops = {no_data, pending_answer};

typedef struct fixture {
    memq_config cfg;
    memq_tracker *t;
    memq_account *a;
    memq_participation *p;
} fixture;

static fixture fx;
static void *const SENTINEL = (void *)0x5e5e;

static void cfg_valid(memq_config *cfg)
{
    memq_config_init(cfg);
    cfg->max = 1 * MIB;
    cfg->low_water = 512 * KIB;
    cfg->cache_max = 0;
    cfg->log = on_log;
    cfg->reclaim_budget_us = 10 * 1000 * 1000; /* no timing in these rows */
}

static void setup(void)
{
    memset(&fx, 0, sizeof fx);
    log_calls = 0;
    misuse_logs = 0;
    last_log[0] = '\0';
    cfg_valid(&fx.cfg);
    ck_assert_int_eq(memq_tracker_new(&fx.t, &fx.cfg), 0);
    ck_assert_int_eq(memq_account_new(fx.t, NULL, &fx.a), 0);
    ck_assert_int_eq(memq_participant_register(fx.a, &ops, NULL, &fx.p), 0);
}

static void teardown(void)
{
    memq_participation_free(fx.p);
    memq_account_unref(fx.a);
    memq_tracker_free(fx.t);
}

static memq_stats stats(void)
{
    memq_stats st;
    memq_tracker_stats(fx.t, &st);
    return st;
}

static memq_account *new_account(memq_account *parent)
{
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(fx.t, parent, &a), 0);
    return a;
}

/* An account closed by its last unref, kept alive by a participation. */
static memq_account *closed_account(memq_participation **pp)
{
    memq_account *a = new_account(NULL);
    ck_assert_int_eq(memq_participant_register(a, &ops, NULL, pp), 0);
    memq_account_ref(a);
    memq_account_unref(a);
    memq_account_unref(a); /* last: closes it, the participation pins it */
    ck_assert(memq_account_closed(a));
    return a;
}

/* ======================================================================
 * Rows
 * ====================================================================== */

#define ROW(id) static void id(void)

/* ---- errors, version, time ---- */
ROW(strerror_unknown_code)
{
    ck_assert_str_eq(memq_strerror(-1000), "unknown error");
    ck_assert_str_eq(memq_strerror(12345), "unknown error");
    ck_assert_str_eq(memq_strerror(0), "success");
    for (int e = MEMQ_ESYSTEM; e <= MEMQ_EINVAL; e++)
        ck_assert_str_ne(memq_strerror(e), "unknown error");
}

ROW(version_matches_header)
{
    ck_assert_uint_eq(memq_version(), MEMQ_VERSION_NUMBER);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", MEMQ_VERSION_MAJOR, MEMQ_VERSION_MINOR,
             MEMQ_VERSION_PATCH);
    ck_assert_str_eq(memq_version_string(), want);
}

/* ---- memq_parse_size ---- */
static void parse_fails(const char *text, int rc)
{
    size_t out = 77;
    ck_assert_int_eq(memq_parse_size(text, &out), rc);
    ck_assert_uint_eq(out, 77);
}

ROW(parse_size_null_text) { parse_fails(NULL, MEMQ_EINVAL); }
ROW(parse_size_null_out) { ck_assert_int_eq(memq_parse_size("1", NULL), MEMQ_EINVAL); }
ROW(parse_size_empty)
{
    parse_fails("", MEMQ_EINVAL);
    parse_fails("   ", MEMQ_EINVAL);
}
ROW(parse_size_sign)
{
    parse_fails("-1", MEMQ_EINVAL);
    parse_fails("+1", MEMQ_EINVAL);
}
ROW(parse_size_missing_number)
{
    parse_fails("KiB", MEMQ_EINVAL);
    parse_fails(".5 MB", MEMQ_EINVAL);
    parse_fails("1.", MEMQ_EINVAL);
}
ROW(parse_size_unknown_unit)
{
    parse_fails("1 XB", MEMQ_EINVAL);
    parse_fails("1 KiBB", MEMQ_EINVAL);
    parse_fails("1 PiB", MEMQ_EINVAL);
}
ROW(parse_size_trailing_garbage)
{
    parse_fails("12 MB x", MEMQ_EINVAL);
    parse_fails("1 2", MEMQ_EINVAL);
    parse_fails("0x10", MEMQ_EINVAL);
}
ROW(parse_size_overflow)
{
    parse_fails("99999999999999999999999", MEMQ_EOVERFLOW);
    parse_fails("16777216 TiB", MEMQ_EOVERFLOW);
    parse_fails("18446744073709551616", MEMQ_EOVERFLOW);
}

/* ---- configuration ---- */
ROW(config_init_null) { memq_config_init(NULL); }

static void config_rejected(const memq_config *cfg, const char *field)
{
    char buf[256] = "";
    ck_assert_int_eq(memq_config_check(cfg, buf, sizeof buf), MEMQ_EINVAL);
    ck_assert_msg(strncmp(buf, field, strlen(field)) == 0, "message \"%s\" does not name %s",
                  buf, field);
    memq_tracker *t = SENTINEL;
    int before = log_calls;
    ck_assert_int_eq(memq_tracker_new(&t, cfg), MEMQ_EINVAL);
    ck_assert_ptr_eq(t, SENTINEL);
    if (cfg->log == on_log) {
        ck_assert_int_eq(log_calls, before + 1);
        ck_assert_msg(strncmp(last_log, field, strlen(field)) == 0, "log \"%s\"", last_log);
    }
}

ROW(config_check_null)
{
    char buf[64] = "x";
    ck_assert_int_eq(memq_config_check(NULL, buf, sizeof buf), MEMQ_EINVAL);
    ck_assert_int_eq(memq_config_check(NULL, NULL, 0), MEMQ_EINVAL);
}
ROW(config_low_water_without_max)
{
    memq_config c;
    cfg_valid(&c);
    c.max = MEMQ_AUTO;
    config_rejected(&c, "low_water");
}
ROW(config_low_water_not_below_max)
{
    memq_config c;
    cfg_valid(&c);
    c.low_water = c.max;
    config_rejected(&c, "low_water");
}
ROW(config_band_smaller_than_four_caches)
{
    memq_config c;
    cfg_valid(&c);
    c.cache_max = (c.max - c.low_water) / 4 + 1;
    config_rejected(&c, "cache_max");
    c.cache_max = SIZE_MAX;
    config_rejected(&c, "cache_max");
}
ROW(config_timeout_zero)
{
    memq_config c;
    cfg_valid(&c);
    c.reclaim_timeout_ms = 0;
    config_rejected(&c, "reclaim_timeout_ms");
}
ROW(config_budget_zero)
{
    memq_config c;
    cfg_valid(&c);
    c.reclaim_budget_us = 0;
    config_rejected(&c, "reclaim_budget_us");
}
ROW(config_unknown_mode)
{
    memq_config c;
    cfg_valid(&c);
    c.reclaim_mode = (memq_reclaim_mode)7;
    config_rejected(&c, "reclaim_mode");
}
ROW(config_unlimited_with_low_water)
{
    memq_config c;
    cfg_valid(&c);
    c.max = MEMQ_UNLIMITED;
    config_rejected(&c, "low_water");
}
ROW(config_pressure_interval_zero)
{
    memq_config c;
    cfg_valid(&c);
    c.pressure_interval_ms = 0;
    config_rejected(&c, "pressure_interval_ms");
}
ROW(config_pressure_window_out_of_range)
{
    memq_config c;
    cfg_valid(&c);
    c.pressure_window_us = 499999;
    config_rejected(&c, "pressure_window_us");
    c.pressure_window_us = 10000001;
    config_rejected(&c, "pressure_window_us");
}
ROW(config_pressure_stall_out_of_range)
{
    memq_config c;
    cfg_valid(&c);
    c.pressure_stall_us = 0;
    config_rejected(&c, "pressure_stall_us");
    c.pressure_stall_us = c.pressure_window_us + 1;
    config_rejected(&c, "pressure_stall_us");
}
ROW(config_pressure_low_water_above_low_water)
{
    memq_config c;
    cfg_valid(&c);
    c.pressure_low_water = c.low_water + 1;
    config_rejected(&c, "pressure_low_water");
}
ROW(config_unlimited_with_pressure_or_rss)
{
    memq_config c;
    cfg_valid(&c);
    c.max = MEMQ_UNLIMITED;
    c.low_water = 0;
    c.pressure_low_water = 1;
    config_rejected(&c, "pressure_low_water");
    c.pressure_low_water = 0;
    c.rss_max = 1 * MIB;
    config_rejected(&c, "rss_max");
}
ROW(config_check_message_truncated)
{
    memq_config c;
    cfg_valid(&c);
    c.low_water = c.max;
    char buf[8];
    memset(buf, 'x', sizeof buf);
    ck_assert_int_eq(memq_config_check(&c, buf, 5), MEMQ_EINVAL);
    ck_assert_uint_eq(strlen(buf), 4);
    ck_assert_int_eq(buf[5], 'x'); /* nothing written past len */
    ck_assert_int_eq(memq_config_check(&c, buf, 0), MEMQ_EINVAL);
}

/* ---- tracker ---- */
ROW(tracker_new_null_out) { ck_assert_int_eq(memq_tracker_new(NULL, &fx.cfg), MEMQ_EINVAL); }
ROW(tracker_new_null_config)
{
    memq_tracker *t = SENTINEL;
    ck_assert_int_eq(memq_tracker_new(&t, NULL), MEMQ_EINVAL);
    ck_assert_ptr_eq(t, SENTINEL);
}
ROW(tracker_free_null) { memq_tracker_free(NULL); }
ROW(tracker_reconfigure_null)
{
    ck_assert_int_eq(memq_tracker_reconfigure(NULL, &fx.cfg), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_reconfigure(fx.t, NULL), MEMQ_EINVAL);
}
ROW(tracker_reconfigure_rejected_changes_nothing)
{
    memq_config c = fx.cfg;
    c.low_water = c.max;
    ck_assert_int_eq(memq_tracker_reconfigure(fx.t, &c), MEMQ_EINVAL);
    memq_stats st = stats();
    ck_assert_uint_eq(st.max, fx.cfg.max);
    ck_assert_uint_eq(st.low_water, fx.cfg.low_water);
}
ROW(tracker_reconfigure_mode_change)
{
    memq_config c = fx.cfg;
    c.reclaim_mode = MEMQ_RECLAIM_THREAD;
    ck_assert_int_eq(memq_tracker_reconfigure(fx.t, &c), MEMQ_EINVAL);
}
ROW(tracker_reconfigure_to_unlimited)
{
    memq_config c = fx.cfg;
    c.max = MEMQ_UNLIMITED;
    c.low_water = 0;
    ck_assert_int_eq(memq_tracker_reconfigure(fx.t, &c), MEMQ_EINVAL);
    ck_assert_uint_eq(stats().max, fx.cfg.max);
}
static memq_time other_clock(void *ctx)
{
    (void)ctx;
    return 1;
}
ROW(tracker_reconfigure_clock_change)
{
    memq_config c = fx.cfg;
    c.clock = other_clock;
    ck_assert_int_eq(memq_tracker_reconfigure(fx.t, &c), MEMQ_EINVAL);
    ck_assert_uint_ne(memq_tracker_now(fx.t), 1);
}
/* What was set up at creation: the watcher (and its trigger) and the
 * tracker's pool.  Each change is refused, naming the field. */
ROW(tracker_reconfigure_creation_fields)
{
    for (int field = 0; field < 5; field++) {
        memq_config c = fx.cfg;
        const char *name = field < 3 ? "pressure_watch" : "pool_reserve, pool_debug";
        switch (field) {
        case 0: c.pressure_watch = true; break;
        case 1: c.pressure_stall_us = 100000; break;
        case 2: c.pressure_window_us = 4000000; break;
        case 3: c.pool_reserve = 1 * MIB; break;
        default: c.pool_debug = true; break;
        }
        c.low_water = 256 * KIB; /* would apply if the change were accepted */
        int before = log_calls;
        ck_assert_int_eq(memq_tracker_reconfigure(fx.t, &c), MEMQ_EINVAL);
        ck_assert_int_eq(log_calls, before + 1);
        ck_assert_msg(strncmp(last_log, name, strlen(name)) == 0, "log \"%s\"", last_log);
        memq_config now;
        ck_assert_int_eq(memq_tracker_config(fx.t, &now), 0);
        ck_assert_uint_eq(now.low_water, fx.cfg.low_water);
        ck_assert(!now.pressure_watch);
        ck_assert_uint_eq(now.pool_reserve, fx.cfg.pool_reserve);
    }
}
ROW(tracker_reconfigure_after_shutdown)
{
    memq_tracker *t = fx.t;
    memq_tracker_free(fx.t); /* fx.a keeps its memory */
    fx.t = NULL;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &fx.cfg), MEMQ_ESHUTDOWN);
}
ROW(tracker_reclaim_after_shutdown)
{
    memq_tracker *t = fx.t;
    memq_tracker_free(fx.t);
    fx.t = NULL;
    ck_assert_int_eq(memq_tracker_reclaim(t), MEMQ_ESHUTDOWN);
}
ROW(tracker_free_twice)
{
    memq_tracker *t = fx.t;
    memq_tracker_free(fx.t);
    fx.t = NULL;
    int before = log_calls;
    memq_tracker_free(t); /* fx.a keeps its memory: seen, counted, ignored */
    ck_assert_int_eq(log_calls, before + 1);
    ck_assert_ptr_nonnull(strstr(last_log, "memq_tracker_free called twice"));
    memq_tracker_free(t);
    ck_assert_int_eq(log_calls, before + 1); /* only the first misuse is logged */
}
ROW(tracker_config_null)
{
    memq_config out;
    memset(&out, 0x5e, sizeof out);
    memq_config untouched = out;
    ck_assert_int_eq(memq_tracker_config(NULL, &out), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_config(fx.t, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memcmp(&out, &untouched, sizeof out), 0);
}
ROW(tracker_queries_null)
{
    ck_assert_uint_eq(memq_tracker_used(NULL), 0);
    ck_assert_uint_eq(memq_tracker_now(NULL), 0);
    ck_assert_int_eq(memq_tracker_reclaim(NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_fd(NULL), MEMQ_EINVAL);
}
ROW(tracker_stats_null)
{
    memq_stats st;
    memset(&st, 0xff, sizeof st);
    memq_tracker_stats(NULL, &st);
    memq_stats zero;
    memset(&zero, 0, sizeof zero);
    ck_assert_int_eq(memcmp(&st, &zero, sizeof st), 0);
    memq_tracker_stats(fx.t, NULL);
}
ROW(tracker_dump_null)
{
    FILE *f = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(memq_tracker_dump(NULL, f, MEMQ_DUMP_TEXT), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_dump(fx.t, NULL, MEMQ_DUMP_TEXT), MEMQ_EINVAL);
    fclose(f);
}
ROW(tracker_dump_unknown_format)
{
    FILE *f = fopen("/dev/null", "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(memq_tracker_dump(fx.t, f, 3), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_dump(fx.t, f, -1), MEMQ_EINVAL);
    fclose(f);
}
ROW(tracker_dump_write_fails)
{
    FILE *f = fopen("/dev/full", "w");
    if (f == NULL)
        return; /* no /dev/full here */
    setvbuf(f, NULL, _IONBF, 0);
    ck_assert_int_eq(memq_tracker_dump(fx.t, f, MEMQ_DUMP_JSON), MEMQ_ESYSTEM);
    fclose(f);
}
/* ---- accounts ---- */
ROW(account_new_null)
{
    memq_account *a = SENTINEL;
    ck_assert_int_eq(memq_account_new(NULL, NULL, &a), MEMQ_EINVAL);
    ck_assert_ptr_eq(a, SENTINEL);
    ck_assert_int_eq(memq_account_new(fx.t, NULL, NULL), MEMQ_EINVAL);
}
ROW(account_new_parent_of_other_tracker)
{
    memq_tracker *t2;
    ck_assert_int_eq(memq_tracker_new(&t2, &fx.cfg), 0);
    memq_account *a = SENTINEL;
    ck_assert_int_eq(memq_account_new(t2, fx.a, &a), MEMQ_EINVAL);
    ck_assert_ptr_eq(a, SENTINEL);
    ck_assert_uint_eq(stats().accounts, 1);
    memq_tracker_free(t2);
}
ROW(account_new_closed_parent)
{
    memq_participation *p;
    memq_account *closed = closed_account(&p);
    memq_account *a = SENTINEL;
    ck_assert_int_eq(memq_account_new(fx.t, closed, &a), MEMQ_ECLOSED);
    ck_assert_ptr_eq(a, SENTINEL);
    memq_participation_free(p);
}
ROW(account_new_after_shutdown)
{
    memq_tracker *t = fx.t;
    memq_tracker_free(fx.t); /* fx.a keeps its memory */
    fx.t = NULL;
    memq_account *a = SENTINEL;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), MEMQ_ESHUTDOWN);
    ck_assert_int_eq(memq_account_new(t, fx.a, &a), MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(a, SENTINEL);
}
ROW(add_parent_null)
{
    ck_assert_int_eq(memq_account_add_parent(NULL, fx.a), MEMQ_EINVAL);
    ck_assert_int_eq(memq_account_add_parent(fx.a, NULL), MEMQ_EINVAL);
}
ROW(add_parent_other_tracker)
{
    memq_tracker *t2;
    memq_account *b;
    ck_assert_int_eq(memq_tracker_new(&t2, &fx.cfg), 0);
    ck_assert_int_eq(memq_account_new(t2, NULL, &b), 0);
    ck_assert_int_eq(memq_account_add_parent(fx.a, b), MEMQ_EINVAL);
    ck_assert_int_eq(memq_account_add_parent(b, fx.a), MEMQ_EINVAL);
    memq_account_unref(b);
    memq_tracker_free(t2);
}
ROW(add_parent_itself) { ck_assert_int_eq(memq_account_add_parent(fx.a, fx.a), MEMQ_ECYCLE); }
ROW(add_parent_descendant)
{
    memq_account *child = new_account(fx.a), *grandchild = new_account(child);
    ck_assert_int_eq(memq_account_add_parent(fx.a, grandchild), MEMQ_ECYCLE);
    ck_assert_int_eq(memq_account_add_parent(fx.a, child), MEMQ_ECYCLE);
    memq_account_unref(grandchild);
    memq_account_unref(child);
}
ROW(add_parent_twice)
{
    memq_account *b = new_account(NULL);
    ck_assert_int_eq(memq_account_add_parent(b, fx.a), 0);
    ck_assert_int_eq(memq_account_add_parent(b, fx.a), MEMQ_EEXIST);
    memq_account_unref(b);
}
ROW(add_parent_closed)
{
    memq_participation *p;
    memq_account *closed = closed_account(&p);
    ck_assert_int_eq(memq_account_add_parent(fx.a, closed), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_account_add_parent(closed, fx.a), MEMQ_ECLOSED);
    memq_participation_free(p);
}
ROW(add_parent_after_shutdown)
{
    memq_account *b = new_account(NULL);
    memq_tracker_free(fx.t);
    fx.t = NULL;
    ck_assert_int_eq(memq_account_add_parent(b, fx.a), MEMQ_ESHUTDOWN);
    memq_account_unref(b);
}
ROW(account_ref_unref_null)
{
    ck_assert_ptr_null(memq_account_ref(NULL));
    memq_account_unref(NULL);
}
ROW(account_unref_without_references)
{
    memq_participation *p;
    memq_account *closed = closed_account(&p);
    uint64_t misuse = stats().misuse_events;
    memq_account_unref(closed); /* no reference left: misuse, ignored */
    ck_assert_uint_eq(stats().misuse_events, misuse + 1);
    ck_assert(memq_account_closed(closed));
    memq_participation_free(p);
}
ROW(account_id_null) { ck_assert_uint_eq(memq_account_id(NULL), 0); }
ROW(account_find_null_unknown_closed)
{
    ck_assert_ptr_null(memq_account_find(NULL, memq_account_id(fx.a)));
    ck_assert_ptr_null(memq_account_find(fx.t, 0));
    ck_assert_ptr_null(memq_account_find(fx.t, memq_account_id(fx.a) + 1000));
    memq_participation *p;
    memq_account *closed = closed_account(&p);
    ck_assert_ptr_null(memq_account_find(fx.t, memq_account_id(closed)));
    memq_participation_free(p);
}
ROW(account_set_name_null)
{
    ck_assert_int_eq(memq_account_set_name(NULL, "x"), MEMQ_EINVAL);
    ck_assert_int_eq(memq_account_set_name(fx.a, "x"), 0);
    ck_assert_int_eq(memq_account_set_name(fx.a, NULL), 0); /* clears it */
}
ROW(account_queries_null)
{
    ck_assert_ptr_null(memq_account_tracker(NULL));
    ck_assert_uint_eq(memq_account_used(NULL), 0);
    ck_assert(memq_account_closed(NULL));
}
ROW(account_used_closed)
{
    memq_account *a = new_account(NULL);
    memq_participation *p;
    ck_assert_int_eq(memq_participant_register(a, &ops, NULL, &p), 0);
    ck_assert_int_eq(memq_claim(p, 100), 0);
    memq_account_ref(a);
    memq_account_unref(a);
    memq_account_unref(a);
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_uint_eq(memq_tracker_used(fx.t), 0);
    memq_participation_free(p);
}

/* ---- participants ---- */
static const memq_participant_ops no_oldest = {NULL, pending_answer};
static const memq_participant_ops no_reclaim = {no_data, NULL};

ROW(register_null)
{
    memq_participation *p = SENTINEL;
    ck_assert_int_eq(memq_participant_register(NULL, &ops, NULL, &p), MEMQ_EINVAL);
    ck_assert_int_eq(memq_participant_register(fx.a, NULL, NULL, &p), MEMQ_EINVAL);
    ck_assert_int_eq(memq_participant_register(fx.a, &ops, NULL, NULL), MEMQ_EINVAL);
    ck_assert_ptr_eq(p, SENTINEL);
}
ROW(register_null_callbacks)
{
    memq_participation *p = SENTINEL;
    ck_assert_int_eq(memq_participant_register(fx.a, &no_oldest, NULL, &p), MEMQ_EINVAL);
    ck_assert_int_eq(memq_participant_register(fx.a, &no_reclaim, NULL, &p), MEMQ_EINVAL);
    ck_assert_ptr_eq(p, SENTINEL);
    ck_assert_uint_eq(stats().participants, 1);
}
ROW(register_closed)
{
    memq_participation *p0;
    memq_account *closed = closed_account(&p0);
    memq_participation *p = SENTINEL;
    ck_assert_int_eq(memq_participant_register(closed, &ops, NULL, &p), MEMQ_ECLOSED);
    ck_assert_ptr_eq(p, SENTINEL);
    memq_participation_free(p0);
}
ROW(register_after_shutdown)
{
    memq_tracker_free(fx.t);
    fx.t = NULL;
    memq_participation *p = SENTINEL;
    ck_assert_int_eq(memq_participant_register(fx.a, &ops, NULL, &p), MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(p, SENTINEL);
}
ROW(claim_null) { ck_assert_int_eq(memq_claim(NULL, 1), MEMQ_EINVAL); }
ROW(claim_closed)
{
    memq_participation *p;
    closed_account(&p);
    ck_assert_int_eq(memq_claim(p, 1), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_claim(p, 0), MEMQ_ECLOSED); /* 0 bytes still checks */
    ck_assert_uint_eq(memq_participation_claimed(p), 0);
    memq_participation_free(p);
}
ROW(claim_after_shutdown)
{
    memq_tracker_free(fx.t);
    fx.t = NULL;
    ck_assert_int_eq(memq_claim(fx.p, 1), MEMQ_ESHUTDOWN);
    ck_assert_int_eq(memq_claim(fx.p, 0), MEMQ_ESHUTDOWN);
}
ROW(claim_after_shutdown_on_closed_account)
{
    memq_participation *p;
    closed_account(&p);
    memq_tracker_free(fx.t);
    fx.t = NULL;
    ck_assert_int_eq(memq_claim(p, 1), MEMQ_ESHUTDOWN); /* wins over ECLOSED */
    memq_participation_free(p);
}
ROW(claim_overflow)
{
    ck_assert_int_eq(memq_claim(fx.p, 10), 0);
    ck_assert_int_eq(memq_claim(fx.p, SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_claim(fx.p, SIZE_MAX - 9), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_participation_claimed(fx.p), 10);
    ck_assert_uint_eq(memq_tracker_used(fx.t), 10);
    memq_release(fx.p, 10);
}
ROW(claim_overflow_of_the_tracker_total)
{
    /* Two participations that each fit but together overflow the total. */
    memq_participation *q;
    ck_assert_int_eq(memq_participant_register(fx.a, &ops, NULL, &q), 0);
    ck_assert_int_eq(memq_claim(fx.p, SIZE_MAX / 2 + 1), 0);
    ck_assert_int_eq(memq_claim(q, SIZE_MAX / 2 + 1), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_tracker_used(fx.t), SIZE_MAX / 2 + 1);
    memq_release(fx.p, SIZE_MAX / 2 + 1);
    memq_participation_free(q);
}
ROW(claim_past_the_room_kept_for_slack)
{
    /* Claims stop short of SIZE_MAX: the pool's slack is counted without
     * being refused, and must not wrap the total around to a small one. */
    memq_pool *pool = memq_tracker_pool(fx.t);
    ck_assert_ptr_nonnull(pool);
    size_t room = TOTAL_MAX - memq_tracker_used(fx.t);
    ck_assert_int_eq(memq_claim(fx.p, room + 1), MEMQ_EOVERFLOW);
    ck_assert_int_eq(memq_claim(fx.p, room), 0);
    memq_participation *q;
    ck_assert_int_eq(memq_participant_register(fx.a, &ops, NULL, &q), 0);
    void *chunk = SENTINEL;
    ck_assert_int_eq(memq_pool_alloc(pool, q, 512, &chunk), MEMQ_EOVERFLOW);
    ck_assert_ptr_eq(chunk, SENTINEL);
    ck_assert_uint_ge(memq_tracker_used(fx.t), TOTAL_MAX);
    ck_assert_uint_eq(memq_participation_claimed(q), 0);
    memq_release(fx.p, room);
    ck_assert_int_eq(memq_pool_alloc(pool, q, 512, &chunk), 0); /* with room, it fits */
    memq_pool_dealloc(q, chunk);
    memq_participation_free(q);
}
ROW(claim_overflow_unlimited_total)
{
    /* An unlimited tracker keeps no shared total (that is what makes it
     * free): each participation's own total is checked, and the sum that
     * memq_tracker_used() reports saturates instead of wrapping. */
    memq_config c;
    memq_config_init(&c);
    c.max = MEMQ_UNLIMITED;
    memq_tracker *t;
    ck_assert_int_eq(memq_tracker_new(&t, &c), 0);
    memq_account *a;
    ck_assert_int_eq(memq_account_new(t, NULL, &a), 0);
    memq_participation *p, *q;
    ck_assert_int_eq(memq_participant_register(a, &ops, NULL, &p), 0);
    ck_assert_int_eq(memq_participant_register(a, &ops, NULL, &q), 0);
    ck_assert_int_eq(memq_claim(p, SIZE_MAX / 2 + 1), 0);
    int rc = memq_claim(q, SIZE_MAX / 2 + 1);
    size_t used = memq_tracker_used(t);
    memq_participation_free(p);
    memq_participation_free(q);
    memq_account_unref(a);
    memq_tracker_free(t);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(used == SIZE_MAX, "the sum wrapped: used reads %zu", used);
}
ROW(release_null) { memq_release(NULL, 1); }
ROW(release_more_than_claimed)
{
    ck_assert_int_eq(memq_claim(fx.p, 10), 0);
    memq_release(fx.p, 11);
    ck_assert_uint_eq(memq_participation_claimed(fx.p), 0);
    ck_assert_uint_eq(memq_tracker_used(fx.t), 0);
    ck_assert_uint_eq(stats().misuse_events, 1);
    memq_release(fx.p, SIZE_MAX);
    ck_assert_uint_eq(stats().misuse_events, 2);
}
ROW(release_after_close)
{
    memq_participation *p;
    memq_account *a = new_account(NULL);
    ck_assert_int_eq(memq_participant_register(a, &ops, NULL, &p), 0);
    ck_assert_int_eq(memq_claim(p, 100), 0);
    memq_account_unref(a);
    memq_release(p, 50); /* changes nothing */
    ck_assert_uint_eq(memq_tracker_used(fx.t), 0);
    ck_assert_uint_eq(memq_participation_claimed(p), 0);
    memq_participation_free(p);
}
ROW(release_after_shutdown)
{
    ck_assert_int_eq(memq_claim(fx.p, 100), 0);
    memq_tracker_free(fx.t);
    fx.t = NULL;
    memq_release(fx.p, 50);
    ck_assert_uint_eq(memq_participation_claimed(fx.p), 0);
}
ROW(participation_free_null) { memq_participation_free(NULL); }
ROW(reclaim_done_null) { memq_reclaim_done(NULL, MEMQ_RECLAIMED_PARTIAL); }
ROW(reclaim_done_not_pending)
{
    memq_reclaim_done(fx.p, MEMQ_RECLAIMED_COLLAPSING);
    memq_stats st = stats();
    ck_assert(!memq_account_closed(fx.a));
    ck_assert_uint_eq(st.accounts_collapsed, 0);
    ck_assert_uint_eq(st.partial_reclaims, 0);
    ck_assert_uint_eq(st.misuse_events, 0);
}
ROW(reclaim_done_invalid_status)
{
    /* fx.p answers PENDING; a claim over max makes it the victim. */
    ck_assert_int_eq(memq_claim(fx.p, 2 * MIB), 0);
    ck_assert_int_eq(memq_tracker_reclaim(fx.t), MEMQ_EAGAIN);
    memq_reclaim_done(fx.p, (memq_reclaim_status)99);
    memq_stats st = stats();
    ck_assert_uint_eq(st.misuse_events, 1);
    ck_assert_uint_eq(st.partial_reclaims, 1);
    ck_assert(!memq_account_closed(fx.a));
    memq_release(fx.p, 2 * MIB);
}
ROW(reclaim_done_pending_status)
{
    ck_assert_int_eq(memq_claim(fx.p, 2 * MIB), 0);
    ck_assert_int_eq(memq_tracker_reclaim(fx.t), MEMQ_EAGAIN);
    memq_reclaim_done(fx.p, MEMQ_RECLAIM_PENDING);
    memq_stats st = stats();
    ck_assert_uint_eq(st.misuse_events, 1);
    ck_assert_uint_eq(st.partial_reclaims, 1);
    memq_release(fx.p, 2 * MIB);
}
/* A participation freed by its own reclaim callback is still memory the
 * library holds until the callback returns: using it then is seen. */
typedef enum { AFTER_FREE_CLAIM, AFTER_FREE_RELEASE, AFTER_FREE_FREE } after_free_use;

typedef struct self_freeing {
    memq_participation *p;
    after_free_use use;
    int rc;
} self_freeing;

static bool claims_old_data(void *self, memq_time *when)
{
    (void)self;
    *when = 1;
    return true;
}

static memq_reclaim_status free_then_use(void *self, const memq_reclaim_request *req)
{
    self_freeing *x = self;
    (void)req;
    memq_participation_free(x->p);
    if (x->use == AFTER_FREE_CLAIM)
        x->rc = memq_claim(x->p, 1);
    else if (x->use == AFTER_FREE_RELEASE)
        memq_release(x->p, 1);
    else
        memq_participation_free(x->p);
    return MEMQ_RECLAIMED_PARTIAL;
}

static void use_after_free_in_callback(after_free_use use, int want_rc)
{
    static const memq_participant_ops self_freeing_ops = {claims_old_data, free_then_use};
    self_freeing x = {NULL, use, 12345};
    memq_account *a = new_account(NULL);
    ck_assert_int_eq(memq_participant_register(a, &self_freeing_ops, &x, &x.p), 0);
    ck_assert_int_eq(memq_claim(x.p, 2 * MIB), 0);
    ck_assert_int_eq(memq_tracker_reclaim(fx.t), 0);
    memq_stats st = stats();
    ck_assert_uint_eq(st.misuse_events, 1);
    ck_assert_uint_eq(st.participants, 1); /* fx.p; x.p is gone */
    ck_assert_uint_eq(st.used, 0);
    ck_assert_int_eq(x.rc, want_rc);
    ck_assert_int_eq(misuse_logs, 1);
    memq_account_unref(a);
}
ROW(claim_freed_participation) { use_after_free_in_callback(AFTER_FREE_CLAIM, MEMQ_EINVAL); }
ROW(release_freed_participation) { use_after_free_in_callback(AFTER_FREE_RELEASE, 12345); }
ROW(participation_free_twice) { use_after_free_in_callback(AFTER_FREE_FREE, 12345); }
ROW(participation_claimed_null_closed)
{
    ck_assert_uint_eq(memq_participation_claimed(NULL), 0);
    memq_participation *p;
    closed_account(&p);
    ck_assert_uint_eq(memq_participation_claimed(p), 0);
    memq_participation_free(p);
}

/* ---- containers ---- */
static void free_item(void *item, void *ctx)
{
    (void)ctx;
    free(item);
}

ROW(queue_new_null)
{
    memq_queue *q = SENTINEL;
    ck_assert_int_eq(memq_queue_new(NULL, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q), MEMQ_EINVAL);
    ck_assert_int_eq(memq_queue_new(fx.a, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, NULL),
                     MEMQ_EINVAL);
    ck_assert_ptr_eq(q, SENTINEL);
}
ROW(queue_new_unknown_policy)
{
    memq_queue *q = SENTINEL;
    ck_assert_int_eq(memq_queue_new(fx.a, 2, NULL, NULL, NULL, &q), MEMQ_EINVAL);
    ck_assert_int_eq(memq_queue_new(fx.a, -1, NULL, NULL, NULL, &q), MEMQ_EINVAL);
    ck_assert_ptr_eq(q, SENTINEL);
}
ROW(queue_new_closed)
{
    memq_participation *p;
    memq_account *closed = closed_account(&p);
    memq_queue *q = SENTINEL;
    ck_assert_int_eq(memq_queue_new(closed, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q),
                     MEMQ_ECLOSED);
    ck_assert_ptr_eq(q, SENTINEL);
    memq_participation_free(p);
}
ROW(queue_new_after_shutdown)
{
    memq_tracker_free(fx.t);
    fx.t = NULL;
    memq_queue *q = SENTINEL;
    ck_assert_int_eq(memq_queue_new(fx.a, MEMQ_QUEUE_COLLAPSE, NULL, NULL, NULL, &q),
                     MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(q, SENTINEL);
}
ROW(queue_null_handle)
{
    ck_assert_int_eq(memq_queue_push(NULL, NULL, 1), MEMQ_EINVAL);
    ck_assert_ptr_null(memq_queue_pop(NULL));
    ck_assert_uint_eq(memq_queue_len(NULL), 0);
    ck_assert(memq_queue_closed(NULL));
    memq_queue_free(NULL);
}
ROW(queue_push_overflow)
{
    memq_queue *q;
    ck_assert_int_eq(memq_queue_new(fx.a, MEMQ_QUEUE_COLLAPSE, free_item, NULL, NULL, &q), 0);
    void *item = malloc(8);
    size_t used = memq_tracker_used(fx.t); /* the pool's metadata */
    ck_assert_int_eq(memq_queue_push(q, item, SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_queue_len(q), 0);
    ck_assert_uint_eq(memq_tracker_used(fx.t), used);
    free(item); /* not taken */
    memq_queue_free(q);
}
ROW(queue_push_overflow_of_the_tracker_total)
{
    memq_queue *q;
    ck_assert_int_eq(memq_queue_new(fx.a, MEMQ_QUEUE_COLLAPSE, free_item, NULL, NULL, &q), 0);
    size_t big = TOTAL_MAX - 10 - memq_tracker_used(fx.t); /* beside the pool's slack */
    ck_assert_int_eq(memq_claim(fx.p, big), 0); /* room for 10 bytes more */
    void *item = malloc(8);
    ck_assert_int_eq(memq_queue_push(q, item, 8), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_queue_len(q), 0);
    ck_assert_ptr_null(memq_queue_pop(q));
    ck_assert(!memq_queue_closed(q));
    ck_assert_uint_eq(stats().claimed + stats().cached, big); /* (the pool may keep a span) */
    free(item); /* not taken */
    memq_release(fx.p, big);
    memq_queue_free(q);
}
ROW(queue_push_closed)
{
    memq_queue *q;
    memq_account *a = new_account(NULL);
    ck_assert_int_eq(memq_queue_new(a, MEMQ_QUEUE_COLLAPSE, free_item, NULL, NULL, &q), 0);
    memq_account_unref(a);
    void *item = malloc(8);
    ck_assert_int_eq(memq_queue_push(q, item, 8), MEMQ_ECLOSED);
    free(item); /* not taken */
    ck_assert(memq_queue_closed(q));
    ck_assert_ptr_null(memq_queue_pop(q));
    memq_queue_free(q);
}
ROW(buf_new_null)
{
    memq_buf *b = SENTINEL;
    ck_assert_int_eq(memq_buf_new(NULL, NULL, NULL, &b), MEMQ_EINVAL);
    ck_assert_int_eq(memq_buf_new(fx.a, NULL, NULL, NULL), MEMQ_EINVAL);
    ck_assert_ptr_eq(b, SENTINEL);
}
ROW(buf_new_closed)
{
    memq_participation *p;
    memq_account *closed = closed_account(&p);
    memq_buf *b = SENTINEL;
    ck_assert_int_eq(memq_buf_new(closed, NULL, NULL, &b), MEMQ_ECLOSED);
    ck_assert_ptr_eq(b, SENTINEL);
    memq_participation_free(p);
}
ROW(buf_null_handle)
{
    char out[4];
    memq_time when = 5;
    ck_assert_int_eq(memq_buf_add(NULL, "x", 1), MEMQ_EINVAL);
    ck_assert_uint_eq(memq_buf_peek(NULL, out, sizeof out), 0);
    ck_assert_uint_eq(memq_buf_drain(NULL, 1), 0);
    ck_assert_uint_eq(memq_buf_len(NULL), 0);
    ck_assert_uint_eq(memq_buf_allocated(NULL), 0);
    ck_assert(!memq_buf_oldest(NULL, &when));
    ck_assert_uint_eq(when, 5);
    ck_assert(memq_buf_closed(NULL));
    memq_buf_free(NULL);
}
ROW(buf_add_null_data)
{
    memq_buf *b;
    ck_assert_int_eq(memq_buf_new(fx.a, NULL, NULL, &b), 0);
    ck_assert_int_eq(memq_buf_add(b, NULL, 5), MEMQ_EINVAL);
    ck_assert_int_eq(memq_buf_add(b, NULL, 0), 0);
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_peek(b, NULL, 5), 0);
    memq_buf_free(b);
}
ROW(buf_add_overflow)
{
    memq_buf *b;
    ck_assert_int_eq(memq_buf_new(fx.a, NULL, NULL, &b), 0);
    ck_assert_int_eq(memq_buf_add(b, "abc", 3), 0);
    size_t used = memq_tracker_used(fx.t);
    /* The chunks for SIZE_MAX more bytes cannot be counted (data is never
     * read: the size is refused first). */
    ck_assert_int_eq(memq_buf_add(b, "abc", SIZE_MAX), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_buf_len(b), 3);
    ck_assert_uint_eq(memq_tracker_used(fx.t), used);
    memq_buf_free(b);
}
ROW(buf_add_overflow_of_the_tracker_total)
{
    memq_buf *b;
    ck_assert_int_eq(memq_buf_new(fx.a, NULL, NULL, &b), 0);
    size_t big = TOTAL_MAX - 10 - memq_tracker_used(fx.t); /* beside the pool's slack */
    ck_assert_int_eq(memq_claim(fx.p, big), 0); /* room for 10 bytes more */
    ck_assert_int_eq(memq_buf_add(b, "abc", 3), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(memq_buf_len(b), 0);
    ck_assert_uint_eq(memq_buf_allocated(b), 0);
    ck_assert(!memq_buf_oldest(b, NULL));
    ck_assert(!memq_buf_closed(b));
    ck_assert_uint_eq(stats().claimed + stats().cached, big); /* (the pool may keep a span) */
    memq_release(fx.p, big);
    ck_assert_int_eq(memq_buf_add(b, "abc", 3), 0); /* with room, it goes in */
    ck_assert_uint_eq(memq_buf_len(b), 3);
    memq_buf_free(b);
}
ROW(buf_add_closed)
{
    memq_buf *b;
    memq_account *a = new_account(NULL);
    ck_assert_int_eq(memq_buf_new(a, NULL, NULL, &b), 0);
    memq_account_unref(a);
    ck_assert_int_eq(memq_buf_add(b, "x", 1), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_buf_add(b, NULL, 0), MEMQ_ECLOSED);
    ck_assert(memq_buf_closed(b));
    ck_assert_uint_eq(memq_buf_drain(b, 1), 0);
    memq_buf_free(b);
}

/* ======================================================================
 * The table, and doc/errors.md
 * ====================================================================== */

typedef struct row {
    const char *id;
    void (*fn)(void);
} row;

#define R(id) {#id, id}
static const row rows[] = {
    R(strerror_unknown_code), R(version_matches_header),
    R(parse_size_null_text), R(parse_size_null_out), R(parse_size_empty), R(parse_size_sign),
    R(parse_size_missing_number), R(parse_size_unknown_unit), R(parse_size_trailing_garbage),
    R(parse_size_overflow),
    R(config_init_null), R(config_check_null), R(config_low_water_without_max),
    R(config_low_water_not_below_max), R(config_band_smaller_than_four_caches),
    R(config_timeout_zero), R(config_budget_zero), R(config_unknown_mode),
    R(config_unlimited_with_low_water), R(config_pressure_interval_zero),
    R(config_pressure_window_out_of_range), R(config_pressure_stall_out_of_range),
    R(config_pressure_low_water_above_low_water), R(config_unlimited_with_pressure_or_rss),
    R(config_check_message_truncated),
    R(tracker_new_null_out), R(tracker_new_null_config), R(tracker_free_null),
    R(tracker_reconfigure_null), R(tracker_reconfigure_rejected_changes_nothing),
    R(tracker_reconfigure_mode_change), R(tracker_reconfigure_to_unlimited),
    R(tracker_reconfigure_clock_change), R(tracker_reconfigure_creation_fields),
    R(tracker_reconfigure_after_shutdown), R(tracker_reclaim_after_shutdown),
    R(tracker_free_twice), R(tracker_config_null), R(tracker_queries_null), R(tracker_stats_null),
    R(tracker_dump_null), R(tracker_dump_unknown_format), R(tracker_dump_write_fails),
    R(account_new_null), R(account_new_parent_of_other_tracker), R(account_new_closed_parent),
    R(account_new_after_shutdown),
    R(add_parent_null), R(add_parent_other_tracker), R(add_parent_itself),
    R(add_parent_descendant), R(add_parent_twice), R(add_parent_closed),
    R(add_parent_after_shutdown), R(account_ref_unref_null), R(account_unref_without_references),
    R(account_id_null), R(account_find_null_unknown_closed), R(account_set_name_null),
    R(account_queries_null), R(account_used_closed),
    R(register_null), R(register_null_callbacks), R(register_closed), R(register_after_shutdown),
    R(claim_null), R(claim_closed), R(claim_after_shutdown), R(claim_after_shutdown_on_closed_account),
    R(claim_overflow), R(claim_overflow_of_the_tracker_total),
    R(claim_past_the_room_kept_for_slack), R(claim_overflow_unlimited_total),
    R(release_null), R(release_more_than_claimed), R(release_after_close),
    R(release_after_shutdown), R(participation_free_null), R(reclaim_done_null),
    R(reclaim_done_not_pending), R(reclaim_done_invalid_status), R(reclaim_done_pending_status),
    R(claim_freed_participation), R(release_freed_participation), R(participation_free_twice),
    R(participation_claimed_null_closed),
    R(queue_new_null), R(queue_new_unknown_policy), R(queue_new_closed), R(queue_new_after_shutdown),
    R(queue_null_handle), R(queue_push_overflow), R(queue_push_overflow_of_the_tracker_total),
    R(queue_push_closed),
    R(buf_new_null), R(buf_new_closed), R(buf_null_handle), R(buf_add_null_data),
    R(buf_add_overflow), R(buf_add_overflow_of_the_tracker_total), R(buf_add_closed),
};
#define NROWS ((int)(sizeof rows / sizeof rows[0]))

START_TEST(test_error_row)
{
    rows[_i].fn();
}
END_TEST

/* Every `id` in the last column of doc/errors.md's tables, in order. */
static int doc_ids(char ids[][64], int max)
{
    char path[512];
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    snprintf(path, sizeof path, "%.*s/../doc/errors.md", slash ? (int)(slash - file) : 1,
             slash ? file : ".");
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (line[0] != '|')
            continue;
        char *end = strrchr(line, '|');
        if (end == NULL || end == line)
            continue;
        *end = '\0';
        char *cell = strrchr(line, '|');
        char *tick = cell ? strchr(cell, '`') : NULL;
        char *close = tick ? strchr(tick + 1, '`') : NULL;
        if (close == NULL || n == max)
            continue;
        snprintf(ids[n++], 64, "%.*s", (int)(close - tick - 1), tick + 1);
    }
    fclose(f);
    return n;
}

START_TEST(test_doc_errors_md_lists_every_row_and_no_other)
{
    static char ids[256][64];
    int n = doc_ids(ids, 256);
    for (int i = 0; i < NROWS; i++) {
        bool found = false;
        for (int j = 0; j < n && !found; j++)
            found = strcmp(ids[j], rows[i].id) == 0;
        ck_assert_msg(found, "row %s is tested but missing from doc/errors.md", rows[i].id);
    }
    for (int j = 0; j < n; j++) {
        bool found = false;
        for (int i = 0; i < NROWS && !found; i++)
            found = strcmp(ids[j], rows[i].id) == 0;
        ck_assert_msg(found, "doc/errors.md lists %s, which no test checks", ids[j]);
    }
}
END_TEST

static void print_failing_row_names(void)
{
    /* Check names loop tests by index; map them back with
     * MEMQ_ERRORS_LIST=1. */
    if (getenv("MEMQ_ERRORS_LIST") == NULL)
        return;
    for (int i = 0; i < NROWS; i++)
        printf("%d %s\n", i, rows[i].id);
}

int main(void)
{
    print_failing_row_names();
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("rows");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_error_row, 0, NROWS);
    suite_add_tcase(s, tc);
    tc = tcase_create("doc");
    tcase_add_test(tc, test_doc_errors_md_lists_every_row_and_no_other);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
