/*
 * Configuration: the INI file (parsed with inih) that names the binds, maps
 * tables to binds, and sets server and per-bind options. One struct config
 * holds everything; the daemon never keeps config globals, and a reload
 * builds a new struct config and swaps it in only when it is valid.
 */
#ifndef SQLMUX_CONF_CONFIG_H
#define SQLMUX_CONF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

enum bind_type {
    BIND_SQLITE_FILE,
    BIND_SQLITE_MEMORY,
    BIND_POSTGRES,
};

/* Whether TLS clients must show a certificate (tls_client_auth). */
enum tls_client_auth {
    TLS_CLIENT_AUTH_OFF,      /* none is asked for */
    TLS_CLIENT_AUTH_OPTIONAL, /* asked for; one that is shown must verify */
    TLS_CLIENT_AUTH_REQUIRE,  /* a client without a valid one is refused */
};

/* TLS versions of tls_protocols (bit mask). */
#define CONFIG_TLS_1_2 1
#define CONFIG_TLS_1_3 2

/* What start-up does with a snapshot file that fails its checks. */
enum snapshot_damage {
    SNAPSHOT_DAMAGE_FAIL, /* stop with an error naming the file */
    SNAPSHOT_DAMAGE_MOVE, /* rename it to FILE.damaged-TIME and start empty */
};

struct bind_conf {
    char *name;         /* the bind key: "default", "second_db" */
    char *url;          /* as written in the file */
    char *url_redacted; /* url with any password replaced by "***" */
    enum bind_type type;
    char *path; /* SQLITE_FILE: absolute path of the database file */
    /* POSTGRES: libpq keyword/value pairs, NULL-terminated arrays for
     * PQconnectStartParams ("host", "port", "user", "password", "dbname",
     * and any ?key=value options). */
    char **pg_keywords;
    char **pg_values;
    char *schema;              /* absolute path of the schema SQL file, or NULL */
    int pool_size;             /* connections (worker threads) for this bind */
    int busy_timeout_ms;       /* SQLite busy timeout */
    bool foreign_keys;         /* SQLite PRAGMA foreign_keys on every connection */
    int pool_min;              /* PostgreSQL: server connections kept open */
    int connect_timeout_ms;    /* PostgreSQL: one connection attempt */
    int idle_timeout_ms;       /* PostgreSQL: close idle connections above pool_min after this; 0: never */
    int statement_timeout_ms;  /* PostgreSQL: cancel a statement running longer; 0: never */
    int max_queue;             /* PostgreSQL: requests waiting for a server connection */
    int query_wait_timeout_ms; /* PostgreSQL: -ERR BUSY for a request that waited this long
                                  for a server connection; 0: never */
    char *snapshot;            /* in-memory bind: absolute path of its snapshot file, or NULL */
    int snapshot_interval_s;   /* in-memory bind: save the snapshot this often; 0: never */
    enum snapshot_damage snapshot_on_damage;
    int line;              /* line of the file that defined the bind */
    uint64_t keys_written; /* bit i: the file wrote [bind.NAME] key i (for --check-config) */
};

struct table_rule {
    char *pattern;   /* lowercased; may hold '*' wildcards */
    bool is_pattern; /* contains '*' */
    size_t bind;     /* index into config.binds */
    int line;
};

/* An index of an array's items by a string key (config.c): open
 * addressing over the keys' hash_bytes() (proto/hash.h), at most half
 * full; slots is NULL while nothing was added. */
struct config_index_slot {
    uint64_t hash; /* of the item's key */
    size_t item;   /* the item's position + 1; 0: an empty slot */
};

struct config_index {
    struct config_index_slot *slots;
    size_t mask; /* slots - 1 */
    size_t n;    /* items added */
};

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* What a user may do on one bind. */
enum grant {
    GRANT_NONE,       /* nothing: statements for the bind get -ERR NOPERM */
    GRANT_READ,       /* statements that do not write (the backend checks) */
    GRANT_READ_WRITE, /* everything */
};

/* One [user.NAME] section. */
struct user_conf {
    char *name;
    char *password;     /* a crypt(3) hash ("$y$...", "$2b$...", ...) */
    bool admin;         /* may run the admin commands (.stats, .reload, ...) */
    enum grant *grants; /* grants[i]: access to binds[i] */
    char *cert_cn;      /* a TLS client whose verified certificate has
                           this common name is logged in as the user;
                           NULL: none */
    int line;           /* line of its [user.NAME] header */
};

struct config {
    char *path; /* absolute path of the file */
    char *dir;  /* its folder */

    /* [server] */
    char *listen_host; /* NULL: no TCP listener */
    int listen_port;
    char *unix_socket;       /* absolute path, or NULL: no unix listener */
    int unix_socket_mode;    /* e.g. 0660 */
    char *unix_socket_group; /* group given the socket file, or NULL: the daemon's */
    char *data_dir;          /* absolute; relative SQLite paths resolve here */
    int max_clients;
    size_t max_request;       /* bytes in one request line or bulk SQL */
    size_t max_request_total; /* bytes of one whole request: SQL and parameters */
    int max_params;
    int max_pipeline;        /* requests read ahead per client */
    size_t max_output;       /* bytes of output buffered per client before the
                                daemon stops producing more for it */
    size_t max_value;        /* largest string or blob a statement may make or
                                return (SQLite's SQLITE_LIMIT_LENGTH; checked on
                                each PostgreSQL field) */
    int route_cache;         /* routing decisions cached (entries) */
    int stmt_cache;          /* prepared statements cached per connection */
    bool normalize_literals; /* SQLite statements differing only in literal
                                values share one prepared statement (sqlnorm.h) */

