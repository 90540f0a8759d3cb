#!/usr/bin/python3
"""compare_torch.py: our bench binaries and the same model code in PyTorch, side by side.

Issue 13 asks for one run that times each stage three ways on the same machine, at true
LION-FlanT5-XL widths, with the same thread count (issue 18 adds Pink's models: --only pink,
below):

  ours        build/tools/bench/bench_vit, bench_swin and bench_t5 (random weights, our C
              code) in f32 and bf16, their printed figures parsed;
  torch f32   tools/reference/lion_ref's EvaViT / T5ForConditionalGeneration, random weights;
  torch bf16  the same module objects' twins cast to bfloat16 (upstream LION runs its T5 in
              bf16 on the hardware it was built for), under torch.inference_mode().

Depth is truncated (--vit-depth, --t5-layers) so that a full run fits ~10 minutes on a
2-core machine; widths are not. The repetitions are interleaved (ours, torch f32, torch bf16,
then again) and each figure is the median of its repetitions, so that a busy neighbour on a
shared machine slows all three alike rather than whichever ran during the burst.

    /usr/bin/python3 tools/bench/compare_torch.py [--threads N] [--reps R] [--bf16-reps K]
        [--vit-depth D] [--t5-layers L] [--tokens T] [--steps S] [--build DIR] [--only LIST] [--tiny]
        [--clip-layers L] [--llama-layers L] [--prompt P]

--only takes measures (vit, enc, dec1, dec5; clip, prefill, pdec1, pdec5) or the groups lion (the
default), pink and all. Pink's rows (issue 18) time the same three ways, at true widths (CLIP
ViT-L/14 with Pink's adapters and mm_projector; LLaMA-2-7B with Pink's adapters), depth truncated
(--clip-layers run, --llama-layers):

  ours        build/tools/bench/bench_pink, f32 and bf16;
  torch f32   tools/reference/pink_ref's PinkVision and LlamaForCausalLM (its KV-cache path);
  torch bf16  their bf16 twins.

Both sides run on the same random weights: torch writes its f32 parameters to a safetensors file
(Pink's key names) that bench_pink maps, as lion-vision and lion-llm map a model, together with
the inputs and torch's outputs, so that bench_pink also prints how far ours is from torch f32.
Pink is not in the default run: with LION's models the torch process would hold both families
in two precisions (~8 GB at the default depths: 2.95 GB LION, 4.9 GB Pink), beyond what a shared
23 GB machine should give one script next to the benches.

Where the CPU has no native bf16 (AVX512_BF16 / AMX), torch's bf16 is an emulation far slower
than everything else and is timed in the first repetition only (--bf16-reps overrides).

--tiny shrinks every width (a few seconds; tests/py/test_compare_torch.py): its figures
say nothing about LION. Prints the CPU, the ISA our kernels used, torch's build, then one
markdown table (the speed ratios are torch time / our time: > 1 means ours is faster) and the
bf16 fidelity of both sides.

RAM's Swin-L (--swin-depths, default 2,2,2,2 of RAM's 2,2,18,2) is timed the same way:
bench_swin against lion_ref's SwinTransformer. Ours runs both precisions (bench_* --precision
f32 and bf16; bf16 = every weight matrix bf16, oneDNN where the CPU runs bf16 natively, widened
to f32 elsewhere).
"""
import argparse
import copy
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

# Both sides run on OpenMP (libgomp): the same wait policy for both, set before torch loads
# it. Passive is what our benches are documented with; on a shared machine an actively
# spinning thread that lost its core delays every parallel region by a scheduler slice (torch's
# small elementwise ops took ~20 ms each that way here, ~10x its passive time), which would
# measure the neighbours rather than the code. Set OMP_WAIT_POLICY=active for both on an
# idle, dedicated machine.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import torch  # noqa: E402

from lion_ref.eva_vit import EvaViT  # noqa: E402
from lion_ref.ram import SwinTransformer  # noqa: E402
from lion_ref.safetensors_io import StreamWriter, save_file  # noqa: E402
from lion_ref.t5 import T5ForConditionalGeneration  # noqa: E402
from pink_ref.clip import PinkVision  # noqa: E402
from pink_ref.llama import LlamaForCausalLM  # noqa: E402




# LION-FlanT5-XL and Pink (CLIP ViT-L/14, LLaMA-2-7B) widths (what our benches build by
# default) and a tiny set for the test.
XL = dict(vit_dim=1408, vit_heads=16, vit_mlp=6144, swin_image=384, swin_embed=192, d_model=2048, d_ff=5120, t5_heads=32, vocab=32128,
          clip_dim=1024, clip_heads=16, clip_mlp=4096, llama_dim=4096, llama_hidden=11008, llama_heads=32,
          llama_vocab=32000)
TINY = dict(vit_dim=256, vit_heads=4, vit_mlp=1024, swin_image=96, swin_embed=32, d_model=512, d_ff=1024, t5_heads=8, vocab=4096,
            clip_dim=128, clip_heads=4, clip_mlp=256, llama_dim=256, llama_hidden=512, llama_heads=4,
            llama_vocab=1000)
D_KV = 64           # FlanT5's head width; bench_t5 fixes it too
VISUAL_TOKENS = 289  # LION's encoder input: 289 visual tokens, then the text tokens
LION_MEASURES = ("vit", "swin", "enc", "dec1", "dec5")
PINK_MEASURES = ("clip", "prefill", "pdec1", "pdec5")
MEASURES = LION_MEASURES + PINK_MEASURES
GROUPS = {"lion": LION_MEASURES, "pink": PINK_MEASURES, "all": MEASURES}
PINK_PATCHES = 256   # CLIP ViT-L/14 at 224 px: the image rows of Pink's prompt
PINK_IMAGE_AT = 13   # their first position, as bench_pink puts them (after "<s>[INST] <<SYS>>\nImage:")


