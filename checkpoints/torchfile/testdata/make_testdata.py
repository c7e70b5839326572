"""Writes the torch.save files checkpoints/torchfile's tests read (run with a
Python that has torch; checked-in outputs were made with Debian's python3-torch 1.13):

    python3 checkpoints/torchfile/testdata/make_testdata.py checkpoints/torchfile/testdata
"""
import collections
import json
import os
import sys

import torch


class Evil:
    """An object whose unpickling would run a shell command under Python."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/samdiffsr-torchfile-pwned",))


def main(out):
    g = torch.Generator().manual_seed(7)
    base = torch.randn(3, 4, generator=g)
    sd = collections.OrderedDict()
    sd["w"] = torch.randn(2, 3, generator=g)
    sd["t"] = base.t()  # non-contiguous view (strides 1, 4)
    sd["row"] = base[1]  # view at an offset into the same storage
    sd["h"] = torch.tensor([1.5, -0.25, 65504.0, 6e-8], dtype=torch.float16)
    sd["bf"] = torch.tensor([1.5, -3.0], dtype=torch.bfloat16)
    sd["d"] = torch.tensor([0.1, 2.5], dtype=torch.float64)
    sd["n"] = torch.arange(5, dtype=torch.int64)
    sd["s"] = torch.tensor(3.0)
    ckpt = {"global_step": 7, "state_dict": {"model": sd}, "note": "tiny", "lr": [2e-4, (0.9, 0.999)]}
    want = {k: {"shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in sd.items()}
    torch.save(ckpt, os.path.join(out, "tiny_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save(ckpt, os.path.join(out, "tiny_zip.pt"))
    with open(os.path.join(out, "tiny.json"), "w") as f:
        json.dump(want, f, indent=1)
    evil = {"state_dict": {"model": {"w": torch.zeros(1)}}, "x": Evil()}
    torch.save(evil, os.path.join(out, "evil_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save(evil, os.path.join(out, "evil_zip.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
