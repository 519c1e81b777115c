"""config.yaml and its dataclasses agree; bad keys and values are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import Config

ROOT = Path(__file__).resolve().parents[1]


def test_config_yaml_is_the_built_in_default_and_lists_every_key():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert Config.from_dict(raw) == Config()
    assert raw == Config().to_dict()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"encoder": {"metod": "htp"}}, "unknown keys in encoder: metod"),
        ({"index": {"factroy": "Flat"}}, "unknown keys in index: factroy"),
        ({"serach": {}}, "unknown config sections: serach"),
        ({"encoder": {"method": "mean"}}, "encoder.method 'mean'"),
        ({"encoder": {"window": [5, 2]}}, "encoder.window"),
        ({"search": {"mode": "fuzzy"}}, "search.mode 'fuzzy'"),
        ({"index": {"shard_size": 0}}, "shard_size"),
        ({"index": {"page_vector": True}}, "index.page_vector needs index.window_tokens"),
    ],
)
def test_bad_configs_are_refused_by_name(raw, message):
    with pytest.raises(ValueError, match=message):
        Config.from_dict(raw)


def test_a_negative_exit_layer_and_its_positive_index_are_one_setting(tiny_model_dir):
    from htp import EncoderConfig

    assert EncoderConfig(exit_layer=-6).vector_settings() == EncoderConfig(exit_layer=13).vector_settings()
    assert EncoderConfig().resolved().exit_layer == 13  # the default, Gemma 3 270M, has 18 layers
    small = EncoderConfig(model="smollm2-135m", exit_layer=-3)
    assert small.vector_settings() == EncoderConfig(model="smollm2-135m", exit_layer=28).vector_settings()
    local = str(tiny_model_dir)
    assert (
        EncoderConfig(model=local, exit_layer=-1).vector_settings()
        == EncoderConfig(model=local, exit_layer=6).vector_settings()
    )
