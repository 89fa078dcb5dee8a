/*
 * sqlmux: the command-line shell of sqlmux, in the manner of psql and
 * sqlite3 (README.md, "Client library and CLI").
 *
 *   sqlmux [-h HOST] [-p PORT] [-s SOCKET] [URL] [-u USER] [-W] [-c SQL]... [-f FILE]... [FILE]
 *
 * Input comes from -c strings and files in the order given, else from
 * stdin: a script when stdin is not a terminal, an interactive session
 * with libedit line editing and history when it is. Lines are cut into
 * statements by client/split.c; a line that starts with '.' outside a
 * statement is a dot-command (or one of psql's backslash commands): the
 * shell's own ones are in the table cli_commands (.help prints it), any
 * other goes to the daemon. Results print through client/format.c;
 * .schema and .dump come from client/dump.c.
 *
 * Ctrl-C (SIGINT) writes a byte to a self-pipe that every connection
 * polls (sqlmux_set_cancel_fd), so a wait for the daemon ends at once.
 * The shell then closes that connection, which makes the daemon interrupt
 * the statement and roll back an open transaction, and connects again
 * (restoring the bind chosen with .use). At the prompt, Ctrl-C drops the
 * statement being typed. In a script it stops the script (exit 130).
 *
 * Logging in, as psql and redis-cli do: the user is -u USER, else the
 * URL's, else $SQLMUX_USER; the password the URL's, else $SQLMUX_PASSWORD,
 * else asked on the terminal without echo ("Password for USER: ") when
 * stdin is one and the daemon asks for a login (NOAUTH; a daemon without
 * users ignores the user); -W asks even when one is given. libsqlmux sends the .auth.
 * An interactive session keeps the password (for connecting again after
 * Ctrl-C or a lost connection) and wipes it at the end; a script wipes it
 * once connected. The password is never printed, and `.auth` lines never
 * go to the history; `.auth USER` alone asks for the password.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <histedit.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "client/dump.h"
#include "client/format.h"
#include "client/split.h"
#include "client/sqlmux.h"

/* Exit statuses (documented in README.md). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILED = 1,        /* a statement or command failed */
    CLI_EXIT_FATAL = 2,         /* usage, no connection, lost connection, unreadable file */
    CLI_EXIT_INTERRUPTED = 130, /* Ctrl-C in a script */
};

enum {
    CLI_CONNECT_TIMEOUT_MS = 10000, /* without -t */
    CLI_HISTORY_SIZE = 1000,
    CLI_READ_DEPTH = 16, /* .read inside .read */
};

/* One -c string or file (path "-" is stdin), in command-line order. */
struct cli_input {
    bool is_file;
    const char *arg;
};

struct cli {
    const char *url;
    const char *user; /* -u USER or .auth's; NULL: the URL's or $SQLMUX_USER */
    char *user_owned; /* user when .auth set it */
    char *password;   /* asked for (cli_password); NULL: the URL's or $SQLMUX_PASSWORD */
    int connect_timeout_ms;
    int timeout_ms;    /* per wait of a statement; 0: none */
    sqlmux_conn *conn; /* NULL while disconnected */
    char *bind;        /* the bind chosen with .use, NULL for default */
    struct format fmt;
    bool bail;                   /* stop a script at the first failure */
    bool quiet;                  /* no banner, no status lines */
    bool status_lines;           /* --status: status lines in every mode */
    bool timer;                  /* .timer on: the time of each request */
    bool in_txn;                 /* the daemon said a transaction is open (.use) */
    bool out_color;              /* colour for stdout, when it is the output */
    FILE *out_file;              /* .output FILE, NULL for stdout */
    enum format_mode unexpanded; /* the mode \x off goes back to */
    int read_depth;              /* .read nesting */
    sqlmux_conn *asked;          /* the connection a ".use" is queued on (cli_send) */
    bool session_read;           /* its answer was read for this request */
    bool read_stopped;           /* Ctrl-C during an interactive .read: the files stop */
    bool interactive;
    bool err_color;
    bool stop;         /* stop reading input: .quit, bail, fatal */
    int status;        /* the exit status so far */
    const char *where; /* the input's name in messages, NULL for none */
    struct split *sp;  /* the current input's statement splitter */
    char prompt[160];
};

/* ---- Signals --------------------------------------------------------- */

static volatile sig_atomic_t cli_interrupted;
static int cli_cancel_pipe[2] = {-1, -1};

/* The password asked for on the terminal, while it is needed. */
static char cli_password[SQLMUX_AUTH_MAX + 2];

static void cli_forget_password(struct cli *c)
{
    explicit_bzero(cli_password, sizeof cli_password);
    c->password = NULL;
}

static void cli_on_sigint(int sig)
{
    int saved = errno;
    (void)sig;
    cli_interrupted = 1;
    ssize_t n = write(cli_cancel_pipe[1], "!", 1); /* full pipe: already signalled */
    (void)n;
    errno = saved;
}

/* Forget an earlier Ctrl-C before the next wait. */
static void cli_clear_interrupt(void)
{
    char tmp[64];
    while (read(cli_cancel_pipe[0], tmp, sizeof tmp) > 0) {
    }
    cli_interrupted = 0;
}

