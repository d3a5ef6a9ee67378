"""Validation of rankings against known biology (truth held out from building them).

For a Disease Ontology id (e.g. ``DOID:4481`` allergic rhinitis, ``DOID:2841`` asthma) the
references are:

- ``known_disease_genes``: Hetionet disease -> gene associations (DISEASES, DisGeNET, GWAS
  Catalog, DOAF), for the disease genes ranking and the targets ranking;
- ``indicated_drugs:<categories>``: drugs of the PharmacotherapyDB indications of the disease in
  the chosen categories (``DM`` disease-modifying, ``SYM`` symptomatic; ``NOT`` are
  non-indications), for the drugs ranking (DrugBank ids; ``drug:DB00421`` -> ``DB00421``);
- ``indicated_drug_targets:<categories>``: the target genes of those drugs (Hetionet
  compound -> gene binding, Entrez ids mapped to symbols through Hetionet's gene nodes), for the
  targets ranking.

Each ranking is scored by precision at ``k`` within its own universe: the ranked items (distinct,
in rank order, see :func:`omicstwin.tl.enrich.ranked_items`) are the population of ``N``, the
known items among them the ``K`` successes. A ranking cannot be blamed for genes it never
scored, so known items outside the universe do not count. ``k`` is capped at ``N``. Next to the
observed precision stand two baselines: ``random_precision = K / N`` (the expected precision at
any ``k`` of a random ranking) and ``random_p95``, the 95th percentile of precision at ``k`` over
``n_random`` seeded random permutations of the same universe (lower empirical quantile, i.e. the
smallest value with at least 95% of the permutations at or below it); ``p_value`` is the
one-sided hypergeometric tail ``P(X >= hits) = hypergeom.sf(hits - 1, N, K, k)``.
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
import pandas as pd
from scipy import stats

from omicstwin._logging import logger
from omicstwin.errors import ParameterError
from omicstwin.schemas import SCHEMAS, conform
from omicstwin.tl.enrich import ranked_items

CATEGORIES = ("DM", "SYM", "NOT")
_LIST_HINT = "list them with omicstwin.bench.known_biology.list_diseases()"


# =============================================================================== resources


@cache
def _disease_genes() -> pd.DataFrame:
    from omicstwin.io.manifests import load_table

    table = load_table("hetionet_disease_gene")
    return table.loc[:, ["disease_id", "disease_name", "gene"]].dropna().astype(str)


@cache
def _indications() -> pd.DataFrame:
    from omicstwin.io.manifests import load_table

    table = load_table("pharmacotherapydb_indications")
    return table.loc[:, ["disease_id", "disease", "drug_id", "drug", "category"]].astype(str)


@cache
def _drug_targets() -> pd.DataFrame:
    from omicstwin.io.resources import drug_target_table

    return drug_target_table().loc[:, ["drug_id", "gene"]].astype(str)


@cache
def _diseases() -> pd.DataFrame:
    """Every disease of the references: id, name, number of disease genes and indications."""
    from omicstwin.io.manifests import load_table

    nodes = load_table("hetionet_nodes")
    nodes = nodes[nodes["kind"] == "Disease"]
    names = dict(zip(nodes["id"].str.removeprefix("Disease::"), nodes["name"], strict=True))
    genes = _disease_genes()
    indications = _indications()
    for ids, labels in (
        (genes["disease_id"], genes["disease_name"]),
        (indications["disease_id"], indications["disease"]),
    ):
        for doid, name in zip(ids, labels, strict=True):
            names.setdefault(doid, name)
    n_genes = genes.drop_duplicates(["disease_id", "gene"])["disease_id"].value_counts()
    table = pd.DataFrame({"disease_id": list(names), "disease_name": list(names.values())})
    table["n_disease_genes"] = table["disease_id"].map(n_genes).fillna(0).astype("int64")
    for category in CATEGORIES:
        rows = indications[indications["category"] == category].drop_duplicates(
            ["disease_id", "drug_id"]
        )
        counts = rows["disease_id"].value_counts()
        table[f"n_{category.lower()}_drugs"] = (
            table["disease_id"].map(counts).fillna(0).astype("int64")
        )
    return table.sort_values("disease_name", kind="stable").reset_index(drop=True)


def list_diseases() -> pd.DataFrame:
    """List the diseases that rankings can be validated against.

    Returns
    -------
    pandas.DataFrame
        disease_id, disease_name, n_disease_genes (Hetionet), n_dm_drugs, n_sym_drugs,
        n_not_drugs (PharmacotherapyDB indications), sorted by name.
    """
    return _diseases().copy()


def resolve_disease(disease: str) -> str:
    """Return the Disease Ontology id of a disease given by id (any case) or exact name.

    Raises
    ------
    ParameterError
        Unknown disease; the message names close matches (by id or name) and how to list all.
    """
    table = _diseases()
    query = str(disease).strip()
    ids = {d.upper(): d for d in table["disease_id"]}
    if query.upper() in ids:
        return ids[query.upper()]
    by_name = {
        n.lower(): d for d, n in zip(table["disease_id"], table["disease_name"], strict=True)
    }
    if query.lower() in by_name:
        return by_name[query.lower()]
    raise ParameterError(
        f"unknown disease '{disease}'; {_close_matches(query, table)}fix: pass a Disease "
        f"Ontology id such as 'DOID:4481' (allergic rhinitis) or an exact disease name; "
        f"{_LIST_HINT}"
    )


def _close_matches(query: str, table: pd.DataFrame, n: int = 5) -> str:
    """Close matches by id or name substring, then by spelling (difflib)."""
    q = query.lower()
    bare = q.removeprefix("doid:")
    label = {
        d: f"{d} ({name})"
        for d, name in zip(table["disease_id"], table["disease_name"], strict=True)
    }
    found: dict[str, None] = {}
    for doid, name in zip(table["disease_id"], table["disease_name"], strict=True):
        name_l = name.lower()
        if bare and (bare in doid.lower().removeprefix("doid:") or q in name_l or name_l in q):
            found.setdefault(doid, None)
    if len(found) < n:
        keys = {
            **{d.lower(): d for d in label},
            **dict(zip(table["disease_name"].str.lower(), table["disease_id"], strict=True)),
        }
        for key in difflib.get_close_matches(q, list(keys), n=n, cutoff=0.6):
            found.setdefault(keys[key], None)
    if not found:
        return "no close match; "
    return "close matches: " + ", ".join(label[d] for d in list(found)[:n]) + "; "


def disease_name(doid: str) -> str:
    """Return the name of a disease (see :func:`resolve_disease` for accepted inputs)."""
    doid = resolve_disease(doid)
    table = _diseases()
    return str(table.loc[table["disease_id"] == doid, "disease_name"].iloc[0])


def _check_categories(categories: Iterable[str]) -> tuple[str, ...]:
    cats = tuple(
        dict.fromkeys(
            str(c).upper() for c in ([categories] if isinstance(categories, str) else categories)
        )
    )
    bad = [c for c in cats if c not in CATEGORIES]
    if bad or not cats:
        raise ParameterError(
            f"unknown indication categories {bad or list(cats)}; fix: use some of "
            f"{list(CATEGORIES)} (DM disease-modifying, SYM symptomatic, NOT non-indication)"
        )
    return cats


def known_disease_genes(disease: str) -> list[str]:
    """Hetionet's genes associated with a disease (symbols, sorted)."""
    doid = resolve_disease(disease)
    genes = _disease_genes()
    return sorted(set(genes.loc[genes["disease_id"] == doid, "gene"]))


