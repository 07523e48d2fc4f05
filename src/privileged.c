/*-------------------------------------------------------------------------
 *
 * privileged.c
 *		Run SPI work as the extension's owner with a pinned search_path.
 *
 * src/privileged.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "gate_bridge.h"
#include "privileged.h"

/* The owner of schema gate_bridge, i.e. the role that installed us. */
Oid
gb_owner(void)
{
	Oid			nsp = get_namespace_oid("gate_bridge", false);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nsp);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Become the owner, with search_path pinned; no SPI (see gb_spi_begin). */
void
gb_privileged_begin(GBPrivileged *priv)
{
	Oid			owner = gb_owner();

	GetUserIdAndSecContext(&priv->save_userid, &priv->save_sec_context);
	SetUserIdAndSecContext(owner,
						   priv->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_NOFORCE_RLS);

	priv->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	priv->pushed_snapshot = false;
}

void
gb_privileged_end(GBPrivileged *priv)
{
	AtEOXact_GUC(true, priv->save_nestlevel);
	SetUserIdAndSecContext(priv->save_userid, priv->save_sec_context);
}

/*
 * The installed version of the extension's objects, or NULL when it is not
 * installed in this database.
 */
static char *
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("gate_bridge"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * The statements of this library are written for the objects of its own
 * release.  Between installing a new release's files and ALTER EXTENSION
 * gate_bridge UPDATE, a database still holds the old objects.  Explicit
 * calls (ack, the on_* functions, ...) then fail with a clear error rather
 * than on a missing column; the trigger (error = false) stores the row
 * without a decision, as with gate_bridge.enabled off, and warns once per
 * backend, so that eval rows keep flowing until the update.  Once the
 * versions agree this is one test of a flag: an extension is never
 * downgraded in place.
 */
bool
gb_schema_ready(bool error)
{
	static bool ready = false;
	static bool warned = false;
	char	   *version;

	if (likely(ready))
		return true;
	version = installed_version();
	if (version != NULL && strcmp(version, GB_VERSION) == 0)
	{
		ready = true;
		return true;
	}
	if (error || !warned)
	{
		ereport(error ? ERROR : WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("gate_bridge %s is installed in this database, but its library is version %s",
						version ? version : "(none)", GB_VERSION),
				 error ? 0 : errdetail("Eval rows are stored without a decision until the extension is updated."),
				 errhint("Run ALTER EXTENSION gate_bridge UPDATE.")));
		warned = true;
	}
	return false;
}

/*
 * Start a privileged SPI section.  Outside a statement (at pre-commit)
 * there is no active snapshot, which SPI needs: one is pushed then.
 */
void
gb_spi_begin(GBPrivileged *priv)
{
	bool		push = !ActiveSnapshotSet();

	(void) gb_schema_ready(true);
	if (push)
		PushActiveSnapshot(GetTransactionSnapshot());
	gb_privileged_begin(priv);
	priv->pushed_snapshot = push;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
gb_spi_end(GBPrivileged *priv)
{
	bool		pushed = priv->pushed_snapshot;

	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	gb_privileged_end(priv);
	if (pushed)
		PopActiveSnapshot();
}

/*
 * Prepare a statement once per backend.  Every name in it is
 * schema-qualified, and it runs with search_path pinned.
 */
SPIPlanPtr
gb_keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/* Run a kept statement; any result but "expected" is an internal error. */
int
gb_spi_run(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_plan(plan, values, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "gate_bridge statement failed: %s",
			 SPI_result_code_string(ret));
	return ret;
}
