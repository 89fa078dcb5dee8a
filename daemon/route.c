/*
 * Routing (route.h): the table map's lookup, the decision for a statement
 * (the map, then the catalogs) and the cache of decisions.
 *
 * The table map is looked up without allocating, over the name in two
 * pieces (struct route_subject): the exact rules by the config's hash
 * index (config_rule_find), so a map of any size costs one probe, then
 * the patterns in file order.
 *
 * The cache is direct-mapped: a power-of-two array of slots indexed by a
 * hash of the statement text, each slot holding one decision; a collision
 * replaces the older one. That bounds memory by `route_cache` entries,
 * costs one hash and one memcmp per hit, and needs no LRU bookkeeping.
 * A statement with literal values (normalize_literals) is cached under its
 * normalised text (sqlnorm_route_key), so its variants share the slot.
 */
#include "daemon/route.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/hash.h"
#include "daemon/sqlnorm.h"
#include "proto/buf.h"
#include "proto/codec.h"

/* ---- The table map ---------------------------------------------------- */

/* The name being looked up: "schema.name", or "name" when schema is NULL,
 * kept in two pieces so that lookups never allocate. */
struct route_subject {
    const char *schema;
    size_t schema_len;
    const char *name;
    size_t len; /* total */
};

static char route_subject_at(const struct route_subject *s, size_t i)
{
    if (s->schema == NULL)
        return s->name[i];
    if (i < s->schema_len)
        return s->schema[i];
    if (i == s->schema_len)
        return '.';
    return s->name[i - s->schema_len - 1];
}

/* Glob match where '*' matches any run of characters except '.', so
 * "audit_*" never matches a schema-qualified name. Linear backtracking to
 * the last '*' keeps it O(pattern * name). */
static bool route_glob(const char *pattern, const struct route_subject *s)
{
    size_t p = 0, i = 0;
    size_t star_p = SIZE_MAX, star_i = 0;
    while (i < s->len) {
        char c = route_subject_at(s, i);
        if (pattern[p] == '*') {
            star_p = p++;
            star_i = i;
        } else if (pattern[p] != '\0' && pattern[p] == c) {
            p++;
            i++;
        } else if (star_p != SIZE_MAX && route_subject_at(s, star_i) != '.') {
            p = star_p + 1;
            i = ++star_i;
        } else {
            return false;
        }
    }
    while (pattern[p] == '*')
        p++;
    return pattern[p] == '\0';
}

/* Exact rules first, then patterns in file order. The rule that matched
 * goes to *rule. */
static bool route_lookup(const struct config *cfg, const struct route_subject *s, size_t *bind,
                         enum route_rule *rule)
{
    size_t name_len = s->schema != NULL ? s->len - s->schema_len - 1 : s->len;
    const struct table_rule *r = cfg->nrules > cfg->npatterns /* any exact rule */
                                     ? config_rule_find(cfg, s->schema, s->schema_len, s->name, name_len)
                                     : NULL;
    if (r != NULL && !r->is_pattern) {
        *bind = r->bind;
        *rule = ROUTE_RULE_MAP;
        return true;
    }
    for (size_t i = 0; i < cfg->npatterns; i++) {
        r = &cfg->rules[cfg->pattern_rules[i]];
        if (route_glob(r->pattern, s)) {
            *bind = r->bind;
            *rule = ROUTE_RULE_PATTERN;
            return true;
        }
    }
    return false;
}

/* The table map alone: the qualified name, then the bare one. */
static bool route_mapped(const struct config *cfg, const char *schema, const char *name, size_t *bind,
                         enum route_rule *rule)
{
    size_t len = strlen(name);
    if (schema != NULL && schema[0] != '\0') {
        size_t slen = strlen(schema);
        struct route_subject q = {schema, slen, name, slen + 1 + len};
        if (route_lookup(cfg, &q, bind, rule))
            return true;
    }
    struct route_subject bare = {NULL, 0, name, len};
    return route_lookup(cfg, &bare, bind, rule);
}

size_t route_table_bind(const struct config *cfg, const char *schema, const char *name)
{
    size_t bind = 0;
    enum route_rule rule;
    return route_mapped(cfg, schema, name, &bind, &rule) ? bind : 0;
}

const char *route_rule_name(enum route_rule rule)
{
    switch (rule) {
    case ROUTE_RULE_SYSTEM: return "system";
    case ROUTE_RULE_MAP: return "map";
    case ROUTE_RULE_PATTERN: return "pattern";
    case ROUTE_RULE_CATALOG: return "catalog";
    case ROUTE_RULE_AMBIGUOUS: return "ambiguous";
    case ROUTE_RULE_NONE: return "session";
    }
    return "?";
}

