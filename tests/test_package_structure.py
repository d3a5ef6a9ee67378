"""The public surface, in scanpy's manner (scanpy's tests/test_package_structure.py).

Every function exported by ``omicstwin.pp``, ``.tl``, ``.get`` and ``.pl`` takes its data object
first (positional), every option keyword-only, ``key_added: str | None`` where it stores, type
hints, and a numpy docstring with Parameters (naming every parameter) and Returns sections.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys

import pytest

API_MODULES = ("omicstwin.pp", "omicstwin.tl", "omicstwin.get", "omicstwin.pl")

#: a verb's other input tables/objects, which may follow the data object positionally (as
#: ``sc.tl.ingest(adata, adata_ref)``); everything else after the data object is keyword-only
INPUTS = {
    "lr_pairs",  # intercellular_edges(adata, lr_pairs)
    "prior",  # upstream_regulators(de, prior)
    "edges",  # fit_twin(adata, edges)
    "regulators",  # multicellular_network_model(de, regulators)
    "perturbations",  # target_screen(twin, perturbations), what_if(twin, perturbations)
    "design",  # patient_states(twin, design)
    "collections",  # prerank_contexts(de, collections), ora_top(ranking, collections)
    "rank_targets",  # enrichment(de, rank_targets, rank_disease_genes)
    "rank_disease_genes",
}

#: tl verbs that compute on an AnnData/MuData: each stores its result under key_added
STORES = {
    "differential_expression",
    "timecourse_de",
    "context_grns",
    "intercellular_edges",
    "temporal_edges",
    "fit_twin",
}


def _public():
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield pytest.param(module_name, name, getattr(module, name), id=f"{module_name}.{name}")


PUBLIC = list(_public())


def test_every_namespace_exports_its_verbs():
    by_module = {}
    for module_name, name, _ in (p.values for p in PUBLIC):
        by_module.setdefault(module_name, []).append(name)
    assert set(by_module) == set(API_MODULES)
    assert STORES <= set(by_module["omicstwin.tl"])
    assert {"de", "edges"} <= set(by_module["omicstwin.get"])
    for module_name, names in by_module.items():
        assert set(names) <= set(dir(importlib.import_module(module_name)))


@pytest.mark.parametrize(("module_name", "name", "func"), PUBLIC)
def test_data_first_then_keyword_only(module_name, name, func):
    assert inspect.isfunction(func), f"{module_name}.{name} is not a function"
    params = list(inspect.signature(func).parameters.values())
    assert params, f"{name} takes no data object"
    first, rest = params[0], params[1:]
    assert first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD, first.VAR_POSITIONAL)
    assert first.default is first.empty or name == "enrichment", f"{name}: data has a default"
    positional = [
        p.name for p in rest if p.kind is not p.KEYWORD_ONLY and p.kind is not p.VAR_KEYWORD
    ]
    assert set(positional) <= INPUTS, f"{name}: make {set(positional) - INPUTS} keyword-only"


@pytest.mark.parametrize(("module_name", "name", "func"), PUBLIC)
def test_key_added(module_name, name, func):
    params = inspect.signature(func).parameters
    if module_name == "omicstwin.tl" and name in STORES:
        assert "key_added" in params, f"{name} computes on the data but does not store"
    if "key_added" in params:
        assert params["key_added"].kind is params["key_added"].KEYWORD_ONLY
        annotation = str(params["key_added"].annotation).replace("Optional[str]", "str | None")
        assert annotation == "str | None", f"{name}: key_added: {annotation}"


@pytest.mark.parametrize(("module_name", "name", "func"), PUBLIC)
def test_type_hints(module_name, name, func):
    signature = inspect.signature(func)
    missing = [
        p.name
        for p in list(signature.parameters.values())[1:]
        if p.annotation is p.empty and p.kind is not p.VAR_KEYWORD
    ]
    assert not missing, f"{name}: parameters without a type hint: {missing}"


def _documented(docstring: str) -> set[str]:
    section = re.search(
        r"\n *Parameters\n *-+\n(.*?)(\n *\n *[A-Z][a-z]+\n *-+\n|\Z)", docstring, re.S
    )
    assert section, "no Parameters section"
    names = set()
    for line in section.group(1).splitlines():
        if re.match(r"^ {4}\S", line):
            names |= {n.strip().lstrip("*").split(" :")[0] for n in line.split(",")}
    return names


@pytest.mark.parametrize(("module_name", "name", "func"), PUBLIC)
def test_numpy_docstring(module_name, name, func):
    doc = inspect.getdoc(func) and func.__doc__
    assert doc, f"{name} has no docstring"
    assert re.search(r"\n *Returns\n *-+\n", doc), f"{name}: no Returns section"
    undocumented = set(inspect.signature(func).parameters) - _documented(doc)
    assert not undocumented, f"{name}: parameters not in the docstring: {undocumented}"


def test_import_loads_no_heavy_dependency():
    """``import omicstwin`` and the API namespaces load neither gseapy, dask nor matplotlib."""
    code = (
        "import sys, omicstwin; "
        "omicstwin.pp, omicstwin.tl, omicstwin.get, omicstwin.pl; "
        "[getattr(omicstwin.tl, n) for n in omicstwin.tl.__all__]; "
        "print(*(m in sys.modules for m in ('gseapy', 'dask', 'distributed', 'matplotlib')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 4


def test_pseudobulk_is_the_function_and_its_module_still_imports():
    import omicstwin.pp
    from omicstwin.pp.pseudobulk import PSEUDOBULK_OBS, pseudobulk

    assert omicstwin.pp.pseudobulk is pseudobulk
    assert "cell_type" in PSEUDOBULK_OBS
