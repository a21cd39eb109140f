/*
 * loadgen - honest clients and sniper attackers against relayd, on loopback.
 *
 * Copyright (c) 2026 the libmemquota authors. MIT licence, see COPYING.
 *
 * Honest clients ask for a response (GET <n>), read it as fast as it comes,
 * and ask again, paced to a demand rate (a user downloading at some speed);
 * they measure their throughput and request latency.  Attackers connect
 * with a tiny receive buffer, keep asking at their own rate, and never
 * read: the daemon's queues fill with data they will never take (the
 * Sniper Attack, NDSS 2014).  A monitor connection asks relayd for STATS
 * every --sample-ms and writes the time series (--csv) and a one-line
 * progress status (--progress).
 *
 * With --http it speaks HTTP/1.1 to examples/httpd instead of relayd's line
 * protocol: GET /data?n=N&tag=h (honest) or &tag=a (attackers) on
 * keep-alive connections, the honest clients reading each response by its
 * Content-Length, and the monitor polling /stats.  --idle N opens N more
 * connections at the attack's start that send nothing and read nothing,
 * as a slowloris does (to test the servers' connection slots).
 *
 * With --attackers-read the attackers read everything at once instead: the
 * control run, the same requests from clients that are no threat, which
 * shows what the attack's load costs honest clients without the memory
 * it pins.  --attack-total makes attackers stop asking once they asked for
 * that much (slow readers holding a fixed amount), --attack-stop closes
 * them at a given time.  The report includes the server's RSS just before
 * the attack (idle_rss) and 2 s after the last attacker was gone
 * (rss_after), from the monitor's samples.
 *
 * Every count, rate and duration is bounded, the run stops by itself after
 * --duration seconds (earlier if the server is gone), and it only ever
 * connects to 127.0.0.1.
 *
 * Output: one line on stdout, "LOADGEN key=value ...", and a human summary,
 * including which clients lost their connection and when, on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <memquota.h> /* memq_parse_size() */

#include "example_util.h" /* now_ns, say */

#define MAX_CLIENTS 2000
#define MAX_DURATION_S 300.0
#define MAX_SIZE ((size_t)64 << 20)
#define MAX_RATE ((double)(1u << 30))
#define MAX_LATENCIES 1000000
#define SENDS_PER_TURN 16 /* requests one attacker may send per loop turn */
#define LOOP_MS 2

typedef enum { HONEST, ATTACKER, IDLER, MONITOR } role;

typedef struct client {
    role role;
    int index; /* 1-based within its role */
    int fd;
    bool alive;
    uint64_t lost_ns; /* 0: never lost */
    size_t outstanding;      /* honest: bytes still due for the current GET */
    uint64_t requested;      /* bytes asked for so far */
    uint64_t received;       /* bytes read (honest) */
    uint64_t received_window; /* bytes read after the attack started */
    uint64_t req_ns;         /* when the current GET was sent */
    uint64_t first_ns;       /* when its first byte was read */
    unsigned port;           /* local port (for --trace) */
    uint64_t start_ns;       /* pacing origin */
    char pend[160];          /* a request not fully sent yet */
    size_t pend_len;
    uint64_t stats_sent_ns;  /* monitor: a STATS request in flight */
    char line[4096];         /* monitor: the reply; HTTP: a response's head */
    size_t line_len;
    bool in_body;            /* HTTP: reading a response's body */
    size_t body_left;        /* HTTP: its bytes still due */
} client;

typedef struct options {
    int port;
    int honest, attackers;
    double duration, attack_start;
    size_t honest_size, attack_size, attack_rcvbuf, attack_total;
    double honest_rate, attack_rate; /* bytes/s per client; 0: unpaced */
    double attack_stop;              /* 0: attackers stay until the end */
    bool attackers_read, http;
    int idle;
    int sample_ms;
    const char *csv, *label, *trace;
    bool progress;
} options;

typedef struct sample {
    size_t used, rss, max, accounts, conns;
    uint64_t reclaimed, killed;
    bool valid;
} sample;

static options opt;
static client *clients; /* honest, then attackers, then the monitor */
static int nclients;
static int epfd = -1;
static uint64_t t0, attack_ns, end_ns;
static bool attack_started;
static uint64_t first_attacker_loss_ns, last_attacker_loss_ns, first_honest_loss_ns,
    server_gone_ns;
static uint64_t protocol_errors, http_errors, requests, attack_requested, attack_received;
static uint64_t attack_stop_ns, attack_gone_ns; /* 0: not yet */
static size_t idle_rss, rss_after;
static bool rss_after_known;
static double *latencies;
static uint64_t *latency_sent; /* when each request was sent */
static size_t nlat;
static sample last;
static FILE *csv, *trace;
static uint64_t last_progress_ns;
static bool tty;
static volatile sig_atomic_t interrupted;

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ======================================================================
 * Connections
 * ====================================================================== */

