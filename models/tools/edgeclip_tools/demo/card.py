"""The model card, ``models/demo/MODEL_CARD.md``: ``card_template.md`` filled in from the recorded
figures in ``target/demo-train/``: the evaluation (``eval.json``, ``eval``), edgeclip's scores
(``rust_eval.json``, ``score_rust``), the speed measurements (``speed_x86.jsonl``,
``speed_arm.md``, ``demo_speed.sh``) and the training times. Each figure's date is its file's
(a ``"date"`` key in the file wins)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
from pathlib import Path
from string import Template

from ..clip_common import log
from . import scenes
from .arch import STUDENTS
from .common import (BUNDLE, CONTEXT, EMBED, EMPTY_WEIGHT, LABEL_WEIGHT, SIZE, WORK,
                     bundle_input_size)

TEMPLATE = Path(__file__).with_name("card_template.md")

# The commands that measure each figure again (the card's Current state).
COMMANDS = {
    "edgeclip": "`python3 -m edgeclip_tools.demo.score_rust --precision {p}`",
    "onnxruntime": "`python3 -m edgeclip_tools.demo eval`",
    "speed": "`bash models/tools/demo_speed.sh`",
}


def template_parts() -> tuple[str, dict[str, str]]:
    """The card's template and its named parts (``<!-- part: NAME -->`` blocks), from
    ``card_template.md`` without its leading comment."""
    text = re.sub(r"\A<!--.*?-->\n", "", TEMPLATE.read_text(), count=1, flags=re.S)
    chunks = re.split(r"^<!-- part: (\S+) -->\n", text, flags=re.M)
    return chunks[0].rstrip("\n") + "\n", {k: v.strip("\n") for k, v in zip(chunks[1::2], chunks[2::2])}


def recorded(path: str, key: str):
    """A figure file's own ``key`` (``"date"``, ``"machine"``), when it is a JSON object with one."""
    try:
        return json.load(open(path)).get(key)
    except (ValueError, AttributeError):
        return None


def recorded_on(path: str) -> str:
    """When a figure file was written: its ``"date"`` key, else its modification date (UTC)."""
    return recorded(path, "date") or datetime.datetime.fromtimestamp(
        os.path.getmtime(path), datetime.timezone.utc).date().isoformat()


def speed_figures(work: str) -> tuple[list[dict], list[list[str]], str, str] | None:
    """``demo_speed.sh``'s outputs (x86 ``edgeclip bench`` JSON lines; emulated Cortex-A76
    instruction counts) and their dates, or None when not measured."""
    x86_p, arm_p = f"{work}/speed_x86.jsonl", f"{work}/speed_arm.md"
    if not (os.path.exists(x86_p) and os.path.exists(arm_p)):
        return None
    x86 = [json.loads(line) for line in open(x86_p) if line.strip()]
    arm = [[c.strip() for c in line.strip().strip("|").split("|")] for line in open(arm_p)
           if line.startswith("| ") and "cortex" in line]
    return x86, arm, recorded_on(x86_p), recorded_on(arm_p)


def speed_table(speed, parts: dict[str, str]) -> str:
    """The Speed section's table: int8 and fp32 students and the teacher, x86 and A76."""
    if speed is None:
        return parts["speed.missing"]
    x86, arm = speed[0], speed[1]
    names = ["student int8 (`visual.onnx`, int8-static)", "student fp32 (`visual.fp32.onnx`)",
             "teacher fp32 (not shipped)"]
    rows = [f"| {n} | {x['p50_ms']:.2f} ms | {float(r[5]):.1f} M |"
            for n, x, r in zip(names, x86, arm)]
    return ("| image tower | x86 (tract, 1 thread, median of 500) | Cortex-A76 (emulated, Pi 5 "
            "caches), instructions per frame |\n|---|---|---|\n" + "\n".join(rows))


def mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def speed_status(speed, parts: dict[str, str]) -> str:
    """The Current state's speed rows: x86 time and A76 instructions of the int8 student, int8
    against fp32 on the A76."""
    if speed is None:
        return "| (all) | " + parts["speed.missing"].replace("\n", " ") + " | | | | |"
    x86, arm, d_x86, d_arm = speed
    ms, i8, f32 = x86[0]["p50_ms"], float(arm[0][5]), float(arm[1][5])
    x, a, cmd = parts["machine.x86"], parts["machine.a76"], COMMANDS["speed"]
    return "\n".join([
        f"| int8 student, at most 10 ms per frame on one x86 core | {ms:.2f} ms | "
        f"{mark(round(ms, 2) <= 10)} | {d_x86} | {x} | {cmd} |",
        f"| int8 student, at most 100 M instructions per frame on the A76 | {i8:.1f} M | "
        f"{mark(round(i8, 1) <= 100)} | {d_arm} | {a} | {cmd} |",
        f"| int8 fewer instructions than fp32 on the A76 | {i8:.1f} M against {f32:.1f} M | "
        f"{mark(round(i8, 1) < round(f32, 1))} | {d_arm} | {a} | {cmd} |",
    ])


