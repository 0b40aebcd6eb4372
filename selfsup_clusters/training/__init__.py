"""One run: building it (or restoring it), the loop, and what a run leaves behind.

Owns: run.py (setup and restore: config -> data -> method -> cluster source), trainer.py (THE loop),
checkpoint.py, stopping.py (signals), divergence.py, run_identity.py, logger.py (TensorBoard, metrics.jsonl),
provenance.py, cluster_views.py (a run's clusters: archives, gallery), run_eval.py (scoring a run or checkpoint,
which the loop calls at its end), export.py (a trained backbone taken out: export_backbone, embed).

May import: core, data, clusters, evaluation, config, methods, recipes.
"""
