"""Write a small transformer encoder and token data for configs/transformer_encoder.toml.

    .venv/bin/python scripts/make_encoder.py          # needs torch (pip install torch)

models/encoder/ (git-ignored) receives:
  encoder.onnx   4 layers, width 128, 4 heads, vocabulary 1000, inputs input_ids and
                 attention_mask (int64 [batch, seq], both dynamic), output pooled [batch, 128]
                 (masked mean of the last layer); opset 17
  calib.npz      256 sequences of 64 tokens, the last tokens of some masked out
  eval.npz       128 other sequences

The weights are random (seeded): this model exercises multi-input .npz data, attention MatMuls
of two activations and LayerNorm/GELU/Softmax left in float; it is no pretrained network, so
only output-fidelity gates (SQNR, cosine) mean anything on it. Point the config at your own
exported encoder and token data for real use.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "models" / "encoder"
VOCAB, WIDTH, HEADS, LAYERS, SEQ = 1000, 128, 4, 4, 64
SEED = 0


def build():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
            self.proj = nn.Linear(WIDTH, WIDTH)
            self.norm1 = nn.LayerNorm(WIDTH)
            self.norm2 = nn.LayerNorm(WIDTH)
            self.up = nn.Linear(WIDTH, 4 * WIDTH)
            self.down = nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x, bias):
            batch, seq, _ = x.shape
            q, k, v = self.qkv(x).reshape(batch, seq, 3, HEADS, WIDTH // HEADS).permute(
                2, 0, 3, 1, 4)
            scores = q @ k.transpose(-1, -2) * (WIDTH // HEADS) ** -0.5 + bias
            attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, WIDTH)
            x = self.norm1(x + self.proj(attended))
            return self.norm2(x + self.down(nn.functional.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, WIDTH)
            self.positions = nn.Embedding(512, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))

        def forward(self, input_ids, attention_mask):
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = self.tokens(input_ids) + self.positions(positions)
            mask = attention_mask.to(x.dtype)
            bias = (1.0 - mask)[:, None, None, :] * -1e4
            for block in self.blocks:
                x = block(x, bias)
            weights = mask.unsqueeze(-1)
            return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    torch.manual_seed(SEED)
    return Encoder().eval()


def tokens(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    ids = rng.integers(1, VOCAB, size=(count, SEQ), dtype=np.int64)
    lengths = rng.integers(SEQ // 2, SEQ + 1, size=count)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def main() -> int:
    try:
        import torch
    except ImportError:
        print("make_encoder needs torch: .venv/bin/pip install torch", file=sys.stderr)
        return 1
    import warnings

    import onnx
    import onnxruntime as ort

    # The TorchScript exporter is deprecated but gives plain ops; unpacking q, k, v is a fixed 3.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    model = build()
    rng = np.random.default_rng(SEED)
    calib, evaluation = tokens(rng, 256), tokens(rng, 128)
    example = {name: torch.from_numpy(value[:2]) for name, value in calib.items()}
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model, (example["input_ids"], example["attention_mask"]), buffer, dynamo=False,
            input_names=["input_ids", "attention_mask"], output_names=["pooled"], opset_version=17,
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                          "attention_mask": {0: "batch", 1: "seq"}, "pooled": {0: "batch"}})
        expected = model(torch.from_numpy(evaluation["input_ids"]),
                         torch.from_numpy(evaluation["attention_mask"])).numpy()
    exported = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(exported, full_check=True)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, evaluation)[0]
    difference = float(np.abs(got - expected).max())
    if difference > 1e-3:
        print(f"onnxruntime differs from torch by {difference}", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    onnx.save_model(exported, str(OUT / "encoder.onnx"))
    np.savez(OUT / "calib.npz", **calib)
    np.savez(OUT / "eval.npz", **evaluation)
    print(f"wrote {OUT}/encoder.onnx, calib.npz (256 x {SEQ}), eval.npz (128 x {SEQ}); "
          f"onnxruntime vs torch max |diff| {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
