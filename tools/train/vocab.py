"""Tokenizer vocabularies of the tiny LION, built from the shapes world's text.

spiece.model: a T5-layout SentencePiece *unigram* model (pad=0, eos=1, unk=2, no bos;
HF's T5 tokenizer appends <extra_id_0..99> after the pieces, <extra_id_0> last, so the
LLM vocab_size is piece_size + 100).  The model is trained with the `sentencepiece`
module; its piece table is then re-scored from word statistics of the world text
(written back through sentencepiece's own ModelProto), because the unigram trainer on
this tiny, repetitive corpus keeps pieces such as "562,0.438,1.000]" and splits frequent
words into characters.  The curated table keeps one piece per word (with and without
the word-boundary mark) and one piece per box coordinate ("0.562"), so a box is
"▁[" 0.000 , 0.562 , 0.438 , 1.000 "]": four coordinate tokens.  Every character of
the corpus stays a piece (low score) so any text still encodes.

vocab.txt: a BERT uncased WordPiece vocabulary ([PAD]=0, [UNK], [CLS], [SEP], [MASK],
words, single characters, ##characters) for the Q-Former's instruction tokenizer.
"""
import collections
import io
import math
import os
import re
import unicodedata

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

NUM_EXTRA_IDS = 100
_SEG = re.compile(r"\d\.\d{3}|[A-Za-z]+|\d+|\S")
_SPECIAL = re.compile(r"(<extra_id_\d+>)")


def _segments(text):
    """Intended segmentation of plain text (no special tokens) into spm pieces."""
    out = []
    for w in text.split():
        toks = _SEG.findall(w)
        out.append("\u2581" + toks[0])
        out.extend(toks[1:])
    return out


def _texts_without_specials(line):
    return [p for p in _SPECIAL.split(line) if p and not _SPECIAL.fullmatch(p)]


def build_spiece(lines, out_path, seed_vocab=64):
    # 1. train a small unigram model with sentencepiece (normalizer, trainer spec, chars)
    buf = io.BytesIO()
    text = "\n".join(l for line in lines for l in _texts_without_specials(line) if l.strip())
    tmp = out_path + ".corpus.txt"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    try:
        spm.SentencePieceTrainer.train(
            input=tmp, model_writer=buf, vocab_size=seed_vocab, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
            hard_vocab_limit=False, minloglevel=2, num_threads=1, seed_sentencepiece_size=100000)
    finally:
        os.remove(tmp)
    m = pb.ModelProto()
    m.ParseFromString(buf.getvalue())
    # 2. re-score: word / coordinate / punctuation pieces from counts, characters as fallback
    counts = collections.Counter()
    for line in lines:
        for part in _texts_without_specials(line):
            segs = _segments(part)
            counts.update(segs)
            # the segment after a special token starts with "▁" + punctuation in HF's T5
            # tokenizer; the bare version of each piece is useful too
    chars = collections.Counter(ch for line in lines for part in _texts_without_specials(line)
                                for ch in part if not ch.isspace())
    total = sum(counts.values())
    pieces = {}
    for p, n in counts.items():
        pieces[p] = math.log(n / total)
        bare = p[1:] if p.startswith("\u2581") else "\u2581" + p
        if bare not in counts:
            pieces[bare] = math.log(0.5 / total) - 1.0
    floor = min(pieces.values()) - 5.0
    for ch in sorted(chars):
        pieces.setdefault(ch, floor)
        pieces.setdefault("\u2581" + ch, floor)
    pieces.setdefault("\u2581", floor)
    specials = [p for p in m.pieces if p.type != pb.ModelProto.SentencePiece.NORMAL]
    assert [s.piece for s in specials[:3]] == ["<pad>", "</s>", "<unk>"], [s.piece for s in specials]
    del m.pieces[:]
    for s in specials[:3]:
        m.pieces.append(s)
    for p, sc in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])):
        sp = m.pieces.add()
        sp.piece = p
        sp.score = sc
        sp.type = pb.ModelProto.SentencePiece.NORMAL
    m.trainer_spec.vocab_size = len(m.pieces)
    # the trainer records its input file's path; keep only the name so that the file does
    # not depend on where the work directory is (byte-identical vocabularies across runs)
    m.trainer_spec.input[:] = [os.path.basename(x) for x in m.trainer_spec.input]
    data = m.SerializeToString()
    with open(out_path, "wb") as f:
        f.write(data)
    return spm.SentencePieceProcessor(model_proto=data)


def check_spiece(sp, lines, limit=2000):
    """Encoding of the world's text follows the intended segmentation; returns mismatches."""
    bad = 0
    for line in lines[:limit]:
        for part in _texts_without_specials(line):
            if sp.encode(part, out_type=str) != _segments(part):
                bad += 1
    return bad


# ----------------------------------------------------------------- BERT WordPiece vocab

def _is_punct(ch):
    cp = ord(ch)
    if (33 <= cp <= 47) or (58 <= cp <= 64) or (91 <= cp <= 96) or (123 <= cp <= 126):
        return True
    return unicodedata.category(ch).startswith("P")


def bert_basic_tokenize(text):
    """BERT BasicTokenizer (uncased): lowercase, strip accents, split whitespace/punctuation."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out = []
    for w in text.split():
        cur = ""
        for ch in w:
            if _is_punct(ch):
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(ch)
            else:
                cur += ch
        if cur:
            out.append(cur)
    return out


def build_bert_vocab(lines, out_path):
    words = collections.Counter()
    for line in lines:
        words.update(bert_basic_tokenize(line))
    chars = sorted({ch for w in words for ch in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen = set(vocab)
    for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    for ch in chars:
        if ch not in seen:
            vocab.append(ch)
            seen.add(ch)
    for ch in chars:
        p = "##" + ch
        if p not in seen:
            vocab.append(p)
            seen.add(p)
    with open(out_path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    return vocab


def build_all(out_dir, n_scenes=3000):
    import world
    lines = world.corpus_lines(n_scenes)
    os.makedirs(out_dir, exist_ok=True)
    sp = build_spiece(lines, os.path.join(out_dir, "spiece.model"))
    bad = check_spiece(sp, lines)
    if bad:
        raise RuntimeError("spiece segmentation differs from the intended one on %d texts" % bad)
    vocab = build_bert_vocab(lines, os.path.join(out_dir, "vocab.txt"))
    return sp.get_piece_size(), len(vocab)


if __name__ == "__main__":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(build_all(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-vocab"))
