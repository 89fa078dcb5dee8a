/*
 * PostgreSQL two-phase commit for transactions across binds (issue 16): the
 * primitives the transaction coordinator (daemon/xact*.c) calls, and the
 * daemon id that prefixes every global id. See pg_2pc.h for the contracts;
 * all of it blocks (libpq, fsync), so never on the loop thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "daemon/pg_2pc.h"

__attribute__((format(printf, 2, 3))) static int fail(char **err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(err, fmt, ap) < 0)
        *err = NULL;
    va_end(ap);
    return -1;
}

/* "SQLSTATE message" of a failed result (or of the connection). */
static int pg_error(PGconn *c, PGresult *r, const char *what, char **err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg)
        msg = PQerrorMessage(c);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    if (asprintf(err, "%s %s: %.*s", state ? state : (PQstatus(c) == CONNECTION_OK ? "XX000" : "08006"), what,
                 (int)n, msg) < 0)
        *err = NULL;
    return -1;
}

static bool is_hex_id(const char *s)
{
    for (int i = 0; i < PG2PC_DAEMON_ID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

int pg2pc_daemon_id(const char *data_dir, char out[PG2PC_DAEMON_ID_LEN + 1], char **err)
{
    char path[4096], tmp[4200];
    *err = NULL;
    if (snprintf(path, sizeof path, "%s/%s", data_dir, PG2PC_DAEMON_ID_FILE) >= (int)sizeof path)
        return fail(err, "%s/%s: path too long", data_dir, PG2PC_DAEMON_ID_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[64];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n != PG2PC_DAEMON_ID_LEN + 1 || buf[PG2PC_DAEMON_ID_LEN] != '\n' || !is_hex_id(buf))
            return fail(err,
                        "%s: damaged (want %d hex digits and a newline); restore it or, when no "
                        "transaction across binds is in doubt, remove it",
                        path, PG2PC_DAEMON_ID_LEN);
        memcpy(out, buf, PG2PC_DAEMON_ID_LEN);
        out[PG2PC_DAEMON_ID_LEN] = 0;
        return 0;
    }
    if (errno != ENOENT)
        return fail(err, "%s: %s", path, strerror(errno));
    unsigned char rnd[PG2PC_DAEMON_ID_LEN / 2];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return fail(err, "%s: getrandom: %s", path, strerror(errno));
    char line[PG2PC_DAEMON_ID_LEN + 2];
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(line + 2 * i, 3, "%02x", rnd[i]);
    line[PG2PC_DAEMON_ID_LEN] = '\n';
    line[PG2PC_DAEMON_ID_LEN + 1] = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail(err, "%s: %s", tmp, strerror(errno));
    bool ok = write(fd, line, PG2PC_DAEMON_ID_LEN + 1) == PG2PC_DAEMON_ID_LEN + 1 && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok)
            saved = errno;
        unlink(tmp);
        return fail(err, "%s: %s", path, strerror(saved));
    }
    int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ok = fsync(dfd) == 0;
        saved = errno;
        close(dfd);
        if (!ok)
            return fail(err, "%s: fsync: %s", data_dir, strerror(saved));
    }
    memcpy(out, line, PG2PC_DAEMON_ID_LEN);
    out[PG2PC_DAEMON_ID_LEN] = 0;
    return 0;
}

int pg2pc_gid(char *out, const char *daemon_id, uint64_t txid, const char *bind)
{
    if (!bind || !*bind)
        return -1;
    int n = snprintf(out, PG2PC_GID_MAX, "sqlmux_%s_%" PRIu64 "_%s", daemon_id, txid, bind);
    return n > 0 && n < PG2PC_GID_MAX ? 0 : -1;
}

int pg2pc_gid_parse(const char *gid, const char *daemon_id, uint64_t *txid, char *bind)
{
    size_t idlen = strlen(daemon_id);
    if (strncmp(gid, "sqlmux_", 7) != 0 || strncmp(gid + 7, daemon_id, idlen) != 0 || gid[7 + idlen] != '_')
        return -1;
    const char *p = gid + 8 + idlen;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long t = strtoull(p, &end, 10);
    if (errno || *end != '_' || !end[1] || strlen(end + 1) >= PG2PC_GID_MAX)
        return -1;
    *txid = t;
    strcpy(bind, end + 1);
    return 0;
}

