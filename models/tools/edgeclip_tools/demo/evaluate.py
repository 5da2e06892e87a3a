"""Evaluation: the held-out evaluation set (``evalset``), the scores of the teacher and of the
bundle's towers under onnxruntime (``eval``, which then writes the model card), and the recorded
test clip (``clip``)."""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..clip_common import log, to_tensor
from . import scenes
from .card import write_model_card
from .common import (BUNDLE, CLIP_DIR, CLIP_SEED, EVAL_DIR, EVAL_SEED, SIZE, WORK,
                     bundle_input_size, prompt_accuracy, prompt_ids)
from .train import load_teacher


def eval_combo(i: int) -> tuple[str, str]:
    """The object of single-object evaluation frame ``i``: even frames cycle through the seen
    combinations, odd ones through the held-out ones."""
    ho = sorted(scenes.HELD_OUT)
    return ho[(i // 2) % len(ho)] if i % 2 else \
        scenes.SEEN_COMBOS[(i // 2) % len(scenes.SEEN_COMBOS)]


def write_eval_set(n: int) -> list[dict]:
    """Single-object 640x480 scenes, half over seen combinations, half held-out,
    saved as JPEG (quality 95) with labels.json: exactly what the Rust CLI scores."""
    os.makedirs(EVAL_DIR, exist_ok=True)
    rows = []
    for i in range(n):
        combo = eval_combo(i)
        img, _ = scenes.render_scene(EVAL_SEED + i, 640, 480, combos=[combo], allow_held_out=True)
        name = f"eval_{i:04d}.jpg"
        img.save(os.path.join(EVAL_DIR, name), quality=95)
        rows.append({"file": name, "label": scenes.prompt_for(*combo),
                     "held_out": combo in scenes.HELD_OUT})
    json.dump(rows, open(os.path.join(EVAL_DIR, "labels.json"), "w"), indent=1)
    return rows


def cmd_evalset(a: argparse.Namespace) -> None:
    rows = write_eval_set(a.eval_n)
    log(f"eval set: {len(rows)} frames -> {EVAL_DIR}")


def cmd_eval(a: argparse.Namespace) -> None:
    import onnxruntime as ort
    from safetensors import safe_open
    t0 = time.time()
    for old in ("rust_eval.json", "speed_x86.jsonl", "speed_arm.md"):  # of an earlier bundle
        if os.path.exists(f"{WORK}/{old}"):
            os.remove(f"{WORK}/{old}")
    rows = write_eval_set(a.eval_n)
    log(f"eval set: {len(rows)} frames in {time.time() - t0:.0f}s -> {EVAL_DIR}")
    size = bundle_input_size(BUNDLE)
    student_in, teacher_in = [], []  # each frame decoded once, preprocessed for both towers
    for r in rows:
        frame = Image.open(os.path.join(EVAL_DIR, r["file"])).convert("RGB")
        student_in.append(np.asarray(scenes.runtime_preprocess(frame, size)))
        teacher_in.append(np.asarray(scenes.runtime_preprocess(frame, SIZE)))
    x, x_t = to_tensor(np.stack(student_in)), to_tensor(np.stack(teacher_in))
    labels = [scenes.PROMPTS.index(r["label"]) for r in rows]
    held = [r["held_out"] for r in rows]
    teacher = load_teacher(a)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2

    def run(path: str, name: str, inp: str, arr: np.ndarray) -> torch.Tensor:
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return torch.from_numpy(np.concatenate([s.run([name], {inp: arr[i:i + 100]})[0]
                                                for i in range(0, len(arr), 100)]))

    ids = prompt_ids().numpy()
    with safe_open(f"{BUNDLE}/prompts.safetensors", "np") as f:
        shipped = torch.from_numpy(f.get_tensor("embeddings"))
    txt32 = run(f"{BUNDLE}/textual.fp32.onnx", "text_embeds", "input_ids", ids)
    with torch.no_grad():
        t_img = teacher.visual(x_t)
        t_txt = teacher.text(torch.from_numpy(ids))
    s32 = run(f"{BUNDLE}/visual.fp32.onnx", "image_embeds", "pixel_values", x.numpy())
    s8 = run(f"{BUNDLE}/visual.onnx", "image_embeds", "pixel_values", x.numpy())
    res = {
        "teacher (PyTorch fp32, fp32 text)": prompt_accuracy(t_img, labels, t_txt, held),
        "student fp32 (visual.fp32.onnx + textual.fp32.onnx)": prompt_accuracy(s32, labels, txt32, held),
        "student fp32 (visual.fp32.onnx + shipped prompts)": prompt_accuracy(s32, labels, shipped, held),
        "student int8 (visual.onnx + shipped prompts, default)": prompt_accuracy(s8, labels, shipped, held),
    }
    # per held-out combination, default int8 path
    pred = (F.normalize(s8, dim=-1) @ shipped[:48].t()).argmax(1).numpy()
    per = {}
    for c in sorted(scenes.HELD_OUT):
        m = [i for i, r in enumerate(rows) if r["label"] == scenes.prompt_for(*c)]
        per[f"{c[0]} {c[1]}"] = float(np.mean([pred[i] == labels[i] for i in m]))
    # where the teacher goes wrong: colour or shape of its top prompt
    tpred = (F.normalize(t_img, dim=-1) @ F.normalize(t_txt[:48], dim=-1).t()).argmax(1).numpy()
    parts = {}
    for name, want in (("seen", False), ("held_out", True)):
        ii = [i for i in range(len(rows)) if held[i] == want]
        pc = [scenes.ALL_COMBOS[tpred[i]] for i in ii]
        lc = [scenes.ALL_COMBOS[labels[i]] for i in ii]
        parts[name] = {"colour": float(np.mean([p[0] == l[0] for p, l in zip(pc, lc)])),
                       "shape": float(np.mean([p[1] == l[1] for p, l in zip(pc, lc)]))}
    # latency of the int8 student on one core (onnxruntime)
    so1 = ort.SessionOptions()
    so1.intra_op_num_threads = 1
    lat = {}
    for name, path in (("int8", f"{BUNDLE}/visual.onnx"), ("fp32", f"{BUNDLE}/visual.fp32.onnx")):
        s = ort.InferenceSession(path, so1, providers=["CPUExecutionProvider"])
        one = x[:1].numpy()
        for _ in range(20):
            s.run(None, {"pixel_values": one})
        ts = []
        for _ in range(200):
            t1 = time.perf_counter()
            s.run(None, {"pixel_values": one})
            ts.append(time.perf_counter() - t1)
        lat[name] = 1000 * float(np.median(ts))
    out = {"n": len(rows), "n_seen": int(len(rows) - sum(held)), "n_held_out": int(sum(held)),
           "accuracy": {k: {"seen": v[0], "held_out": v[1]} for k, v in res.items()},
           "int8_per_held_out_combo": per, "latency_ms_1thread_ort": lat,
           "teacher_colour_shape": parts,
           "clip": score_clip(f"{BUNDLE}/visual.onnx", shipped.numpy(), size)}
    log(f"clip: {out['clip']}")
    json.dump(out, open(f"{WORK}/eval.json", "w"), indent=1)
    for k, v in res.items():
        log(f"{k}: seen {100 * v[0]:.1f}%  held-out {100 * v[1]:.1f}%")
    log(f"per held-out combo (int8): {per}")
    log(f"ort latency 1 thread: {lat}")
    write_model_card(out, a.tag, a.teacher_arch, a.student_arch)


def score_clip(visual: str, prompts: np.ndarray, size: int) -> dict:
    """Top-1 of the int8 student among the 49 prompts on the recorded clip, against its
    ground truth: a frame counts as right when the top prompt is one of its labels (or
    "an empty scene" for an empty frame)."""
    import onnxruntime as ort
    gt = json.load(open(os.path.join(CLIP_DIR, "ground_truth.json")))["frames"]
    x = to_tensor(np.stack([np.asarray(scenes.runtime_preprocess(
        Image.open(os.path.join(CLIP_DIR, f["file"])).convert("RGB"), size)) for f in gt]))
    emb = ort.InferenceSession(visual, providers=["CPUExecutionProvider"]).run(
        None, {"pixel_values": x.numpy()})[0]
    top = (emb / np.linalg.norm(emb, axis=1, keepdims=True) @ prompts.T).argmax(1)
    res = {"frames": len(gt), "right": 0, "one_object": [0, 0], "two_objects": [0, 0],
           "empty": [0, 0]}
    for f, t in zip(gt, top):
        want = f["labels"] or [scenes.EMPTY_PROMPT]
        ok = scenes.PROMPTS[t] in want
        key = "empty" if not f["labels"] else ("one_object" if len(want) == 1 else "two_objects")
        res[key][0] += int(ok)
        res[key][1] += 1
        res["right"] += int(ok)
    return res


def cmd_clip(a: argparse.Namespace) -> None:
    """The recorded demo / test clip (tests/data/clip): see its README for the story."""
    from . import clipgen
    clipgen.make_clip(CLIP_DIR, CLIP_SEED)
