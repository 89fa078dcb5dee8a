/*
 * Unit tests of conf/config.c: every config file here is written to one
 * temporary folder (created by main, removed at the end) as sqlmux.ini and
 * loaded with config_load(). Error tests assert the exact "file:line:"
 * prefix and a recognizable part of the message.
 */
#include "conf/config.h"
#include "daemon/route.h"
#include "tests/unit/unit.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];        /* the test folder, /tmp/... */
static char cfgpath[PATH_MAX]; /* tmpdir/sqlmux.ini */

/* Writes `text` to tmpdir/rel, creating the folders on the way. */
static void write_file(const char *rel, const char *text)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    for (char *s = path + strlen(tmpdir) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        mkdir(path, 0700);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* Writes `text` as the config file and loads it. */
static int load_text(const char *text, struct config **cfg, char *err, size_t errlen)
{
    write_file("sqlmux.ini", text);
    return config_load(cfgpath, cfg, err, errlen);
}

/* Loads `text`, which must succeed; prints the error otherwise. */
static struct config *load_ok_at(const char *text, int srcline)
{
    struct config *cfg = NULL;
    char err[1024] = "";
    if (load_text(text, &cfg, err, sizeof err) != 0 || cfg == NULL) {
        unit_failed_checks++;
        fprintf(stderr, "  %s:%d: config_load failed: %s\n", __FILE__, srcline, err);
        return NULL;
    }
    return cfg;
}
#define LOAD_OK(text) load_ok_at((text), __LINE__)

/* Loads `text`, which must fail with "cfgpath:line: ..." (or "cfgpath: ..."
 * for line 0) and a message containing `needle`. Returns nothing; the
 * message is left in last_err for further checks. */
static char last_err[1024];
static void expect_error_at(const char *text, int line, const char *needle, int srcline)
{
    struct config *cfg = (struct config *)&cfg; /* must be reset to NULL */
    last_err[0] = '\0';
    int rc = load_text(text, &cfg, last_err, sizeof last_err);
    char prefix[PATH_MAX + 32];
    if (line > 0)
        snprintf(prefix, sizeof prefix, "%s:%d: ", cfgpath, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", cfgpath);
    bool ok = rc == -1 && cfg == NULL && strncmp(last_err, prefix, strlen(prefix)) == 0 &&
              strstr(last_err + strlen(prefix), needle) != NULL;
    if (!ok) {
        unit_failed_checks++;
        fprintf(stderr, "  %s:%d: rc %d, want error \"%s...%s...\", got \"%s\"\n", __FILE__, srcline, rc,
                prefix, needle, last_err);
        if (rc == 0)
            config_free(cfg);
    }
}
#define EXPECT_ERROR(text, line, needle) expect_error_at((text), (line), (needle), __LINE__)

/* tmpdir + "/" + rel, in a static buffer (one at a time). */
static const char *in_tmp(const char *rel)
{
    static char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, rel);
    return buf;
}

/* The value of libpq keyword `key` in bind b, or NULL. */
static const char *pg_value(const struct bind_conf *b, const char *key)
{
    for (size_t i = 0; b->pg_keywords && b->pg_keywords[i]; i++)
        if (strcmp(b->pg_keywords[i], key) == 0)
            return b->pg_values[i];
    return NULL;
}

static size_t pg_count(const struct bind_conf *b)
{
    size_t n = 0;
    while (b->pg_keywords && b->pg_keywords[n])
        n++;
    return n;
}

#define MIN_BINDS "[binds]\ndefault = sqlite:///app.db\n"

/* ---- the bundled example ----------------------------------------------- */

static void test_example_file(void)
{
    char src[PATH_MAX];
    /* From the repository root (make), else relative to this source file. */
    snprintf(src, sizeof src, "conf/sqlmux.ini");
    if (access(src, R_OK) != 0) {
        snprintf(src, sizeof src, "%s", __FILE__);
        char *slash = strrchr(src, '/');
        snprintf(slash ? slash + 1 : src, sizeof src - (size_t)(slash ? slash + 1 - src : 0),
                 "../../conf/sqlmux.ini");
    }
    struct config *cfg = NULL;
    char err[1024] = "";
    CHECK(config_load(src, &cfg, err, sizeof err) == 0);
    if (cfg == NULL) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    char want[PATH_MAX + 64];
    CHECK(cfg->path[0] == '/');
    CHECK(strstr(cfg->path, "/conf/sqlmux.ini") != NULL);
    CHECK(strcmp(cfg->path + strlen(cfg->dir), "/sqlmux.ini") == 0);
    CHECK_STR(cfg->listen_host, "127.0.0.1");
    CHECK(cfg->listen_port == 7654);
    snprintf(want, sizeof want, "%s/data/sqlmux.sock", cfg->dir);
    CHECK_STR(cfg->unix_socket, want);
    snprintf(want, sizeof want, "%s/data", cfg->dir);
    CHECK_STR(cfg->data_dir, want);
    CHECK(cfg->unix_socket_mode == 0660);
    CHECK(cfg->nwarnings == 0);

    CHECK(cfg->nbinds == 3);
    if (cfg->nbinds == 3) {
        CHECK_STR(cfg->binds[0].name, "default");
        CHECK(cfg->binds[0].type == BIND_SQLITE_FILE);
        snprintf(want, sizeof want, "%s/data/app.db", cfg->dir);
        CHECK_STR(cfg->binds[0].path, want);
        snprintf(want, sizeof want, "%s/schema/app.sql", cfg->dir);
        CHECK_STR(cfg->binds[0].schema, want);
        CHECK_STR(cfg->binds[1].name, "second_db");
        snprintf(want, sizeof want, "%s/data/second.db", cfg->dir);
        CHECK_STR(cfg->binds[1].path, want);
        CHECK_STR(cfg->binds[2].name, "memory_db");
        CHECK(cfg->binds[2].type == BIND_SQLITE_MEMORY);
        CHECK(cfg->binds[2].path == NULL);
        snprintf(want, sizeof want, "%s/schema/memory.sql", cfg->dir);
        CHECK_STR(cfg->binds[2].schema, want);
        for (size_t i = 0; i < 3; i++) {
            CHECK(cfg->binds[i].pool_size == 4);
            CHECK(cfg->binds[i].busy_timeout_ms == 5000);
            CHECK(!cfg->binds[i].foreign_keys);
        }
    }
    CHECK(cfg->nrules == 2);
    CHECK(route_table_bind(cfg, "", "test1") == 0);
    CHECK(route_table_bind(cfg, "", "test2") == 1);
    CHECK(route_table_bind(cfg, "", "test3") == 2);
    CHECK(route_table_bind(cfg, "main", "test2") == 1);
    config_free(cfg);
}

/* ---- defaults, binds order, paths -------------------------------------- */

static void test_defaults(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS);
    if (cfg == NULL)
        return;
    CHECK_STR(cfg->path, cfgpath);
    CHECK_STR(cfg->dir, tmpdir);
    CHECK_STR(cfg->listen_host, "127.0.0.1");
    CHECK(cfg->listen_port == 7654);
    CHECK(cfg->unix_socket == NULL);
    CHECK(cfg->unix_socket_mode == 0660);
    CHECK_STR(cfg->data_dir, tmpdir);
    CHECK(cfg->max_clients == 1024);
    CHECK(cfg->max_request == 1024 * 1024);
    CHECK(cfg->max_params == 1000);
    CHECK(cfg->max_pipeline == 128);
    CHECK(cfg->max_output == 1024 * 1024);
    CHECK(cfg->route_cache == 1024);
    CHECK(cfg->stmt_cache == 64);
    CHECK(cfg->log_level == LOG_INFO);
    CHECK(cfg->nbinds == 1);
    CHECK(cfg->nrules == 0);
    CHECK(cfg->nwarnings == 0);
    const struct bind_conf *b = &cfg->binds[0];
    CHECK_STR(b->name, "default");
    CHECK_STR(b->url, "sqlite:///app.db");
    CHECK_STR(b->url_redacted, "sqlite:///app.db");
    CHECK_STR(b->path, in_tmp("app.db"));
    CHECK(b->schema == NULL);
    CHECK(b->pool_size == 4);
    CHECK(b->busy_timeout_ms == 5000);
    CHECK(!b->foreign_keys);
    CHECK(b->pg_keywords == NULL && b->pg_values == NULL);
    CHECK(b->line == 2);
    config_free(cfg);
}