static int cli_signals_init(void)
{
    if (pipe2(cli_cancel_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cli_on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocked read() of the input returns */
    return sigaction(SIGINT, &sa, NULL);
}

/* ---- Messages -------------------------------------------------------- */

static void cli_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A message of the shell itself, on stderr. */
static void cli_note(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("sqlmux: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* A failed statement or command: "[where:line: ]ERROR CODE: message". */
static void cli_error(const struct cli *c, unsigned line, const char *code, const char *message)
{
    fflush(stdout);
    if (c->where != NULL)
        fprintf(stderr, "%s:%u: ", c->where, line);
    fprintf(stderr, "%sERROR%s %s: %s\n", c->err_color ? "\033[1;31m" : "", c->err_color ? "\033[0m" : "",
            code, message);
}

/* ---- Passwords ------------------------------------------------------- */

/* Ask for user's password on the terminal (/dev/tty, else stdin when it is
 * one) without echo, into buf (n bytes). 0; -1 when there is none (said
 * why); CLI_EXIT_INTERRUPTED for Ctrl-C. */
static int cli_ask_password(const char *user, char *buf, size_t n)
{
    int tty = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
    int in = tty, out = tty;
    struct termios old, quiet;
    size_t len = 0;
    bool too_long = false, interrupted = false, ended = false;
    char ch = 0;

    if (tty < 0) {
        if (!isatty(STDIN_FILENO)) {
            cli_note("cannot ask for the password of %s: no terminal", user);
            return -1;
        }
        in = STDIN_FILENO;
        out = STDERR_FILENO;
    }
    fflush(stdout);
    bool restore = tcgetattr(in, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        restore = tcsetattr(in, TCSAFLUSH, &quiet) == 0;
    }
    dprintf(out, "Password for %s: ", user);
    for (;;) {
        ssize_t r = read(in, &ch, 1);
        if (r < 0 && errno == EINTR) {
            if (cli_interrupted) {
                interrupted = true;
                break;
            }
            continue;
        }
        if (r <= 0) {
            ended = true;
            break;
        }
        if (ch == '\n')
            break;
        if (len + 1 < n)
            buf[len++] = ch;
        else
            too_long = true;
    }
    explicit_bzero(&ch, sizeof ch);
    if (restore)
        tcsetattr(in, TCSAFLUSH, &old);
    if (interrupted || ended || !restore)
        dprintf(out, "\n"); /* ECHONL echoed the Enter otherwise */
    if (tty >= 0)
        close(tty);
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';
    if (interrupted || too_long || len == 0) {
        explicit_bzero(buf, n);
        if (interrupted)
            return CLI_EXIT_INTERRUPTED;
        if (too_long)
            cli_note("the password is longer than %d bytes", SQLMUX_AUTH_MAX);
        else
            cli_note("no password given for %s", user);
        return -1;
    }
    return 0;
}

/* Whether line (maybe with blanks first) is an .auth command, which holds
 * a password: never kept in the history, wiped after use. */
static bool cli_is_auth_line(const char *line)
{
    line += strspn(line, " \t");
    return strncmp(line, ".auth", 5) == 0 && (line[5] == '\0' || line[5] == ' ' || line[5] == '\t');
}

/* ---- The connection -------------------------------------------------- */

/* Connect (again), restoring the bind chosen with .use. True when
 * connected; else false with *err the reason (the caller frees it; NULL
 * when out of memory). */
static bool cli_try_connect(struct cli *c, char **err)
{
    *err = NULL;
    c->in_txn = false;
    c->conn = sqlmux_connect_auth(c->url, c->user, c->password, c->connect_timeout_ms, err);
    if (c->conn == NULL)
        return false;
    sqlmux_set_timeout(c->conn, c->timeout_ms);
    sqlmux_set_cancel_fd(c->conn, cli_cancel_pipe[0]);
    if (c->bind != NULL) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, ".use %s", c->bind);
        sqlmux_result *r = sqlmux_command(c->conn, cmd);
        if (sqlmux_status(r) != SQLMUX_OK) {
            cli_note("could not use bind %s again (%s: %s); statements go to default", c->bind,
                     sqlmux_errcode(r), sqlmux_errmsg(r));
            free(c->bind);
            c->bind = NULL;
        }
        sqlmux_free(r);
    }
    return true;
}

/* cli_try_connect(), saying why it failed. */
static bool cli_connect(struct cli *c)
{
    char *err;
    if (cli_try_connect(c, &err))
        return true;
    cli_note("%s", err != NULL ? err : "out of memory");
    free(err);
    return false;
}

static void cli_disconnect(struct cli *c)
{
    c->asked = NULL;
    c->in_txn = false;
    sqlmux_close(c->conn);
    c->conn = NULL;
}

/* The statement was cancelled with Ctrl-C: the connection is closed, so
 * the daemon interrupts it and rolls back an open transaction. */
static void cli_cancelled(struct cli *c)
{
    cli_disconnect(c);
    if (!c->interactive) {
        cli_note(
            "query cancelled (the daemon stopped it and rolled back any open transaction); script stopped");
        c->status = CLI_EXIT_INTERRUPTED;
        c->stop = true;
        return;
    }
    cli_clear_interrupt();
    c->read_stopped |= c->read_depth > 0;
    fputc('\n', stderr); /* after the "^C" the terminal echoed */
    if (cli_connect(c))
        cli_note("query cancelled; reconnected (the daemon stopped the statement and rolled back any open "
                 "transaction)");
    else
        cli_note("query cancelled; not connected now: the next statement tries again");
}

/* The connection broke for another reason (lost, timeout, bad reply). */
static void cli_lost(struct cli *c)
{
    cli_disconnect(c);
    if (!c->interactive) {
        c->status = CLI_EXIT_FATAL;
        c->stop = true;
        return;
    }
    if (cli_connect(c))
        cli_note("reconnected to %s (an open transaction was rolled back)", sqlmux_conn_url(c->conn));
    else
        cli_note("not connected: the next statement tries again");
}

/* ---- Running statements and commands --------------------------------- */

/* Before a request: an interactive session forgets a Ctrl-C that came
 * between statements; a script stops at it (false: do not send). */
static bool cli_before_request(struct cli *c)
{
    if (c->interactive) {
        /* A Ctrl-C while .read runs a file stops the file. */
        c->read_stopped |= c->read_depth > 0 && cli_interrupted;
        cli_clear_interrupt();
        return !c->read_stopped;
    }
    if (cli_interrupted) {
        cli_note("interrupted; script stopped");
        c->status = CLI_EXIT_INTERRUPTED;
        c->stop = true;
        return false;
    }
    return true;
}

static void cli_failed(struct cli *c)
{
    if (c->status == CLI_EXIT_OK)
        c->status = CLI_EXIT_FAILED;
    if (c->bail && !c->interactive)
        c->stop = true;
}

/* In an interactive session, the daemon's word on the session (".use":
 * its bind, and whether a transaction is open) for the prompt: the answer
 * cli_send() queued behind the request, read once the request's result
 * is, or else, when round_trip, one round trip of its own. */
static void cli_read_session(struct cli *c, bool round_trip)
{
    bool queued = c->asked != NULL && c->asked == c->conn && c->conn != NULL && sqlmux_pending(c->conn) > 0;
    if (!c->interactive || c->conn == NULL || sqlmux_conn_errmsg(c->conn) != NULL || (!queued && !round_trip))
        return;
    c->asked = NULL;
    sqlmux_result *r = queued ? sqlmux_recv(c->conn) : sqlmux_command(c->conn, ".use");
    const char *txn = sqlmux_fact(r, "txn"), *bind = sqlmux_fact(r, "bind");
    c->in_txn = false;
    if (sqlmux_status(r) == SQLMUX_OK && bind != NULL) {
        c->in_txn = txn != NULL && strcmp(txn, "1") == 0;
        if (c->bind == NULL || strcmp(c->bind, bind) != 0) {
            free(c->bind);
            c->bind = strcmp(bind, "default") == 0 ? NULL : strdup(bind);
        }
    }
    sqlmux_free(r);
    c->session_read = true;
}

/* Print result r (already run) and what became of it. The session's state
 * is read before the last line (an error or a status line) is printed,
 * so the prompt follows that line at once. */
static void cli_show(struct cli *c, sqlmux_result *r, unsigned line)
{
    const struct format *f = &c->fmt;
    bool table = format_is_table(f->mode);
    bool cancelled = false;
    int64_t rows = 0;

    if (sqlmux_ncols(r) > 0) {
        if (table) {
            if (format_table(f, r) < 0)
                cli_note("out of memory printing the result");
            for ((void)sqlmux_seek(r, -1); sqlmux_step(r) == SQLMUX_ROW;)
                rows += format_keep(f, r);
        } else {
            format_begin(f, r);
            while (sqlmux_step(r) == SQLMUX_ROW) {
                if (!format_keep(f, r))
                    continue;
                format_row(f, r, rows++);
                if (cli_interrupted) {
                    /* Ctrl-C between rows: the rest is not wanted. */
                    cancelled = true;
                    break;
                }
            }
            format_end(f, r, rows);
        }
    }
    fflush(f->out);
    if (!cancelled)
        cli_read_session(c, false);
    const char *code = sqlmux_errcode(r);
    if (cancelled || (code != NULL && strcmp(code, "CANCELLED") == 0)) {
        cli_failed(c);
        cli_cancelled(c);
        return;
    }
    if (code != NULL) {
        cli_error(c, line, code, sqlmux_errmsg(r));
        cli_failed(c);
        if (sqlmux_conn_errmsg(c->conn) != NULL)
            cli_lost(c);
        return;
    }
    if ((format_for_people(f->mode) && !c->quiet) || c->status_lines) {
        if (sqlmux_ncols(r) > 0)
            fprintf(f->out, "(%lld row%s)\n", (long long)rows, rows == 1 ? "" : "s");
        else if (*sqlmux_facts(r) != '\0')
            fprintf(f->out, "OK %s\n", sqlmux_facts(r));
        else
            fprintf(f->out, "OK\n");
        fflush(f->out);
    }
}

static double cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Send a statement (text[0..len)) or a command line (command), and in an
 * interactive session queue ".use" behind it: its answer (the session's
 * bind, and whether a transaction is open) comes with the request's, so
 * the prompt costs no round trip of its own. Returns the request's result,
 * a stream when asked for one. */
static sqlmux_result *cli_send(struct cli *c, const char *text, size_t len, bool command, bool stream)
{
    sqlmux_conn *conn = c->conn;
    if (c->interactive) {
        int rc = command ? sqlmux_send_command(conn, text) : sqlmux_sendn(conn, text, len, NULL, 0);
        if (rc == SQLMUX_OK) {
            if (sqlmux_send_command(conn, ".use") == SQLMUX_OK)
                c->asked = conn;
            return stream ? sqlmux_recv_stream(conn) : sqlmux_recv(conn);
        }
        /* Not sent: the calls below fail with the connection's error. */
    }
    if (command)
        return sqlmux_command(conn, text);
    return stream ? sqlmux_queryn(conn, text, len, NULL, 0) : sqlmux_execn(conn, text, len, NULL, 0);
}

/* After a request: .timer's line (from before sending to the end of the
 * output), and the session's state for the prompt when the result did not
 * bring it (cli_read_session). */
static void cli_after_request(struct cli *c, double started_ms)
{
    if (c->timer) {
        fprintf(c->fmt.out, "Time: %.3f ms\n", cli_now_ms() - started_ms);
        fflush(c->fmt.out);
    }
    if (!c->session_read)
        cli_read_session(c, true);
    c->session_read = false;
    c->asked = NULL;
}

/* Make sure there is a connection; false (and the failure noted) when
 * there is none. */
static bool cli_ensure_connected(struct cli *c)
{
    if (c->conn != NULL)
        return true;
    if (cli_connect(c))
        return true;
    cli_failed(c);
    if (!c->interactive) {
        c->status = CLI_EXIT_FATAL;
        c->stop = true;
    }
    return false;
}

static void cli_statement(struct cli *c, const char *sql, size_t len, unsigned line)
{
    if (!cli_ensure_connected(c) || !cli_before_request(c))
        return;
    double started = cli_now_ms();
    sqlmux_result *r = cli_send(c, sql, len, false, !format_is_table(c->fmt.mode));
    cli_show(c, r, line);
    sqlmux_free(r);
    cli_after_request(c, started);
}

/* .auth USER [PASSWORD]: log in through libsqlmux (which wipes what it
 * sent); without PASSWORD, ask for it on the terminal. An interactive
 * session keeps the login for connecting again. */
static void cli_auth(struct cli *c, const char *arg, unsigned line)
{
    char user[SQLMUX_AUTH_MAX + 2], asked[SQLMUX_AUTH_MAX + 2];
    size_t ulen = strcspn(arg, " \t");
    const char *password = arg + ulen + strspn(arg + ulen, " \t");

    if (ulen == 0 || ulen >= sizeof user) {
        cli_error(c, line, "ARGS", ulen == 0 ? "usage: .auth USER [PASSWORD]" : "user name too long");
        cli_failed(c);
        return;
    }
    memcpy(user, arg, ulen);
    user[ulen] = '\0';
    if (*password == '\0') {
        if (!isatty(STDIN_FILENO)) {
            cli_error(c, line, "ARGS", "usage: .auth USER PASSWORD (no terminal to ask for the password)");
            cli_failed(c);
            return;
        }
        int rc = cli_ask_password(user, asked, sizeof asked);
        if (rc != 0) {
            cli_failed(c);
            if (rc == CLI_EXIT_INTERRUPTED && !c->interactive) {
                c->status = CLI_EXIT_INTERRUPTED;
                c->stop = true;
            }
            return;
        }
        password = asked;
    }
    if (cli_ensure_connected(c) && cli_before_request(c)) {
        sqlmux_result *r = sqlmux_auth(c->conn, user, password);
        cli_show(c, r, line);
        if (sqlmux_status(r) == SQLMUX_OK && c->interactive) {
            char *u = strdup(user);
            if (u != NULL && strlen(password) < sizeof cli_password) {
                free(c->user_owned);
                c->user = c->user_owned = u;
                memmove(cli_password, password, strlen(password) + 1);
                c->password = cli_password;
            } else {
                free(u);
            }
        }
        sqlmux_free(r);
    }
    explicit_bzero(asked, sizeof asked);
}

/* ---- The shell's own commands ---------------------------------------- */

static void cli_run_stream(struct cli *c, FILE *in, const char *name);

/* A shell command's usage error. */
static void cli_usage_error(struct cli *c, unsigned line, const char *usage)
{
    cli_error(c, line, "ARGS", usage);
    cli_failed(c);
}

/* "on"/"off" (also 1/0, true/false) in *on; false when arg is neither. */
static bool cli_parse_on(const char *arg, bool *on)
{
    if (strcasecmp(arg, "on") == 0 || strcmp(arg, "1") == 0 || strcasecmp(arg, "true") == 0)
        *on = true;
    else if (strcasecmp(arg, "off") == 0 || strcmp(arg, "0") == 0 || strcasecmp(arg, "false") == 0)
        *on = false;
    else
        return false;
    return true;
}

static void cli_cmd_quit(struct cli *c, const char *arg, unsigned line)
{
    (void)arg, (void)line;
    c->stop = true;
}

static void cli_set_mode(struct cli *c, enum format_mode m)
{
    c->fmt.mode = m;
    if (c->fmt.null_text == NULL || strcmp(c->fmt.null_text, "∅") == 0 ||
        strcmp(c->fmt.null_text, "NULL") == 0)
        c->fmt.null_text = m == FORMAT_BOX ? "∅" : "NULL";
}

static void cli_cmd_mode(struct cli *c, const char *arg, unsigned line)
{
    enum format_mode m;
    if (*arg == '\0') {
        fprintf(c->fmt.out, "%s\n", format_mode_name(c->fmt.mode));
    } else if (format_mode_parse(arg, &m)) {
        cli_set_mode(c, m);
    } else {
        cli_error(c, line, "ARGS", "unknown mode (want box, table, csv, tsv, json or expanded)");
        cli_failed(c);
    }
}

/* \x [on|off]: psql's expanded display, toggled without an argument. */
static void cli_cmd_expanded(struct cli *c, const char *arg, unsigned line)
{
    bool on = c->fmt.mode != FORMAT_EXPANDED;
    if (*arg != '\0' && !cli_parse_on(arg, &on)) {
        cli_usage_error(c, line, "usage: \\x [on|off]");
        return;
    }
    if (on && c->fmt.mode != FORMAT_EXPANDED) {
        c->unexpanded = c->fmt.mode;
        cli_set_mode(c, FORMAT_EXPANDED);
    } else if (!on && c->fmt.mode == FORMAT_EXPANDED) {
        cli_set_mode(c, c->unexpanded);
    }
    printf("Expanded display is %s.\n", on ? "on" : "off"); /* the shell speaking: not to .output */
}

static void cli_cmd_headers(struct cli *c, const char *arg, unsigned line)
{
    if (!cli_parse_on(arg, &c->fmt.header))
        cli_usage_error(c, line, "usage: .headers on|off");
}

static void cli_cmd_timer(struct cli *c, const char *arg, unsigned line)
{
    if (!cli_parse_on(arg, &c->timer))
        cli_usage_error(c, line, "usage: .timer on|off");
}

/* \timing [on|off]: psql's, toggled without an argument. */
static void cli_cmd_timing(struct cli *c, const char *arg, unsigned line)
{
    bool on = !c->timer;
    if (*arg != '\0' && !cli_parse_on(arg, &on)) {
        cli_usage_error(c, line, "usage: \\timing [on|off]");
        return;
    }
    c->timer = on;
    printf("Timing is %s.\n", on ? "on" : "off");
}

/* .output [FILE]: results (and status lines) to FILE, or to stdout again. */
static void cli_cmd_output(struct cli *c, const char *arg, unsigned line)
{
    FILE *f = NULL;
    if (*arg != '\0' && (f = fopen(arg, "w")) == NULL) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", arg, strerror(errno));
        cli_error(c, line, "IOERR", msg);
        cli_failed(c);
        return;
    }
    if (c->out_file != NULL && fclose(c->out_file) != 0)
        cli_note("writing the output file failed: %s", strerror(errno));
    c->out_file = f;
    c->fmt.out = f != NULL ? f : stdout;
    c->fmt.color = f != NULL ? false : c->out_color;
}

/* .read FILE: its statements and commands, as if typed here; errors name
 * FILE:LINE. */
static void cli_cmd_read(struct cli *c, const char *arg, unsigned line)
{
    if (*arg == '\0') {
        cli_usage_error(c, line, "usage: .read FILE");
        return;
    }
    if (c->read_depth >= CLI_READ_DEPTH) {
        cli_usage_error(c, line, ".read nested too deeply (a file that reads itself?)");
        return;
    }
    FILE *in = fopen(arg, "r");
    if (in == NULL) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", arg, strerror(errno));
        cli_error(c, line, "IOERR", msg);
        cli_failed(c);
        return;
    }
    struct split *sp = c->sp;
    const char *where = c->where;
    c->read_depth++;
    cli_run_stream(c, in, arg);
    c->read_depth--;
    c->sp = sp;
    c->where = where;
    fclose(in);
    if (c->read_depth == 0 && c->read_stopped) {
        c->read_stopped = false;
        cli_clear_interrupt();
        cli_note("%s: interrupted; the rest of the file did not run", arg);
        cli_failed(c);
    }
}

