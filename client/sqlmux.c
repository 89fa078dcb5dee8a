/*
 * libsqlmux: connections, requests and results of the sqlmux protocol
 * (client/sqlmux.h for the API and its contracts, proto/PROTOCOL.md for the
 * wire format).
 *
 * All bytes on the wire go through the shared codec (proto/codec.h): every
 * statement is sent with codec_encode_request() in the binary-safe bulk
 * form, and every response line is classified with codec_reply_kind() and
 * its fields decoded with codec_decode_field(). This file only moves bytes
 * and keeps results.
 *
 * A connection owns a non-blocking socket and two buffers:
 *
 *   out: data[0..out_done) sent, data[out_done..len) queued requests
 *   in:  data[0..in_pos) consumed, data[in_pos..in_scan) searched for '\n'
 *        already, data[in_scan..len) received and not searched yet
 *
 * Every wait is one poll() on the socket (and on the caller's cancel fd):
 * it always reads what the daemon sends, and writes while requests are
 * queued, so a client that queues many requests before reading never
 * deadlocks against a daemon that stops reading until its answers are
 * read. Nothing blocks outside poll().
 *
 * Responses are matched to requests by order alone. `pending` counts the
 * requests whose response no result has started to read; at most one
 * result at a time (`stream`) reads a response partly, row by row.
 */
#include "client/sqlmux.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client/tls.h"
#include "proto/buf.h"
#include "proto/codec.h"

enum {
    SQLMUX_READ_CHUNK = 64 * 1024, /* bytes asked of one recv() */
    SQLMUX_SEND_BATCH = 64 * 1024, /* queued bytes that make sqlmux_send() write */
    SQLMUX_DEFAULT_PORT = 7654,
};

/* The longest response line accepted: a row of a 1 GiB blob (2 GiB of hex)
 * and some. Longer is BADREPLY, so a broken peer cannot make the client
 * buffer without end. */
#define SQLMUX_MAX_LINE ((size_t)3 << 30)

/* ---- Connections and results ----------------------------------------- */

struct sqlmux_conn {
    int fd;                 /* -1 once broken or closed */
    struct client_tls *tls; /* sqlmuxs://: all bytes go through it; NULL: plain */
    int timeout_ms;         /* per wait; <= 0: none */
    int cancel_fd;          /* -1: none */
    char *url;              /* as shown: any password is "***" */
    char *user;             /* logged in as (NULL: not logged in) */
    bool out_secret;        /* out holds a password: wipe it once sent */
    const char *error_code; /* NULL while usable */
    char *error;            /* why it broke (malloc'd; NULL if that failed) */
    struct buf out;
    size_t out_done;
    struct buf in;
    size_t in_pos;
    size_t in_scan;
    bool eof;                     /* the daemon closed its end */
    bool write_closed;            /* writes fail: queued requests were dropped */
    size_t pending;               /* requests whose response no result has begun */
    size_t skip_responses;        /* responses to drop first (streams freed early) */
    struct sqlmux_result *stream; /* the result reading a response, if any */
    struct buf scratch;           /* codec_decode_field() output */
};

/* One field of a row: data.data[off..off+len) plus a NUL. */
struct sqlmux_field {
    size_t off;
    size_t len;
    enum sqlmux_type type;
};

struct sqlmux_result {
    sqlmux_conn *conn; /* streams only, while the response is open */
    bool streaming;
    bool finished; /* the status line (or a client error) is in */
    bool failed;
    const char *code;    /* error code: static, or into errtext */
    const char *message; /* "" or into errtext */
    char *errtext;       /* "CODE\0message" of a daemon error */
    char *facts;         /* the OK facts, NULL until there are some */
    char *facts_split;   /* the same with each ' ' made a NUL */
    int ncols;
    size_t *colpos; /* 2 * ncols offsets into coltext: name, type */
    struct buf coltext;
    struct sqlmux_field *fields; /* nrows * ncols (a stream: ncols) */
    size_t fields_len;
    size_t fields_cap;
    struct buf data; /* the bytes of every field */
    int64_t nrows;
    int64_t cur;  /* current row; -1 before the first */
    bool has_row; /* a stream's current row is valid */
};

/* Handed out when not even a result can be allocated; never freed or
 * written (the accessors only read it). */
static struct sqlmux_result sqlmux_nomem_result = {
    .finished = true,
    .failed = true,
    .code = "NOMEM",
    .message = "out of memory",
    .cur = -1,
};

/* ---- The C locale ---------------------------------------------------- */

/* Reals are written and read in the C form whatever the program's
 * LC_NUMERIC: encoding runs under uselocale() of this locale and
 * sqlmux_double() uses strtod_l(). Created once, never freed. */
static locale_t sqlmux_c_locale;
static pthread_once_t sqlmux_c_locale_once = PTHREAD_ONCE_INIT;