static void test_all_server_keys_set(void)
{
    struct config *cfg =
        LOAD_OK("[server]\nprotected_mode = off\nlisten = 10.1.2.3:99\nunix_socket = s.sock\n"
                "unix_socket_mode = 0600\ndata_dir = /var/lib/x\n"
                "max_clients = 7\nmax_request = 2k\nmax_params = 0\n"
                "max_pipeline = 65536\nmax_output = 4096\nroute_cache = 0\n"
                "stmt_cache = 10000\nlog_level = debug\n" MIN_BINDS);
    if (cfg == NULL)
        return;
    CHECK_STR(cfg->listen_host, "10.1.2.3");
    CHECK(cfg->listen_port == 99);
    CHECK_STR(cfg->unix_socket, in_tmp("s.sock"));
    CHECK(cfg->unix_socket_mode == 0600);
    CHECK_STR(cfg->data_dir, "/var/lib/x");
    CHECK(cfg->max_clients == 7);
    CHECK(cfg->max_request == 2048);
    CHECK(cfg->max_params == 0);
    CHECK(cfg->max_pipeline == 65536);
    CHECK(cfg->max_output == 4096);
    CHECK(cfg->route_cache == 0);
    CHECK(cfg->stmt_cache == 10000);
    CHECK(cfg->log_level == LOG_DEBUG);
    CHECK_STR(cfg->binds[0].path, "/var/lib/x/app.db");
    config_free(cfg);
}

static void test_default_moved_to_front(void)
{
    struct config *cfg = LOAD_OK("[tables]\nt_a = a\nt_def = default\nt_b = b\n"
                                 "[binds]\na = sqlite:///a.db\nb = sqlite:///b.db\n"
                                 "default = sqlite:///d.db\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->nbinds == 3);
    CHECK_STR(cfg->binds[0].name, "default");
    CHECK_STR(cfg->binds[1].name, "a");
    CHECK_STR(cfg->binds[2].name, "b");
    CHECK(cfg->binds[0].line == 8);
    CHECK_STR(cfg->binds[0].path, in_tmp("d.db"));
    CHECK(route_table_bind(cfg, "", "t_a") == 1);
    CHECK(route_table_bind(cfg, "", "t_b") == 2);
    CHECK(route_table_bind(cfg, "", "t_def") == 0);
    CHECK(cfg->rules[0].bind == 1 && cfg->rules[2].bind == 2);
    config_free(cfg);
}

static void test_no_default_bind(void)
{
    char want[PATH_MAX + 100];
    EXPECT_ERROR("[binds]\nsecond_db = sqlite:///s.db\n", 0, "no default bind");
    snprintf(want, sizeof want, "%s: no default bind: add 'default = URL' under [binds]", cfgpath);
    CHECK_STR(last_err, want);
    EXPECT_ERROR("; empty\n", 0, "no default bind");
}

static void test_sqlite_paths(void)
{
    struct config *cfg = LOAD_OK("[server]\ndata_dir = data/./db/\n[binds]\n"
                                 "default = sqlite:///app.db\n"
                                 "abs = sqlite:////srv/x//y/../z.db\n"
                                 "up = sqlite:///../up.db\n"
                                 "sub = sqlite:///a/b/c.db\n");
    if (cfg == NULL)
        return;
    CHECK_STR(cfg->data_dir, in_tmp("data/db"));
    CHECK_STR(cfg->binds[0].path, in_tmp("data/db/app.db"));
    CHECK_STR(cfg->binds[1].path, "/srv/x/z.db");
    CHECK_STR(cfg->binds[2].path, in_tmp("data/up.db"));
    CHECK_STR(cfg->binds[3].path, in_tmp("data/db/a/b/c.db"));
    for (size_t i = 0; i < 4; i++)
        CHECK(cfg->binds[i].type == BIND_SQLITE_FILE);
    struct stat sb;
    CHECK(stat(in_tmp("data"), &sb) != 0); /* no folder is created */
    config_free(cfg);
}

static void test_data_dir_absolute_and_dotdot(void)
{
    struct config *cfg = LOAD_OK("[server]\ndata_dir = /\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->data_dir, "/");
        CHECK_STR(cfg->binds[0].path, "/app.db");
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\ndata_dir = ../../../../../../../../../..\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->data_dir, "/");
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\ndata_dir =\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->data_dir, tmpdir);
        config_free(cfg);
    }
}

/* Relative paths follow the config file's folder, not the working one. */
static void test_relative_config_path(void)
{
    write_file("sub/sqlmux.ini", "[server]\nunix_socket = s.sock\n" MIN_BINDS);
    char *cwd = getcwd(NULL, 0);
    CHECK(chdir(tmpdir) == 0);
    struct config *cfg = NULL;
    char err[1024] = "";
    CHECK(config_load("./sub/../sub/sqlmux.ini", &cfg, err, sizeof err) == 0);
    if (cfg != NULL) {
        CHECK_STR(cfg->path, in_tmp("sub/sqlmux.ini"));
        CHECK_STR(cfg->dir, in_tmp("sub"));
        CHECK_STR(cfg->unix_socket, in_tmp("sub/s.sock"));
        CHECK_STR(cfg->binds[0].path, in_tmp("sub/app.db"));
        config_free(cfg);
    }
    /* Errors name the file as it was given. */
    CHECK(config_load("nope.ini", &cfg, err, sizeof err) == -1);
    CHECK_STR(err, "nope.ini: cannot read: No such file or directory");
    CHECK(cwd != NULL && chdir(cwd) == 0);
    free(cwd);
}

static void test_sqlite_memory_forms(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "m1 = sqlite:///:memory:\nm2 = sqlite://\n"
                                           "m3 = sqlite:///\nm4 = sqlite+pysqlite:///:memory:\n"
                                           "f = sqlite:////:memory:\n");
    if (cfg == NULL)
        return;
    for (size_t i = 1; i <= 4; i++) {
        CHECK(cfg->binds[i].type == BIND_SQLITE_MEMORY);
        CHECK(cfg->binds[i].path == NULL);
    }
    CHECK(cfg->binds[5].type == BIND_SQLITE_FILE);
    CHECK_STR(cfg->binds[5].path, "/:memory:");
    CHECK(cfg->nwarnings == 0);
    config_free(cfg);
}

static void test_sqlite_driver_suffix(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite+pysqlite:///x.db\n"
                                 "b = SQLite:///y.db\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->binds[0].type == BIND_SQLITE_FILE);
    CHECK_STR(cfg->binds[0].path, in_tmp("x.db"));
    CHECK_STR(cfg->binds[0].url, "sqlite+pysqlite:///x.db");
    CHECK_STR(cfg->binds[1].path, in_tmp("y.db"));
    config_free(cfg);
    EXPECT_ERROR("[binds]\ndefault = sqlite+:///x.db\n", 2, "bad URL scheme");
    EXPECT_ERROR("[binds]\ndefault = sqlite+py/x:///x.db\n", 2, "bad URL scheme");
}

static void test_sqlite_cached_shared_warning(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite:///app.db\n"
                                 "memory_db = sqlite:///:memory:?cached=shared\n");
    if (cfg == NULL)
        return;
    char want[PATH_MAX + 200];
    snprintf(want, sizeof want,
             "%s:3: warning: unknown option 'cached' in URL ignored; the "
             "in-memory bind is always shared",
             cfgpath);
    CHECK(cfg->nwarnings == 1);
    if (cfg->nwarnings == 1)
        CHECK_STR(cfg->warnings[0], want);
    CHECK(cfg->binds[1].type == BIND_SQLITE_MEMORY);
    CHECK_STR(cfg->binds[1].url, "sqlite:///:memory:?cached=shared");
    config_free(cfg);
}

static void test_sqlite_other_options_warn(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite:///app.db?timeout=20&&uri\n");
    if (cfg == NULL)
        return;
    char want[PATH_MAX + 200];
    CHECK(cfg->nwarnings == 2);
    CHECK_STR(cfg->binds[0].path, in_tmp("app.db"));
    snprintf(want, sizeof want, "%s:2: warning: unknown option 'timeout' in URL ignored", cfgpath);
    if (cfg->nwarnings == 2) {
        CHECK_STR(cfg->warnings[0], want);
        CHECK(strstr(cfg->warnings[1], ":2: warning: unknown option 'uri'") != NULL);
    }
    config_free(cfg);
}

static void test_sqlite_host_part_rejected(void)
{
    EXPECT_ERROR("[binds]\ndefault = sqlite://host/x.db\n", 2, "sqlite URL has no host");
}

/* ---- PostgreSQL URLs --------------------------------------------------- */

static void test_pg_full_url(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://alice:s3cret@db.example:5433/"
                                           "shop?sslmode=disable&connect_timeout=5&application_name=x\n");
    if (cfg == NULL)
        return;
    const struct bind_conf *b = &cfg->binds[1];
    CHECK(b->type == BIND_POSTGRES);
    CHECK(b->path == NULL);
    CHECK(pg_count(b) == 8);
    static const char *const keys[] = {
        "host", "port", "user", "password", "dbname", "sslmode", "connect_timeout", "application_name"};
    static const char *const vals[] = {"db.example", "5433", "alice", "s3cret", "shop", "disable", "5", "x"};
    for (size_t i = 0; i < 8 && i < pg_count(b); i++) {
        CHECK_STR(b->pg_keywords[i], keys[i]);
        CHECK_STR(b->pg_values[i], vals[i]);
    }
    CHECK(b->pg_keywords[8] == NULL && b->pg_values[8] == NULL);
    CHECK_STR(b->url_redacted, "postgresql://alice:***@db.example:5433/shop?sslmode=disable"
                               "&connect_timeout=5&application_name=x");
    CHECK(strstr(b->url, "s3cret") != NULL);
    config_free(cfg);
}

