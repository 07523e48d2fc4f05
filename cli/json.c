/*-------------------------------------------------------------------------
 *
 * json.c
 *		A growable buffer and a small JSON encoder for gate-bridge.
 *
 * Every JSON line the command line prints is built here, value by value:
 * strings are escaped (quote, backslash, control characters; bytes of
 * UTF-8 sequences pass through unchanged, the connection's client encoding
 * is UTF8), numbers are written from integers or checked against JSON's
 * number grammar, and commas and nesting are the encoder's business, not
 * the caller's.
 *
 * cli/json.c
 *
 *-------------------------------------------------------------------------
 */
#include "gate_bridge_cli.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void
out_of_memory(void)
{
	fprintf(stderr, "%s: out of memory\n", GB_PROGNAME);
	exit(GB_EXIT_FAIL);
}

void
gb_buf_init(GBBuf *b)
{
	b->cap = 256;
	b->len = 0;
	b->data = malloc(b->cap);
	if (b->data == NULL)
		out_of_memory();
	b->data[0] = '\0';
}

void
gb_buf_free(GBBuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void
gb_buf_reset(GBBuf *b)
{
	b->len = 0;
	b->data[0] = '\0';
}

static void
reserve(GBBuf *b, size_t more)
{
	size_t		need = b->len + more + 1;

	if (need <= b->cap)
		return;
	while (b->cap < need)
		b->cap *= 2;
	b->data = realloc(b->data, b->cap);
	if (b->data == NULL)
		out_of_memory();
}

void
gb_buf_append(GBBuf *b, const char *s, size_t n)
{
	reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
gb_buf_putc(GBBuf *b, char c)
{
	gb_buf_append(b, &c, 1);
}

void
gb_buf_puts(GBBuf *b, const char *s)
{
	gb_buf_append(b, s, strlen(s));
}

void
gb_buf_printf(GBBuf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		out_of_memory();
	reserve(b, (size_t) n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t) n;
}

/*
 * Append s as a JSON string literal.  Control characters become escapes
 * (the usual short ones, \u00XX for the rest); everything from 0x80 up is
 * passed through, so UTF-8 text stays UTF-8.
 */
void
gb_json_escape(GBBuf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p;

	gb_buf_putc(b, '"');
	for (p = (const unsigned char *) s; *p; p++)
	{
		switch (*p)
		{
			case '"':
				gb_buf_puts(b, "\\\"");
				break;
			case '\\':
				gb_buf_puts(b, "\\\\");
				break;
			case '\b':
				gb_buf_puts(b, "\\b");
				break;
			case '\f':
				gb_buf_puts(b, "\\f");
				break;
			case '\n':
				gb_buf_puts(b, "\\n");
				break;
			case '\r':
				gb_buf_puts(b, "\\r");
				break;
			case '\t':
				gb_buf_puts(b, "\\t");
				break;
			default:
				if (*p < 0x20 || *p == 0x7f)
				{
					char		esc[6] = {'\\', 'u', '0', '0',
					hex[*p >> 4], hex[*p & 0xf]};

					gb_buf_append(b, esc, sizeof(esc));
				}
				else
					gb_buf_putc(b, (char) *p);
				break;
		}
	}
	gb_buf_putc(b, '"');
}

/*
 * Does text match JSON's number grammar?
 *	-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
 */
bool
gb_json_is_number(const char *text)
{
	const char *p = text;

	if (p == NULL)
		return false;
	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return false;
	if (*p == '.')
	{
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E')
	{
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!(*p >= '0' && *p <= '9'))
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return *p == '\0';
}

void
gb_json_init(GBJson *j, GBBuf *buf)
{
	j->buf = buf;
	j->depth = 0;
	j->after_key = false;
	j->first[0] = true;
}

/* The separator a new member or element needs, if any. */
static void
separate(GBJson *j)
{
	if (j->after_key)
	{
		j->after_key = false;
		return;
	}
	if (!j->first[j->depth])
		gb_buf_putc(j->buf, ',');
	j->first[j->depth] = false;
}

static void
open_container(GBJson *j, char c)
{
	separate(j);
	if (j->depth + 1 >= GB_JSON_MAX_DEPTH)
	{
		fprintf(stderr, "%s: JSON nesting too deep\n", GB_PROGNAME);
		exit(GB_EXIT_FAIL);
	}
	gb_buf_putc(j->buf, c);
	j->depth++;
	j->first[j->depth] = true;
}

static void
close_container(GBJson *j, char c)
{
	gb_buf_putc(j->buf, c);
	j->depth--;
}

void
gb_json_object_begin(GBJson *j)
{
	open_container(j, '{');
}

void
gb_json_object_end(GBJson *j)
{
	close_container(j, '}');
}

void
gb_json_array_begin(GBJson *j)
{
	open_container(j, '[');
}

void
gb_json_array_end(GBJson *j)
{
	close_container(j, ']');
}

void
gb_json_key(GBJson *j, const char *key)
{
	separate(j);
	gb_json_escape(j->buf, key);
	gb_buf_putc(j->buf, ':');
	j->after_key = true;
}

/* A string, or null for a NULL pointer. */
void
gb_json_string(GBJson *j, const char *s)
{
	separate(j);
	if (s == NULL)
		gb_buf_puts(j->buf, "null");
	else
		gb_json_escape(j->buf, s);
}

void
gb_json_int(GBJson *j, int64_t v)
{
	separate(j);
	gb_buf_printf(j->buf, "%" PRId64, v);
}

void
gb_json_bool(GBJson *j, bool v)
{
	separate(j);
	gb_buf_puts(j->buf, v ? "true" : "false");
}

void
gb_json_null(GBJson *j)
{
	separate(j);
	gb_buf_puts(j->buf, "null");
}

/*
 * A number given as text (as the server printed it).  Text that is not a
 * JSON number is written as a string instead, so the line stays valid;
 * returns whether it was a number.
 */
bool
gb_json_number_text(GBJson *j, const char *text)
{
	if (text == NULL)
	{
		gb_json_null(j);
		return false;
	}
	if (!gb_json_is_number(text))
	{
		gb_json_string(j, text);
		return false;
	}
	separate(j);
	gb_buf_puts(j->buf, text);
	return true;
}

/*
 * Print the buffer and a newline on stdout and flush, so that a reader at
 * the other end of a pipe sees each line as soon as it is complete.
 */
bool
gb_write_line(GBBuf *b)
{
	if (fwrite(b->data, 1, b->len, stdout) != b->len ||
		putchar('\n') == EOF ||
		fflush(stdout) == EOF)
	{
		fprintf(stderr, "%s: could not write to standard output\n", GB_PROGNAME);
		return false;
	}
	return true;
}
