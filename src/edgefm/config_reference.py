"""Every config key, generated from the config dataclasses themselves: its type, default,
allowed range and meaning (``edgefm config keys``, ``docs/config.md``).

The meaning is the field's own comment in the source (the trailing ``# ...``, or the comment
lines just above it), the range is read from the ``check_range`` call of the class's
``__post_init__``, and each algorithm's keys come from its registered config class, so the
reference cannot drift from the code: a field without a comment fails ``tests/test_config.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

from edgefm import config, registry

FIELD = re.compile(r"^    (\w+): ([^=#]+?)(?:\s*=\s*(.*?))?\s*(?:#\s*(.*))?$")
RANGE = re.compile(r'check_range\(\s*f?"([\w.{}]+)"')
LOOP = re.compile(r"for key in \(([^)]*)\)")


@dataclass(frozen=True)
class Key:
    key: str
    type: str
    default: str
    allowed: str
    meaning: str
    methods: str = ""  # algorithm keys: the methods that have it


def _comments(cls: type) -> dict[str, str]:
    """Each field's comment: the trailing one, else the comment lines right above it."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if line.startswith("    #"):
            above.append(stripped.lstrip("# "))
            continue
        m = FIELD.match(line)
        if m and not stripped.startswith(("def ", "@", "return")):
            out[m.group(1)] = (m.group(4) or " ".join(above)).strip()
        above = []
    return out


def _ranges(cls: type) -> dict[str, str]:
    """Each field's range from its ``check_range`` call (``for key in (...)`` loops over several)."""
    source, out = inspect.getsource(cls), {}
    loops = list(LOOP.finditer(source))
    for m in RANGE.finditer(source):
        line = source[m.end() : source.find("\n", m.end())]
        args = dict(re.findall(r"\b(lo|hi|open_lo|open_hi)=([^,)\s]+)", line))
        lo, hi = args.get("lo"), args.get("hi")
        lo_s = f"{'>' if args.get('open_lo') == 'True' else '>='} {lo}" if lo is not None else ""
        hi_s = f"{'<' if args.get('open_hi') == 'True' else '<='} {hi}" if hi is not None else ""
        name = m.group(1).rsplit(".", 1)[-1]
        if name == "{key}":  # the loop just above names the fields
            loop = [lp for lp in loops if lp.end() < m.start()][-1]
            names = re.findall(r"\"(\w+)\"", loop.group(1))
        else:
            names = [name]
        for field_name in names:
            out[field_name] = " and ".join(t for t in (lo_s, hi_s) if t)
    return out


def _type(annotation: object) -> tuple[str, str]:
    """A readable type, and the allowed values a Literal spells out."""
    text = str(annotation).replace("typing.", "")
    m = re.search(r"Literal\[([^\]]*)\]", text)
    allowed = ", ".join(v.strip().strip("'\"") for v in m.group(1).split(",")) if m else ""
    if m:
        text = text.replace(m.group(0), "str")
    return text, (f"one of {allowed}" if allowed else "")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    return "null" if value is None else str(value)


def _walk(cls: type, prefix: str) -> list[Key]:
    comments, ranges, keys = _comments(cls), _ranges(cls), []
    for base in cls.__mro__[1:]:  # an algorithm inherits its base's fields and their comments
        if dataclasses.is_dataclass(base):
            comments = {**_comments(base), **comments}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name == "algorithm" and not prefix:
            keys += _algorithm_keys()
            continue
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            keys += _walk(type(sub), f"{key}.")
            continue
        kind, allowed = _type(f.type)
        keys.append(Key(key, kind, _default(f), ranges.get(f.name, "") or allowed, comments.get(f.name, "")))
    return keys


def _algorithm_keys() -> list[Key]:
    names = registry.names("algorithm")
    keys = [Key("algorithm.name", "str", config.AlgorithmConfig.name, "one of " + ", ".join(names),
                "the federated method (each has its own keys below)")]  # fmt: skip
    groups: dict[Key, list[str]] = {}  # one row per distinct key, listing the methods that share it
    for name in names:
        for k in _walk(registry.get("algorithm", name), "algorithm."):
            if k.key != "algorithm.name":
                groups.setdefault(k, []).append(name)
    rows = [dataclasses.replace(k, methods=", ".join(m)) for k, m in groups.items()]
    return keys + sorted(rows, key=lambda k: (k.key, k.methods))


def all_keys() -> list[Key]:
    """Every key of a run config, algorithm keys with the methods that have them."""
    return _walk(config.RunConfig, "")


def markdown() -> str:
    """``docs/config.md``: the reference as one table per section."""
    lines = [
        "# Config reference",
        "",
        "Every key of a run config (`edgefm train CONFIG --set key=value`), generated from the config",
        "classes by `edgefm config keys --markdown` (do not edit by hand; `tests/test_config.py` checks",
        "it is current). `edgefm config show CONFIG` prints a config with every default filled in.",
        "A tenants file (several tenants over one population) is described in `src/edgefm/fl/tenants.py`.",
    ]
    section = None
    for k in all_keys():
        top = k.key.split(".")[0] if "." in k.key else "run"
        if top != section:
            section = top
            lines += ["", f"## {section}", "", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        meaning = f"({k.methods}) {k.meaning}" if k.methods else k.meaning
        cells = [f"`{k.key}`", k.type, f"`{k.default}`", k.allowed, meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
