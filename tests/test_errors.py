"""User errors arrive as one line naming the file, key or value; real bugs keep their traceback."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import write_corpus
from htp.models import ModelNotFoundError, _gguf_path, load_model
from htp.registry import ModelDefaults, ModelSpec
from pipeline.cli import main as cli_main
from pipeline.config import Config
from pipeline.ingest.builder import build

BAD_CONFIGS = {
    "search:\n  k: ten\n": "search.k must be an integer, got 'ten'",
    'index:\n  shard_size: "5"\n': "index.shard_size must be an integer, got '5'",
    "encoder:\n  exit_layer: 2.5\n": "encoder.exit_layer must be an integer or null, got 2.5",
    'index:\n  center: "no"\n': "index.center must be true or false, got 'no'",
    "search:\n  rrf_k: 0\n": "search.rrf_k",
    "encoder:\n  window: [1, x]\n": "encoder.window must be a list of 2 values",
    "search: [k\n": "is not valid YAML",
    "- just\n- a list\n": "must be a mapping of sections",
    "encoder:\n  device: cuda\n": "no CUDA GPU",
    "search:\n  k: 5\n  k: 50\n": "the key 'k' is given twice",
    "search:\n  k: 5\nsearch:\n  mode: bm25\n": "the key 'search' is given twice",
}


@pytest.mark.parametrize("text", list(BAD_CONFIGS))
def test_bad_config_values_are_named_in_one_line(text, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3)
    code = cli_main(["build", "--config", str(path), "--input", str(corpus), "--out", str(tmp_path / "index")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and BAD_CONFIGS[text] in err
    assert err.startswith("htp build: error:") and len(err.splitlines()) == 1


def test_a_missing_config_file_is_named(tmp_path, capsys):
    assert cli_main(["build", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no configuration file" in capsys.readouterr().err


def test_k_below_one_is_refused_in_every_mode(config, tmp_path, capsys):
    out = tmp_path / "index"
    build(replace(config, index=replace(config.index, calibrate=False)), write_corpus(tmp_path / "c.jsonl", 6), out)
    for mode in ("dense", "bm25", "hybrid"):
        for k in ("0", "-3"):
            assert cli_main(["query", str(out), "protein", "-k", k, "--mode", mode]) == 2
            assert "k must be a whole number >= 1" in capsys.readouterr().err


def test_a_real_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(sys.modules["pipeline.ingest.builder"], "build", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli_main(["build", "--config", "config.yaml", "--out", str(tmp_path / "x")])


def test_booleans_are_only_real_booleans():
    assert Config.from_dict({"index": {"center": False}}).index.center is False
    with pytest.raises(ValueError, match="index.bm25 must be true or false"):
        Config.from_dict({"index": {"bm25": 1}})


def test_special_token_strings_in_a_text_are_encoded_as_text(make_encoder, tiny_tokenizer):
    encoder = make_encoder(method="vanilla-mean")
    layout = encoder.layouts(["the cat </s> sat <s> on the mat"])[0]
    text_ids = [layout.ids[i] for i in layout.pooled]
    assert tiny_tokenizer.eos_token_id not in text_ids and tiny_tokenizer.bos_token_id not in text_ids


def test_a_model_with_custom_code_is_refused_without_a_prompt(tiny_model_dir, tmp_path, monkeypatch):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="my-own-decoder",
        auto_map={"AutoConfig": "modeling_mine.MyConfig", "AutoModel": "modeling_mine.MyModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_mine.py").write_text("raise SystemExit('custom code ran')\n")

    def no_prompt(*args):
        raise AssertionError("asked on the terminal")

    monkeypatch.setattr("builtins.input", no_prompt)
    with pytest.raises(ModelNotFoundError, match="needs custom code"):
        load_model(str(folder), torch.device("cpu"), torch.float32)


def test_query_output_escapes_control_characters(config, tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    rows = [
        {"_id": "evil", "title": "red\x1b[31m alert\x07", "text": "protein market \x1b]0;owned\x07 news."},
        {"_id": "plain", "title": "calm", "text": "nothing to see here at all."},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "index"
    build(replace(config, index=replace(config.index, calibrate=False)), corpus, out)
    assert cli_main(["query", str(out), "protein market", "--mode", "bm25", "-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "\\x1b[31m" in printed


def test_a_file_of_blank_lines_is_named(config, tmp_path, capsys):
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n   \n\n")
    path = tmp_path / "config.yaml"
    path.write_text("index:\n  factory: Flat\n")
    assert cli_main(["build", "--config", str(path), "--input", str(blank), "--out", str(tmp_path / "i")]) == 2
    assert f"{blank} is empty (nothing but white space)" in capsys.readouterr().err


def test_a_window_outside_the_layers_that_run_is_refused(make_encoder):
    with pytest.raises(ValueError, match="nothing would be rewired"):
        make_encoder(window=(7, 9))
    assert make_encoder(window=(1, 6), exit_layer=3).config.window == (1, 6)  # a stop past the exit layer is cut
    with pytest.raises(ValueError, match=r"encoder.window \[0, 1000\] stops after the last layer of this 6-layer"):
        make_encoder(window=(0, 1000))  # a typo, not a cut


def test_an_assembled_gguf_is_checked_against_the_sha256_the_registry_records(tmp_path, monkeypatch):
    package = tmp_path / "site" / "chunked_gguf"  # stands for a chunk-assembling package such as gemma3-270m's
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n\ndef assemble(output_path):\n"
        "    Path(output_path).write_bytes(b'GGUF parts')\n    return Path(output_path)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = ModelSpec(
        defaults=ModelDefaults(),
        package="chunked_gguf",
        gguf_file="m.gguf",
        assembled=True,
        sha256=hashlib.sha256(b"GGUF parts").hexdigest(),
        install="pip install chunked-gguf",
    )
    cache = tmp_path / "cache"
    assert _gguf_path("chunked", spec, cache).read_bytes() == b"GGUF parts"
    (cache / "m.gguf").write_bytes(b"tampered")
    with pytest.raises(ModelNotFoundError, match="SHA-256 the registry records"):
        _gguf_path("chunked", spec, cache)
    with pytest.raises(ModelNotFoundError, match="not installed: `pip install nothing-here`"):
        _gguf_path("absent", replace(spec, package="no_such_package_here", install="pip install nothing-here"), cache)


def test_a_closed_pipe_ends_htp_quietly():
    """`htp models | head -1`: the reader leaves early; htp exits 0 without a traceback. (`true` reads nothing, so
    the first unbuffered write already meets the closed pipe.)"""
    import subprocess

    command = f"set -o pipefail; {sys.executable} -u -m pipeline.cli models | true"
    closed = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, check=False)
    assert closed.returncode == 0, closed.stderr
    assert "Traceback" not in closed.stderr and "BrokenPipe" not in closed.stderr


def test_a_cache_dir_that_cannot_be_made_is_named_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tmp_path / "config.yaml"
    config.write_text(f"encoder:\n  cache_dir: {blocker / 'cache'}\n")
    corpus = write_corpus(tmp_path / "corpus.jsonl", 3)
    code = cli_main(["build", "--config", str(config), "--input", str(corpus), "--out", str(tmp_path / "index")])
    assert code == 2
    err = capsys.readouterr().err
    assert "encoder.cache_dir" in err and "cannot be made" in err and "Traceback" not in err


def test_the_console_script_keeps_exit_status_and_output(tmp_path):
    """`htp` exits through gc.freeze (pipeline.cli.run): a failing command still exits 2 with its one line, and a
    working one exits 0 with all of its output written."""
    import subprocess

    htp = str(Path(sys.executable).with_name("htp"))
    failed = subprocess.run([htp, "info", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert failed.returncode == 2 and failed.stderr.startswith("htp info: error: no index at"), failed.stderr
    listed = subprocess.run([htp, "models"], capture_output=True, text=True, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    assert "gemma3-270m" in listed.stdout and "smollm2-135m" in listed.stdout
