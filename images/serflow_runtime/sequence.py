"""A sequence model of the contract: a byte-level transformer that tells the language of
a short text, with an exit after every encoder layer.

Data: the dialog statements of ``chatterbot-corpus`` (BSD-3-Clause, Copyright (c) 2017
Gunther Cox), which ships them as YAML files inside its wheel; this module reads those
files from the installed package (it never imports it, and nothing is downloaded).  The
label is the folder's language; languages with fewer than ``MIN_ROWS`` distinct
statements are left out, and a statement found under two languages is dropped.  A text
is its UTF-8 bytes, each byte b the token b + 1, truncated or padded with 0 to
``SEQ_LEN`` tokens: the served input is int64 token ids in 0..256 with shape (SEQ_LEN,).

Model: token and position embeddings (plus a width-3 convolution over the token
embeddings, so the first layer sees a 3-byte character whole), then ``layers`` pre-norm
encoder layers (multi-head self-attention that ignores padding, then a GELU MLP).  Stage
i is layer i (stage 1 also embeds) and its exit: the mean of the non-padding positions, a layer norm and a linear
layer to the logits.  The padding mask rides along as the last channel of the hidden
tensor, so stage i maps (n, SEQ_LEN, d_model + 1) to the same shape plus (n, classes)
logits.  All exits train jointly on the sum of their losses (``train.py``'s recipe).

``reproduce`` trains from scratch and writes the shipped artefact
(``serflow-runtime train-sequence``).  Needs the ``datasets`` extra.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from torch import nn

from serflow_runtime.data import DataMissingError
from serflow_runtime.model import StagedNetwork

if TYPE_CHECKING:
    from serflow_runtime.artefact import Manifest

CORPUS_DISTRIBUTION = "chatterbot-corpus"
CORPUS_PACKAGE = "chatterbot_corpus"
CORPUS_VERSION = "1.3.3"
"""The pinned version (the ``datasets`` extra): the artefact's data is exactly this one."""
CORPUS_LICENCE = "BSD-3-Clause"
CORPUS_COPYRIGHT = "Copyright (c) 2017, Gunther Cox"
MIN_ROWS = 200
"""A language is a class when it has at least this many distinct statements."""
SEQ_LEN = 64
"""Tokens per text: its first 64 UTF-8 bytes (padded with 0)."""
PAD = 0
VOCAB = 257
"""Token ids: 0 is padding, 1..256 are the bytes 0..255."""
ARCHITECTURE = "byte_transformer_ee"
NAME = "seq-chatterbot-langid-transformer"
"""The shipped artefact's name (and folder)."""
VAL_FRACTION = 0.25
NEG = -1e9
"""Added to attention scores of padding keys."""


# --- data ---------------------------------------------------------------------------


