/*-------------------------------------------------------------------------
 *
 * cmd_deliver.c
 *		gate-bridge deliver: send the outbox (gate_bridge.deliveries) to
 *		webhooks, Slack, PagerDuty, GitHub and Jira.
 *
 * N worker threads, each with its own libpq connection and its own curl
 * easy handle (so its own HTTP connection cache).  A worker claims up to
 * 10 due deliveries with gate_bridge.claim_deliveries(), which leases them
 * to it for 30 s, sends each, and records the outcome with
 * gate_bridge.complete_delivery(), which decides what comes next (delivered,
 * a retry later, dead).  With nothing due it waits for a notification on
 * gate_bridge.events_channel, or a second.  The requests are rendered by
 * the server (the claim's method, url and body columns, with the
 * --dashboard-url link); the worker sends their bytes as they are, signs
 * them for webhooks with a secret, and authenticates them to GitHub and
 * Jira with the destination's secret.  An issue tracker's answer goes back
 * whole to complete_delivery(), which reads the issue from it (the worker
 * parses no JSON).
 *
 * Delivery is at least once: a worker that dies mid-flight, or whose
 * completion cannot be recorded, leaves the delivery to its lease, and it
 * is sent again with the same Gate-Bridge-Event-Id, by which receivers
 * deduplicate.  SIGINT and SIGTERM stop claiming; the request in flight is
 * finished and recorded, and the rows claimed but not sent are given back
 * with gate_bridge.release_deliveries(worker).
 *
 * Failures of the database are sorted by retry.c and retried with backoff
 * (0.25 s doubling to 10 s), each outage reported with one line.  Secrets
 * are never logged, nor URLs (a Slack webhook's URL is a secret): the
 * destination's name is.
 *
 * cli/cmd_deliver.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "mb/pg_wchar.h"

#include "gate_bridge_cli.h"

#define CLAIM_ROWS		"10"
#define CLAIM_LEASE		"30 s"
#define MAX_WORKERS		64
#define RESPONSE_KEEP	200		/* bytes of a response kept for last_error */
#define ANSWER_MAX		(4 * 1024 * 1024)	/* bytes of a tracker's answer kept */
#define COMPLETE_TRIES	5		/* transient failures of one completion */
#define BYTEA_OID		17

static const char *const claim_query =
"SELECT * FROM gate_bridge.claim_deliveries($1::pg_catalog.text, " CLAIM_ROWS ", '" CLAIM_LEASE "',"
" $2::pg_catalog.text)";

static const char *const complete_query =
"SELECT gate_bridge.complete_delivery($1::pg_catalog.int8, $2::pg_catalog.int4,"
" $3::pg_catalog.text, $4::pg_catalog.interval, $5::pg_catalog.bytea)";

/* a server whose claims name no request: it has no issue destinations */
static const char *const complete_query_without_answer =
"SELECT gate_bridge.complete_delivery($1::pg_catalog.int8, $2::pg_catalog.int4,"
" $3::pg_catalog.text, $4::pg_catalog.interval)";

static const char *const release_query =
"SELECT gate_bridge.release_deliveries($1::pg_catalog.text)";

/* the command line of this run */
static int	nworkers = 1;
static bool once = false;
static const char *dashboard_url = NULL;
static int	tick_secs = 60;
static long connect_timeout_ms = 5000;
static long timeout_ms = 10000;

/* shared by the threads */
static const char *conninfo;
static int	stopping = 0;		/* SIGINT/SIGTERM, or a fatal failure */
static int	fatal = 0;
static int	tick_refused = 0;
static int	workers_done = 0;
static int	wake_pipe[2] = {-1, -1};	/* readable once stopping */
static char user_agent[64];

#define LOAD(v)		__atomic_load_n(&(v), __ATOMIC_SEQ_CST)
#define STORE(v, x) __atomic_store_n(&(v), (x), __ATOMIC_SEQ_CST)

typedef struct Worker
{
	int			n;
	char		name[320];		/* host:pid:N, claimed_by */
	pthread_t	thread;
	PGconn	   *conn;
	CURL	   *curl;
	bool		listening;
	bool		in_outage;
	double		delay;
	bool		claimed_unsent;	/* rows of ours to release */
	double		next_tick;
	/* the request in flight */
	char		errbuf[CURL_ERROR_SIZE];
	char		retry_after[64];
	char		ratelimit_remaining[32];	/* GitHub's x-ratelimit-* */
	char		ratelimit_reset[32];
	char		response[RESPONSE_KEEP + 1];
	size_t		response_len;
	bool		keep_answer;	/* an issue tracker's: all of it, for the server */
	PQExpBufferData answer;
	bool		answer_cut;		/* longer than ANSWER_MAX */
} Worker;

static const GBConnExtra deliver_extra[] = {
	{"connect_timeout", "10"},
	{"keepalives_idle", "30"},
	{"keepalives_interval", "10"},
	{"keepalives_count", "3"},
	{NULL, NULL}
};

