/*
 * libsqlmux's TLS (OpenSSL): the client side of a sqlmuxs:// connection on
 * the library's non-blocking socket. The handshake waits with poll() up to
 * the connect deadline; afterwards the connection's own poll() loop drives
 * client_tls_send() and client_tls_recv() as it drives send() and recv().
 * Internal to the library (hidden symbols).
 */
#ifndef SQLMUX_CLIENT_TLS_H
#define SQLMUX_CLIENT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum client_tls_mode {
    CLIENT_TLS_OFF,      /* plain text */
    CLIENT_TLS_REQUIRE,  /* TLS; the chain and the host name must verify */
    CLIENT_TLS_INSECURE, /* TLS without any check of the server (says so on stderr) */
};

#define CLIENT_TLS_PATH_MAX 1024

/* What the URL (or the environment) asks for. Paths "" when not given. */
struct client_tls_opts {
    enum client_tls_mode mode;
    char ca[CLIENT_TLS_PATH_MAX];   /* CAs to trust; "": the system's */
    char cert[CLIENT_TLS_PATH_MAX]; /* client certificate (PEM chain) */
    char key[CLIENT_TLS_PATH_MAX];  /* its key; "": in the cert file */
};

struct client_tls;

/* Handshake over the connected non-blocking socket fd, verifying `host`
 * (a name or an IP address) unless insecure; deadline_ms is a
 * CLOCK_MONOTONIC time in ms, 0 for none. Returns the TLS state, or NULL
 * with *errmsg (malloc'd) saying why. */
struct client_tls *client_tls_start(int fd, const char *host, const struct client_tls_opts *opts,
                                    int64_t deadline_ms, char **errmsg);

/* As send() and recv() on a non-blocking socket: bytes moved, or -1 with
 * errno EAGAIN (wait for the socket: poll both ways) or another errno
 * (ECONNRESET, EPROTO); client_tls_recv() returns 0 at the end of the
 * stream. */
ssize_t client_tls_send(struct client_tls *t, const void *p, size_t n);
ssize_t client_tls_recv(struct client_tls *t, void *p, size_t n);

/* Whether decrypted or undecrypted bytes wait inside the TLS layer, so the
 * caller reads again before it polls. */
bool client_tls_pending(const struct client_tls *t);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" (valid while t lives). */
const char *client_tls_describe(const struct client_tls *t);

/* Send close_notify (best effort, when notify) and free; the socket stays
 * the caller's. NULL is fine. */
void client_tls_free(struct client_tls *t, bool notify);

#endif
