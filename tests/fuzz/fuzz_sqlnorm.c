/*
 * libFuzzer target for daemon/sqlnorm.c: the first input byte picks how
 * many parameters the request sends (0..3), the rest is the SQL, read
 * straight from a private copy of exactly that size (not NUL-terminated).
 * Beyond not crashing, a normalised statement must be consistent: its
 * parameters are the request's plus one per replaced literal, each
 * literal's ?K appears exactly once in the text, in order, every decoded
 * string or blob lies in the struct's value buffer, and normalising the
 * statement with the literals written back (integers in decimal, strings
 * quoted, blobs in hex) gives the same text and values again.
 *
 * Build: make build-fuzz/fuzz_sqlnorm; run: build-fuzz/fuzz_sqlnorm
 * tests/fuzz/corpus/sqlnorm. With -DSQLMUX_FUZZ_MAIN it builds a plain
 * program that runs the files named on its command line once each.
 */
#include "daemon/sqlnorm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sqllex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sqlnorm first, again;

/* The normalised text of n with its literals (numbers > nparams) written
 * back as SQL literals, into a malloc'ed buffer; *len its length. */
static char *write_back(const struct sqlnorm *n, size_t nparams, size_t *len)
{
    const char *s = n->req.text;
    size_t cap = n->req.len * 2 + 64, o = 0, at = 0;
    char *out;

    for (size_t i = nparams; i < n->req.nparams; i++)
        cap += n->req.params[i].len * 2 + 32;
    out = malloc(cap);
    if (out == NULL)
        abort();
    for (size_t pos = 0;;) {
        struct sqltok t = sqllex_next(s, n->req.len, pos, 0);
        size_t k = 0;
        if (t.type == SQLTOK_EOF || t.type == SQLTOK_ERROR)
            break;
        pos = t.pos + t.len;
        if (t.type == SQLTOK_PARAM && s[t.pos] == '?')
            for (size_t i = t.pos + 1; i < t.pos + t.len; i++)
                k = k * 10 + (size_t)(s[i] - '0');
        if (k <= nparams)
            continue;
        const struct value *v = &n->req.params[k - 1];
        memcpy(out + o, s + at, t.pos - at);
        o += t.pos - at;
        if (v->type == VALUE_INT) {
            o += (size_t)snprintf(out + o, cap - o, "%lld", (long long)v->i);
        } else {
            if (v->type == VALUE_BLOB)
                out[o++] = 'X';
            out[o++] = '\'';
            for (size_t j = 0; j < v->len; j++) {
                if (v->type == VALUE_BLOB) {
                    o += (size_t)snprintf(out + o, cap - o, "%02x", (unsigned char)v->p[j]);
                    continue;
                }
                if (v->p[j] == '\'')
                    out[o++] = '\'';
                out[o++] = v->p[j];
            }
            out[o++] = '\'';
        }
        at = pos;
    }
    memcpy(out + o, s + at, n->req.len - at);
    o += n->req.len - at;
    *len = o;
    return out;
}

static void check(const struct sqlnorm *n, size_t nparams)
{
    size_t next = nparams + 1, at = 0;

    if (n->req.nparams <= nparams || n->req.nparams - nparams > SQLNORM_MAX_LITERALS)
        abort();
    for (size_t i = nparams; i < n->req.nparams; i++) {
        const struct value *v = &n->req.params[i];
        if (v->type != VALUE_INT &&
            (v->p < n->values || v->p + v->len > n->values + n->values_cap || v->len > SQLNORM_MAX_VALUE))
            abort();
    }
    /* The literals' numbers appear once each, in order. */
    for (;;) {
        struct sqltok t = sqllex_next(n->req.text, n->req.len, at, 0);
        size_t k = 0;
        if (t.type == SQLTOK_EOF)
            break;
        if (t.type == SQLTOK_ERROR)
            abort();
        at = t.pos + t.len;
        if (t.type != SQLTOK_PARAM || n->req.text[t.pos] != '?' || t.len == 1)
            continue;
        for (size_t i = t.pos + 1; i < t.pos + t.len; i++)
            k = k * 10 + (size_t)(n->req.text[i] - '0');
        if (k > nparams && k != next++)
            abort();
    }
    if (next != n->req.nparams + 1)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct value params[3];
    size_t nparams, len, back_len;
    char *sql, *back;

    if (size == 0)
        return 0;
    nparams = data[0] % 4;
    len = size - 1;
    sql = malloc(len ? len : 1);
    if (sql == NULL)
        return 0;
    memcpy(sql, data + 1, len);
    memset(params, 0, sizeof params);
    if (sqlnorm_sqlite(&first, sql, len, params, nparams, SIZE_MAX)) {
        check(&first, nparams);
        back = write_back(&first, nparams, &back_len);
        if (!sqlnorm_sqlite(&again, back, back_len, params, nparams, SIZE_MAX) ||
            again.req.len != first.req.len || memcmp(again.req.text, first.req.text, first.req.len) != 0 ||
            again.req.nparams != first.req.nparams)
            abort();
        for (size_t i = nparams; i < first.req.nparams; i++) {
            const struct value *a = &first.req.params[i], *b = &again.req.params[i];
            if (a->type != b->type || a->i != b->i || a->len != b->len ||
                (a->len > 0 && memcmp(a->p, b->p, a->len) != 0))
                abort();
        }
        free(back);
    }
    free(sql);
    return 0;
}

#include "tests/fuzz/fuzz_main.h"
