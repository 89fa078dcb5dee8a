/*
 * Client I/O of a session: the socket's read and alloc callbacks, TLS
 * input (decrypting, handshake answers), whether the session reads at all
 * (session_update_reading), and the write path: writing responses in
 * request order with flow control against the backend, the end-of-turn
 * flush of s->out, and the reply encoders. It owns the write requests,
 * the read buffer's growth and the server's flush list; the state and the
 * requests are session.c's.
 *
 * Output: small responses collect in `out` and leave once per loop turn,
 * every session's together (flush_batch: one io_uring submission, see
 * sendbatch.h); the rows of a large result arrive as chunks from the backend
 * and are written as they come, each acknowledged to the job when written
 * so the backend produces no faster than the client reads. While more than
 * max_output bytes wait for the client, the session neither starts new
 * requests nor reads more input.
 */
#include "daemon/session.h"

#include <stdarg.h>
#include <assert.h>
#include <errno.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/session_int.h"
#include "daemon/tls.h"

#define READ_CHUNK (64 * 1024)

struct write_req {
    uv_write_t req;
    struct session *s;
    struct job *job; /* acknowledged when written, or NULL */
    size_t ack;      /* bytes to acknowledge then (of its plaintext) */
    struct buf data;
};

/* ---- Output ---------------------------------------------------------- */

size_t session_unsent(const struct session *s)
{
    return s->out.len + s->h.stream.write_queue_size;
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    struct session *s = wr->s;

    if (wr->job != NULL) {
        job_ack(wr->job, wr->ack);
        job_unref(wr->job);
    }
    buf_free(&wr->data);
    free(wr);
    if (status < 0) {
        if (status != UV_ECANCELED)
            log_debug("c%llu: write failed: %s", (unsigned long long)s->id, uv_strerror(status));
        session_close(s, true);
        return;
    }
    if (s->state != SESS_CLOSING)
        session_pump(s);
}

/* data, written out: its memory goes to the spare answer buffers when
 * small and there is room, else it is freed. */
static void write_done(struct server *srv, struct buf *data)
{
    if (data->cap > 0 && data->cap <= SERVER_OUT_SPARE_CAP && srv->nout_spare < SERVER_OUT_SPARES) {
        buf_reset(data);
        srv->out_spare[srv->nout_spare++] = *data;
        *data = (struct buf)BUF_INIT;
        return;
    }
    buf_free(data);
}

/* Write data (taking its memory) to the socket after everything already
 * queued. When job is given, it is acknowledged `ack` bytes (data's
 * plaintext) as data is written. */
void session_write_raw(struct session *s, struct buf *data, struct job *job, size_t ack)
{
    struct write_req *wr;
    size_t done = 0;
    uv_buf_t ub;
    int rc;

    if (data->len == 0 || s->closed_handle) {
        if (job != NULL)
            job_ack(job, ack);
        buf_free(data);
        return;
    }
    if (s->h.stream.write_queue_size == 0) {
        ub = uv_buf_init(data->data, (unsigned)data->len);
        rc = uv_try_write(&s->h.stream, &ub, 1);
        if (rc > 0)
            done = (size_t)rc;
        else if (rc < 0 && rc != UV_EAGAIN) {
            if (job != NULL)
                job_ack(job, ack);
            buf_free(data);
            session_close(s, true);
            return;
        }
    }
    if (job != NULL && done > 0) {
        /* TLS adds a little to every record: count what was written
         * against the plaintext, the rest when the write completes. */
        job_ack(job, done < ack ? done : ack);
        ack -= done < ack ? done : ack;
    }
    if (done == data->len) {
        if (job != NULL && ack > 0)
            job_ack(job, ack);
        write_done(s->srv, data);
        return;
    }
    wr = malloc(sizeof *wr);
    if (wr == NULL) {
        if (job != NULL)
            job_ack(job, ack);
        buf_free(data);
        session_close(s, true); /* a torn response: the client cannot go on */
        return;
    }
    if (done > 0)
        buf_consume(data, done);
    wr->s = s;
    wr->job = job;
    wr->ack = ack;
    wr->data = *data;
    *data = (struct buf)BUF_INIT;
    if (job != NULL)
        job->refs++;
    ub = uv_buf_init(wr->data.data, (unsigned)wr->data.len);
    rc = uv_write(&wr->req, &s->h.stream, &ub, 1, on_write);
    if (rc < 0) {
        if (job != NULL) {
            job_ack(job, ack);
            job_unref(job);
        }
        buf_free(&wr->data);
        free(wr);
        session_close(s, true);
    }
}

