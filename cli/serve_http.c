/*-------------------------------------------------------------------------
 *
 * serve_http.c
 *		The routes of gate-bridge serve: the dashboard's files, the JSON
 *		API, /metrics, /healthz and /events.
 *
 * Every JSON document but the errors is rendered by the server
 * (json_build_object, json_agg), and a request body is parsed by it too
 * ($1::json): malformed JSON is the server's 22P02, answered with 400.
 * Values reach the server as query parameters only.  The database role
 * serve connects as bounds what it can do: a change it may not make is
 * 42501, answered with 403.
 *
 * Status codes: 400 bad input (class 22 from the server), 401 no or an
 * unknown token, 403 a viewer's change (or a change with no tokens file,
 * or one the role may not make), 404 unknown route or incident (P0002),
 * 405 a method the route does not take, 409 a move the lifecycle forbids
 * (55000), 413 a body over 16 KiB, 503 the database away.
 *
 * Queries run on a pool of connections, one per HTTP worker thread, each
 * connected when first needed and again after it broke.
 *
 * cli/serve_http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gate_bridge_cli.h"
#include "serve.h"

/* ------------------------------------------------------------------------
 * The pool of query connections
 * ------------------------------------------------------------------------
 */
static struct
{
	pthread_mutex_t lock;
	pthread_cond_t freed;
	PGconn	  **conns;
	bool	   *busy;
	int			size;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER,.freed = PTHREAD_COND_INITIALIZER};

static const GBConnExtra pool_extra[] = {
	{"connect_timeout", "3"},
	{"keepalives_idle", "30"},
	{"keepalives_interval", "10"},
	{"keepalives_count", "3"},
	{NULL, NULL}
};

void
gb_pool_init(int size)
{
	pool.size = size;
	pool.conns = calloc((size_t) size, sizeof(PGconn *));
	pool.busy = calloc((size_t) size, sizeof(bool));
	if (pool.conns == NULL || pool.busy == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
}

void
gb_pool_close(void)
{
	int			i;

	for (i = 0; i < pool.size; i++)
		if (pool.conns[i] != NULL)
			PQfinish(pool.conns[i]);
}

/*
 * A connection that answers, or NULL when the database is away.  It waits
 * for a free one (there are as many as worker threads).
 */
PGconn *
gb_pool_acquire(void)
{
	int			i;
	PGconn	   *conn;

	pthread_mutex_lock(&pool.lock);
	for (;;)
	{
		for (i = 0; i < pool.size; i++)
			if (!pool.busy[i])
				break;
		if (i < pool.size)
			break;
		pthread_cond_wait(&pool.freed, &pool.lock);
	}
	pool.busy[i] = true;
	conn = pool.conns[i];
	pool.conns[i] = NULL;
	pthread_mutex_unlock(&pool.lock);

	/*
	 * A connection the server closed while it sat in the pool (a restart,
	 * pg_terminate_backend) has its end-of-file or FATAL message waiting:
	 * reading what is there, without blocking, finds it out before a query
	 * would fail on it.
	 */
	if (conn != NULL && (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK))
	{
		PQfinish(conn);
		conn = NULL;
	}
	if (conn == NULL)
	{
		conn = gb_connect(gb_serve.conninfo, pool_extra, false);
		if (PQstatus(conn) == CONNECTION_OK)
			gb_serve_connection_setup(conn);
		else
		{
			PQfinish(conn);
			conn = NULL;
		}
	}
	pthread_mutex_lock(&pool.lock);
	if (conn == NULL)
	{
		pool.busy[i] = false;
		pthread_cond_signal(&pool.freed);
	}
	else
	{
		/* remember the slot in the connection's place until released */
		pool.conns[i] = conn;
	}
	pthread_mutex_unlock(&pool.lock);
	return conn;
}

void
gb_pool_release(PGconn *conn)
{
	int			i;

	pthread_mutex_lock(&pool.lock);
	for (i = 0; i < pool.size; i++)
		if (pool.conns[i] == conn && pool.busy[i])
		{
			pool.busy[i] = false;
			if (gb_connection_lost(conn))
			{
				PQfinish(conn);
				pool.conns[i] = NULL;
			}
			break;
		}
	pthread_cond_signal(&pool.freed);
	pthread_mutex_unlock(&pool.lock);
}

/*
 * The first statement on a connection from the pool.  One the server
 * closed since its last use (a restart) is found out by this statement
 * failing with the connection gone: it is connected again (PQreset keeps
 * the PGconn, and so its slot) and the statement runs once more.  Only
 * statements that change nothing are run this way.
 */
PGresult *
gb_pool_exec(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) == PGRES_FATAL_ERROR && PQstatus(conn) == CONNECTION_BAD)
	{
		PQreset(conn);
		if (PQstatus(conn) == CONNECTION_OK)
		{
			gb_serve_connection_setup(conn);
			PQclear(res);
			res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
		}
	}
	return res;
}

/* ------------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------------
 */

/* requests answered, by status code, for /metrics */
static const int counted_codes[] = {200, 400, 401, 403, 404, 405, 409, 413, 500, 503};
#define NCODES lengthof(counted_codes)
static uint64_t code_counts[NCODES];
static pthread_mutex_t code_lock = PTHREAD_MUTEX_INITIALIZER;

static void
count_code(unsigned int code)
{
	size_t		i;

	pthread_mutex_lock(&code_lock);
	for (i = 0; i < NCODES; i++)
		if ((unsigned int) counted_codes[i] == code)
			code_counts[i]++;
	pthread_mutex_unlock(&code_lock);
}

