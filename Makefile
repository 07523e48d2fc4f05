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


EXTRA_CLEAN = test/results test/regression.diffs test/regression.out test/isolation_out

PGXS       := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track headers
$(OBJS): $(wildcard src/*.h)
