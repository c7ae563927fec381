"""Reading a project file so that every error names the file, the line and the field.

PyYAML's `compose` keeps a node tree with line marks; pydantic reports error locations as key paths. Walking the
path down the node tree gives the line of the offending value (or of the closest existing parent when a key is
missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from pacslabel.errors import BadInput
from pacslabel.projects.schema import DeidentificationOptions, ProjectSpec


@dataclass(frozen=True)
class FileProblem:
    line: int | None
    field: str
    message: str

    def render(self, filename: str) -> str:
        where = f"{filename} line {self.line}" if self.line else filename
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ProjectFileError(BadInput):
    """A project file is not valid; `problems` lists each one, the message has one line per problem."""

    def __init__(self, filename: str, problems: list[FileProblem]) -> None:
        self.filename = filename
        self.problems = problems
        super().__init__("\n".join(p.render(filename) for p in problems))


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _duplicate_keys(node: yaml.Node, path: list[str]) -> list[FileProblem]:
    # PyYAML keeps the last of two equal keys silently; in a project file that hides a mistake.
    problems: list[FileProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                problems.append(FileProblem(_line(key), ".".join([*path, name]), "duplicate key"))
            seen.add(name)
            problems.extend(_duplicate_keys(value, [*path, name]))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems.extend(_duplicate_keys(item, [*path, str(index)]))
    return problems


def _locate(root: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[int | None, str]:
    """Line of the node at `loc` (or its deepest existing parent) and the dotted field name."""
    node = root
    line = _line(root) if root is not None else None
    names: list[str] = []
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    # An unknown key is reported at the key itself; a bad value at the value.
                    child = value
                    line = _line(key) if not isinstance(value, yaml.ScalarNode) else _line(value)
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = _line(child)
        if child is None and isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # a pydantic union/validator tag, not a key of the file
        names.append(f"[{part}]" if isinstance(part, int) else str(part))
        node = child
    field = ".".join(names).replace(".[", "[")
    return line, field


def _message(error: dict[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        if error["loc"][:1] == ("deidentification",) and DeidentificationOptions is not None:
            known = ", ".join(sorted(DeidentificationOptions.model_fields))
            return f"unknown de-identification option (known: {known})"
        return "unknown key"
    if error["type"] == "missing":
        return "required, missing"
    return message


def parse_project_file(text: str, filename: str = "project.yaml") -> ProjectSpec:
    """Validate a project file; raises ProjectFileError with line and field for every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProjectFileError(filename, [FileProblem(mark.line + 1 if mark else None, "",
                                                      f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise ProjectFileError(filename, [FileProblem(_line(root) if root else None, "",
                                                      "a project file is a mapping (slug:, name:, split:, ...)")])
    duplicates = _duplicate_keys(root, []) if root is not None else []
    if duplicates:
        raise ProjectFileError(filename, duplicates)
    try:
        return ProjectSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            line, field = _locate(root, tuple(error["loc"]))
            problems.append(FileProblem(line, field, _message(dict(error))))
        raise ProjectFileError(filename, problems) from None
