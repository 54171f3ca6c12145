"""The prompt-tuning engine on the tiny-random model: data, loss, training, elasticity,
checkpoints, signals. The real SmolLM2 only in tests marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptctl.errors import BadInputError, CorruptFileError
from ptctl.jobs.paths import JobPaths
from ptctl.jobs.progress import read_progress
from ptctl.jobs.spec import PromptSpec, TaskSpec, load_spec
from ptctl.tuning import checkpoint as ck
from ptctl.tuning.data import (Batch, example_losses, label_scores, load_task,
                               prompt_label_losses)
from ptctl.tuning.launch import launch
from ptctl.tuning.models import load_base_model, model_identity, resolve_model
from ptctl.tuning.prompt import build_prompt_model, fresh_prompt, prompt_parameter, read_adapter
from ptctl.tuning.train import DataOrder

from helpers import REPO, run_cli

# A 64-wide model: one thread beats two that spin-wait on a shared 2-core machine.
torch.set_num_threads(1)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}

GOOD = ["great", "lovely", "good", "happy", "nice", "superb"]
BAD = ["bad", "awful", "sad", "poor", "ugly", "terrible"]


def write_task(path: Path, n: int = 200) -> Path:
    """Texts of 1-6 sentiment words, alternating labels: a task even a random model can fit."""
    import random

    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            words = GOOD if i % 2 else BAD
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
            f.write(json.dumps({"text": text, "label": "positive" if i % 2 else "negative"}) + "\n")
    return path


def write_spec(folder: Path, **training) -> Path:
    write_task(folder / "data.jsonl")
    settings = {"global_batch_size": 8, "micro_batch_size": 2, "learning_rate": 0.05,
                "max_steps": 20, "eval_every": 5, "checkpoint_every": 100, **training}
    spec = {"name": "tiny", "model": "tiny-random", "target": "accuracy >= 0.99",
            "deadline": "1h", "prompt": {"virtual_tokens": 4, "init": "random"},
            "task": {"source": "data.jsonl", "eval_samples": 24, "max_length": 32},
            "training": settings}
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def tiny():
    return load_base_model("tiny-random")


# --- models and data -------------------------------------------------------------------------

def test_tiny_random_is_seeded_and_cached(tiny):
    model, tokenizer = tiny
    again, _ = load_base_model("tiny-random")
    assert model_identity("tiny-random", model).hidden_size == 64
    assert model_identity("tiny-random", model).num_layers == 2
    assert all(not p.requires_grad for p in model.parameters()) and not model.training
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert tokenizer.decode(tokenizer(" héllo")["input_ids"]) == " héllo"


def test_example_losses_match_peft_forward(tmp_path):
    model, tokenizer = load_base_model("tiny-random")  # peft wraps it: not the shared one
    task = load_task(TaskSpec(source=str(write_task(tmp_path / "d.jsonl")), eval_samples=10),
                     tokenizer)
    peft_model = build_prompt_model(model, "unused", PromptSpec(virtual_tokens=5, init="random"),
                                    seed=0)
    weight = prompt_parameter(peft_model)
    base = weight.detach().clone()
    prompts = torch.stack([base, base * 0.5, torch.randn_like(base)])
    examples = task.train[:7]
    ours = torch.stack([example_losses(model, p.unsqueeze(0), Batch.of(examples, 0)).mean()
                        for p in prompts])
    reference = []
    for p in prompts:
        with torch.no_grad():
            weight.copy_(p)
            losses = []
            for ex in examples:
                ids = torch.tensor([list(ex.input_ids) + list(ex.target_ids)])
                labels = torch.tensor([[-100] * len(ex.input_ids) + list(ex.target_ids)])
                losses.append(peft_model(input_ids=ids, labels=labels).loss)
            reference.append(torch.stack(losses).mean())
    assert torch.allclose(ours, torch.stack(reference), atol=1e-5)
    # Rank scores of the gold label are minus the example loss (same forward, one path).
    scores = label_scores(model, base, examples, task.label_token_ids, tokenizer.pad_token_id)
    gold = torch.tensor([ex.label for ex in examples])
    batch_loss = example_losses(model, base.unsqueeze(0), Batch.of(examples, 0))
    assert torch.allclose(-scores.gather(1, gold[:, None])[:, 0], batch_loss, atol=1e-5)


@pytest.mark.parametrize("single", [False, True], ids=["multi-token words", "single-token words"])
def test_prompt_label_losses_are_the_rank_classification_loss(tiny, tmp_path, single):
    """The bank's scorer: cross-entropy of the gold label among the label words, as evaluation
    scores them, for every candidate at once (both the one-pass and the per-label path)."""
    model, tokenizer = tiny
    # Byte tokens: one-letter words after a template ending in a space are one token each.
    words = {"label_words": {"negative": "n", "positive": "p"},
             "template": "{text}\nLabel: "} if single else {}
    task = load_task(TaskSpec(source=str(write_task(tmp_path / "d.jsonl")), eval_samples=10,
                              **words), tokenizer)
    assert all(len(ids) == 1 for ids in task.label_token_ids) == single
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randn(3, 5, model.config.hidden_size, generator=gen)
    examples = task.train[:7]
    ours = prompt_label_losses(model, tokenizer, prompts, examples, task.label_token_ids,
                               max_batch=4)
    gold = torch.tensor([ex.label for ex in examples])
    for p, value in zip(prompts, ours):
        scores = label_scores(model, p, examples, task.label_token_ids, tokenizer.pad_token_id)
        expected = torch.nn.functional.cross_entropy(scores.log_softmax(-1), gold)
        assert value.item() == pytest.approx(expected.item(), abs=1e-5)


def test_task_split_is_seeded_and_labels_sorted(tiny, tmp_path):
    _, tokenizer = tiny
    path = write_task(tmp_path / "d.jsonl")
    a = load_task(TaskSpec(source=str(path), eval_samples=20, split_seed=3), tokenizer)
    b = load_task(TaskSpec(source=str(path), eval_samples=20, split_seed=3), tokenizer)
    c = load_task(TaskSpec(source=str(path), eval_samples=20, split_seed=4), tokenizer)
    assert a.labels == ("negative", "positive")
    assert [e.text for e in a.eval] == [e.text for e in b.eval] != [e.text for e in c.eval]
    assert len(a.train) == 180 and all(len(e.input_ids) <= 64 for e in a.train)


def test_packaged_tasks_read_sorted(tiny):
    _, tokenizer = tiny
    bbc = load_task(TaskSpec(source="bbc-topics", eval_samples=50, max_train_samples=20,
                             max_length=64), tokenizer)
    assert bbc.labels == ("business", "entertainment", "politics", "sport", "tech")
    assert {e.label for e in bbc.eval} == set(range(5))
    tweets = load_task(TaskSpec(source="tweet-sentiment", eval_samples=50, max_train_samples=20),
                       tokenizer)
    assert tweets.labels == ("negative", "neutral", "positive") and len(tweets.train) == 20


def test_csv_task_and_bad_files_are_named(tiny, tmp_path):
    _, tokenizer = tiny
    good = tmp_path / "ok.csv"
    good.write_text("sentence,y\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(10)))
    task = load_task(TaskSpec(source=str(good), text_field="sentence", label_field="y",
                              eval_samples=2), tokenizer)
    assert task.labels == ("a", "b") and len(task.train) == 8

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(BadInputError, match="empty.jsonl: no examples"):
        load_task(TaskSpec(source=str(empty)), tokenizer)
    no_col = tmp_path / "nocol.csv"
    no_col.write_text("text,lbl\nhello,a\n")
    with pytest.raises(BadInputError, match=r"nocol.csv: no column 'label'"):
        load_task(TaskSpec(source=str(no_col)), tokenizer)
    holes = tmp_path / "holes.jsonl"
    holes.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(BadInputError, match=r"holes.jsonl:2: missing or empty column 'label'"):
        load_task(TaskSpec(source=str(holes)), tokenizer)
    spec = TaskSpec(source=str(good), text_field="sentence", label_field="y", eval_samples=2)
    good.unlink()
    with pytest.raises(BadInputError, match="no such data file"):
        load_task(spec, tokenizer)


def test_label_word_that_tokenizes_to_nothing(tiny, tmp_path):
    _, tokenizer = tiny

    class Silent:
        """The byte tokenizer, except that it drops the word 'zilch' entirely."""

        bos_token_id = None

        def __call__(self, text, **kw):
            if isinstance(text, str) and text.strip() == "zilch":
                return {"input_ids": []}
            return tokenizer(text, **kw)

    spec = TaskSpec(source=str(write_task(tmp_path / "d.jsonl")), eval_samples=10,
                    label_words={"negative": "zilch", "positive": "yes"})
    with pytest.raises(BadInputError, match=r"label_words.negative: 'zilch' tokenizes to nothing"):
        load_task(spec, Silent())


def test_prompt_of_wrong_shape_is_refused_by_name():
    model, _ = load_base_model("tiny-random")
    with pytest.raises(BadInputError, match=r"bank:abc: shape \(4, 32\) does not fit"):
        build_prompt_model(model, "unused", PromptSpec(virtual_tokens=4, init="bank"), 0,
                           init_prompt=torch.zeros(4, 32), name="bank:abc")


@pytest.mark.parametrize("init, seed", [("random", 0), ("random", 7), ("text", 0)])
def test_fresh_prompt_is_the_start_a_job_builds(init, seed):
    """The Prompt Bank scores a job's own random and text starts with `fresh_prompt`: they
    must be the very prompts training starts from (same draw for the seed, same text)."""
    folder = resolve_model("tiny-random")
    prompt = PromptSpec(virtual_tokens=4, init=init, init_text="Is this good or bad?")
    model, _ = load_base_model("tiny-random")
    expected = prompt_parameter(build_prompt_model(model, folder, prompt, seed)).detach()
    fresh, _ = load_base_model("tiny-random")
    got = fresh_prompt(fresh, folder, prompt, seed, init)
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    other = fresh_prompt(fresh, folder, prompt, seed + 1, init)
    assert torch.equal(other, got) == (init == "text")  # the draw follows the seed


def test_data_order_depends_only_on_sample_index():
    lengths = [i % 13 + 1 for i in range(100)]
    a, b = DataOrder(lengths, 8, seed=1), DataOrder(lengths, 8, seed=1)
    epoch = [i for s in range(12) for i in a.step(s)]
    assert sorted(epoch) == sorted(set(epoch)) and len(epoch) == 96  # no repeats in an epoch
    assert [b.step(s) for s in (30, 2, 13)] == [a.step(s) for s in (30, 2, 13)]
    spread = sum(max(lengths[i] for i in a.step(s)) - min(lengths[i] for i in a.step(s))
                 for s in range(12)) / 12
    assert spread < 4  # bucketed: a step holds similar lengths (unsorted would be ~11)


# --- training, elasticity, checkpoints -------------------------------------------------------

@pytest.mark.parametrize("objective, fall", [("label_words", 0.15), ("vocabulary", 0.5)])
def test_loss_falls_and_result_is_a_peft_adapter(tmp_path, objective, fall):
    """Both objectives train (label_words, the default, starts near ln 2 on two labels)."""
    spec = load_spec(write_spec(tmp_path, max_steps=30, learning_rate=0.1, eval_every=10,
                                objective=objective))
    outcome = launch(spec, tmp_path / "job", 1)
    assert (outcome.status, outcome.reason, outcome.step) == ("finished", "max_steps", 30)
    losses = [loss for _, loss in read_progress(JobPaths(tmp_path / "job").progress).loss_curve]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - fall
    prompt, meta = read_adapter(outcome.result)
    assert prompt.shape == (4, 64) and meta["steps"] == 30 and meta["samples"] == 240
    assert len(meta["eval_curve"]) == 4 and meta["final_metric"]["accuracy"] >= 0
    config = json.loads((outcome.result / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 4


def test_label_words_objective_trains_on_the_rank_classification_loss(tmp_path):
    """objective label_words: each step's loss is the gold label's cross-entropy among the
    label words (what evaluation ranks), not over the vocabulary, and it trains (label words
    of several byte tokens here: the per-label path)."""
    spec = load_spec(write_spec(tmp_path, max_steps=30, learning_rate=0.1, eval_every=10,
                                objective="label_words"))
    model, tokenizer = load_base_model("tiny-random")
    task = load_task(spec.task, tokenizer)
    order = DataOrder([ex.length for ex in task.train], 8, spec.training.seed)
    first = [task.train[i] for i in order.step(0)]
    outcome = launch(spec, tmp_path / "job", 1)
    assert (outcome.status, outcome.step) == ("finished", 30)
    prompt0 = build_prompt_model(model, resolve_model(spec.model), spec.prompt, spec.training.seed)
    start = prompt_parameter(prompt0).detach().unsqueeze(0)
    rank_ce = prompt_label_losses(model, tokenizer, start, first, task.label_token_ids)
    vocab_ce = example_losses(model, start, Batch.of(first, tokenizer.pad_token_id)).mean()
    progress = read_progress(JobPaths(tmp_path / "job").progress)
    losses = [loss for _, loss in progress.loss_curve]
    assert losses[0] == pytest.approx(rank_ce.item(), abs=1e-4)
    # The evaluation loss (what a `loss <=` target reads) is the same objective's.
    eval_ce = prompt_label_losses(model, tokenizer, start, task.eval, task.label_token_ids)
    assert progress.eval_curve[0][2] == pytest.approx(eval_ce.item(), abs=1e-4)
    assert abs(losses[0] - vocab_ce.item()) > 0.5
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    with pytest.raises(BadInputError, match="training.objective: got .labels."):
        load_spec(write_spec(tmp_path, objective="labels"))


@pytest.mark.parametrize("single", [True, False], ids=["one-token words", "longer words"])
def test_auto_objective_is_label_words_only_for_one_token_label_words(tmp_path, single):
    """The default, auto: label_words where it costs what vocabulary costs (one token per label
    word), vocabulary where label_words would need a forward pass per label."""
    spec = load_spec(write_spec(tmp_path, max_steps=2))
    assert spec.training.objective == "auto"
    if single:  # byte tokens: one-letter words after a template ending in a space
        spec.task.label_words = {"negative": "n", "positive": "p"}
        spec.task.template = "{text}\nLabel: "
    outcome = launch(spec, tmp_path / "job", 1)
    _, meta = read_adapter(outcome.result)
    assert meta["objective"] == ("label_words" if single else "vocabulary")


def test_resume_at_other_world_sizes_matches_uninterrupted_run(tmp_path):
    spec = load_spec(write_spec(tmp_path))
    straight = launch(spec, tmp_path / "a", 1)
    for gpus, steps in ((1, 8), (2, 7)):
        stopped = launch(spec, tmp_path / "b", gpus, stop_after=steps)
        assert stopped.status == "stopped" and stopped.checkpoint.name == f"step_{stopped.step}"
    resized = launch(spec, tmp_path / "b", 4, stop_after=5)
    assert (resized.status, resized.step) == ("finished", 20)
    a, meta_a = read_adapter(straight.result)
    b, meta_b = read_adapter(resized.result)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert [e[0] for e in meta_b["eval_curve"]] == [0, 5, 10, 15, 20]
    assert meta_a["samples"] == meta_b["samples"] == 160


_KILLED_WRITER = """
import sys, time, pathlib, torch
from ptctl.tuning import checkpoint as ck
folder = pathlib.Path(sys.argv[1])
ck.save_checkpoint(folder, 1, {"prompt": torch.ones(4, 8), "step": 1}, keep=3)
real = ck._write
def stalled(path, data):
    if path.name == ck.TENSORS:
        with path.open("wb") as f:
            f.write(data[: len(data) // 2])
        (folder / "writing").touch()
        time.sleep(60)
    real(path, data)
ck._write = stalled
ck.save_checkpoint(folder, 2, {"prompt": torch.zeros(4, 8), "step": 2}, keep=3)
"""


def test_sigkill_while_writing_leaves_previous_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(folder)])
    deadline = time.time() + 60
    while not (folder / "writing").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in ck.list_checkpoints(folder)] == ["step_1"]
    assert torch.equal(ck.load_checkpoint(ck.latest_checkpoint(folder))["prompt"], torch.ones(4, 8))
    ck.save_checkpoint(folder, 3, {"step": 3}, keep=3)  # the next save clears the debris
    assert not list(folder.glob(".step_*"))


def test_truncated_or_tampered_checkpoint_is_named(tmp_path):
    state = {"prompt": torch.randn(4, 8), "optimizer": {"state": {0: {"m": torch.ones(2)}}},
             "history": [[1, 0.5]], "finished": None}
    path = ck.save_checkpoint(tmp_path, 7, state, keep=2)
    back = ck.load_checkpoint(path)
    assert torch.equal(back["prompt"], state["prompt"]) and 0 in back["optimizer"]["state"]

    tensors = path / ck.TENSORS
    blob = tensors.read_bytes()
    tensors.write_bytes(blob[:-10])
    with pytest.raises(CorruptFileError, match=r"step_7/tensors.safetensors: .*truncated"):
        ck.load_checkpoint(path)
    tensors.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CorruptFileError, match=r"step_7/tensors.safetensors: checksum mismatch"):
        ck.load_checkpoint(path)
    tensors.write_bytes(blob)
    record = path / ck.RECORD
    record.write_text(record.read_text().replace('"step": 7', '"step": 8'))
    with pytest.raises(CorruptFileError, match=r"step_7/record.json: checksum mismatch"):
        ck.load_checkpoint(path)


def test_sigusr2_saves_and_exits_cleanly(tmp_path):
    spec = write_spec(tmp_path, max_steps=100000, eval_every=100000, checkpoint_every=100000)
    proc = subprocess.Popen([sys.executable, "-m", "ptctl", "run", str(spec), "--gpus", "2",
                             "--dir", str(tmp_path / "job"), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=ONE_THREAD)
    progress = JobPaths(tmp_path / "job")
    deadline = time.time() + 120
    while not progress.progress.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    sent = time.time()
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.time() - sent < 10
    result = json.loads(out)
    assert (result["status"], result["reason"]) == ("stopped", "signal")
    record = read_progress(progress.progress)
    assert record.status == "stopped" and record.world_size == 2
    latest = ck.latest_checkpoint(progress.checkpoints)
    assert latest.name == f"step_{record.step}" == f"step_{result['step']}"
    assert ck.load_checkpoint(latest)["step"] == record.step


def test_run_with_a_bad_spec_exits_2(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nmodel: tiny-random\ntask: missing.jsonl\ntarget: accuracy >= 0.9\n"
                    "deadline: 1h\n")
    proc = run_cli("run", str(spec), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "missing.jsonl" in proc.stderr

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    spec.write_text(spec.read_text().replace("missing.jsonl", "empty.jsonl"))
    proc = run_cli("run", str(spec), cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "empty.jsonl: no examples" in proc.stderr


def test_corrupt_checkpoint_stops_the_run(tmp_path):
    spec = load_spec(write_spec(tmp_path, max_steps=4))
    launch(spec, tmp_path / "job", 1, stop_after=2)
    latest = ck.latest_checkpoint(tmp_path / "job" / "checkpoints")
    (latest / ck.TENSORS).write_bytes(b"")
    with pytest.raises(CorruptFileError, match="tensors.safetensors"):
        launch(spec, tmp_path / "job", 1)


@pytest.mark.slow
def test_smollm2_builtin_loads_with_single_token_labels():
    model, tokenizer = load_base_model("smollm2-135m")
    identity = model_identity("smollm2-135m", model)
    assert (identity.hidden_size, identity.num_layers) == (576, 30)
    for word in (" negative", " neutral", " positive"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
