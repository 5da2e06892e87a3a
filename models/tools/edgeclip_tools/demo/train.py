"""Training: the rendered training sets (``data``), the teacher CLIP (``teacher``) and the
distilled student (``student``), with their checkpoints in ``target/demo-train/``."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from multiprocessing import get_context

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..clip_common import log, to_tensor
from ..nets import cosine_lr
from . import scenes
from .arch import Teacher, new_student
from .common import (EVAL_SEED, OFF_STUDENT, OFF_TEACHER, SEED_STRIDE, SIZE, WORK, prompt_accuracy,
                     prompt_ids, tokenize)


def train_autocast(a: argparse.Namespace):
    """Training precision. ``bf16``: autocast to bfloat16 (weights, gradients and optimiser
    state stay f32), which runs the convs and matmuls on AMX / AVX-512 BF16 units where the CPU
    has them: a step of the earlier teacher (half the current one) took 0.17 s instead of 0.41 s
    on the 2-core build machine. On a GPU, its tensor cores.
    On a CPU without bf16 units, PyTorch emulates bf16 (over 3 s per teacher step on an
    AVX2-only EPYC): pass ``--train-dtype fp32`` there (another model than the committed one)."""
    return torch.autocast(a.device, dtype=torch.bfloat16, enabled=a.train_dtype == "bf16")


def cpu_has_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic (x86 AVX512_BF16 or AMX; Arm BF16), from Linux's
    /proc/cpuinfo flags; ``True`` where they cannot be read."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return True
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def training_layout(a: argparse.Namespace, x: torch.Tensor | nn.Module):
    """On the training device; channels_last (NHWC) for bf16 training: oneDNN's fast conv
    layout (another 1.2x), and cuDNN's for tensor cores."""
    x = x.to(a.device)
    return x.to(memory_format=torch.channels_last) if a.train_dtype == "bf16" else x


def dihedral(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each frame turned to one of the 8 rotations / mirror images of the square, at random.
    Every shape and colour keeps its name under these, so the 32,000 rendered training scenes
    count for eight times as many views."""
    k = rng.integers(8, size=len(x))
    out = torch.empty_like(x)
    for t in range(8):
        sel = torch.from_numpy(np.nonzero(k == t)[0])
        if len(sel):
            y = x[sel].flip(-1) if t >= 4 else x[sel]
            out[sel] = torch.rot90(y, t % 4, (-2, -1))
    return out


# ============================================================================== data


def _render_train(args: tuple[int, list | None, int]) -> tuple[np.ndarray, list]:
    """Worker: one training scene ``(seed, combos, size)``, rendered square at a random frame
    size (1.25-2.5 x ``size``) then shrunk to ``size`` with the runtime's preprocessing (PIL
    bicubic)."""
    seed, combos, size = args
    rng = np.random.default_rng(seed + 7)
    frame = int(size * rng.uniform(1.25, 2.5))
    img, objs = scenes.render_scene(seed, frame, frame, combos=combos)
    img = scenes.runtime_preprocess(img, size)
    return np.asarray(img, dtype=np.uint8), objs


def teacher_jobs(seed: int, n_groups: int) -> list[tuple[int, list | None, int]]:
    """Hard-negative groups of 4 scenes: an anchor (colour, shape), the same shape in
    another colour, the same colour in another shape, and one random scene (0-3 objects)."""
    jobs = []
    rng = np.random.default_rng([seed, 11])
    for g in range(n_groups):
        c, s = scenes.SEEN_COMBOS[rng.integers(len(scenes.SEEN_COMBOS))]
        other_c = [cc for cc in scenes.COLOURS if cc != c and (cc, s) not in scenes.HELD_OUT]
        other_s = [ss for ss in scenes.SHAPES if ss != s and (c, ss) not in scenes.HELD_OUT]
        c2 = other_c[rng.integers(len(other_c))]
        s2 = other_s[rng.integers(len(other_s))]
        base = seed * SEED_STRIDE + OFF_TEACHER + 4 * g
        jobs += [(base, [(c, s)], SIZE), (base + 1, [(c2, s)], SIZE), (base + 2, [(c, s2)], SIZE),
                 (base + 3, None, SIZE)]
    return jobs


def render_many(jobs: list, procs: int) -> tuple[np.ndarray, list]:
    """Render jobs with a process pool (one process per core: the scenes do not depend on it)."""
    ctx = get_context("fork")
    with ctx.Pool(procs) as pool:
        out = pool.map(_render_train, jobs, chunksize=64)
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def student_set(size: int) -> tuple[str, str]:
    """The student's training frames at ``size`` px and their objects (two files)."""
    return f"{WORK}/student_imgs_{size}.npy", f"{WORK}/student_objs_{size}.json"


