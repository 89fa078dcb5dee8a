/*
 * libsqlmux's TLS with OpenSSL: one SSL_CTX and SSL per connection, set up
 * from the URL's tls options, the handshake driven with poll() on the
 * library's non-blocking socket, then reads and writes that behave like
 * recv() and send() for the connection's poll() loop (client/sqlmux.c).
 * By default the server's chain is verified against the given CAs (or the
 * system's) and its certificate must name the host of the URL.
 */
#include "client/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct client_tls {
    SSL_CTX *ctx;
    SSL *ssl;
    char desc[96];
};

static char *tls_format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *tls_format(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static int64_t tls_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The first OpenSSL error as text, the queue emptied. */
static const char *tls_error_text(char *buf, size_t n)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(buf, n, "unexpected end of the connection");
    else
        ERR_error_string_n(e, buf, n);
    ERR_clear_error();
    return buf;
}

/* Why the handshake failed, for the message of sqlmux_connect(). */
static char *tls_handshake_error(struct client_tls *t, const char *host)
{
    long v = SSL_get_verify_result(t->ssl);
    char why[256];

    if (v != X509_V_OK)
        return tls_format("the server's certificate does not verify: %s%s", X509_verify_cert_error_string(v),
                          v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH
                              ? " (it does not name the host of the URL)"
                              : "");
    tls_error_text(why, sizeof why);
    (void)host;
    return tls_format("TLS handshake failed: %s", why);
}

struct client_tls *client_tls_start(int fd, const char *host, const struct client_tls_opts *opts,
                                    int64_t deadline_ms, char **errmsg)
{
    struct client_tls *t = calloc(1, sizeof *t);
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    char why[256];

    *errmsg = NULL;
    ERR_clear_error();
    if (t == NULL || (t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        free(t);
        *errmsg = tls_format("out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read() takes what the socket holds, not a record's 5-byte header
     * and then its body. What it takes beyond one record waits in OpenSSL,
     * where client_tls_pending() sees it. */
    SSL_CTX_set_read_ahead(t->ctx, 1);
    /* A close without close_notify reads as the end of the stream, as on
     * plain TCP: every response ends with its own status line, so a cut
     * one is seen anyway. */
    SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (opts->mode == CLIENT_TLS_INSECURE) {
        fprintf(stderr,
                "sqlmux: warning: tls=insecure: the server's certificate is not checked; anyone on the "
                "way can read and change this connection\n");
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        int ok = opts->ca[0] != '\0' ? SSL_CTX_load_verify_locations(t->ctx, opts->ca, NULL)
                                     : SSL_CTX_set_default_verify_paths(t->ctx);
        if (ok != 1) {
            *errmsg = tls_format("tls_ca %s: cannot load PEM CA certificates: %s", opts->ca,
                                 tls_error_text(why, sizeof why));
            goto fail;
        }
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    }
    if (opts->cert[0] != '\0') {
        const char *key = opts->key[0] != '\0' ? opts->key : opts->cert;
        if (SSL_CTX_use_certificate_chain_file(t->ctx, opts->cert) != 1) {
            *errmsg = tls_format("tls_cert %s: cannot load a PEM certificate: %s", opts->cert,
                                 tls_error_text(why, sizeof why));
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1) {
            *errmsg = tls_format("tls_key %s: cannot load the PEM private key of %s: %s", key, opts->cert,
                                 tls_error_text(why, sizeof why));
            goto fail;
        }
    } else if (opts->key[0] != '\0') {
        *errmsg = tls_format("tls_key without tls_cert");
        goto fail;
    }
    t->ssl = SSL_new(t->ctx);
    if (t->ssl == NULL || SSL_set_fd(t->ssl, fd) != 1) {
        *errmsg = tls_format("out of memory");
        goto fail;
    }
    if (!is_ip)
        SSL_set_tlsext_host_name(t->ssl, host);
    if (opts->mode == CLIENT_TLS_REQUIRE) {
        X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host)
                   : X509_VERIFY_PARAM_set1_host(param, host, 0)) != 1) {
            *errmsg = tls_format("cannot check the server's name %s", host);
            goto fail;
        }
    }
    for (;;) {
        int rc = SSL_connect(t->ssl);
        if (rc == 1)
            break;
        int err = SSL_get_error(t->ssl, rc);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            *errmsg = tls_handshake_error(t, host);
            goto fail;
        }
        struct pollfd p = {.fd = fd, .events = err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        int wait = -1;
        if (deadline_ms != 0) {
            int64_t left = deadline_ms - tls_now_ms();
            if (left <= 0) {
                *errmsg = tls_format("TLS handshake timed out");
                goto fail;
            }
            wait = (int)(left < INT_MAX ? left : INT_MAX);
        }
        rc = poll(&p, 1, wait);
        if (rc < 0 && errno != EINTR) {
            *errmsg = tls_format("poll: %s", strerror(errno));
            goto fail;
        }
    }
    snprintf(t->desc, sizeof t->desc, "%s %s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
    return t;
fail:
    client_tls_free(t, false);
    if (*errmsg == NULL)
        *errmsg = tls_format("out of memory");
    return NULL;
}

/* errno for an SSL_get_error() code of a read or write. */
static ssize_t tls_io_error(struct client_tls *t, int rc)
{
    int err = SSL_get_error(t->ssl, rc);

    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (err == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (err == SSL_ERROR_SYSCALL && errno != 0) {
        ERR_clear_error();
        return -1; /* errno from the socket: ECONNRESET, EPIPE */
    }
    ERR_clear_error();
    errno = err == SSL_ERROR_SYSCALL ? ECONNRESET : EPROTO;
    return -1;
}

/* One SSL_write_ex() or SSL_read_ex(), with send()'s and recv()'s
 * results. */
static ssize_t tls_io(struct client_tls *t, bool writing, void *p, size_t n)
{
    size_t done = 0;
    ssize_t r;

    errno = 0;
    if ((writing ? SSL_write_ex(t->ssl, p, n, &done) : SSL_read_ex(t->ssl, p, n, &done)) == 1)
        return (ssize_t)done;
    r = tls_io_error(t, 0);
    if (r == 0 && writing) {
        errno = EPIPE; /* the server sent close_notify: no more writes */
        return -1;
    }
    return r;
}

ssize_t client_tls_send(struct client_tls *t, const void *p, size_t n)
{
    return tls_io(t, true, (void *)p, n);
}

ssize_t client_tls_recv(struct client_tls *t, void *p, size_t n)
{
    return tls_io(t, false, p, n);
}

bool client_tls_pending(const struct client_tls *t)
{
    return SSL_has_pending(t->ssl) == 1;
}

const char *client_tls_describe(const struct client_tls *t)
{
    return t->desc;
}

void client_tls_free(struct client_tls *t, bool notify)
{
    if (t == NULL)
        return;
    if (notify && t->ssl != NULL && SSL_is_init_finished(t->ssl))
        (void)SSL_shutdown(t->ssl); /* non-blocking socket: one try */
    ERR_clear_error();
    SSL_free(t->ssl);
    SSL_CTX_free(t->ctx);
    free(t);
}
