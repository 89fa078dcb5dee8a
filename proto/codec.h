/*
 * The sqlmux wire codec (proto/PROTOCOL.md), shared by the daemon and by
 * libsqlmux: one encoder and one decoder for requests, fields and
 * response lines. Nothing here does I/O or allocates except into the
 * caller's struct buf and struct request.
 */
#ifndef SQLMUX_PROTO_CODEC_H
#define SQLMUX_PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* ---- Values ---------------------------------------------------------- */

enum value_type {
    VALUE_NULL,
    VALUE_INT,
    VALUE_REAL,
    VALUE_TEXT,
    VALUE_BLOB,
};

/* A typed value: a request parameter. For TEXT and BLOB, `p[0..len)` holds
 * the bytes (TEXT also has a NUL at p[len]); who owns `p` is said where a
 * value is produced. */
struct value {
    enum value_type type;
    int64_t i;
    double r;
    char *p;
    size_t len;
};

/* ---- Requests (decoding: daemon side) -------------------------------- */

enum request_type {
    REQUEST_SQL,     /* one statement: text[0..len), params[0..nparams) */
    REQUEST_COMMAND, /* a dot-command line: text is the line without the
                        leading '.' and without the line end */
};

/* One decoded request. text, params and every TEXT/BLOB params[i].p are
 * owned by the request (the decoder makes them one allocation, mem):
 * release with codec_request_free(). text is
 * NUL-terminated (text[len] == 0). norm: the same statement with its
 * literal values as parameters (the daemon's sqlnorm.h), made once by
 * whoever routed it, or NULL; one allocation, owned by the request, and
 * dropped when the text changes (codec_request_set_text). */
struct request {
    enum request_type type;
    char *text;
    size_t len;
    struct value *params;
    size_t nparams;
    struct request *norm;
    uint64_t hash; /* the daemon's hash of text (request_hash()), 0: not made yet */
    /* The decoder's one allocation: text (until replaced), params and
     * their texts and blobs; NULL: each is its own allocation. */
    char *mem;
};

struct codec_limits {
    size_t max_request; /* longest line or bulk SQL, in bytes */
    size_t max_params;  /* most parameters in one request */
    size_t max_total;   /* most bytes of one whole request (header, SQL,
                           parameter lines, line ends); 0: no bound but
                           the ones above */
};

/* What the decoder tells the caller to skip after a refused request so the
 * stream stays in step with the client's framing. The session feeds later
 * input to codec_discard() until it returns true. */
struct codec_discard {
    size_t bytes; /* raw bytes still to skip */
    size_t lines; /* then whole lines (parameter lines) to skip */
    bool to_eol;  /* skip through the next '\n' first */
};

enum {
    CODEC_NEED_MORE = 0, /* not a whole request yet; nothing consumed */
    CODEC_OK = 1,        /* *req holds a request; *consumed bytes used */
    CODEC_EMPTY = 2,     /* an empty/blank line; *consumed bytes used, no response */
    CODEC_ERROR = -1,    /* refused: code/message set, *consumed bytes used,
                          *discard says what to skip after them */
};

struct codec_error {
    const char *code; /* static string: "PROTO", "TOOLONG", "PARAMS"
                         (more parameters than max_params), "NOMEM" */
    char message[160];
};

/*
 * Decode at most one request from buf[0..len).
 * Returns CODEC_NEED_MORE, CODEC_OK, CODEC_EMPTY or CODEC_ERROR (see above).
 * It never reads past len and never consumes a partial request, except that
 * a line longer than lim->max_request without a '\n' is an error at once
 * (consumed = len, discard->to_eol = true) so the caller never buffers more
 * than max_request + a little; and a request past lim->max_total bytes is
 * refused (TOOLONG) as soon as that many of its bytes are there, so the
 * caller never buffers more than max_total + a little for one request.
 * On CODEC_OK the caller owns *req. On CODEC_ERROR *req is untouched.
 */
__attribute__((warn_unused_result)) int
codec_parse_request(const char *buf, size_t len, const struct codec_limits *lim, struct request *req,
                    size_t *consumed, struct codec_discard *discard, struct codec_error *err);

/* Skip input per *d. Returns the number of bytes of buf[0..len) skipped;
 * when d is all zero/false afterwards, the stream is in step again. */
