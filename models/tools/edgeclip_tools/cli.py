#!/usr/bin/env python3
"""edgeclip's model tools for real CLIPs: one command per job, each writing a bundle (a folder per
models/BUNDLE.md) that `edgeclip info` accepts and `edgeclip classify` runs.

  export    an OpenCLIP model (name + pretrained tag), a Hugging Face CLIP id (OpenAI CLIP,
            TinyCLIP), a MobileCLIP (open_clip names) or a timm MobileCLIP image tower, in fp32:
              python3 -m edgeclip_tools export --openclip ViT-B-32 --pretrained laion2b_s34b_b79k --out DIR
              python3 -m edgeclip_tools export --mobileclip S2 --out DIR          # or 2-S0, B, ...
              python3 -m edgeclip_tools export --hf openai/clip-vit-base-patch32 --out DIR
              python3 -m edgeclip_tools export --tinyclip ViT-8M-16-Text-3M-YFCC15M --out DIR
              python3 -m edgeclip_tools export --timm fastvit_mci0.apple_mclip --out DIR   # image tower only
            --random-init builds the same architecture with random weights (offline; the
            embeddings then mean nothing), --prompts FILE adds prompts.safetensors; the
            vocabulary of open-set scoring (models/tools/camera-vocabulary.txt, or --vocabulary
            FILE; --no-vocabulary for none) goes into vocabulary.safetensors.
  quantize  adds int8 image variants (static QDQ, dynamic; --image-int8 int8-static for the
            calibrated integer form) and a dynamic int8 text tower, keeps
            fp32 as a variant, re-embeds the prompts and the vocabulary:
              python3 -m edgeclip_tools quantize --bundle DIR [--calib IMAGE_DIR] --out DIR
  distill   trains a small student image tower on any image folder to the teacher bundle's
            normalised image embeddings; the teacher's text tower, prompts, vocabulary and
            fingerprint stay:
              python3 -m edgeclip_tools distill --teacher DIR --images IMAGE_DIR --arch demo-conv --out DIR
  check     the Rust runtime against onnxruntime on a bundle (every image precision, the text
            tower, the prompts file); exit status 1 if they disagree:
              python3 -m edgeclip_tools check --bundle DIR

The Rust side is the `edgeclip` binary (--edgeclip, $EDGECLIP, $CARGO_TARGET_DIR/release or
target/release): export, quantize and distill finish with `check` when they find it.
Everything runs on CPU. Nothing here is needed at run time: the runtime never needs Python.
"""

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from . import bundle_tools as bt
from .clip_common import (CLIP_MEAN, CLIP_STD, LOGIT_SCALE, REPO, cosine_rows, fingerprint, load_rgb, log,
                          to_tensor)
from .nets import CONV_PLAN, conv_bn, cosine_lr

# Photos the checks embed (tests/data/preprocess/, made by edgeclip_tools.make_preprocess_refs): a PNG, so
# decoding is exact on both sides, and a JPEG, so the check sees the runtime's own decoder too.
CHECK_PHOTOS = [REPO / "tests/data/preprocess" / p for p in ("landscape_coffee.png", "portrait_rocket.jpg")]
CHECK_TEXTS = ["a photo of a person", "an empty scene", "a red car parked in front of a house at night"]
SEED = 20241128
# The vocabulary export embeds unless told otherwise (models/BUNDLE.md, [vocabulary]).
DEFAULT_VOCABULARY = REPO / "models/tools/camera-vocabulary.txt"
VOCABULARY_FILE = "vocabulary.safetensors"


def fail(msg: str):
    sys.exit(f"edgeclip_tools: {msg}")


# =============================================================================================
# export: sources
# =============================================================================================

class Source:
    """What export needs from any model: the two towers as modules, and their settings."""

    def __init__(self, name, image, text, size, mean, std, interpolation, resize, context_length,
                 logit_scale, provenance, random_init):
        self.name, self.image, self.text = name, image, text
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.interpolation, self.resize = interpolation, resize
        self.context_length, self.logit_scale = context_length, logit_scale
        self.provenance, self.random_init = provenance, random_init


def _square(size, what: str) -> int:
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            fail(f"{what}: non-square input size {size}; bundles take square inputs")
        size = size[0]
    return int(size)


def _resize_mode(mode: str, what: str) -> str:
    # open_clip's resize modes -> bundle.toml's
    modes = {"shortest": "shortest", "squash": "stretch"}
    if mode not in modes:
        fail(f"{what}: resize mode {mode!r} has no bundle equivalent (bundles: shortest side + centre "
             "crop, or stretch)")
    return modes[mode]


def _interpolation(name: str, what: str) -> str:
    if name not in ("bicubic", "bilinear"):
        fail(f"{what}: interpolation {name!r}: the runtime has bicubic and bilinear")
    return name


def _reparameterize(module):
    """MobileOne / RepMixer / RepCPE branches folded, as MobileCLIP deploys (no-op for others)."""
    from timm.utils.model import reparameterize_model

    if any(hasattr(m, "reparameterize") for m in module.modules()):
        log("re-parameterizing (MobileOne / RepMixer / RepCPE branches folded)")
        module.reparameterized = True
    return reparameterize_model(module, inplace=True)


# MobileCLIP in open_clip (open_clip 3.3: pretrained.py): short name -> (model, default tag).
MOBILECLIP = {
    "S1": ("MobileCLIP-S1", "datacompdr"),
    "S2": ("MobileCLIP-S2", "datacompdr"),
    "B": ("MobileCLIP-B", "datacompdr"),
    "B-LT": ("MobileCLIP-B", "datacompdr_lt"),
    "2-S0": ("MobileCLIP2-S0", "dfndr2b"),
    "2-S2": ("MobileCLIP2-S2", "dfndr2b"),
    "2-S3": ("MobileCLIP2-S3", "dfndr2b"),
    "2-S4": ("MobileCLIP2-S4", "dfndr2b"),
    "2-B": ("MobileCLIP2-B", "dfndr2b"),
    "2-L-14": ("MobileCLIP2-L-14", "dfndr2b"),
}
MOBILECLIP_S0 = (
    "MobileCLIP-S0 (v1) pairs the fastvit_mci0 image tower with MCt, a RepMixer text encoder that "
    "open_clip does not implement, so it cannot be exported whole. Use --mobileclip 2-S0 "
    "(MobileCLIP2-S0: fastvit_mci0 image tower + a CLIP text transformer, in open_clip), or "
    "--timm fastvit_mci0.apple_mclip for the S0 image tower alone (an image-only bundle: prompts "
    "must then be embedded elsewhere).")


def openclip_tokenizer_check(name: str):
    """Refuse an open_clip model whose tokenizer is not CLIP's BPE with open_clip's default
    cleaning (what the runtime implements): SigLIP, multilingual, RoBERTa, MetaCLIP-2 worldwide
    (canonicalize cleaning), CLIPA ..."""
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    cfg = open_clip.get_model_config(name) if not name.startswith(("hf-hub:", "local-dir:")) else None
    text_cfg = (cfg or {}).get("text_cfg", {})
    for key in ("hf_tokenizer_name", "hf_model_name"):
        if text_cfg.get(key):
            fail(f"{name}: its text tower uses the Hugging Face tokenizer {text_cfg[key]!r}; edgeclip's "
                 "runtime implements CLIP's BPE (clip-bpe) only. Refusing rather than writing a bundle "
                 "whose prompts would be tokenized wrongly.")
    kwargs = {k: v for k, v in text_cfg.get("tokenizer_kwargs", {}).items() if (k, v) != ("clean", "lower")}
    if kwargs:
        fail(f"{name}: its tokenizer takes {kwargs}; edgeclip's runtime implements CLIP's BPE with "
             "open_clip's default ('lower') cleaning only.")
    if text_cfg.get("vocab_size", 49408) != 49408:
        fail(f"{name}: text vocabulary of {text_cfg['vocab_size']} tokens; clip-bpe has 49408")
    tok = open_clip.get_tokenizer(name)
    if type(tok) is not SimpleTokenizer:
        fail(f"{name}: open_clip gives it a {type(tok).__name__}; edgeclip's runtime implements CLIP's "
             "BPE (open_clip's SimpleTokenizer) only. Refusing.")
    if (tok.sot_token_id, tok.eot_token_id, len(tok.encoder)) != (49406, 49407, 49408):
        fail(f"{name}: unexpected special tokens / vocabulary")
    return tok.context_length