/* Make the session's bind the one .use chose again, after .schema or
 * .dump went through the binds. */
static void cli_restore_bind(struct cli *c)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, ".use %s", c->bind != NULL ? c->bind : "default");
    sqlmux_free(sqlmux_command(c->conn, cmd));
}

/* .schema and .dump: every bind's objects matching patterns (all when
 * none), with rows for .dump. Returns the number of objects written. */
static int cli_dump(struct cli *c, const char *arg, bool rows, unsigned line)
{
    char *args = strdup(arg);
    const char *patterns[64];
    size_t npatterns = 0;
    int total = 0;

    if (args == NULL) {
        cli_note("out of memory");
        return 0;
    }
    for (char *save = NULL, *w = strtok_r(args, " \t", &save); w != NULL; w = strtok_r(NULL, " \t", &save)) {
        if (npatterns == sizeof patterns / sizeof patterns[0]) {
            cli_usage_error(c, line, "too many names (at most 64)");
            free(args);
            return 0;
        }
        patterns[npatterns++] = w;
    }
    if (!cli_ensure_connected(c) || !cli_before_request(c)) {
        free(args);
        return 0;
    }
    double started = cli_now_ms();
    sqlmux_result *binds = sqlmux_command(c->conn, ".binds");
    if (sqlmux_status(binds) != SQLMUX_OK) {
        cli_show(c, binds, line);
        goto done;
    }
    if (rows)
        fprintf(c->fmt.out, "-- sqlmux %s dump from %s\n", SQLMUX_VERSION, sqlmux_conn_url(c->conn));
    while (sqlmux_step(binds) == SQLMUX_ROW) {
        struct dump_request q = {sqlmux_text(binds, 0), sqlmux_text(binds, 1), patterns, npatterns, rows};
        struct dump_error err;
        char *text = NULL;
        size_t len = 0;
        /* .schema: a bind's part only when it has something. .dump
         * streams its rows. */
        FILE *out = rows ? c->fmt.out : open_memstream(&text, &len);
        if (out == NULL) {
            cli_note("out of memory");
            break;
        }
        if (rows)
            fprintf(out, "-- bind %s (%s)\n", q.bind, q.type);
        int n = dump_bind(c->conn, &q, out, &err);
        if (!rows) {
            fclose(out);
            if (n > 0)
                fprintf(c->fmt.out, "-- bind %s (%s)\n%s", q.bind, q.type, text);
            free(text);
        }
        if (n < 0 && strcmp(err.code, "NOPERM") != 0) { /* binds the user may not read are left out */
            cli_error(c, line, err.code, err.msg);
            cli_failed(c);
        }
        if (sqlmux_conn_errmsg(c->conn) != NULL) {
            cli_lost(c);
            goto done;
        }
        total += n > 0 ? n : 0;
    }
    cli_restore_bind(c);
    fflush(c->fmt.out);
    cli_after_request(c, started);
done:
    sqlmux_free(binds);
    free(args);
    return total;
}

