#!/usr/bin/env python3
"""Writes tests/fixtures/train_optim/sgd_torch.safetensors: what torch.optim.SGD does, as the
reference trains (momentum 0.9, weight_decay 5e-4, dampening 0, no Nesterov), over five steps of
three small float32 parameters, with the learning rate changing every step (a warm-up like ramp,
then a step drop) and parameter `b` without a gradient at step 2 (grad None, as
`zero_grad(set_to_none=True)` leaves a parameter the loss did not reach).

Tensors: `init.<p>` (values before step 0), `grad.<s>.<p>` (the gradient given at step s; absent
when the parameter has none), `after.<s>.<p>` (values after step s), `momentum.<p>` (the final
momentum buffers). Metadata `lrs`: the learning rate of each step (JSON list).

Usage: python3 tools/make_sgd_fixture.py [OUT]   (torch 2.x, numpy, safetensors; CPU; seeded)
"""
import json
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/train_optim/sgd_torch.safetensors"
gen = torch.Generator().manual_seed(12)
shapes = {"a": (3, 2, 1, 1), "b": (4,), "c": (2, 5)}
params = {k: torch.nn.Parameter(torch.randn(s, generator=gen)) for k, s in shapes.items()}
opt = torch.optim.SGD(list(params.values()), lr=1e-3, momentum=0.9, weight_decay=5e-4)
lrs = [1e-4, 0.0325, 0.1, 0.0625, 0.00625]
tensors = {f"init.{k}": p.detach().numpy().copy() for k, p in params.items()}
for s, lr in enumerate(lrs):
    opt.zero_grad(set_to_none=True)
    for k, p in params.items():
        if s == 2 and k == "b":
            continue
        g = torch.randn(p.shape, generator=gen) * (1.0 + s)
        p.grad = g
        tensors[f"grad.{s}.{k}"] = g.numpy().copy()
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    for k, p in params.items():
        tensors[f"after.{s}.{k}"] = p.detach().numpy().copy()
for k, p in params.items():
    tensors[f"momentum.{k}"] = opt.state[p]["momentum_buffer"].numpy().copy()
tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
save_file(tensors, out, metadata={"lrs": json.dumps(lrs), "torch": torch.__version__})
print(f"wrote {out}: {len(tensors)} tensors, torch {torch.__version__}")
