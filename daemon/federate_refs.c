/*
 * DDL across binds (federate.h), on the loop thread: a CREATE TABLE whose
 * foreign keys reference another bind's tables runs on its own bind, and
 * .route counts those references; a view over other binds' tables is
 * refused with the reason.
 */
#include "daemon/federate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/server.h"
#include "daemon/session.h"
#include "daemon/sqllex.h"

/* ---- Foreign keys across binds (loop thread) ------------------------------ */

#define REFS_MAX_TOKENS 65536

/* The tokens of sql[0..len), at most max; *n gets their number. */
static size_t lex_all(const char *sql, size_t len, struct sqltok *toks, size_t max)
{
    size_t n = 0, at = 0;

    while (n < max) {
        struct sqltok t = sqllex_next(sql, len, at, 0);
        if (t.type == SQLTOK_EOF || t.type == SQLTOK_ERROR)
            break;
        toks[n++] = t;
        at = t.pos + t.len;
    }
    return n;
}

static bool tok_word(const char *sql, const struct sqltok *t, const char *word)
{
    size_t n = strlen(word);
    if (t->type != SQLTOK_WORD || t->len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (sqllex_lower((unsigned char)sql[t->pos + i]) != (unsigned char)word[i])
            return false;
    return true;
}

/* The bytes [*from, *to) of the constraint whose REFERENCES names the table
 * at token k: a column constraint "[CONSTRAINT c] REFERENCES t [(cols)]
 * [actions]", or a table constraint ", [CONSTRAINT c] FOREIGN KEY (cols)
 * REFERENCES t ..." with its leading comma. false when the tokens are not
 * laid out so. */
static bool references_clause(const char *sql, size_t len, const struct sqltok *toks, size_t n, size_t k,
                              size_t ref_end, size_t *from, size_t *to)
{
    size_t start, depth = 0, i;

    if (k == 0 || !tok_word(sql, &toks[k - 1], "references"))
        return false;
    start = k - 1;
    size_t m = start, open = 0;
    if (start >= 1 && toks[start - 1].type == SQLTOK_RPAREN) { /* FOREIGN KEY (cols), or a type's (n) */
        for (m = start - 1;; m--) {
            if (toks[m].type == SQLTOK_RPAREN)
                open++;
            else if (toks[m].type == SQLTOK_LPAREN && --open == 0)
                break;
            if (m == 0)
                return false;
        }
    }
    if (m < start && m >= 2 && tok_word(sql, &toks[m - 1], "key") && tok_word(sql, &toks[m - 2], "foreign")) {
        start = m - 2;
        if (start >= 2 && tok_word(sql, &toks[start - 2], "constraint"))
            start -= 2;
        if (start == 0 || toks[start - 1].type != SQLTOK_COMMA)
            return false;
        start--; /* the comma before the table constraint */
    } else if (start >= 2 && tok_word(sql, &toks[start - 2], "constraint")) {
        start -= 2;
    }
    *from = toks[start].pos;
    *to = len;
    for (i = k; i < n && toks[i].pos < ref_end; i++)
        ;
    for (; i < n; i++) {
        if (toks[i].type == SQLTOK_LPAREN) {
            depth++;
        } else if (toks[i].type == SQLTOK_RPAREN) {
            if (depth == 0)
                break;
            depth--;
        } else if ((toks[i].type == SQLTOK_COMMA && depth == 0) || toks[i].type == SQLTOK_SEMI) {
            break;
        }
    }
    if (i < n)
        *to = toks[i].pos;
    return true;
}

/* Why a view over several binds' tables is refused (running it, .route). */
static const char VIEW_REFUSED[] =
    "a view over tables of several binds is refused: a view is stored in one bind's database, where SQLite "
    "finds only that database's tables; create it over one bind's tables, or run the query across binds "
    "itself";

/* Whether the statement creates a view (CREATE [TEMP] VIEW). */
static bool creates_view(const char *sql, size_t len)
{
    struct sqltok toks[4];
    size_t n = lex_all(sql, len, toks, 4);
    for (size_t i = 1; i < n; i++)
        if (tok_word(sql, &toks[i], "view"))
            return tok_word(sql, &toks[0], "create");
    return false;
}

/* The +OK line of a CREATE with references across binds gets warnings=N. */
void federate_references_done(struct session *s, struct job *job)
{
    struct buf *d = &job->done_event.data;

    if (!job->failed && codec_ok_add_fact(d, "warnings", job->warnings) < 0)
        session_reply_error(s, "NOMEM", "out of memory building the response");
    else if (buf_append(&s->out, d->data, d->len) != 0)
        session_close(s, true);
}

/* How many references of a CREATE (ri) name tables of other binds than
 * its own (*tb), when every other use of such a table is none; else 0. */
static unsigned references_crossing(const struct config *cfg, const struct route *rr,
                                    const struct route_info *ri, size_t *tb)
{
    unsigned crossing = 0;

    if (rr->kind != STMT_DDL || ri->target == SIZE_MAX || (rr->flags & ROUTE_RENAME))
        return 0;
    *tb = route_table_bind(cfg, ri->tables[ri->target].schema, ri->tables[ri->target].name);
    for (size_t i = 0; i < ri->nrefs; i++) {
        const struct route_table *t = &ri->tables[ri->refs[i].table];
        if (route_is_system_table(t) || route_table_bind(cfg, t->schema, t->name) == *tb)
            continue;
        if (ri->refs[i].role != REF_REFERENCES)
            return 0; /* it reads or writes another bind */
        crossing++;
    }
    return crossing;
}

unsigned federate_references_route(const struct config *cfg, const struct catset *cs, const char *sql,
                                   size_t len, size_t *bind, const char **why)
{
    struct route_info ri;
    struct route rr;
    unsigned n;

    *why = NULL;
    if (creates_view(sql, len)) {
        *why = VIEW_REFUSED;
        return 0;
    }
    route_compute(cfg, cs, sql, len, &rr, &ri);
    n = references_crossing(cfg, &rr, &ri, bind);
    route_clear(&rr);
    sqlparse_info_free(&ri);
    return n;
}

int federate_references(struct session *s, struct request *req, const struct route *r, struct job **out,
                        const char **why)
{
    const struct config *cfg = s->srv->cfg;
    struct route_info ri;
    struct route rr;
    struct sqltok *toks = NULL;
    struct buf text = BUF_INIT;
    size_t tb, ntoks = 0, pos = 0;
    unsigned crossing = 0;
    bool strip;
    int rc = 0;

    *out = NULL;
    *why = NULL;
    if (r->kind != STMT_DDL)
        return 0;
    if (creates_view(req->text, req->len)) {
        *why = VIEW_REFUSED;
        return 0;
    }
    route_compute(cfg, s->srv->catset, req->text, req->len, &rr, &ri);
    if ((crossing = references_crossing(cfg, &rr, &ri, &tb)) == 0)
        goto done;
    rc = -1;
    strip = cfg->binds[tb].type == BIND_POSTGRES || cfg->binds[tb].foreign_keys;
    if (strip) {
        toks = malloc(REFS_MAX_TOKENS * sizeof *toks);
        if (toks == NULL)
            goto done;
        ntoks = lex_all(req->text, req->len, toks, REFS_MAX_TOKENS);
    }
    for (size_t i = 0; i < ri.nrefs; i++) {
        const struct route_ref *ref = &ri.refs[i];
        const struct route_table *t = &ri.tables[ref->table];
        size_t b = route_table_bind(cfg, t->schema, t->name), k = 0, from, to;
        if (route_is_system_table(t) || b == tb)
            continue;
        log_warn("c%llu: %s (bind %s) references %s (bind %s): a foreign key across binds is not enforced%s",
                 (unsigned long long)s->id, ri.tables[ri.target].name, cfg->binds[tb].name, t->name,
                 cfg->binds[b].name, strip ? "; the clause is left out of the table's definition" : "");
        if (!strip)
            continue;
        while (k < ntoks && toks[k].pos != ref->pos)
            k++;
        if (k == ntoks ||
            !references_clause(req->text, req->len, toks, ntoks, k, ref->pos + ref->len, &from, &to) ||
            from < pos) {
            rc = 0;
            *why = "cannot take the REFERENCES clause to a table of another bind out of this statement";
            goto done;
        }
        if (buf_append(&text, req->text + pos, from - pos) != 0)
            goto done;
        pos = to;
    }
    if (strip) {
        if (buf_append(&text, req->text + pos, req->len - pos) != 0 || buf_putc(&text, '\0') != 0)
            goto done;
        codec_request_set_text(req, text.data, text.len - 1);
        text = (struct buf)BUF_INIT;
    }
    *out = job_new(JOB_EXEC, s->srv->binds[tb], s, s->id);
    if (*out == NULL)
        goto done;
    (*out)->req = *req;
    memset(req, 0, sizeof *req);
    (*out)->kind = STMT_DDL;
    (*out)->warnings = crossing;
    (*out)->on_done = federate_references_done;
    rc = 1;
done:
    free(toks);
    buf_free(&text);
    route_clear(&rr);
    sqlparse_info_free(&ri);
    return rc;
}
