"""The demo CNN of scripts/make_demo.py, in torch. Every graph operation is its own submodule so
that each exported ONNX node gets the submodule's path as its name (see demo_graph.rename_graph).
Imported only by make_demo.py's build_network, so that torch stays optional."""

from __future__ import annotations

import torch
from torch import nn


class ConvBn(nn.Module):
    # BatchNorm is folded into the Conv by the exporter in eval mode.
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class ConvBnRelu(ConvBn):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(cin, cout, kernel)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(super().forward(x))


class Add(nn.Module):
    def forward(self, a, b):
        return a + b


class Concat(nn.Module):
    def forward(self, a, b):
        return torch.cat([a, b], dim=1)


class MatMul(nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


class MatMulBias(nn.Module):
    # A bare MatMul with a constant [K, N] weight, then a bias Add (not a Gemm).
    def __init__(self, k: int, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, n))
        self.bias = nn.Parameter(torch.zeros(n))
        nn.init.kaiming_uniform_(self.weight.T, a=5**0.5)
        self.matmul = MatMul()
        self.add = Add()

    def forward(self, x):
        return self.add(self.matmul(x, self.weight), self.bias)


class ResidualBlock(nn.Module):
    # conv1 -> relu -> conv2, plus the identity skip, then relu.
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBnRelu(channels, channels, 3)
        self.conv2 = ConvBn(channels, channels, 3)
        self.add = Add()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.add(self.conv2(self.conv1(x)), x))


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.stem = ConvBnRelu(1, 16, 3)            # [B, 16, 8, 8]
        self.res = ResidualBlock(16)                # [B, 16, 8, 8]
        self.pool = nn.MaxPool2d(2)                 # [B, 16, 4, 4]
        self.branch1x1 = ConvBnRelu(16, 16, 1)      # two parallel branches ...
        self.branch3x3 = ConvBnRelu(16, 16, 3)
        self.concat = Concat()                      # ... joined: [B, 32, 4, 4]
        self.gap = nn.AdaptiveAvgPool2d(1)          # GlobalAveragePool: [B, 32, 1, 1]
        self.flatten = nn.Flatten(1)                # [B, 32]
        self.fc = nn.Linear(32, 32)                 # Gemm
        self.fc_relu = nn.ReLU()
        self.head = MatMulBias(32, num_classes)     # MatMul + Add: [B, 10]

    def forward(self, x):
        x = self.pool(self.res(self.stem(x)))
        x = self.concat(self.branch1x1(x), self.branch3x3(x))
        x = self.flatten(self.gap(x))
        return self.head(self.fc_relu(self.fc(x)))