/* Connect to 127.0.0.1:port (and nowhere else), bounded by a 2 s timeout;
 * the socket is non-blocking afterwards. */
static int connect_loopback(size_t rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0) {
        int v = (int)rcvbuf;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    }
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)opt.port);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    return fd;
}

static const char *role_name(role r)
{
    return r == HONEST ? "honest" : r == ATTACKER ? "attacker" : r == IDLER ? "idle" : "monitor";
}

static void lose(client *c, uint64_t now)
{
    if (!c->alive)
        return;
    c->alive = false;
    c->lost_ns = now;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->role == HONEST && first_honest_loss_ns == 0)
        first_honest_loss_ns = now;
    if (c->role == ATTACKER && first_attacker_loss_ns == 0)
        first_attacker_loss_ns = now;
    if (c->role == ATTACKER)
        last_attacker_loss_ns = now;
    if (c->role == MONITOR && server_gone_ns == 0)
        server_gone_ns = now;
}

static bool open_client(client *c, uint64_t now)
{
    /* Attackers never read: a tiny receive window makes the server queue
     * everything sooner, and costs the attacker nothing.  (Reading
     * attackers, the control, keep the default.) */
    bool reads = c->role == HONEST || c->role == MONITOR ||
                 (c->role == ATTACKER && opt.attackers_read);
    c->fd = connect_loopback(reads ? 0 : opt.attack_rcvbuf);
    c->start_ns = now;
    if (c->fd < 0) {
        say("%s #%d: cannot connect to 127.0.0.1:%d: %s", role_name(c->role), c->index,
            opt.port, strerror(errno));
        c->lost_ns = now;
        return false;
    }
    /* Attackers only want to hear about errors and hang-ups (always
     * reported by epoll): they never read. */
    struct epoll_event ev = {.events = reads ? EPOLLIN | EPOLLRDHUP : EPOLLRDHUP,
                             .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
    c->alive = true;
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    if (getsockname(c->fd, (struct sockaddr *)&local, &len) == 0)
        c->port = ntohs(local.sin_port);
    return true;
}

/* Send what is pending, then line; false if the connection is lost.
 * *sent tells whether line was queued completely. */
static bool send_line(client *c, const char *line, bool *sent, uint64_t now)
{
    *sent = false;
    while (c->pend_len > 0) {
        ssize_t n = send(c->fd, c->pend, c->pend_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return true;
            lose(c, now);
            return false;
        }
        memmove(c->pend, c->pend + n, c->pend_len - (size_t)n);
        c->pend_len -= (size_t)n;
    }
    if (line == NULL)
        return true;
    size_t len = strlen(line);
    ssize_t n = send(c->fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return true;
        lose(c, now);
        return false;
    }
    if ((size_t)n < len) {
        memcpy(c->pend, line + n, len - (size_t)n);
        c->pend_len = len - (size_t)n;
    }
    *sent = true;
    return true;
}

/* ======================================================================
 * Honest clients, attackers, the monitor
 * ====================================================================== */

/* A request for n bytes in the protocol spoken; tag names the client's
 * kind for httpd's statistics. */
static void request_line(char *buf, size_t len, size_t n, char tag)
{
    if (opt.http)
        snprintf(buf, len, "GET /data?n=%zu&tag=%c HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", n,
                 tag);
    else
        snprintf(buf, len, "GET %zu\n", n);
}

static void honest_done(client *c, uint64_t now);

static void honest_request(client *c, uint64_t now)
{
    if (!c->alive || c->outstanding > 0)
        return;
    if (opt.honest_rate > 0) {
        double allowed = opt.honest_rate * secs(now - c->start_ns) + (double)opt.honest_size;
        if ((double)(c->requested + opt.honest_size) > allowed)
            return;
    }
    char line[128];
    request_line(line, sizeof line, opt.honest_size, 'h');
    bool sent;
    if (send_line(c, line, &sent, now) && sent) {
        c->outstanding = opt.honest_size;
        c->requested += opt.honest_size;
        c->req_ns = now_ns(); /* not the loop's now: the pass may have lasted */
        requests++;
    }
}

/* HTTP: take the n bytes at data for the response being read: gather its
 * head (status line and headers) in c->line, then count its body by its
 * Content-Length.  Returns how many bytes it used (all of them unless the
 * response is complete first); loses c on a malformed response. */
static size_t http_take(client *c, const char *data, size_t n, uint64_t now)
{
    if (c->in_body) {
        size_t take = n < c->body_left ? n : c->body_left;
        c->body_left -= take;
        c->received += take;
        if (now >= attack_ns)
            c->received_window += take;
        if (c->body_left == 0)
            honest_done(c, now);
        return take;
    }
    if (c->outstanding == 0) {
        protocol_errors++; /* nothing was asked */
        lose(c, now);
        return n;
    }
    size_t room = sizeof c->line - 1 - c->line_len;
    size_t take = n < room ? n : room;
    size_t before = c->line_len;
    memcpy(c->line + c->line_len, data, take);
    c->line_len += take;
    c->line[c->line_len] = '\0';
    char *end = strstr(c->line, "\r\n\r\n");
    if (end == NULL) {
        if (take == room) {
            protocol_errors++; /* a head longer than the buffer */
            lose(c, now);
        }
        return take;
    }
    size_t head = (size_t)(end + 4 - c->line);
    end[2] = '\0';
    const char *cl = strcasestr(c->line, "\r\nContent-Length:");
    if (strncmp(c->line, "HTTP/1.1 2", 10) != 0 && strncmp(c->line, "HTTP/1.0 2", 10) != 0)
        http_errors++;
    c->body_left = cl != NULL ? (size_t)strtoull(cl + 17, NULL, 10) : 0;
    c->in_body = true;
    c->line_len = 0;
    if (c->body_left == 0)
        honest_done(c, now);
    return head - before;
}

/* A whole response arrived: its latency, then the next request. */
static void honest_done(client *c, uint64_t now)
{
    c->in_body = false;
    c->outstanding = 0;
    if (c->req_ns == 0)
        return;
    uint64_t done = now_ns();
    if (nlat < MAX_LATENCIES) {
        latency_sent[nlat] = c->req_ns;
        latencies[nlat++] = secs(done - c->req_ns) * 1e3;
    }
    /* --trace: "L <local port> <sent> <first byte> <done> <bytes>" */
    if (trace != NULL)
        fprintf(trace, "L %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %zu\n", c->port, c->req_ns,
                c->first_ns, done, opt.honest_size);
    c->req_ns = 0;
    c->first_ns = 0;
    honest_request(c, now); /* ask again at once if the pace allows */
}

static void honest_read(client *c, uint64_t now)
{
    static char scratch[256 * 1024];
    for (int i = 0; i < 64 && c->alive; i++) {
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n == 0) {
            lose(c, now);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            lose(c, now);
            return;
        }
        size_t got = (size_t)n;
        if (c->first_ns == 0)
            c->first_ns = now_ns();
        if (opt.http) {
            for (size_t off = 0; off < got && c->alive;)
                off += http_take(c, scratch + off, got - off, now);
            continue;
        }
        if (got > c->outstanding) {
            protocol_errors++;
            got = c->outstanding;
        }
        c->outstanding -= got;
        c->received += got;
        if (now >= attack_ns)
            c->received_window += got;
        if (c->outstanding == 0 && c->req_ns != 0)
            honest_done(c, now);
    }
}

