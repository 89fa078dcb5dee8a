/*
 * Logging to stderr: one line per event, "time LEVEL [cN] message".
 * Safe to call from any thread (each line is one fprintf). The level is
 * process-wide: set once at start-up from the config.
 */
#ifndef SQLMUX_DAEMON_LOG_H
#define SQLMUX_DAEMON_LOG_H

#include "conf/config.h"

void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);
__attribute__((format(printf, 2, 3))) void log_msg(enum log_level level, const char *fmt, ...);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                       \
    do {                                                                                                     \
        if (log_enabled(LOG_DEBUG))                                                                          \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                                 \
    } while (0)

#endif