static void test_pg_scheme_variants(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "a = postgres://u@h/d\n"
                                           "b = postgresql+psycopg2://u:p@h:1/d\n"
                                           "c = postgresql+asyncpg://h\n");
    if (cfg == NULL)
        return;
    for (size_t i = 1; i <= 3; i++)
        CHECK(cfg->binds[i].type == BIND_POSTGRES);
    CHECK_STR(pg_value(&cfg->binds[1], "user"), "u");
    CHECK(pg_value(&cfg->binds[1], "password") == NULL);
    CHECK_STR(cfg->binds[1].url_redacted, "postgres://u@h/d");
    CHECK_STR(pg_value(&cfg->binds[2], "port"), "1");
    CHECK_STR(cfg->binds[2].url_redacted, "postgresql+psycopg2://u:***@h:1/d");
    CHECK(pg_count(&cfg->binds[3]) == 1);
    CHECK_STR(pg_value(&cfg->binds[3], "host"), "h");
    config_free(cfg);
}

static void test_pg_socket_dir_in_query(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://me@/app?host=/var/run/postgresql"
                                           "&port=5432\n");
    if (cfg == NULL)
        return;
    const struct bind_conf *b = &cfg->binds[1];
    CHECK(pg_count(b) == 4);
    CHECK_STR(b->pg_keywords[0], "user");
    CHECK_STR(b->pg_keywords[1], "dbname");
    CHECK_STR(pg_value(b, "host"), "/var/run/postgresql");
    CHECK_STR(pg_value(b, "port"), "5432");
    CHECK_STR(pg_value(b, "dbname"), "app");
    config_free(cfg);
}

static void test_pg_percent_decoding(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://us%40er:p%40ss%2Fw%3Ard@h/"
                                           "my%20db?application_name=a%26b\n");
    if (cfg == NULL)
        return;
    const struct bind_conf *b = &cfg->binds[1];
    CHECK_STR(pg_value(b, "user"), "us@er");
    CHECK_STR(pg_value(b, "password"), "p@ss/w:rd");
    CHECK_STR(pg_value(b, "dbname"), "my db");
    CHECK_STR(pg_value(b, "application_name"), "a&b");
    CHECK_STR(b->url_redacted, "postgresql://us%40er:***@h/my%20db?application_name=a%26b");
    config_free(cfg);
}

static void test_pg_unescaped_at_in_password(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://u:p@ss@h/d\n");
    if (cfg == NULL)
        return;
    CHECK_STR(pg_value(&cfg->binds[1], "password"), "p@ss");
    CHECK_STR(pg_value(&cfg->binds[1], "host"), "h");
    CHECK_STR(cfg->binds[1].url_redacted, "postgresql://u:***@h/d");
    config_free(cfg);
}

static void test_pg_ipv6_host(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "a = postgresql://u@[::1]:5432/d\n"
                                           "b = postgresql://[fe80::1%25eth0]/d\n");
    if (cfg == NULL)
        return;
    CHECK_STR(pg_value(&cfg->binds[1], "host"), "::1");
    CHECK_STR(pg_value(&cfg->binds[1], "port"), "5432");
    CHECK_STR(pg_value(&cfg->binds[2], "host"), "fe80::1%eth0");
    CHECK(pg_value(&cfg->binds[2], "port") == NULL);
    config_free(cfg);
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://[::1/d\n", 3, "missing ']'");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://[::1]x/d\n", 3, "after the IPv6 host");
}

static void test_pg_minimal_urls(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "a = postgresql://\nb = postgresql:///only_db\n"
                                           "c = postgresql://h/\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->binds[1].pg_keywords != NULL && pg_count(&cfg->binds[1]) == 0);
    CHECK(pg_count(&cfg->binds[2]) == 1);
    CHECK_STR(pg_value(&cfg->binds[2], "dbname"), "only_db");
    CHECK(pg_count(&cfg->binds[3]) == 1);
    CHECK_STR(cfg->binds[1].url_redacted, "postgresql://");
    config_free(cfg);
}

static void test_pg_password_in_query_redacted(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://u@h/d?password=hunter2&x=1\n");
    if (cfg == NULL)
        return;
    CHECK_STR(pg_value(&cfg->binds[1], "password"), "hunter2");
    CHECK_STR(cfg->binds[1].url_redacted, "postgresql://u@h/d?password=***&x=1");
    config_free(cfg);
}

static void test_pg_bad_percent_escape(void)
{
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u:sec%zzret@h/d\n", 3,
                 "bind 'pg': bad percent-escape in the password");
    CHECK(strstr(last_err, "sec") == NULL);
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u:secret%4@h/d\n", 3, "in the password");
    CHECK(strstr(last_err, "secret") == NULL);
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u%00:x@h/d\n", 3, "in the user name");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u@h/d%\n", 3, "in the database name");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u@h/d?a=%G1\n", 3, "in the URL options");
}

static void test_pg_bad_port(void)
{
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u:pw@h:0/d\n", 3, "bad port '0' (1..65535)");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://h:65536/d\n", 3, "bad port '65536'");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://h:54x/d\n", 3, "bad port '54x'");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://h:/d\n", 3, "bad port ''");
    /* An unescaped '/' or '?' in the password: nothing of it is quoted. */
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u:pw/cretpw@h/d\n", 3, "bad port '***'");
    CHECK(strstr(last_err, "pw") == NULL && strstr(last_err, "%2F") != NULL);
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://u:5432?cret@h/d\n", 3, "option '***' has no");
    CHECK(strstr(last_err, "cret") == NULL);
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://h:65535/d\n");
    config_free(cfg);
}

static void test_pg_bad_options(void)
{
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://h/d?sslmode\n", 3, "option 'sslmode' has no");
    EXPECT_ERROR(MIN_BINDS "pg = postgresql://h/d?=x\n", 3, "option without a name");
}

static void test_bad_scheme(void)
{
    EXPECT_ERROR(MIN_BINDS "my = mysql://u:pw@h/d\n", 3, "bind 'my': unsupported URL scheme 'mysql'");
    CHECK(strstr(last_err, "pw") == NULL);
    EXPECT_ERROR(MIN_BINDS "x = app.db\n", 3, "bind 'x': a URL must look like scheme://");
    EXPECT_ERROR(MIN_BINDS "x = ://nothing\n", 3, "bad URL scheme");
    EXPECT_ERROR(MIN_BINDS "x =\n", 3, "bind 'x': empty URL");
}

/* ---- bind names and sections ------------------------------------------- */

static void test_bad_bind_names(void)
{
    EXPECT_ERROR(MIN_BINDS "bad.name = sqlite://\n", 3, "bad bind name 'bad.name'");
    EXPECT_ERROR(MIN_BINDS "two words = sqlite://\n", 3, "bad bind name");
    EXPECT_ERROR(MIN_BINDS "= sqlite://\n", 3, "missing key before '='");
    EXPECT_ERROR(MIN_BINDS "[bind.]\npool_size = 2\n", 3, "bad bind name in [bind.]");
    EXPECT_ERROR(MIN_BINDS "[bind.a b]\n", 3, "bad bind name");
    char text[512];
    snprintf(text, sizeof text, MIN_BINDS "%064d = sqlite://\n", 0);
    EXPECT_ERROR(text, 3, "bad bind name");
    struct config *cfg = LOAD_OK(MIN_BINDS "Second-DB_2 = sqlite://\n");
    if (cfg != NULL) {
        CHECK(config_bind_index(cfg, "Second-DB_2") == 1);
        CHECK(config_bind_index(cfg, "second-db_2") == -1);
        config_free(cfg);
    }
}

/* A bind name past inih's 50-byte section buffer still works: the
 * section is tracked by config.c itself. */
static void test_long_bind_section_name(void)
{
    char name[64], text[512];
    memset(name, 'n', 63);
    name[63] = '\0';
    snprintf(text, sizeof text, MIN_BINDS "%s = sqlite://\n[bind.%s]\npool_size = 9\n", name, name);
    struct config *cfg = LOAD_OK(text);
    if (cfg == NULL)
        return;
    CHECK(cfg->binds[1].pool_size == 9);
    config_free(cfg);
}

static void test_duplicate_bind(void)
{
    EXPECT_ERROR("[binds]\ndefault = sqlite:///a.db\n\nx = sqlite://\n[binds]\nx = sqlite://\n", 6,
                 "duplicate bind 'x' (first defined on line 4)");
}

