/*
 * The server: the libuv loop, the listeners (TCP and unix sockets, bound
 * here or handed over by systemd), the binds, the client list, signals,
 * configuration reloads, and the bind host (backend.h) through which binds
 * see the loop and post job events to it. One struct server is passed to
 * every module. The only global state is what belongs to the process
 * rather than to a server: the log level (log.c); the nowait VFS
 * (nowait_vfs.c: SQLite's list of VFSes is process-wide, and so must be
 * the descriptors it keeps, since POSIX record locks belong to the
 * process); and whether the process may raise a thread's priority back
 * (sqlite_conn.c, probed once).
 */
#ifndef SQLMUX_DAEMON_SERVER_H
#define SQLMUX_DAEMON_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "conf/config.h"
#include "daemon/backend.h"
#include "daemon/idlepoll.h"
#include "daemon/loopwatch.h"
#include "daemon/sendbatch.h"
#include "daemon/service.h"

#define SQLMUXD_VERSION "0.1.0"

/* Listening sockets at most (a systemd socket unit may pass several). */
#define SERVER_MAX_LISTENERS 16

struct session;
struct routecache;
struct tls_server;

struct listener {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    bool open;  /* h is initialized (close it) */
    bool tls;   /* tls_listen: its clients speak TLS (srv->tls) */
    char *path; /* a unix socket file this daemon made (removed at stop), or NULL */
};

#define SERVER_OUT_SPARES    64
#define SERVER_OUT_SPARE_CAP 4096

struct server {
    uv_loop_t *loop;
    /* Set by session_advance() (session.c) around a statement it runs:
     * before, when it began if that is known already (the end of the one
     * answered on the loop just before it, in the same pass: its time
     * and quick-read budget start there, one clock reading instead of
     * two), else 0; after, its own end if the loop answered it. */
    uint64_t inline_clock;
    struct config *cfg; /* the current configuration: host.cfgref->cfg */
    /* What the binds see: the loop, the current configuration, the retired
     * binds, the queue on which backends post job events to the loop. */
    struct bind_host host;

    struct bind **binds; /* binds[i] serves cfg->binds[i]; each entry holds a reference */
    size_t nbinds;
    struct bind *federation; /* the pool for statements across binds (federate.h); not in binds */

    struct listener listeners[SERVER_MAX_LISTENERS];
    size_t nlisteners;
    bool activated; /* the listeners came from systemd (LISTEN_FDS) */

    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t idle_sweep; /* client_idle_timeout: closes idle clients */
    uv_timer_t grace;      /* shutdown_timeout: then running statements are interrupted */
    struct service svc;    /* systemd notifications and watchdog */

    /* The loop's turns and stalls (.stats, loop_stall_warn). */
    struct loopwatch watch;
    /* Polling for the next request before the loop sleeps (idle_poll_us),
     * armed by flush_turn. */
    struct idlepoll poller;

    /* Sessions with answers to write once the loop turn's I/O callbacks
     * are done (linked through session.flush_next), written by flush_turn:
     * as with Redis's beforeSleep, a turn's answers leave in one burst
     * instead of one by one between statements. flush_awake runs while
     * flush_turn is armed: an active idle handle makes the loop poll
     * without sleeping, so answers queued before the poll phase (timers,
     * local events, a previous check) never wait for an unrelated timer. */
    uv_check_t flush_turn;
    uv_idle_t flush_awake;
    struct session *flush_head;
    /* The one session the last turn that wrote answers answered (else
     * NULL), and the session the idle poller reads directly (idlepoll.h,
     * "Serving one client"): that one when the turn before answered it
     * alone too, else NULL. expect_buf and expect_len: what it read, for
     * session_handle_expected(). */
    struct session *answered_alone, *expect;
    uv_buf_t expect_buf;
    size_t expect_len;
    /* How flush_turn sends a turn's answers (io_uring), and the batch it
     * sends: the sessions and their answers. */
    struct sendbatch sends;
    struct session *sends_sessions[SENDBATCH_MAX];
    struct sendbatch_item sends_items[SENDBATCH_MAX];

