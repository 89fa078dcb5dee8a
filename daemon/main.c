/*
 * sqlmuxd: command line, configuration, and the server's life.
 *
 *   sqlmuxd CONFIG                  serve in the foreground, log to stderr
 *   sqlmuxd --check-config CONFIG   validate, print the resolved config, exit
 *   sqlmuxd migrate CONFIG ...      migration status, up, down (migrate_cli.c)
 *   sqlmuxd passwd [USER]           hash a password for the config (passwd_cli.c)
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sqlite3.h>
#include <uv.h>

#include "conf/config.h"
#include "daemon/commands.h"
#include "daemon/log.h"
#include "daemon/migrate.h"
#include "daemon/passwd_cli.h"
#include "daemon/server.h"
#include "daemon/tls.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sqlmuxd [--check-config] CONFIG\n"
               "       sqlmuxd migrate CONFIG [status | up [VERSION] | down VERSION] [--bind NAME]\n"
               "       sqlmuxd passwd [USER]   (reads a password, prints its hash for [user.USER])\n"
               "       sqlmuxd --version\n"
               "\n"
               "  CONFIG               the INI file naming the binds and the table map\n"
               "  --check-config, -t   validate CONFIG, print the resolved binds and table map, exit\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool check = false;
    struct config *cfg = NULL;
    struct server srv;
    char err[1024];
    int rc;

    /* No memory statistics: the daemon never asks for them, and keeping
     * them takes a process-wide mutex on every SQLite allocation, which
     * the loop's quick reads and every worker would contend for. Before
     * any other SQLite call (it may only change before initialisation). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (argc > 1 && strcmp(argv[1], "migrate") == 0)
        return migrate_main(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "passwd") == 0)
        return passwd_main(argc - 2, argv + 2);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check-config") == 0 || strcmp(argv[i], "-t") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("sqlmuxd %s (sqlite %s, libuv %s)\n", SQLMUXD_VERSION, sqlite3_libversion(),
                   uv_version_string());
            return 0;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' || path != NULL) {
            usage(stderr);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (path == NULL) {
        usage(stderr);
        return 2;
    }
    if (config_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (size_t i = 0; i < cfg->nwarnings; i++)
        fprintf(stderr, "%s\n", cfg->warnings[i]);
    if (check && cfg->tls_listen_host != NULL) {
        /* The certificate, key and CAs must load, not only be readable. */
        struct tls_server *tls = NULL;
        if (tls_server_new(cfg, &tls, err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s\n", cfg->path, err);
            config_free(cfg);
            return 1;
        }
        printf("tls: %s\n", tls_server_describe(tls));
        tls_server_free(tls);
    }
    if (check) {
        config_print(cfg, stdout);
        printf("configuration ok\n");
        config_free(cfg);
        return 0;
    }
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    log_info("sqlmuxd %s starting with %s", SQLMUXD_VERSION, cfg->path);
    if (server_init(&srv, uv_default_loop(), cfg, commands_dispatch) != 0) {
        server_free(&srv);
        uv_loop_close(uv_default_loop());
        return 1;
    }
    rc = server_run(&srv);
    server_free(&srv);
    uv_loop_close(uv_default_loop());
    return rc;
}
