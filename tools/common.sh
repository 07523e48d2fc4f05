# Shared by tools/demo, tools/test and bench/: install what is missing,
# build and install the extension.  Sourced, not run.

GB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GB_PGVERSION=${GB_PGVERSION:-15}
# the one version number: the control file's default_version
GB_EXTVERSION=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$GB_ROOT/gate_bridge.control")
GB_PACKAGES="postgresql-$GB_PGVERSION postgresql-server-dev-$GB_PGVERSION \
postgresql-$GB_PGVERSION-pgtap postgresql-$GB_PGVERSION-cron libtap-parser-sourcehandler-pgtap-perl \
postgresql-contrib libpq-dev libdbd-pg-perl gcc make \
python3-psycopg python3-psycopg2 python3-sqlalchemy pgbouncer python3-jsonschema \
libmicrohttpd-dev libcurl4-openssl-dev libssl-dev chromium chromium-driver python3-selenium python3-pytest \
python3-prometheus-client python3-requests curl python3-scipy python3-statsmodels cmark-gfm"

gb_say() { printf '== %s\n' "$*" >&2; }

# Install the Debian packages that are not there yet (needs root or sudo).
gb_install_deps() {
	local missing=() p
	for p in $GB_PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
			missing+=("$p")
	done
	# Node.js for examples/node_listener.js: Debian's nodejs and npm, unless
	# a Node.js with npm is there already (some machines bring their own,
	# which Debian's npm and node-* packages cannot be installed beside)
	command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
	if [ ${#missing[@]} -gt 0 ]; then
		gb_say "installing ${missing[*]}"
		local sudo=
		[ "$(id -u)" -eq 0 ] || sudo=sudo
		$sudo apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	# node-postgres, as examples/package-lock.json pins it
	if [ ! -e "$GB_ROOT/examples/node_modules/pg/package.json" ]; then
		gb_say "installing node-postgres into examples/node_modules"
		(cd "$GB_ROOT/examples" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	fi
}

# Build with warnings as errors and install into the server's directories.
gb_build_install() {
	local sudo=
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	export PG_CONFIG=/usr/lib/postgresql/$GB_PGVERSION/bin/pg_config
	gb_say "building gate_bridge"
	make -C "$GB_ROOT" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	$sudo make -C "$GB_ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# A TCP port that no server on this machine listens on: pg_virtualenv -t
# picks one among its own clusters only, and others may be running.
gb_free_port() {
	local p
	for _ in $(seq 50); do
		p=$((55000 + RANDOM % 5000))
		if [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ] &&
			! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}
