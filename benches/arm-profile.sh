#!/usr/bin/env bash
# Where the instructions of one image-tower inference go, per function, on an emulated Cortex
# core (the per-function breakdown behind benches/arm-insn.sh's totals).
#
#   bash benches/arm-profile.sh [--cpu cortex-a76] [--bin BINARY] [--raw DIR] [--reuse]
#                               [--top N] [--no-check] MODEL_DIR PRECISION
#
# BINARY: an aarch64 edgeclip with symbols (default target/aarch64-unknown-linux-gnu/release/
# edgeclip). Runs `edgeclip bench --threads 1 --iters 0` (load only) and `--iters 4` (the first
# run + 4) under qemu-aarch64 with benches/arm-profile/tbcount.c, a TCG plugin counting the
# instructions executed per translated block (built on first use into ~/.cache/arm-insn-count
# against the installed qemu-user's qemu-plugin.h, as ../shared/tools/arm-insn-count builds its
# "insn" plugin). Block PCs are mapped to the binary's symbols (or to libc & co.) through the
# guest mappings the plugin records at exit, checked against qemu's own symbol lookup; the
# difference of the two runs (both cold starts, each with an empty cache folder) over 5 is one
# inference, load excluded (as in arm-insn.sh), with the board's cache geometry
# (benches/board-cache.sh).
# Prints markdown: the top N functions (M insns per inference, % of total), a grouped summary,
# and the split inside tract's assembly kernels by their local labels (inner loop vs fused
# epilogue ops). Unless --no-check, the same qemu runs also load arm-insn-count's insn plugin,
# and the per-block sum is compared with its total (they must agree to ~1%).
# Raw per-block counts stay in DIR (default /tmp/arm-profile/CPU-MODEL-PRECISION); --reuse
# re-analyses them without rerunning qemu. A ViT-B/32 run takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/board-cache.sh  # the emulated board's cache geometry (tract's blocking reads it)
cpu=cortex-a76 bin=target/aarch64-unknown-linux-gnu/release/edgeclip raw= reuse=0 top=25 check=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --cpu) cpu=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --raw) raw=$2; shift 2 ;;
    --reuse) reuse=1; shift ;;
    --top) top=$2; shift 2 ;;
    --no-check) check=0; shift ;;
    -*) echo "arm-profile: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || { sed -n '5,6p' "$0" | sed 's/^# *//' >&2; exit 2; }
model=$1 precision=$2
raw=${raw:-${TMPDIR:-/tmp}/arm-profile/$cpu-$(basename "$model")-$precision}
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/arm-insn-count
plugin=$cache/libtbcount.so insn_plugin=$cache/libinsn.so
src=benches/arm-profile/tbcount.c

# arm-insn-count installs qemu-user, enables deb-src and builds libinsn.so on first use.
[[ -f $insn_plugin ]] || "$count" -- "$bin" --help >/dev/null
if [[ ! -f $plugin || $src -nt $plugin ]]; then
  work=$(mktemp -d)
  version=$(dpkg-query -W -f='${source:Version}' qemu-user)
  (cd "$work" && apt-get source --download-only "qemu=$version" >/dev/null 2>&1)
  tar -C "$work" -xJf "$work"/qemu_*.orig.tar.xz --wildcards '*/include/qemu/qemu-plugin.h'
  inc=$(dirname "$(find "$work" -name qemu-plugin.h | head -n 1)")
  mkdir -p "$cache"
  gcc -shared -fPIC -O2 -Wall -I "$inc" $(pkg-config --cflags glib-2.0) "$src" -o "$plugin" \
    $(pkg-config --libs glib-2.0)
  rm -rf "$work"
fi

mkdir -p "$raw"
for iters in 0 4; do
  [[ $reuse == 1 && -s $raw/iters$iters.tb ]] && continue
  plugins=(-plugin "$plugin,out=$raw/iters$iters.tb")
  ((check)) && plugins+=(-plugin "$insn_plugin" -d plugin -D "$raw/iters$iters.insn.log")
  rm -f "$raw/iters$iters.insn.log"
  echo "arm-profile: $cpu $model $precision --iters $iters ..." >&2
  # Each run starts cold, with an empty cache folder, so that both load the same way.
  cold=$(mktemp -d)
  XDG_CACHE_HOME=$cold board_cache_run "$cpu" qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu "${plugins[@]}" \
    "$bin" bench --model "$model" --precision "$precision" --threads 1 --iters "$iters" \
    >"$raw/iters$iters.out" 2>&1 || { cat "$raw/iters$iters.out" >&2; exit 1; }
  rm -rf "$cold"
done

python3 - "$raw" "$bin" "$top" "$cpu" "$model" "$precision" <<'EOF'
import array, bisect, collections, os, re, subprocess, sys

raw, binary, top, cpu, model, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:]
binary = os.path.realpath(binary)

