/* `sqlmuxd passwd`: print the hash of a password for a [user.NAME] section. */
#ifndef SQLMUX_DAEMON_PASSWD_CLI_H
#define SQLMUX_DAEMON_PASSWD_CLI_H

/* argv: what follows "passwd". Returns the exit status. */
int passwd_main(int argc, char **argv);

#endif
