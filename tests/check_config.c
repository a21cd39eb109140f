/*
 * check_config.c - configuration defaults and rules, memq_parse_size(),
 * memq_strerror(), the clock, reconfiguration, and the unlimited tracker.
 */
#include "testutil.h"

#include <limits.h>

/* ----------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

/* A valid explicit configuration: 1 MiB max, 512 KiB low water, 16 KiB
 * caches (the band is 512 KiB >= 4 * 16 KiB). */
static memq_config explicit_config(void)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 1 * MIB;
    cfg.low_water = 512 * KIB;
    return cfg;
}

/* memq_config_check() must reject cfg and name `field` in its message. */
static void assert_rejected_naming(const memq_config *cfg, const char *field)
{
    char msg[256];
    memset(msg, 'x', sizeof msg);
    int rc = memq_config_check(cfg, msg, sizeof msg);
    ck_assert_int_eq(rc, MEMQ_EINVAL);
    ck_assert_msg(memchr(msg, '\0', sizeof msg) != NULL, "message not NUL-terminated");
    ck_assert_msg(strstr(msg, field) != NULL, "message \"%s\" does not name %s", msg, field);
}

static int parse(const char *text, size_t *out)
{
    *out = (size_t)0xdeadbeef;
    return memq_parse_size(text, out);
}

static void assert_parses_to(const char *text, size_t expected)
{
    size_t n;
    int rc = parse(text, &n);
    ck_assert_msg(rc == 0, "\"%s\": %s", text, memq_strerror(rc));
    ck_assert_msg(n == expected, "\"%s\": got %zu, expected %zu", text, n, expected);
}

static void assert_parse_fails(const char *text, int expected_rc)
{
    size_t n;
    int rc = parse(text, &n);
    ck_assert_msg(rc == expected_rc, "\"%s\": got %d (%s), expected %d", text, rc,
                  memq_strerror(rc), expected_rc);
}

/* ----------------------------------------------------------------------
 * memq_config_init
 * ---------------------------------------------------------------------- */

START_TEST(test_config_init_fills_the_documented_defaults)
{
    memq_config cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    memq_config_init(&cfg);
    ck_assert_uint_eq(cfg.max, MEMQ_AUTO);
    ck_assert_uint_eq(cfg.low_water, 0);
    ck_assert_uint_eq(cfg.cache_max, 16 * KIB);
    ck_assert_int_eq(cfg.reclaim_mode, MEMQ_RECLAIM_MANUAL);
    ck_assert(cfg.wakeup == NULL);
    ck_assert_ptr_null(cfg.wakeup_ctx);
    ck_assert(cfg.log == NULL);
    ck_assert_ptr_null(cfg.log_ctx);
    ck_assert_uint_eq(cfg.reclaim_timeout_ms, 10000);
    ck_assert_uint_eq(cfg.reclaim_budget_us, 1000);
    ck_assert(cfg.clock == NULL);
    ck_assert_ptr_null(cfg.clock_ctx);
}
END_TEST

START_TEST(test_config_init_ignores_null)
{
    memq_config_init(NULL);
}
END_TEST

/* ----------------------------------------------------------------------
 * memq_config_check rules
 * ---------------------------------------------------------------------- */

START_TEST(test_default_config_is_accepted)
{
    memq_config cfg;
    memq_config_init(&cfg);
    ck_assert_uint_gt(memq_auto_max(), 0);
    ck_assert_int_eq(memq_config_check(&cfg, NULL, 0), 0);
}
END_TEST

START_TEST(test_explicit_config_is_accepted)
{
    memq_config cfg = explicit_config();
    char msg[64] = "untouched";
    ck_assert_int_eq(memq_config_check(&cfg, msg, sizeof msg), 0);
}
END_TEST

START_TEST(test_explicit_low_water_without_explicit_max_is_rejected)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.low_water = 64 * KIB;
    assert_rejected_naming(&cfg, "low_water");
}
END_TEST

START_TEST(test_low_water_equal_to_max_is_rejected)
{
    memq_config cfg = explicit_config();
    cfg.low_water = cfg.max;
    assert_rejected_naming(&cfg, "low_water");
}
END_TEST

