"""One module per op, each with ``cases(device, quick) -> list[OpCase]`` at the shapes StyleGAN really uses."""
