#!/usr/bin/env python3
"""The tiny Pink's training command (tools/train/train_pink.py --smoke) end to end: it trains a few
steps and exports a Pink model directory that the reference loads and answers with; a run stopped
and resumed exports files byte-identical to an uninterrupted run's. Also: the LION instruction ->
Pink task mapping, and the training's shared-prefix forward equals the plain full-sequence forward
(what inference runs)."""
import json
import os
import random
import shutil
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRAIN = os.path.join(ROOT, "tools", "train", "train_pink.py")
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))

import smoke_training  # noqa: E402  (tests/py)

FILES = ["model.json", "vision.safetensors", "llm.safetensors", "tokenizer.model"]


class TrainPinkSmokeTest(smoke_training.SmokeTraining):
    SCRIPT = TRAIN
    PREFIX = "tinypink_"
    TIMEOUT = 300

    def test_exports_a_pink_model_dir(self):
        for stage in ("stage0", "main", "main2"):
            self.assertIn("%s done" % stage, self.log)
        self.assertIn("training done", self.log)
        d = self.model_dir(self.whole)
        for f in FILES:
            self.assertTrue(os.path.isfile(os.path.join(d, f)), f)
        with open(os.path.join(d, "model.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg["family"], "pink")
        pk = cfg["pink"]
        self.assertEqual(pk["prompt"]["image_tokens"], 64)
        self.assertEqual(pk["vision"]["adapter"], {"dim": 8, "attn": True, "mlp": False})
        self.assertEqual(pk["llm"]["adapter"], {"dim": 8, "attn": True, "mlp": False, "silu": False})
        self.assertEqual(pk["llm"]["generation"]["num_beams"], 1)
        self.assertEqual([a["content"] for a in pk["tokenizer"]["added_tokens"]][:3], ["<im_patch>", "<des>", "</des>"])

    def test_export_loads_and_answers(self):
        import tinypink
        import world
        from lion_ref.safetensors_io import read_header
        m = tinypink.PinkDir(self.model_dir(self.whole))
        # no training-only heads in the exported files
        for f in ("vision.safetensors", "llm.safetensors"):
            keys = read_header(os.path.join(self.model_dir(self.whole), f))[0]
            self.assertFalse([k for k in keys if k.startswith("aux")])
        sc = world.make_scene(900000000)
        _, vtok = m.image_tokens(m.pixels(sc.image)[None])
        ids, text, prompt = m.generate(vtok[0], "rec", "the red circle", max_new_tokens=4)
        self.assertLessEqual(len(ids), 4)
        self.assertEqual(prompt[0], 1)

    def test_resume_is_identical(self):
        work = os.path.join(self.tmp, "resumed")
        os.makedirs(os.path.join(work, "smoke"))
        shutil.copyfile(os.path.join(self.whole, "smoke", "tokenizer.model"),
                        os.path.join(work, "smoke", "tokenizer.model"))
        log = self.train(work, "--stop-at", "2")
        self.assertIn("stopped at step 2", log)
        log = self.train(work)
        self.assertIn("resumed main at step 2", log)
        for f in FILES:
            with open(os.path.join(self.model_dir(work), f), "rb") as a, \
                    open(os.path.join(self.model_dir(self.whole), f), "rb") as b:
                self.assertEqual(a.read(), b.read(), f)

    def test_shared_prefix_equals_full_forward(self):
        import torch
        import tinypink
        import train_pink
        tok = tinypink.load_tokenizer(os.path.join(self.whole, "smoke", "tokenizer.model"))
        enc = tinypink.Encoder(tok)
        model = tinypink.TinyPink(tok.vocab_size(), seed=1).eval()
        with torch.no_grad():   # non-zero adapters, so that they take part
            for n, p in model.named_parameters():
                if "tune_adapter_b" in n:
                    p.normal_(0, 0.1)
        b = train_pink.Batcher(enc, seed=3).batch(0, n_img=2, q_per_img=3)
        with torch.no_grad():
            _, logits = model.suffix_logits(b, enc)
            _, vtok = model.vision(b["pixels"])
            P = len(enc.prefix)
            for j in range(b["suffix"].shape[0]):
                n = int((b["suffix"][j] != enc.tok.unk).sum())
                ids = torch.tensor([enc.prefix + b["suffix"][j, :n].tolist()])
                x = model.llm.embed(ids)
                x[0, enc.image_offset:enc.image_offset + tinypink.IMAGE_TOKENS] = vtok[b["img_index"][j]]
                full, _ = model.llm(inputs_embeds=x)
                err = (full[0, P:] - logits[j, :n]).abs().max() / full.abs().max()
                self.assertLess(float(err), 1e-5)


class RequestMappingTest(unittest.TestCase):
    def test_every_world_instruction_maps(self):
        import tinypink
        import world
        seen = set()
        for i in range(40):
            sc = world.make_scene(900000000 + i)
            for s in world.task_samples(sc, random.Random(i)):
                task, text, box = tinypink.pink_request(s["question"])
                seen.add(task)
                if task == "vqa":
                    self.assertTrue(text.endswith("?") and not text.startswith("Question"), text)
                if task == "rec":
                    self.assertTrue(text.startswith("the ") and not text.endswith("."), text)
                if task == "region_caption":
                    self.assertEqual(world.fmt_box(box, 1), s["question"].split(": ")[1][:-1])
        self.assertEqual(seen, {"caption", "vqa", "rec", "region_caption"})
        with self.assertRaises(ValueError):
            tinypink.pink_request("Describe the image.")


if __name__ == "__main__":
    unittest.main()
