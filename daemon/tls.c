/*
 * TLS for clients with OpenSSL, on memory BIOs: builds the server's
 * SSL_CTX from the configuration and runs each client's SSL object between
 * a read BIO (ciphertext the session received) and a write BIO
 * (ciphertext the session must send). OpenSSL never sees a socket, so the
 * loop never blocks in it; a handshake step costs one bounded piece of CPU
 * work (a signature) and handshakes of many clients interleave with
 * everything else on the loop.
 */
#include "daemon/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Plaintext asked of one SSL_read (a TLS record holds at most 16 KiB). */
#define TLS_READ_CHUNK (16 * 1024)

struct tls_server {
    SSL_CTX *ctx;
    char about[512]; /* subject and expiry of the certificate */
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    bool ready;       /* the handshake is done */
    bool failed;      /* a fatal error: OpenSSL must not be called again */
    char *subject;    /* the client certificate's subject, or NULL */
    char *cn;         /* its common name, when it verified */
    char desc[96];
    char error[256];
};

/* The last OpenSSL error as text ("" when there is none); empties the
 * thread's error queue. */
static void tls_last_error(char *out, size_t n)
{
    unsigned long e = ERR_get_error(), next;

    out[0] = '\0';
    if (e != 0)
        ERR_error_string_n(e, out, n);
    while ((next = ERR_get_error()) != 0)
        e = next;
}

/* Empty the thread's error queue before an SSL call, so SSL_get_error()
 * reads that call's result (peeking first: clearing costs more and the
 * queue is nearly always empty). */
static void tls_clear_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* Describe ctx's certificate for the log; warns in about when it is not
 * valid today. */
static void tls_describe_cert(struct tls_server *ts)
{
    X509 *cert = SSL_CTX_get0_certificate(ts->ctx);
    char subject[256] = "?", until[64] = "?";
    BIO *mem;

    if (cert == NULL)
        return;
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    mem = BIO_new(BIO_s_mem());
    if (mem != NULL && ASN1_TIME_print(mem, X509_get0_notAfter(cert)) == 1) {
        int n = BIO_read(mem, until, (int)sizeof until - 1);
        until[n > 0 ? n : 0] = '\0';
    }
    BIO_free(mem);
    snprintf(ts->about, sizeof ts->about, "certificate %s, valid until %s%s", subject, until,
             X509_cmp_current_time(X509_get0_notAfter(cert)) < 0 ? " (EXPIRED: clients will refuse it)"
             : X509_cmp_current_time(X509_get0_notBefore(cert)) > 0
                 ? " (NOT YET VALID: clients will refuse it)"
                 : "");
}

int tls_server_new(const struct config *cfg, struct tls_server **out, char *err, size_t errlen)
{
    struct tls_server *ts = calloc(1, sizeof *ts);
    char why[256];
    int mode = SSL_VERIFY_NONE;

    *out = NULL;
    if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL) {
        /* A reload that dropped them while the TLS port (restart only)
         * stays open. */
        snprintf(err, errlen,
                 "tls_listen is open: tls_cert_file and tls_key_file are needed (remove tls_listen "
                 "and restart to stop serving TLS)");
        free(ts);
        return -1;
    }
    ERR_clear_error();
    if (ts == NULL || (ts->ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
        snprintf(err, errlen, "TLS: out of memory");
        free(ts);
        return -1;
    }
    SSL_CTX_set_min_proto_version(ts->ctx,
                                  cfg->tls_protocols & CONFIG_TLS_1_2 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ts->ctx,
                                  cfg->tls_protocols & CONFIG_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ts->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Idle connections give their record buffers back (1,000 clients). */
    SSL_CTX_set_mode(ts->ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ts->ctx, (const unsigned char *)"sqlmuxd", 7);

    if (SSL_CTX_use_certificate_chain_file(ts->ctx, cfg->tls_cert_file) != 1) {
        tls_last_error(why, sizeof why);
        snprintf(err, errlen, "tls_cert_file %s: cannot load a PEM certificate: %s", cfg->tls_cert_file, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ts->ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1) {
        tls_last_error(why, sizeof why);
        snprintf(err, errlen, "tls_key_file %s: cannot load it as the PEM private key of %s: %s",
                 cfg->tls_key_file, cfg->tls_cert_file, why);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ts->ctx) != 1) {
        tls_last_error(why, sizeof why);
        snprintf(err, errlen, "tls_key_file %s: not the key of the certificate in %s: %s", cfg->tls_key_file,
                 cfg->tls_cert_file, why);
        goto fail;
    }
    if (cfg->tls_ciphers != NULL && SSL_CTX_set_cipher_list(ts->ctx, cfg->tls_ciphers) != 1) {
        tls_last_error(why, sizeof why);
        snprintf(err, errlen, "tls_ciphers = %s: no cipher OpenSSL knows: %s", cfg->tls_ciphers, why);
        goto fail;
    }
    if (cfg->tls_ca_file != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_ca_file);
        if (SSL_CTX_load_verify_locations(ts->ctx, cfg->tls_ca_file, NULL) != 1 || names == NULL) {
            tls_last_error(why, sizeof why);
            snprintf(err, errlen, "tls_ca_file %s: cannot load PEM CA certificates: %s", cfg->tls_ca_file,
                     why[0] ? why : "no certificate in the file");
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ts->ctx, names);
    }
    if (cfg->tls_client_auth == TLS_CLIENT_AUTH_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    else if (cfg->tls_client_auth == TLS_CLIENT_AUTH_REQUIRE)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ts->ctx, mode, NULL);
    tls_describe_cert(ts);
    *out = ts;
    return 0;
fail:
    SSL_CTX_free(ts->ctx);
    free(ts);
    return -1;
}