static void cli_cmd_schema(struct cli *c, const char *arg, unsigned line)
{
    cli_dump(c, arg, false, line);
}

static void cli_cmd_dump(struct cli *c, const char *arg, unsigned line)
{
    cli_dump(c, arg, true, line);
}

static bool cli_table_matches(const sqlmux_result *r, void *pattern)
{
    return dump_name_matches(pattern, sqlmux_text(r, 0));
}

/* Send a command line to the daemon and show its answer. */
static void cli_daemon_command(struct cli *c, const char *cmd, unsigned line)
{
    if (!cli_ensure_connected(c) || !cli_before_request(c))
        return;
    double started = cli_now_ms();
    size_t nlen = strcspn(cmd, " \t");
    sqlmux_result *r = cli_send(c, cmd, strlen(cmd), true, false);
    cli_show(c, r, line);
    const char *bind = sqlmux_fact(r, "bind");
    if (nlen == 4 && strncmp(cmd, ".use", 4) == 0 && sqlmux_status(r) == SQLMUX_OK && bind != NULL) {
        /* Remember the session's bind for the prompt and for
         * reconnecting. */
        free(c->bind);
        c->bind = strcmp(bind, "default") == 0 ? NULL : strdup(bind);
    }
    sqlmux_free(r);
    cli_after_request(c, started);
}