static enum MHD_Result
respond(struct MHD_Connection *connection, unsigned int code,
		const char *content_type, const char *body, size_t len, bool copy)
{
	struct MHD_Response *response;
	enum MHD_Result ret;

	response = MHD_create_response_from_buffer(len, (void *) body,
											   copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, "Content-Type", content_type);
	MHD_add_response_header(response, "Cache-Control", "no-cache");
	MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
	if (code == MHD_HTTP_UNAUTHORIZED)
		MHD_add_response_header(response, "WWW-Authenticate", "Bearer realm=\"gate_bridge\"");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(response, "Allow",
								strstr(body, "takes POST") ? "POST" : "GET, HEAD");
	count_code(code);
	ret = MHD_queue_response(connection, code, response);
	MHD_destroy_response(response);
	return ret;
}

static enum MHD_Result
respond_json(struct MHD_Connection *connection, unsigned int code, const char *json)
{
	return respond(connection, code, "application/json; charset=utf-8",
				   json, strlen(json), true);
}

/* A JSON string of s, escaped, into buf. */
static void
append_json_string(PQExpBuffer buf, const char *s)
{
	appendPQExpBufferChar(buf, '"');
	for (; *s; s++)
	{
		unsigned char ch = (unsigned char) *s;

		if (ch == '"' || ch == '\\')
			appendPQExpBuffer(buf, "\\%c", ch);
		else if (ch == '\n')
			appendPQExpBufferStr(buf, "\\n");
		else if (ch < 0x20)
			appendPQExpBuffer(buf, "\\u%04x", ch);
		else
			appendPQExpBufferChar(buf, (char) ch);
	}
	appendPQExpBufferChar(buf, '"');
}

/* {"error":{"status":N,"message":"...","sqlstate":"..."|null}} */
static enum MHD_Result
respond_error(struct MHD_Connection *connection, unsigned int code,
			  const char *message, const char *sqlstate)
{
	PQExpBufferData buf;
	enum MHD_Result ret;
	size_t		len = strlen(message);

	initPQExpBuffer(&buf);
	appendPQExpBuffer(&buf, "{\"error\":{\"status\":%u,\"message\":", code);
	/* the server's messages end without a newline; libpq's with one */
	while (len > 0 && (message[len - 1] == '\n' || message[len - 1] == ' '))
		len--;
	{
		char	   *m = strndup(message, len);

		append_json_string(&buf, m ? m : "");
		free(m);
	}
	appendPQExpBufferStr(&buf, ",\"sqlstate\":");
	if (sqlstate != NULL)
		append_json_string(&buf, sqlstate);
	else
		appendPQExpBufferStr(&buf, "null");
	appendPQExpBufferStr(&buf, "}}");
	ret = respond_json(connection, code, PQExpBufferBroken(&buf) ? "{}" : buf.data);
	termPQExpBuffer(&buf);
	return ret;
}

/* The HTTP status for a failed statement, by its SQLSTATE. */
static unsigned int
status_for(PGconn *conn, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (state == NULL || gb_connection_lost(conn) || strncmp(state, "08", 2) == 0 ||
		strncmp(state, "57P", 3) == 0)
		return MHD_HTTP_SERVICE_UNAVAILABLE;
	if (strncmp(state, "22", 2) == 0)
		return MHD_HTTP_BAD_REQUEST;
	if (strcmp(state, "42501") == 0)
		return MHD_HTTP_FORBIDDEN;
	if (strcmp(state, "P0002") == 0)
		return MHD_HTTP_NOT_FOUND;
	if (strcmp(state, "55000") == 0)
		return MHD_HTTP_CONFLICT;
	return MHD_HTTP_INTERNAL_SERVER_ERROR;
}

static enum MHD_Result
respond_failure(struct MHD_Connection *connection, PGconn *conn, const PGresult *res)
{
	unsigned int code = status_for(conn, res);
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (code == MHD_HTTP_SERVICE_UNAVAILABLE)
		return respond_error(connection, code, "the database is not available", state);
	if (code == MHD_HTTP_INTERNAL_SERVER_ERROR)
		gb_serve_log("a query failed: %s", primary ? primary : PQerrorMessage(conn));
	return respond_error(connection, code, primary ? primary : "the query failed", state);
}

static enum MHD_Result
respond_unavailable(struct MHD_Connection *connection)
{
	return respond_error(connection, MHD_HTTP_SERVICE_UNAVAILABLE,
						 "the database is not available", NULL);
}

/*
 * Run a query that returns one text value (a JSON document) and answer
 * with it; an empty result is notfound (404) when that is given.
 */