def cmd_data(a: argparse.Namespace) -> None:
    os.makedirs(WORK, exist_ok=True)
    t0 = t_all = time.time()
    if a.data_sets == "all":
        imgs, objs = render_many(teacher_jobs(a.seed, a.teacher_groups), a.procs)
        np.save(f"{WORK}/teacher_imgs.npy", imgs)
        json.dump(objs, open(f"{WORK}/teacher_objs.json", "w"))
        log(f"teacher set: {len(imgs)} scenes in {time.time() - t0:.0f}s")
    t0 = time.time()
    base = a.seed * SEED_STRIDE + OFF_STUDENT
    imgs, objs = render_many([(base + i, None, a.student_size) for i in range(a.student_scenes)],
                             a.procs)
    imgs_path, objs_path = student_set(a.student_size)
    np.save(imgs_path, imgs)
    json.dump(objs, open(objs_path, "w"))
    log(f"student set: {len(imgs)} scenes at {a.student_size} px in {time.time() - t0:.0f}s")
    if a.data_sets == "all":
        json.dump({"seconds": time.time() - t_all}, open(f"{WORK}/data_time.json", "w"))
    for objs in (json.load(open(f"{WORK}/teacher_objs.json")), objs):
        for o in objs:
            assert not any(tuple(x) in scenes.HELD_OUT for x in o), "held-out combo in training"


# ============================================================================= teacher


def attribute_targets(objs: list) -> torch.Tensor:
    """Multi-hot presence of the 8 colours then the 6 shapes in one scene."""
    t = torch.zeros(len(scenes.COLOURS) + len(scenes.SHAPES))
    for c, s in objs:
        t[scenes.COLOURS.index(c)] = 1
        t[len(scenes.COLOURS) + scenes.SHAPES.index(s)] = 1
    return t


def content_key(objs: list) -> str:
    return "|".join(sorted(f"{c} {s}" for c, s in objs))


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
              keys: list[str]) -> torch.Tensor:
    """Symmetric InfoNCE; pairs with the same content (same object set) count as positives."""
    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    logits = scale.exp() * img @ txt.t()
    k = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    ids = torch.tensor([k[key] for key in keys], device=img.device)
    pos = (ids[:, None] == ids[None, :]).float()
    target = pos / pos.sum(1, keepdim=True)
    li = -(target * logits.log_softmax(1)).sum(1).mean()
    lt = -(target * logits.t().log_softmax(1)).sum(1).mean()
    return (li + lt) / 2