def indicated_drugs(disease: str, categories: Iterable[str] = ("DM", "SYM")) -> list[str]:
    """DrugBank ids of the PharmacotherapyDB drugs indicated for a disease (sorted)."""
    doid = resolve_disease(disease)
    cats = _check_categories(categories)
    rows = _indications()
    rows = rows[(rows["disease_id"] == doid) & rows["category"].isin(cats)]
    return sorted(set(rows["drug_id"]))


def indicated_drug_targets(disease: str, categories: Iterable[str] = ("DM", "SYM")) -> list[str]:
    """Target gene symbols (Hetionet binding) of the drugs indicated for a disease (sorted)."""
    drugs = set(indicated_drugs(disease, categories))
    targets = _drug_targets()
    return sorted(set(targets.loc[targets["drug_id"].isin(drugs), "gene"]))


# =============================================================================== kernel


def precision_at_k(
    ranked: Sequence[str],
    known: Iterable[str],
    ks: Iterable[int] = (10, 20, 50),
    *,
    n_random: int = 1000,
    seed: int | np.random.Generator = 0,
) -> pd.DataFrame:
    """Precision at ``k`` of a ranking against known items, with random-ranking baselines.

    Parameters
    ----------
    ranked
        Distinct items, best first (the universe).
    known
        Items that count as hits; those outside ``ranked`` are ignored.
    ks
        Cut-offs; each is capped at ``len(ranked)`` and repeated values after capping are
        reported once.
    n_random
        Random permutations of ``ranked`` for ``random_p95`` (0: NaN).
    seed
        Seed (or generator) of the permutations.

    Returns
    -------
    pandas.DataFrame
        k, n_ranked, n_known, hits, precision, random_precision, random_p95, p_value.
    """
    items = list(ranked)
    n = len(items)
    if len(set(items)) != n:
        raise ParameterError("ranked items must be distinct; fix: deduplicate in rank order")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ParameterError(f"ks must be positive integers, got {ks}; fix: e.g. ks=(10, 20, 50)")
    if int(n_random) < 0:
        raise ParameterError(f"n_random must be >= 0, got {n_random}; fix: e.g. n_random=1000")
    known_set = set(known)
    mask = np.fromiter((item in known_set for item in items), dtype=bool, count=n)
    n_known = int(mask.sum())
    capped = list(dict.fromkeys(min(k, n) for k in ks if min(k, n) > 0))
    cum = np.cumsum(mask)
    hits = np.array([cum[k - 1] for k in capped], dtype=np.int64)
    k_arr = np.array(capped, dtype=np.int64)
    random_p95 = np.full(len(capped), np.nan)
    if n_random > 0 and capped:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        # Every permutation is a row; hits at every k come from one cumulative sum.
        perms = rng.permuted(np.tile(mask, (int(n_random), 1)), axis=1)
        random_hits = np.cumsum(perms[:, : int(k_arr.max())], axis=1)[:, k_arr - 1]
        random_p95 = np.quantile(random_hits / k_arr, 0.95, axis=0, method="inverted_cdf")
    return pd.DataFrame(
        {
            "k": k_arr,
            "n_ranked": n,
            "n_known": n_known,
            "hits": hits,
            "precision": hits / k_arr if len(k_arr) else np.array([], dtype=np.float64),
            "random_precision": n_known / n if n else np.nan,
            "random_p95": random_p95,
            "p_value": stats.hypergeom.sf(hits - 1, n, n_known, k_arr),
        }
    )


