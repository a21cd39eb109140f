/*
 * check_evhttp.c - memq_evhttp: an account per connection, evhttp's own
 * writes claimed, a stalled client reclaimed and closed through evhttp
 * while a prompt one is served, closed notices, connections closed on
 * request, and no connection, account or byte left behind after many
 * connections (ASan, valgrind).
 *
 * The server runs in the test's thread (loop_until()); clients are
 * threads with blocking sockets on the loopback.
 */
#include "event_helpers.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "failalloc.h" /* our allocations, made to fail */

/* ----------------------------------------------------------------------
 * The server
 * ---------------------------------------------------------------------- */

static unsigned char pattern[64 * KIB];

typedef struct server {
    struct event_base *base;
    memq_tracker *t;
    memq_event *ev;
    struct evhttp *http;
    memq_evhttp *mh;
    int port;
    int requests;
    uint64_t account_ids[8];
    int naccounts;
    size_t claimed_after_headers; /* /empty: the output's claim after the reply */
    size_t participants_seen;     /* /empty: the tracker's participants then */
    int nodelay;                  /* /data: TCP_NODELAY seen on the socket */
    int notsent_lowat;            /* /data: TCP_NOTSENT_LOWAT seen on the socket */
    long max_single_write;        /* /data: the bufferevent's */
    struct evhttp_request *held;  /* /hold */
    memq_evhttp_conn *last;       /* the connection of the last request */
    holder sibling;               /* /notice */
    bool sibling_used;
    int on_close_calls, on_reclaim_calls, data_freed;
    size_t gave; /* what the last reclaimed connection gave up */
    bool gave_oldest, gave_oldest_null;
    memq_evhttp_config cfg;       /* what memq_evhttp_new() was given */
    bool no_data;                 /* on_request sets no connection data */
    bool free_in_on_reclaim;      /* on_reclaim frees the evhttp connection */
    int track_rc, reply_rc;       /* on_request's last memq_evhttp_track() and 503 */
    char *dump;                   /* /name: the tracker's text dump */
    uint64_t dump_id;             /* /name: the connection's account */
    /* /sweep: a new memq_evhttp per request, tracking with the sweep_k-th
     * allocation failing. */
    unsigned sweep_k;
    int sweep_enomem, sweep_tolerated, sweep_bad;
} server;

static atomic_bool sweep_over; /* /sweep: an attempt without failure */
static memq_evhttp_stats http_stats(server *s);
static void sweep_step(server *s, struct evhttp_request *req);

static size_t query_size(const char *uri, const char *key)
{
    const char *p = strstr(uri, key);
    return p == NULL ? 0 : (size_t)strtoull(p + strlen(key), NULL, 10);
}

static void reply_data(server *s, struct evhttp_request *req, memq_evhttp_conn *c, size_t n)
{
    /* The body is built in a tracked buffer on the connection's account,
     * so it counts as it grows; the reply moves it to the output. */
    memq_evbuffer *body = NULL;
    if (memq_evbuffer_new(memq_evhttp_conn_account(c), NULL, NULL, &body) != 0) {
        memq_evhttp_send_reply(s->mh, req, 500, "Internal Server Error", NULL);
        return;
    }
    for (size_t left = n; left > 0;) {
        size_t piece = left < sizeof pattern ? left : sizeof pattern;
        if (memq_evbuffer_add(body, pattern, piece) != 0)
            break;
        left -= piece;
    }
    memq_evhttp_send_reply(s->mh, req, 200, "OK", memq_evbuffer_get(body));
    memq_evbuffer_free(body);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    server *s = arg;
    s->requests++;
    const char *uri = evhttp_request_get_uri(req);
    if (strcmp(uri, "/sweep") == 0) {
        sweep_step(s, req);
        return;
    }
    memq_evhttp_conn *c = NULL;
    int rc = memq_evhttp_track(s->mh, req, &c);
    s->track_rc = rc;
    if (rc != 0) {
        s->reply_rc = memq_evhttp_send_reply(s->mh, req, 503, "Service Unavailable", NULL);
        return;
    }
    s->last = c;
    uint64_t id = memq_account_id(memq_evhttp_conn_account(c));
    bool seen = false;
    for (int i = 0; i < s->naccounts; i++)
        seen |= s->account_ids[i] == id;
    if (!seen && s->naccounts < 8)
        s->account_ids[s->naccounts++] = id;
    if (!s->no_data && memq_evhttp_conn_get_data(c) == NULL) {
        int *data = malloc(sizeof *data);
        memq_evhttp_conn_set_data(c, data);
    }

    evutil_socket_t fd = bufferevent_getfd(
        evhttp_connection_get_bufferevent(evhttp_request_get_connection(req)));
    if (strncmp(uri, "/data", 5) == 0) {
        if (query_size(uri, "small=") != 0) {
            int small = 4096;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        }
        socklen_t len = sizeof s->nodelay;
        getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &s->nodelay, &len);
        len = sizeof s->notsent_lowat;
        getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &s->notsent_lowat, &len);
        s->participants_seen = stats_of(s->t).participants;
        s->max_single_write = (long)bufferevent_get_max_single_write(
            evhttp_connection_get_bufferevent(evhttp_request_get_connection(req)));
        reply_data(s, req, c, query_size(uri, "n="));
    } else if (strcmp(uri, "/empty") == 0) {
        memq_evhttp_send_reply(s->mh, req, 200, "OK", NULL);
        s->claimed_after_headers = memq_evhttp_conn_claimed(c);
        s->participants_seen = stats_of(s->t).participants;
    } else if (strcmp(uri, "/hold") == 0) {
        s->held = req;
    } else if (strcmp(uri, "/chunked") == 0) {
        /* An answer in chunks, the last one still to come. */
        evhttp_send_reply_start(req, 200, "OK");
        struct evbuffer *chunk = evbuffer_new();
        evbuffer_add(chunk, pattern, 1000);
        evhttp_send_reply_chunk(req, chunk);
        evbuffer_free(chunk);
        s->held = req;
    } else if (strcmp(uri, "/name") == 0) {
        free(s->dump);
        size_t len = 0;
        s->dump = NULL;
        FILE *f = open_memstream(&s->dump, &len);
        if (f != NULL) {
            memq_tracker_dump(s->t, f, MEMQ_DUMP_TEXT);
            fclose(f);
        }
        s->dump_id = memq_account_id(memq_evhttp_conn_account(c));
        memq_evhttp_send_reply(s->mh, req, 200, "OK", NULL);
    } else if (strcmp(uri, "/notice") == 0) {
        /* Older data than anything else, on the connection's account,
         * whose owner answers COLLAPSING. */
        holder_init(&s->sibling, s->t, memq_evhttp_conn_account(c), 's');
        s->sibling_used = true;
        holder_claim(&s->sibling, 3 * MIB, memq_now() - 10 * SECOND);
        reply_data(s, req, c, 100 * KIB);
    } else {
        memq_evhttp_send_reply(s->mh, req, 404, "Not Found", NULL);
    }
}

static void on_close(memq_evhttp_conn *c, void *ctx)
{
    server *s = ctx;
    s->on_close_calls++;
    if (s->last == c)
        s->last = NULL;
    void *data = memq_evhttp_conn_get_data(c);
    if (data != NULL) {
        free(data);
        s->data_freed++;
    }
}

static void on_reclaim(memq_evhttp_conn *c, void *ctx)
{
    server *s = ctx;
    s->on_reclaim_calls++;
    s->gave = memq_evhttp_conn_claimed(c);
    memq_time when;
    s->gave_oldest = memq_evhttp_conn_oldest(c, &when) && when <= memq_now();
    s->gave_oldest_null = memq_evhttp_conn_oldest(c, NULL);
    if (s->free_in_on_reclaim) /* what memquota/event.h forbids */
        evhttp_connection_free(memq_evhttp_conn_connection(c));
}