/* One line on stderr: time, program, message.  Never a secret or a URL. */
static void
dlog(const Worker *w, const char *fmt,...)
	pg_attribute_printf(2, 3);

static void
dlog(const Worker *w, const char *fmt,...)
{
	char		msg[1536];
	char		who[32];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (w != NULL)
		snprintf(who, sizeof(who), "deliver[%d]", w->n);
	else
		snprintf(who, sizeof(who), "deliver");
	gb_log_line(who, msg);
}

static double
now_secs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Sleep, returning early when we are told to stop. */
static void
pause_for(double seconds)
{
	struct pollfd fd = {.fd = wake_pipe[0],.events = POLLIN};

	(void) poll(&fd, 1, (int) (seconds * 1000));
}

static void
request_stop(void)
{
	char		b = 's';

	if (__atomic_exchange_n(&stopping, 1, __ATOMIC_SEQ_CST) == 0)
		if (write(wake_pipe[1], &b, 1) < 0)
		{
			/* nothing to do: the workers also look at "stopping" */
		}
}

/* ------------------------------------------------------------------------
 * The database
 * ------------------------------------------------------------------------
 */

/* The server's message, or libpq's, on one line. */
static void
failure_text(PGconn *conn, const PGresult *res, char *out, size_t len)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	if (primary != NULL)
		snprintf(out, len, "%s (SQLSTATE %s)", primary, state ? state : "unknown");
	else
		gb_first_line(conn ? PQerrorMessage(conn) : "no connection", out, len);
}

/* A failure for good: the server's message, a hint, and everybody stops. */
static void
report_fatal(Worker *w, const char *what, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	char		text[1024];

	failure_text(w->conn, res, text, sizeof(text));
	dlog(w, "%s failed: %s", what, text);
	if (state != NULL && strcmp(state, "42883") == 0)
		dlog(w, "HINT:  deliver needs the delivery functions of gate_bridge 1.2 (claim_deliveries, complete_delivery, release_deliveries): update the extension with ALTER EXTENSION %s UPDATE",
			 GB_EXTENSION);
	else if (state != NULL && strcmp(state, "42501") == 0)
		dlog(w, "HINT:  deliver's role needs USAGE on schema gate_bridge and EXECUTE on gate_bridge.claim_deliveries(text, integer, interval, text), gate_bridge.complete_delivery(bigint, integer, text, interval, bytea) and gate_bridge.release_deliveries(text)");
	STORE(fatal, 1);
	request_stop();
}

/*
 * After a failed statement: fatal, or the start (or continuation) of an
 * outage, reported once.  A connection in trouble is dropped; the caller
 * waits w->delay and tries again.
 */
static GBFailure
failed(Worker *w, const char *what, PGresult *res)
{
	GBFailure	f = gb_classify_failure(w->conn, res);

	if (f == GB_FAILURE_FATAL || f == GB_FAILURE_REWOUND)
	{
		report_fatal(w, what, res);
		PQclear(res);
		return GB_FAILURE_FATAL;
	}
	if (!w->in_outage)
	{
		char		text[1024];

		failure_text(w->conn, res, text, sizeof(text));
		dlog(w, "%s failed: %s; %s with backoff (" GB_BACKOFF_TEXT ")", what, text,
			 f == GB_FAILURE_RETRY ? "retrying" : "reconnecting");
		w->in_outage = true;
	}
	PQclear(res);
	if (f == GB_FAILURE_RECONNECT)
	{
		PQfinish(w->conn);
		w->conn = NULL;
	}
	return f;
}

static void
backoff(Worker *w)
{
	pause_for(w->delay);
	w->delay = gb_backoff_next(w->delay);
}

static void
recovered(Worker *w)
{
	if (w->in_outage)
		dlog(w, "the database is back");
	w->in_outage = false;
	w->delay = GB_BACKOFF_FIRST;
}

/* Connect, name the session, LISTEN (not with --once).  False: try later. */
static bool
ensure_connected(Worker *w)
{
	PGresult   *res;
	char	   *ident;
	char		sql[200];
	const char *channel;

	if (w->conn != NULL && PQstatus(w->conn) == CONNECTION_OK)
		return true;
	if (w->conn != NULL)
		PQfinish(w->conn);
	w->listening = false;
	w->conn = gb_connect(conninfo, deliver_extra, false);
	if (PQstatus(w->conn) != CONNECTION_OK)
	{
		(void) failed(w, "connecting to the database", NULL);
		return false;
	}
	res = PQexec(w->conn, "SET application_name TO 'gate-bridge deliver'");
	PQclear(res);
	if (once)
		return true;

	/* NULL when this backend has not loaded the library and nothing set it */
	res = PQexec(w->conn,
				 "SELECT pg_catalog.current_setting('gate_bridge.events_channel', true)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		(void) failed(w, "reading gate_bridge.events_channel", res);
		return false;
	}
	channel = gb_value(res, 0, 0);
	if (channel == NULL || channel[0] == '\0')
		channel = "incident_events";
	ident = PQescapeIdentifier(w->conn, channel, strlen(channel));
	PQclear(res);
	if (ident == NULL)
	{
		(void) failed(w, "LISTEN", NULL);
		return false;
	}
	snprintf(sql, sizeof(sql), "LISTEN %s", ident);
	PQfreemem(ident);
	res = PQexec(w->conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		(void) failed(w, "LISTEN", res);
		return false;
	}
	PQclear(res);
	w->listening = true;
	return true;
}

