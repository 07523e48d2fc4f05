/*-------------------------------------------------------------------------
 *
 * payload.c
 *		The NOTIFY payloads.
 *
 * A created incident, on gate_bridge.notify_channel:
 *	{"event":"incident_created","data":{"id":42,"kind":"budget",
 *	 "key":"BUDGET_inbox.triage_quality","severity":"sev1",
 *	 "summary":"Budget violation: inbox.triage quality","status":"open",
 *	 "created_at":"2024-01-15T10:30:00Z","agent":"inbox.triage",
 *	 "event_id":7,"position":7}}
 * The "data" object, without event_id and position, is also the "created"
 * event's detail.
 *
 * Every event, on gate_bridge.events_channel:
 *	{"event":"acked","position":8,"id":8,"incident_id":42}
 *
 * Built as text (jsonb would reorder the keys) with the server's own
 * escape_json(), so it is valid JSON for any agent name.  NOTIFY refuses
 * payloads of 8000 bytes or more; keys are at most 255 bytes and agent names
 * at most 128, so the payload stays far below that, but the summary is
 * shortened at a character boundary should it ever be needed.
 *
 * src/payload.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "gate_bridge.h"

/* NOTIFY's limit is 8000 bytes; stay well inside it */
#define GB_PAYLOAD_MAX		7900

/* longest key or summary we put in a payload, before escaping */
#define GB_FIELD_MAX		1024

/* "2024-01-15T10:30:00Z": UTC, whole seconds */
static void
append_utc_timestamp(StringInfo buf, TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) ||
		timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
	{
		appendStringInfoString(buf, "null");
		return;
	}
	appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02dZ\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Escape "value" as a JSON string, first cut to at most "max" bytes. */
static void
append_clipped(StringInfo buf, const char *value, int max)
{
	int			len = strlen(value);

	if (len > max)
	{
		int			cut = pg_mbcliplen(value, len, max - 3);
		char	   *clipped = palloc(cut + 4);

		memcpy(clipped, value, cut);
		strcpy(clipped + cut, "...");
		escape_json(buf, clipped);
		pfree(clipped);
	}
	else
		escape_json(buf, value);
}

static char *
build_data(int64 id, const char *kind, const char *key, const char *severity,
		   const char *summary, TimestampTz created_at, const char *agent,
		   int field_max)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\":" INT64_FORMAT ",\"kind\":", id);
	escape_json(&buf, kind);
	appendStringInfoString(&buf, ",\"key\":");
	append_clipped(&buf, key, field_max);
	appendStringInfoString(&buf, ",\"severity\":");
	escape_json(&buf, severity);
	appendStringInfoString(&buf, ",\"summary\":");
	append_clipped(&buf, summary, field_max);
	appendStringInfoString(&buf, ",\"status\":\"open\",\"created_at\":");
	append_utc_timestamp(&buf, created_at);
	appendStringInfoString(&buf, ",\"agent\":");
	if (agent)
		append_clipped(&buf, agent, field_max);
	else
		appendStringInfoString(&buf, "null");
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * The "data" object of a created incident: the "created" event's detail,
 * and the heart of its notification.  Long fields are shortened so that the
 * notification always fits.
 */
char *
gb_created_data(int64 id, const char *kind, const char *key,
				const char *severity, const char *summary,
				TimestampTz created_at, const char *agent)
{
	int			field_max = GB_FIELD_MAX;
	char	   *data;

	for (;;)
	{
		data = build_data(id, kind, key, severity, summary, created_at, agent,
						  field_max);
		/* 100 bytes for the envelope */
		if (strlen(data) + 100 < GB_PAYLOAD_MAX || field_max <= 64)
			break;
		pfree(data);
		field_max /= 2;
	}
	return data;
}

/*
 * The notification announcing a created incident: the "data" object with
 * the event's id and stream position added at its end.
 */
char *
gb_created_payload(int64 event_id, int64 position, const char *data)
{
	size_t		len = strlen(data);

	Assert(len >= 2 && data[len - 1] == '}');
	return psprintf("{\"event\":\"incident_created\",\"data\":%.*s,"
					"\"event_id\":" INT64_FORMAT ",\"position\":" INT64_FORMAT "}}",
					(int) len - 1, data, event_id, position);
}

/* The notification announcing any event on gate_bridge.events_channel. */
char *
gb_event_payload(const char *event, int64 position, int64 event_id,
				 int64 incident_id)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"event\":");
	append_clipped(&buf, event, 64);
	appendStringInfo(&buf, ",\"position\":" INT64_FORMAT ",\"id\":" INT64_FORMAT
					 ",\"incident_id\":" INT64_FORMAT "}",
					 position, event_id, incident_id);
	return buf.data;
}
