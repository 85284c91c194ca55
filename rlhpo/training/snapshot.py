"""Snapshots of a training loop's state in host memory: what the guard
(:mod:`rlhpo.control.guard`) keeps and restores. The training session, the stacked trainer's
rows and a user's loop (:class:`LoopState`) all capture the same things: weights and buffers,
optimizer state, batch order; never the example clock or the hyperparameters in effect."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from rlhpo.errors import ControllerError


def map_nested(obj: Any, leaf: Callable[[Any], Any]) -> Any:
    """``obj`` rebuilt with ``leaf`` applied to everything that is not a dict, list or tuple."""
    if isinstance(obj, dict):
        return {k: map_nested(v, leaf) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_nested(v, leaf) for v in obj)
    return leaf(obj)


def _host(obj: Any) -> Any:
    if not isinstance(obj, torch.Tensor):
        return obj
    t = obj.detach()
    return t.clone() if t.device.type == "cpu" else t.to("cpu", non_blocking=True)


def to_host(obj: Any) -> Any:
    """A deep copy of ``obj`` with every tensor copied to host memory (non-blocking from a GPU)."""
    return map_nested(obj, _host)


def params_finite(params: Any) -> bool:
    """Whether every parameter is finite (one device sync for all)."""
    ps = [p.detach() for p in params]
    if not ps:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(ps))).all())


def check_scaler(scaler: Any) -> Any:
    """``scaler`` if the guard can snapshot it (None, or anything with ``state_dict`` and
    ``load_state_dict`` like ``torch.amp.GradScaler``); a clear error otherwise."""
    if scaler is not None and not (callable(getattr(scaler, "state_dict", None)) and callable(getattr(scaler, "load_state_dict", None))):
        raise ControllerError(f"scaler must be a torch.amp.GradScaler (or None), got {type(scaler).__name__}")
    return scaler


class LoopState:
    """A user's training loop as a :class:`Restorable`: its model (or, without one, the
    optimizer's parameters), its optimizer, if the controller has one its batch sampler, and a
    mixed-precision ``torch.amp.GradScaler`` if the loop uses one (its scale comes back with
    the weights it belongs to)."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: Optional[torch.nn.Module] = None, sampler: Any = None,
                 scaler: Any = None) -> None:
        self.optimizer, self.model, self.sampler, self.scaler = optimizer, model, sampler, scaler

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def capture(self) -> dict:
        weights = self.model.state_dict() if self.model is not None else {str(i): p for i, p in enumerate(self._params())}
        return to_host(
            {
                "weights": weights,
                "optimizer": self.optimizer.state_dict(),
                "sampler": None if self.sampler is None else self.sampler.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
            }
        )

    def restore(self, state: dict) -> None:
        if self.model is not None:
            self.model.load_state_dict(state["weights"])
        else:
            with torch.no_grad():
                for i, p in enumerate(self._params()):
                    p.copy_(state["weights"][str(i)])
        # the optimizer's lr/weight decay are the decision path's: keep the current ones
        groups = [{k: g[k] for k in ("lr", "weight_decay") if k in g} for g in self.optimizer.param_groups]
        # a copy: torch's load_state_dict keeps the given tensors as the optimizer's state (on the
        # same device and dtype), and training would then update the snapshot in place, so that a
        # second restore of it (a second rollback, a probe's next branch) would not be this state
        self.optimizer.load_state_dict(to_host(state["optimizer"]))
        for g, kept in zip(self.optimizer.param_groups, groups):
            g.update(kept)
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.sampler is not None and state["sampler"] is not None:
            batch_size = self.sampler.batch_size
            self.sampler.load_state_dict(state["sampler"])
            self.sampler.batch_size = batch_size

    def parameters(self) -> list[torch.Tensor]:
        return self._params()
