/*
 * check_model.c - model-based testing: seeded random operations through
 * the interpreter of tests/model/, with the reference model's invariants
 * checked after every step, and the fuzzer's corpus and regression inputs
 * replayed.
 *
 * By default 100 runs of 2,000 operations each (seeds 1..100), each run a
 * fresh tracker.  A failure prints its seed; replay it with
 *     MEMQ_SEED=<n> MEMQ_MODEL_TRACE=1 build/tests/check_model
 * Other knobs: MEMQ_MODEL_SEEDS=<first>:<count> explores other seeds,
 * MEMQ_MODEL_STEPS=<n> changes the run length, MEMQ_MODEL_SAVE=<file>
 * (with MEMQ_SEED) writes the run's bytes for tests/fuzz/regressions/,
 * MEMQ_MODEL_SKIP=fd,candidates disables the checks of known defects while
 * triaging others (see model.h), MEMQ_MODEL_INPUT=<file> replays one
 * input (a fuzzer's crash file) instead of the seeds.
 */
#include "model/model.c"

#include <check.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_RUNS 100
#define DEFAULT_STEPS 2000
#define PARTS 4 /* the seeded runs are split in this many tests */

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *s = getenv(name);
    return s != NULL && *s != '\0' ? strtoull(s, NULL, 0) : dflt;
}

static size_t steps_per_run(void)
{
    return (size_t)env_u64("MEMQ_MODEL_STEPS", DEFAULT_STEPS);
}

static void seeds(uint64_t *first, uint64_t *count)
{
    const char *one = getenv("MEMQ_SEED");
    if (one != NULL && *one != '\0') {
        *first = strtoull(one, NULL, 0);
        *count = 1;
        return;
    }
    *first = 1;
    *count = DEFAULT_RUNS;
    const char *range = getenv("MEMQ_MODEL_SEEDS");
    if (range != NULL && *range != '\0') {
        char *end;
        *first = strtoull(range, &end, 0);
        if (*end == ':')
            *count = strtoull(end + 1, NULL, 0);
    }
}

/* Everything the runs exercised, summed: a model that stopped exercising
 * reclamation would pass vacuously. */
static mm_result total;

static void add_result(const mm_result *r)
{
    total.steps += r->steps;
    total.reclaim_calls += r->reclaim_calls;
    total.callbacks += r->callbacks;
    total.rounds += r->rounds;
    total.episodes += r->episodes;
    total.collapses += r->collapses;
    total.pendings += r->pendings;
    total.timeouts += r->timeouts;
    total.wakeups += r->wakeups;
    total.oldest_checks += r->oldest_checks;
    total.unreclaimable += r->unreclaimable;
}

static char *read_file(const char *path, size_t *len);

/* MEMQ_MODEL_INPUT=<file>: replay one input (a fuzzer crash) instead. */
static bool run_input(int part)
{
    const char *path = getenv("MEMQ_MODEL_INPUT");
    if (path == NULL || *path == '\0')
        return false;
    if (part == 0) {
        mm_options opt = {.trace = getenv("MEMQ_MODEL_TRACE") != NULL,
                          .skip = getenv("MEMQ_MODEL_SKIP")};
        size_t len = 0;
        char *data = read_file(path, &len);
        ck_assert_msg(data != NULL, "cannot read %s", path);
        mm_result r;
        mm_run_bytes((const uint8_t *)data, len, &opt, &r);
        free(data);
        ck_assert_msg(!r.failed, "%s failed: %s", path, r.message);
    }
    return true;
}

static void run_part(int part)
{
    if (run_input(part))
        return;
    uint64_t first, count;
    seeds(&first, &count);
    mm_options opt = {
        .trace = getenv("MEMQ_MODEL_TRACE") != NULL,
        .save_path = count == 1 ? getenv("MEMQ_MODEL_SAVE") : NULL,
        .skip = getenv("MEMQ_MODEL_SKIP"),
    };
    size_t steps = steps_per_run();
    memset(&total, 0, sizeof total);
    for (uint64_t i = (uint64_t)part; i < count; i += PARTS) {
        uint64_t seed = first + i;
        mm_result r;
        mm_run_seed(seed, steps, &opt, &r);
        add_result(&r);
        ck_assert_msg(!r.failed,
                      "seed %" PRIu64 " failed: %s\n"
                      "  replay: MEMQ_SEED=%" PRIu64 " MEMQ_MODEL_STEPS=%zu MEMQ_MODEL_TRACE=1 "
                      "build/tests/check_model",
                      seed, r.message, seed, steps);
    }
    if (count >= 20 && steps >= 1000) {
        ck_assert_uint_ge(total.steps, (uint64_t)(count / PARTS) * steps);
        ck_assert_uint_gt(total.callbacks, 1000);
        ck_assert_uint_gt(total.rounds, 100);
        ck_assert_uint_gt(total.episodes, 10);
        ck_assert_uint_gt(total.collapses, 10);
        ck_assert_uint_gt(total.pendings, 10);
        ck_assert_uint_gt(total.timeouts, 0);
        ck_assert_uint_gt(total.wakeups, 10);
        ck_assert_uint_gt(total.oldest_checks, 100);
        ck_assert_uint_gt(total.unreclaimable, 0);
    }
}

START_TEST(test_seeded_random_operations_keep_every_invariant)
{
    run_part(_i);
}
END_TEST

/* ---- the fuzzer's inputs ---- */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, k;
    do {
        if (n == cap) {
            cap = cap ? 2 * cap : 4096;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
    } while (k > 0);
    fclose(f);
    *len = n;
    return buf;
}

/* tests/fuzz/<sub>, found from this file's path (make runs from the top). */
static int replay_dir(const char *sub)
{
    char dir[512];
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    int dl = slash ? (int)(slash - file) : 1;
    snprintf(dir, sizeof dir, "%.*s/fuzz/%s", dl, slash ? file : ".", sub);
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    int n = 0, failed = 0;
    static char failures[4096];
    failures[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = 0;
        char *data = read_file(path, &len);
        if (data == NULL)
            continue;
        mm_result r;
        mm_run_bytes((const uint8_t *)data, len, NULL, &r);
        free(data);
        if (r.failed) {
            size_t k = strlen(failures);
            snprintf(failures + k, sizeof failures - k, "\n  %s: %s", e->d_name, r.message);
            failed++;
        }
        n++;
    }
    closedir(d);
    ck_assert_msg(failed == 0, "%d of %d inputs in %s fail:%s", failed, n, dir, failures);
    return n;
}

START_TEST(test_fuzz_corpus_replays_cleanly)
{
    ck_assert_int_gt(replay_dir("corpus"), 0);
}
END_TEST

START_TEST(test_fuzz_regression_inputs_replay_cleanly)
{
    replay_dir("regressions");
}
END_TEST

static Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("seeded");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_seeded_random_operations_keep_every_invariant, 0, PARTS);
    suite_add_tcase(s, tc);
    tc = tcase_create("fuzz inputs");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fuzz_corpus_replays_cleanly);
    tcase_add_test(tc, test_fuzz_regression_inputs_replay_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(model_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
