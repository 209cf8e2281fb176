"""Per-frame backbones returning feature maps at strides 4, 8, 16 and 32.

* ``resnet50`` / ``resnet101``: torchvision ResNets with frozen batch norm
  (``torchvision.ops.FrozenBatchNorm2d`` through ``norm_layer``); weights come only from a
  local state-dict file (``model.pretrained_weights``), nothing is downloaded. As in DETR the
  stem and ``layer1`` are not trained.
* ``tiny_cnn``: a 4-stage conv net with GroupNorm for CPU training (``tiny`` preset).
"""

from __future__ import annotations

import os

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

STRIDES = (4, 8, 16, 32)


class TinyCNN(nn.Module):
    """Stem (stride 2) + 4 stages of two 3x3 convs; widths ``c, 2c, 4c, 8c``
    (``train=False``: every parameter gets ``requires_grad=False``)."""

    def __init__(self, width: int = 16, train: bool = True) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.GroupNorm(min(8, cout // 4), cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.GroupNorm(min(8, cout // 4), cout),
                nn.ReLU(inplace=True),
            )

        self.stem = block(3, width, 2)
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stages = nn.ModuleList(
            block(cin, cout, 2) for cin, cout in zip([width] + widths[:-1], widths, strict=True)
        )
        self.channels = dict(zip(STRIDES, widths, strict=True))
        if not train:
            self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """``x [N, 3, H, W]`` -> ``{stride: [N, C_s, ceil(H/s), ceil(W/s)]}``."""
        x = self.stem(x)
        out = {}
        for stride, stage in zip(STRIDES, self.stages, strict=True):
            x = stage(x)
            out[stride] = x
        return out


class ResNetBackbone(nn.Module):
    """torchvision ResNet body (no avgpool / fc) returning strides 4..32."""

    def __init__(
        self, name: str, frozen_bn: bool = True, weights_path: str = "", train: bool = True
    ) -> None:
        super().__init__()
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        net = getattr(torchvision.models, name)(weights=None, norm_layer=norm)
        if weights_path:
            if not os.path.isfile(weights_path):
                raise ValueError(f"model.pretrained_weights: file not found: {weights_path!r}")
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, _ = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing:
                raise ValueError(
                    f"model.pretrained_weights {weights_path!r}: missing keys {missing[:5]}"
                )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        width = 256  # Bottleneck expansion 4 x 64
        self.channels = {s: width * 2**i for i, s in enumerate(STRIDES)}
        for name_, param in self.named_parameters():
            # DETR: the stem and layer1 stay frozen; everything when train=False.
            if not train or name_.startswith(("stem.", "layers.0.")):
                param.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """``x [N, 3, H, W]`` -> ``{stride: [N, C_s, H/s, W/s]}``."""
        x = self.stem(x)
        out = {}
        for stride, layer in zip(STRIDES, self.layers, strict=True):
            x = layer(x)
            out[stride] = x
        return out
