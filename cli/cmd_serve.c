/*-------------------------------------------------------------------------
 *
 * cmd_serve.c
 *		gate-bridge serve: the live dashboard, Server-Sent Events, the HTTP
 *		API and Prometheus metrics.
 *
 * The HTTP side is libmicrohttpd: a small pool of threads over epoll, and
 * suspend/resume, made for long-lived streaming responses such as SSE,
 * which keep no thread while they wait.  See serve.h for the parts.
 *
 * Without --tokens it binds to loopback only and is read-only; with it,
 * every route but the dashboard's files and /healthz needs a token.
 *
 * cli/cmd_serve.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "gate_bridge_cli.h"
#include "serve.h"

GBServeConfig gb_serve = {
	.host = "127.0.0.1",
	.port = 8080,
	.tick_secs = 60,
	.client_timeout = 30,
	.threads = 4,
	.ring_size = 10000,
};

static const char *tokens_file = NULL;
static struct sockaddr_storage bind_addr;

/* One line on stderr: time, program, message.  Never a token. */
void
gb_serve_log(const char *fmt,...)
{
	char		msg[1024];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gb_log_line("serve", msg);
}

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
	char		msg[1024];
	size_t		len;

	(void) cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	len = strlen(msg);
	while (len > 0 && msg[len - 1] == '\n')
		msg[--len] = '\0';
	gb_serve_log("http: %s", msg);
}

enum
{
	OPT_LISTEN = GB_LONG_ONLY,
	OPT_TOKENS,
	OPT_TICK,
	OPT_CLIENT_TIMEOUT
};

static const GBOption options[] = {
	{"listen", OPT_LISTEN, "HOST:PORT", "the address to serve on (default 127.0.0.1:8080;\n"
	"port 0 picks a free one); without --tokens only a loopback address"},
	{"tokens", OPT_TOKENS, "FILE", "bearer tokens, one per line: TOKEN viewer|operator [NAME]"},
	{"tick", OPT_TICK, "SECONDS", "call gate_bridge.tick() this often (default 60; 0: never)"},
	{"client-timeout", OPT_CLIENT_TIMEOUT, "SECONDS", "drop a client that makes no progress for this\n"
	"long (default 30)"},
	{NULL, 0, NULL, NULL}
};


static int
serve_option(int key, const char *arg)
{
	switch (key)
	{
		case OPT_LISTEN:
			{
				const char *colon = strrchr(arg, ':');
				size_t		hl;

				if (colon == NULL || !gb_parse_int(colon + 1, 0, 65535, &gb_serve.port))
					return gb_usage_error("serve", "invalid --listen \"%s\": expected HOST:PORT, such as 127.0.0.1:8080",
										  arg);
				hl = (size_t) (colon - arg);
				if (hl >= 2 && arg[0] == '[' && arg[hl - 1] == ']')
				{
					arg++;
					hl -= 2;
				}
				if (hl == 0 || hl >= sizeof(gb_serve.host))
					return gb_usage_error("serve", "invalid --listen \"%s\": expected HOST:PORT, such as 127.0.0.1:8080",
										  arg);
				memcpy(gb_serve.host, arg, hl);
				gb_serve.host[hl] = '\0';
				break;
			}
		case OPT_TOKENS:
			tokens_file = arg;
			break;
		case OPT_TICK:
			if (!gb_parse_int(arg, 0, 86400, &gb_serve.tick_secs))
				return gb_usage_error("serve", "invalid --tick \"%s\": expected whole seconds from 0 to 86400",
									  arg);
			break;
		case OPT_CLIENT_TIMEOUT:
			if (!gb_parse_int(arg, 1, 3600, &gb_serve.client_timeout))
				return gb_usage_error("serve", "invalid --client-timeout \"%s\": expected whole seconds from 1 to 3600",
									  arg);
			break;
	}
	return GB_EXIT_OK;
}

