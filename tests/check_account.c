/*
 * check_account.c - the account tree: creation, parents and cycles,
 * reference counting and closing, ids and the weak lookup, names.
 */
#include "testutil.h"

#include "internal.h" /* the steps closing takes */

/* Close account a (which the world keeps referenced) the way reclamation
 * does: its only participant answers COLLAPSING. */
static void collapse_by_reclaim(fake_world *w, memq_account *a, fake_part *fp, int id)
{
    part_add(w, fp, id, a);
    fp->answer = MEMQ_RECLAIMED_COLLAPSING;
    ck_assert_int_eq(part_claim_at(fp, w->cfg.max + 1, world_now(w) + MS), 0);
    ck_assert_int_eq(world_reclaim(w), 0);
    ck_assert(memq_account_closed(a));
}

/* ----------------------------------------------------------------------
 * Creation
 * ---------------------------------------------------------------------- */

START_TEST(test_new_account_is_open_and_empty)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert(!memq_account_closed(a));
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_ptr_eq(memq_account_tracker(a), w.t);
    world_teardown(&w);
}
END_TEST

START_TEST(test_new_account_under_a_parent_is_open)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *parent = world_account(&w, NULL);
    memq_account *child = world_account(&w, parent);
    ck_assert(!memq_account_closed(child));
    ck_assert_uint_ne(memq_account_id(child), memq_account_id(parent));
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_new_rejects_null_arguments)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *sentinel = (memq_account *)&w;
    memq_account *a = sentinel;
    ck_assert_int_eq(memq_account_new(NULL, NULL, &a), MEMQ_EINVAL);
    ck_assert_ptr_eq(a, sentinel);
    ck_assert_int_eq(memq_account_new(w.t, NULL, NULL), MEMQ_EINVAL);
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_new_rejects_a_parent_of_another_tracker)
{
    fake_world w1, w2;
    world_new(&w1, 10000, 5000);
    world_new(&w2, 10000, 5000);
    memq_account *foreign = world_account(&w2, NULL);
    memq_account *sentinel = (memq_account *)&w1;
    memq_account *a = sentinel;
    ck_assert_int_eq(memq_account_new(w1.t, foreign, &a), MEMQ_EINVAL);
    ck_assert_ptr_eq(a, sentinel);
    world_teardown(&w1);
    world_teardown(&w2);
}
END_TEST

START_TEST(test_account_new_under_a_closed_parent_fails_with_eclosed)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *parent = world_account(&w, NULL);
    fake_part fp;
    collapse_by_reclaim(&w, parent, &fp, 1);
    memq_account *a = NULL;
    ck_assert_int_eq(memq_account_new(w.t, parent, &a), MEMQ_ECLOSED);
    ck_assert_ptr_null(a);
    world_teardown(&w);
}
END_TEST

START_TEST(test_stats_count_open_accounts)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    world_account(&w, a);
    world_account(&w, NULL);
    ck_assert_uint_eq(world_stats(&w).accounts, 3);
    world_unref(&w, a);
    ck_assert_uint_eq(world_stats(&w).accounts, 2);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Ids and the weak lookup
 * ---------------------------------------------------------------------- */

START_TEST(test_account_ids_are_nonzero_and_distinct)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    uint64_t ids[50];
    for (int i = 0; i < 50; i++) {
        ids[i] = memq_account_id(world_account(&w, i ? w.accounts[0] : NULL));
        ck_assert_uint_ne(ids[i], 0);
        for (int j = 0; j < i; j++)
            ck_assert_uint_ne(ids[i], ids[j]);
    }
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_ids_are_never_reused_after_close)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    uint64_t ids[100];
    for (int i = 0; i < 50; i++) {
        memq_account *a = world_account(&w, NULL);
        ids[i] = memq_account_id(a);
        world_unref(&w, a);
    }
    for (int i = 50; i < 100; i++) {
        ids[i] = memq_account_id(world_account(&w, NULL));
        for (int j = 0; j < i; j++)
            ck_assert_uint_ne(ids[i], ids[j]);
    }
    world_teardown(&w);
}
END_TEST

