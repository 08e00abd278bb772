"""Time the full dataset scan (foundation features + scores) of >= 60,000 images on CPU and on CUDA.

    python -m benchmarks.poisoning.scan_timing --data fashion_mnist --out benchmarks/results/scan-timing.json
    python -m benchmarks.poisoning.scan_timing --data fmnist.npz ...   # arrays X (N x 28 x 28), y

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist``; on a machine without it, pass an
``.npz`` (``python -m benchmarks.poisoning.scan_timing --export fmnist.npz`` writes one here).
Both devices scan the same arrays; the JSON records the times, the device names, and how far the
CPU and CUDA scores differ (max absolute difference, flags that differ).
"""

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def _arrays(data: str) -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.poisoning.data import fashion_mnist, load_npz

    if data == "fashion_mnist":
        xs, ys, xt, yt = fashion_mnist()
        return np.concatenate([xs, xt]), np.concatenate([ys, yt])
    return load_npz(data)


def time_scan(x: np.ndarray, y: np.ndarray, device: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    import torch

    from integrity.scans.poisoning import FoundationModel, packaged_weights, scan_dataset

    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    model = FoundationModel.from_path(packaged_weights(), device=device)
    features = model.embed(x, batch_size=1024 if device == "cuda" else 256)
    embedded = time.perf_counter() - started
    result = scan_dataset(x, y, foundation_features=features, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - started
    name = torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine())
    return ({"device": device, "device_name": name, "threads": torch.get_num_threads(), "images": len(y),
             "seconds_total": round(total, 2), "seconds_features": round(embedded, 2),
             "seconds_scores": round(total - embedded, 2), "flagged": int(result.flagged.sum()),
             "verdict": result.verdict.reason}, result.scores, result.flagged)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion_mnist", help="fashion_mnist or an .npz with X and y")
    parser.add_argument("--out", default="benchmarks/results/scan-timing.json")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    parser.add_argument("--limit", type=int, default=0, help="scan only the first N images (0: all)")
    parser.add_argument("--export", help="write the arrays to this .npz (for a machine without the package) and exit")
    args = parser.parse_args(argv)
    x, y = _arrays(args.data)
    if args.export:
        np.savez_compressed(args.export, X=(x * 255).round().astype(np.uint8), y=y)
        print(f"wrote {args.export}: {len(y)} images")
        return 0
    if args.limit:
        x, y = x[:args.limit], y[:args.limit]
    runs, scores = [], {}
    for device in args.devices.split(","):
        if device == "cuda" and not torch.cuda.is_available():
            runs.append({"device": "cuda", "skipped": "no CUDA device here"})
            continue
        info, score, flags = time_scan(x, y, device)
        scores[device] = (score, flags)
        runs.append(info)
        print(json.dumps(info))
    report: dict[str, Any] = {"benchmark": "poisoning-scan-timing", "data": args.data, "images": len(y), "runs": runs}
    if len(scores) == 2:
        (a, fa), (b, fb) = scores["cpu"], scores["cuda"]
        report["cpu_vs_cuda"] = {"max_abs_score_difference": float(np.max(np.abs(a - b))),
                                 "flags_differing": int((fa != fb).sum())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
