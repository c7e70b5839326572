#!/usr/bin/env python3
"""The SRDiff U-Net (spec METHOD §3, parameter names as the reference's state dict
under "denoise_fn.") and the frozen RRDB's conditioning features in PyTorch, for
the GPU machine (scripts/gpu-check.sh):

  torch_unet.py --check FILE   recompute, in fp32 with TF32 off, the loss and every
                               U-Net gradient of the step the Go CUDA trainer dumped
                               (SAMDIFFSR_TORCH_DUMP=FILE bin/cuda.test -test.run TorchDump)
                               and compare (max rel err, scaled as kerneltest.Close)
  torch_unet.py --bench        time the paper-size training step in eager mode:
                               RRDB(64,17,32) features without grad, U-Net 64x(1,2,3,4)
                               fwd/bwd, L1, Adam; batch 16 on 160x160 by default

Needs only torch (the safetensors file is read by hand).
"""
import argparse
import json
import math
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mish(nn.Module):
    def forward(self, x):
        return x * torch.tanh(F.softplus(x))


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        half = self.dim // 2
        emb = math.log(10000) / (half - 1)
        emb = torch.exp(torch.arange(half, device=x.device) * -emb)
        emb = x[:, None].float() * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Block(nn.Module):
    def __init__(self, dim, dim_out):
        super().__init__()
        self.block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim_out, 3), Mish())

    def forward(self, x):
        return self.block(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim, dim_out, time_emb_dim):
        super().__init__()
        self.mlp = nn.Sequential(Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block(dim, dim_out)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, t):
        h = self.block1(x)
        h = h + self.mlp(t)[:, :, None, None]
        h = self.block2(h)
        return h + self.res_conv(x)


class Downsample(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, 2))

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim, dim, 4, 2, 1)

    def forward(self, x):
        return self.conv(x)


class Unet(nn.Module):
    def __init__(self, dim, cond_c, dim_mults=(1, 2, 3, 4), scale=4):
        super().__init__()
        dims = [3, *[dim * m for m in dim_mults]]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.cond_proj = nn.ConvTranspose2d(cond_c, dim, scale * 2, scale, scale // 2)
        self.time_pos_emb = SinusoidalPosEmb(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))
        self.downs = nn.ModuleList([])
        self.ups = nn.ModuleList([])
        n = len(in_out)
        for ind, (din, dout) in enumerate(in_out):
            last = ind >= n - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(din, dout, dim), ResnetBlock(dout, dout, dim),
                Downsample(dout) if not last else nn.Identity()]))
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, dim)
        self.mid_block2 = ResnetBlock(mid, mid, dim)
        for din, dout in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResnetBlock(dout * 2, din, dim), ResnetBlock(din, din, dim), Upsample(din)]))
        self.final_conv = nn.Sequential(Block(dim, dim), nn.Conv2d(dim, 3, 1))

    def forward(self, x, time, cond):
        t = self.mlp(self.time_pos_emb(time))
        cond = self.cond_proj(cond)
        h = []
        for i, (r1, r2, down) in enumerate(self.downs):
            x = r1(x, t)
            x = r2(x, t)
            if i == 0:
                x = x + cond
            h.append(x)
            x = down(x)
        x = self.mid_block1(x, t)
        x = self.mid_block2(x, t)
        for r1, r2, up in self.ups:
            x = torch.cat((x, h.pop()), dim=1)
            x = r1(x, t)
            x = r2(x, t)
            x = up(x)
        return self.final_conv(x)


class RDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        for i in range(5):
            setattr(self, f"conv{i + 1}", nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, 1, 1))

    def forward(self, x):
        feats = [x]
        for i in range(4):
            feats.append(F.leaky_relu(getattr(self, f"conv{i + 1}")(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = RDB(nf, gc), RDB(nf, gc), RDB(nf, gc)

    def forward(self, x):
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


class RRDBFeatures(nn.Module):
    """conv_first, nb RRDBs, trunk_conv; returns cat(feas[2::3]) (the conditioning)."""

    def __init__(self, nf=64, nb=17, gc=32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, lr):
        x = (lr + 1) / 2
        fea_first = fea = self.conv_first(x)
        feas = []
        for blk in self.RRDB_trunk:
            fea = blk(fea)
            feas.append(fea)
        feas.append(fea_first + self.trunk_conv(fea))
        return torch.cat(feas[2::3], 1)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", name
        a, b = e["data_offsets"]
        t = torch.frombuffer(bytearray(buf[base + a:base + b]), dtype=torch.float32)
        out[name] = t.reshape(e["shape"]) if e["shape"] else t
    return out


def rel_err(got, want):
    """max |got-want| / max(|want|, mean|want|), as kerneltest.Close."""
    got, want = got.double().flatten(), want.double().flatten()
    mean = want.abs().mean().clamp_min(1e-30)
    return ((got - want).abs() / torch.maximum(want.abs(), mean)).max().item()


def check(path, dev, tol):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ts = read_safetensors(path)
    sd = {k[len("denoise_fn."):]: v for k, v in ts.items() if k.startswith("denoise_fn.")}
    dim = sd["mlp.0.weight"].shape[1]
    cond_c = sd["cond_proj.weight"].shape[0]
    levels = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("downs."))
    mults = [sd[f"downs.{i}.0.block1.block.1.weight"].shape[0] // dim for i in range(levels)]
    net = Unet(dim, cond_c, mults).to(dev)
    net.load_state_dict({k: v.to(dev) for k, v in sd.items()}, strict=True)
    xt, target, cond = (ts[k].to(dev) for k in ("in/xt", "in/target", "in/cond"))
    t = ts["in/t"].to(dev)
    pred = net(xt, t, cond)
    loss = (pred - target).abs().mean()
    loss.backward()
    worst, bad = 0.0, []
    e = rel_err(loss.detach().reshape(1).cpu(), ts["out/loss"])
    print(f"torch check: dim {dim} mults {mults} cond {cond_c}: loss torch {loss.item():.7f} ours {ts['out/loss'].item():.7f} (rel {e:.2e})")
    if e > tol:
        bad.append("loss")
    for name, p in net.named_parameters():
        e = rel_err(p.grad.cpu(), ts["grad/denoise_fn." + name])
        worst = max(worst, e)
        if e > tol:
            bad.append(f"{name} ({e:.2e})")
    print(f"torch check: worst gradient rel err {worst:.2e} over {len(list(net.parameters()))} tensors (tol {tol:g})")
    if bad:
        print("torch check: FAIL: " + ", ".join(bad[:10]))
        return 1
    print("torch check: PASS")
    return 0


def bench(dev, batch, size, steps, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    unet = Unet(64, 384).to(dev)
    rrdb = RRDBFeatures().to(dev).eval()
    nparams = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.Adam(unet.parameters(), lr=2e-4)
    xt = torch.randn(batch, 3, size, size, device=dev)
    target = torch.randn(batch, 3, size, size, device=dev)
    lr = torch.rand(batch, 3, size // 4, size // 4, device=dev) * 2 - 1
    t = torch.randint(0, 100, (batch,), device=dev)

    def step():
        with torch.no_grad():
            cond = rrdb(lr)
        pred = unet(xt, t, cond)
        loss = (pred - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        first = step().item()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    el = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"torch bench: {torch.cuda.get_device_name()} torch {torch.__version__} tf32={tf32}: U-Net {nparams} params, "
          f"batch {batch} {size}x{size}: {el:.4f} s/step, {batch / el:.1f} samples/s, peak {peak:.2f} GiB, "
          f"loss {first:.4f} -> {loss.item():.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", metavar="FILE")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rc = 0
    if a.check:
        rc |= check(a.check, dev, a.tol)
    if a.bench:
        if dev != "cuda":
            print("torch bench: no GPU")
            return 1
        for tf32 in (False, True):
            bench(dev, a.batch, a.size, a.steps, tf32)
    return rc


if __name__ == "__main__":
    sys.exit(main())
