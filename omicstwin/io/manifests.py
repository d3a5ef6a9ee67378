"""Data manifests: named external resources with version, licence, source and sha256.

Resources are never used unchecked and never downloaded silently. A file is looked up, in order,
in every folder of the offline search path ``OMICSTWIN_DATA_PATH`` (``os.pathsep``-separated),
then in the download cache (``OMICSTWIN_CACHE_DIR``, default ``~/.cache/omicstwin``); if it is in
neither and downloads are allowed (``OMICSTWIN_OFFLINE`` unset), it is fetched from its source
URL into the cache with a logged warning. Every file's sha256 is verified before use.

The manifests are the YAML files in ``data_manifests/`` (see its README); their schema is the
pydantic model :class:`Manifest`, exported as ``data_manifests/manifest.schema.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omicstwin._logging import logger
from omicstwin.errors import ChecksumError, ManifestError, ResourceNotFoundError

DATA_PATH_ENV = "OMICSTWIN_DATA_PATH"
CACHE_DIR_ENV = "OMICSTWIN_CACHE_DIR"
OFFLINE_ENV = "OMICSTWIN_OFFLINE"
MANIFEST_DIR_ENV = "OMICSTWIN_MANIFEST_DIR"
SCHEMA_FILE = "manifest.schema.json"
_DOWNLOAD_TIMEOUT_S = 60


class ResourceFile(BaseModel):
    """One file of a resource."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Path relative to the resource root, '/'-separated.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex sha256.")
    url: str | None = Field(
        default=None,
        pattern=r"^(https?|file)://",
        description="Where to download this exact file; null when it must be obtained by hand.",
    )


class Resource(BaseModel):
    """A named external resource (one file, or a bundle such as a benchmark)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    version: str
    licence: str
    source: str = Field(description="Provenance: repository, commit and original path.")
    source_url: str = Field(pattern=r"^https?://", description="Home page of the source.")
    format: Literal[
        "txt",
        "csv",
        "tsv",
        "gmt",
        "beeline",
        "boolode",
        "h5ad",
        "h5mu",
        "rda",
        "mtx",
        "jaspar",
        "meme",
        "bed",
    ] = Field(
        description="File format: csv/tsv tables (load_table), gmt gene sets, txt gene lists, "
        "rda (R data, read with pyreadr), mtx (MatrixMarket folder with feature/barcode lists), "
        "jaspar/meme motif matrices, bed intervals, or a bundle (beeline, boolode, h5ad, h5mu)."
    )
    root: str = Field(description="Folder of the files below each search-path entry.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column name -> column name in the file (tables only).",
    )
    obtain: str | None = Field(
        default=None, description="How to obtain files that have no download URL."
    )
    academic_only: bool = Field(
        default=False,
        description="True when the data include sources that forbid commercial use; the "
        "licence field says which. Informational: resolution is the same either way.",
    )
    na_values: list[str] | None = Field(
        default=None,
        description="Tables only: the cell values read as missing. null: pandas' defaults "
        "('NA', 'NaN', 'null', '', ...); a list: only these (e.g. [''] keeps gene symbols "
        "spelled 'NA' or 'NaN').",
    )
    files: list[ResourceFile] = Field(min_length=1)


class Manifest(BaseModel):
    """One manifest file: a family of resources."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1]
    family: str
    description: str
    resources: list[Resource] = Field(min_length=1)


def manifest_dir() -> Path:
    """Return the folder holding the manifests.

    ``OMICSTWIN_MANIFEST_DIR`` wins; else the copy shipped inside the wheel; else the source
    tree's ``data_manifests/``.
    """
    override = os.environ.get(MANIFEST_DIR_ENV)
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "data_manifests", here.parent / "data_manifests"):
        if candidate.is_dir():
            return candidate
    raise ManifestError(
        "no data_manifests folder found next to the omicstwin package; fix: set "
        f"{MANIFEST_DIR_ENV} to the folder holding the manifest YAML files"
    )


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate one manifest YAML file.

    Raises
    ------
    ManifestError
        Unreadable YAML or a schema violation (the message lists each problem).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"manifest '{path}' cannot be read: {exc}") from exc
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ManifestError(
            f"manifest '{path.name}' does not follow the schema ({problems}); fix: compare it "
            f"with {SCHEMA_FILE}"
        ) from exc


