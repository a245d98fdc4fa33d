"""The lab's API fuzzed from its own OpenAPI schema (schemathesis): no input may produce a 5xx.

Every route in the schema is fuzzed as it comes (new routes join by themselves).  The streams that
need a model are fuzzed a second time against a lab with two tiny real models behind them, so the
fuzzer reaches the sampling code too, not only the "no model" 404.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis to fuzz the lab's API")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.python import asgi  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
from test_lab_learned import tiny_model_dirs  # noqa: E402

from unnoise.lab import LabConfig, create_app  # noqa: E402
from unnoise.lab.learned import PainterFactory  # noqa: E402

# Small pictures keep a fuzzed 1000-step replay cheap; the limits under test are the real defaults.
app = create_app(LabConfig(image_size=24))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


# The model-backed streams, with tiny models and fewer steps allowed (every example paints for real).
_models = tempfile.TemporaryDirectory(prefix="unnoise-fuzz-")


class _Dirs:
    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=_models.name))


learned_app = create_app(LabConfig(image_size=24, max_steps=12, max_sweep_steps=3),
                         generate=PainterFactory(tiny_model_dirs(_Dirs())))
learned_schema = schemathesis.openapi.from_asgi("/openapi.json", learned_app).include(
    path_regex="^/api/(generate|img2img|guidance|spacings/run|paint)$")


@pytest.fixture(scope="module")
def client():
    """One in-process client for all examples (a fresh one per call costs more than the calls)."""
    with asgi.get_client(app) as c:
        yield c


@pytest.fixture(scope="module")
def learned_client():
    with asgi.get_client(learned_app) as c:
        yield c


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_5xx(case, client):
    check(case, client)


@learned_schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_to_a_model_gets_a_5xx(case, learned_client):
    response = check(case, learned_client)
    # A run that started must never fail midway.  (This in-process client may hang up before `done`:
    # the server then stops the run, as for any page that leaves, so the end of the stream is not checked.)
    assert "event: error" not in response.text


def check(case, client):
    response = case.call(session=client)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.query}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], body
    # A schema cannot say "the bytes of a real image", so random bytes are schema-valid and rightly refused;
    # nor "the chosen model's C·H·W start-noise values", so a random noise list is too.
    excluded = [positive_data_acceptance] if case.path in ("/api/images", "/api/paint") else []
    case.validate_response(response, excluded_checks=excluded)
    return response
