"""The Ray Train worker function: data-parallel training of the TextVAE (model maths lives in vaelm.model).

Runs in each Ray Train worker. Rank 0 validates, prints progress (JSON lines) and writes checkpoints;
every worker calls `ray.train.report` at the same steps (it is a barrier). Resume: the latest
checkpoint holds weights, optimiser, step, epoch and the metric history.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import ray.data
import ray.train
import ray.train.torch
import torch
from torch import nn

from vaelm.config.model import ModelConfig
from vaelm.config.train import TrainSpec
from vaelm.model.artifact import check_compatible
from vaelm.model.batching import length_buckets, pad_batch
from vaelm.model.metrics import evaluate
from vaelm.model.schedule import beta_at
from vaelm.model.vae import TextVAE, vae_loss
from vaelm.pipeline.progress import say


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def train_loop(config: dict[str, Any]) -> None:
    ray.data.DataContext.get_current().enable_progress_bars = False
    spec = TrainSpec.model_validate(config["spec"])
    model_cfg = ModelConfig.model_validate(config["model"])
    loop = spec.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(loop.cpus_per_worker)))
    torch.manual_seed(loop.seed)  # identical initial weights everywhere (DDP also broadcasts rank 0's)
    model = TextVAE(model_cfg)
    optimizer = make_optimizer(model, spec)
    state = restore(model, optimizer, model_cfg)
    device = ray.train.torch.get_device()
    ddp = ray.train.torch.prepare_model(model)
    gen = torch.Generator(device=device).manual_seed(loop.seed * 1000 + rank + state.step)
    val = _val_batches(loop.val_docs, loop.batch_size, device) if rank == 0 else []
    shard = ray.train.get_dataset_shard("train")
    steps_per_epoch = int(config["steps_per_epoch"])
    total = min(loop.max_steps or 10**12, loop.epochs * steps_per_epoch)
    clock = _Clock()
    while state.step < total:
        for tokens, lengths in islice(_batches(shard, loop, state, device), steps_per_epoch - state.step_in_epoch):
            out_terms = _step(ddp, optimizer, tokens, lengths, spec, state.step, gen, device)
            state.step += 1
            state.step_in_epoch += 1
            clock.add(out_terms.n_tokens * world, float(out_terms.loss.detach()))
            _maybe_fault(config.get("fault") or {}, rank, world, state.step)
            if state.step % loop.eval_every == 0 or state.step_in_epoch == steps_per_epoch or state.step == total:
                _validate_and_report(model, optimizer, val, state, spec, clock, rank, model_cfg)
            if state.step >= total:
                break
        if state.step_in_epoch >= steps_per_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    loop = spec.train
    params = model.parameters()
    if loop.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=loop.lr, weight_decay=loop.weight_decay)
    if loop.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=loop.lr, weight_decay=loop.weight_decay)
    return torch.optim.Adam(params, lr=loop.lr, weight_decay=loop.weight_decay)


def _batches(shard: Any, loop: Any, state: LoopState, device: torch.device) -> Any:
    chunks = (
        b["input_ids"]
        for b in shard.iter_batches(
            batch_size=loop.batch_size * loop.bucket_batches,
            batch_format="numpy",
            prefetch_batches=2,
            local_shuffle_buffer_size=loop.batch_size * loop.bucket_batches * 4 if loop.shuffle == "blocks" else None,
            local_shuffle_seed=loop.seed + state.epoch if loop.shuffle == "blocks" else None,
        )
    )
    pin = device.type == "cuda"
    for seqs in length_buckets(chunks, batch_size=loop.batch_size, seed=loop.seed + state.epoch * 7919):
        tokens, lengths = pad_batch(seqs, pin=pin)
        yield tokens.to(device, non_blocking=pin), lengths


def _step(
    ddp: nn.Module,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    spec: TrainSpec,
    step: int,
    gen: torch.Generator,
    device: torch.device,
) -> Any:
    ddp.train()
    with _autocast(device):
        out = ddp(tokens, lengths, word_dropout_rate=spec.loss.word_dropout, generator=gen)
    terms = vae_loss(
        out,
        tokens[:, 1:],
        beta=beta_at(step, spec.loss),
        free_bits=spec.loss.free_bits,
        bow_weight=spec.loss.bow_weight,
    )
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    if spec.train.grad_clip:
        nn.utils.clip_grad_norm_(ddp.parameters(), spec.train.grad_clip)
    optimizer.step()
    return terms


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA (LSTM and matmuls in bf16, loss in fp32); nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _val_batches(n_docs: int, batch_size: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seqs: list[np.ndarray] = []
    for batch in ray.train.get_dataset_shard("val").iter_batches(batch_size=512, batch_format="numpy"):
        seqs.extend(batch["input_ids"])
        if len(seqs) >= n_docs:
            break
    seqs = seqs[:n_docs]
    out = []
    for i in range(0, len(seqs), batch_size):
        tokens, lengths = pad_batch(seqs[i : i + batch_size])
        out.append((tokens.to(device), lengths))
    return out


class _Clock:
    def __init__(self) -> None:
        self.started, self.tokens, self.losses = time.monotonic(), 0, []  # type: ignore[var-annotated]

    def add(self, tokens: int, loss: float) -> None:
        self.tokens += tokens
        self.losses.append(loss)

    def take(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out = {"tokens_per_s": self.tokens / elapsed, "train_loss": float(np.mean(self.losses)) if self.losses else 0.0}
        self.restart()
        return out

    def restart(self) -> None:
        self.started, self.tokens, self.losses = time.monotonic(), 0, []


def _validate_and_report(
    model: TextVAE,
    optimizer: torch.optim.Optimizer,
    val: list[Any],
    state: LoopState,
    spec: TrainSpec,
    clock: _Clock,
    rank: int,
    model_cfg: ModelConfig,
) -> None:
    timing = clock.take()
    if rank != 0:
        ray.train.report({})
        clock.restart()
        return
    with _autocast(next(model.parameters()).device):
        metrics = evaluate(model, val, seed=spec.train.seed)
    row = {
        "step": state.step,
        "epoch": state.epoch,
        "beta": beta_at(max(state.step - 1, 0), spec.loss),
        **{k: float(v) for k, v in metrics.items()},
        **timing,
    }
    row["val_elbo"] = row["elbo_nll"]
    state.history.append(row)
    say("train " + json.dumps(row))
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp), model, optimizer, state, model_cfg)
        ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    clock.restart()  # validation and checkpoint time stay out of the next throughput window


def save_checkpoint(
    folder: Path, model: TextVAE, optimizer: torch.optim.Optimizer, state: LoopState, model_cfg: ModelConfig
) -> None:
    torch.save(model.state_dict(), folder / "model.pt")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    meta = {
        "step": state.step,
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "history": state.history,
        "model_config": model_cfg.model_dump(mode="json"),
    }
    (folder / "state.json").write_text(json.dumps(meta))


def restore(model: TextVAE, optimizer: torch.optim.Optimizer, model_cfg: ModelConfig) -> LoopState:
    """Load the latest checkpoint if Ray Train hands one over (resume); never unpickles objects."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return LoopState()
    with checkpoint.as_directory() as folder:
        meta = json.loads((Path(folder) / "state.json").read_text())
        check_compatible(meta["model_config"], model_cfg, where=f"checkpoint {checkpoint.path}")
        model.load_state_dict(torch.load(Path(folder) / "model.pt", weights_only=True))
        optimizer.load_state_dict(torch.load(Path(folder) / "optimizer.pt", weights_only=True))
    say(f"train: resumed from step {meta['step']} ({checkpoint.path})")
    return LoopState(
        step=meta["step"],
        epoch=meta["epoch"],
        step_in_epoch=meta["step_in_epoch"],
        resumed_from=meta["step"],
        history=meta["history"],
    )


def _maybe_fault(fault: dict[str, Any], rank: int, world: int, step: int) -> None:
    """Fault injection for tests: the last rank's process dies at a given step, once (marker file).

    It first waits a few seconds: Ray Train registers reported checkpoints on its health-check poll
    (every 2 s), and a worker that dies sooner loses the newest report, so the resume point would vary."""
    at, marker = fault.get("kill_at_step"), fault.get("marker")
    if at and marker and rank == world - 1 and step == int(at) and not os.path.exists(marker):
        Path(marker).write_text(str(step))
        say(f"fault injection: worker rank {rank} exits at step {step}")
        time.sleep(5)
        os._exit(1)