static enum MHD_Result
respond_query(struct MHD_Connection *connection, const char *sql, int nparams,
			  const char *const *params, const char *notfound)
{
	PGconn	   *conn = gb_pool_acquire();
	PGresult   *res;
	enum MHD_Result ret;

	if (conn == NULL)
		return respond_unavailable(connection);
	res = gb_pool_exec(conn, sql, nparams, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		ret = respond_failure(connection, conn, res);
	else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
		ret = respond_error(connection, MHD_HTTP_NOT_FOUND,
							notfound ? notfound : "not found", "P0002");
	else
		ret = respond_json(connection, MHD_HTTP_OK, PQgetvalue(res, 0, 0));
	PQclear(res);
	gb_pool_release(conn);
	return ret;
}

/* ------------------------------------------------------------------------
 * Queries
 * ------------------------------------------------------------------------
 */

/* an incident as the API shows it; i is a row of gate_bridge.incidents */
#define INCIDENT_JSON \
"pg_catalog.jsonb_build_object(" \
" 'id', i.id, 'kind', i.kind, 'key', i.key, 'agent', i.agent," \
" 'violation_type', i.violation_type, 'severity', i.severity, 'status', i.status," \
" 'summary', i.summary, 'occurrences', i.occurrences," \
" 'first_seen_at', i.first_seen_at, 'last_seen_at', i.last_seen_at," \
" 'acked_at', i.acked_at, 'acked_by', i.acked_by," \
" 'resolved_at', i.resolved_at, 'resolved_by', i.resolved_by," \
" 'snoozed_until', i.snoozed_until, 'silence_id', i.silence_id," \
" 'silenced', i.silence_id IS NOT NULL, 'flapping', i.flapping," \
" 'playbooks', pg_catalog.to_jsonb(i.playbooks), 'external_refs', i.external_refs)"

static const char *const incidents_query =
"SELECT COALESCE(pg_catalog.jsonb_agg(x.j ORDER BY x.o1, x.o2, x.o3 DESC, x.id DESC),"
"                '[]'::pg_catalog.jsonb)::pg_catalog.text"
"  FROM (SELECT " INCIDENT_JSON " AS j, i.id,"
"               i.status = 'resolved' AS o1,"
"               CASE WHEN i.status <> 'resolved' THEN i.severity END AS o2,"
"               CASE WHEN i.status = 'resolved' THEN i.resolved_at ELSE i.last_seen_at END AS o3"
"          FROM gate_bridge.incidents i"
"         WHERE i.status = ANY ($1::pg_catalog.text[])"
"           AND i.severity = ANY ($2::pg_catalog.text[])"
"           AND ($3::pg_catalog.text IS NULL OR i.agent LIKE"
"                pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace("
"                  $3, '\\', '\\\\'), '%', '\\%'), '_', '\\_'), '*', '%'))"
"         ORDER BY o1, o2, o3 DESC, i.id DESC"
"         LIMIT $4::pg_catalog.int4) x";

/*
 * GET /api/incidents/{id}: deliveries is its deliveries from
 * gate_bridge.delivery_status in id order (no URL, no secret), and
 * playbooks its suggested playbooks in the incident's order, each with
 * what the registry (gate_bridge.playbooks) says of it: title, risk,
 * runbook_url, auto_run and whether it has an action (not the action
 * itself); each is null where the role may not read that view.  The
 * privileges are checked by a statement of their own (grant_query): a
 * statement that names a relation the role may not read fails as a whole
 * (the executor checks every relation of the statement before it runs),
 * even when the branch that reads it would not be taken.
 */
#define DELIVERIES_JSON \
"(SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(" \
"     'id', d.id, 'destination', d.destination, 'kind', d.kind, 'event', d.event," \
"     'status', d.status, 'attempts', d.attempts, 'next_attempt_at', d.next_attempt_at," \
"     'last_status', d.last_status, 'last_error', d.last_error," \
"     'created_at', d.created_at, 'delivered_at', d.delivered_at, 'request', d.request)" \
"   ORDER BY d.id), '[]'::pg_catalog.jsonb)" \
"   FROM gate_bridge.delivery_status d WHERE d.incident_id = i.id)"

/* registered false: a name the registry does not have (a 1.1 incident's) */
#define PLAYBOOKS_JSON \
"(SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(" \
"     'name', s.name, 'registered', p.name IS NOT NULL, 'title', p.title, 'risk', p.risk," \
"     'runbook_url', p.runbook_url, 'auto_run', p.auto_run, 'action', p.action IS NOT NULL)" \
"   ORDER BY s.o), '[]'::pg_catalog.jsonb)" \
"   FROM pg_catalog.unnest(i.playbooks) WITH ORDINALITY s(name, o)" \
"   LEFT JOIN gate_bridge.playbooks p ON p.name = s.name)"

#define NO_JSON "NULL::pg_catalog.jsonb"

#define INCIDENT_QUERY(deliveries, playbooks) \
"SELECT pg_catalog.jsonb_build_object(" \
"  'incident', " INCIDENT_JSON " || pg_catalog.jsonb_build_object(" \
"      'details', i.details, 'resolution_note', i.resolution_note, 'subject', i.subject)," \
"  'timeline', (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(" \
"                   'id', e.id, 'position', e.position, 'event', e.event, 'at', e.at," \
"                   'actor', e.actor, 'detail', e.detail, 'silenced', e.silenced)" \
"                 ORDER BY e.position NULLS LAST, e.id), '[]'::pg_catalog.jsonb)" \
"                 FROM gate_bridge.incident_events e WHERE e.incident_id = i.id)," \
"  'deliveries', " deliveries "," \
"  'playbooks', " playbooks ")::pg_catalog.text" \
"  FROM gate_bridge.incidents i WHERE i.id = $1::pg_catalog.int8"

/* by what the role may read: [deliveries][playbooks] */
static const char *const incident_queries[2][2] = {
	{INCIDENT_QUERY(NO_JSON, NO_JSON), INCIDENT_QUERY(NO_JSON, PLAYBOOKS_JSON)},
	{INCIDENT_QUERY(DELIVERIES_JSON, NO_JSON), INCIDENT_QUERY(DELIVERIES_JSON, PLAYBOOKS_JSON)}
};

/*
 * May this role read the deliveries, and the playbooks?  false for a view
 * the extension does not have.
 */
static const char *const grant_query =
"SELECT COALESCE(pg_catalog.has_table_privilege("
"         pg_catalog.to_regclass('gate_bridge.delivery_status'), 'SELECT'), false),"
"       COALESCE(pg_catalog.has_table_privilege("
"         pg_catalog.to_regclass('gate_bridge.playbooks'), 'SELECT'), false)";

static const char *const one_incident_query =
"SELECT pg_catalog.jsonb_build_object('incident', " INCIDENT_JSON ")::pg_catalog.text"
"  FROM gate_bridge.incidents i WHERE i.id = $1::pg_catalog.int8";
/* the same, with the members of the object $2 beside it */
static const char *const one_incident_and_query =
"SELECT (pg_catalog.jsonb_build_object('incident', " INCIDENT_JSON ")"
"        || $2::pg_catalog.jsonb)::pg_catalog.text"
"  FROM gate_bridge.incidents i WHERE i.id = $1::pg_catalog.int8";

static const char *const counts_query =
"SELECT pg_catalog.jsonb_build_object('sev1', c.sev1, 'sev2', c.sev2, 'sev3', c.sev3,"
"       'open', c.open, 'ack', c.ack, 'position', gate_bridge.events_head())::pg_catalog.text"
"  FROM gate_bridge.incident_counts c";

/*
 * A change: the body is parsed by the server ($2::json) and must be an
 * object; the actor is the token's name, else the body's "actor", else
 * "dashboard" ($3 is the token's name or NULL).
 */
static const char *const ack_query =
"SELECT gate_bridge.ack($1::pg_catalog.int8,"
"                       COALESCE($3, b->>'actor', 'dashboard'))::pg_catalog.text"
"  FROM (SELECT $2::pg_catalog.json AS b) s";
static const char *const resolve_query =
"SELECT gate_bridge.resolve($1::pg_catalog.int8,"
"                           COALESCE($3, b->>'actor', 'dashboard'), b->>'note')::pg_catalog.text"
"  FROM (SELECT $2::pg_catalog.json AS b) s";
static const char *const snooze_query =
"SELECT gate_bridge.snooze($1::pg_catalog.int8, (b->>'duration')::pg_catalog.interval,"
"                          COALESCE($3, b->>'actor', 'dashboard'), b->>'note')::pg_catalog.text"
"  FROM (SELECT $2::pg_catalog.json AS b) s";
/* run_playbook's outcome: succeeded, failed or queued */
static const char *const run_query =
"SELECT pg_catalog.jsonb_build_object('outcome',"
"         gate_bridge.run_playbook($1::pg_catalog.int8, b->>'playbook',"
"                                  COALESCE($3, b->>'actor', 'dashboard')))::pg_catalog.text"
"  FROM (SELECT $2::pg_catalog.json AS b) s";
static const char *const body_query =
"SELECT pg_catalog.json_typeof($1::pg_catalog.json),"
"       pg_catalog.json_typeof($1::pg_catalog.json -> 'duration'),"
"       pg_catalog.json_typeof($1::pg_catalog.json -> 'playbook')";

#define METRICS_QUERY(deliveries) \
"SELECT 'd', s.kind, o.outcome, CASE o.outcome WHEN 'created' THEN s.created" \
"                                  WHEN 'deduplicated' THEN s.deduplicated" \
"                                  ELSE s.rate_limited END" \
"  FROM gate_bridge.stats s" \
" CROSS JOIN (VALUES ('created'), ('deduplicated'), ('rate_limited')) o(outcome)" \
" UNION ALL " \
"SELECT 'u', v.severity, w.status," \
"       (SELECT pg_catalog.count(*) FROM gate_bridge.incidents i" \
"         WHERE i.severity = v.severity AND i.status = w.status)" \
"  FROM (VALUES ('sev1'), ('sev2'), ('sev3')) v(severity)" \
" CROSS JOIN (VALUES ('open'), ('ack')) w(status)" \
" UNION ALL " \
"SELECT 'n', NULL, NULL, COALESCE((SELECT t.notifications_skipped" \
"                                   FROM gate_bridge.stream_status t), 0)" \
" " deliveries

/*
 * With the deliveries (where the role may read gate_bridge.delivery_status):
 * 'q' every status and how many deliveries have it, 'o' the age in seconds
 * of the oldest pending delivery that is due, 0 when there is none.
 */
#define DELIVERY_METRICS \
" UNION ALL " \
"SELECT 'q', s.status, NULL, pg_catalog.count(d.id)" \
"  FROM (VALUES ('held'), ('pending'), ('sending'), ('delivered'), ('dead'), ('skipped')) s(status)" \
"  LEFT JOIN gate_bridge.delivery_status d ON d.status = s.status" \
" GROUP BY s.status" \
" UNION ALL " \
"SELECT 'o', NULL, NULL," \
"       COALESCE(pg_catalog.max(GREATEST(EXTRACT(EPOCH FROM pg_catalog.now() - d.created_at), 0)), 0)" \
"  FROM gate_bridge.delivery_status d" \
" WHERE d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now()"

static const char *const metrics_query = METRICS_QUERY(DELIVERY_METRICS);
static const char *const metrics_query_without_deliveries = METRICS_QUERY("");

/*
 * Whether the role may read gate_bridge.delivery_status and
 * gate_bridge.playbooks (grant_query on conn): 0 when it answered, in
 * *deliveries and *playbooks, -1 when the statement failed (*failed is its
 * result, for the caller to answer with and clear).
 */
static int
readable_views(PGconn *conn, bool *deliveries, bool *playbooks, PGresult **failed)
{
	PGresult   *res = gb_pool_exec(conn, grant_query, 0, NULL);

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		*failed = res;
		return -1;
	}
	*deliveries = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	*playbooks = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	return 0;
}

