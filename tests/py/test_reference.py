#!/usr/bin/env python3
"""Self-checks of tools/reference/lion_ref against upstream (HF / LION / RAM) semantics."""
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
torch.set_num_threads(1)

from lion_ref import lion as L  # noqa: E402
from lion_ref.ram import format_tags  # noqa: E402
from lion_ref.safetensors_io import load_file, read_header, save_file  # noqa: E402
from lion_ref.t5 import T5ForConditionalGeneration, relative_position_bucket  # noqa: E402
from lion_ref.testing import tiny_model  # noqa: E402
from lion_ref.tokenizers import BertTokenizer, basic_tokenize  # noqa: E402

T5CFG = dict(vocab_size=64, d_model=16, d_ff=24, d_kv=4, heads=4, encoder_layers=2,
             decoder_layers=2, adapters={"num": 2, "bottleneck": 8})


class T5Test(unittest.TestCase):
    def test_relative_buckets(self):
        rel = torch.tensor([-200, -128, -20, -8, -7, -1, 0, 1, 7, 8, 20, 127, 128, 500])
        bi = relative_position_bucket(rel, True, 32, 128).tolist()
        # Mesh-TF / HF values: 16 buckets per direction, exact below 8, log above
        self.assertEqual(bi, [15, 15, 10, 8, 7, 1, 0, 17, 23, 24, 26, 31, 31, 31])
        uni = relative_position_bucket(rel, False, 32, 128).tolist()
        self.assertEqual(uni, [31, 31, 17, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0])

    def setUp(self):
        torch.manual_seed(0)
        self.m = T5ForConditionalGeneration(T5CFG).init_weights().eval()

    def test_causal_and_cache(self):
        x = torch.randint(2, 64, (1, 6))
        dec = torch.randint(2, 64, (1, 5))
        with torch.no_grad():
            full = self.m(input_ids=x, decoder_input_ids=dec)["logits"]
            dec2 = dec.clone()
            dec2[0, 3:] = 7                     # changing later tokens must not change earlier logits
            full2 = self.m(input_ids=x, decoder_input_ids=dec2)["logits"]
            self.assertLess((full[0, :3] - full2[0, :3]).abs().max().item(), 1e-6)
            self.assertGreater((full[0, 3:] - full2[0, 3:]).abs().max().item(), 1e-4)
            enc = self.m.encode(self.m.shared(x))
            past, steps = None, []
            for t in range(5):
                lg, past = self.m.decode(dec[:, t:t + 1], enc, None, past)
                steps.append(lg)
            self.assertLess((torch.cat(steps, 1) - full).abs().max().item(), 1e-5)

    def test_encoder_padding_mask(self):
        x = torch.randint(2, 64, (1, 4))
        xp = torch.cat([x, torch.randint(2, 64, (1, 3))], 1)
        m = torch.tensor([[1, 1, 1, 1, 0, 0, 0]])
        dec = torch.tensor([[0, 4]])
        with torch.no_grad():
            a = self.m(input_ids=x, decoder_input_ids=dec)["logits"]
            b = self.m(input_ids=xp, attention_mask=m, decoder_input_ids=dec)["logits"]
        self.assertLess((a - b).abs().max().item(), 1e-5)

    def test_router_only_via_adapters(self):
        x = torch.randint(2, 64, (1, 5))
        dec = torch.tensor([[0, 3, 9]])
        with torch.no_grad():
            self.m.set_router_idx(0)
            a = self.m(input_ids=x, decoder_input_ids=dec)["logits"]
            self.m.set_router_idx(1)
            b = self.m(input_ids=x, decoder_input_ids=dec)["logits"]
            self.assertGreater((a - b).abs().max().item(), 1e-4)
            for p in self.m.modules():          # zero adapters: router idx must not matter
                if hasattr(p, "up_proj"):
                    p.up_proj.weight.zero_()
                    p.up_proj.bias.zero_()
            self.m.set_router_idx(0)
            c = self.m(input_ids=x, decoder_input_ids=dec)["logits"]
            self.m.set_router_idx(1)
            d = self.m(input_ids=x, decoder_input_ids=dec)["logits"]
            self.assertLess((c - d).abs().max().item(), 1e-7)
        # router ratios: idx 0 -> adapter 0 only (init [[1],[0]] / [[0],[1]])
        r = self.m.encoder.block[0].layer[1].adapter
        r.router_idx = 0
        h = torch.randn(1, 2, 16)
        with torch.no_grad():
            self.assertLess((r(h) - r.adapters[0](h)).abs().max().item(), 1e-7)
            r.router_idx = 1
            self.assertLess((r(h) - r.adapters[1](h)).abs().max().item(), 1e-7)

    def test_ff_formula(self):
        ff = self.m.encoder.block[0].layer[1]
        h = torch.randn(1, 3, 16)
        with torch.no_grad():
            n = ff.layer_norm.weight * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
            d = ff.DenseReluDense
            want = h + d.wo(torch.nn.functional.gelu(d.wi_0(n)) * d.wi_1(n)) + ff.adapter(h)
            self.assertLess((ff(h) - want).abs().max().item(), 1e-6)

    def test_loss_ignores_minus100(self):
        x = torch.randint(2, 64, (1, 5))
        lab = torch.tensor([[5, 6, 1, -100]])
        with torch.no_grad():
            o = self.m(input_ids=x, labels=lab)
            dec = torch.tensor([[0, 5, 6, 0]])
            lg = self.m(input_ids=x, decoder_input_ids=dec)["logits"][0, :3]
            want = torch.nn.functional.cross_entropy(lg, torch.tensor([5, 6, 1]))
        self.assertAlmostEqual(o["loss"].item(), want.item(), places=5)


class LionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lionref_")
        cls.m = tiny_model(cls.tmp, seed=0)
        cls.img = Image.fromarray((np.random.RandomState(0).rand(37, 53, 3) * 255).astype(np.uint8))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_preprocess_matches_pil(self):
        px = self.m.preprocess(self.img)
        want = np.asarray(self.img.resize((28, 28), Image.BICUBIC), dtype=np.float32) / 255.0
        want = (want - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array(
            [0.26862954, 0.26130258, 0.27577711])
        self.assertEqual(tuple(px.shape), (3, 28, 28))
        self.assertLess(np.abs(px.permute(1, 2, 0).numpy() - want).max(), 1e-5)
        pr = self.m.preprocess_ram(self.img)
        w2 = np.asarray(self.img.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255.0
        w2 = (w2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
        self.assertLess(np.abs(pr.permute(1, 2, 0).numpy() - w2).max(), 1e-5)

    def test_soft_prompt_position(self):
        p = self.m.build_prompt("what is in the image?", "dog, man")
        self.assertTrue(p.startswith("According to <extra_id_0>, you are allowed to use or partially "
                                     "use the following tags: [dog, man]. what is"))
        ids, emb, mask = self.m.text_embeds([p])
        sp = self.m.t5_tok.extra_id(0)
        self.assertEqual(sp, self.m.t5_tok.sp_size + 99)
        pos = (ids[0] == sp).nonzero().flatten().tolist()
        self.assertEqual(len(pos), 1)
        self.assertLess((emb[0, pos[0]] - self.m.soft_prompt_hint).abs().max().item(), 1e-7)
        other = [i for i in range(ids.shape[1]) if i != pos[0]]
        self.assertLess((emb[0, other] - self.m.t5_model.shared(ids[0, other])).abs().max().item(), 1e-7)
        self.assertEqual(ids[0, -1].item(), 1)

    def test_visual_tokens_shape(self):
        px = self.m.preprocess(self.img)[None]
        v = self.m.encode_img(px, ["what is in the image?"])
        self.assertEqual(tuple(v.shape), (1, 4 + 5, 16))   # 4 queries + (1+2*2) aggregator tokens

    def test_beam1_equals_greedy_and_beams(self):
        px = self.m.preprocess(self.img)[None]
        with torch.no_grad():
            x, mask, _ = self.m.prepare_inputs(px, ["what is in the image?"], ["dog, man"])
            self.m.t5_model.set_router_idx(1)
            g = dict(max_new_tokens=10, repetition_penalty=1.0, min_length=1, length_penalty=1.0)
            greedy = L.generate_ids(self.m.t5_model, x, mask, num_beams=1, **g)[0]
            enc = self.m.t5_model.encode(x, mask)
            beam1 = L._beam_search(self.m.t5_model, enc, mask, dict(L.DEFAULT_GENERATION, **g), 1)
            self.assertEqual(greedy[0], 0)
            self.assertEqual(greedy[:len(beam1)], beam1[:len(greedy)])
            b5 = L.generate_ids(self.m.t5_model, x, mask, num_beams=5, **g)[0]
            self.assertEqual(b5[0], 0)
            self.assertLessEqual(len(b5), 11)
            # beam result scores at least as well as greedy (sum of log-probs / length)
            def score(seq):
                s = [t for t in seq]
                if s[-1] == 1:
                    body = s
                else:
                    body = s
                dec = torch.tensor([body[:-1]])
                lg = self.m.t5_model(encoder_hidden=enc, attention_mask=mask, decoder_input_ids=dec)["logits"]
                lp = torch.log_softmax(lg[0], -1)
                return sum(lp[i, body[i + 1]].item() for i in range(len(body) - 1)) / (len(body) - 1)
            self.assertGreaterEqual(score(b5) + 1e-4, score(greedy))
            s1 = L.generate_ids(self.m.t5_model, x, mask, num_beams=1, do_sample=True, seed=7, **g)
            s2 = L.generate_ids(self.m.t5_model, x, mask, num_beams=1, do_sample=True, seed=7, **g)
            self.assertEqual(s1, s2)

    def test_repetition_penalty(self):
        s = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
        out = L.repetition_penalty(s, torch.tensor([[0, 1, 1]]), 2.0)
        self.assertEqual(out.tolist(), [[1.0, -4.0, 1.0, -1.0]])

    def test_top_p(self):
        s = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
        w = L.warp_logits(s, {"top_p": 0.7, "top_k": 0, "temperature": 1.0})
        self.assertEqual(torch.isinf(w).tolist(), [[False, False, True, True]])

    def test_generate_text_and_save_load(self):
        out = self.m.generate(self.img, "what is in the image?", tags="dog, man", max_new_tokens=6)
        self.assertIsInstance(out, str)
        d = os.path.join(self.tmp, "saved")
        L.save_model_dir(self.m, d, "f32")
        m2 = L.load_model_dir(d)
        self.assertEqual(m2.generate(self.img, "what is in the image?", tags="dog, man", max_new_tokens=6), out)
        h, meta, _ = read_header(os.path.join(d, "llm.safetensors"))
        self.assertIn("t5_model.encoder.block.0.layer.1.adapter.router_ratio1", h)
        self.assertIn("soft_prompt_hint", h)
        self.assertEqual(meta["stage"], "llm")

    def test_ram_tags(self):
        self.assertEqual(format_tags(["dog", "man", "pet"]), "dog, man, pet")
        self.assertEqual(format_tags([]), "")
        r = self.m.ram
        pr = torch.tensor([[0.9, 0.2, 0.51, 0.5, 0.7]])
        sel = r.select(pr)
        self.assertEqual(sel.tolist(), [[True, False, True, False, True]])   # strict '>'
        r.delete_tags = [4]
        self.assertEqual(r.select(pr).tolist(), [[True, False, True, False, False]])
        r.delete_tags = []
        px = self.m.preprocess_ram(self.img)[None]
        self.assertEqual(len(r.visual_encoder(px)[0]), 1 + 16)             # pooled + 4x4 tokens
        x = r.visual_encoder(px)
        self.assertLess((x[:, 0] - x[:, 1:].mean(1)).abs().max().item(), 1e-6)


class SwinTest(unittest.TestCase):
    def test_shift_mask_and_window_clamp(self):
        from lion_ref.ram import SwinBlock
        b = SwinBlock(8, 8, 2, 4, 2, 4.0, 1e-5)
        self.assertEqual(tuple(b.attn_mask.shape), (4, 16, 16))
        self.assertEqual(b.attn_mask[0].abs().sum().item(), 0)   # top-left window: one region
        self.assertEqual(set(b.attn_mask[3].unique().tolist()), {0.0, -100.0})
        c = SwinBlock(8, 4, 2, 12, 6, 4.0, 1e-5)                   # res <= window: no shift
        self.assertEqual((c.window, c.shift), (4, 0))
        self.assertIsNone(c.attn_mask)


class TokenizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="liontok_")
        from lion_ref.testing import write_tiny_tokenizers
        cls.sp, cls.vp = write_tiny_tokenizers(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_basic(self):
        self.assertEqual(basic_tokenize(" \tHeLLo!How  are\u00a0you?  "),
                         ["hello", "!", "how", "are", "you", "?"])
        self.assertEqual(basic_tokenize("Café naïve"), ["cafe", "naive"])
        self.assertEqual(basic_tokenize("ah\u535a\u63a8zz"), ["ah", "\u535a", "\u63a8", "zz"])
        self.assertEqual(basic_tokenize("a\x00b\ufffdc"), ["abc"])

    def test_bert(self):
        t = BertTokenizer(self.vp)
        self.assertEqual(t.tokenize("UNwant unaffable Playing x\u00e6"),
                         ["un", "##w", "##a", "##n", "##t", "un", "##aff", "##able", "playing", "[UNK]"])
        self.assertEqual(t.tokenize("hello [SEP] [DEC]"), ["hello", "[SEP]", "[DEC]"])
        n = sum(1 for _ in open(self.vp))
        self.assertEqual(t.dec_id, n)
        self.assertEqual(len(t), n + 1)
        ids = t.encode("hello world")
        self.assertEqual(ids[0], t.cls_id)
        self.assertEqual(ids[-1], t.sep_id)
        long = " ".join(["hello"] * 200 + ["world"])
        e = t.encode(long)
        self.assertEqual(len(e), 128)
        self.assertEqual(e[-2], t.vocab["world"])       # left truncation keeps the end
        ids, mask = t(["hello", "hello world the"])
        self.assertEqual(ids.shape[1], 5)
        self.assertEqual(mask.tolist(), [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        self.assertEqual(ids[0, 3:].tolist(), [0, 0])

    def test_t5(self):
        from lion_ref.tokenizers import T5Tokenizer
        t = T5Tokenizer(self.sp)
        n = t.sp_size
        self.assertEqual(t.convert_tokens_to_ids("<extra_id_0>"), n + 99)
        self.assertEqual(t.convert_tokens_to_ids("<extra_id_99>"), n)
        ids = t.encode("a dog <extra_id_0>, the cat</s>")
        self.assertEqual(ids[-1], 1)
        self.assertEqual(ids[-2], 1)                     # literal </s> kept as eos id
        self.assertIn(n + 99, ids)
        self.assertEqual(ids[:ids.index(n + 99)], t.sp.EncodeAsIds("a dog"))
        self.assertEqual(t.decode(ids), "a dog , the cat")   # "▁," -> "▁" "," as HF
        self.assertEqual(t.decode(t.encode("the cat sleeps")), "the cat sleeps")


class SafetensorsTest(unittest.TestCase):
    def test_roundtrip_and_layout(self):
        d = tempfile.mkdtemp()
        try:
            p = os.path.join(d, "a.safetensors")
            t = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "b": torch.tensor([1.5, -2.0])}
            save_file(t, p, {"k": "v"}, dtype="bf16")
            raw = open(p, "rb").read()
            n = int.from_bytes(raw[:8], "little")
            self.assertEqual(n % 8, 0)
            h, meta, start = read_header(p)
            self.assertEqual(meta, {"k": "v"})
            self.assertEqual(h["w"], {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]})
            self.assertEqual(raw[start + 12:start + 14], b"\xc0\x3f")   # bf16(1.5) = 0x3fc0 LE
            r = load_file(p)
            self.assertEqual(r["w"].tolist(), t["w"].tolist())
            self.assertEqual(r["b"].dtype, torch.float32)
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main(verbosity=1)
