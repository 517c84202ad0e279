"""Every shipped preset validates; `comm-presets` lists and describes them and names a bad one."""

from __future__ import annotations

import pytest

from comm_tower.zoo import list_presets, load_preset
from comm_tower.zoo.cli import main


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates(name: str):
    spec = load_preset(name)
    assert spec.name == name and spec.description


def test_paper_rows_are_presets():
    assert {"clip", "dinov2", "clip-mfm", "dinov2-mfm", "comm"} <= set(list_presets())
    assert {f"tiny-{n}" for n in ("clip", "dinov2", "clip-mfm", "dinov2-mfm", "comm")} <= set(list_presets())


def test_cli_lists_describes_and_rejects(capsys: pytest.CaptureFixture[str], tiny_dir):
    assert main([]) == 0
    assert "comm " in capsys.readouterr().out
    assert main(["tiny-comm", "--resolve"]) == 0
    out = capsys.readouterr().out
    assert "tokens 64, tower channels 384" in out
    with pytest.raises(SystemExit) as stop:
        main(["nope"])
    assert stop.value.code == 2
    assert "unknown COMM tower 'nope'" in capsys.readouterr().err
