/*
 * The server: the libuv loop, the listeners (TCP and unix socket), the
 * binds, the client list, signals, and the queue on which backends post
 * job events to the loop thread. One struct server is passed to every
 * module; there is no global state besides the log level.
 */
#ifndef SQLMUX_DAEMON_SERVER_H
#define SQLMUX_DAEMON_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/config.h"
#include "daemon/backend.h"

struct session;
struct routecache;

struct server {
    uv_loop_t *loop;
    struct config *cfg;

    struct bind *binds;          /* one per cfg->binds[i] */
    size_t nbinds;

    uv_tcp_t tcp;
    uv_pipe_t pipe;
    bool has_tcp, has_pipe;
    uv_signal_t sig_term, sig_int, sig_hup;

    /* Job events from backends: guarded by ev_lock, drained by ev_async. */
    uv_async_t ev_async;
    pthread_mutex_t ev_lock;
    struct job_event *ev_head, **ev_tail;

    struct session *sessions;    /* doubly linked through session.prev/next */
    size_t nsessions;
    uint64_t next_session_id;

    struct routecache *routes;
    bool stopping;
    int signals;                 /* SIGTERM/SIGINT received */
};

/* Open binds and listeners per cfg (the server takes ownership of cfg).
 * 0, or -1 after logging why. */
__attribute__((warn_unused_result)) int server_init(struct server *srv, uv_loop_t *loop, struct config *cfg);

/* Run until stopped; closes everything. Returns the exit status. */
int server_run(struct server *srv);

/* Release everything server_init() made (also after a failed init),
 * including the config. */
void server_free(struct server *srv);

/* Queue an event for the loop thread (any thread). */
void server_post(struct server *srv, struct job_event *ev);

/* Begin a graceful stop: no new clients, sessions close after their
 * current statement, binds close, the loop ends. Loop thread. */
void server_stop(struct server *srv);

/* Called by session.c when a session is freed, so a stopping server can
 * finish once the last one is gone. */
void server_session_gone(struct server *srv);

#endif
