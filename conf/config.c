/*
 * Configuration loader. Reads the INI file with inih, checks every value
 * against one table of keys (config_keys below: section, name, type,
 * default, bounds, field), parses each bind's URL the way SQLAlchemy users
 * write it into either an SQLite path or libpq keyword/value arrays,
 * resolves relative paths lexically, and answers "which bind serves this
 * table?" for the router.
 *
 * A struct config owns every string it points to; config_free() releases
 * all of it. Nothing here keeps global state, except that config_load()
 * sets inih's option globals for the duration of one parse and restores
 * them afterwards, so config_load() must not run on two threads at once.
 * The lookup functions (config_bind_index, config_user, config_rule_find)
 * only read the struct and may be called from any thread. The [tables]
 * rules and the users are indexed by hash (struct config_index), so a
 * file with 100,000 of them loads in time linear in its size.
 */
#include "conf/config.h"
#include "proto/codec.h"
#include "proto/hash.h"

#include <arpa/inet.h>
#include <crypt.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Longest line accepted, including its newline. inih keeps the line in a
 * stack buffer of ini_max_line bytes; its default (200) is too short for
 * PostgreSQL URLs with options. */
#define CONFIG_MAX_LINE 8192

/* Longest bind name: it shows up in logs and in protocol messages. */
#define CONFIG_MAX_BIND_NAME 63

#define CONFIG_KIB 1024LL
#define CONFIG_MIB (1024LL * 1024)
#define CONFIG_GIB (1024LL * 1024 * 1024)

/* ------------------------------------------------------------------------
 * The table of keys
 * ------------------------------------------------------------------------ */

enum config_type {
    CONFIG_T_INT,       /* int, decimal, min..max */
    CONFIG_T_SIZE,      /* size_t, bytes; k/K, M/m, G/g suffixes (x1024) */
    CONFIG_T_MODE,      /* int, octal file mode, min..max */
    CONFIG_T_BOOL,      /* bool: on/off, true/false, yes/no, 1/0 */
    CONFIG_T_LOG_LEVEL, /* enum log_level */
    CONFIG_T_LISTEN,    /* struct config listen_host + listen_port; "" = none */
    CONFIG_T_SOCKET,    /* char *, path relative to the config's folder, must
                           fit in sockaddr_un; "" = none (NULL) */
    CONFIG_T_DIR,       /* char *, path relative to the config's folder;
                           "" = the config's folder itself */
    CONFIG_T_SCHEMA,    /* char *, path relative to the config's folder of a
                           file that must be readable now; "" = none (NULL) */
    CONFIG_T_FOLDER,    /* char *, path relative to the config's folder of a
                           folder that must exist now; "" = none (NULL) */
    CONFIG_T_DATA_PATH, /* char *, path relative to data_dir (resolved once
                           the whole file is read); "" = none (NULL) */
    CONFIG_T_ON_DAMAGE, /* enum snapshot_damage: fail or move */
    /* enum tls_client_auth: off, optional or require */
    CONFIG_T_CLIENT_AUTH,
    /* int, CONFIG_TLS_* bits: "TLSv1.2 TLSv1.3" */
    CONFIG_T_TLS_PROTOCOLS,
    CONFIG_T_STRING, /* char *, as written; "" = none (NULL) */
};

enum config_scope {
    CONFIG_SERVER, /* [server]; offset into struct config */
    CONFIG_BIND,   /* [bind.NAME]; offset into struct bind_conf */
};

struct config_key {
    enum config_scope scope;
    const char *name;
    enum config_type type;
    const char *def;    /* default, written as it would be in the file */
    long long min, max; /* bounds of numeric types */
    size_t offset;      /* the field this key sets */
    bool restart;       /* a reload cannot change it: the daemon keeps the
                           value it started with until restarted */
};

#define SERVER_KEY(name, type, def, min, max, field)                                                         \
    {                                                                                                        \
        CONFIG_SERVER, name, type, def, min, max, offsetof(struct config, field), false                      \
    }
#define SERVER_KEY_RESTART(name, type, def, min, max, field)                                                 \
    {                                                                                                        \
        CONFIG_SERVER, name, type, def, min, max, offsetof(struct config, field), true                       \
    }
#define BIND_KEY(name, type, def, min, max, field)                                                           \
    {                                                                                                        \
        CONFIG_BIND, name, type, def, min, max, offsetof(struct bind_conf, field), false                     \
    }

/* Every option of the file, in the order --check-config prints them. The
 * file's sqlmux.ini documents the same keys for people. */
static const struct config_key config_keys[] = {
    SERVER_KEY_RESTART("listen", CONFIG_T_LISTEN, "127.0.0.1:7654", 0, 0, listen_host),
    SERVER_KEY_RESTART("unix_socket", CONFIG_T_SOCKET, "", 0, 0, unix_socket),
    SERVER_KEY_RESTART("unix_socket_mode", CONFIG_T_MODE, "0660", 0, 0777, unix_socket_mode),
    SERVER_KEY_RESTART("unix_socket_group", CONFIG_T_STRING, "", 0, 0, unix_socket_group),
    SERVER_KEY("data_dir", CONFIG_T_DIR, "", 0, 0, data_dir),
    SERVER_KEY("max_clients", CONFIG_T_INT, "1024", 1, 1000000, max_clients),
    SERVER_KEY("max_request", CONFIG_T_SIZE, "1M", 1024, CONFIG_GIB, max_request),
    SERVER_KEY("max_request_total", CONFIG_T_SIZE, "64M", 1024, 16 * CONFIG_GIB, max_request_total),
    SERVER_KEY("max_params", CONFIG_T_INT, "1000", 0, 32766, max_params),
    SERVER_KEY("max_pipeline", CONFIG_T_INT, "128", 1, 65536, max_pipeline),
    SERVER_KEY("max_output", CONFIG_T_SIZE, "1M", 4096, CONFIG_GIB, max_output),
    SERVER_KEY("max_value", CONFIG_T_SIZE, "64M", 1024, CONFIG_GIB, max_value),
    SERVER_KEY("route_cache", CONFIG_T_INT, "1024", 0, 1000000, route_cache),
    SERVER_KEY("catalog_interval", CONFIG_T_INT, "2000", 0, 3600000, catalog_interval_ms),
    SERVER_KEY_RESTART("stmt_cache", CONFIG_T_INT, "64", 0, 10000, stmt_cache),
    SERVER_KEY("normalize_literals", CONFIG_T_BOOL, "on", 0, 0, normalize_literals),
    SERVER_KEY_RESTART("federation_pool", CONFIG_T_INT, "2", 1, 64, federation_pool),
    SERVER_KEY("log_level", CONFIG_T_LOG_LEVEL, "info", 0, 0, log_level),
    SERVER_KEY("log_connections", CONFIG_T_BOOL, "off", 0, 0, log_connections),
    SERVER_KEY("loop_stall_warn", CONFIG_T_INT, "100", 0, 60000, loop_stall_warn_ms),
    SERVER_KEY("idle_poll_us", CONFIG_T_INT, "50", 0, 1000, idle_poll_us),
    SERVER_KEY_RESTART("io_uring", CONFIG_T_BOOL, "on", 0, 0, io_uring),
    SERVER_KEY("shutdown_timeout", CONFIG_T_INT, "30000", 0, 3600000, shutdown_timeout_ms),
    SERVER_KEY("client_idle_timeout", CONFIG_T_INT, "0", 0, 86400000, client_idle_timeout_ms),
    SERVER_KEY("idle_transaction_timeout", CONFIG_T_INT, "0", 0, 86400000, idle_transaction_timeout_ms),
    SERVER_KEY("client_output_timeout", CONFIG_T_INT, "60000", 0, 86400000, client_output_timeout_ms),
    SERVER_KEY("protected_mode", CONFIG_T_BOOL, "on", 0, 0, protected_mode),
    SERVER_KEY("auth_fail_delay", CONFIG_T_INT, "1000", 0, 60000, auth_fail_delay_ms),
    SERVER_KEY("login_timeout", CONFIG_T_INT, "60000", 0, 86400000, login_timeout_ms),
    SERVER_KEY("migrations", CONFIG_T_FOLDER, "", 0, 0, migrations),
    SERVER_KEY("migrate_on_start", CONFIG_T_BOOL, "off", 0, 0, migrate_on_start),
    SERVER_KEY_RESTART("tls_listen", CONFIG_T_LISTEN, "", 0, 0, tls_listen_host),
    SERVER_KEY("tls_cert_file", CONFIG_T_SCHEMA, "", 0, 0, tls_cert_file),
    SERVER_KEY("tls_key_file", CONFIG_T_SCHEMA, "", 0, 0, tls_key_file),
    SERVER_KEY("tls_ca_file", CONFIG_T_SCHEMA, "", 0, 0, tls_ca_file),
    SERVER_KEY("tls_client_auth", CONFIG_T_CLIENT_AUTH, "off", 0, 0, tls_client_auth),
    SERVER_KEY("tls_protocols", CONFIG_T_TLS_PROTOCOLS, "TLSv1.2 TLSv1.3", 0, 0, tls_protocols),
    SERVER_KEY("tls_ciphers", CONFIG_T_STRING, "", 0, 0, tls_ciphers),
    SERVER_KEY("require_tls", CONFIG_T_BOOL, "off", 0, 0, require_tls),
    BIND_KEY("schema", CONFIG_T_SCHEMA, "", 0, 0, schema),
    BIND_KEY("pool_size", CONFIG_T_INT, "4", 1, 64, pool_size),
    BIND_KEY("busy_timeout", CONFIG_T_INT, "5000", 0, 3600000, busy_timeout_ms),
    BIND_KEY("foreign_keys", CONFIG_T_BOOL, "off", 0, 0, foreign_keys),
    BIND_KEY("pool_min", CONFIG_T_INT, "1", 0, 64, pool_min),
    BIND_KEY("connect_timeout", CONFIG_T_INT, "5000", 100, 600000, connect_timeout_ms),
    BIND_KEY("idle_timeout", CONFIG_T_INT, "60000", 0, 86400000, idle_timeout_ms),
    BIND_KEY("statement_timeout", CONFIG_T_INT, "0", 0, 86400000, statement_timeout_ms),
    BIND_KEY("max_queue", CONFIG_T_INT, "1024", 0, 1000000, max_queue),
    BIND_KEY("query_wait_timeout", CONFIG_T_INT, "30000", 0, 86400000, query_wait_timeout_ms),
    BIND_KEY("snapshot", CONFIG_T_DATA_PATH, "", 0, 0, snapshot),
    BIND_KEY("snapshot_interval", CONFIG_T_INT, "0", 0, 604800, snapshot_interval_s),
    BIND_KEY("snapshot_on_damage", CONFIG_T_ON_DAMAGE, "fail", 0, 0, snapshot_on_damage),
};

/* Is host (an IPv4 or IPv6 address as written after listen =) a loopback
 * address: 127.0.0.0/8, ::1 or ::ffff:127.x.y.z? */
static bool config_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* Options that mean something for one kind of bind only. */
static bool config_key_sqlite_only(const struct config_key *key)
{
    return key->offset == offsetof(struct bind_conf, busy_timeout_ms) ||
           key->offset == offsetof(struct bind_conf, foreign_keys) ||
           key->offset == offsetof(struct bind_conf, schema); /* PostgreSQL: use migrations */
}

static bool config_key_pg_only(const struct config_key *key)
{
    return key->offset == offsetof(struct bind_conf, pool_min) ||
           key->offset == offsetof(struct bind_conf, connect_timeout_ms) ||
           key->offset == offsetof(struct bind_conf, idle_timeout_ms) ||
           key->offset == offsetof(struct bind_conf, max_queue) ||
           key->offset == offsetof(struct bind_conf, query_wait_timeout_ms);
}

