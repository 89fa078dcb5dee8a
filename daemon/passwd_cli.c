/*
 * `sqlmuxd passwd [USER]`: read a password (twice, without echo, from a
 * terminal; one line from a pipe) and print its crypt(3) hash, or with
 * USER a ready [user.USER] section, for the configuration file. The file
 * then holds only the hash.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "daemon/auth.h"
#include "daemon/passwd_cli.h"

/* One line from f into buf (newline removed). Returns 0, or -1 at end of
 * input or when the line is too long. */
static int passwd_read_line(FILE *f, char *buf, size_t n)
{
    size_t len;

    if (fgets(buf, (int)n, f) == NULL)
        return -1;
    len = strlen(buf);
    if (len > 0 && buf[len - 1] == '\n')
        buf[--len] = '\0';
    else if (!feof(f))
        return -1; /* longer than the buffer */
    if (len > 0 && buf[len - 1] == '\r')
        buf[--len] = '\0';
    return 0;
}

/* Prompt on the terminal and read a line without echo. */
static int passwd_prompt(const char *prompt, char *buf, size_t n)
{
    struct termios old, quiet;
    int rc;

    fputs(prompt, stderr);
    fflush(stderr);
    if (tcgetattr(STDIN_FILENO, &old) != 0)
        return -1;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    quiet.c_lflag |= ECHONL;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) != 0)
        return -1;
    rc = passwd_read_line(stdin, buf, n);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    return rc;
}

static bool passwd_valid_user(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63)
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '-'))
            return false;
    return true;
}

int passwd_main(int argc, char **argv)
{
    char pw[AUTH_MAX_FIELD + 2], again[AUTH_MAX_FIELD + 2], hash[256];
    const char *user = NULL;
    int rc = 1;

    if (argc > 1 || (argc == 1 && (argv[0][0] == '-' || !passwd_valid_user(argv[0])))) {
        fprintf(stderr, "usage: sqlmuxd passwd [USER]\n"
                        "  USER: letters, digits, '_' and '-' (at most 63)\n");
        return 2;
    }
    if (argc == 1)
        user = argv[0];
    if (isatty(STDIN_FILENO)) {
        if (passwd_prompt("password: ", pw, sizeof pw) != 0 ||
            passwd_prompt("again: ", again, sizeof again) != 0) {
            fprintf(stderr, "sqlmuxd passwd: no password read\n");
            goto done;
        }
        if (strcmp(pw, again) != 0) {
            fprintf(stderr, "sqlmuxd passwd: the passwords differ\n");
            goto done;
        }
    } else if (passwd_read_line(stdin, pw, sizeof pw) != 0) {
        fprintf(stderr, "sqlmuxd passwd: no password on standard input (one line, at most %d bytes)\n",
                AUTH_MAX_FIELD);
        goto done;
    }
    if (strlen(pw) == 0 || strlen(pw) > AUTH_MAX_FIELD) {
        fprintf(stderr, "sqlmuxd passwd: the password must have 1 to %d bytes\n", AUTH_MAX_FIELD);
        goto done;
    }
    /* .auth reads the password as the rest of its line without surrounding
     * blanks: such a password could never log in. */
    if (isspace((unsigned char)pw[0]) || isspace((unsigned char)pw[strlen(pw) - 1])) {
        fprintf(stderr, "sqlmuxd passwd: the password must not begin or end with a blank\n");
        goto done;
    }
    if (auth_hash(pw, hash, sizeof hash) != 0) {
        fprintf(stderr, "sqlmuxd passwd: cannot hash: %s\n", strerror(errno));
        goto done;
    }
    if (user != NULL)
        printf("[user.%s]\npassword = %s\n", user, hash);
    else
        printf("%s\n", hash);
    rc = 0;
done:
    explicit_bzero(pw, sizeof pw);
    explicit_bzero(again, sizeof again);
    return rc;
}
