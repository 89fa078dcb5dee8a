/*
 * The one string hash of the daemon (routing and statement caches).
 */
#ifndef SQLMUX_DAEMON_HASH_H
#define SQLMUX_DAEMON_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"

/* FNV-1a, 64-bit: short keys (SQL text), no allocation, no seed. */
static inline uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The hash of req's text: made once, by whoever routes it (req->hash),
 * else now. */
static inline uint64_t request_hash(const struct request *req)
{
    return req->hash != 0 ? req->hash : hash_bytes(req->text, req->len);
}

#endif
