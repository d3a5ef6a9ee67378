"""Gene identifiers of real files: Ensembl ids, aliases, ``make_unique`` suffixes, species.

Real count matrices name genes in ways the priors (human HGNC symbols) do not match:

- Ensembl gene ids (``ENSG00000121410``, often with a version ``.12``): mapped to HGNC symbols
  with the offline HGNC table (manifest ``hgnc_gene_ids``); ids the table lacks (non-coding
  genes: the table covers protein-coding, TR and IG genes) are kept as version-less ids;
- previous symbols and aliases (``SLC9A3R2``): mapped to the approved symbol through
  ``hgnc_symbol_aliases``, which lists unambiguous aliases only. A name the run's priors use
  (``keep``) is never renamed, and an approved symbol the priors know under one previous
  name gets that name, so the data match the priors' own vocabulary;
- ``make_unique`` suffixes (anndata ``GENE-1``, R ``GENE.1``): undone only when provably one,
  that is the base name is present too and the suffixed name is not itself an approved
  symbol or a prior's gene (``IGHV1-69-2``, ``H1-2``, ``NKX2-1`` and ``HLA-A`` are real
  symbols and stay). An alias does not protect a name: ``AGT-1`` beside ``AGT`` is AGT's
  second column, not SLC7A13 (whose alias it is), since count matrices name genes by their
  approved symbols;
- duplicated names (after the steps above): their counts are summed into one column.

:func:`gene_plan` works on names only and returns a :class:`GenePlan` whose :meth:`~GenePlan.apply`
sums the columns of any block of cells (a chunked reader calls it per chunk);
:func:`harmonise_genes` applies it to an AnnData. The plan's :attr:`~GenePlan.table` is the
``gene_map`` table of the run directory. Species are detected from the names
(:func:`detect_species`): the priors are human, so mouse data stop with one line naming the fix.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin.errors import InputTypeError, ParameterError
from omicstwin.schemas import conform

#: Ensembl gene id: species prefix (empty for human), version and GENCODE's PAR_Y tag optional
_ENSEMBL = re.compile(r"^(ENS([A-Z]{0,6})G\d{11})(?:\.\d+)?(?:_PAR_Y)?$")
#: a uniqueness suffix: anndata joins with "-", R's make.unique with "."; no leading zero
_SUFFIX = re.compile(r"^(.+?)([-.])([1-9]\d*)$")
#: mouse (MGI) capitalisation: Cd3e, Actb, H2-K1, mt-Co1, Gm12345, 1700001C19Rik
_MOUSE_SYMBOL = re.compile(r"^(?:[A-Z][a-z0-9]*[a-z][a-z0-9-]*|mt-[A-Z][a-z0-9]+|\w*Rik\d*)$")
#: human (HGNC) capitalisation: upper case, digits, dashes, and the "orf" of C1orf112
_HUMAN_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9-]*(?:orf[0-9]+[A-Z0-9-]*)?$")
#: Ensembl species prefixes (ENS<prefix>G) named in the error message
_ENSEMBL_SPECIES = {"": "human", "MUS": "mouse", "RNO": "rat", "DAR": "zebrafish"}

SPECIES = ("auto", "human", "mouse")


@dataclass(frozen=True)
class GenePlan:
    """How the input's gene columns become the run's genes.

    Attributes
    ----------
    genes
        The run's gene names, in order of first appearance in the input.
    columns
        Input column -> position in :attr:`genes` (int array, one per input column).
    table
        The ``gene_map`` table: one row per input column (see ``omicstwin.schemas``).
    species
        The species the names were checked as (``human``).
    """

    genes: pd.Index
    columns: np.ndarray
    table: pd.DataFrame
    species: str

    @property
    def identity(self) -> bool:
        """Whether the input's names are kept as they are (nothing renamed or summed)."""
        return bool((self.table["gene"] == self.table["input_name"]).all()) and len(
            self.genes
        ) == len(self.columns)

    @functools.cached_property
    def summing(self) -> sparse.csr_matrix:
        """Input columns x run genes 0/1 matrix: ``counts @ summing`` sums duplicated columns."""
        n_in = len(self.columns)
        return sparse.csr_matrix(
            (np.ones(n_in, dtype=np.float32), (np.arange(n_in), self.columns)),
            shape=(n_in, len(self.genes)),
        )

    def apply(self, block: Any) -> Any:
        """Sum a cells x input-genes block into cells x run genes (CSR or dense, same dtype).

        Parameters
        ----------
        block
            Counts of some cells, all input columns (sparse or dense).
        """
        if self.identity:
            return block
        summing = self.summing.astype(block.dtype)
        if sparse.issparse(block):
            return sparse.csr_matrix(block @ summing)
        return np.asarray(block @ summing)

    def one_line(self) -> str:
        """Return a line for the run record: what was mapped, merged and left unmapped."""
        counts = self.table["mapping"].value_counts()
        parts = [f"{len(self.columns)} input genes -> {len(self.genes)} genes ({self.species})"]
        for how in ("ensembl", "alias", "prior_name", "unmapped_id", "unmapped"):
            if counts.get(how, 0):
                parts.append(f"{how} {int(counts[how])}")
        n_suffix = int(self.table["suffix_removed"].sum())
        if n_suffix:
            parts.append(f"make_unique suffixes undone {n_suffix}")
        n_merged = len(self.columns) - len(self.genes)
        if n_merged:
            parts.append(f"{n_merged} duplicated columns summed")
        return "; ".join(parts)


