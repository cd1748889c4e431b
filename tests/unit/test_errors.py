"""The one exception tree and the one enum of wire error codes (issue 11)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from schemas.errors import FleetError, WireErrorCode

PACKAGES = ["broker", "config", "controller", "device", "schemas"]
ROOT = Path(__file__).resolve().parents[2]
# Calls whose code argument goes on the wire: (function name, index of the code argument).
CODE_CALLS = {"TaskFailure": 0, "task_error": 0, "Rejection": 1, "FleetCodeError": 0}


def project_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
                  if not info.name.startswith("controller.migrations")]  # alembic scripts, run by alembic only
    return names


def project_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in project_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # an optional extra (playwright) that is not installed
            if exc.name and exc.name.split(".")[0] in {"playwright", "psycopg"}:
                continue
            raise
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.split(".")[0] in PACKAGES:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_project_exception_derives_from_fleet_error() -> None:
    classes = project_exceptions()
    assert len(classes) >= 15, [c.__name__ for c in classes]  # the walk really found them
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, FleetError)]
    assert strays == [], f"exceptions outside the FleetError tree: {strays}"


def test_existing_names_keep_their_old_bases_and_modules() -> None:
    from broker.embedded import BrokerConfigError, PortInUseError
    from broker.listeners import ListenerConfigError
    from config.settings import SettingsError
    from controller.server import ControllerStartupError
    from controller.services import files
    from controller.services.errors import PayloadTooLargeError, ServiceError
    from device.handlers.base import TaskFailure

    assert issubclass(PortInUseError, RuntimeError) and issubclass(BrokerConfigError, RuntimeError)
    assert issubclass(ListenerConfigError, ValueError)
    assert all(issubclass(c, FleetError) for c in (SettingsError, ControllerStartupError, ServiceError))
    assert files.PayloadTooLargeError is PayloadTooLargeError  # defined once
    failure = TaskFailure(WireErrorCode.SITE_ERROR, "the site answered 500")
    assert (failure.code, failure.message, str(failure)) == ("site_error", "the site answered 500", "the site answered 500")


def code_literals() -> list[tuple[str, int, str]]:
    """Every string literal passed as a wire code in device/, controller/ and schemas/."""
    found = []
    for package in ("device", "controller", "schemas"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                index = CODE_CALLS.get(name or "")
                if index is not None and len(node.args) > index:
                    arg = node.args[index]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found.append((str(path.relative_to(ROOT)), node.lineno, arg.value))
    return found


def test_wire_codes_are_enum_members_not_literals() -> None:
    assert code_literals() == [], "use a schemas.errors.WireErrorCode member for each code"


def test_the_scan_sees_a_literal(tmp_path: Path) -> None:
    tree = ast.parse('raise TaskFailure("site_error", "x")\nRejection(i, "invalid_json", m, s)')
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [n.func.id for n in calls if isinstance(n.func, ast.Name)] == ["TaskFailure", "Rejection"]


@pytest.mark.parametrize("code", list(WireErrorCode))
def test_every_code_is_documented_in_the_readme(code: WireErrorCode) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"| `{code.value}` |" in readme, f"README's error code table lacks {code.value}"
