"""Regulator priors: their input resources, their cache and their provenance.

A prior (``ligand_targets``, ``receptor_targets``, ``regulator_types``, ``regulator_prior``) is
built from manifest resources by :func:`omicstwin.tl.priors.build_prior` (the computation lives
in ``tl``, which this layer may not import). This module says which resources each *source*
uses and reads them into the tables the kernels take, and it keeps the cache: one parquet file
per prior and source, beside a provenance JSON with the input resources (name, version, licence,
sha256 from the manifests), the parameters, the omicstwin version, the build time and the
output's sha256. A cached prior is used only when its output checksum verifies and its inputs and
parameters are those asked for.

Sources
-------
``omnipath`` (academic use)
    LIANA consensus ligand-receptor pairs; the OmniPath signed, directed signalling network
    (cosmosR export); CollecTRI regulons.
``nichenet_v1`` (academic use)
    NicheNet's 2018 source networks: ligand-receptor, signalling and gene-regulatory (Entrez ids
    mapped to HGNC symbols; unsigned, so every edge counts as activating). Needs ``pyreadr``.
``permissive``
    Only openly licensed inputs: LIANA consensus pairs, CollecTRI (CC BY 4.0) and, as the
    receptor -> TF layer, Reactome (CC BY 4.0) pathway membership as a gene <-> pathway
    bipartite graph (pathways of 5-300 genes; all edges activating): PageRank from a receptor
    reaches the TFs that share its signalling pathways. PROGENy (Apache-2.0) was not used: it
    gives 14 pathway -> footprint-gene weights with no receptor or TF, so it cannot carry a
    ligand's signal to TFs. Signs in this source come from the regulons only.

Every source types regulators with Lambert et al. 2018's TFs (plus CollecTRI's TF complexes
``AP1``, ``NFKB``), the source's ligand-receptor pairs and, for kinases, the GO biological
process 2021 sets "protein phosphorylation (GO:0006468)" and "protein autophosphorylation
(GO:0046777)" with their peptidyl-serine and -tyrosine autophosphorylation children (CC BY 4.0;
GO molecular-function "kinase activity" is not among the shared resources, so this is an
approximation that includes a few non-kinase phosphorylation regulators).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from omicstwin import __version__
from omicstwin._logging import logger
from omicstwin._optional import require
from omicstwin.errors import ChecksumError, ParameterError, ResourceNotFoundError
from omicstwin.io.manifests import (
    cache_dir,
    get_resource,
    load_gene_list,
    load_gene_sets,
    load_table,
    resolve,
    sha256_of,
)

PRIOR_NAMES: tuple[str, ...] = (
    "ligand_targets",
    "receptor_targets",
    "regulator_types",
    "regulator_prior",
)
DEFAULT_SOURCE = "omnipath"
KINASE_GO_TERMS: tuple[str, ...] = (
    "protein phosphorylation (GO:0006468)",
    "protein autophosphorylation (GO:0046777)",
    "peptidyl-serine autophosphorylation (GO:0036289)",
    "peptidyl-tyrosine autophosphorylation (GO:0038083)",
)
REACTOME_SIZE = (5, 300)  # pathway sizes kept for the permissive bipartite graph
TF_COMPLEX_NAMES: tuple[str, ...] = ("AP1", "NFKB")  # CollecTRI's complexes, typed as TFs


@dataclass(frozen=True)
class PriorSource:
    """Where a source takes each input from (manifest resource names)."""

    name: str
    lr_pairs: str
    signalling: str
    tf_targets: str
    description: str
    entrez_ids: bool = False

    def resources(self, prior: str) -> list[str]:
        """Return the manifest resources a prior reads from this source (derived priors aside)."""
        network = [self.lr_pairs, self.signalling, self.tf_targets]
        if self.entrez_ids:
            network.append("hgnc_gene_ids")
        types = ["lambert2018_tfs", "go_biological_process", self.lr_pairs, self.tf_targets]
        if self.signalling != "reactome_pathways":  # network nodes are typed too
            types.append(self.signalling)
        if self.entrez_ids:
            types.append("hgnc_gene_ids")
        wanted = {
            "ligand_targets": network,
            "receptor_targets": network,
            "regulator_types": types,
            "regulator_prior": [self.tf_targets] + (["hgnc_gene_ids"] if self.entrez_ids else []),
        }[prior]
        return list(dict.fromkeys(wanted))

    def academic_only(self, prior: str) -> bool:
        """Whether any input resource of ``prior`` is flagged academic use only."""
        names = set(self.resources(prior))
        if prior == "regulator_prior":  # built from the three others
            names |= {r for upstream in PRIOR_NAMES[:3] for r in self.resources(upstream)}
        return any(get_resource(name).academic_only for name in sorted(names))


SOURCES: dict[str, PriorSource] = {
    "omnipath": PriorSource(
        "omnipath",
        "liana_consensus",
        "omnipath_signalling",
        "collectri",
        "LIANA consensus pairs, OmniPath signed directed signalling, CollecTRI (academic use)",
    ),
    "nichenet_v1": PriorSource(
        "nichenet_v1",
        "nichenet_v1_2018_lr_network",
        "nichenet_v1_2018_sig_network",
        "nichenet_v1_2018_gr_network",
        "NicheNet 2018 ligand-receptor, signalling and gene-regulatory networks (academic use)",
        entrez_ids=True,
    ),
    "permissive": PriorSource(
        "permissive",
        "liana_consensus",
        "reactome_pathways",
        "collectri",
        "LIANA consensus pairs, Reactome pathway membership, CollecTRI (open licences)",
    ),
}


def check_prior(name: str, source: str) -> PriorSource:
    """Return the source's definition; unknown names raise one line with the known ones."""
    if name not in PRIOR_NAMES:
        raise ParameterError(f"unknown prior '{name}'; fix: use one of {', '.join(PRIOR_NAMES)}")
    if source not in SOURCES:
        raise ParameterError(
            f"unknown prior source '{source}'; fix: use one of {', '.join(SOURCES)}"
        )
    return SOURCES[source]