/*
 * Wait for a notification, the timeout, or the stop.  False when the
 * connection broke.
 */
static bool
wait_for_wakeup(Worker *w, double timeout)
{
	struct pollfd fds[2];
	PGnotify   *note;
	bool		woken = false;

	while ((note = PQnotifies(w->conn)) != NULL)
	{
		PQfreemem(note);
		woken = true;
	}
	if (woken)
		return true;
	fds[0].fd = PQsocket(w->conn);
	fds[0].events = POLLIN;
	fds[1].fd = wake_pipe[0];
	fds[1].events = POLLIN;
	if (fds[0].fd < 0)
		return false;
	if (poll(fds, 2, (int) (timeout * 1000)) <= 0 || !(fds[0].revents & (POLLIN | POLLERR | POLLHUP)))
		return true;
	if (!PQconsumeInput(w->conn) || gb_connection_lost(w->conn))
		return false;
	while ((note = PQnotifies(w->conn)) != NULL)
		PQfreemem(note);
	return true;
}

/* gate_bridge.tick(), every --tick seconds, by worker 1. */
static void
do_tick(Worker *w)
{
	PGresult   *res = PQexec(w->conn, "SELECT gate_bridge.tick()");
	const char *state;
	char		text[1024];

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		PQclear(res);
		return;
	}
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (state != NULL && strcmp(state, "42501") == 0)
	{
		STORE(tick_refused, 1);
		dlog(w, "gate_bridge.tick() is not allowed for this role; not calling it again "
			 "(GRANT EXECUTE ON FUNCTION gate_bridge.tick() to it, or schedule tick() with pg_cron)");
		PQclear(res);
		return;
	}
	failure_text(w->conn, res, text, sizeof(text));
	dlog(w, "gate_bridge.tick() failed: %s", text);
	PQclear(res);
}

/* ------------------------------------------------------------------------
 * HTTP
 * ------------------------------------------------------------------------
 */

typedef struct Delivery
{
	const char *id;
	const char *destination;
	const char *kind;
	const char *url;
	const char *secret;
	const char *event_id;
	const char *attempt;
	const char *method;			/* GET, POST or PATCH */
	const char *request;		/* an issue tracker's: create, find, ...; or NULL */
	const char *body;			/* NULL: none (a GET) */
	size_t		body_len;
} Delivery;

/* The outcome of one request, for complete_delivery(). */
typedef struct Outcome
{
	long		http_status;	/* 0: no response */
	char		error[1024];	/* "" for none */
	bool		has_retry_after;
	long		retry_after_secs;
	bool		has_answer;		/* w->answer holds the response's body */
} Outcome;

/* github and jira: destinations that are issue trackers */
static bool
is_issue_kind(const char *kind)
{
	return strcmp(kind, "github") == 0 || strcmp(kind, "jira") == 0;
}

/* The value of header line data if it is header name ("name:"), trimmed. */
static bool
header_value(const char *data, size_t len, const char *name, char *out, size_t outlen)
{
	size_t		nl = strlen(name);
	const char *v;
	size_t		vl;

	if (len <= nl || strncasecmp(data, name, nl) != 0)
		return false;
	v = data + nl;
	vl = len - nl;
	while (vl > 0 && (*v == ' ' || *v == '\t'))
		v++, vl--;
	while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		vl--;
	if (vl >= outlen)
		vl = outlen - 1;
	memcpy(out, v, vl);
	out[vl] = '\0';
	return true;
}

static size_t
on_header(char *data, size_t size, size_t nitems, void *arg)
{
	Worker	   *w = arg;
	size_t		len = size * nitems;

	if (header_value(data, len, "retry-after:", w->retry_after, sizeof(w->retry_after)) ||
		header_value(data, len, "x-ratelimit-remaining:", w->ratelimit_remaining,
					 sizeof(w->ratelimit_remaining)) ||
		header_value(data, len, "x-ratelimit-reset:", w->ratelimit_reset,
					 sizeof(w->ratelimit_reset)))
		return len;
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
	{
		/* a new response (after a 100) */
		w->retry_after[0] = '\0';
		w->ratelimit_remaining[0] = '\0';
		w->ratelimit_reset[0] = '\0';
	}
	return len;
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	Worker	   *w = arg;
	size_t		len = size * nmemb;
	size_t		room = RESPONSE_KEEP - w->response_len;
	size_t		i;

	for (i = 0; i < len && room > 0; i++)
	{
		unsigned char c = (unsigned char) data[i];

		w->response[w->response_len++] = (c < 0x20 || c == 0x7f) ? ' ' : (char) c;
		room--;
	}
	w->response[w->response_len] = '\0';
	if (w->keep_answer && !w->answer_cut)
	{
		if (w->answer.len + len > ANSWER_MAX)
			w->answer_cut = true;
		else
			appendBinaryPQExpBuffer(&w->answer, data, len);
	}
	return len;
}

