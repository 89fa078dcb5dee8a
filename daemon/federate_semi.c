/*
 * Semi-join filters for joins of SQLite tables with PostgreSQL tables
 * (federate_int.h), found in a SELECT's text before the rewrite.
 *
 * SQLite joins a small SQLite table with a PostgreSQL virtual table by a
 * nested loop that probes the virtual table once per outer row: one
 * PostgreSQL round trip per key. Given a filter `p.k IN (SELECT s.k FROM
 * s)` instead, it hands the virtual table the whole key list in one
 * xFilter (sqlite3_vtab_in), which pgvtab sends as one `= ANY($1)`.
 *
 * So for a conjunct `q1.c1 = q2.c2` of an ON or WHERE clause of a SELECT
 * core, where one side is a column of a PostgreSQL table of that core's
 * FROM list and the other a column of an ordinary SQLite table of it, the
 * rewrite appends ` AND p.c IN (SELECT "sqlmux_sj".c FROM "bind"."t" AS
 * "sqlmux_sj")` to that same clause. It cannot change the answer: the
 * clause is a conjunction (no OR at its top level), so for a row (or, in
 * an ON clause, a pair of rows) where the clause is true the conjunct is
 * true, the SQLite side's value is a value of the table t, and the filter
 * compares the same two columns the same way; where the clause is false or
 * NULL it stays so. The filter lands where the equality is, never in a
 * WHERE for an ON (which would drop a LEFT JOIN's unmatched rows).
 * "The same way":
 *   - collation: `x IN (SELECT y ...)` compares as `x = y` does, left
 *     column's collation first; when the SQLite column is the left operand
 *     of the equality the filter names its collation (COLLATE "NOCASE");
 *   - affinity: IN (SELECT) applies the affinity of `x = y`; the filter is
 *     added only when that affinity leaves the PostgreSQL column's values
 *     as they are (an integer column, or a text column compared with a
 *     text or untyped SQLite column), which is what pgvtab assumes when it
 *     pushes a value down;
 *   - NULL keys are in no IN list match and in no equality either;
 *   - the subquery names its own alias, so its column cannot resolve to
 *     an outer query's column.
 * Not applied: clauses with OR at the top level, a FROM list with RIGHT,
 * FULL or NATURAL joins, an ON clause of a LEFT JOIN whose right side is
 * not the PostgreSQL table (there the filter could not help), views and
 * virtual tables on the SQLite side (read twice, a view may differ), and an
 * SQLite table of more than FED_SEMIJOIN_MAX_ROWS rows (counted, LIMITed):
 * its keys would be one huge array parameter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/federate_int.h"
#include "daemon/pgvtab.h"
#include "daemon/server.h"
#include "daemon/sqllex.h"

#pragma weak pgvtab_expose

#define SEMI_MAX_TOKENS 4096 /* longer statements get no filter */
#define SEMI_MAX_NAME   256

enum join_op { JOIN_FIRST, JOIN_INNER, JOIN_LEFT, JOIN_OTHER };

/* One item of a FROM list. */
struct item {
    size_t ref;            /* index in ri->refs; SIZE_MAX: no table reference */
    size_t name;           /* token naming it (alias, or the table's last name) */
    enum join_op join;     /* the operator before it */
    size_t on_from, on_to; /* its ON clause's tokens; equal: none */
    bool done;             /* a filter was added for it, or it has an IN already */
};

struct semi {
    struct fed_exec *x;
    const struct config *cfg;
    const struct route_info *ri;
    const char *sql;
    size_t len;
    struct sqltok *tok;
    int *depth; /* parentheses around token i */
    size_t n;
    struct fed_insert *ins;
    size_t nins;
};

static bool is_word(const struct semi *s, size_t i, const char *word)
{
    const struct sqltok *t = &s->tok[i];
    size_t n = strlen(word);

    if (i >= s->n || t->type != SQLTOK_WORD || t->len != n || (i > 0 && s->tok[i - 1].type == SQLTOK_DOT))
        return false;
    for (size_t k = 0; k < n; k++)
        if (sqllex_lower((unsigned char)s->sql[t->pos + k]) != (unsigned char)word[k])
            return false;
    return true;
}

