/*
 * Passwords: the hashes `sqlmuxd passwd` prints for [user.NAME] sections,
 * and the check behind `.auth USER PASSWORD`. Both use libcrypt's crypt_r
 * (yescrypt unless the system says otherwise), which is slow on purpose:
 * the daemon runs auth_check() on libuv's thread pool, never on the loop.
 */
#ifndef SQLMUX_DAEMON_AUTH_H
#define SQLMUX_DAEMON_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"

/* Longest user name or password .auth accepts (bytes). */
#define AUTH_MAX_FIELD 256

/* Hash `password` with a fresh random salt and the system's preferred
 * method into out ("$y$j9T$..."). 0, or -1 with errno set. */
__attribute__((warn_unused_result)) int auth_hash(const char *password, char *out, size_t outlen);

/*
 * Whether `password` is the password of the user named `user` in cfg. The
 * work done does not depend on whether the user exists (an unknown user's
 * password is hashed against another hash of the same cost and the result
 * thrown away), and the final comparison takes the same time whatever
 * bytes differ, so neither the answer's time nor its text tells a client
 * which user names exist. Any thread; cfg must stay alive meanwhile.
 */
bool auth_check(const struct config *cfg, const char *user, const char *password);

#endif
