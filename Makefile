# gate_bridge — PGXS build
EXTENSION   = gate_bridge
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big  = gate_bridge
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))

# Shipped scripts (the 1.0 install script and every update script) are
# frozen; sql/SHIPPED lists their checksums.  The newest full install script
# has one source, sql/$(EXTENSION).sql, copied to its versioned name at build
# time.
DATA        = sql/$(EXTENSION)--1.0.sql $(wildcard sql/$(EXTENSION)--*--*.sql)
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql

# pg_regress golden files live in the top-level expected/ (test/expected is
# a link to it, since pg_regress reads <inputdir>/expected); isolation specs
# and their expected output live under test/isolation.
TESTS       = $(wildcard test/sql/*.sql)
REGRESS     = $(patsubst test/sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=$(EXTENSION)

ISOLATION   = $(patsubst test/isolation/specs/%.spec,%,$(wildcard test/isolation/specs/*.spec))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=test/isolation_out --load-extension=$(EXTENSION)

PG_CONFIG  ?= pg_config

PG_CFLAGS   += -Wall -Wextra -Werror
# The server's headers are not -Wextra clean; treat them as system headers.
PG_CPPFLAGS += -isystem $(shell $(PG_CONFIG) --includedir-server)
# the one version number, for the library's check of the installed objects
PG_CPPFLAGS += -DGB_VERSION='"$(EXTVERSION)"'


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
src/privileged.o: $(EXTENSION).control

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

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
