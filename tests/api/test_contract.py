"""The API against its own OpenAPI schema: Schemathesis generates requests (valid and invalid) for
every operation and checks every answer: no server error, only documented status codes, content
types, headers and bodies that match the schema. In process, over WSGI, with a real key.

(Schemathesis' pytest plugin reads a node attribute pytest 9 removed, so this drives its
strategies with Hypothesis directly: the same checks, one test.)"""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from accounts import services as accounts
from tests.api.conftest import fast_user as make_user
from tests.factories import give_credits, submit_job

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def wsgi_app(db):
    # Like Django's test client: the request cycle must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


# A1111's txt2img and img2img answer once their job is done; no worker runs here, so a valid request
# would wait for STUDIO_A1111_WAIT_SECONDS and end in a 504. They get invalid requests only (their
# successes are tests/api/test_a1111.py's and tests/e2e/test_a1111_stack.py's), and a short wait in
# case one passes anyway.
WAITING_OPERATIONS = {"/sdapi/v1/txt2img", "/sdapi/v1/img2img"}


@override_settings(STUDIO_API_RATE_BURST=(0, 1), STUDIO_API_RATE_SUSTAINED=(0, 1), STUDIO_A1111_WAIT_SECONDS=1)
def test_every_operation_keeps_to_the_schema(wsgi_app):
    user = make_user()
    give_credits(user, 100)
    submit_job(user)  # so /generations answers with a job, checked against its schema too
    _, token = accounts.api_key_create(actor=user, name="contract", scopes=["generate", "read_images"])
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", wsgi_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/me", "/api/v1/balance", "/api/v1/usage", "/api/v1/generations"}
    seen_statuses = set()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not (operation.query or operation.body):
                continue  # nothing to get wrong but the path itself
            if mode is GenerationMode.POSITIVE and operation.path in WAITING_OPERATIONS:
                continue

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=5, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                # A schema cannot say everything a request must be (a picture that decodes, a size the
                # model can make, enough credits): a schema-valid request may still get a documented
                # 4xx problem. Every other check stays: no 5xx, documented statuses, valid bodies.
                response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                                                  excluded_checks=[positive_data_acceptance])
                seen_statuses.add(response.status_code)

            check()
    assert {200, 422} <= seen_statuses  # valid and invalid requests both got through