int pg2pc_check(PGconn *c, char **err)
{
    *err = NULL;
    PGresult *r = PQexec(c, "SELECT current_setting('max_prepared_transactions')::int");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        pg_error(c, r, "max_prepared_transactions", err);
        PQclear(r);
        return -1;
    }
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (n > 0)
        return 0;
    return fail(err, "%s",
                "the PostgreSQL server's max_prepared_transactions is 0: it cannot take part in a "
                "transaction across binds (set max_prepared_transactions > 0 in postgresql.conf and "
                "restart it)");
}

/* Runs `verb 'gid'` (the gid as a literal: these commands take no
 * parameters; gids are ours, and escaped anyway). */
static int gid_command(PGconn *c, const char *verb, const char *gid, bool missing_ok, char **err)
{
    *err = NULL;
    char *lit = PQescapeLiteral(c, gid, strlen(gid));
    if (!lit)
        return pg_error(c, NULL, verb, err);
    char *sql = NULL;
    if (asprintf(&sql, "%s %s", verb, lit) < 0) {
        PQfreemem(lit);
        *err = strdup("out of memory");
        return -1;
    }
    PQfreemem(lit);
    PGresult *r = PQexec(c, sql);
    free(sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (missing_ok && state && strcmp(state, "42704") == 0)
            rc = 1; /* undefined_object: no prepared transaction with that gid */
        else
            rc = pg_error(c, r, verb, err);
    }
    PQclear(r);
    return rc;
}

int pg2pc_prepare(PGconn *c, const char *gid, char **err)
{
    if (PQtransactionStatus(c) != PQTRANS_INTRANS && PQtransactionStatus(c) != PQTRANS_INERROR) {
        *err = strdup("PREPARE TRANSACTION: the connection is not in a transaction");
        return -1;
    }
    /* in a failed transaction PREPARE answers ROLLBACK without an error */
    bool failed = PQtransactionStatus(c) == PQTRANS_INERROR;
    int rc = gid_command(c, "PREPARE TRANSACTION", gid, false, err);
    if (rc == 0 && failed) {
        *err = strdup("25P02 PREPARE TRANSACTION: the transaction had failed and was rolled back");
        return -1;
    }
    return rc;
}

int pg2pc_commit(PGconn *c, const char *gid, char **err)
{
    return gid_command(c, "COMMIT PREPARED", gid, true, err);
}

int pg2pc_rollback(PGconn *c, const char *gid, char **err)
{
    return gid_command(c, "ROLLBACK PREPARED", gid, true, err);
}

int pg2pc_list(PGconn *c, const char *daemon_id, char ***gids, size_t *n, char **err)
{
    *err = NULL;
    *gids = NULL;
    *n = 0;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "sqlmux_%s_", daemon_id);
    const char *params[1] = {prefix};
    PGresult *r = PQexecParams(c,
                               "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() "
                               "AND left(gid, length($1)) = $1 ORDER BY prepared, gid",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        pg_error(c, r, "pg_prepared_xacts", err);
        PQclear(r);
        return -1;
    }
    size_t rows = (size_t)PQntuples(r);
    char **out = calloc(rows ? rows : 1, sizeof *out);
    for (size_t i = 0; out && i < rows; i++) {
        out[i] = strdup(PQgetvalue(r, (int)i, 0));
        if (!out[i]) {
            pg2pc_list_free(out, i);
            out = NULL;
        }
    }
    PQclear(r);
    if (!out) {
        *err = strdup("out of memory");
        return -1;
    }
    *gids = out;
    *n = rows;
    return 0;
}

void pg2pc_list_free(char **gids, size_t n)
{
    for (size_t i = 0; gids && i < n; i++)
        free(gids[i]);
    free(gids);
}