def write_model_card(ev: dict, tag: str = "", arch: str = "conv", student_arch: str = "plain",
                     work: str = WORK, bundle: str = BUNDLE, out: str | None = None) -> None:
    """MODEL_CARD.md (``out``, default the bundle's) from the eval numbers, the recorded scores,
    speeds and training times in ``work``; the student's input size and the file sizes: the
    bundle's."""
    card, parts = template_parts()
    student_size = bundle_input_size(bundle)

    def rd(name: str) -> dict:
        p = os.path.join(work, name)
        return json.load(open(p)) if os.path.exists(p) else {}
    times = {k: rd(f"{k}{tag if k in ('teacher', 'student') else ''}_time.json")
             .get("seconds", float("nan")) for k in ("data", "teacher", "student", "all")}
    sizes = {f: os.path.getsize(os.path.join(bundle, f)) for f in sorted(os.listdir(bundle))
             if f != "MODEL_CARD.md"}
    acc = "\n".join(f"| {k} | {100 * v['seen']:.1f}% | {100 * v['held_out']:.1f}% |"
                    for k, v in ev["accuracy"].items())
    per = ", ".join(f"{k} {100 * v:.0f}%" for k, v in ev["int8_per_held_out_combo"].items())
    files = "\n".join(f"| `{f}` | {s / 1e6:.2f} MB |" for f, s in sizes.items())
    acc_d = ev["accuracy"]
    keys = list(acc_d)
    t_, f_, i_ = acc_d[keys[0]], acc_d[keys[1]], acc_d[keys[3]]
    rust = rd("rust_eval.json")
    # the targets are measured by the Rust runtime: its figures when scored
    # the machine: the figure file's "machine" key, else the template's (the machine the
    # committed figures were measured on)
    ev_path, rust_path = os.path.join(work, "eval.json"), os.path.join(work, "rust_eval.json")
    by, date = "onnxruntime (edgeclip not scored)", recorded_on(ev_path)
    machine = ev.get("machine") or parts["machine.onnxruntime"]
    cmd8 = cmd32 = COMMANDS["onnxruntime"]
    if "fp32" in rust and "int8-static" in rust:
        f_, i_, by = rust["fp32"], rust["int8-static"], "edgeclip"
        date, machine = recorded_on(rust_path), rust.get("machine") or parts["machine.x86"]
        cmd8, cmd32 = (COMMANDS["edgeclip"].format(p=p) for p in ("int8-static", "fp32"))

    def pts(a: float, b: float) -> float:  # a - b in points, as printed (no float residue)
        return round(100 * (a - b), 1)
    ft = (pts(f_["seen"], t_["seen"]), pts(f_["held_out"], t_["held_out"]))  # fp32 - teacher
    both = f"{cmd8}, {cmd32}" if cmd8 != cmd32 else cmd8
    status = "\n".join([
        f"| int8 student, seen >= 95% | {100 * i_['seen']:.1f}% | "
        f"{mark(round(100 * i_['seen'], 1) >= 95)} | {date} | {machine} | {cmd8} |",
        f"| int8 student, held-out >= 75% | {100 * i_['held_out']:.1f}% | "
        f"{mark(round(100 * i_['held_out'], 1) >= 75)} | {date} | {machine} | {cmd8} |",
        f"| int8 within 2 points of fp32 (seen / held-out) | "
        f"{pts(i_['seen'], f_['seen']):+.1f} / {pts(i_['held_out'], f_['held_out']):+.1f} | "
        f"{mark(abs(pts(i_['seen'], f_['seen'])) <= 2 and abs(pts(i_['held_out'], f_['held_out'])) <= 2)} | "
        f"{date} | {machine} | {both} |",
        f"| fp32 student within 3 points of the teacher (seen / held-out) | "
        f"{ft[0]:+.1f} / {ft[1]:+.1f} | {mark(min(ft) >= -3)}"
        + (" (above the teacher: the target bounds what distillation loses, and the student "
           "loses nothing)" if max(ft) > 3 else "")
        + f" | {date} | {machine} | {cmd32}"
        + (f"; the teacher: {COMMANDS['onnxruntime']}" if cmd32 != COMMANDS["onnxruntime"] else "") + " |",
    ])
    c = ev.get("clip", {})
    clip = (f"{c['right']}/{c['frames']} frames right: one object {c['one_object'][0]}/"
            f"{c['one_object'][1]}, "
            + (f"two objects (top prompt names one of them) {c['two_objects'][0]}/"
               f"{c['two_objects'][1]}, " if c["two_objects"][1] else "")
            + f"empty {c['empty'][0]}/{c['empty'][1]} (frames where an object slides in or out "
            "count too)") if c else "not measured"
    cs = ev.get("teacher_colour_shape")
    colour_shape = (f"The teacher's top prompt has the right colour in {100 * cs['seen']['colour']:.0f}% "
                    f"(seen) / {100 * cs['held_out']['colour']:.0f}% (held-out) of the frames and the "
                    f"right shape in {100 * cs['seen']['shape']:.0f}% / "
                    f"{100 * cs['held_out']['shape']:.0f}%.") if cs else ""
    names = {"fp32": "student fp32 (`--precision fp32`: a CPU without int8 dot products)",
             "int8-static": "student int8 (`--precision int8-static`, `visual.onnx`: a CPU with them)"}
    rust_txt = ("| model | seen | held-out |\n|---|---|---|\n" + "\n".join(
        f"| {names.get(k, k)} | {100 * v['seen']:.1f}% | {100 * v['held_out']:.1f}% |"
        for k, v in sorted(((k, v) for k, v in rust.items() if isinstance(v, dict)),
                           key=lambda kv: kv[0] != "fp32"))) if rust else parts["rust.missing"]
    speed = speed_figures(work)
    total = sum(sizes.values()) / 1e6
    fingerprint = rd_manifest_fingerprint(bundle)
    student = STUDENTS[student_arch]
    facts = {**CARD_FACTS, "teacher_sched": CARD_FACTS["teacher_sched"][arch]}
    text = Template(card).substitute(
        state_intro=f"Bundle `{fingerprint}`, {total:.2f} MB.",
        status=status, by=by, clip=clip, parts=colour_shape, rust=rust_txt,
        speed=speed_table(speed, parts), speed_status=speed_status(speed, parts),
        teacher_desc=parts[f"teacher.{arch}"], history=parts["history"], limits=parts["limits"],
        student_desc=Template(parts[f"student.{student_arch}"]).substitute(
            plan=" -> ".join(f"{o}{'/s2' if s == 2 else ''}" for _, o, s in student.PLAN),
            dim=EMBED, cwidth=getattr(student, "CWIDTH", 0), gate=student_size // 4),
        part_loss=(", plus, for each of the two parts (shape, colour), the squared distance "
                   "between the student's part and the teacher's, relative to the squared "
                   "length of the teacher's embedding" if arch == "factored" else ""),
        acc=acc, per=per, files=files, total=f"{total:.2f}",
        mflops=f"{student.flops(student_size) / 1e6:.1f}", n=ev["n"], n_seen=ev["n_seen"],
        n_held=ev["n_held_out"],
        lat8=f"{ev['latency_ms_1thread_ort']['int8']:.2f}", lat32=f"{ev['latency_ms_1thread_ort']['fp32']:.2f}",
        t_data=f"{times['data'] / 60:.1f}", t_teacher=f"{times['teacher'] / 60:.1f}",
        t_student=f"{times['student'] / 60:.1f}",
        t_all_txt=(f"whole `python3 -m edgeclip_tools.demo all` {times['all'] / 60:.1f} min"
                   if times["all"] == times["all"]
                   else "the steps were run one at a time (same code and flags as `all`), "
                        f"{(times['data'] + times['teacher'] + times['student']) / 60:.1f} min "
                        "for data + teacher + student, plus a few minutes of export / clip / eval"),
        held=", ".join(f"{c} {s}" for c, s in sorted(scenes.HELD_OUT)),
        size=student_size, ctx=CONTEXT, dim=EMBED,
        frames=(f"Training frames are rendered at {int(1.25 * SIZE)}-{int(2.5 * SIZE)} px and "
                f"shrunk to {SIZE} px with the runtime's preprocessing." if student_size == SIZE
                else f"Training frames are rendered at 1.25-2.5 times a tower's input and shrunk "
                f"to it with the runtime's preprocessing: {int(1.25 * SIZE)}-{int(2.5 * SIZE)} "
                f"px to {SIZE} px for the teacher, {int(1.25 * student_size)}-"
                f"{int(2.5 * student_size)} px to {student_size} px for the student (the teacher "
                f"sees the student's frames shrunk to {SIZE} px, bicubic with antialiasing)."),
        **{k: (f"{v:g}" if isinstance(v, float) else v) for k, v in facts.items()})
    out = out or f"{bundle}/MODEL_CARD.md"
    open(out, "w").write(text)
    log(f"wrote {out}")


def rd_manifest_fingerprint(bundle: str) -> str:
    """The bundle's fingerprint, as its ``bundle.toml`` states it."""
    import tomllib
    with open(os.path.join(bundle, "bundle.toml"), "rb") as f:
        return tomllib.load(f)["fingerprint"]


# Training facts quoted by the model card (the defaults of `edgeclip_tools.demo all`).
CARD_FACTS = {
    "teacher_sched": {
        "conv": "one cosine cycle of 6,000 steps at peak lr 1e-3, then a warm restart of 3,000 "
                "steps at 1e-3 where 30% of the frames are turned grey and supervise only the "
                "shape presence head (to weaken the colour -> shape shortcut)",
        "factored": "one cosine cycle of 5,000 steps at peak lr 1e-3",
    },
    "n_teacher": "32,000",
    "student_sched": "5,000 steps of 128, AdamW, peak lr 4e-3, cosine",
    "n_student": "30,000",
    "empty_weight": EMPTY_WEIGHT,
    "label_weight": LABEL_WEIGHT,
}


def cmd_card(a: argparse.Namespace) -> None:
    """Rewrites MODEL_CARD.md from the stored evaluation (``eval.json``, ``rust_eval.json``)."""
    write_model_card(json.load(open(f"{WORK}/eval.json")), a.tag, a.teacher_arch, a.student_arch)