static bool server_fake_clock; /* the next server's tracker reads fake_now */

static void server_start(server *s, size_t max, size_t low_water, const memq_evhttp_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->base = event_base_new();
    ck_assert_ptr_nonnull(s->base);
    s->t = tracker_make(max, low_water, server_fake_clock);
    ck_assert_int_eq(memq_event_attach(s->t, s->base, 0, &s->ev), 0);
    s->http = evhttp_new(s->base);
    ck_assert_ptr_nonnull(s->http);
    evhttp_set_max_headers_size(s->http, 8192);
    evhttp_set_max_body_size(s->http, 4096);
    memq_evhttp_config c;
    if (cfg != NULL)
        c = *cfg;
    else
        memq_evhttp_config_init(&c);
    c.on_close = on_close;
    c.on_reclaim = on_reclaim;
    c.ctx = s;
    s->cfg = c;
    ck_assert_int_eq(memq_evhttp_new(s->t, s->http, &c, &s->mh), 0);
    evhttp_set_gencb(s->http, on_request, s);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(bound);
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    ck_assert_int_eq(getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&sin, &len),
                     0);
    s->port = ntohs(sin.sin_port);
}

static void server_stop(server *s)
{
    memq_evhttp_free(s->mh);
    evhttp_free(s->http);
    memq_event_detach(s->ev);
    if (s->sibling_used)
        holder_fini(&s->sibling);
    memq_tracker_free(s->t);
    event_base_free(s->base);
    free(s->dump);
}

/* /sweep: track the request's connection with a new memq_evhttp (the
 * previous one freed: the connection is untracked again, its table
 * empty), the sweep_k-th allocation failing.  A failure either refuses
 * the connection (MEMQ_ENOMEM, answered 503, nothing left) or is one the
 * library tolerates (the account's name, a nicety). */
static void sweep_step(server *s, struct evhttp_request *req)
{
    memq_evhttp_free(s->mh);
    s->mh = NULL;
    if (memq_evhttp_new(s->t, s->http, &s->cfg, &s->mh) != 0) {
        s->sweep_bad++;
        evhttp_send_reply(req, 500, "Internal Server Error", NULL);
        return;
    }
    memq_stats before = stats_of(s->t);
    fail_arm(++s->sweep_k);
    int rc = memq_evhttp_send_reply(s->mh, req, 200, "OK", NULL);
    bool failed = fail_disarm();
    memq_evhttp_stats st = http_stats(s);
    memq_stats after = stats_of(s->t);
    if (!failed) {
        atomic_store(&sweep_over, true);
        s->sweep_bad += rc != 0 || st.tracked != 1 || st.track_failures != 0;
    } else if (rc == 0) {
        s->sweep_tolerated++;
        s->sweep_bad += st.tracked != 1 || st.connections != 1;
    } else {
        s->sweep_enomem++;
        s->sweep_bad += rc != MEMQ_ENOMEM || st.track_failures != 1 || st.tracked != 0 ||
                        st.connections != 0 || after.accounts != before.accounts ||
                        after.participants != before.participants || after.used != before.used;
    }
}

static memq_evhttp_stats http_stats(server *s)
{
    memq_evhttp_stats st;
    memq_evhttp_get_stats(s->mh, &st);
    return st;
}

static bool no_connections(void *arg)
{
    return http_stats(arg).connections == 0;
}

/* ----------------------------------------------------------------------
 * Clients: blocking sockets in a thread
 * ---------------------------------------------------------------------- */

