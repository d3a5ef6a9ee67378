import subprocess
import sys
from importlib.metadata import version

import omicstwin


def test_version_from_metadata():
    assert omicstwin.__version__ == version("omicstwin")


def test_import_is_lean():
    code = (
        "import sys, omicstwin, omicstwin.cli; "
        "print('anndata' in sys.modules, 'scanpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_library_does_not_configure_logging():
    code = (
        "import logging, omicstwin.io.validate, omicstwin.io.manifests, omicstwin.datasets; "
        "print(logging.getLogger('omicstwin').handlers, logging.getLogger().handlers)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"
