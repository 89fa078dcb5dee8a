/*
 * Who a session's client is and what it may do: .auth (the password check
 * queued on srv->authq and run on libuv's thread pool, the delay after a
 * wrong password, closing after too many), logins by a TLS client
 * certificate, and the grants of the logged-in user. It owns struct
 * session_auth (declared in session_int.h, which session_close also needs)
 * and s->user / s->user_name while logging in.
 */
#include "daemon/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/auth.h"
#include "daemon/authq.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/session_int.h"
#include "daemon/tls.h"

/* A connection is closed after this many failed .auth. */
#define AUTH_MAX_FAILURES 5

bool session_tls_required(const struct session *s)
{
    return s->plain_remote && s->srv->cfg->require_tls;
}

bool session_authenticated(const struct session *s)
{
    return s->srv->cfg->nusers == 0 || s->user != NULL;
}

static void auth_freed(uv_handle_t *h)
{
    free(h->data);
}

/* Detach and free a.  Loop thread. */
void session_auth_free(struct session_auth *a)
{
    if (a->s != NULL)
        a->s->auth = NULL;
    a->s = NULL;
    confref_drop(a->cfgref);
    a->cfgref = NULL;
    explicit_bzero(a->password, sizeof a->password);
    uv_close((uv_handle_t *)&a->timer, auth_freed);
}

/* Answer the .auth and go back to serving. */
static void auth_answer(struct session_auth *a)
{
    struct session *s = a->s;

    if (a->ok) {
        const struct user_conf *u = config_user(s->srv->cfg, a->user);
        char *name = u != NULL ? strdup(u->name) : NULL;
        if (u != NULL && name == NULL) {
            session_reply_error(s, "NOMEM", "out of memory");
        } else if (u == NULL) {
            /* A reload removed the user while its password was checked. */
            session_reply_error(s, "AUTH", "invalid user name or password");
        } else {
            free(s->user_name);
            s->user_name = name;
            s->user = u;
            log_info("c%llu: authenticated as %s", (unsigned long long)s->id, name);
            char facts[AUTH_MAX_FIELD + 16];
            snprintf(facts, sizeof facts, "user=%s", name);
            session_reply_ok(s, facts);
        }
    } else if (++s->auth_failures >= AUTH_MAX_FAILURES) {
        /* Its failures cost the connection: it starts again with a new one. */
        log_info("c%llu: %u failed .auth: closing", (unsigned long long)s->id, s->auth_failures);
        session_reply_error(s, "AUTH", "invalid user name or password; too many failed .auth (%d): closing",
                            AUTH_MAX_FAILURES);
        session_auth_free(a);
        session_close(s, false);
        return;
    } else {
        session_reply_error(s, "AUTH", "invalid user name or password");
    }
    session_auth_free(a);
    session_set_state(s, SESS_IDLE);
    session_pump(s);
}

static void auth_delay_done(uv_timer_t *t)
{
    auth_answer(t->data);
}

static void auth_work(uv_work_t *w)
{
    struct session_auth *a = w->data;

    a->ok = auth_check(confref_cfg(a->cfgref), a->user, a->password);
}

static void auth_work_done(uv_work_t *w, int status)
{
    struct session_auth *a = w->data;
    struct session *s = a->s;

    a->checking = false;
    explicit_bzero(a->password, sizeof a->password);
    if (status != 0)
        a->ok = false;
    if (s->state == SESS_CLOSING) {
        bool graceful = a->close_graceful;
        session_auth_free(a);
        session_finish_close(s, graceful);
        return;
    }
    if (!a->ok) {
        authq_failed(&a->check);
        log_info("c%llu: authentication as %s failed", (unsigned long long)s->id, a->user);
        if (s->srv->cfg->auth_fail_delay_ms > 0 &&
            uv_timer_start(&a->timer, auth_delay_done, (uint64_t)s->srv->cfg->auth_fail_delay_ms, 0) == 0)
            return; /* else (it cannot fail: open, with a callback) answer now */
    }
    auth_answer(a);
}

void session_auth(struct session *s, const char *user, const char *password)
{
    struct session_auth *a;

    if (session_tls_required(s)) {
        session_reply_error(s, "TLSREQUIRED",
                            "require_tls is on: remote clients log in over TLS only "
                            "(the tls_listen port); this password crossed the network in the clear");
        return;
    }
    if (s->srv->cfg->nusers == 0) {
        session_reply_error(s, "AUTH",
                            "authentication is off: the configuration has no [user.NAME] sections");
        return;
    }
    if (s->txn_held || s->in_txn) {
        session_reply_error(s, "ARGS",
                            "cannot change the user inside a transaction (COMMIT or ROLLBACK first)");
        return;
    }
    if (strlen(user) > AUTH_MAX_FIELD || strlen(password) > AUTH_MAX_FIELD) {
        session_reply_error(s, "ARGS", "user name and password have at most %d bytes each", AUTH_MAX_FIELD);
        return;
    }
    a = calloc(1, sizeof *a);
    if (a == NULL || uv_timer_init(s->srv->loop, &a->timer) != 0) {
        free(a);
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    a->timer.data = a;
    a->check.work.data = a;
    a->s = s;
    a->cfgref = confref_hold(s->srv->host.cfgref);
    a->checking = true;
    snprintf(a->user, sizeof a->user, "%s", user);
    snprintf(a->password, sizeof a->password, "%s", password);
    s->auth = a;
    session_set_state(s, SESS_AUTH);
    authq_submit(s->srv->authq, &a->check, s->peer, auth_work, auth_work_done);
}

enum grant session_grant(const struct session *s, const struct bind *b)
{
    const struct config *cfg = s->srv->cfg;
    int i;

    if (cfg->nusers == 0)
        return GRANT_READ_WRITE;
    if (s->user == NULL)
        return GRANT_NONE;
    i = b->retired ? config_bind_index(cfg, b->conf->name) : (int)b->index;
    return i < 0 ? GRANT_NONE : s->user->grants[i];
}

/* The handshake is done: a client whose verified certificate names a
 * user's cert_cn is logged in as that user. */
void session_tls_login(struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    const char *cn = tls_conn_verified_cn(s->tls);

    log_debug("c%llu: TLS %s, client certificate %s", (unsigned long long)s->id, tls_conn_describe(s->tls),
              tls_conn_subject(s->tls) ? tls_conn_subject(s->tls) : "none");
    for (size_t i = 0; cn != NULL && i < cfg->nusers; i++) {
        char *name;
        if (cfg->users[i].cert_cn == NULL || strcmp(cfg->users[i].cert_cn, cn) != 0)
            continue;
        name = strdup(cfg->users[i].name);
        if (name == NULL)
            return; /* the client can still log in with .auth */
        free(s->user_name);
        s->user_name = name;
        s->user = &cfg->users[i];
        log_info("c%llu: logged in as %s by its certificate (CN=%s)", (unsigned long long)s->id, name, cn);
        return;
    }
}