def log(msg):
    """Progress on stderr, so that stdout carries only the report."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ machine

def cpu_info():
    """(model name, set of flags) from /proc/cpuinfo: the first processor is enough."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def torch_cpu_capability():
    """The vector ISA torch's own kernels were dispatched to ("AVX2", "AVX512"), from its
    build summary: torch 1.13 has no API for it."""
    m = re.search(r"CPU capability usage:\s*(\S+)", torch.__config__.show())
    return m.group(1) if m else "unknown"


def onednn_version():
    m = re.search(r"MKL-DNN v(\S+)", torch.__config__.show())
    return m.group(1) if m else "unknown"


# ------------------------------------------------------------------ ours: run and parse the benches

def run_bench(argv, env, peaks):
    """Runs one bench; its stdout, or exits with what it said when it failed. Its peak RSS
    (VmHWM, sampled while it runs) goes into peaks[name]: getrusage's children figure would
    count this process's own pages, which a child started by vfork holds until its exec."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True)
        name, hwm = os.path.basename(argv[0]), 0
        while p.poll() is None:
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    m = re.search(r"^VmHWM:\s*(\d+)\s*kB", f.read(), re.M)
                if m:
                    hwm = max(hwm, int(m.group(1)) * 1024)
            except OSError:
                pass  # it has just exited
            time.sleep(0.1)
        peaks[name] = max(peaks.get(name, 0), hwm)
        out.seek(0), err.seek(0)
        text = out.read()
        if p.returncode != 0:
            sys.exit("compare_torch: %s failed (%d):\n%s%s" % (" ".join(argv), p.returncode, text, err.read()))
    return text


def find(pattern, text, what):
    """The first group of pattern in a bench's output; a clear error names the bench's
    missing line instead of a traceback when its format has changed."""
    m = re.search(pattern, text, re.M)
    if not m:
        sys.exit("compare_torch: no %s in the bench output:\n%s" % (what, text))
    return m.group(1)


def parse_vit(out):
    """bench_vit: seconds of one forward ("forward  X s  (Y s per image)") and its CPU line."""
    t = float(find(r"^\s*forward\s+([0-9.]+)\s*s\b", out, "forward line"))
    cpu = find(r"^\s*CPU\s+(.*)$", out, "CPU line")
    return t, cpu


def parse_swin(out):
    """bench_swin: seconds per image ("forward  X s per image") and its CPU line."""
    t = float(find(r"^\s*forward\s+([0-9.]+)\s*s per image", out, "forward line"))
    cpu = find(r"^\s*CPU\s+(.*)$", out, "CPU line")
    return t, cpu


def parse_t5(out):
    """bench_t5 --precision bf16: the encoder's seconds in f32 and in bf16, and per (rows, mode)
    the median ms of a step and the max relative difference of its logits to f32 OpenBLAS (None
    for that mode)."""
    enc = {p: float(find(r"^\s*encoder\s+\d+\s+tokens\s+%s\s+([0-9.]+)\s*s\b" % p, out, "%s encoder line" % p))
           for p in ("f32", "bf16")}
    cpu = find(r"^\s*CPU\s+(.*)$", out, "CPU line")
    steps = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 9 or not cells[0].isdigit():
            continue  # not a row of the step table
        diff = None if cells[8] == "-" else float(cells[8])
        steps[(int(cells[0]), cells[1])] = (float(cells[3]), diff)  # median ms
    if not steps:
        sys.exit("compare_torch: no step table in bench_t5's output:\n" + out)
    return enc, steps, cpu


def step_figure(steps, rows, mode):
    """A mode's median ms at `rows`, by the start of its name ("f32 openblas", "bf16")."""
    for (r, name), v in steps.items():
        if r == rows and name.startswith(mode):
            return v
    sys.exit("compare_torch: bench_t5 printed no '%s' row for %d rows" % (mode, rows))


def parse_pink(out):
    """bench_pink: seconds of the CLIP forward and of the prefill, per rows the step's median ms,
    floor ms and ratio to the floor, the check against torch f32 (names -> relative difference),
    and its CPU line."""
    clip = float(find(r"^\s*clip forward\s+([0-9.]+)\s*s\b", out, "clip forward line"))
    prefill = float(find(r"^\s*prefill\s+\d+\s+positions\s+([0-9.]+)\s*s\b", out, "prefill line"))
    cpu = find(r"^\s*CPU\s+(.*)$", out, "CPU line")
    steps = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():  # | rows | median | best | GB/s | GFLOP/s | floor | ratio |
            steps[int(cells[0])] = (float(cells[1]), float(cells[5]), float(cells[6]))
    if not steps:
        sys.exit("compare_torch: no step table in bench_pink's output:\n" + out)
    check = find(r"^\s*check\s+vs \S+ \(max [^)]*\): (.*)$", out, "check line")
    diffs = {k: float(v) for k, v in re.findall(r"([a-z][a-z0-9() ]*?) ([0-9.]+e[-+][0-9]+)", check)}
    return clip, prefill, steps, diffs, cpu


# ------------------------------------------------------------------ torch

def relerr(a, ref):
    """max |a - ref| / max |ref|: the figure bench_t5 prints for its logits."""
    a, ref = a.float(), ref.float()
    return ((a - ref).abs().max() / ref.abs().max()).item()


