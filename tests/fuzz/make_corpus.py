#!/usr/bin/python3
"""Writes the committed seed files of tests/fuzz/corpus/ (run once; the output is committed).

Only what the C seed generator (fuzz_seeds.c) cannot make with the project's own encoders:
  image/          PNG and JPEG kinds Pillow writes and the image encoders do not: grey, grey +
                  alpha, RGBA, palette with transparency, 1-bit, 16-bit grey, progressive, CMYK
                  and 4:4:4 JPEG
  sentencepiece/  small unigram models trained by the sentencepiece library, with a real
                  precompiled charsmap (custom normalization rules), byte fallback, user-defined
                  and control symbols, each followed by a text: [u8 mode|1][u32 length][model][text]
Needs Debian's python3-pil and python3-sentencepiece: /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import io
import os
import struct
import sys
import tempfile

from PIL import Image
import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    print(f"{target}/{name}: {len(data)} bytes")


def encoded(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def images():
    rgb = Image.new("RGB", (7, 5))
    rgb.putdata([(x * 36, y * 50, (x + y) * 20) for y in range(5) for x in range(7)])
    write("image", "grey.png", encoded(rgb.convert("L"), "PNG"))
    write("image", "grey-alpha.png", encoded(rgb.convert("LA"), "PNG"))
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (1, 2, 3, 0))
    write("image", "rgba.png", encoded(rgba, "PNG"))
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=4)
    write("image", "palette-transparent.png", encoded(pal, "PNG", transparency=0))
    write("image", "bilevel.png", encoded(rgb.convert("1"), "PNG"))
    g16 = Image.new("I;16", (3, 2))
    g16.putdata([0, 1, 255, 256, 40000, 65535])
    write("image", "grey16.png", encoded(g16, "PNG"))
    write("image", "progressive.jpg", encoded(rgb.resize((17, 9)), "JPEG", progressive=True, quality=60))
    write("image", "grey.jpg", encoded(rgb.convert("L"), "JPEG", quality=50))
    write("image", "cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG", quality=50))
    write("image", "444.jpg", encoded(rgb, "JPEG", quality=90, subsampling=0))


CORPUS = ["the red cube is left of the blue sphere", "how many shapes are there", "a small green cylinder",
          "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 text and \ufb01 ligatures",
          "what color is the large cone"] * 20
RULES = ["FF26\t66", "FF55\t75", "FF4C\t6C", "FB01\t66 69", "41\t61", "3000\t20", "2126\t3A9"]


def sentencepiece_models():
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        rules = os.path.join(tmp, "rules.tsv")
        with open(corpus, "w") as f:
            f.write("\n".join(CORPUS) + "\n")
        with open(rules, "w") as f:
            f.write("\n".join(RULES) + "\n")
        kinds = [
            ("rules", 60, dict(normalization_rule_tsv=rules), "\uff26ull A cube\u3000\ufb01 \u2126"),
            ("bytes", 300, dict(byte_fallback=True, normalization_rule_name="identity"), "caf\u00e9 \U0001f408 cube"),
            ("user", 60, dict(user_defined_symbols=["<img>", "[box]"], control_symbols=["<ctl>"],
                              normalization_rule_tsv=rules), "<img>[box]<ctl> red <extra_id_1></s>"),
        ]
        for name, vocab, extra, text in kinds:
            prefix = os.path.join(tmp, name)
            spm.SentencePieceTrainer.train(input=corpus, model_prefix=prefix, vocab_size=vocab, model_type="unigram",
                                           character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                           hard_vocab_limit=False, minloglevel=2, **extra)
            with open(prefix + ".model", "rb") as f:
                model = f.read()
            write("sentencepiece", f"trained-{name}",
                  bytes([0x31]) + struct.pack("<I", len(model)) + model + text.encode())


if __name__ == "__main__":
    images()
    sentencepiece_models()
    sys.exit(0)
