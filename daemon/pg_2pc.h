/*
 * PostgreSQL's side of transactions across binds (issue 16, Contract 3 of
 * the cross-bind design): PREPARE TRANSACTION under a global id naming this
 * daemon, COMMIT PREPARED / ROLLBACK PREPARED, the daemon's in-doubt ids, the
 * max_prepared_transactions check, and the daemon id itself.
 *
 * Every function blocks on libpq or the file system: call them on an
 * executor's worker thread, or at start-up before the daemon serves
 * (recovery: main.c, after the config is loaded and before the listeners
 * start), never on the loop thread.
 *
 * Global ids: "sqlmux_<daemonid>_<txid>_<bind>", daemonid 16 lowercase hex
 * digits, txid decimal, bind the bind's name (at most PG2PC_GID_MAX - 1
 * bytes in all; PostgreSQL allows 199).
 */
#ifndef SQLMUX_DAEMON_PG_2PC_H
#define SQLMUX_DAEMON_PG_2PC_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#define PG2PC_GID_MAX        200
#define PG2PC_DAEMON_ID_LEN  16
#define PG2PC_DAEMON_ID_FILE "daemon-id"

/* The daemon id kept in data_dir/daemon-id: read it, or create it (random,
 * written to a temporary file, fsync'd, renamed, folder fsync'd) on first
 * use. out gets PG2PC_DAEMON_ID_LEN hex digits and a NUL. 0, or -1 with
 * *err (malloc'd) naming the file (a damaged file is an error, never
 * replaced). */
__attribute__((warn_unused_result)) int pg2pc_daemon_id(const char *data_dir,
                                                        char out[PG2PC_DAEMON_ID_LEN + 1], char **err);

/* Writes the gid of (daemon_id, txid, bind name) into out[PG2PC_GID_MAX].
 * -1 when it would not fit or bind is empty. */
__attribute__((warn_unused_result)) int pg2pc_gid(char *out, const char *daemon_id, uint64_t txid,
                                                  const char *bind);

/* Splits a gid of daemon_id: 0 with *txid and bind (bind[PG2PC_GID_MAX]),
 * -1 when it is not one of that daemon's. */
int pg2pc_gid_parse(const char *gid, const char *daemon_id, uint64_t *txid, char *bind);

/* 0 when the server allows prepared transactions (max_prepared_transactions
 * > 0); -1 with *err ("... max_prepared_transactions is 0 ...") when not, or
 * when the question failed. */
__attribute__((warn_unused_result)) int pg2pc_check(PGconn *c, char **err);

/* PREPARE TRANSACTION gid on c, which must be in a transaction block (then
 * it is idle afterwards, the transaction's fate in the gid). -1 and *err
 * (malloc'd, with the SQLSTATE: "SQLSTATE message") when it failed: the
 * transaction is rolled back then (PostgreSQL's rule). */
__attribute__((warn_unused_result)) int pg2pc_prepare(PGconn *c, const char *gid, char **err);

/* COMMIT PREPARED / ROLLBACK PREPARED gid on c (idle, any session of the
 * database). 0 when done, 1 when no such prepared transaction exists (done
 * before: recovery is idempotent), -1 and *err otherwise. */
__attribute__((warn_unused_result)) int pg2pc_commit(PGconn *c, const char *gid, char **err);
__attribute__((warn_unused_result)) int pg2pc_rollback(PGconn *c, const char *gid, char **err);

/* The gids of daemon_id prepared in c's database (pg_prepared_xacts), oldest
 * first: *gids (malloc'd array of malloc'd strings, free with
 * pg2pc_list_free) and *n. 0, or -1 and *err. */
__attribute__((warn_unused_result)) int pg2pc_list(PGconn *c, const char *daemon_id, char ***gids, size_t *n,
                                                   char **err);
void pg2pc_list_free(char **gids, size_t n);

#endif