/* GET /api/incidents/{id}: with its deliveries and playbooks, or null for them */
static enum MHD_Result
get_incident(struct MHD_Connection *connection, const char *const *params)
{
	PGconn	   *conn = gb_pool_acquire();
	PGresult   *res = NULL;
	enum MHD_Result ret;
	bool		deliveries;
	bool		playbooks;

	if (conn == NULL)
		return respond_unavailable(connection);
	if (readable_views(conn, &deliveries, &playbooks, &res) == 0)
		res = PQexecParams(conn, incident_queries[deliveries][playbooks],
						   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		ret = respond_failure(connection, conn, res);
	else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0))
		ret = respond_error(connection, MHD_HTTP_NOT_FOUND, "no such incident", "P0002");
	else
		ret = respond_json(connection, MHD_HTTP_OK, PQgetvalue(res, 0, 0));
	PQclear(res);
	gb_pool_release(conn);
	return ret;
}

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------
 */

typedef struct Request
{
	bool		started;
	bool		too_large;
	bool		stream;			/* GET /events */
	size_t		len;
	char	   *body;			/* POST only */
} Request;

/* The token of the request, if any, and what it may do. */
static GBRole
authorize(struct MHD_Connection *connection, bool query_token, const char **name)
{
	const char *given = NULL;
	const char *auth;
	GBRole		role = GB_ROLE_NONE;
	int			i;

	*name = NULL;
	if (!gb_serve.auth)
		return GB_ROLE_VIEWER;
	auth = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
	if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0)
	{
		given = auth + 7;
		while (*given == ' ')
			given++;
	}
	else if (query_token)
		given = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "token");
	if (given == NULL || *given == '\0')
		return GB_ROLE_NONE;
	/* every token is compared whole, so the time says nothing of which matched */
	for (i = 0; i < gb_serve.ntokens; i++)
	{
		const char *t = gb_serve.tokens[i].token;
		size_t		tl = strlen(t);
		size_t		gl = strlen(given);
		unsigned char diff = (unsigned char) (tl != gl);
		size_t		k;

		for (k = 0; k < tl; k++)
			diff |= (unsigned char) (t[k] ^ (k < gl ? given[k] : 0));
		if (diff == 0 && role == GB_ROLE_NONE)
		{
			role = gb_serve.tokens[i].role;
			*name = gb_serve.tokens[i].name;
		}
	}
	return role;
}

