"""Tokenizers for LION, pure Python (plus the ``sentencepiece`` module for T5).

BertTokenizer: mirrors HF ``BertTokenizer`` (slow) as LION builds it:
``BertTokenizer.from_pretrained(bert_dir, truncation_side="left")`` followed by
``add_special_tokens({"bos_token": "[DEC]"})`` -> ``[DEC]`` gets id ``len(vocab)``.
  * special tokens present in the text ([CLS] [SEP] [PAD] [MASK] [UNK] [DEC]) are kept
    whole (case-sensitive), everything else is lower-cased;
  * BasicTokenizer: drop NUL/U+FFFD/control chars, whitespace -> ' ', NFC, spaces around
    CJK ideographs, whitespace split, lower + NFD accent strip, split on punctuation
    (ASCII 33-47/58-64/91-96/123-126 and Unicode category P*);
  * WordPiece: greedy longest match, continuation pieces prefixed '##', a word longer than
    100 chars or with an unmatched remainder becomes [UNK];
  * encode: [CLS] tokens [SEP]; truncation (when max_length is given) removes tokens from
    the LEFT; batch padding 'longest' on the right with [PAD] and attention mask 0.

T5Tokenizer: sentencepiece model + HF's T5 special tokens: <pad>=0, </s>=1, <unk>=2
(as in the spm model), ``<extra_id_N>`` = spm_size + 99 - N (``<extra_id_0>`` is the last
of the 100 extra ids).  Text is split on special tokens; each plain segment is encoded
by sentencepiece on its own (spm's normalizer trims/collapses whitespace and adds the
'▁' dummy prefix); '</s>' (eos, 1) is appended.  decode(skip_special_tokens=True) drops
pad/eos/unk and the extra ids and lets sentencepiece detokenize the rest.
"""
import re
import unicodedata

import torch


# ----------------------------------------------------------------------------- BERT

def _is_whitespace(ch):
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text, lower=True):
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        out.append(" " if _is_whitespace(ch) else ch)
    text = "".join(out)
    text = unicodedata.normalize("NFC", text)
    text = "".join((" %s " % ch) if _is_cjk(ord(ch)) else ch for ch in text)
    tokens = []
    for tok in text.strip().split():
        if lower:
            tok = tok.lower()
            tok = "".join(c for c in unicodedata.normalize("NFD", tok)
                          if unicodedata.category(c) != "Mn")
        cur = []
        for ch in tok:
            if _is_punctuation(ch):
                if cur:
                    tokens.append("".join(cur))
                    cur = []
                tokens.append(ch)
            else:
                cur.append(ch)
        if cur:
            tokens.append("".join(cur))
    return [t for t in tokens if t]


class BertTokenizer:
    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, vocab_file, do_lower_case=True, add_dec=True, max_length=128):
        self.vocab = {}
        with open(vocab_file, "r", encoding="utf-8") as f:
            for i, line in enumerate(f):
                # a duplicated line keeps its last id, as HF's load_vocab does
                self.vocab[line.rstrip("\n")] = i
        self.inv = {v: k for k, v in self.vocab.items()}
        self.lower = do_lower_case
        self.max_length = max_length
        self.specials = [t for t in self.SPECIALS if t in self.vocab]
        if add_dec and "[DEC]" not in self.vocab:
            self.dec_id = len(self.vocab)
            self.vocab["[DEC]"] = self.dec_id
            self.inv[self.dec_id] = "[DEC]"
        elif add_dec:
            self.dec_id = self.vocab["[DEC]"]
        if add_dec:
            self.specials.append("[DEC]")
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self._split_re = re.compile("(" + "|".join(re.escape(t) for t in self.specials) + ")")

    def __len__(self):
        return len(self.vocab)

    def wordpiece(self, word):
        if len(word) > 100:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end, cur = len(word), None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                if sub in self.vocab:
                    cur = sub
                    break
                end -= 1
            if cur is None:
                return ["[UNK]"]
            pieces.append(cur)
            start = end
        return pieces

    def tokenize(self, text):
        toks = []
        for part in self._split_re.split(text):
            if not part:
                continue
            if part in self.specials:
                toks.append(part)
                continue
            if self.lower:
                # HF's tokenize() lower-cases outside special tokens one character at a
                # time ("ΟΔΟΣ" -> "οδοσ", no final-sigma rule) before the basic tokenizer
                part = "".join(c.lower() for c in part)
            for w in basic_tokenize(part, self.lower):
                toks.extend(self.wordpiece(w))
        return toks

    def convert_tokens_to_ids(self, toks):
        return [self.vocab.get(t, self.unk_id) for t in toks]

    def encode(self, text, max_length=None, truncation_side="left"):
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        max_length = self.max_length if max_length is None else max_length
        if max_length is not None and len(ids) + 2 > max_length:
            keep = max(max_length - 2, 0)
            ids = ids[len(ids) - keep:] if truncation_side == "left" else ids[:keep]
        return [self.cls_id] + ids + [self.sep_id]

    def __call__(self, texts, max_length=None, truncation_side="left"):
        """Batch encode with padding 'longest'. Returns (input_ids, attention_mask) LongTensors."""
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t, max_length, truncation_side) for t in texts]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return ids, mask

    def decode(self, ids, skip_special_tokens=True):
        toks = [self.inv.get(int(i), "[UNK]") for i in ids]
        if skip_special_tokens:
            toks = [t for t in toks if t not in self.specials]
        return " ".join(toks).replace(" ##", "").strip()


