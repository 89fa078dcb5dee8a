/*
 * The server: owns the loop's listeners, signals and binds, the list of
 * sessions, the current configuration, and the event queue through which
 * backends (on any thread) hand response bytes to the loop thread.
 *
 * Listeners are bound here from the config, or taken over from systemd
 * when the daemon is socket-activated (then listen and unix_socket are not
 * used).
 *
 * Reload (SIGHUP, .reload) is validate-then-swap: a new struct config is
 * loaded and every new or changed bind opened before anything changes; on
 * any failure the running configuration stays. Binds are reference-counted
 * (the table, each job, each open transaction), and so are configurations
 * (the server, each bind, each job), so a bind replaced or removed by a
 * reload keeps serving the transactions pinned on it and closes when the
 * last one ends, and nothing ever points into a freed configuration.
 *
 * Shutdown (SIGTERM/SIGINT): the listeners close, every session finishes
 * its running statement and flushes its answer (past shutdown_timeout the
 * statements are interrupted), open transactions are rolled back, and once
 * the last session is gone the binds close (their workers drain, file
 * binds checkpoint on the last close) and the loop ends. A second signal
 * exits at once.
 */
#include "daemon/fsutil.h"
#include "daemon/server.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/authq.h"
#include "daemon/catalog.h"
#include "daemon/catalog_refresh.h"
#include "daemon/federate.h"
#include "daemon/log.h"
#include "daemon/route.h"
#include "daemon/session.h"
#include "daemon/tls.h"
#include "daemon/xact.h"

/* ---- Backend events -------------------------------------------------- */

/* A job's event to whoever waits for it: the catalog reader, or the
 * session. */
static void server_deliver(struct job_event *ev)
{
    if (ev->job->type == JOB_CATALOG)
        catalog_job_done(ev->job); /* its only event */
    else
        session_job_event(ev);
}

/* ---- Configurations and binds --------------------------------------- */

struct bind *server_bind_named(const struct server *srv, const char *name)
{
    for (size_t i = 0; i < srv->nbinds; i++)
        if (strcmp(srv->binds[i]->conf->name, name) == 0)
            return srv->binds[i];
    return NULL;
}

/* The ops for a bind type, or NULL when not supported. */
static const struct backend_ops *backend_for(enum bind_type type)
{
    switch (type) {
    case BIND_SQLITE_FILE:
    case BIND_SQLITE_MEMORY: return &backend_sqlite_ops;
    case BIND_POSTGRES: return &backend_pg_ops;
    }
    return NULL;
}

/* Open bind i of ref's configuration. Returns it with one reference (the
 * caller's), or NULL with err set. */
static struct bind *bind_open(struct server *srv, struct confref *ref, size_t i, char *err, size_t errlen)
{
    const struct config *cfg = ref->cfg;
    struct bind *b = calloc(1, sizeof *b);

    if (b == NULL) {
        snprintf(err, errlen, "bind %s: out of memory", cfg->binds[i].name);
        return NULL;
    }
    b->host = &srv->host;
    b->conf = &cfg->binds[i];
    b->index = i;
    b->refs = 1;
    b->cfgref = confref_hold(ref);
    b->ops = backend_for(b->conf->type);
    if (b->ops == NULL) {
        snprintf(err, errlen, "%s:%d: bind %s: this build does not support its type", cfg->path,
                 b->conf->line, b->conf->name);
    } else if (b->ops->open(b, err, errlen) == 0) {
        return b;
    }
    confref_drop(b->cfgref);
    free(b);
    return NULL;
}

/* ---- Listeners ------------------------------------------------------- */

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *srv = listener->data;

    if (status < 0) {
        log_warn("accept: %s", uv_strerror(status));
        return;
    }
    /* The handle is the first member of its struct listener. */
    session_accept(srv, listener, ((struct listener *)listener)->tls ? srv->tls : NULL);
    service_status(srv);
}

/* The next free listener slot, initialized for TCP or a unix socket; NULL
 * when all are taken or libuv refused the handle. */
static struct listener *listener_new(struct server *srv, bool is_unix)
{
    struct listener *l;
    int rc;

    if (srv->nlisteners >= SERVER_MAX_LISTENERS)
        return NULL;
    l = &srv->listeners[srv->nlisteners];
    memset(l, 0, sizeof *l);
    if (is_unix)
        rc = uv_pipe_init(srv->loop, &l->h.pipe, 0);
    else
        rc = uv_tcp_init(srv->loop, &l->h.tcp);
    if (rc != 0)
        return NULL;
    srv->nlisteners++;
    l->h.handle.data = srv;
    l->open = true;
    return l;
}

