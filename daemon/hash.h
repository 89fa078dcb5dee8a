/*
 * The daemon's hash of statement texts (routing, statement caches, the
 * quick reads' skip lists) and of a request's text.
 *
 * Texts are longer than the config's names (proto/hash.h, FNV-1a, a byte
 * at a time): every request's text is hashed on the loop, so this one
 * takes 8 bytes at a time (a multiply and a shift each, then a 64-bit
 * finaliser: splitmix64's, which mixes every input bit into the low bits
 * the tables index by). Collisions only cost a comparison: every table
 * compares the texts.
 */
#ifndef SQLMUX_DAEMON_HASH_H
#define SQLMUX_DAEMON_HASH_H

#include <stdint.h>
#include <string.h>

#include "proto/codec.h"

static inline uint64_t hash_text(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;

    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    if (n >= 4) {
        /* The last 4 to 7 bytes as two 4-byte reads that may overlap;
         * fewer, three bytes of them (n is in the seed): no memcpy of a
         * variable length. */
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        h = (h ^ (a | (uint64_t)b << 32)) * 0xff51afd7ed558ccdull;
    } else if (n > 0) {
        w = (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[n / 2] << 8 |
            (uint64_t)(unsigned char)s[n - 1] << 16;
        h = (h ^ w) * 0xff51afd7ed558ccdull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* The hash of req's text: made once, by whoever routes it (req->hash),
 * else now. */
static inline uint64_t request_hash(const struct request *req)
{
    return req->hash != 0 ? req->hash : hash_text(req->text, req->len);
}

#endif