/* The tokens file: TOKEN ROLE [NAME] per line, # comments.  Never echoes a token. */
static int
load_tokens(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char		line[1024];
	int			lineno = 0;
	int			cap = 0;

	if (f == NULL)
		return gb_usage_error("serve", "could not open --tokens file \"%s\": %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *save = NULL;
		char	   *token;
		char	   *role;
		char	   *name;
		char	   *extra;
		size_t		len = strlen(line);

		lineno++;
		if (len == sizeof(line) - 1 && line[len - 1] != '\n')
		{
			fclose(f);
			return gb_usage_error("serve", "--tokens file \"%s\", line %d: the line is too long", path, lineno);
		}
		token = strtok_r(line, " \t\r\n", &save);
		if (token == NULL || token[0] == '#')
			continue;
		role = strtok_r(NULL, " \t\r\n", &save);
		name = strtok_r(NULL, " \t\r\n", &save);
		extra = strtok_r(NULL, " \t\r\n", &save);
		if (role == NULL || (strcmp(role, "viewer") != 0 && strcmp(role, "operator") != 0) ||
			extra != NULL)
		{
			fclose(f);
			return gb_usage_error("serve", "--tokens file \"%s\", line %d: expected TOKEN viewer|operator [NAME]",
								  path, lineno);
		}
		if (strlen(token) < 16)
		{
			fclose(f);
			return gb_usage_error("serve", "--tokens file \"%s\", line %d: a token must have at least 16 characters",
								  path, lineno);
		}
		if (gb_serve.ntokens == cap)
		{
			cap = cap ? cap * 2 : 8;
			gb_serve.tokens = realloc(gb_serve.tokens, sizeof(*gb_serve.tokens) * (size_t) cap);
			if (gb_serve.tokens == NULL)
			{
				fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
				exit(GB_EXIT_FAIL);
			}
		}
		gb_serve.tokens[gb_serve.ntokens].token = strdup(token);
		gb_serve.tokens[gb_serve.ntokens].role =
			strcmp(role, "operator") == 0 ? GB_ROLE_OPERATOR : GB_ROLE_VIEWER;
		gb_serve.tokens[gb_serve.ntokens].name = name ? strdup(name) : NULL;
		gb_serve.ntokens++;
	}
	fclose(f);
	if (gb_serve.ntokens == 0)
		return gb_usage_error("serve", "--tokens file \"%s\" has no token", path);
	gb_serve.auth = true;
	return GB_EXIT_OK;
}

static bool
is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *) sa)->sin6_addr, &in6addr_loopback,
					  sizeof(struct in6_addr)) == 0;
	return false;
}

