"""Vendor names as advisories write them and as inventories write them, brought to one key.

Real advisories name a vendor by its legal name ("Hangzhou Hikvision Digital Technology Co.,
Ltd.", "Axis Communications AB"), sometimes mis-encoded ("GeutebrÃ¼ck"), sometimes two at once
("Sensormatic Electronics, LLC, Johnson Controls Inc."); a city's inventory says "Hikvision",
"Axis", "Geutebrück". No library folds company names this way for matching (name-matching
packages aim at fuzzy scores, and a fuzzy score is a false match waiting to happen), so the rule is
written here, small and deterministic: fix mojibake, drop accents and case, then drop legal forms
and filler words from the end and a city of registration from the front, never leaving nothing.
What this cannot fold (a trade name that shares no word with the legal one) is the alias table's
job (`DEFAULT_ALIASES`, editable by the city).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

# Legal forms, in the spellings advisories use (after punctuation is gone: "Co., Ltd." → co ltd).
LEGAL_FORMS = frozenset({
    "co", "company", "cos", "ltd", "limited", "inc", "incorporated", "corp", "corporation", "llc", "lp", "llp",
    "plc", "gmbh", "mbh", "ag", "kg", "kgaa", "ab", "as", "asa", "oy", "oyj", "sa", "sas", "sarl", "spa", "srl",
    "bv", "nv", "kk", "pty", "pte", "sdn", "bhd", "se", "aps", "sro", "zoo", "ug", "doo", "jsc", "pjsc", "ooo",
})
# Words a legal name adds to a trade name, dropped only from the end ("Dahua Technology" → dahua,
# "Axis Communications" → axis) and only while a word is left.
FILLER = frozenset({
    "technology", "technologies", "tech", "software", "digital", "communications", "communication",
    "electronics", "electronic", "systems", "system", "solutions", "international", "group", "holding",
    "holdings", "industries", "industrial", "products", "security", "networks", "network", "vision",
    "wireless", "the", "intl",
})
# Cities and provinces that registered names lead with ("Hangzhou Hikvision", "Zhejiang Dahua"),
# dropped from the front while another word follows.
PLACES = frozenset({"hangzhou", "zhejiang", "shenzhen", "beijing", "shanghai", "guangzhou", "xiamen", "fujian",
                    "jiangsu", "suzhou", "wuhan", "ningbo", "chengdu", "guangdong"})
NO_VENDOR = frozenset({"na", "none", "unknown", "various", "multiplevendors", "notapplicable"})  # as keys

_WORDS = re.compile(r"[^\W_]+")
_SUBSIDIARY = re.compile(r"^\s*(?:a\s+)?(?:wholly[- ]owned\s+)?(?:subsidiary|division|brand|part)\s+of\s+", re.I)


def fix_mojibake(text: str) -> str:
    """UTF-8 read as Latin-1 or Windows-1252 ("GeutebrÃ¼ck") read back; anything else unchanged."""
    if not any(c in text for c in "ÃÂâ"):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            fixed = text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        return fixed
    return text


def _fold(text: str) -> str:
    """Case, width and accents aside: "Geutebrück" and "GEUTEBRUCK" fold alike."""
    # NFKD on both sides of case folding: double-struck or full-width letters decompose to ones that fold.
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", fix_mojibake(text)).casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=65536)
def vendor_key(name: str | None) -> str | None:
    """The key two spellings of one vendor share; None when the text names no vendor ("n/a")."""
    if name is None:
        return None
    words = _WORDS.findall(_fold(_SUBSIDIARY.sub("", name)))
    while len(words) > 1 and (words[-1] in LEGAL_FORMS or words[-1] in FILLER):
        words.pop()
    if len(words) > 1 and words[-1] in LEGAL_FORMS:
        words.pop()
    while len(words) > 1 and words[0] in PLACES:
        words.pop(0)
    key = "".join(words)
    return key if key and key not in NO_VENDOR else None


def split_vendors(text: str) -> list[str]:
    """One vendor string that names several ("Sensormatic Electronics, LLC, Johnson Controls Inc.",
    "EnOcean Edge Inc, a subsidiary of EnOcean GmbH"): a comma starts a new vendor unless what
    follows is only a legal form ("Co, Ltd")."""
    out: list[str] = []
    for part in (p.strip(" -") for p in text.split(",")):
        if not part:
            continue
        if out and all(w in LEGAL_FORMS for w in _WORDS.findall(_fold(part))):
            out[-1] = f"{out[-1]}, {part}"
        else:
            out.append(_SUBSIDIARY.sub("", part).strip())
    return out or [text]


def vendor_keys(text: str | None) -> tuple[str, ...]:
    """The keys of every vendor a vendor string names, in order, once each."""
    if text is None:
        return ()
    keys = (vendor_key(v) for v in split_vendors(text))
    return tuple(dict.fromkeys(k for k in keys if k))


def alias_map(aliases: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(alias, vendor) pairs as vendor key → vendor key, followed to the end of a chain; an alias
    that folds to its vendor's own key is dropped."""
    direct = {a: v for a, v in ((vendor_key(a), vendor_key(v)) for a, v in aliases) if a and v and a != v}
    out: dict[str, str] = {}
    for start in direct:
        seen, key = {start}, direct[start]
        while key in direct and key not in seen:
            seen.add(key)
            key = direct[key]
        out[start] = key
    return out


def canonical_vendor(key: str | None, aliases: Mapping[str, str]) -> str | None:
    return aliases.get(key, key) if key is not None else None


# Trade names that share no foldable word with a legal or former name, for device vendors a
# city is likely to run: renamed companies and brands of one maker (alias, the vendor it means).
# An OEM's product sold under another brand is not an alias: the catalog's relabel chain says that.
DEFAULT_ALIASES: tuple[tuple[str, str], ...] = (
    ("SWARCO Traffic", "Swarco"),
    ("Samsung Techwin", "Hanwha"),
    ("Hanwha Techwin", "Hanwha"),
    ("Wisenet", "Hanwha"),
    ("Illustra", "Johnson Controls"),
    ("Vigilant", "Motorola Solutions"),
    ("Hik-Connect", "Hikvision"),
    ("Ezviz", "Hikvision"),
    ("UNV", "Uniview"),
    ("Robert Bosch", "Bosch"),
    ("JCI", "Johnson Controls"),
    ("Tyco", "Johnson Controls"),
    ("Sensormatic", "Johnson Controls"),
    ("American Dynamics", "Johnson Controls"),
    ("Schneider", "Schneider Electric"),
    ("APC", "Schneider Electric"),
    ("Geutebrueck", "Geutebrück"),
    ("sierrawireless", "Sierra Wireless"),  # CVE records' one-word spelling keeps "wireless"
    ("Konica Minolta Mobotix", "Mobotix"),
    ("Reolink Innovation", "Reolink"),
    ("Ericsson Cradlepoint", "Cradlepoint"),
    ("Philips Lighting", "Signify"),
    ("Echelon", "EnOcean"),
)