static int client_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {(time_t)(5 * slow_factor()), 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *text)
{
    size_t n = strlen(text);
    while (n > 0) {
        ssize_t w = send(fd, text, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        text += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read one response; returns its status (0 on error) and its body's
 * length in *body. */
static int read_response(int fd, size_t *body)
{
    char head[4096];
    size_t got = 0;
    char *end = NULL;
    while (end == NULL) {
        if (got == sizeof head - 1)
            return 0;
        ssize_t n = recv(fd, head + got, 1, 0); /* byte by byte: stop at the body */
        if (n <= 0)
            return 0;
        got++;
        head[got] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    const char *cl = strstr(head, "Content-Length: ");
    size_t want = cl != NULL ? (size_t)strtoull(cl + 16, NULL, 10) : 0;
    static __thread char buf[65536];
    size_t have = 0;
    while (have < want) {
        size_t ask = want - have < sizeof buf ? want - have : sizeof buf;
        ssize_t n = recv(fd, buf, ask, 0);
        if (n <= 0)
            return 0;
        have += (size_t)n;
    }
    *body = have;
    return status;
}

static int client_get(int fd, const char *path, const char *headers, size_t *body)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n", path,
             headers != NULL ? headers : "");
    if (!send_all(fd, req))
        return 0;
    return read_response(fd, body);
}

/* Read until end-of-file or an error; the bytes read. */
static size_t read_to_end(int fd, bool *reset)
{
    static __thread char buf[65536];
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        *reset = n < 0 && errno == ECONNRESET;
        return total;
    }
}

typedef struct client_run {
    int port;
    atomic_bool done;
    atomic_int ok, failed;
    atomic_size_t stalled_read;
    atomic_bool stalled_ended;
    atomic_bool stalled_reset;
} client_run;

static bool client_done(void *arg)
{
    client_run *r = arg;
    return atomic_load(&r->done);
}

/* ----------------------------------------------------------------------
 * Creation
 * ---------------------------------------------------------------------- */

START_TEST(test_new_rejects_bad_arguments)
{
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    memq_evhttp *h = (memq_evhttp *)&h;
    ck_assert_int_eq(memq_evhttp_new(NULL, http, NULL, &h), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evhttp_new(t, NULL, NULL, &h), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evhttp_new(t, http, NULL, NULL), MEMQ_EINVAL);
    memq_tracker *other = tracker_make(MIB, 0, false);
    memq_account *foreign;
    ck_assert_int_eq(memq_account_new(other, NULL, &foreign), 0);
    memq_evhttp_config cfg;
    memq_evhttp_config_init(&cfg);
    ck_assert(cfg.track_input && cfg.reset && cfg.nodelay);
    ck_assert_uint_eq(cfg.unsent_limit, 16384);
    ck_assert_uint_eq(cfg.max_single_write, 65536);
    cfg.parent = foreign;
    ck_assert_int_eq(memq_evhttp_new(t, http, &cfg, &h), MEMQ_EINVAL);
    ck_assert_ptr_eq(h, (memq_evhttp *)&h);
    ck_assert_int_eq(memq_evhttp_track(NULL, NULL, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evhttp_send_reply(NULL, NULL, 200, "OK", NULL), MEMQ_EINVAL);
    ck_assert_ptr_null(memq_evhttp_conn_account(NULL));
    ck_assert_ptr_null(memq_evhttp_conn_connection(NULL));
    ck_assert(memq_evhttp_conn_closed(NULL));
    ck_assert_uint_eq(memq_evhttp_conn_claimed(NULL), 0);
    ck_assert(!memq_evhttp_conn_oldest(NULL, NULL));
    ck_assert_ptr_null(memq_evhttp_conn_get_data(NULL));
    memq_evhttp_conn_set_data(NULL, NULL);
    memq_evhttp_conn_close(NULL);
    memq_evhttp_free(NULL);
    memq_evhttp_config_init(NULL);
    memq_evhttp_stats st;
    memset(&st, 0xff, sizeof st);
    memq_evhttp_get_stats(NULL, &st);
    ck_assert_uint_eq(st.tracked, 0);
    ck_assert_uint_eq(stats_of(t).accounts, 0);
    memq_account_unref(foreign);
    memq_tracker_free(other);
    evhttp_free(http);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

START_TEST(test_new_refuses_a_tracker_in_thread_mode_or_shut_down)
{
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    memq_config cfg;
    memq_config_init(&cfg);
    cfg.max = MIB;
    cfg.reclaim_mode = MEMQ_RECLAIM_THREAD;
    memq_tracker *threaded = NULL;
    ck_assert_int_eq(memq_tracker_new(&threaded, &cfg), 0);
    memq_evhttp *h = (memq_evhttp *)&h;
    ck_assert_int_eq(memq_evhttp_new(threaded, http, NULL, &h), MEMQ_EINVAL);
    ck_assert_ptr_eq(h, (memq_evhttp *)&h);
    ck_assert_uint_eq(stats_of(threaded).accounts, 0);
    memq_tracker_free(threaded);

    memq_tracker *t = tracker_make(MIB, 0, false);
    memq_account *keep;
    ck_assert_int_eq(memq_account_new(t, NULL, &keep), 0);
    memq_tracker_free(t); /* keep holds its memory */
    ck_assert_int_eq(memq_evhttp_new(t, http, NULL, &h), MEMQ_ESHUTDOWN);
    ck_assert_ptr_eq(h, (memq_evhttp *)&h);
    memq_account_unref(keep); /* the last handle: ASan sees no leak */
    evhttp_free(http);
    event_base_free(base);
}
END_TEST

/* Each allocation memq_evhttp_new() makes (the handle, its account, the
 * account's name) failing in turn: MEMQ_ENOMEM, nothing made. */
START_TEST(test_new_fails_cleanly_whichever_allocation_fails)
{
    if (!failures_work()) {
        fprintf(stderr, "check_evhttp: test_new_fails_cleanly_whichever_allocation_fails "
                        "skipped: malloc is not this program's (valgrind)\n");
        return;
    }
    memq_tracker *t = tracker_make(MIB, 0, false);
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    int failures = 0;
    memq_evhttp *h = NULL;
    for (unsigned k = 1; k < 50 && h == NULL; k++) {
        memq_evhttp *got = (memq_evhttp *)&got;
        fail_arm(k);
        int rc = memq_evhttp_new(t, http, NULL, &got);
        bool failed = fail_disarm();
        if (!failed) {
            ck_assert_int_eq(rc, 0);
            h = got;
            break;
        }
        failures++;
        ck_assert_msg(rc == MEMQ_ENOMEM, "allocation %u: %d", k, rc);
        ck_assert_ptr_eq(got, (memq_evhttp *)&got);
        ck_assert_uint_eq(stats_of(t).accounts, 0);
    }
    ck_assert_ptr_nonnull(h);
    ck_assert_int_ge(failures, 3);
    ck_assert_uint_eq(stats_of(t).accounts, 1);
    memq_evhttp_free(h);
    ck_assert_uint_eq(stats_of(t).accounts, 0);
    evhttp_free(http);
    event_base_free(base);
    memq_tracker_free(t);
}
END_TEST

/* ----------------------------------------------------------------------
 * Connections and accounts
 * ---------------------------------------------------------------------- */

static void *two_clients(void *arg)
{
    client_run *r = arg;
    int a = client_connect(r->port, 0), b = client_connect(r->port, 0);
    size_t len = 0;
    for (int i = 0; i < 2; i++) {
        if (client_get(a, "/data?n=1000", NULL, &len) == 200 && len == 1000)
            atomic_fetch_add(&r->ok, 1);
        if (client_get(b, "/data?n=2000", NULL, &len) == 200 && len == 2000)
            atomic_fetch_add(&r->ok, 1);
    }
    close(a);
    close(b);
    atomic_store(&r->done, true);
    return NULL;
}

/* With the defaults, each socket gets TCP_NODELAY and a bound on what the
 * kernel holds unsent. */
START_TEST(test_each_connection_gets_its_own_account)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, two_clients, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&r.ok), 4);
    ck_assert_int_eq(s.naccounts, 2);
    ck_assert_uint_ne(s.account_ids[0], s.account_ids[1]);
    ck_assert_int_eq(s.nodelay, 1);
    ck_assert_int_eq(s.notsent_lowat, 16384);
    ck_assert_int_eq(s.max_single_write, 65536);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.tracked, 2);
    ck_assert_uint_eq(st.closed, 2);
    ck_assert_uint_eq(st.reclaimed, 0);
    ck_assert_int_eq(s.on_close_calls, 2);
    ck_assert_int_eq(s.data_freed, 2);
    /* Only the two accounts that keep the tracker are left, holding nothing. */
    memq_stats ts = stats_of(s.t);
    ck_assert_uint_eq(ts.accounts, 2);
    ck_assert_uint_eq(ts.used, 0);
    server_stop(&s);
}
END_TEST

START_TEST(test_socket_options_turned_off_leave_the_socket_alone)
{
    server s;
    memq_evhttp_config cfg;
    memq_evhttp_config_init(&cfg);
    cfg.nodelay = false;
    cfg.unsent_limit = 0;
    cfg.max_single_write = 0;
    server_start(&s, 64 * MIB, 0, &cfg);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, two_clients, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&r.ok), 4);
    ck_assert_int_eq(s.nodelay, 0);
    ck_assert_int_ne(s.notsent_lowat, 16384);
    ck_assert_int_eq(s.max_single_write, 16384); /* libevent's own */
    server_stop(&s);
}
END_TEST

static void *one_empty_request(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    size_t len = 99;
    if (client_get(fd, "/empty", NULL, &len) == 200 && len == 0)
        atomic_fetch_add(&r->ok, 1);
    close(fd);
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_evhttps_status_line_and_headers_are_claimed)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, one_empty_request, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&r.ok), 1);
    /* evhttp wrote "HTTP/1.1 200 OK\r\n" and its headers itself. */
    ck_assert_uint_ge(s.claimed_after_headers,
                      strlen("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    ck_assert_uint_eq(memq_tracker_used(s.t), 0);
    server_stop(&s);
}
END_TEST

/* memq_evhttp_new() with no configuration takes the defaults: the socket
 * options, the input tracked (two buffers per connection), no callbacks. */
START_TEST(test_a_null_configuration_means_the_defaults)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    memq_evhttp_free(s.mh);
    ck_assert_int_eq(memq_evhttp_new(s.t, s.http, NULL, &s.mh), 0);
    s.no_data = true; /* no on_close to free it */
    for (int run = 0; run < 2; run++) {
        client_run r = {.port = s.port};
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, run == 0 ? two_clients : one_empty_request, &r),
                         0);
        ck_assert(loop_until(s.base, client_done, &r, 5000));
        pthread_join(th, NULL);
        ck_assert_int_eq(atomic_load(&r.ok), run == 0 ? 4 : 1);
        ck_assert(loop_until(s.base, no_connections, &s, 3000));
    }
    ck_assert_int_eq(s.nodelay, 1);
    ck_assert_int_eq(s.notsent_lowat, 16384);
    ck_assert_int_eq(s.max_single_write, 65536);
    ck_assert_uint_eq(s.participants_seen, 2); /* output and input */
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.tracked, 3);
    ck_assert_uint_eq(st.closed, 3);
    ck_assert_int_eq(s.on_close_calls, 0);
    ck_assert_uint_eq(stats_of(s.t).participants, 0);
    server_stop(&s);
}
END_TEST