def bf16_twin(model):
    """The same weights rounded to bf16, as a second module (both stay in memory so that the
    repetitions can interleave). deepcopy's memo maps each parameter straight to its bf16
    cast, so no second f32 copy is ever made (at 24 + 24 layers that would be 11.5 GB)."""
    memo = {id(p): torch.nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False)
            for p in model.parameters()}
    return copy.deepcopy(model, memo).to(torch.bfloat16).eval()


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def first_step(model, enc):
    """One decoder step on an empty cache: its logits (the fidelity line's) and each decoder
    layer's cross-attention keys/values, projected from the encoder output once per request
    (as ours does when a request starts: t5_decoder_init), never inside a timed step."""
    logits, past = model.decode(torch.tensor([[3]]), enc)
    return logits, [ckv for _, ckv in past]


def decode_steps(model, enc, cross, beams, steps, vocab):
    """Seconds per step of `steps` KV-cache decoder steps after one warm-up step, the work
    bench_t5's time_steps does: a self-attention cache that starts empty, the same token
    pattern; with beams, the self-attention cache reordered every step by a real permutation
    (as beam search does). The cross-attention keys/values come from first_step, copied per
    beam once (as HF's generate holds them: each beam its own rows) and not reordered (every
    beam of one request holds the same; ours does not copy them, HF's _reorder_cache would:
    leaving that out favours torch)."""
    enc_b = enc.expand(beams, -1, -1)  # only its shape is read once the cache is given
    k0 = cross[0][0]
    empty = k0.new_zeros(beams, k0.shape[1], 0, k0.shape[3])
    past = [((empty, empty), (ck.expand(beams, -1, -1, -1).contiguous(), cv.expand(beams, -1, -1, -1).contiguous()))
            for ck, cv in cross]
    tok = torch.zeros(beams, 1, dtype=torch.long)
    total = 0.0
    for s in range(steps + 1):
        t0 = time.perf_counter()
        _, past = model.decode(tok, enc_b, past=past)
        if beams > 1:
            src = torch.tensor([(r + s) % beams for r in range(beams)])
            past = [(tuple(t.index_select(0, src) for t in skv), ckv) for skv, ckv in past]
        if s > 0:
            total += time.perf_counter() - t0
        tok = torch.tensor([[(3 + (s * 7 + r * 13) % 1000) % vocab] for r in range(beams)])
    return total / steps


def gemm_probe(m, k, n, dtype, reps=1):
    """GFLOP/s of one torch linear [m,k] x [n,k]^T in dtype (after a warm-up): what torch's
    matmul does with that dtype on this CPU, whatever library it dispatches to."""
    a, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    torch.nn.functional.linear(a, w)
    t = min(timed(lambda: torch.nn.functional.linear(a, w)) for _ in range(reps))
    return 2.0 * m * k * n / t / 1e9


# ------------------------------------------------------------------ Pink in torch

def pink_configs(w, clip_layers, llama_layers):
    """(Pink's config dict, CLIP's) as the released Pink has them, at widths w and truncated
    depth: clip_select_layer -2 (so the tower gets one layer more than runs), adapters of 8 in
    attention only and linear on both towers. bench_pink builds the same."""
    pink = dict(hidden_size=w["llama_dim"], intermediate_size=w["llama_hidden"], num_hidden_layers=llama_layers,
                num_attention_heads=w["llama_heads"], num_key_value_heads=w["llama_heads"],
                vocab_size=w["llama_vocab"], rms_norm_eps=1e-5, rope_theta=10000.0, clip_select_layer=-2,
                adapter_vision_enable=True, adapter_vision_dim=8, adapter_llm_enable=True, adapter_llm_dim=8,
                adapter_attn=True, adapter_mlp=False, adapter_non_linear=False)
    clip = dict(hidden_size=w["clip_dim"], intermediate_size=w["clip_mlp"], num_hidden_layers=clip_layers + 1,
                num_attention_heads=w["clip_heads"], image_size=224, patch_size=14, hidden_act="quick_gelu",
                layer_norm_eps=1e-5)
    return pink, clip


def pink_prompt_ids(n, vocab):
    """n ids of no meaning (bos, then a spread over the vocabulary), bench_pink's own pattern:
    only their count matters; the image rows replace PINK_PATCHES of them."""
    return torch.tensor([1] + [3 + i * 7919 % (vocab - 3) for i in range(1, n)])


def write_pink_weights(path, vision, llm, clip_layers):
    """Both models' f32 parameters under Pink's key names, one tensor at a time (no second copy
    in memory). The tower's last layer is left out: Pink reads layer -2, it never runs."""
    unused = "vision_model.vision_model.encoder.layers.%d." % clip_layers
    params = [(k, v) for k, v in list(vision.state_dict().items()) + list(llm.state_dict().items())
              if not k.startswith(unused) and "post_layernorm" not in k]
    with StreamWriter(path, [(k, v.dtype, v.shape) for k, v in params]) as f:
        for k, v in params:
            f.write(k, v)


def llama_prefill(model, x):
    """The prompt's KV cache and the logits of its last position only, as ours computes them:
    pink_ref's forward would put every position through lm_head (as HF 4.38's does), which at
    300 positions and 2 layers adds a third to the work of a prefill that needs one row."""
    past = []
    for layer in model.model.layers:
        x, kv = layer(x)
        past.append(kv)
    return model.lm_head(model.model.norm(x[:, -1:])).float()[:, -1], past