static void test_bind_section_options(void)
{
    write_file("schema/s.sql", "CREATE TABLE t (x);\n");
    struct config *cfg = LOAD_OK("[bind.second]\nschema = schema/s.sql\npool_size = 64\n"
                                 "busy_timeout = 0\nforeign_keys = on\n"
                                 "[binds]\ndefault = sqlite:///a.db\nsecond = sqlite:///b.db\n"
                                 "[bind.default]\npool_size = 1\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->binds[0].pool_size == 1);
    CHECK(cfg->binds[0].busy_timeout_ms == 5000);
    CHECK(cfg->binds[0].schema == NULL);
    CHECK(cfg->binds[1].pool_size == 64);
    CHECK(cfg->binds[1].busy_timeout_ms == 0);
    CHECK(cfg->binds[1].foreign_keys);
    CHECK_STR(cfg->binds[1].schema, in_tmp("schema/s.sql"));
    config_free(cfg);
}

static void test_migrations_and_snapshot_keys(void)
{
    write_file("migs/default/0001_a.sql", "CREATE TABLE a (x);\n");
    struct config *cfg = LOAD_OK("[server]\nmigrations = migs\nmigrate_on_start = on\ndata_dir = d\n"
                                 "[binds]\ndefault = sqlite:///a.db\nmem = sqlite:///:memory:\n"
                                 "[bind.mem]\nsnapshot = snaps/mem.db\nsnapshot_interval = 30\n"
                                 "snapshot_on_damage = move\n");
    if (cfg != NULL) {
        CHECK_STR(cfg->migrations, in_tmp("migs"));
        CHECK(cfg->migrate_on_start);
        CHECK(cfg->binds[0].snapshot == NULL);
        CHECK(cfg->binds[0].snapshot_interval_s == 0);
        CHECK(cfg->binds[0].snapshot_on_damage == SNAPSHOT_DAMAGE_FAIL);
        CHECK_STR(cfg->binds[1].snapshot, in_tmp("d/snaps/mem.db"));
        CHECK(cfg->binds[1].snapshot_interval_s == 30);
        CHECK(cfg->binds[1].snapshot_on_damage == SNAPSHOT_DAMAGE_MOVE);
        CHECK(cfg->nwarnings == 0);
        config_free(cfg);
    }
    cfg = LOAD_OK(MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->migrations == NULL);
        CHECK(!cfg->migrate_on_start);
        config_free(cfg);
    }
    /* An absolute snapshot path stays as written. */
    cfg = LOAD_OK(MIN_BINDS "mem = sqlite://\n[bind.mem]\nsnapshot = /var/lib/m.db\n");
    if (cfg != NULL) {
        CHECK_STR(cfg->binds[1].snapshot, "/var/lib/m.db");
        config_free(cfg);
    }
    /* Interval and damage policy without a snapshot file: warnings. */
    cfg = LOAD_OK(MIN_BINDS "mem = sqlite://\n[bind.mem]\nsnapshot_interval = 5\n");
    if (cfg != NULL) {
        CHECK(cfg->nwarnings == 1);
        CHECK(cfg->nwarnings == 1 && strstr(cfg->warnings[0], ":5: warning:") != NULL);
        config_free(cfg);
    }
    EXPECT_ERROR("[server]\nmigrations = nope\n" MIN_BINDS, 2, "migrations: cannot open");
    write_file("afile", "x\n");
    EXPECT_ERROR("[server]\nmigrations = afile\n" MIN_BINDS, 2, "is not a folder");
    EXPECT_ERROR("[server]\nmigrate_on_start = maybe\n" MIN_BINDS, 2, "not a boolean");
    EXPECT_ERROR(MIN_BINDS "[bind.default]\nsnapshot = a.snap\n", 4, "not an in-memory bind");
    EXPECT_ERROR(MIN_BINDS "mem = sqlite://\n[bind.mem]\nsnapshot_on_damage = ignore\n", 5,
                 "not one of fail, move");
    EXPECT_ERROR(MIN_BINDS "mem = sqlite://\n[bind.mem]\nsnapshot_interval = -1\n", 5, "out of range");
}

static void test_bind_section_unknown_bind(void)
{
    EXPECT_ERROR(MIN_BINDS "\n[bind.nope]\npool_size = 2\n", 4, "[bind.nope]: no bind 'nope' in [binds]");
    /* The earliest of the whole-file errors is reported. */
    EXPECT_ERROR(MIN_BINDS "[tables]\nt = ghost\n[bind.nope]\n", 4, "table 't'");
}

static void test_bind_section_reopened(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "[bind.default]\npool_size = 2\n[server]\n"
                                           "[bind.default]\nbusy_timeout = 7\n");
    if (cfg != NULL) {
        CHECK(cfg->binds[0].pool_size == 2);
        CHECK(cfg->binds[0].busy_timeout_ms == 7);
        config_free(cfg);
    }
    EXPECT_ERROR(MIN_BINDS "[bind.default]\npool_size = 2\n[bind.default]\npool_size = 3\n", 6,
                 "duplicate key 'pool_size' in [bind.default] (first set on line 4)");
}

