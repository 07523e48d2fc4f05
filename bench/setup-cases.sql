-- Budgets of the burst, bulk, history and batch cases of bench/measure.sh,
-- in their own databases, after setup.sql (whose budgets stay, so that the
-- cache holds the same rows as in the single-row cases).  Each glob budget
-- is violated at its "error" tier by quality 0.65 (quality) or by a latency
-- of 5000 ms (latency); clean rows stay inside all of them.

-- burst: 5,000 new agents bench.burst.N in one INSERT
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('bench.burst.*',	'quality',		0.90,	0.80,	0.50);

-- history: the agents of the history bench.hist.NNNNNN (fold and reopen
-- use some of them), and new agents bench.new.N for creations
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('bench.hist.*',	'quality',		0.90,	0.80,	0.50),
	('bench.new.*',		'quality',		0.90,	0.80,	0.50);
CREATE SEQUENCE public.gb_new_agent;

-- batch: agents bench.batch.0 .. 9, two keys each (quality, latency)
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('bench.batch.*',	'quality',		0.90,	0.80,	0.50),
	('bench.batch.*',	'latency',		2000,	4000,	8000);
