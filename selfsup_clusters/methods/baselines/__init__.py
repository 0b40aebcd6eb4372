"""The paper's baselines (SimCLR, MoCo v2, PCL, cross-entropy), each one file: a thin subclass of
`selfsup_clusters.methods.base.Method` with its options, recipe and reference. Linked at the repository top as
`baselines/`.

May import: core, data, clusters, evaluation, config, and the rest of methods/ (base, losses, backbones, memory).
"""