void tls_server_free(struct tls_server *ts)
{
    if (ts == NULL)
        return;
    SSL_CTX_free(ts->ctx); /* SSL objects still hold their own reference */
    free(ts);
}

const char *tls_server_describe(const struct tls_server *ts)
{
    return ts->about;
}

struct tls_conn *tls_conn_new(struct tls_server *ts)
{
    struct tls_conn *tc = calloc(1, sizeof *tc);

    if (tc == NULL)
        return NULL;
    tc->ssl = SSL_new(ts->ctx);
    tc->rbio = BIO_new(BIO_s_mem());
    tc->wbio = BIO_new(BIO_s_mem());
    if (tc->ssl == NULL || tc->rbio == NULL || tc->wbio == NULL) {
        BIO_free(tc->rbio);
        BIO_free(tc->wbio);
        SSL_free(tc->ssl);
        free(tc);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(tc->ssl, tc->rbio, tc->wbio);
    SSL_set_accept_state(tc->ssl);
    snprintf(tc->desc, sizeof tc->desc, "handshake");
    return tc;
}

void tls_conn_free(struct tls_conn *tc)
{
    if (tc == NULL)
        return;
    SSL_free(tc->ssl);
    free(tc->subject);
    free(tc->cn);
    free(tc);
}

/* Move what OpenSSL wrote to the write BIO into out. 0 or -1 (ENOMEM). */
static int tls_drain(struct tls_conn *tc, struct buf *out)
{
    size_t pending;

    while ((pending = BIO_ctrl_pending(tc->wbio)) > 0) {
        int n;
        if (buf_reserve(out, pending) != 0)
            return -1;
        n = BIO_read(tc->wbio, out->data + out->len, (int)pending);
        if (n <= 0)
            return -1;
        out->len += (size_t)n;
        out->data[out->len] = '\0';
    }
    return 0;
}

/* The handshake is done: note the protocol, the cipher and the client's
 * certificate. 0 or -1 (ENOMEM). */
static int tls_on_ready(struct tls_conn *tc)
{
    X509 *peer = SSL_get0_peer_certificate(tc->ssl);

    tc->ready = true;
    snprintf(tc->desc, sizeof tc->desc, "%s %s", SSL_get_version(tc->ssl), SSL_get_cipher_name(tc->ssl));
    if (peer == NULL)
        return 0;
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL)
        return -1;
    if (X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
        size_t n = BIO_ctrl_pending(mem);
        tc->subject = malloc(n + 1);
        if (tc->subject != NULL) {
            int got = BIO_read(mem, tc->subject, (int)n);
            tc->subject[got > 0 ? got : 0] = '\0';
        }
    }
    BIO_free(mem);
    if (SSL_get_verify_result(tc->ssl) != X509_V_OK)
        return 0;
    int i = X509_NAME_get_index_by_NID(X509_get_subject_name(peer), NID_commonName, -1);
    if (i < 0)
        return 0;
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(
        &utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(X509_get_subject_name(peer), i)));
    /* A name with a NUL inside would compare equal to its prefix. */
    if (len > 0 && memchr(utf8, '\0', (size_t)len) == NULL)
        tc->cn = strndup((const char *)utf8, (size_t)len);
    OPENSSL_free(utf8);
    return 0;
}

/* Record why the connection failed (from OpenSSL's queue and the verify
 * result). */
