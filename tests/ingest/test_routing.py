"""Allow-list and routes: settings and YAML, clear errors naming the line, production refuses an open port."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacslabel.ingest.routing import RoutesFileError, check_for_production, load_routes_file, load_routing
from pacslabel.settings import ConfigurationError
from tests.fixtures.database import make_test_settings


def test_routes_file_and_settings_combine_into_allow_list_and_routes(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "allowed_callers:\n  - MR7\n  - {ae_title: PACS2, host: 10.0.0.7}\n"
        "default_route: inbox\n"
        "routes:\n  - {calling: CT1, route: lung-ct}\n"
        "  - {called: NEURO, route: neuro, deid: {clean_graphics: true}}\n")
    settings = make_test_settings(tmp_path / "var", scp_allowed_callers="CT1", scp_routes_file=routes)
    table = load_routing(settings)
    assert table.is_allowed("CT1", "1.2.3.4") and table.is_allowed("MR7", None)
    assert table.is_allowed("PACS2", "10.0.0.7") and not table.is_allowed("PACS2", "10.0.0.8")
    assert not table.is_allowed("OTHER", "10.0.0.7")
    assert table.route_for("CT1", "PACSLABEL") == "lung-ct"
    assert table.route_for("MR7", "NEURO") == "neuro"
    assert table.route_for("MR7", "PACSLABEL") == "inbox"
    assert table.deid_overrides("neuro") == {"clean_graphics": True}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("routes:\n  - {calling: CT1, route: a\n", 3, "not valid YAML"),
    ("routes:\n  - {calling: CT1}\n", 2, "'route'"),
    ("routes:\n  - calling: CT1\n    route: x\n    colour: red\n", 2, "unknown key"),
    ("allowed_callers:\n  - {ae_title: WAYTOOLONGAETITLE17}\n", 2, "AE title"),
])
def test_bad_routes_file_gives_one_error_naming_the_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutesFileError) as info:
        load_routes_file(path)
    assert f"line {line}" in str(info.value) and words in str(info.value) and str(path) in str(info.value)


def test_empty_allow_list_accepts_everyone_in_development_and_refuses_production(tmp_path: Path) -> None:
    dev = make_test_settings(tmp_path / "var", env="development")
    assert load_routing(dev).is_allowed("ANYONE", "1.2.3.4")
    check_for_production(dev, load_routing(dev))
    prod = make_test_settings(tmp_path / "var", env="production")
    with pytest.raises(ConfigurationError, match="SCP_ALLOWED_CALLERS"):
        check_for_production(prod, load_routing(prod))