/* Write data (taking its memory) after everything already queued,
 * encrypted first on a TLS connection. When job is given, it is
 * acknowledged data's length as it is written. */
void session_write(struct session *s, struct buf *data, struct job *job)
{
    size_t plain = data->len;

    if (s->tls != NULL && !s->closed_handle && tls_conn_encrypt(s->tls, data) != 0) {
        if (job != NULL)
            job_ack(job, plain);
        buf_free(data);
        session_close(s, true);
        return;
    }
    session_write_raw(s, data, job, plain);
}

void session_flush(struct session *s)
{
    if (s->out.len > 0)
        session_write(s, &s->out, NULL);
}

/* Does nothing: while active, it only keeps the loop from sleeping. */
static void on_flush_awake(uv_idle_t *h)
{
    (void)h;
}

/* After its answers went out: go on with a session whose unwritten
 * answers may have held back its requests or its reading (max_output). A
 * session with nothing left to parse or run, reading, has nothing to go
 * on with. */
static void flushed(struct session *s)
{
    if (s->state != SESS_CLOSING &&
        (s->qcount > 0 || s->inpos < s->inbuf.len || !s->reading || s->input_ended || s->quit_after_flush))
        session_pump(s);
}

/* How a session of the batch fared (flush_batch). */
enum sent {
    SENT_ALL,  /* written out: its buffer is free again */
    SENT_REST, /* not at all (queued after earlier writes), or in part: libuv writes the rest */
    SENT_FAIL, /* the connection failed, or encrypting did */
};

/* Send the answers of up to SENDBATCH_MAX sessions of the flush list in
 * one batch (sendbatch.h). No session's code runs from the moment their
 * answers are taken until all are sent, so no answer grows or moves
 * meanwhile; only then are the failed closed and the others pumped.
 * Returns how many sessions it answered, *last the last of them. */
