/*
 * libsqlmux: the C client library of sqlmux (proto/PROTOCOL.md).
 *
 * One connection to sqlmuxd, statements with typed parameters, results
 * read whole or streamed row by row, and pipelining. The API reads like
 * libpq and sqlite3:
 *
 *     char *err = NULL;
 *     sqlmux_conn *c = sqlmux_connect("sqlmux://127.0.0.1:7654", 5000, &err);
 *     if (c == NULL) { fprintf(stderr, "%s\n", err); free(err); return 1; }
 *     sqlmux_value p[] = {sqlmux_val_text("red")};
 *     sqlmux_result *r = sqlmux_exec(c, "SELECT id FROM test1 WHERE color = ?", p, 1);
 *     while (sqlmux_step(r) == SQLMUX_ROW)
 *         printf("%lld\n", (long long)sqlmux_int64(r, 0));
 *     if (sqlmux_status(r) != SQLMUX_OK)
 *         fprintf(stderr, "%s: %s\n", sqlmux_errcode(r), sqlmux_errmsg(r));
 *     sqlmux_free(r);
 *     sqlmux_close(c);
 *
 * Statements go to the daemon in the protocol's binary-safe bulk form, so
 * any SQL text (several lines, any bytes) and any parameter round-trips.
 *
 * Ownership. The library never takes ownership of the caller's memory: SQL
 * text and parameter bytes are copied (encoded) before a call returns.
 * Every pointer it returns is owned by the library and documented below as
 * "valid until ...": a connection is released with sqlmux_close(), a result
 * with sqlmux_free(), and the error message of sqlmux_connect() with free().
 *
 * Threads. The library has no global mutable state. A connection and its
 * results belong to one thread at a time: use one connection per thread, or
 * serialize all calls on a connection (and on its results) with a lock.
 * Different connections may be used from different threads at once.
 *
 * Blocking. Every call that talks to the daemon blocks until it is done,
 * with one bound: the connection's timeout. When nothing can be sent and
 * nothing arrives for timeout_ms milliseconds, the call fails with the error
 * code "NOREPLY". A timeout of 0 (or less) waits forever. A call can also
 * be cut short from outside with sqlmux_set_cancel_fd() ("CANCELLED").
 * The library never raises SIGPIPE and never installs signal handlers; a
 * signal that interrupts a wait does not end it (unless the cancel fd says
 * so).
 *
 * Errors. A result carries either success (with facts such as changes and
 * last_id) or an error: a stable upper-case code and a message. Codes sent
 * by the daemon are those of PROTOCOL.md ("SQL", "CONSTRAINT", "CROSSBIND",
 * "TIMEOUT" for a bind's statement_timeout, "NOAUTH" for a statement sent
 * before logging in to a daemon with users, ...). The library adds its own,
 * which the daemon never sends:
 *
 *   CONNECTION   the connection could not be used: refused, reset, closed by
 *                the daemon (also in the middle of a result)
 *   NOREPLY      nothing moved for the connection's timeout
 *   CANCELLED    the cancel fd became readable during a wait
 *   BADREPLY     the daemon sent something that is not the protocol
 *   MISUSE       the API was used wrongly (e.g. sqlmux_exec() while
 *                pipelined results are still unread, a NaN parameter)
 *
 * and NOMEM, as the daemon does, when the client runs out of memory.
 *
 * After CONNECTION, NOREPLY, CANCELLED or BADREPLY (and NOMEM while a reply
 * was being read) the connection is broken: a response may be half read,
 * so every later call fails at once with the same error, and
 * sqlmux_conn_errmsg() is no longer NULL. Close it and connect again. The
 * daemon, seeing the connection close, interrupts a running statement,
 * drops the requests it has not answered, and rolls back an open
 * transaction. After any other error the connection stays usable.
 */
#ifndef SQLMUX_H
#define SQLMUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SQLMUX_API __attribute__((visibility("default")))
#else
#define SQLMUX_API
#endif

#define SQLMUX_VERSION "0.1.0"

/* The URL used when sqlmux_connect() gets NULL or "" and $SQLMUX_URL is
 * not set. */
#define SQLMUX_DEFAULT_URL "sqlmux://127.0.0.1:7654"

/* Return codes. SQLMUX_OK and SQLMUX_ERROR are also what sqlmux_status()
 * says of a result; sqlmux_step() returns ROW, DONE or ERROR. */