enum route_rule route_table_rule(const struct config *cfg, const struct catset *cs,
                                 const struct route_table *t, size_t *bind)
{
    enum route_rule rule = ROUTE_RULE_NONE;
    size_t holders = 0;

    if (route_is_system_table(t))
        return ROUTE_RULE_SYSTEM;
    if (route_mapped(cfg, t->schema, t->name, bind, &rule))
        return rule;
    for (size_t i = 0; cs != NULL && i < cs->n && i < cfg->nbinds; i++) {
        if (catalog_has(cs->cats[i], t->schema, t->name)) {
            if (holders++ == 0)
                *bind = i;
        }
    }
    if (holders == 0)
        return ROUTE_RULE_NONE;
    return holders == 1 ? ROUTE_RULE_CATALOG : ROUTE_RULE_AMBIGUOUS;
}

/* ---- Decisions and their cache ----------------------------------------- */

struct slot {
    uint64_t hash;
    char *sql; /* NULL: empty slot */
    size_t len;
    bool key; /* sql is a normalised text (sqlnorm_route_key), not one sent */
    /* A key made from a request without parameters of its own: where its
     * literals' ?N are (a template for sqlnorm_match); NULL otherwise. */
    size_t *lits;
    size_t nlits;
    struct route route;
};

/* Keys tried as templates before a statement is lexed (the most recently
 * used first): a client sending one statement shape with new values each
 * time is matched against its template instead of lexed. */
#define ROUTE_TEMPLATES 4

struct routecache {
    const struct catset *cs; /* the catalogs decisions are made with */
    struct slot *slots;
    size_t mask;          /* nslots - 1 */
    struct route scratch; /* the answer when caching is off or fails */
    struct sqlnorm norm;  /* the key of the statement being routed */
    /* norm was made of this text by the last routecache_get (for
     * routecache_norm): its address and length, NULL otherwise. */
    const char *norm_of;
    size_t norm_len;
    size_t templates[ROUTE_TEMPLATES]; /* slot index + 1; 0: none */
};

struct routecache *routecache_new(size_t entries)
{
    struct routecache *rc = calloc(1, sizeof *rc);
    size_t n = 1;

    if (rc == NULL)
        return NULL;
    if (entries > 0) {
        while (n < entries)
            n <<= 1;
        rc->slots = calloc(n, sizeof *rc->slots);
        if (rc->slots == NULL) {
            free(rc);
            return NULL;
        }
        rc->mask = n - 1;
    }
    return rc;
}

void route_clear(struct route *r)
{
    free(r->err_msg);
    free(r->binds);
    memset(r, 0, sizeof *r);
}

static void slot_clear(struct slot *sl)
{
    free(sl->sql);
    sl->sql = NULL;
    free(sl->lits);
    sl->lits = NULL;
    sl->nlits = 0;
    route_clear(&sl->route);
}

void routecache_clear(struct routecache *rc)
{
    if (rc->slots != NULL)
        for (size_t i = 0; i <= rc->mask; i++)
            slot_clear(&rc->slots[i]);
    route_clear(&rc->scratch);
}

void routecache_set_catalogs(struct routecache *rc, const struct catset *cs)
{
    routecache_clear(rc);
    rc->cs = cs;
}

struct request *routecache_norm(const struct routecache *rc, const struct request *req)
{
    if (rc->norm_of != req->text || rc->norm_len != req->len || req->nparams != 0)
        return NULL;
    return sqlnorm_copy(&rc->norm);
}

void routecache_free(struct routecache *rc)
{
    if (rc == NULL)
        return;
    routecache_clear(rc);
    sqlnorm_free(&rc->norm);
    free(rc->slots);
    free(rc);
}

static void route_fail(struct route *out, const char *code, const char *msg)
{
    out->err_code = code;
    out->err_msg = strdup(msg);
    if (out->err_msg == NULL)
        out->err_code = "NOMEM";
}

/* The CROSSBIND message: every table with its bind, in statement order;
 * for a rename, the two names. */
static void route_crossbind(const struct config *cfg, const struct route_info *ri, const size_t *binds,
                            struct route *out)
{
    struct buf msg = BUF_INIT;
    int rc;