static void attacker_request(client *c, uint64_t now)
{
    if (!c->alive || (opt.attack_total > 0 && c->requested >= opt.attack_total))
        return;
    double target = opt.attack_rate > 0 ? opt.attack_rate * secs(now - c->start_ns)
                                        : (double)(c->requested + opt.attack_size);
    char line[128];
    request_line(line, sizeof line, opt.attack_size, 'a');
    for (int i = 0; i < SENDS_PER_TURN && (double)c->requested < target; i++) {
        bool sent;
        if (!send_line(c, line, &sent, now) || !sent)
            return;
        c->requested += opt.attack_size;
        attack_requested += opt.attack_size;
    }
}

/* The control's attackers read all they get, at once, and throw it away. */
static void attacker_read(client *c, uint64_t now)
{
    static char scratch[256 * 1024];
    for (int i = 0; i < 64 && c->alive; i++) {
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n > 0) {
            attack_received += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        lose(c, now);
    }
}

/* --attack-stop: the attackers leave by themselves (not counted as lost). */
static void stop_attack(uint64_t now)
{
    for (int i = 0; i < nclients; i++) {
        client *c = &clients[i];
        if ((c->role != ATTACKER && c->role != IDLER) || !c->alive)
            continue;
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->alive = false;
    }
    if (attack_gone_ns == 0)
        attack_gone_ns = now;
}

static size_t kv(const char *line, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = line; (p = strstr(p, key)) != NULL; p += klen)
        if ((p == line || p[-1] == ' ') && p[klen] == '=')
            return (size_t)strtoull(p + klen + 1, NULL, 10);
    return 0;
}

