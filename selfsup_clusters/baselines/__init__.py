"""Baseline methods, each a thin subclass of selfsup_clusters.method.Method."""
