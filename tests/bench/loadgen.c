/*
 * loadgen: the closed-loop load generator of the sqlmux benchmarks. One
 * program drives every system of a comparison the same way: sqlmux over its
 * line protocol, Redis over its inline protocol, and PostgreSQL (directly or
 * through PgBouncer) with non-blocking libpq.
 *
 * One thread, one epoll set, `-c` connections; each keeps `-P` requests in
 * flight and sends the next one as soon as a response is complete. A
 * request's latency runs from when it was queued for writing to when the
 * last byte of its response was parsed, and goes into a log-bucketed
 * histogram (HdrHistogram-like: 64 sub-buckets per power of two, so a
 * percentile is exact within ~1.6%).
 *
 * Requests come from templates: `{id}` becomes a random integer of the
 * `-r MIN:MAX` range, `{seq}` a number unique to the request (0, 1, ...),
 * and the escapes \n \r \t \\ are decoded. Examples:
 *
 *   loadgen -m sqlmux -p 7654 -c 50 -d 5 -r 1:100000 \
 *           -q '?1 SELECT v FROM kv WHERE id = ?\ni{id}'
 *   loadgen -m redis -p 6379 -c 50 -P 16 -d 5 -r 1:100000 -q 'GET key:{id}'
 *   loadgen -m pg -D 'host=127.0.0.1 port=5432 dbname=bench' -c 16 -d 5 \
 *           -r 1:400000 -q 'SELECT abalance FROM pgbench_accounts WHERE aid = $1' -a '{id}'
 *
 * A run either lasts `-w` warm-up seconds plus `-d` measured seconds, or
 * sends exactly `-n` requests (measured from the first to the last answer,
 * including `-f`). `-i` sends a request once per connection before the run
 * (BEGIN, .use x), `-f` once after it (COMMIT); neither is counted. `-I`
 * only opens the connections (after `-i`), prints "ready", and holds them
 * until stdin closes or `-d` seconds pass: the idle-memory measurement.
 * `-T` speaks TLS (OpenSSL, the server's certificate not checked: a
 * benchmark, not a client) to sqlmux's tls_listen port or Redis's
 * tls-port; "ready" then says how fast the handshakes went (connect_s).
 *
 * The result is one line on stdout, `key=value` pairs, for the runner;
 * a human summary goes to stderr. Error replies (-ERR, Redis errors,
 * PostgreSQL errors) are counted and the first one is shown; unless `-E`
 * is given, any makes the exit status 3. Anything that breaks the protocol
 * (a malformed reply, a closed connection) stops the run at once with
 * status 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PARAMS       8
#define MAX_CONNECTING   128 /* connection attempts in progress at once */
#define READ_SIZE        (16 * 1024)
#define DRAIN_TIMEOUT_NS (30ull * 1000000000ull)

/* ---- Small helpers ----------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;

    fputs("loadgen: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        die("out of memory");
    return q;
}

/* A byte buffer: data[pos..len) is pending (unsent output, unparsed input). */
struct bytes {
    char *data;
    size_t pos, len, cap;
};

