/*
 * The server: owns the loop's listeners, signals and binds, the list of
 * sessions, and the event queue through which backends (on any thread)
 * hand response bytes to the loop thread.
 *
 * Shutdown (SIGTERM/SIGINT): the listeners close, every session finishes
 * its running statement and flushes its answer, open transactions are
 * rolled back, and once the last session is gone the binds close (their
 * workers drain, file binds checkpoint on the last close) and the loop
 * ends. A second signal exits at once.
 */
#include "daemon/server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/routecache.h"
#include "daemon/session.h"

/* ---- Backend events -------------------------------------------------- */

void server_post(struct server *srv, struct job_event *ev)
{
    ev->next = NULL;
    pthread_mutex_lock(&srv->ev_lock);
    *srv->ev_tail = ev;
    srv->ev_tail = &ev->next;
    pthread_mutex_unlock(&srv->ev_lock);
    uv_async_send(&srv->ev_async);
}

static void on_events(uv_async_t *async)
{
    struct server *srv = async->data;
    struct job_event *ev;

    pthread_mutex_lock(&srv->ev_lock);
    ev = srv->ev_head;
    srv->ev_head = NULL;
    srv->ev_tail = &srv->ev_head;
    pthread_mutex_unlock(&srv->ev_lock);
    while (ev != NULL) {
        struct job_event *next = ev->next;
        session_job_event(ev);
        ev = next;
    }
}

/* ---- Listeners ------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *srv = listener->data;

    if (status < 0) {
        log_warn("accept: %s", uv_strerror(status));
        return;
    }
    session_accept(srv, listener);
}

static int listen_tcp(struct server *srv)
{
    const struct config *cfg = srv->cfg;
    struct sockaddr_storage addr;
    int rc;

    if (strchr(cfg->listen_host, ':') != NULL)
        rc = uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&addr);
    else
        rc = uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&addr);
    if (rc != 0) {
        log_error("listen %s:%d: not an IP address", cfg->listen_host, cfg->listen_port);
        return -1;
    }
    uv_tcp_init(srv->loop, &srv->tcp);
    srv->tcp.data = srv;
    srv->has_tcp = true;
    rc = uv_tcp_bind(&srv->tcp, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->tcp, 511, on_connection);
    if (rc != 0) {
        log_error("listen %s:%d: %s", cfg->listen_host, cfg->listen_port, uv_strerror(rc));
        return -1;
    }
    log_info("listening on %s:%d", cfg->listen_host, cfg->listen_port);
    return 0;
}

static int listen_unix(struct server *srv)
{
    const char *path = srv->cfg->unix_socket;
    struct stat st;
    int rc;

    /* A socket file left by a previous run would make bind fail. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    uv_pipe_init(srv->loop, &srv->pipe, 0);
    srv->pipe.data = srv;
    srv->has_pipe = true;
    rc = uv_pipe_bind(&srv->pipe, path);
    if (rc == 0 && chmod(path, (mode_t)srv->cfg->unix_socket_mode) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->pipe, 511, on_connection);
    if (rc != 0) {
        log_error("listen %s: %s", path, uv_strerror(rc));
        return -1;
    }
    log_info("listening on %s", path);
    return 0;
}

/* ---- Signals and shutdown ------------------------------------------- */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void close_binds(struct server *srv)
{
    for (size_t i = 0; i < srv->nbinds; i++)
        if (srv->binds[i].impl != NULL)
            srv->binds[i].ops->close(&srv->binds[i]);
}

/* Everything is closed once the last session is gone. */
static void server_finish(struct server *srv)
{
    close_binds(srv);
    /* Release jobs posted while the binds drained. */
    on_events(&srv->ev_async);
    close_handle((uv_handle_t *)&srv->ev_async);
    close_handle((uv_handle_t *)&srv->sig_term);
    close_handle((uv_handle_t *)&srv->sig_int);
    close_handle((uv_handle_t *)&srv->sig_hup);
    log_info("stopped");
}

void server_session_gone(struct server *srv)
{
    srv->nsessions--;
    if (srv->stopping && srv->nsessions == 0)
        server_finish(srv);
}

