/*
 * sqlmux_pg's plans (see daemon/pgvtab.c, "Pushdown"): xBestIndex's
 * decisions, their record in idxStr and the SQL text built from them.
 */
#include <stdio.h>
#include <string.h>

#include "daemon/pgvtab_int.h"

/* ---- Plans: idxStr's header and the SQL -------------------------------- */

/* The colUsed bit of column i (bit 63: every column from 63 on). */
uint64_t pgv_col_bit(int i)
{
    return (uint64_t)1 << (i < 63 ? i : 63);
}

static const char *op_sql(enum term_op op)
{
    static const char *s[] = {"=", "<>", "<", "<=", ">", ">="};
    return s[op];
}

/* Appends the query of plan p on table t. With params NULL: the template
 * ($n untyped), for .plan; else the casts of params and the fixes. */
void pgv_plan_sql(sqlite3_str *s, const struct pgtable *t, const struct plan *p, const struct params *pa,
                  const enum term_fix *fix, const int *argno)
{
    int fields = 0;
    sqlite3_str_appendall(s, "SELECT ");
    for (int i = 0; i < t->ncols; i++) {
        if (p->used & pgv_col_bit(i)) {
            sqlite3_str_appendf(s, "%s%s", fields ? ", " : "", t->cols[i].qname);
            fields++;
        }
    }
    if (t->writable && !(t->keycol >= 0 && (p->used & pgv_col_bit(t->keycol))))
        sqlite3_str_appendf(s, "%s%s", fields++ ? ", " : "",
                            t->keycol >= 0 ? t->cols[t->keycol].qname : "ctid");
    if (!fields)
        sqlite3_str_appendall(s, "1");
    sqlite3_str_appendf(s, " FROM %s", t->qualified);
    int n = 0, k = 0;
    for (int i = 0; i < p->nterms; i++) {
        const struct term *tm = &p->terms[i];
        const struct pgcol *c = &t->cols[tm->col];
        if (fix && fix[i] == FIX_SKIP)
            continue;
        sqlite3_str_appendall(s, n++ ? " AND " : " WHERE ");
        bool numlike = fix && fix[i] == FIX_NUMLIKE;
        if (numlike)
            sqlite3_str_appendall(s, "(");
        bool bytes = fix && fix[i] == FIX_BYTES;
        if (bytes)
            sqlite3_str_appendall(s, "convert_to(");
        pgv_put_col_expr(s, c);
        if (bytes)
            sqlite3_str_appendall(s, ", 'UTF8')");
        if (tm->op == OP_ISNULL) {
            sqlite3_str_appendall(s, " IS NULL");
            continue;
        }
        if (tm->op == OP_NOTNULL || (fix && fix[i] == FIX_TRUE)) {
            sqlite3_str_appendall(s, " IS NOT NULL");
            continue;
        }
        if (pa)
            k = argno[i] + 1;
        else
            k++;
        if (tm->in)
            sqlite3_str_appendf(s, " = ANY($%d", k);
        else
            sqlite3_str_appendf(s, " %s $%d", op_sql(tm->op), k);
        if (pa)
            sqlite3_str_appendf(s, "::%s", pa->cast[argno[i]]);
        if (tm->in)
            sqlite3_str_appendall(s, ")");
        else if (pgv_kind_class(c->kind) == CLASS_TEXT && tm->op != OP_EQ && tm->op != OP_NE && !bytes)
            sqlite3_str_appendall(s, " COLLATE \"C\"");
        if (numlike) {
            /* or any text SQLite's numeric affinity makes a number of */
            sqlite3_str_appendall(s, " OR ");
            pgv_put_col_expr(s, c);
            sqlite3_str_appendall(s, " COLLATE \"C\" ~ '^[[:space:]]*[-+]?[.]?[0-9]')");
        }
    }
    for (int i = 0; i < p->norder; i++) {
        const struct pgcol *c = &t->cols[p->order_col[i]];
        sqlite3_str_appendf(s, "%s%s%s%s", i ? ", " : " ORDER BY ", c->qname,
                            c->kind == KIND_TEXT ? " COLLATE \"C\"" : "",
                            p->order_desc[i] ? " DESC NULLS LAST" : " NULLS FIRST");
    }
    if (p->limit_arg >= 0) {
        if (pa)
            k = pa->n - (p->offset_arg >= 0 ? 1 : 0);
        else
            k++;
        sqlite3_str_appendf(s, " LIMIT $%d%s", k, pa ? "::int8" : "");
    }
    if (p->offset_arg >= 0) {
        if (pa)
            k = pa->n;
        else
            k++;
        sqlite3_str_appendf(s, " OFFSET $%d%s", k, pa ? "::int8" : "");
    }
}

