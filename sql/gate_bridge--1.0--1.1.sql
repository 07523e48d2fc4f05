/* gate_bridge 1.0 -> 1.1 */

\echo Use "ALTER EXTENSION gate_bridge UPDATE TO '1.1'" to load this file. \quit

-- 1.1 changes only the C library: hardened input handling and the checks
-- added with the trust work (dump/restore, adversarial input, storm soak).
-- The SQL objects are those of 1.0; this script exists so that
-- ALTER EXTENSION gate_bridge UPDATE moves the recorded version along.
