"""Steps/s of ptctl's training loop against a Hugging Face Trainer + peft baseline.

Same model, task, prompt init, learning rate, global batch and training examples. Two
baselines: the Trainer fed exactly ptctl's (length-bucketed) batches in order, which isolates
the loop itself (ptctl right-pads without an attention mask and computes logits only at label
positions; peft's forward uses padded attention masks and full logits), and the Trainer as
usually run, shuffling the same examples into its own batches (padding, masks). ptctl runs
first and last, to bracket any drift in machine load.

    python benchmarks/tune_vs_trainer.py [--spec jobs/smollm2-tweets.yaml] [--steps 10]

Prints a markdown table; both sides average every step, the first included.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ptctl.jobs.paths import JobPaths
from ptctl.jobs.progress import read_progress
from ptctl.jobs.spec import Target, load_spec
from ptctl.tuning.data import load_task
from ptctl.tuning.models import load_base_model, resolve_model
from ptctl.tuning.train import DataOrder, train

REPO = Path(__file__).resolve().parent.parent


def ptctl_mean_step(spec, steps: int) -> float:
    """Mean seconds per step of ptctl's own loop (train(), one rank) over `steps` steps, from
    its progress record (steps_per_s is a mean over the last 20 steps, evaluation excluded)."""
    assert steps <= 20
    with tempfile.TemporaryDirectory() as root:
        train(spec, Path(root), stop_after=steps)
        return 1.0 / read_progress(JobPaths(Path(root)).progress).steps_per_s


def trainer_steps(spec, steps: int, ptctl_batches: bool) -> list[float]:
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
    from transformers import (DataCollatorForSeq2Seq, Trainer, TrainerCallback,
                              TrainingArguments)

    model, tokenizer = load_base_model(spec.model)
    task = load_task(spec.task, tokenizer)
    t = spec.training
    order = DataOrder([ex.length for ex in task.train], t.global_batch_size, t.seed)
    examples = [task.train[i] for s in range(steps)
                for i in sorted(order.step(s), key=lambda i: task.train[i].length)]
    rows = [{"input_ids": list(ex.input_ids) + list(ex.target_ids),
             "labels": [-100] * len(ex.input_ids) + list(ex.target_ids)} for ex in examples]
    init = spec.prompt
    config = PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=init.virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if init.init == "text"
        else PromptTuningInit.SAMPLE_VOCAB,
        prompt_tuning_init_text=init.init_text if init.init == "text" else None,
        tokenizer_name_or_path=resolve_model(spec.model) if init.init == "text" else None)
    torch.manual_seed(t.seed)
    peft_model = get_peft_model(model, config)
    timings: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            timings.append(time.perf_counter() - self.started)

    class InOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=t.micro_batch_size,
            gradient_accumulation_steps=t.global_batch_size // t.micro_batch_size,
            learning_rate=t.learning_rate, weight_decay=0.0, max_steps=steps,
            lr_scheduler_type="linear", warmup_steps=t.warmup_steps, use_cpu=True,
            report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, remove_unused_columns=False, seed=t.seed)
        trainer_class = InOrder if ptctl_batches else Trainer
        trainer = trainer_class(model=peft_model, args=args, train_dataset=rows,
                                data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
                                callbacks=[Timer()])
        trainer.train()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(REPO / "jobs" / "smollm2-tweets.yaml"))
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    spec = load_spec(args.spec)
    spec.task.eval_samples = 8  # the step-0 evaluation is not timed; keep it short
    spec.target = Target.parse("loss <= 1e-9")  # never reached: always run all the steps
    spec.training.objective = "vocabulary"  # the Trainer's causal-LM loss: the same work
    first = ptctl_mean_step(spec, args.steps)
    same = statistics.mean(trainer_steps(spec, args.steps, ptctl_batches=True))
    shuffled = statistics.mean(trainer_steps(spec, args.steps, ptctl_batches=False))
    last = ptctl_mean_step(spec, args.steps)
    ours = (first + last) / 2
    print("| loop | steps | mean s/step | steps/s | ptctl speed-up |")
    print("|---|---|---|---|---|")
    for name, mean in (("ptctl (first)", first), ("ptctl (last)", last),
                       ("HF Trainer + peft, ptctl's batches", same),
                       ("HF Trainer + peft, its own shuffled batches", shuffled)):
        print(f"| {name} | {args.steps} | {mean:.3f} | {1 / mean:.3f} | {mean / ours:.2f} |")
    print(f"\nratio ptctl / Trainer steps/s: {same / ours:.2f} (same batches), "
          f"{shuffled / ours:.2f} (Trainer's own batches)")
    print(f"model {spec.model}, task {spec.task.source}, global batch "
          f"{spec.training.global_batch_size}, micro batch {spec.training.micro_batch_size}, "
          f"max_length {spec.task.max_length}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