def quick_val_set(size: int, n: int = 384) -> tuple[torch.Tensor, list[int], list[bool]]:
    """A small single-object validation set at training resolution (seed space of the eval
    set, different offset), used only for progress logs; half seen, half held-out."""
    imgs, labels, held = [], [], []
    ho = sorted(scenes.HELD_OUT)
    for i in range(n):
        combo = ho[i % len(ho)] if i % 2 else scenes.SEEN_COMBOS[(i // 2) % len(scenes.SEEN_COMBOS)]
        img, _ = scenes.render_scene(EVAL_SEED + 500_000 + i, 160, 160, combos=[combo],
                                     allow_held_out=True)
        imgs.append(np.asarray(scenes.runtime_preprocess(img, size)))
        labels.append(scenes.ALL_COMBOS.index(combo))
        held.append(combo in scenes.HELD_OUT)
    return to_tensor(np.stack(imgs)), labels, held


def cmd_teacher(a: argparse.Namespace) -> None:
    phase = a.resume
    torch.manual_seed(a.seed + 100 * phase)
    rng = np.random.default_rng([a.seed, 21 + phase])
    imgs = np.load(f"{WORK}/teacher_imgs.npy")
    objs = json.load(open(f"{WORK}/teacher_objs.json"))
    n_groups = len(imgs) // 4
    model = Teacher(a.teacher_arch)
    prev_seconds = 0.0
    if phase:  # a warm restart (SGDR): continue from the saved weights, fresh optimiser
        model.load_state_dict(torch.load(f"{WORK}/teacher{a.tag}.pt", map_location="cpu"))
        prev_seconds = json.load(open(f"{WORK}/teacher{a.tag}_time.json"))["seconds"]
        log(f"teacher: warm restart {phase} from teacher{a.tag}.pt")
    model = training_layout(a, model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": other, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.98))
    val_x, val_y, val_h = quick_val_set(SIZE)
    val_x, pids = val_x.to(a.device), prompt_ids().to(a.device)
    tok_cache: dict[str, torch.Tensor] = {}
    gpb = a.batch // 4
    order = rng.permutation(n_groups)
    cursor = 0
    t0 = time.time()
    for step in range(a.teacher_steps):
        if cursor + gpb > n_groups:
            order, cursor = rng.permutation(n_groups), 0
        groups = order[cursor:cursor + gpb]
        cursor += gpb
        idx = (groups[:, None] * 4 + np.arange(4)[None]).reshape(-1)
        batch = imgs[idx]
        # grey frames: shape without colour. They only train the shape presence head, which
        # pushes the tower to see shapes independently of colour (no colour -> shape shortcut).
        grey = rng.uniform(size=len(idx)) < a.grey_p if a.grey_p > 0 else np.zeros(len(idx), bool)
        if grey.any():
            lum = (batch[grey].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
            batch = batch.copy()
            batch[grey] = np.clip(lum, 0, 255).astype(np.uint8)[..., None]
        caps = [scenes.caption_for([tuple(o) for o in objs[i]], rng) for i in idx]
        miss = [c for c in dict.fromkeys(caps) if c not in tok_cache]
        if miss:
            for c, t in zip(miss, tokenize(miss)):
                tok_cache[c] = t
        ids = torch.stack([tok_cache[c] for c in caps]).to(a.device)
        keys = [content_key(objs[i]) for i in idx]
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, a.teacher_steps, 40, a.lr)
        model.train()
        x = training_layout(a, dihedral(to_tensor(batch), rng))
        col = torch.from_numpy(~grey)
        attr = torch.stack([attribute_targets(objs[i]) for i in idx])
        weight = torch.ones_like(attr)
        weight[~col, :len(scenes.COLOURS)] = 0  # no colour targets on grey frames
        col, attr, weight = col.to(a.device), attr.to(a.device), weight.to(a.device)
        with train_autocast(a):
            feats = model.visual.features(x)
            img_emb, txt_emb = model.visual.head(feats[col]), model.text(ids[col])
            attr_logits = model.visual.attr(feats)
        loss = clip_loss(img_emb.float(), txt_emb.float(), model.logit_scale,
                         [k for k, g in zip(keys, grey) if not g])
        loss = loss + a.attr_weight * F.binary_cross_entropy_with_logits(
            attr_logits.float(), attr, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == a.teacher_steps - 1:
            model.eval()
            with torch.no_grad():
                seen, held = prompt_accuracy(model.visual(val_x), val_y, model.text(pids), val_h)
            log(f"teacher step {step}/{a.teacher_steps} loss {loss.item():.3f} "
                f"scale {model.logit_scale.exp().item():.1f} val seen {seen:.3f} held {held:.3f} "
                f"({time.time() - t0:.0f}s)")
    torch.save(cpu_state(model), f"{WORK}/teacher{a.tag}.pt")
    json.dump({"seconds": prev_seconds + time.time() - t0},
              open(f"{WORK}/teacher{a.tag}_time.json", "w"))
    log(f"teacher done in {time.time() - t0:.0f}s")


def cpu_state(model: nn.Module) -> dict:
    """The weights to save: contiguous, on the CPU (whatever the training layout and device)."""
    return model.to(memory_format=torch.contiguous_format).cpu().state_dict()


def load_teacher(a: argparse.Namespace) -> Teacher:
    t = Teacher(a.teacher_arch)
    t.load_state_dict(torch.load(f"{WORK}/teacher{a.tag}.pt", map_location="cpu"))
    return t.eval()


# ============================================================================= student


def cmd_student(a: argparse.Namespace) -> None:
    torch.manual_seed(a.seed + 1)
    rng = np.random.default_rng([a.seed, 31])
    teacher = training_layout(a, load_teacher(a))
    factored = hasattr(teacher.visual, "parts")
    imgs_path, objs_path = student_set(a.student_size)
    imgs = np.load(imgs_path)
    objs = json.load(open(objs_path))
    empty = np.array([not o for o in objs])
    with torch.no_grad():
        pemb = F.normalize(teacher.text(prompt_ids().to(a.device)), dim=-1)
        seen_rows = [i for i, cs in enumerate(scenes.ALL_COMBOS) if cs not in scenes.HELD_OUT]
        seen_p = pemb[seen_rows + [48]]  # only seen prompts + empty: held-out captions stay out
        scale = teacher.logit_scale.exp().item()
    labels = label_targets(objs, seen_rows)
    model = training_layout(a, new_student(a.student_arch))
    opt = torch.optim.AdamW(model.parameters(), lr=a.student_lr, weight_decay=0.01)
    val_x, val_y, val_h = quick_val_set(a.student_size)
    val_x = val_x.to(a.device)
    steps = a.student_steps
    t0 = time.time()
    order, cursor = rng.permutation(len(imgs)), 0
    fit = [0, 0]  # top-1 right / one-object training views since the last log line
    for step in range(steps):
        if cursor + a.batch > len(imgs):
            order, cursor = rng.permutation(len(imgs)), 0
        idx = order[cursor:cursor + a.batch]
        cursor += a.batch
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, 40, a.student_lr)
        # the teacher embeds the same augmented view the student sees (shrunk to the teacher's
        # input when the student's is larger: bicubic with antialiasing, like PIL's resize)
        x = training_layout(a, dihedral(to_tensor(imgs[idx]), rng))
        xt = x if a.student_size == SIZE else F.interpolate(
            x, size=(SIZE, SIZE), mode="bicubic", antialias=True, align_corners=False)
        with torch.no_grad(), train_autocast(a):
            tf = teacher.visual.features(xt)
            t_parts = teacher.visual.parts(tf) if factored else None
            t = teacher.visual.head(tf).float()
        model.train()
        with train_autocast(a):
            s_shape, s_colour = model.parts(x)
        s_raw = s_shape.float() + s_colour.float()
        s, t_n = F.normalize(s_raw, dim=-1), F.normalize(t, dim=-1)
        # empty frames weigh more: 8% of the scenes, and "an empty scene" is a narrow margin
        # for the teacher itself (a student's small error there names a shape on a background)
        w = torch.from_numpy(np.where(empty[idx], a.empty_weight, 1.0)).float().to(a.device)
        w = w / w.mean()
        cos = 1 - ((s * t_n).sum(-1) * w).mean()
        kd = F.kl_div((scale * s @ seen_p.t()).log_softmax(-1),
                      (scale * t_n @ seen_p.t()).log_softmax(-1), log_target=True,
                      reduction="none").sum(-1)
        kd = (kd * w).mean()
        # the scene's own caption: where the teacher is wrong on a seen pair, the student
        # learns the truth instead of the teacher's mistake (seen prompts only, as in kd)
        lab = labels[idx].to(a.device)
        ce = -(lab * (scale * s @ seen_p.t()).log_softmax(-1)).sum(-1)
        ce = (ce * w).mean()
        loss = cos + 0.1 * kd + a.label_weight * ce
        with torch.no_grad():  # how well it fits its own training views (one-object scenes)
            one = (lab > 0.99).any(-1)
            fit[0] += int(((s @ seen_p.t()).argmax(-1) == lab.argmax(-1))[one].sum())
            fit[1] += int(one.sum())
        if factored:  # each projection learns its part of the teacher's embedding
            norm2 = t.pow(2).sum(-1).clamp_min(1e-6)
            part = sum(((sp.float() - tp.float()).pow(2).sum(-1) / norm2 * w).mean()
                       for sp, tp in zip((s_shape, s_colour), t_parts))
            loss = loss + a.part_weight * part
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            model.eval()
            with torch.no_grad():
                seen, held = prompt_accuracy(model(val_x), val_y, pemb, val_h)
            log(f"student step {step}/{steps} cos-loss {cos.item():.4f} kd {kd.item():.3f} "
                f"ce {ce.item():.3f} train fit {fit[0] / max(fit[1], 1):.3f} val seen {seen:.3f} "
                f"held {held:.3f} ({time.time() - t0:.0f}s)")
            fit = [0, 0]
    torch.save(cpu_state(model), f"{WORK}/student{a.tag}.pt")
    json.dump({"seconds": time.time() - t0}, open(f"{WORK}/student{a.tag}_time.json", "w"))
    log(f"student done in {time.time() - t0:.0f}s")


def label_targets(objs: list, seen_rows: list[int]) -> torch.Tensor:
    """Each student scene's target over the seen prompts then "an empty scene": its
    objects' prompts share the probability; a scene with no object is the empty prompt."""
    t = torch.zeros(len(objs), len(seen_rows) + 1)
    for i, o in enumerate(objs):
        cols = [seen_rows.index(scenes.ALL_COMBOS.index(tuple(c))) for c in o] or [len(seen_rows)]
        t[i, cols] = 1.0
    return t / t.sum(1, keepdim=True)


def load_student(a: argparse.Namespace) -> nn.Module:
    s = new_student(a.student_arch)
    s.load_state_dict(torch.load(f"{WORK}/student{a.tag}.pt", map_location="cpu"))
    return s.eval()
