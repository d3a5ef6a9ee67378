import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import yaml

from omicstwin import errors
from omicstwin.io import manifests
from omicstwin.io.manifests import Resource, load_manifests, resolve

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_manifests_validate_and_cover_every_shared_file():
    resources = load_manifests()
    listed = {f"{r.root}/{f.path}": f.sha256 for r in resources.values() for f in r.files}
    sums = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        sums[path.strip()] = digest
    assert set(sums) <= set(listed)  # every shared file has a manifest entry
    assert all(listed[p] == sums[p] for p in sums)
    for resource in resources.values():
        assert resource.licence and resource.version and resource.source
        assert all(f.url or resource.obtain for f in resource.files), resource.name


def test_committed_json_schema_is_current():
    committed = (manifests.manifest_dir() / manifests.SCHEMA_FILE).read_text()
    assert committed == manifests.json_schema()


def test_resolves_and_loads_with_canonical_columns():
    collectri = manifests.load_table("collectri")
    assert {"source", "target", "weight"} <= set(collectri.columns) and len(collectri) == 43178
    genes = manifests.load_table("hetionet_disease_gene")
    assert {"disease_id", "gene"} <= set(genes.columns)
    assert (genes["disease_id"] == "DOID:4481").sum() == 34  # allergic rhinitis
    assert len(manifests.load_gene_list("lambert2018_tfs")) == 1639
    assert len(manifests.load_gene_sets("msigdb_hallmark")) == 50
    path = resolve("beeline_simulated", "inputs/Simulated/HSC/HSC_2000_0/refNetwork.csv")
    assert path.name == "refNetwork.csv"


def test_multi_file_resource_needs_a_file_name():
    with pytest.raises(errors.ManifestError, match=r"has \d+ files; fix: name one"):
        resolve("beeline_simulated")
    with pytest.raises(errors.ManifestError, match=r"no file 'nope\.csv'"):
        resolve("beeline_simulated", "nope.csv")


def test_unknown_resource_lists_known_ones():
    with pytest.raises(errors.ManifestError, match=r"unknown data resource 'kegg'.*collectri"):
        manifests.get_resource("kegg")


def _resource(tmp_path, content: bytes, url=None) -> Resource:
    return Resource(
        name="toy",
        title="toy",
        version="1",
        licence="CC0",
        source="test",
        source_url="https://example.org",
        format="txt",
        root="toys",
        files=[{"path": "toy.txt", "sha256": hashlib.sha256(content).hexdigest(), "url": url}],
    )


def test_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "toys").mkdir()
    (tmp_path / "toys" / "toy.txt").write_bytes(b"tampered")
    monkeypatch.setenv("OMICSTWIN_DATA_PATH", str(tmp_path))
    with pytest.raises(errors.ChecksumError, match="expects"):
        resolve(_resource(tmp_path, b"original"))


def test_offline_missing_file_names_the_search_path(tmp_path, monkeypatch):
    monkeypatch.setenv("OMICSTWIN_DATA_PATH", str(tmp_path))
    with pytest.raises(errors.ResourceNotFoundError, match=r"toys/toy.txt.*OMICSTWIN_OFFLINE"):
        resolve(_resource(tmp_path, b"x", url="http://127.0.0.1:9/toy.txt"))


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_to_cache_verifies_checksum(tmp_path, monkeypatch, http_server):
    root, base = http_server
    (root / "toy.txt").write_bytes(b"payload")
    monkeypatch.setenv("OMICSTWIN_DATA_PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("OMICSTWIN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OMICSTWIN_OFFLINE")
    path = resolve(_resource(tmp_path, b"payload", url=f"{base}/toy.txt"))
    assert path == tmp_path / "cache" / "toys" / "toy.txt" and path.read_bytes() == b"payload"
    # a changed source is refused and leaves nothing behind
    bad = _resource(tmp_path, b"other", url=f"{base}/toy.txt")
    bad.files[0].path = "other.txt"
    with pytest.raises(errors.ChecksumError, match="nothing was kept"):
        resolve(bad)
    assert sorted(p.name for p in (tmp_path / "cache" / "toys").iterdir()) == ["toy.txt"]


def test_malformed_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"schema_version": 1, "family": "x"}))
    with pytest.raises(errors.ManifestError, match=r"bad.yaml.*resources"):
        load_manifests(tmp_path)


def test_round2_tables_load_with_documented_shapes():
    signalling = manifests.load_table("omnipath_signalling")
    assert list(signalling.columns) == ["source", "weight", "target"] and len(signalling) == 19830
    assert signalling["weight"].value_counts().to_dict() == {1: 14233, -1: 5597}
    progeny = manifests.load_table("progeny_human_top100")
    assert list(progeny.columns) == ["pathway", "gene", "weight"] and len(progeny) == 1400
    assert progeny.groupby("pathway").size().eq(100).all() and progeny["pathway"].nunique() == 14


def test_na_values_keep_literal_na_aliases():
    aliases = manifests.load_table("hgnc_symbol_aliases")
    assert len(aliases) == 60367 and aliases["alias"].notna().all()
    assert aliases.set_index("alias").loc[["NA", "NaN"], "gene"].tolist() == ["XK", "SCN11A"]


def test_academic_only_resources_say_so_in_their_licence():
    resources = load_manifests()
    flagged = {name for name, r in resources.items() if r.academic_only}
    assert {"omnipath_signalling", "nichenet_v1_2018_sig_network"} <= flagged
    assert "progeny_human_top100" not in flagged and "collectri" not in flagged
    assert all(resources[name].licence.startswith("academic use only") for name in flagged)


def test_non_table_formats_are_refused_by_load_table():
    with pytest.raises(errors.ManifestError, match=r"is rda, not a table.*resolve"):
        manifests.load_table("nichenet_v1_2018_lr_network")
