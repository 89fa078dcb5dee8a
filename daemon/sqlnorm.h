/*
 * Literal normalisation (issue 18): an SQLite statement whose literal
 * values are replaced by parameters, with the values to bind, so that
 * statements differing only in their literals share one prepared
 * statement ("SELECT v FROM t WHERE id = 5" runs as "... id = ?1" with 5
 * bound). ProxySQL's query digests and PostgreSQL's query jumbling
 * normalise the same way.
 *
 * Only literals whose replacement cannot change an answer, an error or a
 * column name are replaced; the rules are at the top of sqlnorm.c. The
 * caller still has to fall back to the original text when SQLite refuses
 * the normalised one, or when a column name of the prepared statement
 * shows a parameter (sqlite_stmt_for() in sqlite_exec.c does both).
 *
 * Pure text work over the caller's request: any thread; the struct's
 * buffers are reused from call to call.
 */
#ifndef SQLMUX_DAEMON_SQLNORM_H
#define SQLMUX_DAEMON_SQLNORM_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/codec.h"

/* At most this many literals of one statement become parameters (the
 * others stay as they are), and only strings and blobs of at most
 * SQLNORM_MAX_VALUE bytes (below the smallest max_value, 1024). */
#define SQLNORM_MAX_LITERALS 999
#define SQLNORM_MAX_VALUE    1000

/* Longer statements run as they are: they gain little from sharing, and
 * the buffers reused per connection stay small. */
#define SQLNORM_MAX_TEXT 16384

/* A normalised statement: req.text[0..req.len) and req.params[0..nparams)
 * (the request's own parameters first, then one per replaced literal,
 * pointing into values or the request). Owned by the struct; zero it
 * before the first use, free with sqlnorm_free(). */
struct sqlnorm {
    struct request req;
    size_t text_cap, params_cap, values_cap;
    char *values;     /* the decoded strings and blobs */
    size_t max_param; /* the highest ? number of the text as sent (0: none) */
    /* Where each replaced literal's ?N starts in req.text, in order
     * (lits[0..nlits)): the normalised text with these is a template that
     * sqlnorm_match() fills in for another text of the same shape. */
    size_t *lits;
    size_t nlits, lits_cap;
};

/* Normalise the SQLite statement sql[0..len) sent with params[0..nparams)
 * into n. Returns true when n->req holds a statement with at least one
 * literal made a parameter; false (n->req undefined) when the statement is
 * to run as it is: not a SELECT/INSERT/REPLACE/UPDATE/DELETE/WITH/VALUES,
 * nothing to replace, named parameters, a parameter count that differs
 * from nparams (the original gives the PARAMS error), text longer than
 * max_len or SQLNORM_MAX_TEXT, or out of memory. */
bool sqlnorm_sqlite(struct sqlnorm *n, const char *sql, size_t len, const struct value *params,
                    size_t nparams, size_t max_len);

/* The key under which the router may cache its decision for sql[0..len)
 * (route.c): the normalised text in n->req.text[0..req.len), true when it
 * differs from sql. Statements with the same key differ only in literals
 * that stand for values, which never route, unless the statement writes a
 * name as a string (sqlparse's ROUTE_STRING_NAME: then the caller caches
 * by text). The request's parameters are not checked. */
bool sqlnorm_route_key(struct sqlnorm *n, const char *sql, size_t len);

/* Whether sql[0..len) is the template tmpl[0..tlen) (a normalised text of
 * a request without parameters of its own, its replaced literals' ?N at
 * lits[0..nlits)) with a replaceable literal in each ?N's place and the
 * rest byte for byte the same; if so n holds what sqlnorm_route_key()
 * would make of sql (the template and the literals' values) and true is
 * returned. Much cheaper than lexing: a client that sends one statement
 * shape with different values is matched, not parsed. */
bool sqlnorm_match(struct sqlnorm *n, const char *tmpl, size_t tlen, const size_t *lits, size_t nlits,
                   const char *sql, size_t len);

/* The normalisation sqlnorm_route_key() just made of a request that has
 * no parameters of its own, as sqlnorm_sqlite() would make it: a copy for
 * the request's norm (codec.h), in one allocation; NULL when the text had
 * parameters (? numbers) or out of memory. */
struct request *sqlnorm_copy(const struct sqlnorm *n);

void sqlnorm_free(struct sqlnorm *n);

#endif