    if ((ri->flags & ROUTE_RENAME) && ri->ntables == 2)
        rc = buf_printf(&msg, "cannot rename %s (bind %s) to %s: the table map routes %s to bind %s",
                        ri->tables[0].name, cfg->binds[binds[0]].name, ri->tables[1].name, ri->tables[1].name,
                        cfg->binds[binds[1]].name);
    else
        rc = buf_puts(&msg, "statement references tables of more than one bind:");
    for (size_t i = 0; rc == 0 && !(ri->flags & ROUTE_RENAME) && i < ri->ntables; i++) {
        const struct route_table *t = &ri->tables[i];
        rc = buf_printf(&msg, "%s %s%s%s (%s)", i ? "," : "", t->schema, t->schema[0] ? "." : "", t->name,
                        cfg->binds[binds[i]].name);
    }
    if (rc == 0) {
        out->err_code = "CROSSBIND";
        out->err_msg = msg.data;
    } else {
        buf_free(&msg);
        out->err_code = "NOMEM";
    }
}

bool route_is_system_table(const struct route_table *t)
{
    return strncmp(t->name, "sqlite_", 7) == 0 || strcmp(t->name, "sqlmux_migrations") == 0 ||
           strcmp(t->name, "alembic_version") == 0 || strcmp(t->schema, "pg_catalog") == 0 ||
           strcmp(t->schema, "information_schema") == 0 || strcmp(t->name, "sqlmux_xact") == 0;
}

enum route_rule route_explain(const struct config *cfg, const struct catset *cs, const struct route_table *t,
                              size_t in, size_t *to, char *warn, size_t n)
{
    enum route_rule rule = route_table_rule(cfg, cs, t, to);
    size_t used = 0;

    warn[0] = '\0';
    if (rule == ROUTE_RULE_MAP || rule == ROUTE_RULE_PATTERN) {
        if (*to != in && *to < cfg->nbinds)
            snprintf(warn, n, "[tables] routes it to bind %s: this one is not used", cfg->binds[*to].name);
        return rule;
    }
    *to = in;
    if (rule != ROUTE_RULE_AMBIGUOUS)
        return rule;
    used = (size_t)snprintf(warn, n, "also in bind");
    for (size_t i = 0; cs != NULL && i < cs->n && i < cfg->nbinds && used < n; i++)
        if (i != in && catalog_has(cs->cats[i], t->schema, t->name))
            used += (size_t)snprintf(warn + used, n - used, " %s", cfg->binds[i].name);
    if (used < n)
        snprintf(warn + used, n - used, ": statements naming it get -ERR AMBIGUOUS");
    return rule;
}

int route_put_table_row(struct buf *out, const struct config *cfg, const struct catset *cs, size_t in,
                        const char *shown, size_t shown_len, const char *type, const char *schema,
                        const char *name)
{
    struct route_table t = {schema, name};
    struct codec_row r;
    char warn[512];
    size_t to = in;
    enum route_rule rule = route_explain(cfg, cs, &t, in, &to, warn, sizeof warn);

    codec_row_begin(&r, out);
    codec_field_text(&r, shown, shown_len);
    codec_field_str(&r, type);
    codec_field_str(&r, in < cfg->nbinds ? cfg->binds[in].name : "?");
    if (rule == ROUTE_RULE_AMBIGUOUS)
        codec_field_null(&r);
    else
        codec_field_str(&r, to < cfg->nbinds ? cfg->binds[to].name : "?");
    codec_field_str(&r, route_rule_name(rule));
    if (warn[0] != '\0')
        codec_field_str(&r, warn);
    else
        codec_field_null(&r);
    return codec_row_end(&r);
}

/* The AMBIGUOUS message for table t: the binds whose catalogs hold it. */
static void route_ambiguous(const struct config *cfg, const struct catset *cs, const struct route_table *t,
                            struct route *out)
{
    struct buf msg = BUF_INIT;
    int rc = buf_printf(&msg, "table %s%s%s exists in binds", t->schema, t->schema[0] ? "." : "", t->name);
    const char *sep = " ";

    for (size_t i = 0; rc == 0 && i < cs->n && i < cfg->nbinds; i++) {
        if (catalog_has(cs->cats[i], t->schema, t->name)) {
            rc = buf_printf(&msg, "%s%s", sep, cfg->binds[i].name);
            sep = ", ";
        }
    }
    if (rc == 0)
        rc = buf_puts(&msg, " and no [tables] entry says which: pin it there, or drop all but one");
    if (rc == 0) {
        out->err_code = "AMBIGUOUS";
        out->err_msg = msg.data;
    } else {
        buf_free(&msg);
        out->err_code = "NOMEM";
    }
}

