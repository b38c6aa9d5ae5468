"""The detector in the loop: its loss as a function of explicit weights, and DetectorGAN's
unrolled step.

The generator is trained so that one detector step on real + synthetic images lowers the
detector's loss on *real* images:

    theta' = theta - eta * grad_theta L_det(theta; real + G(x))
    L_real = L_det(theta'; real)

and ``dL_real/dG`` is exact: ``torch.func.functional_call`` runs the torchvision detector on the
weights ``theta'``, which depend on G through a gradient taken with ``create_graph=True``, so the
backward pass differentiates through that gradient (second order, a Hessian-vector product;
not the finite-difference approximation of DARTS). Without unrolling, ``L_real`` is computed at
``theta`` and does not depend on G at all.

What is twice differentiable (checked on torch 2.14 / torchvision 0.29, CPU):

* ``ssd-mobilenet`` (BatchNorm in training mode, ReLU6, SSD's hard-negative-mined loss) and
  ``retinanet-r50`` (FrozenBatchNorm, focal loss, ``F.interpolate`` in the transform): yes.
* ``ssdlite-mbv3``: aten's ``hardsigmoid_backward`` has no derivative (MobileNetV3's squeeze-
  excitation gates). :func:`twice_differentiable` swaps each ``nn.Hardsigmoid`` for
  ``relu6(x + 3) / 6``, the same function built from ops that have one.
* ``fasterrcnn-mbv3``: torchvision's ``roi_align`` has no double backward; it cannot be
  unrolled (:func:`check_unrollable` says so) but serves the methods that do not unroll.

Anchor matching, hard-negative mining and the focal loss's target assignment take no gradient
(they depend only on the boxes and on the sort order), so they do not block the second order.
The virtual step runs on a copy of the detector's buffers: batch-norm statistics move only in
the detector's real step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from synthgen.errors import InputError

# Detectors with an op that has no double backward (and no twice-differentiable twin).
NOT_UNROLLABLE = {"fasterrcnn-mbv3": "torchvision's roi_align (its box head) has no double backward"}


class TwiceDifferentiableHardsigmoid(nn.Module):
    """``hardsigmoid(x) = relu6(x + 3) / 6``, from ops whose backward has a derivative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


def twice_differentiable(model: nn.Module) -> nn.Module:
    """Replace (in place) activation modules whose backward has no derivative by equal
    functions that have one; parameter names do not change. Returns ``model``."""
    for name, child in model.named_children():
        if isinstance(child, nn.Hardsigmoid):
            setattr(model, name, TwiceDifferentiableHardsigmoid())
        else:
            twice_differentiable(child)
    return model


def check_unrollable(detector: str) -> None:
    if detector in NOT_UNROLLABLE:
        raise InputError(
            f"detector {detector!r} cannot be unrolled: {NOT_UNROLLABLE[detector]}. Use ssd-mobilenet, "
            "ssdlite-mbv3 or retinanet-r50 with --method detectorgan (the paper used RetinaNet), or a "
            "method that does not unroll (no-unroll, acgan, cyclegan)"
        )


Weights = dict[str, torch.Tensor]


def detector_weights(model: nn.Module) -> tuple[Weights, Weights]:
    """The trainable parameters (by name) and the buffers of ``model``."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    return params, buffers


def detection_loss(
    model: nn.Module, params: Weights, buffers: Weights, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]
) -> torch.Tensor:
    """The summed training loss of the torchvision detector ``model`` (in train mode) on
    ``images`` (``N x 3 x H x W`` in [0, 1]) at weights ``params`` / ``buffers``."""
    losses = functional_call(model, (params, buffers), (list(images), targets), strict=False)
    return sum(losses.values())


def unrolled_real_loss(
    model: nn.Module,
    real: torch.Tensor,
    real_targets: list[dict[str, torch.Tensor]],
    synthetic: torch.Tensor,
    synthetic_targets: list[dict[str, torch.Tensor]],
    step_size: float,
    unroll: bool = True,
) -> torch.Tensor:
    """``L_det(theta - step_size * grad L_det(theta; real + synthetic); real)``: differentiable
    with respect to ``synthetic`` to second order (the graph of the inner gradient is kept).
    ``unroll=False``: ``L_det(theta; real)``, which does not depend on ``synthetic``."""
    params, buffers = detector_weights(model)
    virtual_buffers = {name: b.clone() for name, b in buffers.items()}
    if not unroll:
        return detection_loss(model, params, virtual_buffers, real, real_targets)
    inner = detection_loss(
        model, params, virtual_buffers, torch.cat([real, synthetic]), list(real_targets) + list(synthetic_targets)
    )
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
    stepped = {
        name: p if g is None else p - step_size * g for (name, p), g in zip(params.items(), grads)
    }
    return detection_loss(model, stepped, virtual_buffers, real, real_targets)