def corpus_dir() -> Path:
    """The installed corpus's data folder (the package is located, never imported)."""
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataMissingError(
            f"{CORPUS_DISTRIBUTION} is not installed: pip install "
            f"'{CORPUS_DISTRIBUTION}=={CORPUS_VERSION}' (the datasets extra pins it)"
        )
    version = importlib.metadata.version(CORPUS_DISTRIBUTION)
    if version != CORPUS_VERSION:
        raise DataMissingError(
            f"{CORPUS_DISTRIBUTION} {version} is installed; the sequence model's data is "
            f"{CORPUS_VERSION}: pip install '{CORPUS_DISTRIBUTION}=={CORPUS_VERSION}'"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not root.is_dir():
        raise DataMissingError(f"{CORPUS_DISTRIBUTION} {version} has no data folder")
    return root


def _statements(doc: Any) -> list[str]:
    """Every statement of one corpus file's conversations."""
    out: list[str] = []
    convs = doc.get("conversations") if isinstance(doc, dict) else None
    for conv in convs or []:
        for s in conv if isinstance(conv, list) else []:
            if isinstance(s, str) and s.strip():
                out.append(s.strip())
    return out


def encode(texts: Sequence[str], seq_len: int = SEQ_LEN) -> np.ndarray:
    """Texts to (N, seq_len) int64 token ids: UTF-8 byte b is b + 1, 0 pads."""
    out = np.zeros((len(texts), seq_len), dtype=np.int64)
    for i, t in enumerate(texts):
        b = np.frombuffer(t.encode("utf-8")[:seq_len], dtype=np.uint8)
        out[i, : b.size] = b.astype(np.int64) + 1
    return out


def decode(ids: np.ndarray) -> str:
    """One row of token ids back to text (a cut multi-byte character is replaced)."""
    b = bytes(int(v) - 1 for v in ids if int(v) != PAD)
    return b.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Corpus:
    """The labelled statements, in a fixed order (language, then text)."""

    texts: tuple[str, ...]
    labels: np.ndarray
    """(N,) int64 indices into ``languages``."""
    languages: tuple[str, ...]
    version: str


def read_corpus(root: str | Path | None = None, min_rows: int = MIN_ROWS) -> Corpus:
    """Read every ``<language>/*.yml`` of the corpus.  Statements are told apart by their
    first ``SEQ_LEN`` bytes (what the model sees): one that two languages share is dropped,
    as are languages left with fewer than ``min_rows``."""
    folder = Path(root) if root is not None else corpus_dir()
    per: dict[str, dict[bytes, str]] = {}
    for lang_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        seen: dict[bytes, str] = {}
        for f in sorted(lang_dir.glob("*.yml")):
            for s in _statements(yaml.safe_load(f.read_text(encoding="utf-8"))):
                seen.setdefault(s.encode("utf-8")[:SEQ_LEN], s)
        if seen:
            per[lang_dir.name] = seen
    owners: dict[bytes, int] = {}
    for seen in per.values():
        for key in seen:
            owners[key] = owners.get(key, 0) + 1
    kept: dict[str, list[str]] = {}
    for lang, seen in per.items():
        texts = sorted(s for key, s in seen.items() if owners[key] == 1)
        if len(texts) >= min_rows:
            kept[lang] = texts
    if len(kept) < 2:
        raise DataMissingError(f"{folder}: fewer than two languages with {min_rows} statements")
    languages = tuple(sorted(kept))
    texts_out: list[str] = []
    labels: list[int] = []
    for i, lang in enumerate(languages):
        texts_out.extend(kept[lang])
        labels.extend([i] * len(kept[lang]))
    version = CORPUS_VERSION if root is None else "unpinned"
    return Corpus(tuple(texts_out), np.asarray(labels, dtype=np.int64), languages, version)


def split(labels: np.ndarray, seed: int = 0, val_fraction: float = VAL_FRACTION) -> tuple[
    np.ndarray, np.ndarray
]:
    """Stratified train / held-out row indices (each sorted), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(idx.size * val_fraction)
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


@dataclass
class SequenceData:
    """Token ids and labels, split; ``x_val`` is exactly what a client sends."""

    name: str
    x_train: torch.Tensor  # (N, SEQ_LEN) int64
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: tuple[str, ...]
    version: str
    seed: int


def load(seed: int = 0, val_fraction: float = VAL_FRACTION, root: str | Path | None = None) -> (
    SequenceData
):
    c = read_corpus(root)
    x = torch.from_numpy(encode(c.texts))
    y = torch.from_numpy(c.labels)
    tr, va = split(c.labels, seed, val_fraction)
    return SequenceData(
        "chatterbot-langid",
        x[tr],
        y[tr],
        x[va],
        y[va],
        c.languages,
        c.version,
        seed,
    )


# --- model --------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqArch:
    """Everything needed to rebuild the network."""

    num_classes: int
    d_model: int = 48
    layers: int = 4
    heads: int = 4
    ff: int = 128
    seq_len: int = SEQ_LEN
    vocab: int = VOCAB
    dropout: float = 0.1
    conv: int = 3
    """Width of a convolution over the byte embeddings in stage 1 (0: none): a CJK
    character is three bytes, the first layer sees it whole."""
    architecture: str = field(default=ARCHITECTURE)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError("num_classes must be >= 2")
        if self.layers < 1 or self.d_model % self.heads:
            raise ValueError("need at least one layer and d_model divisible by heads")

    @property
    def num_partitions(self) -> int:
        return self.layers

    @property
    def exits(self) -> tuple[int, ...]:
        """The layers followed by an internal exit (the last one ends in the final exit)."""
        return tuple(range(1, self.layers))

    def to_dict(self) -> dict[str, object]:
        return {
            "architecture": self.architecture,
            "width": 1.0,
            "exits": list(self.exits),
            "numClasses": self.num_classes,
            "dModel": self.d_model,
            "layers": self.layers,
            "heads": self.heads,
            "ff": self.ff,
            "seqLen": self.seq_len,
            "vocab": self.vocab,
            "conv": self.conv,
        }


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x (n, L, d); key_bias (n, 1, 1, L): 0 for tokens, NEG for padding."""
        seq = x.shape[1]
        q, k, v = self.qkv(x).reshape(-1, seq, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        att = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.dh)) + key_bias
        att = self.drop(torch.softmax(att, dim=-1))
        h = (att @ v).transpose(1, 2).reshape(-1, seq, self.heads * self.dh)
        return self.out(h)  # type: ignore[no-any-return]


