"""Ligand -> target and receptor -> target priors by signed network propagation (NicheNet-style).

Pure computation on tables, no file I/O: :mod:`omicstwin.io.priors` resolves the input resources
and caches the results, :mod:`omicstwin.tl.priors` builds them.

The construction follows NicheNet (Browaeys et al., Nat Methods 2020): a ligand's signal enters
the intracellular signalling network at its receptors and spreads by personalised PageRank
(PPR); the PageRank mass that lands on transcription factors, times the TFs' regulons, is the
ligand's regulatory potential on each target gene. Two additions:

- **Sign.** The signalling graph is *lifted*: every node ``v`` has an activated copy ``v+`` and
  an inhibited copy ``v-``; an activating edge ``u -> v`` maps ``u+ -> v+`` and ``u- -> v-``,
  an inhibiting one ``u+ -> v-`` and ``u- -> v+``. A walk that crosses an odd number of
  inhibiting edges ends on a ``-`` copy. Every copy keeps its node's out-degree, so the lifted
  chain lumps exactly onto the unsigned one: ``mass(v+) + mass(v-)`` is the unsigned PPR.
- **Complexes.** Nodes and receptors written ``A_B`` (LIANA, OmniPath) stand for all their
  subunits: an edge into or out of a complex is an edge into or out of each subunit, and a
  complex receptor seeds each subunit with an equal share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin._logging import logger
from omicstwin.errors import MissingKeyError, ParameterError

#: CollecTRI's two TF complexes (Mueller-Dott et al. 2023 merged their subunits' regulons):
#: their regulons are read as the regulon of each subunit, so signal reaching any subunit counts.
COLLECTRI_COMPLEXES: dict[str, tuple[str, ...]] = {
    "AP1": ("FOS", "FOSB", "FOSL1", "FOSL2", "JUN", "JUNB", "JUND"),
    "NFKB": ("NFKB1", "NFKB2", "REL", "RELA", "RELB"),
}

#: regulator types, in order of precedence when a gene has several roles
REGULATOR_TYPES: tuple[str, ...] = ("ligand", "tf", "receptor", "kinase", "other")

#: NicheNet's defaults (nichenetr ``construct_ligand_target_matrix``): damping 0.5 and the 0.99
#: quantile cut of the signalling scores; 250 targets per ligand as in its vignettes
DEFAULT_DAMPING = 0.5
DEFAULT_SIGNAL_QUANTILE = 0.99
DEFAULT_MAX_TARGETS = 250
_BATCH = 256  # seed sets propagated together: bounds the dense (nodes x batch) iterate


def split_complex(name: str, sep: str = "_") -> list[str]:
    """Return the subunits of a complex name (``"IL2RB_IL2RG"`` -> both), or the name itself."""
    return [part for part in str(name).split(sep) if part]


def personalised_pagerank(
    adjacency,
    seeds,
    *,
    damping: float = DEFAULT_DAMPING,
    tol: float = 1e-10,
    max_iter: int = 1000,
) -> np.ndarray:
    """Personalised PageRank for many seed sets at once (sparse power iteration).

    The walker follows an out-edge with probability ``damping`` (chosen in proportion to the
    edge weights) and restarts at the seed distribution otherwise; a node without out-edges
    (dangling) sends its mass back to the seeds, as ``networkx.pagerank(personalization=...)``
    does by default.

    Parameters
    ----------
    adjacency
        ``(n, n)`` scipy sparse matrix or array; entry ``[i, j]`` is the weight (>= 0) of the
        edge ``i -> j``.
    seeds
        ``(n,)`` or ``(n, k)`` non-negative restart weights, one column per seed set; each
        column is normalised to sum 1.
    damping
        Probability of following an edge, in ``[0, 1)``.
    tol
        Stop when every column's L1 change in one step is below ``tol``.
    max_iter
        Iteration limit.

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` (or ``(n,)`` for 1-D seeds) stationary distributions; each column sums 1.

    Raises
    ------
    ParameterError
        Negative weights or seeds, a seed set without weight, a shape mismatch, ``damping``
        outside ``[0, 1)``, or no convergence within ``max_iter``.
    """
    if not 0 <= damping < 1:
        raise ParameterError(f"damping={damping} is outside [0, 1); fix: use e.g. 0.5")
    matrix = sparse.csr_array(adjacency, dtype=np.float64)
    n = matrix.shape[0]
    restart = np.asarray(seeds, dtype=np.float64)
    one_dimensional = restart.ndim == 1
    restart = restart.reshape(n, -1) if restart.shape[0] == n else None
    if restart is None or matrix.shape != (n, n):
        raise ParameterError(
            f"seeds have shape {np.shape(seeds)} but adjacency is {matrix.shape}; fix: one seed "
            "row per node"
        )
    if (matrix.data < 0).any() or (restart < 0).any():
        raise ParameterError("negative edge weight or seed; fix: pass magnitudes (>= 0)")
    totals = restart.sum(axis=0)
    if (totals <= 0).any():
        empty = int(np.flatnonzero(totals <= 0)[0])
        raise ParameterError(f"seed set {empty} has no weight; fix: give it at least one seed")
    restart = restart / totals
    out_weight = np.asarray(matrix.sum(axis=1)).ravel()
    dangling = out_weight == 0
    # row-normalise, then take the transpose: columns of the iterate are distributions
    step = (
        sparse.diags_array(np.where(dangling, 0.0, 1.0 / np.maximum(out_weight, 1e-300))) @ matrix
    ).T.tocsr()
    scores = restart.copy()
    for _ in range(max_iter):
        lost = scores[dangling].sum(axis=0)  # dangling mass returns to the seeds
        updated = damping * (step @ scores + restart * lost) + (1 - damping) * restart
        change = np.abs(updated - scores).sum(axis=0).max()
        scores = updated
        if change < tol:
            return scores[:, 0] if one_dimensional else scores
    raise ParameterError(
        f"personalised PageRank did not converge in {max_iter} iterations (last L1 change "
        f"{change:.2e} > tol {tol}); fix: raise max_iter or tol"
    )


def _check_columns(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MissingKeyError(
            f"{what} lacks the column(s) {missing} (has {list(table.columns)}); fix: rename "
            "them, e.g. with the manifest's canonical names from omicstwin.io.load_table"
        )


def _signed_edges(signalling: pd.DataFrame) -> pd.DataFrame:
    """Signalling edges with complexes split into subunits: ``source, target, sign`` (+1/-1)."""
    _check_columns(signalling, ("source", "target", "sign"), "the signalling table")
    sign = np.sign(pd.to_numeric(signalling["sign"], errors="coerce"))
    if sign.isna().any() or (sign == 0).any():
        bad = signalling.loc[sign.isna() | (sign == 0), "sign"].iloc[0]
        raise ParameterError(
            f"signalling sign '{bad}' is not +1 or -1; fix: 1 for activation, -1 for inhibition"
        )
    edges = pd.DataFrame(
        {
            "source": signalling["source"].astype(str).map(split_complex),
            "target": signalling["target"].astype(str).map(split_complex),
            "sign": sign.astype(np.int8).to_numpy(),
        }
    )
    edges = edges.explode("source").explode("target")
    edges = edges[edges["source"] != edges["target"]]
    return edges.drop_duplicates().reset_index(drop=True)


def signed_lift(signalling: pd.DataFrame, nodes: Iterable[str] | None = None):
    """Build the signed lift of a signalling graph (see the module docstring).

    Parameters
    ----------
    signalling
        Columns ``source``, ``target``, ``sign`` (+1 activation, -1 inhibition); complexes
        ``A_B`` are split into subunits. A pair listed with both signs gets both lifted edges.
    nodes
        Node order (default: sorted nodes of the graph); extra nodes are isolated.

    Returns
    -------
    tuple[scipy.sparse.csr_array, pandas.Index]
        The ``(2n, 2n)`` adjacency (rows ``0..n-1`` the ``+`` copies, ``n..2n-1`` the ``-``
        copies, each edge weight 1) and the ``n`` node names.
    """
    edges = _signed_edges(signalling)
    graph_nodes = pd.unique(pd.concat([edges["source"], edges["target"]]))
    index = pd.Index(sorted(graph_nodes) if nodes is None else list(nodes))
    if nodes is not None and index.has_duplicates:
        raise ParameterError("node list has duplicates; fix: pass unique node names")
    edges = edges[edges["source"].isin(index) & edges["target"].isin(index)]
    n = len(index)
    src = index.get_indexer(edges["source"])
    dst = index.get_indexer(edges["target"])
    flip = (edges["sign"].to_numpy() < 0) * n  # inhibition crosses between the copies
    rows = np.concatenate([src, src + n])
    cols = np.concatenate([dst + flip, (dst + n - flip)])
    data = np.ones(len(rows))
    return sparse.csr_array((data, (rows, cols)), shape=(2 * n, 2 * n)), index


def _regulons(tf_targets: pd.DataFrame, tf_complexes: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    """TF -> target edges with signs; complex TFs stand for each subunit."""
    _check_columns(tf_targets, ("source", "target", "weight"), "the TF -> target table")
    weight = pd.to_numeric(tf_targets["weight"], errors="coerce")
    if weight.isna().any():
        raise ParameterError(
            "TF -> target weight has missing or non-numeric values; fix: +1/-1 (or signed "
            "magnitudes) in the 'weight' column"
        )
    regulons = pd.DataFrame(
        {
            "source": tf_targets["source"].astype(str),
            "target": tf_targets["target"].astype(str),
            "weight": weight.astype(float).to_numpy(),
        }
    )
    members = {name: list(genes) for name, genes in tf_complexes.items()}
    regulons["source"] = regulons["source"].map(lambda tf: members.get(tf, [tf]))
    regulons = regulons.explode("source")
    regulons = regulons[regulons["weight"] != 0]
    # one edge per (TF, target): a subunit that is also a TF on its own keeps the summed sign
    return regulons.groupby(["source", "target"], as_index=False, sort=True)["weight"].sum()


def _seed_sets_from_pairs(lr_pairs: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    """``{gene: {receptor subunit: weight}}`` per ligand subunit (or per receptor subunit)."""
    _check_columns(lr_pairs, ("ligand", "receptor"), "the ligand-receptor table")
    seed_sets: dict[str, dict[str, float]] = {}
    pairs = lr_pairs[["ligand", "receptor"]].dropna().astype(str).drop_duplicates()
    for ligand, receptor in pairs.itertuples(index=False):
        subunits = split_complex(receptor)
        if by == "receptor":  # each receptor subunit is its own seed set
            for unit in subunits:
                seed_sets[unit] = {unit: 1.0}
            continue
        for owner in split_complex(ligand):
            seeds = seed_sets.setdefault(owner, {})
            for unit in subunits:  # each pair weighs 1, shared by its receptor subunits
                seeds[unit] = seeds.get(unit, 0.0) + 1.0 / len(subunits)
    return dict(sorted(seed_sets.items()))


def _programmes(
    seed_sets: Mapping[str, Mapping[str, float]],
    signalling: pd.DataFrame,
    tf_targets: pd.DataFrame,
    *,
    damping: float,
    signal_quantile: float,
    max_targets: int | None,
    tf_complexes: Mapping[str, Iterable[str]],
) -> pd.DataFrame:
    """Signed PPR programmes for named seed sets: ``regulator, target, weight, sign``."""
    if not 0 <= signal_quantile < 1:
        raise ParameterError(f"signal_quantile={signal_quantile} is outside [0, 1)")
    if max_targets is not None and max_targets < 1:
        raise ParameterError(f"max_targets={max_targets}; fix: a positive count or None")
    adjacency, nodes = signed_lift(signalling)
    regulons = _regulons(tf_targets, tf_complexes)
    regulons = regulons[regulons["source"].isin(nodes)]
    targets = pd.Index(sorted(regulons["target"].unique()))
    n = len(nodes)
    tf_rows = nodes.get_indexer(regulons["source"])
    tgt_cols = targets.get_indexer(regulons["target"])
    magnitude = regulons["weight"].abs().to_numpy()
    positive = regulons["weight"].to_numpy() > 0
    activate = sparse.csr_array(
        (magnitude * positive, (tf_rows, tgt_cols)), shape=(n, len(targets))
    )
    repress = sparse.csr_array(
        (magnitude * ~positive, (tf_rows, tgt_cols)), shape=(n, len(targets))
    )
    usable = {
        name: {g: w for g, w in seeds.items() if g in nodes} for name, seeds in seed_sets.items()
    }
    names = [name for name, seeds in usable.items() if seeds]
    logger.info(
        "signalling prior: %d of %d seed sets reach the signalling graph (%d nodes)",
        len(names),
        len(usable),
        n,
    )
    frames = [
        _propagate_batch(
            names[start : start + _BATCH],
            usable,
            nodes,
            adjacency,
            activate,
            repress,
            targets,
            damping=damping,
            signal_quantile=signal_quantile,
            max_targets=max_targets,
        )
        for start in range(0, len(names), _BATCH)
    ]
    columns = {"regulator": str, "target": str, "weight": float, "sign": np.int8}
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    return pd.concat(frames, ignore_index=True).astype(columns)


def _propagate_batch(
    names, usable, nodes, adjacency, activate, repress, targets, **params
) -> pd.DataFrame:
    n = len(nodes)
    seeds = np.zeros((2 * n, len(names)))
    for column, name in enumerate(names):
        for gene, weight in usable[name].items():
            seeds[nodes.get_loc(gene), column] += weight  # the + copy: receptors are activated
    mass = personalised_pagerank(adjacency, seeds, damping=params["damping"])
    plus, minus = mass[:n], mass[n:]
    total = plus + minus
    if params["signal_quantile"] > 0:
        # NicheNet's ltf_cutoff: per seed set, zero the nodes below the quantile of all nodes
        cut = np.quantile(total, params["signal_quantile"], axis=0)
        keep = total >= cut
        plus, minus = plus * keep, minus * keep
    up = (activate.T @ plus + repress.T @ minus).T  # (batch, targets)
    down = (repress.T @ plus + activate.T @ minus).T
    return _top_targets(names, targets, up, down, params["max_targets"])


def _top_targets(names, targets, up, down, max_targets) -> pd.DataFrame:
    weight = up + down
    rows, cols = np.nonzero(weight > 0)
    table = pd.DataFrame(
        {
            "regulator": np.asarray(names, dtype=object)[rows],
            "target": targets.to_numpy()[cols],
            "weight": weight[rows, cols],
            "sign": np.where(up[rows, cols] >= down[rows, cols], 1, -1),
        }
    )
    table = table[table["regulator"] != table["target"]]
    table = table.sort_values(
        ["regulator", "weight", "target"], ascending=[True, False, True], kind="mergesort"
    )
    if max_targets is not None:
        table = table.groupby("regulator", sort=False).head(max_targets)
    return table.reset_index(drop=True)


def ligand_target_prior(
    lr_pairs: pd.DataFrame,
    signalling: pd.DataFrame,
    tf_targets: pd.DataFrame,
    *,
    damping: float = DEFAULT_DAMPING,
    signal_quantile: float = DEFAULT_SIGNAL_QUANTILE,
    max_targets: int | None = DEFAULT_MAX_TARGETS,
    tf_complexes: Mapping[str, Iterable[str]] = COLLECTRI_COMPLEXES,
) -> pd.DataFrame:
    """NicheNet-style ligand -> target regulatory potential, with a net sign.

    For each ligand gene (each subunit of a ligand complex), the seed set is the receptor
    subunits of all its ligand-receptor pairs (each pair weighs 1, shared equally by its
    subunits, and enters on the activated copy). Personalised PageRank through the signed lift
    of the signalling graph gives every node an activated mass ``m+`` and an inhibited mass
    ``m-``. As in NicheNet, per ligand the nodes whose total mass is below the
    ``signal_quantile`` quantile over all graph nodes are set to zero. Then, with the TF ->
    target weights split into activating ``A`` and repressing ``R`` magnitudes::

        up   = m+ A + m- R        down = m+ R + m- A
        weight = up + down        sign = +1 if up >= down else -1

    ``weight`` (>= 0) is the ligand's regulatory potential on the target, the NicheNet score on
    the unsigned graph (the lift lumps onto it); ``sign`` is the direction that carries the
    larger share of it. Per ligand only the ``max_targets`` highest-weight targets are kept
    (NicheNet's vignettes use the top 250; ties go to the target name). The ligand itself is
    never its own target. Ligands whose receptors are all outside the graph get no rows.

    Parameters
    ----------
    lr_pairs
        Columns ``ligand``, ``receptor`` (complexes joined with ``_``), e.g. LIANA's consensus.
    signalling
        Directed signalling edges: ``source``, ``target``, ``sign`` (+1/-1).
    tf_targets
        TF -> target edges ``source``, ``target``, ``weight`` (signed; CollecTRI is +1/-1).
    damping
        PageRank damping (probability of following an edge); NicheNet uses 0.5.
    signal_quantile
        Per ligand, node masses below this quantile over the graph's nodes are zeroed (NicheNet's
        ``ltf_cutoff`` 0.99); 0 keeps every node.
    max_targets
        Targets kept per ligand (None: all with positive weight).
    tf_complexes
        TF complex name -> subunits; the complex's regulon counts as each subunit's.

    Returns
    -------
    pandas.DataFrame
        ``ligand, target, weight, sign``, sorted by ligand then decreasing weight.
    """
    options = (damping, signal_quantile, max_targets, tf_complexes)
    return _pair_programmes(lr_pairs, "ligand", signalling, tf_targets, *options)


def receptor_target_prior(
    lr_pairs: pd.DataFrame,
    signalling: pd.DataFrame,
    tf_targets: pd.DataFrame,
    *,
    damping: float = DEFAULT_DAMPING,
    signal_quantile: float = DEFAULT_SIGNAL_QUANTILE,
    max_targets: int | None = DEFAULT_MAX_TARGETS,
    tf_complexes: Mapping[str, Iterable[str]] = COLLECTRI_COMPLEXES,
) -> pd.DataFrame:
    """Receptor -> target programmes: :func:`ligand_target_prior` seeded at each receptor gene.

    Every subunit of every receptor in ``lr_pairs`` is its own seed set (weight 1 on its
    activated copy); everything else, including the weighting and sparsification, is as in
    :func:`ligand_target_prior`.

    Parameters
    ----------
    lr_pairs
        Columns ``ligand``, ``receptor``; only the receptors are used.
    signalling
        Directed signalling edges: ``source``, ``target``, ``sign`` (+1/-1).
    tf_targets
        TF -> target edges ``source``, ``target``, ``weight``.
    damping
        PageRank damping.
    signal_quantile
        Per receptor, node masses below this quantile are zeroed.
    max_targets
        Targets kept per receptor (None: all).
    tf_complexes
        TF complex name -> subunits.

    Returns
    -------
    pandas.DataFrame
        ``receptor, target, weight, sign``.
    """
    options = (damping, signal_quantile, max_targets, tf_complexes)
    return _pair_programmes(lr_pairs, "receptor", signalling, tf_targets, *options)


def _pair_programmes(
    lr_pairs, role, signalling, tf_targets, damping, signal_quantile, max_targets, tf_complexes
) -> pd.DataFrame:
    """Programmes seeded at each ``role`` (``ligand`` or ``receptor``) of ``lr_pairs``.

    The ``regulator`` column of :func:`_programmes` is named after the role.
    """
    table = _programmes(
        _seed_sets_from_pairs(lr_pairs, role),
        signalling,
        tf_targets,
        damping=damping,
        signal_quantile=signal_quantile,
        max_targets=max_targets,
        tf_complexes=tf_complexes,
    )
    return table.rename(columns={"regulator": role})


def regulator_types(
    tfs: Iterable[str],
    lr_pairs: pd.DataFrame,
    kinases: Iterable[str],
    *,
    genes: Iterable[str] = (),
) -> pd.DataFrame:
    """One molecule type per gene: ``ligand``, ``tf``, ``receptor``, ``kinase`` or ``other``.

    Precedence, when a gene has several roles, is the order of :data:`REGULATOR_TYPES`:
    ``ligand`` first (so cytokines such as TNF stay ligands even where a resource also lists
    them as receptors), then ``tf`` (nuclear receptors that LIANA lists as receptors, e.g. for
    steroid ligands, act through their own curated regulon), then ``receptor`` (receptor
    tyrosine kinases such as EGFR act between cells as receptors), then ``kinase``. Ligand and
    cytokine are one type, as in Li et al. 2022's use of IPA's types.

    Parameters
    ----------
    tfs
        Transcription factors (e.g. Lambert et al. 2018).
    lr_pairs
        Columns ``ligand``, ``receptor``; complexes are split into their subunits.
    kinases
        Protein kinases.
    genes
        Further genes to include (typed ``other`` unless they have a role above).

    Returns
    -------
    pandas.DataFrame
        ``gene, regulator_type``, one row per gene, sorted by gene.
    """
    _check_columns(lr_pairs, ("ligand", "receptor"), "the ligand-receptor table")
    pairs = lr_pairs[["ligand", "receptor"]].dropna().astype(str)
    roles = {
        "ligand": {g for name in pairs["ligand"].unique() for g in split_complex(name)},
        "tf": {str(g) for g in tfs},
        "receptor": {g for name in pairs["receptor"].unique() for g in split_complex(name)},
        "kinase": {str(g) for g in kinases},
        "other": {str(g) for g in genes},
    }
    assigned: dict[str, str] = {}
    for kind in REGULATOR_TYPES:
        for gene in roles[kind]:
            assigned.setdefault(gene, kind)
    table = pd.DataFrame(sorted(assigned.items()), columns=["gene", "regulator_type"])
    return table.astype({"gene": str, "regulator_type": str})


def regulator_prior(
    tf_targets: pd.DataFrame,
    ligand_targets: pd.DataFrame,
    receptor_targets: pd.DataFrame,
    types: pd.DataFrame,
) -> pd.DataFrame:
    """One signed regulator -> target prior: TF regulons, ligand and receptor programmes.

    Each regulator contributes the edges of its own type only (one scale and one meaning per
    regulator): ligands their ligand programme, receptors their receptor programme, every other
    regulon source its regulon (typed as in ``types``, e.g. a CollecTRI cofactor that is not a
    Lambert TF stays ``other``; a name absent from ``types`` is taken as ``tf``). Regulon
    weights are kept as given (CollecTRI: +1/-1); a programme's weights are divided by that
    regulator's largest weight, so magnitudes lie in (0, 1] like a regulon's, and multiplied
    by the edge's sign.

    Parameters
    ----------
    tf_targets
        ``source, target, weight`` (signed).
    ligand_targets
        From :func:`ligand_target_prior`: ``ligand, target, weight, sign``.
    receptor_targets
        From :func:`receptor_target_prior`: ``receptor, target, weight, sign``.
    types
        From :func:`regulator_types`: ``gene, regulator_type``.

    Returns
    -------
    pandas.DataFrame
        ``source, target, weight, regulator_type`` (weight signed), sorted by source, target.
    """
    _check_columns(types, ("gene", "regulator_type"), "the regulator-type table")
    kind = dict(zip(types["gene"].astype(str), types["regulator_type"].astype(str), strict=True))
    _check_columns(tf_targets, ("source", "target", "weight"), "the TF -> target table")
    regulons = tf_targets[["source", "target", "weight"]].astype(
        {"source": str, "target": str, "weight": float}
    )
    regulon_type = regulons["source"].map(lambda g: kind.get(g, "tf"))
    keep = ~regulon_type.isin(["ligand", "receptor"])
    regulons = regulons[keep].assign(regulator_type=regulon_type[keep])
    parts = [regulons]
    for table, column, wanted in (
        (ligand_targets, "ligand", "ligand"),
        (receptor_targets, "receptor", "receptor"),
    ):
        _check_columns(table, (column, "target", "weight", "sign"), f"the {wanted} programme")
        rows = table[table[column].astype(str).map(kind.get) == wanted]
        scale = rows.groupby(column)["weight"].transform("max")
        parts.append(
            pd.DataFrame(
                {
                    "source": rows[column].astype(str),
                    "target": rows["target"].astype(str),
                    "weight": rows["weight"] / scale * np.sign(rows["sign"]),
                    "regulator_type": wanted,
                }
            )
        )
    prior = pd.concat(parts, ignore_index=True)
    prior = prior.sort_values(["source", "target"], kind="mergesort").reset_index(drop=True)
    return prior.astype({"source": str, "target": str, "weight": float, "regulator_type": str})
