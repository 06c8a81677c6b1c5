"""``edge-agent catalogue``: a catalogue file imported as an installer would, its refusals
with line numbers, and the list of what the site knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SITE, cli

pytestmark = pytest.mark.integration


def test_a_catalogue_is_imported_with_its_bad_rows_named(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n')
    (tmp_path / "data").mkdir()
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "product_id,name,category,price,currency\n"
        "4710001,Espresso beans 500 g,coffee,12.50,EUR\n"
        "4710002,Oat milk 1 l,dairy,1,5,EUR\n"
        "4710003,Green tea 250 g,tea,3.20,EUR\n"
    )
    done = cli("--config", str(config), "catalogue", "import", str(catalogue))
    assert done.returncode == 1, done.stderr
    assert "took 2 products" in done.stdout
    assert "refused line 3: more fields than the first line names" in done.stdout
    listed = cli("--config", str(config), "catalogue", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["4710001", "4710003"]
    assert "Espresso beans 500 g" in lines[0]
    assert "12.50 EUR" in lines[0]
    missing = cli("--config", str(config), "catalogue", "import", str(tmp_path / "none.csv"))
    assert missing.returncode == 2
    assert "cannot read the catalogue" in missing.stderr
