/*
 * Jobs: the unit of work a session hands to a backend, and the streaming
 * and flow-control machinery every backend shares (posting response bytes
 * to the loop thread, waiting for the client to read them).
 */
#include "daemon/backend.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/server.h"

const struct backend_ops *backend_for(enum bind_type type)
{
    switch (type) {
    case BIND_SQLITE_FILE:
    case BIND_SQLITE_MEMORY: return &backend_sqlite_ops;
    case BIND_POSTGRES: return &backend_pg_ops;
    }
    return NULL;
}

struct job *job_new(enum job_type type, struct bind *b, struct session *sess, uint64_t owner)
{
    struct job *job = calloc(1, sizeof *job);

    if (job == NULL)
        return NULL;
    if (pthread_mutex_init(&job->lock, NULL) != 0) {
        free(job);
        return NULL;
    }
    if (pthread_cond_init(&job->cond, NULL) != 0) {
        pthread_mutex_destroy(&job->lock);
        free(job);
        return NULL;
    }
    job->type = type;
    job->bind = b;
    server_bind_hold(b);
    job->cfgref = server_cfg_hold(b->srv->cfgref);
    job->sess = sess;
    job->owner = owner;
    job->refs = 1;
    job->max_unacked = b->srv->cfg->max_output;
    atomic_init(&job->cancelled, false);
    return job;
}

void job_unref(struct job *job)
{
    struct bind *b = job->bind;

    if (--job->refs > 0)
        return;
    codec_request_free(&job->req);
    for (size_t i = 0; i < job->nmore; i++)
        codec_request_free(&job->more[i].req);
    free(job->more);
    free(job->begin_buf);
    for (size_t i = 0; i < job->nxbinds; i++)
        server_bind_drop(job->xbinds[i]);
    free(job->xbinds);
    free(job->xact_binds);
    buf_free(&job->done_event.data);
    pthread_cond_destroy(&job->cond);
    pthread_mutex_destroy(&job->lock);
    server_cfg_drop(job->cfgref);
    free(job);
    server_bind_drop(b);
}

int job_post_chunk(struct job *job, struct buf *data)
{
    struct job_event *ev;

    if (atomic_load(&job->cancelled))
        return -1;
    if (data->len == 0)
        return 0;
    ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return 0; /* keep the bytes; they go out with the next post */
    ev->job = job;
    ev->data = *data;
    *data = (struct buf)BUF_INIT;
    pthread_mutex_lock(&job->lock);
    job->unacked += ev->data.len;
    pthread_mutex_unlock(&job->lock);
    server_post(job->bind->srv, ev);
    return 0;
}

void job_post_done(struct job *job, struct buf *data)
{
    struct job_event *ev = &job->done_event;

    ev->job = job;
    ev->done = true;
    ev->data = *data;
    *data = (struct buf)BUF_INIT;
    server_post(job->bind->srv, ev);
}

void job_fail(struct job *job, const char *code, const char *msg)
{
    struct buf out = BUF_INIT;

    if (codec_put_error(&out, code, msg) != 0)
        buf_reset(&out); /* nothing to say; the session notices an empty reply */
    job->failed = true;
    job->in_txn = false;
    job_post_done(job, &out);
}

int job_wait_credit(struct job *job)
{
    int rc = 0;

    pthread_mutex_lock(&job->lock);
    while (job->unacked > job->max_unacked && !atomic_load(&job->cancelled))
        pthread_cond_wait(&job->cond, &job->lock);
    if (atomic_load(&job->cancelled))
        rc = -1;
    pthread_mutex_unlock(&job->lock);
    return rc;
}

void job_ack(struct job *job, size_t n)
{
    bool go_on;

    pthread_mutex_lock(&job->lock);
    job->unacked = n > job->unacked ? 0 : job->unacked - n;
    go_on = job->unacked <= job->max_unacked;
    pthread_cond_signal(&job->cond);
    pthread_mutex_unlock(&job->lock);
    if (go_on && job->bind->ops->credit != NULL)
        job->bind->ops->credit(job->bind, job);
}

void job_cancel(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    atomic_store(&job->cancelled, true);
    pthread_cond_broadcast(&job->cond);
    pthread_mutex_unlock(&job->lock);
    job->bind->ops->interrupt(job->bind, job);
}
