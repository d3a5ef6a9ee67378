import anndata as ad
import mudata as md
import numpy as np
import pytest

from omicstwin import errors
from omicstwin.io import read_data, rna_modality, validate_cohort
from tests.conftest import TINY_KEYS, make_tiny


def test_reads_h5ad(tmp_path):
    path = tmp_path / "x.h5ad"
    make_tiny().write_h5ad(path)
    assert read_data(path).shape == (48, 8)


def test_missing_and_wrong_files(tmp_path):
    with pytest.raises(errors.DataFileError, match="not found"):
        read_data(tmp_path / "absent.h5ad")
    csv = tmp_path / "counts.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(errors.DataFileError, match=r"not an \.h5ad or \.h5mu.*'\.csv'"):
        read_data(csv)
    fake = tmp_path / "fake.h5ad"
    fake.write_text("not hdf5")
    with pytest.raises(errors.DataFileError, match="not an HDF5 file"):
        read_data(fake)
    with pytest.raises(errors.DataFileError, match="directory"):
        read_data(tmp_path)


def _mudata(rna_name="rna"):
    rna = make_tiny()
    prot = ad.AnnData(
        X=np.random.default_rng(0).poisson(5, size=(rna.n_obs, 3)).astype(np.float32),
        obs=rna.obs[[]].copy(),
    )
    prot.var_names = ["CD3", "CD14", "CD19"]
    return md.MuData({rna_name: rna, "prot": prot})


def test_reads_h5mu_and_validates_rna_modality(tmp_path):
    path = tmp_path / "x.h5mu"
    _mudata().write(path)
    data = read_data(path)
    assert rna_modality(data).shape == (48, 8)
    summary = validate_cohort(data, **TINY_KEYS)
    assert summary.modalities == {"rna": (48, 8), "prot": (48, 3)}


def test_keys_from_global_mudata_obs(tmp_path):
    mdata = _mudata()
    mdata.obs["celltype_global"] = mdata.mod["rna"].obs["celltype"].to_numpy()
    summary = validate_cohort(mdata, **(TINY_KEYS | {"cell_type_key": "celltype_global"}))
    assert summary.cell_types == ["Mono", "T"]


def test_h5mu_without_rna(tmp_path):
    path = tmp_path / "x.h5mu"
    _mudata("gex").write(path)
    with pytest.raises(errors.ModalityError, match=r"\['gex', 'prot'\].*mdata.mod\['rna'\]"):
        read_data(path)


def test_wrong_object_type():
    with pytest.raises(errors.InputTypeError, match="AnnData or MuData"):
        rna_modality(np.zeros((2, 2)))
