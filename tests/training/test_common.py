"""Trainer configs from YAML and ``key=value`` overrides: types, unknown keys, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oasst.training.common import ConfigError, load_config


@dataclass
class Example:
    learning_rate: float = 1e-4
    max_steps: int = 10
    name: str = "run"
    langs: list[str] = field(default_factory=list)
    warmup: float | None = None


def test_overrides_win_over_the_file_and_numbers_keep_their_type(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 3.0e-4\nmax_steps: 100\nlangs: [en]\n")
    cfg = load_config(Example, path, ["learning_rate=1e-3", "warmup=5e-2", "name=1e-3", "langs=[en, de]"])
    assert cfg.learning_rate == pytest.approx(1e-3) and isinstance(cfg.learning_rate, float)
    assert cfg.warmup == pytest.approx(0.05)
    assert cfg.name == "1e-3"  # a text field keeps the text
    assert cfg.max_steps == 100 and cfg.langs == ["en", "de"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["lerning_rate=1"], "unknown setting(s) lerning_rate"),
        (["learning_rate=fast"], "learning_rate must be a number"),
        (["max_steps"], "must look like key=value"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(Example, None, overrides)


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(Example, path)
