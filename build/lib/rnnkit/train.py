r"""Training loop for the course's small sequence models: one ``Trainer`` run under one
:class:`~rnnkit.train_config.TrainConfig` (defined in :mod:`rnnkit.train_config`, re-exported here).

Chapter 5 ("LSTM vs GRU") trains with it to reproduce Chung et al. (2014); chapter 6 trains its character model.

What one update does (``Trainer._step``), in order:

1. **Weight noise** (Graves 2011), if ``weight_noise_std > 0``: save every parameter, add
   :math:`\epsilon \sim \mathcal{N}(0, \sigma^2)` drawn from the trainer's own seeded generator, so the forward and
   backward passes see :math:`\theta + \epsilon`.
2. Forward + ``loss_fn`` + backward.
3. Restore the saved (noise-free) parameters: the gradient taken at :math:`\theta + \epsilon` updates :math:`\theta`.
4. Record the **pre-clip** global gradient norm :math:`\lVert g \rVert_2` (over all parameters), raise
   ``FloatingPointError`` if the loss or that norm is NaN/inf (naming the step and the norm).
5. Clip by value (each entry into :math:`[-c, c]`) and/or by global norm
   (:math:`g \leftarrow g \cdot \min(1, \tau / \lVert g \rVert_2)`, Pascanu et al. 2013), then the optimizer step.

Data: ``fit(train, valid)`` takes indexable datasets (a list of examples, or a tuple of tensors sharing their first
dimension). Each epoch the trainer permutes the training indices with its own ``torch.Generator`` and calls
``collate_fn(list_of_examples)`` to build a batch, then ``loss_fn(model, batch)``, which returns either a scalar loss
or ``(mean_loss, count)`` so that epoch averages weight batches by how many items (e.g. time steps) they hold.

Exact resume: a checkpoint written at the end of each epoch holds the model, the optimizer, the data-order and
weight-noise generators, the global torch RNG (dropout), the epoch, the best weights and the history; resuming from
it gives bitwise the same weights as the uninterrupted run on the same device type (tested in
``tests/test_train.py``). A checkpoint from another device type also resumes, with a warning: the weight-noise
stream of a CUDA generator cannot continue on a CPU one (or the reverse), so it is reseeded. Resuming under a config
that changes ``lr``, ``batch_size``, clipping, weight noise, ... applies the new values from there on, with a warning
that lists them; a checkpoint of another model or optimizer is a ``ValueError``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import pickle
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import _checks
from .data.batching import as_dataset, default_collate, move_to
from .train_config import TrainConfig, resolve_device

__all__ = ["TrainConfig", "Trainer", "move_to", "default_collate"]

# What Trainer.state_dict() holds; a checkpoint without them is something else (e.g. a model file).
_STATE_KEYS = ("model", "optimizer", "data_generator", "noise_generator", "torch_rng", "cuda_rng", "epoch", "step",
               "history", "best_state", "best_loss", "bad_epochs")
# Config fields whose change on resume alters the rest of the run (epochs, patience, time_limit: extending is normal).
_RESUME_SETTINGS = ("lr", "eps", "rmsprop_alpha", "batch_size", "clip_norm", "clip_value", "weight_noise_std", "seed")


def _split_loss(out) -> tuple[torch.Tensor, int]:
    """``loss_fn`` returns a scalar, or ``(mean_loss, count)``; return both (count 1 for a bare scalar)."""
    expected = "expected loss_fn to return a scalar tensor or (mean_loss, count)"
    if isinstance(out, tuple):
        if len(out) != 2:
            raise TypeError(f"Trainer: {expected}, got a tuple of length {len(out)}")
        loss, count = out
        if isinstance(count, torch.Tensor) and count.numel() == 1:
            count = count.item()
        if isinstance(count, bool) or not isinstance(count, numbers.Real) or float(count) != int(float(count)):
            # int(2.7) would silently weight the batch by 2
            raise TypeError(f"Trainer: expected the count of (mean_loss, count) to be a whole number, got {count!r}")
        count = int(float(count))
        if count < 1:  # the mean over no items: nothing to weight an epoch average by
            raise ValueError(f"Trainer: expected a count >= 1 (items the mean_loss averages over), got {count}")
    else:
        loss, count = out, 1
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"Trainer: {expected}, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(f"Trainer: expected loss_fn to return a scalar loss, got shape {tuple(loss.shape)}")
    return loss, count


class Trainer:
    """Train ``model`` with ``loss_fn(model, batch) -> loss | (mean_loss, count)`` under ``config``.

    >>> trainer = Trainer(model, TrainConfig(epochs=5, lr=1e-2), loss_fn=my_loss)   # doctest: +SKIP
    >>> history = trainer.fit(train_examples, valid_examples)                         # doctest: +SKIP

    ``history`` (also ``trainer.history``) is a JSON-friendly dict of lists, one entry per epoch: ``epoch``,
    ``train_loss`` (mean over the epoch's updates, with weight noise, like the paper's training curves), ``valid_loss``,
    ``seconds`` (cumulative wall-clock), ``cpu_seconds`` (cumulative CPU time of this process: steadier than wall-clock
    on a shared machine), ``updates`` (cumulative optimizer steps); ``grad_norm`` holds the pre-clip
    gradient norm of every step; ``best_epoch`` and ``stop_reason`` say how training ended.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | None = None,
        loss_fn: Callable[[nn.Module, Any], Any] | None = None,
        *,
        collate_fn: Callable[[list], Any] | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer: expected model to be a torch.nn.Module, got {type(model).__name__}")
        self.config = config if config is not None else TrainConfig()
        if loss_fn is None:
            loss_fn = getattr(type(model), "loss", None)
            if not callable(loss_fn):
                raise ValueError("Trainer: pass loss_fn(model, batch), or use a model with a .loss(batch) method")
        self.loss_fn = loss_fn
        self.collate_fn = collate_fn or getattr(model, "collate", None) or default_collate
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            n = sum(1 for _ in model.parameters())
            raise ValueError(f"Trainer: expected the model to have trainable parameters, got none ({n} parameters, "
                             "all with requires_grad=False)")
        self.optimizer = self._make_optimizer()
        # Two private streams, so the data order does not shift when weight noise is switched on or off.
        self.data_generator = torch.Generator().manual_seed(self.config.seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(self.config.seed + 1)
        self.epoch = 0
        self.step = 0
        self.history: dict[str, Any] = self._empty_history()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_loss = math.inf
        self.bad_epochs = 0

    # ----------------------------------------------------------------------------------------------------- setup
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "rmsprop":
            return torch.optim.RMSprop(self.params, lr=c.lr, alpha=c.rmsprop_alpha, eps=c.eps)
        return torch.optim.Adam(self.params, lr=c.lr, eps=c.eps)

    @staticmethod
    def _empty_history() -> dict[str, Any]:
        return {"epoch": [], "train_loss": [], "valid_loss": [], "seconds": [], "cpu_seconds": [], "updates": [],
                "grad_norm": [], "best_epoch": None, "stop_reason": None}

    # ---------------------------------------------------------------------------------------------- one update
    def _step(self, batch) -> tuple[float, int, float]:
        c = self.config
        self.model.train()
        saved = None
        if c.weight_noise_std > 0:
            saved = [p.detach().clone() for p in self.params]
            with torch.no_grad():
                for p in self.params:
                    p.add_(torch.randn(p.shape, generator=self.noise_generator, device=p.device, dtype=p.dtype),
                           alpha=c.weight_noise_std)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            loss, count = _split_loss(self.loss_fn(self.model, batch))
            if not loss.requires_grad:
                raise ValueError("Trainer: the loss does not depend on any trainable parameter (it has no grad_fn); "
                                 "did loss_fn detach it, call .item(), or run under torch.no_grad()?")
            loss.backward()
        finally:  # also when loss_fn raises: a caller who catches it must not keep the noisy weights
            if saved is not None:
                with torch.no_grad():
                    for p, s in zip(self.params, saved, strict=True):
                        p.copy_(s)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0  # pre-clip ||g||_2
        self.history["grad_norm"].append(norm)
        value = float(loss.detach())
        if not (math.isfinite(value) and math.isfinite(norm)):
            what = "loss" if not math.isfinite(value) else "gradient norm"
            norms = self.history["grad_norm"]
            previous = f", previous step's gradient norm = {norms[-2]}" if len(norms) > 1 else ""
            raise FloatingPointError(
                f"Trainer: the {what} became non-finite at step {self.step} (epoch {self.epoch + 1}): "
                f"loss = {value}, pre-clip gradient norm = {norm}{previous}. "
                "Try a smaller lr, clip_norm, or check the data for NaN."
            )
        if c.clip_value is not None:
            torch.nn.utils.clip_grad_value_(self.params, c.clip_value)
        if c.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, c.clip_norm)
        self.optimizer.step()
        self.step += 1
        return value, count, norm

    # -------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, data, batch_size: int | None = None) -> float:
        """Mean loss over ``data`` (weighted by each batch's count), in eval mode, without weight noise."""
        data = as_dataset(data, "evaluation")
        batch_size = _checks.optional_int("Trainer.evaluate", "batch_size", batch_size, 1)
        bs = self.config.batch_size if batch_size is None else batch_size
        was_training = self.model.training
        self.model.eval()
        total, count = 0.0, 0
        try:
            for start in range(0, len(data), bs):
                items = [data[i] for i in range(start, min(start + bs, len(data)))]
                loss, n = _split_loss(self.loss_fn(self.model, move_to(self.collate_fn(items), self.device)))
                total += float(loss) * n
                count += n
        finally:  # an error in loss_fn must not leave the model in eval mode (dropout silently off in training)
            self.model.train(was_training)
        return total / count

    # ------------------------------------------------------------------------------------------------- fit
    def fit(self, train, valid=None) -> dict[str, Any]:
        """Train up to ``config.epochs`` epochs in total (a resumed checkpoint's included); return the history."""
        c = self.config
        train = as_dataset(train, "training")
        valid = as_dataset(valid, "validation") if valid is not None else None
        if c.checkpoint and os.path.isdir(c.checkpoint):  # else the first save fails, after an epoch of training
            raise ValueError(f"Trainer: checkpoint {c.checkpoint!r} is a folder; expected a file path such as "
                             f"{os.path.join(c.checkpoint, 'checkpoint.pt')!r}")
        if valid is None and c.patience is not None:  # early stopping watches the validation loss: never stop silently
            raise ValueError(f"Trainer: patience={c.patience} needs a validation set: call fit(train, valid)")
        if c.resume and c.checkpoint and os.path.exists(c.checkpoint):
            self.load_checkpoint(c.checkpoint)
        elif self.epoch == 0:
            torch.manual_seed(c.seed)  # dropout and any other global-RNG draw inside the model
        elapsed0 = self.history["seconds"][-1] if self.history["seconds"] else 0.0
        cpu0 = self.history["cpu_seconds"][-1] if self.history["cpu_seconds"] else 0.0
        start, cpu_start = time.perf_counter(), time.process_time()
        bar = tqdm(total=c.epochs, initial=self.epoch, desc="epochs", disable=not c.progress, leave=False)
        try:
            while self.epoch < c.epochs and self.history["stop_reason"] is None:
                order = torch.randperm(len(train), generator=self.data_generator).tolist()
                total, count = 0.0, 0
                for b in range(0, len(order), c.batch_size):
                    batch = move_to(self.collate_fn([train[i] for i in order[b : b + c.batch_size]]), self.device)
                    loss, n, norm = self._step(batch)
                    total += loss * n
                    count += n
                    if self.step % c.log_every == 0:
                        bar.set_postfix(loss=f"{loss:.4g}", grad_norm=f"{norm:.3g}")
                self.epoch += 1
                valid_loss = self.evaluate(valid) if valid is not None else None
                if valid_loss is not None and not math.isfinite(valid_loss):
                    # a NaN never compares as better: best_epoch and early stopping would fail silently
                    raise FloatingPointError(
                        f"Trainer: the validation loss is {valid_loss} after epoch {self.epoch}; "
                        "check the validation data for NaN/inf and the model's outputs")
                self._end_epoch(total / count, valid_loss, elapsed0 + time.perf_counter() - start,
                                cpu0 + time.process_time() - cpu_start)
                bar.update(1)
                if valid_loss is not None:
                    bar.set_postfix(train=f"{total / count:.4g}", valid=f"{valid_loss:.4g}")
                if c.checkpoint:
                    self.save_checkpoint(c.checkpoint)
        finally:
            bar.close()
        if self.history["stop_reason"] is None:
            self.history["stop_reason"] = "max_epochs"
        if valid is not None and c.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history

    def _end_epoch(self, train_loss: float, valid_loss: float | None, seconds: float, cpu_seconds: float) -> None:
        h, c = self.history, self.config
        h["epoch"].append(self.epoch)
        h["train_loss"].append(train_loss)
        h["valid_loss"].append(valid_loss)
        h["seconds"].append(seconds)
        h["cpu_seconds"].append(cpu_seconds)
        h["updates"].append(self.step)
        if valid_loss is not None:
            if valid_loss < self.best_loss:
                self.best_loss, self.bad_epochs = valid_loss, 0
                h["best_epoch"] = self.epoch
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                self.bad_epochs += 1
                if c.patience is not None and self.bad_epochs >= c.patience:
                    h["stop_reason"] = "early_stopping"
        if c.time_limit is not None and seconds >= c.time_limit and h["stop_reason"] is None:
            h["stop_reason"] = "time_limit"

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (all tensors, numbers, strings and lists: loads with weights_only=True)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_generator": self.data_generator.get_state(),
            "noise_generator": self.noise_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "epoch": self.epoch,
            "step": self.step,
            "history": copy.deepcopy(self.history),
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "bad_epochs": self.bad_epochs,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in _STATE_KEYS if k not in state] if isinstance(state, dict) else list(_STATE_KEYS)
        if missing:
            raise ValueError(f"Trainer: expected a Trainer checkpoint (TrainConfig.checkpoint), missing {missing[:3]}"
                             f"{' ...' if len(missing) > 3 else ''}; a model saved by `rnnkit train --out` is not one")
        saved = state.get("config") or {}
        if saved.get("optimizer", self.config.optimizer) != self.config.optimizer:
            raise ValueError(f"Trainer: the checkpoint was written with optimizer {saved['optimizer']!r}, this trainer "
                             f"uses {self.config.optimizer!r}; its state cannot continue in another optimizer")
        # Compare before loading: load_state_dict copies the matching tensors before it reports the others.
        own, theirs = self.model.state_dict(), state["model"]
        problems = [f"missing {k}" for k in own if k not in theirs]
        problems += [f"unexpected {k}" for k in theirs if k not in own]
        problems += [f"{k}: {tuple(theirs[k].shape)} in the checkpoint, {tuple(v.shape)} here" for k, v in own.items()
                     if k in theirs and theirs[k].shape != v.shape]
        if problems:
            raise ValueError(f"Trainer: the checkpoint's weights do not fit this model (another cell type or size?): "
                             f"{'; '.join(problems[:3])}{' ...' if len(problems) > 3 else ''}")
        self.model.load_state_dict(theirs)
        self.optimizer.load_state_dict(state["optimizer"])
        self._apply_changed_settings(saved)
        self.data_generator.set_state(state["data_generator"])
        try:
            self.noise_generator.set_state(state["noise_generator"])
        except RuntimeError:
            # Written on another device type (a CUDA generator's state does not fit a CPU one, or the reverse): that
            # stream cannot be continued here, so the weight noise after resuming differs from the original run.
            warnings.warn(
                f"Trainer: the checkpoint's weight-noise generator state ({state['noise_generator'].numel()} bytes) "
                f"was written on another device type than {self.device}; reseeding it from seed + 1 + step, so "
                "weight noise after resuming differs from the uninterrupted run",
                stacklevel=3,
            )
            self.noise_generator.manual_seed(self.config.seed + 1 + state["step"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = copy.deepcopy(state["history"])
        self.best_state, self.best_loss, self.bad_epochs = state["best_state"], state["best_loss"], state["bad_epochs"]

    def _apply_changed_settings(self, saved: dict) -> None:
        """Resuming under a config that differs from the checkpoint's: the new values apply from here on (the
        optimizer's loaded hyperparameters are overwritten), and a warning lists them. ``seed`` cannot apply: the
        random streams continue from the checkpoint."""
        c = self.config
        for group in self.optimizer.param_groups:  # load_state_dict restored the checkpoint's lr, eps, alpha
            group["lr"], group["eps"] = c.lr, c.eps
            if c.optimizer == "rmsprop":
                group["alpha"] = c.rmsprop_alpha
        changed = [f"{k} {saved[k]!r} -> {getattr(c, k)!r}" for k in _RESUME_SETTINGS
                   if k in saved and saved[k] != getattr(c, k)]
        if changed:
            warnings.warn(f"Trainer: resuming with settings that differ from the checkpoint's ({'; '.join(changed)}); "
                          "the new values apply from here on, except seed: the random streams continue from the "
                          "checkpoint", stacklevel=5)

    def save_checkpoint(self, path: str) -> None:
        """Write atomically (temporary file + rename), so an interrupted save never leaves a corrupt checkpoint."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError) as e:  # not a torch file, truncated, foreign objects
            raise ValueError(f"Trainer: could not read the checkpoint {path} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
            self.load_state_dict(state)  # raises, naming what is missing
        # generator and RNG states are CPU ByteTensors (also a CUDA generator's), whatever the map_location
        for key in ("data_generator", "noise_generator", "torch_rng"):
            state[key] = state[key].cpu()
        state["cuda_rng"] = [t.cpu() for t in state["cuda_rng"]]
        self.load_state_dict(state)

