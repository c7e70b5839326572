# Regenerates pil_resize_golden.json: SHA-256 of Pillow's BILINEAR resize (what SAM's
# ResizeLongestSide.apply_image does through torchvision on a PIL image) of a
# synthetic RGB image, for TestResizePILGolden. Run with a Python that has Pillow:
#   python3 maskgen/samonnx/testdata/pil_resize_golden.py > maskgen/samonnx/testdata/pil_resize_golden.json
import hashlib, json, PIL
from PIL import Image

def synth(w, h):
    # Must match synthRGB in preprocess_test.go.
    b = bytearray(3 * w * h)
    i = 0
    for y in range(h):
        for x in range(w):
            for c in range(3):
                b[i] = (x * x * 3 + y * 5 + c * 77 + (x * y) % 17 + (x ^ y) * c) % 256
                i += 1
    return bytes(b)

cases = [
    (37, 23, 16, 10), (37, 23, 100, 62), (37, 23, 37, 11), (37, 23, 13, 23),
    (37, 23, 1024, 637), (300, 200, 1024, 683), (2040, 1356, 1024, 681), (1356, 2040, 681, 1024),
]
out = {"pillow": PIL.__version__, "cases": []}
for w, h, nw, nh in cases:
    im = Image.frombytes("RGB", (w, h), synth(w, h))
    r = im.resize((nw, nh), Image.BILINEAR).tobytes()
    out["cases"].append({"w": w, "h": h, "nw": nw, "nh": nh, "sha256": hashlib.sha256(r).hexdigest(),
                         "first": list(r[:12])})
print(json.dumps(out, indent=1))