/* A server of its own listening on `fd` (evhttp_accept_socket()). */
static void server_start_on(server *s, evutil_socket_t fd)
{
    memset(s, 0, sizeof *s);
    s->base = event_base_new();
    ck_assert_ptr_nonnull(s->base);
    s->t = tracker_make(64 * MIB, 0, false);
    ck_assert_int_eq(memq_event_attach(s->t, s->base, 0, &s->ev), 0);
    s->http = evhttp_new(s->base);
    ck_assert_ptr_nonnull(s->http);
    memq_evhttp_config_init(&s->cfg);
    s->cfg.on_close = on_close;
    s->cfg.on_reclaim = on_reclaim;
    s->cfg.ctx = s;
    ck_assert_int_eq(memq_evhttp_new(s->t, s->http, &s->cfg, &s->mh), 0);
    evhttp_set_gencb(s->http, on_request, s);
    ck_assert_int_eq(evhttp_accept_socket(s->http, fd), 0);
}

typedef struct name_run {
    client_run r;
    int family; /* of the client's socket */
    struct sockaddr_storage to;
    socklen_t to_len;
    int status;
    unsigned short local_port; /* the client's, for AF_INET */
} name_run;

static void *name_client(void *arg)
{
    name_run *n = arg;
    int fd = socket(n->family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&n->to, n->to_len) == 0) {
        if (n->family == AF_INET) {
            struct sockaddr_in me;
            socklen_t len = sizeof me;
            if (getsockname(fd, (struct sockaddr *)&me, &len) == 0)
                n->local_port = ntohs(me.sin_port);
        }
        struct timeval tv = {(time_t)(5 * slow_factor()), 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        size_t len = 0;
        n->status = client_get(fd, "/name", NULL, &len);
    }
    if (fd >= 0)
        close(fd);
    atomic_store(&n->r.done, true);
    return NULL;
}

static void name_serve(server *s, name_run *n)
{
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, name_client, n), 0);
    bool done = loop_until(s->base, client_done, &n->r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert_int_eq(n->status, 200);
    ck_assert(loop_until(s->base, no_connections, s, 3000));
    ck_assert_uint_eq(http_stats(s).tracked, 1);
    ck_assert_ptr_nonnull(s->dump);
}

/* A server listening on an IPv6 socket (bound to 127.0.0.1's IPv4-mapped
 * address, so the client still talks to 127.0.0.1) sees its peers as IPv6
 * addresses: each connection's account is named after one. */
START_TEST(test_an_ipv6_peer_names_its_account_after_its_ipv6_address)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) {
        fprintf(stderr, "check_evhttp: test_an_ipv6_peer_names_its_account_after_its_ipv6_address "
                        "skipped: no IPv6 sockets here\n");
        return;
    }
    int no = 0;
    ck_assert_int_eq(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof no), 0);
    struct sockaddr_in6 any = {.sin6_family = AF_INET6};
    ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:127.0.0.1", &any.sin6_addr), 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&any, sizeof any), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    socklen_t len = sizeof any;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&any, &len), 0);
    evutil_make_socket_nonblocking(fd);
    server s;
    server_start_on(&s, fd);
    name_run n = {.family = AF_INET};
    struct sockaddr_in *to = (struct sockaddr_in *)&n.to;
    to->sin_family = AF_INET;
    to->sin_port = any.sin6_port;
    to->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    n.to_len = sizeof *to;
    name_serve(&s, &n);
    char want[128];
    snprintf(want, sizeof want, "account %llu \"http ::ffff:127.0.0.1:%u\":",
             (unsigned long long)s.dump_id, (unsigned)n.local_port);
    ck_assert_msg(strstr(s.dump, want) != NULL, "%s not in\n%s", want, s.dump);
    server_stop(&s);
}
END_TEST

/* A peer on a Unix-domain socket has neither: its account stays unnamed. */
START_TEST(test_a_unix_socket_peer_leaves_its_account_unnamed)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    /* An abstract name (Linux): nothing in the file system. */
    int n_name = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, "memq-check-evhttp-%d",
                          (int)getpid());
    socklen_t sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n_name);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sun_len), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    evutil_make_socket_nonblocking(fd);
    server s;
    server_start_on(&s, fd);
    name_run n = {.family = AF_UNIX, .to_len = sun_len};
    memcpy(&n.to, &sun, sizeof sun);
    name_serve(&s, &n);
    char want[64];
    snprintf(want, sizeof want, "account %llu:", (unsigned long long)s.dump_id);
    ck_assert_msg(strstr(s.dump, want) != NULL, "%s not in\n%s", want, s.dump);
    ck_assert_ptr_null(strstr(s.dump, "\"http "));
    server_stop(&s);
}
END_TEST

/* ----------------------------------------------------------------------
 * The defence
 * ---------------------------------------------------------------------- */

#define STALLED_BYTES (3 * MIB / 2)

static void *stalled_and_prompt(void *arg)
{
    client_run *r = arg;
    /* The stalled client asks for more than its buffers hold, never reads. */
    int stalled = client_connect(r->port, 4096);
    char path[64];
    snprintf(path, sizeof path, "/data?n=%zu&small=1", STALLED_BYTES);
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path);
    send_all(stalled, req);
    sleep_ms(100 * slow_factor()); /* its data grows old */
    int prompt = client_connect(r->port, 0);
    for (int i = 0; i < 5; i++) {
        size_t len = 0;
        if (client_get(prompt, "/data?n=1048576", NULL, &len) == 200 && len == MIB)
            atomic_fetch_add(&r->ok, 1);
        else
            atomic_fetch_add(&r->failed, 1);
    }
    close(prompt);
    bool reset = false;
    atomic_store(&r->stalled_read, read_to_end(stalled, &reset));
    atomic_store(&r->stalled_reset, reset);
    atomic_store(&r->stalled_ended, true);
    close(stalled);
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_a_stalled_client_is_reclaimed_while_a_prompt_client_is_served)
{
    server s;
    server_start(&s, 2 * MIB, 3 * MIB / 2, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stalled_and_prompt, &r), 0);
    bool done = loop_until(s.base, client_done, &r, 10000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert_int_eq(atomic_load(&r.ok), 5);
    ck_assert_int_eq(atomic_load(&r.failed), 0);
    ck_assert(atomic_load(&r.stalled_ended));
    ck_assert_uint_lt(atomic_load(&r.stalled_read), STALLED_BYTES); /* cut short */
    ck_assert(atomic_load(&r.stalled_reset)); /* reset, not timed out */
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.tracked, 2);
    ck_assert_uint_eq(st.reclaimed, 1);
    ck_assert_uint_eq(st.closed, 2);
    ck_assert_uint_eq(st.stale, 0);
    ck_assert_int_eq(s.on_reclaim_calls, 1);
    ck_assert_uint_ge(s.gave, STALLED_BYTES - 64 * KIB); /* on_reclaim sees what it gave up */
    ck_assert(s.gave_oldest);
    ck_assert(s.gave_oldest_null);
    memq_event_stats es;
    memq_event_get_stats(s.ev, &es);
    ck_assert_uint_ge(es.wakeups, 1);
    memq_stats ts = stats_of(s.t);
    ck_assert_uint_eq(ts.accounts_collapsed, 1);
    /* Reclamation ran before the loop did anything else: the peak is the
     * stalled response plus one prompt response, nothing more. */
    ck_assert_uint_le(ts.peak, STALLED_BYTES + MIB + 64 * KIB);
    ck_assert_uint_eq(ts.used, 0);
    server_stop(&s);
}
END_TEST

