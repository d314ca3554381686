"""The developer tools' versions are pinned twice, in pyproject.toml's
`lint` extra (what CI's lint stage and `pip install ".[lint]"` install) and
in .pre-commit-config.yaml (what the commit hooks install): they must agree,
or a commit that passes its hooks can fail CI."""

import os
import re

import pytest

pytestmark = pytest.mark.any_isa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def lint_pins():
    block = re.search(r"^lint = \[(.*?)\]", read("pyproject.toml"), re.M | re.S).group(1)
    lines = (line.split("#", 1)[0] for line in block.splitlines())
    return dict(pin.split("==") for line in lines for pin in re.findall(r'"([^"]+)"', line))


def test_every_lint_tool_is_pinned_exactly():
    pins = lint_pins()
    assert set(pins) == {"ruff", "cython-lint", "mypy", "clang-format", "pre-commit"}
    assert all(re.fullmatch(r"\d+(\.\d+)+", v) for v in pins.values()), pins


def test_pre_commit_hooks_use_the_lint_pins():
    config = read(".pre-commit-config.yaml")
    pins = lint_pins()
    hooked = re.findall(r'"([A-Za-z0-9_-]+)==([^"]+)"', config)
    assert {name for name, _ in hooked} == {"ruff", "cython-lint", "clang-format"}
    for name, version in hooked:
        assert pins[name] == version, (name, version, pins[name])
    # mypy runs from the lint extra's environment; its comment names the pin
    assert f"mypy=={pins['mypy']}" in config
