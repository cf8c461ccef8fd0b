"""Dumps a reference YOLACT forward pass for `tests/it/model.rs::parity_with_reference_dump`.

Usage: python3 tools/model_parity_dump.py <config name> <path to a dbolya/yolact checkout> [out file]
Random weights (BN stats randomised, offsets large enough for fractional DCN sampling), a random
input, and the raw eval outputs with `Detect` bypassed. DCNv2 is replaced by torchvision's
deform_conv2d, which docs/model.md §3 shows to be numerically the same op.
"""
import sys, torch
torch.cuda.current_device = lambda: 0
sys.path.insert(0, sys.argv[2])
import types, torch.nn as nn, torchvision
class DCN(nn.Module):
    def __init__(self, cin, cout, kernel_size=3, stride=1, padding=1, dilation=1, deformable_groups=1):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.zeros(cout, cin, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.conv_offset_mask = nn.Conv2d(cin, 27, kernel_size, stride, padding, bias=True)
    def forward(self, x):
        r = self.conv_offset_mask(x)
        o1, o2, m = torch.chunk(r, 3, dim=1)
        return torchvision.ops.deform_conv2d(x, torch.cat((o1, o2), 1), self.weight, self.bias, stride=self.stride, padding=self.padding, mask=torch.sigmoid(m))
sys.modules['dcn_v2'] = types.SimpleNamespace(DCN=DCN)
from data.config import set_cfg, cfg
name = sys.argv[1]
set_cfg(name + '_config')
import yolact
torch.manual_seed(0)
net = yolact.Yolact()
net.eval()
sd = net.state_dict()
g = torch.Generator().manual_seed(1)
new = {}
for k, v in sd.items():
    if k.endswith('num_batches_tracked'): continue
    if k.endswith('running_var'): t = torch.rand(v.shape, generator=g) + 0.5
    elif 'conv_offset_mask' in k: t = (torch.rand(v.shape, generator=g) - 0.5) * (4.0 if k.endswith('bias') else 0.2)
    elif k.endswith('running_mean') or k.endswith('bias'): t = (torch.rand(v.shape, generator=g) - 0.5) * 0.2
    elif v.dim() == 1: t = torch.rand(v.shape, generator=g) * 0.4 + 0.3
    else:
        fan = v[0].numel(); a = (3.0 / fan) ** 0.5
        t = (torch.rand(v.shape, generator=g) * 2 - 1) * a
    new[k] = t.float().contiguous()
net.load_state_dict({**sd, **new})
net.detect = lambda p, n: p
S = cfg.max_size
x = torch.randn(1, 3, S, S, generator=g)
with torch.no_grad():
    out = net(x)
print({k: tuple(v.shape) for k, v in out.items() if torch.is_tensor(v)})
from safetensors.torch import save_file
miou = None
if cfg.use_maskiou:
    m = torch.rand(4, 1, 138, 138, generator=g)
    with torch.no_grad():
        miou = net.maskiou_net(m)
save = {('w.' + k): v for k, v in new.items()}
save['x'] = x
if miou is not None:
    save['miou.in'] = m
    save['miou.out'] = miou.contiguous()
for k in ['loc', 'conf', 'mask', 'proto']:
    save['out.' + k] = out[k].contiguous()
save_file(save, sys.argv[3] if len(sys.argv) > 3 else f'/tmp/model_parity_{name}.safetensors')