    /* Sessions that worked their slice of a loop turn with requests still
     * to handle (session_advance), oldest first through
     * session.yield_next: resume_idle goes on with each in the next
     * turn, before its poll, so one client's pipelined requests never
     * hold the loop from the others for long. */
    uv_idle_t resume_idle;
    struct session *yield_head, **yield_tail;

    /* The loop's read buffer (session_io.c): a session with no input
     * waiting reads into it, and only a partial request left over is
     * copied into the session's own inbuf. NULL until the first read. */
    char *rbuf;
    /* Spare answer buffers (session_io.c): a session's answers, written
     * out whole, leave their buffer here when it is small rather than to
     * free(), and a session about to answer takes one. Idle sessions hold
     * no buffer either way. */
    struct buf out_spare[SERVER_OUT_SPARES];
    size_t nout_spare;

    struct session *sessions; /* doubly linked through session.prev/next */
    size_t nsessions;
    size_t nclosing; /* of those, closing (not counted as clients) */
    uint64_t next_session_id;

    struct routecache *routes;
    struct tls_server *tls; /* the TLS context of tls_listen's clients, or NULL; a reload swaps it */
    struct authq *authq;    /* password checks (.auth) waiting for the thread pool */
    /* Where a session hands a dot-command line (commands_dispatch; given
     * to server_init, so neither the server nor the session calls the
     * commands by name). */
    void (*dispatch_command)(struct session *s, const char *line, size_t len);
    bool stopping;
    int signals;         /* SIGTERM/SIGINT received */
    uint64_t reloads;    /* configurations swapped in since start */
    uint64_t started_at; /* uv_now() at start-up */

    struct catset *catset;    /* every bind's catalog, as routes uses them (catalog_refresh.c) */
    uv_timer_t catalog_timer; /* catalog_interval; at start, the load's time limit */
    size_t catalog_loading;   /* catalog reads catalog_load_all() still waits for */
};

/* Open binds and listeners per cfg (the server takes ownership of cfg),
 * then tell systemd READY=1; sessions hand dot-commands to
 * dispatch_command. 0, or -1 after logging why. */
__attribute__((warn_unused_result)) int server_init(struct server *srv, uv_loop_t *loop, struct config *cfg,
                                                    void (*dispatch_command)(struct session *s,
                                                                             const char *line, size_t len));

/* Run until stopped; closes everything. Returns the exit status. */
int server_run(struct server *srv);

/* Release everything server_init() made (also after a failed init),
 * including the config. */
void server_free(struct server *srv);

/* Begin a graceful stop: no new clients, sessions close after their
 * current statement (interrupted after shutdown_timeout), binds close, the
 * loop ends. Loop thread. */
void server_stop(struct server *srv);

/* Called by session.c when a session is freed, so a stopping server can
 * finish once the last one is gone. */
void server_session_gone(struct server *srv);

/*
 * Reload the configuration file (SIGHUP, .reload), validate-then-swap: on
 * any error (the file, a new bind that cannot open) nothing changes, the
 * reason is logged and copied to err (may be NULL), and -1 is returned.
 * Otherwise unchanged binds stay open, new and changed ones open, removed
 * and replaced ones retire once their transactions end, the table map and
 * live settings apply to the next statement, and 0 is returned. Settings
 * that need a restart keep their running values (logged). Loop thread.
 */
int server_reload(struct server *srv, char *err, size_t errlen);

/* The current bind named `name`, or NULL. */
struct bind *server_bind_named(const struct server *srv, const char *name);

/* The server a bind of its belongs to (the bind host is the server's). */
static inline struct server *server_of_bind(const struct bind *b)
{
    return (struct server *)(void *)((char *)b->host - offsetof(struct server, host));
}

/* Whether the caller runs on the loop thread: the rule most functions
 * here and in session.h state, asserted where it matters. */
static inline bool server_on_loop(const struct server *srv)
{
    return bind_host_on_loop(&srv->host);
}

#endif
