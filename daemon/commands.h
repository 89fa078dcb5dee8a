/*
 * Dot-commands (commands.c): `.name args` lines a session hands over
 * instead of SQL. A command answers through the session's reply
 * functions; one that needs every bind's database (.tables, .migrations,
 * .save) runs one job per bind in turn, each finished by a completion
 * callback of commands.c, so neither the session nor the backends know
 * what a command is. Loop thread only.
 */
#ifndef SQLMUX_DAEMON_COMMANDS_H
#define SQLMUX_DAEMON_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/backend.h"

struct session;

/* A command that runs one job per bind, in order, in progress on a
 * session (the session holds it; only commands.c reads or writes it). */
struct command_fanout {
    bool running;
    enum job_type type; /* what each bind's job does */
    size_t next, end;   /* the binds still to do: srv->binds[next..end) */
    uint64_t rows;      /* rows answered so far */
};

/* Handle one dot-command line (without its dot; not NUL-terminated). */
void commands_dispatch(struct session *s, const char *line, size_t len);

#endif
