"""A training run's work folder: what makes ``distill`` and ``finetune`` resumable after an interrupt.

``OUT/.train/`` holds the run's settings (a hash of everything that changes the result), the
query split, the mined candidates, the teacher score cache and the trainer checkpoints. A re-run
with the same ``--out`` and the same settings picks up where the last one stopped: finished stages
are read back, training resumes from the last checkpoint. Different settings in the same folder
are refused instead of mixed (``restart`` clears the checkpoints and stage files; the teacher
cache, which is keyed by content, is always kept).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crossrank.errors import InvalidArgumentError

WORK = ".train"
SETTINGS = "settings.json"


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A stable hash of JSON-ready settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the target), so an interrupt never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class RunDir:
    """``OUT`` and its work folder ``OUT/.train``, bound to one set of settings."""

    def __init__(self, out: str | Path, settings: Mapping[str, Any], *, restart: bool = False) -> None:
        self.out = Path(out).expanduser()
        self.work = self.out / WORK
        self.settings = dict(settings)
        self.key = settings_hash(self.settings)
        old = read_json(self.work / SETTINGS)
        if old is not None and old.get("key") != self.key and not restart:
            was = old.get("settings", {})
            now = json.loads(json.dumps(self.settings, default=str))
            changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
            raise InvalidArgumentError(
                f"{self.out} holds a run with other settings (changed: {', '.join(changed) or 'unknown'}); "
                "pass --restart to start over in this folder, or choose another --out"
            )
        if restart:
            self.clear()
        self.work.mkdir(parents=True, exist_ok=True)
        write_json(self.work / SETTINGS, {"key": self.key, "settings": self.settings})

    @property
    def checkpoints(self) -> Path:
        """Where the trainer writes its checkpoints."""
        return self.work / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        """Where the teacher score cache lives (kept across restarts)."""
        return self.work / "cache"

    def stage(self, name: str) -> Any:
        """A finished stage's saved result, or None."""
        return read_json(self.work / f"{name}.json")

    def save_stage(self, name: str, data: Any) -> None:
        """Record a finished stage's result."""
        write_json(self.work / f"{name}.json", data)

    def last_checkpoint(self) -> str | None:
        """The newest ``checkpoint-N`` folder the trainer can resume from, or None."""
        if not self.checkpoints.is_dir():
            return None
        found = [p for p in self.checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
        if not found:
            return None
        return str(max(found, key=lambda p: int(p.name.rpartition("-")[2] or 0)))

    def clear(self) -> None:
        """Forget everything but the teacher cache: stage files and checkpoints."""
        if not self.work.is_dir():
            return
        for p in self.work.iterdir():
            if p.name == "cache":
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()

    def drop_checkpoints(self) -> None:
        """Delete the trainer checkpoints once the final model is saved (they hold optimizer state, 3× the model)."""
        if self.checkpoints.is_dir():
            shutil.rmtree(self.checkpoints)
