"""Multi-run studies: many runs trained and read together into tables, curves and verdicts. Someone changing a
method or the loop never needs this floor.

Owns: suite.py (the seeds x runs machinery every study shares), compare.py, analyze.py, tune.py, claims.py with
claims_plan.py and claims_report.py, curve.py (budget curves), report.py and tables.py (the one table writer),
bench.py (speed measurements).

May import: core, data, clusters, evaluation, config, methods, recipes, training.
"""
