/*-------------------------------------------------------------------------
 *
 * serve.h
 *		gate-bridge serve: the dashboard, Server-Sent Events, the HTTP API
 *		and Prometheus metrics, in one process.
 *
 * Three parts share this header:
 *	- cmd_serve.c: the command, its options and tokens, the HTTP daemon
 *	  (libmicrohttpd) and the process's life;
 *	- serve_stream.c: the one LISTEN connection, reading events through
 *	  gate_bridge.events_after() into a ring of ready-made SSE frames, and
 *	  the SSE clients that read from it;
 *	- serve_http.c: routes, authorization, the JSON API, /metrics,
 *	  /healthz, and the pool of query connections.
 *
 * Threads: libmicrohttpd's pool runs every request; the listener thread
 * reads the stream and wakes the SSE clients up; the main thread waits
 * for SIGINT/SIGTERM.  Stream state is guarded by one mutex (serve_stream.c).
 *
 * cli/serve.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef GATE_BRIDGE_SERVE_H
#define GATE_BRIDGE_SERVE_H

#include <microhttpd.h>

#include "libpq-fe.h"
#include <stdint.h>

/* the most a request body may hold */
#define GB_SERVE_MAX_BODY		(16 * 1024)

typedef enum
{
	GB_ROLE_NONE = 0,			/* no token, or an unknown one */
	GB_ROLE_VIEWER,
	GB_ROLE_OPERATOR
} GBRole;

/* What the command line asked for, and what the tokens file holds. */
typedef struct GBServeConfig
{
	const char *conninfo;		/* NULL: libpq's defaults */
	char		host[256];
	int			port;
	int			tick_secs;		/* 0: never */
	int			client_timeout; /* seconds before a client that does not
								 * read is dropped */
	int			threads;		/* HTTP worker threads = query connections */
	int			ring_size;		/* SSE frames kept in memory */
	bool		auth;			/* a tokens file was given */
	int			ntokens;
	struct GBToken
	{
		char	   *token;
		GBRole		role;
		char	   *name;		/* or NULL */
	}		   *tokens;
} GBServeConfig;

extern GBServeConfig gb_serve;

/* a file of the dashboard, embedded at build time (dashboard_assets.c) */
typedef struct GBAsset
{
	const char *path;			/* "/", "/app.js", ... */
	const char *content_type;
	const unsigned char *data;
	size_t		len;
} GBAsset;

extern const GBAsset gb_assets[];
extern const int gb_nassets;

/* serve_stream.c */
extern bool gb_stream_start(PGconn *conn);
extern PGconn *gb_pool_acquire(void);
extern void gb_pool_release(PGconn *conn);
extern PGresult *gb_pool_exec(PGconn *conn, const char *sql, int nparams,
							  const char *const *params);
extern void gb_stream_stop(void);
extern enum MHD_Result gb_stream_respond(struct MHD_Connection *connection,
										 const char *after);
extern void gb_stream_request_done(void *cls, bool timed_out);
typedef struct GBStreamStats
{
	bool		database_up;
	bool		have_head;
	int64_t		position;
	uint64_t	events_total;
	uint64_t	dropped_total;
	int			clients;
} GBStreamStats;
extern void gb_stream_stats(GBStreamStats *out);
extern void gb_serve_connection_setup(PGconn *conn);

/* serve_http.c */
extern enum MHD_Result gb_serve_handler(void *cls, struct MHD_Connection *connection,
										const char *url, const char *method,
										const char *version, const char *upload_data,
										size_t *upload_data_size, void **con_cls);
extern void gb_serve_request_completed(void *cls, struct MHD_Connection *connection,
									   void **con_cls,
									   enum MHD_RequestTerminationCode toe);
extern void gb_pool_init(int size);
extern void gb_pool_close(void);

/* cmd_serve.c */
extern void gb_serve_log(const char *fmt,...) pg_attribute_printf(1, 2);

#endif							/* GATE_BRIDGE_SERVE_H */
