/*
 * check_auto_max.c - MEMQ_AUTO: the high-water mark derived from the
 * machine's memory and its cgroup limit.
 *
 * The files are read under a fake root directory, so each test builds the
 * /proc and /sys it needs.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)

static char root[64];

static void write_file(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    /* mkdir -p the parent */
    for (char *s = strchr(path + strlen(root) + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
        *s = '\0';
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static void meminfo(uint64_t bytes)
{
    char text[128];
    snprintf(text, sizeof text, "MemTotal:       %llu kB\nMemFree:  1 kB\n",
             (unsigned long long)(bytes / 1024));
    write_file("proc/meminfo", text);
}

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/memq-auto-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_quota_is_three_quarters_of_memory_below_8_gib)
{
    ck_assert_uint_eq(memq__auto_max_from(4 * GIB), 3 * GIB);
    ck_assert_uint_eq(memq__auto_max_from(1 * GIB), 768 * MIB);
    ck_assert_uint_eq(memq__auto_max_from(8 * GIB), 6 * GIB);
}
END_TEST

START_TEST(test_quota_adds_forty_percent_above_8_gib_and_caps_at_8_gib)
{
    ck_assert_uint_eq(memq__auto_max_from(13 * GIB), 8 * GIB);
    ck_assert_uint_eq(memq__auto_max_from(10 * GIB), 6 * GIB + 4 * GIB / 5);
    ck_assert_uint_eq(memq__auto_max_from(64 * GIB), 8 * GIB);
}
END_TEST

START_TEST(test_quota_never_decreases_as_memory_grows)
{
    size_t prev = 0;
    for (uint64_t m = 64 * MIB; m <= 32 * GIB; m += 64 * MIB) {
        size_t q = memq__auto_max_from(m);
        ck_assert_uint_ge(q, prev);
        prev = q;
    }
    /* Where C Tor's formula drops (5.9 GiB at 7.9 GiB, 3.2 GiB at 8 GiB). */
    ck_assert_uint_ge(memq__auto_max_from(8 * GIB), memq__auto_max_from(8 * GIB - 100 * MIB));
}
END_TEST

START_TEST(test_meminfo_alone_sets_the_quota)
{
    meminfo(4 * GIB);
    ck_assert_uint_eq(memq__auto_max_at(root), 3 * GIB);
}
END_TEST

START_TEST(test_cgroup_v2_limit_below_memory_wins)
{
    meminfo(16 * GIB);
    write_file("proc/self/cgroup", "0::/daemon.slice/relay\n");
    write_file("sys/fs/cgroup/daemon.slice/relay/memory.max", "max\n");
    write_file("sys/fs/cgroup/daemon.slice/memory.max", "2147483648\n");
    ck_assert_uint_eq(memq__auto_max_at(root), 3 * GIB / 2);
}
END_TEST

START_TEST(test_cgroup_v2_without_limit_leaves_memory)
{
    meminfo(2 * GIB);
    write_file("proc/self/cgroup", "0::/\n");
    write_file("sys/fs/cgroup/memory.max", "max\n");
    ck_assert_uint_eq(memq__auto_max_at(root), 3 * GIB / 2);
}
END_TEST

START_TEST(test_cgroup_v1_limit_below_memory_wins)
{
    meminfo(16 * GIB);
    write_file("proc/self/cgroup", "5:cpu,cpuacct:/x\n4:memory:/jail\n0::/\n");
    write_file("sys/fs/cgroup/memory/jail/memory.limit_in_bytes", "1073741824\n");
    ck_assert_uint_eq(memq__auto_max_at(root), 768 * MIB);
}
END_TEST

START_TEST(test_cgroup_v1_unlimited_value_is_ignored)
{
    meminfo(4 * GIB);
    write_file("proc/self/cgroup", "4:memory:/\n");
    write_file("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    ck_assert_uint_eq(memq__auto_max_at(root), 3 * GIB);
}
END_TEST

START_TEST(test_unreadable_memory_gives_zero_and_auto_config_is_rejected_cleanly)
{
    ck_assert_uint_eq(memq__auto_max_at(root), 0);
}
END_TEST

START_TEST(test_this_machine_has_an_auto_quota)
{
    memq_config cfg;
    memq_config_init(&cfg);
    memq_config resolved;
    ck_assert_uint_gt(memq_auto_max(), 0);
    ck_assert_int_eq(memq__config_resolve(&cfg, &resolved, NULL, 0), 0);
    ck_assert_uint_eq(resolved.max, memq_auto_max());
    ck_assert_uint_lt(resolved.low_water, resolved.max);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auto_max");
    TCase *tc = tcase_create("auto_max");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_quota_is_three_quarters_of_memory_below_8_gib);
    tcase_add_test(tc, test_quota_adds_forty_percent_above_8_gib_and_caps_at_8_gib);
    tcase_add_test(tc, test_quota_never_decreases_as_memory_grows);
    tcase_add_test(tc, test_meminfo_alone_sets_the_quota);
    tcase_add_test(tc, test_cgroup_v2_limit_below_memory_wins);
    tcase_add_test(tc, test_cgroup_v2_without_limit_leaves_memory);
    tcase_add_test(tc, test_cgroup_v1_limit_below_memory_wins);
    tcase_add_test(tc, test_cgroup_v1_unlimited_value_is_ignored);
    tcase_add_test(tc, test_unreadable_memory_gives_zero_and_auto_config_is_rejected_cleanly);
    tcase_add_test(tc, test_this_machine_has_an_auto_quota);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