static void test_pg_sqlite_only_options_warn(void)
{
    struct config *cfg = LOAD_OK(MIN_BINDS "pg = postgresql://h/d\n[bind.pg]\npool_size = 3\n"
                                           "busy_timeout = 10\nforeign_keys = on\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->binds[1].pool_size == 3);
    CHECK(cfg->nwarnings == 2);
    if (cfg->nwarnings == 2) {
        CHECK(strstr(cfg->warnings[0], ":6: warning: busy_timeout applies to SQLite binds only") != NULL);
        CHECK(strstr(cfg->warnings[1], ":7: warning: foreign_keys") != NULL);
    }
    config_free(cfg);
}

/* ---- schema files ------------------------------------------------------ */

static void test_schema_missing(void)
{
    EXPECT_ERROR(MIN_BINDS "[bind.default]\npool_size = 2\nschema = no/such.sql\n", 5,
                 "schema: cannot read ");
    CHECK(strstr(last_err, "no/such.sql: No such file or directory") != NULL);
    write_file("schema/dir/x", "");
    EXPECT_ERROR(MIN_BINDS "[bind.default]\nschema = schema/dir\n", 4, "is not a regular file");
}

static void test_schema_unreadable(void)
{
    if (geteuid() == 0)
        return; /* root reads everything */
    write_file("secret.sql", "");
    chmod(in_tmp("secret.sql"), 0);
    EXPECT_ERROR(MIN_BINDS "[bind.default]\nschema = secret.sql\n", 4, "Permission denied");
}

static void test_schema_absolute(void)
{
    write_file("abs.sql", "");
    char text[PATH_MAX + 100];
    snprintf(text, sizeof text, MIN_BINDS "[bind.default]\nschema = %s/./abs.sql\n", tmpdir);
    struct config *cfg = LOAD_OK(text);
    if (cfg == NULL)
        return;
    CHECK_STR(cfg->binds[0].schema, in_tmp("abs.sql"));
    config_free(cfg);
}

/* ---- sections, keys, syntax -------------------------------------------- */

static void test_unknown_section(void)
{
    EXPECT_ERROR(MIN_BINDS "\n[serve]\nlisten = x\n", 4, "unknown section [serve]");
    EXPECT_ERROR("[Server]\n", 1, "unknown section [Server]");
    EXPECT_ERROR(MIN_BINDS "[empty]\n", 3, "unknown section [empty]");
    EXPECT_ERROR("[server] trailing\n", 1, "unexpected text after ']'");
}

static void test_unknown_key(void)
{
    EXPECT_ERROR("[server]\nlisten = 127.0.0.1:1\nmax_client = 5\n" MIN_BINDS, 3,
                 "unknown key 'max_client' in [server]");
    CHECK(strstr(last_err, "max_clients") == NULL);
    EXPECT_ERROR("[server]\nMax_Clients = 5\n", 2, "unknown key 'Max_Clients' in [server]");
    EXPECT_ERROR(MIN_BINDS "[bind.default]\nbusy_timeout_ms = 1\n", 4,
                 "unknown key 'busy_timeout_ms' in [bind.default]");
    EXPECT_ERROR("[bind.default]\nlisten = 1.2.3.4:5\n" MIN_BINDS, 2, "unknown key 'listen'");
}

static void test_key_outside_section(void)
{
    EXPECT_ERROR("; comment\nlisten = 1.2.3.4:5\n" MIN_BINDS, 2, "'listen' is outside any section");
}

static void test_duplicate_server_key(void)
{
    EXPECT_ERROR("[server]\nmax_clients = 5\n" MIN_BINDS "[server]\nmax_clients = 6\n", 6,
                 "duplicate key 'max_clients' in [server] (first set on line 2)");
}

static void test_syntax_errors(void)
{
    EXPECT_ERROR(MIN_BINDS "[tables]\njust words\n", 4, "syntax error: expected 'key = value'");
    EXPECT_ERROR("[server\n", 1, "section header without ']'");
    EXPECT_ERROR(MIN_BINDS "[tables ; x]\n", 3, "section header without ']'");
    /* The first error stops the parse; a later one is not reported. */
    EXPECT_ERROR("[server]\nmax_clients = 0\nbad line\n", 2, "max_clients");
}

/* inih's multi-line values are off: an indented line is a line of its
 * own, so line numbers stay exact and values are never glued. */
static void test_no_multiline_values(void)
{
    struct config *cfg = LOAD_OK("[server]\nlisten = 127.0.0.1:9\n    max_clients = 5\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->max_clients == 5);
        CHECK(cfg->listen_port == 9);
        config_free(cfg);
    }
    EXPECT_ERROR("[binds]\ndefault = sqlite:///a.db\n    continued\n", 3, "syntax error");
}

static void test_comments_crlf_bom(void)
{
    struct config *cfg = LOAD_OK("\xEF\xBB\xBF; comment\r\n# another\r\n"
                                 "[server]   ; inline after a header\r\n"
                                 "max_clients = 5 ; inline\r\n\r\n"
                                 "  [binds]\r\ndefault = sqlite:///a.db   ; why\r\n"
                                 "[tables]\r\nTest2 = default\r\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->max_clients == 5);
    CHECK_STR(cfg->binds[0].url, "sqlite:///a.db");
    CHECK_STR(cfg->binds[0].path, in_tmp("a.db"));
    CHECK(cfg->nrules == 1 && strcmp(cfg->rules[0].pattern, "test2") == 0);
    CHECK(cfg->rules[0].line == 9);
    config_free(cfg);
}

static void test_long_lines(void)
{
    size_t n = 4000;
    char *text = malloc(n + 200);
    if (text == NULL)
        return;
    int off = snprintf(text, n + 200, MIN_BINDS "pg = postgresql://h/d?application_name=");
    memset(text + off, 'a', n);
    strcpy(text + off + n, "\n");
    struct config *cfg = LOAD_OK(text);
    if (cfg != NULL) {
        CHECK(strlen(pg_value(&cfg->binds[1], "application_name")) == n);
        config_free(cfg);
    }
    free(text);

    n = 9000;
    text = malloc(n + 200);
    if (text == NULL)
        return;
    off = snprintf(text, n + 200, MIN_BINDS "\nx = sqlite:///");
    memset(text + off, 'a', n);
    strcpy(text + off + n, "\n");
    EXPECT_ERROR(text, 4, "line too long");
    free(text);
}

static void test_nul_byte(void)
{
    /* write_file() stops at the NUL, so write it by hand. */
    static const char text[] = "[binds]\ndefault = sqlite:///a\0.db\n";
    FILE *f = fopen(cfgpath, "w");
    if (f == NULL)
        return;
    fwrite(text, 1, sizeof text - 1, f);
    fclose(f);
    struct config *cfg = NULL;
    char err[1024];
    CHECK(config_load(cfgpath, &cfg, err, sizeof err) == -1);
    CHECK(cfg == NULL);
    CHECK(strstr(err, ":2: NUL byte") != NULL);
}

static void test_file_not_found(void)
{
    struct config *cfg = (struct config *)&cfg;
    char err[1024], want[PATH_MAX + 100];
    const char *path = in_tmp("missing/sqlmux.ini");
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path);
    CHECK(config_load(path, &cfg, err, sizeof err) == -1);
    CHECK(cfg == NULL);
    CHECK_STR(err, want);
    /* A folder opens but cannot be read. */
    CHECK(config_load(tmpdir, &cfg, err, sizeof err) == -1);
    CHECK(strstr(err, ": cannot read: Is a directory") != NULL);
}

static void test_small_error_buffer(void)
{
    write_file("sqlmux.ini", "[nope]\n");
    struct config *cfg = NULL;
    char err[8];
    memset(err, 'x', sizeof err);
    CHECK(config_load(cfgpath, &cfg, err, 5) == -1);
    CHECK(err[4] == '\0' && err[5] == 'x');
    CHECK(config_load(cfgpath, &cfg, NULL, 0) == -1);
    CHECK(cfg == NULL);
}

/* ---- value types ------------------------------------------------------- */

static void test_int_values(void)
{
    EXPECT_ERROR("[server]\nmax_clients = 0\n", 2, "max_clients: 0 is out of range (1..1000000)");
    EXPECT_ERROR("[server]\nmax_clients = 1000001\n", 2, "(1..1000000)");
    EXPECT_ERROR("[server]\nmax_clients = -5\n", 2, "-5 is out of range");
    EXPECT_ERROR("[server]\nmax_clients = many\n", 2, "max_clients: 'many' is not a number");
    EXPECT_ERROR("[server]\nmax_clients = 12x\n", 2, "'12x' is not a number");
    EXPECT_ERROR("[server]\nmax_clients =\n", 2, "'' is not a number");
    EXPECT_ERROR("[server]\nmax_clients = 99999999999999999999\n", 2, "is not a number");
    EXPECT_ERROR("[server]\nmax_params = 32767\n", 2,
                 "max_params: 32767 is out of range "
                 "(0..32766)");
    EXPECT_ERROR("[server]\nmax_pipeline = 0\n", 2, "(1..65536)");
    EXPECT_ERROR("[server]\nroute_cache = 1000001\n", 2, "(0..1000000)");
    EXPECT_ERROR("[server]\nstmt_cache = 10001\n", 2, "(0..10000)");
    EXPECT_ERROR(MIN_BINDS "[bind.default]\npool_size = 65\n", 4,
                 "pool_size: 65 is out of range "
                 "(1..64)");
    EXPECT_ERROR(MIN_BINDS "[bind.default]\npool_size = 0\n", 4, "(1..64)");
    EXPECT_ERROR(MIN_BINDS "[bind.default]\nbusy_timeout = 3600001\n", 4, "(0..3600000)");
    struct config *cfg =
        LOAD_OK("[server]\nmax_clients = 1000000\n" MIN_BINDS "[bind.default]\nbusy_timeout = 3600000\n");
    if (cfg != NULL) {
        CHECK(cfg->max_clients == 1000000);
        CHECK(cfg->binds[0].busy_timeout_ms == 3600000);
        config_free(cfg);
    }
}

static void test_size_values(void)
{
    struct config *cfg = LOAD_OK("[server]\nmax_request = 64k\nmax_output = 1G\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->max_request == 64 * 1024);
        CHECK(cfg->max_output == 1024UL * 1024 * 1024);
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\nmax_request = 3M\nmax_output = 5000\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->max_request == 3 * 1024 * 1024);
        CHECK(cfg->max_output == 5000);
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\nmax_request = 1024\nmax_output = 8K\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->max_request == 1024 && cfg->max_output == 8192);
        config_free(cfg);
    }
    EXPECT_ERROR("[server]\nmax_request = 512\n", 2, "max_request: 512 is out of range (1024..1G)");
    EXPECT_ERROR("[server]\nmax_request = 2G\n", 2, "2G is out of range (1024..1G)");
    EXPECT_ERROR("[server]\nmax_output = 4095\n", 2, "(4096..1G)");
    EXPECT_ERROR("[server]\nmax_request = 1T\n", 2, "max_request: '1T' is not a size");
    EXPECT_ERROR("[server]\nmax_request = M\n", 2, "is not a size");
    EXPECT_ERROR("[server]\nmax_request = 1 M\n", 2, "is not a size");
    EXPECT_ERROR("[server]\nmax_request = 99999999999999999G\n", 2, "is not a size");
}

static void test_octal_mode(void)
{
    struct config *cfg = LOAD_OK("[server]\nunix_socket_mode = 600\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->unix_socket_mode == 0600);
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\nunix_socket_mode = 0777\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->unix_socket_mode == 0777);
        config_free(cfg);
    }
    EXPECT_ERROR("[server]\nunix_socket_mode = 0668\n", 2,
                 "unix_socket_mode: '0668' is not an octal mode (e.g. 0660)");
    EXPECT_ERROR("[server]\nunix_socket_mode = rw\n", 2, "not an octal mode");
    EXPECT_ERROR("[server]\nunix_socket_mode = 01000\n", 2, "01000 is out of range (0000..0777)");
}

static void test_bool_values(void)
{
    static const char *const yes[] = {"on", "true", "yes", "1", "ON", "True"};
    static const char *const no[] = {"off", "false", "no", "0", "OFF", "No"};
    char text[256];
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        snprintf(text, sizeof text, MIN_BINDS "[bind.default]\nforeign_keys = %s\n", yes[i]);
        struct config *cfg = LOAD_OK(text);
        if (cfg != NULL) {
            CHECK(cfg->binds[0].foreign_keys);
            config_free(cfg);
        }
        snprintf(text, sizeof text, MIN_BINDS "[bind.default]\nforeign_keys = %s\n", no[i]);
        cfg = LOAD_OK(text);
        if (cfg != NULL) {
            CHECK(!cfg->binds[0].foreign_keys);
            config_free(cfg);
        }
    }
    EXPECT_ERROR(MIN_BINDS "[bind.default]\nforeign_keys = maybe\n", 4,
                 "foreign_keys: 'maybe' is not a boolean");
}

