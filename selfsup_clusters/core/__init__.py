"""The ground floor: what every other floor may use and none of it knows about training.

Owns: errors.py (UserError and the other ways a run stops), files.py (atomic writes, held folders),
distributed.py (ranks, gathers under torchrun), seeds.py (derived seeds), progress.py (progress bars).

May import: nothing of the package.
"""