def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

def segments(path):  # [(p_offset, p_vaddr, p_filesz)] of the LOAD headers: file offset -> vaddr
    return [(int(f[1], 16), int(f[2], 16), int(f[4], 16))
            for f in (l.split() for l in run("readelf", "-lW", path).splitlines())
            if f and f[0] == "LOAD"]

def ifunc_targets(path, addr):  # adrp+add targets in an IFUNC resolver: the variants it picks
    page, out = {}, set()
    for l in run("aarch64-linux-gnu-objdump", "-d", f"--start-address={addr}",
                 f"--stop-address={addr + 0x140}", path).splitlines():
        m = re.search(r"\tadrp\t(x\d+), ([0-9a-f]+)", l)
        if m:
            page[m[1]] = int(m[2], 16)
        m = re.search(r"\tadd\t(x\d+), (x\d+), #0x([0-9a-f]+)", l)
        if m and m[2] in page:
            out.add(page[m[2]] + int(m[3], 16))
        if re.search(r"\tret", l):
            break
    return out

def symbols(path):  # sorted [(vaddr, name, kind)], kind: func, asm (tract's kernels) or label
    syms, aliases, ifuncs = {}, collections.defaultdict(set), []
    for l in run("readelf", "-sW", "--dyn-syms", path).splitlines():
        f = l.split()
        if len(f) < 8 or not f[0][:-1].isdigit() or f[6] in ("UND", "ABS"):
            continue
        addr, typ, bind, name = int(f[1], 16), f[3], f[4], f[7].split("@")[0]
        if typ in ("FUNC", "IFUNC"):
            syms.setdefault(addr, (name, "func"))
            aliases[addr].add(name)
            if typ == "IFUNC":
                ifuncs.append((addr, name))
        elif typ == "NOTYPE" and bind == "GLOBAL":
            syms.setdefault(addr, (name, "asm"))    # global entry points of the .S kernels
        elif typ == "NOTYPE" and name.startswith(".") and addr not in syms:
            syms[addr] = (name, "label")           # local labels inside the .S kernels
    for addr, name in ifuncs:  # stripped libc: name memcpy & co.'s variants after their ifunc
        for t in ifunc_targets(path, addr):
            if syms.get(t, ("", "label"))[1] == "label":
                syms[t] = (f"{name} (ifunc variant)", "func")
    return sorted((a, n, k) for a, (n, k) in syms.items()), aliases

def load(path):  # guest_base, file mappings, {pc: insns}, {pc: qemu's symbol}
    base, maps, blocks, qsym = None, [], collections.Counter(), {}
    for line in open(path):
        f = line.split()
        if f[0] == "#":
            if f[1] == "guest_base":
                base = int(f[2], 16)
            elif f[1] == "map" and f[6].startswith("/"):
                maps.append((int(f[2], 16), int(f[3], 16), int(f[4], 16), " ".join(f[6:])))
        else:
            pc = int(f[0], 16)
            blocks[pc] += int(f[1])   # a PC translated with several block lengths: merged
            if f[3] != "-":
                qsym[pc] = f[3]
    return base, sorted(maps), blocks, qsym

class Obj:  # one mapped ELF file: file offset -> vaddr -> symbol
    def __init__(self, path):
        self.path, self.name = path, os.path.basename(path)
        self.segs = segments(path)
        self.syms, self.aliases = symbols(path)
        self.funcs = [(a, n, k) for a, n, k in self.syms if k != "label"]
        self.faddr = [a for a, _, _ in self.funcs]
        self.aaddr = [a for a, _, _ in self.syms]
        self.plt = next(((int(f[2], 16), int(f[2], 16) + int(f[4], 16))
                         for f in (l.split("]", 1)[1].split()
                                   for l in run("readelf", "-SW", path).splitlines() if "] .plt " in l)),
                        (0, 0))
    def vaddr(self, off):
        for po, pv, sz in self.segs:
            if po <= off < po + sz:
                return off - po + pv
        return None
    def lookup(self, v):  # (function start, function, label inside an assembly kernel or None)
        i = bisect.bisect_right(self.faddr, v) - 1
        if i < 0:
            return None, None, None
        fa, fn, kind = self.funcs[i]
        if kind != "asm":
            return fa, fn, None
        a, n, k = self.syms[bisect.bisect_right(self.aaddr, v) - 1]
        return fa, fn, (n if k == "label" else "(entry)")
    def callers(self):  # {function start: {calling function starts}} from BL / tail-call B
        sec = next(l.split("]", 1)[1].split() for l in run("readelf", "-SW", self.path).splitlines()
                   if " .text " in l)
        addr, off, size = int(sec[2], 16), int(sec[3], 16), int(sec[4], 16)
        with open(self.path, "rb") as f:
            f.seek(off)
            words = array.array("I", f.read(size - size % 4))
        starts, out = set(self.faddr), collections.defaultdict(set)
        for i, w in enumerate(words):
            if w >> 26 in (0b100101, 0b000101):  # BL / B imm26
                pc = addr + 4 * i
                t = pc + (((w & 0x3FFFFFF) ^ 0x2000000) - 0x2000000) * 4
                if t in starts:
                    c = self.faddr[bisect.bisect_right(self.faddr, pc) - 1]
                    if c != t:
                        out[t].add(c)
        return out