static void test_log_level(void)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char text[256];
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof text, "[server]\nlog_level = %s\n" MIN_BINDS, names[i]);
        struct config *cfg = LOAD_OK(text);
        if (cfg != NULL) {
            CHECK((int)cfg->log_level == i);
            config_free(cfg);
        }
        CHECK_STR(config_log_level_name((enum log_level)i), names[i]);
    }
    EXPECT_ERROR("[server]\nlog_level = verbose\n", 2,
                 "log_level: 'verbose' is not one of error, warn, info, debug");
}

static void test_protected_mode(void)
{
    struct config *cfg;

    EXPECT_ERROR("[server]\nlisten = 0.0.0.0:7654\n" MIN_BINDS, 2, "protected mode");
    EXPECT_ERROR("[server]\nlog_level = info\nlisten = [::]:7654\n" MIN_BINDS, 3, "protected mode");
    EXPECT_ERROR("[server]\nlisten = 10.0.0.1:7654\n" MIN_BINDS, 2, "protected_mode = off");
    cfg = LOAD_OK("[server]\nlisten = 127.8.9.10:7654\n" MIN_BINDS);
    if (cfg != NULL)
        CHECK(cfg->protected_mode);
    config_free(cfg);
    cfg = LOAD_OK("[server]\nlisten = [::ffff:127.0.0.1]:7654\n" MIN_BINDS);
    config_free(cfg);
    cfg = LOAD_OK("[server]\nlisten = 0.0.0.0:7654\nprotected_mode = off\n" MIN_BINDS);
    if (cfg != NULL)
        CHECK(!cfg->protected_mode);
    config_free(cfg);
}

/* A yescrypt hash of "pw" (from sqlmuxd passwd). */
#define HASH "$y$j9T$SrwKsOP8z0ly4zG.scwuT1$XnOO4tDRvP7KoLIEIQ7x08oLettwHkmfNoosuLUfXN4"

static void test_users(void)
{
    struct config *cfg = LOAD_OK("[server]\nlisten = 0.0.0.0:7654\nauth_fail_delay = 250\n"
                                 "unix_socket_group = root\n" MIN_BINDS "second = sqlite:///2.db\n"
                                 "third = sqlite:///:memory:\n"
                                 "[user.alice]\npassword = " HASH "\nadmin = on\ngrant.* = read-write\n"
                                 "[user.bob]\npassword = " HASH "\ngrant.second = read\ngrant.* = none\n"
                                 "grant.third = read-write\n[user.carol]\npassword = " HASH "\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->nusers == 3);
    CHECK(cfg->auth_fail_delay_ms == 250);
    CHECK(cfg->login_timeout_ms == 60000);     /* the default */
    CHECK_STR(cfg->unix_socket_group, "root"); /* a group that exists: unknown ones are refused */
    const struct user_conf *a = config_user(cfg, "alice"), *b = config_user(cfg, "bob"),
                           *c = config_user(cfg, "carol");
    CHECK(a != NULL && b != NULL && c != NULL && config_user(cfg, "Alice") == NULL);
    if (a != NULL && b != NULL && c != NULL) {
        CHECK(a->admin && !b->admin && !c->admin);
        CHECK_STR(a->password, HASH);
        CHECK(a->line == 9);
        for (size_t i = 0; i < 3; i++) {
            CHECK(a->grants[i] == GRANT_READ_WRITE);
            CHECK(c->grants[i] == GRANT_NONE); /* nothing granted: no access */
        }
        CHECK(b->grants[config_bind_index(cfg, "default")] == GRANT_NONE);
        CHECK(b->grants[config_bind_index(cfg, "second")] == GRANT_READ);
        CHECK(b->grants[config_bind_index(cfg, "third")] == GRANT_READ_WRITE);
    }
    CHECK_STR(config_grant_name(GRANT_READ), "read");
    config_free(cfg);

    EXPECT_ERROR(MIN_BINDS "[user.x]\ngrant.* = read\n", 3, "[user.x] has no password");
    EXPECT_ERROR(MIN_BINDS "[user.x]\npassword = secret\n", 4, "not a crypt(3) hash");
    EXPECT_ERROR(MIN_BINDS "[user.x]\npassword = abJnggxhB/yWI\n", 4, "not a crypt(3) hash");
    EXPECT_ERROR(MIN_BINDS "[user.x]\npassword = " HASH "\ngrant.nope = read\n", 5,
                 "grant.nope: no bind 'nope'");
    EXPECT_ERROR(MIN_BINDS "[user.x]\npassword = " HASH "\ngrant.default = rw\n", 5,
                 "not one of none, read, read-write");
    EXPECT_ERROR(MIN_BINDS "[user.x]\npassword = " HASH "\ngrant.default = read\ngrant.default = none\n", 6,
                 "duplicate key 'grant.default'");
    EXPECT_ERROR(MIN_BINDS "[user.x]\npassword = " HASH "\nrole = admin\n", 5, "unknown key 'role'");
    EXPECT_ERROR(MIN_BINDS "[user.a b]\n", 3, "bad user name");
    EXPECT_ERROR("[server]\nauth_fail_delay = 60001\n" MIN_BINDS, 2, "out of range");
    EXPECT_ERROR("[server]\nlogin_timeout = -1\n" MIN_BINDS, 2, "out of range");
    /* Users lift protected mode's loopback rule. */
    EXPECT_ERROR("[server]\nlisten = 0.0.0.0:7654\n" MIN_BINDS, 2, "no [user.NAME] is configured");
}

static void test_listen_values(void)
{
    struct config *cfg = LOAD_OK("[server]\nlisten = [::1]:7654\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->listen_host, "::1");
        CHECK(cfg->listen_port == 7654);
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\nlisten = localhost:65535\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->listen_host, "localhost");
        CHECK(cfg->listen_port == 65535);
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\nlisten = [::]:1\nprotected_mode = off\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->listen_host, "::");
        config_free(cfg);
    }
    cfg = LOAD_OK("[server]\nlisten =\nunix_socket = /tmp/x.sock\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK(cfg->listen_host == NULL);
        CHECK_STR(cfg->unix_socket, "/tmp/x.sock");
        config_free(cfg);
    }
    EXPECT_ERROR("[server]\nlisten = 127.0.0.1\n", 2, "listen: expected host:port");
    EXPECT_ERROR("[server]\nlisten = 127.0.0.1:0\n", 2, "listen: bad port '0' (1..65535)");
    EXPECT_ERROR("[server]\nlisten = 127.0.0.1:65536\n", 2, "bad port '65536'");
    EXPECT_ERROR("[server]\nlisten = 127.0.0.1:http\n", 2, "bad port 'http'");
    EXPECT_ERROR("[server]\nlisten = :7654\n", 2, "listen: missing host");
    EXPECT_ERROR("[server]\nlisten = ::1:7654\n", 2, "IPv6 address in brackets");
    EXPECT_ERROR("[server]\nlisten = [::1]\n", 2, "expected [address]:port");
    EXPECT_ERROR("[server]\nlisten = [::1:7654\n", 2, "missing ']'");
    EXPECT_ERROR("[server]\nlisten = [zz]:7654\n", 2, "'zz' is not an IPv6 address");
    EXPECT_ERROR("[server]\nlisten = a/b:7654\n", 2, "bad host 'a/b'");
}

static void test_no_listener(void)
{
    EXPECT_ERROR("[server]\nmax_clients = 2\nlisten =\n" MIN_BINDS, 3, "no listener");
}

static void test_unix_socket_paths(void)
{
    struct config *cfg = LOAD_OK("[server]\nunix_socket = run/../s.sock\n" MIN_BINDS);
    if (cfg != NULL) {
        CHECK_STR(cfg->unix_socket, in_tmp("s.sock"));
        config_free(cfg);
    }
    char text[512];
    snprintf(text, sizeof text, "[server]\n\nunix_socket = /%0120d.sock\n", 0);
    EXPECT_ERROR(text, 3, "too long for a unix socket");
}

/* ---- tables and routing ------------------------------------------------ */

static void test_table_unknown_bind(void)
{
    EXPECT_ERROR("[tables]\ntest2 = second_db\n\n[binds]\ndefault = sqlite:///a.db\n"
                 "[tables]\ntest3 = memroy_db\n[binds]\nsecond_db = sqlite://\n",
                 7, "table 'test3' is mapped to bind 'memroy_db', which is not defined");
    EXPECT_ERROR(MIN_BINDS "[tables]\nt =\n", 4, "table 't': missing bind name");
    EXPECT_ERROR(MIN_BINDS "[tables]\n\"T\" = default\n", 4, "without quotes");
}

