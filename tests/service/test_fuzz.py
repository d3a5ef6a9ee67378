"""Property-based fuzzing of the OpenAPI document (schemathesis): no request gives a 5xx.

The schema is loaded at import (schemathesis needs it to generate the test cases), from an app
over a small fabricated study in a temporary SQLite file.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from omicstwin.service import create_app
from omicstwin.store.access import create_key
from omicstwin.store.db import make_engine
from omicstwin.store.publish import publish_run
from tests.service.conftest import fabricate_run

_TMP = Path(tempfile.mkdtemp(prefix="omicstwin-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
_URL = f"sqlite:///{_TMP / 'fuzz.db'}"
publish_run(fabricate_run(_TMP / "study_a"), _URL)
_engine = make_engine(_URL)
ADMIN_KEY = create_key(_engine, name="fuzzer", role="admin")
_engine.dispose()

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_URL))


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors(case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN_KEY}"}, checks=[not_a_server_error]
    )