/* .tables [BIND|PATTERN]: the daemon's .tables, of one bind when the
 * argument names one, else filtered by the pattern. */
static void cli_cmd_tables(struct cli *c, const char *arg, unsigned line)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, ".tables %s", arg);
    if (*arg == '\0' || !cli_ensure_connected(c) || !cli_before_request(c)) {
        cli_daemon_command(c, ".tables", line);
        return;
    }
    double started = cli_now_ms();
    sqlmux_result *r = sqlmux_command(c->conn, cmd);
    if (sqlmux_errcode(r) != NULL && strcmp(sqlmux_errcode(r), "NOBIND") == 0) {
        sqlmux_free(r);
        r = sqlmux_command(c->conn, ".tables");
        c->fmt.keep = cli_table_matches;
        c->fmt.keep_arg = (void *)arg;
    }
    cli_show(c, r, line);
    c->fmt.keep = NULL;
    c->fmt.keep_arg = NULL;
    sqlmux_free(r);
    cli_after_request(c, started);
}

/* \d [NAME]: psql's; the tables, or NAME's CREATE statements. */
static void cli_cmd_describe(struct cli *c, const char *arg, unsigned line)
{
    if (*arg == '\0') {
        cli_cmd_tables(c, arg, line);
        return;
    }
    if (cli_dump(c, arg, false, line) == 0 && c->conn != NULL) {
        char msg[600];
        snprintf(msg, sizeof msg, "did not find any table named %s", arg);
        cli_error(c, line, "NOTFOUND", msg);
        cli_failed(c);
    }
}

static void cli_cmd_help(struct cli *c, const char *arg, unsigned line);

/* The shell's commands, in the order .help lists them (STYLE.md: one table
 * serves dispatch and help). Other dot-commands go to the daemon. */
static const struct cli_command {
    const char *name;
    const char *args;
    void (*run)(struct cli *c, const char *arg, unsigned line);
    const char *help;
} cli_commands[] = {
    {".auth", "USER [PASSWORD]", cli_auth, "log in; without PASSWORD it is asked without echo"},
    {".dump", "[TABLE...]", cli_cmd_dump,
     "SQL that recreates the tables (all, or those named) and their rows"},
    {".exit", "", cli_cmd_quit, "leave"},
    {".headers", "on|off", cli_cmd_headers, "column names above the rows (box, table, csv, tsv)"},
    {".help", "", cli_cmd_help, "the shell's commands, then the daemon's"},
    {".mode", "[MODE]", cli_cmd_mode, "show or set the output: box, table, csv, tsv, json, expanded"},
    {".output", "[FILE]", cli_cmd_output, "results to FILE (overwritten); without FILE, to stdout again"},
    {".quit", "", cli_cmd_quit, "leave"},
    {".read", "FILE", cli_cmd_read, "run the statements and commands of FILE"},
    {".schema", "[PATTERN]", cli_cmd_schema, "the CREATE statements of the tables (all, or those matching)"},
    {".tables", "[BIND|PATTERN]", cli_cmd_tables, "the tables of every bind, of BIND, or matching PATTERN"},
    {".timer", "on|off", cli_cmd_timer, "the time of each statement, as the round trip"},
    {"\\d", "[NAME]", cli_cmd_describe, "psql's: .tables, or .schema NAME"},
    {"\\dt", "[PATTERN]", cli_cmd_tables, "psql's: .tables"},
    {"\\i", "FILE", cli_cmd_read, "psql's: .read"},
    {"\\o", "[FILE]", cli_cmd_output, "psql's: .output"},
    {"\\q", "", cli_cmd_quit, "psql's: .quit"},
    {"\\timing", "[on|off]", cli_cmd_timing, "psql's: .timer; toggles without an argument"},
    {"\\x", "[on|off]", cli_cmd_expanded, "psql's expanded display (.mode expanded); toggles"},
    {"\\?", "", cli_cmd_help, "psql's: .help"},
};

static void cli_cmd_help(struct cli *c, const char *arg, unsigned line)
{
    FILE *out = c->fmt.out;
    (void)arg;
    fputs("Shell commands:\n", out);
    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++) {
        const struct cli_command *k = &cli_commands[i];
        int w = fprintf(out, "  %s%s%s", k->name, k->args[0] != '\0' ? " " : "", k->args);
        fprintf(out, "%*s  %s\n", w < 30 ? 30 - w : 0, "", k->help);
    }
    fputs("SQL statements end with ';' and may span lines; Ctrl-C cancels a running statement.\n"
          "PATTERN: '*' or '%' for any run of characters, '?' or '_' for one.\n"
          "The daemon's commands:\n",
          out);
    cli_daemon_command(c, ".help", line);
}

/* A command line (NUL-terminated, trimmed) starting with '.' or '\'. */
static void cli_command(struct cli *c, const char *cmd, unsigned line)
{
    size_t nlen = strcspn(cmd, " \t");
    const char *arg = cmd + nlen + strspn(cmd + nlen, " \t");

    for (size_t i = 0; i < sizeof cli_commands / sizeof cli_commands[0]; i++) {
        const struct cli_command *k = &cli_commands[i];
        if (strlen(k->name) == nlen && strncmp(cmd, k->name, nlen) == 0) {
            k->run(c, arg, line);
            return;
        }
    }
    if (cmd[0] == '\\') {
        char msg[200];
        snprintf(msg, sizeof msg, "unknown command %.*s (.help lists them)", (int)(nlen < 60 ? nlen : 60),
                 cmd);
        cli_error(c, line, "UNKNOWN", msg);
        cli_failed(c);
        return;
    }
    cli_daemon_command(c, cmd, line);
}

/* One line of input (without its line end). */
static void cli_line(struct cli *c, const char *line, size_t n)
{
    struct split *sp = c->sp;
    if (split_idle(sp)) {
        size_t i = 0;
        while (i < n && isspace((unsigned char)line[i]))
            i++;
        if (i < n && (line[i] == '.' || line[i] == '\\')) {
            unsigned at = sp->line;
            while (n > i && isspace((unsigned char)line[n - 1]))
                n--;
            char *cmd = strndup(line + i, n - i);
            split_discard(sp, 1);
            if (cmd == NULL) {
                cli_note("out of memory");
                c->status = CLI_EXIT_FATAL;
                c->stop = true;
                return;
            }
            cli_command(c, cmd, at);
            explicit_bzero(cmd, strlen(cmd)); /* .auth holds a password */
            free(cmd);
            return;
        }
    }
    if (split_feed(sp, line, n) < 0) {
        cli_note("out of memory");
        c->status = CLI_EXIT_FATAL;
        c->stop = true;
        return;
    }
    const char *stmt;
    size_t len;
    unsigned at;
    while (!c->stop && !c->read_stopped && split_next(sp, &stmt, &len, &at))
        cli_statement(c, stmt, len, at);
}

