# SPDX-License-Identifier: MIT
"""Reads the config directory: the only module that touches config files.

Layout: <dir>/icmp6-shim.toml (settings and [[rule]]s, all optional) and
<dir>/rules.d/*.toml (only [[rule]]s), read in lexical order. Every problem
raises ConfigError naming the file, the rule (name or [[rule]] number) and
the key. Rules come back as shim.core.model.Rule values with origin USER and
priority None where the file gave none (shim.core.rules.build_table settles it).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shim.config import values as cv
from shim.config.values import parse_codes, parse_range, parse_types, parse_verdict
from shim.core.errors import ConfigError
from shim.core.matchkeys import KEYS_BY_NAME, MATCH_KEYS, Kind, MatchKey
from shim.core.model import (
    ENGINE_KINDS,
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

__all__ = ["MAIN_FILE", "MAX_DROPINS", "MAX_FILE_BYTES", "MAX_RULES", "MAX_TOTAL_BYTES",
           "RULES_DIR", "Config", "ControlAddress", "control_address", "load_config",
           "parse_match", "parse_verdict"]

MAIN_FILE = "icmp6-shim.toml"
RULES_DIR = "rules.d"
# Limits of one config directory (docs/configuration.md "Limits"). They bound the time a
# check or a reload can take: at the limits `check` runs in well under the unit's
# TimeoutStartSec, and a reload (parsed off the packet path) finishes in seconds.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_TOTAL_BYTES = 32 * 1024 * 1024
MAX_DROPINS = 1024
MAX_RULES = 20_000
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
        config_dir: the directory; None (no directory at all) gives the built-in
            settings and no user rules. A directory must hold icmp6-shim.toml;
            rules.d is optional, but when present it must be a readable directory
            whose *.toml entries are all readable regular files.

    Returns:
        The frozen Config; files lists what was read, in order.

    Raises:
        ConfigError: a missing or unreadable directory or file, a missing main
            file, a file past the limits, bad TOML or UTF-8, or any invalid key
            or value; the message names the file. Nothing else escapes.
    """
    if config_dir is None:
        return Config(settings=Settings(), rules=(), files=())
    _check_dir(config_dir, "config directory", required=True)
    main = config_dir / MAIN_FILE
    paths = [main] + _dropins(config_dir / RULES_DIR)
    budget = _Budget()
    settings, rules = Settings(), []
    for order, path in enumerate(paths):
        with _naming(path):
            doc = _read(path, budget)
            if path == main:
                settings = _settings(doc, str(path))
            else:
                _only_rules(doc, str(path))
            rules += _rules(doc.get("rule", []), str(path), order, settings)
            if len(rules) > MAX_RULES:
                raise ConfigError(f"{path}: more than {MAX_RULES} rules in {config_dir} "
                                  "(the limit of one config directory)")
    with _naming(main):
        _check_unique(rules)
        shadow = _shadow_rules(config_dir, settings, len(paths), rules, budget)
    return Config(settings=settings, rules=tuple(rules), files=tuple(str(p) for p in paths),
                  shadow_rules=shadow)


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlAddress:
    """What names a running daemon's control socket: [control] socket and [queue] num."""

    control_socket: str | None = None  # None: the per-instance default path
    queue_num: int = 0
    problem: str | None = None  # why a default stands in for what the file says