static bool is_any(const struct semi *s, size_t i, const char *const *words)
{
    for (; *words != NULL; words++)
        if (is_word(s, i, *words))
            return true;
    return false;
}

static const char *const JOIN_WORDS[] = {"natural", "left",  "right", "full", "inner",
                                         "cross",   "outer", "join",  NULL};
static const char *const CLAUSE_WORDS[] = {"from",   "where", "group", "having",
                                           "window", "order", "limit", NULL};
static const char *const NOT_ALIAS[] = {
    "on",   "using", "where", "group", "having", "window",  "order", "limit", "natural",   "left",   "right",
    "full", "inner", "cross", "outer", "join",   "indexed", "not",   "union", "intersect", "except", NULL};

static bool is_ident(const struct semi *s, size_t i)
{
    return i < s->n && (s->tok[i].type == SQLTOK_WORD || s->tok[i].type == SQLTOK_QUOTED);
}

/* Token i's identifier, unquoted, into out[SEMI_MAX_NAME]. false when too
 * long. */
static bool ident_text(const struct semi *s, size_t i, char *out)
{
    const char *p = s->sql + s->tok[i].pos;
    size_t n = s->tok[i].len, o = 0;
    char close = 0;

    if (s->tok[i].type == SQLTOK_QUOTED) {
        close = p[0] == '[' ? ']' : p[0];
        p++;
        n -= 2;
    }
    for (size_t k = 0; k < n; k++) {
        if (close != 0 && close != ']' && p[k] == close)
            k++; /* a doubled quote */
        if (o + 1 >= SEMI_MAX_NAME)
            return false;
        out[o++] = p[k];
    }
    out[o] = '\0';
    return true;
}

static bool same_ident(const struct semi *s, size_t a, size_t b)
{
    char x[SEMI_MAX_NAME], y[SEMI_MAX_NAME];
    return ident_text(s, a, x) && ident_text(s, b, y) && sqlite3_stricmp(x, y) == 0;
}

/* The index of the first token at or after byte pos. */
static size_t tok_at(const struct semi *s, size_t pos)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->tok[mid].pos < pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The token after the parenthesized group opening at i. */
static size_t skip_group(const struct semi *s, size_t i)
{
    int d = s->depth[i];
    for (i++; i < s->n && !(s->tok[i].type == SQLTOK_RPAREN && s->depth[i] == d); i++)
        ;
    return i + 1;
}

/* The items of the FROM list tokens [a, b) at depth d. false when it is
 * not laid out as expected (then nothing is added to the core). */
