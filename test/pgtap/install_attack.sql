-- The install script under attack at CREATE EXTENSION time.
--
-- An unprivileged role, regress_evil, plants traps in a schema it owns:
-- functions named like the ones the install script uses (now(),
-- current_user(), num_nonnulls, octet_length, cardinality, array_position,
-- array_ndims, pg_extension_config_dump, ...), operators over the types its
-- constraints, index predicates and views compare (text = text,
-- text <> text, integer + integer, float8 <= float8, ...) and views named
-- like the catalogs it reads.  Each trap records every call in
-- regress_evil.calls and bumps the sequence regress_evil.hits (which a
-- rollback does not undo).  Some traps are better matches than the
-- pg_catalog objects they shadow (num_nonnulls(float8, float8, float8)
-- beats num_nonnulls(VARIADIC "any")), so they capture an unqualified call
-- even when pg_catalog is searched first.
--
-- A superuser then installs gate_bridge
--	 - with search_path = regress_evil, public (pg_catalog searched first),
--	 - with search_path = regress_evil, pg_catalog (the traps ahead of it),
--	 - into a schema gate_bridge that regress_evil owns and filled with the
--	   same traps (refused with SQLSTATE 42501),
--	 - into a schema gate_bridge that the superuser owns but in which
--	   regress_evil (or PUBLIC) may create objects, filled with the traps
--	   (refused with SQLSTATE 42501), and which still holds them after the
--	   grant is revoked.
-- No trap may be called, no installed object may depend on one, and the
-- extension must work afterwards.  At the end, probes show that each trap
-- does capture an unqualified call where it is on the path, so that the
-- checks above can fail.
--
-- Nothing may call a pgTAP function while a hostile search_path is set
-- (pgTAP's own queries would call the traps): the attacks are plain
-- statements and the checks follow them.  Runs in one transaction that is
-- rolled back, so the extension the runner installed comes back.
BEGIN;
SELECT plan(19);

-- Start from nothing.  DROP EXTENSION leaves the (empty) schema behind.
DROP EXTENSION gate_bridge;
DROP SCHEMA gate_bridge;

CREATE ROLE regress_evil;
CREATE SCHEMA regress_evil AUTHORIZATION regress_evil;

-------------------------------------------------------------------------------
-- The attacker's traps.
-------------------------------------------------------------------------------
SET ROLE regress_evil;

CREATE SEQUENCE regress_evil.hits;
CREATE TABLE regress_evil.calls (
	id		bigint NOT NULL DEFAULT pg_catalog.nextval('regress_evil.hits'),
	fn		text NOT NULL,
	caller	name NOT NULL DEFAULT CURRENT_USER
);
-- what plant() created: schema, signature, the expression that calls it,
-- and whether it beats pg_catalog even when pg_catalog is searched first
CREATE TABLE regress_evil.traps (
	nsp		name NOT NULL,
	sig		text NOT NULL,
	probe	text NOT NULL,
	better	boolean NOT NULL,
	PRIMARY KEY (nsp, sig)
);
GRANT USAGE ON SCHEMA regress_evil TO PUBLIC;
GRANT INSERT ON regress_evil.calls TO PUBLIC;
GRANT USAGE ON SEQUENCE regress_evil.hits TO PUBLIC;

-- Records a call.  VOLATILE, so that the IMMUTABLE traps (which index
-- predicates and expressions accept) can write through it.
CREATE FUNCTION regress_evil.log(fn text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO regress_evil.calls (fn) VALUES (fn);
	RETURN true;
END
$$;

-- Plants every trap in schema "target".
CREATE FUNCTION regress_evil.plant(target name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $plant$
DECLARE
	f		record;
	n		integer := 0;
	tag		text;
BEGIN
	-- functions: name, argument types, result type, what the trap returns,
	-- probe, better match than pg_catalog
	FOR f IN
		SELECT * FROM (VALUES
			('now', '', 'timestamptz', 'pg_catalog.now()', 'now()', false),
			('current_user', '', 'name', 'pg_catalog."current_user"()', '"current_user"()', false),
			('session_user', '', 'name', 'pg_catalog."session_user"()', '"session_user"()', false),
			('current_schema', '', 'name', 'pg_catalog.current_schema()', '"current_schema"()', false),
			('current_database', '', 'name', 'pg_catalog.current_database()', 'current_database()', false),
			('pg_trigger_depth', '', 'integer', '0', 'pg_trigger_depth()', false),
			('num_nonnulls', 'double precision, double precision, double precision', 'integer',
			 'pg_catalog.num_nonnulls($1, $2, $3)',
			 'num_nonnulls(1::float8, NULL::float8, 2::float8)', true),
			('octet_length', 'text', 'integer', 'pg_catalog.octet_length($1)',
			 'octet_length(''x''::text)', false),
			('length', 'text', 'integer', 'pg_catalog.length($1)', 'length(''x''::text)', false),
			('strpos', 'text, text', 'integer', 'pg_catalog.strpos($1, $2)',
			 'strpos(''ab''::text, ''b''::text)', false),
			('left', 'text, integer', 'text', 'pg_catalog."left"($1, $2)',
			 '"left"(''ab''::text, 1)', false),
			('substr', 'text, integer, integer', 'text', 'pg_catalog.substr($1, $2, $3)',
			 'substr(''abc''::text, 1, 2)', false),
			('jsonb_strip_nulls', 'jsonb', 'jsonb', 'pg_catalog.jsonb_strip_nulls($1)',
			 'jsonb_strip_nulls(''{}''::jsonb)', false),
			('cardinality', 'text[]', 'integer', 'pg_catalog.cardinality($1)',
			 'cardinality(''{a}''::text[])', true),
			('array_position', 'text[], text', 'integer', 'pg_catalog.array_position($1, $2)',
			 'array_position(''{a}''::text[], ''a''::text)', true),
			('array_ndims', 'text[]', 'integer', 'pg_catalog.array_ndims($1)',
			 'array_ndims(''{a}''::text[])', true),
			-- the real one refuses to run outside an extension script
			('pg_extension_config_dump', 'regclass, text', 'void', NULL,
			 'pg_extension_config_dump(''regress_evil.calls''::regclass, ''''::text)', false),
			('pg_extension_config_dump', 'text, text', 'void', NULL,
			 'pg_extension_config_dump(''regress_evil.calls'', '''')', true)
		) AS t(name, args, result, real, probe, better)
	LOOP
		tag := format('%s(%s)', f.name, regexp_replace(f.args, ',\s*', ',', 'g'));
		EXECUTE format($f$
			CREATE FUNCTION %I.%I(%s) RETURNS %s
			LANGUAGE plpgsql IMMUTABLE
			SET search_path = pg_catalog, pg_temp
			AS $body$
			BEGIN
				PERFORM regress_evil.log(%L);
				RETURN %s;
			END
			$body$
		$f$, target, f.name, f.args, f.result, target || '.' || tag, COALESCE(f.real, ''));
		INSERT INTO regress_evil.traps VALUES (target, tag, f.probe, f.better);
	END LOOP;

	-- operators: name, left and right type, the function behind the real one
	FOR f IN
		SELECT * FROM (VALUES
			('=', 'text', 'text', 'texteq', '''a''::text = ''b''::text'),
			('<>', 'text', 'text', 'textne', '''a''::text <> ''b''::text'),
			('~', 'text', 'text', 'textregexeq', '''a''::text ~ ''b''::text'),
			('=', 'integer', 'integer', 'int4eq', '1 = 2'),
			('<=', 'integer', 'integer', 'int4le', '1 <= 2'),
			('>', 'integer', 'integer', 'int4gt', '1 > 2'),
			('+', 'integer', 'integer', 'int4pl', '1 + 2'),
			('-', 'integer', 'integer', 'int4mi', '1 - 2'),
			('=', 'bigint', 'bigint', 'int8eq', '1::bigint = 2::bigint'),
			('>=', 'double precision', 'double precision', 'float8ge', '1::float8 >= 2::float8'),
			('<=', 'double precision', 'double precision', 'float8le', '1::float8 <= 2::float8'),
			('<', 'double precision', 'double precision', 'float8lt', '1::float8 < 2::float8'),
			('>', 'double precision', 'double precision', 'float8gt', '1::float8 > 2::float8'),
			('>', 'interval', 'interval', 'interval_gt', '''1 day''::interval > ''0''::interval'),
			('>', 'timestamp with time zone', 'timestamp with time zone', 'timestamptz_gt',
			 '''2000-01-01''::timestamptz > ''1999-01-01''::timestamptz')
		) AS t(op, l, r, real, probe)
	LOOP
		n := n + 1;
		tag := format('%s(%s,%s)', f.op, f.l, f.r);
		EXECUTE format($f$
			CREATE FUNCTION %I.regress_trap_op_%s(%s, %s) RETURNS %s
			LANGUAGE plpgsql IMMUTABLE
			SET search_path = pg_catalog, pg_temp
			AS $body$
			BEGIN
				PERFORM regress_evil.log(%L);
				RETURN pg_catalog.%I($1, $2);
			END
			$body$
		$f$, target, n, f.l, f.r,
		   CASE WHEN f.op IN ('+', '-') THEN f.l ELSE 'boolean' END,
		   target || '.' || tag, f.real);
		EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %I.regress_trap_op_%s)',
					   target, f.op, f.l, f.r, target, n);
		INSERT INTO regress_evil.traps VALUES (target, tag, f.probe, false);
	END LOOP;

	-- views named like the catalogs the install script reads
	FOR f IN
		SELECT * FROM (VALUES ('pg_roles'), ('pg_namespace')) AS t(name)
	LOOP
		EXECUTE format('CREATE VIEW %I.%I AS SELECT c.* FROM pg_catalog.%I c WHERE regress_evil.log(%L)',
					   target, f.name, f.name, target || '.' || f.name);
		INSERT INTO regress_evil.traps
		VALUES (target, f.name, format('EXISTS (SELECT FROM %I)', f.name), false);
	END LOOP;
END
$plant$;

-- Calls every trap planted in "target" the way an unqualified query
-- would, under the caller's search_path.  Its own statements are qualified.
CREATE FUNCTION regress_evil.probe(target name) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	p		text;
BEGIN
	FOR p IN SELECT t.probe FROM regress_evil.traps t
			  WHERE t.nsp OPERATOR(pg_catalog.=) target ORDER BY t.sig
	LOOP
		BEGIN
			EXECUTE 'SELECT ' OPERATOR(pg_catalog.||) p;
		EXCEPTION WHEN OTHERS THEN
			NULL;	-- the real function refused the probe; nothing was captured
		END;
	END LOOP;
END
$$;

SELECT regress_evil.plant('regress_evil') \g /dev/null
RESET ROLE;

-- Objects that depend on an object of schema regress_evil (a function,
-- operator or view resolved to a trap when they were created), less those
-- that already did before any install (the traps' own parts).
CREATE TEMP VIEW evil_deps_all AS
	WITH evil (classid, oid) AS (
		SELECT 'pg_proc'::regclass, p.oid FROM pg_proc p
		 WHERE p.pronamespace = 'regress_evil'::regnamespace
		UNION ALL
		SELECT 'pg_operator'::regclass, o.oid FROM pg_operator o
		 WHERE o.oprnamespace = 'regress_evil'::regnamespace
		UNION ALL
		SELECT 'pg_class'::regclass, c.oid FROM pg_class c
		 WHERE c.relnamespace = 'regress_evil'::regnamespace
	)
	SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS dependent,
		   pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) AS depends_on
	  FROM pg_depend d
	  JOIN evil e ON e.classid = d.refclassid AND e.oid = d.refobjid
	 WHERE (pg_identify_object(d.classid, d.objid, d.objsubid)).schema
		   IS DISTINCT FROM 'regress_evil';
CREATE TEMP TABLE evil_deps_planted AS SELECT * FROM evil_deps_all;
CREATE TEMP VIEW evil_deps AS
	SELECT * FROM evil_deps_all EXCEPT SELECT * FROM evil_deps_planted;

-- The value of regress_evil.hits: traps called so far, rolled back or not.
CREATE FUNCTION pg_temp.hits() RETURNS bigint
LANGUAGE sql AS $$
	SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM regress_evil.hits
$$;

-------------------------------------------------------------------------------
-- 1. search_path = regress_evil, public: pg_catalog is searched first.
-------------------------------------------------------------------------------
SET search_path = regress_evil, public;
CREATE EXTENSION gate_bridge;
RESET search_path;

SELECT is_empty('SELECT fn, caller FROM regress_evil.calls ORDER BY id',
				'search_path = regress_evil, public: CREATE EXTENSION called no trap');
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'gate_bridge'), (SELECT default_version FROM pg_available_extensions WHERE name = 'gate_bridge'),
		  'search_path = regress_evil, public: the extension was installed');
SELECT is_empty('SELECT * FROM evil_deps',
				'search_path = regress_evil, public: no installed object depends on a trap');

DROP EXTENSION gate_bridge;
DROP SCHEMA gate_bridge;

-------------------------------------------------------------------------------
-- 2. search_path = regress_evil, pg_catalog: the traps come first.
-------------------------------------------------------------------------------
SET search_path = regress_evil, pg_catalog;
CREATE EXTENSION gate_bridge;
RESET search_path;

SELECT is_empty('SELECT fn, caller FROM regress_evil.calls ORDER BY id',
				'search_path = regress_evil, pg_catalog: CREATE EXTENSION called no trap');
SELECT is_empty('SELECT * FROM evil_deps',
				'search_path = regress_evil, pg_catalog: no installed object depends on a trap');
-- pg_extension_config_dump() reached the real function for every table and
-- sequence, not a trap
SELECT set_eq($$
	SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'gate_bridge'
$$, $$
	SELECT c.oid::regclass::text FROM pg_class c
	 WHERE c.relnamespace = 'gate_bridge'::regnamespace AND c.relkind IN ('r', 'S')
$$, 'search_path = regress_evil, pg_catalog: every table and sequence is kept by pg_dump');

-- The extension works, used with the same search_path.
SET search_path = regress_evil, pg_catalog;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
VALUES ('warehouse.regress_install', 'quality', 0.9, 0.8, 0.5);
INSERT INTO gate_bridge.eval_results (agent, quality, invariants_failed)
VALUES ('warehouse.regress_install', 0.1, '{regress_inv}');
-- The row's violations are decided at commit, under the search_path then in
-- force: decide them now, with the same search_path.
SELECT gate_bridge.decide_pending() \g /dev/null
RESET search_path;

SELECT results_eq($$
	SELECT i.key, i.severity, i.status, i.playbooks,
		   (SELECT count(*) FROM gate_bridge.incident_events e
			 WHERE e.incident_id = i.id AND e.event = 'created')
	  FROM gate_bridge.incidents i ORDER BY i.key
$$, $$ VALUES
	('BUDGET_warehouse.regress_install_quality', 'sev1', 'open',
	 '{rerun_eval,rerun_dbt}'::text[], 1::bigint),
	('INVARIANT_warehouse.regress_install_regress_inv', 'sev2', 'open',
	 '{rerun_eval,rerun_dbt}', 1)
$$, 'after the attacked install, a violating insert opens its incidents');
SELECT is_empty('SELECT fn, caller FROM regress_evil.calls ORDER BY id',
				'... and calls no trap');

DROP EXTENSION gate_bridge;
DROP SCHEMA gate_bridge;

-------------------------------------------------------------------------------
-- 3. A schema gate_bridge owned by the attacker, full of traps.
-------------------------------------------------------------------------------
CREATE SCHEMA gate_bridge AUTHORIZATION regress_evil;
SET ROLE regress_evil;
SELECT regress_evil.plant('gate_bridge') \g /dev/null
RESET ROLE;
SELECT pg_temp.hits() AS hits_before \gset

CREATE FUNCTION pg_temp.install_error() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	state	text;
	msg		text;
	hint	text;
BEGIN
	CREATE EXTENSION gate_bridge;
	RETURN 'installed';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
							hint = PG_EXCEPTION_HINT;
	RETURN state || ': ' || msg || ' (' || hint || ')';
END
$$;

SELECT is(pg_temp.install_error(),
		  '42501: schema "gate_bridge" is owned by another role (Drop the schema or install the extension as its owner.)',
		  'CREATE EXTENSION refuses a schema gate_bridge owned by another role, with a clear message');
SELECT is(pg_temp.hits(), :hits_before::bigint,
		  '... and called none of the traps planted in it, even in the rolled-back attempt');
SELECT ok(NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'gate_bridge')
		  AND (SELECT nspowner::regrole::text FROM pg_namespace
				WHERE nspname = 'gate_bridge') = 'regress_evil',
		  '... and left nothing installed');

SET client_min_messages = warning;
DROP SCHEMA gate_bridge CASCADE;
RESET client_min_messages;

-------------------------------------------------------------------------------
-- 4. A schema gate_bridge owned by the installer, in which the attacker may
--    create objects, full of traps.  CREATE EXTENSION puts the extension's
--    schema on its search_path (after pg_catalog), so an unqualified call
--    in the script would reach the better-matching traps here.
-------------------------------------------------------------------------------
DELETE FROM regress_evil.traps WHERE nsp = 'gate_bridge';
CREATE SCHEMA gate_bridge;
GRANT USAGE, CREATE ON SCHEMA gate_bridge TO regress_evil;
SET ROLE regress_evil;
SELECT regress_evil.plant('gate_bridge') \g /dev/null
RESET ROLE;
SELECT pg_temp.hits() AS hits_before \gset

SELECT is(pg_temp.install_error(),
		  '42501: other roles may create objects in schema "gate_bridge" (Revoke CREATE on the schema from every other role, or drop it.)',
		  'CREATE EXTENSION refuses a schema gate_bridge in which another role may create objects');

REVOKE CREATE ON SCHEMA gate_bridge FROM regress_evil;
GRANT CREATE ON SCHEMA gate_bridge TO PUBLIC;
SELECT is(left(pg_temp.install_error(), 6), '42501:',
		  '... or in which PUBLIC may create objects');

-- The grant is gone, the attacker's objects are not.  They stay in the
-- extension's schema, and an overload of a function the extension calls
-- (say gate_bridge.suggest_playbooks(text, text, text DEFAULT '')) makes
-- that call ambiguous and every incident creation fail.
REVOKE CREATE ON SCHEMA gate_bridge FROM PUBLIC;
SELECT throws_ok('CREATE EXTENSION gate_bridge', '42501', NULL,
				 'CREATE EXTENSION refuses a schema gate_bridge that holds another role''s objects');
SELECT is(pg_temp.hits(), :hits_before::bigint,
		  'no attempt to install into a schema gate_bridge full of traps called any of them');

-------------------------------------------------------------------------------
-- The traps work: unqualified calls reach them wherever they are on the path.
-------------------------------------------------------------------------------
DELETE FROM regress_evil.calls;
SET search_path = regress_evil, public;
SELECT regress_evil.probe('regress_evil') \g /dev/null
RESET search_path;
SELECT set_eq('SELECT fn FROM regress_evil.calls',
			  $$SELECT nsp || '.' || sig FROM regress_evil.traps
				 WHERE nsp = 'regress_evil' AND better$$,
			  'with pg_catalog searched first, the better-matching traps still capture unqualified calls');

DELETE FROM regress_evil.calls;
SET search_path = regress_evil, pg_catalog;
SELECT regress_evil.probe('regress_evil') \g /dev/null
RESET search_path;
SELECT set_eq('SELECT fn FROM regress_evil.calls',
			  $$SELECT nsp || '.' || sig FROM regress_evil.traps WHERE nsp = 'regress_evil'$$,
			  'ahead of pg_catalog, every trap captures unqualified calls');

-- the search_path CREATE EXTENSION runs its script with
DELETE FROM regress_evil.calls;
SET search_path = gate_bridge, pg_temp;
SELECT regress_evil.probe('gate_bridge') \g /dev/null
RESET search_path;
SELECT set_eq('SELECT fn FROM regress_evil.calls',
			  $$SELECT nsp || '.' || sig FROM regress_evil.traps
				 WHERE nsp = 'gate_bridge' AND better$$,
			  'in the extension''s schema, the better-matching traps capture unqualified calls');

-- and an object created under a hostile search_path does depend on a trap
SET search_path = regress_evil, pg_catalog;
CREATE VIEW pg_temp.regress_control AS SELECT 'a'::text <> 'b'::text AS x;
RESET search_path;
SELECT isnt_empty($$SELECT * FROM evil_deps WHERE dependent LIKE '%regress_control%'$$,
				  'a view created under a hostile search_path shows up as depending on a trap');

SELECT * FROM finish();
ROLLBACK;
