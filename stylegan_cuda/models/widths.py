"""The progressive schedule shared by both networks: resolutions per step and channels per resolution."""

from __future__ import annotations

import numbers
import operator

import torch

MAX_STEP = 8
# Step i works at 4 * 2**i pixels: 4, 8, ..., 1024.
RESOLUTIONS = tuple(4 * 2**step for step in range(MAX_STEP + 1))


def channels_at(resolution: int, channel_base: int, max_channels: int) -> int:
    """``min(max_channels, channel_base // resolution)``: the seed's widths for 16384 and 512."""
    return min(max_channels, channel_base // resolution)


def check_input_tensor(name: str, x, model: torch.nn.Module) -> None:
    """``x`` is a floating-point tensor on the model's device, of the model's dtype unless autocast is on."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    param = next(model.parameters(), None)
    if param is None:
        return
    if x.device != param.device:
        raise ValueError(f"{name} is on {x.device} but the model is on {param.device}; move one to the other")
    if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but the model's parameters are {param.dtype}: convert one to "
                        f"the other, or run under torch.autocast")


def check_widths(channel_base: int, max_channels: int) -> None:
    if max_channels < 1 or channel_base < RESOLUTIONS[-1]:
        raise ValueError(
            f"every resolution needs at least one channel: max_channels must be >= 1 and channel_base >= "
            f"{RESOLUTIONS[-1]}, got channel_base={channel_base}, max_channels={max_channels}"
        )


def check_step(step: int) -> int:
    """``step`` as a Python int (numpy ints are taken; bools and floats are refused), from 0 to ``MAX_STEP``."""
    message = f"step must be an int from 0 ({RESOLUTIONS[0]} px) to {MAX_STEP} ({RESOLUTIONS[-1]} px), got {step!r}"
    if isinstance(step, bool) or isinstance(step, torch.Tensor):
        raise ValueError(message)
    try:
        value = operator.index(step)
    except TypeError:
        raise ValueError(message) from None
    if not 0 <= value <= MAX_STEP:
        raise ValueError(message)
    return value


def check_alpha(alpha) -> float:
    """``alpha`` as a float: -1 (the default: no fade-in) or a number in ``[0, 1]`` (1 also means no fade-in).

    A one-element tensor is taken; NaN, other negative values, values above 1, bools and strings are refused.
    """
    value = None
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() == 1 and alpha.dtype != torch.bool and not alpha.is_complex():
            value = float(alpha)
    elif isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        value = float(alpha)
    if value is None or not (value == -1 or 0 <= value <= 1):  # NaN fails both comparisons
        raise ValueError(f"alpha must be a number in [0, 1] (fade-in while < 1) or -1 (no fade-in), got {alpha!r}")
    return value


def fading_in(step: int, alpha: float) -> bool:
    """Whether the top block blends with the one below it: the seed's ``step > 0 and 0 <= alpha < 1``."""
    return step > 0 and 0 <= alpha < 1