static bool from_items(const struct semi *s, size_t a, size_t b, int d, struct item *items, size_t max,
                       size_t *nitems)
{
    enum join_op join = JOIN_FIRST;
    size_t i = a, n = 0;

    while (i < b) {
        struct item *it;
        size_t r = SIZE_MAX, k;

        if (n == max)
            return false;
        it = &items[n++];
        memset(it, 0, sizeof *it);
        it->join = join;
        for (k = 0; k < s->ri->nrefs; k++)
            if (s->ri->refs[k].pos == s->tok[i].pos)
                r = k;
        it->ref = r;
        if (r != SIZE_MAX) {
            const struct route_ref *ref = &s->ri->refs[r];
            size_t end = tok_at(s, ref->pos + ref->len);
            if (ref->role != REF_READ || end > b)
                return false;
            it->name = end - 1;
            i = end;
            if (ref->flags & REF_F_ALIASED) {
                if (is_word(s, i, "as"))
                    i++;
                if (!is_ident(s, i) || i >= b)
                    return false;
                it->name = i++;
            }
        } else {
            /* A subquery, a CTE or a table-valued function: its name only
             * matters so that no qualifier is taken for another item. */
            it->name = SIZE_MAX;
            if (s->tok[i].type == SQLTOK_LPAREN) {
                i = skip_group(s, i);
            } else if (is_ident(s, i)) {
                it->name = i++;
                while (i + 1 < b && s->tok[i].type == SQLTOK_DOT && is_ident(s, i + 1)) {
                    it->name = i + 1;
                    i += 2;
                }
                if (i < b && s->tok[i].type == SQLTOK_LPAREN)
                    i = skip_group(s, i);
            } else {
                return false;
            }
            if (is_word(s, i, "as"))
                i++;
            if (i < b && is_ident(s, i) && !is_any(s, i, NOT_ALIAS))
                it->name = i++;
        }
        /* ON ..., USING (...), up to the next comma or join operator. */
        for (; i < b; i++) {
            if (s->depth[i] != d)
                continue;
            if (s->tok[i].type == SQLTOK_COMMA || is_any(s, i, JOIN_WORDS))
                break;
            if (is_word(s, i, "on") && it->on_from == 0)
                it->on_from = it->on_to = i + 1;
            if (it->on_from != 0)
                it->on_to = i + 1;
        }
        if (it->on_from != 0 && it->on_to <= it->on_from)
            return false; /* ON with nothing after it */
        if (i == b)
            break;
        if (s->tok[i].type == SQLTOK_COMMA) {
            join = JOIN_INNER;
            i++;
            continue;
        }
        join = JOIN_INNER;
        for (; i < b && !is_word(s, i, "join"); i++) {
            if (is_word(s, i, "left"))
                join = join == JOIN_INNER ? JOIN_LEFT : JOIN_OTHER;
            else if (is_any(s, i, (const char *const[]){"natural", "right", "full", NULL}))
                join = JOIN_OTHER;
            else if (!is_any(s, i, JOIN_WORDS))
                return false;
        }
        if (i == b)
            return false;
        i++;
    }
    *nitems = n;
    return true;
}

/* The item a qualifier token names: exactly one item of the core. */
static struct item *qualified(const struct semi *s, struct item *items, size_t n, size_t q)
{
    struct item *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (items[i].name != SIZE_MAX && same_ident(s, items[i].name, q)) {
            if (found != NULL)
                return NULL;
            found = &items[i];
        }
    }
    return found;
}

/* SQLite's affinity of a declared type (sqlite3AffinityType's rules):
 * 'i'nteger, 't'ext, 'b'lob (none), 'r'eal or 'n'umeric. */
static char decl_affinity(const char *decl)
{
    char low[128];
    size_t n = 0;

    for (; decl != NULL && decl[n] != '\0' && n + 1 < sizeof low; n++)
        low[n] = (char)sqllex_lower((unsigned char)decl[n]);
    low[n] = '\0';
    if (strstr(low, "int") != NULL)
        return 'i';
    if (strstr(low, "char") != NULL || strstr(low, "clob") != NULL || strstr(low, "text") != NULL)
        return 't';
    if (n == 0 || strstr(low, "blob") != NULL)
        return 'b';
    if (strstr(low, "real") != NULL || strstr(low, "floa") != NULL || strstr(low, "doub") != NULL)
        return 'r';
    return 'n';
}

/* The unquoted name of the virtual table pgvtab_expose named in out
 * ("main"."pg$...") into name[SEMI_MAX_NAME]. */
static bool vtab_name(const char *quoted, char *name)
{
    const char *p = strstr(quoted, ".\"");
    size_t o = 0;

    if (p == NULL)
        return false;
    for (p += 2; *p != '\0'; p++) {
        if (*p == '"' && p[1] != '"')
            break;
        if (*p == '"')
            p++;
        if (o + 1 >= SEMI_MAX_NAME)
            return false;
        name[o++] = *p;
    }
    name[o] = '\0';
    return true;
}

/* The number of rows of "bind"."table", counted up to limit + 1, when it
 * is an ordinary table; -1 when it is not one (or cannot be read). */