enum {
    SQLMUX_OK = 0,
    SQLMUX_ERROR = -1,
    SQLMUX_ROW = 1,
    SQLMUX_DONE = 2,
};

typedef struct sqlmux_conn sqlmux_conn;
typedef struct sqlmux_result sqlmux_result;

/* ---- Values (parameters) --------------------------------------------- */

enum sqlmux_type {
    SQLMUX_NULL = 0,
    SQLMUX_INT,    /* parameters only: fields come back as TEXT */
    SQLMUX_DOUBLE, /* parameters only */
    SQLMUX_TEXT,
    SQLMUX_BLOB,
};

/* A parameter. The bytes of TEXT and BLOB (p[0..len)) stay the caller's:
 * they are encoded during the call that takes the array and need not
 * outlive it. TEXT may hold any bytes, NULs included. */
typedef struct sqlmux_value {
    enum sqlmux_type type;
    int64_t i;     /* SQLMUX_INT */
    double d;      /* SQLMUX_DOUBLE; NaN is refused (MISUSE), +-inf is fine */
    const void *p; /* SQLMUX_TEXT, SQLMUX_BLOB */
    size_t len;
} sqlmux_value;

SQLMUX_API sqlmux_value sqlmux_val_null(void);
SQLMUX_API sqlmux_value sqlmux_val_int(int64_t v);
SQLMUX_API sqlmux_value sqlmux_val_double(double v);
/* Text up to its NUL; a NULL pointer gives a NULL value. */
SQLMUX_API sqlmux_value sqlmux_val_text(const char *s);
/* Text of exactly len bytes (NULs allowed). */
SQLMUX_API sqlmux_value sqlmux_val_textn(const char *s, size_t len);
/* A blob of len bytes; p may be NULL when len is 0 (the empty blob). */
SQLMUX_API sqlmux_value sqlmux_val_blob(const void *p, size_t len);

/* ---- Connections ----------------------------------------------------- */

/*
 * Connect to a daemon. url is "sqlmux://[USER[:PASSWORD]@]HOST[:PORT]"
 * (PORT defaults to 7654; an IPv6 HOST is written in brackets:
 * sqlmux://[::1]:7654) or "unix://PATH" (unix:///run/sqlmux.sock; a
 * relative PATH is relative to the current directory). Either form may end
 * in "?user=USER&password=PASSWORD" (either or both), the way a unix URL
 * names its user: unix:///run/sqlmux.sock?user=alice. USER and PASSWORD
 * are percent-decoded, so a password holding ':', '@', '/', '?', '&', '%'
 * or a blank is written with %3A, %40, %2F, %3F, %26, %25, %20 (a unix
 * PATH cannot hold '?'). NULL or "" means $SQLMUX_URL, else
 * SQLMUX_DEFAULT_URL.
 *
 * Logging in. The user is the URL's, else $SQLMUX_USER; the password the
 * URL's, else $SQLMUX_PASSWORD (as libpq reads PGUSER and PGPASSWORD).
 * When there is a user, the connection logs in with sqlmux_auth() before
 * it is returned, and a refused login fails the connect with the daemon's
 * answer ("... AUTH invalid user name or password"); a daemon without
 * users ([user.NAME] sections) accepts the connection as it is. A user
 * without a password is fine with a daemon without users too; a daemon
 * with users fails that connect with "NOAUTH ... no password for user
 * USER" (it is asked with ".use", which needs a login there). A password
 * without a user fails the connect before anything is sent. The password is sent only after the .ping below
 * has shown the peer is sqlmuxd, is never part of an error message or of
 * sqlmux_conn_url(), and its copies in the library's memory are wiped
 * (explicit_bzero) once it is sent.
 *
 * timeout_ms bounds the connect and then every wait of the connection (see
 * "Blocking" above); 0 or less waits forever. Host names are resolved with
 * getaddrinfo(), which the timeout does not bound. The daemon answers a
 * refused login after its auth_fail_delay (1 s by default): a shorter
 * timeout makes that NOREPLY.
 *
 * The daemon's greeting is checked with one .ping round trip, so a daemon
 * that refuses the client (MAXCLIENTS, SHUTDOWN) or something that is not
 * sqlmuxd fails here.
 *
 * Returns the connection, or NULL with *errmsg (if errmsg is not NULL) set
 * to a message the caller frees with free() (NULL if even that could not be
 * allocated).
 */
SQLMUX_API sqlmux_conn *sqlmux_connect(const char *url, int timeout_ms, char **errmsg);

