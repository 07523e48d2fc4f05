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
 * Both are undone by gb_spi_end(), and by transaction or subtransaction
 * abort if an error escapes.
 *
 * Every SPI section of the extension goes through gb_spi_begin() and
 * gb_spi_end(); its statements are prepared once per backend with
 * gb_keep_plan() and run with gb_spi_run().
 *
 * src/privileged.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef GATE_BRIDGE_PRIVILEGED_H
#define GATE_BRIDGE_PRIVILEGED_H

#include "executor/spi.h"

typedef struct GBPrivileged
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	bool		pushed_snapshot;
} GBPrivileged;

extern void gb_spi_begin(GBPrivileged *priv);
extern void gb_spi_end(GBPrivileged *priv);
extern void gb_privileged_begin(GBPrivileged *priv);
extern void gb_privileged_end(GBPrivileged *priv);
extern SPIPlanPtr gb_keep_plan(const char *sql, int nargs, Oid *argtypes);
extern int	gb_spi_run(SPIPlanPtr plan, Datum *values, const char *nulls,
					   int expected);

#endif							/* GATE_BRIDGE_PRIVILEGED_H */