static void *notice_client(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    send_all(fd, "GET /notice HTTP/1.1\r\nHost: test\r\n\r\n");
    bool reset = false;
    atomic_store(&r->stalled_read, read_to_end(fd, &reset));
    atomic_store(&r->stalled_ended, true);
    close(fd);
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_a_closed_notice_frees_the_buffers_and_closes_the_connection)
{
    server s;
    server_start(&s, 2 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, notice_client, &r), 0);
    bool done = loop_until(s.base, client_done, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert_int_eq(atomic_load(&s.sibling.reclaims), 1); /* the sibling collapsed */
    ck_assert_uint_lt(atomic_load(&r.stalled_read), 100 * KIB); /* the body was dropped */
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.reclaimed, 1);
    ck_assert_int_eq(s.on_reclaim_calls, 1);
    ck_assert_uint_eq(memq_tracker_used(s.t), 0);
    server_stop(&s);
}
END_TEST

/* ----------------------------------------------------------------------
 * Closing on request, handlers that answer later
 * ---------------------------------------------------------------------- */

static void *idle_client(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    size_t len = 0;
    if (client_get(fd, "/data?n=10", NULL, &len) == 200)
        atomic_fetch_add(&r->ok, 1);
    atomic_store(&r->done, true); /* now idle, until the server closes it */
    bool reset = false;
    read_to_end(fd, &reset);
    atomic_store(&r->stalled_reset, reset);
    atomic_store(&r->stalled_ended, true);
    close(fd);
    return NULL;
}

static bool client_ended(void *arg)
{
    client_run *r = arg;
    return atomic_load(&r->stalled_ended);
}

/* The SO_LINGER of c's socket, while evhttp has not closed it. */
static struct linger linger_of(memq_evhttp_conn *c)
{
    struct linger lg = {-1, -1};
    socklen_t len = sizeof lg;
    evutil_socket_t fd =
        bufferevent_getfd(evhttp_connection_get_bufferevent(memq_evhttp_conn_connection(c)));
    ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len), 0);
    return lg;
}

START_TEST(test_conn_close_closes_an_idle_connection_through_evhttp)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, idle_client, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    ck_assert_ptr_nonnull(s.last);
    memq_evhttp_conn *c = s.last;
    ck_assert(!memq_evhttp_conn_closed(c));
    memq_evhttp_conn_close(c);
    ck_assert(memq_evhttp_conn_closed(c));
    struct linger lg = linger_of(c); /* reset at close (cfg.reset) */
    ck_assert_int_eq(lg.l_onoff, 1);
    ck_assert_int_eq(lg.l_linger, 0);
    memq_evhttp_conn_close(c); /* idempotent */
    bool ended = loop_until(s.base, client_ended, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(ended);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.closed_by_call, 1);
    ck_assert_uint_eq(st.reclaimed, 0);
    ck_assert_int_eq(s.on_reclaim_calls, 1);
    server_stop(&s);
}
END_TEST

static void *hold_client(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    send_all(fd, "GET /hold HTTP/1.1\r\nHost: test\r\n\r\n");
    bool reset = false;
    read_to_end(fd, &reset);
    close(fd);
    atomic_store(&r->done, true);
    return NULL;
}

static bool request_held(void *arg)
{
    server *s = arg;
    return s->held != NULL;
}

/* Options at their other ends: the input untracked, no reset, no
 * on_reclaim, limits above INT_MAX (clamped).  A connection closed on
 * request then ends with a plain end-of-file. */
START_TEST(test_options_turned_off_or_beyond_int_max)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    memq_evhttp_free(s.mh);
    memq_evhttp_config cfg;
    memq_evhttp_config_init(&cfg);
    cfg.track_input = false;
    cfg.reset = false;
    cfg.unsent_limit = SIZE_MAX;
    cfg.max_single_write = SIZE_MAX;
    cfg.on_close = on_close;
    cfg.ctx = &s;
    ck_assert_int_eq(memq_evhttp_new(s.t, s.http, &cfg, &s.mh), 0);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, idle_client, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    ck_assert_int_eq(atomic_load(&r.ok), 1);
    ck_assert_int_eq(s.notsent_lowat, INT_MAX);
    ck_assert_int_eq(s.max_single_write, EV_SSIZE_MAX);
    ck_assert_uint_eq(s.participants_seen, 1); /* the output only */
    memq_evhttp_conn *c = s.last;
    ck_assert_ptr_nonnull(c);
    memq_evhttp_conn_close(c);
    ck_assert(memq_evhttp_conn_closed(c));
    ck_assert_uint_eq(memq_evhttp_conn_claimed(c), 0);
    ck_assert(!memq_evhttp_conn_oldest(c, NULL));
    ck_assert_int_eq(linger_of(c).l_onoff, 0); /* closed as usual, not reset */
    bool ended = loop_until(s.base, client_ended, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(ended);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.closed_by_call, 1);
    ck_assert_int_eq(s.on_reclaim_calls, 0);
    ck_assert_int_eq(s.on_close_calls, 1);
    memq_evhttp_get_stats(s.mh, NULL); /* ignored */
    server_stop(&s);
}
END_TEST

/* Connection accounts under a parent (cfg.parent): reclaiming the parent
 * reclaims them with it, and the connection is closed as reclaimed. */
START_TEST(test_a_connection_under_a_reclaimed_parent_is_reclaimed_with_it)
{
    server s;
    server_start(&s, 2 * MIB, 0, NULL);
    memq_account *parent;
    ck_assert_int_eq(memq_account_new(s.t, NULL, &parent), 0);
    memq_evhttp_free(s.mh);
    memq_evhttp_config cfg = s.cfg;
    cfg.parent = parent;
    ck_assert_int_eq(memq_evhttp_new(s.t, s.http, &cfg, &s.mh), 0);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, idle_client, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    ck_assert_uint_eq(http_stats(&s).connections, 1);
    /* The parent's own data, the oldest, crosses max: the loop reclaims. */
    holder_init(&s.sibling, s.t, parent, 'p');
    s.sibling_used = true;
    holder_claim(&s.sibling, 3 * MIB, memq_now() - 10 * SECOND);
    bool ended = loop_until(s.base, client_ended, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(ended);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    ck_assert_int_eq(atomic_load(&s.sibling.reclaims), 1);
    ck_assert(memq_account_closed(parent));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.reclaimed, 1);
    ck_assert_int_eq(s.on_reclaim_calls, 1);
    ck_assert_uint_eq(memq_tracker_used(s.t), 0);
    memq_account_unref(parent);
    server_stop(&s);
}
END_TEST

/* The age of a connection is its older buffer's oldest byte, whichever
 * buffer holds it.  The bytes are put in evhttp's buffers by hand, while
 * a handler holds a request (evhttp neither reads nor writes then), and
 * taken out before the answer. */
static void age_steps(memq_evhttp_conn *c, struct bufferevent *bev, memq_time got[4], bool has[5])
{
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(bev);
    has[0] = memq_evhttp_conn_oldest(c, &got[0]); /* nothing held */
    evbuffer_unfreeze(in, 0);
    fake_set(20 * SECOND);
    evbuffer_add(in, "early", 5);
    has[1] = memq_evhttp_conn_oldest(c, &got[0]); /* the input only */
    fake_set(21 * SECOND);
    evbuffer_add(out, "later", 5);
    has[2] = memq_evhttp_conn_oldest(c, &got[1]); /* both, the input older */
    evbuffer_drain(in, 5);
    has[3] = memq_evhttp_conn_oldest(c, &got[2]); /* the output only */
    fake_set(22 * SECOND);
    evbuffer_add(in, "late", 4);
    has[4] = memq_evhttp_conn_oldest(c, &got[3]) && memq_evhttp_conn_oldest(c, NULL);
    evbuffer_drain(in, 4);
    evbuffer_freeze(in, 0);
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, 5);
    evbuffer_freeze(out, 1);
}