static const GBAsset *
find_asset(const char *url)
{
	int			i;

	for (i = 0; i < gb_nassets; i++)
		if (strcmp(gb_assets[i].path, url) == 0)
			return &gb_assets[i];
	return NULL;
}

/* A comma-separated list of words from a set, as a text[] literal. */
static bool
word_list(const char *given, const char *const *allowed, PQExpBuffer out)
{
	const char *p = given;

	appendPQExpBufferChar(out, '{');
	while (*p)
	{
		size_t		len = strcspn(p, ",");
		const char *const *a;
		bool		found = false;

		for (a = allowed; *a != NULL; a++)
			if (strlen(*a) == len && strncmp(*a, p, len) == 0)
				found = true;
		if (!found)
			return false;
		if (out->data[out->len - 1] != '{')
			appendPQExpBufferChar(out, ',');
		appendBinaryPQExpBuffer(out, p, len);
		p += len;
		if (*p == ',')
			p++;
	}
	appendPQExpBufferChar(out, '}');
	return out->len > 2;
}

static enum MHD_Result
get_incidents(struct MHD_Connection *connection)
{
	static const char *const statuses[] = {"open", "ack", "resolved", NULL};
	static const char *const severities[] = {"sev1", "sev2", "sev3", NULL};
	const char *status = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "status");
	const char *severity = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "severity");
	const char *agent = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "agent");
	const char *limit = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "limit");
	PQExpBufferData st;
	PQExpBufferData sv;
	const char *params[4];
	char		lim[16] = "200";
	enum MHD_Result ret;

	initPQExpBuffer(&st);
	initPQExpBuffer(&sv);
	if (status == NULL || *status == '\0' || strcmp(status, "unresolved") == 0)
		appendPQExpBufferStr(&st, "{open,ack}");
	else if (strcmp(status, "all") == 0)
		appendPQExpBufferStr(&st, "{open,ack,resolved}");
	else if (!word_list(status, statuses, &st))
	{
		termPQExpBuffer(&st);
		termPQExpBuffer(&sv);
		return respond_error(connection, MHD_HTTP_BAD_REQUEST,
							 "invalid status: expected unresolved, all, or a comma-separated list of open, ack, resolved",
							 NULL);
	}
	if (severity == NULL || *severity == '\0')
		appendPQExpBufferStr(&sv, "{sev1,sev2,sev3}");
	else if (!word_list(severity, severities, &sv))
	{
		termPQExpBuffer(&st);
		termPQExpBuffer(&sv);
		return respond_error(connection, MHD_HTTP_BAD_REQUEST,
							 "invalid severity: expected a comma-separated list of sev1, sev2, sev3",
							 NULL);
	}
	if (limit != NULL)
	{
		int64_t		n;

		if (!gb_parse_id(limit, &n) || n < 1 || n > 1000)
		{
			termPQExpBuffer(&st);
			termPQExpBuffer(&sv);
			return respond_error(connection, MHD_HTTP_BAD_REQUEST,
								 "invalid limit: expected a whole number from 1 to 1000", NULL);
		}
		snprintf(lim, sizeof(lim), "%" PRId64, n);
	}
	params[0] = st.data;
	params[1] = sv.data;
	params[2] = (agent != NULL && *agent != '\0') ? agent : NULL;
	params[3] = lim;
	{
		PGconn	   *conn = gb_pool_acquire();
		PGresult   *res;

		if (conn == NULL)
			ret = respond_unavailable(connection);
		else
		{
			res = gb_pool_exec(conn, incidents_query, 4, params);
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				ret = respond_failure(connection, conn, res);
			else
			{
				PQExpBufferData out;

				initPQExpBuffer(&out);
				appendPQExpBuffer(&out, "{\"incidents\":%s}", PQgetvalue(res, 0, 0));
				ret = PQExpBufferBroken(&out)
					? respond_error(connection, 500, "out of memory", NULL)
					: respond_json(connection, MHD_HTTP_OK, out.data);
				termPQExpBuffer(&out);
			}
			PQclear(res);
			gb_pool_release(conn);
		}
	}
	termPQExpBuffer(&st);
	termPQExpBuffer(&sv);
	return ret;
}

