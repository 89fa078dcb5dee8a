/*
 * Running under systemd: readiness and status notifications (sd_notify),
 * the watchdog, and listening sockets handed over by socket activation
 * (sd_listen_fds_with_names). Without systemd (no NOTIFY_SOCKET, no
 * LISTEN_FDS) every function here does nothing. Loop thread only.
 */
#ifndef SQLMUX_DAEMON_SERVICE_H
#define SQLMUX_DAEMON_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct server;

struct service {
    bool notify;          /* NOTIFY_SOCKET is set: someone listens */
    bool timers;          /* the timers below are initialized */
    uv_timer_t watchdog;  /* WATCHDOG=1 at half of WatchdogSec= */
    uv_timer_t status;    /* a delayed STATUS= update */
    uint64_t status_sent; /* uv_now() of the last STATUS= */
    bool status_armed;
};

/* A listening socket passed by systemd. */
struct service_fd {
    int fd;
    bool is_unix;  /* AF_UNIX stream socket; else TCP */
    char name[64]; /* FileDescriptorName= of the socket unit */
};

/* The sockets systemd passed to this process (LISTEN_FDS, LISTEN_PID,
 * LISTEN_FDNAMES), at most max. Returns how many (0: not socket-activated),
 * or -1 with err set when a passed descriptor is not a listening TCP or
 * unix stream socket, or there are more than max. */
int service_listen_fds(struct service_fd *out, size_t max, char *err, size_t errlen);

/* Set up notifications and, when systemd asks for it (WATCHDOG_USEC), the
 * watchdog timer. */
void service_init(struct server *srv);

/* READY=1 with a STATUS= line: every bind is open, clients are served. */
void service_ready(struct server *srv);

/* RELOADING=1: a configuration reload begins (service_ready() ends it). */
void service_reloading(struct server *srv);

/* STOPPING=1: shutdown begins. */
void service_stopping(struct server *srv);

/* The client count changed: send STATUS= now, or within a second when one
 * was sent less than a second ago. */
void service_status(struct server *srv);

/* Close the timers (shutdown). */
void service_close(struct server *srv);

#endif
