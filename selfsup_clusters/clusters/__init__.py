"""Cluster sources: FAISS k-means (over shards under torchrun), WordNet hierarchy levels, attribute combinations,
the labels themselves and synthetic sets, behind `assign(features) -> Assignments`; the one spec grammar
(spec.py); the information statistics used to compare them. Owns: assignments, sources, k-means (one process and
sharded), the spec grammar, statistics, archives.

May import: core, data (a dataset's auxiliary information: labels, WordNet ids, attributes).
"""

from .assignments import Assignments, ClusterError
from .attributes import attribute_clusters, rank_attributes
from .distributed_kmeans import Shard, sharded_kmeans
from .kmeans import KMeansOptions, run_kmeans
from .sources import (
    ClusterSource,
    CompositeSource,
    FixedClusterSource,
    KMeansSource,
    build_cluster_source,
    refuse_uninformative,
    statistics_table,
)
from .spec import SPEC_HELP, ClusterPart, ClusterSpec, parse_spec, split_spec_list
from .stats import batch_mates, cluster_statistics, conditional_entropy, entropy, mutual_information
from .wordnet import FASHION_MNIST_SYNSETS, WordNet, class_synsets, load_wordnet, synset_for_wnid, wordnet_levels

__all__ = [
    "FASHION_MNIST_SYNSETS",
    "SPEC_HELP",
    "Assignments",
    "Shard",
    "ClusterError",
    "ClusterPart",
    "ClusterSource",
    "ClusterSpec",
    "CompositeSource",
    "FixedClusterSource",
    "KMeansOptions",
    "KMeansSource",
    "WordNet",
    "attribute_clusters",
    "build_cluster_source",
    "class_synsets",
    "batch_mates",
    "cluster_statistics",
    "conditional_entropy",
    "entropy",
    "load_wordnet",
    "mutual_information",
    "parse_spec",
    "rank_attributes",
    "refuse_uninformative",
    "run_kmeans",
    "sharded_kmeans",
    "split_spec_list",
    "statistics_table",
    "synset_for_wnid",
    "wordnet_levels",
]