def load_manifests(directory: str | Path | None = None) -> dict[str, Resource]:
    """Load every ``*.yaml`` manifest of a folder into ``{resource name: Resource}``.

    Raises
    ------
    ManifestError
        A malformed manifest, or one resource name used twice.
    """
    directory = Path(directory) if directory is not None else manifest_dir()
    resources: dict[str, Resource] = {}
    for path in sorted(directory.glob("*.yaml")):
        for resource in read_manifest(path).resources:
            if resource.name in resources:
                raise ManifestError(
                    f"resource '{resource.name}' is defined twice (again in '{path.name}'); "
                    "fix: give each resource a unique name"
                )
            resources[resource.name] = resource
    return resources


@cache
def _default_resources() -> dict[str, Resource]:
    return load_manifests()


def get_resource(name: str) -> Resource:
    """Return a resource of the shipped manifests by name.

    Raises
    ------
    ManifestError
        Unknown name (the message lists the known ones).
    """
    resources = _default_resources()
    if name not in resources:
        raise ManifestError(
            f"unknown data resource '{name}'; known resources: {sorted(resources)}; fix: use one "
            "of them or add a manifest entry in data_manifests/"
        )
    return resources[name]


def search_path() -> list[Path]:
    """Return the offline search path: ``OMICSTWIN_DATA_PATH`` entries, then the cache."""
    entries = [Path(p) for p in os.environ.get(DATA_PATH_ENV, "").split(os.pathsep) if p]
    return [*entries, cache_dir()]


