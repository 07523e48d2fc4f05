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

#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "miscadmin.h"
#include "utils/guc.h"
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
}

void
gb_privileged_end(GBPrivileged *priv)
{
	AtEOXact_GUC(true, priv->save_nestlevel);
	SetUserIdAndSecContext(priv->save_userid, priv->save_sec_context);
}
