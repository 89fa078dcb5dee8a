/*
 * libFuzzer target for the request decoder of proto/codec.c.
 *
 * The input is a client's byte stream. It is decoded twice the way a
 * session decodes it (codec_parse_request, then codec_discard after a
 * refused request, small limits): once all in one buffer, once arriving
 * in chunks of pseudo-random sizes. Both must give the same sequence of
 * requests and error codes. Every decoded SQL request is also encoded
 * again with codec_encode_request and decoded back to the same text and
 * values, and every invariant of codec.h is checked (consumed within the
 * input, NUL-terminated texts, error messages of one line). A failed
 * check aborts.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. proto/buf.c \
 *       proto/codec.c tests/fuzz/fuzz_request.c -lm -o fuzz_request
 *   ./fuzz_request tests/fuzz/corpus/request
 *
 * Built with -DFUZZ_STANDALONE (any compiler), it runs the files named on
 * its command line through the same checks, for a corpus regression run.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct codec_limits fuzz_lim = {256, 8, 0};

/* Re-decoding an encoded request: escapes may double a text's length. */
static const struct codec_limits fuzz_wide_lim = {4096, 8, 0};

#define FUZZ_CHECK(cond)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                    \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static void fuzz_append(struct buf *b, const void *p, size_t n)
{
    FUZZ_CHECK(buf_append(b, p, n) == 0);
}

/* Append a value to an event log: type byte, then its exact bytes. */
static void fuzz_log_value(struct buf *log, const struct value *v)
{
    char t = (char)('0' + v->type);
    fuzz_append(log, &t, 1);
    switch (v->type) {
    case VALUE_NULL: break;
    case VALUE_INT: fuzz_append(log, &v->i, sizeof v->i); break;
    case VALUE_REAL: fuzz_append(log, &v->r, sizeof v->r); break;
    case VALUE_TEXT:
    case VALUE_BLOB:
        FUZZ_CHECK(v->p != NULL);
        if (v->type == VALUE_TEXT)
            FUZZ_CHECK(v->p[v->len] == '\0');
        fuzz_append(log, &v->len, sizeof v->len);
        fuzz_append(log, v->p, v->len);
        break;
    default: FUZZ_CHECK(0);
    }
}

static bool fuzz_same_value(const struct value *a, const struct value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case VALUE_NULL: return true;
    case VALUE_INT: return a->i == b->i;
    case VALUE_REAL: return memcmp(&a->r, &b->r, sizeof a->r) == 0;
    default: return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
    }
}

/* Encode an SQL request again, decode it with wide limits: same request. */
static void fuzz_roundtrip(const struct request *req)
{
    struct buf out = BUF_INIT;
    struct request back;
    struct codec_discard d;
    struct codec_error err;
    size_t consumed;

    FUZZ_CHECK(codec_encode_request(&out, req->text, req->len, req->params, req->nparams) == 0);
    int r = codec_parse_request(out.data, out.len, &fuzz_wide_lim, &back, &consumed, &d, &err);
    FUZZ_CHECK(r == CODEC_OK);
    FUZZ_CHECK(consumed == out.len);
    FUZZ_CHECK(back.type == REQUEST_SQL && back.len == req->len);
    FUZZ_CHECK(memcmp(back.text, req->text, req->len) == 0);
    FUZZ_CHECK(back.nparams == req->nparams);
    for (size_t i = 0; i < req->nparams; i++)
        FUZZ_CHECK(fuzz_same_value(&back.params[i], &req->params[i]));
    codec_request_free(&back);
    buf_free(&out);
}

/* Decode everything decodable in in[0..*len) as a session does, logging
 * each outcome; the decoded bytes are dropped from the buffer. */
