/*
 * The SQL text of a bind's tables for the sqlmux CLI's .schema and .dump:
 * read from the bind's own catalog through libsqlmux (sqlite_schema for
 * SQLite, pg_catalog for PostgreSQL), written so that the text loads back
 * through sqlmux (README.md, "The sqlmux shell").
 */
#ifndef SQLMUX_CLIENT_DUMP_H
#define SQLMUX_CLIENT_DUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "client/sqlmux.h"

/* Why a dump failed: an error code as the daemon's ("SQL", "NOPERM", ...)
 * and a message. */
struct dump_error {
    char code[32];
    char msg[1024];
};

/* Whether name matches pattern, case-insensitively: '*' and '%' stand for
 * any run of characters, '?' and '_' for one. */
bool dump_name_matches(const char *pattern, const char *name);

/* What to write for one bind. */
struct dump_request {
    const char *bind;            /* its name, as .binds shows it */
    const char *type;            /* .binds' type: sqlite, sqlite-memory or postgresql */
    const char *const *patterns; /* objects whose names match one of these; all when none */
    size_t npatterns;
    bool rows; /* .dump: rows too, in BEGIN ... COMMIT */
};

/*
 * Write to out the SQL that creates the bind's tables (and indexes,
 * views, triggers) matching the request, with INSERTs of their rows when
 * asked. The connection's session bind is switched to the bind (.use);
 * the caller switches it back. Returns the number of objects written, or
 * -1 with *err set. Values are exact: integers and reals as sent (reals
 * read back the same), text quoted with '' (SQLite text holding CR or NUL
 * as CAST(X'..' AS TEXT)), blobs as X'..' (PostgreSQL: '\x..'::bytea),
 * NULL as NULL.
 */
int dump_bind(sqlmux_conn *conn, const struct dump_request *req, FILE *out, struct dump_error *err);

#endif
