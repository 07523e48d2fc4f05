/*-------------------------------------------------------------------------
 *
 * cmd_incidents.c
 *		gate-bridge incidents [--status S] [--severity S] [--json]
 *
 * A table for people, or one JSON object per line for programs.  Without
 * --status it lists the incidents that are not resolved (open and ack), as
 * on-call wants them; --status all lists every incident.
 *
 * cli/cmd_incidents.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

enum
{
	COL_ID, COL_KIND, COL_KEY, COL_AGENT, COL_VIOLATION_TYPE, COL_SEVERITY,
	COL_STATUS, COL_SUMMARY, COL_PLAYBOOKS, COL_OCCURRENCES,
	COL_FIRST_SEEN, COL_LAST_SEEN, COL_ACKED_AT, COL_ACKED_BY,
	COL_RESOLVED_AT, COL_RESOLVED_BY, COL_NOTE, NCOLS
};

#define UTC(col) "pg_catalog.to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static const char *const query =
"SELECT i.id, i.kind, i.key, i.agent, i.violation_type, i.severity,"
"       i.status, i.summary, i.playbooks, i.occurrences,"
"       " UTC("i.first_seen_at") ", " UTC("i.last_seen_at") ","
"       " UTC("i.acked_at") ", i.acked_by,"
"       " UTC("i.resolved_at") ", i.resolved_by, i.resolution_note"
"  FROM gate_bridge.incidents i"
" WHERE CASE WHEN $1::pg_catalog.text IS NULL THEN i.status <> 'resolved'"
"            WHEN $1 = 'all' THEN true"
"            ELSE i.status = $1 END"
"   AND ($2::pg_catalog.text IS NULL OR i.severity = $2)"
" ORDER BY i.severity, i.first_seen_at, i.id";

static void
help(FILE *out)
{
	fprintf(out,
			"List incidents, most severe and oldest first.\n"
			"\n"
			"Usage:\n"
			"  %s incidents [OPTIONS]\n"
			"\n"
			"Options:\n"
			"  -s, --status=STATUS     open, ack, resolved or all (default: open and ack)\n"
			"  -S, --severity=SEV      sev1, sev2 or sev3\n"
			"  -j, --json              one JSON object per line instead of a table\n"
			"  -d, --dbname=CONNINFO   connection string or URI\n"
			"  -h, --help              show this help, then exit\n"
			"\n"
			"Times are UTC.  Exit status: 0 listed (even if none); 1 the server refused;\n"
			"3 connection failure; 64 bad command line.\n", GB_PROGNAME);
}

static bool
one_of(const char *v, const char *const *allowed)
{
	for (; *allowed; allowed++)
		if (strcmp(v, *allowed) == 0)
			return true;
	return false;
}

static bool
print_json(const PGresult *res, int row)
{
	GBBuf		buf;
	GBJson		j;
	char	  **pb;
	int			npb;
	int			k;
	int64_t		id;
	int64_t		occ;
	bool		ok;
	static const struct
	{
		const char *name;
		int			col;
	}			texts[] = {
		{"kind", COL_KIND}, {"key", COL_KEY}, {"agent", COL_AGENT},
		{"violation_type", COL_VIOLATION_TYPE}, {"severity", COL_SEVERITY},
		{"status", COL_STATUS}, {"summary", COL_SUMMARY}
	}, times[] = {
		{"first_seen_at", COL_FIRST_SEEN}, {"last_seen_at", COL_LAST_SEEN},
		{"acked_at", COL_ACKED_AT}, {"acked_by", COL_ACKED_BY},
		{"resolved_at", COL_RESOLVED_AT}, {"resolved_by", COL_RESOLVED_BY},
		{"resolution_note", COL_NOTE}
	};

	gb_buf_init(&buf);
	gb_json_init(&j, &buf);
	gb_json_object_begin(&j);

	gb_json_key(&j, "id");
	if (gb_parse_id(gb_value(res, row, COL_ID), &id))
		gb_json_int(&j, id);
	else
		gb_json_null(&j);
	for (k = 0; k < (int) (sizeof(texts) / sizeof(texts[0])); k++)
	{
		gb_json_key(&j, texts[k].name);
		gb_json_string(&j, gb_value(res, row, texts[k].col));
	}

	gb_json_key(&j, "playbooks");
	gb_json_array_begin(&j);
	if (gb_parse_text_array(gb_value(res, row, COL_PLAYBOOKS), &pb, &npb))
	{
		for (k = 0; k < npb; k++)
			gb_json_string(&j, pb[k]);
		gb_free_text_array(pb, npb);
	}
	gb_json_array_end(&j);

	gb_json_key(&j, "occurrences");
	if (gb_parse_id(gb_value(res, row, COL_OCCURRENCES), &occ))
		gb_json_int(&j, occ);
	else
		gb_json_null(&j);

	for (k = 0; k < (int) (sizeof(times) / sizeof(times[0])); k++)
	{
		gb_json_key(&j, times[k].name);
		gb_json_string(&j, gb_value(res, row, times[k].col));
	}
	gb_json_object_end(&j);

	ok = gb_write_line(&buf);
	gb_buf_free(&buf);
	return ok;
}

static void
print_table(const PGresult *res)
{
	static const struct
	{
		const char *title;
		int			col;
	}			cols[] = {
		{"ID", COL_ID}, {"SEV", COL_SEVERITY}, {"STATUS", COL_STATUS},
		{"OCC", COL_OCCURRENCES}, {"FIRST SEEN (UTC)", COL_FIRST_SEEN},
		{"KEY", COL_KEY}
	};
#define NTABLECOLS ((int) (sizeof(cols) / sizeof(cols[0])))
	int			width[NTABLECOLS];
	int			n = PQntuples(res);
	int			r;
	int			k;

	for (k = 0; k < NTABLECOLS; k++)
	{
		width[k] = gb_display_width(cols[k].title);
		for (r = 0; r < n; r++)
		{
			int			w = gb_display_width(gb_value(res, r, cols[k].col));

			if (w > width[k])
				width[k] = w;
		}
	}
	for (k = 0; k < NTABLECOLS; k++)
	{
		if (k < NTABLECOLS - 1)
		{
			gb_print_padded(stdout, cols[k].title, width[k]);
			fputs("  ", stdout);
		}
		else
			fputs(cols[k].title, stdout);
	}
	fputc('\n', stdout);
	for (r = 0; r < n; r++)
	{
		for (k = 0; k < NTABLECOLS; k++)
		{
			const char *v = gb_value(res, r, cols[k].col);

			if (k < NTABLECOLS - 1)
			{
				gb_print_padded(stdout, v ? v : "", width[k]);
				fputs("  ", stdout);
			}
			else
				gb_print_sanitized(stdout, v);
		}
		fputc('\n', stdout);
	}
	printf("(%d incident%s)\n", n, n == 1 ? "" : "s");
#undef NTABLECOLS
}

int
gb_cmd_incidents(int argc, char **argv, const GBGlobal *g)
{
	static const struct option longopts[] = {
		{"status", required_argument, NULL, 's'},
		{"severity", required_argument, NULL, 'S'},
		{"json", no_argument, NULL, 'j'},
		{"dbname", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	static const char *const statuses[] = {"open", "ack", "resolved", "all", NULL};
	static const char *const severities[] = {"sev1", "sev2", "sev3", NULL};
	const char *cmd = "incidents";
	const char *conninfo = NULL;
	const char *params[2] = {NULL, NULL};
	bool		json = false;
	char	  **av = gb_subcommand_argv(argc, argv);
	PGconn	   *conn;
	PGresult   *res;
	int			rc = GB_EXIT_OK;
	int			c;
	int			r;

	while ((c = getopt_long(argc, av, "s:S:jd:h", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 's':
				if (!one_of(optarg, statuses))
					return gb_usage_error(cmd, "invalid --status \"%s\": expected open, ack, resolved or all",
										  optarg);
				params[0] = optarg;
				break;
			case 'S':
				if (!one_of(optarg, severities))
					return gb_usage_error(cmd, "invalid --severity \"%s\": expected sev1, sev2 or sev3",
										  optarg);
				params[1] = optarg;
				break;
			case 'j':
				json = true;
				break;
			case 'd':
				conninfo = optarg;
				break;
			case 'h':
				help(stdout);
				return GB_EXIT_OK;
			default:
				return gb_bad_option(cmd);
		}
	}
	if (optind < argc)
		return gb_usage_error(cmd, "unexpected argument \"%s\"", av[optind]);

	conn = gb_connect(gb_conninfo(g, conninfo), NULL, true);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		PQfinish(conn);
		return GB_EXIT_CONNECT;
	}
	res = gb_exec(conn, query, 2, params, &rc);
	if (res == NULL)
	{
		PQfinish(conn);
		return rc;
	}
	if (json)
	{
		for (r = 0; r < PQntuples(res); r++)
			if (!print_json(res, r))
			{
				rc = GB_EXIT_FAIL;
				break;
			}
	}
	else
	{
		print_table(res);
		if (fflush(stdout) == EOF)
			rc = GB_EXIT_FAIL;
	}
	PQclear(res);
	PQfinish(conn);
	return rc;
}