def llama_step_logits(model, past, tokens):
    """One step's logits [rows, V] from the prompt's cache, one row per token (each row its own
    copy of the cache, as beams forked from one prompt)."""
    rows = len(tokens)
    past = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in past]
    logits, _ = model(input_ids=torch.tensor(tokens)[:, None], past=past)
    return logits[:, -1]


def llama_steps(model, past, beams, steps, vocab):
    """Seconds per step of `steps` KV-cache steps after one untimed step, bench_pink's work: the
    prompt's cache copied per beam once (as decode_batch forks the slots), the same token
    pattern; with beams the cache reordered after every step by a real permutation, as HF's
    beam search does it (_reorder_cache: index_select of every layer's keys and values; ours
    moves slot indices and copies nothing for a permutation). The cache grows by torch.cat each
    step, as pink_ref's (and HF 4.38's) does."""
    past = [(k.expand(beams, -1, -1, -1).contiguous(), v.expand(beams, -1, -1, -1).contiguous()) for k, v in past]
    tok = torch.full((beams, 1), 3 % vocab, dtype=torch.long)
    total = 0.0
    for s in range(steps + 1):
        t0 = time.perf_counter()
        _, past = model(input_ids=tok, past=past)
        if beams > 1:
            src = torch.tensor([(r + s) % beams for r in range(beams)])
            past = [(k.index_select(0, src), v.index_select(0, src)) for k, v in past]
        if s > 0:
            total += time.perf_counter() - t0
        tok = torch.tensor([[(3 + (s * 7 + r * 13) % 1000) % vocab] for r in range(beams)])
    return total / steps


class PinkSide:
    """Pink's rows: pink_ref's models in torch, f32 and bf16 twins, on random weights; those
    weights, the inputs and torch f32's outputs written for bench_pink (--weights, --check); one
    interleaved repetition of ours, torch f32 and torch bf16 (rep)."""

    def __init__(self, a, w, only, native, tmp, bench):
        self.only, self.steps, self.vocab = only, a.steps, w["llama_vocab"]
        # without native bf16 a bf16 prefill is an emulated ~250 GFLOP at the defaults: minutes
        self.bf16_prefill = bool(native)
        pink_cfg, clip_cfg = pink_configs(w, a.clip_layers, a.llama_layers)
        log("building pink_ref PinkVision (%d CLIP layers run) and LLaMA (%d layers) in f32 and bf16"
            % (a.clip_layers, a.llama_layers))
        self.vision_f = PinkVision(pink_cfg, clip_cfg).init_weights().eval()
        self.llm_f = LlamaForCausalLM(pink_cfg).init_weights().eval()
        self.vision_b, self.llm_b = bf16_twin(self.vision_f), bf16_twin(self.llm_f)
        weights, io = os.path.join(tmp, "pink.safetensors"), os.path.join(tmp, "pink_io.safetensors")
        log("writing the f32 weights for bench_pink: %s" % weights)
        write_pink_weights(weights, self.vision_f, self.llm_f, a.clip_layers)

        # inputs and torch f32's outputs (also the warm-up of every torch model), and torch bf16's
        # fidelity: its step from the f32 prompt's cache rounded to bf16, so that the step's error
        # is the step's alone (a bf16 prefill is not run: see bf16_prefill)
        self.pixels = torch.randn(1, 3, 224, 224)
        ids = pink_prompt_ids(a.prompt, self.vocab)
        step_tokens = [(3 + r * 13) % self.vocab for r in range(5)]
        self.fid = {}
        with torch.inference_mode():
            log("torch: Pink warm-up, reference outputs and bf16 fidelity")
            _, tokens_f = self.vision_f(self.pixels)
            _, tokens_b = self.vision_b(self.pixels.bfloat16())
            self.fid["clip"] = relerr(tokens_b, tokens_f)
            self.x = self.llm_f.embed(ids[None]).clone()  # the image rows replace their ids', as Pink does
            self.x[:, PINK_IMAGE_AT:PINK_IMAGE_AT + PINK_PATCHES] = tokens_f
            prefill_logits, self.past_f = llama_prefill(self.llm_f, self.x)
            self.past_b = [(k.bfloat16(), v.bfloat16()) for k, v in self.past_f]
            step1 = llama_step_logits(self.llm_f, self.past_f, step_tokens[:1])
            step5 = llama_step_logits(self.llm_f, self.past_f, step_tokens)
            self.fid["pdec1"] = relerr(llama_step_logits(self.llm_b, self.past_b, step_tokens[:1]), step1)
        save_file(dict(pixels=self.pixels, prompt_ids=ids.int(),
                       image_at=torch.tensor([PINK_IMAGE_AT], dtype=torch.int32), clip_tokens=tokens_f[0],
                       prefill_logits=prefill_logits[0], step_tokens=torch.tensor(step_tokens, dtype=torch.int32),
                       step_logits_1=step1, step_logits_5=step5), io)
        # --reps 1: the repetitions are ours to interleave; a small streaming buffer for the floor
        self.argv = [bench, "--threads", str(a.threads), "--clip-layers", str(a.clip_layers), "--llama-layers",
                     str(a.llama_layers), "--steps", str(a.steps), "--reps", "1", "--beams", "1,5",
                     "--floor-mb", "256", "--weights", weights, "--check", io,
                     "--clip-dim", str(w["clip_dim"]), "--clip-heads", str(w["clip_heads"]), "--clip-mlp",
                     str(w["clip_mlp"]), "--dim", str(w["llama_dim"]), "--hidden", str(w["llama_hidden"]),
                     "--heads", str(w["llama_heads"]), "--vocab", str(self.vocab)]
        self.ours_diff, self.ours_bf16_diff, self.cpu = {}, {}, None
        self.floors = {"f32": {}, "bf16": {}}  # per precision, rows -> [(floor ms, step / floor)]

    def rep(self, rep, bf16_reps, record, run):
        """One repetition: bench_pink (all of ours), then torch f32, then torch bf16 (while
        rep < bf16_reps). record(rep, measure, side, seconds, what); run(argv) -> stdout."""
        clip_s, prefill_s, steps, self.ours_diff, self.cpu = parse_pink(run(self.argv))
        for rows, (ms, floor, ratio) in steps.items():
            self.floors["f32"].setdefault(rows, []).append((floor, ratio))
        ours = {"clip": clip_s, "prefill": prefill_s, "pdec1": steps[1][0] / 1e3, "pdec5": steps[5][0] / 1e3}
        what = {"clip": "CLIP ViT-L forward", "prefill": "LLaMA prefill", "pdec1": "LLaMA decode step, 1 row",
                "pdec5": "LLaMA decode step, 5 rows"}
        for m in PINK_MEASURES:
            if m in self.only:
                record(rep, m, "ours f32", ours[m], what[m] + " (bench_pink)")
        clip_s, prefill_s, steps, self.ours_bf16_diff, _ = parse_pink(run(self.argv + ["--precision", "bf16"]))
        for rows, (ms, floor, ratio) in steps.items():
            self.floors["bf16"].setdefault(rows, []).append((floor, ratio))
        ours = {"clip": clip_s, "prefill": prefill_s, "pdec1": steps[1][0] / 1e3, "pdec5": steps[5][0] / 1e3}
        for m in PINK_MEASURES:
            if m in self.only:
                record(rep, m, "ours bf16", ours[m], what[m] + " (bench_pink)")
        for side, vision, llm, past, dt in (("torch f32", self.vision_f, self.llm_f, self.past_f, torch.float32),
                                            ("torch bf16", self.vision_b, self.llm_b, self.past_b, torch.bfloat16)):
            if side == "torch bf16" and rep >= bf16_reps:
                continue
            if "clip" in self.only:
                px = self.pixels.to(dt)
                record(rep, "clip", side, timed(lambda: vision(px)), what["clip"])
            if "prefill" in self.only and (dt == torch.float32 or self.bf16_prefill):
                x = self.x.to(dt)
                record(rep, "prefill", side, timed(lambda: llama_prefill(llm, x)), what["prefill"])
            for m, beams in (("pdec1", 1), ("pdec5", 5)):
                if m in self.only:
                    record(rep, m, side, llama_steps(llm, past, beams, self.steps, self.vocab), what[m])


