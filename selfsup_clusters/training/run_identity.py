"""A run's identity: an id written into its config.yaml (a comment line, so the file stays a config to pass back
with --config), its final.json and every checkpoint, so that resume refuses a checkpoint copied in from another run;
and the rule for config.yaml, which the user may have edited: never overwritten without a copy kept."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from pathlib import Path

import yaml

from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.files import atomic_write

CONFIG_FILE = "config.yaml"
_ID_LINE = re.compile(r"^# run_id: (\S+)")


def new_run_id() -> str:
    """A fresh id, the same on every rank."""
    return distributed.broadcast_object(uuid.uuid4().hex[:12])


def config_text(config_yaml: str, run_id: str) -> str:
    return f"# run_id: {run_id} (this run's identity; its checkpoints carry the same id)\n{config_yaml}"


def read_config_file(out_dir: Path) -> tuple[str | None, dict | None, str | None]:
    """(run id, config, why it could not be read) of `out_dir`/config.yaml; (None, None, None) when there is none."""
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return None, None, None
    try:
        text = path.read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return None, None, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    found = _ID_LINE.match(text)
    if not isinstance(config, dict):
        return found and found.group(1), None, "its top level is not a mapping"
    return found and found.group(1), config, None


def describe(run_id: str | None, config: dict) -> str:
    model = config.get("model") or {}
    return (f"run {run_id or '(no id)'}: {config.get('method')}, {model.get('backbone')}, seed {config.get('seed')}, "
            f"clusters {(config.get('clusters') or {}).get('spec')}")


IDENTITY_KEYS = (("method",), ("seed",), ("model", "backbone"), ("clusters", "spec"), ("data", "name"))


def check_identity(out_dir: Path, checkpoint: dict) -> str | None:
    """The run id to resume `out_dir` under; a UserError naming both when its checkpoint comes from another run
    than its config.yaml (by id, or - for runs from before ids - by method, seed, backbone, clusters and data)."""
    folder_id, folder_config, _ = read_config_file(out_dir)
    saved_id, saved = checkpoint.get("run_id"), checkpoint.get("config") or {}
    if folder_config is None:  # no config.yaml, or one that cannot be read: nothing to compare with
        return saved_id or folder_id
    if folder_id and saved_id:
        foreign = folder_id != saved_id
    else:
        foreign = any(_get(folder_config, key) != _get(saved, key) for key in IDENTITY_KEYS)
    if foreign:
        raise UserError(f"{out_dir}/checkpoints/last.pt is from another run ({describe(saved_id, saved)}) than "
                        f"{out_dir}/{CONFIG_FILE} ({describe(folder_id, folder_config)}); put this run's own "
                        "checkpoint back, or resume the folder the checkpoint came from")
    return saved_id or folder_id


def _get(config: dict, key: tuple[str, ...]):
    for part in key:
        config = config.get(part) if isinstance(config, dict) else None
    return config


def write_config_file(out_dir: Path, config_yaml: str, run_id: str) -> Path | None:
    """`out_dir`/config.yaml for this run. A config.yaml already there that cannot be read, or that holds another
    config (a user's edit, which resume would not train with), is kept as config.yaml.STAMP.bak first: its path is
    returned for the caller to say so."""
    path, kept = out_dir / CONFIG_FILE, None
    _, old, problem = read_config_file(out_dir)
    if path.exists() and (problem is not None or old != yaml.safe_load(config_yaml)):
        kept = path.with_name(f"{CONFIG_FILE}.{datetime.now():%Y%m%d-%H%M%S}.bak")
        path.replace(kept)
    atomic_write(path, lambda f: f.write(config_text(config_yaml, run_id).encode("utf-8")))
    return kept