static void bytes_reserve(struct bytes *b, size_t more)
{
    if (b->pos > 0 && b->pos == b->len) {
        b->pos = b->len = 0;
    } else if (b->pos > 0 && b->len + more > b->cap) {
        memmove(b->data, b->data + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;
    }
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

static void bytes_append(struct bytes *b, const void *p, size_t n)
{
    bytes_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* xorshift64*: fast and good enough to pick keys. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* ---- Latency histogram ------------------------------------------------- */

/* Values below 64 ns have a bucket each; above, each power of two splits
 * into 32 buckets by the 5 bits after the leading one. */
#define HIST_BUCKETS (64 + 58 * 32)

struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t total, max;
};

static size_t hist_index(uint64_t v)
{
    if (v < 64)
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    uint64_t top = v >> (msb - 5); /* 32..63 */
    return 64 + (size_t)(msb - 6) * 32 + (size_t)(top - 32);
}

/* The highest value that falls in bucket i. */
static uint64_t hist_upper(size_t i)
{
    if (i < 64)
        return i;
    int msb = (int)((i - 64) / 32) + 6;
    uint64_t top = 32 + (i - 64) % 32;
    return ((top + 1) << (msb - 5)) - 1;
}

static void hist_add(struct hist *h, uint64_t v)
{
    size_t i = hist_index(v);
    if (i >= HIST_BUCKETS)
        i = HIST_BUCKETS - 1;
    h->count[i]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

/* The value at quantile q (0..1): the upper bound of its bucket, capped by
 * the largest value seen. 0 when empty. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t want, seen = 0;

    if (h->total == 0)
        return 0;
    want = (uint64_t)(q * (double)h->total + 0.999999);
    if (want == 0)
        want = 1;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want)
            return hist_upper(i) < h->max ? hist_upper(i) : h->max;
    }
    return h->max;
}

/* ---- Request templates ------------------------------------------------- */

enum piece_kind { PIECE_TEXT, PIECE_ID, PIECE_SEQ };

struct piece {
    enum piece_kind kind;
    char *text;
    size_t len;
};

struct tmpl {
    struct piece *pieces;
    size_t n;
};

static void tmpl_add(struct tmpl *t, enum piece_kind kind, const char *text, size_t len)
{
    t->pieces = xrealloc(t->pieces, (t->n + 1) * sizeof *t->pieces);
    t->pieces[t->n].kind = kind;
    t->pieces[t->n].text = NULL;
    t->pieces[t->n].len = len;
    if (kind == PIECE_TEXT) {
        t->pieces[t->n].text = xrealloc(NULL, len + 1);
        memcpy(t->pieces[t->n].text, text, len);
        t->pieces[t->n].text[len] = '\0';
    }
    t->n++;
}

/* Parse src: {id}, {seq} and the escapes \n \r \t \\. */
static void tmpl_parse(struct tmpl *t, const char *src)
{
    struct bytes lit = {0};

    memset(t, 0, sizeof *t);
    for (const char *p = src; *p; p++) {
        if (*p == '{' && strncmp(p, "{id}", 4) == 0) {
            if (lit.len > 0)
                tmpl_add(t, PIECE_TEXT, lit.data, lit.len);
            lit.len = 0;
            tmpl_add(t, PIECE_ID, NULL, 0);
            p += 3;
        } else if (*p == '{' && strncmp(p, "{seq}", 5) == 0) {
            if (lit.len > 0)
                tmpl_add(t, PIECE_TEXT, lit.data, lit.len);
            lit.len = 0;
            tmpl_add(t, PIECE_SEQ, NULL, 0);
            p += 4;
        } else if (*p == '\\' && p[1] != '\0') {
            char c;
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case '\\': c = '\\'; break;
            default: die("template: unknown escape \\%c in %s", *p, src);
            }
            bytes_append(&lit, &c, 1);
        } else {
            bytes_append(&lit, p, 1);
        }
    }
    if (lit.len > 0)
        tmpl_add(t, PIECE_TEXT, lit.data, lit.len);
    free(lit.data);
}

/* The values of one request's placeholders. */
struct draw {
    uint64_t id, seq;
};

/* Append v's decimal digits: by hand, as snprintf() took more than half
 * the load generator's instructions per request (about 1,100 in all),
 * time the measured system waits for when a client runs one connection. */
static void append_u64(struct bytes *out, uint64_t v)
{
    char num[20];
    char *p = num + sizeof num;

    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    bytes_append(out, p, (size_t)(num + sizeof num - p));
}

static void tmpl_render(const struct tmpl *t, const struct draw *d, struct bytes *out)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct piece *pc = &t->pieces[i];
        switch (pc->kind) {
        case PIECE_TEXT: bytes_append(out, pc->text, pc->len); break;
        case PIECE_ID: append_u64(out, d->id); break;
        case PIECE_SEQ: append_u64(out, d->seq); break;
        }
    }
}

/* ---- Options and global state ------------------------------------------ */

enum mode { MODE_SQLMUX, MODE_REDIS, MODE_PG };
enum pg_style { PG_PARAMS, PG_PREPARED, PG_SIMPLE };

struct options {
    enum mode mode;
    const char *host;
    int port;
    const char *unix_path;
    const char *conninfo;
    int conns;
    int depth;
    double duration, warmup;
    uint64_t count; /* -n: requests to send, 0: run for -d */
    uint64_t id_min, id_max;
    const char *query, *init, *final;
    const char *params[MAX_PARAMS];
    int nparams;
    enum pg_style pg_style;
    bool idle;
    bool allow_errors;
    bool quiet;
    bool tls;
};

enum cstate { C_CONNECTING, C_INIT, C_WAITING, C_RUN, C_FINAL, C_DONE };

/* What a queued request was, to know what its response means. */
enum req_kind { REQ_COUNTED, REQ_INIT, REQ_FINAL };

struct conn {
    int index;
    int fd;
    PGconn *pg;
    enum cstate state;
    uint32_t events; /* epoll interest now */
    bool registered;
    struct bytes in, out;
    /* In-flight requests, oldest first: a ring of `depth` + 2 entries. */
    uint64_t *sent_at;
    uint8_t *kind;
    size_t head, inflight, ring;
    int init_step; /* next step of connecting: see conn_init_next() */
    SSL *ssl;      /* -T: every byte goes through it */
    bool handshaking;
    bool pg_failed; /* the current PostgreSQL query had an error result */
};

enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_FINAL, PH_DONE };

struct run {
    struct options opt;
    struct tmpl query, init, final;
    struct tmpl params[MAX_PARAMS];
    int epfd;
    struct conn *conns;
    int connecting; /* attempts in progress */
    int next_to_open;
    int ready;    /* connections done with -i */
    int finished; /* connections done with -f */
    enum phase phase;
    uint64_t t_start, t_measure, t_end, t_done;
    uint64_t drain_deadline; /* the run fails if answers take longer */
    uint64_t sent;           /* requests sent (counted kind) */
    uint64_t completed;      /* responses to counted requests in the window */
    uint64_t completed_all;
    uint64_t errors;
    char first_error[512];
    uint64_t seq;
    struct hist hist;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    SSL_CTX *tls; /* -T */
};

