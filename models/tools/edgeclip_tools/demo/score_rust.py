"""Score a bundle on the evaluation set with the Rust runtime (``edgeclip classify --json``).

    python3 -m edgeclip_tools.demo.score_rust --bin target/release/edgeclip --model models/demo \
        [--precision fp32] [--eval target/demo-eval] [--out target/demo-train/rust_eval.json]

Top-1 among the 48 colour-shape prompts (``scenes.PROMPTS[:48]``, embedded by the bundle's
text tower through the runtime), split into seen and held-out combinations with the eval set's
``labels.json`` (written by ``edgeclip_tools.demo eval``). Prints one JSON object; with ``--out`` also
stores it in that file under its precision (``edgeclip_tools.demo card`` puts those into the model card).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile

from . import scenes


def top_prompts(bin_: str, model: str, precision: str | None, image_dir: str,
                rows: list[dict]) -> dict[str, str]:
    """``edgeclip classify --json``'s top prompt among the 48 colour-shape prompts, by file name,
    for the ``rows`` (``{"file": ...}``) of ``image_dir``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(scenes.PROMPTS[:48]) + "\n")
        prompts = f.name
    cmd = [bin_, "classify", "--model", model, "--prompts-file", prompts, "--json"]
    if precision:
        cmd += ["--precision", precision]
    cmd += [os.path.join(image_dir, r["file"]) for r in rows]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    os.unlink(prompts)
    top = {}
    for line in out.splitlines():
        o = json.loads(line)
        top[os.path.basename(o["image"])] = max(o["scores"], key=lambda s: s["score"])["prompt"]
    return top


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/edgeclip")
    p.add_argument("--model", default="models/demo")
    p.add_argument("--precision", default=None, help="image tower variant (default: the bundle's)")
    p.add_argument("--eval", default="target/demo-eval")
    p.add_argument("--out", default=None, help="JSON file that collects the results by precision")
    a = p.parse_args()
    rows = json.load(open(os.path.join(a.eval, "labels.json")))
    top = top_prompts(a.bin, a.model, a.precision, a.eval, rows)
    res = {"seen": [0, 0], "held_out": [0, 0]}
    per: dict[str, list[int]] = {}
    for r in rows:
        k = "held_out" if r["held_out"] else "seen"
        ok = int(top[r["file"]] == r["label"])
        res[k][0] += ok
        res[k][1] += 1
        if r["held_out"]:
            per.setdefault(r["label"].removeprefix("a photo of a "), [0, 0])
            per[r["label"].removeprefix("a photo of a ")][0] += ok
            per[r["label"].removeprefix("a photo of a ")][1] += 1
    result = {"model": a.model, "precision": a.precision or "default",
              "seen": res["seen"][0] / res["seen"][1],
              "held_out": res["held_out"][0] / res["held_out"][1],
              "n": [res["seen"][1], res["held_out"][1]],
              "per_held_out": {k: v[0] / v[1] for k, v in sorted(per.items())}}
    print(json.dumps(result))
    if a.out:
        stored = json.load(open(a.out)) if os.path.exists(a.out) else {}
        stored[result["precision"]] = result
        json.dump(stored, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