def cache_dir() -> Path:
    """Return the download cache folder (not created until something is downloaded)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "omicstwin")


def sha256_of(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@cache
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> str:
    """Memoised sha256 per (file, size, mtime): each file is hashed once per process."""
    return sha256_of(path)


def _verify(path: Path, entry: ResourceFile, resource: Resource) -> Path:
    stat = path.stat()
    actual = _verified(str(path), stat.st_size, stat.st_mtime_ns, entry.sha256)
    if actual != entry.sha256:
        raise ChecksumError(
            f"'{path}' (resource '{resource.name}', version {resource.version}) has sha256 "
            f"{actual[:12]}..., the manifest expects {entry.sha256[:12]}...; the file is "
            "corrupt or a different version; fix: replace it with the version named in the "
            "manifest (or delete it from the cache to download it again)"
        )
    return path


def _find_entry(resource: Resource, file: str | None) -> ResourceFile:
    if file is None:
        if len(resource.files) == 1:
            return resource.files[0]
        raise ManifestError(
            f"resource '{resource.name}' has {len(resource.files)} files; fix: name one, e.g. "
            f"file='{resource.files[0].path}'"
        )
    file = file.strip("/")
    for entry in resource.files:
        if entry.path == file:
            return entry
    raise ManifestError(
        f"resource '{resource.name}' has no file '{file}'; fix: use a path listed in its "
        f"manifest, e.g. '{resource.files[0].path}'"
    )


def resolve(name: str | Resource, file: str | None = None, *, download: bool | None = None) -> Path:
    """Return the local path of a resource file, verified against its sha256.

    Parameters
    ----------
    name
        Resource name (or a :class:`Resource`).
    file
        For multi-file resources, the file's path relative to the resource root.
    download
        Allow downloading when the file is not found locally; default: allowed unless
        ``OMICSTWIN_OFFLINE`` is set.

    Returns
    -------
    Path
        A verified local file.

    Raises
    ------
    ResourceNotFoundError
        Not on the search path, and not downloadable (offline, no URL, or the download failed).
    ChecksumError
        A local or downloaded file does not match the manifest.
    """
    resource = name if isinstance(name, Resource) else get_resource(name)
    entry = _find_entry(resource, file)
    relative = Path(resource.root) / entry.path
    for base in search_path():
        candidate = base / relative
        if candidate.is_file():
            return _verify(candidate, entry, resource)
    if download is None:
        download = not os.environ.get(OFFLINE_ENV)
    where = [str(p) for p in search_path()]
    if not download or entry.url is None:
        why = (
            "downloads are disabled (OMICSTWIN_OFFLINE is set)"
            if not download
            else f"it has no download URL ({resource.obtain or 'obtain it from its source'})"
        )
        raise ResourceNotFoundError(
            f"resource '{resource.name}' file '{relative}' was not found on the search path "
            f"{where} and {why}; fix: set {DATA_PATH_ENV} to a folder that holds "
            f"'{relative}' (source: {resource.source})"
        )
    return _download(entry, resource, cache_dir() / relative)


def _download(entry: ResourceFile, resource: Resource, target: Path) -> Path:
    logger.warning(
        "downloading '%s' (%s, licence %s) from %s to %s",
        resource.name,
        entry.path,
        resource.licence,
        entry.url,
        target,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".partial-", suffix=target.name)
    os.close(handle)
    try:
        try:
            with urllib.request.urlopen(entry.url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                with open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
        except OSError as exc:  # URLError and socket errors are OSErrors
            raise ResourceNotFoundError(
                f"resource '{resource.name}' could not be downloaded from {entry.url} ({exc}); "
                f"fix: check the network, or put the file on {DATA_PATH_ENV}"
            ) from exc
        actual = sha256_of(partial)
        if actual != entry.sha256:
            raise ChecksumError(
                f"download of '{resource.name}' from {entry.url} has sha256 {actual[:12]}..., "
                f"the manifest expects {entry.sha256[:12]}...; the source changed or the "
                "transfer was corrupted; nothing was kept; fix: check the source version, or "
                f"put the expected file on {DATA_PATH_ENV}"
            )
        os.replace(partial, target)  # atomic: a partial download is never taken for a file
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def load_table(name: str, file: str | None = None):
    """Read a csv/tsv resource as a DataFrame with the manifest's canonical column names.

    Columns named in the manifest's ``columns`` mapping are renamed to their canonical names;
    other columns are kept as they are.
    Missing values follow the manifest's ``na_values`` (pandas' defaults when it is unset).
    """
    import pandas as pd

    resource = get_resource(name)
    if resource.format not in ("csv", "tsv"):
        raise ManifestError(
            f"resource '{name}' is {resource.format}, not a table; fix: use load_gene_sets or "
            "load_gene_list for it, or resolve(name, file) and a reader for that format"
        )
    path = resolve(resource, file)
    na = {} if resource.na_values is None else {"na_values": resource.na_values}
    if na:
        na["keep_default_na"] = False
    table = pd.read_csv(path, sep="\t" if resource.format == "tsv" else ",", **na)
    missing = [col for col in resource.columns.values() if col not in table.columns]
    if missing:
        raise ManifestError(
            f"resource '{name}' ({path.name}) lacks the columns {missing} named in its manifest; "
            f"columns present: {list(table.columns)}; fix: correct the manifest's column mapping"
        )
    return table.rename(columns={v: k for k, v in resource.columns.items()})


def load_gene_list(name: str) -> list[str]:
    """Read a one-gene-per-line resource (e.g. the Lambert TF list), in file order."""
    resource = get_resource(name)
    lines = resolve(resource).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def load_gene_sets(name: str) -> dict[str, list[str]]:
    """Read a GMT resource into ``{set name: genes}`` (the description column is dropped)."""
    resource = get_resource(name)
    if resource.format != "gmt":
        raise ManifestError(f"resource '{name}' is {resource.format}, not gmt")
    sets: dict[str, list[str]] = {}
    for line in resolve(resource).read_text().splitlines():
        fields = line.rstrip("\n").split("\t")
        if len(fields) >= 3:
            sets[fields[0]] = [g for g in fields[2:] if g]
    return sets


def json_schema() -> str:
    """Return the JSON schema of a manifest file, as committed in ``data_manifests/``."""
    return json.dumps(Manifest.model_json_schema(), indent=2, sort_keys=True) + "\n"
