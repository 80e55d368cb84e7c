"""The set-up that README and CI promise: one pinned constraints file, the same two commands everywhere.

.ci/run runs README's set-up block verbatim (via .ci/readme_commands.py), so these tests pin down what
that block must say; constraints.txt must pin torch and every dependency pyproject.toml names, each
inside pyproject's range (the ranges stay open for users installing lowbit into their own environment).
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ci_extras() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".ci" / "extras").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)=(\S+)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line)
            assert m, f"constraints.txt: not an exact pin: {line!r}"
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_readme_setup_block_is_the_two_pinned_commands():
    cmds = subprocess.run([sys.executable, str(ROOT / ".ci" / "readme_commands.py")], check=True,
                          capture_output=True, text=True).stdout.splitlines()
    extras = _ci_extras()
    assert len(cmds) == 2, cmds
    install, test = cmds
    assert install.startswith("pip install -c constraints.txt "), install
    assert f'"torch=={extras["TORCH_VERSION"]}"' in install, install
    assert f'-e ".[{extras["EXTRAS"]}]"' in install, install
    assert install.endswith("&& lowbit run"), install
    assert test == "python -m pytest -q"


def test_constraints_pin_torch_and_every_dependency_inside_its_range():
    pins = _pins()
    assert pins.get("torch") == _ci_extras()["TORCH_VERSION"]
    for req in _pyproject_requirements():
        name = _norm(req.name)
        assert name in pins, f"constraints.txt does not pin {req.name} (pyproject: {req})"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI installs exactly constraints.txt")
def test_ci_environment_is_the_pinned_one():
    pins = _pins()
    for req in _pyproject_requirements():
        got, pin = metadata.version(req.name), pins[_norm(req.name)]
        # a local label (torch's "+cpu") is the build, not the release: compare the public versions
        assert Version(got).public == Version(pin).public, f"{req.name}: installed {got}, pinned {pin}"


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI installs exactly constraints.txt")
def test_ci_environment_has_nothing_unpinned():
    """Every package in CI's environment is pinned (a dependency added without its own dependencies
    pinned would install whatever is newest)."""
    pins = _pins()
    # only what pip installed into the environment: packages vendored inside an installed one (setuptools'
    # _vendor, ray's thirdparty_files) join sys.path once imported, yet come with their parent's pin
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    loose = sorted({d.metadata["Name"] for d in metadata.distributions(path=site)
                   if _norm(d.metadata["Name"]) not in pins
                   and _norm(d.metadata["Name"]) not in ("pip", "setuptools", "wheel", "lowbit")})
    assert not loose, f"installed but not pinned in constraints.txt: {', '.join(loose)}"