/* idxStr: "pgv u=U m=HEX l=L o=O t=COL:OP:IN:LOOSE ... s=COL:DESC ...\nSQL". */
static char *plan_encode(const struct pgtable *t, const struct plan *p)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "pgv u=%d m=%llx l=%d o=%d", p->unique, (unsigned long long)p->used, p->limit_arg,
                        p->offset_arg);
    for (int i = 0; i < p->nterms; i++)
        sqlite3_str_appendf(s, " t=%d:%d:%d:%d", p->terms[i].col, (int)p->terms[i].op, p->terms[i].in,
                            p->terms[i].loose);
    for (int i = 0; i < p->norder; i++)
        sqlite3_str_appendf(s, " s=%d:%d", p->order_col[i], p->order_desc[i]);
    sqlite3_str_appendf(s, "\n%s: ", t->label);
    pgv_plan_sql(s, t, p, NULL, NULL, NULL);
    return sqlite3_str_finish(s);
}

int pgv_plan_decode(const char *s, const struct pgtable *t, struct plan *p)
{
    memset(p, 0, sizeof *p);
    p->limit_arg = p->offset_arg = -1;
    if (!s || strncmp(s, "pgv ", 4) != 0)
        return -1;
    s += 4;
    while (*s && *s != '\n') {
        int a = 0, b = 0, c = 0, d = 0, used = 0;
        unsigned long long m;
        if (sscanf(s, "u=%d%n", &a, &used) == 1)
            p->unique = a;
        else if (sscanf(s, "m=%llx%n", &m, &used) == 1)
            p->used = m;
        else if (sscanf(s, "l=%d%n", &a, &used) == 1)
            p->limit_arg = a;
        else if (sscanf(s, "o=%d%n", &a, &used) == 1)
            p->offset_arg = a;
        else if (sscanf(s, "t=%d:%d:%d:%d%n", &a, &b, &c, &d, &used) == 4 && p->nterms < MAX_TERMS &&
                 a >= 0 && a < t->ncols && b >= 0 && b <= OP_NOTNULL) {
            p->terms[p->nterms++] = (struct term){a, (enum term_op)b, c != 0, d != 0};
        } else if (sscanf(s, "s=%d:%d%n", &a, &b, &used) == 2 && p->norder < 16 && a >= 0 && a < t->ncols) {
            p->order_col[p->norder] = a;
            p->order_desc[p->norder++] = b != 0;
        } else
            return -1;
        s += used;
        while (*s == ' ')
            s++;
    }
    return 0;
}

/* ---- xBestIndex ---------------------------------------------------------- */

