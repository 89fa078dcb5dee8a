/*
 * Unit tests of proto/codec.c and proto/buf.c: request framing and
 * decoding (every form, every error and what the stream skips after it,
 * input split at every byte), request encoding, COPY-text fields, real
 * formatting, response line classification and error lines.
 *
 * Most request tests run input through a small session emulation that
 * logs what the decoder produced, one token per request:
 *   S[sql] params;   C[command];   E;   !CODE;
 * with sql, command and text parameters in COPY-text form, so a test reads
 * as one CHECK_STR. A trailing "+N" says N bytes were left undecoded and
 * "~" that a discard was still pending.
 */
#include "proto/codec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"

#define LIT(s) (s), (sizeof(s) - 1)

static struct codec_limits test_lim = {1000, 16, 0};

/* ---- Session emulation ----------------------------------------------- */

struct test_session {
    struct buf in;
    struct buf log;
    struct codec_discard discard;
    bool failed; /* an allocation failed in the test itself */
};

static void log_str(struct test_session *s, const char *str)
{
    if (buf_puts(&s->log, str) < 0)
        s->failed = true;
}

static void log_request(struct test_session *s, const struct request *req)
{
    struct buf *l = &s->log;
    log_str(s, req->type == REQUEST_SQL ? "S[" : "C[");
    if (codec_put_text(l, req->text, req->len) < 0)
        s->failed = true;
    log_str(s, "]");
    CHECK(req->text[req->len] == '\0');
    for (size_t i = 0; i < req->nparams; i++) {
        const struct value *v = &req->params[i];
        int rc = 0;
        switch (v->type) {
        case VALUE_NULL: rc = buf_puts(l, " n"); break;
        case VALUE_INT: rc = buf_printf(l, " i%lld", (long long)v->i); break;
        case VALUE_REAL: rc = buf_puts(l, " r") < 0 ? -1 : codec_put_real(l, v->r); break;
        case VALUE_TEXT:
            CHECK(v->p != NULL && v->p[v->len] == '\0');
            rc = buf_puts(l, " t") < 0 ? -1 : codec_put_text(l, v->p, v->len);
            break;
        case VALUE_BLOB:
            CHECK(v->p != NULL);
            rc = buf_puts(l, " b") < 0 ? -1 : codec_put_blob(l, v->p, v->len);
            break;
        }
        if (rc < 0)
            s->failed = true;
    }
    log_str(s, ";");
}

/* Decode everything decodable in s->in, as a daemon session would. */
static void session_pump(struct test_session *s)
{
    for (;;) {
        if (!codec_discard_done(&s->discard)) {
            size_t used = codec_discard(s->in.data, s->in.len, &s->discard);
            CHECK(used <= s->in.len);
            buf_consume(&s->in, used);
            if (!codec_discard_done(&s->discard))
                return;
            continue;
        }
        struct request req;
        struct request untouched;
        memset(&req, 0xa5, sizeof req); /* must stay untouched unless OK */
        memcpy(&untouched, &req, sizeof req);
        size_t consumed = 12345;
        struct codec_error err;
        int r = codec_parse_request(s->in.data, s->in.len, &test_lim, &req, &consumed, &s->discard, &err);
        if (r == CODEC_NEED_MORE) {
            CHECK(consumed == 0);
            CHECK(codec_discard_done(&s->discard));
            CHECK(memcmp(&req, &untouched, sizeof req) == 0);
            return;
        }
        CHECK(consumed > 0 && consumed <= s->in.len);
        if (r == CODEC_OK) {
            log_request(s, &req);
            codec_request_free(&req);
        } else if (r == CODEC_EMPTY) {
            log_str(s, "E;");
        } else {
            CHECK(r == CODEC_ERROR);
            CHECK(err.code != NULL && err.message[0] != '\0');
            CHECK(strchr(err.message, '\n') == NULL);
            CHECK(memcmp(&req, &untouched, sizeof req) == 0);
            log_str(s, "!");
            log_str(s, err.code != NULL ? err.code : "?");
            log_str(s, ";");
        }
        buf_consume(&s->in, consumed);
    }
}

static void session_feed(struct test_session *s, const char *p, size_t n)
{
    if (buf_append(&s->in, p, n) < 0)
        s->failed = true;
    session_pump(s);
}

/* Finish a session: its log (plus leftovers) copied to a static string. */
static const char *session_end(struct test_session *s)
{
    static char out[4][8192];
    static int which;
    char *o = out[which++ % 4];
    if (s->in.len > 0 && buf_printf(&s->log, "+%zu", s->in.len) < 0)
        s->failed = true;
    if (!codec_discard_done(&s->discard))
        log_str(s, "~");
    CHECK(!s->failed);
    snprintf(o, sizeof out[0], "%s", s->log.len > 0 ? s->log.data : "");
    CHECK(s->log.len < sizeof out[0]);
    buf_free(&s->in);
    buf_free(&s->log);
    return o;
}

/* The log of in[0..n) fed at once. */
static const char *run(const char *in, size_t n)
{
    struct test_session s = {BUF_INIT, BUF_INIT, {0, 0, false}, false};
    session_feed(&s, in, n);
    return session_end(&s);
}

/* The log of in[0..n) fed in two pieces split at k. */
static const char *run_split(const char *in, size_t n, size_t k)
{
    struct test_session s = {BUF_INIT, BUF_INIT, {0, 0, false}, false};
    session_feed(&s, in, k);
    session_feed(&s, in + k, n - k);
    return session_end(&s);
}

/* The log of in[0..n) fed one byte at a time. */
static const char *run_bytewise(const char *in, size_t n)
{
    struct test_session s = {BUF_INIT, BUF_INIT, {0, 0, false}, false};
    for (size_t i = 0; i < n; i++)
        session_feed(&s, in + i, 1);
    return session_end(&s);
}

#define RUN_S(lit) run(LIT(lit))

/* CHECK, and end the test when it fails (what follows depends on it). */
#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            CHECK(cond);                                                                                     \
            return;                                                                                          \
        }                                                                                                    \
    } while (0)

/* Parse one request from a NUL-terminated string; returns the result. */
static int parse1(const char *in, size_t n, struct request *req, size_t *consumed, struct codec_discard *d,
                  struct codec_error *err)
{
    return codec_parse_request(in, n, &test_lim, req, consumed, d, err);
}

/* The error of the first request in in[0..n): "CODE message". */
static const char *first_error(const char *in, size_t n)
{
    static char out[256];
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    int r = parse1(in, n, &req, &consumed, &d, &err);
    if (r == CODEC_OK)
        codec_request_free(&req);
    if (r != CODEC_ERROR)
        return "(no error)";
    snprintf(out, sizeof out, "%s %s", err.code, err.message);
    return out;
}

/* ---- Request forms --------------------------------------------------- */

