"""The soft prompt as a peft PromptTuningConfig adapter: creation, loading, export.

Initialisation (PromptSpec.init):
  random  embeddings of `virtual_tokens` vocabulary tokens drawn with the training seed
          (peft's SAMPLE_VOCAB: stays on the embedding manifold, unlike N(0, 1));
  text    peft's TEXT init from `init_text` (repeated or cut to the prompt length);
  bank    a given tensor [virtual_tokens, hidden] (a Prompt Bank entry), loaded through
          set_peft_model_state_dict; without one, the job falls back to random.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ptctl.errors import BadInputError, CorruptFileError
from ptctl.fsutil import atomic_write_json, follow_umask, fsync_dir
from ptctl.jobs.spec import PromptSpec

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
META = "ptctl_meta.json"


def _tuning_config(model_folder: str, prompt: PromptSpec, init: str):
    """peft's config for a fresh prompt: TEXT init from `init_text`, else SAMPLE_VOCAB."""
    from peft import PromptTuningConfig, PromptTuningInit

    use_text = init == "text"
    return PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=prompt.virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if use_text else PromptTuningInit.SAMPLE_VOCAB,
        prompt_tuning_init_text=prompt.init_text if use_text else None,
        tokenizer_name_or_path=model_folder if use_text else None,
    )


def build_prompt_model(model, model_folder: str, prompt: PromptSpec, seed: int,
                       init_prompt: torch.Tensor | None = None, name: str = "init prompt"):
    """Wrap the frozen `model` with a fresh prompt adapter; returns the PeftModel."""
    from peft import get_peft_model

    config = _tuning_config(model_folder, prompt, prompt.init)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    if init_prompt is not None:
        set_prompt(peft_model, init_prompt, name)
    return peft_model


def fresh_prompt(model, model_folder: str, prompt: PromptSpec, seed: int,
                 init: str) -> torch.Tensor:
    """The [virtual_tokens, hidden] float32 prompt that `build_prompt_model` starts a job with
    for `init` "random" (the same vocabulary draw from `seed`) or "text", without wrapping
    `model`: the Prompt Bank scores these starts against its entries, so a job that starts
    from random or text starts from the very prompt that was scored."""
    from peft.tuners.prompt_tuning.model import PromptEmbedding

    config = _tuning_config(model_folder, prompt, init)
    config.token_dim = model.get_input_embeddings().embedding_dim
    config.num_transformer_submodules = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        embedding = PromptEmbedding(config, model.get_input_embeddings())
    return embedding.embedding.weight.detach().to(torch.float32)


def prompt_parameter(peft_model) -> torch.nn.Parameter:
    """The trainable [virtual_tokens, hidden] tensor inside the adapter."""
    return peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight


def set_prompt(peft_model, tensor: torch.Tensor, name: str) -> None:
    """Load `tensor` into the adapter; a shape that does not fit is refused by `name`."""
    from peft import set_peft_model_state_dict

    param = prompt_parameter(peft_model)
    if tuple(tensor.shape) != tuple(param.shape):
        raise BadInputError(f"{name}: shape {tuple(tensor.shape)} does not fit this job "
                            f"(virtual_tokens x hidden size = {tuple(param.shape)})")
    set_peft_model_state_dict(peft_model, {"prompt_embeddings": tensor.to(param.dtype)})


def export_adapter(peft_model, folder: Path, base_model: str, meta: dict[str, Any]) -> None:
    """Write a peft-loadable adapter plus ptctl_meta.json, replacing `folder` atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        peft_model.peft_config[peft_model.active_adapter].base_model_name_or_path = base_model
        peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub
        atomic_write_json(tmp / META, meta)
        follow_umask(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_adapter(folder: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(prompt [virtual_tokens, hidden], ptctl metadata) of an exported adapter."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        tensors = load_file(str(folder / ADAPTER_WEIGHTS))
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInputError(f"{exc.filename}: missing (not an exported ptctl prompt)") from None
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{folder}: unreadable adapter ({exc})") from None
    if "prompt_embeddings" not in tensors:
        raise CorruptFileError(f"{folder / ADAPTER_WEIGHTS}: no prompt_embeddings tensor")
    return tensors["prompt_embeddings"], meta