START_TEST(test_find_returns_the_same_account_with_a_new_reference)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    memq_account *found = memq_account_find(w.t, memq_account_id(a));
    ck_assert_ptr_eq(found, a);
    world_unref(&w, a); /* the found reference keeps it open */
    ck_assert(!memq_account_closed(found));
    ck_assert_uint_eq(world_stats(&w).accounts, 1);
    memq_account_unref(found);
    ck_assert_uint_eq(world_stats(&w).accounts, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_find_returns_null_for_an_unknown_id)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_ptr_null(memq_account_find(w.t, memq_account_id(a) + 1000));
    ck_assert_ptr_null(memq_account_find(w.t, 0));
    ck_assert_ptr_null(memq_account_find(NULL, memq_account_id(a)));
    world_teardown(&w);
}
END_TEST

START_TEST(test_find_returns_null_after_the_last_unref)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    uint64_t id = memq_account_id(a);
    world_unref(&w, a);
    ck_assert_ptr_null(memq_account_find(w.t, id));
    world_teardown(&w);
}
END_TEST

START_TEST(test_find_returns_null_for_a_collapsed_account_still_referenced)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    collapse_by_reclaim(&w, a, &fp, 1);
    ck_assert_ptr_null(memq_account_find(w.t, memq_account_id(a)));
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * References and closing
 * ---------------------------------------------------------------------- */

START_TEST(test_ref_returns_the_same_handle)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_ptr_eq(memq_account_ref(a), a);
    memq_account_unref(a);
    ck_assert_ptr_null(memq_account_ref(NULL));
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_stays_open_until_its_last_unref)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    memq_account_ref(a);
    memq_account_ref(a);
    memq_account_unref(a);
    memq_account_unref(a);
    ck_assert(!memq_account_closed(a));
    fake_part fp;
    part_add(&w, &fp, 1, a);
    ck_assert_int_eq(memq_claim(fp.p, 10), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_last_unref_releases_what_participants_claim)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    memq_account *other = world_account(&w, NULL);
    fake_part fa1, fa2, fo;
    part_add(&w, &fa1, 1, a);
    part_add(&w, &fa2, 2, a);
    part_add(&w, &fo, 3, other);
    ck_assert_int_eq(memq_claim(fa1.p, 300), 0);
    ck_assert_int_eq(memq_claim(fa2.p, 200), 0);
    ck_assert_int_eq(memq_claim(fo.p, 70), 0);
    world_unref(&w, a);
    ck_assert_uint_eq(memq_tracker_used(w.t), 70);
    ck_assert_uint_eq(memq_participation_claimed(fa1.p), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_last_unref_makes_participant_claims_fail_with_eclosed)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    part_add(&w, &fp, 1, a);
    ck_assert_int_eq(memq_claim(fp.p, 10), 0);
    world_unref(&w, a);
    ck_assert_int_eq(memq_claim(fp.p, 10), MEMQ_ECLOSED);
    ck_assert_int_eq(memq_claim(fp.p, 0), MEMQ_ECLOSED);
    memq_release(fp.p, 10); /* harmless */
    ck_assert_uint_eq(memq_tracker_used(w.t), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_participation_handle_survives_its_accounts_last_unref)
{
    /* Participations registered before the last unref stay valid memory:
     * they can be queried and freed after the account is gone. */
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    part_add(&w, &fp, 1, a);
    world_unref(&w, a);
    ck_assert_uint_eq(memq_participation_claimed(fp.p), 0);
    part_free(&fp);
    ck_assert_uint_eq(world_stats(&w).participants, 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unref_of_an_account_without_references_is_counted_as_misuse)
{
    /* A participation keeps the closed account's memory alive, so the
     * extra unref is detectable. */
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    part_add(&w, &fp, 1, a);
    world_unref(&w, a);
    uint64_t before = world_stats(&w).misuse_events;
    memq_account_unref(a);
    ck_assert_uint_eq(world_stats(&w).misuse_events, before + 1);
    world_teardown(&w);
}
END_TEST

START_TEST(test_unref_ignores_null)
{
    memq_account_unref(NULL);
}
END_TEST

START_TEST(test_collapsed_account_reports_closed_while_referenced)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    collapse_by_reclaim(&w, a, &fp, 1);
    ck_assert(memq_account_closed(a));
    ck_assert_uint_eq(memq_account_used(a), 0);
    ck_assert_ptr_eq(memq_account_ref(a), a); /* works on a closed account */
    memq_account_unref(a);
    world_teardown(&w);
}
END_TEST