size_t codec_discard(const char *buf, size_t len, struct codec_discard *d);

/* True when nothing is left to discard. */
bool codec_discard_done(const struct codec_discard *d);

void codec_request_free(struct request *req);

/* Replace req's text with text[0..len) (taking its memory; text[len] ==
 * 0); its normalised form, made for the old text, goes. */
void codec_request_set_text(struct request *req, char *text, size_t len);

/* ---- Requests (encoding: client side) -------------------------------- */

/* Append a bulk request "$len n\n<sql>\n<param lines>" for sql[0..len) and
 * params[0..n). 0 or -1 (ENOMEM, or a REAL that is NaN). */
__attribute__((warn_unused_result)) int codec_encode_request(struct buf *out, const char *sql, size_t len,
                                                             const struct value *params, size_t n);

/* ---- Fields (both sides) --------------------------------------------- */

/* Append text in COPY-text form (\\ \t \n \r \0 escaped). 0 or -1. */
__attribute__((warn_unused_result)) int codec_put_text(struct buf *out, const char *s, size_t n);
/* Append a blob as \x and lowercase hex. 0 or -1. */
__attribute__((warn_unused_result)) int codec_put_blob(struct buf *out, const void *p, size_t n);
/* Append \N. */
__attribute__((warn_unused_result)) int codec_put_null(struct buf *out);
/* Append a decimal integer. */
__attribute__((warn_unused_result)) int codec_put_int(struct buf *out, int64_t v);
/* Append a double: shortest form that strtod reads back to the same value,
 * with ".0" added when it would otherwise look like an integer; inf/-inf. */
__attribute__((warn_unused_result)) int codec_put_real(struct buf *out, double v);

/* Decode one field f[0..n) (no tab, no newline in it) into *v:
 * "\N" → VALUE_NULL; "\x…" → VALUE_BLOB (hex decoded); anything else →
 * VALUE_TEXT (unescaped). The bytes go to `scratch`, which is reset first;
 * v->p points into scratch->data. 0, or -1 on a bad escape/hex/ENOMEM. */
__attribute__((warn_unused_result)) int codec_decode_field(const char *f, size_t n, struct buf *scratch,
                                                           struct value *v);

/* ---- URL parts (both sides) ------------------------------------------ */

enum {
    CODEC_PCT_BAD = -1,     /* a '%' not followed by two hex digits, or %00 */
    CODEC_PCT_TOOLONG = -2, /* more than cap bytes once decoded */
};

/* Percent-decode s[0..n) (a URL's user name, password, path or query
 * value) into dst[0..cap], NUL-terminated; *out_len gets the decoded
 * length. %00 is refused: neither libpq nor a C string can hold it. 0,
 * CODEC_PCT_BAD or CODEC_PCT_TOOLONG, whichever comes first in s; dst is
 * then unspecified. dst needs cap + 1 bytes; cap = n always suffices. */
__attribute__((warn_unused_result)) int codec_pct_decode(const char *s, size_t n, char *dst, size_t cap,
                                                         size_t *out_len);

/* ---- Response lines (client side) ------------------------------------ */

enum reply_kind {
    REPLY_COLUMNS, /* '*' line */
    REPLY_ROW,     /* '=' line */
    REPLY_OK,      /* "+OK ..." */
    REPLY_ERR,     /* "-ERR CODE message" */
    REPLY_BAD,     /* not a protocol line */
};

/* Classify one response line (without its '\n'). For COLUMNS and ROW,
 * *body, *body_len is the tab-separated payload after the marker; for OK the
 * facts after "+OK" (leading space stripped); for ERR the text after
 * "-ERR ". */
enum reply_kind codec_reply_kind(const char *line, size_t n, const char **body, size_t *body_len);

/* Find the value of fact `key` in an OK body ("rows=2 last_id=5").
 * Returns true and sets *v when present and an integer. */
bool codec_fact_int(const char *facts, size_t n, const char *key, int64_t *v);

/* ---- Response lines (daemon side) ------------------------------------ */

/* Longest message codec_put_error() writes, in bytes. */
#define CODEC_ERROR_MESSAGE_MAX 1000

