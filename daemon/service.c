/*
 * systemd integration through libsystemd: sd_notify() messages (READY=1,
 * RELOADING=1, STOPPING=1, STATUS=, WATCHDOG=1) to the socket named by
 * NOTIFY_SOCKET, and the listening sockets of socket activation. The
 * service owns two timers: the watchdog's, and one that coalesces STATUS=
 * updates so a burst of connections sends one line a second.
 */
#include "daemon/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "daemon/log.h"
#include "daemon/server.h"

#define STATUS_INTERVAL_MS 1000

int service_listen_fds(struct service_fd *out, size_t max, char *err, size_t errlen)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);
    int rc = 0;

    if (n < 0) {
        snprintf(err, errlen, "socket activation: %s", strerror(-n));
        return -1;
    }
    if ((size_t)n > max) {
        snprintf(err, errlen, "socket activation: %d sockets passed, at most %zu are supported", n, max);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        const char *name = names != NULL && names[i] != NULL ? names[i] : "";
        out[i].fd = fd;
        snprintf(out[i].name, sizeof out[i].name, "%s", name);
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0) {
            out[i].is_unix = true;
        } else if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0) {
            out[i].is_unix = false;
        } else {
            snprintf(err, errlen,
                     "socket activation: descriptor %d (%s) is not a listening TCP or unix stream socket", fd,
                     name[0] ? name : "unnamed");
            rc = -1;
        }
    }
    if (names != NULL) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
    }
    return rc == 0 ? n : -1;
}

/* Send one notification; failures are logged at debug level only (the
 * manager may be gone during shutdown). Like every sd_notify() user this
 * blocks while the manager's socket queue is full; systemd reads it at
 * once. */
static void service_send(const char *msg)
{
    int rc = sd_notify(0, msg);
    if (rc < 0)
        log_debug("sd_notify: %s", strerror(-rc));
}

static void service_send_status(struct server *srv)
{
    char msg[160];

    srv->svc.status_sent = uv_now(srv->loop);
    if (srv->stopping)
        snprintf(msg, sizeof msg, "STATUS=stopping: %zu client%s left", srv->nsessions,
                 srv->nsessions == 1 ? "" : "s");
    else
        snprintf(msg, sizeof msg, "STATUS=%zu client%s, %zu bind%s", srv->nsessions,
                 srv->nsessions == 1 ? "" : "s", srv->nbinds, srv->nbinds == 1 ? "" : "s");
    service_send(msg);
}

static void on_status_timer(uv_timer_t *t)
{
    struct server *srv = t->data;
    srv->svc.status_armed = false;
    service_send_status(srv);
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    service_send("WATCHDOG=1");
}

void service_init(struct server *srv)
{
    struct service *svc = &srv->svc;
    uint64_t usec = 0;
    const char *sock = getenv("NOTIFY_SOCKET");

    svc->notify = sock != NULL && sock[0] != '\0';
    /* Without its timers the service only sends READY and STOPPING. */
    if (uv_timer_init(srv->loop, &svc->watchdog) != 0)
        return;
    if (uv_timer_init(srv->loop, &svc->status) != 0) {
        uv_close((uv_handle_t *)&svc->watchdog, NULL);
        return;
    }
    svc->watchdog.data = svc->status.data = srv;
    svc->timers = true;
    if (svc->notify && sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
        uint64_t every = usec / 2000; /* half the interval, in ms */
        log_info("systemd watchdog: every %llu ms", (unsigned long long)every);
        uv_timer_start(&svc->watchdog, on_watchdog, every, every);
    }
}

void service_ready(struct server *srv)
{
    if (!srv->svc.notify)
        return;
    service_send("READY=1");
    service_send_status(srv);
}

void service_reloading(struct server *srv)
{
    char msg[128];
    struct timespec ts;

    if (!srv->svc.notify)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    service_send(msg);
}

void service_stopping(struct server *srv)
{
    if (!srv->svc.notify)
        return;
    service_send("STOPPING=1");
    service_send_status(srv);
}

void service_status(struct server *srv)
{
    struct service *svc = &srv->svc;
    uint64_t now, since;

    if (!svc->notify || svc->status_armed || !svc->timers)
        return;
    now = uv_now(srv->loop);
    since = now - svc->status_sent;
    if (since >= STATUS_INTERVAL_MS) {
        service_send_status(srv);
        return;
    }
    svc->status_armed = true;
    uv_timer_start(&svc->status, on_status_timer, STATUS_INTERVAL_MS - since, 0);
}

void service_close(struct server *srv)
{
    struct service *svc = &srv->svc;

    if (!svc->timers)
        return;
    svc->timers = false;
    uv_close((uv_handle_t *)&svc->watchdog, NULL);
    uv_close((uv_handle_t *)&svc->status, NULL);
}