START_TEST(test_register_on_a_closed_account_fails_with_eclosed)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    collapse_by_reclaim(&w, a, &fp, 1);
    memq_participation *sentinel = (memq_participation *)&w;
    memq_participation *p = sentinel;
    ck_assert_int_eq(memq_participant_register(a, fake_ops(), &fp, &p), MEMQ_ECLOSED);
    ck_assert_ptr_eq(p, sentinel);
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Parents
 * ---------------------------------------------------------------------- */

START_TEST(test_add_parent_accepts_a_second_parent)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *p1 = world_account(&w, NULL);
    memq_account *p2 = world_account(&w, NULL);
    memq_account *child = world_account(&w, p1);
    ck_assert_int_eq(memq_account_add_parent(child, p2), 0);
    ck_assert_int_eq(memq_account_add_parent(child, p2), MEMQ_EEXIST);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_an_existing_parent_with_eexist)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *parent = world_account(&w, NULL);
    memq_account *child = world_account(&w, parent);
    ck_assert_int_eq(memq_account_add_parent(child, parent), MEMQ_EEXIST);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_the_account_itself_with_ecycle)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_account_add_parent(a, a), MEMQ_ECYCLE);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_a_child_with_ecycle)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    memq_account *child = world_account(&w, a);
    ck_assert_int_eq(memq_account_add_parent(a, child), MEMQ_ECYCLE);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_a_deep_descendant_with_ecycle)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *root = world_account(&w, NULL);
    memq_account *other = world_account(&w, NULL);
    memq_account *mid = world_account(&w, root);
    memq_account *leaf = world_account(&w, other);
    /* root -> mid -> leaf via a second parent, so the path is not the
     * first-parent chain. */
    ck_assert_int_eq(memq_account_add_parent(leaf, mid), 0);
    ck_assert_int_eq(memq_account_add_parent(root, leaf), MEMQ_ECYCLE);
    ck_assert_int_eq(memq_account_add_parent(other, leaf), MEMQ_ECYCLE);
    world_teardown(&w);
}
END_TEST

/* Walks mark the accounts they visit with a number that grows by one per
 * walk; after 2^32 walks it wraps, and every old mark is forgotten so that
 * no account looks visited.  A cycle is still found across the wrap. */
START_TEST(test_cycles_are_still_found_when_the_walk_marks_wrap)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *root = world_account(&w, NULL);
    memq_account *mid = world_account(&w, root);
    memq_account *leaf = world_account(&w, mid);
    pthread_mutex_lock(&w.t->lock);
    w.t->visit = UINT32_MAX; /* the next walk wraps */
    leaf->visit = 1;         /* a stale mark the wrapped walk would take as its own */
    pthread_mutex_unlock(&w.t->lock);
    ck_assert_int_eq(memq_account_add_parent(root, leaf), MEMQ_ECYCLE);
    ck_assert_uint_eq(w.t->visit, 1);
    ck_assert_int_eq(memq_account_add_parent(root, mid), MEMQ_ECYCLE);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_accepts_a_diamond)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *root = world_account(&w, NULL);
    memq_account *left = world_account(&w, root);
    memq_account *right = world_account(&w, root);
    memq_account *bottom = world_account(&w, left);
    ck_assert_int_eq(memq_account_add_parent(bottom, right), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_accounts_of_different_trackers)
{
    fake_world w1, w2;
    world_new(&w1, 10000, 5000);
    world_new(&w2, 10000, 5000);
    memq_account *a = world_account(&w1, NULL);
    memq_account *b = world_account(&w2, NULL);
    ck_assert_int_eq(memq_account_add_parent(a, b), MEMQ_EINVAL);
    world_teardown(&w1);
    world_teardown(&w2);
}
END_TEST