static void fuzz_pump(struct buf *in, struct codec_discard *discard, struct buf *log)
{
    for (;;) {
        if (!codec_discard_done(discard)) {
            size_t used = codec_discard(in->data, in->len, discard);
            FUZZ_CHECK(used <= in->len);
            buf_consume(in, used);
            if (!codec_discard_done(discard)) {
                FUZZ_CHECK(in->len == 0);
                return;
            }
            continue;
        }
        struct request req;
        struct codec_error err;
        size_t consumed = 1;
        int r = codec_parse_request(in->data, in->len, &fuzz_lim, &req, &consumed, discard, &err);
        if (r == CODEC_NEED_MORE) {
            FUZZ_CHECK(consumed == 0 && codec_discard_done(discard));
            return;
        }
        FUZZ_CHECK(consumed > 0 && consumed <= in->len);
        if (r == CODEC_OK) {
            FUZZ_CHECK(req.text != NULL && req.text[req.len] == '\0');
            FUZZ_CHECK(req.len <= fuzz_lim.max_request);
            FUZZ_CHECK(req.nparams <= fuzz_lim.max_params);
            FUZZ_CHECK((req.nparams == 0) == (req.params == NULL));
            char kind = req.type == REQUEST_SQL ? 'S' : 'C';
            fuzz_append(log, &kind, 1);
            fuzz_append(log, &req.len, sizeof req.len);
            fuzz_append(log, req.text, req.len);
            fuzz_append(log, &req.nparams, sizeof req.nparams);
            for (size_t i = 0; i < req.nparams; i++)
                fuzz_log_value(log, &req.params[i]);
            if (req.type == REQUEST_SQL)
                fuzz_roundtrip(&req);
            else
                FUZZ_CHECK(memchr(req.text, '\n', req.len) == NULL);
            codec_request_free(&req);
        } else if (r == CODEC_EMPTY) {
            fuzz_append(log, "E", 1);
        } else {
            FUZZ_CHECK(r == CODEC_ERROR && err.code != NULL);
            FUZZ_CHECK(strcmp(err.code, "NOMEM") != 0);
            size_t mlen = strnlen(err.message, sizeof err.message);
            FUZZ_CHECK(mlen > 0 && mlen < sizeof err.message);
            FUZZ_CHECK(memchr(err.message, '\n', mlen) == NULL);
            fuzz_append(log, "!", 1);
            fuzz_append(log, err.code, strlen(err.code) + 1);
        }
        buf_consume(in, consumed);
    }
}

/* Feed data[0..size) in chunks whose sizes come from `seed` (all at once
 * when seed is 0); returns the log in *log. */
static void fuzz_session(const uint8_t *data, size_t size, uint32_t seed, struct buf *log)
{
    struct buf in = BUF_INIT;
    struct codec_discard discard = {0, 0, false};
    size_t pos = 0;
    while (pos < size) {
        size_t chunk = size - pos;
        if (seed != 0) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            size_t want = 1 + seed % (seed & 0x100 ? 300 : 16);
            chunk = want < chunk ? want : chunk;
        }
        fuzz_append(&in, data + pos, chunk);
        pos += chunk;
        fuzz_pump(&in, &discard, log);
        /* A session never holds more than one request's worth. */
        FUZZ_CHECK(in.len <= (fuzz_lim.max_params + 2) * (fuzz_lim.max_request + 2));
    }
    buf_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf whole = BUF_INIT, chunked = BUF_INIT;
    uint32_t seed = 2463534242u;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = seed * 31 + data[i];
    seed |= 1;

    fuzz_session(data, size, 0, &whole);
    fuzz_session(data, size, seed, &chunked);
    FUZZ_CHECK(whole.len == chunked.len);
    FUZZ_CHECK(whole.len == 0 || memcmp(whole.data, chunked.data, whole.len) == 0);
    buf_free(&whole);
    buf_free(&chunked);
    return 0;
}

#ifdef FUZZ_STANDALONE
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (f == NULL) {
            perror(argv[i]);
            return 1;
        }
        struct buf b = BUF_INIT;
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
            fuzz_append(&b, chunk, n);
        fclose(f);
        LLVMFuzzerTestOneInput((const uint8_t *)b.data, b.len);
        buf_free(&b);
    }
    printf("%d inputs ok\n", argc - 1);
    return 0;
}
#endif
