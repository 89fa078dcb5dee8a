/*
 * A growable byte buffer, the one byte container of daemon, client and
 * codec.
 *
 * `data[0..len)` holds the bytes; `cap` is the allocation. A failed
 * allocation leaves the buffer as it was and returns -1; callers refuse
 * that one request or client and go on (the daemon never aborts on ENOMEM).
 * `data` is NUL-terminated whenever cap > 0, so text can be read with the
 * C string functions, but the content may hold NULs of its own.
 */
#ifndef SQLMUX_PROTO_BUF_H
#define SQLMUX_PROTO_BUF_H

#include <stddef.h>
#include <string.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                             \
    {                                                                                                        \
        NULL, 0, 0                                                                                           \
    }

/* buf_reserve() when the room is not there: grow the allocation. */
__attribute__((warn_unused_result)) int buf_grow(struct buf *b, size_t more);
/* Make room for `more` bytes past len (plus the NUL). 0 or -1. Inline:
 * every field of every answer comes through here, and most fit. */
__attribute__((warn_unused_result)) static inline int buf_reserve(struct buf *b, size_t more)
{
    /* cap > len whenever cap > 0 (the NUL); an empty buffer grows. */
    return more < b->cap - b->len ? 0 : buf_grow(b, more);
}
/* Append n bytes. 0 or -1. */
__attribute__((warn_unused_result)) static inline int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}
/* Append one byte. 0 or -1. */
__attribute__((warn_unused_result)) static inline int buf_putc(struct buf *b, char c)
{
    if (b->cap - b->len < 2 && buf_reserve(b, 1) < 0)
        return -1;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
    return 0;
}
/* Append a NUL-terminated string. 0 or -1. */
__attribute__((warn_unused_result)) int buf_puts(struct buf *b, const char *s);
/* Append printf-formatted text. 0 or -1. */
__attribute__((warn_unused_result, format(printf, 2, 3))) int buf_printf(struct buf *b, const char *fmt, ...);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Cut the content back to its first len bytes (len <= b->len). */
void buf_truncate(struct buf *b, size_t len);
/* Empty the buffer but keep its memory. */
void buf_reset(struct buf *b);
/* Free the memory; the buffer is BUF_INIT afterwards. */
void buf_free(struct buf *b);

#endif