START_TEST(test_add_parent_rejects_null_accounts)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_account_add_parent(a, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_account_add_parent(NULL, a), MEMQ_EINVAL);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_a_closed_parent_with_eclosed)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *closed = world_account(&w, NULL);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    collapse_by_reclaim(&w, closed, &fp, 1);
    ck_assert_int_eq(memq_account_add_parent(a, closed), MEMQ_ECLOSED);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_rejects_a_closed_child_with_eclosed)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *closed = world_account(&w, NULL);
    memq_account *parent = world_account(&w, NULL);
    fake_part fp;
    collapse_by_reclaim(&w, closed, &fp, 1);
    ck_assert_int_eq(memq_account_add_parent(closed, parent), MEMQ_ECLOSED);
    world_teardown(&w);
}
END_TEST

START_TEST(test_add_parent_after_shutdown_fails_with_eshutdown)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    memq_account *b = world_account(&w, NULL);
    memq_tracker_free(w.t);
    w.t = NULL;
    ck_assert_int_eq(memq_account_add_parent(a, b), MEMQ_ESHUTDOWN);
    ck_assert(memq_account_closed(a));
    world_teardown(&w);
}
END_TEST

START_TEST(test_register_after_shutdown_fails_with_eshutdown)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    memq_tracker_free(w.t);
    w.t = NULL;
    fake_part fp;
    memset(&fp, 0, sizeof fp);
    memq_participation *p = NULL;
    ck_assert_int_eq(memq_participant_register(a, fake_ops(), &fp, &p), MEMQ_ESHUTDOWN);
    ck_assert_ptr_null(p);
    world_teardown(&w);
}
END_TEST

START_TEST(test_child_stays_open_when_its_parent_closes)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *parent = world_account(&w, NULL);
    memq_account *child = world_account(&w, parent);
    fake_part fp;
    part_add(&w, &fp, 1, child);
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    world_unref(&w, parent);
    ck_assert(!memq_account_closed(child));
    ck_assert_uint_eq(memq_account_used(child), 100);
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    ck_assert_uint_eq(memq_tracker_used(w.t), 200);
    world_teardown(&w);
}
END_TEST

START_TEST(test_child_of_a_closed_parent_is_no_longer_a_descendant_of_its_grandparent)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *grandparent = world_account(&w, NULL);
    memq_account *parent = world_account(&w, grandparent);
    memq_account *child = world_account(&w, parent);
    ck_assert_int_eq(memq_account_add_parent(grandparent, child), MEMQ_ECYCLE);
    world_unref(&w, parent);
    /* The link grandparent -> parent -> child is gone with parent. */
    ck_assert_int_eq(memq_account_add_parent(grandparent, child), 0);
    world_teardown(&w);
}
END_TEST

START_TEST(test_closed_parent_no_longer_takes_its_former_child_when_reclaimed)
{
    fake_world w;
    world_new(&w, 250, 150);
    fake_part fg, fp, fc;
    /* Reclaiming the grandparent alone reaches low water: the former
     * grandchild would only be asked if it were still a descendant. */
    memq_account *grandparent = world_holder(&w, &fg, 1, NULL, WORLD_START_TIME + 1 * MS, 200);
    memq_account *parent = world_account(&w, grandparent);
    part_add(&w, &fp, 2, parent);
    world_holder(&w, &fc, 3, parent, WORLD_START_TIME + 2 * MS, 50);
    world_unref(&w, parent);
    fake_part other;
    world_holder(&w, &other, 4, NULL, WORLD_START_TIME + 3 * MS, 50);
    ck_assert_int_eq(world_reclaim(&w), 0);
    ck_assert_int_eq(world_call_index(&w, 1), 0); /* grandparent is the victim */
    ck_assert_int_eq(fc.calls, 0);                /* and no longer takes the child */
    world_teardown(&w);
}
END_TEST

/* ----------------------------------------------------------------------
 * Usage and names
 * ---------------------------------------------------------------------- */

