#!/usr/bin/env bash
# Scheduling run_gates with pg_cron, on a throw-away cluster of its own
# (pg_cron must be in shared_preload_libraries).
#
#   test/cron/run.sh
#
# Needs the Debian package postgresql-15-cron and gate_bridge installed
# (make install).  Registers the hourly job the README shows, then proves
# that the same command really runs under pg_cron: it schedules it at the
# shortest interval the installed pg_cron offers ("5 seconds" from 1.5 on,
# every minute before), as a role holding nothing but EXECUTE on
# gate_bridge.run_gates, and waits for a succeeded run and the incident it
# opens.  Beside it, the nightly retention job the README shows
# (CALL gate_bridge.purge_eval_results(...)) runs at the same short
# interval as a role holding EXECUTE on the procedure alone: pg_cron must
# run it outside a transaction block, so that it can commit between
# batches, and it must delete the old rows and keep the others.  And
# tick(), at the same interval as the gates role granted EXECUTE on it: it
# must compact the folds of the gates job's later runs into the incident's
# row, the view counting each run once.  Prints
# "ok"/"not ok" lines; exits non-zero on any failure.
. "$(dirname "$0")/../../tools/common.sh"
set -uo pipefail

PGVER=${GB_PGVERSION:-15}

if [ -z "${GB_CRON_CLUSTER:-}" ]; then
	if ! dpkg-query -W -f='${Status}' "postgresql-$PGVER-cron" 2>/dev/null | grep -q 'ok installed'; then
		echo "not ok - package postgresql-$PGVER-cron is not installed (apt-get install -y postgresql-$PGVER-cron)"
		exit 1
	fi
	# a port no other server on this machine listens on (tools/common.sh)
	port=$(gb_free_port) || { echo "not ok - no free port for the cluster"; exit 1; }
	# Background workers run the jobs, so no password or pg_hba entry is
	# needed for the job's role.
	GB_CRON_CLUSTER=1 exec pg_virtualenv -t -v "$PGVER" -c "-p $port" \
		-o shared_preload_libraries=pg_cron \
		-o cron.database_name=postgres \
		-o cron.use_background_workers=on \
		-o max_worker_processes=16 \
		"$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
fi

# Inside the cluster: PGHOST, PGPORT, PGUSER, PGPASSWORD are set.
export PGDATABASE=postgres
n=0
failed=0
ok() {
	n=$((n + 1))
	echo "ok $n - $1"
}
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	[ -n "${2:-}" ] && printf '# %s\n' "$2"
}
check() {	# check DESCRIPTION EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1" "expected [$2], got [$3]"; fi
}
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }

q "CREATE EXTENSION pg_cron" && q "CREATE EXTENSION gate_bridge" ||
	{ not_ok "pg_cron and gate_bridge install"; exit 1; }
ok "pg_cron and gate_bridge install in a cluster that preloads pg_cron"

cron_ext=$(q "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")
cron_pkg=$(dpkg-query -W -f='${Version}' "postgresql-$PGVER-cron" 2>/dev/null)
echo "# pg_cron extension $cron_ext, Debian package postgresql-$PGVER-cron $cron_pkg"

# pg_cron 1.5 added schedules in seconds.
if [ "$(printf '%s\n%s\n' 1.5 "$cron_ext" | sort -V | head -1)" = "1.5" ]; then
	short='5 seconds'
	timeout=60
else
	short='* * * * *'
	timeout=150
fi
echo "# short schedule: '$short'"

# A failing agent; rows go in with the bridge off, so that the incident can
# only come from run_gates.
q "SET gate_bridge.enabled = off;
   INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
   VALUES ('regress.cron', 'quality', 0.9, 0.8, 0.5);
   INSERT INTO gate_bridge.eval_results (agent, quality) VALUES ('regress.cron', 0.25);" ||
	{ not_ok "test data"; exit 1; }
check "no incident before any job ran" 0 "$(q "SELECT count(*) FROM gate_bridge.incidents")"

# The hourly job, as the README gives it.
hourly=$(q "SELECT cron.schedule('gate_bridge_hourly', '0 * * * *',
						'SELECT gate_bridge.run_gates(create_incidents => true)')")
check "the hourly job is registered" \
	"gate_bridge_hourly|0 * * * *|SELECT gate_bridge.run_gates(create_incidents => true)|postgres|t" \
	"$(q "SELECT jobname, schedule, command, database, active FROM cron.job WHERE jobid = $hourly")"

# The same command at a short interval, as a role that holds EXECUTE on
# run_gates and nothing else of gate_bridge.
q "CREATE ROLE regress_cron_gates LOGIN;
   GRANT USAGE ON SCHEMA gate_bridge TO regress_cron_gates;
   GRANT EXECUTE ON FUNCTION gate_bridge.run_gates(text, interval, boolean, integer) TO regress_cron_gates;
   GRANT USAGE ON SCHEMA cron TO regress_cron_gates;" || { not_ok "job role"; exit 1; }