static int count_alive(role r)
{
    int n = 0;
    for (int i = 0; i < nclients; i++)
        n += clients[i].role == r && clients[i].alive;
    return n;
}

static uint64_t honest_bytes(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < nclients; i++)
        if (clients[i].role == HONEST)
            sum += clients[i].received;
    return sum;
}

static void record_sample(uint64_t now)
{
    if (csv == NULL)
        return;
    fprintf(csv, "%.3f,%zu,%zu,%zu,%zu,%" PRIu64 ",%zu,%d,%d,%" PRIu64 "\n", secs(now - t0),
            last.used, last.rss, last.max, last.accounts, last.reclaimed, last.conns,
            count_alive(HONEST), count_alive(ATTACKER), honest_bytes());
}

/* The reply to a STATS request (relayd: a line; httpd: an HTTP response
 * whose body is the line), complete at c->line: NULL until it is. */
static char *stats_reply(client *c, size_t *consumed)
{
    if (!opt.http) {
        char *nl = strchr(c->line, '\n');
        if (nl == NULL)
            return NULL;
        *nl = '\0';
        *consumed = (size_t)(nl + 1 - c->line);
        return c->line;
    }
    char *end = strstr(c->line, "\r\n\r\n");
    if (end == NULL)
        return NULL;
    const char *cl = strcasestr(c->line, "\r\nContent-Length:");
    size_t head = (size_t)(end + 4 - c->line);
    size_t body = cl != NULL && cl < end ? (size_t)strtoull(cl + 17, NULL, 10) : 0;
    if (c->line_len < head + body)
        return NULL;
    *consumed = head + body;
    char *line = c->line + head;
    if (body > 0 && line[body - 1] == '\n')
        body--;
    line[body] = '\0';
    return line;
}

static void monitor_read(client *c, uint64_t now)
{
    for (int i = 0; i < 16 && c->alive; i++) {
        size_t room = sizeof c->line - 1 - c->line_len;
        if (room == 0) {
            protocol_errors++;
            lose(c, now);
            return;
        }
        ssize_t n = recv(c->fd, c->line + c->line_len, room, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            lose(c, now);
            return;
        }
        if (n < 0)
            return;
        c->line_len += (size_t)n;
        c->line[c->line_len] = '\0';
        size_t consumed = 0;
        char *reply = stats_reply(c, &consumed);
        if (reply == NULL)
            continue;
        last = (sample){kv(reply, "used"),     kv(reply, "rss"),
                        kv(reply, "max"),      kv(reply, "accounts"),
                        kv(reply, "conns"),    kv(reply, "reclaimed"),
                        kv(reply, "killed"),   true};
        size_t rest = c->line_len - consumed;
        memmove(c->line, c->line + consumed, rest);
        c->line_len = rest;
        c->stats_sent_ns = 0;
        record_sample(now);
        /* RSS just before the attack, and 2 s after its last attacker went
         * (or, without attackers, 2 s after the attack would have ended). */
        if (now < attack_ns)
            idle_rss = last.rss;
        if (!rss_after_known && attack_gone_ns != 0 && now >= attack_gone_ns + 2000000000u) {
            rss_after = last.rss;
            rss_after_known = true;
        }
    }
}

static void monitor_poll(client *c, uint64_t now)
{
    static uint64_t next;
    if (!c->alive || c->stats_sent_ns != 0 || now < next)
        return;
    bool sent;
    const char *req = opt.http ? "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" : "STATS\n";
    if (send_line(c, req, &sent, now) && sent) {
        c->stats_sent_ns = now;
        next = now + (uint64_t)opt.sample_ms * 1000000u;
    }
}

static void human(char *buf, size_t len, double bytes)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, "%.1f %s", bytes, unit[u]);
}

static void progress(uint64_t now, bool final)
{
    if (!opt.progress)
        return;
    uint64_t every = tty ? 200000000u : 1000000000u;
    if (!final && now - last_progress_ns < every)
        return;
    last_progress_ns = now;
    char used[32], rss[32];
    human(used, sizeof used, (double)last.used);
    human(rss, sizeof rss, (double)last.rss);
    int ha = count_alive(HONEST), aa = count_alive(ATTACKER);
    int attackers_open = attack_started ? opt.attackers : 0;
    fprintf(stderr,
            "%s[%s] %5.1fs  tracked %10s  rss %10s  conns %4zu  reclaimed %3" PRIu64
            "  lost: attackers %d/%d honest %d/%d%s%s",
            tty ? "\r" : "", opt.label, secs(now - t0), used, rss, last.conns, last.killed,
            attackers_open - aa, opt.attackers, opt.honest - ha, opt.honest,
            server_gone_ns ? "  SERVER GONE" : "", tty ? "\033[K" : "\n");
    if (final && tty)
        fputc('\n', stderr);
    fflush(stderr);
}

