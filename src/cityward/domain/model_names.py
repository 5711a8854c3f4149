"""Model names as vendors write them in advisories, read into what a catalog model can match.

Real advisories name families and lists, not one model: "DS-2CD2xx2FWD Series", "EFD-22xx",
"RLC-4XX series", "DS-2DF*X(T3)", "AVM1203 (IP Camera)", "EDR-G902 / EDR-G903 Series",
"MP70 MP70E RV50 RV50X LX40 and LX60", "All Models". Each becomes one or more `ModelName`s: the
model as a catalog would spell it, and a pattern over model keys when it stands for many. The rules
follow how vendors use the marks, and nothing is guessed beyond them:

- `*` stands for any characters; a run of `x` in a model written in capitals ("2xx2"), or a run of
  two or more `X` ("4XX", "7XXX"), for one or more model characters. A single capital X is a
  letter ("RV50X", "HX2").
- "Series", "Family", "Models" (and the device words after them) make the name a prefix of every
  model of the family.
- A parenthesized qualifier with a space in it ("(IP Camera)") is dropped; a compact one ("(T3)",
  a hardware revision) stays part of the model.
- Lists split on commas, "and", "or" and "&"; on "/" and on spaces when every piece carries a
  digit ("EDR-G902 / EDR-G903", "MP70 RV50"; not the variant suffix of "DS-2CD2026G2-IU/SL").
- A model number in parentheses after a word ("Vigilant Fixed LPR Coms Box (BCAV1F2-C600)",
  "enteliBUS Manager Touch (eBMGR-TCH)") is another name of the same product: either matches.
- A model number among descriptive words ("CPU LS4000", "SCALANCE M812-1 ADSL-Router", "DVR
  HVR-4781", "Cradlepoint IBR600 NetCloud OS (NCOS)") names the product on its own: the catalog
  model whose name is, or ends with, that model number matches. A model number is one word of
  letters and digits, four or more of them, that is not a version ("V4.X", "v2.2") or an ordinal.
  A name that carries its version line ("RUGGEDCOM ROS RSG2288 V5.X") gets no such shortcut: its
  range is of that line only, and nothing here bounds it from below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from cityward.domain.advisories import model_key

EVERY_MODEL = "^.*$"

_DEVICE_WORDS = (r"firmware|cameras?|routers?|devices?|products?|controllers?|recorders?|gateways?|"
                 r"switch(?:es)?|terminals?|frameworks?")
_FAMILY = re.compile(rf"\s+(?:series|family|models?|line)(?:\s+(?:{_DEVICE_WORDS}))*\s*$", re.I)
_FAMILY_WORD = re.compile(r"\s+(?:series|family)\s+", re.I)  # "SkyRouter Series 4200": a word, not a suffix
_LABEL = re.compile(r"^.*?\bmodel(?: number)?s?\s*:\s*", re.I)  # "Lynx Model: L206-F2G1"
_TRAILING = re.compile(rf"(?:\s+(?:{_DEVICE_WORDS}))+\s*$", re.I)
_DESCRIPTIVE = re.compile(r"\s*\([^()]*\s[^()]*\)")
_LIST = re.compile(r"\s*(?:,\s*(?:and|or)\s+|,|\s+and\s+|\s+or\s+|\s*&\s*|;)\s*", re.I)
_SLASH = re.compile(r"\s*/\s*")
_ALL = re.compile(r"^(?:all|any)(?:\s+(?:models?|products?|versions?|devices?|cameras?))?$", re.I)
_WILD = re.compile(r"\*+|[xX]{2,}|(?<=[0-9A-Z\-])x+(?=[0-9A-Z\-]|$)")
_OTHER_NAME = re.compile(r"(?<=\s)\(([^()\s]+)\)")  # "Box (BCAV1F2-C600)"; not "DS-2DF*X(T3)"
_LINE_WORD = re.compile(r"^[vV]?\d+(?:\.\d+)*\.[xX*]$")  # "V5.X": the product's name carries its version line
_VERSION_WORD = re.compile(r"^[vV]?\d+(?:[.\-_][0-9A-Za-z]+)*$|^\d+(?:st|nd|rd|th)$|^[vV]\d", re.I)


@dataclass(frozen=True)
class ModelName:
    text: str  # the model as written, cleaned of family words and descriptions
    pattern: str | None = None  # a regex over model keys when the name stands for many models

    @property
    def key(self) -> str | None:
        return model_key(self.text)


def read_models(text: str | None) -> list[ModelName]:
    """Every model a product name stands for; [] when it names none."""
    if text is None:
        return []
    cleaned = " ".join(text.split()).strip(" ,;")
    cleaned = re.sub(r"(?:,\s*|\s+)(?:and|or)$", "", cleaned, flags=re.I).strip(" ,;")
    if not cleaned:
        return []
    if _ALL.match(cleaned):
        return [ModelName(cleaned, EVERY_MODEL)]
    others = [o for o in _OTHER_NAME.findall(cleaned) if _is_model_number(o) or _is_order_code(o)]
    if others:
        cleaned = _OTHER_NAME.sub(lambda m: "" if m.group(1) in others else m.group(), cleaned)
        cleaned = " ".join(cleaned.split())
    cleaned = _LABEL.sub("", _DESCRIPTIVE.sub("", cleaned)).strip()
    family = _FAMILY.search(cleaned) is not None
    cleaned = _TRAILING.sub("", _FAMILY.sub("", cleaned)).strip(" ,;") or cleaned
    cleaned = _FAMILY_WORD.sub(" ", cleaned)
    parts: list[str] = []
    for part in (p for p in _LIST.split(cleaned) if p):
        pieces = [p for p in _SLASH.split(part) if p]
        if len(pieces) > 1 and all(any(c.isdigit() for c in p) for p in pieces):
            parts += pieces  # "EDR-G902 / EDR-G903", "i.LON 100/600"; not "DS-2CD2026G2-IU/SL"
            continue
        words = part.split(" ")
        if len(words) > 1 and all(any(c.isdigit() for c in w) for w in words):
            parts += words  # "MP70 MP70E RV50": a list written with spaces
        else:
            parts.append(part)
    # "SkyRouter 4200 and 4400": a bare number after a named model shares its name.
    lead = parts[0].split(" ")[:-1] if parts and " " in parts[0] else []
    if lead and not any(c.isdigit() for c in " ".join(lead)):
        parts = [parts[0]] + [f"{' '.join(lead)} {p}" if " " not in p and p[:1].isdigit() else p
                              for p in parts[1:]]
    read = [m for m in (_one(p, family) for p in parts) if m is not None]
    if others and len(read) == 1:  # "Box (BCAV1F2-C600)": one product under either name
        read[0] = _either(read[0], others)
    return read


def names_models(text: str) -> bool:
    """Does a text that should be a version name model numbers instead ("EY-AS525F001",
    "L206-F2G1, L210-F2G, and")? CSAF trees put them in product_version branches."""
    pieces = [p for p in _LIST.split(re.sub(r"(?:,\s*|\s+)(?:and|or)\s*$", "", text.strip())) if p.strip()]
    # Dots and underscores are how versions and builds are written ("MX-V4.0.1.15", "RUT9_R_00.07"),
    # not model numbers.
    return bool(pieces) and all(_is_model_number(p.strip()) and not re.search(r"[\s._]", p.strip())
                                for p in pieces)


def _is_model_number(word: str) -> bool:
    key = model_key(word) or ""
    return (len(key) >= 4 and any(c.isdigit() for c in key) and any(c.isalpha() for c in key)
            and not _VERSION_WORD.match(word) and not _WILD.search(word))


def _is_order_code(word: str) -> bool:
    """"eBMGR-TCH": a vendor's short name for the product, written as a code, not a word."""
    return "-" in word and len(model_key(word) or "") >= 5 and any(c.isupper() for c in word[1:])


