"""Benchmark: the memory a large upload costs the server while it is decoded, and after.

    python bench/images.py [--side 9999] [--threads 4]

Writes a ``side``×``side`` RGB PNG (a repeating colour pattern: about 1 MB, under the 100-megapixel
limit) to a temporary file and decodes it with :func:`cnnvis_core.load_image_with_notes` in fresh
Python processes, each reading its own ``/proc/self/status`` (``VmRSS``: resident now, ``VmHWM``:
the peak) before and after:

- ``reduced``: the default (decoded reduced to ``MAX_SIDE``, one large decode at a time, memory
  handed back after);
- ``full size``: ``max_side`` larger than the image, so it is decoded and kept at full size
  (what the loader did with any image under 4096 px before, and the cost of a view of that size);
- ``N threads``: N threads decoding it at once in one process (N sessions uploading it together).

Prints one line per case: megabytes of RSS before, the peak during, and RSS after (the decoded
image still held), each as the growth over "before", and the decode time. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, threading, time
sys.path.insert(0, {root!r})
from cnnvis_core.images import load_image_with_notes

def status():
    out = {{}}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out

data = open({path!r}, "rb").read()
kept = []
before = status()
start = time.perf_counter()
threads = [threading.Thread(target=lambda: kept.append(load_image_with_notes(data, **{kw!r})))
           for _ in range({threads})]
for t in threads:
    t.start()
for t in threads:
    t.join()
seconds = time.perf_counter() - start
after = status()
image, notes = kept[0]
print(json.dumps(dict(before=before["VmRSS"], peak=after["VmHWM"], after=after["VmRSS"], seconds=seconds,
                      size=list(image.size), notes=notes)))
"""


def rgb_png(side: int) -> bytes:
    """A ``side``×``side`` 8-bit RGB PNG written row by row (never held as pixels)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = bytes((x * 7) % 256 for x in range(side * 3))
    packer = zlib.compressobj(6)
    body = b"".join(packer.compress(b"\x00" + (row if y % 2 else row[::-1])) for y in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body + packer.flush())
            + chunk(b"IEND", b""))


def measure(path: Path, threads: int, kw: dict) -> dict:
    """One case in a fresh process (its own high-water mark)."""
    code = CHILD.format(root=str(ROOT), path=str(path), threads=threads, kw=kw)
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=9999)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.png"
        path.write_bytes(rgb_png(args.side))
        print(f"{args.side}×{args.side} RGB PNG, {path.stat().st_size / 2**20:.1f} MB on disk")
        cases = {"reduced": (1, {}), "full size": (1, {"max_side": args.side + 1}),
                 f"{args.threads} threads, reduced": (args.threads, {})}
        for label, (threads, kw) in cases.items():
            r = measure(path, threads, kw)
            print(f"{label:>20}: RSS before {r['before']:.0f} MB · peak +{r['peak'] - r['before']:.0f} MB · "
                  f"after +{r['after'] - r['before']:.0f} MB · {r['seconds']:.2f} s · "
                  f"{r['size'][0]}×{r['size'][1]} px · {'; '.join(r['notes']) or 'no note'}")


if __name__ == "__main__":
    main()