START_TEST(test_a_connections_age_is_that_of_its_older_buffer)
{
    server s;
    server_fake_clock = true;
    server_start(&s, 64 * MIB, 0, NULL);
    server_fake_clock = false;
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, hold_client, &r), 0);
    ck_assert(loop_until(s.base, request_held, &s, 5000));
    memq_evhttp_conn *c = NULL;
    ck_assert_int_eq(memq_evhttp_track(s.mh, s.held, &c), 0);
    ck_assert_int_eq(memq_evhttp_track(s.mh, s.held, NULL), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evhttp_track(s.mh, NULL, &c), MEMQ_EINVAL);
    ck_assert_int_eq(memq_evhttp_send_reply(s.mh, NULL, 200, "OK", NULL), MEMQ_EINVAL);
    memq_time got[4] = {0, 0, 0, 0};
    bool has[5];
    age_steps(c, evhttp_connection_get_bufferevent(memq_evhttp_conn_connection(c)), got, has);
    ck_assert(!has[0]);
    ck_assert(has[1] && has[2] && has[3] && has[4]);
    ck_assert_uint_eq(got[0], 20 * SECOND); /* the input's */
    ck_assert_uint_eq(got[1], 20 * SECOND); /* the input's, older */
    ck_assert_uint_eq(got[2], 21 * SECOND); /* the output's */
    ck_assert_uint_eq(got[3], 21 * SECOND); /* the output's, now the older */
    ck_assert_uint_eq(memq_evhttp_conn_claimed(c), 0);
    ck_assert_int_eq(memq_evhttp_send_reply(s.mh, s.held, 200, "OK", NULL), 0);
    s.held = NULL;
    memq_evhttp_conn_close(c); /* the client reads until the end */
    bool done = loop_until(s.base, client_done, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    server_stop(&s);
}
END_TEST

START_TEST(test_a_handler_answering_after_its_connection_closed_is_safe)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, hold_client, &r), 0);
    ck_assert(loop_until(s.base, request_held, &s, 5000));
    memq_evhttp_conn *c = NULL;
    ck_assert_int_eq(memq_evhttp_track(s.mh, s.held, &c), 0);
    memq_evhttp_conn_close(c); /* as reclamation would, while it is held */
    ck_assert_int_eq(memq_evhttp_track(s.mh, s.held, &c), MEMQ_ECLOSED);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, pattern, 1000);
    ck_assert_int_eq(memq_evhttp_send_reply(s.mh, s.held, 200, "OK", body), MEMQ_ECLOSED);
    ck_assert_uint_eq(evbuffer_get_length(body), 1000); /* the body was not sent */
    evbuffer_free(body);
    s.held = NULL;
    bool done = loop_until(s.base, client_done, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    ck_assert_uint_eq(http_stats(&s).closed, 1);
    server_stop(&s);
}
END_TEST

static void *idle_after_one(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    size_t len = 0;
    if (client_get(fd, "/data?n=10", NULL, &len) == 200)
        atomic_fetch_add(&r->ok, 1);
    bool reset = false;
    read_to_end(fd, &reset); /* the server's idle timeout ends it */
    close(fd);
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_an_idle_timeout_forgets_the_connection)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    evhttp_set_timeout(s.http, 1);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, idle_after_one, &r), 0);
    bool done = loop_until(s.base, client_done, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert_int_eq(atomic_load(&r.ok), 1);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    ck_assert_uint_eq(http_stats(&s).closed, 1);
    ck_assert_int_eq(s.data_freed, 1);
    server_stop(&s);
}
END_TEST

/* on_reclaim frees the connection itself, which memquota/event.h forbids:
 * evhttp's close callback then runs inside on_reclaim, and the handle is
 * freed only once on_reclaim returns.  The connection is forgotten once,
 * nothing is left, nothing is used after it is freed (ASan). */
START_TEST(test_a_connection_freed_inside_on_reclaim_is_forgotten_once)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    s.free_in_on_reclaim = true;
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, idle_client, &r), 0);
    ck_assert(loop_until(s.base, client_done, &r, 5000));
    ck_assert_ptr_nonnull(s.last);
    memq_evhttp_conn_close(s.last);
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.connections, 0); /* forgotten inside on_reclaim */
    ck_assert_uint_eq(st.closed, 1);
    ck_assert_uint_eq(st.closed_by_call, 1);
    ck_assert_int_eq(s.on_reclaim_calls, 1);
    ck_assert_int_eq(s.on_close_calls, 1);
    ck_assert_int_eq(s.data_freed, 1);
    ck_assert_ptr_null(s.last);
    memq_stats ts = stats_of(s.t);
    ck_assert_uint_eq(ts.accounts, 2); /* its account dropped after on_reclaim */
    ck_assert_uint_eq(ts.participants, 0);
    bool ended = loop_until(s.base, client_ended, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(ended);
    server_stop(&s);
}
END_TEST

/* A chunked answer whose client went away (reset) while the handler still
 * holds the request: evhttp fails the connection at its next write and
 * detaches the request.  Tracking it again says MEMQ_ECLOSED, and the
 * answer is given without the body, which stays the caller's. */
static void *reset_after_headers(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    send_all(fd, "GET /chunked HTTP/1.1\r\nHost: test\r\n\r\n");
    char head[4096];
    size_t got = 0;
    while (got < sizeof head - 1) { /* the status line and headers */
        ssize_t n = recv(fd, head + got, 1, 0);
        if (n <= 0)
            break;
        got++;
        head[got] = '\0';
        if (strstr(head, "\r\n\r\n") != NULL) {
            atomic_fetch_add(&r->ok, 1);
            break;
        }
    }
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* a reset */
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_a_request_evhttp_detached_from_its_failed_connection_is_answered_without_it)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, reset_after_headers, &r), 0);
    bool done = loop_until(s.base, client_done, &r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert_int_eq(atomic_load(&r.ok), 1);
    ck_assert_ptr_nonnull(s.held);
    /* More chunks until a write meets the reset and evhttp fails the
     * connection (it is then freed: no connection left). */
    for (int i = 0; i < 100 && http_stats(&s).connections > 0; i++) {
        struct evbuffer *chunk = evbuffer_new();
        evbuffer_add(chunk, pattern, 1000);
        evhttp_send_reply_chunk(s.held, chunk);
        evbuffer_free(chunk);
        loop_until(s.base, no_connections, &s, 20);
    }
    ck_assert_uint_eq(http_stats(&s).connections, 0);
    ck_assert_ptr_null(evhttp_request_get_connection(s.held)); /* detached */
    memq_evhttp_conn *c = (memq_evhttp_conn *)&c;
    ck_assert_int_eq(memq_evhttp_track(s.mh, s.held, &c), MEMQ_ECLOSED);
    ck_assert_ptr_eq(c, (memq_evhttp_conn *)&c);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add(body, pattern, 500);
    ck_assert_int_eq(memq_evhttp_send_reply(s.mh, s.held, 200, "OK", body), MEMQ_ECLOSED);
    ck_assert_uint_eq(evbuffer_get_length(body), 500); /* not taken */
    evbuffer_free(body);
    s.held = NULL; /* evhttp freed it (ASan) */
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.tracked, 1);
    ck_assert_uint_eq(st.closed, 1);
    ck_assert_uint_eq(st.track_failures, 0);
    ck_assert_uint_eq(stats_of(s.t).participants, 0);
    server_stop(&s);
}
END_TEST

/* The tracker freed while the server runs (memq_evhttp keeps its memory):
 * a tracked connection's next request finds its account closed, so it is
 * closed (not as reclaimed: on_reclaim is not told) and answered without
 * a body; a new connection cannot be tracked and is answered 503. */