static struct run R;

static void conn_init_next(struct conn *c, uint64_t now);

static void note_error(const char *msg, size_t len)
{
    R.errors++;
    if (R.first_error[0] == '\0') {
        if (len >= sizeof R.first_error)
            len = sizeof R.first_error - 1;
        memcpy(R.first_error, msg, len);
        R.first_error[len] = '\0';
        while (len > 0 && (R.first_error[len - 1] == '\n' || R.first_error[len - 1] == '\r'))
            R.first_error[--len] = '\0';
    }
}

/* ---- epoll --------------------------------------------------------------- */

static void conn_watch(struct conn *c, uint32_t events)
{
    struct epoll_event ev;

    if (c->registered && c->events == events)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u32 = (uint32_t)c->index;
    if (epoll_ctl(R.epfd, c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->registered = true;
    c->events = events;
}

static void conn_unwatch(struct conn *c)
{
    if (c->registered)
        epoll_ctl(R.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    c->registered = false;
    c->events = 0;
}

/* ---- Sending ----------------------------------------------------------- */

static void conn_push(struct conn *c, enum req_kind kind, uint64_t t)
{
    size_t slot = (c->head + c->inflight) % c->ring;

    if (c->inflight == c->ring)
        die("internal: request ring full");
    c->sent_at[slot] = t;
    c->kind[slot] = (uint8_t)kind;
    c->inflight++;
}

/* read() and write() of a connection, through TLS with -T: -1 with errno
 * EAGAIN when TLS must wait for the socket. */
static ssize_t conn_io(struct conn *c, bool writing, void *p, size_t n)
{
    size_t done = 0;
    int rc, err;

    if (c->ssl == NULL)
        return writing ? write(c->fd, p, n) : read(c->fd, p, n);
    rc = writing ? SSL_write_ex(c->ssl, p, n, &done) : SSL_read_ex(c->ssl, p, n, &done);
    if (rc == 1)
        return (ssize_t)done;
    err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (err == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (err != SSL_ERROR_SYSCALL)
        errno = EPROTO;
    ERR_clear_error();
    return -1;
}

/* Write pending output; watch for writability while some is left. */
static void conn_flush(struct conn *c)
{
    while (c->out.pos < c->out.len) {
        ssize_t n = conn_io(c, true, c->out.data + c->out.pos, c->out.len - c->out.pos);
        if (n > 0) {
            c->out.pos += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        die("connection %d: write: %s", c->index, n < 0 ? strerror(errno) : "closed");
    }
    if (c->out.pos == c->out.len)
        c->out.pos = c->out.len = 0;
    conn_watch(c, EPOLLIN | (c->out.len > c->out.pos ? EPOLLOUT : 0u));
}

static void pg_flush(struct conn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0)
        die("connection %d: %s", c->index, PQerrorMessage(c->pg));
    conn_watch(c, EPOLLIN | (rc == 1 ? EPOLLOUT : 0u));
}

/* Queue one request of template t (without the line end for the socket
 * protocols, which is added here). */
static void conn_send_tmpl(struct conn *c, const struct tmpl *t, enum req_kind kind, uint64_t now)
{
    struct draw d;

    d.id = R.opt.id_min + (R.opt.id_max > R.opt.id_min ? rng_next() % (R.opt.id_max - R.opt.id_min + 1) : 0);
    d.seq = R.seq++;
    if (R.opt.mode != MODE_PG) {
        tmpl_render(t, &d, &c->out);
        bytes_append(&c->out, R.opt.mode == MODE_REDIS ? "\r\n" : "\n", R.opt.mode == MODE_REDIS ? 2 : 1);
        conn_push(c, kind, now);
        return;
    }
    /* PostgreSQL: -i/-f as simple queries; the measured query as chosen. */
    struct bytes sql = {0};
    int ok;
    tmpl_render(t, &d, &sql);
    bytes_append(&sql, "", 1);
    if (kind != REQ_COUNTED || R.opt.pg_style == PG_SIMPLE) {
        ok = PQsendQuery(c->pg, sql.data);
    } else {
        struct bytes vals[MAX_PARAMS];
        const char *values[MAX_PARAMS];
        memset(vals, 0, sizeof vals);
        for (int i = 0; i < R.opt.nparams; i++) {
            tmpl_render(&R.params[i], &d, &vals[i]);
            bytes_append(&vals[i], "", 1);
            values[i] = vals[i].data;
        }
        if (R.opt.pg_style == PG_PREPARED)
            ok = PQsendQueryPrepared(c->pg, "q", R.opt.nparams, values, NULL, NULL, 0);
        else
            ok = PQsendQueryParams(c->pg, sql.data, R.opt.nparams, NULL, values, NULL, NULL, 0);
        for (int i = 0; i < R.opt.nparams; i++)
            free(vals[i].data);
    }
    free(sql.data);
    if (!ok)
        die("connection %d: send: %s", c->index, PQerrorMessage(c->pg));
    conn_push(c, kind, now);
}

/* Keep the pipeline full while the run wants requests. */
static void conn_fill(struct conn *c, uint64_t now)
{
    size_t depth = (size_t)R.opt.depth;
    bool any = false;

    if (c->state != C_RUN || (R.phase != PH_WARMUP && R.phase != PH_MEASURE))
        return;
    if (R.opt.mode == MODE_PG)
        depth = 1; /* one query at a time per libpq connection */
    while (c->inflight < depth && (R.opt.count == 0 || R.sent < R.opt.count)) {
        conn_send_tmpl(c, &R.query, REQ_COUNTED, now);
        R.sent++;
        any = true;
    }
    if (any) {
        if (R.opt.mode == MODE_PG)
            pg_flush(c);
        else
            conn_flush(c);
    }
}

/* ---- Phases -------------------------------------------------------------- */

static void run_start(uint64_t now)
{
    R.t_start = now;
    R.t_measure = now + (uint64_t)(R.opt.warmup * 1e9);
    R.t_end = R.t_measure + (uint64_t)(R.opt.duration * 1e9);
    R.phase = R.opt.warmup > 0 && R.opt.count == 0 ? PH_WARMUP : PH_MEASURE;
    if (R.opt.count > 0)
        R.t_measure = now;
    for (int i = 0; i < R.opt.conns; i++) {
        R.conns[i].state = C_RUN;
        conn_fill(&R.conns[i], now);
    }
}

static void conn_send_final(struct conn *c, uint64_t now)
{
    c->state = C_FINAL;
    if (R.opt.final == NULL) {
        c->state = C_DONE;
        R.finished++;
        return;
    }
    conn_send_tmpl(c, &R.final, REQ_FINAL, now);
    if (R.opt.mode == MODE_PG)
        pg_flush(c);
    else
        conn_flush(c);
}

/* A connection with nothing in flight after the measured part. */
static void conn_maybe_final(struct conn *c, uint64_t now)
{
    if (c->state == C_RUN && c->inflight == 0 && (R.phase == PH_DRAIN || R.phase == PH_FINAL))
        conn_send_final(c, now);
}

static void run_enter_drain(uint64_t now)
{
    R.phase = PH_DRAIN;
    if (R.opt.count > 0)
        R.t_end = now;
    R.drain_deadline = now + DRAIN_TIMEOUT_NS;
    for (int i = 0; i < R.opt.conns; i++)
        conn_maybe_final(&R.conns[i], now);
}

/* ---- Responses ------------------------------------------------------------ */

/* The oldest request of c got its complete response. */
static void conn_complete(struct conn *c, bool failed, uint64_t now)
{
    enum req_kind kind;
    uint64_t sent;

    if (c->inflight == 0)
        die("connection %d: a response to no request", c->index);
    kind = (enum req_kind)c->kind[c->head];
    sent = c->sent_at[c->head];
    c->head = (c->head + 1) % c->ring;
    c->inflight--;
    switch (kind) {
    case REQ_INIT:
        if (failed && !R.opt.allow_errors)
            die("connection %d: a set-up request failed: %s", c->index, R.first_error);
        if (c->inflight == 0 && c->state == C_INIT)
            conn_init_next(c, now);
        return;
    case REQ_FINAL:
        if (failed && !R.opt.allow_errors)
            die("connection %d: the -f request failed: %s", c->index, R.first_error);
        c->state = C_DONE;
        R.finished++;
        return;
    case REQ_COUNTED:
        R.completed_all++;
        if (R.opt.count > 0 || (now >= R.t_measure && now < R.t_end && R.phase == PH_MEASURE)) {
            R.completed++;
            hist_add(&R.hist, now - sent);
        }
        if (R.opt.count > 0 && R.completed_all == R.opt.count && R.phase == PH_MEASURE)
            run_enter_drain(now);
        return;
    }
}

/* sqlmux: a response is any number of '*' and '=' lines ended by one line
 * that starts with "+OK" or "-ERR". Returns false when more input is needed. */
static bool parse_sqlmux(struct conn *c, uint64_t now)
{
    for (;;) {
        char *p = c->in.data + c->in.pos;
        size_t avail = c->in.len - c->in.pos;
        char *nl = avail ? memchr(p, '\n', avail) : NULL;
        size_t linelen;

        if (nl == NULL)
            return false;
        linelen = (size_t)(nl - p) + 1;
        c->in.pos += linelen;
        if (p[0] == '*' || p[0] == '=')
            continue;
        if (linelen >= 3 && p[0] == '+' && p[1] == 'O' && p[2] == 'K') {
            conn_complete(c, false, now);
            continue;
        }
        if (linelen >= 4 && memcmp(p, "-ERR", 4) == 0) {
            note_error(p, linelen);
            conn_complete(c, true, now);
            continue;
        }
        die("connection %d: not a sqlmux response line: %.*s", c->index, (int)(linelen > 200 ? 200 : linelen),
            p);
    }
}

/* One RESP reply at p[0..avail): its length, 0 when incomplete. Sets
 * *is_error for a top-level error reply. */
static size_t resp_reply(const char *p, size_t avail, bool *is_error, int depth)
{
    const char *nl;
    size_t head;
    long long n;
    char *end;

    if (avail == 0)
        return 0;
    nl = memchr(p, '\n', avail);
    if (nl == NULL)
        return 0;
    head = (size_t)(nl - p) + 1;
    if (head < 3 || p[head - 2] != '\r')
        die("not a Redis reply: %.*s", (int)(head > 200 ? 200 : head), p);
    switch (p[0]) {
    case '+':
    case ':': return head;
    case '-':
        if (depth == 0)
            *is_error = true;
        return head;
    case '$':
        n = strtoll(p + 1, &end, 10);
        if (end != p + head - 2 || n < -1)
            die("bad Redis bulk header: %.*s", (int)head, p);
        if (n == -1)
            return head;
        if (avail < head + (size_t)n + 2)
            return 0;
        return head + (size_t)n + 2;
    case '*': {
        size_t used = head;
        n = strtoll(p + 1, &end, 10);
        if (end != p + head - 2 || n < -1 || depth > 8)
            die("bad Redis array header: %.*s", (int)head, p);
        for (long long i = 0; i < n; i++) {
            size_t k = resp_reply(p + used, avail - used, is_error, depth + 1);
            if (k == 0)
                return 0;
            used += k;
        }
        return used;
    }
    default: die("not a Redis reply: %.*s", (int)(head > 200 ? 200 : head), p);
    }
}

static bool parse_redis(struct conn *c, uint64_t now)
{
    for (;;) {
        bool is_error = false;
        size_t n = resp_reply(c->in.data + c->in.pos, c->in.len - c->in.pos, &is_error, 0);
        if (n == 0)
            return false;
        if (is_error)
            note_error(c->in.data + c->in.pos, n);
        c->in.pos += n;
        conn_complete(c, is_error, now);
    }
}

/* Read what the socket has and handle complete responses. */
static void conn_read(struct conn *c, uint64_t now)
{
    for (;;) {
        ssize_t n;
        bytes_reserve(&c->in, READ_SIZE);
        size_t room = c->in.cap - c->in.len;
        n = conn_io(c, false, c->in.data + c->in.len, room);
        if (n > 0) {
            c->in.len += (size_t)n;
            /* A short read drained the socket; TLS hands over one record
             * at a time, and may hold more already read. */
            if ((size_t)n < room && (c->ssl == NULL || !SSL_has_pending(c->ssl)))
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        die("connection %d: %s by the server (%zu request%s in flight)", c->index,
            n == 0 ? "closed" : strerror(errno), c->inflight, c->inflight == 1 ? "" : "s");
    }
    if (R.opt.mode == MODE_SQLMUX)
        parse_sqlmux(c, now);
    else
        parse_redis(c, now);
    if (c->in.pos == c->in.len)
        c->in.pos = c->in.len = 0;
}

/* PostgreSQL: results of the oldest query until libpq would block. */
static void pg_read(struct conn *c, uint64_t now)
{
    if (!PQconsumeInput(c->pg))
        die("connection %d: %s", c->index, PQerrorMessage(c->pg));
    while (c->inflight > 0 && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            bool failed = c->pg_failed;
            c->pg_failed = false;
            conn_complete(c, failed, now);
            continue;
        }
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY: break;
        default: {
            const char *msg = PQresultErrorMessage(res);
            note_error(msg, strlen(msg));
            c->pg_failed = true;
            break;
        }
        }
        PQclear(res);
    }
}

/* ---- Connecting ------------------------------------------------------------ */

/* Set-up after connecting, one step at a time (libpq takes one query at a
 * time): prepare the statement (-M prepared), send -i, then wait for the
 * other connections. */
static void conn_init_next(struct conn *c, uint64_t now)
{
    c->state = C_INIT;
    if (c->init_step == 0) {
        c->init_step++;
        if (R.opt.mode == MODE_PG && R.opt.pg_style == PG_PREPARED) {
            struct bytes sql = {0};
            struct draw d = {R.opt.id_min, 0};
            tmpl_render(&R.query, &d, &sql);
            bytes_append(&sql, "", 1);
            if (!PQsendPrepare(c->pg, "q", sql.data, R.opt.nparams, NULL))
                die("connection %d: prepare: %s", c->index, PQerrorMessage(c->pg));
            free(sql.data);
            conn_push(c, REQ_INIT, now);
            pg_flush(c);
            return;
        }
    }
    if (c->init_step == 1) {
        c->init_step++;
        if (R.opt.init != NULL) {
            conn_send_tmpl(c, &R.init, REQ_INIT, now);
            if (R.opt.mode == MODE_PG)
                pg_flush(c);
            else
                conn_flush(c);
            return;
        }
    }
    c->state = C_WAITING;
    R.ready++;
}

static void conn_ready(struct conn *c, uint64_t now)
{
    R.connecting--;
    conn_watch(c, EPOLLIN);
    conn_init_next(c, now);
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        die("fcntl: %s", strerror(errno));
}

static void conn_open_socket(struct conn *c)
{
    int one = 1;

    c->fd = socket(R.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s (raise the open-file limit for %d connections)", strerror(errno), R.opt.conns);
    set_nonblock(c->fd);
    if (R.addr.ss_family != AF_UNIX)
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&R.addr, R.addrlen) != 0 && errno != EINPROGRESS && errno != EAGAIN)
        die("connect: %s", strerror(errno));
    c->state = C_CONNECTING;
    R.connecting++;
    conn_watch(c, EPOLLOUT);
}

static void pg_connect_step(struct conn *c, uint64_t now)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    int fd = PQsocket(c->pg);

    if (fd != c->fd) {
        conn_unwatch(c);
        c->fd = fd;
    }
    switch (st) {
    case PGRES_POLLING_READING: conn_watch(c, EPOLLIN); break;
    case PGRES_POLLING_WRITING: conn_watch(c, EPOLLOUT); break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->pg, 1) != 0)
            die("connection %d: PQsetnonblocking failed", c->index);
        conn_watch(c, EPOLLIN);
        conn_ready(c, now);
        break;
    default: die("connection %d: cannot connect: %s", c->index, PQerrorMessage(c->pg));
    }
}

