/*
 * The names of the SQL analysis (sqlparse.c): the distinct names a
 * statement uses (tables, CTE names, named parameters), deduplicated through
 * a hash index, the table references recorded with their roles and spans,
 * and the route_info tables and refs built from them at the end.
 */
#include "daemon/sqlparse_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Distinct names                                                     */
/* ------------------------------------------------------------------ */

void sp_names_init(struct names *nm, uint32_t seed)
{
    nm->buf = nm->inline_buf;
    nm->len = 0;
    nm->cap = sizeof nm->inline_buf;
    nm->ent = nm->inline_ent;
    nm->n = 0;
    nm->ent_cap = sizeof nm->inline_ent / sizeof nm->inline_ent[0];
    nm->slots = NULL;
    nm->nslots = 0;
    nm->seed = seed;
}

void sp_names_free(struct names *nm)
{
    if (nm->buf != nm->inline_buf)
        free(nm->buf);
    if (nm->ent != nm->inline_ent)
        free(nm->ent);
    free(nm->slots);
    sp_names_init(nm, nm->seed);
}

/* Returns ptr (inline storage or heap) grown to hold at least need
 * elements of size elem, of which used are kept: ptr itself when it is
 * big enough, a new block otherwise. Returns NULL, with the error set,
 * when out of memory; ptr is then unchanged. */
static void *grow(struct parser *p, void *ptr, size_t *cap, size_t need, size_t elem, const void *inline_ptr,
                  size_t used)
{
    if (need <= *cap)
        return ptr;
    size_t ncap = *cap * 2;
    if (ncap < need)
        ncap = need;
    void *np = NULL;
    if (ncap <= SIZE_MAX / elem) {
        if (ptr == inline_ptr) {
            np = malloc(ncap * elem);
            if (np != NULL)
                memcpy(np, ptr, used * elem);
        } else {
            np = realloc(ptr, ncap * elem);
        }
    }
    if (np == NULL) {
        sp_fail(p, SQLPARSE_ENOMEM, "out of memory");
        return NULL;
    }
    *cap = ncap;
    return np;
}

