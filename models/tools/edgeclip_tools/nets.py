"""Small network pieces shared by the demo and the real-CLIP distillation (``cli.py distill``):
the conv + BatchNorm + ReLU block, the plain conv stack of the demo's first student, and the
learning-rate schedule."""

import math

import torch.nn as nn

# The plain conv student's stages, (in, out, stride): 3x3 conv + BatchNorm + ReLU each, strided
# downsampling, 16-128 channels (the demo's `Student`; `python3 -m edgeclip_tools distill
# --arch demo-conv`).
CONV_PLAN = [(3, 16, 2), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2),
             (128, 128, 1)]


def conv_bn(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def cosine_lr(step: int, total: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * p))
