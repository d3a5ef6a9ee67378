"""Stage cache of a run directory: skip stages whose inputs, parameters and code are unchanged.

A stage's key is the sha256 of its name, its parameters, the keys of the stages it reads and
the code version (a hash of the package's source files). After a stage has written its outputs
(atomically), ``<run>/.cache/<stage>.json`` records the key and each output's sha256; it is
written last, so a run killed at any moment leaves either a complete record or none. A stage is
skipped only when the record's key matches and every output still has its recorded checksum.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from omicstwin.io.manifests import sha256_of
from omicstwin.store.rundir import write_json


@cache
def code_version() -> str:
    """sha256 over the package's Python sources (changes whenever the code does)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class StageCache:
    """Records of finished stages in ``<run>/.cache``."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True) -> None:
        self.folder = Path(run_dir) / ".cache"
        self.enabled = enabled

    def key(self, stage: str, **parts: Any) -> str:
        """Return the stage's key from its parameters and upstream keys (JSON, sorted)."""
        payload = json.dumps(
            {"stage": stage, "code": code_version(), **parts}, sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def hit(self, stage: str, key: str) -> dict[str, Any] | None:
        """Return the stage's record if finished with this key and its outputs are intact."""
        path = self.folder / f"{stage}.json"
        if not self.enabled or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if record.get("key") != key:
            return None
        for name, digest in record.get("outputs", {}).items():
            output = self.folder.parent / name
            if not output.is_file() or sha256_of(output) != digest:
                return None
        return record

    def record(
        self, stage: str, key: str, outputs: list[Path], extra: dict[str, Any] | None = None
    ) -> None:
        """Mark a stage finished (after its outputs are written)."""
        files = {
            str(p.relative_to(self.folder.parent)): sha256_of(p) for p in outputs if p.is_file()
        }
        write_json(self.folder / f"{stage}.json", {"key": key, "outputs": files, **(extra or {})})