static void sqlmux_c_locale_init(void)
{
    sqlmux_c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t sqlmux_get_c_locale(void)
{
    (void)pthread_once(&sqlmux_c_locale_once, sqlmux_c_locale_init);
    return sqlmux_c_locale;
}

/* ---- Small helpers --------------------------------------------------- */

static char *sqlmux_vformat(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

static char *sqlmux_vformat(const char *fmt, va_list ap)
{
    struct buf b = BUF_INIT;
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    if (n < 0 || buf_append(&b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static char *sqlmux_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *sqlmux_format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = sqlmux_vformat(fmt, ap);
    va_end(ap);
    return s;
}

static char *sqlmux_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

/* strerror() is not thread-safe; this is. */
static const char *sqlmux_strerror(int err, char *tmp, size_t n)
{
    return strerror_r(err, tmp, n);
}

static int64_t sqlmux_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Results: building ----------------------------------------------- */

static sqlmux_result *result_new(bool streaming)
{
    sqlmux_result *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->streaming = streaming;
    r->cur = -1;
    r->message = "";
    return r;
}

/* Finish r as failed with a static code and a message (copied; the static
 * "out of memory" text if the copy fails). Keeps rows already read. */
static void result_fail(sqlmux_result *r, const char *code, const char *message)
{
    free(r->errtext);
    r->errtext = sqlmux_strdup(message);
    r->code = code;
    r->message = r->errtext != NULL ? r->errtext : "out of memory";
    r->failed = true;
    r->finished = true;
    r->has_row = false;
}

/* A finished result that failed with code and message; the NOMEM result
 * when it cannot be allocated. */
static sqlmux_result *result_error(const char *code, const char *message)
{
    sqlmux_result *r = result_new(false);
    if (r == NULL)
        return &sqlmux_nomem_result;
    result_fail(r, code, message);
    return r;
}

/* Record a "-ERR CODE message" body. */
static void result_fail_reply(sqlmux_result *r, const char *body, size_t n)
{
    const char *sp = memchr(body, ' ', n);
    size_t clen = sp != NULL ? (size_t)(sp - body) : n;
    char *t = malloc(n + 2);
    if (t == NULL) {
        result_fail(r, "NOMEM", "out of memory");
        return;
    }
    memcpy(t, body, clen);
    t[clen] = '\0';
    size_t mlen = sp != NULL ? n - clen - 1 : 0;
    if (mlen > 0)
        memcpy(t + clen + 1, sp + 1, mlen);
    t[clen + 1 + mlen] = '\0';
    free(r->errtext);
    r->errtext = t;
    r->code = t;
    r->message = t + clen + 1;
    r->failed = true;
    r->finished = true;
    r->has_row = false;
}

/* Record "+OK facts". 0, or -1 when out of memory. */
static int result_set_facts(sqlmux_result *r, const char *facts, size_t n)
{
    char *f = malloc(2 * (n + 1));
    if (f == NULL)
        return -1;
    memcpy(f, facts, n);
    f[n] = '\0';
    char *split = f + n + 1;
    for (size_t i = 0; i <= n; i++)
        split[i] = f[i] == ' ' ? '\0' : f[i];
    r->facts = f;
    r->facts_split = split;
    r->finished = true;
    r->has_row = false;
    return 0;
}

/* Visit the tab-separated fields of body[0..n): fn(ctx, field, len, index)
 * for each, stopping at the first negative return. Returns the number of
 * fields, or -1. */
static int64_t fields_each(const char *body, size_t n, int (*fn)(void *, const char *, size_t, size_t),
                           void *ctx)
{
    size_t start = 0, index = 0;
    for (;;) {
        const char *tab = memchr(body + start, '\t', n - start);
        size_t end = tab != NULL ? (size_t)(tab - body) : n;
        if (fn(ctx, body + start, end - start, index) < 0)
            return -1;
        index++;
        if (tab == NULL)
            return (int64_t)index;
        start = end + 1;
    }
}

struct decode_ctx {
    sqlmux_result *r;
    struct buf *scratch;
    size_t limit; /* fields expected (row) or 0 (header) */
};

/* One field of the '*' header: a name or a declared type, as text. */
static int header_field(void *vctx, const char *f, size_t n, size_t index)
{
    struct decode_ctx *ctx = vctx;
    struct value v;
    (void)index;
    if (codec_decode_field(f, n, ctx->scratch, &v) < 0 || v.type != VALUE_TEXT)
        return -1;
    size_t off = ctx->r->coltext.len;
    if (buf_append(&ctx->r->coltext, v.p, v.len) < 0 || buf_putc(&ctx->r->coltext, '\0') < 0)
        return -1;
    size_t *pos = realloc(ctx->r->colpos, (index + 1) * sizeof *pos);
    if (pos == NULL)
        return -1;
    ctx->r->colpos = pos;
    pos[index] = off;
    return 0;
}

/* One field of an '=' row, appended to r->fields and r->data. */
static int row_field(void *vctx, const char *f, size_t n, size_t index)
{
    struct decode_ctx *ctx = vctx;
    sqlmux_result *r = ctx->r;
    struct value v;
    if (index >= ctx->limit || codec_decode_field(f, n, ctx->scratch, &v) < 0)
        return -1;
    if (r->fields_len == r->fields_cap) {
        size_t cap = r->fields_cap ? r->fields_cap * 2 : 16;
        struct sqlmux_field *p = cap < SIZE_MAX / sizeof *p ? realloc(r->fields, cap * sizeof *p) : NULL;
        if (p == NULL)
            return -1;
        r->fields = p;
        r->fields_cap = cap;
    }
    struct sqlmux_field *fld = &r->fields[r->fields_len];
    fld->off = r->data.len;
    fld->len = v.len;
    fld->type = v.type == VALUE_NULL ? SQLMUX_NULL : v.type == VALUE_BLOB ? SQLMUX_BLOB : SQLMUX_TEXT;
    if ((v.len > 0 && buf_append(&r->data, v.p, v.len) < 0) || buf_putc(&r->data, '\0') < 0)
        return -1;
    r->fields_len++;
    return 0;
}

/* ---- Connections: failure -------------------------------------------- */

/* Empty the output buffer (keeping its memory), wiping it first when it
 * held a password. */
static void conn_out_reset(sqlmux_conn *c)
{
    if (c->out_secret && c->out.data != NULL)
        explicit_bzero(c->out.data, c->out.cap);
    c->out_secret = false;
    buf_reset(&c->out);
    c->out_done = 0;
}

/* Free the output buffer, wiping it first when it held a password. */
static void conn_out_free(sqlmux_conn *c)
{
    conn_out_reset(c);
    buf_free(&c->out);
}

/* Close fd with a reset (SO_LINGER 0) instead of a FIN: to the daemon the
 * client is gone, so it interrupts what the connection was running. */
static void conn_abort_fd(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void conn_fail(sqlmux_conn *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Break the connection: close the socket (so the daemon interrupts what it
 * runs for us), drop queued output, remember why. The first reason
 * wins. */
static void conn_fail(sqlmux_conn *c, const char *code, const char *fmt, ...)
{
    if (c->error_code != NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    c->error = sqlmux_vformat(fmt, ap);
    va_end(ap);
    c->error_code = code;
    if (c->fd >= 0)
        conn_abort_fd(c->fd);
    c->fd = -1;
    conn_out_free(c);
}

static const char *conn_error_text(const sqlmux_conn *c)
{
    return c->error != NULL ? c->error : "the connection is broken";
}

/* ---- Connections: I/O ------------------------------------------------ */

/* Write queued requests without blocking. A write the daemon refuses
 * (it closed the connection) drops what is queued; the responses already
 * sent can still be read, and the missing ones fail with CONNECTION. */
static void conn_write_some(sqlmux_conn *c)
{
    while (c->out_done < c->out.len) {
        ssize_t n = c->tls != NULL
                        ? client_tls_send(c->tls, c->out.data + c->out_done, c->out.len - c->out_done)
                        : send(c->fd, c->out.data + c->out_done, c->out.len - c->out_done,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        c->write_closed = true;
        break;
    }
    conn_out_reset(c);
}

/* Read what the socket has without blocking. -1 when the connection broke
 * (reset); EOF only sets c->eof. */
static int conn_read_some(sqlmux_conn *c)
{
    /* Move the unconsumed bytes to the front before growing. */
    if (c->in_pos > 0 && (c->in_pos == c->in.len || c->in_pos >= c->in.cap / 2)) {
        memmove(c->in.data, c->in.data + c->in_pos, c->in.len - c->in_pos);
        c->in.len -= c->in_pos;
        c->in_scan -= c->in_pos;
        c->in_pos = 0;
        c->in.data[c->in.len] = '\0';
    }
    if (buf_reserve(&c->in, SQLMUX_READ_CHUNK) < 0) {
        conn_fail(c, "NOMEM", "out of memory reading a reply");
        return -1;
    }
    for (;;) {
        ssize_t n = c->tls != NULL
                        ? client_tls_recv(c->tls, c->in.data + c->in.len, c->in.cap - c->in.len - 1)
                        : recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1, MSG_DONTWAIT);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->in.data[c->in.len] = '\0';
            return 0;
        }
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        char tmp[128];
        conn_fail(c, "CONNECTION", "connection lost: %s", sqlmux_strerror(errno, tmp, sizeof tmp));
        return -1;
    }
}

/* Wait once for the socket (reading always, writing while requests are
 * queued), then move what can be moved. -1 when the connection broke:
 * timeout, cancel, reset. */
static int conn_io(sqlmux_conn *c)
{
    int64_t deadline = c->timeout_ms > 0 ? sqlmux_now_ms() + c->timeout_ms : 0;
    struct pollfd p[2];
    nfds_t n = 1;
    bool want_write = c->out_done < c->out.len && !c->write_closed;

    /* The TLS layer may hold bytes already read from the socket: poll()
     * would not see them. */
    if (c->tls != NULL && !c->eof && client_tls_pending(c->tls))
        return conn_read_some(c);
    p[0].fd = c->fd;
    p[0].events = (short)((c->eof ? 0 : POLLIN) | (want_write ? POLLOUT : 0));
    p[0].revents = 0;
    if (c->cancel_fd >= 0) {
        p[1].fd = c->cancel_fd;
        p[1].events = POLLIN;
        p[1].revents = 0;
        n = 2;
    }
    for (;;) {
        int wait = -1;
        if (deadline != 0) {
            int64_t left = deadline - sqlmux_now_ms();
            wait = left > 0 ? (int)(left < INT_MAX ? left : INT_MAX) : 0;
        }
        int rc = poll(p, n, wait);
        if (rc < 0 && errno == EINTR) {
            /* A signal alone does not end the wait; its handler may have
             * written to the cancel fd, which the next poll sees. */
            continue;
        }
        if (rc < 0) {
            char tmp[128];
            conn_fail(c, "CONNECTION", "poll: %s", sqlmux_strerror(errno, tmp, sizeof tmp));
            return -1;
        }
        if (rc == 0) {
            conn_fail(c, "NOREPLY", "no reply from the daemon within %d ms", c->timeout_ms);
            return -1;
        }
        break;
    }
    if (n == 2 && p[1].revents != 0) {
        conn_fail(c, "CANCELLED", "cancelled while waiting for the daemon");
        return -1;
    }
    if (want_write && (p[0].revents & (POLLOUT | POLLERR | POLLHUP)))
        conn_write_some(c);
    if (p[0].revents & (POLLIN | POLLERR | POLLHUP))
        return conn_read_some(c);
    return 0;
}

/* Send every queued request. -1 when the connection broke. */
static int conn_flush(sqlmux_conn *c)
{
    if (c->error_code != NULL)
        return -1;
    conn_write_some(c);
    while (c->out_done < c->out.len && !c->write_closed) {
        if (c->eof) {
            /* The daemon is gone; what it did not read is lost. */
            c->write_closed = true;
            conn_out_reset(c);
            break;
        }
        if (conn_io(c) < 0)
            return -1;
    }
    return 0;
}

/* The next response line, without its "\n" (and "\r"), into *line and *len:
 * valid until the next I/O on c. -1 when the connection broke (also when
 * the daemon closed it before the line was whole). */
static int conn_read_line(sqlmux_conn *c, const char **line, size_t *len)
{
    if (c->error_code != NULL)
        return -1;
    for (;;) {
        const char *nl =
            c->in.len > c->in_scan ? memchr(c->in.data + c->in_scan, '\n', c->in.len - c->in_scan) : NULL;
        if (nl != NULL) {
            size_t end = (size_t)(nl - c->in.data);
            *line = c->in.data + c->in_pos;
            *len = end - c->in_pos;
            if (*len > 0 && (*line)[*len - 1] == '\r')
                (*len)--;
            c->in_pos = c->in_scan = end + 1;
            return 0;
        }
        c->in_scan = c->in.len;
        if (c->in.len - c->in_pos > SQLMUX_MAX_LINE) {
            conn_fail(c, "BADREPLY", "reply line longer than %zu bytes", SQLMUX_MAX_LINE);
            return -1;
        }
        if (c->eof) {
            if (c->in.len > c->in_pos)
                conn_fail(c, "CONNECTION", "the daemon closed the connection in the middle of a reply");
            else
                conn_fail(c, "CONNECTION", "the daemon closed the connection");
            return -1;
        }
        if (conn_io(c) < 0)
            return -1;
    }
}

/* A copy of the broken connection's error in r. */
static void result_fail_conn(sqlmux_result *r, const sqlmux_conn *c)
{
    result_fail(r, c->error_code, conn_error_text(c));
}

/* How far conn_read_into() reads. */
enum read_until {
    READ_ALL,    /* the whole response (a buffered result) */
    READ_HEADER, /* the '*' header or the status line (a stream begins) */
    READ_ROW,    /* the next row or the status line (a stream steps) */
};

/* Read response lines into r, as far as `until` says. A connection
 * failure ends r with the connection's error. */
static void conn_read_into(sqlmux_conn *c, sqlmux_result *r, enum read_until until)
{
    while (!r->finished) {
        const char *line, *body;
        size_t len, blen;
        if (conn_read_line(c, &line, &len) < 0) {
            result_fail_conn(r, c);
            return;
        }
        struct decode_ctx ctx = {r, &c->scratch, 0};
        switch (codec_reply_kind(line, len, &body, &blen)) {
        case REPLY_COLUMNS: {
            if (r->ncols > 0 || r->nrows > 0)
                goto bad;
            int64_t n = fields_each(body, blen, header_field, &ctx);
            if (n < 2 || n % 2 != 0 || n / 2 > INT_MAX)
                goto bad;
            r->ncols = (int)(n / 2);
            if (until == READ_HEADER)
                return;
            break;
        }
        case REPLY_ROW:
            if (r->ncols == 0)
                goto bad;
            if (r->streaming) {
                r->fields_len = 0;
                buf_reset(&r->data);
            }
            ctx.limit = (size_t)r->ncols;
            if (fields_each(body, blen, row_field, &ctx) != r->ncols) {
                r->fields_len = r->streaming ? 0 : r->fields_len - r->fields_len % (size_t)r->ncols;
                goto bad;
            }
            r->nrows++;
            if (until == READ_ROW) {
                r->has_row = true;
                return;
            }
            break;
        case REPLY_OK:
            if (result_set_facts(r, body, blen) < 0) {
                result_fail(r, "NOMEM", "out of memory");
                return;
            }
            return;
        case REPLY_ERR: result_fail_reply(r, body, blen); return;
        case REPLY_BAD: goto bad;
        }
        continue;
    bad:
        /* Not the protocol, or out of memory decoding it: either way the
         * rest of this response cannot be trusted. */
        conn_fail(c, "BADREPLY", "unexpected reply line: %.60s%s", len > 0 ? line : "(empty)",
                  len > 60 ? "..." : "");
        result_fail_conn(r, c);
        return;
    }
}

/* Drop the responses no result will read (the rest of a stream freed
 * early). -1 if the connection broke. */
static int conn_skip_responses(sqlmux_conn *c)
{
    while (c->skip_responses > 0) {
        const char *line;
        size_t len;
        if (conn_read_line(c, &line, &len) < 0)
            return -1;
        enum reply_kind k = codec_reply_kind(line, len, NULL, NULL);
        if (k == REPLY_OK || k == REPLY_ERR)
            c->skip_responses--;
        else if (k == REPLY_BAD) {
            conn_fail(c, "BADREPLY", "unexpected reply line");
            return -1;
        }
    }
    return 0;
}

/* ---- Connecting ------------------------------------------------------ */

struct sqlmux_addr {
    bool is_unix;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char host[256];
    char port[8];
    /* The login the URL gives ("" when none), percent-decoded. Wiped with
     * explicit_bzero() once used. */
    char user[SQLMUX_AUTH_MAX + 1];
    char password[SQLMUX_AUTH_MAX + 1];
    struct client_tls_opts tls; /* sqlmuxs://, ?tls=, ?tls_ca=, ... */
};

/* Percent-decode a user name or (is_password) a password of the URL,
 * s[0..n), into out (SQLMUX_AUTH_MAX + 1 bytes, NUL-terminated; "" is
 * refused). 0, or -1 with *why set to a static message. */
static int url_decode(const char *s, size_t n, char *out, bool is_password, const char **why)
{
    size_t len;
    if (n == 0) {
        *why = is_password ? "empty password" : "empty user name";
        return -1;
    }
    switch (codec_pct_decode(s, n, out, SQLMUX_AUTH_MAX, &len)) {
    case 0: return 0;
    case CODEC_PCT_BAD:
        *why = is_password ? "bad %-escape in the password (want %XX, not %00)"
                           : "bad %-escape in the user name (want %XX, not %00)";
        return -1;
    default:
        *why = is_password ? "password longer than 256 bytes" : "user name longer than 256 bytes";
        return -1;
    }
}

/* When q[0..n) is NAME=PATH (name "tls_ca=" ...): copy PATH, as written,
 * into out (CLIENT_TLS_PATH_MAX bytes) and return true; *why is set when
 * it is empty or too long. */
static bool url_tls_path(const char *q, size_t n, const char *name, char *out, const char **why)
{
    size_t k = strlen(name);

    if (n < k || strncmp(q, name, k) != 0)
        return false;
    *why = NULL;
    if (n == k || n - k >= CLIENT_TLS_PATH_MAX)
        *why =
            n == k ? "empty tls_ca=, tls_cert= or tls_key=" : "tls_ca=, tls_cert= or tls_key= path too long";
    else
        memcpy(out, q + k, n - k), out[n - k] = '\0';
    return true;
}

/* The query of a URL, "user=U&password=P" (either, in any order) and the
 * tls options, into a. 0, or -1 with *why set. */
static int url_query(const char *q, struct sqlmux_addr *a, const char **why)
{
    while (*q != '\0') {
        size_t n = strcspn(q, "&");
        if (n > 5 && strncmp(q, "user=", 5) == 0) {
            if (a->user[0] != '\0') {
                *why = "the user name is given twice";
                return -1;
            }
            if (url_decode(q + 5, n - 5, a->user, false, why) < 0)
                return -1;
        } else if (n > 9 && strncmp(q, "password=", 9) == 0) {
            if (a->password[0] != '\0') {
                *why = "the password is given twice";
                return -1;
            }
            if (url_decode(q + 9, n - 9, a->password, true, why) < 0)
                return -1;
        } else if (n > 4 && strncmp(q, "tls=", 4) == 0) {
            if (n == 7 && strncmp(q + 4, "off", 3) == 0)
                a->tls.mode = CLIENT_TLS_OFF;
            else if (n == 11 && strncmp(q + 4, "require", 7) == 0)
                a->tls.mode = CLIENT_TLS_REQUIRE;
            else if (n == 12 && strncmp(q + 4, "insecure", 8) == 0)
                a->tls.mode = CLIENT_TLS_INSECURE;
            else {
                *why = "bad tls= (want tls=require, tls=insecure or tls=off)";
                return -1;
            }
        } else if (url_tls_path(q, n, "tls_ca=", a->tls.ca, why) ||
                   url_tls_path(q, n, "tls_cert=", a->tls.cert, why) ||
                   url_tls_path(q, n, "tls_key=", a->tls.key, why)) {
            if (*why != NULL)
                return -1;
        } else if (n > 0) {
            *why =
                "unknown URL parameter (want ?user=USER&password=PASSWORD, both not empty, or tls=, tls_ca=, "
                "tls_cert=, tls_key=)";
            return -1;
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return 0;
}

/* Parse url into *a. 0, or -1 with *why set to a static message. The
 * caller wipes *a (explicit_bzero) after either. */
static int url_parse(const char *url, struct sqlmux_addr *a, const char **why)
{
    const char *query = NULL;

    memset(a, 0, sizeof *a);
    if (strncmp(url, "unix://", 7) == 0) {
        const char *path = url + 7;
        size_t n = strcspn(path, "?");
        if (n == 0) {
            *why = "no socket path (want unix:///path/to/socket)";
            return -1;
        }
        if (n >= sizeof a->path) {
            *why = "socket path too long";
            return -1;
        }
        a->is_unix = true;
        memcpy(a->path, path, n);
        a->path[n] = '\0';
        if (path[n] == '?')
            query = path + n + 1;
        if (query != NULL && url_query(query, a, why) < 0)
            return -1;
        if (a->tls.mode != CLIENT_TLS_OFF) {
            *why = "TLS is for TCP (sqlmuxs://HOST:PORT): the unix socket is plain text";
            return -1;
        }
        return 0;
    }
    const char *h, *end;
    if (strncmp(url, "sqlmux://", 9) == 0) {
        h = url + 9;
    } else if (strncmp(url, "sqlmuxs://", 10) == 0) {
        h = url + 10;
        a->tls.mode = CLIENT_TLS_REQUIRE; /* ?tls=insecure may weaken it */
    } else {
        *why = "unsupported URL (want sqlmux://HOST:PORT, sqlmuxs://HOST:PORT or unix:///PATH)";
        return -1;
    }
    /* [USER[:PASSWORD]@]: up to the last '@' before the path or query. */
    size_t alen = strcspn(h, "/?");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (h[i] == '@')
            at = h + i;
    if (at != NULL) {
        const char *colon = memchr(h, ':', (size_t)(at - h));
        size_t ulen = (size_t)((colon != NULL ? colon : at) - h);
        if (ulen > 0 && url_decode(h, ulen, a->user, false, why) < 0)
            return -1;
        if (colon != NULL && url_decode(colon + 1, (size_t)(at - colon - 1), a->password, true, why) < 0)
            return -1;
        h = at + 1;
    }
    size_t hlen;
    if (*h == '[') {
        end = strchr(h, ']');
        if (end == NULL) {
            *why = "unterminated [ in host";
            return -1;
        }
        h++;
        hlen = (size_t)(end - h);
        end++;
    } else {
        end = h + strcspn(h, ":/?");
        hlen = (size_t)(end - h);
    }
    if (hlen >= sizeof a->host) {
        *why = "host name too long";
        return -1;
    }
    if (hlen == 0) {
        memcpy(a->host, "127.0.0.1", 10);
    } else {
        memcpy(a->host, h, hlen);
        a->host[hlen] = '\0';
    }
    long port = SQLMUX_DEFAULT_PORT;
    if (*end == ':') {
        char *pe;
        errno = 0;
        port = strtol(end + 1, &pe, 10);
        if (pe == end + 1 || errno != 0 || port < 1 || port > 65535 ||
            (*pe != '\0' && *pe != '/' && *pe != '?')) {
            *why = "bad port (want 1..65535)";
            return -1;
        }
        end = pe;
    }
    if (*end == '/')
        end++;
    if (*end == '?')
        query = end + 1;
    else if (*end != '\0') {
        *why = "unexpected text after host and port";
        return -1;
    }
    snprintf(a->port, sizeof a->port, "%ld", port);
    if (query != NULL && url_query(query, a, why) < 0)
        return -1;
    if (a->tls.mode == CLIENT_TLS_OFF && (a->tls.ca[0] || a->tls.cert[0] || a->tls.key[0])) {
        *why = "tls_ca=, tls_cert= and tls_key= need TLS (sqlmuxs:// or tls=require)";
        return -1;
    }
    return 0;
}

/* url as it may be shown: the password of USER:PASSWORD@ and of
 * ?password= replaced by "***", also in a URL that does not parse
 * (malloc'd; NULL when out of memory). */
static char *url_shown(const char *url)
{
    struct buf b = BUF_INIT;
    const char *rest = url;
    const char *sep = strstr(url, "://");
    int rc = 0;

    if (sep != NULL && strncmp(url, "unix://", 7) != 0) {
        const char *h = sep + 3;
        size_t alen = strcspn(h, "/?");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (h[i] == '@')
                at = h + i;
        const char *colon = at != NULL ? memchr(h, ':', (size_t)(at - h)) : NULL;
        if (colon != NULL) {
            rc |= buf_append(&b, url, (size_t)(colon + 1 - url));
            rc |= buf_puts(&b, "***");
            rest = at;
        }
    }
    const char *q = strchr(rest, '?');
    if (q == NULL) {
        rc |= buf_puts(&b, rest);
    } else {
        rc |= buf_append(&b, rest, (size_t)(q + 1 - rest));
        for (q++; *q != '\0';) {
            size_t n = strcspn(q, "&");
            if (n >= 9 && strncmp(q, "password=", 9) == 0)
                rc |= buf_puts(&b, "password=***");
            else
                rc |= buf_append(&b, q, n);
            q += n;
            if (*q == '&') {
                rc |= buf_putc(&b, '&');
                q++;
            }
        }
    }
    if (rc != 0 || b.data == NULL) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Wait for a non-blocking connect() on fd to finish. 0, or an errno
 * (ETIMEDOUT when the deadline passed). */
static int connect_wait(int fd, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    for (;;) {
        int wait = -1;
        if (deadline != 0) {
            int64_t left = deadline - sqlmux_now_ms();
            if (left <= 0)
                return ETIMEDOUT;
            wait = (int)(left < INT_MAX ? left : INT_MAX);
        }
        int rc = poll(&p, 1, wait);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return errno;
        if (rc == 0)
            return ETIMEDOUT;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return errno;
        return err;
    }
}

/* Open a connected non-blocking socket to one address. The fd, or -1 with
 * *err set. */
static int connect_one(int family, const struct sockaddr *sa, socklen_t salen, int64_t deadline, int *err)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int rc = connect(fd, sa, salen);
    if (rc < 0 && errno == EINTR)
        rc = -1, errno = EINPROGRESS; /* the connect goes on in the kernel */
    if (rc < 0 && (errno == EINPROGRESS || errno == EAGAIN)) {
        *err = connect_wait(fd, deadline);
        rc = *err == 0 ? 0 : -1;
    } else if (rc < 0) {
        *err = errno;
    }
    if (rc < 0) {
        close(fd);
        return -1;
    }
    if (family != AF_UNIX) {
        int one = 1;
        /* Requests are batched by the library: send them at once. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

/* The socket for a. The fd, or -1 with *errmsg set (malloc'd). */
static int connect_addr(const struct sqlmux_addr *a, const char *url, int timeout_ms, char **errmsg)
{
    int64_t deadline = timeout_ms > 0 ? sqlmux_now_ms() + timeout_ms : 0;
    char tmp[128];
    int err = 0, fd;

    if (a->is_unix) {
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof sun);
        sun.sun_family = AF_UNIX;
        memcpy(sun.sun_path, a->path, strlen(a->path) + 1);
        fd = connect_one(AF_UNIX, (struct sockaddr *)&sun, sizeof sun, deadline, &err);
        if (fd < 0)
            *errmsg = sqlmux_format("could not connect to %s: %s", url,
                                    err == ETIMEDOUT ? "timed out" : sqlmux_strerror(err, tmp, sizeof tmp));
        return fd;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    int rc = getaddrinfo(a->host, a->port, &hints, &res);
    if (rc != 0) {
        *errmsg =
            sqlmux_format("could not connect to %s: %s", url,
                          rc == EAI_SYSTEM ? sqlmux_strerror(errno, tmp, sizeof tmp) : gai_strerror(rc));
        return -1;
    }
    fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = connect_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline, &err);
        if (err == ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0)
        *errmsg = sqlmux_format("could not connect to %s: %s", url,
                                err == ETIMEDOUT ? "timed out" : sqlmux_strerror(err, tmp, sizeof tmp));
    return fd;
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? v : NULL;
}

/* The TLS handshake on c's new socket, with the files the URL names, else
 * $SQLMUX_TLS_CA, $SQLMUX_TLS_CERT and $SQLMUX_TLS_KEY. 0, or -1 with
 * *msg set (malloc'd). */
static int conn_start_tls(sqlmux_conn *c, struct sqlmux_addr *a, int timeout_ms, char **msg)
{
    static const char *const env[] = {"SQLMUX_TLS_CA", "SQLMUX_TLS_CERT", "SQLMUX_TLS_KEY"};
    char *paths[] = {a->tls.ca, a->tls.cert, a->tls.key};
    char *why = NULL;

    for (size_t i = 0; i < 3; i++) {
        const char *v = env_nonempty(env[i]);
        if (paths[i][0] == '\0' && v != NULL)
            snprintf(paths[i], CLIENT_TLS_PATH_MAX, "%s", v);
    }
    c->tls =
        client_tls_start(c->fd, a->host, &a->tls, timeout_ms > 0 ? sqlmux_now_ms() + timeout_ms : 0, &why);
    if (c->tls == NULL) {
        *msg = sqlmux_format("could not connect to %s: %s", c->url, why != NULL ? why : "out of memory");
        free(why);
        return -1;
    }
    return 0;
}

/* Why user and password cannot go in an .auth line, or NULL. The daemon
 * takes the password as the rest of the line with the blanks at either
 * end dropped. */
static const char *auth_args_check(const char *user, const char *password)
{
    static const char blanks[] = " \t\n\v\f\r";
    size_t ul = user != NULL ? strlen(user) : 0, pl = password != NULL ? strlen(password) : 0;

    if (ul == 0)
        return "no user name";
    if (pl == 0)
        return "no password";
    if (ul > SQLMUX_AUTH_MAX)
        return "user name longer than 256 bytes";
    if (pl > SQLMUX_AUTH_MAX)
        return "password longer than 256 bytes";
    for (const char *p = user; *p != '\0'; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return "the user name may not hold blanks or control characters";
    if (strpbrk(password, "\n\r") != NULL)
        return "the password may not hold a line break";
    if (strchr(blanks, password[0]) != NULL || strchr(blanks, password[pl - 1]) != NULL)
        return "the password may not begin or end with a blank";
    return NULL;
}

static sqlmux_conn *connect_impl(const char *url, const char *user, const char *password, int timeout_ms,
                                 char **errmsg)
{
    struct sqlmux_addr a;
    const char *why = NULL;
    char *msg = NULL, *shown = NULL;
    sqlmux_conn *c = NULL;

    memset(&a, 0, sizeof a);
    if (errmsg != NULL)
        *errmsg = NULL;
    if (url == NULL || *url == '\0')
        url = getenv("SQLMUX_URL");
    if (url == NULL || *url == '\0')
        url = SQLMUX_DEFAULT_URL;
    shown = url_shown(url);
    if (shown == NULL) {
        msg = sqlmux_format("out of memory");
        goto fail;
    }
    if (url_parse(url, &a, &why) < 0) {
        msg = sqlmux_format("bad URL %s: %s", shown, why);
        goto fail;
    }
    /* The login: given, else the URL's, else the environment's. */
    const char *u = user != NULL && *user != '\0' ? user
                    : a.user[0] != '\0'           ? a.user
                                                  : env_nonempty("SQLMUX_USER");
    const char *p = password != NULL && *password != '\0' ? password
                    : a.password[0] != '\0'               ? a.password
                                                          : env_nonempty("SQLMUX_PASSWORD");
    if (u == NULL && p != NULL) {
        msg = sqlmux_format("could not connect to %s: a password is given but no user name (name the user in "
                            "the URL, sqlmux://USER:PASSWORD@HOST, or in $SQLMUX_USER)",
                            shown);
        goto fail;
    }
    if (u != NULL && p != NULL && (why = auth_args_check(u, p)) != NULL) {
        msg = sqlmux_format("could not connect to %s: %s", shown, why);
        goto fail;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        msg = sqlmux_format("out of memory");
        goto fail;
    }
    c->url = shown;
    shown = NULL;
    c->cancel_fd = -1;
    c->timeout_ms = timeout_ms;
    c->fd = connect_addr(&a, c->url, timeout_ms, &msg);
    if (c->fd < 0)
        goto fail;
    if (a.tls.mode != CLIENT_TLS_OFF && conn_start_tls(c, &a, timeout_ms, &msg) < 0)
        goto fail;
    /* One round trip: the daemon greets a client it refuses with -ERR
     * (MAXCLIENTS, SHUTDOWN), and a peer that is not sqlmuxd shows here,
     * before any password is sent. */
    sqlmux_result *r = sqlmux_command(c, ".ping");
    if (sqlmux_status(r) != SQLMUX_OK) {
        if (c->error_code != NULL && strcmp(c->error_code, "BADREPLY") == 0)
            msg =
                sqlmux_format("could not connect to %s: not a sqlmux daemon (%s)", c->url, sqlmux_errmsg(r));
        else
            msg = sqlmux_format("could not connect to %s: %s%s%s", c->url,
                                c->error_code == NULL ? sqlmux_errcode(r) : "",
                                c->error_code == NULL ? " " : "", sqlmux_errmsg(r));
        sqlmux_free(r);
        goto fail;
    }
    sqlmux_free(r);
    if (u != NULL && p == NULL) {
        /* A user without a password: a daemon without users ignores the
         * login; one with users answers a command that needs one with
         * NOAUTH (".use" alone changes nothing). */
        r = sqlmux_command(c, ".use");
        const char *code = sqlmux_errcode(r);
        if (code != NULL) {
            if (c->error_code == NULL && strcmp(code, "NOAUTH") == 0)
                msg = sqlmux_format("could not connect to %s as %s: NOAUTH the daemon asks for a login and "
                                    "there is no password for user %s (give it in the URL, "
                                    "sqlmux://USER:PASSWORD@HOST, or in $SQLMUX_PASSWORD)",
                                    c->url, u, u);
            else
                msg = sqlmux_format("could not connect to %s: %s%s%s", c->url,
                                    c->error_code == NULL ? code : "", c->error_code == NULL ? " " : "",
                                    sqlmux_errmsg(r));
            sqlmux_free(r);
            goto fail;
        }
        sqlmux_free(r);
    } else if (u != NULL) {
        r = sqlmux_auth(c, u, p);
        const char *code = sqlmux_errcode(r);
        /* A daemon without users has nothing to log in to: the connection
         * works as it is. */
        bool auth_off = code != NULL && c->error_code == NULL && strcmp(code, "AUTH") == 0 &&
                        strncmp(sqlmux_errmsg(r), "authentication is off", 21) == 0;
        if (code != NULL && !auth_off) {
            msg = sqlmux_format("could not connect to %s as %s: %s%s%s", c->url, u,
                                c->error_code == NULL ? code : "", c->error_code == NULL ? " " : "",
                                sqlmux_errmsg(r));
            sqlmux_free(r);
            goto fail;
        }
        sqlmux_free(r);
    }
    explicit_bzero(&a, sizeof a);
    return c;
fail:
    explicit_bzero(&a, sizeof a);
    free(shown);
    sqlmux_close(c);
    if (errmsg != NULL)
        *errmsg = msg;
    else
        free(msg);
    return NULL;
}

sqlmux_conn *sqlmux_connect(const char *url, int timeout_ms, char **errmsg)
{
    return connect_impl(url, NULL, NULL, timeout_ms, errmsg);
}

sqlmux_conn *sqlmux_connect_auth(const char *url, const char *user, const char *password, int timeout_ms,
                                 char **errmsg)
{
    return connect_impl(url, user, password, timeout_ms, errmsg);
}

char *sqlmux_url_user(const char *url, bool *has_password)
{
    struct sqlmux_addr a;
    const char *why;
    char *user = NULL;

    if (has_password != NULL)
        *has_password = false;
    if (url == NULL || *url == '\0')
        url = getenv("SQLMUX_URL");
    if (url == NULL || *url == '\0')
        url = SQLMUX_DEFAULT_URL;
    if (url_parse(url, &a, &why) == 0) {
        const char *u = a.user[0] != '\0' ? a.user : env_nonempty("SQLMUX_USER");
        if (u != NULL)
            user = sqlmux_strdup(u);
        if (has_password != NULL)
            *has_password = a.password[0] != '\0' || env_nonempty("SQLMUX_PASSWORD") != NULL;
    }
    explicit_bzero(&a, sizeof a);
    return user;
}

void sqlmux_close(sqlmux_conn *c)
{
    if (c == NULL)
        return;
    if (c->stream != NULL) {
        c->stream->conn = NULL;
        result_fail(c->stream, "CONNECTION", "the connection was closed");
    }
    /* With answers outstanding, reset the connection: the daemon takes a
     * reset as "the client is gone" and stops the running statement (and
     * rolls back), while a plain close only ends the client's input and
     * the daemon would still answer what was sent. */
    bool reset = c->fd >= 0 && (c->pending > 0 || c->stream != NULL);
    client_tls_free(c->tls, c->fd >= 0 && !reset);
    if (reset)
        conn_abort_fd(c->fd);
    else if (c->fd >= 0)
        close(c->fd);
    conn_out_free(c);
    buf_free(&c->in);
    buf_free(&c->scratch);
    free(c->error);
    free(c->url);
    free(c->user);
    free(c);
}

void sqlmux_set_timeout(sqlmux_conn *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

void sqlmux_set_cancel_fd(sqlmux_conn *c, int fd)
{
    c->cancel_fd = fd;
}

const char *sqlmux_conn_errmsg(const sqlmux_conn *c)
{
    return c->error_code != NULL ? conn_error_text(c) : NULL;
}

const char *sqlmux_conn_url(const sqlmux_conn *c)
{
    return c->url;
}

const char *sqlmux_conn_tls(const sqlmux_conn *c)
{
    return c->tls != NULL ? client_tls_describe(c->tls) : NULL;
}

const char *sqlmux_conn_user(const sqlmux_conn *c)
{
    return c->user;
}

/* ---- Values ---------------------------------------------------------- */

sqlmux_value sqlmux_val_null(void)
{
    sqlmux_value v = {.type = SQLMUX_NULL};
    return v;
}

sqlmux_value sqlmux_val_int(int64_t i)
{
    sqlmux_value v = {.type = SQLMUX_INT, .i = i};
    return v;
}

sqlmux_value sqlmux_val_double(double d)
{
    sqlmux_value v = {.type = SQLMUX_DOUBLE, .d = d};
    return v;
}

sqlmux_value sqlmux_val_text(const char *s)
{
    return s != NULL ? sqlmux_val_textn(s, strlen(s)) : sqlmux_val_null();
}

sqlmux_value sqlmux_val_textn(const char *s, size_t len)
{
    sqlmux_value v = {.type = SQLMUX_TEXT, .p = s, .len = len};
    return v;
}

sqlmux_value sqlmux_val_blob(const void *p, size_t len)
{
    sqlmux_value v = {.type = SQLMUX_BLOB, .p = p, .len = len};
    return v;
}

/* ---- Sending --------------------------------------------------------- */

/* Why params cannot be sent, or NULL. */
static const char *params_check(const sqlmux_value *params, size_t n)
{
    if (n > 0 && params == NULL)
        return "parameters missing (NULL array)";
    for (size_t i = 0; i < n; i++) {
        switch (params[i].type) {
        case SQLMUX_NULL:
        case SQLMUX_INT: break;
        case SQLMUX_DOUBLE:
            if (isnan(params[i].d))
                return "a NaN parameter cannot be sent";
            break;
        case SQLMUX_TEXT:
        case SQLMUX_BLOB:
            if (params[i].len > 0 && params[i].p == NULL)
                return "a text or blob parameter has no bytes (NULL pointer)";
            break;
        default: return "a parameter has an unknown type";
        }
    }
    return NULL;
}

/* Queue one encoded request: sql[0..len) with params for a statement, or
 * the command line `sql` when command. SQLMUX_OK, or SQLMUX_ERROR with the
 * code and message in *code and *why (nothing queued). */
static int conn_queue(sqlmux_conn *c, bool command, const char *sql, size_t len, const sqlmux_value *params,
                      size_t n, const char **code, const char **why)
{
    if (c->error_code != NULL) {
        *code = c->error_code;
        *why = conn_error_text(c);
        return SQLMUX_ERROR;
    }
    *code = "MISUSE";
    if (sql == NULL) {
        *why = "no SQL (NULL pointer)";
        return SQLMUX_ERROR;
    }
    if (command) {
        if (len == 0 || sql[0] != '.' || memchr(sql, '\n', len) != NULL || memchr(sql, '\r', len) != NULL ||
            memchr(sql, '\0', len) != NULL) {
            *why = "a command is one line that starts with '.'";
            return SQLMUX_ERROR;
        }
    } else if ((*why = params_check(params, n)) != NULL) {
        return SQLMUX_ERROR;
    }
    if (c->out.len > 0 && c->out_done == c->out.len)
        conn_out_reset(c);
    int rc;
    if (command) {
        rc = buf_append(&c->out, sql, len) < 0 || buf_putc(&c->out, '\n') < 0 ? -1 : 0;
    } else {
        struct value stack[16], *vals = stack;
        if (n > sizeof stack / sizeof stack[0]) {
            vals = n < SIZE_MAX / sizeof *vals ? malloc(n * sizeof *vals) : NULL;
            if (vals == NULL) {
                *code = "NOMEM";
                *why = "out of memory";
                return SQLMUX_ERROR;
            }
        }
        for (size_t i = 0; i < n; i++) {
            const sqlmux_value *p = &params[i];
            static const enum value_type types[] = {
                [SQLMUX_NULL] = VALUE_NULL, [SQLMUX_INT] = VALUE_INT,   [SQLMUX_DOUBLE] = VALUE_REAL,
                [SQLMUX_TEXT] = VALUE_TEXT, [SQLMUX_BLOB] = VALUE_BLOB,
            };
            vals[i].type = types[p->type];
            vals[i].i = p->i;
            vals[i].r = p->d;
            vals[i].p = (char *)p->p; /* only read by the encoder */
            vals[i].len = p->len;
        }
        /* Reals in the C form, whatever the program's LC_NUMERIC. */
        locale_t cl = sqlmux_get_c_locale(), old = (locale_t)0;
        if (cl != (locale_t)0)
            old = uselocale(cl);
        size_t mark = c->out.len;
        rc = codec_encode_request(&c->out, sql, len, vals, n);
        if (cl != (locale_t)0)
            uselocale(old);
        if (rc < 0) {
            c->out.len = mark;
            if (c->out.cap > 0)
                c->out.data[mark] = '\0';
        }
        if (vals != stack)
            free(vals);
    }
    if (rc < 0) {
        *code = "NOMEM";
        *why = "out of memory";
        return SQLMUX_ERROR;
    }
    if (c->write_closed) {
        /* The daemon stopped reading: the request is lost, and its
         * result will say CONNECTION when the answers run out. */
        conn_out_reset(c);
    } else if (c->out.len - c->out_done >= SQLMUX_SEND_BATCH && conn_flush(c) < 0) {
        *code = c->error_code;
        *why = conn_error_text(c);
        return SQLMUX_ERROR;
    }
    c->pending++;
    return SQLMUX_OK;
}

int sqlmux_sendn(sqlmux_conn *c, const char *sql, size_t len, const sqlmux_value *params, size_t nparams)
{
    const char *code, *why;
    return conn_queue(c, false, sql, len, params, nparams, &code, &why);
}

int sqlmux_send(sqlmux_conn *c, const char *sql, const sqlmux_value *params, size_t nparams)
{
    return sqlmux_sendn(c, sql, sql != NULL ? strlen(sql) : 0, params, nparams);
}

int sqlmux_send_command(sqlmux_conn *c, const char *line)
{
    const char *code, *why;
    return conn_queue(c, true, line, line != NULL ? strlen(line) : 0, NULL, 0, &code, &why);
}

int sqlmux_flush(sqlmux_conn *c)
{
    return conn_flush(c) < 0 ? SQLMUX_ERROR : SQLMUX_OK;
}

size_t sqlmux_pending(const sqlmux_conn *c)
{
    return c->pending;
}

/* ---- Receiving ------------------------------------------------------- */

/* The result of the oldest pending request, whole or as a stream. */
static sqlmux_result *conn_recv(sqlmux_conn *c, bool streaming)
{
    if (c->stream != NULL)
        return result_error("MISUSE", "a streaming result is still open on this connection");
    if (c->pending == 0)
        return result_error("MISUSE", "no request is waiting for its result");
    c->pending--;
    if (c->error_code != NULL)
        return result_error(c->error_code, conn_error_text(c));
    sqlmux_result *r = result_new(streaming);
    if (r == NULL) {
        /* Its response must still be read past. */
        c->skip_responses++;
        return &sqlmux_nomem_result;
    }
    if (conn_flush(c) < 0 || conn_skip_responses(c) < 0) {
        result_fail_conn(r, c);
        return r;
    }
    /* A stream reads the header now, so its columns are known. */
    if (streaming) {
        r->conn = c;
        c->stream = r;
        conn_read_into(c, r, READ_HEADER);
        if (r->finished) {
            r->conn = NULL;
            c->stream = NULL;
        }
        return r;
    }
    conn_read_into(c, r, READ_ALL);
    return r;
}

sqlmux_result *sqlmux_recv(sqlmux_conn *c)
{
    return conn_recv(c, false);
}

sqlmux_result *sqlmux_recv_stream(sqlmux_conn *c)
{
    return conn_recv(c, true);
}

/* Send one request and read its result: the blocking calls. */
static sqlmux_result *conn_run(sqlmux_conn *c, bool command, const char *sql, size_t len,
                               const sqlmux_value *params, size_t n, bool streaming)
{
    const char *code, *why;
    if (c->stream != NULL)
        return result_error("MISUSE", "a streaming result is still open on this connection");
    if (c->pending > 0)
        return result_error("MISUSE", "pipelined results are still waiting: sqlmux_recv() them first");
    if (conn_queue(c, command, sql, len, params, n, &code, &why) != SQLMUX_OK)
        return result_error(code, why);
    return conn_recv(c, streaming);
}

sqlmux_result *sqlmux_execn(sqlmux_conn *c, const char *sql, size_t len, const sqlmux_value *params,
                            size_t nparams)
{
    return conn_run(c, false, sql, len, params, nparams, false);
}

sqlmux_result *sqlmux_exec(sqlmux_conn *c, const char *sql, const sqlmux_value *params, size_t nparams)
{
    return conn_run(c, false, sql, sql != NULL ? strlen(sql) : 0, params, nparams, false);
}

sqlmux_result *sqlmux_query(sqlmux_conn *c, const char *sql, const sqlmux_value *params, size_t nparams)
{
    return conn_run(c, false, sql, sql != NULL ? strlen(sql) : 0, params, nparams, true);
}

sqlmux_result *sqlmux_queryn(sqlmux_conn *c, const char *sql, size_t len, const sqlmux_value *params,
                             size_t nparams)
{
    return conn_run(c, false, sql, len, params, nparams, true);
}

sqlmux_result *sqlmux_command(sqlmux_conn *c, const char *line)
{
    return conn_run(c, true, line, line != NULL ? strlen(line) : 0, NULL, 0, false);
}

sqlmux_result *sqlmux_auth(sqlmux_conn *c, const char *user, const char *password)
{
    const char *why = auth_args_check(user, password);
    if (why != NULL)
        return result_error("MISUSE", why);
    char line[sizeof ".auth " + 2 * SQLMUX_AUTH_MAX + 1];
    int n = snprintf(line, sizeof line, ".auth %s %s", user, password);
    if (c->error_code == NULL && c->stream == NULL && c->pending == 0) {
        /* Room for the whole line and its '\n' first: the buffer that
         * holds the password is never moved by realloc(), which would
         * leave a copy behind. It is wiped once sent (conn_out_reset). */
        conn_out_reset(c);
        if (buf_reserve(&c->out, (size_t)n + 1) < 0) {
            explicit_bzero(line, sizeof line);
            return result_error("NOMEM", "out of memory");
        }
        c->out_secret = true;
    }
    sqlmux_result *r = conn_run(c, true, line, (size_t)n, NULL, 0, false);
    explicit_bzero(line, sizeof line);
    if (c->out_secret && c->out_done == c->out.len)
        conn_out_reset(c);
    if (sqlmux_status(r) == SQLMUX_OK) {
        const char *name = sqlmux_fact(r, "user");
        free(c->user);
        c->user = sqlmux_strdup(name != NULL ? name : user);
    }
    return r;
}

/* ---- Results: reading ------------------------------------------------ */

void sqlmux_free(sqlmux_result *r)
{
    if (r == NULL || r == &sqlmux_nomem_result)
        return;
    if (r->conn != NULL) {
        /* A stream freed early: the rest of its response is skipped. */
        r->conn->skip_responses++;
        r->conn->stream = NULL;
    }
    free(r->errtext);
    free(r->facts);
    free(r->colpos);
    buf_free(&r->coltext);
    free(r->fields);
    buf_free(&r->data);
    free(r);
}

int sqlmux_status(const sqlmux_result *r)
{
    return r->failed ? SQLMUX_ERROR : SQLMUX_OK;
}

const char *sqlmux_errcode(const sqlmux_result *r)
{
    return r->failed ? r->code : NULL;
}

const char *sqlmux_errmsg(const sqlmux_result *r)
{
    return r->failed ? r->message : "";
}

int sqlmux_ncols(const sqlmux_result *r)
{
    return r->ncols;
}

const char *sqlmux_colname(const sqlmux_result *r, int col)
{
    if (col < 0 || col >= r->ncols)
        return NULL;
    return r->coltext.data + r->colpos[2 * col];
}

const char *sqlmux_coltype(const sqlmux_result *r, int col)
{
    if (col < 0 || col >= r->ncols)
        return NULL;
    return r->coltext.data + r->colpos[2 * col + 1];
}

int sqlmux_step(sqlmux_result *r)
{
    if (r == &sqlmux_nomem_result)
        return SQLMUX_ERROR;
    if (!r->streaming) {
        if (r->cur < r->nrows)
            r->cur++;
        if (r->cur < r->nrows)
            return SQLMUX_ROW;
        return r->failed ? SQLMUX_ERROR : SQLMUX_DONE;
    }
    r->has_row = false;
    if (!r->finished && r->conn != NULL) {
        sqlmux_conn *c = r->conn;
        conn_read_into(c, r, READ_ROW);
        if (r->finished) {
            r->conn = NULL;
            c->stream = NULL;
        }
    }
    if (r->has_row) {
        r->cur = r->nrows - 1;
        return SQLMUX_ROW;
    }
    r->cur = r->nrows;
    return r->failed ? SQLMUX_ERROR : SQLMUX_DONE;
}

bool sqlmux_step_ready(sqlmux_result *r)
{
    if (r == &sqlmux_nomem_result || !r->streaming || r->finished || r->conn == NULL)
        return true;
    sqlmux_conn *c = r->conn;
    if (c->error_code != NULL)
        return true;
    if (c->in.len <= c->in_scan)
        return false;
    const char *nl = memchr(c->in.data + c->in_scan, '\n', c->in.len - c->in_scan);
    /* conn_read_line() scans on from here: nothing before is a newline. */
    c->in_scan = nl != NULL ? (size_t)(nl - c->in.data) : c->in.len;
    return nl != NULL;
}

int sqlmux_seek(sqlmux_result *r, int64_t row)
{
    if (r->streaming || r == &sqlmux_nomem_result || row < -1 || row >= r->nrows)
        return SQLMUX_ERROR;
    r->cur = row;
    return SQLMUX_OK;
}

int64_t sqlmux_rows(const sqlmux_result *r)
{
    return r->nrows;
}

/* The field col of the current row, or NULL. */
static const struct sqlmux_field *field_at(const sqlmux_result *r, int col)
{
    if (col < 0 || col >= r->ncols)
        return NULL;
    if (r->streaming)
        return r->has_row ? &r->fields[col] : NULL;
    if (r->cur < 0 || r->cur >= r->nrows)
        return NULL;
    return &r->fields[(size_t)r->cur * (size_t)r->ncols + (size_t)col];
}

enum sqlmux_type sqlmux_type(const sqlmux_result *r, int col)
{
    const struct sqlmux_field *f = field_at(r, col);
    return f != NULL ? f->type : SQLMUX_NULL;
}

bool sqlmux_isnull(const sqlmux_result *r, int col)
{
    return sqlmux_type(r, col) == SQLMUX_NULL;
}

const char *sqlmux_text(const sqlmux_result *r, int col)
{
    const struct sqlmux_field *f = field_at(r, col);
    if (f == NULL || f->type == SQLMUX_NULL)
        return NULL;
    return r->data.data + f->off;
}

const void *sqlmux_blob(const sqlmux_result *r, int col)
{
    return sqlmux_text(r, col);
}

size_t sqlmux_len(const sqlmux_result *r, int col)
{
    const struct sqlmux_field *f = field_at(r, col);
    return f != NULL ? f->len : 0;
}

double sqlmux_double(const sqlmux_result *r, int col)
{
    const struct sqlmux_field *f = field_at(r, col);
    if (f == NULL || f->type != SQLMUX_TEXT)
        return 0.0;
    const char *s = r->data.data + f->off;
    char *end;
    locale_t cl = sqlmux_get_c_locale();
    double d = cl != (locale_t)0 ? strtod_l(s, &end, cl) : strtod(s, &end);
    return end == s || isnan(d) ? 0.0 : d;
}

int64_t sqlmux_int64(const sqlmux_result *r, int col)
{
    const struct sqlmux_field *f = field_at(r, col);
    if (f == NULL || f->type != SQLMUX_TEXT)
        return 0;
    const char *s = r->data.data + f->off;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end != s && errno == 0 && *end != '.' && *end != 'e' && *end != 'E')
        return v;
    /* A real, or an integer out of range: through double, clamped. */
    double d = sqlmux_double(r, col);
    if (d >= 9223372036854775807.0)
        return INT64_MAX;
    if (d <= -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)d;
}

bool sqlmux_fact_int(const sqlmux_result *r, const char *key, int64_t *out)
{
    return r->facts != NULL && codec_fact_int(r->facts, strlen(r->facts), key, out);
}

const char *sqlmux_fact(const sqlmux_result *r, const char *key)
{
    const char *val;
    size_t vlen;
    if (r->facts == NULL || !codec_fact_find(r->facts, strlen(r->facts), key, &val, &vlen))
        return NULL;
    /* facts_split has a NUL where the value ends. */
    return r->facts_split + (val - r->facts);
}

const char *sqlmux_facts(const sqlmux_result *r)
{
    return r->facts != NULL && !r->failed ? r->facts : "";
}

int64_t sqlmux_changes(const sqlmux_result *r)
{
    int64_t v = 0;
    return sqlmux_fact_int(r, "changes", &v) ? v : 0;
}

int64_t sqlmux_last_id(const sqlmux_result *r)
{
    int64_t v = 0;
    return sqlmux_fact_int(r, "last_id", &v) ? v : 0;
}