static size_t flush_batch(struct server *srv, struct session **last)
{
    struct session **ss = srv->sends_sessions;
    struct sendbatch_item *items = srv->sends_items;
    enum sent fate[SENDBATCH_MAX];
    size_t n = 0, nitems = 0, k = 0;

    while (srv->flush_head != NULL && n < SENDBATCH_MAX) {
        struct session *s = srv->flush_head;

        srv->flush_head = s->flush_next;
        s->flush_next = NULL;
        s->flush_queued = false;
        if (s->state == SESS_CLOSING)
            continue;
        fate[n] = SENT_REST;
        if (s->tls != NULL && !s->closed_handle && tls_conn_encrypt(s->tls, &s->out) != 0)
            fate[n] = SENT_FAIL;
        else if (!s->closed_handle && s->out.len > 0 && s->h.stream.write_queue_size == 0 &&
                 uv_fileno(&s->h.handle, &items[nitems].fd) == 0) {
            items[nitems].data = s->out.data;
            items[nitems].len = s->out.len;
            fate[n] = SENT_ALL;
            nitems++;
        }
        ss[n++] = s;
    }
    sendbatch_send(&srv->sends, items, nitems);
    for (size_t i = 0; i < n; i++) {
        struct session *s = ss[i];
        ssize_t r;

        if (fate[i] != SENT_ALL)
            continue;
        r = items[k++].result;
        if (r == (ssize_t)s->out.len) {
            write_done(srv, &s->out);
        } else if (r >= 0 || r == -EAGAIN) {
            buf_consume(&s->out, r > 0 ? (size_t)r : 0);
            fate[i] = SENT_REST;
        } else {
            log_debug("c%llu: write failed: %s", (unsigned long long)s->id, strerror((int)-r));
            fate[i] = SENT_FAIL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct session *s = ss[i];

        if (s->state == SESS_CLOSING)
            continue;
        if (fate[i] == SENT_FAIL) {
            buf_reset(&s->out);
            session_close(s, true);
            continue;
        }
        if (fate[i] == SENT_REST)
            session_write_raw(s, &s->out, NULL, 0);
        flushed(s);
    }
    if (n > 0)
        *last = ss[n - 1];
    return n;
}

/* Write what the turn's statements answered. */
static void flush_turn(struct server *srv)
{
    struct session *last = NULL;
    size_t answered = 0;

    uv_check_stop(&srv->flush_turn);
    uv_idle_stop(&srv->flush_awake);
    while (srv->flush_head != NULL)
        answered += flush_batch(srv, &last);
    /* The answers are out: their clients may well send more at once, and
     * a client answered alone turn after turn is the one to read. */
    last = answered == 1 ? last : NULL;
    srv->expect = last != NULL && last == srv->answered_alone ? last : NULL;
    srv->answered_alone = last;
    idlepoll_arm(&srv->poller);
}

/* End of the loop turn. */
static void on_flush_turn(uv_check_t *h)
{
    flush_turn(h->data);
}

/* Write s->out at the end of this loop turn. libuv runs check handles
 * after the poll phase, and only idle handles (not check handles) keep the
 * poll from sleeping: an answer queued before the poll (a timer, a local
 * event delivered by local_idle, a session pumped by flush_turn itself)
 * would otherwise wait until some other timer woke the loop. */
void session_flush_soon(struct session *s)
{
    struct server *srv = s->srv;

    if (s->out.len == 0 || s->flush_queued)
        return;
    if (srv->flush_head == NULL) {
        /* Fail only without a callback. */
        (void)uv_check_start(&srv->flush_turn, on_flush_turn);
        (void)uv_idle_start(&srv->flush_awake, on_flush_awake);
    }
    s->flush_queued = true;
    s->flush_next = srv->flush_head;
    srv->flush_head = s;
}

/* A session about to be freed leaves the flush list, and the poller's
 * expectations. */
void session_flush_forget(struct session *s)
{
    struct session **pp = &s->srv->flush_head;

    if (s->srv->answered_alone == s)
        s->srv->answered_alone = NULL;
    if (s->srv->expect == s)
        s->srv->expect = NULL;
    if (!s->flush_queued)
        return;
    while (*pp != s)
        pp = &(*pp)->flush_next;
    *pp = s->flush_next;
    s->flush_queued = false;
}

void session_reply_ok(struct session *s, const char *facts)
{
    if (codec_put_ok(&s->out, facts) != 0)
        session_close(s, true);
}

void session_reply_ok_rows(struct session *s, uint64_t rows)
{
    if (codec_put_ok_rows(&s->out, rows) != 0)
        session_close(s, true);
}

void session_reply_ok_changes(struct session *s, int64_t changes)
{
    if (codec_put_ok_changes(&s->out, changes, NULL) != 0)
        session_close(s, true);
}

void session_reply_error(struct session *s, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (codec_put_error(&s->out, code, msg) != 0)
        session_close(s, true);
}

void session_reply_columns(struct session *s, const char *const *names_types)
{
    struct codec_row r;

    codec_header_begin(&r, &s->out);
    for (size_t i = 0; names_types[i] != NULL; i++)
        codec_field_str(&r, names_types[i]);
    if (codec_row_end(&r) != 0)
        session_close(s, true);
}

void session_reply_row(struct session *s, const char *const *fields, size_t n)
{
    struct codec_row r;

    codec_row_begin(&r, &s->out);
    for (size_t i = 0; i < n; i++)
        codec_field_str(&r, fields[i]);
    if (codec_row_end(&r) != 0)
        session_close(s, true);
}

/* ---- Input ----------------------------------------------------------- */

/* A session with no input waiting reads into the loop's buffer (on_read
 * decodes it there and keeps only a partial request), so that a client
 * whose requests arrive whole costs no allocation per read. TLS input is
 * decrypted into inbuf: it reads into its own. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct session *s = h->data;
    struct server *srv = s->srv;

    (void)suggested;
    if (s->inbuf.cap == 0 && s->tls == NULL && srv->rbuf == NULL)
        srv->rbuf = malloc(READ_CHUNK + 1); /* else: the session's own */
    if (s->inbuf.cap == 0 && s->tls == NULL && srv->rbuf != NULL) {
        *out = uv_buf_init(srv->rbuf, READ_CHUNK);
        return;
    }
    if (buf_reserve(&s->inbuf, READ_CHUNK) != 0) {
        *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *out = uv_buf_init(s->inbuf.data + s->inbuf.len, (unsigned)(s->inbuf.cap - s->inbuf.len - 1));
}

/* On a TLS connection, inbuf[len..len+n) holds ciphertext just read:
 * decrypt it into inbuf, send what the TLS layer answers (handshake
 * records), and go on as with plain input. */
static void session_tls_input(struct session *s, size_t n)
{
    struct buf out = BUF_INIT;
    int rc = tls_conn_input(s->tls, s->inbuf.data + s->inbuf.len, n, &s->inbuf, &out);

    s->inbuf.data[s->inbuf.len] = '\0'; /* over the ciphertext when no plaintext came */
    if (out.len > 0)
        session_write_raw(s, &out, NULL, 0);
    buf_free(&out);
    if (rc < 0) {
        log_info("c%llu: TLS: %s: closing", (unsigned long long)s->id, tls_conn_error(s->tls));
        session_close(s, false);
        return;
    }
    if (rc & TLS_IN_READY)
        session_tls_login(s);
    if (rc & TLS_IN_EOF) {
        s->input_ended = true; /* close_notify: as a FIN on plain TCP */
        if (s->reading) {
            uv_read_stop(&s->h.stream);
            s->reading = false;
        }
    }
    if (s->state != SESS_CLOSING)
        session_pump(s);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct session *s = stream->data;

    (void)b;
    if (nread == UV_EOF) {
        /* End of input (FIN): the client has sent everything, as
         * `printf ... | nc -N` does. Like PostgreSQL and Redis, answer
         * what it sent, then close (an open transaction is rolled back).
         * If it has closed for good, the first write fails and the session
         * is cancelled then. */
        log_debug("c%llu: end of input", (unsigned long long)s->id);
        s->input_ended = true;
        if (s->reading) {
            uv_read_stop(&s->h.stream);
            s->reading = false;
        }
        session_pump(s);
        return;
    }
    if (nread < 0) {
        /* A reset (the client aborted: the CLI's Ctrl-C, a dead peer) or
         * another read error: the client is gone. Its statement is
         * interrupted, unanswered requests are dropped, and an open
         * transaction is rolled back. */
        log_debug("c%llu: read: %s", (unsigned long long)s->id, uv_strerror((int)nread));
        session_close(s, true);
        return;
    }
    s->active_at = uv_now(s->srv->loop);
    if (s->tls != NULL) {
        session_tls_input(s, (size_t)nread);
        return;
    }
    if (b->base != s->srv->rbuf) {
        s->inbuf.len += (size_t)nread;
        s->inbuf.data[s->inbuf.len] = '\0';
        session_pump(s);
        return;
    }
    /* Decode in the loop's buffer; what is left (a partial request, or
     * requests the full queue cannot take yet) moves to the session's own
     * inbuf, or the session closes if that fails. */
    assert(s->inbuf.len == 0 && s->inbuf.cap == 0);
    s->inbuf = (struct buf){.data = b->base, .len = (size_t)nread, .cap = READ_CHUNK + 1};
    s->inbuf.data[s->inbuf.len] = '\0';
    s->inbuf_shared = true;
    s->inpos = 0;
    if (s->out.cap == 0 && s->srv->nout_spare > 0)
        s->out = s->srv->out_spare[--s->srv->nout_spare];
    session_pump(s);
    if (s->out.len == 0 && s->out.cap > 0)
        write_done(s->srv, &s->out); /* nothing to answer yet: an idle session holds no buffer */
    {
        struct buf rest = BUF_INIT;
        bool lost = s->inpos < s->inbuf.len &&
                    buf_append(&rest, s->inbuf.data + s->inpos, s->inbuf.len - s->inpos) != 0;
        s->inbuf = rest;
        s->inbuf_shared = false;
        s->inpos = 0;
        if (lost)
            session_close(s, true);
    }
}

/* The idle poller's reader (idlepoll.h): one read of the session
 * expected next, without waiting, into the buffer libuv's read would
 * have used, while the session reads at all. The end of its input or an
 * error is left to libuv's own read, which the socket is ready for. Not
 * while a bind's check handle is still pending from the last turn (its
 * quick writes wait for a turn without a write sent to its worker): a
 * request read here, before the poll phase, would share its turn with
 * the worker's answers that the poll phase brings, and no turn would be
 * calm again while the client keeps pace (measured: 780 of 3,000 quick
 * writes went to the worker). libuv reads it in the poll phase then. */
bool session_read_expected(void *ctx)
{
    struct server *srv = ctx;
    struct session *s = srv->expect;
    int fd;
    ssize_t n;

    if (s == NULL || srv->host.turn_checks != 0)
        return false; /* a bind's turn is not over: see below */
    if (s->state == SESS_CLOSING || !s->reading || s->closed_handle || uv_fileno(&s->h.handle, &fd) != 0) {
        srv->expect = NULL;
        return false;
    }
    on_alloc(&s->h.handle, READ_CHUNK, &srv->expect_buf);
    if (srv->expect_buf.base == NULL) {
        srv->expect = NULL; /* libuv's read reports it */
        return false;
    }
    n = recv(fd, srv->expect_buf.base, srv->expect_buf.len, MSG_DONTWAIT);
    if (n > 0) {
        srv->expect_len = (size_t)n;
        return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return false;
    srv->expect = NULL;
    return false;
}

/* What session_read_expected() read, handled as libuv's read callback.
 * Answered at once (its statements ran on the loop), the answers leave
 * now rather than after libuv's poll phase, so that the poller can wait
 * for the client's next request straight away: true (also when nothing
 * was answered yet; then no poll is armed). Not while
 * anything waits for the turn's check phase (a quick read's transaction,
 * the quick writes' one per turn), which the poller's rounds would go
 * without: the answers then leave in that check phase, as any turn's,
 * and the client's next request comes in the next turn. */
bool session_handle_expected(void *ctx)
{
    struct server *srv = ctx;

    on_read(&srv->expect->h.stream, (ssize_t)srv->expect_len, &srv->expect_buf);
    if (srv->host.turn_checks != 0)
        return false;
    if (srv->flush_head != NULL)
        flush_turn(srv);
    return true;
}

/* Read when there is room for more requests and the client keeps up with
 * its responses; stop otherwise. */
void session_update_reading(struct session *s)
{
    bool want = s->state != SESS_CLOSING && !s->input_ended && !s->yielded &&
                s->qcount < (size_t)s->srv->cfg->max_pipeline &&
                session_unsent(s) <= s->srv->cfg->max_output && !s->closed_handle &&
                s->queued_bytes + (s->inbuf.len - s->inpos) <= s->srv->cfg->max_request_total &&
                (session_authenticated(s) || s->inbuf.len - s->inpos <= PRELOGIN_MAX_REQUEST);

    if (want && !s->reading) {
        int rc = uv_read_start(&s->h.stream, on_alloc, on_read);
        if (rc != 0) {
            /* It would wait forever for input it cannot read. */
            log_warn("c%llu: cannot read: %s", (unsigned long long)s->id, uv_strerror(rc));
            session_close(s, true);
            return;
        }
        s->reading = true;
    } else if (!want && s->reading) {
        uv_read_stop(&s->h.stream);
        s->reading = false;
    }
}
