/*
 * TLS for clients of the tls_listen port, with OpenSSL. A tls_server is
 * one SSL_CTX built from the configuration's tls_* keys (rebuilt by a
 * reload); a tls_conn is one client's SSL object between two memory BIOs,
 * so the session keeps doing all socket I/O through libuv and no OpenSSL
 * call ever touches a socket or blocks the loop.
 *
 * Ciphertext from the socket goes in with tls_conn_input(), which appends
 * the plaintext to the session's input buffer; plaintext the session
 * writes is turned into ciphertext with tls_conn_encrypt(). Every call
 * hands back the bytes the session must send (handshake records, alerts,
 * close_notify). Loop thread only.
 */
#ifndef SQLMUX_DAEMON_TLS_H
#define SQLMUX_DAEMON_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "proto/buf.h"

struct tls_server;
struct tls_conn;

/* Build the server's TLS context from cfg (tls_cert_file, tls_key_file,
 * tls_ca_file, tls_client_auth, tls_protocols, tls_ciphers): reads the
 * files now. Returns 0 with *out, or -1 with err set to "tls_cert_file
 * PATH: why" (nothing is kept). Also used by --check-config and reload. */
__attribute__((warn_unused_result)) int tls_server_new(const struct config *cfg, struct tls_server **out,
                                                       char *err, size_t errlen);

/* Free a context. Connections made from it keep working: each holds its
 * own reference to the OpenSSL context. NULL is fine. */
void tls_server_free(struct tls_server *ts);

/* One line for the log: the certificate's subject and expiry. */
const char *tls_server_describe(const struct tls_server *ts);

/* A new server-side connection; NULL when out of memory. */
struct tls_conn *tls_conn_new(struct tls_server *ts);
void tls_conn_free(struct tls_conn *tc);

/* What tls_conn_input() saw, besides plaintext (bits). */
#define TLS_IN_READY 1 /* the handshake finished during this call */
#define TLS_IN_EOF   2 /* the client sent close_notify: no more input */

/*
 * Take n bytes of ciphertext from the client, run the handshake or decrypt
 * records, append the plaintext to `in` and the bytes to send back to
 * `out`. Returns TLS_IN_* bits, or -1 when the connection cannot go on
 * (tls_conn_error() says why; `out` may hold an alert to send before
 * closing).
 */
__attribute__((warn_unused_result)) int tls_conn_input(struct tls_conn *tc, const char *data, size_t n,
                                                       struct buf *in, struct buf *out);

/* Replace data's plaintext by its ciphertext. Before the handshake is
 * done nothing can be sent: data is emptied. 0, or -1 when out of
 * memory. */
__attribute__((warn_unused_result)) int tls_conn_encrypt(struct tls_conn *tc, struct buf *data);

/* Append a close_notify alert to out (best effort; nothing before the
 * handshake is done). */
void tls_conn_shutdown(struct tls_conn *tc, struct buf *out);

/* Whether the handshake is done. */
bool tls_conn_ready(const struct tls_conn *tc);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" once the handshake is done, else
 * "handshake". Valid while tc lives. */
const char *tls_conn_describe(const struct tls_conn *tc);

/* The client certificate's subject (RFC 2253), or NULL when it showed
 * none; the common name of a certificate that verified against
 * tls_ca_file, or NULL. Valid while tc lives. */
const char *tls_conn_subject(const struct tls_conn *tc);
const char *tls_conn_verified_cn(const struct tls_conn *tc);

/* Why the last tls_conn_input() failed. */
const char *tls_conn_error(const struct tls_conn *tc);

#endif