/* The end of an input: run a last statement that has no ';'. */
static void cli_finish(struct cli *c)
{
    const char *stmt;
    size_t len;
    unsigned at;
    if (!c->stop && !c->read_stopped && split_finish(c->sp, &stmt, &len, &at))
        cli_statement(c, stmt, len, at);
}

/* ---- Inputs ---------------------------------------------------------- */

static void cli_run_string(struct cli *c, const char *text)
{
    struct split sp;
    split_init(&sp);
    c->sp = &sp;
    c->where = NULL;
    while (!c->stop) {
        const char *nl = strchr(text, '\n');
        size_t n = nl != NULL ? (size_t)(nl - text) : strlen(text);
        cli_line(c, text, n > 0 && text[n - 1] == '\r' ? n - 1 : n);
        if (nl == NULL)
            break;
        text = nl + 1;
    }
    cli_finish(c);
    split_free(&sp);
    c->sp = NULL;
}

static void cli_run_stream(struct cli *c, FILE *in, const char *name)
{
    struct split sp;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    split_init(&sp);
    c->sp = &sp;
    c->where = name;
    while (!c->stop && !c->read_stopped && (n = getline(&line, &cap, in)) >= 0) {
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        cli_line(c, line, len);
    }
    if (c->interactive && c->read_depth > 0 && cli_interrupted) {
        c->read_stopped = true;
    } else if (!c->stop && cli_interrupted) {
        cli_note("interrupted; script stopped");
        c->status = CLI_EXIT_INTERRUPTED;
        c->stop = true;
    } else if (!c->stop && ferror(in)) {
        cli_note("%s: %s", name, strerror(errno));
        c->status = CLI_EXIT_FATAL;
        c->stop = true;
    }
    cli_finish(c);
    if (line != NULL)
        explicit_bzero(line, cap); /* an .auth line holds a password */
    free(line);
    split_free(&sp);
    c->sp = NULL;
}

static void cli_run_file(struct cli *c, const char *path)
{
    if (strcmp(path, "-") == 0) {
        cli_run_stream(c, stdin, "<stdin>");
        return;
    }
    FILE *in = fopen(path, "r");
    if (in == NULL) {
        cli_note("%s: %s", path, strerror(errno));
        c->status = CLI_EXIT_FATAL;
        c->stop = true;
        return;
    }
    cli_run_stream(c, in, path);
    fclose(in);
}

/* ---- The interactive shell ------------------------------------------- */

static char *cli_prompt(EditLine *el)
{
    struct cli *c = NULL;
    el_get(el, EL_CLIENTDATA, &c);
    const char *bind = c->bind != NULL ? c->bind : "default";
    const char *mark = c->conn == NULL ? "!" : "";
    const char *txn = c->in_txn ? "*" : ""; /* psql's mark of an open transaction */
    if (split_idle(c->sp)) {
        snprintf(c->prompt, sizeof c->prompt, "%s%s%s> ", mark, bind, txn);
    } else {
        /* "...> " right-aligned under the first line's prompt. */
        size_t w = strlen(mark) + strlen(bind) + strlen(txn);
        int padding = w > 3 ? (int)(w - 3) : 0;
        snprintf(c->prompt, sizeof c->prompt, "%*s...> ", padding, "");
    }
    return c->prompt;
}

/* The history file: $SQLMUX_HISTORY ("" for none), else ~/.sqlmux_history. */
static char *cli_history_path(void)
{
    const char *env = getenv("SQLMUX_HISTORY");
    if (env != NULL)
        return *env != '\0' ? strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0')
        return NULL;
    size_t n = strlen(home) + sizeof "/.sqlmux_history";
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/.sqlmux_history", home);
    return p;
}

/* Append line to the history file at once (a killed shell loses
 * nothing), in libedit's format: a History of one entry, saved to the end
 * of the file (libedit writes its header only into an empty file). */
static void cli_history_append(const char *path, const char *line)
{
    HistEvent ev;
    History *one = history_init();
    FILE *f = fopen(path, "a");
    if (one != NULL && f != NULL) {
        history(one, &ev, H_SETSIZE, 1);
        history(one, &ev, H_ENTER, line);
        history(one, &ev, H_SAVE_FP, f);
    }
    if (f != NULL)
        fclose(f);
    if (one != NULL)
        history_end(one);
}

static void cli_interactive(struct cli *c)
{
    HistEvent ev;
    History *hist = history_init();
    EditLine *el = el_init("sqlmux", stdin, stdout, stderr);
    char *hpath = cli_history_path();
    struct split sp;

    if (hist == NULL || el == NULL) {
        cli_note("cannot start line editing");
        c->status = CLI_EXIT_FATAL;
        goto done;
    }
    history(hist, &ev, H_SETSIZE, CLI_HISTORY_SIZE);
    history(hist, &ev, H_SETUNIQUE, 1);
    /* The file grows by one line per entry: cut it back to the last
     * entries when it holds many more. */
    if (hpath != NULL && history(hist, &ev, H_LOAD, hpath) > 2 * CLI_HISTORY_SIZE)
        history(hist, &ev, H_SAVE, hpath);
    split_init(&sp);
    c->sp = &sp;
    c->where = NULL;
    el_set(el, EL_CLIENTDATA, c);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_PROMPT, cli_prompt);
    el_set(el, EL_HIST, history, hist);
    el_set(el, EL_SIGNAL, 1); /* restore the terminal on signals */
    el_source(el, NULL);      /* ~/.editrc */

    if (!c->quiet)
        printf("sqlmux %s, connected to %s%s%s%s%s%s\n"
               "Statements end with \";\". \".help\" lists the commands, \".quit\" leaves.\n",
               SQLMUX_VERSION, sqlmux_conn_url(c->conn), sqlmux_conn_user(c->conn) != NULL ? " as " : "",
               sqlmux_conn_user(c->conn) != NULL ? sqlmux_conn_user(c->conn) : "",
               sqlmux_conn_tls(c->conn) != NULL ? " (TLS: " : "",
               sqlmux_conn_tls(c->conn) != NULL ? sqlmux_conn_tls(c->conn) : "",
               sqlmux_conn_tls(c->conn) ? ")" : "");
    while (!c->stop) {
        int count = 0;
        cli_clear_interrupt();
        const char *line = el_gets(el, &count);
        if (cli_interrupted) {
            /* Ctrl-C at the prompt: drop what was typed. */
            fputs("^C\n", stdout);
            split_discard(&sp, 0);
            continue;
        }
        if (line == NULL || count <= 0) {
            fputc('\n', stdout); /* Ctrl-D */
            break;
        }
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] == '\n')
            n--;
        char *copy = strndup(line, n);
        if (copy == NULL) {
            cli_note("out of memory");
            break;
        }
        bool secret = cli_is_auth_line(copy);
        if (strspn(copy, " \t") < n && !secret) {
            bool repeated = history(hist, &ev, H_FIRST) == 0 && strcmp(ev.str, copy) == 0;
            history(hist, &ev, H_ENTER, copy);
            if (hpath != NULL && !repeated)
                cli_history_append(hpath, copy);
        }
        cli_line(c, copy, n);
        if (secret)
            explicit_bzero(copy, n);
        free(copy);
    }
    split_free(&sp);
    c->sp = NULL;
    /* Failed statements were seen on the screen: the session itself
     * succeeded. */
    if (c->status == CLI_EXIT_FAILED)
        c->status = CLI_EXIT_OK;