/* Retry-After: delta-seconds or an HTTP-date.  False: none, or unreadable. */
static bool
parse_retry_after(const char *v, long *secs)
{
	char	   *end;
	long		n;

	if (v[0] == '\0')
		return false;
	if (v[0] >= '0' && v[0] <= '9')
	{
		errno = 0;
		n = strtol(v, &end, 10);
		if (errno != 0 || *end != '\0')
			return false;
		*secs = n;
		return true;
	}
	else
	{
		time_t		t = curl_getdate(v, NULL);

		if (t == (time_t) -1)
			return false;
		n = (long) (t - time(NULL));
		*secs = n < 0 ? 0 : n;
		return true;
	}
}

/*
 * GitHub's rate limits: with x-ratelimit-remaining 0, no request before
 * x-ratelimit-reset (epoch seconds).  False: not that.
 */
static bool
parse_ratelimit_reset(const Worker *w, long *secs)
{
	char	   *end;
	long long	reset;
	long		n;

	if (strcmp(w->ratelimit_remaining, "0") != 0 || w->ratelimit_reset[0] == '\0')
		return false;
	errno = 0;
	reset = strtoll(w->ratelimit_reset, &end, 10);
	if (errno != 0 || *end != '\0' || reset < 0)
		return false;
	n = (long) (reset - (long long) time(NULL));
	*secs = n < 0 ? 0 : n;
	return true;
}

/* A URL's path and query are not logged, nor stored: they may hold a secret. */
static void
scrub_url(char *text, size_t size, const char *url)
{
	const char *scheme = strstr(url, "://");
	const char *path = scheme ? strchr(scheme + 3, '/') : NULL;
	const char *hide = path ? path : strchr(url, '?');
	PQExpBufferData out;
	const char *p = text;
	const char *at;

	if (hide == NULL || strlen(hide) <= 1 || strstr(text, hide) == NULL)
		return;
	initPQExpBuffer(&out);
	while ((at = strstr(p, hide)) != NULL)
	{
		appendBinaryPQExpBuffer(&out, p, (size_t) (at - p));
		appendPQExpBufferStr(&out, "/...");
		p = at + strlen(hide);
	}
	appendPQExpBufferStr(&out, p);
	if (!PQExpBufferBroken(&out))
		snprintf(text, size, "%s", out.data);
	else
		snprintf(text, size, "(an error naming the URL)");
	termPQExpBuffer(&out);
}