/* Options of in-memory SQLite binds only (their snapshot file). */
static bool config_key_memory_only(const struct config_key *key)
{
    return key->offset == offsetof(struct bind_conf, snapshot) ||
           key->offset == offsetof(struct bind_conf, snapshot_interval_s) ||
           key->offset == offsetof(struct bind_conf, snapshot_on_damage);
}

#define CONFIG_NKEYS (sizeof config_keys / sizeof config_keys[0])

/* keys_written has a bit per key. */
_Static_assert(CONFIG_NKEYS <= 64, "config_keys outgrew keys_written");

/* The index of the key that sets `offset` in scope. */
static size_t config_key_index(enum config_scope scope, size_t offset)
{
    size_t i = 0;
    while (i < CONFIG_NKEYS && !(config_keys[i].scope == scope && config_keys[i].offset == offset))
        i++;
    return i;
}

static const char *const config_level_names[] = {
    [LOG_ERROR] = "error",
    [LOG_WARN] = "warn",
    [LOG_INFO] = "info",
    [LOG_DEBUG] = "debug",
};

static const char *const config_damage_names[] = {
    [SNAPSHOT_DAMAGE_FAIL] = "fail",
    [SNAPSHOT_DAMAGE_MOVE] = "move",
};

static const char *const config_client_auth_names[] = {
    [TLS_CLIENT_AUTH_OFF] = "off",
    [TLS_CLIENT_AUTH_OPTIONAL] = "optional",
    [TLS_CLIENT_AUTH_REQUIRE] = "require",
};

/* ------------------------------------------------------------------------
 * Parse state
 * ------------------------------------------------------------------------ */

enum config_section {
    CONFIG_SEC_NONE, /* before the first [section] */
    CONFIG_SEC_SERVER,
    CONFIG_SEC_BINDS,
    CONFIG_SEC_TABLES,
    CONFIG_SEC_BIND, /* [bind.NAME] */
    CONFIG_SEC_USER, /* [user.NAME] */
};

/* One [bind.NAME] section (all headers with the same NAME merged). The bind
 * may be defined later in the file, so its options wait here until the
 * whole file has been read. */
struct config_bind_section {
    char *name;
    int line;               /* first [bind.NAME] header */
    struct bind_conf opts;  /* defaults plus what the section set; only
                               schema is owned */
    int seen[CONFIG_NKEYS]; /* line that set each key, 0 = not set */
};

/* One "grant.BIND = level" line of a [user.NAME] section; BIND may be "*"
 * (every bind not named). Resolved once the whole file is read. */
struct config_grant {
    char *bind;
    enum grant level;
    int line;
};

/* One [user.NAME] section, headers with the same NAME merged. */
struct config_user_section {
    char *name;
    int line;
    char *password;
    int password_line, admin_line;
    bool admin;
    char *cert_cn;
    int cert_cn_line;
    struct config_grant *grants;
    size_t ngrants, grants_cap;
};

struct config_parse {
    struct config *cfg;
    const char *file; /* the path as the caller wrote it */
    char *err;        /* the caller's message buffer, may be NULL */
    size_t errlen;
    bool failed; /* err holds the first error */

    FILE *fp;
    char *line; /* getline() buffer: the line inih parses */
    size_t linecap;
    int lineno; /* line last handed to inih */

    enum config_section section;
    char *section_label; /* "[server]", "[bind.x]": for messages */
    size_t bind_section; /* index into bind_sections (CONFIG_SEC_BIND) */
    int server_seen[CONFIG_NKEYS];

    struct config_bind_section *bind_sections;
    size_t nbind_sections, bind_sections_cap;
    struct config_user_section *user_sections;
    size_t nuser_sections, user_sections_cap;
    size_t user_section; /* index into user_sections (CONFIG_SEC_USER) */
    struct config_index user_sections_by_name, user_sections_by_cn;
    char **rule_binds; /* bind name written for cfg->rules[i] */
    size_t rules_cap, rule_binds_cap, patterns_cap, binds_cap, warnings_cap;
};

/* Records the first error as "file:line: message" (line 0: "file: message")
 * and marks the parse failed; later calls are ignored. */
__attribute__((format(printf, 3, 4))) static void config_fail(struct config_parse *st, int line,
                                                              const char *fmt, ...)
{
    if (st->failed)
        return;
    st->failed = true;
    if (st->err == NULL || st->errlen == 0)
        return;
    int n = line > 0 ? snprintf(st->err, st->errlen, "%s:%d: ", st->file, line)
                     : snprintf(st->err, st->errlen, "%s: ", st->file);
    if (n < 0 || (size_t)n >= st->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err + n, st->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void config_oom(struct config_parse *st)
{
    config_fail(st, st->lineno, "out of memory");
}

/* A new string built like printf, or NULL when out of memory. */
__attribute__((format(printf, 1, 2))) static char *config_strf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static char *config_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Makes room in *arr (of *cap elements of `size` bytes) for element n.
 * Returns false when out of memory, leaving *arr untouched. */
static bool config_reserve(void *arr, size_t *cap, size_t n, size_t size)
{
    void **p = arr;
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 8;
    if (ncap > SIZE_MAX / size)
        return false;
    void *q = realloc(*p, ncap * size);
    if (q == NULL)
        return false;
    *p = q;
    *cap = ncap;
    return true;
}

/* ------------------------------------------------------------------------
 * Indexes (struct config_index): a big [tables] map or many users cost
 * time linear in their size to load, and one probe to look up.
 * ------------------------------------------------------------------------ */

/* Adds `item` (a position in the indexed array) under h, the hash of its
 * key; the caller has checked that no item has the same key. Returns false
 * when out of memory, leaving the index as it was. */
static bool config_index_add(struct config_index *ix, uint64_t h, size_t item)
{
    size_t nslots = ix->slots != NULL ? ix->mask + 1 : 0;
    if ((ix->n + 1) * 2 > nslots) {
        size_t grown = nslots ? nslots * 2 : 16;
        struct config_index_slot *slots = calloc(grown, sizeof *slots);
        if (slots == NULL)
            return false;
        for (size_t i = 0; i < nslots; i++) {
            if (ix->slots[i].item == 0)
                continue;
            size_t j = ix->slots[i].hash & (grown - 1);
            while (slots[j].item != 0)
                j = (j + 1) & (grown - 1);
            slots[j] = ix->slots[i];
        }
        free(ix->slots);
        ix->slots = slots;
        ix->mask = grown - 1;
    }
    size_t j = h & ix->mask;
    while (ix->slots[j].item != 0)
        j = (j + 1) & ix->mask;
    ix->slots[j].hash = h;
    ix->slots[j].item = item + 1;
    ix->n++;
    return true;
}

/* The items whose key hashes to h, one per call: start with *at = h; each
 * call returns the next such item (the caller compares its key), or
 * SIZE_MAX when there is none left. */
static size_t config_index_next(const struct config_index *ix, uint64_t h, size_t *at)
{
    if (ix->slots == NULL)
        return SIZE_MAX;
    for (size_t j = *at & ix->mask; ix->slots[j].item != 0; j = (j + 1) & ix->mask) {
        if (ix->slots[j].hash == h) {
            *at = j + 1;
            return ix->slots[j].item - 1;
        }
    }
    return SIZE_MAX;
}

/* The item whose key, key(base, item), is s (NUL-terminated), or
 * SIZE_MAX. */
static size_t config_index_find(const struct config_index *ix, const char *s,
                                const char *(*key)(const void *base, size_t item), const void *base)
{
    uint64_t h = hash_bytes(s, strlen(s));
    size_t at = h, i;
    while ((i = config_index_next(ix, h, &at)) != SIZE_MAX)
        if (strcmp(key(base, i), s) == 0)
            return i;
    return SIZE_MAX;
}

static void config_index_free(struct config_index *ix)
{
    free(ix->slots);
    memset(ix, 0, sizeof *ix);
}

/* Adds "file:line: warning: <message>" to cfg->warnings. */
__attribute__((format(printf, 3, 4))) static void config_warn(struct config_parse *st, int line,
                                                              const char *fmt, ...)
{
    struct config *cfg = st->cfg;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *w = config_strf("%s:%d: warning: %s", st->file, line, msg);
    if (w == NULL ||
        !config_reserve(&cfg->warnings, &st->warnings_cap, cfg->nwarnings, sizeof *cfg->warnings)) {
        free(w);
        config_oom(st);
        return;
    }
    cfg->warnings[cfg->nwarnings++] = w;
}

/* ------------------------------------------------------------------------
 * Paths (lexical: files need not exist)
 * ------------------------------------------------------------------------ */

/* Normalizes an absolute path: collapses "//", drops ".", applies ".."
 * (never above "/"), and removes a trailing "/". Returns a new string, or
 * NULL when out of memory. */
static char *config_path_normalize(const char *path)
{
    size_t n = strlen(path);
    char *out = malloc(n + 2);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    out[o++] = '/';
    const char *p = path;
    while (*p != '\0') {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != '/')
            e++;
        size_t len = (size_t)(e - p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (o > 1) {
                o--; /* the '/' after the last component */
                while (out[o - 1] != '/')
                    o--;
            }
        } else {
            memcpy(out + o, p, len);
            o += len;
            out[o++] = '/';
        }
        p = e;
    }
    if (o > 1)
        o--;
    out[o] = '\0';
    return out;
}

/* `rel` resolved against the absolute folder `base` (or normalized as is
 * when absolute). Returns a new string, or NULL when out of memory. */
static char *config_path_join(const char *base, const char *rel)
{
    if (rel[0] == '/')
        return config_path_normalize(rel);
    char *joined = config_strf("%s/%s", base, rel);
    if (joined == NULL)
        return NULL;
    char *norm = config_path_normalize(joined);
    free(joined);
    return norm;
}

/* ------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------ */

static bool config_is_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

/* Decimal integer with an optional '-', no overflow. */
static bool config_parse_ll(const char *s, long long *out)
{
    bool neg = *s == '-';
    if (!config_is_digits(s + neg))
        return false;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno != 0)
        return false;
    *out = v;
    return true;
}

/* Byte count: digits and an optional k/K, m/M or g/G suffix (powers of
 * 1024). Values past 2^62 are rejected as "not a size". */
static bool config_parse_size(const char *s, long long *out)
{
    size_t n = strlen(s);
    long long mult = 1;
    if (n > 0) {
        switch (s[n - 1]) {
        case 'k':
        case 'K':
            mult = CONFIG_KIB;
            n--;
            break;
        case 'm':
        case 'M':
            mult = CONFIG_MIB;
            n--;
            break;
        case 'g':
        case 'G':
            mult = CONFIG_GIB;
            n--;
            break;
        default: break;
        }
    }
    if (n == 0 || n > 18)
        return false;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > (1LL << 62) / mult)
        return false;
    *out = v * mult;
    return true;
}

static bool config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* A port number 1..65535 given as decimal digits. */
static bool config_parse_port(const char *s, size_t n, int *out)
{
    if (n == 0 || n > 5)
        return false;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *out = v;
    return true;
}

/* Formats a number bound the way it is written in the file. */
static void config_format_number(enum config_type type, long long v, char *buf, size_t len)
{
    if (type == CONFIG_T_MODE)
        snprintf(buf, len, "%04llo", v);
    else if (type == CONFIG_T_SIZE && v >= CONFIG_GIB && v % CONFIG_GIB == 0)
        snprintf(buf, len, "%lldG", v / CONFIG_GIB);
    else if (type == CONFIG_T_SIZE && v >= CONFIG_MIB && v % CONFIG_MIB == 0)
        snprintf(buf, len, "%lldM", v / CONFIG_MIB);
    else
        snprintf(buf, len, "%lld", v);
}