/*
 * POST /api/incidents/{id}/{ack,resolve,snooze,run}: the incident as it is
 * after the change; run answers the playbook's outcome beside it.
 */
static enum MHD_Result
post_change(struct MHD_Connection *connection, const char *id, const char *action,
			Request *req, const char *name)
{
	const char *sql;
	const char *params[3];
	const char *body = req->len > 0 ? req->body : "{}";
	PGconn	   *conn;
	PGresult   *res;
	enum MHD_Result ret;

	if (strcmp(action, "ack") == 0)
		sql = ack_query;
	else if (strcmp(action, "resolve") == 0)
		sql = resolve_query;
	else if (strcmp(action, "run") == 0)
		sql = run_query;
	else
		sql = snooze_query;

	conn = gb_pool_acquire();
	if (conn == NULL)
		return respond_unavailable(connection);
	params[0] = body;
	res = gb_pool_exec(conn, body_query, 1, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		ret = status_for(conn, res) == MHD_HTTP_BAD_REQUEST
			? respond_error(connection, MHD_HTTP_BAD_REQUEST, "the body is not valid JSON",
							PQresultErrorField(res, PG_DIAG_SQLSTATE))
			: respond_failure(connection, conn, res);
		PQclear(res);
		gb_pool_release(conn);
		return ret;
	}
	if (strcmp(PQgetvalue(res, 0, 0), "object") != 0)
	{
		PQclear(res);
		gb_pool_release(conn);
		return respond_error(connection, MHD_HTTP_BAD_REQUEST,
							 "the body must be a JSON object", NULL);
	}
	if (sql == snooze_query && strcmp(PQgetvalue(res, 0, 1), "string") != 0)
	{
		PQclear(res);
		gb_pool_release(conn);
		return respond_error(connection, MHD_HTTP_BAD_REQUEST,
							 "snooze needs \"duration\", an interval such as \"4 hours\"", NULL);
	}
	if (sql == run_query && strcmp(PQgetvalue(res, 0, 2), "string") != 0)
	{
		PQclear(res);
		gb_pool_release(conn);
		return respond_error(connection, MHD_HTTP_BAD_REQUEST,
							 "run needs \"playbook\", the name of a playbook", NULL);
	}
	PQclear(res);

	params[0] = id;
	params[1] = body;
	params[2] = name;
	res = PQexecParams(conn, sql, 3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		ret = respond_failure(connection, conn, res);
		PQclear(res);
		gb_pool_release(conn);
		return ret;
	}
	gb_pool_release(conn);
	params[0] = id;
	if (sql == run_query)
	{
		params[1] = PQgetvalue(res, 0, 0);
		ret = respond_query(connection, one_incident_and_query, 2, params, "no such incident");
	}
	else
		ret = respond_query(connection, one_incident_query, 1, params, "no such incident");
	PQclear(res);
	return ret;
}

static enum MHD_Result
get_session(struct MHD_Connection *connection, GBRole role, const char *name)
{
	PQExpBufferData buf;
	enum MHD_Result ret;

	initPQExpBuffer(&buf);
	appendPQExpBuffer(&buf, "{\"role\":\"%s\",\"read_only\":%s,\"auth\":%s,\"name\":",
					  role == GB_ROLE_OPERATOR ? "operator" : "viewer",
					  role == GB_ROLE_OPERATOR ? "false" : "true",
					  gb_serve.auth ? "true" : "false");
	if (name != NULL)
		append_json_string(&buf, name);
	else
		appendPQExpBufferStr(&buf, "null");
	appendPQExpBufferStr(&buf, ",\"version\":\"" GB_CLI_VERSION "\"}");
	ret = respond_json(connection, MHD_HTTP_OK, buf.data);
	termPQExpBuffer(&buf);
	return ret;
}

static enum MHD_Result
get_healthz(struct MHD_Connection *connection)
{
	PGconn	   *conn = gb_pool_acquire();
	PGresult   *res;
	bool		up = false;

	if (conn != NULL)
	{
		res = gb_pool_exec(conn, "SELECT 1", 0, NULL);
		up = PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
		gb_pool_release(conn);
	}
	return up ? respond_json(connection, MHD_HTTP_OK, "{\"database\":\"up\"}")
		: respond_json(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"database\":\"down\"}");
}