/* libpq: before the first PQconnectPoll(), wait until the socket is
 * writable. */
static void conn_open_pg(struct conn *c)
{
    c->pg = PQconnectStart(R.opt.conninfo);
    if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD)
        die("connection %d: cannot connect: %s", c->index, c->pg ? PQerrorMessage(c->pg) : "out of memory");
    c->fd = PQsocket(c->pg);
    c->state = C_CONNECTING;
    R.connecting++;
    conn_watch(c, EPOLLOUT);
}

/* Start connection attempts while fewer than MAX_CONNECTING are going on. */
static void open_more(void)
{
    while (R.next_to_open < R.opt.conns && R.connecting < MAX_CONNECTING) {
        struct conn *c = &R.conns[R.next_to_open++];
        if (R.opt.mode == MODE_PG)
            conn_open_pg(c);
        else
            conn_open_socket(c);
    }
}

/* -T: one step of the TLS handshake; the connection is ready once it is
 * done. */
static void tls_step(struct conn *c, uint64_t now)
{
    int rc = SSL_do_handshake(c->ssl), err;
    char why[256];

    if (rc == 1) {
        c->handshaking = false;
        conn_watch(c, EPOLLIN);
        conn_ready(c, now);
        return;
    }
    err = SSL_get_error(c->ssl, rc);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        conn_watch(c, err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
        return;
    }
    ERR_error_string_n(ERR_get_error(), why, sizeof why);
    die("connection %d: TLS handshake: %s", c->index, why);
}

