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
              gate-bridge dashboard_assets.c dashboard_assets.c.tmp docs_html

# The command line, a libpq client.  PGXS's PROGRAM cannot be used beside
# MODULE_big, so it has rules of its own below.  Its version is the control
# file's default_version.  "make install" also links it into CLI_LINK_DIR,
# which is on PATH (pg_config --bindir is not, on Debian); CLI_LINK_DIR=
# installs no link.
CLI_SRCS    = $(wildcard cli/*.c)
CLI_HEADERS = $(wildcard cli/*.h)
CLI_LINK_DIR ?= /usr/local/bin
CLI_LINK     = $(DESTDIR)$(CLI_LINK_DIR)/gate-bridge

PGXS       := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track headers
$(OBJS): $(wildcard src/*.h)
src/privileged.o: $(EXTENSION).control

sql/$(EXTENSION)--$(EXTVERSION).sql: sql/$(EXTENSION).sql
	cp $< $@

all: gate-bridge

# Built the way PostgreSQL's client programs are: libpq-fe.h from
# $(libpq_srcdir), pqexpbuffer.h from the internal headers (in PGXS's
# CPPFLAGS), linked with $(libpq_pgport).  $(LIBS) is left out: it names
# the libraries the server links with (libselinux, libpam, ...), whose
# development files Debian does not install with postgresql-server-dev,
# and a program that uses only libpq needs none of them.
#
# serve is also a libmicrohttpd server (threads: -pthread); its dashboard
# (cli/dashboard/) is embedded at build time by tools/embed-assets.sh.
# deliver sends with libcurl and signs webhooks with OpenSSL's HMAC.
CLI_ASSETS  = $(sort $(wildcard cli/dashboard/*))

# serve also carries the runbooks and the README, rendered by cmark-gfm
# (tools/render-doc.sh) and answered at their paths in the tree
# (/docs/runbooks/rerun_eval.md, /README.md), so that the registry's runbook
# URLs (docs/runbooks/NAME.md) and the documents' own links work from the
# dashboard.
CLI_DOCS      = README.md $(sort $(wildcard docs/runbooks/*.md))
CLI_DOC_FILES = $(CLI_DOCS) docs/dashboard.png
CLI_DOC_PAGES = $(patsubst %.md,docs_html/%.html,$(CLI_DOCS))

docs_html/%.html: %.md tools/render-doc.sh
	@mkdir -p $(dir $@)
	sh tools/render-doc.sh $< $@ $(CLI_DOC_FILES)

dashboard_assets.c: $(CLI_ASSETS) $(CLI_DOC_PAGES) docs/dashboard.png tools/embed-assets.sh
	sh tools/embed-assets.sh $@ $(CLI_ASSETS) \
		$(foreach d,$(CLI_DOCS),$(patsubst %.md,docs_html/%.html,$(d))=/$(d)) \
		docs/dashboard.png=/docs/dashboard.png

gate-bridge: $(CLI_SRCS) $(CLI_HEADERS) dashboard_assets.c $(EXTENSION).control
	$(CC) $(CFLAGS) -std=c99 -D_GNU_SOURCE -pthread -I$(libpq_srcdir) -Icli $(CPPFLAGS) \
		-DGB_CLI_VERSION='"$(EXTVERSION)"' $(CLI_SRCS) dashboard_assets.c \
		$(LDFLAGS) $(LDFLAGS_EX) $(libpq_pgport) -lmicrohttpd -lcurl -lcrypto -o $@

install: install-cli
install-cli: gate-bridge
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) gate-bridge '$(DESTDIR)$(bindir)/gate-bridge'
ifneq ($(CLI_LINK_DIR),)
	$(MKDIR_P) '$(DESTDIR)$(CLI_LINK_DIR)'
	@if [ -e '$(CLI_LINK)' ] && [ ! -L '$(CLI_LINK)' ]; then \
		echo "$(CLI_LINK) is a file, not a link: not replacing it (remove it, or install with CLI_LINK_DIR= for no link)" >&2; \
		exit 1; \
	fi
	ln -sfn '$(bindir)/gate-bridge' '$(CLI_LINK)'
endif

# The link goes only if it is ours: another installation's binary may own it.
uninstall: uninstall-cli
uninstall-cli:
	rm -f '$(DESTDIR)$(bindir)/gate-bridge'
ifneq ($(CLI_LINK_DIR),)
	if [ -L '$(CLI_LINK)' ] && [ "$$(readlink '$(CLI_LINK)')" = '$(bindir)/gate-bridge' ]; then rm -f '$(CLI_LINK)'; fi
endif

.PHONY: install-cli uninstall-cli