# --- inputs -----------------------------------------------------------------------------------


def _read_rda(resource: str, obj: str) -> pd.DataFrame:
    pyreadr = require("pyreadr", what=f"reading the R data file of '{resource}'")
    return pyreadr.read_r(str(resolve(resource)))[obj]


def _entrez_to_symbol() -> dict[str, str]:
    ids = load_table("hgnc_gene_ids").dropna(subset=["entrez_id", "gene"])
    entrez = pd.to_numeric(ids["entrez_id"], errors="coerce").astype("Int64").astype(str)
    return dict(zip(entrez, ids["gene"].astype(str), strict=True))


def _nichenet_edges(resource: str, obj: str, columns: tuple[str, str]) -> pd.DataFrame:
    table = _read_rda(resource, obj)
    symbol = _entrez_to_symbol()
    mapped = pd.DataFrame(
        {
            columns[0]: table["from"].astype(str).map(symbol),
            columns[1]: table["to"].astype(str).map(symbol),
        }
    ).dropna()
    logger.info("%s: %d of %d rows map to HGNC symbols", resource, len(mapped), len(table))
    return mapped.drop_duplicates().reset_index(drop=True)


def load_lr_pairs(source: str) -> pd.DataFrame:
    """Ligand-receptor pairs of a source: ``ligand, receptor`` (complexes joined with ``_``)."""
    spec = SOURCES[source]
    if spec.entrez_ids:
        return _nichenet_edges(spec.lr_pairs, "lr_network", ("ligand", "receptor"))
    return load_table(spec.lr_pairs)[["ligand", "receptor"]].drop_duplicates()


def reactome_bipartite(gene_sets: dict[str, list[str]]) -> pd.DataFrame:
    """Gene <-> pathway edges (both directions, sign +1) for pathways of 5-300 genes."""
    low, high = REACTOME_SIZE
    rows = [
        (gene, f"reactome:{pathway}")
        for pathway, genes in sorted(gene_sets.items())
        if low <= len(set(genes)) <= high
        for gene in sorted(set(genes))
    ]
    there = pd.DataFrame(rows, columns=["source", "target"])
    back = there.rename(columns={"source": "target", "target": "source"})
    return pd.concat([there, back], ignore_index=True).assign(sign=1)


def load_signalling(source: str) -> pd.DataFrame:
    """Read the source's receptor -> TF layer: directed edges ``source, target, sign`` (+1/-1)."""
    spec = SOURCES[source]
    if spec.entrez_ids:
        edges = _nichenet_edges(spec.signalling, "sig_network", ("source", "target"))
        return edges.assign(sign=1)
    if spec.signalling == "reactome_pathways":
        return reactome_bipartite(load_gene_sets(spec.signalling))
    table = load_table(spec.signalling)
    return pd.DataFrame(
        {"source": table["source"], "target": table["target"], "sign": table["weight"]}
    )


def load_tf_targets(source: str) -> pd.DataFrame:
    """Read the source's TF -> target edges ``source, target, weight`` (NicheNet's: 1)."""
    spec = SOURCES[source]
    if spec.entrez_ids:
        edges = _nichenet_edges(spec.tf_targets, "gr_network", ("source", "target"))
        return edges.assign(weight=1.0)
    return load_table(spec.tf_targets)[["source", "target", "weight"]]


