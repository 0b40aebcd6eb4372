"""Run outputs: TensorBoard events, metrics.jsonl (one JSON object per epoch) and final.json."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from selfsup_clusters.core.files import atomic_write, writing_into


def _writes(method):
    """An OSError while `method` writes (a full disk; TensorBoard's writer thread re-raises its own on the next call)
    ends the run with one line naming the run folder, not a traceback."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with writing_into(getattr(self, "out_dir", None) or args[0], "the run's logs"):
            return method(self, *args, **kwargs)

    return wrapped


def _epoch_of(line: str) -> float:
    try:
        return json.loads(line).get("epoch", -1)
    except (ValueError, AttributeError):
        return float("inf")


class RunLogger:
    @_writes
    def __init__(self, out_dir: Path, tensorboard: bool = True, resume_epoch: int = 0, purge_step: int | None = None):
        self.out_dir = out_dir
        self.metrics_path = out_dir / "metrics.jsonl"
        self._drop_epochs_from(resume_epoch)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a crashed run wrote after its last checkpoint
            self.writer = SummaryWriter(str(out_dir), purge_step=purge_step)

    def _drop_epochs_from(self, epoch: int) -> None:
        """On resume, keep only the epochs the checkpoint covers (a crash may have logged one more)."""
        if not self.metrics_path.exists():
            return
        lines = [line for line in self.metrics_path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if _epoch_of(line) < epoch]  # a line a full disk cut short goes too
        atomic_write(self.metrics_path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))

    @_writes
    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    @_writes
    def epoch(self, record: dict, step: int) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.scalars({k: v for k, v in record.items() if k != "epoch"}, step, prefix="epoch/")
        if self.writer is not None:
            self.writer.flush()

    @_writes
    def clusters(self, rows: list[dict], sizes: list, step: int) -> None:
        """Statistics of each clustering (one row per clustering, with its "name") and a histogram of sizes."""
        if self.writer is None:
            return
        for row, cluster_sizes in zip(rows, sizes, strict=True):
            self.scalars({k: v for k, v in row.items() if k != "name"}, step, prefix=f"clusters/{row['name']}/")
            self.writer.add_histogram(f"clusters/{row['name']}/sizes", cluster_sizes, step)

    @_writes
    def image(self, tag: str, picture, step: int) -> None:
        """An (H, W, 3) uint8 picture (a cluster gallery) for TensorBoard's images tab."""
        if self.writer is not None:
            self.writer.add_image(tag, picture, step, dataformats="HWC")

    @_writes
    def projector(self, features, metadata: dict[str, list], images, step: int) -> None:
        """Test-set features for TensorBoard's embedding projector, with one metadata column per key and the
        images as sprite thumbnails (uint8 (N, C, H, W); None for none)."""
        if self.writer is None:
            return
        columns = list(metadata)
        rows = [list(values) for values in zip(*(metadata[c] for c in columns), strict=True)]
        thumbnails = None if images is None else images.float().div(255)
        self.writer.add_embedding(features, metadata=rows, metadata_header=columns, label_img=thumbnails,
                                  global_step=step, tag="test_features")

    @_writes
    def run_info(self, config_yaml: str, environment: dict, step: int) -> None:
        """The resolved config and the environment (see provenance.py) in TensorBoard's text tab, written when
        training starts (a resumed run adds its own at the step it resumes from)."""
        if self.writer is None:
            return
        from selfsup_clusters.training.provenance import as_markdown

        self.writer.add_text("run/config", "".join(f"    {line}\n" for line in config_yaml.splitlines()), step)
        self.writer.add_text("run/environment", as_markdown(environment), step)

    @_writes
    def final(self, record: dict, hparams: dict | None = None) -> None:
        """final.json; and the run's hyperparameters with its final metrics in TensorBoard's HPARAMS tab."""
        atomic_write(self.out_dir / "final.json", lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))
        if self.writer is not None and hparams:
            metrics = {f"hparam/{k}": v for k, v in record.items()
                       if k in ("knn_top1", "linear_top1", "nmi", "ami", "ari", "loss", "images_per_s")}
            self.writer.add_hparams(hparams, metrics, run_name=".")

    @_writes
    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class NullLogger:
    """A RunLogger whose every call does nothing: what ranks other than 0 log to under torchrun."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