typedef struct after_shutdown {
    client_run r;
    atomic_int phase; /* 1: first answer read; 2: the tracker is freed */
    int status[3];
    atomic_bool first_ended;
} after_shutdown;

static bool first_answered(void *arg)
{
    after_shutdown *a = arg;
    return atomic_load(&a->phase) >= 1;
}

static void *clients_across_shutdown(void *arg)
{
    after_shutdown *a = arg;
    int one = client_connect(a->r.port, 0);
    size_t len = 0;
    a->status[0] = client_get(one, "/data?n=10", NULL, &len);
    atomic_store(&a->phase, 1);
    while (atomic_load(&a->phase) < 2)
        usleep(1000);
    a->status[1] = client_get(one, "/data?n=10", NULL, &len);
    bool reset = false;
    read_to_end(one, &reset); /* the server closes it */
    atomic_store(&a->first_ended, true);
    close(one);
    int two = client_connect(a->r.port, 0);
    a->status[2] = client_get(two, "/data?n=10", NULL, &len);
    close(two);
    atomic_store(&a->r.done, true);
    return NULL;
}

START_TEST(test_after_the_tracker_is_freed_connections_are_closed_or_refused)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    after_shutdown a = {.r = {.port = s.port}};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, clients_across_shutdown, &a), 0);
    ck_assert(loop_until(s.base, first_answered, &a, 5000));
    ck_assert_int_eq(s.track_rc, 0);
    ck_assert_uint_eq(http_stats(&s).connections, 1);
    memq_tracker_free(s.t); /* memq_event's and memq_evhttp's accounts keep it */
    atomic_store(&a.phase, 2);
    bool done = loop_until(s.base, client_done, &a.r, 5000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert(atomic_load(&a.first_ended));
    ck_assert_int_eq(a.status[0], 200);
    ck_assert_int_eq(a.status[1], 503); /* on_request answers its failure so */
    ck_assert_int_eq(a.status[2], 503);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.tracked, 1);
    ck_assert_uint_eq(st.closed, 1);
    ck_assert_uint_eq(st.reclaimed, 0);
    ck_assert_uint_eq(st.closed_by_call, 0);
    ck_assert_uint_eq(st.track_failures, 2); /* on_request's and the 503's */
    ck_assert_int_eq(s.on_reclaim_calls, 0);
    ck_assert_int_eq(s.on_close_calls, 1);
    ck_assert_int_eq(s.track_rc, MEMQ_ESHUTDOWN);
    ck_assert_int_eq(s.reply_rc, MEMQ_ESHUTDOWN);
    /* Nothing to free but what keeps the tracker's memory. */
    memq_evhttp_free(s.mh);
    evhttp_free(s.http);
    memq_event_detach(s.ev); /* the last: the tracker's memory goes (ASan) */
    event_base_free(s.base);
}
END_TEST

/* Connections that cannot be tracked, for each allocation tracking makes
 * (the connection's handle, its account, its two tracked buffers and
 * their participations, the table of connections): answered 503 with
 * MEMQ_ENOMEM, counted, nothing left behind; a later request of the same
 * connection tracks it. */
static void *sweep_client(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    for (int i = 0; i < 64 && fd >= 0; i++) {
        size_t len = 0;
        int status = client_get(fd, "/sweep", NULL, &len);
        if (status == 503)
            atomic_fetch_add(&r->failed, 1);
        else if (status == 200)
            atomic_fetch_add(&r->ok, 1);
        if (status == 0 || atomic_load(&sweep_over))
            break;
    }
    if (fd >= 0)
        close(fd);
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_a_connection_that_cannot_be_tracked_is_answered_503_whichever_allocation_fails)
{
    if (!failures_work()) {
        fprintf(stderr, "check_evhttp: "
                        "test_a_connection_that_cannot_be_tracked_is_answered_503_whichever_allocation_"
                        "fails skipped: malloc is not this program's (valgrind)\n");
        return;
    }
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    s.no_data = true;
    atomic_store(&sweep_over, false);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, sweep_client, &r), 0);
    bool done = loop_until(s.base, client_done, &r, 20000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert(atomic_load(&sweep_over));
    ck_assert_int_eq(s.sweep_bad, 0);
    ck_assert_int_ge(s.sweep_enomem, 6);
    ck_assert_int_eq(atomic_load(&r.failed), s.sweep_enomem);
    ck_assert_int_eq(atomic_load(&r.ok), s.sweep_tolerated + 1);
    ck_assert(loop_until(s.base, no_connections, &s, 3000));
    memq_stats ts = stats_of(s.t);
    ck_assert_uint_eq(ts.accounts, 2);
    ck_assert_uint_eq(ts.participants, 0);
    ck_assert_uint_eq(ts.used, 0);
    server_stop(&s);
}
END_TEST

/* ----------------------------------------------------------------------
 * Many connections, every way of ending: nothing left behind
 * ---------------------------------------------------------------------- */

#define MANY 200

static void *many_clients(void *arg)
{
    client_run *r = arg;
    size_t len = 0;
    for (int i = 0; i < MANY; i++) {
        int fd = client_connect(r->port, 0);
        if (fd < 0) {
            atomic_fetch_add(&r->failed, 1);
            continue;
        }
        bool reset = false;
        switch (i % 6) {
        case 0: /* keep-alive, two requests, then the client closes */
            if (client_get(fd, "/data?n=3000", NULL, &len) == 200 &&
                client_get(fd, "/data?n=70000", NULL, &len) == 200)
                atomic_fetch_add(&r->ok, 1);
            break;
        case 1: /* the server closes after answering */
            if (client_get(fd, "/data?n=100", "Connection: close\r\n", &len) == 200)
                atomic_fetch_add(&r->ok, 1);
            read_to_end(fd, &reset);
            break;
        case 2: /* HTTP/1.0 */
            send_all(fd, "GET /data?n=500 HTTP/1.0\r\n\r\n");
            if (read_to_end(fd, &reset) > 500)
                atomic_fetch_add(&r->ok, 1);
            break;
        case 3: /* asks and leaves without reading */
            send_all(fd, "GET /data?n=300000 HTTP/1.1\r\nHost: test\r\n\r\n");
            atomic_fetch_add(&r->ok, 1);
            break;
        case 4: /* a bad request: evhttp answers 400 itself */
            send_all(fd, "NONSENSE\r\n\r\n");
            read_to_end(fd, &reset);
            atomic_fetch_add(&r->ok, 1);
            break;
        default: /* connects and leaves */
            atomic_fetch_add(&r->ok, 1);
            break;
        }
        close(fd);
    }
    atomic_store(&r->done, true);
    return NULL;
}

