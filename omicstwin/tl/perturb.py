"""Perturbations and their propagation through a network (pure kernels).

Expression lives in ``z = log1p(normalised expression)`` space. A perturbation multiplies the
(linear) expression of its genes by a factor: 0 for a knockout, ``1 - dose`` for a knockdown at
a dose in [0, 1], ``fold`` for an overexpression; combinations and drugs (sets of targets with
actions) clamp several genes at once. The clamped value is ``log1p(factor * expm1(z0))``.

**Update rule** (signal propagation as in CellOracle, Kamimoto et al. 2023): with ``W`` the
context's regulator -> target elasticities (change of a target's z per unit change of a
regulator's z), the shift ``delta`` starts as the clamp and is updated ``n_steps`` times::

    delta <- delta @ W;  delta[clamped] <- clamp;  delta <- max(delta, -z0)   (expression >= 0)

so after k steps every effect along paths of length <= k is included (CellOracle uses 3).
``n_steps=None`` iterates to the steady state, which exists when the spectral radius of ``W``
is below one (checked). Any gene can be perturbed; a gene that is not expressed in a context
(z0 = 0) has no effect there. All perturbations of a batch are propagated at once: ``delta`` is a
(perturbations x genes) matrix and each step is one sparse product, so memory is linear in
perturbations x genes, never in cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from omicstwin.errors import ParameterError

KINDS = ("knockout", "knockdown", "overexpression", "combination", "drug")
DEFAULT_STEPS = 3
_STEADY_MAX_ITER = 1000
_STEADY_TOL = 1e-10
_DIVERGED = 1e6  # a shift of e^1e6 in expression is no steady state
# Drug-target actions (Hetionet/DrugBank vocabulary) and the direction they move the target.
DOWN_ACTIONS = frozenset(
    {
        "inhibitor",
        "antagonist",
        "blocker",
        "inverse agonist",
        "negative modulator",
        "suppressor",
        "antibody",
        "inactivator",
        "downregulator",
        "partial antagonist",
    }
)
# Actions on a secreted ligand's (or a receptor's) protein, not on its mRNA: the drug takes the
# protein out of intercellular signalling (a neutralising antibody, a ligand trap) and leaves
# the gene's expression alone. Checked before DOWN_ACTIONS, so a "neutralizing antibody" blocks.
BLOCK_ACTIONS = frozenset(
    {"neutralizing antibody", "neutralising antibody", "blocking antibody", "ligand trap"}
)
UP_ACTIONS = frozenset(
    {
        "agonist",
        "activator",
        "inducer",
        "positive allosteric modulator",
        "potentiator",
        "stimulator",
        "partial agonist",
        "upregulator",
        "positive modulator",
    }
)


@dataclass(frozen=True)
class Perturbation:
    """A perturbation: genes and the factor by which each one's expression is multiplied.

    Attributes
    ----------
    perturbation_id
        Unique name (e.g. ``"KO:STAT6"``, ``"drug:DB01234"``).
    kind
        One of :data:`KINDS`.
    genes
        Perturbed genes.
    factors
        Multiplier of each gene's linear expression (0 = knockout).
    dose
        Knockdown dose or overexpression fold, for the record (1 for a knockout).
    meta
        Free annotations.
    blocks
        ``(gene, share)`` pairs: the share of the gene's protein activity left in intercellular
        signalling (0 = fully blocked; a ligand-blocking antibody), expression untouched.
    """

    perturbation_id: str
    kind: str
    genes: tuple[str, ...]
    factors: tuple[float, ...]
    dose: float = 1.0
    meta: Mapping[str, str] = field(default_factory=dict)
    blocks: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ParameterError(
                f"unknown perturbation kind '{self.kind}'; fix: use one of {KINDS}"
            )
        if len(self.genes) != len(self.factors) or not (self.genes or self.blocks):
            raise ParameterError(
                f"perturbation '{self.perturbation_id}' needs one factor per gene and >= 1 gene"
            )
        if any(not 0.0 <= share <= 1.0 for _, share in self.blocks):
            raise ParameterError(
                f"perturbation '{self.perturbation_id}' leaves a blocked share outside [0, 1]; "
                "fix: give the share of activity left, 0 = fully blocked"
            )
        if any(f < 0 or not np.isfinite(f) for f in self.factors):
            raise ParameterError(
                f"perturbation '{self.perturbation_id}' has a negative or non-finite factor; "
                "fix: factors multiply expression and must be >= 0"
            )


def knockout(gene: str) -> Perturbation:
    """Knock a gene out (expression 0)."""
    return Perturbation(f"KO:{gene}", "knockout", (gene,), (0.0,), 1.0)


def knockdown(gene: str, dose: float) -> Perturbation:
    """Knock a gene down by ``dose`` in [0, 1] (expression x (1 - dose))."""
    if not 0.0 <= dose <= 1.0:
        raise ParameterError(f"knockdown dose must be in [0, 1], got {dose}")
    return Perturbation(f"KD{dose:g}:{gene}", "knockdown", (gene,), (1.0 - dose,), dose)


def overexpression(gene: str, fold: float) -> Perturbation:
    """Overexpress a gene ``fold`` times (> 1)."""
    if not fold > 1.0:
        raise ParameterError(f"overexpression fold must be > 1, got {fold}")
    return Perturbation(f"OE{fold:g}:{gene}", "overexpression", (gene,), (fold,), fold)


def combination(*perturbations: Perturbation) -> Perturbation:
    """Apply several perturbations together (a gene named twice keeps its last factor)."""
    if len(perturbations) < 2:
        raise ParameterError("a combination needs at least two perturbations")
    factors: dict[str, float] = {}
    blocks: dict[str, float] = {}
    for p in perturbations:
        factors.update(zip(p.genes, p.factors, strict=True))
        for gene, share in p.blocks:  # two blocks of one gene leave the product of shares
            blocks[gene] = blocks.get(gene, 1.0) * share
    name = "+".join(p.perturbation_id for p in perturbations)
    return Perturbation(
        name,
        "combination",
        tuple(factors),
        tuple(factors.values()),
        1.0,
        blocks=tuple(blocks.items()),
    )


def drug(
    name: str, targets: Mapping[str, str], *, dose: float = 0.8, fold: float = 2.0
) -> Perturbation:
    """Make a drug: targets moved down (inhibitor-like), up (agonist-like) or blocked.

    Parameters
    ----------
    name
        Drug id (e.g. DrugBank id).
    targets
        ``{gene: action}``; actions in :data:`DOWN_ACTIONS` knock the gene down by ``dose``,
        actions in :data:`UP_ACTIONS` overexpress it ``fold`` times, actions in
        :data:`BLOCK_ACTIONS` leave ``1 - dose`` of its protein in signalling (its expression
        untouched); other or ambiguous actions (see :func:`action_direction`) are skipped.
    dose
        Knockdown dose of inhibited targets, in [0, 1].
    fold
        Overexpression fold of activated targets.
    """
    genes, factors, blocks = [], [], []
    for gene, action in sorted(targets.items()):
        direction = action_direction(action)
        if direction == "block":
            blocks.append((gene, 1.0 - dose))
        elif direction == "down":
            genes.append(gene)
            factors.append(1.0 - dose)
        elif direction == "up":
            genes.append(gene)
            factors.append(fold)
    if not genes and not blocks:
        raise ParameterError(
            f"drug '{name}' has no target with a known direction of action; fix: give actions "
            f"such as inhibitor/antagonist or agonist/activator"
        )
    return Perturbation(
        f"drug:{name}", "drug", tuple(genes), tuple(factors), dose, blocks=tuple(blocks)
    )


def blocking_antibody(gene: str, *, dose: float = 1.0, name: str | None = None) -> Perturbation:
    """Make a drug that blocks a ligand's (or receptor's) protein, e.g. an anti-IL13 antibody.

    ``1 - dose`` of the protein's activity is left in intercellular signalling; the gene's
    expression is untouched.
    """
    if not 0.0 <= dose <= 1.0:
        raise ParameterError(f"blocking dose must be in [0, 1], got {dose}")
    return Perturbation(
        f"drug:{name or 'anti-' + gene}", "drug", (), (), dose, blocks=((gene, 1.0 - dose),)
    )


def action_direction(action: str) -> str | None:
    """Return ``"down"``, ``"up"``, ``"block"`` or None for an action (``|``-joined lists).

    A list gives its one direction or None: ``inhibitor|substrate`` is down (a substrate has
    no direction), ``inducer|inhibitor`` is ambiguous and gives None. ``neutralizing
    antibody`` (:data:`BLOCK_ACTIONS`) blocks the protein in signalling, expression untouched.
    """
    found = set()
    for part in str(action).lower().split("|"):
        part = part.strip()
        if part in BLOCK_ACTIONS:
            found.add("block")
        elif part in DOWN_ACTIONS:
            found.add("down")
        elif part in UP_ACTIONS:
            found.add("up")
    return found.pop() if len(found) == 1 else None


def drugs_from_table(
    binding: pd.DataFrame, *, dose: float = 0.8, fold: float = 2.0
) -> list[Perturbation]:
    """Drugs from a drug -> target table with columns ``drug_id``, ``gene``, ``action``.

    Rows whose action has no known direction are ignored; drugs with none left are dropped.
    """
    out = []
    for drug_id, rows in binding.groupby("drug_id", sort=True):
        targets = dict(zip(rows["gene"], rows["action"].fillna(""), strict=True))
        try:
            out.append(drug(str(drug_id), targets, dose=dose, fold=fold))
        except ParameterError:
            continue
    return out


def clamp_matrix(
    perturbations: Sequence[Perturbation], genes: Sequence[str], z0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Clamp mask and clamped shifts (perturbations x genes) for a baseline ``z0`` (genes,).

    Raises
    ------
    ParameterError
        A perturbed gene is not among ``genes`` (unknown gene).
    """
    index = {g: i for i, g in enumerate(genes)}
    mask = np.zeros((len(perturbations), len(genes)), bool)
    shift = np.zeros((len(perturbations), len(genes)))
    for row, p in enumerate(perturbations):
        for gene, factor in zip(p.genes, p.factors, strict=True):
            j = index.get(gene)
            if j is None:
                raise ParameterError(
                    f"perturbation '{p.perturbation_id}' names the unknown gene '{gene}'; fix: "
                    "use a gene of the twin (its var_names)"
                )
            mask[row, j] = True
            shift[row, j] = np.log1p(factor * np.expm1(z0[j])) - z0[j]
    return mask, shift


