/*
 * The example of README.md ("Client library and CLI"): connect, create a
 * table, insert with parameters in one pipelined batch, read the rows
 * back. Built as build/sqlmux-example against libsqlmux.so; the URL is
 * argv[1], else $SQLMUX_URL, else sqlmux://127.0.0.1:7654.
 */
#include <stdio.h>
#include <stdlib.h>

#include <sqlmux.h>

int main(int argc, char **argv)
{
    char *err = NULL;
    sqlmux_conn *conn = sqlmux_connect(argc > 1 ? argv[1] : NULL, 5000, &err);
    if (conn == NULL) {
        fprintf(stderr, "%s\n", err);
        free(err);
        return 1;
    }

    sqlmux_result *res = sqlmux_exec(conn,
                                     "CREATE TABLE IF NOT EXISTS fruit (id INTEGER PRIMARY KEY, "
                                     "name TEXT, weight REAL, photo BLOB)",
                                     NULL, 0);
    sqlmux_free(res);

    /* Pipelining: three INSERTs in one round trip. */
    const char *names[] = {"apple", "banana", "cherry"};
    for (int i = 0; i < 3; i++) {
        sqlmux_value params[] = {sqlmux_val_text(names[i]), sqlmux_val_double(100.0 + i),
                                 i == 2 ? sqlmux_val_null() : sqlmux_val_blob("\x89PNG", 4)};
        sqlmux_send(conn, "INSERT INTO fruit (name, weight, photo) VALUES (?, ?, ?)", params, 3);
    }
    while (sqlmux_pending(conn) > 0) {
        res = sqlmux_recv(conn);
        if (sqlmux_status(res) == SQLMUX_OK)
            printf("inserted id %lld\n", (long long)sqlmux_last_id(res));
        else
            fprintf(stderr, "%s: %s\n", sqlmux_errcode(res), sqlmux_errmsg(res));
        sqlmux_free(res);
    }

    sqlmux_value min = sqlmux_val_double(100.5);
    res =
        sqlmux_exec(conn, "SELECT id, name, weight, photo FROM fruit WHERE weight > ? ORDER BY id", &min, 1);
    while (sqlmux_step(res) == SQLMUX_ROW)
        printf("%lld %s %.1f %s\n", (long long)sqlmux_int64(res, 0), sqlmux_text(res, 1),
               sqlmux_double(res, 2), sqlmux_isnull(res, 3) ? "(no photo)" : "(photo)");
    int status = sqlmux_status(res) == SQLMUX_OK ? 0 : 1;
    if (status != 0)
        fprintf(stderr, "%s: %s\n", sqlmux_errcode(res), sqlmux_errmsg(res));
    sqlmux_free(res);
    sqlmux_close(conn);
    return status;
}
