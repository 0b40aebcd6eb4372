"""Run outputs: TensorBoard events, metrics.jsonl (one JSON object per epoch) and final.json."""

from __future__ import annotations

import json
from pathlib import Path


class RunLogger:
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
        kept = [line for line in lines if json.loads(line).get("epoch", -1) < epoch]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def epoch(self, record: dict, step: int) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.scalars({k: v for k, v in record.items() if k != "epoch"}, step, prefix="epoch/")
        if self.writer is not None:
            self.writer.flush()

    def clusters(self, rows: list[dict], sizes: list, step: int) -> None:
        """Statistics of each clustering (one row per clustering, with its "name") and a histogram of sizes."""
        if self.writer is None:
            return
        for row, cluster_sizes in zip(rows, sizes, strict=True):
            self.scalars({k: v for k, v in row.items() if k != "name"}, step, prefix=f"clusters/{row['name']}/")
            self.writer.add_histogram(f"clusters/{row['name']}/sizes", cluster_sizes, step)

    def final(self, record: dict) -> None:
        (self.out_dir / "final.json").write_text(json.dumps(record, indent=2) + "\n")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