static void socket_connected(struct conn *c, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
        die("connection %d: connect: %s", c->index, strerror(err ? err : errno));
    if (R.tls != NULL) {
        c->ssl = SSL_new(R.tls);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
            die("connection %d: out of memory for TLS", c->index);
        SSL_set_connect_state(c->ssl);
        c->handshaking = true;
        tls_step(c, now);
        return;
    }
    conn_watch(c, EPOLLIN);
    conn_ready(c, now);
}

/* ---- Events ------------------------------------------------------------------ */

static void on_event(struct conn *c, uint32_t events, uint64_t now)
{
    if (c->handshaking) {
        tls_step(c, now);
        return;
    }
    if (c->state == C_CONNECTING) {
        if (R.opt.mode == MODE_PG)
            pg_connect_step(c, now);
        else
            socket_connected(c, now);
        return;
    }
    if (R.opt.mode == MODE_PG) {
        if (events & EPOLLOUT)
            pg_flush(c);
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            pg_read(c, now);
    } else {
        if (events & EPOLLOUT)
            conn_flush(c);
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_read(c, now);
    }
    conn_fill(c, now);
    conn_maybe_final(c, now);
}

/* ---- Idle mode ----------------------------------------------------------------- */

/* Hold the connections until stdin closes or -d seconds pass. */
static void idle_hold(void)
{
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    uint64_t until = now_ns() + (uint64_t)(R.opt.duration * 1e9);
    char tmp[256];

    printf("ready conns=%d connect_s=%.3f\n", R.opt.conns, (double)(now_ns() - R.t_start) / 1e9);
    fflush(stdout);
    for (;;) {
        uint64_t now = now_ns();
        int ms;
        if (now >= until)
            break;
        ms = (int)((until - now) / 1000000) + 1;
        if (poll(&pfd, 1, ms) > 0) {
            if (read(0, tmp, sizeof tmp) <= 0)
                break;
        }
    }
}