START_TEST(test_low_water_above_max_is_rejected)
{
    memq_config cfg = explicit_config();
    cfg.low_water = cfg.max + 1;
    assert_rejected_naming(&cfg, "low_water");
}
END_TEST

START_TEST(test_band_narrower_than_four_caches_is_rejected)
{
    memq_config cfg = explicit_config();
    cfg.low_water = cfg.max - 4 * cfg.cache_max + 1;
    char msg[256] = "";
    ck_assert_int_eq(memq_config_check(&cfg, msg, sizeof msg), MEMQ_EINVAL);
    ck_assert_msg(strstr(msg, "low_water") || strstr(msg, "cache_max"),
                  "message \"%s\" names neither low_water nor cache_max", msg);
}
END_TEST

START_TEST(test_band_of_exactly_four_caches_is_accepted)
{
    memq_config cfg = explicit_config();
    cfg.low_water = cfg.max - 4 * cfg.cache_max;
    ck_assert_int_eq(memq_config_check(&cfg, NULL, 0), 0);
}
END_TEST

START_TEST(test_zero_reclaim_timeout_is_rejected)
{
    memq_config cfg = explicit_config();
    cfg.reclaim_timeout_ms = 0;
    assert_rejected_naming(&cfg, "reclaim_timeout_ms");
}
END_TEST

START_TEST(test_zero_reclaim_budget_is_rejected)
{
    memq_config cfg = explicit_config();
    cfg.reclaim_budget_us = 0;
    assert_rejected_naming(&cfg, "reclaim_budget_us");
}
END_TEST

START_TEST(test_unknown_reclaim_mode_is_rejected)
{
    memq_config cfg = explicit_config();
    cfg.reclaim_mode = (memq_reclaim_mode)7;
    assert_rejected_naming(&cfg, "reclaim_mode");
}
END_TEST

START_TEST(test_config_check_message_is_truncated_to_the_buffer)
{
    memq_config cfg = explicit_config();
    cfg.reclaim_timeout_ms = 0;
    char full[256];
    ck_assert_int_eq(memq_config_check(&cfg, full, sizeof full), MEMQ_EINVAL);
    ck_assert_uint_gt(strlen(full), 8);

    char small[16];
    memset(small, 'x', sizeof small);
    ck_assert_int_eq(memq_config_check(&cfg, small, 8), MEMQ_EINVAL);
    ck_assert_uint_le(strlen(small), 7);
    ck_assert_int_eq(strncmp(small, full, strlen(small)), 0);
    ck_assert_int_eq(small[8], 'x'); /* nothing written past len */
}
END_TEST

START_TEST(test_config_check_accepts_a_null_buffer)
{
    memq_config cfg = explicit_config();
    cfg.reclaim_budget_us = 0;
    ck_assert_int_eq(memq_config_check(&cfg, NULL, 0), MEMQ_EINVAL);
}
END_TEST

/* ----------------------------------------------------------------------
 * memq_tracker_new and the configuration
 * ---------------------------------------------------------------------- */

START_TEST(test_tracker_new_rejects_a_bad_config_and_leaves_out_untouched)
{
    memq_config cfg = explicit_config();
    cfg.low_water = cfg.max;
    memq_tracker *sentinel = (memq_tracker *)&cfg;
    memq_tracker *t = sentinel;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), MEMQ_EINVAL);
    ck_assert_ptr_eq(t, sentinel);
}
END_TEST

static void record_log(void *ctx, int level, const char *msg)
{
    (void)level;
    snprintf(ctx, 256, "%s", msg);
}

START_TEST(test_tracker_new_logs_why_a_config_was_rejected)
{
    char logged[256] = "";
    memq_config cfg = explicit_config();
    cfg.reclaim_timeout_ms = 0;
    cfg.log = record_log;
    cfg.log_ctx = logged;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), MEMQ_EINVAL);
    ck_assert_msg(strstr(logged, "reclaim_timeout_ms") != NULL, "logged \"%s\"", logged);
}
END_TEST

START_TEST(test_tracker_new_rejects_null_arguments)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(NULL, &cfg), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_new(&t, NULL), MEMQ_EINVAL);
    ck_assert_ptr_null(t);
}
END_TEST

