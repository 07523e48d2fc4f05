# gate_bridge — PGXS build
EXTENSION   = gate_bridge
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big  = gate_bridge
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))

DATA        = $(wildcard sql/$(EXTENSION)--*.sql)

TESTS       = $(wildcard test/sql/*.sql)
REGRESS     = $(patsubst test/sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=$(EXTENSION)

ISOLATION   = $(patsubst test/specs/%.spec,%,$(wildcard test/specs/*.spec))
ISOLATION_OPTS = --inputdir=test --outputdir=test/isolation_out --load-extension=$(EXTENSION)

PG_CONFIG  ?= pg_config

PG_CFLAGS   += -Wall -Wextra -Werror
# The server's headers are not -Wextra clean; treat them as system headers.
PG_CPPFLAGS += -isystem $(shell $(PG_CONFIG) --includedir-server)


EXTRA_CLEAN = test/results test/regression.diffs test/regression.out test/isolation_out \
              gate-bridge

# The command line, a libpq client.  PGXS's PROGRAM cannot be used beside
# MODULE_big, so it has rules of its own below.
CLI_SRCS    = $(wildcard cli/*.c)
CLI_HEADERS = $(wildcard cli/*.h)

PGXS       := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track headers
$(OBJS): $(wildcard src/*.h)

all: gate-bridge

gate-bridge: $(CLI_SRCS) $(CLI_HEADERS)
	$(CC) $(CFLAGS) -std=c99 -D_GNU_SOURCE -I$(includedir) $(CLI_SRCS) \
		$(LDFLAGS) $(LDFLAGS_EX) -L$(libdir) -lpq -o $@

install: install-cli
install-cli: gate-bridge
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) gate-bridge '$(DESTDIR)$(bindir)/gate-bridge'

uninstall: uninstall-cli
uninstall-cli:
	rm -f '$(DESTDIR)$(bindir)/gate-bridge'

.PHONY: install-cli uninstall-cli