@functools.lru_cache(maxsize=1)
def _hgnc() -> tuple[dict[str, str], dict[str, str], frozenset[str], dict[str, list[str]]]:
    """Ensembl id -> symbol, alias -> symbol, approved symbols, symbol -> its aliases."""
    from omicstwin.io.manifests import load_table

    ids = load_table("hgnc_gene_ids").dropna(subset=["gene"])
    with_id = ids.dropna(subset=["ensembl_gene_id"]).drop_duplicates(["ensembl_gene_id", "gene"])
    # one Ensembl id maps to two symbols in the table (CCL3L1/CCL3L3): ambiguous, left unmapped
    unique = with_id.drop_duplicates("ensembl_gene_id", keep=False)
    ensembl = dict(zip(unique["ensembl_gene_id"], unique["gene"], strict=True))
    aliases = load_table("hgnc_symbol_aliases").dropna(subset=["alias", "gene"])
    alias = dict(zip(aliases["alias"], aliases["gene"], strict=True))
    by_symbol: dict[str, list[str]] = {}
    for name, symbol in alias.items():
        by_symbol.setdefault(symbol, []).append(name)
    return ensembl, alias, frozenset(ids["gene"]), by_symbol


def detect_species(names: Iterable[str]) -> str:
    """Guess the species from gene names: Ensembl id prefixes, else symbol capitalisation.

    Returns ``human``, ``mouse`` or another Ensembl species' name; ``human`` when the names
    give no sign (e.g. synthetic names).
    """
    votes: dict[str, int] = {}
    for name in names:
        match = _ENSEMBL.match(name)
        if match:
            species = _ENSEMBL_SPECIES.get(match.group(2), f"ENS{match.group(2)}G")
        elif _HUMAN_SYMBOL.match(name):
            species = "human"
        elif _MOUSE_SYMBOL.match(name):
            species = "mouse"
        else:
            continue
        votes[species] = votes.get(species, 0) + 1
    if not votes:
        return "human"
    best = max(votes, key=lambda s: (votes[s], s == "human"))
    return best if votes[best] > sum(votes.values()) / 2 else "human"


def check_species(names: Sequence[str], species: str = "auto") -> str:
    """Return ``human`` or raise :class:`ParameterError` naming the species and the fix.

    Parameters
    ----------
    names
        Gene names of the input.
    species
        ``auto`` (detect), ``human`` (no check) or ``mouse``.
    """
    if species not in SPECIES:
        raise ParameterError(f"species '{species}' is not one of {list(SPECIES)}; fix: use auto")
    found = "human" if species == "human" else detect_species(names)
    if species == "mouse":
        found = "mouse"
    if found == "human":
        return found
    examples = ", ".join(list(names)[:3])
    raise ParameterError(
        f"the genes look like {found} ({examples}, ...) but omicstwin's priors are human and no "
        f"{found}-human ortholog table is installed; fix: convert the genes to human orthologs "
        "first (e.g. Ensembl BioMart homologs or gprofiler's g:Orth), or pass --species human "
        "(species: human in the run config) if the detection is wrong"
    )