/* The port field that goes with a CONFIG_T_LISTEN key's host field. */
static int *config_listen_port(const struct config_key *key, const void *base)
{
    const struct config *cfg = base;
    return (int *)(key->offset == offsetof(struct config, tls_listen_host) ? &cfg->tls_listen_port
                                                                           : &cfg->listen_port);
}

/* Parses "host:port" or "[v6]:port" (or "" = no listener) into the host
 * and port fields of `key` (listen, tls_listen) in cfg. */
static bool config_set_listen(struct config_parse *st, const struct config_key *key, struct config *cfg,
                              const char *value, int line)
{
    const char *host, *port;
    const char *kname = key->name;
    char **hostp = (char **)(void *)((char *)cfg + key->offset);
    int *portp = config_listen_port(key, cfg);
    size_t hostlen;
    if (*value == '\0') {
        free(*hostp);
        *hostp = NULL;
        *portp = 0;
        return true;
    }
    if (*value == '[') {
        const char *close = strchr(value, ']');
        if (close == NULL) {
            config_fail(st, line, "%s: missing ']' after the IPv6 address", kname);
            return false;
        }
        host = value + 1;
        hostlen = (size_t)(close - host);
        char addr[INET6_ADDRSTRLEN + 64];
        size_t alen = strcspn(host, "%]"); /* a %zone is allowed after the address */
        struct in6_addr a6;
        if (alen >= sizeof addr) {
            alen = sizeof addr - 1;
        }
        memcpy(addr, host, alen);
        addr[alen] = '\0';
        if (hostlen == 0 || inet_pton(AF_INET6, addr, &a6) != 1) {
            config_fail(st, line, "%s: '%.*s' is not an IPv6 address", kname, (int)hostlen, host);
            return false;
        }
        if (close[1] != ':') {
            config_fail(st, line, "%s: expected [address]:port, e.g. [::1]:7654", kname);
            return false;
        }
        port = close + 2;
    } else {
        const char *colon = strrchr(value, ':');
        if (colon == NULL) {
            config_fail(st, line, "%s: expected host:port, e.g. 127.0.0.1:7654 or [::1]:7654", kname);
            return false;
        }
        host = value;
        hostlen = (size_t)(colon - value);
        port = colon + 1;
        if (hostlen == 0) {
            config_fail(st, line,
                        "%s: missing host (0.0.0.0:PORT or [::]:PORT listen on "
                        "every interface)",
                        kname);
            return false;
        }
        for (size_t i = 0; i < hostlen; i++) {
            unsigned char c = (unsigned char)host[i];
            if (c == ':') {
                config_fail(st, line, "%s: put an IPv6 address in brackets, e.g. [::1]:7654", kname);
                return false;
            }
            if (!isalnum(c) && c != '.' && c != '-' && c != '_') {
                config_fail(st, line, "%s: bad host '%.*s'", kname, (int)hostlen, host);
                return false;
            }
        }
    }
    int p;
    if (!config_parse_port(port, strlen(port), &p)) {
        config_fail(st, line, "%s: bad port '%s' (1..65535)", kname, port);
        return false;
    }
    char *h = config_strndup(host, hostlen);
    if (h == NULL) {
        config_oom(st);
        return false;
    }
    free(*hostp);
    *hostp = h;
    *portp = p;
    return true;
}

/* Checks that the schema file can be opened for reading now, so a typo is
 * a config error rather than a start-up failure later. */
static bool config_check_readable(struct config_parse *st, const char *name, const char *path, int line)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        config_fail(st, line, "%s: cannot read %s: %s", name, path, strerror(errno));
        return false;
    }
    struct stat sb;
    bool ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
    close(fd);
    if (!ok)
        config_fail(st, line, "%s: %s is not a regular file", name, path);
    return ok;
}

/* Checks that a folder key (migrations) names a folder that exists now. */
static bool config_check_folder(struct config_parse *st, const struct config_key *key, const char *path,
                                int line)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        config_fail(st, line, "%s: cannot open %s: %s", key->name, path, strerror(errno));
        return false;
    }
    if (!S_ISDIR(sb.st_mode)) {
        config_fail(st, line, "%s: %s is not a folder", key->name, path);
        return false;
    }
    return true;
}

/* Sets an enum field to the index of value among names[0..n) (any case);
 * otherwise records "key: 'value' is not one of a, b, c" and returns
 * false. */
static bool config_set_enum(struct config_parse *st, const struct config_key *key, int *field,
                            const char *const *names, size_t n, const char *value, int line)
{
    char list[128] = "";

    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(value, names[i]) == 0) {
            *field = (int)i;
            return true;
        }
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    }
    config_fail(st, line, "%s: '%s' is not one of %s", key->name, value, list);
    return false;
}

/* Sets the field of `key` in `base` (a struct config or struct bind_conf,
 * per key->scope) from the text `value`. Relative paths resolve against
 * st->cfg->dir. On a bad value records "file:line: key: why" and returns
 * false, leaving the field unchanged. */
static bool config_key_set(struct config_parse *st, const struct config_key *key, void *base,
                           const char *value, int line)
{
    char *field = (char *)base + key->offset;
    long long v = 0;
    char lo[32], hi[32];

    switch (key->type) {
    case CONFIG_T_INT:
    case CONFIG_T_SIZE:
    case CONFIG_T_MODE:
        if (key->type == CONFIG_T_INT && !config_parse_ll(value, &v)) {
            config_fail(st, line, "%s: '%s' is not a number", key->name, value);
            return false;
        }
        if (key->type == CONFIG_T_SIZE && !config_parse_size(value, &v)) {
            config_fail(st, line,
                        "%s: '%s' is not a size (a number with an optional k, M or "
                        "G suffix)",
                        key->name, value);
            return false;
        }
        if (key->type == CONFIG_T_MODE) {
            bool ok = config_is_digits(value) && strlen(value) <= 6;
            for (const char *c = value; ok && *c; c++)
                ok = *c <= '7';
            if (!ok) {
                config_fail(st, line, "%s: '%s' is not an octal mode (e.g. 0660)", key->name, value);
                return false;
            }
            v = strtoll(value, NULL, 8);
        }
        if (v < key->min || v > key->max) {
            config_format_number(key->type, key->min, lo, sizeof lo);
            config_format_number(key->type, key->max, hi, sizeof hi);
            config_fail(st, line, "%s: %s is out of range (%s..%s)", key->name, value, lo, hi);
            return false;
        }
        if (key->type == CONFIG_T_SIZE)
            *(size_t *)(void *)field = (size_t)v;
        else
            *(int *)(void *)field = (int)v;
        return true;

    case CONFIG_T_BOOL: {
        bool b;
        if (!config_parse_bool(value, &b)) {
            config_fail(st, line, "%s: '%s' is not a boolean (on/off, true/false, yes/no, 1/0)", key->name,
                        value);
            return false;
        }
        *(bool *)(void *)field = b;
        return true;
    }

    case CONFIG_T_LOG_LEVEL:
        return config_set_enum(st, key, (int *)(void *)field, config_level_names,
                               sizeof config_level_names / sizeof config_level_names[0], value, line);

    case CONFIG_T_ON_DAMAGE:
        return config_set_enum(st, key, (int *)(void *)field, config_damage_names,
                               sizeof config_damage_names / sizeof config_damage_names[0], value, line);

    case CONFIG_T_STRING:
    case CONFIG_T_DATA_PATH: {
        /* Kept as written (config_finish() resolves a data path against
         * data_dir). */
        char *copy = NULL;
        if (*value != '\0' && (copy = strdup(value)) == NULL) {
            config_oom(st);
            return false;
        }
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = copy;
        return true;
    }

    case CONFIG_T_LISTEN: return config_set_listen(st, key, base, value, line);

    case CONFIG_T_CLIENT_AUTH:
        return config_set_enum(st, key, (int *)(void *)field, config_client_auth_names,
                               sizeof config_client_auth_names / sizeof config_client_auth_names[0], value,
                               line);

    case CONFIG_T_TLS_PROTOCOLS: {
        int bits = 0;
        for (const char *w = value; *w != '\0';) {
            size_t n = strcspn(w, " \t,");
            if (n == 7 && strncasecmp(w, "TLSv1.2", 7) == 0)
                bits |= CONFIG_TLS_1_2;
            else if (n == 7 && strncasecmp(w, "TLSv1.3", 7) == 0)
                bits |= CONFIG_TLS_1_3;
            else if (n > 0) {
                config_fail(st, line, "%s: '%.*s' is not TLSv1.2 or TLSv1.3 (older versions are not offered)",
                            key->name, (int)n, w);
                return false;
            }
            w += n;
            w += strspn(w, " \t,");
        }
        if (bits == 0) {
            config_fail(st, line, "%s: name TLSv1.2, TLSv1.3 or both", key->name);
            return false;
        }
        *(int *)(void *)field = bits;
        return true;
    }

    case CONFIG_T_SOCKET:
    case CONFIG_T_DIR:
    case CONFIG_T_SCHEMA:
    case CONFIG_T_FOLDER: {
        char *path = NULL;
        if (*value != '\0' || key->type == CONFIG_T_DIR) {
            path = config_path_join(st->cfg->dir, value);
            if (path == NULL) {
                config_oom(st);
                return false;
            }
        }
        if (path != NULL && key->type == CONFIG_T_SOCKET &&
            strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
            config_fail(st, line, "%s: %s is too long for a unix socket (%zu bytes, at most %zu)", key->name,
                        path, strlen(path), sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
            free(path);
            return false;
        }
        if (path != NULL && key->type == CONFIG_T_SCHEMA &&
            !config_check_readable(st, key->name, path, line)) {
            free(path);
            return false;
        }
        if (path != NULL && key->type == CONFIG_T_FOLDER && !config_check_folder(st, key, path, line)) {
            free(path);
            return false;
        }
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = path;
        return true;
    }
    }
    return false;
}

/* Frees what config_key_set() allocated for `key` in `base`. */
static void config_key_release(const struct config_key *key, void *base)
{
    char **slot = (char **)(void *)((char *)base + key->offset);
    switch (key->type) {
    case CONFIG_T_LISTEN:
    case CONFIG_T_SOCKET:
    case CONFIG_T_DIR:
    case CONFIG_T_SCHEMA:
    case CONFIG_T_FOLDER:
    case CONFIG_T_DATA_PATH:
    case CONFIG_T_STRING:
        free(*slot);
        *slot = NULL;
        break;
    default: break;
    }
}

/* The value of `key` in `base` as it would be written in the file (paths
 * resolved, "" for none). Returns a new string, or NULL when out of
 * memory. */
static char *config_key_format(const struct config_key *key, const void *base)
{
    const char *field = (const char *)base + key->offset;
    char buf[64];
    switch (key->type) {
    case CONFIG_T_INT:
    case CONFIG_T_MODE:
        config_format_number(key->type, *(const int *)(const void *)field, buf, sizeof buf);
        return config_strf("%s", buf);
    case CONFIG_T_SIZE:
        config_format_number(key->type, (long long)*(const size_t *)(const void *)field, buf, sizeof buf);
        return config_strf("%s", buf);
    case CONFIG_T_BOOL: return config_strf("%s", *(const bool *)(const void *)field ? "on" : "off");
    case CONFIG_T_LOG_LEVEL:
        return config_strf("%s", config_log_level_name(*(const enum log_level *)(const void *)field));
    case CONFIG_T_ON_DAMAGE: {
        unsigned d = (unsigned)*(const enum snapshot_damage *)(const void *)field;
        return config_strf("%s", d < sizeof config_damage_names / sizeof config_damage_names[0]
                                     ? config_damage_names[d]
                                     : "?");
    }
    case CONFIG_T_LISTEN: {
        const char *host = *(char *const *)(const void *)field;
        if (host == NULL)
            return config_strf("%s", "");
        bool v6 = strchr(host, ':') != NULL;
        return config_strf("%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", *config_listen_port(key, base));
    }
    case CONFIG_T_CLIENT_AUTH: {
        unsigned a = (unsigned)*(const enum tls_client_auth *)(const void *)field;
        return config_strf("%s", a < sizeof config_client_auth_names / sizeof config_client_auth_names[0]
                                     ? config_client_auth_names[a]
                                     : "?");
    }
    case CONFIG_T_TLS_PROTOCOLS: {
        int bits = *(const int *)(const void *)field;
        return config_strf("%s%s%s", bits & CONFIG_TLS_1_2 ? "TLSv1.2" : "",
                           bits == (CONFIG_TLS_1_2 | CONFIG_TLS_1_3) ? " " : "",
                           bits & CONFIG_TLS_1_3 ? "TLSv1.3" : "");
    }
    case CONFIG_T_SOCKET:
    case CONFIG_T_DIR:
    case CONFIG_T_SCHEMA:
    case CONFIG_T_FOLDER:
    case CONFIG_T_DATA_PATH:
    case CONFIG_T_STRING: {
        const char *s = *(char *const *)(const void *)field;
        return config_strf("%s", s ? s : "");
    }
    }
    return NULL;
}

/* Applies the defaults of every key of `scope` to `base`. */
static bool config_apply_defaults(struct config_parse *st, enum config_scope scope, void *base)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (config_keys[i].scope == scope &&
            !config_key_set(st, &config_keys[i], base, config_keys[i].def, 0))
            return false;
    return true;
}

