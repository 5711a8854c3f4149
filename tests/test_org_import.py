"""`cityward orgs import`: partners with an explicit kind, all or nothing, every bad row named."""

from __future__ import annotations

import pytest

from cityward.bootstrap import Platform
from cityward.domain.organizations import Caller, Role
from cityward.errors import InvalidInput, PermissionDenied
from cityward.services import auditlog, organizations
from tests.conftest import caller_for


def _kinds(platform: Platform, caller: Caller) -> dict[str, str]:
    return {o.name: o.kind for o in organizations.list_orgs(platform.uow, caller)}


def test_imports_each_partner_with_its_stated_kind_and_again_changes_nothing(platform: Platform,
                                                                             city: Caller) -> None:
    data = (b"name,kind,brand\nTideway Integrators,integrator,\nQuay Installers,installer,\n"
            b"Meridale Supply,distributor,Meridale\nVexlumen Lighting,manufacturer,Vexlumen\n")
    assert organizations.import_orgs(platform.uow, city, data, "orgs.csv") == (4, 0)
    kinds = _kinds(platform, city)
    assert kinds["Tideway Integrators"] == "integrator" and kinds["Quay Installers"] == "installer"
    assert kinds["Meridale Supply"] == "distributor" and kinds["Vexlumen Lighting"] == "manufacturer"
    assert organizations.import_orgs(platform.uow, city, data, "orgs.csv") == (0, 4)
    events = [e for e in auditlog.list_events(platform.uow, city, action="orgs.created")]
    assert len(events) == 4


@pytest.mark.parametrize(("data", "row", "field", "words"), [
    (b"name,kind\nA,integrator\nB,wizard\n", 3, "kind", "unknown organization kind"),
    (b"name,kind\nA,integrator\nB,city\n", 3, "kind", "cityward init"),
    (b"name,kind\nA,integrator\n,installer\n", 3, "name", "printable"),
    (b"name,kind\nA,integrator\na,installer\n", 3, "name", "already on row 2"),
    (b"name,kind,email\nA,integrator,not-an-address\n", 2, "email", "e-mail"),
    (b"name,kind\nA,integrator,extra\n", 2, None, "more cells"),
])
def test_a_bad_row_is_named_and_nothing_is_imported(platform: Platform, city: Caller, data: bytes, row: int,
                                                    field: str | None, words: str) -> None:
    before = _kinds(platform, city)
    with pytest.raises(InvalidInput) as exc:
        organizations.import_orgs(platform.uow, city, data, "orgs.csv")
    problem = exc.value.problems[0]
    assert (problem.row, problem.field, problem.source) == (row, field, "orgs.csv")
    assert words in problem.message
    assert _kinds(platform, city) == before


def test_an_existing_partner_of_another_kind_is_a_problem_not_a_change(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Tideway Integrators", "integrator")
    with pytest.raises(InvalidInput) as exc:
        organizations.import_orgs(platform.uow, city, b"name,kind\nNew One,installer\nTideway Integrators,installer\n",
                                  "orgs.csv")
    assert "exists already as integrator" in exc.value.problems[0].message
    assert "New One" not in _kinds(platform, city)


@pytest.mark.parametrize(("data", "words"), [
    (b"kind\nintegrator\n", "name and kind"),
    (b"name,kind,colour\nA,integrator,red\n", "unknown column 'colour'"),
    (b"name,kind\n\xff\xfe\n", "not UTF-8"),
    (b"name,kind\nA\x00,integrator\n", "NUL"),
    (b"name,kind\n" + b"A,integrator\n" * 100_000, "larger than"),
])
def test_files_that_are_not_a_partner_list_are_refused(platform: Platform, city: Caller, data: bytes,
                                                       words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        organizations.import_orgs(platform.uow, city, data, "orgs.csv")


def test_only_the_city_admin_imports_partners(platform: Platform, city: Caller) -> None:
    organizations.create_org(platform.uow, city, "Tideway Integrators", "integrator")
    partner = caller_for(platform, "Tideway Integrators", Role.ADMIN)
    with pytest.raises(PermissionDenied):
        organizations.import_orgs(platform.uow, partner, b"name,kind\nA,installer\n", "orgs.csv")