static void test_table_bind_defined_later(void)
{
    struct config *cfg = LOAD_OK("[tables]\ntest2 = second_db\n[binds]\n"
                                 "second_db = sqlite:///s.db\ndefault = sqlite:///a.db\n");
    if (cfg == NULL)
        return;
    CHECK(route_table_bind(cfg, "", "test2") == 1);
    CHECK(cfg->rules[0].line == 2);
    config_free(cfg);
}

static void test_duplicate_table_rule(void)
{
    EXPECT_ERROR(MIN_BINDS "[tables]\ntest2 = default\nTEST2 = default\n", 5,
                 "duplicate table rule 'test2' (first on line 4)");
    EXPECT_ERROR(MIN_BINDS "[tables]\na_* = default\n[tables]\nA_* = default\n", 6,
                 "duplicate table rule 'a_*'");
}

static void test_route_exact_beats_pattern(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite://\na = sqlite://\nb = sqlite://\n"
                                 "[tables]\naudit_* = a\n* = a\naudit_log = b\n");
    if (cfg == NULL)
        return;
    CHECK(cfg->rules[0].is_pattern && cfg->rules[1].is_pattern && !cfg->rules[2].is_pattern);
    CHECK(route_table_bind(cfg, "", "audit_log") == 2);
    CHECK(route_table_bind(cfg, "", "audit_x") == 1);
    CHECK(route_table_bind(cfg, "", "anything") == 1);
    config_free(cfg);
}

static void test_route_first_pattern_wins(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite://\na = sqlite://\nb = sqlite://\n"
                                 "[tables]\n*_log = b\naudit_* = a\n");
    if (cfg == NULL)
        return;
    CHECK(route_table_bind(cfg, "", "audit_log") == 2);
    CHECK(route_table_bind(cfg, "", "audit_x") == 1);
    CHECK(route_table_bind(cfg, "", "x_log") == 2);
    CHECK(route_table_bind(cfg, "", "other") == 0);
    config_free(cfg);
}

static void test_route_wildcards(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite://\na = sqlite://\n"
                                 "[tables]\na*b*c = a\n**x** = a\n");
    if (cfg == NULL)
        return;
    CHECK(route_table_bind(cfg, "", "abc") == 1);
    CHECK(route_table_bind(cfg, "", "Abc") == 0); /* names arrive lowercased */
    CHECK(route_table_bind(cfg, "", "axbyyc") == 1);
    CHECK(route_table_bind(cfg, "", "abcbc") == 1);
    CHECK(route_table_bind(cfg, "", "acb") == 0);
    CHECK(route_table_bind(cfg, "", "abcd") == 0);
    CHECK(route_table_bind(cfg, "", "x") == 1);
    CHECK(route_table_bind(cfg, "", "") == 0);
    config_free(cfg);
}

static void test_route_qualified(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite://\na = sqlite://\nb = sqlite://\n"
                                 "c = sqlite://\n[tables]\nmain.test2 = a\ntest2 = b\n"
                                 "aux.* = c\ntest3 = b\n");
    if (cfg == NULL)
        return;
    CHECK(route_table_bind(cfg, "main", "test2") == 1);
    CHECK(route_table_bind(cfg, "", "test2") == 2);
    CHECK(route_table_bind(cfg, NULL, "test2") == 2);
    CHECK(route_table_bind(cfg, "temp", "test2") == 2); /* falls back to the bare name */
    CHECK(route_table_bind(cfg, "aux", "test2") == 3);  /* schema.name, patterns first */
    CHECK(route_table_bind(cfg, "aux", "zzz") == 3);
    CHECK(route_table_bind(cfg, "main", "test3") == 2);
    CHECK(route_table_bind(cfg, "", "main.test2") == 1); /* a dotted bare name */
    CHECK(route_table_bind(cfg, "main", "other") == 0);
    config_free(cfg);
}

static void test_route_star_stops_at_dot(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite://\na = sqlite://\n"
                                 "[tables]\n* = a\n");
    if (cfg == NULL)
        return;
    /* "main.t" does not match "*", but the bare "t" does. */
    CHECK(route_table_bind(cfg, "main", "t") == 1);
    config_free(cfg);
    cfg = LOAD_OK("[binds]\ndefault = sqlite://\na = sqlite://\n[tables]\nm*t = a\n");
    if (cfg == NULL)
        return;
    CHECK(route_table_bind(cfg, "", "mat") == 1);
    CHECK(route_table_bind(cfg, "main", "t") == 0);
    CHECK(route_table_bind(cfg, "", "m.t") == 0);
    config_free(cfg);
}

static void test_route_lowercased_keys(void)
{
    struct config *cfg = LOAD_OK("[binds]\ndefault = sqlite://\nsecond_db = sqlite://\n"
                                 "[tables]\nTeSt2 = second_db\nAUDIT_* = second_db\n");
    if (cfg == NULL)
        return;
    CHECK_STR(cfg->rules[0].pattern, "test2");
    CHECK_STR(cfg->rules[1].pattern, "audit_*");
    CHECK(route_table_bind(cfg, "", "test2") == 1);
    CHECK(route_table_bind(cfg, "", "audit_trail") == 1);
    CHECK(route_table_bind(cfg, "", "test1") == 0);
    config_free(cfg);
}

static void test_bind_index(void)
{
    struct config *cfg = LOAD_OK("[binds]\nx = sqlite://\ndefault = sqlite://\n");
    if (cfg == NULL)
        return;
    CHECK(config_bind_index(cfg, "default") == 0);
    CHECK(config_bind_index(cfg, "x") == 1);
    CHECK(config_bind_index(cfg, "X") == -1);
    CHECK(config_bind_index(cfg, "") == -1);
    config_free(cfg);
}

/* ---- printing ---------------------------------------------------------- */

static void test_print(void)
{
    write_file("schema/app.sql", "");
    struct config *cfg = LOAD_OK("[server]\nmax_clients = 99\nlisten = [::1]:1\n"
                                 "[binds]\ndefault = sqlite:///app.db\n"
                                 "mem = sqlite:///:memory:\n"
                                 "pg = postgresql://bob:topsecret@h:5/d?password=hidden2\n"
                                 "[tables]\ntest2 = pg\naudit_* = mem\n"
                                 "[bind.default]\nschema = schema/app.sql\n");
    if (cfg == NULL)
        return;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print(cfg, f);
    fclose(f);
    char want[PATH_MAX + 200];
    snprintf(want, sizeof want, "config %s\n", cfgpath);
    CHECK(strstr(buf, want) == buf);
    CHECK(strstr(buf, "server listen = [::1]:1\n") != NULL);
    CHECK(strstr(buf, "server max_clients = 99\n") != NULL);
    CHECK(strstr(buf, "server max_request = 1M (default)\n") != NULL);
    CHECK(strstr(buf, "server unix_socket = (none) (default)\n") != NULL);
    snprintf(want, sizeof want, "server data_dir = %s (default)\n", tmpdir);
    CHECK(strstr(buf, want) != NULL);
    CHECK(strstr(buf, "server log_level = info (default)\n") != NULL);
    snprintf(want, sizeof want, "bind default: sqlite file %s/app.db\n", tmpdir);
    CHECK(strstr(buf, want) != NULL);
    snprintf(want, sizeof want, "bind default schema = %s/schema/app.sql\n", tmpdir);
    CHECK(strstr(buf, want) != NULL);
    CHECK(strstr(buf, "bind mem: sqlite memory\n") != NULL);
    CHECK(strstr(buf, "bind mem schema = (none) (default)\n") != NULL);
    CHECK(strstr(buf, "bind mem pool_size = 4 (default)\n") != NULL);
    CHECK(strstr(buf, "bind mem foreign_keys = off (default)\n") != NULL);
    CHECK(strstr(buf, "bind pg: postgres postgresql://bob:***@h:5/d?password=***\n") != NULL);
    CHECK(strstr(buf, "bind pg pg password = ***\n") != NULL);
    CHECK(strstr(buf, "bind pg pg host = h\n") != NULL);
    CHECK(strstr(buf, "table test2 -> pg\n") != NULL);
    CHECK(strstr(buf, "table audit_* -> mem (pattern)\n") != NULL);
    CHECK(strstr(buf, "table * (anything else) -> default\n") != NULL);
    CHECK(strstr(buf, "topsecret") == NULL && strstr(buf, "hidden2") == NULL);
    free(buf);
    config_free(cfg);
}

static void test_free_null(void)
{
    config_free(NULL);
    CHECK_STR(config_log_level_name((enum log_level)42), "?");
}

/* A realistic file, broken one line at a time: each variant must fail
 * cleanly (ASan/valgrind check the error paths for leaks) at that line. */