void server_stop(struct server *srv)
{
    struct session *s, *next;

    if (srv->stopping)
        return;
    srv->stopping = true;
    log_info("shutting down: %zu client%s", srv->nsessions, srv->nsessions == 1 ? "" : "s");
    if (srv->has_tcp)
        close_handle((uv_handle_t *)&srv->tcp);
    if (srv->has_pipe) {
        close_handle((uv_handle_t *)&srv->pipe);
        unlink(srv->cfg->unix_socket);
    }
    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        session_close(s, false);
    }
    if (srv->nsessions == 0)
        server_finish(srv);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *srv = sig->data;

    if (signum == SIGHUP) {
        log_warn("SIGHUP: configuration reload is not supported yet; restart to apply changes");
        return;
    }
    if (++srv->signals > 1) {
        log_warn("second signal: exiting at once");
        _exit(1);
    }
    log_info("%s received", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    server_stop(srv);
}

/* ---- Start-up ------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int server_init(struct server *srv, uv_loop_t *loop, struct config *cfg)
{
    char err[1024];

    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->cfg = cfg;
    srv->ev_tail = &srv->ev_head;
    pthread_mutex_init(&srv->ev_lock, NULL);
    if (uv_async_init(loop, &srv->ev_async, on_events) != 0)
        return -1;
    srv->ev_async.data = srv;
    uv_signal_init(loop, &srv->sig_term);
    uv_signal_init(loop, &srv->sig_int);
    uv_signal_init(loop, &srv->sig_hup);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;

    srv->routes = routecache_new((size_t)cfg->route_cache);
    srv->binds = calloc(cfg->nbinds, sizeof *srv->binds);
    if (srv->routes == NULL || srv->binds == NULL) {
        log_error("out of memory");
        return -1;
    }
    if (mkdir_p(cfg->data_dir) != 0) {
        log_error("data_dir %s: cannot create: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    srv->nbinds = cfg->nbinds;
    for (size_t i = 0; i < cfg->nbinds; i++) {
        struct bind *b = &srv->binds[i];
        b->srv = srv;
        b->conf = &cfg->binds[i];
        b->index = i;
        b->ops = backend_for(b->conf->type);
        if (b->ops == NULL) {
            log_error("%s:%d: bind %s: PostgreSQL binds are not supported by this build yet",
                      cfg->path, b->conf->line, b->conf->name);
            return -1;
        }
        if (b->ops->open(b, err, sizeof err) != 0) {
            log_error("%s", err);
            return -1;
        }
    }
    if (cfg->listen_host != NULL && listen_tcp(srv) != 0)
        return -1;
    if (cfg->unix_socket != NULL && listen_unix(srv) != 0)
        return -1;
    if (!srv->has_tcp && !srv->has_pipe) {
        log_error("%s: no listener: set listen or unix_socket under [server]", cfg->path);
        return -1;
    }
    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
    log_info("ready: %zu bind%s", srv->nbinds, srv->nbinds == 1 ? "" : "s");
    return 0;
}

int server_run(struct server *srv)
{
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return 0;
}

/* Release what server_init() made, after server_run() or a failed init. */
void server_free(struct server *srv)
{
    if (!srv->stopping) {
        /* Failed start-up: close what was opened and let the loop reap the
         * handles. */
        srv->stopping = true;
        if (srv->has_tcp)
            close_handle((uv_handle_t *)&srv->tcp);
        if (srv->has_pipe)
            close_handle((uv_handle_t *)&srv->pipe);
        close_binds(srv);
        close_handle((uv_handle_t *)&srv->ev_async);
        close_handle((uv_handle_t *)&srv->sig_term);
        close_handle((uv_handle_t *)&srv->sig_int);
        close_handle((uv_handle_t *)&srv->sig_hup);
        uv_run(srv->loop, UV_RUN_DEFAULT);
    }
    routecache_free(srv->routes);
    free(srv->binds);
    pthread_mutex_destroy(&srv->ev_lock);
    config_free(srv->cfg);
    srv->cfg = NULL;
}