START_TEST(test_tracker_copies_its_configuration)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    cfg.max = 7;
    cfg.low_water = 3;
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.max, 1 * MIB);
    ck_assert_uint_eq(st.low_water, 512 * KIB);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_auto_low_water_is_75_percent_of_explicit_max)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = 4 * MIB;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.max, 4 * MIB);
    ck_assert_uint_eq(st.low_water, 3 * MIB);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_auto_max_tracker_uses_memq_auto_max)
{
    memq_config cfg;
    memq_config_init(&cfg);
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_stats st;
    memq_tracker_stats(t, &st);
    size_t expected = memq_auto_max();
    ck_assert_uint_eq(st.max, expected);
    ck_assert_uint_ge(st.low_water, expected / 4 * 3 - 1);
    ck_assert_uint_le(st.low_water, expected / 4 * 3 + 3);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_auto_max_is_positive_and_at_most_8_gib)
{
    size_t m = memq_auto_max();
    ck_assert_uint_gt(m, 0);
    ck_assert_uint_le(m, 8 * GIB);
}
END_TEST

START_TEST(test_auto_max_is_at_most_75_percent_of_memtotal)
{
    FILE *f = fopen("/proc/meminfo", "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            break;
    fclose(f);
    ck_assert_uint_gt(kib, 0);
    ck_assert_uint_le(memq_auto_max(), kib * 1024 / 4 * 3 + 1024);
}
END_TEST

/* ----------------------------------------------------------------------
 * memq_parse_size
 * ---------------------------------------------------------------------- */

START_TEST(test_parse_size_reads_a_plain_integer_as_bytes)
{
    assert_parses_to("8", 8);
    assert_parses_to("0", 0);
    assert_parses_to("1234567", 1234567);
}
END_TEST

START_TEST(test_parse_size_reads_gib_after_a_space)
{
    assert_parses_to("8 GiB", 8 * GIB);
}
END_TEST

START_TEST(test_parse_size_reads_a_decimal_number_of_kib)
{
    assert_parses_to("1.5 KiB", 1536);
}
END_TEST

START_TEST(test_parse_size_reads_a_unit_letter_without_space)
{
    assert_parses_to("16k", 16 * KIB);
}
END_TEST

START_TEST(test_parse_size_ignores_surrounding_spaces_and_unit_case)
{
    assert_parses_to("  3 mb  ", 3 * MIB);
}
END_TEST

START_TEST(test_parse_size_treats_kb_as_1024_bytes)
{
    assert_parses_to("1 KB", 1024);
    assert_parses_to("1kB", 1024);
}
END_TEST

START_TEST(test_parse_size_reads_every_unit_as_a_power_of_1024)
{
    static const struct {
        const char *unit;
        int shift;
    } units[] = {
        { "B", 0 },    { "b", 0 },    { "K", 10 },   { "KB", 10 }, { "KiB", 10 },
        { "kib", 10 }, { "M", 20 },   { "MB", 20 },  { "MiB", 20 }, { "G", 30 },
        { "GB", 30 },  { "GiB", 30 }, { "gIb", 30 }, { "T", 40 },  { "TB", 40 },
        { "TiB", 40 }, { "tib", 40 },
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        char text[32];
        snprintf(text, sizeof text, "3 %s", units[i].unit);
        assert_parses_to(text, (size_t)3 << units[i].shift);
        snprintf(text, sizeof text, "3%s", units[i].unit);
        assert_parses_to(text, (size_t)3 << units[i].shift);
    }
}
END_TEST

START_TEST(test_parse_size_rounds_fractions_down)
{
    assert_parses_to("1.5", 1);
    assert_parses_to("1.1 KiB", 1126); /* 1126.4 */
    assert_parses_to("0.5 K", 512);
}
END_TEST

START_TEST(test_parse_size_is_exact_for_large_integers)
{
    ck_assert_uint_eq(sizeof(size_t), 8);
    assert_parses_to("18446744073709551615", SIZE_MAX);
    assert_parses_to("9007199254740993", (size_t)9007199254740993ULL); /* 2^53 + 1 */
}
END_TEST

START_TEST(test_parse_size_accepts_the_largest_whole_tib)
{
    ck_assert_uint_eq(sizeof(size_t), 8);
    assert_parses_to("16777215 TiB", (size_t)16777215 << 40);
}
END_TEST

START_TEST(test_parse_size_ignores_fraction_digits_beyond_the_nineteenth)
{
    size_t out = 0;
    /* 0.5 KiB, then digits too small to matter for any unit */
    ck_assert_int_eq(memq_parse_size("0.50000000000000000009999 KiB", &out), 0);
    ck_assert_uint_eq(out, 512);
    ck_assert_int_eq(memq_parse_size("1.9999999999999999999999 B", &out), 0);
    ck_assert_uint_eq(out, 1);
}
END_TEST

START_TEST(test_parse_size_accepts_a_tab_between_number_and_unit)
{
    size_t out = 0;
    ck_assert_int_eq(memq_parse_size("3\tMiB", &out), 0);
    ck_assert_uint_eq(out, 3 * MIB);
}
END_TEST

START_TEST(test_parse_size_rejects_empty_text)
{
    assert_parse_fails("", MEMQ_EINVAL);
    assert_parse_fails("   ", MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_rejects_a_sign)
{
    assert_parse_fails("-1", MEMQ_EINVAL);
    assert_parse_fails("-0", MEMQ_EINVAL);
    assert_parse_fails("+1", MEMQ_EINVAL);
    assert_parse_fails(" -5 KiB", MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_rejects_an_unknown_unit)
{
    assert_parse_fails("5 XB", MEMQ_EINVAL);
    assert_parse_fails("5 PiB", MEMQ_EINVAL);
    assert_parse_fails("5 KiBB", MEMQ_EINVAL);
    assert_parse_fails("1e3", MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_rejects_a_malformed_number)
{
    assert_parse_fails("1.2.3", MEMQ_EINVAL);
    assert_parse_fails("1..2", MEMQ_EINVAL);
    assert_parse_fails("0x10", MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_rejects_a_missing_number)
{
    assert_parse_fails("KiB", MEMQ_EINVAL);
    assert_parse_fails(" MB ", MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_rejects_trailing_garbage)
{
    assert_parse_fails("12 KiB extra", MEMQ_EINVAL);
    assert_parse_fails("12 KiB 4", MEMQ_EINVAL);
    assert_parse_fails("12;", MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_reports_overflow)
{
    assert_parse_fails("99999999999 TiB", MEMQ_EOVERFLOW);
    assert_parse_fails("16777216 TiB", MEMQ_EOVERFLOW);
    assert_parse_fails("18446744073709551616", MEMQ_EOVERFLOW);
    assert_parse_fails("99999999999999999999999999", MEMQ_EOVERFLOW);
}
END_TEST

START_TEST(test_parse_size_rejects_null_arguments)
{
    size_t n;
    ck_assert_int_eq(memq_parse_size(NULL, &n), MEMQ_EINVAL);
    ck_assert_int_eq(memq_parse_size("8", NULL), MEMQ_EINVAL);
}
END_TEST

START_TEST(test_parse_size_leaves_out_untouched_on_failure)
{
    size_t n = 4242;
    ck_assert_int_eq(memq_parse_size("5 XB", &n), MEMQ_EINVAL);
    ck_assert_uint_eq(n, 4242);
    ck_assert_int_eq(memq_parse_size("99999999999 TiB", &n), MEMQ_EOVERFLOW);
    ck_assert_uint_eq(n, 4242);
}
END_TEST

/* ----------------------------------------------------------------------
 * memq_strerror and the version
 * ---------------------------------------------------------------------- */

static const int all_errors[] = {
    MEMQ_EINVAL,   MEMQ_ENOMEM, MEMQ_ECLOSED, MEMQ_ESHUTDOWN, MEMQ_EOVERFLOW,
    MEMQ_EAGAIN, MEMQ_ECYCLE, MEMQ_EEXIST,  MEMQ_ESYSTEM,
};
#define N_ERRORS (sizeof all_errors / sizeof all_errors[0])

START_TEST(test_strerror_describes_every_error_code)
{
    for (size_t i = 0; i < N_ERRORS; i++) {
        const char *s = memq_strerror(all_errors[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_gt(strlen(s), 0);
        ck_assert_str_ne(s, "unknown error");
        ck_assert_str_ne(s, "success");
    }
}
END_TEST

START_TEST(test_strerror_gives_each_code_its_own_text)
{
    for (size_t i = 0; i < N_ERRORS; i++)
        for (size_t j = i + 1; j < N_ERRORS; j++)
            ck_assert_str_ne(memq_strerror(all_errors[i]), memq_strerror(all_errors[j]));
}
END_TEST

START_TEST(test_strerror_says_success_for_zero)
{
    ck_assert_str_eq(memq_strerror(0), "success");
}
END_TEST

START_TEST(test_strerror_says_unknown_error_for_other_values)
{
    ck_assert_str_eq(memq_strerror(1), "unknown error");
    ck_assert_str_eq(memq_strerror(-10), "unknown error");
    ck_assert_str_eq(memq_strerror(INT_MIN), "unknown error");
    ck_assert_str_eq(memq_strerror(INT_MAX), "unknown error");
}
END_TEST

START_TEST(test_version_matches_the_header)
{
    ck_assert_uint_eq(memq_version(), MEMQ_VERSION_NUMBER);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", MEMQ_VERSION_MAJOR, MEMQ_VERSION_MINOR,
             MEMQ_VERSION_PATCH);
    ck_assert_str_eq(memq_version_string(), expected);
}
END_TEST

/* ----------------------------------------------------------------------
 * The clock
 * ---------------------------------------------------------------------- */

START_TEST(test_memq_now_never_goes_backwards)
{
    memq_time prev = memq_now();
    for (int i = 0; i < 10000; i++) {
        memq_time now = memq_now();
        ck_assert_uint_ge(now, prev);
        prev = now;
    }
}
END_TEST

START_TEST(test_tracker_now_reads_the_configured_clock)
{
    fake_clock clock;
    fake_clock_init(&clock, 12345 * SECOND);
    memq_config cfg = explicit_config();
    cfg.clock = fake_clock_read;
    cfg.clock_ctx = &clock;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_uint_eq(memq_tracker_now(t), 12345 * SECOND);
    fake_clock_advance(&clock, 7 * MS);
    ck_assert_uint_eq(memq_tracker_now(t), 12345 * SECOND + 7 * MS);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_tracker_now_defaults_to_memq_now)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_time before = memq_now();
    memq_time now = memq_tracker_now(t);
    memq_time after = memq_now();
    ck_assert_uint_ge(now, before);
    ck_assert_uint_le(now, after);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_tracker_now_is_zero_for_null)
{
    ck_assert_uint_eq(memq_tracker_now(NULL), 0);
}
END_TEST

/* ----------------------------------------------------------------------
 * memq_tracker_reconfigure
 * ---------------------------------------------------------------------- */

START_TEST(test_reconfigure_applies_new_marks_at_once)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    cfg.max = 2 * MIB;
    cfg.low_water = 1 * MIB;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), 0);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.max, 2 * MIB);
    ck_assert_uint_eq(st.low_water, 1 * MIB);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_reconfigure_rejects_a_bad_config_and_changes_nothing)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    memq_config bad = cfg;
    bad.max = 4 * MIB;
    bad.low_water = 8 * MIB;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &bad), MEMQ_EINVAL);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.max, 1 * MIB);
    ck_assert_uint_eq(st.low_water, 512 * KIB);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_reconfigure_cannot_change_the_reclaim_mode)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), MEMQ_EINVAL);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_reconfigure_cannot_switch_to_unlimited)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    cfg.max = MEMQ_UNLIMITED;
    cfg.low_water = 0;
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), MEMQ_EINVAL);
    memq_stats st;
    memq_tracker_stats(t, &st);
    ck_assert_uint_eq(st.max, 1 * MIB);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_reconfigure_cannot_switch_from_unlimited)
{
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = MEMQ_UNLIMITED;
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    cfg = explicit_config();
    ck_assert_int_eq(memq_tracker_reconfigure(t, &cfg), MEMQ_EINVAL);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_reconfigure_rejects_null_arguments)
{
    memq_config cfg = explicit_config();
    memq_tracker *t = NULL;
    ck_assert_int_eq(memq_tracker_new(&t, &cfg), 0);
    ck_assert_int_eq(memq_tracker_reconfigure(NULL, &cfg), MEMQ_EINVAL);
    ck_assert_int_eq(memq_tracker_reconfigure(t, NULL), MEMQ_EINVAL);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_tracker_free_ignores_null)
{
    memq_tracker_free(NULL);
}
END_TEST