static uint32_t name_hash(uint32_t seed, unsigned kind, const char *s, size_t n)
{
    uint32_t h = (2166136261u ^ seed) * 16777619u;
    h = (h ^ kind) * 16777619u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* Returns the index of the entry equal to key ("schema\0name"), or
 * SIZE_MAX. */
static size_t names_find(const struct names *nm, unsigned kind, const char *key, size_t schema_len,
                         size_t name_len, uint32_t hash)
{
#define NAME_MATCHES(e)                                                                                      \
    ((e)->hash == hash && (e)->kind == kind && (e)->schema_len == schema_len && (e)->name_len == name_len && \
     memcmp(nm->buf + (e)->off, key, schema_len + 1 + name_len) == 0)
    if (nm->slots == NULL) {
        for (size_t i = 0; i < nm->n; i++)
            if (NAME_MATCHES(&nm->ent[i]))
                return i;
        return SIZE_MAX;
    }
    size_t mask = nm->nslots - 1;
    for (size_t s = hash & mask; nm->slots[s] != 0; s = (s + 1) & mask) {
        const struct name_entry *e = &nm->ent[nm->slots[s] - 1];
        if (NAME_MATCHES(e))
            return nm->slots[s] - 1;
    }
    return SIZE_MAX;
#undef NAME_MATCHES
}

static void slots_insert(uint32_t *slots, size_t nslots, uint32_t hash, size_t index)
{
    size_t mask = nslots - 1, s = hash & mask;
    while (slots[s] != 0)
        s = (s + 1) & mask;
    slots[s] = (uint32_t)(index + 1);
}

/* Indexes the entry just appended: once there are more than LINEAR_NAMES
 * names, through a hash index kept at most half full (rebuilt, entry
 * included, when it grows). Returns false on allocation failure. */
static bool names_index_last(struct parser *p)
{
    struct names *nm = &p->names;
    if (nm->n <= LINEAR_NAMES)
        return true;
    if (nm->slots != NULL && nm->n * 2 <= nm->nslots) {
        slots_insert(nm->slots, nm->nslots, nm->ent[nm->n - 1].hash, nm->n - 1);
        return true;
    }
    size_t nslots = nm->nslots ? nm->nslots * 2 : 64;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (slots == NULL) {
        sp_fail(p, SQLPARSE_ENOMEM, "out of memory");
        return false;
    }
    for (size_t i = 0; i < nm->n; i++)
        slots_insert(slots, nslots, nm->ent[i].hash, i);
    free(nm->slots);
    nm->slots = slots;
    nm->nslots = nslots;
    return true;
}

/* Copies the text of t to dst: quotes removed and doubled quotes undone,
 * ASCII-lowercased when fold. Returns the length written (<= t->len). */
static size_t copy_name(const char *sql, const struct token *t, char *dst, bool fold)
{
    const unsigned char *s = (const unsigned char *)sql + t->pos;
    size_t n = t->len, o = 0;
    if (t->type == SQLTOK_QUOTED || t->type == SQLTOK_STRING) {
        unsigned char close = s[0] == '[' ? ']' : s[0];
        bool doubled = s[0] != '[';
        for (size_t i = 1; i + 1 < n; i++) {
            if (doubled && s[i] == close)
                i++; /* the lexer guarantees quotes come in pairs */
            dst[o++] = (char)(fold ? sqllex_lower(s[i]) : s[i]);
        }
        return o;
    }
    for (size_t i = 0; i < n; i++)
        dst[o++] = (char)(fold ? sqllex_lower(s[i]) : s[i]);
    return o;
}

/* Adds a name (schema may be NULL) unless it is already there. Table and
 * CTE names are normalized; parameter names are kept as written. Returns 1
 * when added, 0 when already present, -1 on error (p->err set); *index
 * (may be NULL) gets the entry's index. */
int sp_names_add(struct parser *p, enum name_kind kind, const struct token *schema, const struct token *name,
                 size_t *index)
{
    struct names *nm = &p->names;
    size_t need = (schema ? schema->len : 0) + name->len + 2;
    char *buf = grow(p, nm->buf, &nm->cap, nm->len + need, 1, nm->inline_buf, nm->len);
    if (buf == NULL)
        return -1;
    nm->buf = buf;
    bool fold = kind != NAME_PARAM;
    char *dst = nm->buf + nm->len;
    if (name->type == SQLTOK_STRING || (schema != NULL && schema->type == SQLTOK_STRING))
        p->flags |= ROUTE_STRING_NAME;
    size_t slen = schema ? copy_name(p->sql, schema, dst, fold) : 0;
    dst[slen] = '\0';
    size_t nlen = copy_name(p->sql, name, dst + slen + 1, fold);
    dst[slen + 1 + nlen] = '\0';
    uint32_t hash = name_hash(nm->seed, kind, dst, slen + 1 + nlen);
    size_t found = names_find(nm, kind, dst, slen, nlen, hash);
    if (index != NULL)
        *index = found != SIZE_MAX ? found : nm->n;
    if (found != SIZE_MAX)
        return 0;
    if (nm->n >= MAX_NAMES) {
        sp_fail(p, SQLPARSE_ESYNTAX, "too many distinct names (more than %d)", MAX_NAMES);
        return -1;
    }
    struct name_entry *ent =
        grow(p, nm->ent, &nm->ent_cap, nm->n + 1, sizeof *nm->ent, nm->inline_ent, nm->n);
    if (ent == NULL)
        return -1;
    nm->ent = ent;
    nm->ent[nm->n] = (struct name_entry){
        .off = nm->len,
        .schema_len = slen,
        .name_len = nlen,
        .hash = hash,
        .kind = (unsigned char)kind,
    };
    nm->len += slen + nlen + 2;
    nm->n++;
    return names_index_last(p) ? 1 : -1;
}

/* ------------------------------------------------------------------ */
/* Table references                                                   */
/* ------------------------------------------------------------------ */

/* The role of the table being recorded: a DDL head's object, a pending
 * write target, a REFERENCES clause's table, else a read. Pending roles
 * are used up by the record. */
static enum ref_role take_role(struct parser *p)
{
    enum ref_role role = REF_READ;
    if (p->head_writes || p->write_pending)
        role = REF_WRITE;
    else if (p->references_pending)
        role = REF_REFERENCES;
    p->write_pending = false;
    p->references_pending = false;
    return role;
}

/* The bytes of a qualified name: schema "." name when the two are written
 * next to each other (only blanks and the dot between), else only the
 * name (the schema came from elsewhere: PRAGMA s.table_info(t)). */
static void qname_span(const struct parser *p, const struct qname *qn, size_t *pos, size_t *len)
{
    size_t end = qn->name.pos + qn->name.len, dots = 0;
    *pos = qn->name.pos;
    if (qn->qualified && qn->schema.pos + qn->schema.len <= qn->name.pos) {
        for (size_t i = qn->schema.pos + qn->schema.len; i < qn->name.pos; i++) {
            char c = p->sql[i];
            if (c == '.')
                dots++;
            else if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                dots = 2;
        }
        if (dots == 1)
            *pos = qn->schema.pos;
    }
    *len = end - *pos;
}

void sp_record(struct parser *p, const struct qname *qn)
{
    enum ref_role role = take_role(p);
    bool noalias = p->noalias_pending;
    size_t index;
    p->noalias_pending = false;
    if (p->suppress)
        return;
    if (sp_names_add(p, NAME_TABLE, qn->qualified ? &qn->schema : NULL, &qn->name, &index) < 0)
        return;
    struct route_ref *refs =
        grow(p, p->refs, &p->refs_cap, p->nrefs + 1, sizeof *p->refs, p->inline_refs, p->nrefs);
    if (refs == NULL)
        return;
    p->refs = refs;
    struct route_ref *r = &p->refs[p->nrefs++];
    struct token next = sp_peek(p, 0);
    qname_span(p, qn, &r->pos, &r->len);
    r->table = index; /* a name entry until sp_build_result */
    r->role = role;
    r->flags = 0;
    if (noalias || p->head_writes || role == REF_REFERENCES)
        r->flags |= REF_F_NOALIAS;
    else if (sp_tok_is(&next, KW_AS) || sp_is_alias(p, &next))
        r->flags |= REF_F_ALIASED;
}

/* ------------------------------------------------------------------ */
/* The result                                                         */
/* ------------------------------------------------------------------ */

/* Moves the references to tables (not to CTE names) into out, with their
 * table indexes, and finds the write target. table_of[e]: the table index
 * of name entry e, SIZE_MAX for none. Returns false when out of memory. */
static bool build_refs(struct parser *p, const size_t *table_of)
{
    size_t n = 0;
    p->out->target = SIZE_MAX;
    for (size_t i = 0; i < p->nrefs; i++)
        n += table_of[p->refs[i].table] != SIZE_MAX;
    if (n == 0)
        return true;
    p->out->refs = malloc(n * sizeof *p->out->refs);
    if (p->out->refs == NULL)
        return false;
    for (size_t i = 0; i < p->nrefs; i++) {
        struct route_ref r = p->refs[i];
        r.table = table_of[r.table];
        if (r.table == SIZE_MAX)
            continue;
        if (r.role == REF_WRITE && p->out->target == SIZE_MAX)
            p->out->target = r.table;
        p->out->refs[p->out->nrefs++] = r;
    }
    return true;
}

/* Moves the tables (minus CTE names) into out: one block of names, one
 * array; then the references (build_refs). Returns false when out of
 * memory. */
bool sp_build_result(struct parser *p)
{
    struct names *nm = &p->names;
    size_t count = 0, bytes = 0;
    size_t *table_of = nm->n ? malloc(nm->n * sizeof *table_of) : NULL;
    if (nm->n && table_of == NULL)
        return false;
    for (size_t i = 0; i < nm->n; i++)
        table_of[i] = SIZE_MAX;
    for (int pass = 0; pass < 2; pass++) {
        char *dst = p->out->names;
        size_t k = 0;
        for (size_t i = 0; i < nm->n; i++) {
            const struct name_entry *e = &nm->ent[i];
            if (e->kind != NAME_TABLE)
                continue;
            const char *s = nm->buf + e->off;
            if (e->schema_len == 0) {
                uint32_t h = name_hash(nm->seed, NAME_CTE, s, 1 + e->name_len);
                if (names_find(nm, NAME_CTE, s, 0, e->name_len, h) != SIZE_MAX)
                    continue;
            }
            size_t n = e->schema_len + e->name_len + 2;
            if (pass == 0) {
                table_of[i] = count++;
                bytes += n;
                continue;
            }
            memcpy(dst, s, n);
            p->out->tables[k].schema = dst;
            p->out->tables[k].name = dst + e->schema_len + 1;
            dst += n;
            k++;
        }
        if (pass == 0) {
            if (count == 0) {
                free(table_of);
                p->out->target = SIZE_MAX;
                return true;
            }
            p->out->names = malloc(bytes);
            p->out->tables = malloc(count * sizeof *p->out->tables);
            if (p->out->names == NULL || p->out->tables == NULL) {
                free(p->out->names);
                free(p->out->tables);
                p->out->names = NULL;
                p->out->tables = NULL;
                free(table_of);
                return false;
            }
        }
    }
    p->out->ntables = count;
    bool ok = build_refs(p, table_of);
    free(table_of);
    return ok;
}
