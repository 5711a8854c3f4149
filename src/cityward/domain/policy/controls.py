"""The control catalogs a rule can cite, so `policy controls` can say what is covered and what not.

Identifiers only (the standards' texts are not ours to copy): ETSI EN 303 645 V2.1.1 provisions,
NIST IR 8259A device cybersecurity capabilities, IEC 62443-4-2 component requirements (CR; the
device-specific EDR/HDR/NDR variants are cited by their CR number).
"""

from __future__ import annotations

from enum import StrEnum


class Catalog(StrEnum):
    ETSI = "etsi_en_303_645"
    NIST = "nist_ir_8259a"
    IEC = "iec_62443_4_2"


def _provisions(section: int, count: int) -> list[str]:
    return [f"5.{section}-{i}" for i in range(1, count + 1)]


ETSI_EN_303_645: tuple[str, ...] = tuple(
    _provisions(1, 5) + _provisions(2, 3) + _provisions(3, 16) + _provisions(4, 4) + _provisions(5, 8)
    + _provisions(6, 9) + _provisions(7, 2) + _provisions(8, 3) + _provisions(9, 3) + _provisions(10, 1)
    + _provisions(11, 4) + _provisions(12, 3) + _provisions(13, 1)
)

NIST_IR_8259A: tuple[str, ...] = (
    "device_identification", "device_configuration", "data_protection", "logical_access_to_interfaces",
    "software_update", "cybersecurity_state_awareness",
)

IEC_62443_4_2: tuple[str, ...] = (
    "CR 1.1", "CR 1.2", "CR 1.3", "CR 1.4", "CR 1.5", "CR 1.7", "CR 1.8", "CR 1.9", "CR 1.10", "CR 1.11",
    "CR 1.12", "CR 1.14", "CR 2.1", "CR 2.2", "CR 2.5", "CR 2.6", "CR 2.8", "CR 2.9", "CR 2.10", "CR 2.11",
    "CR 2.12", "CR 3.1", "CR 3.3", "CR 3.4", "CR 3.5", "CR 3.6", "CR 3.7", "CR 3.8", "CR 3.9", "CR 3.10",
    "CR 3.11", "CR 3.12", "CR 3.13", "CR 3.14", "CR 4.1", "CR 4.2", "CR 4.3", "CR 5.1", "CR 6.1", "CR 6.2",
    "CR 7.1", "CR 7.2", "CR 7.3", "CR 7.4", "CR 7.6", "CR 7.7", "CR 7.8",
)

CATALOGS: dict[Catalog, tuple[str, ...]] = {
    Catalog.ETSI: ETSI_EN_303_645, Catalog.NIST: NIST_IR_8259A, Catalog.IEC: IEC_62443_4_2,
}