class EncoderLayer(nn.Module):
    """Pre-norm: x + attention(norm(x)), then + MLP(norm(.))."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads, dropout)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_bias))
        return x + self.drop(self.mlp(self.ln2(x)))  # type: ignore[no-any-return]


class ExitHead(nn.Module):
    """Mean over the non-padding positions, layer norm, linear."""

    def __init__(self, d: int, num_classes: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.linear = nn.Linear(d, num_classes)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.linear(self.ln(pooled))  # type: ignore[no-any-return]


class Embed(nn.Module):
    """Token ids (n, L) to (n, L, d) and the padding mask (n, L, 1)."""

    def __init__(self, arch: SeqArch) -> None:
        super().__init__()
        self.tokens = nn.Embedding(arch.vocab, arch.d_model)
        self.position = nn.Parameter(torch.zeros(1, arch.seq_len, arch.d_model))
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.tokens.weight, std=0.02)
        self.conv: nn.Conv1d | None = None
        if arch.conv:
            k = arch.conv
            self.conv = nn.Conv1d(arch.d_model, arch.d_model, k, padding=k // 2)
        self.drop = nn.Dropout(arch.dropout)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (ids != PAD).to(torch.float32).unsqueeze(-1)
        e = self.tokens(ids)
        if self.conv is not None:
            e = e + self.conv(e.transpose(1, 2)).transpose(1, 2)
        return self.drop(e + self.position), mask


class SeqStage(nn.Module):
    """Layer ``index`` and its exit; stage 1 embeds token ids first.  Maps the previous
    hidden tensor to (hidden, logits); hidden is (n, L, d_model + 1), the mask last."""

    def __init__(self, index: int, arch: SeqArch) -> None:
        super().__init__()
        self.index = index
        self.embed: Embed | None = Embed(arch) if index == 1 else None
        self.layer = EncoderLayer(arch.d_model, arch.heads, arch.ff, arch.dropout)
        self.head = ExitHead(arch.d_model, arch.num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.embed is not None:
            h, mask = self.embed(x)
        else:
            h, mask = x[..., :-1], x[..., -1:]
        key_bias = ((1.0 - mask.squeeze(-1)) * NEG).unsqueeze(1).unsqueeze(1)
        h = self.layer(h, key_bias)
        return torch.cat([h, mask], dim=-1), self.head(h, mask)


class SequenceTransformer(StagedNetwork):
    """The K stages in order; ``forward`` returns all K logits."""

    def __init__(self, arch: SeqArch) -> None:
        super().__init__()
        self.arch = arch
        self.partitions = nn.ModuleList(SeqStage(i, arch) for i in range(1, arch.layers + 1))

    def stages(self) -> list[nn.Module]:
        """The K stages, each hidden -> (hidden, logits): what export writes."""
        return list(self.partitions)


def build(arch: SeqArch) -> SequenceTransformer:
    return SequenceTransformer(arch)


# --- training -----------------------------------------------------------------------


@dataclass
class SeqTrainConfig:
    epochs: int = 10
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2
    max_steps: int = 0  # > 0: stop after this many steps (tests)


def evaluate(
    model: SequenceTransformer, x: torch.Tensor, y: torch.Tensor, batch: int = 512
) -> list[float]:
    """Accuracy of each exit (all K classifiers) on (x, y)."""
    model.eval()
    correct = [0] * model.arch.num_partitions
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            for k, lg in enumerate(model(x[i : i + batch])):
                correct[k] += int((lg.argmax(1) == y[i : i + batch]).sum())
    return [c / max(1, x.shape[0]) for c in correct]


def train(
    model: SequenceTransformer,
    data: SequenceData,
    cfg: SeqTrainConfig,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train every exit jointly (sum of the K cross-entropies) in place; returns the
    held-out accuracy per exit."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_epoch = (data.x_train.shape[0] + cfg.batch - 1) // cfg.batch
    steps = cfg.epochs * per_epoch
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(1, steps))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(data.x_train.shape[0], generator=gen)
        total, seen = 0.0, 0
        for i in range(0, perm.numel(), cfg.batch):
            if step >= steps:
                break
            idx = perm[i : i + cfg.batch]
            outs = model(data.x_train[idx])
            y = data.y_train[idx]
            loss = sum((loss_fn(o, y) for o in outs), torch.zeros(()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += float(loss.detach()) * idx.numel()
            seen += idx.numel()
        acc = evaluate(model, data.x_val, data.y_val)
        log(
            f"epoch {epoch + 1}/{cfg.epochs} loss {total / max(1, seen):.3f} "
            f"val acc per exit {' '.join(f'{a:.3f}' for a in acc)}"
        )
        if step >= steps:
            break
    model.eval()
    return evaluate(model, data.x_val, data.y_val)


# --- artefact -----------------------------------------------------------------------


def describe(
    model: SequenceTransformer, data: SequenceData, cfg: SeqTrainConfig, acc: Sequence[float]
) -> dict[str, Any]:
    """The manifest's ``describes``: architecture, data set, licence, accuracy per exit."""
    return {
        **model.arch.to_dict(),
        "tokenizer": f"UTF-8 bytes, byte b -> token b + 1, 0 pads, first {SEQ_LEN} bytes",
        "task": "language identification of short dialog statements",
        "dataset": {
            "name": data.name,
            "source": f"{CORPUS_DISTRIBUTION}=={data.version} (PyPI wheel, chatterbot_corpus/data)",
            "licence": CORPUS_LICENCE,
            "copyright": CORPUS_COPYRIGHT,
            "rows": int(data.x_train.shape[0] + data.x_val.shape[0]),
            "trainRows": int(data.x_train.shape[0]),
            "heldOutRows": int(data.x_val.shape[0]),
            "split": f"stratified per language, {VAL_FRACTION:g} held out, seed {data.seed}",
        },
        "training": {
            "epochs": cfg.epochs,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "weightDecay": cfg.weight_decay,
            "seed": cfg.seed,
            "loss": "sum of the exits' cross-entropies",
        },
        "valAccuracyPerExit": [round(float(a), 6) for a in acc],
    }


