"""The progressive schedule shared by both networks: resolutions per step and channels per resolution."""

from __future__ import annotations

MAX_STEP = 8
# Step i works at 4 * 2**i pixels: 4, 8, ..., 1024.
RESOLUTIONS = tuple(4 * 2**step for step in range(MAX_STEP + 1))


def channels_at(resolution: int, channel_base: int, max_channels: int) -> int:
    """``min(max_channels, channel_base // resolution)``: the seed's widths for 16384 and 512."""
    return min(max_channels, channel_base // resolution)


def check_widths(channel_base: int, max_channels: int) -> None:
    if max_channels < 1 or channel_base < RESOLUTIONS[-1]:
        raise ValueError(
            f"every resolution needs at least one channel: max_channels must be >= 1 and channel_base >= "
            f"{RESOLUTIONS[-1]}, got channel_base={channel_base}, max_channels={max_channels}"
        )


def check_step(step: int) -> None:
    if not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ValueError(
            f"step must be an int from 0 ({RESOLUTIONS[0]} px) to {MAX_STEP} ({RESOLUTIONS[-1]} px), got {step!r}"
        )


def fading_in(step: int, alpha: float) -> bool:
    """Whether the top block blends with the one below it: the seed's ``step > 0 and 0 <= alpha < 1``."""
    return step > 0 and 0 <= alpha < 1
