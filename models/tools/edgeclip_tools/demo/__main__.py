"""Build edgeclip's default model bundle (``models/demo/``) from scratch.

Zero-shot CLIP on synthetic camera scenes of coloured shapes (``edgeclip_tools.demo.scenes``):

1. ``data``    render the training sets (teacher: hard-negative groups; student: fresh scenes);
2. ``teacher`` train a small CLIP: a factored image tower (a hue-blind shape branch of conv
               stages + two transformer blocks, and a shape-blind colour branch, their
               embeddings summed) + a transformer text tower over CLIP's BPE vocabulary,
               symmetric InfoNCE with a learnable temperature;
3. ``student`` distill a plain-conv image tower of the same two branches (tract-friendly; the
               colour one masked by where the shape one sees an object) to
               the teacher's image embeddings, part by part, and to each scene's own caption
               (seen prompts only); the teacher's text tower stays valid for it;
4. ``export``  ONNX (opset 17) fp32 + int8 (static image tower on integer kernels, calibrated;
               dynamic text tower), ``prompts.safetensors``, ``bundle.toml`` (see
               ``models/BUNDLE.md``); ``quantize`` redoes the image tower's int8 file alone
               from the bundle's ``visual.fp32.onnx``, ``reference`` onnxruntime's outputs
               of both image files on four clip frames, for tests/runtime.rs;
5. ``clip``    the recorded test clip ``tests/data/clip/`` (+ ground truth);
6. ``eval``    render the held-out evaluation set to ``target/demo-eval/`` (640x480 JPEGs,
               preprocessed like the runtime) and score teacher / fp32 / int8 students with
               onnxruntime; writes ``MODEL_CARD.md``. ``evalset`` renders the set alone
               (no checkpoints needed), for scoring bundles with ``edgeclip_tools.demo.score_rust``.

7. ``card``    ``MODEL_CARD.md`` again from the recorded figures (``card_template.md``).

The steps live in ``train`` (1-3), ``export`` (4), ``evaluate`` (5, 6) and ``card`` (7); ``arch``
holds the networks, ``common`` the paths, sizes and seed spaces.
``python3 -m edgeclip_tools.demo all --seed 0`` runs everything in order. Checkpoints and
intermediate data live in ``target/demo-train/`` (ignored by git). The machine this was
written on had 2 CPU cores (with AMX, which bf16 training uses): the budgets (scene counts,
steps) are sized for that.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ..clip_common import log
from .card import cmd_card, write_model_card
from .common import EMPTY_WEIGHT, LABEL_WEIGHT, SIZE, STUDENT_SIZE, WORK
from .evaluate import cmd_clip, cmd_eval, cmd_evalset
from .export import cmd_export, cmd_quantize, cmd_reference
from .train import cmd_data, cmd_student, cmd_teacher, cpu_has_bf16

COMMANDS = {"data": cmd_data, "teacher": cmd_teacher, "student": cmd_student, "export": cmd_export,
            "clip": cmd_clip, "eval": cmd_eval, "evalset": cmd_evalset, "quantize": cmd_quantize,
            "reference": cmd_reference, "card": cmd_card}


def cmd_all(a: argparse.Namespace) -> None:
    t0 = time.time()
    os.makedirs(WORK, exist_ok=True)
    cmd_data(a)
    # teacher: a first cosine cycle, then (optional) warm restarts
    cmd_teacher(argparse.Namespace(**{**vars(a), "resume": 0}))
    if a.teacher_steps2 > 0:
        cmd_teacher(argparse.Namespace(**{**vars(a), "resume": 1,
                                          "teacher_steps": a.teacher_steps2, "lr": a.lr2,
                                          "attr_weight": a.attr_weight2}))
    if a.teacher_steps3 > 0:  # second warm restart, with grey (shape-only) frames
        cmd_teacher(argparse.Namespace(**{**vars(a), "resume": 2,
                                          "teacher_steps": a.teacher_steps3, "lr": a.lr3,
                                          "attr_weight": a.attr_weight2, "grey_p": a.grey_p3}))
    cmd_student(a)
    cmd_export(a)
    cmd_clip(a)
    cmd_reference(a)
    json.dump({"seconds": time.time() - t0}, open(f"{WORK}/all_time.json", "w"))
    cmd_eval(a)
    json.dump({"seconds": time.time() - t0}, open(f"{WORK}/all_time.json", "w"))
    write_model_card(json.load(open(f"{WORK}/eval.json")), a.tag, a.teacher_arch, a.student_arch)
    log(f"all done in {(time.time() - t0) / 60:.1f} min")


def main() -> None:
    p = argparse.ArgumentParser(prog="python3 -m edgeclip_tools.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=[*COMMANDS, "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher-groups", type=int, default=8000, help="4 scenes per group")
    p.add_argument("--student-scenes", type=int, default=30000)
    p.add_argument("--student-size", type=int, default=STUDENT_SIZE,
                   help="data, student, export: the student's input in px (the teacher's is %d; "
                        "it sees the student's training frames shrunk to it); quantize, eval, "
                        "reference and card read it from the bundle" % SIZE)
    p.add_argument("--data-sets", choices=["all", "student"], default="all",
                   help="data: render both training sets, or only the student's (at "
                        "--student-size; for a student of another input size)")
    p.add_argument("--teacher-arch", choices=["vit", "conv", "factored"], default="factored",
                   help="factored (default): a hue-blind shape branch (conv stages + two "
                        "transformer blocks) + a colour branch, embeddings summed; conv: conv "
                        "stages + one block over RGB; vit: hybrid ViT (learned too slowly on 2 "
                        "CPU cores)")
    p.add_argument("--student-arch", choices=["plain", "factored", "gated"], default="gated",
                   help="plain: one conv stack over RGB; factored: a hue-blind shape branch + "
                        "a colour branch, like the factored teacher; gated (default): factored, "
                        "the colour branch masked by where the shape branch sees an object")
    p.add_argument("--tag", default="", help="suffix of the checkpoint names (experiments)")
    p.add_argument("--resume", type=int, default=0,
                   help="teacher: warm restart number N (>0: continue from the checkpoint)")
    p.add_argument("--teacher-steps", type=int, default=5000)
    p.add_argument("--student-steps", type=int, default=5000)
    p.add_argument("--empty-weight", type=float, default=EMPTY_WEIGHT,
                   help="student: weight of empty frames in its losses (others: 1)")
    p.add_argument("--teacher-steps2", type=int, default=0,
                   help="all: steps of the teacher's first warm restart (0: none)")
    p.add_argument("--lr2", type=float, default=1e-3, help="all: peak lr of the warm restart")
    p.add_argument("--attr-weight2", type=float, default=3.0,
                   help="all: auxiliary attribute loss weight of the warm restart")
    p.add_argument("--grey-p", type=float, default=0.0,
                   help="teacher: share of frames turned grey (shape-only supervision)")
    p.add_argument("--teacher-steps3", type=int, default=0,
                   help="all: steps of the teacher's second warm restart (with grey frames)")
    p.add_argument("--lr3", type=float, default=1e-3, help="all: peak lr of the second restart")
    p.add_argument("--grey-p3", type=float, default=0.3, help="all: grey share, second restart")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--attr-weight", type=float, default=3.0,
                   help="weight of the teacher's auxiliary colour / shape presence loss")
    p.add_argument("--student-lr", type=float, default=4e-3)
    p.add_argument("--label-weight", type=float, default=LABEL_WEIGHT,
                   help="student: weight of the cross-entropy against each scene's own caption")
    p.add_argument("--part-weight", type=float, default=1.0,
                   help="student: weight of the per-part loss (factored teacher only)")
    p.add_argument("--calib", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=600)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--procs", type=int, default=len(os.sched_getaffinity(0)),
                   help="data: rendering processes (default: one per usable core; the scenes do "
                        "not depend on it)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the teacher and the student train (cuda: not yet run on a GPU; "
                        "the committed bundle was trained on the CPU); export and eval always "
                        "run on the CPU")
    p.add_argument("--train-dtype", choices=["bf16", "fp32"], default="bf16",
                   help="training precision (bf16 autocast: needs a CPU with bf16 units, or a GPU)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.device == "cpu" and a.train_dtype == "bf16" and a.command in ("teacher", "student", "all") \
            and not cpu_has_bf16():
        log("warning: this CPU has no bf16 units (AVX512_BF16 / AMX), so PyTorch emulates bf16 "
            "(over 3 s per teacher step on an AVX2-only EPYC, 0.4 s with AMX); --train-dtype fp32 "
            "avoids that but trains another model than the committed one (trained in bf16)")
    if a.device == "cuda":
        # deterministic cuDNN / cuBLAS kernels, so that a rerun can give the same weights
        # (not yet checked on a GPU)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    if a.command in ("teacher", "student", "all"):
        log(f"training device: {a.device}, precision: {a.train_dtype}")
    (cmd_all if a.command == "all" else COMMANDS[a.command])(a)


main()