objs, runs = {}, {}
for iters in (0, 4):
    base, maps, blocks, qsym = load(f"{raw}/iters{iters}.tb")
    starts = [mp[0] for mp in maps]
    per = collections.Counter()   # (object, function start, name) -> insns
    lab = collections.Counter()   # (kernel, label) -> insns, assembly kernels only
    agree = disagree = 0
    biases = set()
    for pc, n in blocks.items():
        i = bisect.bisect_right(starts, pc) - 1
        if i < 0 or not maps[i][0] <= pc < maps[i][1]:
            per[(None, None, "[unmapped: vdso, signal trampoline]")] += n
            continue
        lo, hi, off, path = maps[i]
        o = objs.get(path) or objs.setdefault(path, Obj(path))
        v = o.vaddr(pc - lo + off)   # the block's address in the ELF file's own terms
        fa, fn, label = o.lookup(v) if v is not None else (None, None, None)
        if v is not None and o.plt[0] <= v < o.plt[1]:
            fa, fn, label = o.plt[0], f"{o.name}: PLT stubs (calls into libc)", None
        elif os.path.realpath(path) == binary:
            biases.add(pc - v)
            if pc in qsym:  # qemu's lookup: sized FUNC symbols of the main binary only
                if fa is not None and qsym[pc] in o.aliases.get(fa, ()):
                    agree += 1
                else:
                    disagree += 1
        elif fn is not None:  # stripped shared objects: nearest exported symbol
            fn = fn if "ifunc" in fn else f"after {fn}"
            fn = f"{o.name}: {fn}"
        per[(path, fa, fn or f"{o.name}+0x{v:x}")] += n
        if label:
            lab[(fn, label)] += n
    log = f"{raw}/iters{iters}.insn.log"
    total_insn = None
    if os.path.exists(log):
        found = re.findall(r"^total insns: (\d+)", open(log).read(), re.M)
        total_insn = int(found[-1]) if found else None
    runs[iters] = dict(per=per, lab=lab, total=sum(blocks.values()), insn=total_insn, base=base,
                       biases=biases, agree=agree, disagree=disagree)

r0, r4 = runs[0], runs[4]
# load address check: every block of the binary sits at one load bias, and qemu agrees on names
for it, r in runs.items():
    if len(r["biases"]) != 1:
        sys.exit(f"arm-profile: iters {it}: binary seen at several load biases {r['biases']}")
    if r["disagree"] > 0.01 * max(1, r["agree"]):
        sys.exit(f"arm-profile: iters {it}: {r['disagree']} blocks disagree with qemu's symbols")

keys = set(r0["per"]) | set(r4["per"])
diff = {k: (r4["per"][k] - r0["per"][k]) / 5 for k in keys}   # per inference
total = sum(diff.values())
main = next((o for p, o in objs.items() if os.path.realpath(p) == binary), None)
fname = {a: n for a, n, _ in main.funcs} if main else {}
mangled = sorted({k[2] for k in keys} | {fn for fn, _ in r4["lab"]} | set(fname.values()))
dem = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True,
                     check=True).stdout.splitlines()
dem = {m: re.sub(r"::h[0-9a-f]{16}$", "", d) for m, d in zip(mangled, dem)}

# Generic helpers (ndarray folds, closures, thread-local wrappers) say little by their name:
# follow their static callers up while there is exactly one, and show "helper <- caller".
GENERIC = re.compile(r"^(ndarray::|core::|alloc::|std::|<core::|<alloc::|<std::|<ndarray::)"
                     r"|\{\{closure\}\}$")
callers = main.callers() if main else {}

def context(path, fa, name):
    d = dem[name]
    if main is None or path is None or os.path.realpath(path) != binary:
        return d
    chain, seen = d, {fa}
    while GENERIC.search(d) and fa in callers:
        up = {dem[fname[c]]: c for c in sorted(callers[fa])}
        if len(up) > 1:  # several callers: name them, stop
            chain += " <- {" + " / ".join(sorted(up)[:3]) + (" / ..." if len(up) > 3 else "") + "}"
            break
        (d, fa), = up.items()
        if fa in seen:
            break
        seen.add(fa)
        chain += f" <- {d}"
    return chain

per = collections.Counter()
for k, v in diff.items():
    if v:
        per[context(*k) if abs(v) > 1e-4 * abs(total) else dem[k[2]]] += v