# ------------------------------------------------------------------ report

def fmt_time(seconds, unit):
    if seconds is None:
        return "-"
    return "%.3f s" % seconds if unit == "s" else "%.1f ms" % (seconds * 1e3)


def fmt_range(values, unit):
    lo, hi = min(values), max(values)
    return "%.3f-%.3f s" % (lo, hi) if unit == "s" else "%.1f-%.1f ms" % (lo * 1e3, hi * 1e3)


def fmt_ratio(torch_s, ours_s):
    return "-" if torch_s is None or ours_s is None else "%.2fx" % (torch_s / ours_s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="ours and torch (default: all CPUs)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions; medians reported")
    ap.add_argument("--vit-depth", type=int, default=4, help="ViT-g blocks (LION: 39)")
    ap.add_argument("--swin-depths", default="2,2,2,2", help="RAM Swin-L blocks per stage (RAM: 2,2,18,2)")
    ap.add_argument("--t5-layers", type=int, default=2, help="T5 encoder and decoder layers each (XL: 24)")
    ap.add_argument("--tokens", type=int, default=40, help="text tokens after the 289 visual ones (329 in all)")
    ap.add_argument("--steps", type=int, default=8, help="timed decoder steps per timing")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="the CMake build directory")
    ap.add_argument("--clip-layers", type=int, default=4, help="Pink's CLIP layers that run (ViT-L: 23 of 24)")
    ap.add_argument("--llama-layers", type=int, default=2, help="Pink's LLaMA layers (7B: 32)")
    ap.add_argument("--prompt", type=int, default=300,
                    help="Pink's prompt positions, %d image rows among them" % PINK_PATCHES)
    ap.add_argument("--only", default="lion",
                    help="measures, of %s, or the groups lion, pink, all" % ",".join(MEASURES))
    ap.add_argument("--bf16-reps", type=int, default=None,
                    help="repetitions that time torch bf16 (default: --reps where the CPU has native bf16, else 1)")
    ap.add_argument("--tiny", action="store_true", help="tiny widths, for a quick self-test (not a LION figure)")
    a = ap.parse_args()
    only = set()
    for name in a.only.split(","):
        only |= set(GROUPS.get(name, (name,)))
    if not only <= set(MEASURES) or a.reps < 1 or a.threads < 1 or (a.bf16_reps is not None and a.bf16_reps < 1):
        ap.error("--only takes %s or lion, pink, all; --reps, --bf16-reps and --threads >= 1" % ",".join(MEASURES))
    if a.prompt < PINK_IMAGE_AT + PINK_PATCHES + 1:
        ap.error("--prompt must hold the %d image rows after position %d and one text position after them"
                 % (PINK_PATCHES, PINK_IMAGE_AT))
    lion, pink = only & set(LION_MEASURES), only & set(PINK_MEASURES)
    cpu_model, flags = cpu_info()
    native = sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16"))
    # Without native bf16, torch 1.13 computes bf16 products in a generic fallback ~50-100x
    # slower than its f32 (1.4 GFLOP/s at the ViT's MLP shape on the AMD EPYC, 2 threads):
    # one ViT-g forward of 4 blocks took a minute. Repeating those changes no conclusion and
    # would triple the run, so they are timed in the first repetition only, unless asked.
    bf16_reps = a.bf16_reps or (a.reps if native else 1)
    w = TINY if a.tiny else XL
    n = a.threads
    torch.set_num_threads(n)
    bench_dir = os.path.join(a.build, "tools", "bench")
    bench_vit, bench_swin, bench_t5, bench_pink = (os.path.join(bench_dir, b) for b in (
        "bench_vit", "bench_swin", "bench_t5", "bench_pink"))
    for b in ([bench_vit] if "vit" in only else []) + ([bench_swin] if "swin" in only else []) + \
            ([bench_t5] if lion - {"vit", "swin"} else []) + \
            ([bench_pink] if pink else []):
        if not os.access(b, os.X_OK):
            sys.exit("compare_torch: %s not built (cmake --build %s)" % (b, a.build))
    env = dict(os.environ)  # with the OMP_WAIT_POLICY torch got
    enc_len = VISUAL_TOKENS + a.tokens
    t_start = time.perf_counter()

    vit_argv = [bench_vit, "--threads", str(n), "--depth", str(a.vit_depth), "--iters", "1",
                "--dim", str(w["vit_dim"]), "--heads", str(w["vit_heads"]), "--mlp", str(w["vit_mlp"])]
    swin_depths = [int(d) for d in a.swin_depths.split(",")]
    swin_argv = [bench_swin, "--threads", str(n), "--depths", a.swin_depths, "--iters", "1",
                 "--image", str(w["swin_image"]), "--embed-dim", str(w["swin_embed"])]
    # --reps 1: the repetitions are ours to interleave; bf16 also times the bf16-storage step
    # and prints its logits' difference to f32; a small streaming buffer (its floor unused here)
    t5_argv = [bench_t5, "--threads", str(n), "--layers", str(a.t5_layers), "--steps", str(a.steps),
               "--tokens", str(a.tokens), "--reps", "1", "--beams", "1,5", "--precision", "bf16",
               "--encoder-iters", "1", "--floor-mb", "256", "--d-model", str(w["d_model"]), "--d-ff",
               str(w["d_ff"]), "--heads", str(w["t5_heads"]), "--vocab", str(w["vocab"])]

    # ---- torch models, f32 and their bf16 twins, random weights
    torch.manual_seed(0)
    vit_f = vit_b = swin_f = swin_b = t5_f = t5_b = None
    if "vit" in only:
        log("building lion_ref EvaViT (%d blocks) in f32 and bf16" % a.vit_depth)
        vit_f = EvaViT(dict(image_size=224, patch_size=14, dim=w["vit_dim"], depth=a.vit_depth,
                            heads=w["vit_heads"], mlp_hidden=w["vit_mlp"])).init_weights().eval()
        vit_b = bf16_twin(vit_f)
        pixels = torch.randn(1, 3, 224, 224)
    if "swin" in only:
        log("building lion_ref SwinTransformer (depths %s) in f32 and bf16" % a.swin_depths)
        h0 = max(w["swin_embed"] // 32, 1)  # as bench_swin: RAM's 6, 12, 24, 48 heads at embed 192
        swin_f = SwinTransformer(w["swin_image"], 4, w["swin_embed"], swin_depths, [h0, 2 * h0, 4 * h0, 8 * h0],
                                 12).eval()
        swin_b = bf16_twin(swin_f)
        swin_px = torch.randn(1, 3, w["swin_image"], w["swin_image"])
    if only & {"enc", "dec1", "dec5"}:
        log("building lion_ref T5 (%d + %d layers) in f32 and bf16" % (a.t5_layers, a.t5_layers))
        t5_f = T5ForConditionalGeneration(dict(
            vocab_size=w["vocab"], d_model=w["d_model"], d_ff=w["d_ff"], d_kv=D_KV, heads=w["t5_heads"],
            encoder_layers=a.t5_layers, decoder_layers=a.t5_layers,
            adapters={"num": 2, "bottleneck": 64})).init_weights().eval()
        t5_b = bf16_twin(t5_f)
        x = torch.rand(1, enc_len, w["d_model"]) - 0.5  # the encoder's input embeddings

    # ---- fidelity, torch side (also every torch model's warm-up pass)
    fid = {}
    with torch.inference_mode():
        if vit_f is not None:
            log("torch: ViT warm-up and bf16 fidelity")
            fid["vit"] = relerr(vit_b(pixels.bfloat16())[-1], vit_f(pixels)[-1])
        if swin_f is not None:
            log("torch: Swin warm-up and bf16 fidelity")
            fid["swin"] = relerr(swin_b(swin_px.bfloat16()), swin_f(swin_px))
        if t5_f is not None:
            log("torch: T5 warm-up and bf16 fidelity")
            enc_f = t5_f.encode(x)
            fid["enc"] = relerr(t5_b.encode(x.bfloat16()), enc_f)
            # the step's fidelity alone: both decoders see the f32 encoder output
            logits_f, cross_f = first_step(t5_f, enc_f)
            logits_b, cross_b = first_step(t5_b, enc_f.bfloat16())
            fid["dec1"] = relerr(logits_b, logits_f)
        probe = (257, w["vit_dim"], w["vit_mlp"]) if lion else (257, w["clip_dim"], w["clip_mlp"])
        log("torch: GEMM probe %dx%dx%d, f32 and bf16" % probe)
        gemm = {dt: gemm_probe(*probe, dt) for dt in (torch.float32, torch.bfloat16)}
    # Pink's weights go to a file bench_pink maps (2.9 GB at the defaults; removed at the end)
    tmp = tempfile.TemporaryDirectory(prefix="compare_torch_")
    pink_side = PinkSide(a, w, only, native, tmp.name, bench_pink) if pink else None

    # ---- the interleaved repetitions: t[measure][side] = list of seconds
    sides = ("ours f32", "ours bf16", "torch f32", "torch bf16")
    t = {m: {s: [] for s in sides} for m in MEASURES}
    ours_diff, cpu_lines, peaks = {}, {}, {}

    def record(rep, m, side, seconds, what):
        """One timing, with its progress line."""
        t[m][side].append(seconds)
        log("[rep %d/%d %5.0f s] %-11s %-38s %s" % (rep + 1, a.reps, time.perf_counter() - t_start, side, what,
                                                     fmt_time(seconds, "ms" if seconds < 1 else "s")))

    for rep in range(a.reps):
        with torch.inference_mode():
            if "vit" in only:
                secs, cpu_lines["bench_vit"] = parse_vit(run_bench(vit_argv, env, peaks))
                record(rep, "vit", "ours f32", secs, "ViT forward (bench_vit)")
                secs, _ = parse_vit(run_bench(vit_argv + ["--precision", "bf16"], env, peaks))
                record(rep, "vit", "ours bf16", secs, "ViT forward (bench_vit)")
                record(rep, "vit", "torch f32", timed(lambda: vit_f(pixels)), "ViT forward")
                if rep < bf16_reps:
                    px = pixels.bfloat16()
                    record(rep, "vit", "torch bf16", timed(lambda: vit_b(px)), "ViT forward")
            if "swin" in only:
                for prec in ("f32", "bf16"):
                    secs, cpu_lines["bench_swin"] = parse_swin(run_bench(swin_argv + ["--precision", prec], env, peaks))
                    record(rep, "swin", "ours " + prec, secs, "Swin forward (bench_swin)")
                record(rep, "swin", "torch f32", timed(lambda: swin_f(swin_px)), "Swin forward")
                if rep < bf16_reps:
                    spx = swin_px.bfloat16()
                    record(rep, "swin", "torch bf16", timed(lambda: swin_b(spx)), "Swin forward")
            if pink_side is not None:
                pink_side.rep(rep, bf16_reps, record, lambda argv: run_bench(argv, env, peaks))
            if not only & {"enc", "dec1", "dec5"}:
                continue
            enc_s, steps, cpu_lines["bench_t5"] = parse_t5(run_bench(t5_argv, env, peaks))
            record(rep, "enc", "ours f32", enc_s["f32"], "T5 encoder (bench_t5)")
            record(rep, "enc", "ours bf16", enc_s["bf16"], "T5 encoder (bench_t5)")
            # ours f32 is what the f32 service runs: sgemv for 1 row, matvec_f32 for 2..16 rows
            for m, rows, f32_mode in (("dec1", 1, "f32 openblas"), ("dec5", 5, "f32 matvec")):
                ms, _ = step_figure(steps, rows, f32_mode)
                ms16, ours_diff[m] = step_figure(steps, rows, "bf16")
                record(rep, m, "ours f32", ms / 1e3, "decode step, %d row(s) (bench_t5)" % rows)
                record(rep, m, "ours bf16", ms16 / 1e3, "decode step, %d row(s) (bench_t5)" % rows)
            for side, model, dt, cross in (("torch f32", t5_f, torch.float32, cross_f),
                                           ("torch bf16", t5_b, torch.bfloat16, cross_b)):
                if side == "torch bf16" and rep >= bf16_reps:
                    continue
                if "enc" in only:
                    xx = x.to(dt)
                    record(rep, "enc", side, timed(lambda: model.encode(xx)), "T5 encoder")
                enc = enc_f.to(dt)
                for m, beams in (("dec1", 1), ("dec5", 5)):
                    if m in only:
                        record(rep, m, side, decode_steps(model, enc, cross, beams, a.steps, w["vocab"]),
                               "decode step, %d row(s)" % beams)

    # ---- report
    med = {m: {s: (statistics.median(v) if v else None) for s, v in t[m].items()} for m in MEASURES}
    families = " and ".join(f for f, on in (("LION-FlanT5-XL", lion), ("Pink (CLIP ViT-L/14, LLaMA-2-7B)", pink)) if on)
    print("compare_torch: %s, %d threads each, %d interleaved repetitions (medians; torch bf16: %d), "
          "random weights%s" % ("TINY widths (not LION or Pink figures)" if a.tiny else families + " widths", n,
                                a.reps, min(bf16_reps, a.reps), "" if a.tiny else ", truncated depth"))
    print("  CPU             %s (%d logical CPUs); AVX2 %s, AVX-512F %s, native bf16 (avx512_bf16/amx_bf16) %s"
          % (cpu_model, os.cpu_count(), "yes" if "avx2" in flags else "no", "yes" if "avx512f" in flags else "no",
             ", ".join(native) if native else "no"))
    if pink_side is not None:
        cpu_lines["bench_pink"] = pink_side.cpu
    for name, line in sorted(cpu_lines.items()):
        print("  ours (%s)%s %s" % (name, " " * (9 - len(name)), line))
    print("  torch           %s; CPU capability %s; oneDNN (MKLDNN) %s, available %s"
          % (torch.__version__, torch_cpu_capability(), onednn_version(), torch.backends.mkldnn.is_available()))
    print("  torch GEMM      %dx%dx%d: f32 %.1f GFLOP/s, bf16 %.1f GFLOP/s (%s)"
          % (probe + (gemm[torch.float32], gemm[torch.bfloat16],
                      "native bf16 available to oneDNN" if native else
                      "no native bf16 on this CPU: torch's bf16 is emulated")))
    print("  both            OMP_WAIT_POLICY=%s" % env["OMP_WAIT_POLICY"])
    print()
    titles = {"vit": "EVA ViT-g forward, 1 image, %d blocks" % a.vit_depth,
              "swin": "RAM Swin-L forward, 1 image, depths %s" % a.swin_depths,
              "enc": "FlanT5-XL encoder, %d layers, %d tokens" % (a.t5_layers, enc_len),
              "dec1": "decoder step, greedy, %d+%d layers" % (a.t5_layers, a.t5_layers),
              "dec5": "decoder step, 5 beams, %d+%d layers" % (a.t5_layers, a.t5_layers),
              "clip": "Pink CLIP ViT-L forward, 1 image, %d layers + projector" % a.clip_layers,
              "prefill": "Pink LLaMA-7B prefill, %d layers, %d positions" % (a.llama_layers, a.prompt),
              "pdec1": "Pink LLaMA-7B decode step, greedy, %d layers" % a.llama_layers,
              "pdec5": "Pink LLaMA-7B decode step, 5 beams, %d layers" % a.llama_layers}
    in_seconds = ("vit", "swin", "enc", "clip", "prefill")
    print("| measure | ours f32 | ours bf16 | torch f32 | torch bf16 | ours f32/torch f32 | ours best/torch bf16 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m in MEASURES:
        if m not in only:
            continue
        c, unit = med[m], "s" if m in in_seconds else "ms"
        ours_best = min(v for v in (c["ours f32"], c["ours bf16"]) if v is not None)
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            titles[m], fmt_time(c["ours f32"], unit), fmt_time(c["ours bf16"], unit),
            fmt_time(c["torch f32"], unit), fmt_time(c["torch bf16"], unit),
            fmt_ratio(c["torch f32"], c["ours f32"]), fmt_ratio(c["torch bf16"], ours_best)))
    print()
    print("ratios: torch time / our time, > 1 = ours faster; 'ours best' is the faster of our two precisions")
    if pink_side is not None:
        notes = ["torch's prefill puts the last position only through lm_head, as ours"]
        if not pink_side.bf16_prefill:
            notes.append("torch bf16 prefill not timed without native bf16 (emulated, minutes)")
        for prec in ("f32", "bf16"):
            for rows, fr in sorted(pink_side.floors[prec].items()):
                floor = statistics.median(f for f, _ in fr)
                notes.append("ours %s step at %d row(s): %.2fx its %s streaming floor (%.1f ms)"
                             % (prec, rows, statistics.median(r for _, r in fr), prec, floor))
        print("Pink: " + "; ".join(notes))
    print("spread (min-max of the repetitions):")
    for m in MEASURES:
        unit = "s" if m in in_seconds else "ms"
        cells = ["%s %s" % (s, fmt_range(v, unit)) for s, v in t[m].items() if v]
        if m in only:
            print("  %-8s %s" % (m, ", ".join(cells)))
    fids = []
    if "dec1" in ours_diff:
        fids.append("ours bf16 decode step logits vs ours f32: %.1e (1 row), %.1e (5 rows)"
                    % (ours_diff["dec1"], ours_diff["dec5"]))
    names = {"vit": "ViT output", "swin": "Swin output", "enc": "encoder output", "dec1": "decode step logits (same encoder output)"}
    if fid:
        fids.append("torch bf16 vs torch f32: " + ", ".join("%s %.1e" % (names[k], v) for k, v in fid.items()))
    if fids:
        print("fidelity (max |bf16 - f32| / max |f32|): " + "; ".join(fids))
    if pink_side is not None:
        d = pink_side.ours_diff
        ours = ", ".join("%s %s" % (label, "%.1e" % d[k] if k in d else "missing") for label, k in (
            ("CLIP tokens", "clip tokens"), ("prefill logits", "prefill logits"),
            ("step logits 1 row", "step logits 1 row(s)"), ("5 rows", "step logits 5 row(s)")))
        d = pink_side.ours_bf16_diff
        ours16 = ", ".join("%s %s" % (label, "%.1e" % d[k] if k in d else "missing") for label, k in (
            ("CLIP tokens", "clip tokens"), ("prefill logits", "prefill logits")))
        print("fidelity, Pink (max |a - b| / max |b|): ours f32 vs torch f32 on the same weights and inputs: %s; "
              "torch bf16 vs torch f32: CLIP tokens %.1e, step logits 1 row %.1e (its prompt cache the f32 one "
              "rounded to bf16); ours bf16 vs torch f32: %s" % (ours, pink_side.fid["clip"], pink_side.fid["pdec1"],
                                                                ours16))
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB -> GB
    print("peak RSS: this process (torch, both precisions' models) %.2f GB%s; wall %.0f s"
          % (rss_self, "".join(", %s %.2f GB" % (k, v / 1e9) for k, v in sorted(peaks.items())),
             time.perf_counter() - t_start))
    tmp.cleanup()


if __name__ == "__main__":
    main()
