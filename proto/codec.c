/*
 * The sqlmux wire codec: the one place that knows the byte-level shape of
 * the protocol of proto/PROTOCOL.md. The daemon decodes requests with it
 * and writes fields and error lines with it; libsqlmux encodes requests
 * and decodes fields and status lines with it.
 *
 * The request decoder works on the caller's receive buffer and never
 * consumes part of a request: it first frames a whole request (header,
 * bulk body, parameter lines), answering CODEC_NEED_MORE until every byte
 * is there, and only then decodes and allocates. After a refused request
 * it says how many bytes consumed belong to it and what to skip next
 * (struct codec_discard) so that the client's later requests still parse.
 * Every line is bounded by max_request and a whole request by max_total,
 * so a session never holds more than max_total (+ a line end) bytes for
 * one request, however many parameter lines it announces.
 *
 * Reals are written and read in the C locale form; the daemon and the
 * client library never call setlocale() with LC_NUMERIC.
 */
#include "codec.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Shared helpers -------------------------------------------------- */

static const char codec_hex[16] = "0123456789abcdef";

/* The escape letter of each byte COPY-text escapes, 0 for the others. */
static const char codec_escape_of[256] = {
    ['\0'] = '0', ['\t'] = 't', ['\n'] = 'n', ['\r'] = 'r', ['\\'] = '\\',
};