/* Append the status line "-ERR CODE message\n" (just "-ERR CODE\n" when
 * message is NULL or empty). Every '\n' or '\r' of message becomes a space
 * and a message longer than CODEC_ERROR_MESSAGE_MAX bytes is cut there (at
 * a UTF-8 character boundary), so the reply is always one line. code is an
 * upper-case word from PROTOCOL.md. 0 or -1 (ENOMEM; out is unchanged). */
__attribute__((warn_unused_result)) int codec_put_error(struct buf *out, const char *code,
                                                        const char *message);

/* The reply lines of a statement, the only place they are formatted:
 * a '*' header line of name/type pairs, '=' row lines, then one status
 * line ("+OK rows=N", "+OK changes=N [last_id=ID]", "+OK facts" or
 * "-ERR CODE message" above).
 *
 * A header or row line is built field by field into a struct codec_row:
 *
 *     struct codec_row r;
 *     codec_row_begin(&r, out);
 *     codec_field_int(&r, 42);
 *     codec_field_str(&r, name);
 *     if (codec_row_end(&r) != 0) ...   (out is as before the begin)
 *
 * The field calls put the '\t' between fields and remember a failed
 * allocation; codec_row_end() adds the '\n' and reports it, cutting out
 * back to where the line began, so a failed line never leaves half a line.
 * Nothing else may be appended to out between begin and end. */
struct codec_row {
    struct buf *out;
    size_t mark; /* out->len at the begin */
    size_t nfields;
    int rc; /* 0, or -1 once an append failed */
};

/* Start a '*' header line (fields: name, type, name, type, ...). */
void codec_header_begin(struct codec_row *r, struct buf *out);
/* Start a '=' row line. */
void codec_row_begin(struct codec_row *r, struct buf *out);
/* Append one field: text s[0..n) (escaped). */
void codec_field_text(struct codec_row *r, const char *s, size_t n);
/* Append one field: the NUL-terminated text s, or \N when s is NULL. */
void codec_field_str(struct codec_row *r, const char *s);
void codec_field_null(struct codec_row *r);
void codec_field_int(struct codec_row *r, int64_t v);
void codec_field_real(struct codec_row *r, double v);
/* Append one field: a blob p[0..n), as \x and hex. */
void codec_field_blob(struct codec_row *r, const void *p, size_t n);
/* Append one field that is already in its wire form s[0..n) (e.g. a
 * PostgreSQL bytea's "\x..." hex text); the caller vouches that it holds
 * no tab, newline or stray backslash escape. */
void codec_field_raw(struct codec_row *r, const char *s, size_t n);
/* Finish the line with '\n'. 0, or -1 when an append failed (ENOMEM):
 * then out is cut back to its length at the begin. */
__attribute__((warn_unused_result)) int codec_row_end(struct codec_row *r);

/* Append "+OK rows=N\n", the status line after a result's rows. 0 or -1. */
__attribute__((warn_unused_result)) int codec_put_ok_rows(struct buf *out, uint64_t rows);
/* Append "+OK changes=N\n", or "+OK changes=N last_id=ID\n" when last_id
 * is not NULL: the status line of a statement without rows. 0 or -1. */
__attribute__((warn_unused_result)) int codec_put_ok_changes(struct buf *out, int64_t changes,
                                                             const int64_t *last_id);
/* Append "+OK\n", or "+OK facts\n" when facts is neither NULL nor empty
 * (facts: "key=value" words separated by spaces, no line end). 0 or -1;
 * on -1 out is as before. */
__attribute__((warn_unused_result)) int codec_put_ok(struct buf *out, const char *facts);
/* Add the fact " name=value" to the +OK status line that ends out (the
 * answer of one statement). 1 when added, 0 when out does not end with a
 * +OK line (an -ERR answer is left as it is), -1 on ENOMEM (out unchanged). */
__attribute__((warn_unused_result)) int codec_ok_add_fact(struct buf *out, const char *name, uint64_t value);

/* ---- Facts as text (client side; added for libsqlmux) ---------------- */

/* Find fact `key` in an OK body ("rows=2 bind=second_db"). Returns true and
 * sets *val, *vlen to its value (pointing into facts, not NUL-terminated)
 * when present; false otherwise. codec_fact_int() reads integer facts. */
bool codec_fact_find(const char *facts, size_t n, const char *key, const char **val, size_t *vlen);

#endif
