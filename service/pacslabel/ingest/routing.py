"""Who may send to the storage SCP, and which project (route) an association's instances belong to.

Sources: `PACSLABEL_SCP_ALLOWED_CALLERS` (``CT1,PACS2@10.0.0.7``: AE title, optionally ``@source address``) and
the optional YAML file `PACSLABEL_SCP_ROUTES_FILE`::

    allowed_callers:
      - CT1
      - {ae_title: PACS2, host: 10.0.0.7}
    default_route: default
    routes:
      - {calling: CT1, route: lung-ct}
      - {called: NEURO, route: neuro, deid: {some_option: true}}

Routes are tried in order; `calling`/`called` may be omitted (any) and are compared exactly. An empty allow-list
means "accept every caller" in development and test, and refuses to start in production (an open C-STORE port
that files anything into the research PACS is a misconfiguration there, not a default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pacslabel.settings import ConfigurationError, Settings

logger = logging.getLogger(__name__)

DEFAULT_ROUTE = "default"


class RoutesFileError(ConfigurationError):
    """The routes file is not valid; the message names the file and line."""


@dataclass(frozen=True)
class CallerRule:
    ae_title: str
    host: str | None = None

    def matches(self, calling_ae: str, host: str | None) -> bool:
        return calling_ae == self.ae_title and (self.host is None or self.host == host)


@dataclass(frozen=True)
class RouteRule:
    route: str
    calling: str | None = None
    called: str | None = None
    deid: dict[str, Any] = field(default_factory=dict)

    def matches(self, calling_ae: str, called_ae: str) -> bool:
        return (self.calling is None or self.calling == calling_ae) and (
            self.called is None or self.called == called_ae
        )


@dataclass(frozen=True)
class RoutingTable:
    callers: tuple[CallerRule, ...] = ()
    routes: tuple[RouteRule, ...] = ()
    default_route: str = DEFAULT_ROUTE

    @property
    def accepts_everyone(self) -> bool:
        return not self.callers

    def is_allowed(self, calling_ae: str, host: str | None) -> bool:
        calling_ae = calling_ae.strip()
        return self.accepts_everyone or any(rule.matches(calling_ae, host) for rule in self.callers)

    def route_for(self, calling_ae: str, called_ae: str) -> str:
        calling_ae, called_ae = calling_ae.strip(), called_ae.strip()
        for rule in self.routes:
            if rule.matches(calling_ae, called_ae):
                return rule.route
        return self.default_route

    def deid_overrides(self, route: str) -> dict[str, Any]:
        """DeidOptions keyword overrides named by the first rule of this route (none: the default profile)."""
        for rule in self.routes:
            if rule.route == route and rule.deid:
                return dict(rule.deid)
        return {}


def parse_caller(text: str) -> CallerRule:
    ae_title, _, host = text.strip().partition("@")
    return CallerRule(ae_title=ae_title.strip(), host=host.strip() or None)


def load_routing(settings: Settings) -> RoutingTable:
    callers = [parse_caller(text) for text in settings.scp_allowed_callers if text.strip()]
    table = RoutingTable(callers=tuple(callers))
    if settings.scp_routes_file is not None:
        from_file = load_routes_file(settings.scp_routes_file)
        table = RoutingTable(callers=tuple(callers) + from_file.callers, routes=from_file.routes,
                             default_route=from_file.default_route)
    return table


def check_for_production(settings: Settings, table: RoutingTable) -> None:
    if table.accepts_everyone:
        if settings.env == "production":
            raise ConfigurationError(
                "PACSLABEL_SCP_ALLOWED_CALLERS is empty: production refuses to accept C-STORE from any caller; "
                "list the AE titles (e.g. CT1,PACS2@10.0.0.7) or an allowed_callers section in the routes file"
            )
        logger.warning("storage SCP accepts every calling AE title (allow-list empty; development only)")


# --- YAML with line numbers -----------------------------------------------------------------------------


class _LineDict(dict[str, Any]):
    line: int = 0


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict(loader.construct_pairs(node, deep=True))
    result.line = node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _ae(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value.strip()) <= 16 or "\\" in value:
        raise RoutesFileError(f"{where}: an AE title is 1 to 16 characters without backslash, got {value!r}")
    return value.strip()


def load_routes_file(path: Path) -> RoutingTable:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RoutesFileError(f"{path}: cannot read the routes file ({exc.strerror})") from exc
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506  (SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RoutesFileError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if data is None:
        return RoutingTable()
    if not isinstance(data, dict):
        raise RoutesFileError(f"{path} line 1: expected a mapping with allowed_callers / routes / default_route")
    line = getattr(data, "line", 1)
    unknown = set(data) - {"allowed_callers", "routes", "default_route"}
    if unknown:
        raise RoutesFileError(f"{path} line {line}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")

    callers: list[CallerRule] = []
    for entry in data.get("allowed_callers") or []:
        if isinstance(entry, str):
            callers.append(parse_caller(entry))
            continue
        where = f"{path} line {getattr(entry, 'line', line)}"
        if not isinstance(entry, dict) or "ae_title" not in entry or set(entry) - {"ae_title", "host"}:
            raise RoutesFileError(f"{where}: a caller is an AE title or {{ae_title: X, host: optional}}")
        host = entry.get("host")
        callers.append(CallerRule(ae_title=_ae(entry["ae_title"], where), host=str(host) if host else None))

    routes: list[RouteRule] = []
    for entry in data.get("routes") or []:
        where = f"{path} line {getattr(entry, 'line', line)}"
        if not isinstance(entry, dict):
            raise RoutesFileError(f"{where}: a route is a mapping {{calling, called, route, deid}}")
        extra = set(entry) - {"calling", "called", "route", "deid"}
        if extra:
            raise RoutesFileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        name = entry.get("route")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise RoutesFileError(f"{where}: 'route' (the project name, 1-64 characters) is required")
        deid = entry.get("deid") or {}
        if not isinstance(deid, dict):
            raise RoutesFileError(f"{where}: 'deid' must be a mapping of de-identification options")
        routes.append(RouteRule(
            route=name.strip(),
            calling=_ae(entry["calling"], where) if entry.get("calling") is not None else None,
            called=_ae(entry["called"], where) if entry.get("called") is not None else None,
            deid=dict(deid),
        ))
    default_route = data.get("default_route", DEFAULT_ROUTE)
    if not isinstance(default_route, str) or not default_route.strip():
        raise RoutesFileError(f"{path} line {line}: default_route must be a non-empty name")
    return RoutingTable(callers=tuple(callers), routes=tuple(routes), default_route=default_route.strip())