static void
metric_head(PQExpBuffer buf, const char *name, const char *type, const char *help)
{
	appendPQExpBuffer(buf, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static enum MHD_Result
get_metrics(struct MHD_Connection *connection)
{
	PGconn	   *conn = gb_pool_acquire();
	PGresult   *res = NULL;
	PQExpBufferData buf;
	GBStreamStats ss;
	enum MHD_Result ret;
	int			r;
	size_t		i;

	gb_stream_stats(&ss);
	if (conn != NULL)
	{
		bool		deliveries;
		bool		playbooks;

		if (readable_views(conn, &deliveries, &playbooks, &res) == 0)
			res = PQexecParams(conn, deliveries ? metrics_query : metrics_query_without_deliveries,
							   0, NULL, NULL, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			ret = respond_failure(connection, conn, res);
			PQclear(res);
			gb_pool_release(conn);
			return ret;
		}
	}
	initPQExpBuffer(&buf);
	metric_head(&buf, "gate_bridge_database_up", "gauge",
				"Whether the database answered this scrape (1) or not (0).");
	appendPQExpBuffer(&buf, "gate_bridge_database_up %d\n", res != NULL ? 1 : 0);
	if (res != NULL)
	{
		metric_head(&buf, "gate_bridge_decisions_total", "counter",
					"Violations decided, by incident kind and outcome.");
		for (r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), "d") == 0)
				appendPQExpBuffer(&buf, "gate_bridge_decisions_total{kind=\"%s\",outcome=\"%s\"} %s\n",
								  PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
								  PQgetvalue(res, r, 3));
		metric_head(&buf, "gate_bridge_unresolved_incidents", "gauge",
					"Unresolved incidents, by severity and status.");
		for (r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), "u") == 0)
				appendPQExpBuffer(&buf, "gate_bridge_unresolved_incidents{severity=\"%s\",status=\"%s\"} %s\n",
								  PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
								  PQgetvalue(res, r, 3));
		metric_head(&buf, "gate_bridge_notifications_skipped_total", "counter",
					"Notifications skipped because the server's notification queue was nearly full.");
		for (r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), "n") == 0)
				appendPQExpBuffer(&buf, "gate_bridge_notifications_skipped_total %s\n",
								  PQgetvalue(res, r, 3));
		for (r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, 0), "q") == 0)
				break;
		if (r < PQntuples(res))
		{
			metric_head(&buf, "gate_bridge_deliveries", "gauge",
						"Deliveries to destinations, by status.");
			for (; r < PQntuples(res); r++)
				if (strcmp(PQgetvalue(res, r, 0), "q") == 0)
					appendPQExpBuffer(&buf, "gate_bridge_deliveries{status=\"%s\"} %s\n",
									  PQgetvalue(res, r, 1), PQgetvalue(res, r, 3));
			metric_head(&buf, "gate_bridge_delivery_oldest_pending_seconds", "gauge",
						"Age of the oldest pending delivery that is due, 0 when none is.");
			for (r = 0; r < PQntuples(res); r++)
				if (strcmp(PQgetvalue(res, r, 0), "o") == 0)
					appendPQExpBuffer(&buf, "gate_bridge_delivery_oldest_pending_seconds %s\n",
									  PQgetvalue(res, r, 3));
		}
		PQclear(res);
		gb_pool_release(conn);
	}
	metric_head(&buf, "gate_bridge_events_total", "counter",
				"Events this process has read from the event stream.");
	appendPQExpBuffer(&buf, "gate_bridge_events_total %" PRIu64 "\n", ss.events_total);
	metric_head(&buf, "gate_bridge_stream_position", "gauge",
				"The newest stream position this process has read.");
	appendPQExpBuffer(&buf, "gate_bridge_stream_position %" PRId64 "\n", ss.position);
	metric_head(&buf, "gate_bridge_stream_connected", "gauge",
				"Whether the listener's connection is up (1) or not (0).");
	appendPQExpBuffer(&buf, "gate_bridge_stream_connected %d\n", ss.database_up ? 1 : 0);
	metric_head(&buf, "gate_bridge_sse_clients", "gauge",
				"Server-Sent Events clients connected.");
	appendPQExpBuffer(&buf, "gate_bridge_sse_clients %d\n", ss.clients);
	metric_head(&buf, "gate_bridge_sse_dropped_total", "counter",
				"SSE clients dropped because they stopped reading or fell behind.");
	appendPQExpBuffer(&buf, "gate_bridge_sse_dropped_total %" PRIu64 "\n", ss.dropped_total);
	metric_head(&buf, "gate_bridge_http_requests_total", "counter",
				"HTTP requests answered, by status code.");
	pthread_mutex_lock(&code_lock);
	for (i = 0; i < NCODES; i++)
		appendPQExpBuffer(&buf, "gate_bridge_http_requests_total{code=\"%d\"} %" PRIu64 "\n",
						  counted_codes[i], code_counts[i]);
	pthread_mutex_unlock(&code_lock);

	if (PQExpBufferBroken(&buf))
		ret = respond_error(connection, 500, "out of memory", NULL);
	else
		ret = respond(connection, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
					  buf.data, buf.len, true);
	termPQExpBuffer(&buf);
	return ret;
}

/* /api/incidents/{id}[/{action}]: the id's text, and the action or "" */
static bool
parse_incident_path(const char *url, char *id, size_t idlen, const char **action)
{
	const char *p = url + strlen("/api/incidents/");
	size_t		n = strspn(p, "0123456789");

	if (n == 0 || n >= idlen || (p[n] != '\0' && p[n] != '/'))
		return false;
	memcpy(id, p, n);
	id[n] = '\0';
	*action = p[n] == '/' ? p + n + 1 : "";
	return true;
}