/* ------------------------------------------------------------------------
 * Bind URLs
 * ------------------------------------------------------------------------ */

static bool config_valid_bind_name(const char *s)
{
    if (*s == '\0' || strlen(s) > CONFIG_MAX_BIND_NAME)
        return false;
    for (; *s != '\0'; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return false;
    return true;
}

/* Decodes %XX escapes in s[0..n). Returns 0 and a new string in *out, -1
 * on a bad escape (or %00, which libpq could not take), -2 when out of
 * memory. */
static int config_pct_decode(const char *s, size_t n, char **out)
{
    size_t len;
    char *d = malloc(n + 1);
    if (d == NULL)
        return -2;
    if (codec_pct_decode(s, n, d, n, &len) != 0) {
        free(d);
        return -1;
    }
    *out = d;
    return 0;
}

/* Appends the libpq pair key = decoded s[0..n) to the bind. `what` names
 * the URL part for error messages, which never quote the text itself (it
 * may be the password). */
static bool config_pg_add(struct config_parse *st, struct bind_conf *b, size_t *n, const char *key,
                          size_t keylen, const char *s, size_t len, const char *what)
{
    char *k = config_strndup(key, keylen);
    char *v = NULL;
    int rc = k ? config_pct_decode(s, len, &v) : -2;
    if (rc == -1) {
        free(k);
        config_fail(st, st->lineno, "bind '%s': bad percent-escape in the %s", b->name, what);
        return false;
    }
    if (rc != 0) {
        free(k);
        config_oom(st);
        return false;
    }
    b->pg_keywords[*n] = k;
    b->pg_values[*n] = v;
    (*n)++;
    return true;
}

/* Growable string for url_redacted. */
struct config_sbuf {
    char *s;
    size_t len, cap;
    bool oom;
};

static void config_sbuf_add(struct config_sbuf *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t ncap = (sb->len + n + 1) * 2;
        char *p = realloc(sb->s, ncap);
        if (p == NULL) {
            sb->oom = true;
            return;
        }
        sb->s = p;
        sb->cap = ncap;
    }
    memcpy(sb->s + sb->len, s, n);
    sb->len += n;
    sb->s[sb->len] = '\0';
}

/*
 * postgresql://[user[:password]@][host|[v6]][:port][/dbname][?key=value&...]
 * `rest` is the text after "://". Fills pg_keywords/pg_values (host, port,
 * user, password, dbname, then the options as written) and url_redacted.
 */
static bool config_parse_pg(struct config_parse *st, struct bind_conf *b, const char *rest)
{
    size_t prefix = (size_t)(rest - b->url); /* "postgresql://" */
    const char *query = strchr(rest, '?');
    size_t mainlen = query ? (size_t)(query - rest) : strlen(rest);
    size_t netlen = strcspn(rest, "/?");
    const char *net = rest, *netend = rest + netlen;
    /* An '@' past the authority means a user name or password holds an
     * unescaped '/' or '?', so the text after it may be part of the
     * password: then error messages quote nothing from the URL. */
    bool quote = strchr(netend, '@') == NULL;
    const char *hint = quote ? ""
                             : "; write '/', '?' and '@' in a user name or password as "
                               "%2F, %3F and %40";

    size_t nopts = 1;
    if (query != NULL)
        for (const char *c = query; *c; c++)
            nopts += *c == '&';
    b->pg_keywords = calloc(6 + nopts, sizeof *b->pg_keywords);
    b->pg_values = calloc(6 + nopts, sizeof *b->pg_values);
    if (b->pg_keywords == NULL || b->pg_values == NULL) {
        config_oom(st);
        return false;
    }

    struct config_sbuf red = {0};
    config_sbuf_add(&red, b->url, prefix);
    size_t n = 0;

    /* user[:password]@ -- the last '@' of the authority, as Python's
     * urllib does, so an unescaped '@' in a password still works. */
    const char *user = NULL, *pass = NULL, *at = NULL;
    size_t userlen = 0, passlen = 0;
    for (const char *c = net; c < netend; c++)
        if (*c == '@')
            at = c;
    if (at != NULL) {
        user = net;
        const char *colon = memchr(net, ':', (size_t)(at - net));
        userlen = (size_t)((colon ? colon : at) - net);
        if (colon != NULL) {
            pass = colon + 1;
            passlen = (size_t)(at - pass);
        }
        config_sbuf_add(&red, user, userlen);
        if (pass != NULL)
            config_sbuf_add(&red, ":***", 4);
        config_sbuf_add(&red, "@", 1);
        net = at + 1;
    }

    /* host[:port] or [v6][:port] */
    const char *host = net, *port = NULL;
    size_t hostlen, portlen = 0;
    const char *after;
    if (net < netend && *net == '[') {
        const char *close = memchr(net, ']', (size_t)(netend - net));
        if (close == NULL) {
            config_fail(st, st->lineno, "bind '%s': missing ']' after the IPv6 host", b->name);
            goto fail;
        }
        host = net + 1;
        hostlen = (size_t)(close - host);
        after = close + 1;
    } else {
        after = memchr(net, ':', (size_t)(netend - net));
        if (after == NULL)
            after = netend;
        hostlen = (size_t)(after - net);
    }
    if (after < netend) {
        if (*after != ':') {
            config_fail(st, st->lineno, "bind '%s': unexpected text after the IPv6 host", b->name);
            goto fail;
        }
        port = after + 1;
        portlen = (size_t)(netend - port);
        int p;
        if (!config_parse_port(port, portlen, &p)) {
            config_fail(st, st->lineno, "bind '%s': bad port '%.*s' (1..65535)%s", b->name,
                        quote ? (int)portlen : 3, quote ? port : "***", hint);
            goto fail;
        }
    }
    config_sbuf_add(&red, net, (size_t)(rest + mainlen - net));

    if (hostlen > 0 && !config_pg_add(st, b, &n, "host", 4, host, hostlen, "host"))
        goto fail;
    if (port != NULL && !config_pg_add(st, b, &n, "port", 4, port, portlen, "port"))
        goto fail;
    if (userlen > 0 && !config_pg_add(st, b, &n, "user", 4, user, userlen, "user name"))
        goto fail;
    if (pass != NULL && !config_pg_add(st, b, &n, "password", 8, pass, passlen, "password"))
        goto fail;
    if (netlen < mainlen) { /* "/dbname" */
        const char *db = rest + netlen + 1;
        size_t dblen = mainlen - netlen - 1;
        if (dblen > 0 && !config_pg_add(st, b, &n, "dbname", 6, db, dblen, "database name"))
            goto fail;
    }

    if (query != NULL) {
        config_sbuf_add(&red, "?", 1);
        const char *opt = query + 1;
        for (;;) {
            size_t optlen = strcspn(opt, "&");
            if (optlen > 0) {
                const char *eq = memchr(opt, '=', optlen);
                if (eq == NULL) {
                    config_fail(st, st->lineno,
                                "bind '%s': URL option '%.*s' has no "
                                "'=value'%s",
                                b->name, quote ? (int)optlen : 3, quote ? opt : "***", hint);
                    goto fail;
                }
                if (eq == opt) {
                    config_fail(st, st->lineno, "bind '%s': URL option without a name", b->name);
                    goto fail;
                }
                size_t keylen = (size_t)(eq - opt);
                if (!config_pg_add(st, b, &n, opt, keylen, eq + 1, optlen - keylen - 1, "URL options"))
                    goto fail;
                if (strcmp(b->pg_keywords[n - 1], "password") == 0) {
                    config_sbuf_add(&red, opt, keylen);
                    config_sbuf_add(&red, "=***", 4);
                } else {
                    config_sbuf_add(&red, opt, optlen);
                }
            }
            if (opt[optlen] == '\0')
                break;
            config_sbuf_add(&red, "&", 1);
            opt += optlen + 1;
        }
    }
    if (red.oom) {
        config_oom(st);
        goto fail;
    }
    b->url_redacted = red.s;
    return true;
fail:
    free(red.s);
    return false;
}

/* sqlite://, sqlite:///rel.db, sqlite:////abs.db, sqlite:///:memory:, with
 * optional ?options, which are ignored with a warning. Leaves a relative
 * path in b->path for config_finish() to resolve against data_dir. */
static bool config_parse_sqlite(struct config_parse *st, struct bind_conf *b, const char *rest)
{
    size_t pathlen = strcspn(rest, "?");
    const char *query = rest[pathlen] == '?' ? rest + pathlen + 1 : NULL;
    if (pathlen > 0 && rest[0] != '/') {
        config_fail(st, st->lineno,
                    "bind '%s': an sqlite URL has no host; write "
                    "sqlite:///relative.db or sqlite:////absolute/path.db",
                    b->name);
        return false;
    }
    const char *path = pathlen > 0 ? rest + 1 : rest;
    size_t len = pathlen > 0 ? pathlen - 1 : 0;
    if (len == 0 || (len == 8 && memcmp(path, ":memory:", 8) == 0)) {
        b->type = BIND_SQLITE_MEMORY;
    } else {
        b->type = BIND_SQLITE_FILE;
        b->path = config_strndup(path, len);
        if (b->path == NULL) {
            config_oom(st);
            return false;
        }
    }
    b->url_redacted = config_strf("%s", b->url);
    if (b->url_redacted == NULL) {
        config_oom(st);
        return false;
    }
    while (query != NULL) {
        size_t optlen = strcspn(query, "&");
        size_t namelen = strcspn(query, "&=");
        if (optlen > 0)
            config_warn(st, st->lineno, "unknown option '%.*s' in URL ignored%s", (int)namelen, query,
                        b->type == BIND_SQLITE_MEMORY ? "; the in-memory bind is always shared" : "");
        query = query[optlen] == '&' ? query + optlen + 1 : NULL;
    }
    return !st->failed;
}