# ----------------------------------------------------------------------------- T5

class T5Tokenizer:
    def __init__(self, spiece_file, extra_ids=100):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor()
        self.sp.Load(spiece_file)
        self.sp_size = self.sp.GetPieceSize()
        self.extra_ids = extra_ids
        self.vocab_size = self.sp_size + extra_ids
        self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
        self.pad_token, self.eos_token, self.unk_token = "<pad>", "</s>", "<unk>"
        # only the canonical <extra_id_0..99> are tokens; "<extra_id_100>", "<extra_id_05>" or
        # non-ASCII digits are plain text, as in HF's tokenizer
        self._split_re = re.compile(r"(<extra_id_(?:[0-9]|[1-9][0-9])>|</s>|<pad>|<unk>)")

    def extra_id(self, n):
        assert 0 <= n < self.extra_ids
        return self.vocab_size - n - 1

    def convert_tokens_to_ids(self, tok):
        m = re.fullmatch(r"<extra_id_([0-9]|[1-9][0-9])>", tok)
        if m and int(m.group(1)) < self.extra_ids:
            return self.extra_id(int(m.group(1)))
        return {"<pad>": 0, "</s>": 1, "<unk>": 2}.get(tok, None) if tok in ("<pad>", "</s>", "<unk>") \
            else self.sp.PieceToId(tok)

    def is_special(self, i):
        return i in (self.pad_id, self.eos_id, self.unk_id) or i >= self.sp_size

    def encode(self, text, add_eos=True, max_length=None, truncation_side="left"):
        ids = []
        for part in self._split_re.split(text):
            if not part:
                continue
            if self._split_re.fullmatch(part):
                tid = self.convert_tokens_to_ids(part)
                if tid is not None and (not part.startswith("<extra_id_") or tid >= self.sp_size):
                    ids.append(tid)
                    continue
            ids.extend(self.sp.EncodeAsIds(part))
        if max_length is not None:
            keep = max_length - (1 if add_eos else 0)
            if len(ids) > keep:
                ids = ids[len(ids) - keep:] if truncation_side == "left" else ids[:keep]
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def __call__(self, texts, max_length=None, truncation_side="left"):
        """Batch encode (eos appended, padding 'longest' with <pad>=0 on the right)."""
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t, True, max_length, truncation_side) for t in texts]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
        return ids, mask

    def decode(self, ids, skip_special_tokens=True):
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            return self.sp.DecodeIds([i for i in ids if not self.is_special(i)])
        out, buf = [], []
        for i in ids:
            if self.is_special(i):
                if buf:
                    out.append(self.sp.DecodeIds(buf))
                    buf = []
                out.append(self.id_to_token(i))
            else:
                buf.append(i)
        if buf:
            out.append(self.sp.DecodeIds(buf))
        return " ".join(out)

    def id_to_token(self, i):
        if i >= self.sp_size:
            n = self.vocab_size - i - 1
            return "<extra_id_%d>" % n if 0 <= n < self.extra_ids else "<unk>"
        return self.sp.IdToPiece(i)

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [self.decode(s, skip_special_tokens) for s in seqs]