def source_openclip(name: str, tag: str | None, random_init: bool, seed: int, config: Path | None) -> Source:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    if config is not None:
        open_clip.add_model_config(config)
        log(f"added open_clip model config(s) from {config}")
    if name in ("MobileCLIP-S0", "S0"):
        fail(MOBILECLIP_S0)
    if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        fail(f"open_clip {open_clip.__version__} has no model {name!r} (open_clip.list_models())")
    tok_context = openclip_tokenizer_check(name)
    what = f"open_clip {name}" + (f" ({tag})" if tag else "")
    if random_init:
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None, precision="fp32")
        pp = dict(open_clip.get_model_preprocess_cfg(model))
        if tag:  # the tag's preprocessing, as a real load would set it (metadata, no download)
            pcfg = get_pretrained_cfg(name, tag)
            if not pcfg:
                fail(f"open_clip has no pretrained tag {tag!r} for {name} "
                     f"(have: {[t for m, t in open_clip.list_pretrained() if m == name]})")
            pp.update({k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg})
        if isinstance(model.visual, open_clip.timm_model.TimmModel):
            bt.spread_random_init(model.visual, torch.Generator().manual_seed(seed + 1))
        weights = f"random (seed {seed}); architecture of {what}"
    else:
        if not tag:
            fail(f"--openclip {name}: give --pretrained TAG (open_clip.list_pretrained()), or "
                 "--random-init")
        model = open_clip.create_model(name, pretrained=tag, precision="fp32")
        pp = dict(open_clip.get_model_preprocess_cfg(model))
        pcfg = get_pretrained_cfg(name, tag)
        if not pcfg:
            log(f"note: open_clip has no config for pretrained {tag!r} (a checkpoint file?): the preprocessing "
                f"is {name}'s default ({pp.get('mean')}, {pp.get('interpolation')}); check it is the checkpoint's")
        weights = f"open_clip pretrained {name} / {tag}" + (
            f" ({pcfg.get('hf_hub') or pcfg.get('url')})" if pcfg else "")
    model = model.eval()
    context = int(getattr(model, "context_length", 0) or tok_context)
    return Source(
        name=f"{name}" + (f" {tag}" if tag else ""),
        image=bt.EncodeImage(model).eval(), text=bt.EncodeText(model).eval(),
        size=_square(pp["size"], what), mean=pp["mean"], std=pp["std"],
        interpolation=_interpolation(pp.get("interpolation", "bicubic"), what),
        resize=_resize_mode(pp.get("resize_mode", "shortest"), what),
        context_length=context, logit_scale=float(model.logit_scale.detach().exp()),
        provenance={"source": "open_clip", "model": name, "pretrained": tag, "weights": weights,
                    "open_clip": open_clip.__version__},
        random_init=random_init)


# Hugging Face configs for --random-init without network access, so the proofs run offline. With
# network access the real config.json / preprocessor_config.json are fetched even with
# --random-init. OpenAI's ViT-B/32 = transformers' CLIPConfig defaults. TinyCLIP: the widths and
# depths of its open_clip configs (microsoft/Cream, TinyCLIP/src/open_clip/model_configs/*.json;
# heads = width / 64, MLP = 4 x width); the activation (GELU, those configs have no quick_gelu
# flag) is this table's assumption, checked only against the real config.json online.
def _tinyclip(vw, vl, patch, tw, tl):
    return dict(projection_dim=512,
                vision=dict(hidden_size=vw, num_hidden_layers=vl, num_attention_heads=vw // 64,
                            intermediate_size=4 * vw, patch_size=patch, image_size=224, hidden_act="gelu"),
                text=dict(hidden_size=tw, num_hidden_layers=tl, num_attention_heads=tw // 64,
                          intermediate_size=4 * tw, max_position_embeddings=77, vocab_size=49408,
                          hidden_act="gelu"))


HF_OFFLINE = {
    "openai/clip-vit-base-patch32": dict(projection_dim=512, vision={}, text={}),
    "wkcn/TinyCLIP-ViT-8M-16-Text-3M-YFCC15M": _tinyclip(256, 10, 16, 256, 3),
    "wkcn/TinyCLIP-ViT-39M-16-Text-19M-YFCC15M": _tinyclip(512, 12, 16, 512, 6),
    "wkcn/TinyCLIP-ViT-40M-32-Text-19M-LAION400M": _tinyclip(512, 12, 32, 512, 6),
    "wkcn/TinyCLIP-ViT-61M-32-Text-29M-LAION400M": _tinyclip(640, 12, 32, 512, 9),
}


class HFImage(torch.nn.Module):
    """CLIPModel.get_image_features as one tensor in, one out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.visual_projection(self.model.vision_model(pixel_values=x).pooler_output)


class HFText(torch.nn.Module):
    """CLIPModel.get_text_features as one tensor in, one out (pooled at the end-of-text token)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model.text_projection(self.model.text_model(input_ids=ids).pooler_output)