/* Parses b->url into b's type, path or libpq arrays, and url_redacted.
 * Error messages name the bind and the faulty part, never the whole URL. */
static bool config_parse_url(struct config_parse *st, struct bind_conf *b)
{
    const char *url = b->url;
    const char *sep = strstr(url, "://");
    if (*url == '\0') {
        config_fail(st, st->lineno, "bind '%s': empty URL", b->name);
        return false;
    }
    if (sep == NULL) {
        config_fail(st, st->lineno,
                    "bind '%s': a URL must look like scheme://..., e.g. "
                    "sqlite:///app.db or postgresql://user@host/dbname",
                    b->name);
        return false;
    }
    size_t schemelen = (size_t)(sep - url);
    size_t baselen = strcspn(url, "+");
    if (baselen > schemelen)
        baselen = schemelen;
    bool printable = schemelen > 0 && schemelen <= 32;
    for (size_t i = 0; i < schemelen && printable; i++)
        printable = isalnum((unsigned char)url[i]) || url[i] == '+' || url[i] == '_' || url[i] == '.' ||
                    url[i] == '-';
    bool driver_ok = true; /* "sqlite+pysqlite": any [A-Za-z0-9_]+ driver */
    if (baselen < schemelen) {
        driver_ok = schemelen - baselen > 1;
        for (size_t i = baselen + 1; i < schemelen && driver_ok; i++)
            driver_ok = isalnum((unsigned char)url[i]) || url[i] == '_';
    }
    if (!printable || !driver_ok) {
        config_fail(st, st->lineno, "bind '%s': bad URL scheme", b->name);
        return false;
    }
    if (baselen == 6 && strncasecmp(url, "sqlite", 6) == 0)
        return config_parse_sqlite(st, b, sep + 3);
    if ((baselen == 10 && strncasecmp(url, "postgresql", 10) == 0) ||
        (baselen == 8 && strncasecmp(url, "postgres", 8) == 0)) {
        b->type = BIND_POSTGRES;
        return config_parse_pg(st, b, sep + 3);
    }
    config_fail(st, st->lineno,
                "bind '%s': unsupported URL scheme '%.*s' (sqlmux serves "
                "sqlite:// and postgresql:// binds)",
                b->name, (int)schemelen, url);
    return false;
}

/* ------------------------------------------------------------------------
 * Handlers for each kind of section
 * ------------------------------------------------------------------------ */

/* "key = value" in [server] or [bind.NAME]: looks the key up in the table
 * and sets it in `base`, refusing unknown and repeated keys. */
static bool config_set_option(struct config_parse *st, enum config_scope scope, void *base, int *seen,
                              const char *name, const char *value)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *key = &config_keys[i];
        if (key->scope != scope || strcmp(key->name, name) != 0)
            continue;
        if (seen[i] != 0) {
            config_fail(st, st->lineno, "duplicate key '%s' in %s (first set on line %d)", name,
                        st->section_label, seen[i]);
            return false;
        }
        seen[i] = st->lineno;
        return config_key_set(st, key, base, value, st->lineno);
    }
    config_fail(st, st->lineno, "unknown key '%s' in %s", name, st->section_label);
    return false;
}

/* Frees the strings of one bind (not the struct itself). */
static void config_bind_release(struct bind_conf *b)
{
    free(b->name);
    free(b->url);
    free(b->url_redacted);
    free(b->path);
    free(b->schema);
    free(b->snapshot);
    if (b->pg_keywords != NULL)
        for (size_t i = 0; b->pg_keywords[i] != NULL; i++)
            free(b->pg_keywords[i]);
    if (b->pg_values != NULL)
        for (size_t i = 0; b->pg_keywords != NULL && b->pg_keywords[i] != NULL; i++)
            free(b->pg_values[i]);
    free(b->pg_keywords);
    free(b->pg_values);
}

/* "name = URL" in [binds]. The bind goes into cfg->binds before its URL is
 * parsed, so config_free() cleans up after a half-parsed URL. */
static bool config_add_bind(struct config_parse *st, const char *name, const char *url)
{
    struct config *cfg = st->cfg;
    if (!config_valid_bind_name(name)) {
        config_fail(st, st->lineno,
                    "bad bind name '%s' (letters, digits, '_' and '-', at "
                    "most %d)",
                    name, CONFIG_MAX_BIND_NAME);
        return false;
    }
    for (size_t i = 0; i < cfg->nbinds; i++) {
        if (strcmp(cfg->binds[i].name, name) == 0) {
            config_fail(st, st->lineno, "duplicate bind '%s' (first defined on line %d)", name,
                        cfg->binds[i].line);
            return false;
        }
    }
    if (!config_reserve(&cfg->binds, &st->binds_cap, cfg->nbinds, sizeof *cfg->binds)) {
        config_oom(st);
        return false;
    }
    struct bind_conf *b = &cfg->binds[cfg->nbinds++];
    memset(b, 0, sizeof *b);
    b->line = st->lineno;
    b->name = config_strf("%s", name);
    b->url = config_strf("%s", url);
    if (b->name == NULL || b->url == NULL) {
        config_oom(st);
        return false;
    }
    return config_apply_defaults(st, CONFIG_BIND, b) && config_parse_url(st, b);
}

/* "table = bind" in [tables]. The bind may be defined further down, so
 * the name is kept in st->rule_binds and resolved by config_finish(). */
static bool config_add_rule(struct config_parse *st, const char *name, const char *bind)
{
    struct config *cfg = st->cfg;
    for (const char *c = name; *c != '\0'; c++) {
        if (iscntrl((unsigned char)*c) || *c == '"' || *c == '`' || *c == '\'') {
            config_fail(st, st->lineno,
                        "bad table name '%s': write table names without "
                        "quotes",
                        name);
            return false;
        }
    }
    if (*bind == '\0') {
        config_fail(st, st->lineno, "table '%s': missing bind name after '='", name);
        return false;
    }
    char *pattern = strdup(name);
    if (pattern == NULL) {
        config_oom(st);
        return false;
    }
    for (char *c = pattern; *c != '\0'; c++)
        *c = (char)tolower((unsigned char)*c);
    size_t len = strlen(pattern);
    const struct table_rule *dup = config_rule_find(cfg, NULL, 0, pattern, len);
    if (dup != NULL) {
        config_fail(st, st->lineno, "duplicate table rule '%s' (first on line %d)", pattern, dup->line);
        free(pattern);
        return false;
    }
    bool is_pattern = strchr(pattern, '*') != NULL;
    char *bind_copy = strdup(bind);
    if (bind_copy == NULL ||
        !config_reserve(&st->rule_binds, &st->rule_binds_cap, cfg->nrules, sizeof *st->rule_binds) ||
        !config_reserve(&cfg->rules, &st->rules_cap, cfg->nrules, sizeof *cfg->rules) ||
        (is_pattern && !config_reserve(&cfg->pattern_rules, &st->patterns_cap, cfg->npatterns,
                                       sizeof *cfg->pattern_rules)) ||
        !config_index_add(&cfg->rule_index, hash_bytes(pattern, len), cfg->nrules)) {
        free(pattern);
        free(bind_copy);
        config_oom(st);
        return false;
    }
    if (is_pattern)
        cfg->pattern_rules[cfg->npatterns++] = cfg->nrules;
    struct table_rule *r = &cfg->rules[cfg->nrules];
    r->pattern = pattern;
    r->is_pattern = is_pattern;
    r->bind = 0;
    r->line = st->lineno;
    st->rule_binds[cfg->nrules] = bind_copy;
    cfg->nrules++;
    return true;
}

/* ------------------------------------------------------------------------
 * Users
 * ------------------------------------------------------------------------ */

static const char *const config_grant_names[] = {
    [GRANT_NONE] = "none",
    [GRANT_READ] = "read",
    [GRANT_READ_WRITE] = "read-write",
};

const char *config_grant_name(enum grant g)
{
    if ((unsigned)g < sizeof config_grant_names / sizeof config_grant_names[0])
        return config_grant_names[g];
    return "?";
}

/* Keys of the user indexes: base is the array, item the position. */
static const char *config_user_section_name(const void *base, size_t item)
{
    return ((const struct config_user_section *)base)[item].name;
}

static const char *config_user_section_cn(const void *base, size_t item)
{
    return ((const struct config_user_section *)base)[item].cert_cn;
}

static const char *config_user_name(const void *base, size_t item)
{
    return ((const struct user_conf *)base)[item].name;
}

/* Enters [user.NAME]; a second header with the same NAME continues the
 * first. */
static bool config_enter_user(struct config_parse *st, const char *name)
{
    if (!config_valid_bind_name(name)) {
        config_fail(st, st->lineno, "bad user name in [user.%s] (letters, digits, '_' and '-', at most %d)",
                    name, CONFIG_MAX_BIND_NAME);
        return false;
    }
    st->section = CONFIG_SEC_USER;
    size_t found =
        config_index_find(&st->user_sections_by_name, name, config_user_section_name, st->user_sections);
    if (found != SIZE_MAX) {
        st->user_section = found;
        return true;
    }
    if (!config_reserve(&st->user_sections, &st->user_sections_cap, st->nuser_sections,
                        sizeof *st->user_sections) ||
        !config_index_add(&st->user_sections_by_name, hash_bytes(name, strlen(name)), st->nuser_sections)) {
        config_oom(st);
        return false;
    }
    struct config_user_section *us = &st->user_sections[st->nuser_sections++];
    memset(us, 0, sizeof *us);
    us->line = st->lineno;
    us->name = config_strf("%s", name);
    if (us->name == NULL) {
        config_oom(st);
        return false;
    }
    st->user_section = st->nuser_sections - 1;
    return true;
}

/* Only modern "$id$..." crypt(3) hashes that libcrypt can check (yescrypt,
 * bcrypt, SHA-512, ...): a plain password, or a DES hash that any word of
 * two letters would pass as, is refused. */
static bool config_check_password(struct config_parse *st, const char *user, const char *hash)
{
    int ok = hash[0] == '$' ? crypt_checksalt(hash) : CRYPT_SALT_INVALID;

    if (ok == CRYPT_SALT_INVALID || ok == CRYPT_SALT_METHOD_DISABLED) {
        config_fail(st, st->lineno,
                    "password of user '%s' is not a crypt(3) hash this system supports; store the hash "
                    "that `sqlmuxd passwd` prints, never the password itself",
                    user);
        return false;
    }
    if (ok != CRYPT_SALT_OK)
        config_warn(st, st->lineno,
                    "password of user '%s' uses a weak hash method; make a new one with `sqlmuxd passwd`",
                    user);
    return true;
}