static void
hmac_hex(const char *secret, const char *body, size_t len, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	unsigned int i;

	if (HMAC(EVP_sha256(), secret, (int) strlen(secret),
			 (const unsigned char *) body, len, md, &mdlen) == NULL)
		mdlen = 0;
	for (i = 0; i < mdlen; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	out[2 * mdlen] = '\0';
}

/* Send the request; the outcome for complete_delivery(). */
static void
send_delivery(Worker *w, const Delivery *d, Outcome *o)
{
	struct curl_slist *headers = NULL;
	char		line[256];
	bool		issue = is_issue_kind(d->kind);
	CURLcode	rc;

	memset(o, 0, sizeof(*o));
	w->errbuf[0] = '\0';
	w->retry_after[0] = '\0';
	w->ratelimit_remaining[0] = '\0';
	w->ratelimit_reset[0] = '\0';
	w->response[0] = '\0';
	w->response_len = 0;
	w->keep_answer = issue;
	w->answer_cut = false;
	resetPQExpBuffer(&w->answer);

	curl_easy_reset(w->curl);
	curl_easy_setopt(w->curl, CURLOPT_URL, d->url);
	curl_easy_setopt(w->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(w->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(w->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(w->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
	curl_easy_setopt(w->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(w->curl, CURLOPT_USERAGENT, user_agent);
	curl_easy_setopt(w->curl, CURLOPT_ERRORBUFFER, w->errbuf);
	if (d->body == NULL)
		curl_easy_setopt(w->curl, CURLOPT_HTTPGET, 1L);
	else
	{
		curl_easy_setopt(w->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, d->body);
		curl_easy_setopt(w->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) d->body_len);
		if (strcmp(d->method, "POST") != 0)
			curl_easy_setopt(w->curl, CURLOPT_CUSTOMREQUEST, d->method);
		headers = curl_slist_append(headers, "Content-Type: application/json");
	}
	curl_easy_setopt(w->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(w->curl, CURLOPT_HEADERDATA, w);
	curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);

	headers = curl_slist_append(headers, "Expect:");
	if (strcmp(d->kind, "webhook") == 0)
	{
		snprintf(line, sizeof(line), "Gate-Bridge-Event-Id: %s", d->event_id);
		headers = curl_slist_append(headers, line);
		if (d->secret != NULL && d->secret[0] != '\0')
		{
			char		hex[2 * EVP_MAX_MD_SIZE + 1];

			hmac_hex(d->secret, d->body, d->body_len, hex);
			snprintf(line, sizeof(line), "Gate-Bridge-Signature: sha256=%s", hex);
			headers = curl_slist_append(headers, line);
		}
	}
	else if (issue && d->secret != NULL)
	{
		/*
		 * GitHub: a bearer token and the media type and API version its REST
		 * API documents.  Jira: EMAIL:API_TOKEN is Basic authentication (Jira
		 * Cloud), anything else a bearer token (a Data Center personal access
		 * token).  The destination's trigger keeps CR and LF out of secrets.
		 */
		PQExpBufferData auth;

		initPQExpBuffer(&auth);
		if (strcmp(d->kind, "github") == 0)
		{
			headers = curl_slist_append(headers, "Accept: application/vnd.github+json");
			headers = curl_slist_append(headers, "X-GitHub-Api-Version: 2022-11-28");
			appendPQExpBuffer(&auth, "Authorization: Bearer %s", d->secret);
		}
		else
		{
			headers = curl_slist_append(headers, "Accept: application/json");
			if (strchr(d->secret, ':') != NULL)
			{
				curl_easy_setopt(w->curl, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
				curl_easy_setopt(w->curl, CURLOPT_USERPWD, d->secret);
			}
			else
				appendPQExpBuffer(&auth, "Authorization: Bearer %s", d->secret);
		}
		if (auth.len > 0 && !PQExpBufferBroken(&auth))
			headers = curl_slist_append(headers, auth.data);
		/* libcurl copied the line */
		termPQExpBuffer(&auth);
	}
	curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, headers);

	rc = curl_easy_perform(w->curl);
	if (rc != CURLE_OK)
	{
		snprintf(o->error, sizeof(o->error), "%s",
				 w->errbuf[0] != '\0' ? w->errbuf : curl_easy_strerror(rc));
		scrub_url(o->error, sizeof(o->error), d->url);
	}
	else
	{
		long		reset_secs;

		curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &o->http_status);
		o->has_retry_after = parse_retry_after(w->retry_after, &o->retry_after_secs);
		if ((o->http_status == 403 || o->http_status == 429) &&
			parse_ratelimit_reset(w, &reset_secs) &&
			(!o->has_retry_after || reset_secs > o->retry_after_secs))
		{
			o->has_retry_after = true;
			o->retry_after_secs = reset_secs;
		}
		/* the kept bytes up to the first that is not UTF-8: a text parameter */
		w->response[pg_encoding_verifymbstr(PG_UTF8, w->response, (int) w->response_len)] = '\0';
		if (o->http_status < 200 || o->http_status > 299)
			snprintf(o->error, sizeof(o->error), "HTTP %ld%s%s", o->http_status,
					 w->response[0] != '\0' ? ": " : "", w->response);
		o->has_answer = issue && !w->answer_cut && !PQExpBufferBroken(&w->answer);
	}
	/* the handle keeps pointers into the list: drop them with it */
	curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(w->curl, CURLOPT_USERPWD, NULL);
	curl_slist_free_all(headers);
}

/* ------------------------------------------------------------------------
 * One delivery
 * ------------------------------------------------------------------------
 */

/*
 * Record the outcome.  True when it was recorded; false when it could not
 * be (the delivery is left to its lease, and will be sent again with the
 * same event id) or a failure for good stopped everything.  An issue
 * tracker's answer goes along as bytea (binary: no quoting, and bytes that
 * are not UTF-8 are the server's to judge).  with_answer: the server's
 * complete_delivery() takes the answer.
 */
static bool
complete(Worker *w, const Delivery *d, const Outcome *o, bool with_answer)
{
	char		status[16];
	char		said[32];
	char		retry[32];
	const char *params[5];
	int			lengths[5] = {0, 0, 0, 0, 0};
	int			formats[5] = {0, 0, 0, 0, 1};
	const Oid	types[5] = {0, 0, 0, 0, BYTEA_OID};
	int			tries;

	snprintf(status, sizeof(status), "%ld", o->http_status);
	snprintf(said, sizeof(said), "HTTP %ld", o->http_status);
	snprintf(retry, sizeof(retry), "%ld seconds", o->retry_after_secs);
	params[0] = d->id;
	params[1] = o->http_status > 0 ? status : NULL;
	params[2] = o->error[0] != '\0' ? o->error : NULL;
	params[3] = o->has_retry_after ? retry : NULL;
	params[4] = o->has_answer ? w->answer.data : NULL;
	lengths[4] = o->has_answer ? (int) w->answer.len : 0;

	for (tries = 0; tries < COMPLETE_TRIES; tries++)
	{
		PGresult   *res;

		if (with_answer)
			res = PQexecParams(w->conn, complete_query, 5, types, params,
							   lengths, formats, 0);
		else
			res = PQexecParams(w->conn, complete_query_without_answer, 4, NULL, params,
							   NULL, NULL, 0);

		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			const char *now = gb_value(res, 0, 0);

			recovered(w);
			if (now == NULL || strcmp(now, "delivered") != 0)
				dlog(w, "delivery %s to %s (%s%s%s), event %s, attempt %s: %s; now %s",
					 d->id, d->destination, d->kind, d->request ? " " : "",
					 d->request ? d->request : "", d->event_id,
					 d->attempt ? d->attempt : "?",
					 o->error[0] != '\0' ? o->error : o->http_status > 0 ? said : "no error",
					 now ? now : "?");
			PQclear(res);
			return true;
		}
		if (failed(w, "gate_bridge.complete_delivery()", res) != GB_FAILURE_RETRY)
			break;
		backoff(w);
	}
	if (!LOAD(fatal))
		dlog(w, "delivery %s to %s: its outcome (%s) could not be recorded; it is left to its lease and will be sent again",
			 d->id, d->destination, o->http_status > 0 ? "a response" : "no response");
	return false;
}

static const char *
column(const PGresult *res, int row, int col)
{
	return col < 0 ? NULL : gb_value(res, row, col);
}

/* Send and record a claimed batch.  False: the connection is in trouble. */
static bool
deliver_batch(Worker *w, PGresult *res)
{
	int			n = PQntuples(res);
	int			c_id = PQfnumber(res, "id");
	int			c_dest = PQfnumber(res, "destination");
	int			c_kind = PQfnumber(res, "kind");
	int			c_url = PQfnumber(res, "url");
	int			c_secret = PQfnumber(res, "secret");
	int			c_event = PQfnumber(res, "event_id");
	int			c_attempt = PQfnumber(res, "attempt");
	int			c_body = PQfnumber(res, "body");
	int			c_method = PQfnumber(res, "method");	/* -1: POST */
	int			c_request = PQfnumber(res, "request");
	int			r;

	if (c_id < 0 || c_dest < 0 || c_kind < 0 || c_url < 0 || c_event < 0 || c_body < 0)
	{
		dlog(w, "gate_bridge.claim_deliveries() returned no id, destination, kind, url, event_id or body");
		STORE(fatal, 1);
		request_stop();
		w->claimed_unsent = true;
		return false;
	}
	for (r = 0; r < n; r++)
	{
		Delivery	d;
		Outcome		o;
		bool		recorded;

		if (LOAD(stopping))
		{
			w->claimed_unsent = true;
			return true;
		}
		memset(&d, 0, sizeof(d));
		d.id = column(res, r, c_id);
		d.destination = column(res, r, c_dest);
		d.kind = column(res, r, c_kind);
		d.url = column(res, r, c_url);
		d.secret = column(res, r, c_secret);
		d.event_id = column(res, r, c_event);
		d.attempt = column(res, r, c_attempt);
		d.method = c_method < 0 ? "POST" : column(res, r, c_method);
		d.request = column(res, r, c_request);
		d.body = column(res, r, c_body);
		d.body_len = d.body ? (size_t) PQgetlength(res, r, c_body) : 0;
		if (d.id == NULL || d.destination == NULL || d.kind == NULL || d.url == NULL ||
			d.event_id == NULL || d.method == NULL ||
			!(strcmp(d.method, "GET") == 0 ? d.body == NULL :
			  d.body != NULL && (strcmp(d.method, "POST") == 0 || strcmp(d.method, "PATCH") == 0)))
		{
			dlog(w, "delivery %s: the claim returned nothing to send; it is left to its lease",
				 d.id ? d.id : "?");
			continue;
		}
		send_delivery(w, &d, &o);
		recorded = complete(w, &d, &o, c_request >= 0);
		if (!recorded)
		{
			w->claimed_unsent = r + 1 < n;
			return false;
		}
	}
	return true;
}

/* Give back the rows claimed but not sent. */
static void
release(Worker *w)
{
	const char *params[1] = {w->name};
	int			tries;

	for (tries = 0; tries < 3; tries++)
	{
		PGresult   *res;

		if (w->conn == NULL || PQstatus(w->conn) != CONNECTION_OK)
		{
			if (w->conn != NULL)
				PQfinish(w->conn);
			w->conn = gb_connect(conninfo, deliver_extra, false);
			if (PQstatus(w->conn) != CONNECTION_OK)
			{
				usleep(250 * 1000);
				continue;
			}
		}
		res = PQexecParams(w->conn, release_query, 1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			PQclear(res);
			w->claimed_unsent = false;
			return;
		}
		if (gb_classify_failure(w->conn, res) == GB_FAILURE_FATAL)
		{
			char		text[1024];

			failure_text(w->conn, res, text, sizeof(text));
			dlog(w, "gate_bridge.release_deliveries() failed: %s; its rows are left to their leases", text);
			PQclear(res);
			return;
		}
		PQclear(res);
		PQfinish(w->conn);
		w->conn = NULL;
		usleep(250 * 1000);
	}
	dlog(w, "could not give back the deliveries claimed but not sent; they are left to their leases");
}

static void *
worker_main(void *arg)
{
	Worker	   *w = arg;
	const char *params[2] = {w->name, dashboard_url};

	w->delay = GB_BACKOFF_FIRST;
	w->next_tick = now_secs();
	while (!LOAD(stopping))
	{
		PGresult   *res;
		int			n;

		if (!ensure_connected(w))
		{
			if (LOAD(stopping))
				break;
			backoff(w);
			continue;
		}
		if (w->n == 1 && tick_secs > 0 && !LOAD(tick_refused) && now_secs() >= w->next_tick)
		{
			do_tick(w);
			w->next_tick = now_secs() + tick_secs;
		}

		res = PQexecParams(w->conn, claim_query, 2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			if (failed(w, "gate_bridge.claim_deliveries()", res) != GB_FAILURE_FATAL)
				backoff(w);
			continue;
		}
		recovered(w);
		n = PQntuples(res);
		if (n == 0)
		{
			PQclear(res);
			if (once)
				break;
			if (!wait_for_wakeup(w, 1.0))
			{
				(void) failed(w, "waiting for a notification", NULL);
				backoff(w);
			}
			continue;
		}
		w->claimed_unsent = true;	/* until the batch is through */
		if (deliver_batch(w, res))
		{
			if (!LOAD(stopping))
				w->claimed_unsent = false;
		}
		else if (w->conn == NULL && !LOAD(stopping))
			backoff(w);
		PQclear(res);
	}
	/*
	 * The rows of the last batch claimed but not sent go back at once.  A
	 * row whose outcome could not be recorded stays leased (after a broken
	 * batch, release_deliveries() would take it back too).
	 */
	if (w->claimed_unsent && !LOAD(fatal))
		release(w);
	if (w->conn != NULL)
		PQfinish(w->conn);
	w->conn = NULL;
	__atomic_add_fetch(&workers_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* ------------------------------------------------------------------------
 * The command
 * ------------------------------------------------------------------------
 */

enum
{
	OPT_WORKERS = GB_LONG_ONLY,
	OPT_ONCE,
	OPT_DASHBOARD_URL,
	OPT_TICK,
	OPT_CONNECT_TIMEOUT,
	OPT_TIMEOUT
};

static const GBOption options[] = {
	{"workers", OPT_WORKERS, "N", "worker threads, each with its own connection\n"
	"(default 1, at most 64)"},
	{"once", OPT_ONCE, NULL, "deliver what is due now, then exit"},
	{"dashboard-url", OPT_DASHBOARD_URL, "URL", "link messages and issues to this dashboard\n"
	"(URL/?incident=ID)"},
	{"tick", OPT_TICK, "SECONDS", "call gate_bridge.tick() this often (default 60;\n"
	"0: never)"},
	{"connect-timeout", OPT_CONNECT_TIMEOUT, "SECONDS", "give up connecting to a destination\n"
	"after this long (default 5)"},
	{"timeout", OPT_TIMEOUT, "SECONDS", "give up on a request after this long\n"
	"(default 10)"},
	{NULL, 0, NULL, NULL}
};


static int
deliver_option(int key, const char *arg)
{
	double		secs;

	switch (key)
	{
		case OPT_WORKERS:
			if (!gb_parse_int(arg, 1, MAX_WORKERS, &nworkers))
				return gb_usage_error("deliver", "invalid --workers \"%s\": expected a number from 1 to %d",
									  arg, MAX_WORKERS);
			break;
		case OPT_ONCE:
			once = true;
			break;
		case OPT_DASHBOARD_URL:
			if (strncmp(arg, "http://", 7) != 0 && strncmp(arg, "https://", 8) != 0)
				return gb_usage_error("deliver", "invalid --dashboard-url \"%s\": expected an http:// or https:// URL",
									  arg);
			dashboard_url = arg;
			break;
		case OPT_TICK:
			if (!gb_parse_int(arg, 0, 86400, &tick_secs))
				return gb_usage_error("deliver", "invalid --tick \"%s\": expected whole seconds from 0 to 86400",
									  arg);
			break;
		case OPT_CONNECT_TIMEOUT:
		case OPT_TIMEOUT:
			if (!gb_parse_seconds(arg, &secs) || secs > 3600)
				return gb_usage_error("deliver", "invalid --%s \"%s\": expected seconds, more than 0, at most 3600",
									  key == OPT_TIMEOUT ? "timeout" : "connect-timeout", arg);
			if (key == OPT_TIMEOUT)
				timeout_ms = (long) (secs * 1000);
			else
				connect_timeout_ms = (long) (secs * 1000);
			if (timeout_ms < 1)
				timeout_ms = 1;
			if (connect_timeout_ms < 1)
				connect_timeout_ms = 1;
			break;
	}
	return GB_EXIT_OK;
}

static int
deliver_run(GBSession *s)
{
	Worker	   *workers;
	sigset_t	sigs;
	char		host[256];
	int			started = 0;
	int			i;

	conninfo = s->conninfo;
	PQfinish(s->conn);			/* each worker has its own */
	s->conn = NULL;

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(user_agent, sizeof(user_agent), "%s/%s", GB_PROGNAME, GB_CLI_VERSION);
	if (pipe(wake_pipe) != 0)
	{
		fprintf(stderr, "%s deliver: could not create a pipe: %s\n", GB_PROGNAME, strerror(errno));
		return GB_EXIT_FAIL;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
	{
		fprintf(stderr, "%s deliver: could not initialize libcurl\n", GB_PROGNAME);
		return GB_EXIT_FAIL;
	}

	/* signals go to this thread's sigtimedwait(), not to the workers */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	workers = calloc((size_t) nworkers, sizeof(Worker));
	if (workers == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		return GB_EXIT_FAIL;
	}
	for (i = 0; i < nworkers; i++)
	{
		Worker	   *w = &workers[i];

		w->n = i + 1;
		snprintf(w->name, sizeof(w->name), "%s:%d:%d", host, (int) getpid(), w->n);
		w->curl = curl_easy_init();
		initPQExpBuffer(&w->answer);
		if (w->curl == NULL || pthread_create(&w->thread, NULL, worker_main, w) != 0)
		{
			dlog(NULL, "could not start worker %d", w->n);
			if (w->curl != NULL)
				curl_easy_cleanup(w->curl);
			STORE(fatal, 1);
			request_stop();
			break;
		}
		started++;
	}
	if (started > 0)
		dlog(NULL, "%d worker%s as %s:%d:N%s", started, started == 1 ? "" : "s", host,
			 (int) getpid(), once ? ", delivering what is due" : "");

	while (LOAD(workers_done) < started)
	{
		struct timespec ts = {.tv_sec = 0,.tv_nsec = 200 * 1000 * 1000};
		int			sig = sigtimedwait(&sigs, NULL, &ts);

		if ((sig == SIGINT || sig == SIGTERM) && !LOAD(stopping))
		{
			dlog(NULL, "stopping: finishing the requests in flight");
			request_stop();
		}
	}
	for (i = 0; i < started; i++)
	{
		pthread_join(workers[i].thread, NULL);
		curl_easy_cleanup(workers[i].curl);
		termPQExpBuffer(&workers[i].answer);
	}
	free(workers);
	curl_global_cleanup();
	return LOAD(fatal) ? GB_EXIT_FAIL : GB_EXIT_OK;
}

const GBCommand gb_command_deliver = {
	.name = "deliver",
	.summary = "send incident events to webhooks, Slack, PagerDuty, GitHub and Jira",
	.description =
	"Send the deliveries the extension writes for its destinations\n"
	"(gate_bridge.destinations: webhook, slack, pagerduty as HTTP POSTs; github and\n"
	"jira as the issue trackers' REST requests that open, comment on and close an\n"
	"incident's issue), retrying failures with backoff as\n"
	"gate_bridge.complete_delivery() decides.  Each worker\n"
	"claims due deliveries with gate_bridge.claim_deliveries(), so any number of\n"
	"workers and processes share the outbox, and each delivery of an incident\n"
	"reaches a destination after the ones before it.  Delivery is at least once:\n"
	"receivers deduplicate by the Gate-Bridge-Event-Id header.",
	.synopsis = "[OPTIONS]",
	.options = options,
	.help_tail =
	"Webhooks get the event and its incident as JSON, with the headers\n"
	"Gate-Bridge-Event-Id and, when the destination has a secret,\n"
	"Gate-Bridge-Signature: sha256=HEX, the HMAC-SHA256 of the body with it.\n"
	"GitHub gets the destination's secret as a bearer token; Jira as Basic\n"
	"authentication when it is EMAIL:API_TOKEN, as a bearer token otherwise.\n"
	"TLS certificates are always verified; redirects are not followed.\n"
	"\n"
	"Logs go to stderr, one line each, naming destinations, never their URLs or\n"
	"secrets.  The database role needs EXECUTE on gate_bridge.claim_deliveries(),\n"
	"complete_delivery() and release_deliveries(), and on tick() unless --tick 0.\n"
	"\n"
	"SIGINT or SIGTERM: no more claims; the requests in flight are finished and\n"
	"recorded, the rows claimed but not sent are given back, and it exits 0.\n"
	"Exit status 1: the server refused for good (permission denied, no delivery\n"
	"functions in this version); 3: the first connection failed (later ones are\n"
	"retried); 64: a bad command line.\n",
	.conn_extra = deliver_extra,
	.option = deliver_option,
	.run = deliver_run,
};