def control_address(config_dir: Path | None) -> ControlAddress:
    """Where the daemon of this config answers, read without the rules.

    `stats` asks exactly when the config may be broken (after a failed reload), so
    only the two keys that name the socket are read, each on its own; whatever
    cannot be read falls back to its default and is named in `problem`.

    Args:
        config_dir: the directory; None gives the defaults.

    Returns:
        The address; never raises.
    """
    if config_dir is None:
        return ControlAddress()
    path = config_dir / MAIN_FILE
    try:
        doc = _read(path, _Budget())
    except ConfigError as exc:
        return ControlAddress(problem=str(exc))
    found: dict[str, Any] = {}
    problems: list[str] = []
    for section, key, field, parse in (("control", "socket", "control_socket", cv.string),
                                       ("queue", "num", "queue_num", cv.integer(0, 65535))):
        table = doc.get(section, {})
        if not isinstance(table, dict) or key not in table:
            continue
        try:
            found[field] = parse(table[key])
        except cv.BadValue as exc:
            problems.append(f"{path}: [{section}] key {key!r}: {exc}")
    return ControlAddress(**found, problem="; ".join(problems) or None)


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Turn any unexpected exception while loading one file into a ConfigError naming it.

    The loader raises ConfigError on purpose; anything else (a RecursionError from
    printing a deeply nested value, a bug in a value parser) must still end as one
    line naming the file, never as a crash of `check` or a reload.
    """
    try:
        yield
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{path}: cannot load: values nested too deep") from None
    except Exception as exc:  # noqa: BLE001 - the point: nothing else escapes
        raise ConfigError(f"{path}: cannot load: {type(exc).__name__}: {exc}") from None


def _check_dir(path: Path, what: str, *, required: bool) -> bool:
    """Whether `path` is a directory we can list; raise ConfigError if it is not usable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: {what} does not exist") from None
        return False
    except OSError as exc:
        raise ConfigError(f"{path}: {what}: cannot access: {_why(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path}: {what} is not a directory")
    if not os.access(path, os.R_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise ConfigError(f"{path}: {what}: cannot list or search it: permission denied "
                          f"(needs read and execute for uid {os.geteuid()})")
    return True


def _dropins(dropins: Path) -> list[Path]:
    """rules.d/*.toml in lexical order; absent is fine, unreadable is an error."""
    if not _check_dir(dropins, RULES_DIR, required=False):
        return []
    try:
        names = sorted(e.name for e in os.scandir(dropins) if e.name.endswith(".toml"))
    except OSError as exc:
        raise ConfigError(f"{dropins}: cannot list: {_why(exc)}") from None
    if len(names) > MAX_DROPINS:
        raise ConfigError(f"{dropins}: {len(names)} *.toml files, more than the limit of "
                          f"{MAX_DROPINS}")
    return [dropins / n for n in names]


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    return exc.strerror or str(exc)


def _shadow_rules(config_dir: Path, settings: Settings, order: int,
                  rules: list[Rule], budget: _Budget) -> tuple[Rule, ...] | None:
    """The [shadow] rules file: rules only, read as if it were the last drop-in."""
    if settings.shadow is None:
        return None
    where = f"{config_dir / MAIN_FILE}: [shadow] rules"
    if settings.engine != "netfilterqueue":
        raise ConfigError(f"{where}: shadow mode runs on the netfilterqueue engine; "
                          f"[engine] kind is {settings.engine!r}")
    path = Path(settings.shadow)
    path = path if path.is_absolute() else config_dir / path
    with _naming(path):
        doc = _read(path, budget)
        _only_rules(doc, str(path))
        shadow = _rules(doc.get("rule", []), str(path), order, settings)
    _check_unique(rules + shadow)
    return tuple(shadow)


@dataclass(slots=True)
class _Budget:
    """Bytes read so far from one config directory (MAX_TOTAL_BYTES)."""

    total: int = 0


def _read(path: Path, budget: _Budget) -> dict[str, Any]:
    """Parse one TOML file: a readable regular file, UTF-8, within the limits."""
    data = _read_bytes(path, budget)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8: byte {data[exc.start]:#04x} at line {line} "
                          f"(offset {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deep") from None


def _read_bytes(path: Path, budget: _Budget) -> bytes:
    # O_NONBLOCK: a FIFO named *.toml must not hang a reload; it is refused below.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        what = "broken symlink" if os.path.islink(path) else "missing"
        raise ConfigError(f"{path}: cannot read: {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {_why(exc)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: cannot read: not a regular file")
    with os.fdopen(fd, "rb") as f:
        # One byte past the limit tells "too big" from "exactly at the limit",
        # whatever st_size said (the file may grow while we read).
        limit = min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - budget.total)
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {_why(exc)}") from None
    if len(data) > limit:
        if limit < MAX_FILE_BYTES:
            raise ConfigError(f"{path}: the config directory is larger than "
                              f"{MAX_TOTAL_BYTES // 2**20} MiB (the limit)")
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB (the limit "
                          "of one config file)")
    budget.total += len(data)
    return data


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
    "engine": {"kind": ("engine", cv.choice({k: k for k in ENGINE_KINDS}))},
    "log": {"level": ("log_level", cv.choice({k: k for k in
                                            ("debug", "info", "warning", "error", "critical")})),
            "format": ("log_format", cv.choice({k: k for k in ("auto", "json", "console")})),
            "rate": ("log_rate", cv.rate)},
    "control": {"socket": ("control_socket", cv.string)},
    "metrics": {"prometheus": ("prometheus", lambda v: cv.loopback_endpoint(cv.string(v))),
                "socket": ("metrics_socket", cv.string), "group": ("metrics_group", cv.string),
                "max_connections": ("metrics_max_connections", cv.integer(1, 1024)),
                "timeout": ("metrics_timeout", cv.seconds(0.1, 60.0))},
    "shadow": {"rules": ("shadow", cv.string)},
    "overload": {"budget": ("budget", cv.boolean),
                 "nd_rate": ("budget_nd_rate", cv.integer(0, 1_000_000)),
                 "error_rate": ("budget_error_rate", cv.integer(0, 1_000_000)),
                 "other_rate": ("budget_other_rate", cv.integer(0, 1_000_000)),
                 "headers_rate": ("budget_headers_rate", cv.integer(0, 1_000_000)),
                 "over_budget": ("budget_verdict", cv.choice({k: k for k in ("drop", "accept")})),
                 "interfaces": ("budget_interfaces",
                                lambda v: tuple(sorted(cv.many(cv.ifname)(v))) if v != [] else ())},
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

