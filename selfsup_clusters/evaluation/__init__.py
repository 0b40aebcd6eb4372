"""How a representation is scored, and how scores become a verdict: the evaluation protocol, pure.

Owns: evaluate.py (weighted kNN, the linear probe with its penalty chosen per representation, cluster metrics,
feature extraction), protocols.py (the protocol family a verdict is checked against; torch-free, the schema checks
its names), intervals.py (t-intervals, paired differences, verdicts). Evaluating a whole run or checkpoint is
training/run_eval.py, one floor up, since it needs a built run.

May import: core, data, clusters.
"""
