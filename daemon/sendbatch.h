/*
 * Sending a loop turn's answers in one system call (io_uring).
 *
 * At the end of a turn flush_turn (session_io.c) has the answers of every
 * client the turn served. One send() each costs a system call each, and
 * on a virtual machine a system call's entry and exit cost more than the
 * loopback TCP work of a small answer (measured here: 50 connections,
 * 50-byte answers, 2.9 us per send() against 1.2 us per answer submitted
 * together). So with io_uring = on the answers are submitted as one batch
 * of IORING_OP_SEND requests and waited for in the same io_uring_enter():
 * each is MSG_DONTWAIT, so the kernel sends it inline or completes it at
 * once with -EAGAIN, never parks it; the call returns with every result,
 * and the caller treats them as it would send()'s.
 *
 * Where the kernel refuses io_uring (too old, io_uring_disabled, a
 * container's seccomp profile), the batch falls back to one send() per
 * answer, as does a batch of one.
 */
#ifndef SQLMUX_DAEMON_SENDBATCH_H
#define SQLMUX_DAEMON_SENDBATCH_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Answers in one batch at most: the ring's size. */
#define SENDBATCH_MAX 256

struct sendbatch_item {
    int fd;
    const char *data;
    size_t len;
    ssize_t result; /* bytes sent, or -errno */
};

struct sendbatch {
    struct io_uring ring;
    bool ring_ok; /* ring is set up: batches go through it */
    /* .stats */
    uint64_t batches; /* io_uring_enter() calls that sent a batch */
    uint64_t sent;    /* answers those batches carried */
};

/* Set up the ring when use_uring, logging (at info) why not when the
 * kernel refuses: the batch then sends one by one. Never fails. */
void sendbatch_init(struct sendbatch *b, bool use_uring);

/* Send each item's data on its descriptor, non-blocking and without
 * SIGPIPE, setting its result (n <= SENDBATCH_MAX). */
void sendbatch_send(struct sendbatch *b, struct sendbatch_item *items, size_t n);

void sendbatch_close(struct sendbatch *b);

#endif
