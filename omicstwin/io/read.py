"""Reading AnnData (h5ad) and MuData (h5mu) files, and getting at the RNA modality."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omicstwin.errors import DataFileError, InputTypeError, ModalityError

if TYPE_CHECKING:
    import anndata as ad
    import mudata as md

SUPPORTED_SUFFIXES = (".h5ad", ".h5mu")
RNA_MODALITY = "rna"
OPTIONAL_MODALITIES = ("atac", "prot")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_data(path: str | Path, *, backed: bool = False) -> ad.AnnData | md.MuData:
    """Read an h5ad (AnnData) or h5mu (MuData) file.

    Parameters
    ----------
    path
        File ending in ``.h5ad`` or ``.h5mu``.
    backed
        Open an h5ad read-only with ``X`` left on disk (``anndata.read_h5ad(path,
        backed="r")``): obs, var, uns and layers are read, the counts are read in chunks by
        whoever needs them. Ignored for h5mu (read whole).

    Returns
    -------
    AnnData or MuData
        The object as stored; MuData must hold an ``rna`` modality.

    Raises
    ------
    DataFileError
        The file is missing, has another format, or cannot be parsed.
    ModalityError
        A MuData file has no ``rna`` modality.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(
            f"data file '{path}' not found; fix: check the path (working directory is "
            f"'{Path.cwd()}')"
        )
    if path.is_dir():
        raise DataFileError(
            f"'{path}' is a directory, not a data file; fix: pass the .h5ad or .h5mu file inside it"
        )
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataFileError(
            f"'{path.name}' is not an .h5ad or .h5mu file (suffix '{suffix or 'none'}'); fix: "
            "convert it to AnnData, e.g. adata = scanpy.read_10x_h5(...) or scanpy.read_csv(...), "
            "then adata.write_h5ad('data.h5ad')"
        )
    if not _is_hdf5(path):
        raise DataFileError(
            f"'{path.name}' has a {suffix} suffix but is not an HDF5 file (corrupt or "
            "mislabelled); fix: re-export it with adata.write_h5ad / mdata.write"
        )
    try:
        if suffix == ".h5ad":
            import anndata as ad

            return ad.read_h5ad(path, backed="r") if backed else ad.read_h5ad(path)
        import mudata as md

        data = md.read_h5mu(path)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataFileError(
            f"'{path.name}' could not be read as {suffix} ({type(exc).__name__}: {exc}); fix: "
            "re-export it with the current anndata/mudata"
        ) from exc
    rna_modality(data)  # fail at the door when the RNA modality is missing
    return data


def h5ad_n_obs(path: str | Path) -> int | None:
    """Cells in an h5ad file, read from its obs index without loading anything else.

    Returns None when the file is not an h5ad that can be peeked (the caller reads it whole).
    """
    path = Path(path)
    if path.suffix.lower() != ".h5ad" or not path.is_file() or not _is_hdf5(path):
        return None
    import h5py

    try:
        with h5py.File(path, "r") as f:
            obs = f["obs"]
            index = obs.attrs.get("_index", "_index")
            return int(obs[index].shape[0])
    except (OSError, KeyError, TypeError):
        return None


def _is_hdf5(path: Path) -> bool:
    """HDF5 signature at offset 0 or after a user block (512, 1024, ... bytes; h5mu uses one)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            if handle.read(8) == _HDF5_MAGIC:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def is_mudata(data: Any) -> bool:
    """Return whether ``data`` is a MuData object (without importing mudata needlessly)."""
    return type(data).__name__ == "MuData" and hasattr(data, "mod")


def rna_modality(data: Any) -> ad.AnnData:
    """Return the RNA AnnData of an AnnData or MuData object.

    Parameters
    ----------
    data
        AnnData, or MuData with an ``rna`` modality.

    Raises
    ------
    ModalityError
        MuData without an ``rna`` modality.
    InputTypeError
        Neither AnnData nor MuData.
    """
    if is_mudata(data):
        if RNA_MODALITY not in data.mod:
            present = sorted(data.mod)
            hint = f"mdata.mod['rna'] = mdata.mod.pop('{present[0]}')" if present else "add one"
            raise ModalityError(
                f"MuData has modalities {present} but no 'rna' modality, which omicstwin requires; "
                f"fix: name the gene expression modality 'rna' ({hint})"
            )
        return data.mod[RNA_MODALITY]
    if type(data).__name__ == "AnnData":
        return data
    raise InputTypeError(
        f"expected an AnnData or MuData object, got {type(data).__name__}; fix: load the data "
        "with omicstwin.io.read_data(path) or anndata.read_h5ad(path)"
    )