/* sqlmux_connect() with the login given: user and password, when neither
 * NULL nor "", take the place of the URL's and the environment's (a
 * program that asks for the password passes it here). */
SQLMUX_API sqlmux_conn *sqlmux_connect_auth(const char *url, const char *user, const char *password,
                                            int timeout_ms, char **errmsg);

/* The longest user name and the longest password the daemon takes, in
 * bytes. */
#define SQLMUX_AUTH_MAX 256

/*
 * Log in as user with password (the .auth command of PROTOCOL.md) and read
 * the answer: SQLMUX_OK with the fact "user" (sqlmux_fact(r, "user")), or
 * an error: AUTH (wrong user name or password, answered after the daemon's
 * auth_fail_delay; also when the daemon has no users), ARGS (e.g. inside a
 * transaction), MISUSE (an empty user name or one with blanks, an empty
 * password, one with a line break or with blanks at either end, more than
 * SQLMUX_AUTH_MAX bytes: nothing is sent). After a refused login the
 * connection stays usable, logged in as before. The library's copies of
 * the password are wiped once it is sent. A blocking call like
 * sqlmux_command(), with its MISUSE rules.
 */
SQLMUX_API sqlmux_result *sqlmux_auth(sqlmux_conn *conn, const char *user, const char *password);

/* The user the connection is logged in as; NULL when it is not logged in
 * (or the daemon has no users). Valid until the next sqlmux_auth() or
 * sqlmux_close(). */
