/*
 * Password hashing and checking with libcrypt (crypt_r, crypt_gensalt_rn).
 * Nothing here keeps state; the crypt_data scratch area (32 KiB) is
 * allocated per call, so any thread may call in at any time.
 */
#include "daemon/auth.h"

#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Hashed against when the user does not exist and no user has a hash to
 * borrow the cost from (cannot happen while auth is on, kept for safety).
 * A yescrypt hash of a random password nobody knows. */
static const char auth_dummy_hash[] =
    "$y$j9T$Hxe7uC1LMyeHNQe3LqTbp.$9b7EZm6ORO2bZgHsoHfe3mwyS2lrL8UwIdvQeA2OoW1";

int auth_hash(const char *password, char *out, size_t outlen)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd;
    const char *h;
    int rc = -1;

    /* NULL prefix: the system's preferred method; NULL random bytes: read
     * them from the kernel. */
    if (crypt_gensalt_rn(NULL, 0, NULL, 0, setting, (int)sizeof setting) == NULL)
        return -1;
    cd = calloc(1, sizeof *cd);
    if (cd == NULL)
        return -1;
    h = crypt_r(password, setting, cd);
    if (h != NULL && h[0] != '*' && strlen(h) < outlen) {
        memcpy(out, h, strlen(h) + 1);
        rc = 0;
    } else {
        errno = h != NULL && h[0] != '*' ? ENAMETOOLONG : EINVAL;
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

/* Equal strings, in a time that depends only on the length of `want`. */
static bool auth_equal(const char *got, const char *want)
{
    size_t n = strlen(want), m = strlen(got);
    unsigned char diff = (unsigned char)(n != m);

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

bool auth_check(const struct config *cfg, const char *user, const char *password)
{
    const struct user_conf *u = config_user(cfg, user);
    /* A user with only a cert_cn has no password: check the dummy hash, so
     * the answer takes as long as for any other user. */
    const char *hash = u != NULL && u->password != NULL ? u->password : auth_dummy_hash;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    const char *h;
    bool ok;

    if (cd == NULL)
        return false;
    h = crypt_r(password, hash, cd);
    ok = h != NULL && h[0] != '*' && auth_equal(h, hash) && u != NULL && u->password != NULL;
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return ok;
}
