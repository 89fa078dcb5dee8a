# sqlmux: `make` builds, `make run` starts the daemon on the example config,
# `make test` runs every test. Both install missing apt packages when run
# as root (see deps below). SANITIZE=1 builds with ASan+UBSan into
# build-san/.

CC      ?= cc
PKGS    := libuv inih sqlite3
APT_PKGS := libuv1-dev libinih-dev libsqlite3-dev pkg-config python3

ifeq ($(SANITIZE),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
OPT     := -O1 -g
else
BUILD   := build
SANFLAGS :=
OPT     := -O2 -g
endif

WARN    := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes \
           -Wformat=2 -Wshadow -Wundef -Wpointer-arith
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(SANFLAGS) -I. -MMD -MP
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS  += $(PKG_LIBS) -lpthread -lm
LDFLAGS += $(SANFLAGS)

PROTO_SRC  := proto/buf.c proto/codec.c
CONF_SRC   := conf/config.c
ROUTER_SRC := daemon/router.c
DAEMON_SRC := daemon/main.c daemon/server.c daemon/session.c daemon/commands.c \
              daemon/routecache.c daemon/backend.c daemon/backend_sqlite.c daemon/log.c

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

LIB_OBJ    := $(call obj,$(PROTO_SRC) $(CONF_SRC) $(ROUTER_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))

UNIT_TESTS := $(basename $(notdir $(wildcard tests/unit/test_*.c)))
UNIT_BINS  := $(addprefix $(BUILD)/tests/,$(UNIT_TESTS))

.PHONY: all deps run test unit integration clean check-config
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
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

run: deps
	$(MAKE) all
	$(BUILD)/sqlmuxd conf/sqlmux.ini

check-config: all
	$(BUILD)/sqlmuxd --check-config conf/sqlmux.ini

unit: $(UNIT_BINS)
integration: all

test: deps
	$(MAKE) all unit
	BUILD=$(BUILD) tests/run

clean:
	rm -rf build build-san

-include $(shell find build build-san -name '*.d' 2>/dev/null)

# ---- client: libsqlmux and the sqlmux CLI --------------------------------
# (rules for client/ go here)
