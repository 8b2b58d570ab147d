"""SmoothQuant-style scales for the int8 graph, folded into a frozen backbone.

Decoder LLMs carry a few input channels of their projections far above the rest (on
SmolLM2-135M the MLP down projection's input reaches 40-470x its RMS); int8 with one
scale per row then spends its 255 steps on those channels. Smoothing divides input
channel ``j`` of a projection by ``s_j = amax_j**alpha / wmax_j**(1 - alpha)``
(``amax_j``: its largest input value on calibration texts, ``wmax_j``: its largest
weight) and multiplies the weights that read it by ``s_j``, so the product, and the
model's function, is unchanged up to rounding while the activations get flatter and the
weights take the difference. The division goes where it costs nothing: into the RMSNorm
whose output the q/k/v (or gate/up) projections read, and into the up projection's
output rows for the down projection (its input is ``act(gate) * up``).

:func:`smoothed` applies it for the length of a ``with`` block and puts every touched
weight back after, so ``pe export onnx --int8`` exports from a smoothed copy of the
function without changing the embedder the caller holds.

Example::

    with smoothed(embedder, texts, alpha=0.8, instruction="Retrieve ...") as groups:
        export_graph(embedder)          # the fp32 graph of the smoothed model
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

# SmoothQuant's migration strength; the score is flat around it
# (docs/benchmarks/inference.md, "Measurements behind the int8 recipe")
SMOOTH_ALPHA = 0.8


def calibrate(embedder: Any, texts: Sequence[str], instruction: str | None,
              max_length: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Per input channel, the largest |value| each layer projection reads over ``texts``,
    and for each projection that reads a norm's output unchanged, that norm's name."""
    import torch

    model = embedder.backbone.model
    amax: dict[str, Any] = {}
    source: dict[str, str] = {}
    live: dict[int, tuple[str, Any]] = {}  # id -> (norm, its output), kept alive

    def read(name: str) -> Any:
        def hook(module: Any, args: tuple) -> None:
            x = args[0].detach()
            a = x.abs().reshape(-1, x.shape[-1]).amax(0).float()
            amax[name] = a if name not in amax else torch.maximum(amax[name], a)
            hit = live.get(id(args[0]))
            if hit is not None and hit[1] is args[0]:
                source[name] = hit[0]
        return hook

    def wrote(name: str) -> Any:
        def hook(module: Any, args: tuple, out: Any) -> None:
            for key in [k for k, v in live.items() if v[0] == name]:
                del live[key]
            live[id(out)] = (name, out)
        return hook

    hooks = []
    for name, module in model.named_modules():
        if "layers." not in name:
            continue
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_pre_hook(read(name)))
        elif "norm" in type(module).__name__.lower():
            hooks.append(module.register_forward_hook(wrote(name)))
    try:
        with warnings.catch_warnings():  # long calibration texts are cut on purpose
            warnings.filterwarnings("ignore", message=".*longer than max_length")
            embedder.encode(list(texts), instruction=instruction, max_length=max_length)
    finally:
        for h in hooks:
            h.remove()
    return amax, source


def _set_norm_scale(norm: Any, divide_by: Any) -> None:
    """Divide an RMSNorm's per-channel output by ``divide_by`` (``w * x`` as in Llama or
    ``(1 + w) * x`` as in Gemma, told apart by probing it with ones)."""
    import torch

    w = norm.weight.data
    multiplier = norm(torch.ones(1, w.shape[0], dtype=w.dtype))[0].float()
    if torch.allclose(multiplier, w.float(), atol=1e-5):
        w.copy_((multiplier / divide_by).to(w.dtype))
    elif torch.allclose(multiplier, 1 + w.float(), atol=1e-5):
        w.copy_((multiplier / divide_by - 1).to(w.dtype))
    else:
        raise ValueError(f"{type(norm).__name__}: not a w*x or (1+w)*x norm")


def smooth(embedder: Any, texts: Sequence[str], alpha: float = SMOOTH_ALPHA,
           instruction: str | None = None, max_length: int = 128) -> int:
    """Fold the per-channel scales into ``embedder``'s backbone in place; returns the
    number of groups folded (one per norm that feeds projections, one per down
    projection)."""
    import torch

    amax, source = calibrate(embedder, texts, instruction, max_length)
    modules = dict(embedder.backbone.model.named_modules())

    def scale(names: Sequence[str]) -> Any:
        a = torch.stack([amax[n] for n in names]).amax(0)
        wmax = torch.stack([modules[n].weight.data.abs().amax(0) for n in names]).amax(0)
        return (a.clamp(min=1e-5) ** alpha / wmax.clamp(min=1e-5) ** (1 - alpha)).clamp(1e-5)

    groups: dict[str, list[str]] = {}
    for linear, norm in source.items():
        groups.setdefault(norm, []).append(linear)
    downs = [n for n in modules if n.endswith("mlp.down_proj") and n in amax
             and n.replace("down_proj", "up_proj") in modules]
    with torch.no_grad():
        folded = 0
        for norm, linears in groups.items():
            s = scale(linears)
            try:
                _set_norm_scale(modules[norm], s)
            except ValueError:  # a norm of another form: that group stays unsmoothed
                continue
            folded += 1
            for n in linears:
                modules[n].weight.mul_(s)
        for down in downs:
            s = scale([down])
            modules[down.replace("down_proj", "up_proj")].weight.div_(s[:, None])
            modules[down].weight.mul_(s)
    return folded + len(downs)


@contextlib.contextmanager
def smoothed(embedder: Any, texts: Sequence[str], alpha: float = SMOOTH_ALPHA,
             instruction: str | None = None, max_length: int = 128) -> Iterator[int]:
    """:func:`smooth` for the length of the block; every weight it can touch (those of
    the decoder layers) is restored after, also when the block raises. Yields the number
    of groups folded."""
    import torch

    params = {name: p for name, p in embedder.backbone.model.named_parameters()
              if "layers." in name}  # smooth reads and scales the layers' modules only
    saved = {name: p.detach().clone() for name, p in params.items()}
    try:
        yield smooth(embedder, texts, alpha, instruction, max_length)
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