done:
    if (el != NULL)
        el_end(el);
    if (hist != NULL)
        history_end(hist);
    free(hpath);
}

/* ---- Options --------------------------------------------------------- */

static void cli_usage(FILE *out)
{
    fprintf(out,
            "usage: sqlmux [OPTION]... [URL] [FILE]\n"
            "The shell of sqlmux: runs SQL and dot-commands on a sqlmux daemon.\n"
            "\n"
            "Connection (default $SQLMUX_URL, else " SQLMUX_DEFAULT_URL "):\n"
            "  URL                   sqlmux://[USER[:PASSWORD]@]HOST:PORT or\n"
            "                        unix:///PATH/TO/SOCKET[?user=USER&password=PASSWORD]\n"
            "                        sqlmuxs://HOST:PORT for TLS (checks the certificate and\n"
            "                        the host name; ?tls_ca=FILE&tls_cert=FILE&tls_key=FILE,\n"
            "                        ?tls=insecure skips the checks)\n"
            "                        (percent-encoded: %%40 for '@', %%3A for ':', %%20 for ' ')\n"
            "  -h, --host HOST       TCP host (port 7654 unless -p)\n"
            "  -p, --port PORT       TCP port (host 127.0.0.1 unless -h)\n"
            "  -s, --socket PATH     unix socket\n"
            "  -t, --timeout SECS    give up connecting, and waiting for a reply, after SECS\n"
            "                        (default: 10 s to connect, no limit for replies)\n"
            "  -u, --user USER       log in as USER (default: the URL's user, else $SQLMUX_USER)\n"
            "  -W, --password        ask for the password even when the URL or\n"
            "                        $SQLMUX_PASSWORD gives one; without -W it is asked (no\n"
            "                        echo) only when neither does, stdin is a terminal and\n"
            "                        the daemon asks for a login\n"
            "Input (in the order given; stdin when none, interactive on a terminal):\n"
            "  -c, --command SQL     run SQL (statements and dot-command lines); repeatable\n"
            "  -f, --file FILE       run a script; FILE may also be given last; - is stdin\n"
            "  --bail                stop a script at the first failed statement\n"
            "  -v ON_ERROR_STOP=1    the same, as psql spells it\n"
            "Output (default: box on a terminal, else tsv):\n"
            "  --box, --table        aligned tables, Unicode or ASCII lines\n"
            "  --csv, --tsv, --json  CSV (RFC 4180), TSV (COPY text form), JSON arrays\n"
            "  --expanded            one block per row (psql's \\x)\n"
            "  --no-header           no column names line\n"
            "  --null TEXT           how tables show NULL (default: \xe2\x88\x85 in box, NULL in table)\n"
            "  -q, --quiet           no banner and no status lines\n"
            "  --status              status lines (\"(2 rows)\", \"OK changes=1\") in every mode;\n"
            "                        without it they follow box, table and expanded output only\n"
            "  -?, --help            this help;  -V, --version  the version\n"
            "\n"
            "Environment: SQLMUX_URL, SQLMUX_USER, SQLMUX_PASSWORD (safer than a password in\n"
            "the URL, which other users may see in the process list), SQLMUX_HISTORY,\n"
            "SQLMUX_TLS_CA, SQLMUX_TLS_CERT, SQLMUX_TLS_KEY.\n"
            "Exit status: 0 all succeeded, 1 a statement failed, 2 usage error or no\n"
            "connection (or it was lost, or the login was refused), 130 a script\n"
            "interrupted with Ctrl-C.\n");
}

static bool cli_set_variable(struct cli *c, const char *assignment)
{
    const char *eq = strchr(assignment, '=');
    if (eq == NULL || (size_t)(eq - assignment) != strlen("ON_ERROR_STOP") ||
        strncasecmp(assignment, "ON_ERROR_STOP", (size_t)(eq - assignment)) != 0)
        return false;
    const char *v = eq + 1;
    if (strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0 || strcasecmp(v, "true") == 0)
        c->bail = true;
    else if (strcmp(v, "0") == 0 || strcasecmp(v, "off") == 0 || strcasecmp(v, "false") == 0)
        c->bail = false;
    else
        return false;
    return true;
}

static bool cli_locale_utf8(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs != NULL && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "UTF8") == 0);
}

