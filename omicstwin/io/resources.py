"""Ready-made tables from the manifest resources (checked and resolved through manifests)."""

from __future__ import annotations

import pandas as pd

from omicstwin.io.manifests import load_table


def drug_target_table() -> pd.DataFrame:
    """Drug -> target gene table with actions, from Hetionet's compound-gene binding edges.

    Entrez ids are mapped to gene symbols and DrugBank ids to drug names with Hetionet's node
    table. ``action`` keeps Hetionet's vocabulary (``|``-joined when a source lists several);
    :func:`omicstwin.tl.perturb.drug` decides the direction. Rows keep their ``license``
    column: DrugBank-derived rows are CC BY-NC 4.0.

    Returns
    -------
    pandas.DataFrame
        drug_id, drug_name, gene, action, license.
    """
    binding = load_table("hetionet_compound_gene_binding")
    nodes = load_table("hetionet_nodes")
    genes = nodes[nodes["kind"] == "Gene"]
    symbol = dict(zip(genes["id"].str.removeprefix("Gene::"), genes["name"], strict=True))
    compounds = nodes[nodes["kind"] == "Compound"]
    names = dict(
        zip(compounds["id"].str.removeprefix("Compound::"), compounds["name"], strict=True)
    )
    table = pd.DataFrame(
        {
            "drug_id": binding["drug_id"].astype(str),
            "drug_name": binding["drug_id"].astype(str).map(names).fillna(binding["drug_id"]),
            "gene": binding["entrez_id"].astype(str).map(symbol),
            "action": binding["action"].fillna("").astype(str),
            "license": binding["license"].fillna("").astype(str),
        }
    )
    return table.dropna(subset=["gene"]).reset_index(drop=True)
