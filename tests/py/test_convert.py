#!/usr/bin/env python3
"""lion-convert on small upstream-format checkpoints: convert, load, compare, negatives.

Three shapes of fake upstream files (tools/convert/make_fake_upstream.py): ``tiny`` (the
test model; its ViT width 32 is not a multiple of EVA's head dim 88, so it needs
--vit-heads), ``small-a`` and ``small-b`` (other ViT widths / depths / heads, T5 widths and
layer counts, RAM input sizes, Swin windows and depths; no flags at all).  Each converted
directory must load in the reference and give the outputs of the model the files encode.
"""
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

import ckpt_reader  # noqa: E402
import lion_convert  # noqa: E402
import make_fake_upstream  # noqa: E402
from lion_ref.lion import load_model_dir  # noqa: E402
from lion_ref.safetensors_io import StreamWriter, read_header, save_file  # noqa: E402


def read_bytes(p):
    with open(p, "rb") as f:
        return f.read()


def load_json(p):
    with open(p) as f:
        return json.load(f)


class ConvertTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lionconv_")
        cls.fake = os.path.join(cls.tmp, "fake")
        cls.ref, cls.extra = make_fake_upstream.make(cls.fake, seed=0)
        cls.ref.eval()
        cls.sized = {}
        for i, size in enumerate(("small-a", "small-b")):
            d = os.path.join(cls.tmp, size)
            m, extra = make_fake_upstream.make(d, seed=10 + i, size=size)
            cls.sized[size] = (d, m.eval(), extra)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def args(self, out, t5="t5", lion=None, ram=None, eva=None, dtype="f32", fake=None, extra=None):
        f = fake or self.fake
        return ["--eva", eva or f + "/eva_vit_g.pth", "--bert", f + "/bert", "--t5", f + "/" + t5,
                "--ram", ram or f + "/ram_swin_large_14m.pth", "--ram-tags", f + "/ram_tag_list.txt",
                "--ram-thresholds", f + "/ram_tag_list_threshold.txt",
                "--lion", lion or f + "/LION-FlanT5-XL.pth", "--out", out, "--dtype", dtype] + (
                    self.extra if extra is None else extra)

    def run_convert(self, argv):
        err = io.StringIO()
        with redirect_stderr(err):
            rc = lion_convert.main(argv)
        return rc, err.getvalue()

    def expect_error(self, argv, *parts):
        """rc 2 and exactly one error line, holding every part; no traceback."""
        rc, err = self.run_convert(argv)
        self.assertEqual(rc, 2, err)
        errs = [ln for ln in err.splitlines() if ln.startswith("lion-convert: error:")]
        self.assertEqual(len(errs), 1, err)
        self.assertNotIn("Traceback", err)
        for p in parts:
            self.assertIn(p, errs[0])
        return errs[0]

    def forward(self, m):
        torch.manual_seed(5)
        v, t = m.cfg["vision"], m.cfg["tagger"]
        px = torch.randn(1, 3, v["image_size"], v["image_size"])
        with torch.no_grad():
            outs = m.visual_encoder(px)
            vis = m.encode_img(px, ["what is in the image?"])
            m.t5_model.set_router_idx(1)
            x, mask, _ = m.prepare_inputs(px, ["what is in the image?"], ["dog, man"])
            lg = m.t5_model(inputs_embeds=x, attention_mask=mask,
                            decoder_input_ids=torch.tensor([[0, 5, 9]]))["logits"]
            tags = m.ram.probs(torch.randn(1, 3, t["image_size"], t["image_size"],
                                           generator=torch.Generator().manual_seed(1)))
        return outs[-1], vis, lg, tags

    def check_same(self, out_dir, tol, ref=None):
        m = load_model_dir(out_dir)
        a, b = self.forward(ref or self.ref), self.forward(m)
        for x, y in zip(a, b):
            self.assertEqual(x.shape, y.shape)
            self.assertLess((x - y).abs().max().item(), tol)
        return m

    # ------------------------------------------------------------------ conversions

    def test_sharded_safetensors_f32(self):
        out = os.path.join(self.tmp, "out_st")
        rc, err = self.run_convert(self.args(out))
        self.assertEqual(rc, 0, err)
        self.assertIn("writing", err)
        for fn in ("model.json", "vision.safetensors", "tagger.safetensors", "aggregator.safetensors",
                   "llm.safetensors", "spiece.model", "vocab.txt"):
            self.assertTrue(os.path.isfile(os.path.join(out, fn)), fn)
        self.assertEqual([f for f in os.listdir(out) if f.endswith(".part")], [])
        cfg = load_json(os.path.join(out, "model.json"))
        self.assertEqual(cfg["vision"]["depth"], 4)          # eva file had 5 blocks
        self.assertEqual(cfg["vision"]["image_size"], 28)
        self.assertEqual(cfg["visual_input"], "ALL")
        self.assertEqual(cfg["tagger"]["window"], 4)
        self.assertEqual(cfg["tagger"]["image_size"], 32)    # from the stored attn_mask buffers
        self.assertEqual(cfg["tagger"]["depths"], [2, 2])
        self.assertEqual(cfg["llm"]["adapters"], {"num": 2, "bottleneck": 8})
        self.assertEqual(cfg["aggregator"]["fusion"]["cross_layers"], [2, 1])
        h, meta, _ = read_header(os.path.join(out, "tagger.safetensors"))
        self.assertEqual(meta, {"format": "lion-model", "stage": "tagger", "dtype": "f32"})
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
        # the layout is the reference writer's: the same tensors through save_file, same bytes
        m = load_model_dir(out)
        st = m.stage_state_dicts()["vision"]
        p = os.path.join(self.tmp, "vision_ref.safetensors")
        save_file(st, p, {"format": "lion-model", "stage": "vision", "dtype": "f32"})
        self.assertEqual(read_bytes(p), read_bytes(os.path.join(out, "vision.safetensors")))

    def test_pytorch_bin_f16(self):
        out = os.path.join(self.tmp, "out_bin")
        rc, err = self.run_convert(self.args(out, t5="t5_bin", dtype="f16"))
        self.assertEqual(rc, 0, err)
        h, _, _ = read_header(os.path.join(out, "llm.safetensors"))
        self.assertEqual(h["t5_model.shared.weight"]["dtype"], "F16")
        self.assertNotIn("t5_model.encoder.embed_tokens.weight", h)
        m = self.check_same(out, 0.15)
        self.assertEqual(m.t5_tok.encode("a dog")[-1], 1)

    def test_other_sizes_need_no_flags(self):
        expect = {"small-a": {"depth": 5, "heads": 2, "dim": 176, "image": 42, "fl": [4, 3, 2],
                              "ram": 48, "window": 3, "freq": 1, "t5": (24, 3, 2)},
                  "small-b": {"depth": 8, "heads": 3, "dim": 264, "image": 32, "fl": [7, 5, 3],
                              "ram": 56, "window": 7, "freq": 2, "t5": (32, 2, 3)}}
        for size, (d, ref, extra) in self.sized.items():
            with self.subTest(size=size):
                self.assertEqual(extra, [])
                out = os.path.join(self.tmp, "out_" + size)
                rc, err = self.run_convert(self.args(out, fake=d, extra=[], dtype="f32"))
                self.assertEqual(rc, 0, err)
                cfg = load_json(os.path.join(out, "model.json"))
                e, v, f = expect[size], cfg["vision"], cfg["aggregator"]["fusion"]
                self.assertEqual((v["depth"], v["heads"], v["dim"], v["image_size"]),
                                 (e["depth"], e["heads"], e["dim"], e["image"]))
                self.assertEqual([f["hidden_layer"]] + f["cross_layers"], e["fl"])
                self.assertEqual((cfg["tagger"]["image_size"], cfg["tagger"]["window"]), (e["ram"], e["window"]))
                self.assertEqual(cfg["aggregator"]["qformer"]["cross_attention_freq"], e["freq"])
                l = cfg["llm"]
                self.assertEqual((l["d_model"], l["encoder_layers"], l["decoder_layers"]), e["t5"])
                for sec in ("vision", "tagger", "aggregator"):
                    self.assertEqual(cfg[sec], ref.cfg[sec], sec)
                self.check_same(out, 1e-5, ref)

    def test_fusion_layer_rule(self):
        fl = lion_convert.fusion_layers
        self.assertEqual(fl(39, 2), [38, 28, 18])            # LION-FlanT5: outputs[38], [28], [18]
        self.assertEqual(fl(4, 2), [3, 2, 1])
        self.assertEqual(fl(8, 2), [7, 5, 3])
        self.assertIsNone(fl(2, 2))

    def test_legacy_pth_format(self):
        ck = torch.load(os.path.join(self.fake, "LION-FlanT5-XL.pth"))
        p = os.path.join(self.tmp, "lion_legacy.pth")
        torch.save(ck, p, _use_new_zipfile_serialization=False)
        a, b = os.path.join(self.tmp, "leg_a"), os.path.join(self.tmp, "leg_b")
        self.assertEqual(self.run_convert(self.args(a))[0], 0)
        rc, err = self.run_convert(self.args(b, lion=p))
        self.assertEqual(rc, 0, err)
        for fn in ("aggregator.safetensors", "llm.safetensors"):
            self.assertEqual(read_bytes(os.path.join(a, fn)), read_bytes(os.path.join(b, fn)))

    def test_zip_checkpoints_are_not_loaded_whole(self):
        real = torch.load

        def refuse(*a, **k):
            raise AssertionError("torch.load called on %s" % (a[0] if a else k))
        torch.load = refuse
        try:
            rc, err = self.run_convert(self.args(os.path.join(self.tmp, "lazy"), t5="t5_bin"))
        finally:
            torch.load = real
        self.assertEqual(rc, 0, err)

    def test_stream_writer_matches_save_file(self):
        ts = {"b": torch.randn(3, 5), "a": torch.randn(7).half(), "c": torch.randn(2, 2).to(torch.bfloat16),
              "i": torch.arange(5)}
        p, q = os.path.join(self.tmp, "sf.st"), os.path.join(self.tmp, "sw.st")
        save_file(ts, p, {"k": "v"})
        with StreamWriter(q, [(k, t.dtype, t.shape) for k, t in ts.items()], {"k": "v"}) as w:
            for k in ("i", "c", "b", "a"):                   # any order
                w.write(k, ts[k])
        self.assertEqual(read_bytes(p), read_bytes(q))
        w = StreamWriter(q, [("x", torch.float32, (2,))])
        with self.assertRaises(ValueError):
            w.write("x", torch.zeros(3))
        with self.assertRaises(ValueError):
            w.close()                                       # x never written

    def test_shell_wrapper_help(self):
        r = subprocess.run([os.path.join(ROOT, "tools", "convert", "lion-convert"), "--help"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0)
        self.assertIn("--ram-thresholds", r.stdout)
        self.assertIn("head dim", r.stdout)                 # why --vit-heads exists

    # ------------------------------------------------------------------ flags checked

    def test_vit_heads_needed_when_width_says_nothing(self):
        self.expect_error(self.args(os.path.join(self.tmp, "nh"), extra=[]), "pass --vit-heads",
                          "eva_vit_g.pth", "'patch_embed.proj.weight'", "[32, 3, 14, 14]")

    def test_wrong_flags(self):
        out = os.path.join(self.tmp, "badflag")
        for extra, parts in (
                (["--vit-heads", "4", "--ram-image-size", "40"], ["--ram-image-size 40", "ram_swin_large_14m.pth",
                                               "visual_encoder.layers.0.blocks.1.attn_mask", "[4, 16, 16]", "32"]),
                (["--vit-heads", "4", "--ram-image-size", "64"], ["--ram-image-size 64", "attn_mask", "[4, 16, 16]"]),
                (["--vit-heads", "5"], ["--vit-heads 5", "32", "eva_vit_g.pth"]),
                (["--vit-heads", "4", "--fusion-layers", "3,2"], ["--fusion-layers 3,2", "2 fusion blocks"]),
                (["--vit-heads", "4", "--fusion-layers", "9,2,1"], ["--fusion-layers 9,2,1", "out of range"]),
                (["--vit-heads", "4", "--fusion-heads", "3"], ["--fusion-heads 3", "32"]),
                (["--vit-heads", "4", "--cross-attention-freq", "1"],
                 ["--cross-attention-freq 1", "LION-FlanT5-XL.pth"]),
                (["--vit-heads", "4", "--ram-head-heads", "5"], ["--ram-head-heads 5", "'fc.weight'", "[1, 24]"]),
                (["--vit-heads", "4", "--vit-depth", "9"], ["--vit-depth 9", "5 blocks"])):
            with self.subTest(extra=extra):
                self.expect_error(self.args(out, extra=extra), *parts)
        # a right flag is accepted
        rc, err = self.run_convert(self.args(out, extra=["--vit-heads", "4", "--ram-image-size", "32",
                                                         "--cross-attention-freq", "2"]))
        self.assertEqual(rc, 0, err)

    def test_cli_error_is_one_line_exit_2(self):
        f = self.fake
        r = subprocess.run([os.path.join(ROOT, "tools", "convert", "lion-convert")] + self.args(
            os.path.join(self.tmp, "cli"), extra=["--vit-heads", "4", "--ram-image-size", "40"]),
            capture_output=True, text=True, timeout=120, cwd=f)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertTrue(r.stderr.strip().splitlines()[-1].startswith("lion-convert: error: --ram-image-size 40"))

    def test_ram_geometry_from_clamped_window(self):
        """No attn_mask stored: a last stage whose table is smaller than the window tells the size."""
        class Src:
            path = "ram.pth"
            infos = {}
        tb = "visual_encoder.layers.%d.blocks.0.attn.relative_position_bias_table"
        for i, w in enumerate((4, 4, 2)):                    # 32 px, patch 4: grids 8, 4, 2
            Src.infos[tb % i] = ckpt_reader.TensorInfo("ram.pth", tb % i, torch.float32, ((2 * w - 1) ** 2, 2), 0)
        a = lion_convert.parse_args(["--eva", "x", "--bert", "x", "--t5", "x", "--ram", "ram.pth", "--ram-tags",
                                     "x", "--ram-thresholds", "x", "--lion", "x", "--out", "x"])
        self.assertEqual(lion_convert.ram_geometry(a, Src, 4, 3), (4, 32))
        a.ram_image_size = 64
        with self.assertRaises(lion_convert.ConvertError) as cm:
            lion_convert.ram_geometry(a, Src, 4, 3)
        self.assertIn("layers.2.blocks.0.attn.relative_position_bias_table", str(cm.exception))
        Src.infos[tb % 2] = ckpt_reader.TensorInfo("ram.pth", tb % 2, torch.float32, (49, 2), 0)
        a.ram_image_size = 0
        with self.assertRaises(lion_convert.ConvertError) as cm:
            lion_convert.ram_geometry(a, Src, 4, 3)
        self.assertIn("pass --ram-image-size", str(cm.exception))

    # ------------------------------------------------------------------ broken files

    def _mutated_lion(self, fn):
        ck = torch.load(os.path.join(self.fake, "LION-FlanT5-XL.pth"))
        fn(ck["model"])
        p = os.path.join(self.tmp, "lion_mut.pth")
        torch.save(ck, p)
        return p

    def test_missing_key(self):
        key = "Qformer.bert.encoder.layer.1.output_query.dense.weight"
        p = self._mutated_lion(lambda sd: sd.pop(key))
        self.expect_error(self.args(os.path.join(self.tmp, "neg1"), lion=p),
                          "%s: missing tensor '%s'" % (p, key))

    def test_wrong_shape(self):
        key = "t5_model.decoder.block.1.layer.2.adapter.adapters.1.up_proj.weight"

        def bad(sd):
            sd[key] = torch.zeros(3, 3)
        p = self._mutated_lion(bad)
        self.expect_error(self.args(os.path.join(self.tmp, "neg2"), lion=p),
                          "%s: tensor '%s': expected shape [16, 8], found [3, 3]" % (p, key))

    def test_misshaped_eva_tensor(self):
        sd = torch.load(os.path.join(self.fake, "eva_vit_g.pth"))
        sd["blocks.2.attn.qkv.weight"] = sd["blocks.2.attn.qkv.weight"][:-1].clone()
        p = os.path.join(self.tmp, "eva_mut.pth")
        torch.save(sd, p)
        self.expect_error(self.args(os.path.join(self.tmp, "neg4"), eva=p),
                          "%s: tensor 'blocks.2.attn.qkv.weight': expected shape [96, 32], found [95, 32]" % p)

    def test_missing_ram_key(self):
        ck = torch.load(os.path.join(self.fake, "ram_swin_large_14m.pth"))
        ck["model"].pop("image_proj.weight")
        p = os.path.join(self.tmp, "ram_mut.pth")
        torch.save(ck, p)
        self.expect_error(self.args(os.path.join(self.tmp, "neg3"), ram=p),
                          "%s: missing tensor 'image_proj.weight'" % p)

    def test_truncated_safetensors_shard(self):
        d = os.path.join(self.fake, "t5_trunc")
        shutil.copytree(os.path.join(self.fake, "t5"), d)
        p = os.path.join(d, "model-00002-of-00002.safetensors")
        h, _, start = read_header(p)
        last = max(h, key=lambda k: h[k]["data_offsets"][1])
        os.truncate(p, os.path.getsize(p) - 10)
        out = os.path.join(self.tmp, "neg5")
        self.expect_error(self.args(out, t5="t5_trunc"), p, "tensor '%s'" % last, "truncated")
        self.assertFalse(os.path.exists(os.path.join(out, "llm.safetensors")))
        shutil.rmtree(d)

    def test_truncated_pth(self):
        p = os.path.join(self.tmp, "eva_trunc.pth")
        with open(os.path.join(self.fake, "eva_vit_g.pth"), "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(data[:len(data) // 2])
        self.expect_error(self.args(os.path.join(self.tmp, "neg6"), eva=p), p, "truncated")

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