START_TEST(test_no_connection_account_or_byte_is_left_after_many_connections)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    client_run r = {.port = s.port};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, many_clients, &r), 0);
    bool done = loop_until(s.base, client_done, &r, 30000);
    pthread_join(th, NULL);
    ck_assert(done);
    ck_assert_int_eq(atomic_load(&r.failed), 0);
    ck_assert_int_eq(atomic_load(&r.ok), MANY);
    ck_assert(loop_until(s.base, no_connections, &s, 5000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_ge(st.tracked, MANY / 2);
    ck_assert_uint_eq(st.closed, st.tracked);
    ck_assert_uint_eq(st.stale, 0);
    ck_assert_uint_eq(st.track_failures, 0);
    ck_assert_int_eq(s.data_freed, (int)st.tracked);
    memq_stats ts = stats_of(s.t);
    ck_assert_uint_eq(ts.accounts, 2);
    ck_assert_uint_eq(ts.participants, 0);
    ck_assert_uint_eq(ts.used, 0);
    server_stop(&s); /* ASan and valgrind check that nothing leaked */
}
END_TEST

/* Many connections open at once, then closed in an order unlike the one
 * they opened in: each is found again by its next request, and each is
 * forgotten when it closes, whatever its neighbours in the server's
 * table of connections did. */
#define AT_ONCE 100

typedef struct crowd {
    client_run r;
    atomic_int phase; /* 1: all served once; 2: the server saw them all */
    atomic_int second_ok;
} crowd;

static bool crowd_phase1(void *arg)
{
    crowd *c = arg;
    return atomic_load(&c->phase) >= 1;
}

static void *crowd_clients(void *arg)
{
    crowd *c = arg;
    int fd[AT_ONCE];
    size_t len = 0;
    for (int i = 0; i < AT_ONCE; i++) {
        fd[i] = client_connect(c->r.port, 0);
        if (fd[i] < 0 || client_get(fd[i], "/data?n=100", NULL, &len) != 200)
            atomic_fetch_add(&c->r.failed, 1);
    }
    atomic_store(&c->phase, 1);
    while (atomic_load(&c->phase) < 2)
        usleep(1000);
    /* Every third first, then the rest backwards, each asking once more
     * before it goes. */
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < AT_ONCE; k++) {
            int i = pass == 0 ? k : AT_ONCE - 1 - k;
            if ((i % 3 == 0) != (pass == 0) || fd[i] < 0)
                continue;
            if (client_get(fd[i], "/data?n=200", NULL, &len) == 200)
                atomic_fetch_add(&c->second_ok, 1);
            close(fd[i]);
        }
    atomic_store(&c->r.done, true);
    return NULL;
}

START_TEST(test_many_connections_open_at_once_are_each_found_again_and_forgotten)
{
    server s;
    server_start(&s, 64 * MIB, 0, NULL);
    crowd c = {.r = {.port = s.port}};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, crowd_clients, &c), 0);
    ck_assert(loop_until(s.base, crowd_phase1, &c, 30000));
    memq_evhttp_stats st = http_stats(&s);
    ck_assert_uint_eq(st.connections, AT_ONCE);
    ck_assert_uint_eq(st.tracked, AT_ONCE);
    atomic_store(&c.phase, 2);
    ck_assert(loop_until(s.base, client_done, &c.r, 30000));
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&c.r.failed), 0);
    ck_assert_int_eq(atomic_load(&c.second_ok), AT_ONCE);
    ck_assert(loop_until(s.base, no_connections, &s, 5000));
    st = http_stats(&s);
    ck_assert_uint_eq(st.tracked, AT_ONCE); /* found again, never tracked twice */
    ck_assert_uint_eq(st.closed, AT_ONCE);
    ck_assert_uint_eq(st.stale, 0);
    ck_assert_uint_eq(stats_of(s.t).participants, 0);
    server_stop(&s);
}
END_TEST

/* ----------------------------------------------------------------------
 * Teardown in either order
 * ---------------------------------------------------------------------- */

static void *one_request_stay(void *arg)
{
    client_run *r = arg;
    int fd = client_connect(r->port, 0);
    size_t len = 0;
    if (client_get(fd, "/data?n=10", NULL, &len) == 200)
        atomic_fetch_add(&r->ok, 1);
    atomic_store(&r->done, true);
    bool reset = false;
    read_to_end(fd, &reset); /* until the server goes */
    close(fd);
    return NULL;
}

START_TEST(test_memq_evhttp_may_be_freed_before_or_after_evhttp)
{
    for (int order = 0; order < 2; order++) {
        server s;
        server_start(&s, 64 * MIB, 0, NULL);
        client_run r = {.port = s.port};
        pthread_t th;
        ck_assert_int_eq(pthread_create(&th, NULL, one_request_stay, &r), 0);
        ck_assert(loop_until(s.base, client_done, &r, 5000));
        ck_assert_uint_eq(http_stats(&s).connections, 1);
        if (order == 0) {
            memq_evhttp_free(s.mh); /* the connection stays, untracked */
            ck_assert_int_eq(s.on_close_calls, 1);
            evhttp_free(s.http);
        } else {
            evhttp_free(s.http); /* the close callback forgets it */
            ck_assert_int_eq(s.on_close_calls, 1);
            memq_evhttp_free(s.mh);
        }
        pthread_join(th, NULL);
        ck_assert_uint_eq(stats_of(s.t).participants, 0);
        memq_event_detach(s.ev);
        memq_tracker_free(s.t);
        event_base_free(s.base);
    }
}
END_TEST

static Suite *evhttp_suite(void)
{
    Suite *s = suite_create("evhttp");
    TCase *basics = tcase_create("basics");
    TCase *defence = tcase_create("defence");
    TCase *closing = tcase_create("closing");
    TCase *many = tcase_create("many");

    tcase_add_test(basics, test_new_rejects_bad_arguments);
    tcase_add_test(basics, test_new_refuses_a_tracker_in_thread_mode_or_shut_down);
    tcase_add_test(basics, test_new_fails_cleanly_whichever_allocation_fails);
    tcase_set_timeout(basics, 60);
    tcase_add_test(basics, test_each_connection_gets_its_own_account);
    tcase_add_test(basics, test_socket_options_turned_off_leave_the_socket_alone);
    tcase_add_test(basics, test_evhttps_status_line_and_headers_are_claimed);
    tcase_add_test(basics, test_a_null_configuration_means_the_defaults);
    tcase_add_test(basics, test_an_ipv6_peer_names_its_account_after_its_ipv6_address);
    tcase_add_test(basics, test_a_unix_socket_peer_leaves_its_account_unnamed);
    suite_add_tcase(s, basics);

    tcase_set_timeout(defence, 120);
    tcase_add_test(defence, test_a_stalled_client_is_reclaimed_while_a_prompt_client_is_served);
    tcase_add_test(defence, test_a_closed_notice_frees_the_buffers_and_closes_the_connection);
    suite_add_tcase(s, defence);

    tcase_set_timeout(closing, 60);
    tcase_add_test(closing, test_conn_close_closes_an_idle_connection_through_evhttp);
    tcase_add_test(closing, test_a_handler_answering_after_its_connection_closed_is_safe);
    tcase_add_test(closing, test_an_idle_timeout_forgets_the_connection);
    tcase_add_test(closing, test_many_connections_open_at_once_are_each_found_again_and_forgotten);
    tcase_add_test(closing, test_memq_evhttp_may_be_freed_before_or_after_evhttp);
    tcase_add_test(closing, test_a_connection_freed_inside_on_reclaim_is_forgotten_once);
    tcase_add_test(closing, test_options_turned_off_or_beyond_int_max);
    tcase_add_test(closing, test_a_connection_under_a_reclaimed_parent_is_reclaimed_with_it);
    tcase_add_test(closing, test_a_connections_age_is_that_of_its_older_buffer);
    tcase_add_test(closing,
                   test_a_request_evhttp_detached_from_its_failed_connection_is_answered_without_it);
    tcase_add_test(closing, test_after_the_tracker_is_freed_connections_are_closed_or_refused);
    tcase_add_test(closing,
                   test_a_connection_that_cannot_be_tracked_is_answered_503_whichever_allocation_fails);
    suite_add_tcase(s, closing);

    tcase_set_timeout(many, 300);
    tcase_add_test(many, test_no_connection_account_or_byte_is_left_after_many_connections);
    suite_add_tcase(s, many);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as any server: a peer may go mid-write */
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (unsigned char)"0123456789abcdef"[i % 16];
    SRunner *sr = srunner_create(evhttp_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    libevent_global_shutdown();
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
