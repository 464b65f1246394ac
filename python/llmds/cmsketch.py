"""Count-min sketch for frequency estimation and hot-item detection."""

from llmds._core import CountMinSketch as CountMinSketch

__all__ = ["CountMinSketch"]
