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
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

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
    int nodelay;                  /* /data: TCP_NODELAY seen on the socket */
    int notsent_lowat;            /* /data: TCP_NOTSENT_LOWAT seen on the socket */
    long max_single_write;        /* /data: the bufferevent's */
    struct evhttp_request *held;  /* /hold */
    memq_evhttp_conn *last;       /* the connection of the last request */
    holder sibling;               /* /notice */
    bool sibling_used;
    int on_close_calls, on_reclaim_calls, data_freed;
    size_t gave; /* what the last reclaimed connection gave up */
    bool gave_oldest;
} server;

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
    memq_evhttp_conn *c = NULL;
    int rc = memq_evhttp_track(s->mh, req, &c);
    if (rc != 0) {
        memq_evhttp_send_reply(s->mh, req, 503, "Service Unavailable", NULL);
        return;
    }
    s->last = c;
    uint64_t id = memq_account_id(memq_evhttp_conn_account(c));
    bool seen = false;
    for (int i = 0; i < s->naccounts; i++)
        seen |= s->account_ids[i] == id;
    if (!seen && s->naccounts < 8)
        s->account_ids[s->naccounts++] = id;
    if (memq_evhttp_conn_get_data(c) == NULL) {
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
        s->max_single_write = (long)bufferevent_get_max_single_write(
            evhttp_connection_get_bufferevent(evhttp_request_get_connection(req)));
        reply_data(s, req, c, query_size(uri, "n="));
    } else if (strcmp(uri, "/empty") == 0) {
        memq_evhttp_send_reply(s->mh, req, 200, "OK", NULL);
        s->claimed_after_headers = memq_evhttp_conn_claimed(c);
    } else if (strcmp(uri, "/hold") == 0) {
        s->held = req;
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
}

static void server_start(server *s, size_t max, size_t low_water, const memq_evhttp_config *cfg)
{
    memset(s, 0, sizeof *s);
    s->base = event_base_new();
    ck_assert_ptr_nonnull(s->base);
    s->t = tracker_make(max, low_water, false);
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
    atomic_store(&r->stalled_ended, true);
    close(fd);
    return NULL;
}

static bool client_ended(void *arg)
{
    client_run *r = arg;
    return atomic_load(&r->stalled_ended);
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
    tcase_set_timeout(basics, 60);
    tcase_add_test(basics, test_each_connection_gets_its_own_account);
    tcase_add_test(basics, test_socket_options_turned_off_leave_the_socket_alone);
    tcase_add_test(basics, test_evhttps_status_line_and_headers_are_claimed);
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