/* ---- Main ------------------------------------------------------------------------ */

static void usage(void)
{
    fputs("usage: loadgen -m sqlmux|redis|pg [-h HOST] [-p PORT] [-u UNIX_PATH] [-D CONNINFO]\n"
          "               [-c CONNS] [-P DEPTH] [-d SECONDS] [-w SECONDS] [-n REQUESTS]\n"
          "               [-r MIN:MAX] [-s SEED] -q TEMPLATE [-a PARAM]... [-M params|prepared|simple]\n"
          "               [-i INIT] [-f FINAL] [-I] [-E] [-Q] [-T]\n",
          stderr);
    exit(2);
}

static double parse_double(const char *s, const char *what)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || v < 0)
        die("bad %s: %s", what, s);
    return v;
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    unsigned long long v;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0)
        die("bad %s: %s", what, s);
    return (uint64_t)v;
}

static void parse_args(int argc, char **argv, struct options *o)
{
    int ch;

    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->conns = 1;
    o->depth = 1;
    o->duration = 5;
    o->id_min = o->id_max = 1;
    o->mode = MODE_SQLMUX;
    while ((ch = getopt(argc, argv, "m:h:p:u:D:c:P:d:w:n:r:s:q:a:M:i:f:IEQT")) != -1) {
        switch (ch) {
        case 'm':
            if (strcmp(optarg, "sqlmux") == 0)
                o->mode = MODE_SQLMUX;
            else if (strcmp(optarg, "redis") == 0)
                o->mode = MODE_REDIS;
            else if (strcmp(optarg, "pg") == 0)
                o->mode = MODE_PG;
            else
                die("unknown mode %s", optarg);
            break;
        case 'h': o->host = optarg; break;
        case 'p': o->port = (int)parse_u64(optarg, "port"); break;
        case 'u': o->unix_path = optarg; break;
        case 'D': o->conninfo = optarg; break;
        case 'c': o->conns = (int)parse_u64(optarg, "connection count"); break;
        case 'P': o->depth = (int)parse_u64(optarg, "pipeline depth"); break;
        case 'd': o->duration = parse_double(optarg, "duration"); break;
        case 'w': o->warmup = parse_double(optarg, "warm-up"); break;
        case 'n': o->count = parse_u64(optarg, "request count"); break;
        case 'r': {
            char *colon = strchr(optarg, ':');
            if (colon == NULL)
                die("-r wants MIN:MAX");
            *colon = '\0';
            o->id_min = parse_u64(optarg, "range minimum");
            o->id_max = parse_u64(colon + 1, "range maximum");
            if (o->id_max < o->id_min)
                die("-r: MAX < MIN");
            break;
        }
        case 's': rng_state = parse_u64(optarg, "seed") | 1; break;
        case 'q': o->query = optarg; break;
        case 'a':
            if (o->nparams == MAX_PARAMS)
                die("at most %d -a parameters", MAX_PARAMS);
            o->params[o->nparams++] = optarg;
            break;
        case 'M':
            if (strcmp(optarg, "params") == 0)
                o->pg_style = PG_PARAMS;
            else if (strcmp(optarg, "prepared") == 0)
                o->pg_style = PG_PREPARED;
            else if (strcmp(optarg, "simple") == 0)
                o->pg_style = PG_SIMPLE;
            else
                die("-M: params, prepared or simple");
            break;
        case 'i': o->init = optarg; break;
        case 'f': o->final = optarg; break;
        case 'I': o->idle = true; break;
        case 'E': o->allow_errors = true; break;
        case 'Q': o->quiet = true; break;
        case 'T': o->tls = true; break;
        default: usage();
        }
    }
    if (optind != argc || o->conns < 1 || o->depth < 1)
        usage();
    if (o->query == NULL && !o->idle)
        die("-q TEMPLATE is required");
    if (o->mode == MODE_PG && o->conninfo == NULL)
        die("-m pg needs -D CONNINFO");
    if (o->mode != MODE_PG && o->port == 0 && o->unix_path == NULL)
        die("-p PORT or -u PATH is required");
    if (o->mode == MODE_PG && o->depth > 1)
        die("-m pg sends one query at a time per connection (-P 1)");
    if (o->mode != MODE_PG && (o->nparams > 0 || o->pg_style != PG_PARAMS))
        die("-a and -M are for -m pg");
    if (o->tls && (o->mode == MODE_PG || o->unix_path != NULL))
        die("-T is for -m sqlmux and -m redis over TCP");
}

