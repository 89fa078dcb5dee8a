/*
 * Reading the binds' catalogs and installing them (catalog_refresh.h).
 */
#include "daemon/catalog_refresh.h"

#include <assert.h>
#include <string.h>

#include "daemon/catalog.h"
#include "daemon/log.h"
#include "daemon/route.h"
#include "daemon/server.h"

/* Ask bind b for its catalog, unless a read is out already. */
static void catalog_read(struct bind *b)
{
    struct job *job;

    if (b->catalog.reading || b->retired || b->impl == NULL || server_of_bind(b)->stopping)
        return;
    job = job_new(JOB_CATALOG, b, NULL, 0);
    if (job == NULL) {
        log_warn("bind %s: out of memory reading its catalog", b->conf->name);
        return;
    }
    b->catalog.reading = true;
    b->ops->submit(b, job);
}

/* Build a new catset from the binds' installed catalogs and route with it. */
static void catalog_publish(struct server *srv)
{
    struct catset *cs = catset_new(srv->nbinds);

    if (cs == NULL) {
        /* Keep routing with the old set; the next change tries again. */
        log_warn("out of memory publishing the catalogs");
        return;
    }
    for (size_t i = 0; i < srv->nbinds; i++)
        cs->cats[i] = catalog_hold(srv->binds[i]->catalog.cur);
    routecache_set_catalogs(srv->routes, cs);
    catset_drop(srv->catset);
    srv->catset = cs;
}

/* Log the [tables] entries that pin a name to another bind than b, whose
 * catalog now holds it (and did not before). */
static void catalog_warn_pinned(struct bind *b, const struct catalog *before)
{
    const struct config *cfg = server_of_bind(b)->cfg;

    for (size_t i = 0; i < cfg->nrules; i++) {
        const struct table_rule *r = &cfg->rules[i];
        char schema[256] = "";
        const char *name = r->pattern, *dot = strchr(r->pattern, '.');

        if (r->is_pattern || r->bind == b->index)
            continue;
        if (dot != NULL && (size_t)(dot - r->pattern) < sizeof schema) {
            memcpy(schema, r->pattern, (size_t)(dot - r->pattern));
            schema[dot - r->pattern] = '\0';
            name = dot + 1;
        }
        if (catalog_has(b->catalog.cur, schema, name) && !catalog_has(before, schema, name))
            log_warn(
                "table %s is pinned to bind %s by [tables], but bind %s has one too: that one is not used",
                r->pattern, cfg->binds[r->bind].name, b->conf->name);
    }
}

void catalog_install(struct bind *b, struct catalog *c)
{
    struct catalog *cur = b->catalog.cur;

    assert(server_on_loop(server_of_bind(b)));
    if (c == NULL)
        return;
    if (b->retired || (cur != NULL && c->version <= cur->version)) {
        catalog_drop(c); /* an older read that arrived late */
        return;
    }
    b->catalog.cur = c;
    if (cur == NULL || !catalog_same(cur, c)) {
        log_debug("bind %s: catalog version %lld, %zu names", b->conf->name, (long long)c->version, c->n);
        catalog_publish(server_of_bind(b));
        catalog_warn_pinned(b, cur);
    }
    catalog_drop(cur);
}

void catalog_job_done(struct job *job)
{
    struct bind *b = job->bind;
    struct server *srv = server_of_bind(b);

    b->catalog.reading = false;
    if (job->catalog != NULL) {
        catalog_install(b, job->catalog);
        job->catalog = NULL;
    }
    if (srv->catalog_loading > 0)
        srv->catalog_loading--;
    job_unref(job);
}

static void on_catalog_timer(uv_timer_t *t)
{
    struct server *srv = t->data;

    for (size_t i = 0; i < srv->nbinds; i++)
        catalog_read(srv->binds[i]);
}

/* (Re)arm the timer at the configuration's catalog_interval (0: off). */
static void catalog_timer_set(struct server *srv)
{
    uint64_t ms = (uint64_t)srv->cfg->catalog_interval_ms;

    if (ms == 0)
        uv_timer_stop(&srv->catalog_timer);
    else
        (void)uv_timer_start(&srv->catalog_timer, on_catalog_timer, ms, ms);
}

static void on_load_timeout(uv_timer_t *t)
{
    struct server *srv = t->data;
    srv->catalog_loading = 0;
}

int catalog_load_all(struct server *srv, uint64_t timeout_ms)
{
    if (uv_timer_init(srv->loop, &srv->catalog_timer) != 0)
        return -1;
    srv->catalog_timer.data = srv;
    srv->catalog_loading = 0;
    for (size_t i = 0; i < srv->nbinds; i++) {
        if (!srv->binds[i]->catalog.reading) {
            catalog_read(srv->binds[i]);
            srv->catalog_loading += srv->binds[i]->catalog.reading;
        }
    }
    /* Nothing else runs yet: no client, no listener. */
    (void)uv_timer_start(&srv->catalog_timer, on_load_timeout, timeout_ms, 0);
    while (srv->catalog_loading > 0)
        uv_run(srv->loop, UV_RUN_ONCE);
    for (size_t i = 0; i < srv->nbinds; i++)
        if (srv->binds[i]->catalog.cur == NULL)
            log_warn(
                "bind %s: its catalog could not be read at start: its tables route as unknown until it is",
                srv->binds[i]->conf->name);
    if (srv->catset == NULL)
        catalog_publish(srv);
    catalog_timer_set(srv);
    return srv->catset != NULL ? 0 : -1;
}

void catalog_reloaded(struct server *srv)
{
    catalog_publish(srv);
    catalog_timer_set(srv);
    for (size_t i = 0; i < srv->nbinds; i++)
        catalog_read(srv->binds[i]);
}

void catalog_stop(struct server *srv)
{
    if (srv->catalog_timer.data != NULL)
        uv_timer_stop(&srv->catalog_timer);
}
