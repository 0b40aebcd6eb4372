"""selfsup-clusters: self-supervised representation learning from clusters."""

__version__ = "0.1.0"
