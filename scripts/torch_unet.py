#!/usr/bin/env python3
"""The SRDiff U-Net (spec METHOD §3, parameter names as the reference's state dict
under "denoise_fn.") and the frozen RRDB's conditioning features in PyTorch, for
the GPU machine (scripts/gpu-check.sh) and the CPU cross-check of the test suite
(model/cuda/kerneltest TestTorchCheckCPU):

  torch_unet.py --check FILE...  recompute, in fp32 with TF32 off, the RRDB features,
                                 the loss and every U-Net gradient of the training step
                                 our backend dumped (kerneltest.TorchStep: the CPU
                                 backend in TestTorchCheckCPU, the CUDA one with
                                 SAMDIFFSR_TORCH_DUMP=FILE bin/cuda.test -test.run TorchDump)
                                 and compare (max rel err, scaled as kerneltest.Close)
  torch_unet.py --bench          time the paper-size training step in eager mode, fp32
                                 and TF32: RRDB(64,17,32) features without grad, U-Net
                                 64x(1,2,3,4) fwd/bwd, L1, Adam; batch 16 on 160x160 by
                                 default (--dim/--mults/--rrdb/--batch/--size make it
                                 small enough for a CPU dry run)

Needs only torch (the safetensors file is read by hand); works with torch 1.13
(Debian's python3-torch) and 2.x. Exit status: 0 pass, 1 check failed, 2 bad input.
"""
import argparse
import json
import math
import re
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
    # The reference wraps the transposed convolution in a Sequential, so its
    # state-dict names are ups.J.2.conv.0.weight/.bias.
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Sequential(nn.ConvTranspose2d(dim, dim, 4, 2, 1))

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


class DumpError(Exception):
    """A dump that cannot be checked (missing key, wrong dtype, bad file)."""


def read_safetensors(path):
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise DumpError(f"{path}: {e}") from e
    if len(buf) < 8:
        raise DumpError(f"{path}: {len(buf)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", buf[:8])
    if n > len(buf) - 8:
        raise DumpError(f"{path}: header length {n} exceeds the file ({len(buf)} bytes)")
    try:
        hdr = json.loads(buf[8:8 + n])
    except ValueError as e:
        raise DumpError(f"{path}: header is not JSON: {e}") from e
    base = 8 + n
    out = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        if e.get("dtype") != "F32":
            raise DumpError(f"{path}: tensor {name} has dtype {e.get('dtype')}, want F32")
        a, b = e["data_offsets"]
        if not 0 <= a <= b <= len(buf) - base or b - a != 4 * math.prod(e["shape"]):
            raise DumpError(f"{path}: tensor {name}: offsets {a}..{b} do not fit shape {e['shape']} in the file")
        t = torch.frombuffer(bytearray(buf[base + a:base + b]), dtype=torch.float32)
        out[name] = t.reshape(e["shape"])
    return out


# The name the Upsample's convolution had in our dumps before the Go model took the
# reference's (commit 2c192b5): a dump with it comes from a stale binary.
OLD_UPSAMPLE = re.compile(r"^(ups\.\d+\.2\.conv)\.(weight|bias)$")


def need(ts, path, key, prefix=""):
    if key not in ts:
        raise DumpError(f"{path}: no tensor {prefix}{key} (write the dump with kerneltest.TorchStep)")
    return ts[key]


def rel_err(got, want):
    """max |got-want| / max(|want|, mean|want|), as kerneltest.Close."""
    got, want = got.double().flatten(), want.double().flatten()
    if got.shape != want.shape:
        return math.inf
    mean = want.abs().mean().clamp_min(1e-30)
    return ((got - want).abs() / torch.maximum(want.abs(), mean)).max().item()


