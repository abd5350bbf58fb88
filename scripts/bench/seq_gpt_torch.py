"""PyTorch side of scripts/bench/seq_gpt.lua: the same character-level GPT's training step (token and
learned position embeddings, 4 pre-norm nn.TransformerEncoderLayer of d_model 256, 4 heads,
feed-forward 1024, GELU, causal; final LayerNorm; head tied to the token embedding; context 128,
batch 32, 96 symbols; cross-entropy, AdamW, clipping at 1). Usage: python3 seq_gpt_torch.py [THREADS]."""
import inspect
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ops_timing_torch as timing  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

threads = timing.threads()
torch.manual_seed(1)
V, D, H, L, T, B = 96, 256, 4, 4, 128, 32
tok, pos = nn.Embedding(V, D), nn.Embedding(T, D)
layer = nn.TransformerEncoderLayer(D, H, dim_feedforward=4 * D, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
blocks = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
ln_f, head = nn.LayerNorm(D), nn.Linear(D, V, bias=False)
head.weight = tok.weight
model = nn.ModuleList([tok, pos, blocks, ln_f, head])
params = list(model.parameters())
opt = torch.optim.AdamW(params, lr=3e-4)
x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
positions = torch.arange(T)
mask = torch.nn.Transformer.generate_square_subsequent_mask(T)


# is_causal (PyTorch 2.0 on) lets the encoder take the causal fast path; Debian's 1.13 has the mask only
causal = {"is_causal": True} if "is_causal" in inspect.signature(blocks.forward).parameters else {}


def forward(ids):
    h = tok(ids) + pos(positions)
    return head(ln_f(blocks(h, mask=mask, **causal)))


def step():
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(forward(x).view(B * T, V), y.view(B * T))
    loss.backward()
    nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def fwd():
    with torch.no_grad():
        forward(x)


out = {"threads": threads}
out["train_step_ms"] = timing.time_ms(step, 2, 9)
out["train_tokens_per_s"] = B * T / (out["train_step_ms"] / 1e3)
out["forward_ms"] = timing.time_ms(fwd, 2, 9)
timing.print_json(out)