def _hf_fetch(fn, what):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - offline, or no such repo
        log(f"could not load {what} ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
        return None


def source_hf(model_id: str, random_init: bool, seed: int) -> Source:
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPConfig, CLIPModel

    def refuse_type(model_type):
        if model_type != "clip":
            tok = {"siglip": "SigLIP's SentencePiece tokenizer", "siglip2": "Gemma's tokenizer",
                   "chinese_clip": "a BERT tokenizer", "altclip": "XLM-R's tokenizer"}.get(model_type, "")
            fail(f"{model_id}: model_type {model_type!r}" + (f" ({tok})" if tok else "") +
                 ": only CLIP models with CLIP's BPE tokenizer (model_type 'clip') are supported; "
                 "edgeclip's runtime implements clip-bpe only.")

    offline_note = None
    if random_init:
        config = _hf_fetch(lambda: AutoConfig.from_pretrained(model_id), f"{model_id} config")
        if config is None:
            if model_id not in HF_OFFLINE:
                fail(f"{model_id}: no network and no built-in config for --random-init "
                     f"(built in: {', '.join(HF_OFFLINE)})")
            spec = HF_OFFLINE[model_id]
            config = CLIPConfig(projection_dim=spec["projection_dim"], vision_config=spec["vision"],
                                text_config=dict(spec["text"], bos_token_id=49406, eos_token_id=49407))
            offline_note = "config from edgeclip_tools' built-in table (no network)"
            log(f"using the built-in config for {model_id}")
        refuse_type(config.model_type)
        for c in (config, config.vision_config, config.text_config):
            c._attn_implementation = "eager"  # plain MatMul + Softmax attention in the graph
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        weights = f"random (seed {seed}); architecture of {model_id}" + (f", {offline_note}" if offline_note else "")
    else:
        config = AutoConfig.from_pretrained(model_id)
        refuse_type(config.model_type)
        model = CLIPModel.from_pretrained(model_id, attn_implementation="eager").eval()
        weights = f"Hugging Face {model_id}"
    tc = config.text_config
    if tc.vocab_size != 49408 or tc.eos_token_id not in (2, 49407):
        fail(f"{model_id}: text vocabulary {tc.vocab_size} / end-of-text id {tc.eos_token_id}: not clip-bpe")
    # The tokenizer itself (online): must be CLIP's BPE and agree with the runtime's ids.
    tok = None if offline_note else _hf_fetch(lambda: AutoTokenizer.from_pretrained(model_id), f"{model_id} tokenizer")
    if tok is not None:
        if not type(tok).__name__.startswith("CLIPTokenizer"):
            fail(f"{model_id}: tokenizer {type(tok).__name__}; edgeclip's runtime implements clip-bpe only")
        ours = bt.clip_tokenize(CHECK_TEXTS, tc.max_position_embeddings)
        for text, row in zip(CHECK_TEXTS, ours):
            theirs = tok(text)["input_ids"]
            if list(row[:len(theirs)]) != list(theirs):
                fail(f"{model_id}: its tokenizer gives {theirs} for {text!r}, clip-bpe gives {list(row[:len(theirs)])}")
    elif not offline_note:
        log("tokenizer not checked (could not load it); the config says CLIP's vocabulary")
    # Preprocessing: preprocessor_config.json (online), else CLIPImageProcessor's defaults (OpenAI's).
    proc = _hf_fetch(lambda: AutoImageProcessor.from_pretrained(model_id), f"{model_id} image processor") \
        if not offline_note else None
    if proc is None:
        proc = transformers.CLIPImageProcessor()
        log("preprocessing: CLIPImageProcessor defaults (OpenAI CLIP's: 224, bicubic, CLIP mean/std)")
    size = proc.size.get("shortest_edge") or _square((proc.size.get("height"), proc.size.get("width")), model_id)
    crop = _square((proc.crop_size["height"], proc.crop_size["width"]), model_id) if proc.do_center_crop else size
    if size != crop or crop != config.vision_config.image_size:
        fail(f"{model_id}: resize {size} / crop {crop} / model {config.vision_config.image_size}: bundles "
             "resize the shortest side to the model's input size and crop it")
    resample = int(getattr(proc, "resample", 3))
    interpolation = {3: "bicubic", 2: "bilinear"}.get(resample)
    if interpolation is None:
        fail(f"{model_id}: resample {resample}: the runtime has bicubic and bilinear")
    return Source(
        name=model_id, image=HFImage(model).eval(), text=HFText(model).eval(), size=int(crop),
        mean=proc.image_mean, std=proc.image_std, interpolation=interpolation, resize="shortest",
        context_length=int(tc.max_position_embeddings), logit_scale=float(model.logit_scale.detach().exp()),
        provenance={"source": "transformers", "model": model_id, "weights": weights,
                    "transformers": transformers.__version__},
        random_init=random_init)


def source_timm(name: str, random_init: bool, seed: int) -> Source:
    """An image tower alone (timm's MobileCLIP towers, fastvit_mci*.apple_mclip*, whose
    num_classes is the CLIP projection)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=not random_init)
    if random_init:
        bt.spread_random_init(model, torch.Generator().manual_seed(seed + 1))
    model = model.eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    if abs(cfg.get("crop_pct", 1.0) - 1.0) > 1e-6:
        log(f"note: timm's eval transform for {name} resizes to size / crop_pct ({cfg['crop_pct']}) before "
            "cropping; bundles resize the shortest side to the input size (crop_pct 1.0, as open_clip's "
            "MobileCLIP configs do)")
    return Source(
        name=name, image=model, text=None, size=_square(cfg["input_size"][1:], name),
        mean=cfg["mean"], std=cfg["std"], interpolation=_interpolation(cfg["interpolation"], name),
        resize="shortest", context_length=None, logit_scale=LOGIT_SCALE,
        provenance={"source": "timm", "model": name, "timm": timm.__version__,
                    "weights": f"random (seed {seed})" if random_init else f"timm pretrained {name}"},
        random_init=random_init)


def resolve_source(a) -> Source:
    if a.mobileclip:
        key = a.mobileclip.replace("MobileCLIP", "").lstrip("-")
        if key == "S0":
            fail(MOBILECLIP_S0)
        if key not in MOBILECLIP:
            fail(f"--mobileclip {a.mobileclip}: one of {', '.join(MOBILECLIP)} (or an open_clip name with --openclip)")
        name, tag = MOBILECLIP[key]
        return source_openclip(name, a.pretrained or tag, a.random_init, a.seed, a.openclip_config)
    if a.openclip:
        return source_openclip(a.openclip, a.pretrained, a.random_init, a.seed, a.openclip_config)
    if a.tinyclip:
        model_id = a.tinyclip if "/" in a.tinyclip else f"wkcn/TinyCLIP-{a.tinyclip.removeprefix('TinyCLIP-')}"
        return source_hf(model_id, a.random_init, a.seed)
    if a.hf:
        return source_hf(a.hf, a.random_init, a.seed)
    return source_timm(a.timm, a.random_init, a.seed)


# =============================================================================================
# export
# =============================================================================================

def export_tower(module, example, path: Path, input_name: str, output_name: str) -> np.ndarray:
    """ONNX export + onnx.checker; returns PyTorch's output for `example`."""
    t = time.time()
    with torch.no_grad():
        ref = module(example).numpy()
    # nn.MultiheadAttention (open_clip's ViTs) takes a fused "fast path" in eval mode, an op the
    # ONNX exporter does not know (aten::_native_multi_head_attention): export the plain math.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        bt.export_onnx(module, example, path, input_name, output_name)
    except Exception as e:  # noqa: BLE001
        fail(f"ONNX export of {path.name} failed: {type(e).__name__}: {e}")
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    bt.check_onnx(path)
    log(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, exported and checked in {time.time() - t:.0f} s")
    return ref


def card_header(title: str, command: str) -> list[str]:
    return [f"# {title}", "", f"Written by `{command}` on {datetime.date.today().isoformat()}.", ""]


def versions() -> str:
    import timm
    import transformers

    import open_clip
    return (f"torch {torch.__version__}, open_clip {open_clip.__version__}, transformers "
            f"{transformers.__version__}, timm {timm.__version__}, onnx {onnx.__version__}, "
            f"onnxruntime {ort.__version__}")


def command_line() -> str:
    return "python3 -m edgeclip_tools " + " ".join(sys.argv[1:])


def _repo_relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def cmd_export(a):
    bt.set_threads()
    out = a.out
    t0 = time.time()
    src = resolve_source(a)
    vocabulary = None if a.no_vocabulary else (a.vocabulary or DEFAULT_VOCABULARY)
    if vocabulary is not None and src.text is None:
        if a.vocabulary:
            fail("--vocabulary needs a text tower; this source is an image tower alone")
        log("no vocabulary: an image tower alone has no text tower to embed it with (embed one with the "
            "matching text model, models/BUNDLE.md)")
        vocabulary = None
    vocab_texts = None
    if vocabulary is not None:  # read first: a bad list fails before the export's work
        try:
            vocab_texts = bt.read_vocabulary_lines(vocabulary)
        except (OSError, ValueError) as e:
            fail(f"--vocabulary: {e}")
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.onnx"), out / "prompts.safetensors", out / VOCABULARY_FILE, out / "bundle.toml"]:
        stale.unlink(missing_ok=True)  # a previous export into the same folder
    log(f"{src.name}: input {src.size} px, {src.resize} + {src.interpolation}, mean {src.mean}, std {src.std}, "
        f"context {src.context_length}, logit scale {src.logit_scale:.2f}; weights: {src.provenance['weights']}")

    image_table = bt.image_section("visual.onnx", "fp32", src.size, mean=src.mean, std=src.std,
                                   interpolation=src.interpolation, resize=src.resize)
    photos = a.check_images or CHECK_PHOTOS
    px = bt.bundle_pixel_values(photos, image_table)
    reparam_cos = None
    if any(hasattr(m, "reparameterize") for m in src.image.modules()):
        with torch.no_grad():
            before = src.image(torch.from_numpy(px)).numpy()
        _reparameterize(src.image)
        with torch.no_grad():
            reparam_cos = cosine_rows(src.image(torch.from_numpy(px)).numpy(), before)
    img_ref = export_tower(src.image, torch.from_numpy(px), out / "visual.onnx", "pixel_values", "image_embeds")
    embed_dim = int(img_ref.shape[1])
    img_ort = bt.ort_embed(out / "visual.onnx", "pixel_values", px)
    checks = [("image", "onnxruntime fp32 vs PyTorch", cosine_rows(img_ort, img_ref))]
    if reparam_cos is not None:
        checks.append(("image", "PyTorch re-parameterized vs as trained", reparam_cos))

    text_table = None
    if src.text is not None:
        ids = bt.clip_tokenize(CHECK_TEXTS, src.context_length)
        txt_ref = export_tower(src.text, torch.from_numpy(ids), out / "textual.onnx", "input_ids", "text_embeds")
        if txt_ref.shape[1] != embed_dim:
            fail(f"text tower width {txt_ref.shape[1]} != image tower width {embed_dim}")
        txt_ort = bt.ort_embed(out / "textual.onnx", "input_ids", ids)
        checks.append(("text", "onnxruntime fp32 vs PyTorch", cosine_rows(txt_ort, txt_ref)))
        text_table = bt.text_section("textual.onnx", "fp32", context_length=src.context_length)
    if len(img_ort) > 1:
        # For scale: a tower that gives every image the same embedding would make the checks moot.
        checks.append(("image", "cosine between the first two images' embeddings (for scale)",
                       cosine_rows(img_ort[:1], img_ort[1:2])))
    for tower, what, cos in checks:
        log(f"{tower}: {what}: cosine {', '.join(f'{c:.6f}' for c in cos)}")
        if "for scale" not in what and cos.min() < 0.9999:
            fail(f"{tower} tower: {what}: cosine {cos.min():.6f}")
    fp = fingerprint(out / ("textual.onnx" if text_table else "visual.onnx"))

    prompts_file = None
    if a.prompts:
        if text_table is None:
            fail("--prompts needs a text tower; this source is an image tower alone")
        texts = bt.read_prompt_lines(a.prompts)
        manifest_like = {"text": text_table}
        bt.write_prompts(out / "prompts.safetensors", texts, bt.ort_text_embeds(out, manifest_like, texts), fp)
        prompts_file = "prompts.safetensors"
        log(f"prompts.safetensors: {len(texts)} prompts")
    vocabulary_file, vocab_s = None, None
    if vocab_texts is not None:
        vocab_s = bt.write_vocabulary(out / VOCABULARY_FILE, out, {"text": text_table}, vocab_texts, fp)
        vocabulary_file = VOCABULARY_FILE
        log(f"{VOCABULARY_FILE}: {len(vocab_texts)} entries of {vocabulary}, embedded in {vocab_s:.1f} s")

    name = a.name or (src.name + (" (random weights)" if src.random_init else ""))
    comment = f"Written by python3 -m edgeclip_tools export: {src.provenance['weights']}."
    if src.random_init:
        comment += "\nRANDOM WEIGHTS: the embeddings mean nothing (a check of the export path only)."
    bt.write_bundle_toml(out, name=name, embed_dim=embed_dim, logit_scale=src.logit_scale, fingerprint=fp,
                         image=image_table, text=text_table, comment=comment, prompts_file=prompts_file,
                         vocabulary_file=vocabulary_file)
    manifest = bt.validate_bundle(out)
    bt.validate_prompts(out, manifest)

    card = card_header(name, command_line())
    if src.random_init:
        card += ["**Random weights: the embeddings mean nothing.** This bundle checks the export path "
                 "(architecture, preprocessing, graphs, runtime) offline; run the same command without "
                 "`--random-init` on a machine with network access for the real model.", ""]
    card += ["## Source", "", f"- weights: {src.provenance['weights']}",
             f"- exported with {versions()}; ONNX opset {bt.OPSET}, TorchScript exporter, dynamic batch axis",
             f"- image tower: `visual.onnx` fp32, input `pixel_values` [N,3,{src.size},{src.size}], output "
             f"`image_embeds` [N,{embed_dim}] (projected, not normalised)"
             + ("; re-parameterized (MobileOne / RepMixer / RepCPE branches folded)"
                if any(getattr(m, "reparameterized", False) for m in src.image.modules()) else ""),
             f"- preprocessing (from the model's own config): resize `{src.resize}`, interpolation "
             f"`{src.interpolation}`, mean {list(src.mean)}, std {list(src.std)}"]
    if text_table:
        card += [f"- text tower: `textual.onnx` fp32, clip-bpe ids [N,{src.context_length}], output "
                 f"`text_embeds` [N,{embed_dim}]; fingerprint = sha256(textual.onnx)[:16] = `{fp}`"]
    else:
        card += [f"- no text tower: fingerprint = sha256(visual.onnx)[:16] = `{fp}`; prompt embeddings "
                 "must come from the matching text model"]
    if vocabulary_file:
        card += [f"- vocabulary (open-set scoring): `{VOCABULARY_FILE}`, the {len(vocab_texts)} entries of "
                 f"`{_repo_relative(vocabulary)}` embedded by `textual.onnx` (onnxruntime, 1 thread, "
                 f"{vocab_s:.1f} s)"]
    elif text_table:
        card += ["- no vocabulary (`--no-vocabulary`): labels compete with each other and the background only"]
    card += [f"- logit scale {src.logit_scale:.4f}", "", "## Checks", "",
             f"On {', '.join(Path(p).name for p in photos)} and texts {json.dumps(CHECK_TEXTS)}:", ""]
    card += [f"- {tower}: {what}: cosine {', '.join(f'{c:.6f}' for c in cos)}" for tower, what, cos in checks]
    (out / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    log(f"wrote {out} in {time.time() - t0:.0f} s: " + ", ".join(
        f"{f} {s / 1e6:.1f} MB" for f, s in bt.file_sizes(out).items()))
    finish_with_check(a, out)


# =============================================================================================
# quantize
# =============================================================================================

def cmd_quantize(a):
    bt.set_threads()
    src, out = a.bundle.resolve(), a.out.resolve()
    if src == out:
        fail("--out must be another folder than --bundle (the input bundle is left as it is)")
    m = bt.validate_bundle(src)
    img = m["image"]
    try:
        img_fp32, _ = bt.tower_file(m, "image", "fp32")
    except KeyError:
        fail(f"{src}: no fp32 image tower to quantize (have {bt.tower_precisions(m, 'image')})")
    t0 = time.time()
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)

    # Calibration (and held-out evaluation) images through the bundle's own preprocessing.
    rng = np.random.default_rng(a.seed)
    size = img["height"]
    if a.calib:
        files = bt.image_files(a.calib)
        order = rng.permutation(len(files))
        calib_files = [files[i] for i in order[:a.n_calib]]
        eval_files = [files[i] for i in order[a.n_calib:a.n_calib + a.n_eval]] or CHECK_PHOTOS
        calib = bt.bundle_pixel_values(calib_files, img)
        calib_what = f"{len(calib_files)} images from {a.calib}"
    else:
        calib = bt.renormalize(bt.calibration_images(size, a.n_calib, a.seed), CLIP_MEAN, CLIP_STD,
                               img["mean"], img["std"])
        eval_files = CHECK_PHOTOS
        calib_what = f"{a.n_calib} random crops of scikit-image's sample photos (bt.calibration_images)"
    log(f"calibration: {calib_what}; evaluation: {len(eval_files)} other images")

    made_img = bt.build_variants(out / img_fp32, img["input"], img["output"], a.image_int8, calib=calib, log=log)
    made_txt = {}
    if "text" in m:
        precisions = bt.tower_precisions(m, "text")
        if "int8-dynamic" in precisions:
            log("text tower: already has an int8-dynamic file; kept")
        elif "fp32" not in precisions:
            fail(f"{src}: no fp32 text tower to quantize (have {precisions})")
        else:
            txt_fp32, _ = bt.tower_file(m, "text", "fp32")
            made_txt = bt.build_variants(out / txt_fp32, m["text"]["input"], m["text"]["output"], ("int8-dynamic",),
                                         log=log)

    # Image variants, old and new: {precision: file}.
    image_files = {p: bt.tower_file(m, "image", p)[0] for p in bt.tower_precisions(m, "image")}
    image_files.update(made_img)
    x_eval = bt.bundle_pixel_values(eval_files, img)
    ref = bt.ort_embed(out / img_fp32, img["input"], x_eval)
    ort_out = {p: bt.ort_embed(out / f, img["input"], x_eval) for p, f in image_files.items()}
    ort_cos = {p: cosine_rows(o, ref) for p, o in ort_out.items()}
    for p, cos in ort_cos.items():
        log(f"image {p}: onnxruntime vs onnxruntime fp32: mean cosine {cos.mean():.5f}, min {cos.min():.5f}")

    # The runtime on every image file: a new int8 file it does not compute like onnxruntime is
    # dropped (tract's int8 support is younger than its float support); the default is the first
    # int8 file whose runtime output stays close to fp32.
    binary = bt.find_edgeclip(a.edgeclip)
    rust_cos, rust_same, dropped = {}, {}, {}
    choice = a.image_default
    if binary is None:
        log("edgeclip binary not found: the int8 image towers are not checked with the runtime "
            "(build it, then run `python3 -m edgeclip_tools check`)")
    else:
        # A temporary bundle.toml naming every file, so the runtime can load each precision
        # (without the prompts and the vocabulary: their fingerprint may be about to change).
        _write_manifest(out, m, image_files, img_fp32, _text_files_after(m, made_txt), "fp32",
                        bt.tower_precisions(m, "text")[0] if "text" in m else None, prompts=False)
        for p in list(image_files):
            try:
                got = bt.rust_image_embeds(binary, out, eval_files, p)
            except Exception as e:  # noqa: BLE001
                got, why = None, f"edgeclip could not run it: {str(e).splitlines()[-1][:200]}"
            if got is not None:
                rust_cos[p], rust_same[p] = cosine_rows(got, ref), cosine_rows(got, ort_out[p])
                log(f"image {p}: edgeclip (tract) vs onnxruntime, same file: min cosine {rust_same[p].min():.5f}; "
                    f"vs onnxruntime fp32: mean {rust_cos[p].mean():.5f}, min {rust_cos[p].min():.5f}")
                why = f"edgeclip's output is not onnxruntime's (min cosine {rust_same[p].min():.4f} on the same file)"
            if p in made_img and p != "fp32" and (got is None or rust_same[p].min() < a.min_int8):
                dropped[p] = why
        for p, why in dropped.items():
            (out / image_files.pop(p)).unlink()
            log(f"image {p}: DROPPED: {why}")
    if choice == "auto":
        scores = rust_cos if binary is not None else ort_cos
        for p in ("int8-static", "int8-qdq", "int8-dynamic", "fp32"):
            if p in image_files and p in scores and (p == "fp32" or scores[p].min() >= a.min_cos):
                choice = p
                break
        else:
            choice = "fp32"
        if choice == "fp32":
            log(f"no int8 image tower reaches cosine {a.min_cos} to fp32"
                + (" in the runtime" if binary else "") + ": fp32 stays the default")
    if choice not in image_files:
        fail(f"--image-default {choice}: not made (have {sorted(image_files)})")
    log(f"default image tower: {choice} ({image_files[choice]})")

    text_files = _text_files_after(m, made_txt)
    text_default = None
    if "text" in m:
        text_default = a.text_default if a.text_default in text_files else bt.tower_precisions(m, "text")[0]
    fp = _write_manifest(out, m, image_files, image_files[choice], text_files,
                         choice, text_default, prompts=True, name=a.name)
    # Prompts and vocabulary: re-embedded with the new default text tower (its hash is the new
    # fingerprint); the vocabulary once when it is the prompts file (the demo's).
    m2 = bt.read_manifest(out)
    redone = set()
    for table in bt.EMBEDDINGS_TABLES:
        if table not in m or m[table]["file"] in redone:
            continue
        file = m[table]["file"]
        redone.add(file)
        if fp == m["fingerprint"]:
            log(f"{table}: the default text tower is unchanged; {file} kept as it is")
            continue
        texts, old, _ = bt.read_prompts(src / file)
        if "text" in m2:
            t1 = time.time()
            new = bt.ort_text_embeds(out, m2, texts)
            log(f"{table}: {len(texts)} texts of {file} re-embedded with the {text_default} text tower in "
                f"{time.time() - t1:.1f} s; cosine to the old embeddings: mean {cosine_rows(new, old).mean():.5f}, "
                f"min {cosine_rows(new, old).min():.5f}")
        else:
            new = old  # an image-only bundle: same embedding space, re-keyed to the new fingerprint
        bt.write_prompts(out / file, texts, new, fp)
    text_cos = None
    if "text" in m2 and "int8-dynamic" in text_files and "fp32" in text_files:
        text_cos = cosine_rows(bt.ort_text_embeds(out, m2, CHECK_TEXTS, "int8-dynamic"),
                               bt.ort_text_embeds(out, m2, CHECK_TEXTS, "fp32"))
        log(f"text int8-dynamic vs fp32 (onnxruntime): cosine {', '.join(f'{c:.5f}' for c in text_cos)}")
    m2 = bt.validate_bundle(out)
    bt.validate_prompts(out, m2)

    card = (out / "MODEL_CARD.md").read_text() if (out / "MODEL_CARD.md").exists() else f"# {m['name']}\n"
    card += "\n".join([
        "", "## Quantization", "", f"`{command_line()}` on {datetime.date.today().isoformat()}, "
        f"onnxruntime {ort.__version__} (`models/tools/edgeclip_tools/bundle_tools.py`: int8-qdq = static QDQ of "
        f"{', '.join(bt.QDQ_OP_TYPES)}, per-channel int8 weights, uint8 MinMax activations; int8-dynamic = "
        "`quantize_dynamic`, int8 weights; int8-static = int8-dynamic with each DynamicQuantizeLinear "
        "replaced by a QuantizeLinear calibrated with MinMax).", "",
        f"- calibration: {calib_what}; evaluation on {len(eval_files)} other images",
        f"- default image tower: `{image_files[choice]}` ({choice}); default text tower: "
        + (f"{text_default}" if text_default else "none") + f"; fingerprint `{fp}`", "",
        "| image tower | onnxruntime vs onnxruntime fp32 (mean / min cosine) | edgeclip (tract) vs onnxruntime fp32 |",
        "|---|---|---|"] + [
        f"| {p} `{f}` | {ort_cos[p].mean():.5f} / {ort_cos[p].min():.5f} | "
        + (f"{rust_cos[p].mean():.5f} / {rust_cos[p].min():.5f}" if p in rust_cos else "not run") + " |"
        for p, f in image_files.items()] + [
        f"| {p} (dropped) | {ort_cos[p].mean():.5f} / {ort_cos[p].min():.5f} | "
        + (f"{rust_cos[p].mean():.5f} / {rust_cos[p].min():.5f}" if p in rust_cos else "-") + f": {why} |"
        for p, why in dropped.items()] + (
        ["", f"Text int8-dynamic vs fp32 (onnxruntime) on {json.dumps(CHECK_TEXTS)}: "
         + ", ".join(f"{c:.5f}" for c in text_cos)] if text_cos is not None else [])) + "\n"
    (out / "MODEL_CARD.md").write_text(card)
    log(f"wrote {out} in {time.time() - t0:.0f} s: " + ", ".join(
        f"{f} {s / 1e6:.1f} MB" for f, s in bt.file_sizes(out).items()))
    finish_with_check(a, out)


def _text_files_after(m, made_txt) -> dict:
    if "text" not in m:
        return {}
    files = {p: bt.tower_file(m, "text", p)[0] for p in bt.tower_precisions(m, "text")}
    files.update(made_txt)
    return files


def _write_manifest(out: Path, m: dict, image_files: dict, image_default_file: str, text_files: dict,
                    image_default: str, text_default: str | None, prompts: bool, name: str | None = None) -> str:
    """bundle.toml for a bundle whose towers come in several files; returns the fingerprint.
    `prompts`: keep m's [prompts] and [vocabulary] tables."""
    image = dict(m["image"])
    image.pop("variants", None)
    image["onnx"], image["precision"] = image_default_file, image_default
    image_variants = [(f, p) for p, f in image_files.items() if p != image_default]
    text, text_variants = None, ()
    if text_default is not None:
        text = dict(m["text"])
        text.pop("variants", None)
        text["onnx"], text["precision"] = text_files[text_default], text_default
        text_variants = [(f, p) for p, f in text_files.items() if p != text_default]
    fp = fingerprint(out / (text["onnx"] if text else image["onnx"]))
    default_name = m["name"] + ("" if image_default == "fp32" else f" ({image_default})")
    bt.write_bundle_toml(out, name=name or default_name, embed_dim=m["embed_dim"], logit_scale=m["logit_scale"],
                         fingerprint=fp, image=image, image_variants=image_variants, text=text,
                         text_variants=text_variants,
                         comment="Quantized by python3 -m edgeclip_tools quantize (see MODEL_CARD.md).",
                         prompts_file=m["prompts"]["file"] if prompts and "prompts" in m else None,
                         vocabulary_file=m["vocabulary"]["file"] if prompts and "vocabulary" in m else None)
    return fp


# =============================================================================================
# distill
# =============================================================================================

class ConvStudent(torch.nn.Module):
    """The demo's first student image tower (plain 3x3 conv + BatchNorm + ReLU stages, strided
    downsampling, global average pool, linear projection: tract's fast int8 / f32 conv paths, no
    attention, no depthwise convs), with the teacher's embedding width and `mult` x the channels."""

    def __init__(self, embed_dim: int, mult: int = 1):
        super().__init__()
        plan = [(i if i == 3 else i * mult, o * mult, s) for i, o, s in CONV_PLAN]
        self.features = torch.nn.Sequential(*[conv_bn(i, o, s) for i, o, s in plan])
        self.head = torch.nn.Linear(plan[-1][1], embed_dim)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


STUDENT_ARCHS = {"demo-conv": "the demo's first student, nets.CONV_PLAN: 7 plain conv stages, 16-128 channels",
                 "demo-conv-x2": "the same with twice the channels",
                 "timm:NAME": "any timm image model (num_classes = the embedding width), e.g. "
                              "timm:mobilenetv3_small_100, timm:fastvit_t8, timm:resnet18"}


def build_student(arch: str, embed_dim: int, pretrained: bool):
    if arch == "demo-conv":
        return ConvStudent(embed_dim, 1)
    if arch == "demo-conv-x2":
        return ConvStudent(embed_dim, 2)
    if arch.startswith("timm:"):
        import timm

        # pretrained: the ImageNet backbone (network access), with a fresh projection head.
        return timm.create_model(arch[5:], pretrained=pretrained, num_classes=embed_dim)
    fail(f"--arch {arch}: one of {', '.join(STUDENT_ARCHS)}")


def _random_view(img, rng):
    """A random crop (35-100 % of the area, aspect 3:4 to 4:3), mirrored half the time."""
    from PIL import Image

    w, h = img.size
    area = rng.uniform(0.35, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(min(w, max(8, round((area * aspect) ** 0.5))))
    ch = int(min(h, max(8, round((area / aspect) ** 0.5))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = img.crop((x0, y0, x0 + cw, y0 + ch))
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


def distill_data(files, views: int, teacher: Path, t_file: str, t_img: dict, s_img: dict, rng, chunk: int = 32):
    """Student inputs (uint8 [N,H,W,3] at the student's size) and the teacher's normalised
    embeddings [N,D] of the same views (the full frame first, then `views - 1` random crops)."""
    from .clip_common import resize_crop

    t_tf = bt.image_transform(t_img)
    s_rc = resize_crop(s_img["height"], s_img["interpolation"], s_img["resize"])
    sess = bt.ort_session(teacher / t_file)
    xs, ts, batch = [], [], []

    def flush():
        if batch:
            ts.append(sess.run(None, {t_img["input"]: np.stack(batch)})[0])
            batch.clear()

    for f in files:
        img = load_rgb(f)
        for v in range(views):
            view = img if v == 0 else _random_view(img, rng)
            xs.append(np.asarray(s_rc(view), dtype=np.uint8))
            batch.append(t_tf(view).numpy())
            if len(batch) == chunk:
                flush()
    flush()
    return np.stack(xs), bt.l2n(np.concatenate(ts))


def cmd_distill(a):
    import torch.nn.functional as F


    torch.set_num_threads(a.threads)
    teacher, out = a.teacher.resolve(), a.out.resolve()
    if teacher == out:
        fail("--out must be another folder than --teacher")
    t = bt.validate_bundle(teacher)
    bt.validate_prompts(teacher, t)
    if "text" not in t:
        fail(f"{teacher}: no text tower. A student keeps its teacher's text tower (and so its fingerprint "
             "and prompts); distil from a bundle that has one.")
    t_prec = a.teacher_precision or ("fp32" if "fp32" in bt.tower_precisions(t, "image") else None)
    t_file, t_prec = bt.tower_file(t, "image", t_prec)
    d = t["embed_dim"]
    size = a.size or t["image"]["height"]
    s_img = bt.image_section("visual.onnx", "fp32", size, mean=t["image"]["mean"], std=t["image"]["std"],
                             interpolation=t["image"]["interpolation"], resize=t["image"]["resize"])

    files = bt.image_files(a.images)
    rng = np.random.default_rng(a.seed)
    files = [files[i] for i in rng.permutation(len(files))][:a.max_images or None]
    n_val = max(4, int(round(len(files) * a.val_frac)))
    if len(files) - n_val < 8:
        fail(f"{a.images}: {len(files)} images; need at least {n_val + 8}")
    val_files, train_files = files[:n_val], files[n_val:]
    t0 = time.time()
    log(f"teacher {teacher.name} ({t['name']}, {t_prec} image tower {t_file}, {t['image']['height']} px, D={d}); "
        f"{len(train_files)} training images x {a.views} views, {len(val_files)} held out")
    x_tr, y_tr = distill_data(train_files, a.views, teacher, t_file, t["image"], s_img, rng)
    x_va, y_va = distill_data(val_files, 1, teacher, t_file, t["image"], s_img, rng)
    log(f"teacher embeddings for {len(x_tr) + len(x_va)} views in {time.time() - t0:.0f} s")

    prompts = None
    if "prompts" in t and a.kd_weight > 0:
        texts, p_emb, _ = bt.read_prompts(teacher / t["prompts"]["file"])
        prompts = torch.from_numpy(bt.l2n(p_emb))
        log(f"+ {a.kd_weight} x KL over the teacher's {len(texts)} prompts (softmax at logit scale {t['logit_scale']:.1f})")
    scale = float(t["logit_scale"])

    torch.manual_seed(a.seed)
    model = build_student(a.arch, d, a.student_pretrained)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    mean, std = s_img["mean"], s_img["std"]
    yt, yv = torch.from_numpy(y_tr), torch.from_numpy(y_va)
    xv = to_tensor(x_va, mean, std)

    def val_cos():
        model.eval()
        with torch.no_grad():
            s = F.normalize(torch.cat([model(xv[i:i + 64]) for i in range(0, len(xv), 64)]), dim=-1)
        return (s * yv).sum(-1)

    log(f"student {a.arch}: {n_params / 1e6:.2f} M parameters, {size} px; {a.steps} steps of {a.batch}, lr {a.lr}")
    t1 = time.time()
    history = []
    order, cursor = rng.permutation(len(x_tr)), 0
    for step in range(a.steps):
        if cursor + a.batch > len(x_tr):
            order, cursor = rng.permutation(len(x_tr)), 0
        idx = order[cursor:cursor + a.batch]
        cursor += a.batch
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, a.steps, min(100, a.steps // 10), a.lr)
        model.train()
        s = F.normalize(model(to_tensor(x_tr[idx], mean, std)), dim=-1)
        tgt = yt[idx]
        cos = (s * tgt).sum(-1).mean()
        loss = 1 - cos
        if prompts is not None:
            kd = F.kl_div((scale * s @ prompts.t()).log_softmax(-1), (scale * tgt @ prompts.t()).log_softmax(-1),
                          log_target=True, reduction="batchmean")
            loss = loss + a.kd_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % a.log_every == 0 or step == a.steps - 1:
            vc = val_cos()
            history.append((step, cos.item(), float(vc.mean())))
            log(f"step {step}/{a.steps}: train cosine {cos.item():.4f}, held-out cosine {vc.mean():.4f} "
                f"(min {vc.min():.4f}) ({time.time() - t1:.0f} s)")
    train_s = time.time() - t1

    # Export: BatchNorm folded by the exporter (eval mode), MobileOne-style branches re-parameterized.
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*.onnx"):
        f.unlink()
    model = _reparameterize(model.eval())
    s_ref = export_tower(model, xv[:2], out / "visual.onnx", "pixel_values", "image_embeds")
    s_ort = bt.ort_embed(out / "visual.onnx", "pixel_values", xv.numpy())
    export_cos = cosine_rows(s_ort[:2], s_ref)
    student_cos = cosine_rows(s_ort, y_va)
    # For scale: a student that ignored its input and always gave the teacher's mean embedding.
    baseline = cosine_rows(np.repeat(y_tr.mean(0, keepdims=True), len(y_va), 0), y_va)
    log(f"student (onnxruntime) vs teacher on {len(val_files)} held-out images: mean cosine "
        f"{student_cos.mean():.4f}, min {student_cos.min():.4f} (a constant student, the teacher's mean "
        f"embedding: {baseline.mean():.4f})")
    agree = None
    if "prompts" in t:
        texts, p_emb, _ = bt.read_prompts(teacher / t["prompts"]["file"])
        pn = bt.l2n(p_emb)
        agree = float(((bt.l2n(s_ort) @ pn.T).argmax(1) == (y_va @ pn.T).argmax(1)).mean())
        log(f"top-1 over the teacher's {len(texts)} prompts: student agrees with the teacher on {agree:.1%} "
            "of the held-out images")

    # The teacher's text tower files and prompts, unchanged: same fingerprint.
    text_files = {p: bt.tower_file(t, "text", p)[0] for p in bt.tower_precisions(t, "text")}
    for f in text_files.values():
        shutil.copy2(teacher / f, out / f)
    for table in bt.EMBEDDINGS_TABLES:  # the prompts and vocabulary, made for the same fingerprint
        if table in t:
            shutil.copy2(teacher / t[table]["file"], out / t[table]["file"])
    text = dict(t["text"])
    text.pop("variants", None)
    text_variants = [(f, p) for p, f in text_files.items() if p != text["precision"]]
    name = a.name or f"{a.arch} student of {t['name']}"
    bt.write_bundle_toml(out, name=name, embed_dim=d, logit_scale=t["logit_scale"], fingerprint=t["fingerprint"],
                         image=s_img, text=text, text_variants=text_variants,
                         comment=f"Distilled by python3 -m edgeclip_tools distill from {t['name']} (see MODEL_CARD.md).",
                         prompts_file=t["prompts"]["file"] if "prompts" in t else None,
                         vocabulary_file=t["vocabulary"]["file"] if "vocabulary" in t else None)
    m = bt.validate_bundle(out)
    bt.validate_prompts(out, m)
    assert m["fingerprint"] == t["fingerprint"]

    card = card_header(name, command_line()) + [
        f"A student image tower distilled from the bundle `{teacher}` ({t['name']}), whose text tower, "
        f"prompts, vocabulary and fingerprint (`{t['fingerprint']}`) it keeps: its embeddings live in the teacher's space.", "",
        "## Training", "",
        f"- student: `{a.arch}` ({STUDENT_ARCHS.get(a.arch, STUDENT_ARCHS['timm:NAME'] if a.arch.startswith('timm:') else '')}), "
        f"{n_params / 1e6:.2f} M parameters, {size} px input, "
        + ("ImageNet-pretrained backbone" if a.student_pretrained else "random init"),
        f"- data: {len(train_files)} images from `{a.images}` x {a.views} views (the frame + random crops "
        f"and mirrors); {len(val_files)} other images held out",
        f"- targets: the teacher's {t_prec} image tower (`{t_file}`, onnxruntime), L2-normalised",
        "- loss: 1 - cosine" + (f" + {a.kd_weight} x KL(softmax over the teacher's prompts)" if prompts is not None else ""),
        f"- {a.steps} steps of {a.batch}, AdamW, peak lr {a.lr}, cosine schedule; {train_s:.0f} s on "
        f"{a.threads} CPU thread(s)", f"- {versions()}", "",
        "## Result (held-out images)", "",
        f"- student vs teacher embedding: mean cosine {student_cos.mean():.4f}, min {student_cos.min():.4f} "
        f"(for scale, a constant output, the teacher's mean embedding: {baseline.mean():.4f})"]
    if agree is not None:
        card += [f"- top-1 prompt agreement with the teacher: {agree:.1%}"]
    card += [f"- exported graph (onnxruntime) vs PyTorch: cosine {', '.join(f'{c:.6f}' for c in export_cos)}", "",
             "| step | train cosine | held-out cosine |", "|---|---|---|"]
    card += [f"| {s} | {c:.4f} | {v:.4f} |" for s, c, v in history]
    (out / "MODEL_CARD.md").write_text("\n".join(card) + "\n")
    log(f"wrote {out} in {time.time() - t0:.0f} s: " + ", ".join(
        f"{f} {s / 1e6:.2f} MB" for f, s in bt.file_sizes(out).items()))
    finish_with_check(a, out)


# =============================================================================================
# check: the runtime against onnxruntime
# =============================================================================================

def run_check(folder: Path, binary: Path, images, texts, min_fp32: float, min_int8: float) -> bool:
    """Print the runtime's agreement with onnxruntime on a bundle; False when below the bounds."""
    m = bt.validate_bundle(folder)
    bt.validate_prompts(folder, m)
    print(bt.rust_info(binary, folder).rstrip())
    lines = []

    def say(line):  # the report goes to stdout and to the model card
        lines.append(line)
        print(line, flush=True)

    ok = True
    ref = None
    x = bt.bundle_pixel_values(images, m["image"])
    if "fp32" in bt.tower_precisions(m, "image"):
        ref = bt.ort_embed(folder / bt.tower_file(m, "image", "fp32")[0], m["image"]["input"], x)
    say(f"images: {', '.join(Path(p).name for p in images)}")
    for p in bt.tower_precisions(m, "image"):
        file, _ = bt.tower_file(m, "image", p)
        same = bt.ort_embed(folder / file, m["image"]["input"], x)
        got = bt.rust_image_embeds(binary, folder, images, p)
        cos = cosine_rows(got, same)
        bound = min_fp32 if p in ("fp32", "fp16") else min_int8
        line = f"  image {p:12s} edgeclip vs onnxruntime (same file): {' '.join(f'{c:.6f}' for c in cos)}"
        if ref is not None and p != "fp32":
            line += f"   | vs onnxruntime fp32: {' '.join(f'{c:.6f}' for c in cosine_rows(got, ref))}"
        if cos.min() < bound:
            ok = False
            line += f"   FAIL (< {bound})"
        say(line)
    if "text" in m:
        got = bt.rust_text_embeds(binary, folder, texts)
        same = bt.ort_text_embeds(folder, m, texts)
        cos = cosine_rows(got, same)
        bound = min_fp32 if m["text"]["precision"] in ("fp32", "fp16") else min_int8
        line = (f"  text  {m['text']['precision']:12s} edgeclip vs onnxruntime on {len(texts)} texts: "
                f"{' '.join(f'{c:.6f}' for c in cos)}")
        if cos.min() < bound:
            ok = False
            line += f"   FAIL (< {bound})"
        say(line)
        if "prompts" in m:
            ptexts, emb, _ = bt.read_prompts(folder / m["prompts"]["file"])
            cos = cosine_rows(emb, bt.ort_text_embeds(folder, m, ptexts))
            line = f"  prompts.safetensors vs the default text tower (onnxruntime), {len(ptexts)} prompts: min {cos.min():.6f}"
            if cos.min() < 0.9999:
                ok = False
                line += "   FAIL (stale embeddings?)"
            say(line)
        if "vocabulary" in m and m["vocabulary"]["file"] != m.get("prompts", {}).get("file"):
            vtexts, emb, _ = bt.read_prompts(folder / m["vocabulary"]["file"])
            cos = cosine_rows(emb, bt.ort_text_embeds(folder, m, vtexts))
            line = (f"  {m['vocabulary']['file']} vs the default text tower (onnxruntime), {len(vtexts)} entries: "
                    f"min {cos.min():.6f}")
            if cos.min() < 0.9999:
                ok = False
                line += "   FAIL (stale embeddings?)"
            say(line)
    if "prompts" in m:
        out = bt._run([binary, "classify", "--model", folder, images[0]])
        say("  edgeclip classify with the bundle's prompts:\n    " + "\n    ".join(out.strip().splitlines()[:4]))
    say("check: " + ("ok" if ok else "FAILED"))
    return ok, lines


def finish_with_check(a, out: Path):
    if getattr(a, "no_check", False):
        return
    binary = bt.find_edgeclip(a.edgeclip)
    if binary is None:
        log("edgeclip binary not found (build it: cargo build --release); skipping the runtime check")
        return
    log(f"checking {out} with {binary}")
    ok, lines = run_check(out, binary, CHECK_PHOTOS, CHECK_TEXTS, a.min_fp32, a.min_int8)
    card = out / "MODEL_CARD.md"
    card.write_text(card.read_text() + "\n".join(
        ["", "## Runtime check", "", "`python3 -m edgeclip_tools check`: the edgeclip binary (tract) against "
         "onnxruntime on the same files, cosines per input:", "", "```"] + lines + ["```"]) + "\n")
    if not ok:
        fail(f"{out}: the runtime disagrees with onnxruntime (see above)")


def cmd_check(a):
    binary = bt.find_edgeclip(a.edgeclip)
    if binary is None:
        fail("edgeclip binary not found: build it (cargo build --release) or give --edgeclip PATH")
    images = a.images or CHECK_PHOTOS
    texts = a.texts or CHECK_TEXTS
    ok, _ = run_check(a.bundle, binary, images, texts, a.min_fp32, a.min_int8)
    sys.exit(0 if ok else 1)


# =============================================================================================
# main
# =============================================================================================

def main():
    ap = argparse.ArgumentParser(prog="python3 -m edgeclip_tools", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--edgeclip", type=Path, help="the edgeclip binary for the runtime check")
        p.add_argument("--no-check", action="store_true", help="skip the runtime check at the end")
        p.add_argument("--min-fp32", type=float, default=0.999,
                       help="runtime-check bound: edgeclip vs onnxruntime cosine, float towers")
        p.add_argument("--min-int8", type=float, default=0.99,
                       help="runtime-check bound: edgeclip vs onnxruntime cosine, int8 towers")
        p.add_argument("--seed", type=int, default=SEED)

    p = sub.add_parser("export", help="OpenCLIP / Hugging Face / MobileCLIP / TinyCLIP / timm -> fp32 bundle")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--openclip", metavar="NAME", help="an open_clip model name (open_clip.list_models()), "
                   "or hf-hub:ORG/REPO")
    g.add_argument("--mobileclip", metavar="VARIANT",
                   help=f"MobileCLIP through open_clip: {', '.join(MOBILECLIP)} (2-* are MobileCLIP2)")
    g.add_argument("--hf", metavar="ID", help="a Hugging Face CLIP id, e.g. openai/clip-vit-base-patch32")
    g.add_argument("--tinyclip", metavar="ID", help="a TinyCLIP Hugging Face id (wkcn/TinyCLIP-...) or its "
                   "suffix, e.g. ViT-8M-16-Text-3M-YFCC15M")
    g.add_argument("--timm", metavar="NAME", help="a timm image tower alone, e.g. fastvit_mci0.apple_mclip "
                   "(image-only bundle)")
    p.add_argument("--pretrained", metavar="TAG", help="open_clip pretrained tag (or checkpoint file)")
    p.add_argument("--openclip-config", type=Path, metavar="JSON",
                   help="an open_clip model config file (or folder of them) to register first")
    p.add_argument("--random-init", action="store_true",
                   help="random weights, same architecture and preprocessing (no download; a check of the "
                        "path, the embeddings mean nothing)")
    p.add_argument("--prompts", type=Path, help="a prompts file (one per line) -> prompts.safetensors")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--vocabulary", type=Path, metavar="FILE",
                   help="the vocabulary of open-set scoring (one entry per line, no duplicates) -> "
                        f"{VOCABULARY_FILE} (default: models/tools/camera-vocabulary.txt when the source "
                        "has a text tower)")
    v.add_argument("--no-vocabulary", action="store_true", help=f"write no {VOCABULARY_FILE}")
    p.add_argument("--check-images", type=Path, nargs="+", help="images for the PyTorch/onnxruntime check")
    p.add_argument("--name", help="bundle name (default: the model's)")
    p.add_argument("--out", type=Path, required=True)
    common(p)

    p = sub.add_parser("quantize", help="add int8 variants to a bundle (fp32 kept as a variant)")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--calib", type=Path, help="a folder of images for calibration (default: crops of "
                   "scikit-image's sample photos)")
    p.add_argument("--n-calib", type=int, default=32)
    p.add_argument("--n-eval", type=int, default=16, help="held-out images (from --calib) for the report")
    p.add_argument("--image-int8", nargs="+", default=["int8-qdq", "int8-dynamic"],
                   choices=["int8-qdq", "int8-dynamic", "int8-static"],
                   help="int8 image files to make (int8-static: int8-dynamic with calibrated activation "
                        "ranges, models/BUNDLE.md)")
    p.add_argument("--image-default", default="auto",
                   choices=["auto", "int8-static", "int8-qdq", "int8-dynamic", "fp32"],
                   help="auto: the first of int8-static, int8-qdq, int8-dynamic whose runtime output (or "
                        "onnxruntime's, without the binary) stays within --min-cos of fp32 on every "
                        "evaluation image")
    p.add_argument("--min-cos", type=float, default=0.99)
    p.add_argument("--text-default", default="int8-dynamic", choices=["int8-dynamic", "fp32"])
    p.add_argument("--name")
    common(p)

    p = sub.add_parser("distill", help="train a small student image tower to a teacher bundle's embeddings")
    p.add_argument("--teacher", type=Path, required=True, help="any bundle with a text tower")
    p.add_argument("--images", type=Path, required=True, help="a folder of images (searched recursively)")
    p.add_argument("--arch", default="demo-conv", help="; ".join(f"{k}: {v}" for k, v in STUDENT_ARCHS.items()))
    p.add_argument("--student-pretrained", action="store_true",
                   help="timm:NAME students: start from timm's pretrained backbone (network access)")
    p.add_argument("--size", type=int, help="student input size (default: the teacher's)")
    p.add_argument("--teacher-precision", help="the teacher's image tower to use (default: fp32 if it has one)")
    p.add_argument("--views", type=int, default=4, help="views per training image (the frame + random crops)")
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--max-images", type=int)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--kd-weight", type=float, default=0.1,
                   help="weight of the KL term over the teacher's prompts (when it has prompts)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--name")
    p.add_argument("--out", type=Path, required=True)
    common(p)

    p = sub.add_parser("check", help="the Rust runtime against onnxruntime on a bundle")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--images", type=Path, nargs="+")
    p.add_argument("--texts", nargs="+")
    common(p)

    a = ap.parse_args()
    globals()[f"cmd_{a.command}"](a)


if __name__ == "__main__":
    main()
