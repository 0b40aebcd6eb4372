"""Cluster sources: FAISS k-means, WordNet hierarchy levels, attribute
combinations and the labels themselves, behind `assign(features) -> Assignments`,
plus the information statistics used to compare them."""

from .assignments import Assignments, ClusterError
from .attributes import attribute_clusters, rank_attributes
from .kmeans import KMeansOptions, pcl_concentration, run_kmeans
from .sources import ClusterSource, FixedClusterSource, KMeansSource, build_cluster_source
from .stats import (
    cluster_statistics,
    conditional_entropy,
    entropy,
    format_table,
    mutual_information,
    statistics_table,
)
from .wordnet import (
    FASHION_MNIST_SYNSETS,
    WordNet,
    class_synsets,
    load_wordnet,
    synset_for_wnid,
    wordnet_levels,
)

__all__ = [
    "FASHION_MNIST_SYNSETS",
    "Assignments",
    "ClusterError",
    "ClusterSource",
    "FixedClusterSource",
    "KMeansOptions",
    "KMeansSource",
    "WordNet",
    "attribute_clusters",
    "build_cluster_source",
    "class_synsets",
    "cluster_statistics",
    "conditional_entropy",
    "entropy",
    "format_table",
    "load_wordnet",
    "mutual_information",
    "pcl_concentration",
    "rank_attributes",
    "run_kmeans",
    "statistics_table",
    "synset_for_wnid",
    "wordnet_levels",
]
