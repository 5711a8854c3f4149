"""Property-based fuzzing of every API operation from our own OpenAPI document: whatever the
input, the answer is never a server error (a 5xx would mean an unhandled case or a leak)."""

from __future__ import annotations

from typing import Any

import schemathesis
from api_support import Api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def test_no_operation_answers_with_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, "every endpoint should be in the OpenAPI document"
    auth = {"Authorization": f"Bearer {api.admin_token}"}

    @given(st.one_of([op.as_strategy() for op in operations]))
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        response = case.call(headers=auth)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        )

    call()