    int catalog_interval_ms; /* read every bind's catalog this often; 0: never */

    int federation_pool; /* threads (executor connections) for statements across binds */
    enum log_level log_level;
    bool log_connections;            /* log each client's connect and disconnect */
    int loop_stall_warn_ms;          /* warn of a loop turn that works longer; 0: never */
    bool io_uring;                   /* send a turn's answers in one io_uring submission */
    int idle_poll_us;                /* poll this long at most before the loop sleeps; 0: never */
    int shutdown_timeout_ms;         /* SIGTERM: ms running statements get to finish */
    int client_idle_timeout_ms;      /* close clients idle this long; 0: never */
    int idle_transaction_timeout_ms; /* close clients idle this long inside a transaction; 0: never */
    int client_output_timeout_ms;    /* close clients that read none of their answers this long
                                        while they hold a backend connection; 0: never */
    bool protected_mode;             /* without users: listen on loopback addresses only */
    int auth_fail_delay_ms;          /* a failed .auth is answered after this long */
    int login_timeout_ms;            /* with users: close clients not logged in after this long; 0: never */
    char *migrations;                /* absolute path of the migrations folder (a
                                        sub-folder per bind), or NULL */
    bool migrate_on_start;           /* apply pending migrations when the daemon starts */
    uint64_t keys_written;           /* bit i: the file wrote [server] key i (for --check-config) */

    /* TLS (daemon/tls.c). The files are absolute paths, NULL when unset. */
    char *tls_listen_host; /* NULL: no TLS listener */
    int tls_listen_port;
    char *tls_cert_file; /* PEM chain of the server's certificate */
    char *tls_key_file;  /* its private key */
    char *tls_ca_file;   /* CAs that sign client certificates */
    enum tls_client_auth tls_client_auth;
    int tls_protocols; /* CONFIG_TLS_* bits */
    char *tls_ciphers; /* OpenSSL cipher list (TLS 1.2), or NULL: OpenSSL's */
    bool require_tls;  /* refuse .auth and SQL on plain TCP from non-loopback peers */

    /* [binds]; binds[0] is always "default". */
    struct bind_conf *binds;
    size_t nbinds;

    /* [tables], in file order. */
    struct table_rule *rules;
    size_t nrules;
    struct config_index rule_index; /* every rule by its pattern (config_rule_find) */
    size_t *pattern_rules;          /* the rules with '*' (indexes into rules), in file order */
    size_t npatterns;

    /* [user.NAME] sections, in file order. None: no authentication, every
     * client may do everything. */
    struct user_conf *users;
    size_t nusers;
    struct config_index user_index; /* users by name (config_user) */

    /* Non-fatal findings, each "file:line: warning: ...". */
    char **warnings;
    size_t nwarnings;
};

/*
 * Load and validate the file at `path`. On success returns 0 and *out owns
 * a new config (free with config_free()). On failure returns -1, *out is
 * NULL, and err holds "file:line: message" (line omitted when the file
 * cannot be read).
 */
__attribute__((warn_unused_result)) int config_load(const char *path, struct config **out, char *err,
                                                    size_t errlen);

void config_free(struct config *cfg);

/* Index of the bind named `name` (case-sensitive), or -1. */
int config_bind_index(const struct config *cfg, const char *name);

/* The user named `name` (case-sensitive), or NULL. */
const struct user_conf *config_user(const struct config *cfg, const char *name);

/*
 * The [tables] rule whose pattern is the text "schema.name", or "name"
 * when schema is NULL (the pieces need not be NUL-terminated; compared
 * byte for byte, so lowercase them first), or NULL. A rule with '*' is
 * found by its own text only: is_pattern says which it is. One hash and
 * (almost always) one comparison, whatever the size of the map; no
 * allocation. Any thread, while cfg is held.
 */
const struct table_rule *config_rule_find(const struct config *cfg, const char *schema, size_t schema_len,
                                          const char *name, size_t name_len);

/* "none", "read", "read-write". */
const char *config_grant_name(enum grant g);

/*
 * For a reload: the [server] settings that need a restart keep their
 * current values. Every such key whose value differs between `cur` and
 * `next` is copied from cur into next and its name appended to `changed`
 * (", "-separated; may be NULL). Returns how many differed, or -1 when out
 * of memory (next is then unusable).
 */
__attribute__((warn_unused_result)) int
config_keep_restart_settings(struct config *next, const struct config *cur, char *changed, size_t changedlen);

/* Whether two binds are the same database with the same options (name,
 * URL, resolved path and every [bind.NAME] key), so a reload can keep the
 * open one. */
bool config_bind_equal(const struct bind_conf *a, const struct bind_conf *b);

/* Whether two binds differ only in their [bind.NAME] options (same name,
 * type, URL and path). */
bool config_bind_same_database(const struct bind_conf *a, const struct bind_conf *b);

/* The group id of `group`, a group name or number (unix_socket_group).
 * 0, or -1 when there is no such group. May block on the group database
 * (NSS): start-up, --check-config and reloads only. */
__attribute__((warn_unused_result)) int config_group_id(const char *group, gid_t *gid);

/* Print the resolved binds, options and table map, for --check-config. */
void config_print(const struct config *cfg, FILE *out);

/* "error", "warn", "info", "debug". */
const char *config_log_level_name(enum log_level level);

#endif
