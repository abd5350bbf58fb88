"""PyTorch side of scripts/bench/seq_lstm.lua: the same character-level LSTM language model's
training step (Embedding 96 -> 512, nn.LSTM 2 x 512, Linear 512 -> 96; sequence 100, batch 32,
cross-entropy, AdamW, clipping at 1) and the LSTM alone. Usage: python3 seq_lstm_torch.py [THREADS]."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ops_timing_torch as timing  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

threads = timing.threads()
torch.manual_seed(1)
V, E, H, T, B = 96, 512, 512, 100, 32
emb, lstm, head = nn.Embedding(V, E), nn.LSTM(E, H, num_layers=2), nn.Linear(H, V)
params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=1e-3)
x, y = torch.randint(0, V, (T, B)), torch.randint(0, V, (T, B))


def step():
    opt.zero_grad(set_to_none=True)
    h, _ = lstm(emb(x))
    loss = nn.functional.cross_entropy(head(h).view(T * B, V), y.view(T * B))
    loss.backward()
    nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


out = {"threads": threads}
out["train_step_ms"] = timing.time_ms(step, 2, 7)
out["train_tokens_per_s"] = T * B / (out["train_step_ms"] / 1e3)
xe = torch.randn(T, B, E)


def fwd():
    with torch.no_grad():
        lstm(xe)


def fwdbwd():
    lstm.zero_grad(set_to_none=True)
    lstm(xe)[0].sum().backward()


out["lstm_forward_ms"] = timing.time_ms(fwd, 2, 7)
out["lstm_fwdbwd_ms"] = timing.time_ms(fwdbwd, 2, 7)
timing.print_json(out)