/* One "key = value" of a [user.NAME] section. */
static bool config_user_option(struct config_parse *st, const char *name, const char *value)
{
    struct config_user_section *us = &st->user_sections[st->user_section];

    if (strcmp(name, "password") == 0) {
        if (us->password != NULL) {
            config_fail(st, st->lineno, "duplicate key 'password' in [user.%s] (first set on line %d)",
                        us->name, us->password_line);
            return false;
        }
        if (!config_check_password(st, us->name, value))
            return false;
        us->password = config_strf("%s", value);
        us->password_line = st->lineno;
        if (us->password == NULL)
            config_oom(st);
        return us->password != NULL;
    }
    if (strcmp(name, "admin") == 0) {
        if (us->admin_line != 0) {
            config_fail(st, st->lineno, "duplicate key 'admin' in [user.%s] (first set on line %d)", us->name,
                        us->admin_line);
            return false;
        }
        if (!config_parse_bool(value, &us->admin)) {
            config_fail(st, st->lineno, "admin: '%s' is not a boolean (on/off, true/false, yes/no, 1/0)",
                        value);
            return false;
        }
        us->admin_line = st->lineno;
        return true;
    }
    if (strcmp(name, "cert_cn") == 0) {
        if (us->cert_cn != NULL) {
            config_fail(st, st->lineno, "duplicate key 'cert_cn' in [user.%s] (first set on line %d)",
                        us->name, us->cert_cn_line);
            return false;
        }
        if (*value == '\0') {
            config_fail(st, st->lineno, "cert_cn: empty (the common name of the client certificate)");
            return false;
        }
        size_t other =
            config_index_find(&st->user_sections_by_cn, value, config_user_section_cn, st->user_sections);
        if (other != SIZE_MAX) {
            const struct config_user_section *o = &st->user_sections[other];
            config_fail(st, st->lineno, "cert_cn = %s is also the cert_cn of [user.%s] (line %d)", value,
                        o->name, o->cert_cn_line);
            return false;
        }
        us->cert_cn = strdup(value);
        us->cert_cn_line = st->lineno;
        if (us->cert_cn == NULL ||
            !config_index_add(&st->user_sections_by_cn, hash_bytes(value, strlen(value)), st->user_section)) {
            config_oom(st);
            return false;
        }
        return true;
    }
    if (strncmp(name, "grant.", 6) == 0) {
        const char *bind = name + 6;
        size_t level;
        if (strcmp(bind, "*") != 0 && !config_valid_bind_name(bind)) {
            config_fail(st, st->lineno, "%s: bad bind name (a bind from [binds], or * for every other bind)",
                        name);
            return false;
        }
        for (level = 0; level < sizeof config_grant_names / sizeof config_grant_names[0]; level++)
            if (strcmp(value, config_grant_names[level]) == 0)
                break;
        if (level == sizeof config_grant_names / sizeof config_grant_names[0]) {
            config_fail(st, st->lineno, "%s: '%s' is not one of none, read, read-write", name, value);
            return false;
        }
        for (size_t i = 0; i < us->ngrants; i++) {
            if (strcmp(us->grants[i].bind, bind) == 0) {
                config_fail(st, st->lineno, "duplicate key '%s' in [user.%s] (first set on line %d)", name,
                            us->name, us->grants[i].line);
                return false;
            }
        }
        if (!config_reserve(&us->grants, &us->grants_cap, us->ngrants, sizeof *us->grants)) {
            config_oom(st);
            return false;
        }
        struct config_grant *g = &us->grants[us->ngrants];
        g->bind = config_strf("%s", bind);
        g->level = (enum grant)level;
        g->line = st->lineno;
        if (g->bind == NULL) {
            config_oom(st);
            return false;
        }
        us->ngrants++;
        return true;
    }
    config_fail(st, st->lineno,
                "unknown key '%s' in [user.%s] (password, admin, cert_cn, grant.BIND or grant.*)", name,
                us->name);
    return false;
}

/* Turns the [user.NAME] sections into cfg->users, once the binds are known
 * and in their final order. */
static bool config_finish_users(struct config_parse *st)
{
    struct config *cfg = st->cfg;

    if (st->nuser_sections == 0)
        return true;
    cfg->users = calloc(st->nuser_sections, sizeof *cfg->users);
    if (cfg->users == NULL) {
        config_oom(st);
        return false;
    }
    for (size_t i = 0; i < st->nuser_sections; i++) {
        struct config_user_section *us = &st->user_sections[i];
        struct user_conf *u = &cfg->users[cfg->nusers++];
        enum grant other = GRANT_NONE;

        u->line = us->line;
        u->name = us->name;
        us->name = NULL;
        if (!config_index_add(&cfg->user_index, hash_bytes(u->name, strlen(u->name)), i)) {
            config_oom(st);
            return false;
        }
        u->password = us->password;
        us->password = NULL;
        u->admin = us->admin;
        u->cert_cn = us->cert_cn;
        us->cert_cn = NULL;
        if (u->password == NULL && u->cert_cn == NULL) {
            config_fail(st, us->line,
                        "[user.%s] has no password (password = a hash from `sqlmuxd passwd`, or cert_cn = a "
                        "client certificate's name)",
                        u->name);
            return false;
        }
        u->grants = calloc(cfg->nbinds, sizeof *u->grants);
        if (u->grants == NULL) {
            config_oom(st);
            return false;
        }
        for (size_t g = 0; g < us->ngrants; g++)
            if (strcmp(us->grants[g].bind, "*") == 0)
                other = us->grants[g].level;
        for (size_t b = 0; b < cfg->nbinds; b++)
            u->grants[b] = other;
        for (size_t g = 0; g < us->ngrants; g++) {
            if (strcmp(us->grants[g].bind, "*") == 0)
                continue;
            int b = config_bind_index(cfg, us->grants[g].bind);
            if (b < 0) {
                config_fail(st, us->grants[g].line, "grant.%s: no bind '%s' in [binds]", us->grants[g].bind,
                            us->grants[g].bind);
                return false;
            }
            u->grants[b] = us->grants[g].level;
        }
    }
    return true;
}

const struct table_rule *config_rule_find(const struct config *cfg, const char *schema, size_t schema_len,
                                          const char *name, size_t name_len)
{
    uint64_t h = HASH_INIT;
    if (schema != NULL)
        h = hash_add(hash_add(h, schema, schema_len), ".", 1);
    h = hash_add(h, name, name_len);
    size_t at = h, i;
    while ((i = config_index_next(&cfg->rule_index, h, &at)) != SIZE_MAX) {
        const char *p = cfg->rules[i].pattern;
        if (schema != NULL) {
            if (strncmp(p, schema, schema_len) != 0 || p[schema_len] != '.')
                continue;
            p += schema_len + 1;
        }
        if (strncmp(p, name, name_len) == 0 && p[name_len] == '\0')
            return &cfg->rules[i];
    }
    return NULL;
}

const struct user_conf *config_user(const struct config *cfg, const char *name)
{
    size_t i = config_index_find(&cfg->user_index, name, config_user_name, cfg->users);
    return i != SIZE_MAX ? &cfg->users[i] : NULL;
}

/* inih's handler: runs for each "name = value" right after config_reader()
 * returned its line, so st->lineno and st->section describe it. inih's own
 * `section` argument is ignored (inih truncates it to 49 bytes). */
static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    struct config_parse *st = user;
    (void)section;
    if (st->failed)
        return 0;
    if (*name == '\0') {
        config_fail(st, st->lineno, "missing key before '='");
        return 0;
    }
    switch (st->section) {
    case CONFIG_SEC_NONE:
        config_fail(st, st->lineno,
                    "'%s' is outside any section; put it under [server], "
                    "[binds], [tables], [bind.NAME] or [user.NAME]",
                    name);
        break;
    case CONFIG_SEC_USER: config_user_option(st, name, value); break;
    case CONFIG_SEC_SERVER:
        config_set_option(st, CONFIG_SERVER, st->cfg, st->server_seen, name, value);
        break;
    case CONFIG_SEC_BINDS: config_add_bind(st, name, value); break;
    case CONFIG_SEC_TABLES: config_add_rule(st, name, value); break;
    case CONFIG_SEC_BIND: {
        struct config_bind_section *bs = &st->bind_sections[st->bind_section];
        config_set_option(st, CONFIG_BIND, &bs->opts, bs->seen, name, value);
        break;
    }
    }
    return !st->failed;
}

/* Enters the section named `name` (the text between the brackets). */
static bool config_enter_section(struct config_parse *st, const char *name)
{
    free(st->section_label);
    st->section_label = config_strf("[%s]", name);
    if (st->section_label == NULL) {
        config_oom(st);
        return false;
    }
    if (strcmp(name, "server") == 0) {
        st->section = CONFIG_SEC_SERVER;
        return true;
    }
    if (strcmp(name, "binds") == 0) {
        st->section = CONFIG_SEC_BINDS;
        return true;
    }
    if (strcmp(name, "tables") == 0) {
        st->section = CONFIG_SEC_TABLES;
        return true;
    }
    if (strncmp(name, "user.", 5) == 0)
        return config_enter_user(st, name + 5);
    if (strncmp(name, "bind.", 5) != 0) {
        config_fail(st, st->lineno,
                    "unknown section [%s] (expected [server], [binds], "
                    "[tables], [bind.NAME] or [user.NAME])",
                    name);
        return false;
    }
    const char *bind = name + 5;
    if (!config_valid_bind_name(bind)) {
        config_fail(st, st->lineno,
                    "bad bind name in [%s] (letters, digits, '_' and '-', at "
                    "most %d)",
                    name, CONFIG_MAX_BIND_NAME);
        return false;
    }
    st->section = CONFIG_SEC_BIND;
    for (size_t i = 0; i < st->nbind_sections; i++) {
        if (strcmp(st->bind_sections[i].name, bind) == 0) {
            st->bind_section = i;
            return true;
        }
    }
    if (!config_reserve(&st->bind_sections, &st->bind_sections_cap, st->nbind_sections,
                        sizeof *st->bind_sections)) {
        config_oom(st);
        return false;
    }
    struct config_bind_section *bs = &st->bind_sections[st->nbind_sections++];
    memset(bs, 0, sizeof *bs);
    bs->line = st->lineno;
    bs->name = config_strf("%s", bind);
    if (bs->name == NULL) {
        config_oom(st);
        return false;
    }
    st->bind_section = st->nbind_sections - 1;
    return config_apply_defaults(st, CONFIG_BIND, &bs->opts);
}

/* Looks at a line before inih does, to track the section (with its full
 * name) and stop at unknown ones. Mirrors inih's own reading of a line:
 * a BOM on line 1, surrounding blanks, ';'/'#' comments, and "[name]"
 * ending at the first ']' (an inline " ;comment" may follow). A "[" line
 * without its ']' is left to inih, which reports it. */
