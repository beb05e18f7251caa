"""The library versions the transport's patches were written against, and the upstream attributes each
patch relies on (its module's `RELIES_ON`). tests/test_transport_guard.py fails when either changed; the
worker only logs a warning on a version mismatch (`check_pins`, once per process, when an app is configured)."""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from importlib import metadata

log = logging.getLogger(__name__)

# Distribution name -> the version every patch module was checked against. Changing one means re-reading
# each patch module's "Upstream:" docstring paragraph against the new sources, then updating it here and
# in pyproject.toml.
PINNED = {"aiokafka": "0.14.0", "faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "rocksdict": "0.3.29"}

# One module per patch, each with a docstring (reason, upstream reference) and a RELIES_ON tuple of
# (module, "Class.attribute") pairs naming the upstream names it overrides, calls or reads.
PATCHES = ("fetch_wait", "outage_start", "group_join", "offset_gaps", "fair_drain", "handoff", "raw_delivery",
           "commit_flush", "rocks_store", "recovery_holes", "recovery_flow")


# Top-level import name of each pinned distribution.
IMPORT_NAMES = {"aiokafka": "aiokafka", "faust-streaming": "faust", "mode-streaming": "mode", "rocksdict": "rocksdict"}


def version_mismatches() -> list[str]:
    """One message per pinned distribution whose installed version differs (or that is not installed)."""
    problems = []
    for dist, pinned in PINNED.items():
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pinned:
            top = IMPORT_NAMES.get(dist, dist)
            users = sorted({patch for patch, module, _ in relied_on() if module.split(".")[0] == top})
            problems.append(
                f"{dist} {installed + ' is installed' if installed else 'is not installed'}, but streams/transport "
                f"was written against {dist}=={pinned}: re-check the 'Upstream:' paragraph of "
                f"{', '.join(f'streams/transport/{u}.py' for u in users) or 'every streams/transport module'} "
                f"against the new {dist} sources, then update PINNED in streams/transport/pins.py and the pin in "
                "pyproject.toml"
            )
    return problems


def relied_on() -> list[tuple[str, str, str]]:
    """(patch module, upstream module, "Class.attribute") for every declared reliance of every patch."""
    out = []
    for name in PATCHES:
        patch = importlib.import_module(f"{__package__}.{name}")
        out.extend((name, module, attribute) for module, attribute in patch.RELIES_ON)
    return out


def _assigned_by(cls: type, name: str) -> bool:
    """Whether a class of `cls`'s MRO assigns `self.<name>` in its source (an instance attribute)."""
    pattern = re.compile(rf"\bself\.{re.escape(name)}\s*(:[^=\n]*)?=[^=]")
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


def resolves(module: str, attribute: str) -> bool:
    """Whether `module`.`attribute` (a dotted path) exists: as an attribute of the module or class, or, for
    the last step on a class, as an instance attribute its classes assign."""
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    steps = attribute.split(".")
    for i, step in enumerate(steps):
        if hasattr(obj, step):
            obj = getattr(obj, step)
        elif i == len(steps) - 1 and inspect.isclass(obj):
            return _assigned_by(obj, step)
        else:
            return False
    return True


def missing_upstream() -> list[str]:
    """One message per declared upstream name that no longer exists."""
    return [
        f"{module}.{attribute} is gone (streams/transport/{patch}.py relies on it): re-read that module's "
        f"'Upstream:' paragraph against the installed sources and adapt the patch"
        for patch, module, attribute in relied_on()
        if not resolves(module, attribute)
    ]


def check_pins() -> list[str]:
    """Log a warning for each version mismatch; never stops the worker. The scan for missing upstream names
    reads the libraries' sources (~0.4 s) and runs in tests/test_transport_guard.py: with the pinned
    versions installed, every name it checks is there."""
    try:
        problems = version_mismatches()
    except Exception:
        log.exception("could not check the transport's upstream pins")
        return []
    for problem in problems:
        log.warning("transport patch check: %s", problem)
    return problems
