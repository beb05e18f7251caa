"""streams/transport/ patches aiokafka, faust-streaming and mode-streaming internals: fail loudly when an
installed version differs from the one the patches were written against (streams/transport/pins.py), or
when an upstream name a patch declares in its RELIES_ON is gone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from streams.transport import pins

PACKAGE = Path(pins.__file__).parent
NOT_PATCHES = {"__init__", "options", "pins"}


@pytest.mark.parametrize("dist", sorted(pins.PINNED))
def test_installed_version_is_the_pinned_one(dist, monkeypatch):
    monkeypatch.setattr(pins, "PINNED", {dist: pins.PINNED[dist]})
    problems = pins.version_mismatches()
    assert not problems, "\n".join(problems)


def test_every_upstream_name_a_patch_relies_on_exists():
    problems = pins.missing_upstream()
    assert not problems, "\n".join(problems)


def test_every_module_of_the_package_is_a_declared_patch_with_its_reason_and_reliances():
    """A new patch module must be listed in pins.PATCHES (so the checks above see it), say why and what it
    overrides (its docstring, with an 'Upstream:' paragraph) and declare what it relies on."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - NOT_PATCHES
    assert modules == set(pins.PATCHES), (
        f"streams/transport modules {sorted(modules ^ set(pins.PATCHES))} are not listed in pins.PATCHES "
        "(or listed but missing): every patch module must be there so its RELIES_ON is checked"
    )
    for name in pins.PATCHES:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree) or ""
        assert "Upstream:" in doc, f"streams/transport/{name}.py: its docstring needs an 'Upstream:' paragraph"
        declared = [
            node for node in tree.body
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "RELIES_ON" for t in node.targets)
        ]  # fmt: skip
        assert declared, f"streams/transport/{name}.py declares no RELIES_ON"
    patches_with_reliances = {patch for patch, _, _ in pins.relied_on()}
    assert patches_with_reliances == set(pins.PATCHES), "a patch module has an empty RELIES_ON"


def test_the_checks_do_fail_on_a_wrong_pin_and_a_missing_name(monkeypatch):
    """The guard itself: a pin that is not installed and a name that does not exist are both reported."""
    monkeypatch.setattr(pins, "PINNED", {"aiokafka": "0.0.1"})
    (problem,) = pins.version_mismatches()
    assert "aiokafka" in problem and "0.0.1" in problem and "pins.py" in problem
    assert pins.resolves("aiokafka.consumer.subscription_state", "TopicPartitionState._position")  # instance attr
    assert not pins.resolves("aiokafka.consumer.subscription_state", "TopicPartitionState._no_such_attribute")
    assert not pins.resolves("aiokafka.consumer.subscription_state", "NoSuchClass.seek")
    assert not pins.resolves("aiokafka.no_such_module", "X")


def test_the_worker_start_check_only_warns(monkeypatch, caplog):
    monkeypatch.setattr(pins, "PINNED", {"mode-streaming": "0.0.1"})
    with caplog.at_level("WARNING", logger=pins.__name__):
        problems = pins.check_pins()
    assert any("mode-streaming==0.0.1" in p for p in problems)
    assert "mode-streaming==0.0.1" in caplog.text


def test_the_reelstream_scheme_resolves_to_the_package_s_transport():
    from faust.transport.drivers import by_url

    import streams.transport

    assert by_url(f"{streams.transport.SCHEME}://127.0.0.1:1") is streams.transport.Transport
