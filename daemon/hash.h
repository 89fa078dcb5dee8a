/*
 * The one string hash of the daemon (routing and statement caches):
 * proto/hash.h's hash_bytes(), and the hash of a request's text.
 */
#ifndef SQLMUX_DAEMON_HASH_H
#define SQLMUX_DAEMON_HASH_H

#include <stdint.h>

#include "proto/codec.h"
#include "proto/hash.h" /* hash_bytes() */

/* The hash of req's text: made once, by whoever routes it (req->hash),
 * else now. */
static inline uint64_t request_hash(const struct request *req)
{
    return req->hash != 0 ? req->hash : hash_bytes(req->text, req->len);
}

#endif