def set_tf32(on):
    """TF32 for cuBLAS matmuls and cuDNN convolutions on or off, through the API the
    torch at hand has: torch >= 2.9 warns on the old allow_tf32 flags and refuses a
    mix of old and new, so there only the new per-backend settings are touched."""
    mode = "tf32" if on else "ieee"
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9 (1.13's cuda.matmul raises on unknown names)
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode  # as conv: cuDNN-wide queries want them equal
    else:
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def unet_from(sd, path):
    """A Unet shaped as the dump's denoise_fn.* tensors, loaded with them (strict)."""
    dim = need(sd, path, "mlp.0.weight", "denoise_fn.").shape[1]
    cw = need(sd, path, "cond_proj.weight", "denoise_fn.")
    cond_c, scale = cw.shape[0], cw.shape[2] // 2
    need(sd, path, "downs.0.0.block1.block.1.weight", "denoise_fn.")
    levels = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("downs."))
    mults = [need(sd, path, f"downs.{i}.0.block1.block.1.weight", "denoise_fn.").shape[0] // dim for i in range(levels)]
    net = Unet(dim, cond_c, mults, scale)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        stale = sorted(k for k in sd if OLD_UPSAMPLE.match(k))
        hint = ""
        if stale:
            new = OLD_UPSAMPLE.sub(r"\1.0.\2", stale[0])
            hint = (f" (denoise_fn.{stale[0]} is the old name of denoise_fn.{new}:"
                    " the dump comes from a binary built before the rename; rebuild it with make cuda)")
        raise DumpError(f"{path}: the denoise_fn.* tensors do not fit Unet({dim}, {cond_c}, {mults}){hint}: {e}") from e
    return net, (dim, mults, cond_c)


def rrdb_from(rd, path):
    """RRDBFeatures shaped as the dump's rrdb.* tensors, loaded with those it uses."""
    nf = need(rd, path, "conv_first.weight", "rrdb.").shape[0]
    gc = need(rd, path, "RRDB_trunk.0.RDB1.conv1.weight", "rrdb.").shape[0]
    nb = 1 + max(int(k.split(".")[1]) for k in rd if k.startswith("RRDB_trunk."))
    net = RRDBFeatures(nf, nb, gc)
    want = net.state_dict().keys()
    missing = [k for k in want if k not in rd]
    if missing:
        raise DumpError(f"{path}: no tensor rrdb.{missing[0]} ({len(missing)} RRDB tensors missing)")
    net.load_state_dict({k: rd[k] for k in want}, strict=True)
    return net, (nf, nb, gc)


def check(path, dev, tol):
    """Recompute the dumped step; print one line per comparison; True when all pass."""
    set_tf32(False)
    ts = read_safetensors(path)
    sd = {k[len("denoise_fn."):]: v.to(dev) for k, v in ts.items() if k.startswith("denoise_fn.")}
    rd = {k[len("rrdb."):]: v.to(dev) for k, v in ts.items() if k.startswith("rrdb.")}
    net, (dim, mults, cond_c) = unet_from(sd, path)
    net.to(dev)
    xt, target = need(ts, path, "in/xt").to(dev), need(ts, path, "in/target").to(dev)
    t = need(ts, path, "in/t").to(dev)
    want_loss = need(ts, path, "out/loss")
    bad = []
    cond = ts["in/cond"].to(dev) if "in/cond" in ts else None
    if rd:
        rrdb, (nf, nb, gc) = rrdb_from(rd, path)
        rrdb.to(dev).eval()
        with torch.no_grad():
            feats = rrdb(need(ts, path, "in/lr").to(dev))
        if cond is None:
            cond = feats
            print(f"torch check: RRDB({nf},{nb},{gc}) features from in/lr {tuple(feats.shape)}")
        else:
            e = rel_err(feats.cpu(), cond.cpu())
            print(f"torch check: RRDB({nf},{nb},{gc}) features vs ours (in/cond {tuple(cond.shape)}): rel {e:.2e}")
            if not e <= tol:
                bad.append(f"in/cond ({e:.2e})")
    if cond is None:
        raise DumpError(f"{path}: neither in/cond nor the rrdb.* weights and in/lr to compute it")
    if cond.shape[1] != cond_c:
        raise DumpError(f"{path}: conditioning has {cond.shape[1]} channels, cond_proj wants {cond_c}")
    pred = net(xt, t, cond)
    loss = (pred - target).abs().mean()
    loss.backward()
    e = rel_err(loss.detach().reshape(1).cpu(), want_loss)
    print(f"torch check: U-Net dim {dim} mults {mults} cond {cond_c}, batch {tuple(xt.shape)}: "
          f"loss torch {loss.item():.7f} ours {want_loss.item():.7f} (rel {e:.2e})")
    if not e <= tol:
        bad.append(f"loss ({e:.2e})")
    worst, worst_name, params = 0.0, "", list(net.named_parameters())
    for name, p in params:
        e = rel_err(p.grad.cpu(), need(ts, path, "grad/denoise_fn." + name))
        if e > worst or math.isnan(e):
            worst, worst_name = e, name
        if not e <= tol:
            bad.append(f"grad/denoise_fn.{name} ({e:.2e})")
    print(f"torch check: worst gradient rel err {worst:.2e} ({worst_name}) over {len(params)} tensors (tol {tol:g})")
    if bad:
        print(f"torch check: FAIL: {path}: " + ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else ""))
        return False
    print(f"torch check: PASS: {path}")
    return True


