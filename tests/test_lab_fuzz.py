"""The lab's API fuzzed from its own OpenAPI schema (schemathesis): no input may produce a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the lab's API")
from hypothesis import HealthCheck, settings  # noqa: E402

from schemathesis.python import asgi  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from unnoise.lab import LabConfig, create_app  # noqa: E402

# Small pictures keep a fuzzed 1000-step replay cheap; the limits under test are the real defaults.
app = create_app(LabConfig(image_size=24))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def client():
    """One in-process client for all examples (a fresh one per call costs more than the calls)."""
    with asgi.get_client(app) as c:
        yield c


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx(case, client):
    response = case.call(session=client)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.query}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], body
    # A schema cannot say "the bytes of a real image", so random bytes are schema-valid and rightly refused.
    excluded = [positive_data_acceptance] if case.path == "/api/images" else []
    case.validate_response(response, excluded_checks=excluded)
