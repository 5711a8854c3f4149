"""CVE records that give only a CVSS vector are scored by the `cvss` library, v3.1 and v4.0."""

from __future__ import annotations

import pytest

from cityward.domain.cve5 import _scores


@pytest.mark.parametrize(("metrics", "expected"), [
    ([{"cvssV4_0": {"vectorString": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}}], 9.3),
    ([{"cvssV3_1": {"vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}], 9.8),
    ([{"cvssV3_1": {"baseScore": 5.0, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}}], 5.0),
    ([{"cvssV3_1": {"vectorString": "not a vector"}}, {"cvssV3_0": {"baseScore": 4.3}}], 4.3),
    ([{"other": {"type": "ssvc"}}, "junk"], None),
])
def test_scores_from_vectors_or_stated(metrics: list[object], expected: float | None) -> None:
    assert _scores([{"metrics": metrics}])[0] == expected
