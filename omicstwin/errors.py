"""Exceptions and warnings raised by omicstwin.

Every exception is a subclass of :class:`ValueError` or :class:`TypeError` (so generic handlers
keep working) and of :class:`OmicstwinError` (so the CLI can print it as one line). Messages say
what is wrong and how to fix it.
"""

from __future__ import annotations


class OmicstwinError(Exception):
    """Base class of every error omicstwin raises on purpose."""


class DataFileError(OmicstwinError, ValueError):
    """The input file is missing, unreadable, or not h5ad/h5mu."""


class ModalityError(OmicstwinError, ValueError):
    """A MuData object lacks the required ``rna`` modality or a modality is inconsistent."""


class MissingKeyError(OmicstwinError, ValueError):
    """A configured obs column (cell type, time, condition, donor) or layer is absent."""


class CountsError(OmicstwinError, ValueError):
    """The matrix used as raw counts holds negative, non-finite or non-integer values."""


class DuplicateNamesError(OmicstwinError, ValueError):
    """Gene or cell names are not unique."""


class ConditionError(OmicstwinError, ValueError):
    """Case or control label absent, only one condition present, or donors span both arms."""


class TimeOrderError(OmicstwinError, ValueError):
    """The time column cannot be put in order."""


class EmptyDataError(OmicstwinError, ValueError):
    """The data has no cells or no genes (after selecting the case and control arms)."""


class InputTypeError(OmicstwinError, TypeError):
    """An argument has the wrong type (e.g. not an AnnData or MuData object)."""


class ParameterError(OmicstwinError, ValueError):
    """A parameter value is out of range or inconsistent with the others."""


class ManifestError(OmicstwinError, ValueError):
    """A data manifest is malformed or names an unknown resource."""


class ResourceNotFoundError(ManifestError):
    """A manifest resource is neither on the offline search path nor downloadable."""


class ChecksumError(ManifestError):
    """A resource file does not match the sha256 recorded in its manifest."""


class OptionalDependencyError(OmicstwinError, ValueError, ImportError):
    """An optional dependency is not installed (the message gives the install command).

    Also an :class:`ImportError`, so ``except ImportError`` around optional features works.
    """


class ParallelError(OmicstwinError, ValueError):
    """Too many work units failed, or a dask scheduler / cluster could not be used."""


class ClusterDependencyError(ParallelError, OptionalDependencyError):
    """A cluster profile needs ``dask-jobqueue``, which is not installed."""


class OmicstwinWarning(UserWarning):
    """Base class of omicstwin warnings."""


class InsufficientReplicationWarning(OmicstwinWarning):
    """A cell type x time group has fewer than the required donors per arm and is skipped."""
