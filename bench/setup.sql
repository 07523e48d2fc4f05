-- gate_bridge benchmark: budgets for the clean-row and alert-storm cases.
-- Run once on a fresh database after CREATE EXTENSION gate_bridge.

-- Catch-all ceilings: they apply to every agent.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('*',				'cost',			1.0,	2.0,	5.0),
	('*',				'latency',		3000,	5000,	10000),
	('*',				'invariants',	0,		2,		5);

-- The clean agents bench.clean.0 .. bench.clean.7: a prefix glob for all of
-- them, exact budgets for four, overriding the glob for some types.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('bench.clean.*',	'quality',		0.80,	0.70,	0.50),
	('bench.clean.*',	'success_rate',	0.90,	0.80,	0.60),
	('bench.clean.*',	'latency',		2000,	4000,	8000);
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT 'bench.clean.' || n, t.budget_type, t.warning, t.error, t.critical
  FROM generate_series(0, 3) AS n,
	   (VALUES ('quality',		0.75,	0.60,	0.40),
			   ('cost',			1.5,	3.0,	6.0)) AS t(budget_type, warning, error, critical);

-- Other teams' budgets, so that the cache holds a realistic number of rows.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT 'team' || g || '.*', 'quality', 0.8, 0.7, 0.5 FROM generate_series(1, 10) AS g;
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical)
SELECT 'team' || g || '.agent' || a, 'latency', 1000, 2000, 4000
  FROM generate_series(1, 10) AS g, generate_series(1, 4) AS a;

-- The storm agent: one budget of its own, which every storm row violates
-- at the "error" tier (quality 0.65 < 0.80); its other metrics stay inside
-- the catch-all budgets.
INSERT INTO gate_bridge.budgets (agent_pattern, budget_type, warning, error, critical) VALUES
	('bench.storm',		'quality',		0.90,	0.80,	0.50);
