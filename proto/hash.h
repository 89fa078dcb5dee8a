/*
 * The hash of names (FNV-1a, 64-bit): the config's indexes of tables and
 * users (conf/config.c). Short keys, no allocation, no seed. hash_add()
 * goes on from an earlier hash, so a key in pieces hashes as the joined
 * key does. Statement texts have their own, faster hash (daemon/hash.h).
 */
#ifndef SQLMUX_PROTO_HASH_H
#define SQLMUX_PROTO_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_INIT 1469598103934665603ull

/* The hash of what h was made of, followed by s[0..n). */
static inline uint64_t hash_add(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static inline uint64_t hash_bytes(const char *s, size_t n)
{
    return hash_add(HASH_INIT, s, n);
}

#endif
