/*
 * Catalogs (catalog.h): a sorted array of lowercased names per bind, looked
 * up by binary search without allocating; and the set of every bind's
 * catalog that routing reads.
 */
#include "daemon/catalog.h"

#include <stdlib.h>
#include <string.h>

struct catalog *catalog_new(int64_t version)
{
    struct catalog *c = calloc(1, sizeof *c);

    if (c == NULL)
        return NULL;
    atomic_init(&c->refs, 1);
    c->version = version;
    return c;
}

static char *lower_join(const char *schema, const char *name)
{
    size_t slen = schema != NULL ? strlen(schema) : 0, nlen = strlen(name);
    char *key = malloc(slen + (slen > 0) + nlen + 1), *p;

    if (key == NULL)
        return NULL;
    p = key;
    if (slen > 0) {
        memcpy(p, schema, slen);
        p += slen;
        *p++ = '.';
    }
    memcpy(p, name, nlen + 1);
    for (p = key; *p != '\0'; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    return key;
}

static int catalog_push(struct catalog *c, char *key)
{
    if (key == NULL)
        return -1;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 16;
        char **keys = realloc(c->keys, ncap * sizeof *keys);
        if (keys == NULL) {
            free(key);
            return -1;
        }
        c->keys = keys;
        c->cap = ncap;
    }
    c->keys[c->n++] = key;
    return 0;
}

int catalog_add(struct catalog *c, const char *schema, const char *name, bool bare)
{
    if (schema == NULL || schema[0] == '\0')
        return catalog_push(c, lower_join(NULL, name));
    if (catalog_push(c, lower_join(schema, name)) != 0)
        return -1;
    return bare ? catalog_push(c, lower_join(NULL, name)) : 0;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void catalog_seal(struct catalog *c)
{
    size_t out = 0;

    if (c->n == 0)
        return;
    qsort(c->keys, c->n, sizeof *c->keys, key_cmp);
    for (size_t i = 0; i < c->n; i++) {
        if (out > 0 && strcmp(c->keys[out - 1], c->keys[i]) == 0)
            free(c->keys[i]);
        else
            c->keys[out++] = c->keys[i];
    }
    c->n = out;
}

struct catalog *catalog_hold(struct catalog *c)
{
    if (c != NULL)
        atomic_fetch_add(&c->refs, 1);
    return c;
}

void catalog_drop(struct catalog *c)
{
    if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->keys[i]);
    free(c->keys);
    free(c);
}

/* strcmp of key against "schema.name" (or "name" when schema is empty),
 * without building that string. */
static int key_vs(const char *key, const char *schema, const char *name)
{
    const char *parts[3] = {schema, ".", name};
    size_t k = 0;

    for (int p = schema[0] != '\0' ? 0 : 2; p < 3; p++) {
        for (const char *s = parts[p]; *s != '\0'; s++, k++) {
            if (key[k] != *s)
                return (unsigned char)key[k] - (unsigned char)*s;
        }
    }
    return (unsigned char)key[k];
}

bool catalog_has(const struct catalog *c, const char *schema, const char *name)
{
    size_t lo = 0, hi;

    if (c == NULL)
        return false;
    if (schema == NULL)
        schema = "";
    hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = key_vs(c->keys[mid], schema, name);
        if (d == 0)
            return true;
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

bool catalog_same(const struct catalog *a, const struct catalog *b)
{
    size_t na = a != NULL ? a->n : 0, nb = b != NULL ? b->n : 0;

    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a->keys[i], b->keys[i]) != 0)
            return false;
    return true;
}

struct catset *catset_new(size_t n)
{
    struct catset *cs = calloc(1, sizeof *cs + n * sizeof cs->cats[0]);

    if (cs == NULL)
        return NULL;
    atomic_init(&cs->refs, 1);
    cs->n = n;
    return cs;
}

struct catset *catset_hold(struct catset *cs)
{
    if (cs != NULL)
        atomic_fetch_add(&cs->refs, 1);
    return cs;
}

void catset_drop(struct catset *cs)
{
    if (cs == NULL || atomic_fetch_sub(&cs->refs, 1) != 1)
        return;
    for (size_t i = 0; i < cs->n; i++)
        catalog_drop(cs->cats[i]);
    free(cs);
}