static void resolve_address(const struct options *o)
{
    if (o->unix_path != NULL) {
        struct sockaddr_un *un = (struct sockaddr_un *)&R.addr;
        if (strlen(o->unix_path) >= sizeof un->sun_path)
            die("unix socket path too long");
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, o->unix_path);
        R.addrlen = sizeof *un;
        return;
    }
    struct addrinfo hints, *res;
    char port[16];
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", o->port);
    rc = getaddrinfo(o->host, port, &hints, &res);
    if (rc != 0)
        die("%s: %s", o->host, gai_strerror(rc));
    memcpy(&R.addr, res->ai_addr, res->ai_addrlen);
    R.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

/* Open-file limit: as high as allowed, for thousands of connections. */
static void raise_nofile(int conns)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)conns + 32)
        die("%d connections need an open-file limit of %d; it is %llu", conns, conns + 32,
            (unsigned long long)rl.rlim_cur);
}

static const char *mode_name(enum mode m)
{
    return m == MODE_SQLMUX ? "sqlmux" : m == MODE_REDIS ? "redis" : "pg";
}

static void report(void)
{
    double secs = (double)(R.t_end - R.t_measure) / 1e9;
    double rps = secs > 0 ? (double)R.completed / secs : 0;
    double p50 = (double)hist_quantile(&R.hist, 0.50) / 1e3;
    double p99 = (double)hist_quantile(&R.hist, 0.99) / 1e3;
    double p999 = (double)hist_quantile(&R.hist, 0.999) / 1e3;
    double mx = (double)R.hist.max / 1e3;

    printf("mode=%s conns=%d depth=%d requests=%" PRIu64 " errors=%" PRIu64
           " seconds=%.3f rps=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f\n",
           mode_name(R.opt.mode), R.opt.conns, R.opt.depth, R.completed, R.errors, secs, rps, p50, p99, p999,
           mx);
    if (!R.opt.quiet)
        fprintf(stderr,
                "loadgen %s: %d conns, depth %d: %" PRIu64 " requests in %.2f s = %.0f/s; "
                "latency p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us; %" PRIu64 " errors\n",
                mode_name(R.opt.mode), R.opt.conns, R.opt.depth, R.completed, secs, rps, p50, p99, p999, mx,
                R.errors);
    if (R.errors > 0)
        fprintf(stderr, "loadgen: first error: %s\n", R.first_error);
}

