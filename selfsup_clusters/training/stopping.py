"""Stopping a run without losing it: SIGTERM (what SLURM and Kubernetes send a preempted job before they kill it)
and SIGINT (Ctrl-C) ask the loop to stop at its next step boundary; there it writes a step checkpoint (weights,
optimizer, schedule, random state, memory bank, clusters, the epoch's progress) and the command exits with STOPPED,
which says "stopped, resumable: run `train --resume DIR`" (a failure exits 1, a bad input 2, a divergence 3:
errors.DIVERGED). A second signal while the checkpoint is written changes nothing: the write completes (and is
atomic in any case: checkpoint.py)."""

from __future__ import annotations

import signal
import threading

from selfsup_clusters.core import distributed

STOPPED = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, the same command may be retried - here with --resume
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """While entered (in the main thread; elsewhere it watches nothing), SIGTERM and SIGINT set `signal` instead of
    ending the process; the loop asks `agreed()` at each step boundary. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signal is None:  # a second signal while saving: the save in progress completes
            self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "none"

    def agreed(self, device) -> bool:
        """Whether to stop here: a signal reached this process, or (under torchrun) any rank's, so every rank stops
        at the same step."""
        return distributed.any_rank(self.signal is not None, device)
