#!/usr/bin/env python3
"""Shapes world generator and tiny-LION vocabularies (tools/train): quick unit tests."""
import os
import random
import shutil
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import numpy as np  # noqa: E402

import world  # noqa: E402


class WorldTest(unittest.TestCase):
    def test_deterministic(self):
        a, b = world.make_scene(123), world.make_scene(123)
        self.assertEqual(a.image.tobytes(), b.image.tobytes())
        self.assertEqual(a.annotations(), b.annotations())
        self.assertNotEqual(a.image.tobytes(), world.make_scene(124).image.tobytes())
        sa = world.task_samples(a, random.Random(5))
        sb = world.task_samples(b, random.Random(5))
        self.assertEqual(sa, sb)

    def test_scene_invariants(self):
        counts = set()
        for seed in range(150):
            sc = world.make_scene(seed)
            self.assertEqual(sc.image.size, (world.IMAGE_SIZE, world.IMAGE_SIZE))
            self.assertEqual(sc.image.mode, "RGB")
            n = len(sc.objects)
            counts.add(n)
            self.assertTrue(1 <= n <= world.MAX_OBJECTS)
            pairs = {(o["shape"], o["colour"]) for o in sc.objects}
            self.assertEqual(len(pairs), n, "objects must be distinguishable by colour + shape")
            for o in sc.objects:
                x0, y0, x1, y1 = o["box"]
                self.assertTrue(0 <= x0 < x1 <= world.IMAGE_SIZE and 0 <= y0 < y1 <= world.IMAGE_SIZE)
                self.assertEqual([c % world.GRID for c in o["box"]], [0, 0, 0, 0])
                self.assertGreaterEqual(x1 - x0, 16)
                self.assertGreaterEqual(o["visible"], 0.75)
                # the object's colour is really drawn where its visible mask is
                m = o["mask"] > 0.99
                px = np.asarray(sc.image, dtype=np.float32)[m]
                want = np.array(world.COLOUR_RGB[o["colour"]], np.float32)
                self.assertLess(np.abs(px.mean(0) - want).max(), 25)
            self.assertEqual(sc.tags, [t for t in world.TAGS if t in
                                       {o["shape"] for o in sc.objects} | {o["colour"] for o in sc.objects}])
        self.assertEqual(counts, {1, 2, 3, 4})

    def test_patch_targets(self):
        sc = world.make_scene(7)
        t = sc.patch_targets(8)
        n = (world.IMAGE_SIZE // 8) ** 2
        self.assertEqual(t["colour"].shape, (n,))
        self.assertEqual(t["cover"].shape, (len(sc.objects), n))
        for i in np.nonzero(t["owner"] >= 0)[0]:
            o = sc.objects[t["owner"][i]]
            self.assertEqual(t["shape"][i], world.SHAPES.index(o["shape"]) + 1)
            np.testing.assert_allclose(t["box"][i], np.array(o["box"]) / world.IMAGE_SIZE)

    def test_task_formats(self):
        seen = set()
        for seed in range(60):
            sc = world.make_scene(seed)
            for s in world.task_samples(sc, random.Random(seed)):
                seen.add(s["task"])
                self.assertIn(s["type"], ("image", "region"))
                if s["task"] == "rec":
                    self.assertRegex(s["answer"], r"^\[\d\.\d{3},\d\.\d{3},\d\.\d{3},\d\.\d{3}\]$")
                    box = world.parse_box(s["answer"])
                    self.assertTrue(any(world.iou(box, [c / world.IMAGE_SIZE for c in o["box"]]) > 0.95
                                        for o in sc.objects))
                if s["task"] == "region_caption":
                    self.assertRegex(s["question"], r"\[\d\.\d{3},\d\.\d{3},\d\.\d{3},\d\.\d{3}\]\.$")
                if s["task"] == "count":
                    self.assertIn(s["answer"], {"0", "1", "2", "3", "4"})
        self.assertEqual(seen, set(world.TASKS))
        self.assertEqual(world.fmt_box((8, 16, 32, 40)), "[0.125,0.250,0.500,0.625]")
        p = world.full_prompt("Question: x? Short answer:", ["circle", "red"])
        self.assertTrue(p.startswith("According to <extra_id_0>, you are allowed to use or partially use "
                                     "the following tags: [circle, red]. Question:"))


class VocabTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import vocab
        cls.tmp = tempfile.mkdtemp(prefix="tinyvocab_")
        cls.n_sp, cls.n_bert = vocab.build_all(cls.tmp, n_scenes=300)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_spiece_layout(self):
        from lion_ref.tokenizers import T5Tokenizer
        tok = T5Tokenizer(os.path.join(self.tmp, "spiece.model"))
        sp = tok.sp
        self.assertEqual([sp.IdToPiece(i) for i in range(3)], ["<pad>", "</s>", "<unk>"])
        self.assertEqual(sp.bos_id(), -1)
        self.assertEqual(tok.vocab_size, self.n_sp + 100)
        self.assertEqual(tok.convert_tokens_to_ids("<extra_id_0>"), tok.vocab_size - 1)
        # a box is four coordinate pieces
        pieces = sp.EncodeAsPieces("[0.000,0.562,0.438,1.000]")
        self.assertEqual(pieces, ["\u2581[", "0.000", ",", "0.562", ",", "0.438", ",", "1.000", "]"])
        for k in range(17):
            c = world.fmt_coord(k / 16)
            self.assertEqual(sp.EncodeAsPieces("[" + c)[1:], [c])
        text = world.full_prompt("Question: What color is the circle? Short answer:", ["circle", "red"])
        ids = tok.encode(text)
        self.assertEqual(ids.count(tok.vocab_size - 1), 1)
        self.assertNotIn(2, ids, "no <unk> in world text")
        self.assertEqual(tok.decode(tok.encode("a red circle and a blue square")), "a red circle and a blue square")
        self.assertEqual(tok.decode(tok.encode("[0.062,0.188,0.312,0.938]")), "[0.062,0.188,0.312,0.938]")

    def test_bert_vocab(self):
        from lion_ref.tokenizers import BertTokenizer
        path = os.path.join(self.tmp, "vocab.txt")
        with open(path) as f:
            lines = f.read().split("\n")
        self.assertEqual(lines[:5], ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        tok = BertTokenizer(path)
        self.assertEqual(len(tok), self.n_bert + 1)  # + [DEC]
        ids = tok.encode("Question: What shape is the purple object? Short answer:")
        self.assertNotIn(tok.unk_id, ids)
        self.assertNotIn(tok.unk_id, tok.encode("Please provide a short description for this region: "
                                                "[0.125,0.250,0.500,0.625]."))


    def test_spiece_is_path_independent(self):
        from sentencepiece import sentencepiece_model_pb2 as pb
        m = pb.ModelProto()
        with open(os.path.join(self.tmp, "spiece.model"), "rb") as f:
            m.ParseFromString(f.read())
        self.assertEqual(list(m.trainer_spec.input), ["spiece.model.corpus.txt"])

    def test_pair_targets(self):
        """Stage 4's relation targets: the first- and second-named objects' patches apart,
        and at the first object's centre patch, left-of / above the second's centre as the
        answer says."""
        import data
        import tinylion
        sp, vt = os.path.join(self.tmp, "spiece.model"), os.path.join(self.tmp, "vocab.txt")
        b = data.Batcher(tinylion.model_config(self.n_sp, self.n_bert), sp, vt)
        n = world.IMAGE_SIZE // b.patch
        seen = set()
        for seed in range(400):
            sc = world.make_scene(seed)
            samples = world.task_samples(sc, random.Random(seed), tasks=["relation", "vqa_colour"])
            by = {x["task"]: x for x in samples}
            if len(by) < 2:
                continue
            rel, other = by["relation"], by["vqa_colour"]
            t = b.pair_targets([sc, sc], [rel, other], [0, 0])
            cov = sc.patch_targets(b.patch)["cover"]
            ia, ib = rel["objects"]
            np.testing.assert_array_equal(t["point_a"][0].numpy(), (cov[ia] >= 0.3).astype(np.float32))
            np.testing.assert_array_equal(t["point_b"][0].numpy(), (cov[ib] >= 0.3).astype(np.float32))
            self.assertEqual(t["pair"].tolist(), [1.0, 0.0])
            self.assertEqual(float(t["point_a"][1].sum() + t["rel_xy"][1].sum()), 0.0)
            ax, ay = world.centre(sc.objects[ia])
            k = int(ay // b.patch) * n + int(ax // b.patch)
            if rel["answer"] in ("left", "right"):
                self.assertEqual(t["rel_xy"][0, k, 0].item(), float(rel["answer"] == "left"), seed)
            else:
                self.assertEqual(t["rel_xy"][0, k, 1].item(), float(rel["answer"] == "above"), seed)
            seen.add(rel["answer"])
        self.assertEqual(seen, {"left", "right", "above", "below"})


if __name__ == "__main__":
    unittest.main()