def bench(dev, a, tf32):
    set_tf32(tf32)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    nf, nb, gc = a.rrdb
    unet = Unet(a.dim, nf * ((nb + 1) // 3), a.mults).to(dev)
    rrdb = RRDBFeatures(nf, nb, gc).to(dev).eval()
    nparams = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.Adam(unet.parameters(), lr=2e-4)
    b, size = a.batch, a.size
    xt = torch.randn(b, 3, size, size, device=dev)
    target = torch.randn(b, 3, size, size, device=dev)
    lr = torch.rand(b, 3, size // 4, size // 4, device=dev) * 2 - 1
    t = torch.randint(0, 100, (b,), device=dev)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

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
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    el = (time.perf_counter() - start) / a.steps
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else "n/a"
    print(f"torch bench: {name} torch {torch.__version__} tf32={tf32}: U-Net {nparams} params, "
          f"batch {b} {size}x{size}: {el:.4f} s/step, {b / el:.1f} samples/s, peak {peak}, "
          f"loss {first:.4f} -> {loss.item():.4f} over {a.steps + 3} steps (same batch)")


def ints(s):
    return [int(v) for v in s.split(",")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", metavar="FILE", nargs="+", help="dumps to recompute (each checked; exit 1 if any fails)")
    ap.add_argument("--tol", type=float, default=1e-3, help="max relative error (default 1e-3)")
    ap.add_argument("--bench", action="store_true", help="time the training step, fp32 then TF32")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: cuda when torch sees a GPU; cuda without one is an error")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=160, help="HR patch side, a multiple of 8")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--mults", type=ints, default=[1, 2, 3, 4], help="U-Net dim_mults, e.g. 1,2,3,4")
    ap.add_argument("--rrdb", type=ints, default=[64, 17, 32], help="RRDB nf,nb,gc")
    a = ap.parse_args()
    if not a.check and not a.bench:
        ap.error("nothing to do: give --check FILE... and/or --bench")
    if len(a.rrdb) != 3 or a.size % 8 or a.size < 8:
        ap.error(f"--rrdb wants nf,nb,gc (got {a.rrdb}); --size a multiple of 8 (got {a.size})")
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"torch: --device cuda but torch {torch.__version__} sees no GPU (torch.cuda.is_available() is False)")
        return 2
    dev = a.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(dev)
    rc = 0
    for path in a.check or []:
        try:
            if not check(path, dev, a.tol):
                rc = max(rc, 1)
        except DumpError as e:
            print(f"torch check: FAIL: {e}")
            rc = 2
    if a.bench:
        for tf32 in (False, True):
            bench(dev, a, tf32)
    return rc


if __name__ == "__main__":
    sys.exit(main())