/* ======================================================================
 * Report
 * ====================================================================== */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The p-quantile of n sorted values (-1 if none). */
static double quantile(const double *v, size_t n, double p)
{
    if (n == 0)
        return -1;
    size_t i = (size_t)ceil(p * (double)n) - 1;
    if (i >= n)
        i = n - 1;
    return v[i];
}

static double percentile(double p)
{
    return quantile(latencies, nlat, p);
}

/* The p99 of the requests sent while the attack lasted: from its start
 * until its last attacker was gone (or the run ended); without
 * attackers, the same period of the run. */
static double attack_p99(uint64_t stop)
{
    uint64_t end = attack_gone_ns != 0 ? attack_gone_ns : stop;
    double *v = malloc((nlat ? nlat : 1) * sizeof *v);
    if (v == NULL)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < nlat; i++)
        if (latency_sent[i] >= attack_ns && latency_sent[i] < end)
            v[n++] = latencies[i];
    qsort(v, n, sizeof *v, cmp_double);
    double p99 = quantile(v, n, 0.99);
    free(v);
    return p99;
}

/* "3, 5-9, 12" of the clients of role r that lost their connection. */
static void list_lost(role r, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    int run_start = -1, prev = -1;
    for (int i = 0; i <= nclients; i++) {
        bool lost = i < nclients && clients[i].role == r && clients[i].lost_ns != 0;
        int idx = i < nclients ? clients[i].index : -1;
        if (lost && run_start >= 0 && idx == prev + 1) {
            prev = idx;
            continue;
        }
        if (run_start >= 0 && off < len) {
            int w = run_start == prev ? snprintf(buf + off, len - off, "%s%d", off ? ", " : "",
                                                 run_start)
                                      : snprintf(buf + off, len - off, "%s%d-%d",
                                                 off ? ", " : "", run_start, prev);
            off += w > 0 ? (size_t)w : 0;
            run_start = -1;
        }
        if (lost)
            run_start = prev = idx;
    }
    if (off >= len && len > 4)
        strcpy(buf + len - 4, "...");
}

static void report(uint64_t stop)
{
    int honest_lost = 0, attackers_lost = 0, idle_lost = 0;
    uint64_t window_bytes = 0, total = 0;
    for (int i = 0; i < nclients; i++) {
        client *c = &clients[i];
        if (c->role == HONEST) {
            honest_lost += c->lost_ns != 0;
            total += c->received;
            window_bytes += c->received_window;
        } else if (c->role == ATTACKER) {
            attackers_lost += c->lost_ns != 0;
        } else if (c->role == IDLER) {
            idle_lost += c->lost_ns != 0;
        }
    }
    double duration = secs(stop - t0);
    /* The planned window, even if the run ended early because the server
     * died: what the honest clients did not get then counts as lost. */
    double window = end_ns > attack_ns ? secs(end_ns - attack_ns) : 0;
    double p99_attack = attack_p99(stop);
    qsort(latencies, nlat, sizeof *latencies, cmp_double);
    char after[32] = "-"; /* unknown: the run ended too soon, or the server died */
    if (rss_after_known)
        snprintf(after, sizeof after, "%zu", rss_after);
    double first_loss = first_attacker_loss_ns ? secs(first_attacker_loss_ns - attack_ns) * 1e3
                                               : -1;
    double last_loss = last_attacker_loss_ns ? secs(last_attacker_loss_ns - attack_ns) * 1e3 : -1;
    printf("LOADGEN label=%s duration_s=%.3f honest=%d honest_lost=%d attackers=%d "
           "attackers_lost=%d honest_bytes=%" PRIu64 " honest_Bps=%.0f window_s=%.3f "
           "honest_window_Bps=%.0f first_attacker_loss_ms=%.1f last_attacker_loss_ms=%.1f "
           "first_honest_loss_ms=%.1f "
           "server_gone_ms=%.1f latency_p50_ms=%.2f latency_p99_ms=%.2f latency_max_ms=%.2f "
           "requests=%" PRIu64 " attack_requested=%" PRIu64 " attack_received=%" PRIu64
           " protocol_errors=%" PRIu64 " idle_rss=%zu rss_after=%s latency_p99_attack_ms=%.2f"
           " attack_window_s=%.3f idle=%d idle_lost=%d http_errors=%" PRIu64 "\n",
           opt.label, duration, opt.honest, honest_lost, opt.attackers, attackers_lost, total,
           duration > 0 ? (double)total / duration : 0, window,
           window > 0 ? (double)window_bytes / window : 0, first_loss, last_loss,
           first_honest_loss_ns ? secs(first_honest_loss_ns - t0) * 1e3 : -1,
           server_gone_ns ? secs(server_gone_ns - t0) * 1e3 : -1, percentile(0.50),
           percentile(0.99), nlat ? latencies[nlat - 1] : -1, requests, attack_requested,
           attack_received, protocol_errors, idle_rss, after, p99_attack,
           secs((attack_gone_ns != 0 ? attack_gone_ns : stop) - attack_ns), opt.idle, idle_lost,
           http_errors);
    fflush(stdout);

    char list[512], rate[32];
    human(rate, sizeof rate, duration > 0 ? (double)total / duration : 0);
    say("%s: %d honest clients read %s/s in all; p99 request latency %.1f ms", opt.label,
        opt.honest, rate, percentile(0.99));
    list_lost(HONEST, list, sizeof list);
    say("%s: honest clients that lost their connection: %d/%d%s%s", opt.label, honest_lost,
        opt.honest, honest_lost ? ": #" : "", list);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < nclients; i++) {
        const client *c = &clients[i];
        if (c->role != HONEST || c->lost_ns == 0)
            continue;
        if (honest_lost <= 5)
            say("  honest #%d lost at %.3f s", c->index, secs(c->lost_ns - t0));
        lo = c->lost_ns < lo ? c->lost_ns : lo;
        hi = c->lost_ns > hi ? c->lost_ns : hi;
    }
    if (honest_lost > 5)
        say("  lost between %.3f s and %.3f s", secs(lo - t0), secs(hi - t0));
    list_lost(ATTACKER, list, sizeof list);
    if (opt.attackers > 0)
        say("%s: attackers that lost their connection: %d/%d%s%s (from %.0f to %.0f ms after "
            "the attack began)",
            opt.label, attackers_lost, opt.attackers, attackers_lost ? ": #" : "", list,
            first_loss, last_loss);
    if (server_gone_ns)
        say("%s: the server closed the monitor connection at %.3f s: it is gone", opt.label,
            secs(server_gone_ns - t0));
}

