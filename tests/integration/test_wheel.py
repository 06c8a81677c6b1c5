"""The package as a site box gets it: a wheel built from the tree, installed in a fresh venv.

The shipped default model must be inside the wheel: outside the package, an installed agent
would have no default and would silently never serve one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers import SITE

REPO = Path(__file__).resolve().parents[2]


def _run(command: list[str], cwd: Path, env: dict[str, str], codes: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode in codes, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding only the built wheel; the test venv's packages are visible to it
    (nothing is downloaded), the repository is not."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        path = REPO / name.decode()
        if path.is_file():
            (source / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name.decode())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    wheels = work / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(source)],
        work, env,
    )  # fmt: skip
    (wheel,) = wheels.glob("edge_agent-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work, env)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work, env
        ).strip()
    )
    # A plain path line: the test venv's packages, but not its .pth files, so the editable
    # install of the repository does not come along.
    (site / "test-venv-packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        work, env,
    )  # fmt: skip
    return venv, env


def test_the_installed_wheel_verifies_and_serves_its_shipped_default(
    installed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    venv, env = installed
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import edge_agent; print(edge_agent.__file__)"],
        tmp_path,
        env,
    )
    assert Path(where.strip()).is_relative_to(venv), where
    config = tmp_path / "agent.toml"
    config.write_text(f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n')
    agent = [str(venv / "bin" / "edge-agent"), "--config", str(config)]
    # Exit 1: a site with no orders has no trending model to train; the default still installs.
    trained = _run([*agent, "models", "train", "--quick"], tmp_path, env, codes=(0, 1))
    assert "next-basket online-retail-2010 (shipped default): serving" in trained
    listing = json.loads(_run([*agent, "models", "list", "--json"], tmp_path, env))
    serving = {(e["name"], e["version"]) for e in listing if e["status"] == "serving"}
    assert ("next-basket", "online-retail-2010") in serving
    # The copy the registry now serves loads against its manifest and scores every item.
    folder = tmp_path / "data" / "models" / "next-basket" / "online-retail-2010"
    scores = _run([str(venv / "bin" / "python"), "-c", _SCORE, str(folder)], tmp_path, env)
    vocabulary, scored = scores.split()
    assert int(vocabulary) > 1000
    assert scored == vocabulary


_SCORE = """
import sys
from pathlib import Path
from edge_agent.core.recommend import Context, inputs
from edge_agent.core.releases import parse
from edge_agent.serving.models import load
from edge_agent.serving.recommend import history_decay, run_model

folder = Path(sys.argv[1])
manifest = parse((folder / "manifest.json").read_bytes())
session = load(folder / "model.onnx", manifest)
context = Context(history=((manifest.vocabulary[0],),), personal=True)
row = run_model(session, inputs(context, manifest.vocabulary, history_decay(manifest)))
print(len(manifest.vocabulary), row.size)
"""