/* ----------------------------------------------------------------------
 * The unlimited tracker: tracking disabled
 * ---------------------------------------------------------------------- */

static void world_unlimited(fake_world *w)
{
    world_init(w, MEMQ_UNLIMITED, 0);
    w->cfg.cache_max = 16 * KIB;
    world_start(w);
}

START_TEST(test_unlimited_tracker_accepts_claims_and_releases)
{
    fake_world w;
    world_unlimited(&w);
    fake_part fp;
    part_add(&w, &fp, 1, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(fp.p, 5 * GIB), 0);
    ck_assert_int_eq(memq_claim(fp.p, 123), 0);
    memq_release(fp.p, 23);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 5 * GIB + 100);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unlimited_tracker_used_is_the_sum_of_claims)
{
    fake_world w;
    world_unlimited(&w);
    fake_part a, b;
    part_add(&w, &a, 1, world_account(&w, NULL));
    part_add(&w, &b, 2, world_account(&w, NULL));
    ck_assert_int_eq(memq_claim(a.p, 1000), 0);
    ck_assert_int_eq(memq_claim(b.p, 3 * GIB), 0);
    memq_release(a.p, 1);
    ck_assert_uint_eq(memq_tracker_used(w.t), 3 * GIB + 999);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unlimited_tracker_never_reclaims)
{
    fake_world w;
    world_unlimited(&w);
    fake_part parts[4];
    for (int i = 0; i < 4; i++) {
        memq_account *a = world_account(&w, NULL);
        part_add(&w, &parts[i], i, a);
        ck_assert_int_eq(part_claim_at(&parts[i], 1024 * GIB, WORLD_START_TIME - SECOND), 0);
    }
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(w.n_calls, 0);
    ck_assert_int_eq(atomic_load(&w.wakeups), 0);
    ck_assert(!fd_readable(memq_tracker_fd(w.t)));
    memq_stats st = world_stats(&w);
    ck_assert_uint_eq(st.episodes, 0);
    ck_assert_uint_eq(st.accounts_reclaimed, 0);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(memq_participation_claimed(parts[i].p), 1024 * GIB);
    world_teardown(&w);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = test_case("defaults");
    tcase_add_test(tc, test_config_init_fills_the_documented_defaults);
    tcase_add_test(tc, test_config_init_ignores_null);
    tcase_add_test(tc, test_default_config_is_accepted);
    tcase_add_test(tc, test_explicit_config_is_accepted);
    suite_add_tcase(s, tc);

    tc = test_case("rules");
    tcase_add_test(tc, test_explicit_low_water_without_explicit_max_is_rejected);
    tcase_add_test(tc, test_low_water_equal_to_max_is_rejected);
    tcase_add_test(tc, test_low_water_above_max_is_rejected);
    tcase_add_test(tc, test_band_narrower_than_four_caches_is_rejected);
    tcase_add_test(tc, test_band_of_exactly_four_caches_is_accepted);
    tcase_add_test(tc, test_zero_reclaim_timeout_is_rejected);
    tcase_add_test(tc, test_zero_reclaim_budget_is_rejected);
    tcase_add_test(tc, test_unknown_reclaim_mode_is_rejected);
    tcase_add_test(tc, test_config_check_message_is_truncated_to_the_buffer);
    tcase_add_test(tc, test_config_check_accepts_a_null_buffer);
    suite_add_tcase(s, tc);

    tc = test_case("tracker_new");
    tcase_add_test(tc, test_tracker_new_rejects_a_bad_config_and_leaves_out_untouched);
    tcase_add_test(tc, test_tracker_new_logs_why_a_config_was_rejected);
    tcase_add_test(tc, test_tracker_new_rejects_null_arguments);
    tcase_add_test(tc, test_tracker_copies_its_configuration);
    tcase_add_test(tc, test_auto_low_water_is_75_percent_of_explicit_max);
    tcase_add_test(tc, test_auto_max_tracker_uses_memq_auto_max);
    tcase_add_test(tc, test_auto_max_is_positive_and_at_most_8_gib);
    tcase_add_test(tc, test_auto_max_is_at_most_75_percent_of_memtotal);
    tcase_add_test(tc, test_tracker_free_ignores_null);
    suite_add_tcase(s, tc);

    tc = test_case("parse_size");
    tcase_add_test(tc, test_parse_size_reads_a_plain_integer_as_bytes);
    tcase_add_test(tc, test_parse_size_reads_gib_after_a_space);
    tcase_add_test(tc, test_parse_size_reads_a_decimal_number_of_kib);
    tcase_add_test(tc, test_parse_size_reads_a_unit_letter_without_space);
    tcase_add_test(tc, test_parse_size_ignores_surrounding_spaces_and_unit_case);
    tcase_add_test(tc, test_parse_size_treats_kb_as_1024_bytes);
    tcase_add_test(tc, test_parse_size_reads_every_unit_as_a_power_of_1024);
    tcase_add_test(tc, test_parse_size_rounds_fractions_down);
    tcase_add_test(tc, test_parse_size_is_exact_for_large_integers);
    tcase_add_test(tc, test_parse_size_accepts_the_largest_whole_tib);
    tcase_add_test(tc, test_parse_size_ignores_fraction_digits_beyond_the_nineteenth);
    tcase_add_test(tc, test_parse_size_accepts_a_tab_between_number_and_unit);
    tcase_add_test(tc, test_parse_size_rejects_empty_text);
    tcase_add_test(tc, test_parse_size_rejects_a_sign);
    tcase_add_test(tc, test_parse_size_rejects_an_unknown_unit);
    tcase_add_test(tc, test_parse_size_rejects_a_malformed_number);
    tcase_add_test(tc, test_parse_size_rejects_a_missing_number);
    tcase_add_test(tc, test_parse_size_rejects_trailing_garbage);
    tcase_add_test(tc, test_parse_size_reports_overflow);
    tcase_add_test(tc, test_parse_size_rejects_null_arguments);
    tcase_add_test(tc, test_parse_size_leaves_out_untouched_on_failure);
    suite_add_tcase(s, tc);

    tc = test_case("strerror");
    tcase_add_test(tc, test_strerror_describes_every_error_code);
    tcase_add_test(tc, test_strerror_gives_each_code_its_own_text);
    tcase_add_test(tc, test_strerror_says_success_for_zero);
    tcase_add_test(tc, test_strerror_says_unknown_error_for_other_values);
    tcase_add_test(tc, test_version_matches_the_header);
    suite_add_tcase(s, tc);

    tc = test_case("clock");
    tcase_add_test(tc, test_memq_now_never_goes_backwards);
    tcase_add_test(tc, test_tracker_now_reads_the_configured_clock);
    tcase_add_test(tc, test_tracker_now_defaults_to_memq_now);
    tcase_add_test(tc, test_tracker_now_is_zero_for_null);
    suite_add_tcase(s, tc);

    tc = test_case("reconfigure");
    tcase_add_test(tc, test_reconfigure_applies_new_marks_at_once);
    tcase_add_test(tc, test_reconfigure_rejects_a_bad_config_and_changes_nothing);
    tcase_add_test(tc, test_reconfigure_cannot_change_the_reclaim_mode);
    tcase_add_test(tc, test_reconfigure_cannot_switch_to_unlimited);
    tcase_add_test(tc, test_reconfigure_cannot_switch_from_unlimited);
    tcase_add_test(tc, test_reconfigure_rejects_null_arguments);
    suite_add_tcase(s, tc);

    tc = test_case("unlimited");
    tcase_add_test(tc, test_unlimited_tracker_accepts_claims_and_releases);
    tcase_add_test(tc, test_unlimited_tracker_used_is_the_sum_of_claims);
    tcase_add_test(tc, test_unlimited_tracker_never_reclaims);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
