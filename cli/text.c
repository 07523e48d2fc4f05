/*-------------------------------------------------------------------------
 *
 * text.c
 *		Output: table cells and reports for people, JSON lines for programs.
 *
 * JSON lines are rendered by the server; they are printed here as they
 * arrived, one a line, each flushed at once.
 *
 * cli/text.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gate_bridge_cli.h"

/*
 * Print text for a human: control characters, which could break a table
 * or a terminal, are shown as '?'.
 */
void
gb_print_sanitized(FILE *out, const char *s)
{
	const unsigned char *p;

	if (s == NULL)
		return;
	for (p = (const unsigned char *) s; *p; p++)
		fputc((*p < 0x20 || *p == 0x7f) ? '?' : *p, out);
}

/* Columns taken by UTF-8 text: one per character. */
int
gb_display_width(const char *s)
{
	int			w = 0;
	const unsigned char *p;

	if (s == NULL)
		return 0;
	for (p = (const unsigned char *) s; *p; p++)
		if ((*p & 0xc0) != 0x80)
			w++;
	return w;
}

void
gb_print_padded(FILE *out, const char *s, int width)
{
	int			w = gb_display_width(s);

	gb_print_sanitized(out, s);
	for (; w < width; w++)
		fputc(' ', out);
}

/*
 * An aligned table on stdout: a line of titles, then one line per row of
 * res with the columns col[0 .. ncols-1] under them, two spaces apart.
 * The last column, the widest as a rule, is not padded; SQL NULL is an
 * empty cell.
 */
void
gb_print_table(const PGresult *res, const char *const *titles,
			   const int *col, int ncols)
{
	int		   *width = calloc((size_t) ncols, sizeof(int));
	int			n = PQntuples(res);
	int			r;
	int			k;

	if (width == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
	for (k = 0; k < ncols; k++)
	{
		width[k] = gb_display_width(titles[k]);
		for (r = 0; r < n; r++)
		{
			int			w = gb_display_width(gb_value(res, r, col[k]));

			if (w > width[k])
				width[k] = w;
		}
	}
	for (k = 0; k < ncols - 1; k++)
	{
		gb_print_padded(stdout, titles[k], width[k]);
		fputs("  ", stdout);
	}
	fputs(titles[ncols - 1], stdout);
	fputc('\n', stdout);
	for (r = 0; r < n; r++)
	{
		for (k = 0; k < ncols - 1; k++)
		{
			const char *v = gb_value(res, r, col[k]);

			gb_print_padded(stdout, v ? v : "", width[k]);
			fputs("  ", stdout);
		}
		gb_print_sanitized(stdout, gb_value(res, r, col[ncols - 1]));
		fputc('\n', stdout);
	}
	free(width);
}

/*
 * A metric for the report: at most 6 significant digits (0.493333,
 * 1234.57, 250).  Text that is not a number is shown as it is.
 */
void
gb_format_number(const char *text, char *out, size_t outlen)
{
	char	   *end;
	double		v;

	if (text == NULL)
	{
		snprintf(out, outlen, "-");
		return;
	}
	v = strtod(text, &end);
	if (end == text || *end != '\0')
		snprintf(out, outlen, "%s", text);
	else
		snprintf(out, outlen, "%.6g", v);
}

/*
 * Print a line (a JSON object as the server rendered it) and flush, so
 * that a reader at the other end of a pipe sees each line as soon as it is
 * complete.
 */
bool
gb_print_line(const char *line)
{
	if (fputs(line, stdout) == EOF || putchar('\n') == EOF ||
		fflush(stdout) == EOF)
	{
		fprintf(stderr, "%s: could not write to standard output\n", GB_PROGNAME);
		return false;
	}
	return true;
}

/* A PQExpBuffer that could not grow has lost its text: give up. */
void
gb_check_buffer(PQExpBuffer buf)
{
	if (PQExpBufferBroken(buf))
	{
		fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
}

/*
 * A list command's output: run the query, then print each row's "line"
 * column as it is (--json), or the table of the columns with a count under
 * it, "(N one)" or "(N many)".  Returns the exit status.
 */
int
gb_print_listing(PGconn *conn, const char *sql, int nparams,
				 const char *const *params, const GBColumn *columns,
				 const char *const *titles, const int *col, int ncols,
				 const int *line, bool json, const char *one, const char *many)
{
	PGresult   *res;
	int			rc = GB_EXIT_OK;
	int			n;
	int			r;

	res = gb_exec(conn, sql, nparams, params, &rc);
	if (res == NULL)
		return rc;
	n = PQntuples(res);
	if (!gb_find_columns(res, columns))
		rc = GB_EXIT_FAIL;
	else if (json)
	{
		for (r = 0; r < n && rc == GB_EXIT_OK; r++)
			if (!gb_print_line(PQgetvalue(res, r, *line)))
				rc = GB_EXIT_FAIL;
	}
	else
	{
		gb_print_table(res, titles, col, ncols);
		printf("(%d %s)\n", n, n == 1 ? one : many);
		if (fflush(stdout) == EOF)
			rc = GB_EXIT_FAIL;
	}
	PQclear(res);
	return rc;
}

/*
 * One line of a long-running command's log on stderr: the UTC time, the
 * program and who speaks ("serve", "deliver[2]"), then the message.
 * Threads take turns, so lines never mix.
 */
void
gb_log_line(const char *who, const char *msg)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	char		when[32];
	time_t		now = time(NULL);
	struct tm	tm;

	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&lock);
	fprintf(stderr, "%s %s %s: %s\n", when, GB_PROGNAME, who, msg);
	fflush(stderr);
	pthread_mutex_unlock(&lock);
}