static void config_scan_line(struct config_parse *st, char *line)
{
    char *s = line;
    if (st->lineno == 1 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    while (isspace((unsigned char)*s))
        s++;
    if (*s != '[')
        return;
    char *close = s + 1;
    bool was_space = false;
    while (*close != '\0' && *close != ']' && !(was_space && *close == ';')) {
        was_space = isspace((unsigned char)*close);
        close++;
    }
    if (*close != ']')
        return;
    const char *tail = close + 1;
    while (isspace((unsigned char)*tail))
        tail++;
    if (*tail != '\0' && *tail != ';' && *tail != '#') {
        config_fail(st, st->lineno, "unexpected text after ']'");
        return;
    }
    char *name = config_strndup(s + 1, (size_t)(close - s - 1));
    if (name == NULL) {
        config_oom(st);
        return;
    }
    config_enter_section(st, name);
    free(name);
}

/* inih's fgets-style reader: reads one whole line, counts it, checks its
 * length, and scans it for section headers before handing it to inih.
 * Returns NULL at the end of the file and after any error, which makes
 * inih stop. */
static char *config_reader(char *str, int num, void *stream)
{
    struct config_parse *st = stream;
    if (st->failed)
        return NULL;
    errno = 0;
    ssize_t n = getline(&st->line, &st->linecap, st->fp);
    if (n < 0) {
        if (ferror(st->fp))
            config_fail(st, 0, "cannot read: %s", strerror(errno ? errno : EIO));
        else if (errno == ENOMEM)
            config_oom(st);
        return NULL;
    }
    st->lineno++;
    if (memchr(st->line, '\0', (size_t)n) != NULL) {
        config_fail(st, st->lineno, "NUL byte in the line");
        return NULL;
    }
    if (n >= num) {
        config_fail(st, st->lineno, "line too long (at most %d bytes)", num - 2);
        return NULL;
    }
    memcpy(str, st->line, (size_t)n + 1);
    config_scan_line(st, st->line);
    return st->failed ? NULL : str;
}

/* ------------------------------------------------------------------------
 * After the whole file
 * ------------------------------------------------------------------------ */

/* The earliest of the errors found once the whole file is known. */
struct config_late_error {
    int line;
    char msg[512];
};

__attribute__((format(printf, 3, 4))) static void config_late(struct config_late_error *le, int line,
                                                              const char *fmt, ...)
{
    if (le->line != 0 && le->line <= line)
        return;
    le->line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(le->msg, sizeof le->msg, fmt, ap);
    va_end(ap);
}

/* The line that set the [server] key `name`, or 1 when it was not set. */
static int config_server_line(const struct config_parse *st, const char *name)
{
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (config_keys[i].scope == CONFIG_SERVER && strcmp(config_keys[i].name, name) == 0)
            return st->server_seen[i] ? st->server_seen[i] : 1;
    return 1;
}

/* The TLS keys agree with each other and with the listeners and users
 * (whether the files hold a usable certificate and key is checked by
 * daemon/tls.c, at start, --check-config and reload). */
static bool config_finish_tls(struct config_parse *st)
{
    struct config *cfg = st->cfg;
    bool tls = cfg->tls_listen_host != NULL;

    if (tls && (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)) {
        config_fail(st, config_server_line(st, "tls_listen"),
                    "tls_listen = %s needs tls_cert_file and tls_key_file (the server's certificate and key)",
                    cfg->tls_listen_host);
        return false;
    }
    if (tls && cfg->tls_client_auth != TLS_CLIENT_AUTH_OFF && cfg->tls_ca_file == NULL) {
        config_fail(st, config_server_line(st, "tls_client_auth"),
                    "tls_client_auth = %s needs tls_ca_file (the CAs that sign client certificates)",
                    config_client_auth_names[cfg->tls_client_auth]);
        return false;
    }
    if (cfg->require_tls && !tls) {
        config_fail(st, config_server_line(st, "require_tls"),
                    "require_tls = on needs tls_listen: remote clients would have no way in");
        return false;
    }
    if (cfg->protected_mode && cfg->nusers == 0 && tls && !config_is_loopback(cfg->tls_listen_host) &&
        cfg->tls_client_auth != TLS_CLIENT_AUTH_REQUIRE) {
        config_fail(
            st, config_server_line(st, "tls_listen"),
            "tls_listen = %s: protected mode: no [user.NAME] is configured and tls_client_auth is not "
            "require, so anyone who reaches the port could use every bind. Add users, require client "
            "certificates, listen on loopback, or set protected_mode = off",
            cfg->tls_listen_host);
        return false;
    }
    if (cfg->nusers > 0 && !cfg->require_tls && cfg->listen_host != NULL &&
        !config_is_loopback(cfg->listen_host))
        config_warn(
            st, config_server_line(st, "listen"),
            "listen = %s is not a loopback address and is not encrypted: .auth passwords and every row "
            "cross the network in the clear; serve remote clients on tls_listen (and set require_tls = on)",
            cfg->listen_host);
    for (size_t i = 0; i < cfg->nusers; i++)
        if (cfg->users[i].cert_cn != NULL && !tls)
            config_warn(st, cfg->users[i].line, "[user.%s] cert_cn has no effect without tls_listen",
                        cfg->users[i].name);
    return true;
}

/* Checks what needs the whole file (binds named by [tables] and
 * [bind.NAME] exist, a default bind exists), moves "default" to index 0,
 * resolves table rules to bind indexes and SQLite paths against data_dir,
 * and applies each [bind.NAME] section to its bind. */
static bool config_finish(struct config_parse *st)
{
    struct config *cfg = st->cfg;
    struct config_late_error le = {0};

    for (size_t i = 0; i < st->nbind_sections; i++) {
        struct config_bind_section *bs = &st->bind_sections[i];
        if (config_bind_index(cfg, bs->name) < 0)
            config_late(&le, bs->line, "[bind.%s]: no bind '%s' in [binds]", bs->name, bs->name);
    }
    for (size_t i = 0; i < cfg->nrules; i++) {
        if (config_bind_index(cfg, st->rule_binds[i]) < 0)
            config_late(&le, cfg->rules[i].line,
                        "table '%s' is mapped to bind '%s', which is "
                        "not defined in [binds]",
                        cfg->rules[i].pattern, st->rule_binds[i]);
    }
    if (le.line != 0) {
        config_fail(st, le.line, "%s", le.msg);
        return false;
    }
    int def = config_bind_index(cfg, "default");
    if (def < 0) {
        config_fail(st, 0, "no default bind: add 'default = URL' under [binds]");
        return false;
    }
    if (def > 0) {
        struct bind_conf d = cfg->binds[def];
        memmove(&cfg->binds[1], &cfg->binds[0], (size_t)def * sizeof *cfg->binds);
        cfg->binds[0] = d;
    }
    for (size_t i = 0; i < cfg->nrules; i++)
        cfg->rules[i].bind = (size_t)config_bind_index(cfg, st->rule_binds[i]);

    for (size_t i = 0; i < st->nbind_sections; i++) {
        struct config_bind_section *bs = &st->bind_sections[i];
        struct bind_conf *b = &cfg->binds[config_bind_index(cfg, bs->name)];
        b->pool_size = bs->opts.pool_size;
        b->busy_timeout_ms = bs->opts.busy_timeout_ms;
        b->foreign_keys = bs->opts.foreign_keys;
        b->pool_min = bs->opts.pool_min;
        b->connect_timeout_ms = bs->opts.connect_timeout_ms;
        b->idle_timeout_ms = bs->opts.idle_timeout_ms;
        b->statement_timeout_ms = bs->opts.statement_timeout_ms;
        b->max_queue = bs->opts.max_queue;
        b->query_wait_timeout_ms = bs->opts.query_wait_timeout_ms;
        free(b->schema);
        b->schema = bs->opts.schema;
        bs->opts.schema = NULL;
        b->snapshot_interval_s = bs->opts.snapshot_interval_s;
        b->snapshot_on_damage = bs->opts.snapshot_on_damage;
        free(b->snapshot);
        b->snapshot = bs->opts.snapshot;
        bs->opts.snapshot = NULL;
        for (size_t k = 0; k < CONFIG_NKEYS; k++)
            if (bs->seen[k] != 0)
                b->keys_written |= UINT64_C(1) << k;
        for (size_t k = 0; k < CONFIG_NKEYS; k++) {
            const struct config_key *key = &config_keys[k];
            bool pg = b->type == BIND_POSTGRES;
            if (bs->seen[k] != 0 && config_key_memory_only(key) && b->type != BIND_SQLITE_MEMORY) {
                if (key->offset == offsetof(struct bind_conf, snapshot)) {
                    config_fail(st, bs->seen[k],
                                "snapshot: bind '%s' is not an in-memory bind; only sqlite:///:memory: binds "
                                "have snapshot files",
                                b->name);
                    return false;
                }
                config_warn(st, bs->seen[k], "%s applies to in-memory binds only; ignored for bind '%s'",
                            key->name, b->name);
                continue;
            }
            if (bs->seen[k] != 0 && config_key_memory_only(key) && b->snapshot == NULL &&
                key->offset != offsetof(struct bind_conf, snapshot)) {
                config_warn(st, bs->seen[k],
                            "%s has no effect without snapshot = FILE; ignored for bind '%s'", key->name,
                            b->name);
                continue;
            }
            if (bs->seen[k] == 0 || !(pg ? config_key_sqlite_only(key) : config_key_pg_only(key)))
                continue;
            config_warn(st, bs->seen[k], "%s applies to %s binds only; ignored for bind '%s'", key->name,
                        pg ? "SQLite" : "PostgreSQL", b->name);
        }
        if (b->pool_min > b->pool_size) {
            config_fail(st, bs->line, "bind '%s': pool_min (%d) is larger than pool_size (%d)", b->name,
                        b->pool_min, b->pool_size);
            return false;
        }
    }

    for (size_t i = 0; i < cfg->nbinds; i++) {
        struct bind_conf *b = &cfg->binds[i];
        if (b->snapshot == NULL)
            continue;
        char *abs = config_path_join(cfg->data_dir, b->snapshot);
        if (abs == NULL) {
            config_fail(st, 0, "out of memory");
            return false;
        }
        free(b->snapshot);
        b->snapshot = abs;
    }
    for (size_t i = 0; i < cfg->nbinds; i++) {
        struct bind_conf *b = &cfg->binds[i];
        if (b->type != BIND_SQLITE_FILE)
            continue;
        char *abs = config_path_join(cfg->data_dir, b->path);
        if (abs == NULL) {
            config_fail(st, 0, "out of memory");
            return false;
        }
        free(b->path);
        b->path = abs;
    }
    if (cfg->listen_host == NULL && cfg->unix_socket == NULL) {
        /* listen has a default, so it was set empty: point at that line
         * (config_keys[0] is listen). */
        config_fail(st, st->server_seen[0], "no listener: set listen = host:port or unix_socket = path");
        return false;
    }
    for (size_t k = 0; k < CONFIG_NKEYS; k++)
        if (st->server_seen[k] != 0)
            cfg->keys_written |= UINT64_C(1) << k;
    if (cfg->unix_socket_group != NULL) {
        gid_t gid;
        if (config_group_id(cfg->unix_socket_group, &gid) != 0) {
            config_fail(
                st,
                st->server_seen[config_key_index(CONFIG_SERVER, offsetof(struct config, unix_socket_group))],
                "unix_socket_group = %s: no such group", cfg->unix_socket_group);
            return false;
        }
    }
    if (!config_finish_users(st))
        return false;
    if (cfg->protected_mode && cfg->nusers == 0 && cfg->listen_host != NULL &&
        !config_is_loopback(cfg->listen_host)) {
        config_fail(st, st->server_seen[0] ? st->server_seen[0] : 1,
                    "listen = %s: protected mode: no [user.NAME] is configured, so anyone who reaches the "
                    "port could use every bind; sqlmuxd then serves only loopback addresses (127.0.0.0/8, "
                    "::1) and the unix socket. Add users (see `sqlmuxd passwd`), listen on loopback, or set "
                    "protected_mode = off",
                    cfg->listen_host);
        return false;
    }
    if (!config_finish_tls(st))
        return false;
    return !st->failed;
}

/* inih's option globals, saved around a parse. */
struct config_ini_options {
    bool multiline, bom, inline_comments, use_stack, stop, no_value;
    int max_line;
    char *start_prefixes, *inline_prefixes;
};

static void config_ini_save(struct config_ini_options *o)
{
    o->multiline = ini_allow_multiline;
    o->bom = ini_allow_bom;
    o->inline_comments = ini_allow_inline_comments;
    o->use_stack = ini_use_stack;
    o->stop = ini_stop_on_first_error;
    o->no_value = ini_allow_no_value;
    o->max_line = ini_max_line;
    o->start_prefixes = ini_start_comment_prefixes;
    o->inline_prefixes = ini_inline_comment_prefixes;
}

static void config_ini_restore(const struct config_ini_options *o)
{
    ini_allow_multiline = o->multiline;
    ini_allow_bom = o->bom;
    ini_allow_inline_comments = o->inline_comments;
    ini_use_stack = o->use_stack;
    ini_stop_on_first_error = o->stop;
    ini_allow_no_value = o->no_value;
    ini_max_line = o->max_line;
    ini_start_comment_prefixes = o->start_prefixes;
    ini_inline_comment_prefixes = o->inline_prefixes;
}

/* Sets the inih behaviour config_scan_line() mirrors: no multi-line values
 * (an indented line is a line of its own, with its own number), ';' or '#'
 * comments at the start of a line, " ;" inline comments, long lines, and a
 * stop at the first error. */
static void config_ini_setup(void)
{
    static char start_prefixes[] = ";#";
    static char inline_prefixes[] = ";";
    ini_allow_multiline = false;
    ini_allow_bom = true;
    ini_allow_inline_comments = true;
    ini_use_stack = true;
    ini_stop_on_first_error = true;
    ini_allow_no_value = false;
    ini_max_line = CONFIG_MAX_LINE;
    ini_start_comment_prefixes = start_prefixes;
    ini_inline_comment_prefixes = inline_prefixes;
}

/* The message for a line inih refused (the last line read). */
static void config_syntax_error(struct config_parse *st, int line)
{
    const char *s = st->line ? st->line : "";
    while (isspace((unsigned char)*s))
        s++;
    if (*s == '[')
        config_fail(st, line, "syntax error: section header without ']'");
    else
        config_fail(st, line, "syntax error: expected 'key = value', '[section]' or a comment");
}

int config_load(const char *path, struct config **out, char *err, size_t errlen)
{
    struct config_parse st = {.file = path, .err = err, .errlen = errlen};
    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    st.fp = fopen(path, "r");
    if (st.fp == NULL) {
        config_fail(&st, 0, "cannot read: %s", strerror(errno));
        return -1;
    }
    struct config *cfg = calloc(1, sizeof *cfg);
    st.cfg = cfg;
    char *cwd = NULL;
    if (cfg == NULL) {
        config_fail(&st, 0, "out of memory");
        goto done;
    }
    if (path[0] != '/' && (cwd = getcwd(NULL, 0)) == NULL) {
        config_fail(&st, 0, "cannot resolve the path: %s", strerror(errno));
        goto done;
    }
    cfg->path = config_path_join(cwd ? cwd : "/", path);
    char *slash = cfg->path ? strrchr(cfg->path, '/') : NULL;
    cfg->dir = slash ? config_strndup(cfg->path, slash == cfg->path ? 1 : (size_t)(slash - cfg->path)) : NULL;
    if (cfg->dir == NULL) {
        config_fail(&st, 0, "out of memory");
        goto done;
    }
    if (!config_apply_defaults(&st, CONFIG_SERVER, cfg))
        goto done;

    struct config_ini_options saved;
    config_ini_save(&saved);
    config_ini_setup();
    int rc = ini_parse_stream(config_reader, &st, config_handler, &st);
    config_ini_restore(&saved);

    if (!st.failed && rc > 0)
        config_syntax_error(&st, rc);
    else if (!st.failed && rc < 0)
        config_fail(&st, 0, "out of memory");
    if (!st.failed)
        config_finish(&st);

done:
    free(cwd);
    fclose(st.fp);
    free(st.line);
    free(st.section_label);
    for (size_t i = 0; i < st.nbind_sections; i++) {
        free(st.bind_sections[i].name);
        free(st.bind_sections[i].opts.schema);
        free(st.bind_sections[i].opts.snapshot);
    }
    free(st.bind_sections);
    for (size_t i = 0; i < st.nuser_sections; i++) {
        struct config_user_section *us = &st.user_sections[i];
        free(us->name);
        free(us->password);
        free(us->cert_cn);
        for (size_t g = 0; g < us->ngrants; g++)
            free(us->grants[g].bind);
        free(us->grants);
    }
    free(st.user_sections);
    config_index_free(&st.user_sections_by_name);
    config_index_free(&st.user_sections_by_cn);
    if (cfg != NULL)
        for (size_t i = 0; i < cfg->nrules; i++)
            free(st.rule_binds[i]);
    free(st.rule_binds);
    if (st.failed) {
        config_free(cfg);
        return -1;
    }
    *out = cfg;
    return 0;
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->dir);
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (config_keys[i].scope == CONFIG_SERVER)
            config_key_release(&config_keys[i], cfg);
    for (size_t i = 0; i < cfg->nbinds; i++)
        config_bind_release(&cfg->binds[i]);
    free(cfg->binds);
    for (size_t i = 0; i < cfg->nrules; i++)
        free(cfg->rules[i].pattern);
    free(cfg->rules);
    config_index_free(&cfg->rule_index);
    free(cfg->pattern_rules);
    for (size_t i = 0; i < cfg->nusers; i++) {
        free(cfg->users[i].name);
        free(cfg->users[i].password);
        free(cfg->users[i].cert_cn);
        free(cfg->users[i].grants);
    }
    free(cfg->users);
    config_index_free(&cfg->user_index);
    for (size_t i = 0; i < cfg->nwarnings; i++)
        free(cfg->warnings[i]);
    free(cfg->warnings);
    free(cfg);
}