# One value parser per kind of match key (shim.core.matchkeys): a new key of a known kind
# is read with no change here. CODES is read after the others, with the rule's types.
_PARSERS: dict[Kind, Callable[[MatchKey], Callable[[object], Any]]] = {
    Kind.TYPES: lambda k: parse_types,
    Kind.ROLES: lambda k: cv.flags(_ROLES),
    Kind.IKE: lambda k: cv.flags(_IKE),
    Kind.CLASSES: lambda k: cv.classes,
    Kind.PREFIX: lambda k: cv.prefix,
    Kind.HOOKS: lambda k: cv.many(cv.choice(cv.HOOK_NAMES)),
    Kind.FRAG: lambda k: cv.many(cv.choice({f.replace("_", "-"): f for f in FRAG_STATUSES})),
    Kind.IFNAME: lambda k: cv.ifname,
    Kind.FLAG: lambda k: cv.boolean,
    Kind.RANGE: lambda k: lambda v: parse_range(v, 0, k.top),
}
_MATCH_KEYS: dict[str, tuple[str, Callable[[object], Any]]] = {
    k.name: (k.field, _PARSERS[k.kind](k)) for k in MATCH_KEYS if k.kind is not Kind.CODES}
_CODE_KEYS = tuple(k for k in MATCH_KEYS if k.kind is Kind.CODES)
_TYPES_FIELD = next(k.field for k in MATCH_KEYS if k.kind is Kind.TYPES)
_RULE_KEYS = frozenset({"name", "priority", "description", "log", "verdict",
                        "override_hardening"}
                       | KEYS_BY_NAME.keys())


def _rules(items: object, path: str, order: int, settings: Settings) -> list[Rule]:
    """Every [[rule]] of one file; each bad rule is reported, not only the first."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{path}: 'rule' must be an array of tables: write [[rule]]")
    rules: list[Rule] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        try:
            rules.append(_rule(item, path, order, i, settings))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(*problems)
    return rules


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
            hardening=_get(item, "override_hardening", cv.boolean, False),
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
    for k in _CODE_KEYS:  # code names are looked up in the rule's types
        if k.name in item:
            fields[k.field] = _get(item, k.name,
                                   lambda v: parse_codes(v, fields.get(_TYPES_FIELD)), None)
    try:
        return Match(**fields)
    except ValueError as exc:
        raise _KeyBad(next(iter(item)), str(exc)) from None


def parse_match(item: dict[str, Any], where: str) -> Match:
    """The Match of rule keys given elsewhere than in a file (e.g. `search` arguments).

    Raises:
        ConfigError: an unknown key or a bad value, naming `where` and the key.
    """
    try:
        for key in item:
            if key not in KEYS_BY_NAME:
                raise _KeyBad(key, "not a match key" + _hint(key, KEYS_BY_NAME))
        return _match(item)
    except _KeyBad as exc:
        raise ConfigError(f"{where}: key {exc.key!r}: {exc}") from None