int pgv_best_index(sqlite3_vtab *tab, sqlite3_index_info *info)
{
    struct pgvt *vt = (struct pgvt *)tab;
    const struct pgtable *t = vt->t;
    if (!t)
        return SQLITE_ERROR;
    struct plan p;
    memset(&p, 0, sizeof p);
    p.limit_arg = p.offset_arg = -1;
    p.used = (uint64_t)info->colUsed;
    int argc = 0;
    bool all_omitted = true;
    double sel = 1.0;
    bool pk_eq[64] = {false};
    int limit_i = -1, offset_i = -1;
    /* columns with a plain = (a join's probe): an IN list on them as well
     * would travel with every probe; SQLite checks it instead */
    uint64_t eq_cols = 0;
    bool in_pk = false;
    bool any_loose = false, pk_loose = false;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *ic = &info->aConstraint[i];
        if (ic->usable && ic->op == SQLITE_INDEX_CONSTRAINT_EQ && ic->iColumn >= 0 && ic->iColumn < 64 &&
            !sqlite3_vtab_in(info, i, -1))
            eq_cols |= (uint64_t)1 << ic->iColumn;
    }
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *ic = &info->aConstraint[i];
        if (ic->op == SQLITE_INDEX_CONSTRAINT_LIMIT || ic->op == SQLITE_INDEX_CONSTRAINT_OFFSET) {
            if (ic->usable)
                *(ic->op == SQLITE_INDEX_CONSTRAINT_LIMIT ? &limit_i : &offset_i) = i;
            continue;
        }
        if (!ic->usable) {
            all_omitted = false;
            continue;
        }
        if (ic->iColumn < 0 || ic->iColumn >= t->ncols || p.nterms >= MAX_TERMS) {
            all_omitted = false;
            continue;
        }
        const struct pgcol *c = &t->cols[ic->iColumn];
        enum term_op op;
        switch (ic->op) {
        case SQLITE_INDEX_CONSTRAINT_EQ: op = OP_EQ; break;
        case SQLITE_INDEX_CONSTRAINT_NE: op = OP_NE; break;
        case SQLITE_INDEX_CONSTRAINT_LT: op = OP_LT; break;
        case SQLITE_INDEX_CONSTRAINT_LE: op = OP_LE; break;
        case SQLITE_INDEX_CONSTRAINT_GT: op = OP_GT; break;
        case SQLITE_INDEX_CONSTRAINT_GE: op = OP_GE; break;
        case SQLITE_INDEX_CONSTRAINT_ISNULL: op = OP_ISNULL; break;
        case SQLITE_INDEX_CONSTRAINT_ISNOTNULL: op = OP_NOTNULL; break;
        default: all_omitted = false; continue;
        }
        /* an outer join's ON clause may offer these for the preserved
         * side's table (pgvtab_set_outer) */
        if (c->kind == KIND_FLT4 || (op == OP_ISNULL && !pgv_kind_exact(c->kind)) ||
            (t->outer && (op == OP_NE || op == OP_NOTNULL))) {
            all_omitted = false;
            continue;
        }
        /* a text comparison under NOCASE or RTRIM is SQLite's alone */
        const char *coll = sqlite3_vtab_collation(info, i);
        if (pgv_kind_class(c->kind) == CLASS_TEXT && op != OP_ISNULL && op != OP_NOTNULL && coll &&
            sqlite3_stricmp(coll, "BINARY") != 0) {
            all_omitted = false;
            continue;
        }
        bool exact = pgv_kind_exact(c->kind);
        if (op == OP_EQ && ic->iColumn < 64 && (eq_cols >> ic->iColumn & 1) && sqlite3_vtab_in(info, i, -1)) {
            all_omitted = false;
            continue;
        }
        /* A text column against a number: SQLite compares as text when
         * the number has no affinity (a literal, a bound parameter), as
         * numbers ('05' = 5) when it has a numeric one (an INTEGER column,
         * a CAST); xFilter sees the same value either way. Only a constant
         * text RHS is known to compare as text: otherwise SQLite checks
         * the term again (loose) and xFilter sends a superset for a
         * number. */
        bool loose = false;
        if (pgv_kind_class(c->kind) == CLASS_TEXT && c->aff != AFF_NUMERIC && op != OP_ISNULL &&
            op != OP_NOTNULL) {
            sqlite3_value *rhs = NULL;
            int type = sqlite3_vtab_rhs_value(info, i, &rhs) == SQLITE_OK ? sqlite3_value_type(rhs) : 0;
            loose = type != SQLITE_TEXT && type != SQLITE_BLOB && type != SQLITE_NULL;
        }
        struct term *tm = &p.terms[p.nterms++];
        tm->col = ic->iColumn;
        tm->op = op;
        tm->in = op == OP_EQ && exact && sqlite3_vtab_in(info, i, -1) && sqlite3_vtab_in(info, i, 1);
        tm->loose = loose;
        any_loose = any_loose || loose;
        info->aConstraintUsage[i].argvIndex = ++argc;
        info->aConstraintUsage[i].omit = exact && !loose;
        if (!exact)
            all_omitted = false;
        switch (op) {
        case OP_EQ:
            sel *= tm->in ? 0.01 : 0.001;
            for (int k = 0; k < t->npk && k < 64; k++) {
                if (t->pk[k] == tm->col && !tm->in) {
                    pk_eq[k] = true;
                    pk_loose = pk_loose || loose;
                }
            }
            /* a key's IN list: as many rows as the list, which SQLite
             * guesses at 25 too; one query for all of them beats a probe
             * per key (a semi-join sends its keys in one array) */
            if (tm->in && t->npk == 1 && t->pk[0] == tm->col)
                in_pk = true;
            break;
        case OP_ISNULL: sel *= 0.01; break;
        case OP_NE:
        case OP_NOTNULL: sel *= 0.9; break;
        default: sel *= 0.3;
        }
    }
    p.unique = t->npk > 0;
    for (int k = 0; k < t->npk && k < 64; k++)
        p.unique = p.unique && pk_eq[k];

    /* ORDER BY, when PostgreSQL's order is SQLite's */
    bool order_ok = info->nOrderBy > 0 && info->nOrderBy <= 16;
    for (int i = 0; order_ok && i < info->nOrderBy; i++) {
        int col = info->aOrderBy[i].iColumn;
        order_ok = col >= 0 && col < t->ncols && pgv_kind_orderable(t->cols[col].kind);
    }
    if (order_ok && !p.unique) {
        for (int i = 0; i < info->nOrderBy; i++) {
            p.order_col[i] = info->aOrderBy[i].iColumn;
            p.order_desc[i] = info->aOrderBy[i].desc;
        }
        p.norder = info->nOrderBy;
        info->orderByConsumed = 1;
    }
    /* LIMIT/OFFSET only when SQLite checks nothing after us. A loose term
     * is exact for a text value; for a number xFilter sends its superset
     * without the LIMIT (SQLite applies LIMIT itself, not an omitted
     * OFFSET: none then). */
    if (all_omitted && (info->nOrderBy == 0 || info->orderByConsumed)) {
        if (limit_i >= 0) {
            info->aConstraintUsage[limit_i].argvIndex = ++argc;
            info->aConstraintUsage[limit_i].omit = 1;
            p.limit_arg = argc - 1;
        }
        if (offset_i >= 0 && limit_i >= 0 && !any_loose) {
            info->aConstraintUsage[offset_i].argvIndex = ++argc;
            info->aConstraintUsage[offset_i].omit = 1;
            p.offset_arg = argc - 1;
        }
    }
    double rows = p.unique ? 1.0 : t->rows * sel;
    if (in_pk && rows > 25)
        rows = 25;
    if (rows < 1)
        rows = 1;
    if (p.limit_arg >= 0 && rows > 100)
        rows = 100;
    info->estimatedRows = (sqlite3_int64)rows;
    info->estimatedCost = PROBE_COST + rows + (p.norder ? 0 : (info->nOrderBy ? rows * 0.1 : 0));
    /* numbers may equal several text keys ('5', '05') */
    if (p.unique && !pk_loose)
        info->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
    info->idxStr = plan_encode(t, &p);
    if (!info->idxStr)
        return SQLITE_NOMEM;
    info->needToFreeIdxStr = 1;
    return SQLITE_OK;
}
