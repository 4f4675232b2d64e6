"""schemathesis against the served app's own /openapi.json: generated requests for every
operation, valid and invalid, over a real socket to `assistant serve` (gunicorn) and a real
PostgreSQL, with keys on: each case carries a secret key, and schemathesis's `ignored_auth`
check sends it again without one and with a wrong one, expecting 401.

The cases are drawn with hypothesis from schemathesis's per-operation strategies, because its
pytest integration for schemas loaded from a fixture does not run under pytest 9.2.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import ChecksConfig, SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import running_api

# Per operation and mode; an operation with few distinct inputs (GET /health) ends early.
MAX_EXAMPLES = 150
MIN_CASES = 1000
KEY = {"X-API-Key": "sk-fuzz-0123456789abcdef"}
cases: Counter[str] = Counter()
# (operation, status): keyed operations must have answered, not only refused the key.
statuses: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def served(embedded_server, tmp_path_factory):
    # No rate limits: every generated case must reach the handlers, not stop at 429; nor a
    # limit on failed keys, which ignored_auth's probes without a valid key would soon reach.
    directory = tmp_path_factory.mktemp("fuzz")
    limits = {"RATE_LIMIT": "", "STATS_RATE_LIMIT": "", "AUTH_FAILURE_LIMIT": ""}
    with running_api(
        embedded_server.get_uri(), directory, API_KEYS=KEY["X-API-Key"], **limits
    ) as api:
        yield api


@pytest.fixture(scope="module")
def api_schema(served):
    # gunicorn refuses a request line over 4 KiB with 414 before the app sees it (/stats
    # documents it): an invalid case with many `since` values is refused that way, rightly.
    # schemathesis's own defaults, read from its public config, plus that 414.
    refused = [*ChecksConfig().negative_data_rejection.expected_statuses, "414"]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": refused}}}
    )
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json", config=config, headers=KEY)


def _fuzz(operation, mode: GenerationMode, base_url: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case):
        # A valid case carries the valid key. An invalid one may leave the key out (the schema
        # requires it): it goes without, to be refused with 401; a key it has (a random string
        # in the header) becomes the valid one, so the other invalid parts reach the handlers.
        keyed = mode is GenerationMode.POSITIVE or "X-API-Key" in (case.headers or {})
        if keyed:
            case.headers = {**(case.headers or {}), **KEY}
        response = case.call(base_url=base_url, timeout=30)
        cases[operation.label] += 1
        statuses[operation.label, response.status_code] += 1
        assert response.status_code < 500, f"{operation.label}: {response.text[:500]}"
        # Every other check runs. This one expects 2xx for any schema-valid body, but the schema
        # cannot say "no NUL" or "not blank once stripped" without regexes a 64 KiB body would
        # make slow; those refusals are 400s by design (tests/test_api.py, test_hostile.py).
        case.validate_response(
            response,
            headers=KEY if keyed else None,
            excluded_checks=[positive_data_acceptance],
        )

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_get_a_server_error(api_schema, served, mode):
    for result in api_schema.get_all_operations():
        operation = result.ok()
        try:
            _fuzz(operation, mode, served.url)
        except Unsatisfiable:
            # No invalid request exists for an operation without inputs (GET /health) or whose
            # only input is a string in the path (GET /conversations/{id}): any text is valid.
            if mode is not GenerationMode.NEGATIVE:
                raise


def test_every_operation_was_fuzzed_with_enough_cases(api_schema):
    operations = {result.ok().label for result in api_schema.get_all_operations()}
    print(f"{sum(cases.values())} generated cases: {dict(cases)}")
    assert set(cases) == operations, f"not fuzzed: {operations - set(cases)}"
    assert sum(cases.values()) >= MIN_CASES, dict(cases)
    answered = {label for label, status in statuses if status == 200}
    # Generated conversation ids name no conversation: those two answer 404.
    unknown = {"GET /conversations/{conversation_id}", "POST /feedback"}
    assert answered >= operations - unknown, dict(statuses)
    assert statuses["POST /question", 401] > 0, "no case went without its key"