/* Listen on host:port; tls: its clients speak TLS. 0, or -1 after logging
 * why. */
static int listen_tcp(struct server *srv, const char *host, int port, bool tls)
{
    struct sockaddr_storage addr;
    struct listener *l;
    int rc;

    if (strchr(host, ':') != NULL)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc != 0) {
        log_error("listen %s:%d: not an IP address", host, port);
        return -1;
    }
    l = listener_new(srv, false);
    if (l == NULL) {
        log_error("listen %s:%d: more than %d listeners, or out of memory", host, port, SERVER_MAX_LISTENERS);
        return -1;
    }
    l->tls = tls;
    rc = uv_tcp_bind(&l->h.tcp, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 511, on_connection);
    if (rc != 0) {
        log_error("listen %s:%d: %s", host, port, uv_strerror(rc));
        return -1;
    }
    log_info("listening on %s:%d%s", host, port, tls ? " (TLS)" : "");
    return 0;
}

/* Give the socket file to `group` (a name, or a number), so its members
 * may connect under unix_socket_mode. Start-up only: the group database
 * may be slow. 0, or -1 after logging why. */
static int socket_chgrp(const char *path, const char *group)
{
    gid_t gid;

    if (config_group_id(group, &gid) != 0) {
        log_error("unix_socket_group = %s: no such group", group);
        return -1;
    }
    if (chown(path, (uid_t)-1, gid) != 0) {
        log_error("unix_socket_group = %s: cannot give %s to the group: %s", group, path, strerror(errno));
        return -1;
    }
    return 0;
}