static void test_every_line_broken(void)
{
    static const struct {
        const char *good, *bad, *msg;
    } lines[] = {
        {"[server]", "[srv]", "unknown section"},
        {"listen = 127.0.0.1:7654", "listen = 127.0.0.1:x", "bad port"},
        {"unix_socket = s.sock", "unix_sock = s.sock", "unknown key"},
        {"max_request = 2M", "max_request = 2Q", "not a size"},
        {"[binds]", "[binds", "without ']'"},
        {"default = sqlite:///app.db", "default = sqlite:/app.db", "scheme://"},
        {"pg = postgresql://u:p@h:5432/d?sslmode=disable", "pg = postgresql://u:p%@h:5432/d?sslmode=disable",
         "percent-escape"},
        {"mem = sqlite:///:memory:", "mem = mysql://", "unsupported URL scheme"},
        {"[tables]", "[tables]]", "unexpected text"},
        {"test2 = pg", "test2 = gp", "not defined in [binds]"},
        {"audit_* = mem", "audit_* = mem2", "not defined in [binds]"},
        {"[bind.pg]", "[bind.pq]", "no bind 'pq'"},
        {"pool_size = 8", "pool_size = 80", "out of range"},
        {"schema = schema/app.sql", "schema = schema/nope.sql", "cannot read"},
    };
    enum { N = sizeof lines / sizeof lines[0] };
    char text[2048];
    write_file("schema/app.sql", "");
    for (int broken = -1; broken < N; broken++) {
        size_t off = 0;
        for (int i = 0; i < N; i++)
            off += (size_t)snprintf(text + off, sizeof text - off, "%s\n",
                                    i == broken ? lines[i].bad : lines[i].good);
        if (broken < 0) {
            struct config *cfg = LOAD_OK(text);
            config_free(cfg);
        } else {
            EXPECT_ERROR(text, broken + 1, lines[broken].msg);
        }
    }
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    chmod(path, 0700);
    return remove(path);
}

/* Reload: restart-only [server] settings keep their running values. */
static void test_keep_restart_settings(void)
{
    struct config *cur = LOAD_OK("[server]\nlisten = 127.0.0.1:7000\nunix_socket = a.sock\n"
                                 "stmt_cache = 10\nmax_clients = 5\nlog_connections = on\n" MIN_BINDS);
    struct config *next =
        LOAD_OK("[server]\nlisten = [::1]:7001\nunix_socket = b.sock\nunix_socket_mode = 0600\n"
                "stmt_cache = 20\nmax_clients = 6\nshutdown_timeout = 100\n" MIN_BINDS);
    char changed[256];
    char want[PATH_MAX];

    if (cur == NULL || next == NULL)
        goto done;
    CHECK(cur->log_connections && !next->log_connections);
    CHECK(cur->shutdown_timeout_ms == 30000 && next->shutdown_timeout_ms == 100);
    CHECK(config_keep_restart_settings(next, cur, changed, sizeof changed) == 4);
    CHECK_STR(changed, "listen, unix_socket, unix_socket_mode, stmt_cache");
    CHECK_STR(next->listen_host, "127.0.0.1");
    CHECK(next->listen_port == 7000);
    snprintf(want, sizeof want, "%s/a.sock", tmpdir);
    CHECK_STR(next->unix_socket, want);
    CHECK(next->unix_socket_mode == 0660);
    CHECK(next->stmt_cache == 10);
    /* Reloadable ones keep the new values. */
    CHECK(next->max_clients == 6);
    CHECK(next->shutdown_timeout_ms == 100);
    /* Nothing left to change the second time; no listener is kept as none. */
    CHECK(config_keep_restart_settings(next, cur, changed, sizeof changed) == 0);
    CHECK_STR(changed, "");
    config_free(next);
    next = LOAD_OK("[server]\nlisten =\nunix_socket = a.sock\n" MIN_BINDS);
    if (next == NULL)
        goto done;
    CHECK(config_keep_restart_settings(next, cur, NULL, 0) == 2);
    CHECK(next->listen_host != NULL && next->listen_port == 7000);
done:
    config_free(cur);
    config_free(next);
}

/* Reload: which binds may stay open. */
static void test_bind_equal(void)
{
    struct config *a = LOAD_OK("[binds]\ndefault = sqlite:///app.db\nm = sqlite://\n"
                               "pg = postgresql://u:p@127.0.0.1/db\n[bind.default]\npool_size = 2\n");
    struct config *b = LOAD_OK("[binds]\ndefault = sqlite:///app.db\nm = sqlite://\n"
                               "pg = postgresql://u:p@127.0.0.1/db\n[bind.default]\npool_size = 3\n"
                               "[bind.m]\nbusy_timeout = 10\n");
    struct config *c =
        LOAD_OK("[server]\ndata_dir = elsewhere\n[binds]\ndefault = sqlite:///app.db\n"
                "m = sqlite://\npg = postgresql://u:q@127.0.0.1/db\n[bind.default]\npool_size = 2\n");

    if (a == NULL || b == NULL || c == NULL)
        goto done;
    CHECK(config_bind_equal(&a->binds[0], &a->binds[0]));
    /* Options differ: same database, not equal. */
    CHECK(!config_bind_equal(&a->binds[0], &b->binds[0]));
    CHECK(config_bind_same_database(&a->binds[0], &b->binds[0]));
    CHECK(!config_bind_equal(&a->binds[1], &b->binds[1]));
    CHECK(config_bind_same_database(&a->binds[1], &b->binds[1]));
    CHECK(config_bind_equal(&a->binds[2], &b->binds[2]));
    /* Another data_dir moves the file; another password is another URL. */
    CHECK(!config_bind_same_database(&a->binds[0], &c->binds[0]));
    CHECK(config_bind_equal(&a->binds[1], &c->binds[1]));
    CHECK(!config_bind_same_database(&a->binds[2], &c->binds[2]));
    CHECK(!config_bind_same_database(&a->binds[0], &a->binds[1]));
done:
    config_free(a);
    config_free(b);
    config_free(c);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sqlmux-test-config-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(cfgpath, sizeof cfgpath, "%s/sqlmux.ini", tmpdir);

    RUN(test_example_file);
    RUN(test_defaults);
    RUN(test_all_server_keys_set);
    RUN(test_default_moved_to_front);
    RUN(test_no_default_bind);
    RUN(test_sqlite_paths);
    RUN(test_data_dir_absolute_and_dotdot);
    RUN(test_relative_config_path);
    RUN(test_sqlite_memory_forms);
    RUN(test_sqlite_driver_suffix);
    RUN(test_sqlite_cached_shared_warning);
    RUN(test_sqlite_other_options_warn);
    RUN(test_sqlite_host_part_rejected);
    RUN(test_pg_full_url);
    RUN(test_pg_scheme_variants);
    RUN(test_pg_socket_dir_in_query);
    RUN(test_pg_percent_decoding);
    RUN(test_pg_unescaped_at_in_password);
    RUN(test_pg_ipv6_host);
    RUN(test_pg_minimal_urls);
    RUN(test_pg_password_in_query_redacted);
    RUN(test_pg_bad_percent_escape);
    RUN(test_pg_bad_port);
    RUN(test_pg_bad_options);
    RUN(test_bad_scheme);
    RUN(test_bad_bind_names);
    RUN(test_long_bind_section_name);
    RUN(test_duplicate_bind);
    RUN(test_bind_section_options);
    RUN(test_migrations_and_snapshot_keys);
    RUN(test_bind_section_unknown_bind);
    RUN(test_bind_section_reopened);
    RUN(test_pg_sqlite_only_options_warn);
    RUN(test_schema_missing);
    RUN(test_schema_unreadable);
    RUN(test_schema_absolute);
    RUN(test_unknown_section);
    RUN(test_unknown_key);
    RUN(test_key_outside_section);
    RUN(test_duplicate_server_key);
    RUN(test_syntax_errors);
    RUN(test_no_multiline_values);
    RUN(test_comments_crlf_bom);
    RUN(test_long_lines);
    RUN(test_nul_byte);
    RUN(test_file_not_found);
    RUN(test_small_error_buffer);
    RUN(test_int_values);
    RUN(test_size_values);
    RUN(test_octal_mode);
    RUN(test_bool_values);
    RUN(test_log_level);
    RUN(test_listen_values);
    RUN(test_protected_mode);
    RUN(test_users);
    RUN(test_no_listener);
    RUN(test_unix_socket_paths);
    RUN(test_table_unknown_bind);
    RUN(test_table_bind_defined_later);
    RUN(test_duplicate_table_rule);
    RUN(test_route_exact_beats_pattern);
    RUN(test_route_first_pattern_wins);
    RUN(test_route_wildcards);
    RUN(test_route_qualified);
    RUN(test_route_star_stops_at_dot);
    RUN(test_route_lowercased_keys);
    RUN(test_bind_index);
    RUN(test_print);
    RUN(test_free_null);
    RUN(test_every_line_broken);
    RUN(test_keep_restart_settings);
    RUN(test_bind_equal);

    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    UNIT_MAIN_END;
}