/* ======================================================================
 * Options and main
 * ====================================================================== */

static void usage(FILE *f)
{
    fputs("usage: loadgen --port N [options]   (always connects to 127.0.0.1)\n"
          "  --honest N           honest clients (default 20)\n"
          "  --attackers M        attackers (default 40)\n"
          "  --duration S         run time in seconds (default 8, at most 300)\n"
          "  --attack-start S     attackers connect at this time (default 1)\n"
          "  --honest-size SIZE   bytes per honest GET (default 64KiB)\n"
          "  --honest-rate SIZE   demand per honest client per second (default 2MiB; 0: as\n"
          "                       fast as the server answers)\n"
          "  --attack-size SIZE   bytes per attacker GET (default 256KiB)\n"
          "  --attack-rate SIZE   bytes asked per attacker per second (default 16MiB)\n"
          "  --attack-rcvbuf SIZE attacker receive buffer (default 4KiB)\n"
          "  --attack-total SIZE  each attacker stops asking after SIZE (default 0: never)\n"
          "  --attack-stop S      attackers leave at this time (default 0: at the end)\n"
          "  --attackers-read     attackers read what they get (the control run)\n"
          "  --idle N             connections opened at the attack's start that send and\n"
          "                       read nothing (default 0)\n"
          "  --http               speak HTTP/1.1 to examples/httpd (GET /data?n=N&tag=h|a,\n"
          "                       GET /stats) instead of relayd's protocol\n"
          "  --sample-ms N        STATS sampling period (default 100)\n"
          "  --csv FILE           write the time series there\n"
          "  --progress           a status line on stderr (in place on a terminal)\n"
          "  --label TEXT         name of this run in the output\n"
          "  --trace FILE         one line per honest request's times, for latency studies\n",
          f);
}

static bool size_arg(const char *name, const char *text, size_t lo, size_t hi, size_t *out)
{
    int rc = memq_parse_size(text, out);
    if (rc != 0 || *out < lo || *out > hi) {
        say("%s %s: expected a size from %zu to %zu bytes", name, text, lo, hi);
        return false;
    }
    return true;
}

static bool num_arg(const char *name, const char *text, double lo, double hi, double *out)
{
    char *end;
    *out = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !(*out >= lo && *out <= hi)) {
        say("%s %s: expected a number from %g to %g", name, text, lo, hi);
        return false;
    }
    return true;
}