static void test_inline_sql(void)
{
    CHECK_STR(RUN_S("SELECT 1\n"), "S[SELECT 1];");
    CHECK_STR(RUN_S("SELECT 1;\n"), "S[SELECT 1;];");
    CHECK_STR(RUN_S("  SELECT 1\n"), "S[  SELECT 1];");
    CHECK_STR(RUN_S("SELECT 'a\tb'\n"), "S[SELECT 'a\\tb'];");
    CHECK_STR(RUN_S("SELECT 1"), "+8");

    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(LIT("SELECT 42\nrest"), &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(consumed == 10);
    CHECK(req.type == REQUEST_SQL && req.len == 9 && req.nparams == 0 && req.params == NULL);
    CHECK_STR(req.text, "SELECT 42");
    codec_request_free(&req);
}

static void test_inline_sql_crlf(void)
{
    CHECK_STR(RUN_S("SELECT 1\r\n"), "S[SELECT 1];");
    /* Only the CR right before the LF belongs to the line end. */
    CHECK_STR(RUN_S("SELECT 1\r\r\n"), "S[SELECT 1\\r];");
    CHECK_STR(RUN_S("a\rb\n"), "S[a\\rb];");
}

static void test_command(void)
{
    CHECK_STR(RUN_S(".ping\n"), "C[ping];");
    CHECK_STR(RUN_S(".route SELECT * FROM t\n"), "C[route SELECT * FROM t];");
    CHECK_STR(RUN_S(".\n"), "C[];");
    CHECK_STR(RUN_S(".use second_db\r\n"), "C[use second_db];");
}

static void test_empty_lines(void)
{
    CHECK_STR(RUN_S("\n"), "E;");
    CHECK_STR(RUN_S("\r\n"), "E;");
    CHECK_STR(RUN_S("   \n \t \r\n"), "E;E;");
    CHECK_STR(RUN_S("\n\n.ping\n\n"), "E;E;C[ping];E;");
}

static void test_nul_in_line(void)
{
    CHECK_STR(run(LIT("SELECT \0 1\nSELECT 2\n")), "!PROTO;S[SELECT 2];");
    CHECK_STR(run(LIT(".pi\0ng\n.ping\n")), "!PROTO;C[ping];");
    CHECK_STR(run(LIT("\0\n")), "!PROTO;");
    CHECK_STR(first_error(LIT("a\0\n")), "PROTO nul byte in line");
}

static void test_bulk_basic(void)
{
    CHECK_STR(RUN_S("$28\nSELECT 1 AS a,\n       2 AS b\n"), "S[SELECT 1 AS a,\\n       2 AS b];");
    CHECK_STR(RUN_S("$8 0\nSELECT 1\n"), "S[SELECT 1];");
    CHECK_STR(RUN_S("$08\nSELECT 1\n"), "S[SELECT 1];");
    CHECK_STR(RUN_S("$0\n\n"), "S[];");
    /* '.', '$' and '?' inside a body are just bytes. */
    CHECK_STR(RUN_S("$6\n.ping\n\n"), "S[.ping\\n];");
}

static void test_bulk_crlf(void)
{
    CHECK_STR(RUN_S("$8\r\nSELECT 1\r\n"), "S[SELECT 1];");
    CHECK_STR(RUN_S("$8 1\r\nSELECT ?\r\ni7\r\n"), "S[SELECT ?] i7;");
    /* A CR at the end of the body is part of the body. */
    CHECK_STR(RUN_S("$2\na\r\r\n"), "S[a\\r];");
}

static void test_bulk_binary_body(void)
{
    static const char in[] = "$7\n\0\n\r\t\\\xff\x01\n";
    CHECK_STR(run(in, sizeof in - 1), "S[\\0\\n\\r\\t\\\\\xff\x01];");
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(in, sizeof in - 1, &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(req.len == 7 && memcmp(req.text, "\0\n\r\t\\\xff\x01", 7) == 0 && req.text[7] == 0);
    CHECK(consumed == sizeof in - 1);
    codec_request_free(&req);
}

static void test_bulk_with_params(void)
{
    CHECK_STR(RUN_S("$27 3\nSELECT ?, ?, ? FROM t WHERE\nn\ni-5\ntred\n"),
              "S[SELECT ?, ?, ? FROM t WHERE] n i-5 tred;");
    CHECK_STR(RUN_S("$1 2\n?\nr0.5\nb00ff\n"), "S[?] r0.5 b\\x00ff;");
}

static void test_bulk_bad_line_end(void)
{
    /* Length one short: the body is followed by 'x', not a line end. The
     * rest of that line and the declared parameter lines are skipped. */
    CHECK_STR(RUN_S("$3\nabcx\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("$3 1\nabcx\ni1\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("$3\nabc\rx\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(first_error(LIT("$3\nabcx\n")), "PROTO bulk statement not followed by a line end");
    /* "$3\nabc\r" waits for the byte after the CR. */
    CHECK_STR(RUN_S("$3\nabc\r"), "+7");
}

static void test_inline_params(void)
{
    CHECK_STR(RUN_S("?2 SELECT id FROM test1 WHERE color = ? AND id > ?\ntred\ni0\n"),
              "S[SELECT id FROM test1 WHERE color = ? AND id > ?] tred i0;");
    CHECK_STR(RUN_S("?0 SELECT 1\n"), "S[SELECT 1];");
    CHECK_STR(RUN_S("?1 SELECT ?\r\nta b\r\n"), "S[SELECT ?] ta b;");
    CHECK_STR(RUN_S("?1 SELECT ?\n"), "+12");
    /* The SQL is everything after the one space. */
    CHECK_STR(RUN_S("?0  SELECT 1\n"), "S[ SELECT 1];");
}

static const char pipeline[] =
    "SELECT 1\n"
    "\r\n"
    ".ping\r\n"
    "$12 2\nSELECT ?, ?\n\ntxy\\tz\r\nbABCD\n"
    "?1 SELECT ?\nr-1e300\n"
    "$abc\n"
    "?1 SELECT ?\ni99999999999999999999\n"
    "SELECT \0\n"
    "$5 1\nabcde\ni1\n"
    "$3 20\nabc\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16\n17\n18\n19\n20\n"
    "?1 SELECT ?\ntbad\\q\n"
    "    \n"
    ".quit\n";

static const char pipeline_log[] =
    "S[SELECT 1];E;C[ping];S[SELECT ?, ?\\n] txy\\tz b\\xabcd;S[SELECT ?] r-1e+300;"
    "!PROTO;!PROTO;!PROTO;S[abcde] i1;!PARAMS;!PROTO;E;C[quit];";

static void test_pipelined(void)
{
    CHECK_STR(run(pipeline, sizeof pipeline - 1), pipeline_log);
}

static void test_every_split_point(void)
{
    size_t n = sizeof pipeline - 1;
    int bad = 0;
    for (size_t k = 0; k <= n; k++)
        if (strcmp(run_split(pipeline, n, k), pipeline_log) != 0 && bad++ < 3)
            fprintf(stderr, "  split at %zu: %s\n", k, run_split(pipeline, n, k));
    CHECK(bad == 0);
    CHECK_STR(run_bytewise(pipeline, n), pipeline_log);
}

static void test_prefixes_need_more(void)
{
    static const char *reqs[] = {
        "SELECT 1\r\n",
        ".ping\n",
        "$12 2\nSELECT ?, ?\n\ntxy\\tz\r\nbABCD\r\n",
        "?3 SELECT ?, ?, ?\nn\r\ni1\nr2.5\n",
        "$0\r\n\r\n",
    };
    for (size_t t = 0; t < sizeof reqs / sizeof reqs[0]; t++) {
        size_t n = strlen(reqs[t]);
        for (size_t k = 0; k < n; k++) {
            struct request req;
            size_t consumed = 99;
            struct codec_discard d;
            struct codec_error err;
            int r = parse1(reqs[t], k, &req, &consumed, &d, &err);
            CHECK(r == CODEC_NEED_MORE && consumed == 0);
            if (r == CODEC_OK)
                codec_request_free(&req);
        }
        struct request req;
        size_t consumed;
        struct codec_discard d;
        struct codec_error err;
        REQUIRE(parse1(reqs[t], n, &req, &consumed, &d, &err) == CODEC_OK);
        CHECK(consumed == n);
        codec_request_free(&req);
    }
}

/* ---- Parameters ------------------------------------------------------ */

static void test_param_null(void)
{
    CHECK_STR(RUN_S("?1 SELECT ?\nn\n"), "S[SELECT ?] n;");
    CHECK_STR(first_error(LIT("?1 SELECT ?\nnull\n")), "PROTO parameter 1: junk after n");
}

static void test_param_int(void)
{
    CHECK_STR(RUN_S("?6 x\ni0\ni-0\ni+7\ni007\ni9223372036854775807\ni-9223372036854775808\n"),
              "S[x] i0 i0 i7 i7 i9223372036854775807 i-9223372036854775808;");
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(LIT("?2 x\ni-9223372036854775808\ni9223372036854775807\n"), &req, &consumed, &d, &err) ==
            CODEC_OK);
    CHECK(req.params[0].type == VALUE_INT && req.params[0].i == INT64_MIN);
    CHECK(req.params[1].type == VALUE_INT && req.params[1].i == INT64_MAX);
    codec_request_free(&req);
}

static void test_param_int_out_of_range(void)
{
    CHECK_STR(first_error(LIT("?1 x\ni9223372036854775808\n")), "PROTO parameter 1: integer out of range");
    CHECK_STR(first_error(LIT("?2 x\ni1\ni-9223372036854775809\n")),
              "PROTO parameter 2: integer out of range");
    CHECK_STR(first_error(LIT("?1 x\ni99999999999999999999999999999\n")),
              "PROTO parameter 1: integer out of range");
    /* Out of range and then not a number at all: bad. */
    CHECK_STR(first_error(LIT("?1 x\ni99999999999999999999999x\n")), "PROTO parameter 1: bad integer");
}

static void test_param_int_bad(void)
{
    static const char *bad[] = {"i", "i-", "i+", "i12a", "i 1", "i1 ", "i1.5", "i0x10", "i--1"};
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        char in[64];
        int n = snprintf(in, sizeof in, "?1 x\n%s\n", bad[t]);
        CHECK_STR(first_error(in, (size_t)n), "PROTO parameter 1: bad integer");
    }
}

/* Framing keeps the places of the first parameter lines for decoding and
 * finds the later ones again: every line decodes as itself, whichever way
 * it was found and whatever its line end. */
static void test_params_past_kept_lines(void)
{
    struct buf in = BUF_INIT;
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    enum { N = 13 };

    CHECK(buf_puts(&in, "?13 SELECT ?1") == 0);
    for (int i = 2; i <= N; i++)
        CHECK(buf_printf(&in, ", ?%d", i) == 0);
    CHECK(buf_puts(&in, "\n") == 0);
    for (int i = 0; i < N; i++)
        CHECK((i % 3 == 0   ? buf_printf(&in, "i%d%s", i * 1000, i % 2 ? "\r\n" : "\n")
               : i % 3 == 1 ? buf_printf(&in, "tline %d\\tend%s", i, i % 2 ? "\r\n" : "\n")
                            : buf_printf(&in, "b%02x%02x%s", i, 255 - i, i % 2 ? "\r\n" : "\n")) == 0);
    REQUIRE(parse1(in.data, in.len, &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(consumed == in.len);
    REQUIRE(req.nparams == N);
    for (int i = 0; i < N; i++) {
        const struct value *v = &req.params[i];
        char want[32];
        if (i % 3 == 0) {
            CHECK(v->type == VALUE_INT && v->i == i * 1000);
        } else if (i % 3 == 1) {
            snprintf(want, sizeof want, "line %d\tend", i);
            CHECK(v->type == VALUE_TEXT && v->len == strlen(want) && strcmp(v->p, want) == 0);
        } else {
            CHECK(v->type == VALUE_BLOB && v->len == 2 && (unsigned char)v->p[0] == i &&
                  (unsigned char)v->p[1] == 255 - i);
        }
    }
    codec_request_free(&req);
    buf_free(&in);
}

static void test_param_real(void)
{
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(LIT("?7 x\nr0.1\nr1e300\nr-0.0\nrinf\nr-inf\nr0x1p-2\nr1e-400\n"), &req, &consumed, &d,
                   &err) == CODEC_OK);
    CHECK(req.nparams == 7);
    for (size_t i = 0; i < req.nparams; i++)
        CHECK(req.params[i].type == VALUE_REAL);
    CHECK(req.params[0].r == 0.1);
    CHECK(req.params[1].r == 1e300);
    CHECK(req.params[2].r == 0 && signbit(req.params[2].r));
    CHECK(isinf(req.params[3].r) && req.params[3].r > 0);
    CHECK(isinf(req.params[4].r) && req.params[4].r < 0);
    CHECK(req.params[5].r == 0.25);
    CHECK(req.params[6].r == 0); /* underflow reads as strtod reads it */
    codec_request_free(&req);

    /* A long spelling is still read (goes through an allocation). */
    char in[256] = "?1 x\nr0.";
    size_t n = strlen(in);
    memset(in + n, '0', 100);
    n += 100;
    memcpy(in + n, "5\n", 3);
    n += 2;
    REQUIRE(parse1(in, n, &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(req.params[0].r == 5e-101);
    codec_request_free(&req);
}

static void test_param_real_bad(void)
{
    CHECK_STR(first_error(LIT("?1 x\nrnan\n")), "PROTO parameter 1: nan is not allowed");
    CHECK_STR(first_error(LIT("?1 x\nr-NaN\n")), "PROTO parameter 1: nan is not allowed");
    CHECK_STR(first_error(LIT("?1 x\nr\n")), "PROTO parameter 1: bad real");
    CHECK_STR(first_error(LIT("?1 x\nr 1\n")), "PROTO parameter 1: bad real");
    CHECK_STR(first_error(LIT("?1 x\nr1x\n")), "PROTO parameter 1: bad real");
    CHECK_STR(first_error(LIT("?1 x\nr1 \n")), "PROTO parameter 1: bad real");
    CHECK_STR(first_error(LIT("?2 x\nn\nr1e999\n")), "PROTO parameter 2: real out of range");
    CHECK_STR(first_error(LIT("?1 x\nr1\0\n")), "PROTO parameter 1: bad real");
}

static void test_param_text(void)
{
    CHECK_STR(RUN_S("?4 x\nt\ntNULL\nt\\\\N\nta\\\\b\\tc\\nd\\re\\0f\n"),
              "S[x] t tNULL t\\\\N ta\\\\b\\tc\\nd\\re\\0f;");
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(LIT("?2 x\nt\nta\\0b\tc\n"), &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(req.params[0].type == VALUE_TEXT && req.params[0].len == 0);
    CHECK(req.params[0].p != NULL && req.params[0].p[0] == '\0');
    /* A raw tab is fine in a parameter line; \0 is a NUL. */
    CHECK(req.params[1].len == 5 && memcmp(req.params[1].p, "a\0b\tc", 6) == 0);
    codec_request_free(&req);
}

static void test_param_text_bad_escape(void)
{
    CHECK_STR(first_error(LIT("?1 x\ntab\\q\n")), "PROTO parameter 1: bad escape");
    CHECK_STR(first_error(LIT("?1 x\ntab\\\n")), "PROTO parameter 1: bad escape");
    CHECK_STR(first_error(LIT("?1 x\nt\\N\\x\n")), "PROTO parameter 1: bad escape");
}

static void test_param_blob(void)
{
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(LIT("?2 x\nb\nb00fFaB10\n"), &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(req.params[0].type == VALUE_BLOB && req.params[0].len == 0);
    CHECK(req.params[0].p != NULL); /* a NULL pointer would bind SQL NULL */
    CHECK(req.params[1].type == VALUE_BLOB && req.params[1].len == 4);
    CHECK(memcmp(req.params[1].p, "\x00\xff\xab\x10", 4) == 0);
    codec_request_free(&req);
}

static void test_param_blob_bad(void)
{
    CHECK_STR(first_error(LIT("?1 x\nb0\n")), "PROTO parameter 1: odd number of hex digits");
    CHECK_STR(first_error(LIT("?1 x\nb012\n")), "PROTO parameter 1: odd number of hex digits");
    CHECK_STR(first_error(LIT("?1 x\nb0g\n")), "PROTO parameter 1: bad hex digit");
    CHECK_STR(first_error(LIT("?1 x\nb00 1\n")), "PROTO parameter 1: bad hex digit");
    CHECK_STR(first_error(LIT("?1 x\nbxy\n")), "PROTO parameter 1: bad hex digit");
}

static void test_param_unknown_type(void)
{
    CHECK_STR(first_error(LIT("?1 x\nq1\n")), "PROTO parameter 1: unknown type 'q'");
    CHECK_STR(first_error(LIT("?1 x\n\x01\n")), "PROTO parameter 1: unknown type 0x01");
    CHECK_STR(first_error(LIT("?1 x\n\n")), "PROTO parameter 1: empty line");
    CHECK_STR(first_error(LIT("?1 x\n\r\n")), "PROTO parameter 1: empty line");
    CHECK_STR(first_error(LIT("?1 x\nN\n")), "PROTO parameter 1: unknown type 'N'");
}

static void test_bad_param_consumes_whole_request(void)
{
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    static const char in[] = "?3 SELECT ?, ?, ?\nix\ntok\nn\nSELECT 2\n";
    CHECK(parse1(in, sizeof in - 1, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == strlen("?3 SELECT ?, ?, ?\nix\ntok\nn\n"));
    CHECK(codec_discard_done(&d));
    CHECK_STR(err.message, "parameter 1: bad integer");
    /* The error waits until the whole request is there. */
    CHECK(parse1(in, strlen("?3 SELECT ?, ?, ?\nix\ntok\n"), &req, &consumed, &d, &err) == CODEC_NEED_MORE);
    CHECK_STR(run(in, sizeof in - 1), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("$1 2\n?\ni1\nbz\n.ping\n"), "!PROTO;C[ping];");
}

/* ---- Header errors and the discard ----------------------------------- */

static void test_bad_bulk_headers(void)
{
    static const char *bad[] = {"$abc", "$-1", "$", "$ 5", "$+5", "$5x", "$99999999999999999999999"};
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        char in[128];
        int n = snprintf(in, sizeof in, "%s\nSELECT 2\n", bad[t]);
        CHECK_STR(run(in, (size_t)n), "!PROTO;S[SELECT 2];");
        CHECK_STR(first_error(in, (size_t)n), "PROTO bad bulk header: expected $<length>[ <nparams>]");
    }
}

static void test_bulk_bad_nparams(void)
{
    /* The length parsed: its body is skipped, whatever it holds. */
    CHECK_STR(RUN_S("$5 x\nab\ncd\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("$5 \nab\ncd\r\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("$5 1 2\nab\ncd\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("$5  1\nab\ncd\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(first_error(LIT("$5 x\n")), "PROTO bad bulk header: bad parameter count");

    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    CHECK(parse1(LIT("$5 x\nab\ncd\n"), &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == 5 && d.bytes == 5 && d.to_eol && d.lines == 0);
}

static void test_bad_inline_headers(void)
{
    CHECK_STR(RUN_S("?x SELECT 1\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("?\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("?2x SELECT\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(RUN_S("?-1 SELECT\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    CHECK_STR(first_error(LIT("?x SELECT 1\n")), "PROTO bad parameter header: expected ?<nparams> <sql>");
    CHECK_STR(first_error(LIT("?2\n")), "PROTO missing sql after ?2");
    CHECK_STR(first_error(LIT("?2 \r\n")), "PROTO missing sql after ?2");
    /* Only the header line goes. */
    CHECK_STR(RUN_S("?1\nSELECT 2\n"), "!PROTO;S[SELECT 2];");
    /* A NUL in the SQL of a good header: the parameter lines go too. */
    CHECK_STR(run(LIT("?2 SELECT \0?\ni1\ni2\nSELECT 3\n")), "!PROTO;S[SELECT 3];");
}

static void test_too_many_params_bulk(void)
{
    CHECK_STR(first_error(LIT("$1 17\n")), "PARAMS too many parameters: 17, max 16");
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    CHECK(parse1(LIT("$1 17\n"), &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == 6 && d.bytes == 1 && d.to_eol && d.lines == 17);

    struct buf in = BUF_INIT;
    CHECK(buf_puts(&in, "$3 17\n.x\n\r\n") == 0);
    for (int i = 0; i < 17; i++)
        CHECK(buf_printf(&in, "i%d\n", i) == 0);
    CHECK(buf_puts(&in, ".ping\n") == 0);
    CHECK_STR(run(in.data, in.len), "!PARAMS;C[ping];");
    for (size_t k = 0; k <= in.len; k++)
        CHECK_STR(run_split(in.data, in.len, k), "!PARAMS;C[ping];");
    buf_free(&in);
    CHECK_STR(RUN_S("$1 16\n"), "+6"); /* 16 is allowed: waits */
}

static void test_too_many_params_inline(void)
{
    struct buf in = BUF_INIT;
    CHECK(buf_puts(&in, "?20 SELECT ?\n") == 0);
    for (int i = 0; i < 20; i++)
        CHECK(buf_printf(&in, "t%d\r\n", i) == 0);
    CHECK(buf_puts(&in, "SELECT 2\n") == 0);
    CHECK_STR(run(in.data, in.len), "!PARAMS;S[SELECT 2];");
    CHECK_STR(run_bytewise(in.data, in.len), "!PARAMS;S[SELECT 2];");
    CHECK_STR(first_error(in.data, in.len), "PARAMS too many parameters: 20, max 16");
    buf_free(&in);
}

static void test_bulk_toolong(void)
{
    struct buf in = BUF_INIT;
    CHECK(buf_puts(&in, "$1500 2\n") == 0);
    for (int i = 0; i < 1500; i++)
        CHECK(buf_putc(&in, i % 50 == 49 ? '\n' : 'x') == 0);
    CHECK(buf_puts(&in, "\r\ni1\ni2\n.ping\n") == 0);
    CHECK_STR(first_error(in.data, in.len), "TOOLONG bulk statement too long: 1500 bytes, max 1000");
    CHECK_STR(run(in.data, in.len), "!TOOLONG;C[ping];");
    CHECK_STR(run_bytewise(in.data, in.len), "!TOOLONG;C[ping];");

    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    CHECK(parse1(in.data, in.len, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == 8 && d.bytes == 1500 && d.to_eol && d.lines == 2);
    buf_free(&in);
    /* Exactly max_request is fine. */
    struct buf ok = BUF_INIT;
    CHECK(buf_puts(&ok, "$1000\n") == 0);
    for (int i = 0; i < 1000; i++)
        CHECK(buf_putc(&ok, 'y') == 0);
    CHECK(buf_puts(&ok, "\n") == 0);
    REQUIRE(parse1(ok.data, ok.len, &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(req.len == 1000 && consumed == ok.len);
    codec_request_free(&req);
    buf_free(&ok);
}

static void test_toolong_endless_line(void)
{
    char in[1100];
    memset(in, 'x', sizeof in);
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    /* Up to max_request + 1 bytes without '\n': could still end in "\r\n". */
    CHECK(parse1(in, 1001, &req, &consumed, &d, &err) == CODEC_NEED_MORE);
    CHECK(parse1(in, 1002, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK_STR(err.code, "TOOLONG");
    CHECK_STR(err.message, "line too long (max 1000 bytes)");
    CHECK(consumed == 1002 && d.to_eol && d.bytes == 0 && d.lines == 0);
    CHECK(parse1(in, sizeof in, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == sizeof in && d.to_eol);

    /* The session: a megabyte line never buffers more than ~max_request. */
    struct test_session s = {BUF_INIT, BUF_INIT, {0, 0, false}, false};
    size_t most = 0;
    for (int i = 0; i < 1000; i++) {
        session_feed(&s, in, sizeof in);
        most = s.in.len > most ? s.in.len : most;
    }
    session_feed(&s, LIT("xxx\r\nSELECT 2\n"));
    CHECK(most <= 1002);
    CHECK_STR(session_end(&s), "!TOOLONG;S[SELECT 2];");
}

static void test_toolong_complete_line(void)
{
    struct buf in = BUF_INIT;
    for (int i = 0; i < 5000; i++)
        CHECK(buf_putc(&in, 'x') == 0);
    CHECK(buf_puts(&in, "\n.ping\n") == 0);
    /* The whole long line is in the buffer: consumed through its '\n'. */
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    CHECK(parse1(in.data, in.len, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == 5001 && codec_discard_done(&d));
    CHECK_STR(run(in.data, in.len), "!TOOLONG;C[ping];");
    CHECK_STR(run_split(in.data, in.len, 1500), "!TOOLONG;C[ping];");
    buf_free(&in);
}

static void test_toolong_boundary(void)
{
    char line[1010];
    memset(line, 'a', sizeof line);
    struct buf in = BUF_INIT;
    /* 1000 bytes with "\n" and with "\r\n": fine; 1001: too long. */
    CHECK(buf_append(&in, line, 1000) == 0 && buf_puts(&in, "\n") == 0);
    CHECK(buf_append(&in, line, 1000) == 0 && buf_puts(&in, "\r\n") == 0);
    CHECK(buf_append(&in, line, 1001) == 0 && buf_puts(&in, "\n") == 0);
    CHECK(buf_append(&in, line, 1001) == 0 && buf_puts(&in, "\r\n") == 0);
    CHECK(buf_puts(&in, ".") == 0 && buf_append(&in, line, 999) == 0 && buf_puts(&in, "\n") == 0);
    CHECK(buf_puts(&in, ".") == 0 && buf_append(&in, line, 1000) == 0 && buf_puts(&in, "\n") == 0);
    char want[8192];
    snprintf(want, sizeof want, "S[%.1000s];S[%.1000s];!TOOLONG;!TOOLONG;C[%.999s];!TOOLONG;", line, line,
             line);
    CHECK_STR(run(in.data, in.len), want);
    CHECK_STR(run_bytewise(in.data, in.len), want);
    buf_free(&in);
}

static void test_toolong_param_line(void)
{
    struct buf in = BUF_INIT;
    CHECK(buf_puts(&in, "?3 SELECT ?\ni1\nt") == 0);
    for (int i = 0; i < 3000; i++)
        CHECK(buf_putc(&in, 'z') == 0);
    CHECK(buf_puts(&in, "\nbad\n.ping\n") == 0);
    CHECK_STR(first_error(in.data, in.len), "TOOLONG parameter 2: line too long (max 1000 bytes)");
    CHECK_STR(run(in.data, in.len), "!TOOLONG;C[ping];");
    CHECK_STR(run_bytewise(in.data, in.len), "!TOOLONG;C[ping];");
    for (size_t k = 0; k <= in.len; k += 7)
        CHECK_STR(run_split(in.data, in.len, k), "!TOOLONG;C[ping];");

    /* Complete: through the long line, then the last parameter line. */
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    CHECK(parse1(in.data, in.len, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == 15 + 3002 && !d.to_eol && d.bytes == 0 && d.lines == 1);
    /* Open (no '\n' yet): everything so far, then the rest of the line
     * and the last parameter line. */
    CHECK(parse1(in.data, 1500, &req, &consumed, &d, &err) == CODEC_ERROR);
    CHECK(consumed == 1500 && d.to_eol && d.lines == 1);
    buf_free(&in);
}

static void test_toolong_inline_header(void)
{
    struct buf in = BUF_INIT;
    CHECK(buf_puts(&in, "?2 SELECT ") == 0);
    for (int i = 0; i < 1200; i++)
        CHECK(buf_putc(&in, '1') == 0);
    CHECK(buf_puts(&in, "\ni1\ni2\n.ping\n") == 0);
    /* The parameter lines of a too long "?2 ..." go with it. */
    CHECK_STR(run(in.data, in.len), "!TOOLONG;C[ping];");
    CHECK_STR(run_bytewise(in.data, in.len), "!TOOLONG;C[ping];");
    CHECK_STR(first_error(in.data, in.len), "TOOLONG line too long (max 1000 bytes)");
    buf_free(&in);
}

static void test_discard_incremental(void)
{
    struct codec_discard d = {5, 2, true};
    static const char in[] = "abcdeXY\nl1\r\nl2\nnext\n";
    size_t n = sizeof in - 1, pos = 0;
    CHECK(!codec_discard_done(&d));
    while (!codec_discard_done(&d) && pos < n)
        pos += codec_discard(in + pos, 1, &d);
    CHECK(codec_discard_done(&d));
    CHECK(pos == n - 5);
    d = (struct codec_discard){5, 2, true};
    CHECK(codec_discard(in, n, &d) == n - 5 && codec_discard_done(&d));
    d = (struct codec_discard){3, 0, false};
    CHECK(codec_discard(in, 2, &d) == 2 && d.bytes == 1);
    CHECK(codec_discard(in, 0, &d) == 0 && d.bytes == 1);
    d = (struct codec_discard){0, 0, false};
    CHECK(codec_discard(in, n, &d) == 0);
}

static void test_limits_huge(void)
{
    struct codec_limits saved = test_lim;
    test_lim.max_request = SIZE_MAX;
    test_lim.max_params = SIZE_MAX;
    CHECK_STR(RUN_S("SELECT 1\n$3 1\nabc\nn\n"), "S[SELECT 1];S[abc] n;");
    CHECK_STR(RUN_S("xxxx"), "+4");
    CHECK_STR(RUN_S("$18446744073709551615\n"), "+22");
    CHECK_STR(RUN_S("$18446744073709551616\n.ping\n"), "!PROTO;C[ping];");
    test_lim = saved;
    test_lim.max_request = 0;
    CHECK_STR(RUN_S("\nx\n"), "E;!TOOLONG;");
    test_lim = saved;
}

/* max_total bounds a whole request, SQL and parameter lines together,
 * however it is split; its parameter lines are skipped after it. */
static void test_toolong_total(void)
{
    struct codec_limits saved = test_lim;
    const char *want = "S[SELECT ?, ?] t0123456789 t0123456789;!TOOLONG;!TOOLONG;!TOOLONG;C[ping];";
    struct buf in = BUF_INIT;

    test_lim.max_total = 40;
    /* 39 bytes: fine. */
    CHECK(buf_puts(&in, "?2 SELECT ?, ?\nt0123456789\nt0123456789\n") == 0);
    /* 41 and more: too long, at a parameter line or while one is open. */
    CHECK(buf_puts(&in, "?3 SELECT ?, ?, ?\nt0123456789\nt0123456789\nn\n") == 0);
    CHECK(buf_puts(&in, "?2 SELECT ?, ?\nt0123456789\nt0123456789012345678901234567890123456789\n") == 0);
    /* A bulk body that cannot fit with its header. */
    CHECK(buf_puts(&in, "$37 1\nSELECT 1 AS a, 2 AS b, 3 AS c, 4 AS d\nn\n.ping\n") == 0);
    CHECK_STR(run(in.data, in.len), want);
    CHECK_STR(run_bytewise(in.data, in.len), want);
    for (size_t k = 0; k <= in.len; k++)
        CHECK_STR(run_split(in.data, in.len, k), want);
    CHECK_STR(first_error(in.data + 39, in.len - 39),
              "TOOLONG request too long: more than 40 bytes with its parameters");
    buf_free(&in);
    test_lim = saved;
}

static void test_request_free_zeroes(void)
{
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(LIT("?2 x\ntab\nb00\n"), &req, &consumed, &d, &err) == CODEC_OK);
    codec_request_free(&req);
    CHECK(req.text == NULL && req.params == NULL && req.nparams == 0 && req.len == 0);
    codec_request_free(&req); /* harmless twice */
}

/* ---- Request encoding ------------------------------------------------ */

static void test_encode_request(void)
{
    struct buf out = BUF_INIT;
    struct value params[] = {
        {VALUE_NULL, 0, 0, NULL, 0},
        {VALUE_INT, INT64_MIN, 0, NULL, 0},
        {VALUE_REAL, 0, 0.1, NULL, 0},
        {VALUE_TEXT, 0, 0, (char *)"a\tb\\\n\r\0z", 8},
        {VALUE_BLOB, 0, 0, (char *)"\x00\xff", 2},
        {VALUE_TEXT, 0, 0, NULL, 0},
        {VALUE_BLOB, 0, 0, NULL, 0},
        {VALUE_REAL, 0, -INFINITY, NULL, 0},
    };
    CHECK(codec_encode_request(&out, LIT("SELECT ?\n"), params, 8) == 0);
    CHECK_STR(out.data, "$9 8\nSELECT ?\n\nn\ni-9223372036854775808\nr0.1\n"
                        "ta\\tb\\\\\\n\\r\\0z\nb00ff\nt\nb\nr-inf\n");
    CHECK_STR(run(out.data, out.len),
              "S[SELECT ?\\n] n i-9223372036854775808 r0.1 ta\\tb\\\\\\n\\r\\0z b\\x00ff t b\\x "
              "r-inf;");
    buf_reset(&out);
    CHECK(codec_encode_request(&out, LIT(""), NULL, 0) == 0);
    CHECK_STR(out.data, "$0 0\n\n");
    CHECK_STR(run(out.data, out.len), "S[];");
    buf_free(&out);
}

static void test_encode_request_roundtrip(void)
{
    /* Every byte in SQL and text, every real class: decode(encode(x)) == x. */
    char sql[256], text[256];
    for (int i = 0; i < 256; i++)
        sql[i] = text[i] = (char)i;
    struct value params[] = {
        {VALUE_TEXT, 0, 0, text, 256},
        {VALUE_BLOB, 0, 0, sql, 256},
        {VALUE_REAL, 0, -0.0, NULL, 0},
        {VALUE_REAL, 0, 5e-324, NULL, 0},
        {VALUE_REAL, 0, 1.7976931348623157e308, NULL, 0},
        {VALUE_REAL, 0, 1.0 / 3, NULL, 0},
        {VALUE_INT, INT64_MAX, 0, NULL, 0},
    };
    size_t np = sizeof params / sizeof params[0];
    struct buf out = BUF_INIT;
    CHECK(codec_encode_request(&out, sql, 256, params, np) == 0);
    struct request req;
    size_t consumed;
    struct codec_discard d;
    struct codec_error err;
    REQUIRE(parse1(out.data, out.len, &req, &consumed, &d, &err) == CODEC_OK);
    CHECK(consumed == out.len);
    CHECK(req.len == 256 && memcmp(req.text, sql, 256) == 0);
    CHECK(req.nparams == np);
    for (size_t i = 0; i < np && i < req.nparams; i++) {
        CHECK(req.params[i].type == params[i].type);
        if (params[i].type == VALUE_REAL)
            CHECK(memcmp(&req.params[i].r, &params[i].r, sizeof(double)) == 0);
        else if (params[i].type == VALUE_INT)
            CHECK(req.params[i].i == params[i].i);
        else
            CHECK(req.params[i].len == params[i].len &&
                  memcmp(req.params[i].p, params[i].p, params[i].len) == 0);
    }
    codec_request_free(&req);
    buf_free(&out);
}

static void test_encode_request_refuses_nan(void)
{
    struct buf out = BUF_INIT;
    CHECK(buf_puts(&out, "keep") == 0);
    struct value params[] = {
        {VALUE_INT, 1, 0, NULL, 0},
        {VALUE_REAL, 0, NAN, NULL, 0},
    };
    CHECK(codec_encode_request(&out, LIT("SELECT ?, ?"), params, 2) == -1);
    CHECK(out.len == 4);
    CHECK_STR(out.data, "keep");
    struct value bad_type = {(enum value_type)99, 0, 0, NULL, 0};
    CHECK(codec_encode_request(&out, LIT("SELECT ?"), &bad_type, 1) == -1);
    CHECK_STR(out.data, "keep");
    buf_free(&out);
}

/* ---- Fields ---------------------------------------------------------- */

/* A plain reference of codec_put_text, byte by byte. */
static void ref_put_text(struct buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc;
        switch (s[i]) {
        case '\\': rc = buf_puts(out, "\\\\"); break;
        case '\t': rc = buf_puts(out, "\\t"); break;
        case '\n': rc = buf_puts(out, "\\n"); break;
        case '\r': rc = buf_puts(out, "\\r"); break;
        case '\0': rc = buf_puts(out, "\\0"); break;
        default: rc = buf_putc(out, s[i]); break;
        }
        CHECK(rc == 0);
    }
}

static void test_put_text(void)
{
    struct buf out = BUF_INIT;
    CHECK(codec_put_text(&out, LIT("plain text")) == 0);
    CHECK_STR(out.data, "plain text");
    buf_reset(&out);
    CHECK(codec_put_text(&out, LIT("a\\b\tc\nd\re\0f")) == 0);
    CHECK_STR(out.data, "a\\\\b\\tc\\nd\\re\\0f");
    buf_reset(&out);
    CHECK(codec_put_text(&out, NULL, 0) == 0);
    CHECK(out.len == 0 && out.data != NULL && out.data[0] == '\0');
    CHECK(codec_put_text(&out, LIT("\\\\\\\\\\\\\\\\\\\\")) == 0); /* only escapes */
    CHECK(out.len == 20);
    buf_free(&out);
}

static void test_put_text_matches_reference(void)
{
    /* Random texts of every length up to 80 with sparse and dense
     * specials, at every alignment, against the plain reference. */
    static const char alphabet[] = "abc\\\t\n\r\0\xff \x80\x01\x0b\x0e\x0fxyz";
    const unsigned nalpha = sizeof alphabet - 1;
    unsigned seed = 12345;
    struct buf got = BUF_INIT, want = BUF_INIT;
    char text[100];
    int bad = 0;
    for (int round = 0; round < 3000; round++) {
        size_t n = (size_t)(round % 81), off = (size_t)(round % 8);
        int density = round % 3;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) & 0x7fff;
            text[off + i] = density == 0   ? (char)('a' + r % 26)
                            : density == 1 ? (r % 13 == 0 ? alphabet[r % nalpha] : 'q')
                                           : alphabet[r % nalpha];
        }
        buf_reset(&got);
        buf_reset(&want);
        CHECK(buf_puts(&got, "pre") == 0 && buf_puts(&want, "pre") == 0);
        CHECK(codec_put_text(&got, text + off, n) == 0);
        ref_put_text(&want, text + off, n);
        if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
            bad++;
        CHECK(got.data[got.len] == '\0');
    }
    CHECK(bad == 0);
    buf_free(&got);
    buf_free(&want);
}

static void test_put_blob_and_null(void)
{
    struct buf out = BUF_INIT;
    CHECK(codec_put_blob(&out, "\x00\x01\xab\xff", 4) == 0);
    CHECK(codec_put_null(&out) == 0);
    CHECK(codec_put_blob(&out, NULL, 0) == 0);
    CHECK_STR(out.data, "\\x0001abff\\N\\x");
    buf_free(&out);
}

/* Encode a field with put, decode it, and compare. */
static void check_field_roundtrip(enum value_type type, const char *p, size_t n)
{
    struct buf out = BUF_INIT, scratch = BUF_INIT;
    int rc = type == VALUE_NULL   ? codec_put_null(&out)
             : type == VALUE_TEXT ? codec_put_text(&out, p, n)
                                  : codec_put_blob(&out, p, n);
    CHECK(rc == 0);
    CHECK(memchr(out.data, '\t', out.len) == NULL && memchr(out.data, '\n', out.len) == NULL);
    struct value v;
    CHECK(codec_decode_field(out.data, out.len, &scratch, &v) == 0);
    CHECK(v.type == type);
    if (type != VALUE_NULL) {
        CHECK(v.len == n && (n == 0 || memcmp(v.p, p, n) == 0));
        CHECK(v.p != NULL && v.p[v.len] == '\0');
    }
    buf_free(&out);
    buf_free(&scratch);
}

static void test_field_roundtrips(void)
{
    check_field_roundtrip(VALUE_NULL, NULL, 0);
    check_field_roundtrip(VALUE_TEXT, "", 0);
    check_field_roundtrip(VALUE_TEXT, LIT("NULL"));
    check_field_roundtrip(VALUE_TEXT, LIT("\\N"));
    check_field_roundtrip(VALUE_TEXT, LIT("\\x00"));
    check_field_roundtrip(VALUE_TEXT, LIT("\t"));
    check_field_roundtrip(VALUE_TEXT, LIT("\n"));
    check_field_roundtrip(VALUE_TEXT, LIT("\r"));
    check_field_roundtrip(VALUE_TEXT, LIT("\0"));
    check_field_roundtrip(VALUE_TEXT, LIT("\\"));
    check_field_roundtrip(VALUE_TEXT, LIT("a\tb\nc\rd\0e\\f g"));
    check_field_roundtrip(VALUE_BLOB, "", 0);
    check_field_roundtrip(VALUE_BLOB, LIT("\0"));

    /* NULL, empty text, "NULL" and "\N" are four different encodings. */
    struct buf a = BUF_INIT;
    CHECK(codec_put_null(&a) == 0 && buf_putc(&a, '|') == 0);
    CHECK(codec_put_text(&a, "", 0) == 0 && buf_putc(&a, '|') == 0);
    CHECK(codec_put_text(&a, LIT("NULL")) == 0 && buf_putc(&a, '|') == 0);
    CHECK(codec_put_text(&a, LIT("\\N")) == 0);
    CHECK_STR(a.data, "\\N||NULL|\\\\N");
    buf_free(&a);
}

static void test_field_blob_all_bytes(void)
{
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)(255 - i);
    check_field_roundtrip(VALUE_BLOB, (const char *)all, sizeof all);
    check_field_roundtrip(VALUE_TEXT, (const char *)all, sizeof all);
    for (int i = 0; i < 256; i++) {
        char one = (char)i;
        check_field_roundtrip(VALUE_TEXT, &one, 1);
        check_field_roundtrip(VALUE_BLOB, &one, 1);
    }
}

static void test_decode_field_forms(void)
{
    struct buf scratch = BUF_INIT;
    struct value v;
    CHECK(codec_decode_field(LIT("\\N"), &scratch, &v) == 0 && v.type == VALUE_NULL);
    CHECK(codec_decode_field(LIT("\\\\N"), &scratch, &v) == 0 && v.type == VALUE_TEXT);
    CHECK(v.len == 2 && memcmp(v.p, "\\N", 3) == 0);
    CHECK(codec_decode_field(LIT("\\NN"), &scratch, &v) == -1);
    CHECK(codec_decode_field(LIT("\\x"), &scratch, &v) == 0 && v.type == VALUE_BLOB);
    CHECK(v.len == 0 && v.p != NULL);
    CHECK(codec_decode_field(LIT("\\xDEADbeef"), &scratch, &v) == 0 && v.type == VALUE_BLOB);
    CHECK(v.len == 4 && memcmp(v.p, "\xde\xad\xbe\xef", 4) == 0);
    CHECK(codec_decode_field(NULL, 0, &scratch, &v) == 0 && v.type == VALUE_TEXT);
    CHECK(v.len == 0 && v.p != NULL && v.p[0] == '\0');
    CHECK(codec_decode_field(LIT("42"), &scratch, &v) == 0 && v.type == VALUE_TEXT);
    CHECK_STR(v.p, "42");
    /* The scratch buffer is reset each time. */
    CHECK(codec_decode_field(LIT("x"), &scratch, &v) == 0 && scratch.len == 1);
    buf_free(&scratch);
}

static void test_decode_field_errors(void)
{
    static const char *bad[] = {"\\x0", "\\x0g", "\\xzz", "\\q", "ab\\", "\\", "a\\Nb", "\\b", "\\x 0"};
    struct buf scratch = BUF_INIT;
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        struct value v;
        CHECK(codec_decode_field(bad[t], strlen(bad[t]), &scratch, &v) == -1);
        CHECK(scratch.len == 0);
    }
    buf_free(&scratch);
}

static void test_put_int(void)
{
    struct buf out = BUF_INIT;
    int64_t vals[] = {0, 1, -1, 9, 10, -10, 1234567890123LL, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        CHECK(codec_put_int(&out, vals[i]) == 0 && buf_putc(&out, ' ') == 0);
    }
    CHECK_STR(out.data, "0 1 -1 9 10 -10 1234567890123 9223372036854775807 "
                        "-9223372036854775808 ");
    buf_free(&out);
}

static const char *real_str(double v)
{
    static char out[4][64];
    static int which;
    char *o = out[which++ % 4];
    struct buf b = BUF_INIT;
    if (codec_put_real(&b, v) < 0)
        snprintf(o, sizeof out[0], "(error)");
    else
        snprintf(o, sizeof out[0], "%s", b.data);
    buf_free(&b);
    return o;
}

static void test_put_real(void)
{
    CHECK_STR(real_str(1.0), "1.0");
    CHECK_STR(real_str(0.0), "0.0");
    CHECK_STR(real_str(-0.0), "-0.0");
    CHECK_STR(real_str(-3.0), "-3.0");
    CHECK_STR(real_str(0.1), "0.1");
    CHECK_STR(real_str(0.5), "0.5");
    CHECK_STR(real_str(3.25), "3.25");
    CHECK_STR(real_str(1.0 / 3), "0.3333333333333333");
    CHECK_STR(real_str(0.1 + 0.2), "0.30000000000000004");
    CHECK_STR(real_str(1e300), "1e+300");
    CHECK_STR(real_str(-1e300), "-1e+300");
    CHECK_STR(real_str(1.5e-7), "1.5e-07");
    CHECK_STR(real_str(5e-324), "4.94065645841247e-324");
    CHECK_STR(real_str(1.7976931348623157e308), "1.7976931348623157e+308");
    CHECK_STR(real_str(123456789012345680000.0), "1.2345678901234568e+20");
    CHECK_STR(real_str(999999999999999.0), "999999999999999.0");
    CHECK_STR(real_str(1e15), "1e+15");
    CHECK_STR(real_str(1e16), "1e+16");
    CHECK_STR(real_str(1234567890123456.0), "1234567890123456.0");
    CHECK_STR(real_str(9007199254740993.0), "9007199254740992.0"); /* 2^53 + 1 */
    CHECK_STR(real_str(4503599627370497.0), "4503599627370497.0"); /* 2^52 + 1 */
    CHECK_STR(real_str(INFINITY), "inf");
    CHECK_STR(real_str(-INFINITY), "-inf");
    CHECK_STR(real_str(NAN), "nan");
}

static void test_put_real_roundtrip(void)
{
    /* Random bit patterns: the text always reads back to the same bits and
     * always shows it is a real. */
    uint64_t x = 88172645463325252ULL;
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        memcpy(&v, &x, sizeof v);
        if (i % 4 == 0)
            v = (double)(int64_t)(x % 2000000000000000ULL) - 1e15;
        if (isnan(v))
            continue;
        const char *s = real_str(v);
        double back = strtod(s, NULL);
        if (memcmp(&back, &v, sizeof v) != 0 || strpbrk(s, ".ei") == NULL) {
            if (bad++ < 3)
                fprintf(stderr, "  %.17g -> %s\n", v, s);
        }
    }
    CHECK(bad == 0);
}

/* ---- Response lines -------------------------------------------------- */

static void test_reply_kind(void)
{
    const char *body;
    size_t n;
    CHECK(codec_reply_kind(LIT("*id\tINTEGER"), &body, &n) == REPLY_COLUMNS);
    CHECK(n == 10 && memcmp(body, "id\tINTEGER", n) == 0);
    CHECK(codec_reply_kind(LIT("=1\tgreen"), &body, &n) == REPLY_ROW);
    CHECK(n == 7 && memcmp(body, "1\tgreen", n) == 0);
    CHECK(codec_reply_kind(LIT("="), &body, &n) == REPLY_ROW && n == 0);
    CHECK(codec_reply_kind(LIT("+OK"), &body, &n) == REPLY_OK && n == 0);
    CHECK(codec_reply_kind(LIT("+OK rows=1"), &body, &n) == REPLY_OK);
    CHECK(n == 6 && memcmp(body, "rows=1", n) == 0);
    CHECK(codec_reply_kind(LIT("+OKAY"), &body, &n) == REPLY_BAD);
    CHECK(codec_reply_kind(LIT("-ERR SQL no such table: x"), &body, &n) == REPLY_ERR);
    CHECK(n == 20 && memcmp(body, "SQL no such table: x", n) == 0);
    CHECK(codec_reply_kind(LIT("-ERR"), &body, &n) == REPLY_BAD);
    CHECK(codec_reply_kind(LIT("-ERROR x"), &body, &n) == REPLY_BAD);
    CHECK(codec_reply_kind(LIT(""), &body, &n) == REPLY_BAD);
    CHECK(codec_reply_kind(LIT("hello"), &body, &n) == REPLY_BAD);
    CHECK(codec_reply_kind(LIT("+OK x"), NULL, NULL) == REPLY_OK);
}

static void test_fact_int(void)
{
    int64_t v = 0;
    CHECK(codec_fact_int(LIT("rows=2 last_id=5"), "rows", &v) && v == 2);
    CHECK(codec_fact_int(LIT("rows=2 last_id=5"), "last_id", &v) && v == 5);
    CHECK(codec_fact_int(LIT("changes=1 last_id=-9223372036854775808"), "last_id", &v));
    CHECK(v == INT64_MIN);
    CHECK(codec_fact_int(LIT("  changes=7  "), "changes", &v) && v == 7);
    CHECK(!codec_fact_int(LIT("rows=2"), "row", &v));
    CHECK(codec_fact_int(LIT("rows=2 row=3"), "row", &v) && v == 3);
    CHECK(!codec_fact_int(LIT("xrows=2"), "rows", &v));
    CHECK(!codec_fact_int(LIT("rows=abc"), "rows", &v));
    CHECK(!codec_fact_int(LIT("rows="), "rows", &v));
    CHECK(!codec_fact_int(LIT("bind=main"), "bind", &v));
    CHECK(!codec_fact_int(LIT(""), "rows", &v));
    /* n bounds the search, not a NUL. */
    CHECK(codec_fact_int("rows=12345", 6, "rows", &v) && v == 1);
}

static void test_put_error(void)
{
    struct buf out = BUF_INIT;
    CHECK(codec_put_error(&out, "SQL", "no such table: x") == 0);
    CHECK_STR(out.data, "-ERR SQL no such table: x\n");
    buf_reset(&out);
    CHECK(codec_put_error(&out, "SQL", "near \"x\":\nsyntax error\r\n") == 0);
    CHECK_STR(out.data, "-ERR SQL near \"x\": syntax error  \n");
    buf_reset(&out);
    CHECK(codec_put_error(&out, "PROTO", NULL) == 0 && codec_put_error(&out, "BUSY", "") == 0);
    CHECK_STR(out.data, "-ERR PROTO\n-ERR BUSY\n");

    /* Truncation, at a UTF-8 boundary. */
    char msg[1500];
    memset(msg, 'm', sizeof msg);
    msg[sizeof msg - 1] = '\0';
    buf_reset(&out);
    CHECK(codec_put_error(&out, "SQL", msg) == 0);
    CHECK(out.len == 5 + 3 + 1 + CODEC_ERROR_MESSAGE_MAX + 1);
    memcpy(msg + CODEC_ERROR_MESSAGE_MAX - 1, "\xc3\xa9", 2); /* é across the cut */
    buf_reset(&out);
    CHECK(codec_put_error(&out, "SQL", msg) == 0);
    CHECK(out.len == 5 + 3 + 1 + CODEC_ERROR_MESSAGE_MAX - 1 + 1);
    CHECK(out.data[out.len - 1] == '\n' && out.data[out.len - 2] == 'm');

    const char *body;
    size_t n;
    CHECK(codec_reply_kind(out.data, out.len - 1, &body, &n) == REPLY_ERR);
    buf_free(&out);
}

/* ---- buf ------------------------------------------------------------- */

static void test_buf(void)
{
    struct buf b = BUF_INIT;
    CHECK(buf_reserve(&b, 0) == 0 && b.data != NULL && b.data[0] == '\0');
    CHECK(buf_append(&b, "abc", 3) == 0 && buf_putc(&b, 'd') == 0 && buf_puts(&b, "ef") == 0);
    CHECK_STR(b.data, "abcdef");
    buf_consume(&b, 2);
    CHECK_STR(b.data, "cdef");
    CHECK(buf_printf(&b, "%d-%s", 42, "x") == 0);
    CHECK_STR(b.data, "cdef42-x");
    char big[500];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(buf_printf(&b, "[%s]", big) == 0);
    CHECK(b.len == 8 + 501 && b.data[b.len - 1] == ']' && b.data[b.len] == '\0');
    CHECK(buf_reserve(&b, SIZE_MAX) == -1);
    CHECK(buf_reserve(&b, SIZE_MAX - b.len) == -1);
    CHECK(b.len == 509);
    buf_consume(&b, b.len);
    CHECK(b.len == 0 && b.data[0] == '\0');
    for (int i = 0; i < 100000; i++)
        CHECK(buf_putc(&b, (char)('a' + i % 26)) == 0);
    CHECK(b.len == 100000 && b.cap > b.len);
    buf_reset(&b);
    CHECK(b.len == 0 && b.cap > 0);
    buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    buf_reset(&b);
    buf_consume(&b, 0);
}

int main(void)
{
    RUN(test_inline_sql);
    RUN(test_inline_sql_crlf);
    RUN(test_command);
    RUN(test_empty_lines);
    RUN(test_nul_in_line);
    RUN(test_bulk_basic);
    RUN(test_bulk_crlf);
    RUN(test_bulk_binary_body);
    RUN(test_bulk_with_params);
    RUN(test_bulk_bad_line_end);
    RUN(test_inline_params);
    RUN(test_pipelined);
    RUN(test_every_split_point);
    RUN(test_prefixes_need_more);
    RUN(test_param_null);
    RUN(test_param_int);
    RUN(test_param_int_out_of_range);
    RUN(test_param_int_bad);
    RUN(test_param_real);
    RUN(test_params_past_kept_lines);
    RUN(test_param_real_bad);
    RUN(test_param_text);
    RUN(test_param_text_bad_escape);
    RUN(test_param_blob);
    RUN(test_param_blob_bad);
    RUN(test_param_unknown_type);
    RUN(test_bad_param_consumes_whole_request);
    RUN(test_bad_bulk_headers);
    RUN(test_bulk_bad_nparams);
    RUN(test_bad_inline_headers);
    RUN(test_too_many_params_bulk);
    RUN(test_too_many_params_inline);
    RUN(test_bulk_toolong);
    RUN(test_toolong_endless_line);
    RUN(test_toolong_complete_line);
    RUN(test_toolong_boundary);
    RUN(test_toolong_param_line);
    RUN(test_toolong_inline_header);
    RUN(test_discard_incremental);
    RUN(test_limits_huge);
    RUN(test_toolong_total);
    RUN(test_request_free_zeroes);
    RUN(test_encode_request);
    RUN(test_encode_request_roundtrip);
    RUN(test_encode_request_refuses_nan);
    RUN(test_put_text);
    RUN(test_put_text_matches_reference);
    RUN(test_put_blob_and_null);
    RUN(test_field_roundtrips);
    RUN(test_field_blob_all_bytes);
    RUN(test_decode_field_forms);
    RUN(test_decode_field_errors);
    RUN(test_put_int);
    RUN(test_put_real);
    RUN(test_put_real_roundtrip);
    RUN(test_reply_kind);
    RUN(test_fact_int);
    RUN(test_put_error);
    RUN(test_buf);
    UNIT_MAIN_END;
}
