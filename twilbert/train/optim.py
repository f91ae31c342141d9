"""Optimisers behind one factory (``adam`` | ``adamw`` | ``lamb``), weight-decay groups, clipping.

Gradient accumulation, loss normalisation and clipping (:func:`clip_grad_norm`, on the accumulated
gradient) are the update loop's job (:mod:`twilbert.train.loop`); the optimizers see one ``step`` per
*update*, so the bias correction counts updates, not micro-batches, as the original custom Keras
``ADAM`` did (see docs/deviations.md). The original LAMB clipped each
micro-batch gradient to global norm 1.0 *before* accumulating; here clipping, when wanted, acts on
the accumulated gradient (as apex FusedLAMB's ``max_grad_norm``).

``adam``/``adamw`` are torch's (Kingma & Ba, Algorithm 1: ``lr · m̂ / (sqrt(v̂) + eps)``). The Keras
ADAM of the original folded the bias correction into the step size, ``lr·sqrt(1-β2^t)/(1-β1^t) ·
m / (sqrt(v) + eps)``, which is the same update with eps replaced by ``eps / sqrt(1-β2^t)``: a difference
only while ``sqrt(v̂)`` is near eps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

# Defaults per optimiser: (betas, eps). adam = the original TWilBERT ADAM (β2 0.98, ε 1e-6);
# adamw shares them (Cramming's adam.yaml also uses β2 0.98); lamb = the original LAMB.
DEFAULTS: dict[str, tuple[tuple[float, float], float]] = {
    "adam": ((0.9, 0.98), 1e-6),
    "adamw": ((0.9, 0.98), 1e-6),
    "lamb": ((0.9, 0.999), 1e-6),
}

_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), with bias correction.

    Per parameter ``p`` with gradient ``g`` at update ``t``::

        m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²
        u = (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps) + weight_decay · p
        r = ‖p‖ / ‖u‖   if ‖p‖ > 0 and ‖u‖ > 0, else 1
        p ← p - lr · r · u

    Fixes of the original TWilBERT ``LAMB`` (see docs/deviations.md): every parameter is updated
    (the original returned inside the parameter loop, so only the first one ever moved), and the trust
    ratio falls back to 1 when a norm is 0 (the original's zero-initialised biases got r = 0 and never
    moved). As apex ``FusedLAMB`` (bias_correction=True, adam_w_mode=True) except that the trust ratio
    is applied to every parameter, decayed or not, as in the paper.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    # step as a tensor, like torch.optim.Adam: state_dict loads with weights_only=True
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                grad = p.grad
                m.lerp_(grad, 1.0 - beta1)  # m = β1 m + (1-β1) g
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)

                update = (m / (1.0 - beta1**t)) / ((v / (1.0 - beta2**t)).sqrt_().add_(group["eps"]))
                if group["weight_decay"] != 0.0:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm = torch.linalg.vector_norm(p)
                u_norm = torch.linalg.vector_norm(update)
                # r = 1 when either norm is 0 (no host sync: computed on device)
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])
        return loss


def _adam(params, lr, betas, eps, weight_decay, **impl):
    # weight_decay here is torch's coupled L2 penalty (the original ADAM had none); prefer adamw.
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **impl)


def _adamw(params, lr, betas, eps, weight_decay, **impl):
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **impl)


def _lamb(params, lr, betas, eps, weight_decay, **impl):
    if impl:
        raise ValueError(f"lamb takes no implementation options, got {sorted(impl)}")
    return Lamb(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": _adam, "adamw": _adamw, "lamb": _lamb}


def build_optimizer(
    name: str,
    params: Iterable[torch.Tensor] | Iterable[dict],
    *,
    lr: float,
    betas: tuple[float, float] | None = None,
    eps: float | None = None,
    weight_decay: float = 0.0,
    **impl,
) -> torch.optim.Optimizer:
    """Build optimiser ``name`` over parameters or parameter groups (see :func:`param_groups`).

    ``betas``/``eps`` default per optimiser (``DEFAULTS``). ``weight_decay`` is the default for groups
    that do not set their own (``param_groups`` sets 0 on biases and norms). ``impl`` are speed-only
    options passed to torch's Adam/AdamW (e.g. ``fused=True`` or ``foreach=True`` on GPU).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    default_betas, default_eps = DEFAULTS[name]
    return OPTIMIZERS[name](
        params,
        lr=lr,
        betas=tuple(betas) if betas is not None else default_betas,
        eps=eps if eps is not None else default_eps,
        weight_decay=weight_decay,
        **impl,
    )


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed matrices, and undecayed biases / norm parameters.

    No decay for every parameter with fewer than 2 dimensions (biases, LayerNorm/BatchNorm gains and
    shifts, scalars) and for every parameter of a normalisation module (LayerNorm, BatchNorm, GroupNorm,
    RMSNorm, whatever their shape), as BERT and Cramming's ``limited_decay_keys``. Embedding tables and
    other matrices are decayed. Tied parameters appear once.
    """
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    decay, plain = [], []
    for _, p in model.named_parameters():  # named_parameters() already drops duplicates (tied weights)
        if not p.requires_grad:
            continue
        (plain if p.ndim < 2 or id(p) in no_decay else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Clip the global L2 norm of the gradients to ``max_norm`` and return the norm *before* clipping.

    ``max_norm`` None or <= 0: no clipping, only the norm (worth logging every step). Call it on the
    accumulated gradient, after the last micro-batch's backward and (with AMP fp16) after
    ``scaler.unscale_(optimizer)``. Non-finite norms are returned, not raised, so the loop can skip the
    step and log it.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    if max_norm is None or max_norm <= 0:
        return torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    return torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2.0, error_if_nonfinite=False)


__all__ = [
    "DEFAULTS",
    "Lamb",
    "OPTIMIZERS",
    "build_optimizer",
    "clip_grad_norm",
    "param_groups",
]