static long long table_rows(struct fed_exec *x, const char *bind, const char *table, long long limit)
{
    char *sql = sqlite3_mprintf("SELECT (SELECT sql LIKE 'CREATE VIRTUAL%%' FROM \"%w\".sqlite_schema WHERE "
                                "type = 'table' AND name = %Q COLLATE NOCASE)",
                                bind, table);
    sqlite3_stmt *stmt = NULL;
    long long n = -1;

    x->w.internal = true;
    if (sql != NULL && sqlite3_prepare_v2(x->w.db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_type(stmt, 0) == SQLITE_INTEGER &&
        sqlite3_column_int(stmt, 0) == 0) {
        sqlite3_finalize(stmt);
        stmt = NULL;
        sqlite3_free(sql);
        sql = sqlite3_mprintf("SELECT count(*) FROM (SELECT 1 FROM \"%w\".\"%w\" LIMIT %lld)", bind, table,
                              limit + 1);
        if (sql != NULL && sqlite3_prepare_v2(x->w.db, sql, -1, &stmt, NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW)
            n = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    sqlite3_free(sql);
    x->w.internal = false;
    return n;
}

/* Adds the filter for the conjunct at tokens c..c+6 (q1 . c1 = q2 . c2) of
 * the clause ending at token end - 1, when it joins a PostgreSQL table's
 * column with an SQLite table's. 0, or -1 when out of memory. */
static int try_conjunct(struct semi *s, struct item *items, size_t nitems, const struct item *on, size_t c,
                        size_t end)
{
    struct item *a = qualified(s, items, nitems, c), *b = qualified(s, items, nitems, c + 4);
    const struct route_table *ta, *tb;
    const struct bind_conf *ba, *bb;
    struct item *p;
    size_t pc, tc;
    char col[SEMI_MAX_NAME], vt[SEMI_MAX_NAME], out[512];
    const char *pdecl = NULL, *tdecl = NULL, *tcoll = NULL;
    char *perr = NULL, paff, taff;
    bool tleft;
    int rc;

    if (a == NULL || b == NULL || a == b || a->ref == SIZE_MAX || b->ref == SIZE_MAX)
        return 0;
    ta = &s->ri->tables[s->ri->refs[a->ref].table];
    tb = &s->ri->tables[s->ri->refs[b->ref].table];
    if (route_is_system_table(ta) || route_is_system_table(tb))
        return 0;
    ba = &s->cfg->binds[route_table_bind(s->cfg, ta->schema, ta->name)];
    bb = &s->cfg->binds[route_table_bind(s->cfg, tb->schema, tb->name)];
    if ((ba->type == BIND_POSTGRES) == (bb->type == BIND_POSTGRES))
        return 0;
    tleft = bb->type == BIND_POSTGRES;
    p = tleft ? b : a;
    pc = tleft ? c + 6 : c + 2;
    tc = tleft ? c + 2 : c + 6;
    if (p->done || (on != NULL && on->join == JOIN_LEFT && on != p))
        return 0;
    /* The SQLite side: an ordinary table, small enough, and its column. */
    const struct route_table *tt = tleft ? ta : tb, *pt = tleft ? tb : ta;
    const struct bind_conf *tbc = tleft ? ba : bb, *pbc = tleft ? bb : ba;
    /* Counting first also reads the bind's schema again when another
     * connection changed it (sqlite3_table_column_metadata does not). */
    long long rows = table_rows(s->x, tbc->name, tt->name, FED_SEMIJOIN_MAX_ROWS);
    if (rows < 0 || rows > FED_SEMIJOIN_MAX_ROWS || !ident_text(s, tc, col) ||
        sqlite3_table_column_metadata(s->x->w.db, tbc->name, tt->name, col, &tdecl, &tcoll, NULL, NULL,
                                      NULL) != SQLITE_OK)
        return 0;
    taff = decl_affinity(tdecl);
    /* The PostgreSQL side: its virtual table's column (exposed already by
     * the rewrite: cached). */
    s->x->w.internal = true;
    rc = pgvtab_expose(s->x->vt, (size_t)(pbc - s->cfg->binds), pt->schema, pt->name, out, sizeof out, &perr);
    s->x->w.internal = false;
    free(perr);
    if (rc != 0 || !vtab_name(out, vt) || !ident_text(s, pc, col) ||
        sqlite3_table_column_metadata(s->x->w.db, "main", vt, col, &pdecl, NULL, NULL, NULL, NULL) !=
            SQLITE_OK)
        return 0;
    paff = decl_affinity(pdecl);
    /* The comparison must leave the PostgreSQL column's values as they
     * are: integers under any affinity, text only beside text or none. */
    if (!(paff == 'i' || (paff == 't' && (taff == 't' || taff == 'b'))))
        return 0;

    sqlite3_str *f = sqlite3_str_new(NULL);
    const struct sqltok *q = &s->tok[tleft ? c + 4 : c], *pcol = &s->tok[pc], *tcol = &s->tok[tc];
    sqlite3_str_appendf(f, " AND %.*s.%.*s", (int)q->len, s->sql + q->pos, (int)pcol->len,
                        s->sql + pcol->pos);
    if (tleft)
        sqlite3_str_appendf(f, " COLLATE \"%w\"", tcoll != NULL ? tcoll : "BINARY");
    sqlite3_str_appendf(f, " IN (SELECT \"sqlmux_sj\".%.*s FROM \"%w\".\"%w\" AS \"sqlmux_sj\")",
                        (int)tcol->len, s->sql + tcol->pos, tbc->name, tt->name);
    char *text = sqlite3_str_finish(f);
    struct fed_insert *ins = text != NULL ? realloc(s->ins, (s->nins + 1) * sizeof *ins) : NULL;
    if (ins == NULL) {
        sqlite3_free(text);
        return -1;
    }
    s->ins = ins;
    ins[s->nins].pos = s->tok[end - 1].pos + s->tok[end - 1].len;
    ins[s->nins++].text = text;
    p->done = true;
    return 0;
}

/* The conjuncts of the clause tokens [a, b) at depth d: each of the form
 * q1.c1 = q2.c2 is tried. A clause with OR at its top level has none.
 * With seen_in, only conjuncts `q.c IN ...` are looked at: their table
 * gets no filter (the statement has one already; two arrays for one
 * column would only slow PostgreSQL down). */
static int clause_conjuncts(struct semi *s, struct item *items, size_t nitems, const struct item *on,
                            size_t a, size_t b, int d, bool seen_in)
{
    size_t starts[64], nstarts = 1;
    int cases = 0, betweens = 0;

    starts[0] = a;
    for (size_t j = a; j < b; j++) {
        if (s->depth[j] != d)
            continue;
        if (is_word(s, j, "case"))
            cases++;
        else if (is_word(s, j, "end") && cases > 0)
            cases--;
        if (cases > 0)
            continue;
        if (is_word(s, j, "or"))
            return 0;
        if (is_word(s, j, "between"))
            betweens++;
        if (is_word(s, j, "and")) {
            if (betweens > 0)
                betweens--;
            else if (nstarts == 64)
                return 0;
            else
                starts[nstarts++] = j + 1;
        }
    }
    for (size_t k = 0; k < nstarts; k++) {
        size_t c = starts[k], e = k + 1 < nstarts ? starts[k + 1] - 1 : b;
        if (seen_in) {
            struct item *it;
            if (e - c > 4 && is_ident(s, c) && s->tok[c + 1].type == SQLTOK_DOT && is_ident(s, c + 2) &&
                is_word(s, c + 3, "in") && (it = qualified(s, items, nitems, c)) != NULL)
                it->done = true;
            continue;
        }
        const struct sqltok *op = &s->tok[c + 3 < s->n ? c + 3 : c];
        if (e - c != 7 || !is_ident(s, c) || s->tok[c + 1].type != SQLTOK_DOT || !is_ident(s, c + 2) ||
            op->type != SQLTOK_OP || !is_ident(s, c + 4) || s->tok[c + 5].type != SQLTOK_DOT ||
            !is_ident(s, c + 6))
            continue;
        if (!(op->len == 1 && s->sql[op->pos] == '=') &&
            !(op->len == 2 && memcmp(s->sql + op->pos, "==", 2) == 0))
            continue;
        if (try_conjunct(s, items, nitems, on, c, b) != 0)
            return -1;
    }
    return 0;
}

/* The SELECT core whose SELECT is token i. */
static int select_core(struct semi *s, size_t i)
{
    int d = s->depth[i];
    size_t e, from = SIZE_MAX, where = SIZE_MAX, from_end = SIZE_MAX, where_end = SIZE_MAX, nitems = 0;
    struct item items[16];

    for (e = i + 1; e < s->n; e++) {
        if (s->depth[e] < d ||
            (s->depth[e] == d && (s->tok[e].type == SQLTOK_SEMI ||
                                  is_any(s, e, (const char *const[]){"union", "intersect", "except", NULL}))))
            break;
        if (s->depth[e] != d || !is_any(s, e, CLAUSE_WORDS))
            continue;
        if (from != SIZE_MAX && from_end == SIZE_MAX)
            from_end = e;
        if (where != SIZE_MAX && where_end == SIZE_MAX)
            where_end = e;
        if (is_word(s, e, "from") && from == SIZE_MAX)
            from = e;
        else if (is_word(s, e, "where") && where == SIZE_MAX)
            where = e;
    }
    if (from == SIZE_MAX)
        return 0;
    if (from_end == SIZE_MAX)
        from_end = e;
    if (where != SIZE_MAX && where_end == SIZE_MAX)
        where_end = e;
    if (!from_items(s, from + 1, from_end, d, items, 16, &nitems))
        return 0;
    for (size_t k = 0; k < nitems; k++)
        if (items[k].join == JOIN_OTHER)
            return 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < nitems; k++)
            if (items[k].on_from != 0 && clause_conjuncts(s, items, nitems, &items[k], items[k].on_from,
                                                          items[k].on_to, d, pass == 0) != 0)
                return -1;
        if (where != SIZE_MAX && where + 1 < where_end &&
            clause_conjuncts(s, items, nitems, NULL, where + 1, where_end, d, pass == 0) != 0)
            return -1;
    }
    return 0;
}

static int by_pos(const void *a, const void *b)
{
    const struct fed_insert *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

int fed_semijoins(struct fed_exec *x, const struct config *cfg, const struct route_info *ri, const char *sql,
                  size_t len, struct fed_insert **ins, size_t *nins)
{
    struct semi s = {.x = x, .cfg = cfg, .ri = ri, .sql = sql, .len = len};
    size_t at = 0;
    int depth = 0, rc = 0;

    *ins = NULL;
    *nins = 0;
    if (ri->kind != STMT_SELECT || x->vt == NULL || pgvtab_expose == NULL)
        return 0;
    s.tok = malloc(SEMI_MAX_TOKENS * sizeof *s.tok);
    s.depth = malloc(SEMI_MAX_TOKENS * sizeof *s.depth);
    if (s.tok == NULL || s.depth == NULL) {
        rc = -1;
        goto done;
    }
    for (;;) {
        struct sqltok t = sqllex_next(sql, len, at, 0);
        if (t.type == SQLTOK_EOF)
            break;
        if (t.type == SQLTOK_ERROR || s.n == SEMI_MAX_TOKENS)
            goto done;
        if (t.type == SQLTOK_RPAREN && --depth < 0)
            goto done;
        s.depth[s.n] = depth;
        if (t.type == SQLTOK_LPAREN)
            depth++;
        s.tok[s.n++] = t;
        at = t.pos + t.len;
    }
    for (size_t i = 0; rc == 0 && i < s.n; i++)
        if (is_word(&s, i, "select"))
            rc = select_core(&s, i);
done:
    if (rc != 0) {
        fed_inserts_free(s.ins, s.nins);
    } else {
        if (s.nins > 1)
            qsort(s.ins, s.nins, sizeof *s.ins, by_pos);
        *ins = s.ins;
        *nins = s.nins;
    }
    free(s.tok);
    free(s.depth);
    return rc;
}

void fed_inserts_free(struct fed_insert *ins, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sqlite3_free(ins[i].text);
    free(ins);
}