def load_tfs() -> list[str]:
    """Lambert et al. 2018's human TFs plus CollecTRI's TF complex names."""
    return [*load_gene_list("lambert2018_tfs"), *TF_COMPLEX_NAMES]


def load_kinases(terms: tuple[str, ...] | list[str] = KINASE_GO_TERMS) -> list[str]:
    """Return the genes of the GO biological-process kinase proxy sets (module docstring)."""
    sets = load_gene_sets("go_biological_process")
    missing = [term for term in terms if term not in sets]
    if missing:
        raise ResourceNotFoundError(
            f"GO sets {missing} are not in 'go_biological_process'; fix: use the GO BP 2021 "
            "file named in data_manifests/genesets.yaml"
        )
    return sorted({gene for term in terms for gene in sets[term]})


# --- provenance and cache ---------------------------------------------------------------------


def input_record(resources: list[str]) -> list[dict[str, Any]]:
    """Name, version, licence, academic flag and file sha256s of each input, from the manifests.

    The files themselves are verified against these sha256s whenever they are read (see
    :func:`omicstwin.io.manifests.resolve`), so the manifest is the record of what was used.
    """
    record = []
    for name in resources:
        resource = get_resource(name)
        record.append(
            {
                "resource": name,
                "version": resource.version,
                "licence": resource.licence,
                "academic_only": resource.academic_only,
                "files": [{"path": f.path, "sha256": f.sha256} for f in resource.files],
            }
        )
    return record


def prior_cache_dir() -> Path:
    """Return the prior cache: ``<OMICSTWIN_CACHE_DIR or ~/.cache/omicstwin>/priors``."""
    return cache_dir() / "priors"


def prior_paths(name: str, source: str, out: str | Path | None = None) -> tuple[Path, Path]:
    """Return a prior's paths: ``<out or cache>/<source>/<name>.{parquet,json}``."""
    folder = (Path(out) if out is not None else prior_cache_dir()) / source
    return folder / f"{name}.parquet", folder / f"{name}.json"


def read_provenance(name: str, source: str, out: str | Path | None = None) -> dict | None:
    """Return the stored provenance of a prior, or None when it was never built there."""
    _, meta = prior_paths(name, source, out)
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("prior provenance '%s' is unreadable (%s); it will be rebuilt", meta, exc)
        return None


def stale_reason(provenance: dict | None, inputs: list[dict], parameters: dict) -> str | None:
    """Why a cached prior cannot be used (None: it can), comparing inputs and parameters."""
    if provenance is None:
        return "not built yet"
    if provenance.get("inputs") != inputs:
        return "its input resources changed"
    if provenance.get("parameters") != parameters:
        return "its parameters changed"
    return None


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=".partial-", suffix=path.name)
    os.close(handle)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def write_prior(
    table: pd.DataFrame,
    name: str,
    source: str,
    *,
    out: str | Path | None,
    provenance: dict[str, Any],
) -> Path:
    """Write a prior and its provenance (with the output's sha256); return the parquet path."""
    parquet, meta = prior_paths(name, source, out)
    _atomic_write(parquet, lambda p: table.to_parquet(p, index=False))
    record = {
        **provenance,
        "prior": name,
        "source": source,
        "omicstwin_version": __version__,
        "output": {"file": parquet.name, "sha256": sha256_of(parquet), "rows": len(table)},
    }
    _atomic_write(meta, lambda p: Path(p).write_text(json.dumps(record, indent=2) + "\n"))
    return parquet


def verify_output(name: str, source: str, out: str | Path | None = None) -> Path:
    """Check a cached prior's parquet against the sha256 in its provenance.

    Raises
    ------
    ChecksumError
        The file is missing or differs from what was built.
    """
    parquet, meta = prior_paths(name, source, out)
    provenance = read_provenance(name, source, out)
    if provenance is None or not parquet.is_file():
        raise ChecksumError(
            f"prior '{name}' ({source}) has no complete cache in '{parquet.parent}'; fix: "
            f"omicstwin priors build {name} --source {source}"
        )
    expected = provenance.get("output", {}).get("sha256", "")
    actual = sha256_of(parquet)
    if actual != expected:
        raise ChecksumError(
            f"cached prior '{parquet}' has sha256 {actual[:12]}..., its provenance '{meta.name}' "
            f"says {expected[:12]}...; the file changed after the build; fix: rebuild it "
            f"(omicstwin priors build {name} --source {source} --force)"
        )
    return parquet