SQLMUX_API const char *sqlmux_conn_user(const sqlmux_conn *conn);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" (protocol and cipher) on a TLS
 * connection (sqlmuxs://), NULL on a plain one. Valid until
 * sqlmux_close(). */
SQLMUX_API const char *sqlmux_conn_tls(const sqlmux_conn *conn);

/* The user sqlmux_connect(url) would log in as: the URL's, else
 * $SQLMUX_USER (url NULL or "" as for sqlmux_connect), copied with
 * malloc() for the caller to free(); NULL when there is none, the URL is
 * bad, or memory ran out. *has_password (if not NULL) says whether the URL
 * or $SQLMUX_PASSWORD gives a password, so a program knows whether to ask
 * for one. */
SQLMUX_API char *sqlmux_url_user(const char *url, bool *has_password);

/* Close the connection and free it. NULL is fine. Buffered results of the
 * connection stay valid; a streaming result still open fails its next
 * sqlmux_step() with CONNECTION and must still be freed. Pipelined
 * requests not yet answered are dropped: the daemon may or may not have
 * run them. */
SQLMUX_API void sqlmux_close(sqlmux_conn *conn);

/* Change the timeout (milliseconds, 0 or less: none) for later waits. */
SQLMUX_API void sqlmux_set_timeout(sqlmux_conn *conn, int timeout_ms);

/* When fd (a pipe or eventfd the caller owns, -1 for none) becomes
 * readable, a call waiting on this connection gives up with CANCELLED and
 * the connection is broken. The library polls fd but never reads it: the
 * caller drains it before the next call. This is how a shell cancels a
 * query from a SIGINT handler (write a byte to a self-pipe) or another
 * thread cancels a blocked call. */
SQLMUX_API void sqlmux_set_cancel_fd(sqlmux_conn *conn, int fd);

/* NULL while the connection is usable; once it is broken, why (valid until
 * sqlmux_close). */
SQLMUX_API const char *sqlmux_conn_errmsg(const sqlmux_conn *conn);

/* The URL the connection was made to, as given or defaulted, with its
 * password (if any) shown as "***" (valid until sqlmux_close). */
SQLMUX_API const char *sqlmux_conn_url(const sqlmux_conn *conn);

/* ---- Running statements ---------------------------------------------- */

/*
 * Run one SQL statement sql (NUL-terminated; any bytes, several lines) with
 * params[0..nparams) bound to its placeholders, and read its whole result
 * into memory. Blocks (see above). Returns a result for success and for
 * every error alike; only a failed allocation of the result itself gives
 * the shared "out of memory" result, never NULL. Free it with
 * sqlmux_free(). Fails with MISUSE while pipelined results are unread or a
 * streaming result is open on the connection.
 */
SQLMUX_API sqlmux_result *sqlmux_exec(sqlmux_conn *conn, const char *sql, const sqlmux_value *params,
                                      size_t nparams);

/* sqlmux_exec() for SQL of exactly len bytes. */
SQLMUX_API sqlmux_result *sqlmux_execn(sqlmux_conn *conn, const char *sql, size_t len,
                                       const sqlmux_value *params, size_t nparams);

/*
 * Like sqlmux_exec(), but the result streams: it holds only the current
 * row, and each sqlmux_step() reads the next one from the connection, so a
 * result of millions of rows needs no more memory than one row. Until the
 * stream has returned SQLMUX_DONE or SQLMUX_ERROR, the connection reads no
 * other response: sqlmux_exec(), sqlmux_recv() and the like fail with
 * MISUSE (sqlmux_send() is fine). Freeing the result early is allowed: the
 * rest of its rows are skipped (read and dropped) by the next call that
 * reads from the connection.
 */
SQLMUX_API sqlmux_result *sqlmux_query(sqlmux_conn *conn, const char *sql, const sqlmux_value *params,
                                       size_t nparams);

/* sqlmux_query() for SQL of exactly len bytes. */
SQLMUX_API sqlmux_result *sqlmux_queryn(sqlmux_conn *conn, const char *sql, size_t len,
                                        const sqlmux_value *params, size_t nparams);

/* Run a dot-command line such as ".binds", ".use second_db" or ".route
 * SELECT ..." (PROTOCOL.md "Commands") and read its result. The line may
 * not hold a newline (MISUSE). */
SQLMUX_API sqlmux_result *sqlmux_command(sqlmux_conn *conn, const char *line);

/* ---- Pipelining ------------------------------------------------------ */

/*
 * Queue a statement (or a command) without waiting for its result. Requests
 * go out as the socket takes them; results come back in request order
 * through sqlmux_recv() (or sqlmux_recv_stream()). While sending, the
 * library also reads what the daemon has answered so far, so any number of
 * requests can be queued without deadlock; those answers wait in memory
 * until received. Returns SQLMUX_OK, or SQLMUX_ERROR when the request could
 * not be queued: the connection is broken (sqlmux_conn_errmsg), memory ran
 * out, or a parameter is NaN (nothing was queued then).
 */
SQLMUX_API int sqlmux_send(sqlmux_conn *conn, const char *sql, const sqlmux_value *params, size_t nparams);
SQLMUX_API int sqlmux_sendn(sqlmux_conn *conn, const char *sql, size_t len, const sqlmux_value *params,
                            size_t nparams);
SQLMUX_API int sqlmux_send_command(sqlmux_conn *conn, const char *line);

/* Write every queued request to the socket (blocking). SQLMUX_OK or
 * SQLMUX_ERROR (the connection is broken). sqlmux_recv() flushes by
 * itself; call this when the results are wanted later. */
SQLMUX_API int sqlmux_flush(sqlmux_conn *conn);

/* Requests sent whose results have not been received yet. */
SQLMUX_API size_t sqlmux_pending(const sqlmux_conn *conn);

/* The whole result of the oldest pending request. With nothing pending:
 * a MISUSE result. Never NULL (see sqlmux_exec). */
SQLMUX_API sqlmux_result *sqlmux_recv(sqlmux_conn *conn);

/* The result of the oldest pending request, as a stream (see
 * sqlmux_query). */
SQLMUX_API sqlmux_result *sqlmux_recv_stream(sqlmux_conn *conn);

/* ---- Results --------------------------------------------------------- */

/* Free a result (and a stream's unread rest, see sqlmux_query). NULL is
 * fine. */
SQLMUX_API void sqlmux_free(sqlmux_result *res);

/* SQLMUX_OK when the statement succeeded (for an unfinished stream: so
 * far), SQLMUX_ERROR when it failed. */
SQLMUX_API int sqlmux_status(const sqlmux_result *res);

/* The error code ("SQL", "CONSTRAINT", "CONNECTION", ...; see the top of
 * this file), or NULL when the result is not an error. Valid until
 * sqlmux_free. */
SQLMUX_API const char *sqlmux_errcode(const sqlmux_result *res);

/* The error message, "" when there is none. Valid until sqlmux_free. */
SQLMUX_API const char *sqlmux_errmsg(const sqlmux_result *res);

/* Columns: 0 for a statement that returns none (INSERT, .use). A failed
 * statement may still have columns and rows: those that arrived before the
 * error (a .route that is refused lists its tables first). */
SQLMUX_API int sqlmux_ncols(const sqlmux_result *res);
/* Name and declared type ("" for an expression) of column col (from 0);
 * NULL when col is out of range. Valid until sqlmux_free. */
SQLMUX_API const char *sqlmux_colname(const sqlmux_result *res, int col);
SQLMUX_API const char *sqlmux_coltype(const sqlmux_result *res, int col);

/*
 * Move to the next row: SQLMUX_ROW (the accessors below read it),
 * SQLMUX_DONE (no more rows; the statement succeeded) or SQLMUX_ERROR (the
 * statement failed, maybe after some rows: sqlmux_errcode says why). A
 * buffered result iterates over the rows it holds; a streaming result
 * reads the next row from the connection (blocking).
 */
SQLMUX_API int sqlmux_step(sqlmux_result *res);

/*
 * Whether the next sqlmux_step() of res can answer without waiting for
 * the socket: a buffered or finished result, or a streaming one whose next
 * reply line has been received already. A binding that lets other threads
 * run while a step waits (Python's GIL) asks first, and gives way only
 * when it must.
 */
SQLMUX_API bool sqlmux_step_ready(sqlmux_result *res);

/* Buffered results only: make row `row` (from 0) the current one, so the
 * rows can be read again or in any order; the next sqlmux_step() goes to
 * row + 1. sqlmux_seek(res, -1) rewinds to before the first row.
 * SQLMUX_OK, or SQLMUX_ERROR for a stream or a row out of range. */
SQLMUX_API int sqlmux_seek(sqlmux_result *res, int64_t row);

/* Rows: all of them for a buffered result; for a stream, the rows stepped
 * over so far. */
SQLMUX_API int64_t sqlmux_rows(const sqlmux_result *res);

/*
 * Fields of the current row. col counts from 0. Without a current row, or
 * with col out of range, they answer as for NULL.
 *
 * Fields come back in the protocol's text form, so a field is NULL, TEXT
 * (integers and reals arrive as their decimal text) or BLOB. Pointers stay
 * valid until sqlmux_free() for a buffered result, and until the next
 * sqlmux_step() or sqlmux_free() for a stream.
 */
SQLMUX_API enum sqlmux_type sqlmux_type(const sqlmux_result *res, int col);
SQLMUX_API bool sqlmux_isnull(const sqlmux_result *res, int col);
/* The bytes, NUL-terminated (a text or blob may also hold NULs of its own:
 * use sqlmux_len); NULL for NULL. */
SQLMUX_API const char *sqlmux_text(const sqlmux_result *res, int col);
/* The same bytes as const void *; NULL for NULL, never NULL otherwise (an
 * empty blob is a valid pointer with length 0). */
SQLMUX_API const void *sqlmux_blob(const sqlmux_result *res, int col);
/* Bytes in the field (0 for NULL). */
SQLMUX_API size_t sqlmux_len(const sqlmux_result *res, int col);
/* The field read as a number: an integer's value exactly (the whole int64
 * range), a real's value truncated toward zero (clamped to the int64
 * range); 0 for NULL, a blob, or text that does not start with a number,
 * as sqlite3_column_int64() does. */
SQLMUX_API int64_t sqlmux_int64(const sqlmux_result *res, int col);
/* As a double ("inf" and "-inf" included), 0.0 when not a number. Not
 * affected by the program's LC_NUMERIC. */
SQLMUX_API double sqlmux_double(const sqlmux_result *res, int col);

/* Facts of the status line. changes: rows changed by INSERT, UPDATE or
 * DELETE (0 when absent); last_id: the rowid of the last row an INSERT
 * inserted (0 when absent). */
SQLMUX_API int64_t sqlmux_changes(const sqlmux_result *res);
SQLMUX_API int64_t sqlmux_last_id(const sqlmux_result *res);
/* Any fact: true and *out set when fact `key` is present and an integer. */
SQLMUX_API bool sqlmux_fact_int(const sqlmux_result *res, const char *key, int64_t *out);
/* The text of fact `key` ("second_db" for "bind" after .use), NULL when
 * absent. Valid until sqlmux_free. */
SQLMUX_API const char *sqlmux_fact(const sqlmux_result *res, const char *key);
/* All facts as sent ("rows=2", "changes=1 last_id=5", "bind=x", or "");
 * "" for an error or an unfinished stream. Valid until sqlmux_free. */
SQLMUX_API const char *sqlmux_facts(const sqlmux_result *res);

#ifdef __cplusplus
}
#endif

#endif