def gene_plan(
    names: Sequence[str], *, species: str = "auto", keep: Iterable[str] | None = None
) -> GenePlan:
    """Decide the run's gene of every input column (names only; nothing is read).

    Parameters
    ----------
    names
        The input's gene names (var_names), in column order; may hold duplicates.
    species
        ``auto``, ``human`` or ``mouse`` (see :func:`check_species`).
    keep
        Names kept as they are even when they are aliases or previous symbols (the run's
        priors' genes); an approved symbol the priors know only by one alias takes that alias.

    Returns
    -------
    GenePlan

    Raises
    ------
    ParameterError
        Not human genes (see :func:`check_species`).
    """
    names = [str(n) for n in names]
    species = check_species(names, species)
    ensembl, alias, approved, aliases_of = _hgnc()
    keep = frozenset(keep or ())
    known = approved | keep
    present = set(names)
    rows = []
    for name in names:
        base, suffixed = _undo_suffix(name, present, known)
        gene, how = _map_name(base, ensembl, alias, approved, keep, aliases_of)
        match = _ENSEMBL.match(base)
        rows.append((name, match.group(1) if match else base, gene, how, suffixed))
    table = pd.DataFrame(rows, columns=["input_name", "gene_id", "gene", "mapping", "suffix"])
    codes, genes = pd.factorize(table["gene"])  # order of first appearance
    table["n_merged"] = table.groupby("gene")["gene"].transform("size").astype(np.int64)
    table["suffix_removed"] = table.pop("suffix").astype(np.int64)
    return GenePlan(pd.Index(genes), codes.astype(np.int64), conform(table, "gene_map"), species)


def _undo_suffix(name: str, present: set[str], known: frozenset[str]) -> tuple[str, bool]:
    """Return the name without a provable ``make_unique`` suffix, and whether one was removed."""
    if name in known or _ENSEMBL.match(name):
        return name, False
    match = _SUFFIX.match(name)
    if match is None or match.group(1) not in present:
        return name, False
    return match.group(1), True


def _map_name(
    name: str,
    ensembl: dict[str, str],
    alias: dict[str, str],
    approved: frozenset[str],
    keep: frozenset[str],
    aliases_of: dict[str, list[str]],
) -> tuple[str, str]:
    """Return the run's gene for one (suffix-free) name and how it was found."""
    match = _ENSEMBL.match(name)
    if match:
        gene_id = match.group(1)
        if gene_id not in ensembl:
            return gene_id, "unmapped_id"
        symbol, how = ensembl[gene_id], "ensembl"
    elif name in keep:
        return name, "symbol"
    elif name in approved:
        symbol, how = name, "symbol"
    elif name in alias:
        symbol, how = alias[name], "alias"
    else:
        return name, "unmapped"
    if keep and symbol not in keep:  # the priors may know the gene by a previous name
        in_priors = [a for a in aliases_of.get(symbol, ()) if a in keep]
        if len(in_priors) == 1:
            return in_priors[0], "prior_name"
    return symbol, how


def harmonise_genes(
    data: Any, *, species: str = "auto", keep: Iterable[str] | None = None
) -> tuple[Any, pd.DataFrame]:
    """Map an AnnData's (or a list of) gene names to HGNC symbols, summing duplicates.

    Parameters
    ----------
    data
        AnnData with counts (``X`` and every layer are summed the same way), or gene names.
    species, keep
        See :func:`gene_plan`.

    Returns
    -------
    harmonised
        For an AnnData: the input itself when nothing changes, else a new AnnData whose
        ``var["gene_id"]`` holds the input names of each gene (``;``-joined when summed);
        ``varm`` and ``varp`` are dropped (they cannot be summed). For names: the genes.
    gene_map : pandas.DataFrame
        One row per input column (schema ``gene_map``).

    Raises
    ------
    ParameterError
        Not human genes.
    InputTypeError
        Neither an AnnData nor a sequence of names (MuData: pass ``mdata["rna"]``).
    """
    if isinstance(data, pd.Index | list | tuple | np.ndarray):
        plan = gene_plan(list(data), species=species, keep=keep)
        return plan.genes, plan.table
    if type(data).__name__ != "AnnData":
        raise InputTypeError(
            f"harmonise_genes takes an AnnData or gene names, got {type(data).__name__}; fix: "
            "pass mdata['rna'] for a MuData"
        )
    plan = gene_plan(list(data.var_names), species=species, keep=keep)
    return apply_plan(data, plan), plan.table


def apply_plan(adata: Any, plan: GenePlan) -> Any:
    """Return the AnnData with its columns summed and named by ``plan`` (itself if identity)."""
    import anndata as ad

    if plan.identity:
        return adata
    first = pd.Series(np.arange(len(plan.columns))).groupby(plan.columns).first().to_numpy()
    var = adata.var.iloc[first].copy()
    var.index = plan.genes.astype(str)
    joined = pd.Series(list(adata.var_names)).groupby(plan.columns).agg(";".join)
    var["gene_id"] = joined.to_numpy()
    return ad.AnnData(
        X=plan.apply(adata.X) if adata.X is not None else None,
        obs=adata.obs,
        var=var,
        layers={name: plan.apply(layer) for name, layer in adata.layers.items()},
        obsm=dict(adata.obsm),
        obsp=dict(adata.obsp),
        uns=adata.uns,
    )
