/*
 * The growable byte buffer of proto/buf.h: the one container the daemon,
 * the client library and the codec append to and read from.
 *
 * Invariants: data[0..len) is the content, cap is the size of the
 * allocation, and data[len] == 0 whenever cap > 0. Growth doubles the
 * capacity so that appending byte by byte stays linear; a failed
 * allocation leaves the buffer exactly as it was.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 64

int buf_grow(struct buf *b, size_t more)
{
    /* Room for len + more bytes and the NUL, without overflow. */
    if (more > SIZE_MAX - 1 - b->len)
        return -1;
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -1;
    if (b->cap == 0)
        p[0] = '\0';
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    /* Try the room there is first; most calls fit and format once. */
    if (buf_reserve(b, 64) < 0)
        return -1;
    size_t room = b->cap - b->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->data[b->len] = '\0';
        return -1;
    }
    if ((size_t)n >= room) {
        if (buf_reserve(b, (size_t)n) < 0) {
            b->data[b->len] = '\0';
            return -1;
        }
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->data[b->len] = '\0';
            return -1;
        }
    }
    b->len += (size_t)n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void buf_truncate(struct buf *b, size_t len)
{
    if (len >= b->len)
        return;
    b->len = len;
    b->data[len] = '\0';
}

void buf_reset(struct buf *b)
{
    buf_truncate(b, 0);
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