static enum MHD_Result
route(struct MHD_Connection *connection, const char *url, const char *method,
	  Request *req)
{
	bool		get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	bool		post = strcmp(method, "POST") == 0;
	const GBAsset *asset = find_asset(url);
	const char *name;
	GBRole		role;

	if (asset != NULL || strcmp(url, "/healthz") == 0)
	{
		if (!get)
			return respond_error(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
								 "this route takes GET", NULL);
		if (asset != NULL)
			return respond(connection, MHD_HTTP_OK, asset->content_type,
						   (const char *) asset->data, asset->len, false);
		return get_healthz(connection);
	}

	if (strncmp(url, "/docs/", 6) == 0)
		return respond_error(connection, MHD_HTTP_NOT_FOUND,
							 "no such document: serve carries README.md and the pages of docs/runbooks/ that gate-bridge was built with",
							 NULL);
	if (strcmp(url, "/events") != 0 && strcmp(url, "/metrics") != 0 &&
		strncmp(url, "/api/", 5) != 0)
		return respond_error(connection, MHD_HTTP_NOT_FOUND, "no such route", NULL);

	role = authorize(connection, strcmp(url, "/events") == 0, &name);
	if (role == GB_ROLE_NONE)
		return respond_error(connection, MHD_HTTP_UNAUTHORIZED,
							 "a valid token is needed: send \"Authorization: Bearer TOKEN\"", NULL);

	if (strcmp(url, "/events") == 0 || strcmp(url, "/metrics") == 0 ||
		strcmp(url, "/api/session") == 0 || strcmp(url, "/api/counts") == 0 ||
		strcmp(url, "/api/incidents") == 0)
	{
		if (!get)
			return respond_error(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
								 "this route takes GET", NULL);
		if (strcmp(url, "/events") == 0)
		{
			const char *after = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
															"Last-Event-ID");
			int64_t		pos;

			if (after == NULL || *after == '\0')
				after = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, "after");
			if (after != NULL && *after == '\0')
				after = NULL;
			if (after != NULL && !gb_parse_id(after, &pos))
				return respond_error(connection, MHD_HTTP_BAD_REQUEST,
									 "invalid Last-Event-ID or after: expected a stream position (0 or more)",
									 NULL);
			req->stream = true;
			count_code(MHD_HTTP_OK);
			return gb_stream_respond(connection, after);
		}
		if (strcmp(url, "/metrics") == 0)
			return get_metrics(connection);
		if (strcmp(url, "/api/session") == 0)
			return get_session(connection, role, name);
		if (strcmp(url, "/api/counts") == 0)
			return respond_query(connection, counts_query, 0, NULL, NULL);
		return get_incidents(connection);
	}

	if (strncmp(url, "/api/incidents/", 15) == 0)
	{
		char		id[24];
		const char *action;
		const char *params[1] = {id};

		if (!parse_incident_path(url, id, sizeof(id), &action))
		{
			/* the segment after /api/incidents/ is there, but no id */
			if (url[15] != '\0' && url[15] != '/')
				return respond_error(connection, MHD_HTTP_BAD_REQUEST,
									 "invalid incident id: expected a whole number", NULL);
			return respond_error(connection, MHD_HTTP_NOT_FOUND, "no such route", NULL);
		}
		if (*action == '\0')
		{
			if (!get)
				return respond_error(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
									 "this route takes GET", NULL);
			return get_incident(connection, params);
		}
		if (strcmp(action, "ack") == 0 || strcmp(action, "resolve") == 0 ||
			strcmp(action, "snooze") == 0 || strcmp(action, "run") == 0)
		{
			if (!post)
				return respond_error(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
									 "this route takes POST", NULL);
			if (!gb_serve.auth)
				return respond_error(connection, MHD_HTTP_FORBIDDEN,
									 "read-only: serve was started without --tokens", NULL);
			if (role != GB_ROLE_OPERATOR)
				return respond_error(connection, MHD_HTTP_FORBIDDEN,
									 "this token is a viewer's: changes need an operator's", NULL);
			return post_change(connection, id, action, req, name);
		}
	}
	return respond_error(connection, MHD_HTTP_NOT_FOUND, "no such route", NULL);
}

enum MHD_Result
gb_serve_handler(void *cls, struct MHD_Connection *connection,
				 const char *url, const char *method, const char *version,
				 const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) version;
	if (req == NULL)
	{
		const char *cl;

		req = calloc(1, sizeof(Request));
		if (req == NULL)
			return MHD_NO;
		*con_cls = req;
		cl = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
		if (cl != NULL && strtoull(cl, NULL, 10) > GB_SERVE_MAX_BODY)
		{
			req->too_large = true;
			return respond_error(connection, MHD_HTTP_CONTENT_TOO_LARGE,
								 "the body is over 16384 bytes", NULL);
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		if (!req->too_large)
		{
			if (req->len + *upload_data_size > GB_SERVE_MAX_BODY)
				req->too_large = true;
			else
			{
				if (req->body == NULL)
					req->body = malloc(GB_SERVE_MAX_BODY + 1);
				if (req->body == NULL)
					return MHD_NO;
				memcpy(req->body + req->len, upload_data, *upload_data_size);
				req->len += *upload_data_size;
				req->body[req->len] = '\0';
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->too_large)
		return respond_error(connection, MHD_HTTP_CONTENT_TOO_LARGE,
							 "the body is over 16384 bytes", NULL);
	if (req->body != NULL && memchr(req->body, '\0', req->len) != NULL)
		return respond_error(connection, MHD_HTTP_BAD_REQUEST,
							 "the body is not valid JSON", NULL);
	return route(connection, url, method, req);
}

void
gb_serve_request_completed(void *cls, struct MHD_Connection *connection,
						   void **con_cls, enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) connection;
	if (req == NULL)
		return;
	if (req->stream)
		gb_stream_request_done(NULL, toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED);
	free(req->body);
	free(req);
	*con_cls = NULL;
}
