"""LLaMA's tokenizer as Pink runs it: HF's slow ``LlamaTokenizer`` (transformers 4.38.2,
``use_fast=False``) over the SentencePiece BPE model, with Pink's added tokens.

Written from reading transformers 4.38's ``LlamaTokenizer`` (tokenize, _tokenize,
convert_tokens_to_string) and ``PreTrainedTokenizer`` (tokenize with the added-tokens trie,
convert_tokens_to_ids, _decode), on the ``sentencepiece`` module; transformers itself is not
needed (nor installed here). What it does:

encode(text) == tokenizer(text).input_ids
  * the text is cut at the added tokens and the special tokens <s>, </s>, <unk> (HF registers
    them as added tokens too), leftmost first and the longest at a position (HF's Trie.split;
    the same for token sets without overlapping tokens, as Pink's); a token is its id;
  * legacy=True (HF's default when tokenizer_config.json has no "legacy"): each piece of text
    between tokens is ``sp.encode``d as it is, so each gets sentencepiece's dummy prefix;
  * legacy=False: "▁" in the text becomes " ", the text gets one "▁" in front, and the model is
    loaded with ``add_dummy_prefix`` off; a piece of text starting with "▁" or " " is encoded as
    "<unk>" + piece and the ids of "<unk>" are dropped from the front; a leading lone "▁" before
    a special token is dropped;
  * <s> in front (add_bos_token), </s> at the end only with add_eos_token.

decode(ids) == tokenizer.decode(ids, skip_special_tokens=True)
  * bos, eos, unk ids are skipped (pad is unk for Pink); an added token is its text;
  * every run of pieces between added tokens goes through convert_tokens_to_string: the first
    piece loses one leading "▁", then ``sp.decode`` of the piece strings (with the model as
    loaded: no dummy prefix when legacy=False); a run that decodes to "" before an added token
    is left out; the parts are joined with " " (spaces_between_special_tokens's default);
  * clean_up_tokenization_spaces (LLaMA's: False) applies HF's replacements when set.

Pink adds, in this order (pink/model/pink.py): "<im_patch>" (initialize_vision_tokenizer), then
"<des>", "</des>", "<loc>", "</loc>", "<rel>", "</rel>", "<cls>", "</cls>", "<qes>", "</qes>",
"<opt>", "</opt>" (add_mark_tokens), ids 32000.. after Llama-2's 32000 pieces.
"""
import sentencepiece as spm

SPIECE_UNDERLINE = "\u2581"

PINK_ADDED_TOKENS = ["<im_patch>", "<des>", "</des>", "<loc>", "</loc>", "<rel>", "</rel>", "<cls>", "</cls>",
                     "<qes>", "</qes>", "<opt>", "</opt>"]

_CLEAN_UP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def _load_sp(model_file, add_dummy_prefix):
    sp = spm.SentencePieceProcessor()
    if add_dummy_prefix is None:
        sp.Load(model_file)
        return sp
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    with open(model_file, "rb") as f:
        m.ParseFromString(f.read())
    m.normalizer_spec.add_dummy_prefix = add_dummy_prefix
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


class LlamaTokenizer:
    """added_tokens: [(content, id)] or [content] (ids then follow the pieces, in order)."""

    def __init__(self, model_file, legacy=True, added_tokens=(), add_bos=True, add_eos=False,
                 clean_up_tokenization_spaces=False):
        self.legacy = legacy
        # as HF's get_spm_processor: legacy loads the file as it is, otherwise without dummy prefix
        self.sp = _load_sp(model_file, None if legacy else False)
        self.add_bos, self.add_eos, self.clean_up = add_bos, add_eos, clean_up_tokenization_spaces
        n = self.sp.get_piece_size()
        self.added = {}
        for i, a in enumerate(added_tokens):
            content, tid = (a, n + i) if isinstance(a, str) else a
            self.added[content] = tid
        self.added_by_id = {v: k for k, v in self.added.items()}
        self.bos, self.eos, self.unk = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self.special = {self.sp.id_to_piece(i): i for i in (self.bos, self.eos, self.unk)}
        self.cuts = dict(self.added)
        self.cuts.update(self.special)
        self.unk_token = self.sp.id_to_piece(self.unk)
        self.unk_token_length = len(self.sp.encode(self.unk_token))

    def vocab_size(self):
        return max([self.sp.get_piece_size()] + [i + 1 for i in self.added.values()])

    # ---------------------------------------------------------------- encode

    def _split(self, text):
        """[(piece of text or token, is_token)], cut leftmost-longest at the tokens."""
        out, seg, i = [], 0, 0
        while i < len(text):
            best = max((c for c in self.cuts if text.startswith(c, i)), key=len, default=None)
            if best is None:
                i += 1
                continue
            if i > seg:
                out.append((text[seg:i], False))
            out.append((best, True))
            i += len(best)
            seg = i
        if seg < len(text):
            out.append((text[seg:], False))
        return out

    def _tokenize(self, text):
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp.encode(text, out_type=str)
        tokens = self.sp.encode(self.unk_token + text, out_type=str)
        return tokens[self.unk_token_length:] if len(tokens) >= self.unk_token_length else tokens

    def tokenize(self, text):
        rewrite = not self.legacy and len(text) > 0
        if rewrite:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        tokens = []
        for part, is_token in self._split(text):
            if is_token:
                tokens.append(part)
            else:
                tokens.extend(self._tokenize(part))
        if rewrite and len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.special:
            tokens = tokens[1:]
        return tokens

    def convert_tokens_to_ids(self, tokens):
        return [self.cuts[t] if t in self.cuts else self.sp.piece_to_id(t) for t in tokens]

    def encode(self, text):
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        return ([self.bos] if self.add_bos else []) + ids + ([self.eos] if self.add_eos else [])

    # ---------------------------------------------------------------- decode

    def _tokens_to_string(self, tokens):
        tokens = list(tokens)
        if tokens[0].startswith(SPIECE_UNDERLINE):
            tokens[0] = tokens[0][1:]
        return self.sp.decode(tokens)

    def decode(self, ids):
        parts, run = [], []
        for i in ids:
            if i in (self.bos, self.eos, self.unk):
                continue
            if i in self.added_by_id:
                if run:
                    s = self._tokens_to_string(run)
                    if len(s) > 0:
                        parts.append(s)
                    run = []
                parts.append(self.added_by_id[i])
            else:
                run.append(self.sp.id_to_piece(i))
        if run:
            parts.append(self._tokens_to_string(run))
        text = " ".join(parts)
        if self.clean_up:
            for a, b in _CLEAN_UP:
                text = text.replace(a, b)
        return text