int config_bind_index(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nbinds; i++)
        if (strcmp(cfg->binds[i].name, name) == 0)
            return (int)i;
    return -1;
}

int config_group_id(const char *group, gid_t *gid)
{
    struct group gr, *found = NULL;
    char buf[4096], *end;
    long num = strtol(group, &end, 10);

    if (end != group && *end == '\0' && num >= 0) {
        *gid = (gid_t)num;
        return 0;
    }
    if (getgrnam_r(group, &gr, buf, sizeof buf, &found) != 0 || found == NULL)
        return -1;
    *gid = found->gr_gid;
    return 0;
}

/* ------------------------------------------------------------------------
 * Reload support
 * ------------------------------------------------------------------------ */

/* Whether `key` has the same value in two structs of its scope. */
static bool config_key_equal(const struct config_key *key, const void *a, const void *b)
{
    char *va = config_key_format(key, a);
    char *vb = config_key_format(key, b);
    bool same = va != NULL && vb != NULL && strcmp(va, vb) == 0;
    free(va);
    free(vb);
    return same;
}

int config_keep_restart_settings(struct config *next, const struct config *cur, char *changed,
                                 size_t changedlen)
{
    struct config_parse st = {.cfg = next, .file = next->path};
    int n = 0;

    if (changed != NULL && changedlen > 0)
        changed[0] = '\0';
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const struct config_key *key = &config_keys[i];
        if (key->scope != CONFIG_SERVER || !key->restart || config_key_equal(key, cur, next))
            continue;
        char *old = config_key_format(key, cur);
        bool ok = old != NULL && config_key_set(&st, key, next, old, 0);
        free(old);
        if (!ok)
            return -1;
        if (changed != NULL && changedlen > 0) {
            size_t used = strlen(changed);
            snprintf(changed + used, changedlen - used, "%s%s", n > 0 ? ", " : "", key->name);
        }
        n++;
    }
    return n;
}

static bool config_str_equal(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

bool config_bind_same_database(const struct bind_conf *a, const struct bind_conf *b)
{
    return a->type == b->type && config_str_equal(a->name, b->name) && config_str_equal(a->url, b->url) &&
           config_str_equal(a->path, b->path);
}

bool config_bind_equal(const struct bind_conf *a, const struct bind_conf *b)
{
    if (!config_bind_same_database(a, b))
        return false;
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (config_keys[i].scope == CONFIG_BIND && !config_key_equal(&config_keys[i], a, b))
            return false;
    return true;
}

/* ------------------------------------------------------------------------
 * Printing
 * ------------------------------------------------------------------------ */

/* Prints "<prefix> <key> = <value>", with "(default)" when the file did
 * not write the key (written: it did) and the value is the built-in
 * default. */
static void config_print_key(const struct config *cfg, const struct config_key *key, const void *base,
                             bool written, const char *prefix, FILE *out)
{
    char *value = config_key_format(key, base);
    /* The default, resolved the same way (data_dir's depends on cfg->dir). */
    struct config scratch_cfg = {.dir = cfg->dir};
    struct bind_conf scratch_bind = {0};
    void *scratch = key->scope == CONFIG_SERVER ? (void *)&scratch_cfg : (void *)&scratch_bind;
    struct config_parse st = {.cfg = &scratch_cfg, .file = ""};
    char *def = NULL;
    if (config_key_set(&st, key, scratch, key->def, 0))
        def = config_key_format(key, scratch);
    config_key_release(key, scratch);

    const char *shown = value ? value : "?";
    if (*shown == '\0')
        shown = "(none)";
    fprintf(out, "%s %s = %s%s\n", prefix, key->name, shown,
            !written && value && def && strcmp(value, def) == 0 ? " (default)" : "");
    free(value);
    free(def);
}

void config_print(const struct config *cfg, FILE *out)
{
    static const char *const types[] = {
        [BIND_SQLITE_FILE] = "sqlite file",
        [BIND_SQLITE_MEMORY] = "sqlite memory",
        [BIND_POSTGRES] = "postgres",
    };
    fprintf(out, "config %s\n", cfg->path ? cfg->path : "(none)");
    for (size_t i = 0; i < CONFIG_NKEYS; i++)
        if (config_keys[i].scope == CONFIG_SERVER)
            config_print_key(cfg, &config_keys[i], cfg, (cfg->keys_written >> i) & 1, "server", out);

    for (size_t b = 0; b < cfg->nbinds; b++) {
        const struct bind_conf *bc = &cfg->binds[b];
        char prefix[128];
        snprintf(prefix, sizeof prefix, "bind %s", bc->name);
        fprintf(out, "%s: %s", prefix, types[bc->type]);
        if (bc->type == BIND_SQLITE_FILE)
            fprintf(out, " %s", bc->path);
        else if (bc->type == BIND_POSTGRES)
            fprintf(out, " %s", bc->url_redacted);
        fprintf(out, "\n%s url = %s\n", prefix, bc->url_redacted ? bc->url_redacted : "");
        for (size_t k = 0; bc->pg_keywords != NULL && bc->pg_keywords[k] != NULL; k++) {
            bool secret = strcmp(bc->pg_keywords[k], "password") == 0;
            fprintf(out, "%s pg %s = %s\n", prefix, bc->pg_keywords[k], secret ? "***" : bc->pg_values[k]);
        }
        for (size_t i = 0; i < CONFIG_NKEYS; i++) {
            const struct config_key *key = &config_keys[i];
            /* Only the keys that apply to this kind of bind. */
            if (key->scope != CONFIG_BIND ||
                (bc->type == BIND_POSTGRES ? config_key_sqlite_only(key) : config_key_pg_only(key)) ||
                (config_key_memory_only(key) && bc->type != BIND_SQLITE_MEMORY))
                continue;
            config_print_key(cfg, key, bc, (bc->keys_written >> i) & 1, prefix, out);
        }
    }

    for (size_t i = 0; i < cfg->nrules; i++) {
        const struct table_rule *r = &cfg->rules[i];
        fprintf(out, "table %s -> %s%s\n", r->pattern, r->bind < cfg->nbinds ? cfg->binds[r->bind].name : "?",
                r->is_pattern ? " (pattern)" : "");
    }
    fprintf(out, "table * (anything else) -> %s\n", cfg->nbinds ? cfg->binds[0].name : "default");
    if (cfg->nusers == 0)
        fprintf(out, "users: none (no authentication)\n");
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct user_conf *u = &cfg->users[i];
        fprintf(out, "user %s: %s\n", u->name, u->admin ? "admin" : "not admin");
        if (u->cert_cn != NULL)
            fprintf(out, "user %s cert_cn = %s\n", u->name, u->cert_cn);
        for (size_t b = 0; b < cfg->nbinds; b++)
            fprintf(out, "user %s grant %s = %s\n", u->name, cfg->binds[b].name,
                    config_grant_name(u->grants[b]));
    }
}

const char *config_log_level_name(enum log_level level)
{
    if ((unsigned)level < sizeof config_level_names / sizeof config_level_names[0])
        return config_level_names[level];
    return "?";
}