int main(int argc, char **argv)
{
    struct epoll_event events[256];

    signal(SIGPIPE, SIG_IGN);
    parse_args(argc, argv, &R.opt);
    if (R.opt.query != NULL)
        tmpl_parse(&R.query, R.opt.query);
    if (R.opt.init != NULL)
        tmpl_parse(&R.init, R.opt.init);
    if (R.opt.final != NULL)
        tmpl_parse(&R.final, R.opt.final);
    for (int i = 0; i < R.opt.nparams; i++)
        tmpl_parse(&R.params[i], R.opt.params[i]);
    if (R.opt.mode != MODE_PG)
        resolve_address(&R.opt);
    raise_nofile(R.opt.conns);

    R.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (R.epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    R.conns = calloc((size_t)R.opt.conns, sizeof *R.conns);
    if (R.conns == NULL)
        die("out of memory");
    for (int i = 0; i < R.opt.conns; i++) {
        struct conn *c = &R.conns[i];
        c->index = i;
        c->fd = -1;
        c->ring = (size_t)R.opt.depth + 2;
        c->sent_at = xrealloc(NULL, c->ring * sizeof *c->sent_at);
        c->kind = xrealloc(NULL, c->ring);
    }
    if (R.opt.tls) {
        R.tls = SSL_CTX_new(TLS_client_method());
        if (R.tls == NULL)
            die("out of memory for TLS");
        SSL_CTX_set_verify(R.tls, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(R.tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* One read() takes what the socket has, not a record's 5-byte
         * header and then its body: a TLS answer costs the reads a plain
         * one does. */
        SSL_CTX_set_read_ahead(R.tls, 1);
    }
    R.phase = PH_CONNECT;
    R.t_start = now_ns();
    open_more();

    while (R.phase != PH_DONE) {
        uint64_t now = now_ns();
        int timeout = -1, n;

        if (R.phase == PH_WARMUP || R.phase == PH_MEASURE) {
            uint64_t next = R.phase == PH_WARMUP ? R.t_measure : R.t_end;
            if (R.opt.count == 0)
                timeout = next > now ? (int)((next - now) / 1000000) + 1 : 0;
        } else if (R.phase == PH_DRAIN || R.phase == PH_FINAL) {
            timeout = R.drain_deadline > now ? (int)((R.drain_deadline - now) / 1000000) + 1 : 0;
        }
        n = epoll_wait(R.epfd, events, (int)(sizeof events / sizeof events[0]), timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        now = now_ns();
        for (int i = 0; i < n; i++)
            on_event(&R.conns[events[i].data.u32], events[i].events, now);

        switch (R.phase) {
        case PH_CONNECT:
            open_more();
            if (R.ready == R.opt.conns) {
                if (R.opt.idle) {
                    idle_hold();
                    R.phase = PH_DONE;
                    break;
                }
                run_start(now_ns());
            }
            break;
        case PH_WARMUP:
            if (now >= R.t_measure)
                R.phase = PH_MEASURE;
            break;
        case PH_MEASURE:
            if (R.opt.count == 0 && now >= R.t_end)
                run_enter_drain(now);
            break;
        case PH_DRAIN:
        case PH_FINAL:
            if (R.finished == R.opt.conns) {
                R.t_done = now;
                R.phase = PH_DONE;
            } else if (now >= R.drain_deadline) {
                die("%d connection%s did not answer within %llu s after the run", R.opt.conns - R.finished,
                    R.opt.conns - R.finished == 1 ? "" : "s",
                    (unsigned long long)(DRAIN_TIMEOUT_NS / 1000000000ull));
            }
            break;
        case PH_DONE: break;
        }
    }
    if (!R.opt.idle) {
        if (R.opt.count > 0)
            R.t_end = R.t_done; /* -n: the time includes -f (COMMIT) */
        report();
    }
    for (int i = 0; i < R.opt.conns; i++) {
        SSL_free(R.conns[i].ssl);
        if (R.conns[i].pg != NULL)
            PQfinish(R.conns[i].pg);
        else if (R.conns[i].fd >= 0)
            close(R.conns[i].fd);
    }
    if (R.errors > 0 && !R.opt.allow_errors)
        return 3;
    return 0;
}