/* Record an error in *err and return CODEC_ERROR. */
static int codec_fail(struct codec_error *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int codec_fail(struct codec_error *err, const char *code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return CODEC_ERROR;
}

static int codec_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int codec_pct_decode(const char *s, size_t n, char *dst, size_t cap, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            int hi = i + 2 < n ? codec_hex_value((unsigned char)s[i + 1]) : -1;
            int lo = hi >= 0 ? codec_hex_value((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return CODEC_PCT_BAD;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o == cap)
            return CODEC_PCT_TOOLONG;
        dst[o++] = ch;
    }
    dst[o] = '\0';
    *out_len = o;
    return 0;
}

enum {
    CODEC_HEX_ODD = -1,
    CODEC_HEX_BAD = -2,
};

/* Decode the hex digits s[0..n) into dst (room for n / 2 bytes). Both
 * cases are accepted. 0, CODEC_HEX_ODD or CODEC_HEX_BAD. */
static int codec_hex_decode(const char *s, size_t n, unsigned char *dst)
{
    if (n % 2 != 0)
        return CODEC_HEX_ODD;
    for (size_t i = 0; i < n; i += 2) {
        int hi = codec_hex_value((unsigned char)s[i]);
        int lo = codec_hex_value((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return CODEC_HEX_BAD;
        dst[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* Write the lowercase hex of p[0..n) at dst (2 * n bytes). */
static void codec_hex_encode(const unsigned char *p, size_t n, char *dst)
{
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = codec_hex[p[i] >> 4];
        dst[2 * i + 1] = codec_hex[p[i] & 15];
    }
}

/* Undo COPY-text escaping of s[0..n) into dst, which has room for n + 1
 * bytes; dst is NUL-terminated and *out_len set. Returns 0, or -1 on an
 * unknown escape or a lone trailing backslash. */
static int codec_unescape(const char *s, size_t n, char *dst, size_t *out_len)
{
    size_t i = 0, o = 0;
    while (i < n) {
        const char *bs = memchr(s + i, '\\', n - i);
        size_t run = bs != NULL ? (size_t)(bs - (s + i)) : n - i;
        memcpy(dst + o, s + i, run);
        o += run;
        i += run;
        if (i == n)
            break;
        if (i + 1 == n)
            return -1;
        char c;
        switch (s[i + 1]) {
        case '\\': c = '\\'; break;
        case 't': c = '\t'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case '0': c = '\0'; break;
        default: return -1;
        }
        dst[o++] = c;
        i += 2;
    }
    dst[o] = '\0';
    *out_len = o;
    return 0;
}

enum {
    CODEC_INT_BAD = -1,
    CODEC_INT_RANGE = -2,
};

/* Parse s[0..n) as a whole decimal int64: an optional sign and at least
 * one digit, nothing else. 0, CODEC_INT_BAD or CODEC_INT_RANGE. */
static int codec_parse_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+')) {
        neg = s[i] == '-';
        i++;
    }
    if (i == n)
        return CODEC_INT_BAD;
    /* u * 10 + d <= limit, checked without a division per digit. */
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    const uint64_t top = limit / 10, last = limit % 10;
    uint64_t u = 0;
    bool range = false;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - (unsigned)'0';
        if (d > 9)
            return CODEC_INT_BAD;
        if (u > top || (u == top && d > last))
            range = true; /* keep scanning: a later non-digit is BAD */
        else
            u = u * 10 + d;
    }
    if (range)
        return CODEC_INT_RANGE;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 0;
}

/* Format v in decimal ending just before `end`; returns the first byte. */
static char *codec_format_int(char *end, int64_t v)
{
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char *p = end;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    return p;
}

/* Parse a decimal count s[*pos..): at least one digit, no sign, fits a
 * size_t. Advances *pos past the digits. */
static bool codec_parse_count(const char *s, size_t n, size_t *pos, size_t *out)
{
    size_t i = *pos, v = 0;
    if (i >= n || s[i] < '0' || s[i] > '9')
        return false;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        size_t d = (size_t)(s[i] - '0');
        if (v > (SIZE_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *pos = i;
    *out = v;
    return true;
}

/* ---- Request framing ------------------------------------------------- */

enum {
    CODEC_LINE_FOUND,
    CODEC_LINE_NEED_MORE,
    CODEC_LINE_OPEN, /* no '\n' yet, and already too long */
};

/* A line of the input: content buf[start..start+clen) without its line
 * end ("\n" or "\r\n"); the next line starts at `next`. */
struct codec_line {
    size_t start;
    size_t clen;
    size_t next;
};

/* Find the line that starts at buf[pos] (pos <= len). A line whose '\n'
 * is not in buf[pos..len) is OPEN once max + 2 bytes of it are there:
 * its content cannot fit max bytes any more. */
static int codec_line_find(const char *buf, size_t pos, size_t len, size_t max, struct codec_line *l)
{
    const char *nl = memchr(buf + pos, '\n', len - pos);
    if (nl == NULL) {
        size_t window = max > SIZE_MAX - 2 ? SIZE_MAX : max + 2;
        return len - pos >= window ? CODEC_LINE_OPEN : CODEC_LINE_NEED_MORE;
    }
    size_t end = (size_t)(nl - buf);
    l->start = pos;
    l->clen = end - pos;
    if (l->clen > 0 && buf[end - 1] == '\r')
        l->clen--;
    l->next = end + 1;
    return CODEC_LINE_FOUND;
}

static bool codec_line_is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return false;
    return true;
}

/* The number of parameter lines that follow the too long line s[0..n)
 * when it is a "?N SQL" header, else 0. Only the first max + 1 bytes are
 * looked at: that much is there whether or not the '\n' has come, so the
 * answer does not depend on how the input was split. */
static size_t codec_inline_header_lines(const char *s, size_t n, size_t max)
{
    size_t pos = 1, count;
    if (max < SIZE_MAX && n > max + 1)
        n = max + 1;
    if (n == 0 || s[0] != '?' || !codec_parse_count(s, n, &pos, &count))
        return 0;
    return pos < n && s[pos] == ' ' ? count : 0;
}

/* Copy s[0..n) into a new NUL-terminated allocation, or NULL. */
static char *codec_strndup(const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    if (n > 0)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Parse s[0..n) as a double the way strtod reads it, all of it, NaN and
 * overflow refused. Returns 0 or an error message fragment. */
static const char *codec_parse_real(const char *s, size_t n, double *out)
{
    char small[64];
    char *tmp = small;
    /* strtod would skip leading white space; the protocol does not. */
    if (n == 0 || s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r'))
        return "bad real";
    if (n >= sizeof small) {
        tmp = codec_strndup(s, n);
        if (tmp == NULL)
            return NULL;
    } else {
        memcpy(tmp, s, n);
        tmp[n] = '\0';
    }
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    const char *problem = "";
    if (end != tmp + n)
        problem = "bad real";
    else if (isnan(d))
        problem = "nan is not allowed";
    else if (errno == ERANGE && isinf(d))
        problem = "real out of range";
    if (tmp != small)
        free(tmp);
    *out = d;
    return problem;
}

/* Decode parameter line s[0..n) (number `index`, from 1) into *v, which
 * then owns its TEXT/BLOB bytes. CODEC_OK or CODEC_ERROR. */
/* Decode parameter line s[0..n) into v; a text or blob goes to *room
 * (codec_param_room() bytes were set aside for it), which moves on. */
static int codec_param_decode(const char *s, size_t n, size_t index, struct value *v, char **room,
                              struct codec_error *err)
{
    memset(v, 0, sizeof *v);
    if (n == 0)
        return codec_fail(err, "PROTO", "parameter %zu: empty line", index);
    const char *arg = s + 1;
    size_t alen = n - 1;
    switch (s[0]) {
    case 'n':
        if (alen != 0)
            return codec_fail(err, "PROTO", "parameter %zu: junk after n", index);
        v->type = VALUE_NULL;
        return CODEC_OK;
    case 'i':
        switch (codec_parse_int64(arg, alen, &v->i)) {
        case 0: v->type = VALUE_INT; return CODEC_OK;
        case CODEC_INT_RANGE: return codec_fail(err, "PROTO", "parameter %zu: integer out of range", index);
        default: return codec_fail(err, "PROTO", "parameter %zu: bad integer", index);
        }
    case 'r': {
        const char *problem = codec_parse_real(arg, alen, &v->r);
        if (problem == NULL)
            return codec_fail(err, "NOMEM", "out of memory");
        if (*problem != '\0')
            return codec_fail(err, "PROTO", "parameter %zu: %s", index, problem);
        v->type = VALUE_REAL;
        return CODEC_OK;
    }
    case 't': {
        char *p = *room;
        if (codec_unescape(arg, alen, p, &v->len) < 0)
            return codec_fail(err, "PROTO", "parameter %zu: bad escape", index);
        v->type = VALUE_TEXT;
        v->p = p;
        *room += v->len + 1;
        return CODEC_OK;
    }
    case 'b': {
        if (alen % 2 != 0)
            return codec_fail(err, "PROTO", "parameter %zu: odd number of hex digits", index);
        /* Never NULL, even when empty: a NULL blob pointer binds SQL NULL. */
        char *p = *room;
        if (codec_hex_decode(arg, alen, (unsigned char *)p) < 0)
            return codec_fail(err, "PROTO", "parameter %zu: bad hex digit", index);
        p[alen / 2] = '\0';
        v->type = VALUE_BLOB;
        v->p = p;
        v->len = alen / 2;
        *room += alen / 2 + 1;
        return CODEC_OK;
    }
    default: {
        unsigned char c = (unsigned char)s[0];
        if (c > ' ' && c < 0x7f)
            return codec_fail(err, "PROTO", "parameter %zu: unknown type '%c'", index, c);
        return codec_fail(err, "PROTO", "parameter %zu: unknown type 0x%02x", index, c);
    }
    }
}

static void codec_values_free(struct value *params, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(params[i].p);
    free(params);
}

/* The bytes a text or blob parameter line s[0..n) decodes into, at most,
 * with its NUL. */
static size_t codec_param_room(const char *s, size_t n)
{
    if (n > 0 && s[0] == 't')
        return n;
    if (n > 0 && s[0] == 'b')
        return (n - 1) / 2 + 1;
    return 0;
}

/* How many parameter lines' places framing keeps for decoding; past
 * them, decoding finds each line again. */
#define CODEC_LINES_KEPT 8

/* The part of a request after its SQL: nparams parameter lines from
 * buf[pos]. Frames them all first (NEED_MORE until every line is there),
 * then builds *req from sql[0..sql_len) and the decoded values. A too long
 * parameter line is refused as soon as it is seen; any other error is
 * found after framing and consumes the whole request. */
static int codec_finish_request(const char *buf, size_t len, const struct codec_limits *lim,
                                enum request_type type, const char *sql, size_t sql_len, size_t nparams,
                                size_t pos, struct request *req, size_t *consumed,
                                struct codec_discard *discard, struct codec_error *err)
{
    const size_t first = pos;
    const size_t total = lim->max_total ? lim->max_total : SIZE_MAX;
    size_t room = 0;
    struct codec_line l;
    /* The first lines' places, kept from framing for decoding. */
    struct codec_line seen[CODEC_LINES_KEPT];
    for (size_t i = 0; i < nparams; i++) {
        int found = codec_line_find(buf, pos, len, lim->max_request, &l);
        if ((found == CODEC_LINE_NEED_MORE && len > total) || (found == CODEC_LINE_FOUND && l.next > total)) {
            /* buf[0..len) holds this request only while it is incomplete,
             * so either way the whole request is longer than total. */
            *consumed = found == CODEC_LINE_FOUND ? l.next : len;
            discard->to_eol = found != CODEC_LINE_FOUND;
            discard->lines = nparams - i - 1;
            return codec_fail(err, "TOOLONG", "request too long: more than %zu bytes with its parameters",
                              total);
        }
        if (found == CODEC_LINE_NEED_MORE)
            return CODEC_NEED_MORE;
        if (found == CODEC_LINE_OPEN || l.clen > lim->max_request) {
            /* Refused at once, whether or not its '\n' is here yet, so
             * the answer does not depend on how the input was split. */
            *consumed = found == CODEC_LINE_OPEN ? len : l.next;
            discard->to_eol = found == CODEC_LINE_OPEN;
            discard->lines = nparams - i - 1;
            return codec_fail(err, "TOOLONG", "parameter %zu: line too long (max %zu bytes)", i + 1,
                              lim->max_request);
        }
        room += codec_param_room(buf + l.start, l.clen);
        if (i < CODEC_LINES_KEPT)
            seen[i] = l;
        pos = l.next;
    }
    *consumed = pos;

    /* One allocation: the text, then the parameters and their texts and
     * blobs (req->mem). */
    size_t at = (sql_len + 1 + _Alignof(struct value) - 1) / _Alignof(struct value) * _Alignof(struct value);
    char *mem = malloc(at + nparams * sizeof(struct value) + room);
    if (mem == NULL)
        return codec_fail(err, "NOMEM", "out of memory");
    memcpy(mem, sql, sql_len);
    mem[sql_len] = '\0';
    struct value *params = nparams > 0 ? (struct value *)(void *)(mem + at) : NULL;
    char *next = mem + at + nparams * sizeof(struct value);
    pos = first;
    for (size_t i = 0; i < nparams; i++) {
        if (i < CODEC_LINES_KEPT)
            l = seen[i];
        else
            (void)codec_line_find(buf, pos, len, lim->max_request, &l); /* framed above */
        if (codec_param_decode(buf + l.start, l.clen, i + 1, &params[i], &next, err) != CODEC_OK) {
            free(mem);
            return CODEC_ERROR;
        }
        pos = l.next;
    }
    req->type = type;
    req->text = mem;
    req->len = sql_len;
    req->params = params;
    req->nparams = nparams;
    req->norm = NULL;
    req->hash = 0;
    req->mem = mem;
    return CODEC_OK;
}

/* A "$<length>[ <nparams>]" header in line l. */
static int codec_parse_bulk(const char *buf, size_t len, const struct codec_limits *lim,
                            const struct codec_line *l, struct request *req, size_t *consumed,
                            struct codec_discard *discard, struct codec_error *err)
{
    const char *c = buf + l->start;
    size_t n = l->clen, pos = 1, body, nparams = 0;

    *consumed = l->next;
    if (!codec_parse_count(c, n, &pos, &body) || (pos < n && c[pos] != ' '))
        return codec_fail(err, "PROTO", "bad bulk header: expected $<length>[ <nparams>]");
    if (pos < n) {
        pos++;
        if (!codec_parse_count(c, n, &pos, &nparams) || pos != n) {
            /* The length is good: skip the body the client will send. */
            discard->bytes = body;
            discard->to_eol = true;
            return codec_fail(err, "PROTO", "bad bulk header: bad parameter count");
        }
    }
    if (body > lim->max_request || nparams > lim->max_params ||
        (lim->max_total && (l->next >= lim->max_total || body >= lim->max_total - l->next))) {
        discard->bytes = body;
        discard->to_eol = true;
        discard->lines = nparams;
        if (body > lim->max_request)
            return codec_fail(err, "TOOLONG", "bulk statement too long: %zu bytes, max %zu", body,
                              lim->max_request);
        if (nparams <= lim->max_params)
            return codec_fail(err, "TOOLONG", "request too long: more than %zu bytes with its parameters",
                              lim->max_total);
        return codec_fail(err, "PARAMS", "too many parameters: %zu, max %zu", nparams, lim->max_params);
    }

    size_t start = l->next;
    *consumed = 0;
    if (len - start <= body)
        return CODEC_NEED_MORE; /* the body and at least one more byte */
    size_t after = start + body;
    size_t next;
    if (buf[after] == '\n') {
        next = after + 1;
    } else if (buf[after] == '\r' && after + 1 >= len) {
        return CODEC_NEED_MORE;
    } else if (buf[after] == '\r' && buf[after + 1] == '\n') {
        next = after + 2;
    } else {
        *consumed = after;
        discard->to_eol = true;
        discard->lines = nparams;
        return codec_fail(err, "PROTO", "bulk statement not followed by a line end");
    }
    return codec_finish_request(buf, len, lim, REQUEST_SQL, buf + start, body, nparams, next, req, consumed,
                                discard, err);
}

/* A "?<nparams> <SQL>" header in line l. */
static int codec_parse_inline_params(const char *buf, size_t len, const struct codec_limits *lim,
                                     const struct codec_line *l, struct request *req, size_t *consumed,
                                     struct codec_discard *discard, struct codec_error *err)
{
    const char *c = buf + l->start;
    size_t n = l->clen, pos = 1, nparams;

    *consumed = l->next;
    if (!codec_parse_count(c, n, &pos, &nparams) || (pos < n && c[pos] != ' '))
        return codec_fail(err, "PROTO", "bad parameter header: expected ?<nparams> <sql>");
    if (pos + 1 >= n)
        return codec_fail(err, "PROTO", "missing sql after ?%zu", nparams);
    discard->lines = nparams;
    if (nparams > lim->max_params)
        return codec_fail(err, "PARAMS", "too many parameters: %zu, max %zu", nparams, lim->max_params);
    const char *sql = c + pos + 1;
    size_t sql_len = n - pos - 1;
    if (memchr(sql, '\0', sql_len) != NULL)
        return codec_fail(err, "PROTO", "nul byte in line");
    discard->lines = 0;
    *consumed = 0;
    return codec_finish_request(buf, len, lim, REQUEST_SQL, sql, sql_len, nparams, l->next, req, consumed,
                                discard, err);
}

int codec_parse_request(const char *buf, size_t len, const struct codec_limits *lim, struct request *req,
                        size_t *consumed, struct codec_discard *discard, struct codec_error *err)
{
    struct codec_line l;

    *consumed = 0;
    memset(discard, 0, sizeof *discard);
    err->code = NULL;
    err->message[0] = '\0';
    if (len == 0)
        return CODEC_NEED_MORE;

    switch (codec_line_find(buf, 0, len, lim->max_request, &l)) {
    case CODEC_LINE_NEED_MORE: return CODEC_NEED_MORE;
    case CODEC_LINE_OPEN:
        *consumed = len;
        discard->to_eol = true;
        discard->lines = codec_inline_header_lines(buf, len, lim->max_request);
        return codec_fail(err, "TOOLONG", "line too long (max %zu bytes)", lim->max_request);
    }
    if (l.clen > lim->max_request) {
        *consumed = l.next;
        discard->lines = codec_inline_header_lines(buf, l.clen, lim->max_request);
        return codec_fail(err, "TOOLONG", "line too long (max %zu bytes)", lim->max_request);
    }
    if (codec_line_is_blank(buf, l.clen)) {
        *consumed = l.next;
        return CODEC_EMPTY;
    }

    int result;
    switch (buf[0]) {
    case '$': result = codec_parse_bulk(buf, len, lim, &l, req, consumed, discard, err); break;
    case '?': result = codec_parse_inline_params(buf, len, lim, &l, req, consumed, discard, err); break;
    default:
        *consumed = l.next;
        if (memchr(buf, '\0', l.clen) != NULL)
            return codec_fail(err, "PROTO", "nul byte in line");
        if (buf[0] == '.')
            result = codec_finish_request(buf, len, lim, REQUEST_COMMAND, buf + 1, l.clen - 1, 0, l.next, req,
                                          consumed, discard, err);
        else
            result = codec_finish_request(buf, len, lim, REQUEST_SQL, buf, l.clen, 0, l.next, req, consumed,
                                          discard, err);
        break;
    }
    if (result == CODEC_NEED_MORE) {
        *consumed = 0;
        memset(discard, 0, sizeof *discard);
    }
    return result;
}

size_t codec_discard(const char *buf, size_t len, struct codec_discard *d)
{
    size_t used = 0;
    if (len == 0)
        return 0;
    if (d->bytes > 0) {
        used = d->bytes < len ? d->bytes : len;
        d->bytes -= used;
        if (d->bytes > 0)
            return used;
    }
    while (d->to_eol || d->lines > 0) {
        const char *nl = memchr(buf + used, '\n', len - used);
        if (nl == NULL)
            return len;
        used = (size_t)(nl - buf) + 1;
        if (d->to_eol)
            d->to_eol = false;
        else
            d->lines--;
    }
    return used;
}

bool codec_discard_done(const struct codec_discard *d)
{
    return d->bytes == 0 && d->lines == 0 && !d->to_eol;
}

void codec_request_free(struct request *req)
{
    if (req->text != req->mem)
        free(req->text);
    if (req->mem != NULL)
        free(req->mem);
    else
        codec_values_free(req->params, req->nparams);
    free(req->norm);
    memset(req, 0, sizeof *req);
}

void codec_request_set_text(struct request *req, char *text, size_t len)
{
    if (req->text != req->mem)
        free(req->text);
    req->text = text;
    req->len = len;
    req->hash = 0;
    free(req->norm);
    req->norm = NULL;
}

/* ---- Fields ---------------------------------------------------------- */

/* True when one of the 8 bytes of w may need escaping: a byte below 0x0e
 * (which covers NUL, tab, newline and CR, and a few other control bytes
 * that the byte loop then passes over) or a backslash. Both tests are the
 * exact "some byte is less than k" word trick: no false negatives. */
static inline bool codec_word_may_need_escape(uint64_t w)
{
    const uint64_t ones = UINT64_C(0x0101010101010101);
    const uint64_t highs = UINT64_C(0x8080808080808080);
    uint64_t bs = w ^ (ones * '\\');
    uint64_t low = (w - ones * 0x0e) & ~w & highs;
    uint64_t is_bs = (bs - ones) & ~bs & highs;
    return (low | is_bs) != 0;
}

/* The length of the run of s[0..n) that needs no escaping. */
static inline size_t codec_plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    for (;;) {
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (codec_word_may_need_escape(w))
                break;
            i += 8;
        }
        size_t stop = n - i >= 8 ? i + 8 : n;
        for (; i < stop; i++)
            if (codec_escape_of[s[i]] != 0)
                return i;
        if (i == n)
            return n;
    }
}

int codec_put_text(struct buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t mark = out->len;
    /* Room for the text as is; an escape grows it only when needed. */
    if (buf_reserve(out, n) < 0)
        return -1;
    size_t i = 0;
    while (i < n) {
        size_t run = codec_plain_run(u + i, n - i);
        memcpy(out->data + out->len, u + i, run);
        out->len += run;
        i += run;
        if (i == n)
            break;
        size_t rest = n - i - 1; /* after this byte's two */
        if (out->cap - out->len - 1 < 2 + rest && buf_reserve(out, 2 + rest) < 0) {
            out->len = mark;
            out->data[mark] = '\0';
            return -1;
        }
        out->data[out->len++] = '\\';
        out->data[out->len++] = codec_escape_of[u[i]];
        i++;
    }
    out->data[out->len] = '\0';
    return 0;
}

int codec_put_blob(struct buf *out, const void *p, size_t n)
{
    if (n > (SIZE_MAX - 2) / 2 || buf_reserve(out, 2 + 2 * n) < 0)
        return -1;
    char *d = out->data + out->len;
    d[0] = '\\';
    d[1] = 'x';
    if (n > 0)
        codec_hex_encode(p, n, d + 2);
    out->len += 2 + 2 * n;
    out->data[out->len] = '\0';
    return 0;
}

int codec_put_null(struct buf *out)
{
    return buf_append(out, "\\N", 2);
}

int codec_put_int(struct buf *out, int64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof tmp;
    char *p = codec_format_int(end, v);
    return buf_append(out, p, (size_t)(end - p));
}

int codec_put_real(struct buf *out, double v)
{
    char tmp[48];
    if (isnan(v))
        return buf_append(out, "nan", 3);
    if (isinf(v))
        return v < 0 ? buf_append(out, "-inf", 4) : buf_append(out, "inf", 3);
    /* Whole numbers below 1e15 print as %.15g would print them: digits. */
    if (fabs(v) < 1e15 && v == trunc(v) && !(v == 0 && signbit(v))) {
        char *end = tmp + sizeof tmp - 2;
        char *p = codec_format_int(end, (int64_t)v);
        end[0] = '.';
        end[1] = '0';
        return buf_append(out, p, (size_t)(end + 2 - p));
    }
    int n = 0;
    /* 17 significant digits always read back the same (DBL_DECIMAL_DIG). */
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp - 2, "%.*g", prec, v);
        if (n < 0 || (size_t)n >= sizeof tmp - 2)
            return -1;
        if (prec == 17 || strtod(tmp, NULL) == v)
            break;
    }
    if (strpbrk(tmp, ".eni") == NULL) {
        tmp[n++] = '.';
        tmp[n++] = '0';
    }
    return buf_append(out, tmp, (size_t)n);
}

int codec_decode_field(const char *f, size_t n, struct buf *scratch, struct value *v)
{
    memset(v, 0, sizeof *v);
    buf_reset(scratch);
    if (n == 2 && f[0] == '\\' && f[1] == 'N') {
        v->type = VALUE_NULL;
        return 0;
    }
    if (n >= 2 && f[0] == '\\' && f[1] == 'x') {
        size_t digits = n - 2;
        if (digits % 2 != 0 || buf_reserve(scratch, digits / 2) < 0)
            return -1;
        if (codec_hex_decode(f + 2, digits, (unsigned char *)scratch->data) < 0) {
            scratch->data[0] = '\0';
            return -1;
        }
        scratch->len = digits / 2;
        scratch->data[scratch->len] = '\0';
        v->type = VALUE_BLOB;
        v->p = scratch->data;
        v->len = scratch->len;
        return 0;
    }
    if (buf_reserve(scratch, n) < 0)
        return -1;
    if (n > 0 && codec_unescape(f, n, scratch->data, &scratch->len) < 0) {
        scratch->len = 0;
        scratch->data[0] = '\0';
        return -1;
    }
    v->type = VALUE_TEXT;
    v->p = scratch->data;
    v->len = scratch->len;
    return 0;
}

/* ---- Requests (encoding) --------------------------------------------- */

/* Append one parameter line for *v. 0 or -1. */
static int codec_put_param(struct buf *out, const struct value *v)
{
    switch (v->type) {
    case VALUE_NULL: return buf_append(out, "n\n", 2);
    case VALUE_INT:
        if (buf_putc(out, 'i') < 0 || codec_put_int(out, v->i) < 0)
            return -1;
        break;
    case VALUE_REAL:
        if (isnan(v->r) || buf_putc(out, 'r') < 0 || codec_put_real(out, v->r) < 0)
            return -1;
        break;
    case VALUE_TEXT:
        if (buf_putc(out, 't') < 0 || (v->len > 0 && codec_put_text(out, v->p, v->len) < 0))
            return -1;
        break;
    case VALUE_BLOB:
        if (v->len > SIZE_MAX / 2 || buf_reserve(out, 1 + 2 * v->len) < 0)
            return -1;
        out->data[out->len] = 'b';
        if (v->len > 0)
            codec_hex_encode((const unsigned char *)v->p, v->len, out->data + out->len + 1);
        out->len += 1 + 2 * v->len;
        out->data[out->len] = '\0';
        break;
    default: return -1;
    }
    return buf_putc(out, '\n');
}

int codec_encode_request(struct buf *out, const char *sql, size_t len, const struct value *params, size_t n)
{
    size_t mark = out->len;
    char tmp[48];
    char *end = tmp + sizeof tmp;
    char *p = end;

    if (len > INT64_MAX || n > INT64_MAX)
        return -1;
    /* "$len n\n", built backwards. */
    *--p = '\n';
    p = codec_format_int(p, (int64_t)n);
    *--p = ' ';
    p = codec_format_int(p, (int64_t)len);
    *--p = '$';
    if (buf_append(out, p, (size_t)(end - p)) < 0 || (len > 0 && buf_append(out, sql, len) < 0) ||
        buf_putc(out, '\n') < 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (codec_put_param(out, &params[i]) < 0)
            goto fail;
    return 0;
fail:
    out->len = mark;
    if (out->cap > 0)
        out->data[mark] = '\0';
    return -1;
}

/* ---- Response lines -------------------------------------------------- */

enum reply_kind codec_reply_kind(const char *line, size_t n, const char **body, size_t *body_len)
{
    enum reply_kind kind = REPLY_BAD;
    const char *b = NULL;
    size_t bl = 0;

    if (n >= 1 && (line[0] == '*' || line[0] == '=')) {
        kind = line[0] == '*' ? REPLY_COLUMNS : REPLY_ROW;
        b = line + 1;
        bl = n - 1;
    } else if (n >= 3 && memcmp(line, "+OK", 3) == 0 && (n == 3 || line[3] == ' ')) {
        kind = REPLY_OK;
        b = line + 3;
        bl = n - 3;
        while (bl > 0 && *b == ' ') {
            b++;
            bl--;
        }
    } else if (n >= 5 && memcmp(line, "-ERR ", 5) == 0) {
        kind = REPLY_ERR;
        b = line + 5;
        bl = n - 5;
    }
    if (body != NULL)
        *body = b;
    if (body_len != NULL)
        *body_len = bl;
    return kind;
}

bool codec_fact_int(const char *facts, size_t n, const char *key, int64_t *v)
{
    const char *val;
    size_t vlen;

    return codec_fact_find(facts, n, key, &val, &vlen) && codec_parse_int64(val, vlen, v) == 0;
}

int codec_put_error(struct buf *out, const char *code, const char *message)
{
    size_t clen = strlen(code);
    size_t mlen = message != NULL ? strnlen(message, CODEC_ERROR_MESSAGE_MAX + 1) : 0;
    if (mlen > CODEC_ERROR_MESSAGE_MAX) {
        /* Cut before a UTF-8 continuation byte, at most 3 back. */
        mlen = CODEC_ERROR_MESSAGE_MAX;
        for (int k = 0; k < 3 && mlen > 0 && ((unsigned char)message[mlen] & 0xc0) == 0x80; k++)
            mlen--;
    }
    if (clen > SIZE_MAX / 2 || buf_reserve(out, 5 + clen + 1 + mlen + 1) < 0)
        return -1;
    char *d = out->data + out->len;
    memcpy(d, "-ERR ", 5);
    d += 5;
    memcpy(d, code, clen);
    d += clen;
    if (mlen > 0) {
        *d++ = ' ';
        for (size_t i = 0; i < mlen; i++) {
            char c = message[i];
            *d++ = c == '\n' || c == '\r' ? ' ' : c;
        }
    }
    *d++ = '\n';
    *d = '\0';
    out->len = (size_t)(d - out->data);
    return 0;
}

static void codec_row_start(struct codec_row *r, struct buf *out, char marker)
{
    r->out = out;
    r->mark = out->len;
    r->nfields = 0;
    r->rc = buf_putc(out, marker);
}

void codec_header_begin(struct codec_row *r, struct buf *out)
{
    codec_row_start(r, out, '*');
}

void codec_row_begin(struct codec_row *r, struct buf *out)
{
    codec_row_start(r, out, '=');
}

/* The tab before every field but the first; false once the line failed. */
static bool codec_field_next(struct codec_row *r)
{
    if (r->nfields++ > 0 && r->rc == 0)
        r->rc = buf_putc(r->out, '\t');
    return r->rc == 0;
}

void codec_field_text(struct codec_row *r, const char *s, size_t n)
{
    if (codec_field_next(r))
        r->rc = codec_put_text(r->out, s, n);
}

void codec_field_str(struct codec_row *r, const char *s)
{
    if (codec_field_next(r))
        r->rc = s != NULL ? codec_put_text(r->out, s, strlen(s)) : codec_put_null(r->out);
}

void codec_field_null(struct codec_row *r)
{
    if (codec_field_next(r))
        r->rc = codec_put_null(r->out);
}

void codec_field_int(struct codec_row *r, int64_t v)
{
    if (codec_field_next(r))
        r->rc = codec_put_int(r->out, v);
}

void codec_field_real(struct codec_row *r, double v)
{
    if (codec_field_next(r))
        r->rc = codec_put_real(r->out, v);
}

void codec_field_blob(struct codec_row *r, const void *p, size_t n)
{
    if (codec_field_next(r))
        r->rc = codec_put_blob(r->out, p, n);
}

void codec_field_raw(struct codec_row *r, const char *s, size_t n)
{
    if (codec_field_next(r))
        r->rc = buf_append(r->out, s, n);
}

int codec_row_end(struct codec_row *r)
{
    if (r->rc == 0)
        r->rc = buf_putc(r->out, '\n');
    if (r->rc != 0)
        buf_truncate(r->out, r->mark);
    return r->rc;
}

/* Append the decimal digits of v to line[*n..]. */
static void codec_line_int(char *line, size_t *n, int64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof tmp;
    char *p = codec_format_int(end, v);
    memcpy(line + *n, p, (size_t)(end - p));
    *n += (size_t)(end - p);
}

int codec_put_ok_rows(struct buf *out, uint64_t rows)
{
    /* Made whole on the stack, appended once: every read answers one. */
    char line[sizeof "+OK rows=\n" + 20];
    size_t n = 9;

    memcpy(line, "+OK rows=", 9);
    codec_line_int(line, &n, (int64_t)rows);
    line[n++] = '\n';
    return buf_append(out, line, n);
}

int codec_put_ok_changes(struct buf *out, int64_t changes, const int64_t *last_id)
{
    /* Made whole on the stack, appended once: every write answers one. */
    char line[sizeof "+OK changes= last_id=\n" + 2 * 20];
    size_t n = 12;

    memcpy(line, "+OK changes=", 12);
    codec_line_int(line, &n, changes);
    if (last_id != NULL) {
        memcpy(line + n, " last_id=", 9);
        n += 9;
        codec_line_int(line, &n, *last_id);
    }
    line[n++] = '\n';
    return buf_append(out, line, n);
}

int codec_put_ok(struct buf *out, const char *facts)
{
    size_t mark = out->len;
    int rc = buf_append(out, "+OK", 3);
    if (facts != NULL && facts[0] != '\0')
        rc |= buf_putc(out, ' ') | buf_puts(out, facts);
    if ((rc | buf_putc(out, '\n')) != 0) {
        buf_truncate(out, mark);
        return -1;
    }
    return 0;
}

int codec_ok_add_fact(struct buf *out, const char *name, uint64_t value)
{
    char fact[96];
    size_t start;
    int n;

    if (out->len < 4 || out->data[out->len - 1] != '\n')
        return 0;
    for (start = out->len - 1; start > 0 && out->data[start - 1] != '\n'; start--)
        ;
    if (memcmp(out->data + start, "+OK", 3) != 0)
        return 0;
    n = snprintf(fact, sizeof fact, " %s=%" PRIu64 "\n", name, value);
    if (n < 0 || (size_t)n >= sizeof fact || buf_reserve(out, (size_t)n) != 0)
        return -1;
    out->len--; /* the line end: the fact ends with a new one; the space is reserved */
    return buf_append(out, fact, (size_t)n) == 0 ? 1 : -1;
}

/* ---- Facts as text (client side; added for libsqlmux) ---------------- */

bool codec_fact_find(const char *facts, size_t n, const char *key, const char **val, size_t *vlen)
{
    size_t klen = strlen(key);
    size_t i = 0;
    if (klen == 0)
        return false;
    while (i < n) {
        while (i < n && facts[i] == ' ')
            i++;
        size_t start = i;
        while (i < n && facts[i] != ' ')
            i++;
        size_t tlen = i - start;
        if (tlen > klen && facts[start + klen] == '=' && memcmp(facts + start, key, klen) == 0) {
            *val = facts + start + klen + 1;
            *vlen = tlen - klen - 1;
            return true;
        }
    }
    return false;
}
