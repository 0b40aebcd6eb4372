"""The methods: one base class, one registry, and what a method is built from.

Owns: base.py (`Method`, whose docstring lists everything a method must or may define), registry.py (`METHODS`,
one line per method, and the `methods` table), cl_infonce.py (the paper's method), baselines/ (its peers:
SimCLR, MoCo v2, PCL, cross-entropy), losses.py (pure loss functions), backbones.py (timm factory, projection
heads), memory.py (the index-aligned feature bank and the ring buffer queues share). A new method is one file here
(or in baselines/) and one line in registry.py. Checking a method's name never imports the training loop.

May import: core, data, clusters, evaluation, config.
"""
