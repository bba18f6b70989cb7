"""im2row: fast, memory-lean 2-D convolution on CPUs with a reusable im2row buffer.

The compiled methods keep, per output column, one strip of the padded input (rows x KW columns x
channels) whose overlapping rows are the im2row matrix of that column, and multiply it with
weights packed once; the NumPy methods are always available as a fallback.
"""
from ._api import (Conv2d, backend_info, conv2d, im2col, im2row, workspace_bytes,
                   __version__)
from ._backward import ConvTranspose2d, conv2d_backward, conv_transpose2d

__all__ = ["conv2d", "Conv2d", "conv2d_backward", "conv_transpose2d", "ConvTranspose2d",
           "workspace_bytes", "im2row", "im2col", "backend_info", "__version__"]
