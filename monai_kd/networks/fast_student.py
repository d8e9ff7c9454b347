"""A student chosen for CPU latency, not only for size: strided stem and depthwise-separable blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

__all__ = ["FastStudent", "SeparableBlock"]


class SeparableBlock(nn.Sequential):
    """Depthwise-separable convolution: a ``kernel_size`` depthwise convolution (one filter per channel, carrying the
    stride) then a 1x1 pointwise convolution mixing channels, each followed by batch norm and ReLU.

    Against a dense ``k^d`` convolution from ``c_in`` to ``c_out`` channels it costs ``c_in * k^d + c_in * c_out``
    multiply-accumulates per output position instead of ``c_in * c_out * k^d``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels in.
        out_channels: channels out.
        stride: stride of the depthwise convolution.
        kernel_size: kernel size of the depthwise convolution.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        self.depthwise = Convolution(spatial_dims, in_channels, in_channels, strides=stride, kernel_size=kernel_size,
                                     groups=in_channels, act="RELU", norm="BATCH", bias=False)
        self.pointwise = Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, act="RELU", norm="BATCH",
                                     bias=False)


class FastStudent(nn.Module):
    """Classification student whose compute, not only its parameter count, is small.

    The cost of a small CNN on a CPU is dominated by its full-resolution layers. This network downsamples at once with
    a strided ``stem_kernel`` convolution (``stem_stride``), then runs four stages named ``layer1`` .. ``layer4``
    (as in :class:`monai.networks.nets.ResNet`, so feature taps written for the ResNet students keep their layer
    names), each of ``blocks[i]`` :class:`SeparableBlock` s, the first of which carries ``strides[i]``; global
    average pooling and a linear classifier follow. Every convolution is followed by batch norm and ReLU (conv-bn-relu
    triples that ONNX Runtime and PyTorch quantisation fuse).

    For a 28x28 single-channel image with the defaults (stem 16 channels stride 2, channels 16/32/64/128, strides
    1/2/2/2, one block each) it has ~15k parameters and ~0.15M multiply-accumulates, against 77k and ~3.3M for the
    ResNet student with a full-resolution stem that the ``kd`` bundle uses by default.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output logits.
        stem_channels: channels of the stem convolution.
        channels: output channels of the four stages.
        strides: stride of the first block of each stage.
        blocks: number of separable blocks per stage.
        stem_kernel: kernel size of the stem convolution.
        stem_stride: stride of the stem convolution.
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        stem_channels: int = 16,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (1, 2, 2, 2),
        blocks: Sequence[int] = (1, 1, 1, 1),
        stem_kernel: int = 3,
        stem_stride: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not (len(channels) == len(strides) == len(blocks)):
            raise ValueError(f"channels, strides and blocks need one entry per stage, got {channels}, {strides}, {blocks}.")
        self.stem = Convolution(spatial_dims, in_channels, stem_channels, strides=stem_stride, kernel_size=stem_kernel,
                                act="RELU", norm="BATCH", bias=False)
        c_in = stem_channels
        for i, (c_out, stride, n) in enumerate(zip(channels, strides, blocks), start=1):
            layers = [SeparableBlock(spatial_dims, c_in if j == 0 else c_out, c_out, stride if j == 0 else 1)
                      for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*layers))
            c_in = c_out
        self.num_stages = len(channels)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.stem(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))