short_id=$(q "SET ROLE regress_cron_gates;
			   SELECT cron.schedule('gate_bridge_now', '$short',
						'SELECT gate_bridge.run_gates(create_incidents => true)')")
check "the short job is registered for the job role" \
	"gate_bridge_now|$short|regress_cron_gates|t" \
	"$(q "SELECT jobname, schedule, username, active FROM cron.job WHERE jobid = $short_id")"

[ -n "$short_id" ] || { echo "# $n checks, $((failed + 1)) failed"; exit 1; }

# tick() every minute, as the README gives it, and at the short interval as
# the job role, which may also execute tick(): it compacts the folds that
# the later runs of the gates job add to the incident.
tick=$(q "SELECT cron.schedule('gate_bridge_tick', '* * * * *', 'SELECT gate_bridge.tick()')")
check "the tick job is registered" \
	"gate_bridge_tick|* * * * *|SELECT gate_bridge.tick()" \
	"$(q "SELECT jobname, schedule, command FROM cron.job WHERE jobid = $tick")"
q "GRANT EXECUTE ON FUNCTION gate_bridge.tick() TO regress_cron_gates" || not_ok "grant tick"
tick_id=$(q "SET ROLE regress_cron_gates;
			  SELECT cron.schedule('gate_bridge_tick_now', '$short', 'SELECT gate_bridge.tick()')")
[ -n "$tick_id" ] && ok "the short tick job is registered for the job role" ||
	not_ok "the short tick job is registered for the job role"

# Retention: old rows of another agent, the README's nightly job, and the
# same command at the short interval as a role that may only CALL the
# procedure.  It runs in the same minute as the gates job.
q "SET gate_bridge.enabled = off;
   INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
   SELECT 'regress.cron.old', 0.95, now() - interval '100 days' - g * interval '1 hour'
	 FROM generate_series(1, 300) g;
   INSERT INTO gate_bridge.eval_results (agent, quality, created_at)
   SELECT 'regress.cron.old', 0.95, now() - interval '80 days' FROM generate_series(1, 7) g;" ||
	{ not_ok "retention test data"; exit 1; }
nightly=$(q "SELECT cron.schedule('gate_bridge_retention', '30 3 * * *',
						 \$\$CALL gate_bridge.purge_eval_results('90 days')\$\$)")
check "the nightly retention job is registered" \
	"gate_bridge_retention|30 3 * * *|CALL gate_bridge.purge_eval_results('90 days')" \
	"$(q "SELECT jobname, schedule, command FROM cron.job WHERE jobid = $nightly")"
q "CREATE ROLE regress_cron_purge LOGIN;
   GRANT USAGE ON SCHEMA gate_bridge TO regress_cron_purge;
   GRANT EXECUTE ON PROCEDURE gate_bridge.purge_eval_results(interval, integer, boolean, bigint)
	   TO regress_cron_purge;
   GRANT USAGE ON SCHEMA cron TO regress_cron_purge;" || { not_ok "purge job role"; exit 1; }
purge_id=$(q "SET ROLE regress_cron_purge;
			   SELECT cron.schedule('gate_bridge_purge_now', '$short',
						\$\$CALL gate_bridge.purge_eval_results('90 days', 100)\$\$)")
[ -n "$purge_id" ] && ok "the short purge job is registered for its role" ||
	not_ok "the short purge job is registered for its role"
echo "# waiting up to ${timeout}s for pg_cron to run the job"
status=
for _ in $(seq "$timeout"); do
	status=$(q "SELECT string_agg(DISTINCT status, ',') FROM cron.job_run_details
				 WHERE jobid = $short_id AND status IN ('succeeded', 'failed')") || break
	incidents=$(q "SELECT count(*) FROM gate_bridge.incidents") || break
	[ -n "$status" ] && [ "$incidents" -gt 0 ] && break
	case "$status" in *failed*) break ;; esac
	sleep 1
done
check "pg_cron ran the job and it succeeded" "succeeded" "$status"
details=$(q "SELECT status || ': ' || return_message FROM cron.job_run_details
			  WHERE jobid = $short_id ORDER BY runid LIMIT 1")
echo "# first run: ${details:-none}"
check "the run opened the agent's incident" \
	"budget|BUDGET_regress.cron_quality|sev1|open|run_gates|regress_cron_gates" \
	"$(q "SELECT kind, key, severity, status, details->'context'->>'triggered_by',
				 details->'context'->>'session_user'
			FROM gate_bridge.incidents ORDER BY id LIMIT 1")"
check "one incident, one created event (later runs fold into it)" "1|1" \
	"$(q "SELECT (SELECT count(*) FROM gate_bridge.incidents),
				 (SELECT count(*) FROM gate_bridge.incident_events WHERE event = 'created')")"

# a snoozed incident of another agent whose snooze is over: the tick job
# puts it back to open, a lifecycle transition made under pg_cron
q "SELECT gate_bridge.on_budget_violation('{\"agent\": \"regress.cron.snz\", \"budget_type\": \"latency\",
		  \"severity\": \"warning\", \"actual\": 900, \"threshold\": 500}');
   SELECT gate_bridge.snooze(i.id, '1 hour', 'regress_oncall')
	 FROM gate_bridge.incidents i WHERE i.agent = 'regress.cron.snz';
   UPDATE gate_bridge.incident_rows SET snoozed_until = now() - interval '1 second'
	WHERE agent = 'regress.cron.snz';" >/dev/null || not_ok "a snoozed incident"

# the gates job folds each later run into the incident; a tick run after
# such a fold adds it into incident_rows
tick_status=
compacted=
expired=
for _ in $(seq $((timeout * 2))); do
	tick_status=$(q "SELECT string_agg(DISTINCT status, ',') FROM cron.job_run_details
					  WHERE jobid = ${tick_id:-0} AND status IN ('succeeded', 'failed')") || break
	compacted=$(q "SELECT count(*) FROM gate_bridge.incident_rows WHERE occurrences > 1") || break
	expired=$(q "SELECT count(*) FROM gate_bridge.incident_events
				  WHERE event = 'snooze_expired' AND actor = 'gate_bridge'") || break
	[ "$tick_status" = succeeded ] && [ "$compacted" -gt 0 ] && [ "$expired" -gt 0 ] && break
	case "$tick_status" in *failed*) break ;; esac
	sleep 1
done
check "pg_cron ran the tick job and it succeeded" "succeeded" "$tick_status"
check "a tick run compacted the gates job's folds into the incident's row" 1 "$compacted"
check "a tick run ended the snooze once: the incident is open again" "open||1" \
	"$(q "SELECT i.status, i.snoozed_until,
				 (SELECT count(*) FROM gate_bridge.incident_events e
				   WHERE e.incident_id = i.id AND e.event = 'snooze_expired')
			FROM gate_bridge.incidents i WHERE i.agent = 'regress.cron.snz'")"
check "the view counts every violation: occurrences = runs of the gates job that succeeded" \
	"t" "$(q "SELECT (SELECT occurrences FROM gate_bridge.incidents ORDER BY id LIMIT 1)
					 BETWEEN (SELECT count(*) FROM cron.job_run_details
							   WHERE jobid = $short_id AND status = 'succeeded')
						 AND (SELECT count(*) FROM cron.job_run_details WHERE jobid = $short_id)")"
q "SET ROLE regress_cron_gates; SELECT cron.unschedule('gate_bridge_tick_now')" >/dev/null
q "SELECT cron.unschedule('gate_bridge_tick')" >/dev/null

purge_status=
for _ in $(seq "$timeout"); do
	purge_status=$(q "SELECT string_agg(DISTINCT status, ',') FROM cron.job_run_details
					   WHERE jobid = ${purge_id:-0} AND status IN ('succeeded', 'failed')") || break
	[ -n "$purge_status" ] && break
	sleep 1
done
check "pg_cron ran the purge job and it succeeded (it could commit between batches)" \
	"succeeded" "$purge_status"
details=$(q "SELECT status || ': ' || return_message FROM cron.job_run_details
			  WHERE jobid = ${purge_id:-0} ORDER BY runid LIMIT 1")
echo "# first purge run: ${details:-none}"
check "it deleted the rows older than 90 days and kept the others" "7|1" \
	"$(q "SELECT count(*) FILTER (WHERE agent = 'regress.cron.old'),
				 count(*) FILTER (WHERE agent = 'regress.cron')
			FROM gate_bridge.eval_results")"
q "SET ROLE regress_cron_purge; SELECT cron.unschedule('gate_bridge_purge_now')" >/dev/null
q "SELECT cron.unschedule('gate_bridge_retention')" >/dev/null
q "DROP OWNED BY regress_cron_purge; DROP ROLE regress_cron_purge" ||
	not_ok "dropping the purge job role"

q "SET ROLE regress_cron_gates; SELECT cron.unschedule('gate_bridge_now')" >/dev/null
check "the short job is removed, the hourly one stays" "gate_bridge_hourly" \
	"$(q "SELECT string_agg(jobname, ',') FROM cron.job")"
q "SELECT cron.unschedule('gate_bridge_hourly')" >/dev/null
q "DROP OWNED BY regress_cron_gates; DROP ROLE regress_cron_gates" ||
	not_ok "dropping the job role"

echo "# $n checks, $failed failed"
[ "$failed" -eq 0 ]
