/*-------------------------------------------------------------------------
 *
 * privileged.h
 *		Run a block of SPI work as the extension's owner.
 *
 * The writer role holds only INSERT on eval_results, yet its rows must
 * create incidents.  Like ri_triggers.c, we switch the current user to the
 * owner of the gate_bridge schema for the duration of the work (cheaper than
 * a SECURITY DEFINER function), and pin search_path to pg_catalog so that
 * nothing the caller put on its path can capture a name in our queries.
 * Both are undone by gb_privileged_end(), and by transaction or
 * subtransaction abort if an error escapes.
 *
 * src/privileged.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef GATE_BRIDGE_PRIVILEGED_H
#define GATE_BRIDGE_PRIVILEGED_H

typedef struct GBPrivileged
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} GBPrivileged;

extern void gb_privileged_begin(GBPrivileged *priv);
extern void gb_privileged_end(GBPrivileged *priv);

#endif							/* GATE_BRIDGE_PRIVILEGED_H */