int main(int argc, char **argv)
{
    enum {
        OPT_CSV = 256,
        OPT_TSV,
        OPT_JSON,
        OPT_BOX,
        OPT_TABLE,
        OPT_EXPANDED,
        OPT_BAIL,
        OPT_NOHEADER,
        OPT_NULL,
        OPT_HELP,
        OPT_STATUS,
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"socket", required_argument, NULL, 's'},
        {"command", required_argument, NULL, 'c'},
        {"file", required_argument, NULL, 'f'},
        {"set", required_argument, NULL, 'v'},
        {"timeout", required_argument, NULL, 't'},
        {"user", required_argument, NULL, 'u'},
        {"password", no_argument, NULL, 'W'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, 'V'},
        {"csv", no_argument, NULL, OPT_CSV},
        {"tsv", no_argument, NULL, OPT_TSV},
        {"json", no_argument, NULL, OPT_JSON},
        {"box", no_argument, NULL, OPT_BOX},
        {"table", no_argument, NULL, OPT_TABLE},
        {"expanded", no_argument, NULL, OPT_EXPANDED},
        {"status", no_argument, NULL, OPT_STATUS},
        {"bail", no_argument, NULL, OPT_BAIL},
        {"no-header", no_argument, NULL, OPT_NOHEADER},
        {"null", required_argument, NULL, OPT_NULL},
        {NULL, 0, NULL, 0},
    };
    struct cli c;
    struct cli_input *inputs = calloc((size_t)argc + 1, sizeof *inputs);
    size_t ninputs = 0;
    const char *host = NULL, *port = NULL, *socket_path = NULL, *url = NULL;
    bool mode_set = false, ask_password = false;
    int opt;
    char urlbuf[512];

    memset(&c, 0, sizeof c);
    c.connect_timeout_ms = CLI_CONNECT_TIMEOUT_MS;
    c.fmt.out = stdout;
    c.fmt.header = true;
    if (inputs == NULL) {
        cli_note("out of memory");
        return CLI_EXIT_FATAL;
    }
    setlocale(LC_CTYPE, ""); /* for line editing and widths; never LC_NUMERIC */

    while ((opt = getopt_long(argc, argv, "-h:p:s:c:f:v:t:u:WqV?", longopts, NULL)) != -1) {
        switch (opt) {
        case 1: /* a positional argument, in order */
            if (strncmp(optarg, "sqlmux://", 9) == 0 || strncmp(optarg, "sqlmuxs://", 10) == 0 ||
                strncmp(optarg, "unix://", 7) == 0) {
                if (url != NULL) {
                    cli_note("more than one URL"); /* not shown: it may hold a password */
                    goto usage_quiet;
                }
                url = optarg;
            } else {
                inputs[ninputs++] = (struct cli_input){true, optarg};
            }
            break;
        case 'h': host = optarg; break;
        case 'p': port = optarg; break;
        case 's': socket_path = optarg; break;
        case 'u':
            if (*optarg == '\0') {
                cli_note("empty user name");
                goto usage_quiet;
            }
            c.user = optarg;
            break;
        case 'W': ask_password = true; break;
        case 'c': inputs[ninputs++] = (struct cli_input){false, optarg}; break;
        case 'f': inputs[ninputs++] = (struct cli_input){true, optarg}; break;
        case 'v':
            if (!cli_set_variable(&c, optarg)) {
                cli_note("unknown variable setting %s (only ON_ERROR_STOP=0|1 is known)", optarg);
                goto usage_quiet;
            }
            break;
        case 't': {
            char *end;
            double secs = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(secs > 0) || secs > 86400) {
                cli_note("bad timeout %s (want seconds, > 0)", optarg);
                goto usage_quiet;
            }
            c.timeout_ms = (int)ceil(secs * 1000);
            c.connect_timeout_ms = c.timeout_ms;
            break;
        }
        case 'q': c.quiet = true; break;
        case 'V':
            printf("sqlmux %s\n", SQLMUX_VERSION);
            free(inputs);
            return CLI_EXIT_OK;
        case OPT_CSV: c.fmt.mode = FORMAT_CSV, mode_set = true; break;
        case OPT_TSV: c.fmt.mode = FORMAT_TSV, mode_set = true; break;
        case OPT_JSON: c.fmt.mode = FORMAT_JSON, mode_set = true; break;
        case OPT_BOX: c.fmt.mode = FORMAT_BOX, mode_set = true; break;
        case OPT_TABLE: c.fmt.mode = FORMAT_TABLE, mode_set = true; break;
        case OPT_EXPANDED: c.fmt.mode = FORMAT_EXPANDED, mode_set = true; break;
        case OPT_STATUS: c.status_lines = true; break;
        case OPT_BAIL: c.bail = true; break;
        case OPT_NOHEADER: c.fmt.header = false; break;
        case OPT_NULL: c.fmt.null_text = optarg; break;
        case OPT_HELP:
            cli_usage(stdout);
            free(inputs);
            return CLI_EXIT_OK;
        case '?':
            /* "-?" is help; anything else getopt has just explained. */
            if (optind > 0 && strcmp(argv[optind - 1], "-?") == 0) {
                cli_usage(stdout);
                free(inputs);
                return CLI_EXIT_OK;
            }
            goto usage_quiet;
        default: goto usage_quiet;
        }
    }
    if ((url != NULL) + (socket_path != NULL) + (host != NULL || port != NULL) > 1) {
        cli_note("give one of URL, -s SOCKET, -h HOST/-p PORT");
        goto usage_quiet;
    }
    if (socket_path != NULL) {
        snprintf(urlbuf, sizeof urlbuf, "unix://%s", socket_path);
        url = urlbuf;
    } else if (host != NULL || port != NULL) {
        const char *h = host != NULL ? host : "127.0.0.1";
        bool v6 = strchr(h, ':') != NULL && h[0] != '[';
        snprintf(urlbuf, sizeof urlbuf, "sqlmux://%s%s%s:%s", v6 ? "[" : "", h, v6 ? "]" : "",
                 port != NULL ? port : "7654");
        url = urlbuf;
    }
    c.url = url; /* NULL: $SQLMUX_URL or the default, as libsqlmux does */

    bool utf8 = cli_locale_utf8();
    bool out_tty = isatty(STDOUT_FILENO);
    const char *term = getenv("TERM");
    bool color_ok = getenv("NO_COLOR") == NULL && (term == NULL || strcmp(term, "dumb") != 0);
    if (!mode_set)
        c.fmt.mode = out_tty ? (utf8 ? FORMAT_BOX : FORMAT_TABLE) : FORMAT_TSV;
    if (c.fmt.mode == FORMAT_BOX && !utf8 && !mode_set)
        c.fmt.mode = FORMAT_TABLE;
    c.fmt.utf8 = utf8;
    c.fmt.color = c.out_color = out_tty && color_ok;
    c.unexpanded = c.fmt.mode == FORMAT_EXPANDED ? (utf8 ? FORMAT_BOX : FORMAT_TABLE) : c.fmt.mode;
    c.err_color = isatty(STDERR_FILENO) && color_ok;
    if (c.fmt.null_text == NULL)
        c.fmt.null_text = c.fmt.mode == FORMAT_BOX ? "∅" : "NULL";
    c.interactive = ninputs == 0 && isatty(STDIN_FILENO);

    if (cli_signals_init() < 0) {
        cli_note("cannot set up signals: %s", strerror(errno));
        free(inputs);
        return CLI_EXIT_FATAL;
    }
    /* The password: asked for with -W, or when a user is known, neither
     * the URL nor $SQLMUX_PASSWORD gives one (libsqlmux reads those
     * itself), and the daemon asks for a login (a daemon without users
     * takes the connection as it is). */
    bool has_password = false;
    char *url_user = sqlmux_url_user(c.url, &has_password);
    const char *login = c.user != NULL ? c.user : url_user;
    char *err = NULL;
    bool connected = false;
    if (!ask_password) {
        connected = cli_try_connect(&c, &err);
        ask_password = !connected && login != NULL && !has_password && isatty(STDIN_FILENO) && err != NULL &&
                       strstr(err, ": NOAUTH ") != NULL;
        if (!connected && !ask_password)
            cli_note("%s", err != NULL ? err : "out of memory");
        free(err);
    }
    if (ask_password) {
        int rc = -1;
        if (login == NULL)
            cli_note("-W: whose password? Give the user with -u USER, the URL or $SQLMUX_USER");
        else
            rc = cli_ask_password(login, cli_password, sizeof cli_password);
        if (rc != 0) {
            free(url_user);
            free(inputs);
            return rc == CLI_EXIT_INTERRUPTED ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FATAL;
        }
        c.password = cli_password;
        connected = cli_connect(&c);
    }
    free(url_user);
    /* Only an interactive session connects again (after Ctrl-C or a lost
     * connection): a script needs the password no longer. */
    if (!c.interactive || !connected)
        cli_forget_password(&c);
    if (!connected) {
        free(inputs);
        return CLI_EXIT_FATAL;
    }
    if (c.interactive) {
        cli_interactive(&c);
    } else if (ninputs == 0) {
        cli_run_stream(&c, stdin, "<stdin>");
    } else {
        for (size_t i = 0; i < ninputs && !c.stop; i++) {
            if (inputs[i].is_file)
                cli_run_file(&c, inputs[i].arg);
            else
                cli_run_string(&c, inputs[i].arg);
        }
    }
    cli_disconnect(&c);
    cli_forget_password(&c);
    if (c.out_file != NULL && fclose(c.out_file) != 0) {
        cli_note("writing the output file failed: %s", strerror(errno));
        c.status = CLI_EXIT_FATAL;
    }
    free(c.user_owned);
    free(c.bind);
    free(inputs);
    fflush(stdout);
    return c.status;

usage_quiet:
    fprintf(stderr, "Try 'sqlmux --help'.\n");
    free(inputs);
    return CLI_EXIT_FATAL;
}