def propagate(
    z0: np.ndarray,
    weights: sparse.spmatrix | np.ndarray,
    mask: np.ndarray,
    shift: np.ndarray,
    *,
    extra: np.ndarray | None = None,
    n_steps: int | None = DEFAULT_STEPS,
) -> np.ndarray:
    """Propagate clamped shifts through a network (see the module docstring).

    Parameters
    ----------
    z0
        Baseline (genes,) or one baseline per perturbation (P, genes).
    weights
        Elasticities, regulators (rows) x targets (columns).
    mask, shift
        Clamped genes and their shifts, (P, genes) (from :func:`clamp_matrix`).
    extra
        Unclamped input shifts (P, genes) held fixed at every step, e.g. a receptor's change
        from intercellular signalling or a carry-over from the previous time point.
    n_steps
        Number of propagation steps; ``None`` for the steady state.

    Returns
    -------
    numpy.ndarray
        Shift ``delta`` (P, genes); the perturbed state is ``z0 + delta`` (>= 0).
    """
    # work on the transposed shift (genes x perturbations, C order): W^T @ D is then one sparse
    # product with no layout copy, and clamps are written by fancy indexing, not full passes
    w_t = sparse.csr_matrix(weights).T.tocsr()
    rows, cols = np.nonzero(mask)
    values = shift[rows, cols]
    z0 = np.asarray(z0, float)
    floor = -(z0[:, None] if z0.ndim == 1 else z0.T)
    extra_t = None if extra is None else np.ascontiguousarray(extra.T)
    delta = np.zeros((shift.shape[1], shift.shape[0])) if extra_t is None else extra_t.copy()
    delta[cols, rows] = values
    steps = _STEADY_MAX_ITER if n_steps is None else n_steps
    for _ in range(steps):
        new = w_t @ delta
        if extra_t is not None:
            new += extra_t
        np.maximum(new, floor, out=new)
        new[cols, rows] = values
        if n_steps is None:
            if np.max(np.abs(new), initial=0.0) > _DIVERGED:
                break  # growing without bound: no steady state
            if np.max(np.abs(new - delta), initial=0.0) < _STEADY_TOL:
                return new.T
        delta = new
    if n_steps is None:
        raise ParameterError(
            "propagation did not reach a steady state (the network's gain is >= 1); fix: use a "
            "fixed number of steps (n_steps=3, as CellOracle) or shrink the weights"
        )
    return delta.T


def single_gene_perturbations(
    genes: Iterable[str], *, kind: str = "knockout", dose: float = 1.0, fold: float = 2.0
) -> list[Perturbation]:
    """One perturbation per gene: knockouts, knockdowns at ``dose`` or overexpressions."""
    if kind == "knockout":
        return [knockout(g) for g in genes]
    if kind == "knockdown":
        return [knockdown(g, dose) for g in genes]
    if kind == "overexpression":
        return [overexpression(g, fold) for g in genes]
    raise ParameterError(f"single-gene screens take knockout/knockdown/overexpression, not {kind}")
