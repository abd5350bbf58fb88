"""PyTorch twins of nnr.models (lua/nnr/models.lua) and of scripts/train_charlm.lua's training.

As a module: GPT, RecurrentLM, build(config), param_groups, lr_at and load_nnrun_state (an nnrun
state dict saved with nnr.save, renamed to PyTorch's: nnrun's ModuleList counts from 1).
As a script, the quality comparison of issue 17: the same corpus, character vocabulary, held-out
split, model, initialisation, schedule and evaluation as train_charlm.lua, trained in PyTorch:

    python3 charlm_torch.py --model gpt --steps 3000 [--init init.safetensors] [--metrics FILE]
        [--threads N] [--data PATH] [--batch-size 32] [--seq-len 128] [--lr X] [--eval-every 250]

--init loads the initial weights nnrun wrote (train_charlm.lua --save-init), so both start equal.
Batches are random windows drawn with torch's generator (the same distribution as nnrun's, not the
same draws). Prints one line per evaluation and appends JSON lines as train_charlm.lua does."""
import argparse
import inspect
import json
import math
import os
import re
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class GPT(nn.Module):
    def __init__(self, vocab_size, context, d_model=256, n_head=4, n_layer=4, d_ff=None, dropout=0.0, activation="gelu", tie=True, **_):
        super().__init__()
        self.context = context
        self.tok, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model, n_head, d_ff or 4 * d_model, dropout, activation=activation, batch_first=True,
                                           norm_first=True)
        kw = {"enable_nested_tensor": False} if "enable_nested_tensor" in inspect.signature(nn.TransformerEncoder).parameters else {}
        self.blocks = nn.TransformerEncoder(layer, n_layer, **kw)
        self.ln_f, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab_size, bias=False)
        resid = 0.02 / math.sqrt(2 * n_layer)
        with torch.no_grad():       # GPT-2's initialisation, as nnr.models.GPT
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif re.search(r"norm\d\.weight$", name) or name == "ln_f.weight":
                    p.fill_(1)
                elif name.endswith("out_proj.weight") or name.endswith("linear2.weight"):
                    p.normal_(0, resid)
                else:
                    p.normal_(0, 0.02)
        if tie:
            self.head.weight = self.tok.weight
        self.causal = {"is_causal": True} if "is_causal" in inspect.signature(self.blocks.forward).parameters else {}

    def forward(self, ids):
        t = ids.shape[1]
        h = self.drop(self.tok(ids) + self.pos(torch.arange(t, device=ids.device)))
        mask = torch.triu(torch.full((t, t), float("-inf"), device=ids.device), 1)
        return self.head(self.ln_f(self.blocks(h, mask=mask, **self.causal)))


class RecurrentLM(nn.Module):
    def __init__(self, vocab_size, cell="lstm", hidden=512, embed=None, num_layers=2, dropout=0.0, tie=False, **_):
        super().__init__()
        embed = embed or hidden
        self.emb, self.drop = nn.Embedding(vocab_size, embed), nn.Dropout(dropout)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](embed, hidden, num_layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.drop(self.rnn(self.drop(self.emb(ids)))[0]))


def build(config):
    c = dict(config)
    kind = c.pop("kind")
    return GPT(**c) if kind == "gpt" else RecurrentLM(**c)


def param_groups(model, weight_decay):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_at(s, n, lr, min_lr, warmup):
    """train_charlm.lua's schedule (scripts/charlm.lua): linear warm-up, then a cosine to min_lr"""
    if s <= warmup:
        return lr * s / warmup
    if n <= warmup:
        return lr
    progress = min(1.0, (s - warmup) / (n - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "F16": torch.float16,
          "BF16": torch.bfloat16, "U8": torch.uint8, "I8": torch.int8, "BOOL": torch.bool}


def read_safetensors(path):
    """{name: tensor} of a safetensors file (its 8-byte header size, JSON header and data), without the
    safetensors package, which Debian's python3-torch lacks"""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        data = bytearray(blob[8 + n + a:8 + n + b])
        t = torch.frombuffer(data, dtype=DTYPES[e["dtype"]]) if b > a else torch.empty(0, dtype=DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"]).clone()
    return out


def load_nnrun_state(model, path):
    sd = {re.sub(r"layers\.(\d+)\.", lambda m: "layers.%d." % (int(m.group(1)) - 1), k): v for k, v in read_safetensors(path).items()}
    model.load_state_dict(sd, strict=True)


def lm_loss(logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


# the quality comparison ----------------------------------------------------------------------------------
def corpus_text(path, exclude=(".dat", ".u8")):
    """the bytes nnr.text.Corpus reads: a file, or a folder's files in name order less the excluded suffixes"""
    if os.path.isfile(path):
        return open(path, "rb").read()
    out = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            if not f.endswith(tuple(exclude)):
                out.append(open(os.path.join(root, f), "rb").read())
    return b"".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt", choices=["gpt", "lstm", "gru"])
    ap.add_argument("--data", default="/usr/share/games/fortunes")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--init")
    ap.add_argument("--metrics")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = corpus_text(a.data).decode("utf-8")
    chars = sorted(set(text))                           # CharVocab: ids in code point order
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_val = int(len(ids) * 0.1)
    train, val = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    T, B = a.seq_len, a.batch_size
    lr = a.lr or (1e-3 if a.model == "gpt" else 2e-3)
    if a.model == "gpt":
        config = {"kind": "gpt", "vocab_size": len(chars), "context": T, "d_model": a.d_model, "n_head": a.heads, "n_layer": a.layers or 4}
    else:
        config = {"kind": "rnn_lm", "vocab_size": len(chars), "cell": a.model, "hidden": a.hidden, "num_layers": a.layers or 2}
    model = build(config)
    if a.init:
        load_nnrun_state(model, a.init)
    opt = torch.optim.AdamW(param_groups(model, a.weight_decay), lr=lr, betas=(0.9, 0.95))
    nw = (len(val) - 1) // T                          # the held-out text in contiguous windows, as nnrun's
    vx = torch.stack([val[i * T:i * T + T] for i in range(nw)])
    vy = torch.stack([val[i * T + 1:i * T + T + 1] for i in range(nw)])
    print("corpus %d characters, vocabulary %d, %d held out; %s, %d parameters; torch %s, %d threads" % (
        len(ids), len(chars), n_val, a.model, sum(p.numel() for p in model.parameters()), torch.__version__, a.threads), flush=True)
    t0, window, wt = time.time(), [], 0.0
    for step in range(1, a.steps + 1):
        t = time.time()
        off = torch.randint(0, len(train) - T - 1, (B,))
        x = torch.stack([train[o:o + T] for o in off.tolist()])
        y = torch.stack([train[o + 1:o + T + 1] for o in off.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.steps, lr, lr / 10, a.warmup)
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        wt += time.time() - t
        if step % a.eval_every == 0 or step == a.steps:
            model.eval()
            with torch.no_grad():
                total = sum(F.cross_entropy(model(vx[i:i + B]).reshape(-1, len(chars)), vy[i:i + B].reshape(-1), reduction="sum").item()
                            for i in range(0, nw, B))
            model.train()
            rec = {"step": step, "train_loss": sum(window) / len(window), "val_loss": total / vy.numel(),
                   "tokens_per_s": len(window) * B * T / wt, "seconds": time.time() - t0}
            print("step %d: train loss %.4f, val loss %.4f, %.0f tokens/s" % (step, rec["train_loss"], rec["val_loss"], rec["tokens_per_s"]),
                  flush=True)
            if a.metrics:
                with open(a.metrics, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            window, wt = [], 0.0


if __name__ == "__main__":
    sys.exit(main())
