# SPDX-License-Identifier: MIT
"""Reads the config directory: the only module that touches config files.

Layout: <dir>/icmp6-shim.toml (settings and [[rule]]s, all optional) and
<dir>/rules.d/*.toml (only [[rule]]s), read in lexical order. Every problem
raises ConfigError naming the file, the rule (name or [[rule]] number) and
the key. Rules come back as shim.model.Rule values with origin USER and
priority None where the file gave none (shim.rules.build_table settles it).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shim import config_values as cv
from shim.config_values import parse_verdict
from shim.errors import ConfigError
from shim.icmp6_types import parse_codes, parse_range, parse_types
from shim.model import (
    FRAG_STATUSES,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Backend,
    IkeUse,
    MarkName,
    Match,
    Origin,
    Role,
    Rule,
    Settings,
)

__all__ = ["MAIN_FILE", "RULES_DIR", "Config", "load_config", "parse_verdict"]

MAIN_FILE = "icmp6-shim.toml"
RULES_DIR = "rules.d"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MARK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_RESERVED_NAMES = frozenset({"no-match", "on-error", "non-icmpv6"})
_ROLES = {"link-local": Role.LINK_LOCAL, "end-to-end": Role.END_TO_END,
          "any-to-end": Role.ANY_TO_END, "unclassified": Role.UNCLASSIFIED}
_IKE = {"must-not": IkeUse.MUST_NOT, "should-not": IkeUse.SHOULD_NOT,
        "may": IkeUse.MAY, "unclassified": IkeUse.UNCLASSIFIED}


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything the config directory says."""

    settings: Settings
    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    shadow_rules: tuple[Rule, ...] | None = None  # [shadow] rules: a candidate, never enforced


def load_config(config_dir: Path | None) -> Config:
    """Load settings and user rules from a config directory.

    Args:
        config_dir: the directory; None gives the built-in settings and no
            user rules. Both the main file and rules.d are optional.

    Returns:
        The frozen Config; files lists what was read, in order.

    Raises:
        ConfigError: a missing directory, bad TOML, or any invalid key or value.
    """
    if config_dir is None:
        return Config(settings=Settings(), rules=(), files=())
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: config directory does not exist")
    main = config_dir / MAIN_FILE
    paths = [main] if main.is_file() else []
    dropins = config_dir / RULES_DIR
    if dropins.is_dir():
        paths += sorted(p for p in dropins.glob("*.toml") if p.is_file())
    settings, rules = Settings(), []
    for order, path in enumerate(paths):
        doc = _read(path)
        if path == main:
            settings = _settings(doc, str(path))
        else:
            _only_rules(doc, str(path))
        rules += _rules(doc.get("rule", []), str(path), order, settings)
    _check_unique(rules)
    shadow = _shadow_rules(config_dir, settings, len(paths), rules)
    return Config(settings=settings, rules=tuple(rules), files=tuple(str(p) for p in paths),
                  shadow_rules=shadow)


def _shadow_rules(config_dir: Path, settings: Settings, order: int,
                  rules: list[Rule]) -> tuple[Rule, ...] | None:
    """The [shadow] rules file: rules only, read as if it were the last drop-in."""
    if settings.shadow is None:
        return None
    where = f"{config_dir / MAIN_FILE}: [shadow] rules"
    if settings.engine != "netfilterqueue":
        raise ConfigError(f"{where}: shadow mode runs on the netfilterqueue engine; "
                          f"[engine] kind is {settings.engine!r}")
    path = Path(settings.shadow)
    path = path if path.is_absolute() else config_dir / path
    if not path.is_file():
        raise ConfigError(f"{where}: {path} is not a file")
    doc = _read(path)
    _only_rules(doc, str(path))
    shadow = _rules(doc.get("rule", []), str(path), order, settings)
    _check_unique(rules + shadow)
    return tuple(shadow)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _only_rules(doc: dict[str, Any], path: str) -> None:
    for key in doc:
        if key != "rule":
            raise ConfigError(f"{path}: unknown key {key!r}: a {RULES_DIR} file holds only "
                              "[[rule]] tables")


def _check_unique(rules: list[Rule]) -> None:
    seen: dict[str, Rule] = {}
    for r in rules:
        if r.name in seen:
            first = seen[r.name]
            raise ConfigError(f"{r.file}: rule {r.name!r} ([[rule]] #{r.index + 1}): key 'name': "
                              f"duplicate name, first used in {first.file} "
                              f"[[rule]] #{first.index + 1}")
        seen[r.name] = r