START_TEST(test_account_used_counts_own_claims_not_descendants)
{
    fake_world w;
    world_new(&w, 1 * MIB, 512 * KIB);
    memq_account *parent = world_account(&w, NULL);
    memq_account *child = world_account(&w, parent);
    fake_part p1, p2, c1;
    part_add(&w, &p1, 1, parent);
    part_add(&w, &p2, 2, parent);
    part_add(&w, &c1, 3, child);
    ck_assert_int_eq(memq_claim(p1.p, 100), 0);
    ck_assert_int_eq(memq_claim(p2.p, 20), 0);
    ck_assert_int_eq(memq_claim(c1.p, 5000), 0);
    memq_release(p1.p, 1);
    ck_assert_uint_eq(memq_account_used(parent), 119);
    ck_assert_uint_eq(memq_account_used(child), 5000);
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_used_excludes_participation_caches)
{
    fake_world w;
    world_init(&w, 1 * MIB, 512 * KIB);
    w.cfg.cache_max = 16 * KIB;
    world_start(&w);
    memq_account *a = world_account(&w, NULL);
    fake_part fp;
    part_add(&w, &fp, 1, a);
    ck_assert_int_eq(memq_claim(fp.p, 100), 0);
    ck_assert_uint_eq(memq_account_used(a), 100);
    world_teardown(&w);
}
END_TEST

START_TEST(test_account_accessors_handle_null)
{
    ck_assert_uint_eq(memq_account_id(NULL), 0);
    ck_assert(memq_account_closed(NULL));
    ck_assert_uint_eq(memq_account_used(NULL), 0);
    ck_assert_ptr_null(memq_account_tracker(NULL));
}
END_TEST

START_TEST(test_set_name_appears_in_the_dump)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_account_set_name(a, "circuit-42"), 0);
    char *text = dump_to_string(w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_ptr_nonnull(strstr(text, "circuit-42"));
    free(text);
    world_teardown(&w);
}
END_TEST

START_TEST(test_set_name_copies_the_name)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    char name[] = "original-name";
    ck_assert_int_eq(memq_account_set_name(a, name), 0);
    memcpy(name, "overwritten!!", sizeof name);
    char *text = dump_to_string(w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_ptr_nonnull(strstr(text, "original-name"));
    ck_assert_ptr_null(strstr(text, "overwritten"));
    free(text);
    world_teardown(&w);
}
END_TEST

