"""The elastic prompt-tuning loop: one process per GPU, resumable at any world size.

Read top to bottom: set up ranks and signals, load model and task, build the prompt, resume
from the latest checkpoint, then step until the target is reached or max_steps, checkpointing
every `checkpoint_every` steps and whenever a stop is asked for.

Elasticity rests on two rules:
  * the global batch is fixed: the step's `global_batch_size` samples are cut into
    micro-batches that are dealt round-robin to the ranks, gradients are summed across ranks
    (all_reduce) and divided by the global batch, so world size only changes who computes what;
  * the data order is a function of the global sample index (DataOrder below), so a run
    resized 1 -> 4 -> 2 ranks sees the same samples in the same order as an uninterrupted run.

Stopping: SIGUSR2 or SIGTERM (Slurm's warning and scancel), `stop_check()` returning True (the
Slurm layer's "a resize is pending"), or `stop_after` steps done in this session. Ranks agree
on stopping at the next step boundary (all_reduce MAX), rank 0 saves, all return.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from ptctl.errors import BadInputError
from ptctl.jobs.paths import JobPaths
from ptctl.jobs.progress import Progress, write_progress
from ptctl.jobs.spec import JobSpec
from ptctl.tuning.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ptctl.tuning.data import (Batch, example_losses, label_log_likelihoods, label_scores,
                               load_task, one_token_words)
from ptctl.tuning.models import load_base_model, model_identity, resolve_model
from ptctl.tuning.prompt import build_prompt_model, export_adapter, prompt_parameter, set_prompt
from ptctl.tuning.report import Report
from ptctl.tuning.speed import SessionSpeed

PROGRESS_EVERY_S = 5.0     # progress.json at most this often (plus at every eval / save / end)
STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


@dataclass
class TrainOutcome:
    """How a call to `train` ended.

    status: "finished" (reason target_reached or max_steps; result/ holds the adapter) or
            "stopped" (reason signal, stop_check or stop_after; a checkpoint was saved and the
            job resumes from it at any world size).
    """

    status: str
    reason: str
    step: int
    samples: int
    metrics: dict[str, float] | None
    checkpoint: Path | None
    result: Path | None = None
    signal_name: str | None = None  # "SIGUSR2" or "SIGTERM" when reason is "signal" here

    def __post_init__(self) -> None:
        if self.status not in ("finished", "stopped"):
            raise ValueError(f"status: got {self.status!r}, expected finished or stopped")


class DataOrder:
    """Training example indices as a pure function of the global sample index.

    Epoch e is a permutation seeded by (seed, e), length-bucketed: windows of 32 batches are
    sorted by length and cut into batches, and the batches shuffled, so each step holds
    similar lengths (little padding) while the order stays random. Each epoch uses the largest
    multiple of the global batch, so steps never straddle epochs.
    """

    WINDOW_BATCHES = 32

    def __init__(self, lengths: list[int], batch: int, seed: int):
        if len(lengths) < batch:
            raise BadInputError(f"training set has {len(lengths)} examples, fewer than "
                                f"global_batch_size={batch}")
        self.lengths, self.batch, self.seed = lengths, batch, seed
        self.steps_per_epoch = len(lengths) // batch
        self._epochs: dict[int, list[list[int]]] = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._epochs:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            order = order[:self.steps_per_epoch * self.batch]
            window = self.WINDOW_BATCHES * self.batch
            batches = []
            for lo in range(0, len(order), window):
                chunk = sorted(order[lo:lo + window], key=lambda i: self.lengths[i])
                batches += [chunk[i:i + self.batch] for i in range(0, len(chunk), self.batch)]
            rng.shuffle(batches)
            self._epochs = {epoch: batches}  # one epoch cached is enough
        return self._epochs[epoch]

    def step(self, step: int) -> list[int]:
        """The example indices of global samples [step * batch, (step + 1) * batch)."""
        return self._epoch(step // self.steps_per_epoch)[step % self.steps_per_epoch]


@dataclass
class TrainState:
    """Everything a resume needs, in one record (saved by ptctl.tuning.checkpoint)."""

    step: int = 0
    samples: int = 0
    losses: list[list[float]] = field(default_factory=list)   # [step, loss]
    evals: list[list[float]] = field(default_factory=list)    # [step, accuracy, eval_loss]
    finished: str | None = None
    init_prompt_id: str | None = None

    def state_dict(self, prompt: torch.Tensor, optimizer, scheduler) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        return {"step": self.step, "samples": self.samples, "losses": self.losses,
                "evals": self.evals, "finished": self.finished,
                "init_prompt_id": self.init_prompt_id, "prompt": prompt.detach(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng}

    @classmethod
    def restore(cls, saved: dict[str, Any], prompt_model, optimizer, scheduler, where: Path
                ) -> "TrainState":
        set_prompt(prompt_model, saved["prompt"], f"checkpoint {where}")
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["rng"]["cuda"])
        return cls(step=saved["step"], samples=saved["samples"], losses=saved["losses"],
                   evals=saved["evals"], finished=saved["finished"],
                   init_prompt_id=saved["init_prompt_id"])

    def metrics(self) -> dict[str, float] | None:
        if not self.evals:
            return None
        _, accuracy, loss = self.evals[-1]
        return {"accuracy": accuracy, "loss": loss}


def train(spec: JobSpec, root: Path, *, rank: int = 0, world_size: int = 1,
          init_method: str | None = None, device: str = "cpu",
          init_prompt: torch.Tensor | None = None, init_prompt_id: str | None = None,
          stop_check: Callable[[], bool] | None = None,
          stop_after: int | None = None, display: str = "auto") -> TrainOutcome:
    """Run (or resume) the job in `root` as rank `rank` of `world_size`.

    Every rank calls this with the same spec and root. `init_method` (e.g. tcp://host:port)
    is required when world_size > 1: NCCL on CUDA devices, gloo on CPU. `init_prompt` (a
    Prompt Bank entry, [virtual_tokens, hidden]) is used only when starting fresh; the latest
    checkpoint under root/checkpoints wins otherwise. `display` is how rank 0 shows progress
    (ptctl.tuning.report). Returns on every rank.
    """
    session_started = time.time()  # with loop_started: the model-load share of a resize
    run = JobPaths(root)
    t = spec.training
    report = Report(spec, display if rank == 0 else "off", world_size, device)
    stop_requested = _install_stop_handlers()
    if world_size > 1:
        if not init_method:
            raise BadInputError("init_method is required when world_size > 1")
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                init_method=init_method, rank=rank, world_size=world_size)
    try:
        # --- model, task, prompt, optimiser ------------------------------------------------
        model, tokenizer = load_base_model(spec.model, device)
        identity = model_identity(spec.model, model)
        task = load_task(spec.task, tokenizer)
        objective = training_objective(t.objective, task.label_token_ids)
        order = DataOrder([ex.length for ex in task.train], t.global_batch_size, t.seed)
        last = latest_checkpoint(run.checkpoints)
        if spec.prompt.init == "bank" and init_prompt is None:
            init_prompt_id = None  # no bank entry given: random init (see ptctl.tuning.prompt)
        prompt_model = build_prompt_model(
            model, resolve_model(spec.model), spec.prompt, t.seed,
            init_prompt if last is None else None,
            name=f"init prompt {init_prompt_id or ''}".strip())
        prompt = prompt_parameter(prompt_model)
        prompt.requires_grad_(True)
        optimizer = torch.optim.AdamW([prompt], lr=t.learning_rate, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, t.warmup_steps, t.max_steps))

        # --- resume ----------------------------------------------------------------------
        if last is not None:
            state = TrainState.restore(load_checkpoint(last), prompt_model, optimizer,
                                       scheduler, last)
        else:
            state = TrainState(init_prompt_id=init_prompt_id)
        resumed_from = state.step
        loop_started = time.time()  # model loaded, state restored: training can begin
        report.begin(state.step, last is not None, loop_started - session_started)

        def evaluate() -> dict[str, float]:
            began = time.monotonic()
            report.evaluating(len(task.eval))
            mine = task.eval[rank::world_size]
            scores = label_scores(model, prompt.detach().unsqueeze(0), mine,
                                  task.label_token_ids, tokenizer.pad_token_id)
            gold = torch.tensor([ex.label for ex in mine], dtype=torch.long)
            # The loss is the one training minimises, so that a `loss <=` target can be met.
            logp = scores.log_softmax(1) if objective == "label_words" else scores
            sums = torch.tensor([(scores.argmax(1) == gold).sum().item(),
                                 -logp.gather(1, gold.unsqueeze(1)).sum().item()],
                                dtype=torch.float64)
            _all_reduce(sums, device)
            n = len(task.eval)
            metrics = {"accuracy": sums[0].item() / n, "loss": sums[1].item() / n}
            state.evals.append([state.step, metrics["accuracy"], metrics["loss"]])
            report.evaluated(state.step, metrics)
            speed.evaluated(time.monotonic() - began)
            return metrics

        def save() -> Path | None:
            saved, began = None, time.monotonic()
            if rank == 0:
                saved = save_checkpoint(run.checkpoints, state.step,
                                        state.state_dict(prompt, optimizer, scheduler),
                                        t.keep_checkpoints)
            _barrier(world_size)
            speed.saved(time.monotonic() - began)
            return saved

        speed = SessionSpeed()

        def progress(status: str, reason: str | None = None) -> None:
            if rank != 0:
                return
            steps_per_s = speed.rate()
            write_progress(run.progress, Progress(
                status=status, reason=reason, step=state.step, samples=state.samples,
                max_steps=t.max_steps, global_batch_size=t.global_batch_size,
                world_size=world_size, loss=state.losses[-1][1] if state.losses else None,
                metrics=state.metrics(), target=str(spec.target), steps_per_s=steps_per_s,
                samples_per_s=steps_per_s * t.global_batch_size if steps_per_s else None,
                eval_s=speed.eval_s, checkpoint_s=speed.checkpoint_s,
                time=datetime.now(timezone.utc).isoformat(), updated=time.time(),
                resumed_from_step=resumed_from, session_started=session_started,
                loop_started=loop_started, loss_curve=state.losses, eval_curve=state.evals))
            speed.reported = time.monotonic()

        if not state.evals and state.finished is None:
            if spec.target.reached(evaluate()):
                state.finished = "target_reached"
        speed.restart()
        progress("running")

        # --- the loop --------------------------------------------------------------------
        steps_this_session = 0
        while state.finished is None:
            if state.step >= t.max_steps:
                state.finished = "max_steps"
                break
            asked = stop_requested.is_set() or bool(stop_check and stop_check())
            reason = ("signal" if stop_requested.is_set() else "stop_check") if asked else None
            if stop_after is not None and steps_this_session >= stop_after and not asked:
                reason = "stop_after"
            if _any_rank(reason is not None, device):
                reason = reason or "signal"  # another rank was signalled
                checkpoint = save()
                progress("stopped", reason)
                report.end("stopped", reason, state.step, state.metrics())
                return TrainOutcome("stopped", reason, state.step, state.samples, state.metrics(),
                                    checkpoint or latest_checkpoint(run.checkpoints),
                                    signal_name=stop_requested.signal_name)

            examples = sorted((task.train[i] for i in order.step(state.step)),
                              key=lambda ex: ex.length)
            micro = [examples[i:i + t.micro_batch_size]
                     for i in range(0, len(examples), t.micro_batch_size)]
            # Each micro-batch's gradient lands in its own slot (zeros elsewhere), the slots
            # are summed across ranks (x + 0 is exact) and then over micro-batches in one
            # fixed order: the step is bit-identical whatever the world size.
            grads = torch.zeros((len(micro), *prompt.shape), dtype=torch.float64)
            losses_by_part = torch.zeros(len(micro), dtype=torch.float64)
            for i in range(rank, len(micro), world_size):
                prompt.grad = None
                if objective == "label_words":
                    losses = -label_log_likelihoods(model, prompt.unsqueeze(0), micro[i],
                                                    task.label_token_ids,
                                                    tokenizer.pad_token_id)[0]
                else:
                    losses = example_losses(model, prompt.unsqueeze(0),
                                            Batch.of(micro[i], tokenizer.pad_token_id, device))
                (losses.sum() / t.global_batch_size).backward()
                grads[i] = prompt.grad.double().cpu()
                losses_by_part[i] = losses.detach().sum().double().cpu()
            _all_reduce(grads, device)
            _all_reduce(losses_by_part, device)
            prompt.grad = grads.sum(0).to(prompt.dtype).to(prompt.device)
            loss_sum = losses_by_part.sum()
            optimizer.step()
            scheduler.step()
            state.step += 1
            state.samples += t.global_batch_size
            steps_this_session += 1
            state.losses.append([state.step, loss_sum.item() / t.global_batch_size])
            speed.step()
            report.step(state.step, state.losses[-1][1], speed.rate())

            if state.step % t.eval_every == 0 or state.step >= t.max_steps:
                if spec.target.reached(evaluate()):
                    state.finished = "target_reached"
                progress("running")
            if state.step % t.checkpoint_every == 0 and state.finished is None:
                save()
                progress("running")
            elif time.monotonic() - speed.reported >= PROGRESS_EVERY_S:
                progress("running")

        # --- finish: final checkpoint and the exported prompt ------------------------------
        checkpoint = save()
        result = None
        if rank == 0:
            result = run.result
            export_adapter(prompt_model, result, spec.model, {
                "task": spec.task.source, "model": identity.name, "model_ref": spec.model,
                "hidden_size": identity.hidden_size, "num_layers": identity.num_layers,
                "virtual_tokens": spec.prompt.virtual_tokens, "labels": list(task.labels),
                "label_words": list(task.label_words), "template": spec.task.template,
                "max_length": spec.task.max_length, "text_field": spec.task.text_field,
                "label_field": spec.task.label_field,
                "steps": state.step, "samples": state.samples, "final_metric": state.metrics(),
                "target": str(spec.target), "reason": state.finished,
                "loss_curve": state.losses, "eval_curve": state.evals,
                "init_prompt_id": state.init_prompt_id, "job": spec.name, "objective": objective,
            })
        progress("finished", state.finished)
        report.end("finished", state.finished, state.step, state.metrics())
        _barrier(world_size)
        return TrainOutcome("finished", state.finished, state.step, state.samples,
                            state.metrics(), checkpoint or latest_checkpoint(run.checkpoints),
                            result or run.result)
    finally:
        report.close()
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
        _restore_handlers(stop_requested)


# --- helpers ---------------------------------------------------------------------------------

def training_objective(objective: str, label_token_ids: tuple[tuple[int, ...], ...]) -> str:
    """The loss a run trains on: "auto" is label_words when every label word is one token."""
    if objective != "auto":
        return objective
    return "label_words" if one_token_words(label_token_ids) else "vocabulary"


def lr_factor(step: int, warmup: int, max_steps: int) -> float:
    """Linear warmup over `warmup` steps, then linear decay to 0 at `max_steps`."""
    return min((step + 1) / (warmup + 1), max(0.0, (max_steps - step) / (max_steps - warmup)))


class _StopFlag(threading.Event):
    previous: dict[int, Any]
    signal_name: str | None = None  # the first stop signal received

    def receive(self, signum: int, _frame=None) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name
        self.set()


def _install_stop_handlers() -> _StopFlag:
    """SIGUSR2/SIGTERM set a flag checked at step boundaries (only the main thread can trap)."""
    flag = _StopFlag()
    flag.previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            flag.previous[sig] = signal.signal(sig, flag.receive)
    return flag


def _restore_handlers(flag: _StopFlag) -> None:
    for sig, handler in flag.previous.items():
        signal.signal(sig, handler)


def _collective(tensor: torch.Tensor, device: str) -> torch.Tensor:
    return tensor.to(device) if device.startswith("cuda") else tensor


def _all_reduce(tensor: torch.Tensor, device: str, op=None) -> None:
    """Sum (or `op`) across ranks in place; a no-op for a single process."""
    if not dist.is_initialized():
        return
    buf = _collective(tensor, device)
    dist.all_reduce(buf, op=op or dist.ReduceOp.SUM)
    if buf is not tensor:
        tensor.copy_(buf)


def _any_rank(flag: bool, device: str) -> bool:
    value = torch.tensor([1.0 if flag else 0.0])
    _all_reduce(value, device, dist.ReduceOp.MAX if dist.is_initialized() else None)
    return value.item() > 0


def _barrier(world_size: int) -> None:
    if world_size > 1 and dist.is_initialized():
        dist.barrier()
