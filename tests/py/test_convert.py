#!/usr/bin/env python3
"""lion-convert on tiny upstream-format checkpoints: convert, load, compare, negatives."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tools", "convert"))
torch.set_num_threads(1)

import lion_convert  # noqa: E402
import make_fake_upstream  # noqa: E402
from lion_ref.lion import load_model_dir  # noqa: E402
from lion_ref.safetensors_io import read_header  # noqa: E402


class ConvertTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lionconv_")
        cls.fake = os.path.join(cls.tmp, "fake")
        cls.ref, cls.extra = make_fake_upstream.make(cls.fake, seed=0)
        cls.ref.eval()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def args(self, out, t5="t5", lion=None, ram=None, dtype="f32"):
        f = self.fake
        return ["--eva", f + "/eva_vit_g.pth", "--bert", f + "/bert", "--t5", f + "/" + t5,
                "--ram", ram or f + "/ram_swin_large_14m.pth", "--ram-tags", f + "/ram_tag_list.txt",
                "--ram-thresholds", f + "/ram_tag_list_threshold.txt",
                "--lion", lion or f + "/LION-FlanT5-XL.pth", "--out", out, "--dtype", dtype] + self.extra

    def run_convert(self, argv):
        err = io.StringIO()
        with redirect_stderr(err):
            rc = lion_convert.main(argv)
        return rc, err.getvalue()

    def forward(self, m):
        torch.manual_seed(5)
        px = torch.randn(1, 3, 28, 28)
        with torch.no_grad():
            outs = m.visual_encoder(px)
            vis = m.encode_img(px, ["what is in the image?"])
            m.t5_model.set_router_idx(1)
            x, mask, _ = m.prepare_inputs(px, ["what is in the image?"], ["dog, man"])
            lg = m.t5_model(inputs_embeds=x, attention_mask=mask,
                            decoder_input_ids=torch.tensor([[0, 5, 9]]))["logits"]
            tags = m.ram.probs(torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
        return outs[-1], vis, lg, tags

    def check_same(self, out_dir, tol):
        m = load_model_dir(out_dir)
        a, b = self.forward(self.ref), self.forward(m)
        for x, y in zip(a, b):
            self.assertEqual(x.shape, y.shape)
            self.assertLess((x - y).abs().max().item(), tol)
        return m

    def test_sharded_safetensors_f32(self):
        out = os.path.join(self.tmp, "out_st")
        rc, err = self.run_convert(self.args(out))
        self.assertEqual(rc, 0, err)
        self.assertIn("writing", err)
        for fn in ("model.json", "vision.safetensors", "tagger.safetensors", "aggregator.safetensors",
                   "llm.safetensors", "spiece.model", "vocab.txt"):
            self.assertTrue(os.path.isfile(os.path.join(out, fn)), fn)
        cfg = json.load(open(os.path.join(out, "model.json")))
        self.assertEqual(cfg["vision"]["depth"], 4)          # eva file had 5 blocks
        self.assertEqual(cfg["vision"]["image_size"], 28)
        self.assertEqual(cfg["visual_input"], "ALL")
        self.assertEqual(cfg["tagger"]["window"], 4)
        self.assertEqual(cfg["tagger"]["depths"], [2, 2])
        self.assertEqual(cfg["llm"]["adapters"], {"num": 2, "bottleneck": 8})
        self.assertEqual(cfg["aggregator"]["fusion"]["cross_layers"], [2, 1])
        h, meta, _ = read_header(os.path.join(out, "tagger.safetensors"))
        self.assertFalse(any(k.startswith(("tag_encoder", "text_decoder", "vision_multi")) or
                             "attn_mask" in k or "relative_position_index" in k or k == "class_threshold"
                             for k in h))
        self.assertIn("tagging_head.encoder.layer.1.crossattention.self.key.weight", h)
        self.assertEqual(h["visual_encoder.patch_embed.proj.weight"]["dtype"], "F32")
        hv, _, _ = read_header(os.path.join(out, "vision.safetensors"))
        self.assertNotIn("visual_encoder.blocks.4.norm1.weight", hv)
        ha, _, _ = read_header(os.path.join(out, "aggregator.safetensors"))
        self.assertFalse(any(k.startswith("Qformer.cls") or k.endswith("position_ids") for k in ha))
        self.check_same(out, 1e-5)

    def test_pytorch_bin_f16(self):
        out = os.path.join(self.tmp, "out_bin")
        rc, err = self.run_convert(self.args(out, t5="t5_bin", dtype="f16"))
        self.assertEqual(rc, 0, err)
        h, _, _ = read_header(os.path.join(out, "llm.safetensors"))
        self.assertEqual(h["t5_model.shared.weight"]["dtype"], "F16")
        self.assertNotIn("t5_model.encoder.embed_tokens.weight", h)
        m = self.check_same(out, 0.15)
        self.assertEqual(m.t5_tok.encode("a dog")[-1], 1)

    def test_shell_wrapper_help(self):
        r = subprocess.run([os.path.join(ROOT, "tools", "convert", "lion-convert"), "--help"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--ram-thresholds", r.stdout)

    def _mutated_lion(self, fn):
        ck = torch.load(os.path.join(self.fake, "LION-FlanT5-XL.pth"))
        fn(ck["model"])
        p = os.path.join(self.tmp, "lion_mut.pth")
        torch.save(ck, p)
        return p

    def test_missing_key(self):
        key = "Qformer.bert.encoder.layer.1.output_query.dense.weight"
        p = self._mutated_lion(lambda sd: sd.pop(key))
        rc, err = self.run_convert(self.args(os.path.join(self.tmp, "neg1"), lion=p))
        self.assertEqual(rc, 2)
        self.assertIn("missing key '%s'" % key, err)
        self.assertIn("lion_mut.pth", err)

    def test_wrong_shape(self):
        key = "t5_model.decoder.block.1.layer.2.adapter.adapters.1.up_proj.weight"

        def bad(sd):
            sd[key] = torch.zeros(3, 3)
        p = self._mutated_lion(bad)
        rc, err = self.run_convert(self.args(os.path.join(self.tmp, "neg2"), lion=p))
        self.assertEqual(rc, 2)
        self.assertIn("shape mismatch for '%s'" % key, err)
        self.assertIn("[3, 3]", err)
        self.assertIn("lion_mut.pth", err)

    def test_missing_ram_key(self):
        ck = torch.load(os.path.join(self.fake, "ram_swin_large_14m.pth"))
        ck["model"].pop("image_proj.weight")
        p = os.path.join(self.tmp, "ram_mut.pth")
        torch.save(ck, p)
        rc, err = self.run_convert(self.args(os.path.join(self.tmp, "neg3"), ram=p))
        self.assertEqual(rc, 2)
        self.assertIn("missing key 'image_proj.weight' in %s" % p, err)

    def test_progress_tty_bar(self):
        s = io.StringIO()
        s.isatty = lambda: True
        bar = lion_convert.Progress(100, "writing", unit="MB", scale=1, stream=s)
        for _ in range(10):
            bar.update(10)
        v = s.getvalue()
        self.assertIn("\r", v)
        self.assertIn("100%", v)
        self.assertIn("ETA", v)
        self.assertIn("/s", v)


if __name__ == "__main__":
    unittest.main(verbosity=1)
