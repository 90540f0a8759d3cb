#!/usr/bin/env python3
"""tools/bench/compare_torch.py at tiny widths: it runs our benches and lion_ref and pink_ref in
torch in one go (--only all), and its table parses, with every time and every speed ratio a
positive number.

Only the plumbing is tested (options passed, bench output parsed, the table and fidelity
lines printed; for Pink, that both sides ran on the same weights: ours within 1e-4 of torch
f32): tiny widths say nothing about speed. Skipped when the benches are not built."""
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("LION_BUILD_DIR", os.path.join(ROOT, "build"))
SCRIPT = os.path.join(ROOT, "tools", "bench", "compare_torch.py")
MEASURES = ("EVA ViT-g forward", "RAM Swin-L forward", "FlanT5-XL encoder", "decoder step, greedy", "decoder step, 5 beams")
PINK_MEASURES = ("Pink CLIP ViT-L forward", "Pink LLaMA-7B prefill", "Pink LLaMA-7B decode step, greedy",
                 "Pink LLaMA-7B decode step, 5 beams")


def time_value(cell):
    """Seconds of a "0.123 s" or "4.5 ms" cell."""
    m = re.fullmatch(r"([0-9.]+) (s|ms)", cell)
    if not m:
        raise AssertionError("not a time: %r" % cell)
    return float(m.group(1)) * (1e-3 if m.group(2) == "ms" else 1)


@unittest.skipUnless(all(os.access(os.path.join(BUILD, "tools", "bench", b), os.X_OK)
                         for b in ("bench_vit", "bench_swin", "bench_t5", "bench_pink")),
                     "bench_vit / bench_swin / bench_t5 / bench_pink not built in " + BUILD)
class CompareTorchTest(unittest.TestCase):
    def test_tiny_run(self):
        r = subprocess.run([sys.executable, SCRIPT, "--tiny", "--build", BUILD, "--threads", "2", "--reps", "1",
                            "--vit-depth", "1", "--swin-depths", "1,1,1,1", "--t5-layers", "1", "--tokens", "1", "--steps", "2",
                            "--only", "all", "--clip-layers", "1", "--llama-layers", "1", "--prompt", "270"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout
        for line in ("CPU ", "ours (bench_t5)", "ours (bench_vit)", "ours (bench_swin)", "ours (bench_pink)", "torch GEMM"):
            self.assertIn(line, out)
        self.assertIn("[rep 1/1", r.stderr)  # the progress lines
        rows = {}
        for line in out.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("| ") and len(cells) == 7 and cells[0] != "measure":
                rows[cells[0]] = cells[1:]
        for name in MEASURES + PINK_MEASURES:
            row = [cells for title, cells in rows.items() if title.startswith(name)]
            self.assertEqual(len(row), 1, "no table row for %s:\n%s" % (name, out))
            ours_f32, ours_bf16, torch_f32, torch_bf16, r_f32, r_bf16 = row[0]
            # torch bf16 prefill is timed only where the CPU has native bf16 (else minutes)
            bf16_timed = not name.startswith("Pink LLaMA-7B prefill") or torch_bf16 != "-"
            for cell in (ours_f32, torch_f32) + ((torch_bf16,) if bf16_timed else ()):
                self.assertGreater(time_value(cell), 0, out)
            self.assertGreater(time_value(ours_bf16), 0, out)  # our bf16 path
            for ratio in (r_f32,) + ((r_bf16,) if bf16_timed else ()):
                m = re.fullmatch(r"([0-9.]+)x", ratio)
                self.assertTrue(m and float(m.group(1)) > 0, "ratio %r in:\n%s" % (ratio, out))
        fid = re.search(r"^fidelity \(.*$", out, re.M)
        self.assertTrue(fid, out)
        values = [float(v) for v in re.findall(r"\d\.\de[-+]\d\d", fid.group(0))]
        self.assertEqual(len(values), 6, fid.group(0))  # ours 1 and 5 rows; torch ViT, Swin, encoder, step
        for v in values:
            self.assertTrue(0 < v < 0.2, fid.group(0))  # bf16 rounding, not NaN or garbage
        # Pink: ours f32 vs torch f32 on the weights torch wrote (CLIP tokens, prefill, steps of 1
        # and 5 rows), then torch bf16 vs f32 (CLIP tokens, a step)
        fid = re.search(r"^fidelity, Pink.*$", out, re.M)
        self.assertTrue(fid, out)
        values = [float(v) for v in re.findall(r"\d\.\de[-+]\d\d", fid.group(0))]
        self.assertEqual(len(values), 8, fid.group(0))
        for v in values[:4]:
            self.assertTrue(0 <= v < 1e-4, fid.group(0))  # f32 against f32: the same model
        for v in values[4:]:
            self.assertTrue(0 < v < 0.2, fid.group(0))
        self.assertRegex(out, r"ours f32 step at 1 row\(s\): [0-9.]+x its f32 streaming floor")
        self.assertRegex(out, r"ours bf16 step at 1 row\(s\): [0-9.]+x its bf16 streaming floor")


if __name__ == "__main__":
    unittest.main(verbosity=1)