/* Statements refused from their text alone: they would reach the daemon's
 * files or change a shared connection. */
static bool route_denied(const struct route_info *ri, struct route *out)
{
    const char *msg = NULL;

    if (ri->kind == STMT_ATTACH || ri->kind == STMT_DETACH)
        msg = "ATTACH and DETACH are not allowed: each bind is one database";
    else if (ri->flags & ROUTE_VACUUM_INTO)
        msg = "VACUUM INTO is not allowed: clients cannot write files";
    else if (ri->flags & ROUTE_TEMP)
        msg = "temporary objects are not allowed: connections are shared between clients";
    if (msg == NULL)
        return false;
    route_fail(out, "DENIED", msg);
    return true;
}

/* Adds bind index b to out->binds (room for it is there) unless it is
 * there already. */
static void route_add_bind(struct route *out, size_t b)
{
    for (size_t i = 0; i < out->nbinds; i++)
        if (out->binds[i].index == b)
            return;
    out->binds[out->nbinds].index = b;
    out->binds[out->nbinds].writes = out->kind != STMT_SELECT;
    out->nbinds++;
}

void route_compute(const struct config *cfg, const struct catset *cs, const char *sql, size_t len,
                   struct route *out, struct route_info *ri)
{
    size_t *binds;
    int first = ROUTE_NO_TABLE;
    bool mixed = false;
    int rc;

    memset(out, 0, sizeof *out);
    out->bind = ROUTE_NO_TABLE;
    out->rule = ROUTE_RULE_NONE;
    rc = sqlparse_analyze(sql, len, ri);
    out->kind = ri->kind;
    out->flags = ri->flags;
    if (rc == SQLPARSE_EMULTI) {
        route_fail(out, "MULTI", "one statement per request: split the statements, or send them one by one");
        return;
    }
    if (rc == SQLPARSE_ENOMEM) {
        out->err_code = "NOMEM";
        return;
    }
    if (rc != SQLPARSE_OK) {
        route_fail(out, "SYNTAX", ri->error);
        return;
    }
    if (route_denied(ri, out))
        return;
    if (ri->ntables == 0)
        return;
    binds = malloc(ri->ntables * sizeof *binds);
    if (binds == NULL) {
        out->err_code = "NOMEM";
        return;
    }
    out->binds = malloc(ri->ntables * sizeof *out->binds);
    if (out->binds == NULL) {
        free(binds);
        out->err_code = "NOMEM";
        return;
    }
    /* System tables exist in every bind, and a name no bind holds is
     * created or reported missing where the statement runs: both follow
     * the others. */
    out->rule = ROUTE_RULE_NONE;
    for (size_t i = 0; i < ri->ntables; i++) {
        enum route_rule rule = route_table_rule(cfg, cs, &ri->tables[i], &binds[i]);
        if (rule == ROUTE_RULE_AMBIGUOUS) {
            route_ambiguous(cfg, cs, &ri->tables[i], out);
            free(binds);
            return;
        }
        if (rule == ROUTE_RULE_SYSTEM || rule == ROUTE_RULE_NONE) {
            binds[i] = SIZE_MAX;
            continue;
        }
        route_add_bind(out, binds[i]);
        if (first == ROUTE_NO_TABLE) {
            first = (int)binds[i];
            out->rule = rule;
        } else if (binds[i] != (size_t)first) {
            mixed = true;
        }
    }
    /* A statement with a write target writes only the target's bind. */
    if (ri->target != SIZE_MAX && !route_is_system_table(&ri->tables[ri->target]))
        for (size_t i = 0; i < out->nbinds; i++)
            out->binds[i].writes = out->binds[i].index == binds[ri->target];
    if (mixed) {
        for (size_t i = 0; i < ri->ntables; i++)
            if (binds[i] == SIZE_MAX)
                binds[i] = (size_t)first;
        route_crossbind(cfg, ri, binds, out);
    } else {
        out->bind = first;
    }
    free(binds);
}

/* Slot sl (a key with its template) was just used: first to try. */
static void template_used(struct routecache *rc, const struct slot *sl)
{
    size_t idx = (size_t)(sl - rc->slots) + 1, k = 0;

    while (k < ROUTE_TEMPLATES - 1 && rc->templates[k] != idx)
        k++;
    memmove(rc->templates + 1, rc->templates, k * sizeof rc->templates[0]);
    rc->templates[0] = idx;
}