GROUPS = [  # first match wins, on the name and its unique callers
    ("int8 matmul kernels (asm)", r"^arm64simd_mmm_i32_|^sve_mmm_i32"),
    ("f32 matmul kernels (asm)", r"^arm64(simd|fp16)_mmm_f|^sve_mmm_f"),
    ("packing / im2col", r"[Pp]ack|im2col|Patcher|panel_bytes|transpose_4x4"),
    ("zero-point sums (Reduce<Sum> over int tensors: ndarray fold + per-output slicing)",
     r"q_sum_t|Reducer::reduce_t|ndarray::dimension|do_slice|from_shape_fn|IxDyn"),
    ("quantize / dequantize (DynamicQuantizeLinear, u8->i8 offset, int casts)",
     r"DynamicQuantize|dynamic_quantize|QuantizeLinear|OffsetU8asI8|quant::|natural_cast"
     r"|cast_to_dt"),
    ("matmul driver (tiles, scratch, stores)", r"frame::mmm::|OutputStore|ScratchSpace"),
    ("elementwise & reductions (LayerNorm, Softmax, GELU, adds, scales, masks)",
     r"sigmoid|tanh|[Ss]oft[Mm]ax|erf|[Gg]elu|[Rr]educ|unicast|by_scalar|element_wise|ElementWise"
     r"|rms_norm|_sum_|_max_|[Bb]inary|BinMiniOp|math::|nn::|MapReduce|LayerNorm|layer_norm"
     r"|TempBuffer|logic::"),
    ("memory: malloc/free/memcpy/memset, fills, drops, tensor copies",
     r"libc\.so|PLT|mem(cpy|move|set)|alloc|drop_in_place|[Cc]lone|[Cc]opy|Tensor::|TValue"),
]

def group(name):
    for g, rx in GROUPS:
        if re.search(rx, name):
            return g
    return "other"

def m(x):
    return f"{x / 1e6:.1f}"

print(f"### {model} {precision} on {cpu}: {m(total)} M insns per inference\n")
print(f"Binary loaded at 0x{next(iter(r4['biases'])):x} (guest_base 0x{r4['base']:x}); qemu's own "
      f"symbol lookup agrees on {r4['agree']} block starts, disagrees on {r4['disagree']}.")
for it, r in runs.items():
    chk = "" if r["insn"] is None else (f"; insn plugin {r['insn']:,}, "
                                        f"diff {100 * (r['total'] - r['insn']) / r['insn']:+.3f}%")
    print(f"--iters {it}: {r['total']:,} insns in blocks{chk}.")
if r0["insn"] is not None and r4["insn"] is not None:
    ref = (r4["insn"] - r0["insn"]) / 5
    print(f"Per inference: blocks {m(total)} M, insn plugin (arm-insn-count) {m(ref)} M, "
          f"diff {100 * (total - ref) / ref:+.2f}%.")
    mismatch = [it for it, r in runs.items() if abs(r["total"] - r["insn"]) > 0.01 * r["insn"]]
    if mismatch:
        sys.exit(f"arm-profile: per-block counts and the insn plugin differ by over 1% "
                 f"(--iters {mismatch})")
print(f"\n| # | function (<- its only caller, for generic helpers) | M insns | % | group |")
print("|---|---|---|---|---|")
for i, (name, v) in enumerate(per.most_common(top), 1):
    short = name if len(name) <= 160 else name[:157] + "..."
    print(f"| {i} | `{short.replace('|', '/')}` | {m(v)} | {100 * v / total:.1f} | "
          f"{group(name).split(' (')[0]} |")
rest = total - sum(v for _, v in per.most_common(top))
print(f"| | (all other functions) | {m(rest)} | {100 * rest / total:.1f} | |")

grouped = collections.Counter()
for name, v in per.items():
    grouped[group(name)] += v
print(f"\n| group | M insns | % |\n|---|---|---|")
for g, _ in GROUPS + [("other", "")]:
    print(f"| {g} | {m(grouped[g])} | {100 * grouped[g] / total:.1f} |")
print(f"| total | {m(total)} | 100.0 |")

lab, kern = collections.Counter(), collections.Counter()
for (fn, label), v in r4["lab"].items():
    v = (v - r0["lab"].get((fn, label), 0)) / 5
    lab[(dem[fn], label)] += v
    kern[dem[fn]] += v
if lab:
    print("\nInside the assembly kernels, by local label (the code up to the next label):\n")
    print("| kernel | label | M insns | % of kernel |\n|---|---|---|---|")
    for (fn, label), v in sorted(lab.items(), key=lambda kv: (-kern[kv[0][0]], -kv[1])):
        if abs(v) >= 0.0005 * total:
            print(f"| `{fn}` | `{label}` | {m(v)} | {100 * v / kern[fn]:.1f} |")
EOF
