"""Schemathesis hooks for the contract campaign (tests/api/schemathesis.toml names this module).

The campaign calls every operation with one city admin token, `DELETE /api/v1/tokens/{token_id}`
included, and the stateful phase feeds it the ids `GET /tokens` returns: the campaign would
revoke its own token and spend the rest of the run on 401s. That one call is pointed at another
id (`CITYWARD_CONTRACT_TOKEN_ID` names the token to spare).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    spare = os.environ.get("CITYWARD_CONTRACT_TOKEN_ID")
    if (case.method.upper() == "DELETE" and case.path == "/api/v1/tokens/{token_id}" and spare
            and (case.path_parameters or {}).get("token_id") == spare):
        case.path_parameters = {**(case.path_parameters or {}), "token_id": "0" * len(spare)}