static int
serve_prepare(const char *const *operands)
{
	struct addrinfo hints;
	struct addrinfo *ai = NULL;
	int			rc;

	(void) operands;
	if (tokens_file != NULL)
	{
		rc = load_tokens(tokens_file);
		if (rc != GB_EXIT_OK)
			return rc;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	rc = getaddrinfo(gb_serve.host, NULL, &hints, &ai);
	if (rc != 0 || ai == NULL)
		return gb_usage_error("serve", "invalid --listen host \"%s\": %s", gb_serve.host,
							  gai_strerror(rc));
	if (!gb_serve.auth && !is_loopback(ai->ai_addr))
	{
		freeaddrinfo(ai);
		return gb_usage_error("serve", "--listen %s is not a loopback address: without --tokens, serve binds only to loopback (127.0.0.1, ::1)",
							  gb_serve.host);
	}
	memcpy(&bind_addr, ai->ai_addr, ai->ai_addrlen);
	if (bind_addr.ss_family == AF_INET)
		((struct sockaddr_in *) &bind_addr)->sin_port = htons((uint16_t) gb_serve.port);
	else
		((struct sockaddr_in6 *) &bind_addr)->sin6_port = htons((uint16_t) gb_serve.port);
	freeaddrinfo(ai);
	return GB_EXIT_OK;
}

/* As many descriptors as we may: one per client. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int
serve_run(GBSession *s)
{
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	sigset_t	sigs;
	int			sig;
	unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	struct rlimit rl;
	unsigned int limit = 4096;
	char		host[INET6_ADDRSTRLEN];

	gb_serve.conninfo = s->conninfo;
	raise_fd_limit();
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		rl.rlim_cur < limit + 64)
		limit = rl.rlim_cur > 128 ? (unsigned int) rl.rlim_cur - 64 : 64;
	if (bind_addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;

	/* signals go to the main thread's sigwait(), not to the workers */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	gb_pool_init(gb_serve.threads);
	if (!gb_stream_start(s->conn))
	{
		fprintf(stderr, "%s serve: could not start reading the event stream (see above)\n"
				"HINT:  serve's role needs USAGE on schema gate_bridge, SELECT on its incidents, incident_events, incident_counts, stats and stream_status, and EXECUTE on events_after(bigint, integer), events_head() and events_resume_point(bigint).\n",
				GB_PROGNAME);
		return GB_EXIT_FAIL;
	}
	s->conn = NULL;				/* the listener's now */

	daemon = MHD_start_daemon(flags, (uint16_t) gb_serve.port, NULL, NULL,
							  gb_serve_handler, NULL,
							  MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &bind_addr,
							  MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) gb_serve.threads,
							  MHD_OPTION_CONNECTION_LIMIT, limit,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) gb_serve.client_timeout,
							  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (64 * 1024),
							  MHD_OPTION_NOTIFY_COMPLETED, gb_serve_request_completed, NULL,
							  MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "%s serve: could not listen on %s port %d: %s\n", GB_PROGNAME,
				gb_serve.host, gb_serve.port, strerror(errno));
		gb_stream_stop();
		return GB_EXIT_FAIL;
	}
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (bind_addr.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &bind_addr)->sin6_addr, host, sizeof(host));
	else
		inet_ntop(AF_INET, &((struct sockaddr_in *) &bind_addr)->sin_addr, host, sizeof(host));
	fprintf(stderr, "%s serve: listening on http://%s%s%s:%u/%s\n", GB_PROGNAME,
			bind_addr.ss_family == AF_INET6 ? "[" : "", host,
			bind_addr.ss_family == AF_INET6 ? "]" : "",
			info ? (unsigned int) info->port : (unsigned int) gb_serve.port,
			gb_serve.auth ? "" : " (read-only, no tokens)");
	fflush(stderr);

	while (sigwait(&sigs, &sig) == 0 && sig != SIGINT && sig != SIGTERM)
		;
	gb_serve_log("stopping");
	MHD_quiesce_daemon(daemon);
	gb_stream_stop();
	MHD_stop_daemon(daemon);
	gb_pool_close();
	return GB_EXIT_OK;
}

const GBCommand gb_command_serve = {
	.name = "serve",
	.summary = "serve the live dashboard, Server-Sent Events, the HTTP API and metrics",
	.description =
	"Serve the incident dashboard at /, every incident event as Server-Sent\n"
	"Events at /events (resumable with Last-Event-ID), a JSON API under /api/,\n"
	"Prometheus metrics at /metrics and a health check at /healthz.  One process\n"
	"and one LISTEN connection for any number of browsers; it reconnects to the\n"
	"database by itself and goes on where the stream was, missing nothing.",
	.synopsis = "[OPTIONS]",
	.options = options,
	.help_tail =
	"Routes: GET / (the dashboard), /events, /api/session, /api/counts,\n"
	"/api/incidents (?status=&severity=&agent=&limit=), /api/incidents/ID,\n"
	"POST /api/incidents/ID/ack|resolve|snooze, GET /metrics, /healthz.\n"
	"\n"
	"With --tokens, requests need \"Authorization: Bearer TOKEN\" (/events also\n"
	"takes ?token=); viewers read, operators also ack, resolve and snooze.  The\n"
	"database role it connects as bounds what it can do.\n"
	"\n"
	"SIGINT or SIGTERM end it with exit status 0.  Exit status 1: it could not\n"
	"listen; 3: the first connection failed (later ones are retried); 64: a bad\n"
	"command line or tokens file.\n",
	.option = serve_option,
	.prepare = serve_prepare,
	.run = serve_run,
};
