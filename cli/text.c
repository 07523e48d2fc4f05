/*-------------------------------------------------------------------------
 *
 * text.c
 *		Plain-text helpers: reading a text[] value, printing table cells.
 *
 * cli/text.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/*
 * Split a one-dimensional array literal as the server prints it in text
 * format ({a,"b c","d\"e",NULL}) into its elements; a NULL element becomes
 * a NULL pointer.  Returns false for text that is not such a literal.
 */
bool
gb_parse_text_array(const char *lit, char ***elems, int *nelems)
{
	const char *p = lit;
	char	  **out = NULL;
	int			n = 0;
	int			cap = 0;
	GBBuf		item;

	*elems = NULL;
	*nelems = 0;
	if (p == NULL)
		return false;
	/* optional dimension decoration: [1:3]={...} */
	if (*p == '[')
	{
		p = strchr(p, '=');
		if (p == NULL)
			return false;
		p++;
	}
	if (*p++ != '{')
		return false;
	while (isspace((unsigned char) *p))
		p++;
	if (*p == '}')
		return p[1] == '\0';

	gb_buf_init(&item);
	for (;;)
	{
		bool		quoted = false;
		bool		is_null;

		gb_buf_reset(&item);
		while (isspace((unsigned char) *p))
			p++;
		if (*p == '"')
		{
			quoted = true;
			p++;
			while (*p && *p != '"')
			{
				if (*p == '\\' && p[1])
					p++;
				gb_buf_putc(&item, *p++);
			}
			if (*p != '"')
				goto fail;
			p++;
		}
		else
		{
			while (*p && *p != ',' && *p != '}')
			{
				if (*p == '{' || *p == '"')
					goto fail;	/* nested arrays are not ours */
				if (*p == '\\' && p[1])
					p++;
				gb_buf_putc(&item, *p++);
			}
			while (item.len > 0 && isspace((unsigned char) item.data[item.len - 1]))
				item.data[--item.len] = '\0';
		}
		while (isspace((unsigned char) *p))
			p++;
		is_null = !quoted && strcasecmp(item.data, "NULL") == 0;

		if (n == cap)
		{
			char	  **grown;

			cap = cap ? cap * 2 : 8;
			grown = realloc(out, sizeof(char *) * (size_t) cap);
			if (grown == NULL)
				goto fail;
			out = grown;
		}
		out[n] = is_null ? NULL : strdup(item.data);
		if (!is_null && out[n] == NULL)
			goto fail;
		n++;

		if (*p == ',')
		{
			p++;
			continue;
		}
		if (*p == '}' && p[1] == '\0')
			break;
		goto fail;
	}
	gb_buf_free(&item);
	*elems = out;
	*nelems = n;
	return true;

fail:
	gb_buf_free(&item);
	gb_free_text_array(out, n);
	return false;
}

void
gb_free_text_array(char **elems, int nelems)
{
	int			i;

	for (i = 0; i < nelems; i++)
		free(elems[i]);
	free(elems);
}

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