static int listen_unix(struct server *srv)
{
    const char *path = srv->cfg->unix_socket;
    struct listener *l;
    struct stat st;
    int rc;

    /* A socket file left by a previous run would make bind fail. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    l = listener_new(srv, true);
    if (l == NULL) {
        log_error("listen %s: more than %d listeners, or out of memory", path, SERVER_MAX_LISTENERS);
        return -1;
    }
    rc = uv_pipe_bind(&l->h.pipe, path);
    if (rc == 0) {
        l->path = strdup(path);
        if (l->path == NULL)
            rc = UV_ENOMEM;
    }
    if (rc == 0 && srv->cfg->unix_socket_group != NULL &&
        socket_chgrp(path, srv->cfg->unix_socket_group) != 0)
        return -1;
    if (rc == 0 && chmod(path, (mode_t)srv->cfg->unix_socket_mode) != 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0)
        rc = uv_listen(&l->h.stream, 511, on_connection);
    if (rc != 0) {
        log_error("listen %s: %s", path, uv_strerror(rc));
        return -1;
    }
    log_info("listening on %s", path);
    return 0;
}

/* Take over the sockets of systemd's socket activation. Returns 1 when
 * there were some, 0 when none, -1 after logging an error. */
static int listen_activated(struct server *srv)
{
    struct service_fd fds[SERVER_MAX_LISTENERS];
    char err[256];
    int n = service_listen_fds(fds, SERVER_MAX_LISTENERS, err, sizeof err);

    if (n < 0) {
        log_error("%s", err);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct listener *l = listener_new(srv, fds[i].is_unix);
        char where[256] = "?";
        size_t len = sizeof where;
        int rc;

        if (l == NULL) {
            log_error("socket activation: descriptor %d: more than %d listeners, or out of memory", fds[i].fd,
                      SERVER_MAX_LISTENERS);
            return -1;
        }
        if (fds[i].is_unix) {
            rc = uv_pipe_open(&l->h.pipe, fds[i].fd);
            if (rc == 0 && uv_pipe_getsockname(&l->h.pipe, where, &len) != 0)
                snprintf(where, sizeof where, "unix socket");
        } else {
            struct sockaddr_storage ss;
            int sslen = sizeof ss;
            rc = uv_tcp_open(&l->h.tcp, fds[i].fd);
            if (rc == 0 && uv_tcp_getsockname(&l->h.tcp, (struct sockaddr *)&ss, &sslen) == 0) {
                char host[INET6_ADDRSTRLEN] = "?";
                if (ss.ss_family == AF_INET6) {
                    uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
                    snprintf(where, sizeof where, "[%s]:%d", host,
                             ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
                } else {
                    uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
                    snprintf(where, sizeof where, "%s:%d", host,
                             ntohs(((struct sockaddr_in *)&ss)->sin_port));
                }
            }
        }
        if (rc == 0)
            rc = uv_listen(&l->h.stream, 511, on_connection);
        if (rc != 0) {
            log_error("socket activation: descriptor %d: %s", fds[i].fd, uv_strerror(rc));
            return -1;
        }
        log_info("listening on %s (descriptor %d%s%s from systemd)", where, fds[i].fd,
                 fds[i].name[0] ? ", " : "", fds[i].name);
    }
    if (n > 0) {
        srv->activated = true;
        log_info("socket-activated: listen and unix_socket of the config are not used");
    }
    return n > 0;
}

/* ---- Signals and shutdown ------------------------------------------- */

/* Close a handle of struct server unless it is closing already or was
 * never initialized (a start-up that failed before it: still zeroed). */
static void close_handle(uv_handle_t *h)
{
    if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void close_listeners(struct server *srv)
{
    for (size_t i = 0; i < srv->nlisteners; i++) {
        struct listener *l = &srv->listeners[i];
        if (!l->open)
            continue;
        close_handle(&l->h.handle);
        if (l->path != NULL) {
            unlink(l->path);
            free(l->path);
            l->path = NULL;
        }
        l->open = false;
    }
}

/* Every IDLE_SWEEP_MS: cancel the statements of clients that are gone
 * though their sessions no longer read them (session_peer_gone); close
 * clients whose TLS handshake did not finish within login_timeout; close
 * clients that sent nothing and were answered nothing for
 * client_idle_timeout, or for idle_transaction_timeout while a transaction
 * of theirs is open on a bind (with -ERR TIMEOUT first; an open transaction
 * is rolled back as for any departing client), and clients that hold a
 * backend connection but read none of their answers for
 * client_output_timeout. */
#define IDLE_SWEEP_MS 250
/* At start, how long the daemon waits for the binds' catalogs before it
 * listens anyway (a PostgreSQL bind that answers nothing). */
#define CATALOG_LOAD_MS 5000

static void on_idle_sweep(uv_timer_t *t)
{
    struct server *srv = t->data;
    uint64_t limit = (uint64_t)srv->cfg->client_idle_timeout_ms;
    uint64_t txn_limit = (uint64_t)srv->cfg->idle_transaction_timeout_ms;
    uint64_t login = srv->cfg->nusers > 0 ? (uint64_t)srv->cfg->login_timeout_ms : 0;
    /* A TLS handshake must finish within login_timeout, users or not. */
    uint64_t handshake = srv->tls != NULL ? (uint64_t)srv->cfg->login_timeout_ms : 0;
    uint64_t output = (uint64_t)srv->cfg->client_output_timeout_ms;
    uint64_t now = uv_now(srv->loop);
    struct session *s, *next;

    if (srv->stopping)
        return;
    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        if (handshake > 0 && s->tls != NULL && !tls_conn_ready(s->tls) && s->state == SESS_IDLE &&
            now - s->connected_at >= handshake) {
            /* No way to send it an -ERR: the handshake is not done. */
            log_info("c%llu: TLS handshake not done within login_timeout (%llu ms): closing",
                     (unsigned long long)s->id, (unsigned long long)handshake);
            session_close(s, true);
            continue;
        }
        if (session_peer_gone(s)) {
            /* Reset, or a unix socket closed: nobody reads the answer. */
            log_info("c%llu: the client closed its connection during a statement: cancelling it",
                     (unsigned long long)s->id);
            session_close(s, true);
            continue;
        }
        if (output > 0 && session_output_stalled(s, now, output)) {
            /* It holds a connection others wait for and reads nothing: no
             * answer could reach it; its statement is cancelled and its
             * transaction rolled back. */
            log_warn("c%llu: read none of its answers for %llu ms (client_output_timeout) while holding a "
                     "connection of bind %s: disconnecting",
                     (unsigned long long)s->id, (unsigned long long)output,
                     s->job != NULL ? s->job->bind->conf->name : s->txn_bind->conf->name);
            session_close(s, true);
            continue;
        }
        if (login > 0 && s->user == NULL && s->state == SESS_IDLE && now - s->unauth_since >= login) {
            /* Connections that never log in would hold max_clients slots. */
            log_info("c%llu: not logged in within %llu ms: closing", (unsigned long long)s->id,
                     (unsigned long long)login);
            session_reply_error(s, "TIMEOUT", "not logged in within login_timeout (%llu ms): closing",
                                (unsigned long long)login);
            session_close(s, false);
            continue;
        }
        if (s->state != SESS_IDLE || s->qcount > 0)
            continue;
        if (txn_limit > 0 && s->in_txn && now - s->active_at >= txn_limit) {
            log_info("c%llu: idle inside a transaction for more than %llu ms: rolling back and closing",
                     (unsigned long long)s->id, (unsigned long long)txn_limit);
            session_reply_error(s, "TIMEOUT",
                                "idle inside a transaction for more than idle_transaction_timeout (%llu ms): "
                                "rolled back, closing",
                                (unsigned long long)txn_limit);
            session_close(s, false);
            continue;
        }
        if (limit == 0 || now - s->active_at < limit)
            continue;
        log_info("c%llu: idle for more than %llu ms: closing", (unsigned long long)s->id,
                 (unsigned long long)limit);
        session_reply_error(s, "TIMEOUT", "idle for more than client_idle_timeout (%llu ms): closing",
                            (unsigned long long)limit);
        session_close(s, false);
    }
}

static void close_loop_handles(struct server *srv)
{
    bind_host_close(&srv->host);
    close_handle((uv_handle_t *)&srv->flush_turn);
    close_handle((uv_handle_t *)&srv->flush_awake);
    close_handle((uv_handle_t *)&srv->resume_idle);
    close_handle((uv_handle_t *)&srv->sig_term);
    close_handle((uv_handle_t *)&srv->sig_int);
    close_handle((uv_handle_t *)&srv->sig_hup);
    close_handle((uv_handle_t *)&srv->grace);
    close_handle((uv_handle_t *)&srv->idle_sweep);
    close_handle((uv_handle_t *)&srv->catalog_timer);
    loopwatch_close(&srv->watch);
    idlepoll_close(&srv->poller);
    xact_stop(srv->host.xact);
    service_close(srv);
}

/* Close every bind, current and retired, and free them. Jobs still queued
 * drain first; their events are delivered before the structs go. */
static void close_binds(struct server *srv)
{
    /* First the executors: they have the binds' files attached. */
    if (srv->federation != NULL) {
        srv->federation->ops->close(srv->federation);
        bind_host_drain(&srv->host);
        bind_drop(srv->federation);
        srv->federation = NULL;
    }
    for (size_t i = 0; i < srv->nbinds; i++)
        if (srv->binds[i]->impl != NULL)
            srv->binds[i]->ops->close(srv->binds[i]);
    for (struct bind *b = srv->host.retired; b != NULL; b = b->next_retired)
        if (b->impl != NULL)
            b->ops->close(b);
    /* Release jobs posted while the binds drained. */
    bind_host_drain(&srv->host);
    for (size_t i = 0; i < srv->nbinds; i++)
        bind_drop(srv->binds[i]);
    srv->nbinds = 0;
    while (srv->host.retired != NULL) {
        /* No session and no job is left to hold it. */
        srv->host.retired->refs = 1;
        bind_drop(srv->host.retired);
    }
}

/* Everything is closed once the last session is gone. */
static void server_finish(struct server *srv)
{
    close_binds(srv);
    close_loop_handles(srv);
    log_info("stopped");
}

void server_session_gone(struct server *srv)
{
    assert(server_on_loop(srv));
    assert(srv->nsessions > 0 && srv->nclosing > 0);
    srv->nsessions--;
    srv->nclosing--; /* every session closes through SESS_CLOSING */
    if (srv->stopping && srv->nsessions == 0)
        server_finish(srv);
    else
        service_status(srv);
}

/* shutdown_timeout passed: interrupt what still runs and close. */
static void on_grace(uv_timer_t *t)
{
    struct server *srv = t->data;
    struct session *s, *next;

    log_warn("shutdown_timeout (%d ms) passed: interrupting %zu client%s", srv->cfg->shutdown_timeout_ms,
             srv->nsessions, srv->nsessions == 1 ? "" : "s");
    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        session_abort(s);
    }
}

void server_stop(struct server *srv)
{
    struct session *s, *next;

    if (srv->stopping)
        return;
    srv->stopping = true;
    log_info("shutting down: %zu client%s", srv->nsessions, srv->nsessions == 1 ? "" : "s");
    service_stopping(srv);
    close_listeners(srv);
    catalog_stop(srv);
    for (s = srv->sessions; s != NULL; s = next) {
        next = s->next;
        session_close(s, false);
    }
    if (srv->nsessions == 0) {
        server_finish(srv);
        return;
    }
    (void)uv_timer_start(&srv->grace, on_grace, (uint64_t)srv->cfg->shutdown_timeout_ms,
                         0); /* cannot fail: open, with a callback */
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct server *srv = sig->data;

    if (signum == SIGHUP) {
        log_info("SIGHUP received");
        if (!srv->stopping)
            (void)server_reload(srv, NULL, 0);
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

int server_init(struct server *srv, uv_loop_t *loop, struct config *cfg,
                void (*dispatch_command)(struct session *s, const char *line, size_t len))
{
    char err[1024];
    int activated, rc;

    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->cfg = cfg;
    srv->dispatch_command = dispatch_command;
    srv->started_at = uv_now(loop);
    /* A handle whose init fails stays zeroed, so server_free skips it. */
    if ((rc = bind_host_init(&srv->host, loop, server_deliver)) != 0 ||
        (rc = uv_check_init(loop, &srv->flush_turn)) != 0 ||
        (rc = uv_idle_init(loop, &srv->flush_awake)) != 0 ||
        (rc = uv_idle_init(loop, &srv->resume_idle)) != 0 ||
        (rc = uv_signal_init(loop, &srv->sig_term)) != 0 || (rc = uv_signal_init(loop, &srv->sig_int)) != 0 ||
        (rc = uv_signal_init(loop, &srv->sig_hup)) != 0 || (rc = uv_timer_init(loop, &srv->grace)) != 0 ||
        (rc = uv_timer_init(loop, &srv->idle_sweep)) != 0 ||
        (rc = uv_timer_start(&srv->idle_sweep, on_idle_sweep, IDLE_SWEEP_MS, IDLE_SWEEP_MS)) != 0) {
        log_error("cannot set up the event loop: %s", uv_strerror(rc));
        return -1;
    }
    sendbatch_init(&srv->sends, cfg->io_uring);
    srv->flush_turn.data = srv;
    srv->resume_idle.data = srv;
    srv->yield_tail = &srv->yield_head;
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv->grace.data = srv->idle_sweep.data = srv;
    service_init(srv);

    srv->host.cfgref = confref_new(cfg);
    if (srv->host.cfgref == NULL) {
        srv->cfg = NULL;
        log_error("out of memory");
        return -1;
    }
    srv->routes = routecache_new((size_t)cfg->route_cache);
    srv->binds = calloc(cfg->nbinds, sizeof *srv->binds);
    srv->authq = authq_new(loop);
    if (srv->routes == NULL || srv->binds == NULL || srv->authq == NULL) {
        log_error("out of memory");
        return -1;
    }
    if (fs_mkdir_p(cfg->data_dir) != 0) {
        log_error("data_dir %s: cannot create: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    /* Transactions across binds left undecided by a crash are resolved
     * before any bind opens (and so before anything is served). */
    if (xact_open(cfg, &srv->host.xact, err, sizeof err) != 0) {
        log_error("%s", err);
        return -1;
    }
    for (size_t i = 0; i < cfg->nbinds; i++) {
        srv->binds[i] = bind_open(srv, srv->host.cfgref, i, err, sizeof err);
        if (srv->binds[i] == NULL) {
            log_error("%s", err);
            return -1;
        }
        srv->nbinds = i + 1;
    }
    if (xact_attach_workers(srv->binds, srv->nbinds, err, sizeof err) != 0) {
        log_error("%s", err);
        return -1;
    }
    if ((rc = xact_serve(srv->host.xact, &srv->host)) != 0) {
        log_error("cannot start the resolver of transactions across binds: %s", uv_strerror(rc));
        return -1;
    }
    if (federate_open(srv, err, sizeof err) != 0) {
        log_error("%s", err);
        return -1;
    }
    if (catalog_load_all(srv, CATALOG_LOAD_MS) != 0) {
        log_error("out of memory");
        return -1;
    }
    activated = listen_activated(srv);
    if (activated < 0)
        return -1;
    if (activated == 0) {
        if (cfg->listen_host != NULL && listen_tcp(srv, cfg->listen_host, cfg->listen_port, false) != 0)
            return -1;
        if (cfg->unix_socket != NULL && listen_unix(srv) != 0)
            return -1;
    }
    /* Bound here even under socket activation: systemd cannot tell which
     * of its sockets would speak TLS. */
    if (cfg->tls_listen_host != NULL) {
        if (tls_server_new(cfg, &srv->tls, err, sizeof err) != 0) {
            log_error("%s", err);
            return -1;
        }
        log_info("TLS: %s", tls_server_describe(srv->tls));
        if (listen_tcp(srv, cfg->tls_listen_host, cfg->tls_listen_port, true) != 0)
            return -1;
    }
    if (srv->nlisteners == 0) {
        log_error("%s: no listener: set listen or unix_socket under [server]", cfg->path);
        return -1;
    }
    srv->host.serving = true; /* a bind opened from now on (a reload's) must not block */
    if ((rc = uv_signal_start(&srv->sig_term, on_signal, SIGTERM)) != 0 ||
        (rc = uv_signal_start(&srv->sig_int, on_signal, SIGINT)) != 0 ||
        (rc = uv_signal_start(&srv->sig_hup, on_signal, SIGHUP)) != 0) {
        log_error("cannot handle signals: %s", uv_strerror(rc));
        return -1;
    }
    /* From here on, every turn is one that serves clients. */
    if ((rc = loopwatch_start(&srv->watch, loop, cfg->loop_stall_warn_ms)) != 0 ||
        (rc = idlepoll_start(&srv->poller, loop, cfg->idle_poll_us, &srv->watch)) != 0) {
        log_error("cannot set up the event loop: %s", uv_strerror(rc));
        return -1;
    }
    idlepoll_set_reader(&srv->poller, session_read_expected, session_handle_expected, srv);
    log_info("ready: %zu bind%s", srv->nbinds, srv->nbinds == 1 ? "" : "s");
    service_ready(srv);
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
        close_listeners(srv);
        close_binds(srv);
        close_loop_handles(srv);
        uv_run(srv->loop, UV_RUN_DEFAULT);
    }
    for (size_t i = 0; i < srv->nlisteners; i++)
        free(srv->listeners[i].path);
    sendbatch_close(&srv->sends);
    routecache_free(srv->routes);
    free(srv->rbuf);
    srv->rbuf = NULL;
    while (srv->nout_spare > 0)
        buf_free(&srv->out_spare[--srv->nout_spare]);
    catset_drop(srv->catset);
    srv->catset = NULL;
    tls_server_free(srv->tls);
    srv->tls = NULL;
    authq_free(srv->authq);
    xact_close(srv->host.xact);
    srv->host.xact = NULL;
    free(srv->binds);
    pthread_mutex_destroy(&srv->host.ev_lock);
    if (srv->host.ev_fd >= 0)
        close(srv->host.ev_fd);
    srv->host.ev_fd = -1;
    if (srv->host.cfgref != NULL)
        confref_drop(srv->host.cfgref);
    else
        config_free(srv->cfg);
    srv->host.cfgref = NULL;
    srv->cfg = NULL;
}

/* ---- Reload --------------------------------------------------------- */

/* Append ", name" (or "name") to a summary list. */
static void list_add(char *list, size_t n, const char *name)
{
    size_t used = strlen(list);
    snprintf(list + used, n - used, "%s%s", used > 0 ? ", " : "", name);
}

int server_reload(struct server *srv, char *err, size_t errlen)
{
    struct config *next = NULL;
    struct confref *ref = NULL;
    struct routecache *routes = NULL;
    struct bind **binds = NULL, **old;
    struct tls_server *tls = NULL;
    size_t nnew = 0, nold;
    char why[1024], changed[512];
    char added[512] = "", removed[512] = "", replaced[512] = "";
    int n;

    if (srv->stopping) {
        snprintf(why, sizeof why, "the server is shutting down");
        goto refuse;
    }
    log_info("reloading %s", srv->cfg->path);
    service_reloading(srv);
    if (config_load(srv->cfg->path, &next, why, sizeof why) != 0)
        goto refuse;
    for (size_t i = 0; i < next->nwarnings; i++)
        log_warn("%s", next->warnings[i]);
    n = config_keep_restart_settings(next, srv->cfg, changed, sizeof changed);
    if (n < 0) {
        config_free(next);
        snprintf(why, sizeof why, "out of memory");
        goto refuse;
    }
    if (n > 0)
        log_warn("%s changed: restart to apply (the running value%s stay%s)", changed, n > 1 ? "s" : "",
                 n > 1 ? "" : "s");
    if (fs_mkdir_p(next->data_dir) != 0) {
        snprintf(why, sizeof why, "data_dir %s: cannot create: %s", next->data_dir, strerror(errno));
        config_free(next);
        goto refuse;
    }
    /* A new TLS context (certificate, key, CAs, ...) for new clients;
     * connected ones keep theirs. A bad one refuses the whole reload. */
    if (srv->tls != NULL && tls_server_new(next, &tls, why, sizeof why) != 0) {
        config_free(next);
        goto refuse;
    }
    ref = confref_new(next);
    routes = ref != NULL ? routecache_new((size_t)next->route_cache) : NULL;
    binds = ref != NULL ? calloc(next->nbinds, sizeof *binds) : NULL;
    if (binds == NULL || routes == NULL) {
        snprintf(why, sizeof why, "out of memory");
        goto undo;
    }

    /* Keep what did not change; open what is new or changed. */
    for (nnew = 0; nnew < next->nbinds; nnew++) {
        const struct bind_conf *bc = &next->binds[nnew];
        struct bind *cur = server_bind_named(srv, bc->name);

        if (cur != NULL && config_bind_equal(cur->conf, bc)) {
            bind_hold(cur);
            binds[nnew] = cur;
            continue;
        }
        if (cur != NULL && cur->conf->type == BIND_SQLITE_MEMORY &&
            config_bind_same_database(cur->conf, bc)) {
            /* Reopening would lose the data. */
            log_warn("bind %s: options of an in-memory bind change at restart only; keeping the running ones",
                     bc->name);
            bind_hold(cur);
            binds[nnew] = cur;
            continue;
        }
        binds[nnew] = bind_open(srv, ref, nnew, why, sizeof why);
        if (binds[nnew] == NULL)
            goto undo;
        if (cur != NULL) {
            binds[nnew]->stats = cur->stats;
            list_add(replaced, sizeof replaced, bc->name);
        } else {
            list_add(added, sizeof added, bc->name);
        }
    }

    /* Swap. Sessions move to the new table while the old one is alive. */
    old = srv->binds;
    nold = srv->nbinds;
    srv->binds = binds;
    srv->nbinds = next->nbinds;
    for (size_t i = 0; i < srv->nbinds; i++)
        srv->binds[i]->index = i;
    confref_drop(srv->host.cfgref);
    srv->host.cfgref = ref;
    srv->cfg = next;
    routecache_free(srv->routes);
    srv->routes = routes;
    catalog_reloaded(srv);
    if (tls != NULL) {
        tls_server_free(srv->tls);
        srv->tls = tls;
        log_info("TLS: %s", tls_server_describe(tls));
    }
    log_set_level(next->log_level);
    loopwatch_set_warn(&srv->watch, next->loop_stall_warn_ms);
    idlepoll_set_max(&srv->poller, next->idle_poll_us);
    for (struct session *s = srv->sessions; s != NULL; s = s->next)
        session_config_changed(s);
    federate_config_changed(srv);
    for (size_t i = 0; i < nold; i++) {
        struct bind *b = old[i];
        bool kept = false;
        for (size_t j = 0; j < srv->nbinds && !kept; j++)
            kept = srv->binds[j] == b;
        if (!kept) {
            if (server_bind_named(srv, b->conf->name) == NULL)
                list_add(removed, sizeof removed, b->conf->name);
            b->retired = true;
            b->next_retired = srv->host.retired;
            srv->host.retired = b;
        }
        bind_drop(b);
    }
    free(old);
    srv->reloads++;
    log_info("configuration reloaded: %zu bind%s; added: %s; removed: %s; reopened: %s", srv->nbinds,
             srv->nbinds == 1 ? "" : "s", added[0] ? added : "none", removed[0] ? removed : "none",
             replaced[0] ? replaced : "none");
    service_ready(srv);
    return 0;

undo:
    tls_server_free(tls);
    for (size_t i = 0; i < nnew; i++)
        bind_drop(binds[i]);
    free(binds);
    routecache_free(routes);
    confref_drop(ref);
refuse:
    log_error("reload refused: %s; the running configuration stays", why);
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", why);
    if (!srv->stopping)
        service_ready(srv);
    return -1;
}