static int parse_options(int argc, char **argv)
{
    enum { O_PORT = 1, O_HON, O_ATT, O_DUR, O_AST, O_HSZ, O_HRT, O_ASZ, O_ART, O_RCV, O_SMP,
           O_CSV, O_PRG, O_LBL, O_TRACE, O_ATOT, O_ASTOP, O_AREAD, O_IDLE, O_HTTP, O_HELP };
    static const struct option longs[] = {
        {"port", required_argument, NULL, O_PORT},
        {"honest", required_argument, NULL, O_HON},
        {"attackers", required_argument, NULL, O_ATT},
        {"duration", required_argument, NULL, O_DUR},
        {"attack-start", required_argument, NULL, O_AST},
        {"honest-size", required_argument, NULL, O_HSZ},
        {"honest-rate", required_argument, NULL, O_HRT},
        {"attack-size", required_argument, NULL, O_ASZ},
        {"attack-rate", required_argument, NULL, O_ART},
        {"attack-rcvbuf", required_argument, NULL, O_RCV},
        {"sample-ms", required_argument, NULL, O_SMP},
        {"csv", required_argument, NULL, O_CSV},
        {"progress", no_argument, NULL, O_PRG},
        {"label", required_argument, NULL, O_LBL},
        {"trace", required_argument, NULL, O_TRACE},
        {"attack-total", required_argument, NULL, O_ATOT},
        {"attack-stop", required_argument, NULL, O_ASTOP},
        {"attackers-read", no_argument, NULL, O_AREAD},
        {"idle", required_argument, NULL, O_IDLE},
        {"http", no_argument, NULL, O_HTTP},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    opt = (options){.port = -1, .honest = 20, .attackers = 40, .duration = 8,
                    .attack_start = 1, .honest_size = 64 << 10, .attack_size = 256 << 10,
                    .attack_rcvbuf = 4096, .honest_rate = 2 << 20, .attack_rate = 16 << 20,
                    .sample_ms = 100, .label = "run"};
    int ch;
    double v;
    size_t s;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case O_PORT:
            if (!num_arg("--port", optarg, 1, 65535, &v))
                return 2;
            opt.port = (int)v;
            break;
        case O_HON:
        case O_ATT:
            if (!num_arg(ch == O_HON ? "--honest" : "--attackers", optarg, 0, MAX_CLIENTS / 2,
                         &v))
                return 2;
            *(ch == O_HON ? &opt.honest : &opt.attackers) = (int)v;
            break;
        case O_DUR:
            if (!num_arg("--duration", optarg, 0.1, MAX_DURATION_S, &opt.duration))
                return 2;
            break;
        case O_AST:
            if (!num_arg("--attack-start", optarg, 0, MAX_DURATION_S, &opt.attack_start))
                return 2;
            break;
        case O_HSZ:
            if (!size_arg("--honest-size", optarg, 1, MAX_SIZE, &opt.honest_size))
                return 2;
            break;
        case O_ASZ:
            if (!size_arg("--attack-size", optarg, 1, MAX_SIZE, &opt.attack_size))
                return 2;
            break;
        case O_HRT:
        case O_ART:
            if (!size_arg(ch == O_HRT ? "--honest-rate" : "--attack-rate", optarg, 0,
                          (size_t)MAX_RATE, &s))
                return 2;
            *(ch == O_HRT ? &opt.honest_rate : &opt.attack_rate) = (double)s;
            break;
        case O_RCV:
            if (!size_arg("--attack-rcvbuf", optarg, 0, MAX_SIZE, &opt.attack_rcvbuf))
                return 2;
            break;
        case O_SMP:
            if (!num_arg("--sample-ms", optarg, 10, 10000, &v))
                return 2;
            opt.sample_ms = (int)v;
            break;
        case O_CSV:
            opt.csv = optarg;
            break;
        case O_PRG:
            opt.progress = true;
            break;
        case O_LBL:
            opt.label = optarg;
            break;
        case O_TRACE:
            opt.trace = optarg;
            break;
        case O_ATOT:
            if (!size_arg("--attack-total", optarg, 0, (size_t)1 << 40, &opt.attack_total))
                return 2;
            break;
        case O_ASTOP:
            if (!num_arg("--attack-stop", optarg, 0, MAX_DURATION_S, &opt.attack_stop))
                return 2;
            break;
        case O_AREAD:
            opt.attackers_read = true;
            break;
        case O_IDLE:
            if (!num_arg("--idle", optarg, 0, MAX_CLIENTS / 2, &v))
                return 2;
            opt.idle = (int)v;
            break;
        case O_HTTP:
            opt.http = true;
            break;
        case O_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || opt.port < 0) {
        usage(stderr);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int rc = parse_options(argc, argv);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    tty = isatty(STDERR_FILENO);

    nclients = opt.honest + opt.attackers + opt.idle + 1;
    clients = calloc((size_t)nclients, sizeof *clients);
    latencies = malloc(MAX_LATENCIES * sizeof *latencies);
    latency_sent = malloc(MAX_LATENCIES * sizeof *latency_sent);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (clients == NULL || latencies == NULL || latency_sent == NULL || epfd < 0) {
        say("out of memory");
        return 1;
    }
    if (opt.trace != NULL && (trace = fopen(opt.trace, "w")) == NULL) {
        say("%s: %s", opt.trace, strerror(errno));
        return 1;
    }
    if (opt.csv != NULL) {
        csv = fopen(opt.csv, "w");
        if (csv == NULL) {
            say("%s: %s", opt.csv, strerror(errno));
            return 1;
        }
        fputs("t_s,used,rss,max,accounts,reclaimed,conns,honest_alive,attackers_alive,"
              "honest_bytes\n",
              csv);
    }
    for (int i = 0; i < nclients; i++) {
        client *c = &clients[i];
        c->fd = -1;
        int a = opt.honest, b = a + opt.attackers, d = b + opt.idle;
        c->role = i < a ? HONEST : i < b ? ATTACKER : i < d ? IDLER : MONITOR;
        c->index = c->role == HONEST ? i + 1 : c->role == ATTACKER ? i - a + 1
                                           : c->role == IDLER ? i - b + 1 : 1;
    }

    t0 = now_ns();
    attack_ns = t0 + (uint64_t)(opt.attack_start * 1e9);
    end_ns = t0 + (uint64_t)(opt.duration * 1e9);
    if (opt.attack_stop > opt.attack_start)
        attack_stop_ns = t0 + (uint64_t)(opt.attack_stop * 1e9);
    /* Without attackers, the attack's window is the time it would have
     * lasted: until its stop (rss_after 2 s later), else the end. */
    if (opt.attackers + opt.idle == 0)
        attack_gone_ns = attack_stop_ns;
    client *monitor = &clients[nclients - 1];
    if (!open_client(monitor, t0)) {
        say("no server on 127.0.0.1:%d", opt.port);
        return 1;
    }
    for (int i = 0; i < nclients; i++)
        if (clients[i].role == HONEST)
            open_client(&clients[i], now_ns());

    struct epoll_event evs[256];
    uint64_t now = now_ns();
    /* Bounded: stops at end_ns (at most MAX_DURATION_S), on a signal, or
     * once the server is gone and no client is left. */
    while (now < end_ns && !interrupted) {
        int n = epoll_wait(epfd, evs, 256, LOOP_MS);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            client *c = evs[i].data.ptr;
            if (!c->alive)
                continue;
            uint32_t e = evs[i].events;
            if (c->role == IDLER) {
                lose(c, now); /* closed by the server (or an error) */
                continue;
            }
            if (c->role == ATTACKER) {
                if (opt.attackers_read)
                    attacker_read(c, now);
                else
                    lose(c, now); /* it reads nothing: any event is a hang-up or an error */
                continue;
            }
            if (e & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
                if (c->role == HONEST)
                    honest_read(c, now);
                else
                    monitor_read(c, now);
            }
        }
        if (!attack_started && now >= attack_ns) {
            attack_started = true;
            for (int i = 0; i < nclients; i++)
                if (clients[i].role == ATTACKER || clients[i].role == IDLER)
                    open_client(&clients[i], now_ns());
            now = now_ns();
        }
        if (attack_started && attack_stop_ns != 0 && now >= attack_stop_ns)
            stop_attack(now);
        /* Every attacker lost before the attack's end: that was when the
         * last one went. */
        if (attack_started && attack_gone_ns == 0 && opt.attackers + opt.idle > 0 &&
            count_alive(ATTACKER) + count_alive(IDLER) == 0)
            attack_gone_ns = last_attacker_loss_ns != 0 ? last_attacker_loss_ns : now;
        for (int i = 0; i < nclients; i++) {
            client *c = &clients[i];
            if (c->role == HONEST)
                honest_request(c, now);
            else if (c->role == ATTACKER)
                attacker_request(c, now);
            else
                monitor_poll(c, now);
        }
        progress(now, false);
        if (server_gone_ns != 0 && count_alive(HONEST) == 0 && count_alive(ATTACKER) == 0)
            break;
    }
    progress(now, true);
    report(now);
    for (int i = 0; i < nclients; i++)
        if (clients[i].fd >= 0)
            close(clients[i].fd);
    if (csv != NULL)
        fclose(csv);
    if (trace != NULL)
        fclose(trace);
    close(epfd);
    free(clients);
    free(latencies);
    free(latency_sent);
    return 0;
}
