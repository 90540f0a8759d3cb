#!/usr/bin/env python3
"""pink-convert on Pink's released layout at tiny sizes (tools/convert/make_fake_pink_upstream.py):
every output tensor equals the one upstream's loading would use (CLIP's weights, then Llama-2's,
then saved_parameters.pth over them), cast to the output dtype; model.json holds the dimensions,
adapters, tokenizer settings, added tokens and prompt settings of the inputs; and bad inputs
fail with one line naming the file and the tensor or field, exit status 2, nothing written.
"""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
sys.path.insert(0, os.path.join(ROOT, "tools", "convert"))
torch.set_num_threads(1)

import make_fake_pink_upstream  # noqa: E402
import pink_convert  # noqa: E402
from lion_ref.safetensors_io import load_file, read_header, save_file  # noqa: E402
from pink_ref.tokenizer import PINK_ADDED_TOKENS  # noqa: E402

CONVERT = os.path.join(ROOT, "tools", "convert", "pink_convert.py")


def load_json(p):
    with open(p) as f:
        return json.load(f)


def write_json(p, obj):
    with open(p, "w") as f:
        json.dump(obj, f)


def upstream_weights(fake):
    """What upstream's PinkModel holds: CLIP's vision tower renamed into Pink's namespace, the
    LLaMA shards, then saved_parameters.pth over both."""
    clip = load_file(os.path.join(fake, "clip", "model.safetensors"), dtype=None)
    w = {"vision_model." + k: v for k, v in clip.items() if k.startswith("vision_model.")}
    for fn in sorted(os.listdir(os.path.join(fake, "llama"))):
        p = os.path.join(fake, "llama", fn)
        if fn.endswith(".safetensors"):
            w.update(load_file(p, dtype=None))
        elif fn.endswith(".bin"):
            w.update(torch.load(p, map_location="cpu"))
    w.update(torch.load(os.path.join(fake, "pink", "saved_parameters.pth"), map_location="cpu"))
    return w


class PinkConvertTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pinkconv_")
        cls.fake = os.path.join(cls.tmp, "fake")
        make_fake_pink_upstream.make(cls.fake, seed=0)
        cls.want = upstream_weights(cls.fake)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def args(self, out, fake=None, dtype="f32"):
        fake = fake or self.fake
        return ["--pink", os.path.join(fake, "pink"), "--llama", os.path.join(fake, "llama"),
                "--clip", os.path.join(fake, "clip"), "--out", out, "--dtype", dtype]

    def run_convert(self, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = pink_convert.main(argv)
        return rc, err.getvalue()

    def expect_error(self, argv, *parts):
        rc, err = self.run_convert(argv)
        self.assertEqual(rc, 2, err)
        line = [ln for ln in err.splitlines() if ln.startswith("pink-convert: error:")]
        self.assertEqual(len(line), 1, err)
        for p in parts:
            self.assertIn(p, line[0])
        out = argv[argv.index("--out") + 1]
        left = [f for f in os.listdir(out)] if os.path.isdir(out) else []
        self.assertFalse([f for f in left if f.endswith(".safetensors") or f == "model.json"], left)
        return line[0]

    def copy_fake(self, name):
        d = os.path.join(self.tmp, name)
        shutil.copytree(self.fake, d)
        return d

    # ---------------------------------------------------------------- outputs

    def check_tensors(self, out, dtype):
        v = load_file(os.path.join(out, "vision.safetensors"), dtype=None)
        l = load_file(os.path.join(out, "llm.safetensors"), dtype=None)
        # the vision file: embeddings, pre_layrnorm, layers 0..1 (select -2 of 3 layers), their
        # adapters, mm_projector; nothing of layer 2, post_layernorm or the text tower
        self.assertIn("vision_model.vision_model.encoder.layers.1.adapter_mlp.tune_adapter_b.bias", v)
        self.assertIn("mm_projector.weight", v)
        self.assertFalse([k for k in v if ".layers.2." in k or "post_layernorm" in k or "position_ids" in k])
        self.assertFalse([k for k in l if "rotary_emb" in k])
        self.assertEqual(len(l), 1 + 2 * (9 + 8) + 2)  # embed, 2 x (9 weights + 8 adapter tensors), norm, lm_head
        for k, t in list(v.items()) + list(l.items()):
            self.assertEqual(t.dtype, dtype, k)
            ref = self.want[k].to(dtype)
            self.assertTrue(torch.equal(t, ref), k)
        # Pink's embeddings (with the added tokens' rows) win over Llama-2's
        self.assertEqual(tuple(l["model.embed_tokens.weight"].shape), (413, 48))
        self.assertEqual(read_header(os.path.join(out, "llm.safetensors"))[1]["family"], "pink")

    def test_convert_f32(self):
        out = os.path.join(self.tmp, "out_f32")
        rc, err = self.run_convert(self.args(out))
        self.assertEqual(rc, 0, err)
        self.assertIn("pink-convert: converting", err)
        self.assertIn("writing: 100%", err)
        self.check_tensors(out, torch.float32)
        cfg = load_json(os.path.join(out, "model.json"))
        self.assertEqual(cfg["family"], "pink")
        p = cfg["pink"]
        self.assertEqual(p["vision"], {
            "file": "vision.safetensors", "image_size": 28, "patch_size": 14, "dim": 32, "layers": 3, "heads": 4,
            "mlp_hidden": 64, "ln_eps": 1e-5, "act": "quick_gelu", "select_layer": -2,
            "adapter": {"dim": 4, "attn": True, "mlp": True}, "proj_dim": 48, "resize": "bicubic",
            "mean": make_fake_pink_upstream.CLIP_MEAN, "std": make_fake_pink_upstream.CLIP_STD})
        self.assertEqual({k: p["llm"][k] for k in ("dim", "hidden", "layers", "heads", "kv_heads", "vocab_size",
                                                    "max_positions", "rms_eps", "rope_theta", "adapter")},
                         {"dim": 48, "hidden": 96, "layers": 2, "heads": 6, "kv_heads": 2, "vocab_size": 413,
                          "max_positions": 512, "rms_eps": 1e-5, "rope_theta": 10000.0,
                          "adapter": {"dim": 4, "attn": True, "mlp": True, "silu": True}})
        self.assertEqual(p["llm"]["generation"]["num_beams"], 1)
        self.assertFalse(p["llm"]["generation"]["do_sample"])
        t = p["tokenizer"]
        self.assertEqual((t["legacy"], t["add_bos"], t["add_eos"], t["bos_id"], t["eos_id"], t["pad_id"]),
                         (False, True, False, 1, 2, 0))
        self.assertEqual(t["added_tokens"], [{"content": c, "id": 400 + i} for i, c in enumerate(PINK_ADDED_TOKENS)])
        self.assertEqual(p["prompt"]["image_tokens"], 4)
        self.assertEqual(p["prompt"]["image_token"], "<im_patch>")
        self.assertEqual(p["prompt"]["tasks"]["rec"], "Where is <des>{}</des>?")
        with open(os.path.join(out, "tokenizer.model"), "rb") as a, \
                open(os.path.join(self.fake, "pink", "tokenizer.model"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_convert_bf16_from_bin_shards(self):
        fake = os.path.join(self.tmp, "fake_bin")
        make_fake_pink_upstream.make(fake, seed=1, llama_format="bin", legacy=None)
        self.want_bin = upstream_weights(fake)
        out = os.path.join(self.tmp, "out_bf16")
        rc, err = self.run_convert(self.args(out, fake=fake, dtype="bf16"))
        self.assertEqual(rc, 0, err)
        v = load_file(os.path.join(out, "vision.safetensors"), dtype=None)
        l = load_file(os.path.join(out, "llm.safetensors"), dtype=None)
        for k, x in list(v.items()) + list(l.items()):
            self.assertTrue(torch.equal(x, self.want_bin[k].to(torch.bfloat16)), k)
        # no "legacy" in Pink's tokenizer_config.json: the Llama dir's (false here) is used
        self.assertFalse(load_json(os.path.join(out, "model.json"))["pink"]["tokenizer"]["legacy"])

    def test_legacy_default_is_hf_438s(self):
        d = self.copy_fake("fake_legacy")
        for sub in ("pink", "llama"):
            p = os.path.join(d, sub, "tokenizer_config.json")
            c = load_json(p)
            c.pop("legacy", None)
            write_json(p, c)
        out = os.path.join(self.tmp, "out_legacy")
        rc, err = self.run_convert(self.args(out, fake=d))
        self.assertEqual(rc, 0, err)
        self.assertTrue(load_json(os.path.join(out, "model.json"))["pink"]["tokenizer"]["legacy"])

    def test_cli_and_c_loader(self):
        """The script as a command; its model.json loads in the C reader's rules (checked by
        tests/test_pink_model.c on a converted directory)."""
        out = os.path.join(self.tmp, "out_cli")
        r = subprocess.run([sys.executable, CONVERT] + self.args(out, dtype="f16"), capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_header(os.path.join(out, "vision.safetensors"))[0]["mm_projector.weight"]["dtype"], "F16")

    # ---------------------------------------------------------------- errors

    def mutate_saved(self, d, fn):
        p = os.path.join(d, "pink", "saved_parameters.pth")
        sd = torch.load(p)
        fn(sd)
        torch.save(sd, p)
        return p

    def test_wrong_shape_names_file_and_tensor(self):
        d = self.copy_fake("neg_shape")
        p = self.mutate_saved(d, lambda sd: sd.__setitem__("mm_projector.weight", torch.zeros(47, 32)))
        self.expect_error(self.args(os.path.join(self.tmp, "o1"), fake=d), p,
                          "tensor 'mm_projector.weight': expected shape [48, 32], found [47, 32]")

    def test_wrong_llama_shard_shape(self):
        d = self.copy_fake("neg_llama")
        p = os.path.join(d, "llama", "model-00001-of-00002.safetensors")
        t = load_file(p, dtype=None)
        k = [n for n in sorted(t) if n.startswith("model.layers.")][0]  # not one Pink's file overrides
        t[k] = torch.zeros(tuple(t[k].shape[:-1]) + (t[k].shape[-1] + 1,), dtype=t[k].dtype)
        save_file(t, p)
        self.expect_error(self.args(os.path.join(self.tmp, "o2"), fake=d), p, "tensor '%s': expected shape" % k)

    def test_wrong_clip_tensor(self):
        d = self.copy_fake("neg_clip")
        p = os.path.join(d, "clip", "model.safetensors")
        t = load_file(p, dtype=None)
        t["vision_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(65, 32)
        save_file(t, p)
        self.expect_error(self.args(os.path.join(self.tmp, "o3"), fake=d), p,
                          "tensor 'vision_model.encoder.layers.0.mlp.fc1.weight': expected shape [64, 32], found [65, 32]")

    def test_missing_adapter(self):
        d = self.copy_fake("neg_missing")
        k = "model.layers.1.adapter_mlp.tune_adapter_b.weight"
        self.mutate_saved(d, lambda sd: sd.pop(k))
        self.expect_error(self.args(os.path.join(self.tmp, "o4"), fake=d), "saved_parameters.pth: missing tensor '%s'" % k)

    def test_configs_disagree(self):
        d = self.copy_fake("neg_cfg")
        p = os.path.join(d, "pink", "config.json")
        c = load_json(p)
        c["num_hidden_layers"] = 3
        write_json(p, c)
        self.expect_error(self.args(os.path.join(self.tmp, "o5"), fake=d), p, "num_hidden_layers 3",
                          os.path.join(d, "llama", "config.json"))

    def test_adapter_dim_disagrees(self):
        d = self.copy_fake("neg_adim")
        p = os.path.join(d, "pink", "config.json")
        c = load_json(p)
        c["adapter_llm_dim"] = 8
        write_json(p, c)
        self.expect_error(self.args(os.path.join(self.tmp, "o6"), fake=d), "has 4 rows", "says adapter dim 8")

    def test_no_image_token(self):
        d = self.copy_fake("neg_tok")
        p = os.path.join(d, "pink", "added_tokens.json")
        write_json(p, {"<des>": 401})
        c = load_json(os.path.join(d, "pink", "tokenizer_config.json"))
        c["added_tokens_decoder"] = {k: v for k, v in c["added_tokens_decoder"].items() if v["content"] != "<im_patch>"}
        write_json(os.path.join(d, "pink", "tokenizer_config.json"), c)
        self.expect_error(self.args(os.path.join(self.tmp, "o7"), fake=d), "has no added token <im_patch>")

    def test_embedding_too_small_for_tokens(self):
        d = self.copy_fake("neg_emb")
        self.mutate_saved(d, lambda sd: (sd.__setitem__("model.embed_tokens.weight", torch.zeros(405, 48)),
                                         sd.__setitem__("lm_head.weight", torch.zeros(405, 48))))
        c = load_json(os.path.join(d, "pink", "config.json"))
        c.pop("vocab_size")
        write_json(os.path.join(d, "pink", "config.json"), c)
        self.expect_error(self.args(os.path.join(self.tmp, "o8"), fake=d),
                          "the tokenizer has 413 tokens with the added ones", "has 405 rows")

    def test_missing_directory_and_checkpoint(self):
        self.expect_error(["--pink", os.path.join(self.tmp, "nope"), "--llama", "x", "--clip", "y", "--out",
                           os.path.join(self.tmp, "o9")], "Pink checkpoint directory not found")
        d = self.copy_fake("neg_ckpt")
        os.remove(os.path.join(d, "pink", "saved_parameters.pth"))
        self.expect_error(self.args(os.path.join(self.tmp, "o10"), fake=d), "missing",
                          os.path.join(d, "pink", "saved_parameters.pth"))

    def test_cli_error_is_one_line_exit_2(self):
        d = self.copy_fake("neg_cli")
        self.mutate_saved(d, lambda sd: sd.__setitem__("mm_projector.bias", torch.zeros(3)))
        r = subprocess.run([sys.executable, CONVERT] + self.args(os.path.join(self.tmp, "o11"), fake=d),
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len([ln for ln in r.stderr.splitlines() if "error" in ln]), 1, r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertIn("tensor 'mm_projector.bias': expected shape [48], found [3]", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=1)
