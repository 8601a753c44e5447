"""The seed's StyleGAN networks on this project's ops: :class:`StyledGenerator` and :class:`Discriminator`."""

from .discriminator import Discriminator
from .generator import StyledGenerator
from .layers import set_impl, weights_finite
from .widths import MAX_STEP, RESOLUTIONS, channels_at

__all__ = ["MAX_STEP", "RESOLUTIONS", "Discriminator", "StyledGenerator", "channels_at", "set_impl", "weights_finite"]