static void tls_fail(struct tls_conn *tc, int sslerr)
{
    char why[200];
    long v = SSL_get_verify_result(tc->ssl);

    tc->failed = true;
    tls_last_error(why, sizeof why);
    if (v != X509_V_OK && !tc->ready)
        snprintf(tc->error, sizeof tc->error, "client certificate: %s", X509_verify_cert_error_string(v));
    else if (why[0] != '\0')
        snprintf(tc->error, sizeof tc->error, "%s", why);
    else
        snprintf(tc->error, sizeof tc->error, "%s",
                 sslerr == SSL_ERROR_SYSCALL ? "unexpected end of the stream" : "TLS error");
}

int tls_conn_input(struct tls_conn *tc, const char *data, size_t n, struct buf *in, struct buf *out)
{
    int flags = 0, rc, err;

    tls_clear_errors();
    if (tc->failed) {
        snprintf(tc->error, sizeof tc->error, "input after a TLS error");
        return -1;
    }
    if (n > 0 && BIO_write(tc->rbio, data, (int)n) != (int)n) {
        snprintf(tc->error, sizeof tc->error, "out of memory");
        return -1;
    }
    if (!tc->ready) {
        rc = SSL_do_handshake(tc->ssl);
        if (rc != 1) {
            err = SSL_get_error(tc->ssl, rc);
            if (err != SSL_ERROR_WANT_READ) {
                tls_fail(tc, err);
                (void)tls_drain(tc, out); /* the alert, if any */
                return -1;
            }
            return tls_drain(tc, out) == 0 ? 0 : -1;
        }
        flags |= TLS_IN_READY;
        if (tls_on_ready(tc) != 0) {
            snprintf(tc->error, sizeof tc->error, "out of memory");
            return -1;
        }
    }
    for (;;) {
        if (buf_reserve(in, TLS_READ_CHUNK) != 0) {
            snprintf(tc->error, sizeof tc->error, "out of memory");
            return -1;
        }
        rc = SSL_read(tc->ssl, in->data + in->len, TLS_READ_CHUNK);
        if (rc > 0) {
            in->len += (size_t)rc;
            in->data[in->len] = '\0';
            /* Nothing more to decrypt: spare the call that would say so. */
            if (BIO_ctrl_pending(tc->rbio) == 0 && !SSL_has_pending(tc->ssl))
                break;
            continue;
        }
        err = SSL_get_error(tc->ssl, rc);
        if (err == SSL_ERROR_WANT_READ)
            break;
        if (err == SSL_ERROR_ZERO_RETURN) {
            flags |= TLS_IN_EOF;
            break;
        }
        tls_fail(tc, err);
        (void)tls_drain(tc, out);
        return -1;
    }
    if (tls_drain(tc, out) != 0) {
        snprintf(tc->error, sizeof tc->error, "out of memory");
        return -1;
    }
    return flags;
}

int tls_conn_encrypt(struct tls_conn *tc, struct buf *data)
{
    size_t done = 0;
    int rc;

    if (data->len == 0)
        return 0;
    if (!tc->ready || tc->failed) {
        /* Only a refusal at accept (MAXCLIENTS, SHUTDOWN) writes before
         * the handshake, and the connection closes right after: nothing
         * can reach the client then, nor after a fatal error. */
        buf_reset(data);
        return 0;
    }
    tls_clear_errors();
    /* A memory BIO takes everything: SSL_write writes it all or fails. */
    rc = SSL_write_ex(tc->ssl, data->data, data->len, &done);
    buf_reset(data);
    if (rc != 1) {
        tc->failed = true;
        ERR_clear_error();
        return -1;
    }
    return tls_drain(tc, data);
}

void tls_conn_shutdown(struct tls_conn *tc, struct buf *out)
{
    if (!tc->ready || tc->failed)
        return;
    ERR_clear_error();
    (void)SSL_shutdown(tc->ssl);
    (void)tls_drain(tc, out);
    ERR_clear_error();
}

bool tls_conn_ready(const struct tls_conn *tc)
{
    return tc->ready;
}

const char *tls_conn_describe(const struct tls_conn *tc)
{
    return tc->desc;
}

const char *tls_conn_subject(const struct tls_conn *tc)
{
    return tc->subject;
}

const char *tls_conn_verified_cn(const struct tls_conn *tc)
{
    return tc->cn;
}

const char *tls_conn_error(const struct tls_conn *tc)
{
    return tc->error[0] != '\0' ? tc->error : "TLS error";
}