def export_artefact(
    model: SequenceTransformer,
    data: SequenceData,
    out: str | Path,
    *,
    name: str = NAME,
    describes: dict[str, Any] | None = None,
) -> Manifest:
    """Write the artefact: ONNX stages, int64 token ids in 0..VOCAB-1, the held-out
    split as the calibration set."""
    from serflow_runtime.export import export_network

    model.eval()
    return export_network(
        model.stages(),
        out,
        name=name,
        example=data.x_val[:2].clone(),
        classes=list(data.classes),
        calibration=(data.x_val.numpy().astype(np.int64), data.y_val.numpy().astype(np.int64)),
        input_name="tokens",
        input_range=(0, model.arch.vocab - 1),
        image=None,
        describes=describes,
    )


def reproduce(
    out: str | Path,
    *,
    name: str = NAME,
    seed: int = 0,
    epochs: int = SeqTrainConfig.epochs,
    threads: int = SeqTrainConfig.threads,
    log: Callable[[str], None] = print,
) -> Manifest:
    """Train from scratch on the pinned corpus and write the artefact into ``out``."""
    if threads:
        torch.set_num_threads(threads)
    data = load(seed=seed)
    torch.manual_seed(seed)
    model = build(SeqArch(num_classes=len(data.classes)))
    cfg = SeqTrainConfig(epochs=epochs, seed=seed, threads=threads)
    acc = train(model, data, cfg, log)
    return export_artefact(model, data, out, name=name, describes=describe(model, data, cfg, acc))
