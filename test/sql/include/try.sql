-- pg_temp.try(stmt): runs stmt and says 'ok', or its error's SQLSTATE and
-- message (for golden tests that go on after an error).  Include it with
-- ECHO off: the expected outputs show only each test's own statements.
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
