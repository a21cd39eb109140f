/* queue_example.c - two connections' output queues under a 256 KiB quota:
 * the peer that stops reading is reclaimed, the one that reads is spared. */
#include <memquota.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { CELL = 4096 };
struct conn { const char *name; memq_account *acct; memq_queue *out; int reclaimed; };

static void free_cell(void *cell, void *ctx) { (void)ctx; free(cell); }

/* The queue is already empty; a daemon would schedule the close here. */
static void on_collapse(void *ctx) { ((struct conn *)ctx)->reclaimed = 1; }

int main(void)
{
    struct conn conns[2] = {{"reading", NULL, NULL, 0}, {"stalled", NULL, NULL, 0}};
    memq_config cfg;
    memq_tracker *t;
    memq_config_init(&cfg);
    cfg.max = 256 * 1024;                      /* low water: 75%, 192 KiB */
    if (memq_tracker_new(&t, &cfg) != 0)
        return 1;
    for (int i = 0; i < 2; i++)
        if (memq_account_new(t, NULL, &conns[i].acct) != 0 ||
            memq_queue_new(conns[i].acct, MEMQ_QUEUE_COLLAPSE, free_cell, on_collapse,
                           &conns[i], &conns[i].out) != 0)
            return 1;
    for (int tick = 0; tick < 100; tick++) {
        for (int i = 0; i < 2; i++) {
            void *cell = calloc(1, CELL);
            if (cell && memq_queue_push(conns[i].out, cell, CELL) != 0)
                free(cell);                    /* refused: still ours */
        }
        if (memq_queue_len(conns[0].out) > 4)  /* this peer reads, a little late */
            free(memq_queue_pop(conns[0].out));
        memq_tracker_reclaim(t);               /* a daemon: when memq_tracker_fd() is readable */
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    for (int i = 0; i < 2; i++) {
        printf("%s: %s\n", conns[i].name, conns[i].reclaimed ? "reclaimed" : "alive");
        memq_queue_free(conns[i].out);
        memq_account_unref(conns[i].acct);
    }
    memq_tracker_free(t);
    return conns[1].reclaimed && !conns[0].reclaimed ? 0 : 1;
}