/* The key whose template sql[0..len) fills in, with rc->norm made of sql;
 * NULL when none does. */
static struct slot *template_match(struct routecache *rc, const char *sql, size_t len)
{
    for (size_t k = 0; k < ROUTE_TEMPLATES && rc->templates[k] != 0; k++) {
        struct slot *ks = &rc->slots[rc->templates[k] - 1];
        if (ks->sql != NULL && ks->key && ks->lits != NULL &&
            sqlnorm_match(&rc->norm, ks->sql, ks->len, ks->lits, ks->nlits, sql, len))
            return ks;
    }
    return NULL;
}

/* routecache_get, h being hash_text(sql, len). */
static const struct route *routecache_lookup(struct routecache *rc, const struct config *cfg, const char *sql,
                                             size_t len, uint64_t h)
{
    struct route_info ri;
    struct slot *sl, *target;
    const char *key = sql;
    size_t key_len = len;
    bool keyed = false;
    unsigned flags;

    rc->norm_of = NULL;
    if (rc->slots == NULL) {
        route_clear(&rc->scratch);
        route_compute(cfg, rc->cs, sql, len, &rc->scratch, &ri);
        sqlparse_info_free(&ri);
        return &rc->scratch;
    }
    sl = &rc->slots[h & rc->mask];
    if (sl->sql != NULL && !sl->key && sl->hash == h && sl->len == len && memcmp(sl->sql, sql, len) == 0)
        return &sl->route;
    /* Statements that differ only in literal values route alike: their
     * decision is cached under their normalised text. */
    target = sl;
    if (cfg->normalize_literals && (target = template_match(rc, sql, len)) != NULL) {
        rc->norm_of = sql;
        rc->norm_len = len;
        template_used(rc, target);
        return &target->route;
    }
    target = sl;
    if (cfg->normalize_literals && sqlnorm_route_key(&rc->norm, sql, len)) {
        uint64_t kh = hash_text(rc->norm.req.text, rc->norm.req.len);
        rc->norm_of = sql;
        rc->norm_len = len;
        struct slot *ks = &rc->slots[kh & rc->mask];
        if (ks->sql != NULL && ks->key && ks->hash == kh && ks->len == rc->norm.req.len &&
            memcmp(ks->sql, rc->norm.req.text, ks->len) == 0) {
            if (ks->lits != NULL)
                template_used(rc, ks);
            return &ks->route;
        }
        target = ks;
        key = rc->norm.req.text;
        key_len = rc->norm.req.len;
        h = kh;
        keyed = true;
    }
    slot_clear(target);
    route_compute(cfg, rc->cs, sql, len, &target->route, &ri);
    flags = ri.flags;
    sqlparse_info_free(&ri);
    if (target->route.err_code != NULL && strcmp(target->route.err_code, "NOMEM") == 0)
        return &target->route; /* not cached: sql stays NULL */
    /* An error may quote the text; a name written as a string routes by
     * its value: cached by the text as sent. */
    if (keyed && (target->route.err_code != NULL || (flags & ROUTE_STRING_NAME))) {
        if (target != sl) {
            slot_clear(sl);
            sl->route = target->route;
            memset(&target->route, 0, sizeof target->route);
            target = sl;
        }
        key = sql;
        key_len = len;
        h = hash_text(sql, len);
        keyed = false;
        rc->norm_of = NULL;
    }
    target->sql = malloc(key_len + 1);
    if (target->sql != NULL) {
        memcpy(target->sql, key, key_len);
        target->sql[key_len] = '\0';
        target->len = key_len;
        target->hash = h;
        target->key = keyed;
        if (keyed && rc->norm.max_param == 0 && rc->norm.nlits > 0 &&
            (target->lits = malloc(rc->norm.nlits * sizeof *target->lits)) != NULL) {
            memcpy(target->lits, rc->norm.lits, rc->norm.nlits * sizeof *target->lits);
            target->nlits = rc->norm.nlits;
            template_used(rc, target);
        }
    }
    return &target->route;
}

const struct route *routecache_get(struct routecache *rc, const struct config *cfg, const char *sql,
                                   size_t len)
{
    return routecache_lookup(rc, cfg, sql, len, hash_text(sql, len));
}

const struct route *routecache_get_request(struct routecache *rc, const struct config *cfg,
                                           struct request *req)
{
    req->hash = hash_text(req->text, req->len);
    return routecache_lookup(rc, cfg, req->text, req->len, req->hash);
}
