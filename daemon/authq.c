/*
 * Password checks in order: crypt(3) is slow on purpose, so a flood of
 * wrong .auth lines from many connections could keep every thread of
 * libuv's pool hashing and make every other login (and every PostgreSQL
 * cancel request, which runs on the same pool) wait its turn behind the
 * flood.
 *
 * So at most AUTHQ_RUNNING checks run at once, fewer than the pool's
 * threads, and the waiting ones start in the order of their peer's
 * recent failures, then of arrival: a legitimate login from another
 * address waits for one running check at most, however many of the
 * flood's are queued. Failures are counted per peer address (the host
 * without the port; all unix socket clients are one peer) in a table of
 * AUTHQ_PEERS entries, the least recently failed one replaced when full,
 * and a peer's count is forgotten AUTHQ_FORGET_MS after its last failure.
 */
#include "daemon/authq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTHQ_RUNNING   2
#define AUTHQ_PEERS     256
#define AUTHQ_FORGET_MS (60 * 1000)

struct authq_peer {
    char host[64];
    uint32_t failures;
    uint64_t last_ms; /* uv_now() of its last failure; 0: unused */
};

struct authq {
    uv_loop_t *loop;
    int running, max_running;
    struct authq_check *head; /* waiting, in arrival order */
    struct authq_peer peers[AUTHQ_PEERS];
};

struct authq *authq_new(uv_loop_t *loop)
{
    struct authq *q = calloc(1, sizeof *q);
    const char *env = getenv("UV_THREADPOOL_SIZE");
    int threads = env != NULL && atoi(env) > 0 ? atoi(env) : 4; /* libuv's default */

    if (q == NULL)
        return NULL;
    q->loop = loop;
    /* Leave at least one thread of the pool to cancel requests. */
    q->max_running = threads > AUTHQ_RUNNING ? AUTHQ_RUNNING : threads > 1 ? threads - 1 : 1;
    return q;
}

void authq_free(struct authq *q)
{
    free(q);
}

/* The entry of `host`, or NULL when it has none. */
static struct authq_peer *peer_find(struct authq *q, const char *host)
{
    for (size_t i = 0; i < AUTHQ_PEERS; i++)
        if (q->peers[i].last_ms != 0 && strcmp(q->peers[i].host, host) == 0)
            return &q->peers[i];
    return NULL;
}

/* Recent failures of `host`. */
static uint32_t peer_failures(struct authq *q, const char *host)
{
    struct authq_peer *p = peer_find(q, host);

    if (p == NULL || uv_now(q->loop) - p->last_ms >= AUTHQ_FORGET_MS)
        return 0;
    return p->failures;
}

void authq_failed(const struct authq_check *c)
{
    struct authq *q = c->q;
    struct authq_peer *p = peer_find(q, c->peer);
    uint64_t now = uv_now(q->loop) | 1; /* never 0: that marks a free entry */

    if (p == NULL) {
        p = &q->peers[0];
        for (size_t i = 1; i < AUTHQ_PEERS && p->last_ms != 0; i++)
            if (q->peers[i].last_ms < p->last_ms)
                p = &q->peers[i];
        snprintf(p->host, sizeof p->host, "%s", c->peer);
        p->failures = 0;
    }
    if (now - p->last_ms >= AUTHQ_FORGET_MS)
        p->failures = 0;
    p->failures++;
    p->last_ms = now;
}

static void check_done(uv_work_t *w, int status);

/* Start waiting checks while fewer than max_running run: each time the
 * one whose peer failed least lately, the oldest among equals. */
static void authq_dispatch(struct authq *q)
{
    while (q->running < q->max_running && q->head != NULL) {
        struct authq_check **best = &q->head;
        uint32_t least = peer_failures(q, q->head->peer);
        for (struct authq_check **pp = &q->head->next; *pp != NULL && least > 0; pp = &(*pp)->next) {
            uint32_t f = peer_failures(q, (*pp)->peer);
            if (f < least) {
                least = f;
                best = pp;
            }
        }
        struct authq_check *c = *best;
        *best = c->next;
        c->next = NULL;
        if (uv_queue_work(q->loop, &c->work, c->run, check_done) != 0) {
            c->done(&c->work, UV_ECANCELED); /* the owner answers "failed" */
            continue;
        }
        q->running++;
    }
}

static void check_done(uv_work_t *w, int status)
{
    struct authq_check *c = (struct authq_check *)w;
    struct authq *q = c->q;

    q->running--;
    c->done(w, status); /* may free c */
    authq_dispatch(q);
}

void authq_submit(struct authq *q, struct authq_check *c, const char *peer, uv_work_cb run,
                  uv_after_work_cb done)
{
    struct authq_check **pp = &q->head;

    c->q = q;
    c->run = run;
    c->done = done;
    c->next = NULL;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if (strrchr(c->peer, ':') != NULL)
        *strrchr(c->peer, ':') = '\0';
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = c;
    authq_dispatch(q);
}

bool authq_cancel(struct authq_check *c)
{
    for (struct authq_check **pp = &c->q->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            c->next = NULL;
            return true;
        }
    }
    return false;
}
