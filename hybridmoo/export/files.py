"""Files of an export: atomic writes, SHA-256 digests, and a manifest that checks itself.

A manifest records the SHA-256 of every file beside it and, under ``"sha256"``, the digest of
its own canonical JSON (sorted keys, without that field), so an edit to the manifest is caught
as surely as an edit to the weights. This detects accidental or naive changes; it is not a
signature against someone who recomputes the digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridmoo.errors import ConfigError
from hybridmoo.files import sha256_file, write_atomic

MANIFEST = "manifest.json"
CHANGED = "sha256 mismatch, the file was changed after export"
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def safe_name(name: Any, where: str) -> str:
    """``name`` if it is a plain file name (no directory part, no leading dot), else a
    ConfigError: names read from a manifest must not reach outside its directory."""
    if not isinstance(name, str) or not _FILE_NAME.match(name) or ".." in name:
        raise ConfigError(f"{where}: {name!r} is not a plain file name")
    return name


def write_manifest(directory: Path, body: Mapping[str, Any], files: list[str]) -> Path:
    """Write ``manifest.json`` in ``directory``: ``body`` plus the SHA-256 (``files``) and size
    in bytes (``file_bytes``) of each of ``files`` (already written there), and the manifest's
    own SHA-256. Written last, atomically."""
    data = dict(body)
    names = [safe_name(f, str(directory)) for f in files]
    data["files"] = {f: sha256_file(directory / f) for f in names}
    data["file_bytes"] = {f: (directory / f).stat().st_size for f in names}
    data.pop("sha256", None)
    data["sha256"] = _self_digest(data)
    path = directory / MANIFEST
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    return path


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an export directory (or the manifest file itself), with its own digest
    and the digest of every file it lists checked (ConfigError on any mismatch)."""
    directory = Path(path)
    if directory.name == MANIFEST and directory.is_file():
        directory = directory.parent
    manifest = directory / MANIFEST
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no such export directory")
    if not manifest.is_file():
        raise ConfigError(f"{directory}: no {MANIFEST} (not an exported network)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{manifest}: {CHANGED} (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("sha256") != _self_digest(data):
        raise ConfigError(f"{manifest}: {CHANGED}")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ConfigError(f"{manifest}: lists no files")
    for name, digest in files.items():
        target = directory / safe_name(name, str(manifest))
        if not target.is_file():
            raise ConfigError(f"{target}: {CHANGED} (the file is missing)")
        if sha256_file(target) != digest:
            raise ConfigError(f"{target}: {CHANGED}")
    return data


def _self_digest(data: Mapping[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
