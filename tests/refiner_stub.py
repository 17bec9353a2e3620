"""A stand-in for an outline refiner (tests that need one without trained weights)."""
import torch


class ClickDiscRefiner(torch.nn.Module):
    """Draws the pixels within ``radius`` of the positive click (input channel 5); with
    ``bright_only``, only those whose red channel is above 0.5."""

    classes = ("nucleus",)
    window = 64

    def __init__(self, radius: float, bright_only: bool = False):
        super().__init__()
        self.radius, self.bright_only = radius, bright_only
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # refine_outlines reads the device from it

    def forward(self, x):
        rows, cols = torch.meshgrid(torch.arange(x.shape[-2]), torch.arange(x.shape[-1]), indexing="ij")
        out = []
        for window in x:
            r, c = torch.nonzero(window[5] > 0).float().mean(0)
            drawn = (rows - r) ** 2 + (cols - c) ** 2 <= self.radius ** 2
            if self.bright_only:
                drawn &= window[0] > 0.5
            out.append(torch.where(drawn, 10.0, -10.0))
        return torch.stack(out)[:, None]