def _either(name: ModelName, others: list[str]) -> ModelName:
    """`name`, or any of the other names the product goes by, as one pattern over model keys."""
    own = name.pattern[1:-1] if name.pattern else re.escape(name.key or "")
    alternatives = [own, *(re.escape(model_key(o) or "") for o in others)]
    return ModelName(name.text, "^(?:" + "|".join(dict.fromkeys(a for a in alternatives if a)) + ")$")


def _one(text: str, family: bool) -> ModelName | None:
    if model_key(text) is None:
        return None
    words = text.split(" ")
    numbers = [w for w in words if _is_model_number(w)] if len(words) > 1 and not family else []
    if numbers and not _WILD.search(text) and not any(_LINE_WORD.match(w) for w in words):
        # (Not "RUGGEDCOM ROS RS900G V5.X": its range reads "< V5.5.4" of the V5 line only, and
        # an RS900G on V4.3.7 is not affected; without a lower bound for the line, no shortcut.)
        # "CPU LS4000": the model number names the product without the words around it.
        return _either(ModelName(text), numbers)
    capitals = not any(c.islower() for c in text.replace("x", ""))
    pieces: list[str] = []
    pos = 0
    wild = False
    for m in _WILD.finditer(text):
        token = m.group()
        if token[0] == "x" and not capitals:  # a lower-case x in a lower-case name is a letter
            continue
        pieces.append(re.escape(model_key(text[pos:m.start()]) or ""))
        pieces.append(".*" if token[0] == "*" else ".+")
        pos = m.end()
        wild = True
    if not wild and not family:
        return ModelName(text)
    pieces.append(re.escape(model_key(text[pos:]) or ""))
    body = "".join(pieces)
    return ModelName(text, f"^{body}{'.*' if family else ''}$")


@lru_cache(maxsize=65536)
def model_variants(brand: str | None, model: str) -> tuple[str | None, ...]:
    """The keys a catalog model goes by in advisories: itself; with its brand in front ("Illustra"
    + "Flex Gen 2" is written "Illustra Flex Gen 2"); and without the product-line words a city
    puts in front ("AirLink MP70" is written "MP70"): each trailing run of its words that starts
    with a model number (a word of letters and digits), so "Flex Gen 2" never becomes "Gen 2"."""
    own = model_key(model)
    out: list[str | None] = [own]
    if brand and own:
        out.append(model_key(f"{brand} {model}"))
    words = model.split()
    for i in range(1, len(words)):
        first = words[i]
        tail = model_key(" ".join(words[i:]))
        if tail and len(tail) >= 3 and any(c.isdigit() for c in first) and any(c.isalpha() for c in first):
            out.append(tail)
    return tuple(dict.fromkeys(out))