def _hint(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- settings --------------------------------------------------------------------

_SECTIONS: dict[str, dict[str, tuple[str, Callable[[object], Any]]]] = {
    "queue": {"num": ("queue_num", cv.integer(0, 65535)), "workers": ("workers", cv.integer(1, 256)),
              "fail_open": ("fail_open", cv.boolean), "maxlen": ("queue_maxlen", cv.integer(1, 2**31 - 1)),
              "queue_fail_open": ("queue_fail_open", cv.boolean),
              "sock_rcvbuf": ("sock_rcvbuf", cv.integer(4096, 2**31 - 1))},
    "diversion": {"backend": ("backend", cv.choice({b.value: b for b in Backend})),
                  "hooks": ("hooks", cv.hooks),
                  "chain_priority": ("chain_priority", cv.integer(-2**31, 2**31 - 1))},
    "parser": {"ext_limit": ("ext_limit", cv.integer(1, 64))},
    "engine": {"kind": ("engine", cv.choice({k: k for k in ("netfilterqueue", "batched")}))},
    "log": {"level": ("log_level", cv.choice({k: k for k in
                                            ("debug", "info", "warning", "error", "critical")})),
            "format": ("log_format", cv.choice({k: k for k in ("auto", "json", "console")})),
            "rate": ("log_rate", cv.rate)},
    "control": {"socket": ("control_socket", cv.string)},
    "metrics": {"prometheus": ("prometheus", lambda v: cv.loopback_endpoint(cv.string(v)))},
    "shadow": {"rules": ("shadow", cv.string)},
}


def _table(doc: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table, got {value!r}")
    return value


def _settings(doc: dict[str, Any], path: str) -> Settings:
    for key in doc:
        if key not in _SECTIONS and key not in ("verdicts", "marks", "rule"):
            raise ConfigError(f"{path}: unknown section [{key}]"
                              f"{_hint(key, [*_SECTIONS, 'verdicts', 'marks', 'rule'])}")
    fields: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        for key, value in _table(doc, section, path).items():
            if key not in keys:
                raise ConfigError(f"{path}: [{section}] unknown key {key!r}{_hint(key, keys)}")
            field, parse = keys[key]
            try:
                fields[field] = parse(value)
            except cv.BadValue as exc:
                raise ConfigError(f"{path}: [{section}] key {key!r}: {exc}") from None
    settings = replace(Settings(), **fields)
    if settings.queue_num + settings.workers - 1 > 65535:
        raise ConfigError(f"{path}: [queue] num {settings.queue_num} with {settings.workers} workers "
                          "needs queues beyond 65535")
    settings = replace(settings, marks=_marks(_table(doc, "marks", path), settings.marks, path))
    return replace(settings, **_verdicts(_table(doc, "verdicts", path), settings.marks, path))


def _marks(table: dict[str, Any], base: tuple[MarkName, ...], path: str) -> tuple[MarkName, ...]:
    marks = {m.name: m for m in base}
    for name, spec in table.items():
        where = f"{path}: [marks] {name!r}"
        if not _MARK_NAME.match(name):
            raise ConfigError(f"{where}: bad mark name (lowercase letters, digits, '-', '_')")
        if not isinstance(spec, dict) or "value" not in spec:
            raise ConfigError(f"{where}: expected {{ value = 0x.., mask = 0x.. }}, got {spec!r}")
        for key in spec:
            if key not in ("value", "mask"):
                raise ConfigError(f"{where}: unknown key {key!r}")
        try:
            v = cv.integer(0, 0xFFFFFFFF)(spec["value"])
            m = cv.integer(0, 0xFFFFFFFF)(spec.get("mask", 0xFFFFFFFF))
            if v & ~m:
                raise cv.BadValue(f"value {v:#x} has bits outside mask {m:#x}")
        except cv.BadValue as exc:
            raise ConfigError(f"{where}: {exc}") from None
        marks[name] = MarkName(name=name, value=v, mask=m)
    seen: dict[tuple[int, int], str] = {}
    for mark in marks.values():
        if (mark.value, mark.mask) in seen:
            raise ConfigError(f"{path}: [marks] {mark.name!r} and {seen[mark.value, mark.mask]!r} "
                              f"both set {mark.value:#x}/{mark.mask:#x}")
        seen[mark.value, mark.mask] = mark.name
    return tuple(marks.values())


def _verdicts(table: dict[str, Any], marks: tuple[MarkName, ...], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in ("no_match", "on_error"):
            raise ConfigError(f"{path}: [verdicts] unknown key {key!r}")
        try:
            out[key] = parse_verdict(value, marks)
        except cv.BadValue as exc:
            raise ConfigError(f"{path}: [verdicts] key {key!r}: {exc}") from None
    return out


# --- rules -----------------------------------------------------------------------

_MATCH_KEYS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "type": ("types", parse_types),
    "role": ("roles", cv.flags(_ROLES)), "ike": ("ike", cv.flags(_IKE)),
    "src_class": ("src_classes", cv.classes), "dst_class": ("dst_classes", cv.classes),
    "src": ("src", cv.prefix), "dst": ("dst", cv.prefix),
    "hop_limit": ("hop_limit", lambda v: parse_range(v, 0, 255)),
    "iif": ("iif", cv.ifname), "oif": ("oif", cv.ifname),
    "hook": ("hooks", cv.many(cv.choice(cv.HOOK_NAMES))),
    "frag": ("frag", cv.many(cv.choice({f.replace("_", "-"): f for f in FRAG_STATUSES}))),
    "chain_complete": ("chain_complete", cv.boolean), "malformed": ("malformed", cv.boolean),
    "nd_valid": ("nd_valid", cv.boolean),
    "mtu": ("mtu", lambda v: parse_range(v, 0, 0xFFFFFFFF)),
}
_RULE_KEYS = frozenset({"name", "priority", "description", "log", "verdict", "code"}
                       | _MATCH_KEYS.keys())


def _rules(items: object, path: str, order: int, settings: Settings) -> list[Rule]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path}: 'rule' must be an array of tables: write [[rule]]")
    return [_rule(item, path, order, i, settings) for i, item in enumerate(items)]


def _rule(item: dict[str, Any], path: str, order: int, index: int, settings: Settings) -> Rule:
    name = item.get("name")
    label = f"rule {name!r} ([[rule]] #{index + 1})" if isinstance(name, str) else \
        f"[[rule]] #{index + 1}"
    try:
        for key in item:
            if key not in _RULE_KEYS:
                raise _KeyBad(key, "unknown key" + _hint(key, _RULE_KEYS))
        if "verdict" not in item:
            raise _KeyBad("verdict", "required (accept, drop, mark:NAME or mark:VALUE[/MASK])")
        return Rule(
            name=_get(item, "name", _rule_name, None),
            priority=_get(item, "priority", cv.integer(PRIORITY_MIN, PRIORITY_MAX), None),
            origin=Origin.USER,
            verdict=_get(item, "verdict", lambda v: parse_verdict(v, settings.marks), None),
            description=_get(item, "description", cv.string, ""),
            log=_get(item, "log", cv.boolean, False),
            match=_match(item), file=path, file_order=order, index=index)
    except _KeyBad as exc:
        raise ConfigError(f"{path}: {label}: key {exc.key!r}: {exc}") from None


class _KeyBad(ValueError):
    """A value is wrong, and this is its key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _get(item: dict[str, Any], key: str, parse: Callable[[object], Any], absent: Any) -> Any:
    if key not in item:
        if key == "name":
            raise _KeyBad(key, "required")
        return absent
    try:
        return parse(item[key])
    except ValueError as exc:
        raise _KeyBad(key, str(exc)) from None


def _rule_name(v: object) -> str:
    name = cv.string(v)
    if not _NAME.match(name):
        raise cv.BadValue(f"{name!r}: use letters, digits, '.', '_' or '-' (64 at most)")
    if name in _RESERVED_NAMES:
        raise cv.BadValue(f"{name!r} is reserved for the [verdicts] decisions")
    return name


def _match(item: dict[str, Any]) -> Match:
    fields = {field: _get(item, key, parse, None)
              for key, (field, parse) in _MATCH_KEYS.items() if key in item}
    if "code" in item:
        fields["codes"] = _get(item, "code", lambda v: parse_codes(v, fields.get("types")), None)
    try:
        return Match(**fields)
    except ValueError as exc:
        raise _KeyBad(next(iter(item)), str(exc)) from None
