"""The protocol's random crop, RandomCrop(32, padding=4), as plain numbers:
free of torch, so that validation can size a run's memory in a blink."""

from __future__ import annotations

PADDING = 4  # black pixels added on each side before a crop of the original size


def padded(size: int) -> int:
    """An image side after padding."""
    return size + 2 * PADDING