START_TEST(test_set_name_replaces_and_null_clears_the_name)
{
    fake_world w;
    world_new(&w, 10000, 5000);
    memq_account *a = world_account(&w, NULL);
    ck_assert_int_eq(memq_account_set_name(a, "first-name"), 0);
    ck_assert_int_eq(memq_account_set_name(a, "second-name"), 0);
    char *text = dump_to_string(w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_ptr_null(strstr(text, "first-name"));
    ck_assert_ptr_nonnull(strstr(text, "second-name"));
    free(text);
    ck_assert_int_eq(memq_account_set_name(a, NULL), 0);
    text = dump_to_string(w.t, MEMQ_DUMP_TEXT, NULL);
    ck_assert_ptr_null(strstr(text, "second-name"));
    free(text);
    world_teardown(&w);
}
END_TEST

START_TEST(test_set_name_rejects_a_null_account)
{
    ck_assert_int_eq(memq_account_set_name(NULL, "x"), MEMQ_EINVAL);
}
END_TEST

/* Linking and unlinking visit a bounded number of list entries per
 * account, however many children a parent has: closing n children of one
 * parent costs O(n), not O(n^2). */
static uint64_t steps_to_close_children(int n)
{
    fake_world w;
    world_new(&w, 1 * GIB, 0);
    memq_account *parent = world_account(&w, NULL);
    memq_account **children = calloc((size_t)n, sizeof *children);
    ck_assert_ptr_nonnull(children);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(memq_account_new(w.t, parent, &children[i]), 0);
    uint64_t before = w.t->link_steps;
    for (int i = 0; i < n; i++)
        memq_account_unref(children[i]); /* in creation order, the worst for a scan */
    uint64_t steps = w.t->link_steps - before;
    free(children);
    world_teardown(&w);
    return steps;
}

START_TEST(test_closing_the_children_of_one_parent_costs_linear_steps)
{
    uint64_t small = steps_to_close_children(2000), large = steps_to_close_children(8000);
    ck_assert_uint_le(large, 4 * 8000);
    ck_assert_uint_le(large, 5 * (small > 0 ? small : 1));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("account");
    TCase *tc;

    tc = test_case("create");
    tcase_add_test(tc, test_new_account_is_open_and_empty);
    tcase_add_test(tc, test_new_account_under_a_parent_is_open);
    tcase_add_test(tc, test_account_new_rejects_null_arguments);
    tcase_add_test(tc, test_account_new_rejects_a_parent_of_another_tracker);
    tcase_add_test(tc, test_account_new_under_a_closed_parent_fails_with_eclosed);
    tcase_add_test(tc, test_stats_count_open_accounts);
    suite_add_tcase(s, tc);

    tc = test_case("ids");
    tcase_add_test(tc, test_account_ids_are_nonzero_and_distinct);
    tcase_add_test(tc, test_account_ids_are_never_reused_after_close);
    tcase_add_test(tc, test_find_returns_the_same_account_with_a_new_reference);
    tcase_add_test(tc, test_find_returns_null_for_an_unknown_id);
    tcase_add_test(tc, test_find_returns_null_after_the_last_unref);
    tcase_add_test(tc, test_find_returns_null_for_a_collapsed_account_still_referenced);
    suite_add_tcase(s, tc);

    tc = test_case("references");
    tcase_add_test(tc, test_ref_returns_the_same_handle);
    tcase_add_test(tc, test_account_stays_open_until_its_last_unref);
    tcase_add_test(tc, test_last_unref_releases_what_participants_claim);
    tcase_add_test(tc, test_last_unref_makes_participant_claims_fail_with_eclosed);
    tcase_add_test(tc, test_participation_handle_survives_its_accounts_last_unref);
    tcase_add_test(tc, test_unref_of_an_account_without_references_is_counted_as_misuse);
    tcase_add_test(tc, test_unref_ignores_null);
    tcase_add_test(tc, test_collapsed_account_reports_closed_while_referenced);
    tcase_add_test(tc, test_register_on_a_closed_account_fails_with_eclosed);
    suite_add_tcase(s, tc);

    tc = test_case("parents");
    tcase_add_test(tc, test_add_parent_accepts_a_second_parent);
    tcase_add_test(tc, test_add_parent_rejects_an_existing_parent_with_eexist);
    tcase_add_test(tc, test_add_parent_rejects_the_account_itself_with_ecycle);
    tcase_add_test(tc, test_add_parent_rejects_a_child_with_ecycle);
    tcase_add_test(tc, test_add_parent_rejects_a_deep_descendant_with_ecycle);
    tcase_add_test(tc, test_cycles_are_still_found_when_the_walk_marks_wrap);
    tcase_add_test(tc, test_add_parent_accepts_a_diamond);
    tcase_add_test(tc, test_add_parent_rejects_accounts_of_different_trackers);
    tcase_add_test(tc, test_add_parent_rejects_null_accounts);
    tcase_add_test(tc, test_add_parent_rejects_a_closed_parent_with_eclosed);
    tcase_add_test(tc, test_add_parent_rejects_a_closed_child_with_eclosed);
    tcase_add_test(tc, test_add_parent_after_shutdown_fails_with_eshutdown);
    tcase_add_test(tc, test_register_after_shutdown_fails_with_eshutdown);
    tcase_add_test(tc, test_child_stays_open_when_its_parent_closes);
    tcase_add_test(tc, test_child_of_a_closed_parent_is_no_longer_a_descendant_of_its_grandparent);
    tcase_add_test(tc, test_closed_parent_no_longer_takes_its_former_child_when_reclaimed);
    suite_add_tcase(s, tc);

    tc = test_case("usage_and_names");
    tcase_add_test(tc, test_account_used_counts_own_claims_not_descendants);
    tcase_add_test(tc, test_account_used_excludes_participation_caches);
    tcase_add_test(tc, test_account_accessors_handle_null);
    tcase_add_test(tc, test_set_name_appears_in_the_dump);
    tcase_add_test(tc, test_set_name_copies_the_name);
    tcase_add_test(tc, test_set_name_replaces_and_null_clears_the_name);
    tcase_add_test(tc, test_set_name_rejects_a_null_account);
    tcase_add_test(tc, test_closing_the_children_of_one_parent_costs_linear_steps);
    suite_add_tcase(s, tc);

    return run_suite(s);
}
