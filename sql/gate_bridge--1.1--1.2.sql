/* gate_bridge 1.1 -> 1.2 */

\echo Use "ALTER EXTENSION gate_bridge UPDATE TO '1.2'" to load this file. \quit