# =============================================================================== wrapper


def validate_rankings(
    *,
    disease: str,
    rank_disease_genes: pd.DataFrame | None = None,
    rank_targets: pd.DataFrame | None = None,
    rank_drugs: pd.DataFrame | None = None,
    ks: Iterable[int] = (10, 20, 50),
    n_random: int = 1000,
    seed: int = 0,
    categories: Iterable[str] = ("DM", "SYM"),
) -> pd.DataFrame:
    """Precision at ``k`` of a run's rankings against known biology of a disease.

    Parameters
    ----------
    disease
        Disease Ontology id (``DOID:4481``) or exact name; see :func:`list_diseases`.
    rank_disease_genes
        Ranking of disease genes (``name`` = symbol); scored against known disease genes.
    rank_targets
        Ranking of targets (symbols in ``genes``); scored against known disease genes and
        against the targets of the indicated drugs.
    rank_drugs
        Ranking of drugs (``name`` = ``drug:<DrugBank id>``); scored against indicated drugs.
    ks
        Cut-offs (capped at each ranking's length).
    n_random
        Random permutations per ranking x reference for ``random_p95``.
    seed
        Seed; each ranking x reference draws from its own stream derived from it, so a row does
        not change when other rankings are added or left out.
    categories
        PharmacotherapyDB indication categories that count as indicated.

    Returns
    -------
    pandas.DataFrame
        The ``validation`` schema, one row per ranking x reference x k. A reference with no
        known item in the ranking gives rows with ``n_known = 0`` and a warning.
    """
    doid = resolve_disease(disease)
    name = disease_name(doid)
    cats = _check_categories(categories)
    suffix = "+".join(cats)
    jobs: list[tuple[str, list[str], str, list[str]]] = []
    if rank_disease_genes is not None:
        items = ranked_items(rank_disease_genes, "name")
        jobs.append(("rank_disease_genes", items, "known_disease_genes", known_disease_genes(doid)))
    if rank_targets is not None:
        column = "genes" if "genes" in rank_targets.columns else "name"
        items = ranked_items(rank_targets, column)
        jobs.append(("rank_targets", items, "known_disease_genes", known_disease_genes(doid)))
        jobs.append(
            (
                "rank_targets",
                items,
                f"indicated_drug_targets:{suffix}",
                indicated_drug_targets(doid, cats),
            )
        )
    if rank_drugs is not None:
        items = ranked_items(rank_drugs, "name", split=None, strip_prefix="drug:")
        jobs.append(("rank_drugs", items, f"indicated_drugs:{suffix}", indicated_drugs(doid, cats)))
    if not jobs:
        raise ParameterError(
            "no ranking given; fix: pass rank_disease_genes=, rank_targets= and/or rank_drugs="
        )
    frames = []
    for ranking, items, reference, known in jobs:
        if not items:
            logger.warning("validation: the %s ranking is empty; no rows for it", ranking)
            continue
        stream = zlib.crc32(f"{ranking}|{reference}".encode())
        rows = precision_at_k(
            items, known, ks, n_random=n_random, seed=np.random.default_rng([seed, stream])
        )
        if rows["n_known"].iloc[0] == 0:
            logger.warning(
                "validation: none of the %d %s for %s (%s) is in the %s ranking (%d items); its "
                "precision is 0 by construction",
                len(known),
                reference,
                doid,
                name,
                ranking,
                len(items),
            )
        rows.insert(0, "reference", reference)
        rows.insert(0, "ranking", ranking)
        rows.insert(0, "disease_name", name)
        rows.insert(0, "disease_id", doid)
        frames.append(rows)
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=d) for c, d in SCHEMAS["validation"].items()})
        return conform(empty, "validation")
    return conform(pd.concat(frames, ignore_index=True), "validation")
