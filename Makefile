# sqlmux: `make` builds, `make run` starts the daemon on the example config,
# `make test` runs every test. Both install missing apt packages when run
# as root (see deps below). SANITIZE=1 builds with ASan+UBSan into
# build-san/.

CC      ?= cc
PKGS    := libuv liburing inih sqlite3 libpq libssl libcrypto libsystemd libxcrypt zlib
APT_PKGS := zlib1g-dev libuv1-dev liburing-dev libinih-dev libsqlite3-dev libpq-dev libssl-dev libcrypt-dev postgresql-15 pkg-config python3 libedit-dev libmimalloc-dev tmux libsystemd-dev systemd python3-dev python3-sqlalchemy python3-flask-sqlalchemy python3-flask-migrate python3-alembic python3-pytest python3-psycopg2

# The daemon allocates with mimalloc (as Redis ships with jemalloc): its
# point reads make a few small allocations each, most of them SQLite's
# (Debian builds SQLite without lookaside), and glibc's malloc and free
# cost 5-7% of such a read (tests/bench/RESULTS.md, "Issue 18, session
# 9"). Linked ahead of libc, it replaces malloc for the whole process.
# The ASan build keeps glibc's (ASan brings its own); MALLOC= links
# glibc's into a plain build too. Only the daemon: libsqlmux and the CLI
# leave the allocator of the program that uses them alone.
ifeq ($(SANITIZE),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT     := -O1 -g
MALLOC  :=
else
BUILD   := build
SANFLAGS :=
OPT     := -O2 -g
MALLOC  ?= mimalloc
endif
comma := ,
MALLOC_LIBS := $(if $(MALLOC),-Wl$(comma)--no-as-needed -l$(MALLOC) -Wl$(comma)--as-needed)

WARN    := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wshadow -Wundef -Wpointer-arith
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(SANFLAGS) -I. -MMD -MP
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
LDFLAGS += $(SANFLAGS)

PROTO_SRC  := proto/buf.c proto/codec.c
CONF_SRC   := conf/config.c
ROUTE_SRC  := daemon/route.c daemon/catalog.c daemon/sqlparse.c daemon/sqlparse_heads.c daemon/sqlparse_names.c daemon/sqllex.c \
              daemon/sqlnorm.c
XLOG_SRC   := daemon/xact_log.c
DAEMON_SRC := daemon/main.c daemon/server.c daemon/catalog_refresh.c daemon/session.c daemon/session_xact.c daemon/session_io.c daemon/session_auth.c daemon/commands.c \
              daemon/backend.c daemon/backend_sqlite.c daemon/sqlite_conn.c daemon/sqlite_exec.c daemon/sqlite_quick.c daemon/sqlite_memory.c daemon/nowait_vfs.c daemon/federate.c daemon/federate_exec.c daemon/federate_refs.c daemon/federate_semi.c daemon/backend_pg.c daemon/pg_conn.c daemon/pg_exec.c \
              daemon/log.c daemon/loopwatch.c daemon/idlepoll.c daemon/sendbatch.c daemon/fsutil.c daemon/service.c daemon/auth.c daemon/authq.c daemon/tls.c daemon/passwd_cli.c daemon/migrate.c daemon/migrate_sqlite.c daemon/migrate_pg.c daemon/migrate_cli.c daemon/snapshot.c daemon/pgvtab.c daemon/pgvtab_plan.c daemon/pgvtab_values.c daemon/pgvtab_write.c daemon/pg_2pc.c \
              daemon/xact.c daemon/xact_attach.c daemon/xact_recover.c daemon/xact_pg.c daemon/xact_lend.c

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

LIB_OBJ    := $(call obj,$(PROTO_SRC) $(CONF_SRC) $(ROUTE_SRC) $(XLOG_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))

UNIT_TESTS := $(basename $(notdir $(wildcard tests/unit/test_*.c)))
UNIT_BINS  := $(addprefix $(BUILD)/tests/,$(UNIT_TESTS))

.PHONY: all deps run test unit integration clean check-config lint
all: $(BUILD)/sqlmuxd

# Install what the build and tests need: as root with apt, otherwise print
# the exact command and stop.
deps:
	@missing=""; for p in $(APT_PKGS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        echo "installing:$$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	    else \
	        echo "missing packages; run: sudo apt-get install -y$$missing"; exit 1; \
	    fi; \
	fi

$(BUILD)/sqlmuxd: $(DAEMON_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -o $@ $(MALLOC_LIBS) $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The PostgreSQL virtual table's test links the module, pg_2pc.c and libpq;
# tests/integration/test_pgvtab.py runs it against a PostgreSQL it starts.
$(BUILD)/tests/test_pgvtab: $(BUILD)/tests/unit/test_pgvtab.o $(BUILD)/daemon/pgvtab.o $(BUILD)/daemon/pgvtab_plan.o $(BUILD)/daemon/pgvtab_values.o $(BUILD)/daemon/pgvtab_write.o $(BUILD)/daemon/pg_2pc.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A tool of the integration tests: reads and writes the coordinator log.
$(BUILD)/tests/xact_log_tool: $(BUILD)/tests/tools/xact_log_tool.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

run: deps
	$(MAKE) all
	$(BUILD)/sqlmuxd conf/sqlmux.ini

check-config: all
	$(BUILD)/sqlmuxd --check-config conf/sqlmux.ini

unit: $(UNIT_BINS) $(BUILD)/tests/xact_log_tool
integration: all

test: deps
	$(MAKE) all unit
	BUILD=$(BUILD) tests/run

# `make lint`: every tracked C file formatted as .clang-format says
# (clang-format --dry-run; `clang-format -i FILE` fixes one), and cppcheck's
# warning and portability checks clean on the daemon, the protocol and the
# config loader; and tests/tools/layers.py: no cycle of includes or calls
# (nm of the daemon's objects, so it builds them) through a backend or the
# dot-commands. Installs clang-format and cppcheck with apt as root.
LINT_PKGS := clang-format cppcheck binutils
lint:
	@$(MAKE) --no-print-directory deps APT_PKGS="$(APT_PKGS) $(LINT_PKGS)"
	@git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror
	@cppcheck --quiet --std=c11 --enable=warning,portability --inline-suppr -D_GNU_SOURCE -I. \
	    --error-exitcode=1 daemon/ proto/ conf/
	@$(MAKE) --no-print-directory lint-objects
	@/usr/bin/python3 tests/tools/layers.py --objects $(BUILD)/daemon
	@echo "lint: clean"

.PHONY: lint-objects
lint-objects: $(DAEMON_OBJ)

clean:
	rm -rf build build-san build-fuzz

-include $(shell find build build-san -name '*.d' 2>/dev/null)

# ---- install ---------------------------------------------------------------
# `make install` (PREFIX, default /usr/local; DESTDIR for staging) puts
# sqlmuxd in $(SBINDIR), the systemd units (with these paths filled in) in
# $(UNITDIR), the sysusers.d file in $(SYSUSERSDIR), the README and
# PROTOCOL.md in $(DOCDIR), and the example service config in
# $(SYSCONFDIR)/sqlmux/sqlmux.ini unless that file exists (an edited config
# is never overwritten); the client section below adds the CLI, library,
# header and sqlmux.pc. `make uninstall` removes all of it, the config only
# when it is unchanged. README.md ("Installing") lists every path.

PREFIX      ?= /usr/local
SBINDIR     ?= $(PREFIX)/sbin
SYSCONFDIR  ?= /etc
DOCDIR      ?= $(PREFIX)/share/doc/sqlmux
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
UNIT_SED     = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g'

.PHONY: install install-daemon uninstall uninstall-daemon
install: install-daemon
install-daemon: $(BUILD)/sqlmuxd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(DOCDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/sqlmux
	install -m 755 $(BUILD)/sqlmuxd $(DESTDIR)$(SBINDIR)/sqlmuxd
	$(UNIT_SED) systemd/sqlmux.service.in > $(DESTDIR)$(UNITDIR)/sqlmux.service
	$(UNIT_SED) systemd/sqlmux.socket.in > $(DESTDIR)$(UNITDIR)/sqlmux.socket
	chmod 644 $(DESTDIR)$(UNITDIR)/sqlmux.service $(DESTDIR)$(UNITDIR)/sqlmux.socket
	install -m 644 systemd/sqlmux.sysusers $(DESTDIR)$(SYSUSERSDIR)/sqlmux.conf
	install -m 644 README.md proto/PROTOCOL.md $(DESTDIR)$(DOCDIR)/
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini ]; then \
	    echo "keeping $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini"; \
	else \
	    echo "install -m 644 systemd/sqlmux.ini $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini"; \
	    install -m 644 systemd/sqlmux.ini $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini; \
	fi

# Also removes what install-client installed (BINDIR, LIBDIR and
# INCLUDEDIR come from the client section).
uninstall: uninstall-daemon
uninstall-daemon:
	rm -f $(DESTDIR)$(SBINDIR)/sqlmuxd $(DESTDIR)$(UNITDIR)/sqlmux.service $(DESTDIR)$(UNITDIR)/sqlmux.socket \
	    $(DESTDIR)$(SYSUSERSDIR)/sqlmux.conf $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/PROTOCOL.md
	rm -f $(DESTDIR)$(BINDIR)/sqlmux $(DESTDIR)$(INCLUDEDIR)/sqlmux.h $(DESTDIR)$(LIBDIR)/libsqlmux.a \
	    $(DESTDIR)$(LIBDIR)/libsqlmux.so $(DESTDIR)$(LIBDIR)/libsqlmux.so.0 $(DESTDIR)$(LIBDIR)/pkgconfig/sqlmux.pc
	@if cmp -s systemd/sqlmux.ini $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini; then \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini ]; then \
	    echo "keeping $(DESTDIR)$(SYSCONFDIR)/sqlmux/sqlmux.ini (changed since install)"; \
	fi
	rmdir $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/sqlmux 2>/dev/null || true

# ---- client: libsqlmux and the sqlmux CLI --------------------------------
# libsqlmux.a and libsqlmux.so.0 export only the sqlmux_* API of
# client/sqlmux.h: their objects (the library and the proto/ codec) are
# built with -fPIC -fvisibility=hidden into $(BUILD)/pic/, and the static
# library's copy of the codec is made local, so a program may have its own
# buf_* or codec_* names. `make install` (PREFIX, DESTDIR) installs the
# header, both libraries, sqlmux.pc and the sqlmux CLI.

CLIENT_VERSION := 0.1.0
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
EDIT_LIBS  = $(shell pkg-config --libs libedit 2>/dev/null || echo -ledit)

CLIENT_LIB_SRC := client/sqlmux.c client/tls.c $(PROTO_SRC)
# OpenSSL, for sqlmuxs:// connections (client/tls.c).
TLS_LIBS       = $(shell pkg-config --libs libssl libcrypto 2>/dev/null || echo -lssl -lcrypto)
CLIENT_PIC_OBJ := $(patsubst %.c,$(BUILD)/pic/%.o,$(CLIENT_LIB_SRC))
CLI_SRC        := client/cli.c client/dump.c client/format.c client/split.c
CLI_OBJ        := $(call obj,$(CLI_SRC))
CLIENT_TESTS   := $(BUILD)/tests/test_client_split $(BUILD)/tests/client/libtest

all: $(BUILD)/sqlmux $(BUILD)/libsqlmux.a $(BUILD)/libsqlmux.so $(BUILD)/sqlmux.pc $(BUILD)/sqlmux-example
unit: $(CLIENT_TESTS)

$(BUILD)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -c -o $@ $<

$(BUILD)/libsqlmux.a: $(CLIENT_PIC_OBJ)
	$(LD) -r -o $(BUILD)/pic/libsqlmux-all.o $^
	objcopy --localize-hidden $(BUILD)/pic/libsqlmux-all.o
	rm -f $@
	$(AR) rcs $@ $(BUILD)/pic/libsqlmux-all.o

$(BUILD)/libsqlmux.so.0: $(CLIENT_PIC_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libsqlmux.so.0 -o $@ $^ $(TLS_LIBS) -lpthread

$(BUILD)/libsqlmux.so: $(BUILD)/libsqlmux.so.0
	ln -sf libsqlmux.so.0 $@

# The pkg-config file of the build tree (its prefix is the build folder),
# for the tests; `make install` writes the installed one.
$(BUILD)/sqlmux.pc: client/sqlmux.pc.in client/sqlmux.h
	@mkdir -p $(BUILD)/include
	cp client/sqlmux.h $(BUILD)/include/sqlmux.h
	sed -e 's|@PREFIX@|$(abspath $(BUILD))|' -e 's|@LIBDIR@|$${prefix}|' \
	    -e 's|@INCLUDEDIR@|$${prefix}/include|' -e 's|@VERSION@|$(CLIENT_VERSION)|' $< > $@

$(BUILD)/sqlmux: $(CLI_OBJ) $(BUILD)/libsqlmux.a $(BUILD)/proto/buf.o $(BUILD)/proto/codec.o
	$(CC) $(LDFLAGS) -o $@ $^ $(EDIT_LIBS) $(TLS_LIBS) -lpthread -lm

# The README's example, linked against the shared library; it includes
# <sqlmux.h> as an installed program would.
$(BUILD)/client/example.o: CFLAGS += -Iclient
$(BUILD)/sqlmux-example: $(BUILD)/client/example.o $(BUILD)/libsqlmux.so
	$(CC) $(LDFLAGS) -o $@ $< -L$(BUILD) -lsqlmux -Wl,-rpath,'$$ORIGIN'

$(BUILD)/tests/test_client_split: $(BUILD)/tests/client/test_split.o $(BUILD)/client/split.o $(BUILD)/proto/buf.o
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^

# Driven by tests/integration/test_libsqlmux.py against a real daemon.
$(BUILD)/tests/client/libtest: $(BUILD)/tests/client/libtest.o $(BUILD)/libsqlmux.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TLS_LIBS) -lpthread -lm

.PHONY: install install-client
install: install-client
install-client: $(BUILD)/sqlmux $(BUILD)/libsqlmux.a $(BUILD)/libsqlmux.so
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 755 $(BUILD)/sqlmux $(DESTDIR)$(BINDIR)/sqlmux
	install -m 644 client/sqlmux.h $(DESTDIR)$(INCLUDEDIR)/sqlmux.h
	install -m 644 $(BUILD)/libsqlmux.a $(DESTDIR)$(LIBDIR)/libsqlmux.a
	install -m 755 $(BUILD)/libsqlmux.so.0 $(DESTDIR)$(LIBDIR)/libsqlmux.so.0
	ln -sf libsqlmux.so.0 $(DESTDIR)$(LIBDIR)/libsqlmux.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(CLIENT_VERSION)|' client/sqlmux.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/sqlmux.pc

# ---- bench ----------------------------------------------------------------
# `make bench` measures sqlmux side by side with Redis, the sqlite3 CLI,
# PostgreSQL and PgBouncer (tests/bench/run starts and stops every server;
# as root it installs the missing ones with apt) and writes the table to
# tests/bench/RESULTS.md. It is not part of `make test`, which only runs the
# load generator for a second (tests/integration/test_bench_smoke.py).

.PHONY: bench
all: $(BUILD)/loadgen

$(BUILD)/loadgen: $(BUILD)/tests/bench/loadgen.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bench: all
	BUILD=$(BUILD) tests/bench/run

# ---- fuzz ----------------------------------------------------------------
# libFuzzer targets (clang) for the request codec, the SQL analysis and the
# config loader, with ASan+UBSan. `make fuzz` runs each for FUZZ_SECONDS
# on its committed seed corpus (new inputs go to a temp folder; crashes are
# written to build-fuzz/). Not part of `make test`.
FUZZ_SECONDS ?= 30
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE -g -O1 -I. -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

.PHONY: fuzz
build-fuzz/fuzz_request: tests/fuzz/fuzz_request.c proto/buf.c proto/codec.c
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -lm
build-fuzz/fuzz_sqlparse: tests/fuzz/fuzz_sqlparse.c daemon/sqlparse.c daemon/sqlparse_heads.c daemon/sqlparse_names.c daemon/sqllex.c
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^
build-fuzz/fuzz_sqlnorm: tests/fuzz/fuzz_sqlnorm.c daemon/sqlnorm.c daemon/sqllex.c
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^
build-fuzz/fuzz_config: tests/fuzz/fuzz_config.c conf/config.c proto/buf.c proto/codec.c daemon/route.c daemon/catalog.c daemon/sqlparse.c daemon/sqlparse_heads.c daemon/sqlparse_names.c daemon/sqllex.c
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $^ -linih -lcrypt -lm

fuzz: build-fuzz/fuzz_request build-fuzz/fuzz_sqlparse build-fuzz/fuzz_sqlnorm build-fuzz/fuzz_config
	@for t in request sqlparse sqlnorm config; do \
	    tmp=$$(mktemp -d); \
	    echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	    if (cd build-fuzz && ./fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	            $$tmp ../tests/fuzz/corpus/$$t > fuzz_$$t.log 2>&1); then \
	        grep -E 'stat::number_of_executed_units|new_units_added' build-fuzz/fuzz_$$t.log; \
	    else \
	        tail -40 build-fuzz/fuzz_$$t.log; rm -rf $$tmp; exit 1; \
	    fi; \
	    rm -rf $$tmp; \
	done

# ---- valgrind ------------------------------------------------------------
# `make valgrind` builds the plain build, then runs tests/run (the unit
# tests natively, the integration suite with every daemon under valgrind
# memcheck: tests/tools/valgrind-sqlmuxd, through the link
# build/sqlmuxd-valgrind). A memory error or a leak makes a daemon exit 99
# instead of 0 after SIGTERM, which fails its test. The harness multiplies
# its timeouts by VALGRIND_SCALE and skips the few tests that measure what
# valgrind changes ("# SKIP"). VALGRIND_JOBS tests at a time; VALGRIND_TESTS
# selects tests by name as tests/run does. Not part of `make test`.
VALGRIND_JOBS  ?= 3
VALGRIND_SCALE ?= 10
VALGRIND_TESTS ?=

.PHONY: valgrind
valgrind: deps
	@command -v valgrind >/dev/null || { \
	    if [ "$$(id -u)" = 0 ]; then \
	        echo "installing: valgrind"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null || exit 1; \
	    else \
	        echo "valgrind is missing; run: sudo apt-get install -y valgrind"; exit 1; \
	    fi; }
	$(MAKE) SANITIZE= all unit
	ln -sf ../tests/tools/valgrind-sqlmuxd build/sqlmuxd-valgrind
	SQLMUX_VALGRIND=1 SQLMUX_TIMEOUT_SCALE=$(VALGRIND_SCALE) BUILD=build \
	    SQLMUXD=$(CURDIR)/build/sqlmuxd-valgrind SQLMUXD_REAL=$(CURDIR)/build/sqlmuxd \
	    tests/run -j $(VALGRIND_JOBS) $(VALGRIND_TESTS)

# ---- python: the DB-API driver and the SQLAlchemy dialect -----------------
# `make python` builds the sqlmux package for the system's /usr/bin/python3
# (Debian's, where apt's python3-sqlalchemy lives; a python3 earlier on PATH
# is not used) into $(BUILD)/python/: the C extension sqlmux/_sqlmux*.so,
# linked with libsqlmux.a, and the Python files of python/sqlmux/, plus a
# dist-info whose entry point registers the sqlmux:// dialect with
# SQLAlchemy. PYTHONPATH=$(BUILD)/python /usr/bin/python3 -c 'import sqlmux'
# then works. `make install` copies the same tree into PYTHON_SITEDIR.
SYS_PYTHON    ?= /usr/bin/python3
PY_INCLUDE     = $(shell $(SYS_PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
PY_EXT_SUFFIX  = $(shell $(SYS_PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
PY_VERSION     = $(shell $(SYS_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# Debian's python3 reads /usr/local/lib/python3.X/dist-packages.
PYTHON_SITEDIR ?= $(PREFIX)/lib/python$(PY_VERSION)/dist-packages
PY_SRC        := $(wildcard python/sqlmux/*.py)
PY_OUT        := $(BUILD)/python/sqlmux
PY_EXT         = $(PY_OUT)/_sqlmux$(PY_EXT_SUFFIX)
PY_DISTINFO   := $(BUILD)/python/sqlmux-$(CLIENT_VERSION).dist-info

.PHONY: python install-python uninstall-python python-missing
# `make` builds it when python3-dev is there; `make python` (and `make
# test`, which installs python3-dev first) always do.
all: $(if $(wildcard $(PY_INCLUDE)/Python.h),python,python-missing)
python-missing:
	@echo "note: the Python driver is not built: apt-get install python3-dev (or make deps), then make python"
python: $(PY_EXT) $(patsubst python/sqlmux/%,$(PY_OUT)/%,$(PY_SRC)) $(PY_DISTINFO)/entry_points.txt

# CPython's headers are system headers (-isystem), so the project's
# warnings apply to our code and not to theirs.
$(BUILD)/pic/python/sqlmux/_sqlmux.o: python/sqlmux/_sqlmux.c client/sqlmux.h
	@mkdir -p $(dir $@)
	@test -f "$(PY_INCLUDE)/Python.h" || { echo "Python.h missing: apt-get install python3-dev"; exit 1; }
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -isystem $(PY_INCLUDE) -c -o $@ $<

# Linked with libsqlmux's objects rather than libsqlmux.a, whose codec is
# made local: the extension decodes reals with the codec's own formatter.
$(PY_EXT): $(BUILD)/pic/python/sqlmux/_sqlmux.o $(CLIENT_PIC_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(TLS_LIBS) -lpthread

$(PY_OUT)/%.py: python/sqlmux/%.py
	@mkdir -p $(dir $@)
	cp $< $@

$(PY_DISTINFO)/entry_points.txt: Makefile
	@mkdir -p $(dir $@)
	printf 'Metadata-Version: 2.1\nName: sqlmux\nVersion: $(CLIENT_VERSION)\nSummary: DB-API driver and SQLAlchemy dialect for sqlmux\n' > $(PY_DISTINFO)/METADATA
	printf '[sqlalchemy.dialects]\nsqlmux = sqlmux.dialect:SQLmuxDialect\nsqlmux.sqlmux = sqlmux.dialect:SQLmuxDialect\nsqlmuxs = sqlmux.dialect:SQLmuxDialect\nsqlmuxs.sqlmux = sqlmux.dialect:SQLmuxDialect\n' > $@

install: install-python
install-python: python
	install -d $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux-$(CLIENT_VERSION).dist-info
	install -m 644 $(PY_OUT)/*.py $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux/
	install -m 755 $(PY_EXT) $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux/
	install -m 644 $(PY_DISTINFO)/METADATA $(PY_DISTINFO)/entry_points.txt \
	    $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux-$(CLIENT_VERSION).dist-info/

uninstall: uninstall-python
uninstall-python:
	rm -rf $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux $(DESTDIR)$(PYTHON_SITEDIR)/sqlmux-$(CLIENT_VERSION).dist-info
