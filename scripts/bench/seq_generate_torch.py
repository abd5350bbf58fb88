"""PyTorch side of scripts/bench/seq_generate.lua: the same GPT (charlm_torch.GPT: 4 pre-norm
TransformerEncoderLayers of d_model 256, 4 heads, GELU, tied head, a position table of 512) writes 256
tokens after a 16-token prompt at batch 1, temperature 0.8, with a key/value cache: the layers'
own weights in a cached forward (F.linear, F.layer_norm, F.scaled_dot_product_attention where the
version has it), as a KV-cache sampler in eager PyTorch is written; torch.inference_mode.
Usage: python3 seq_generate_torch.py [THREADS]. Prints one JSON object."""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ops_timing_torch as timing  # noqa: E402
import charlm_torch as twin  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

threads = timing.threads()
torch.manual_seed(1)
NEW, PROMPT, D, H = 256, 16, 256, 4
model = twin.GPT(96, 512, d_model=D, n_head=H, n_layer=4).eval()
prompt = torch.randint(0, 96, (1, PROMPT))
sdpa = getattr(F, "scaled_dot_product_attention", None)


def attend(q, k, v, causal):
    if sdpa is not None:
        return sdpa(q, k, v, is_causal=causal)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return s.softmax(-1) @ v


def forward(ids, cache, past):
    """logits of the last position; cache: per layer [k, v] of [1, H, past, D/H]"""
    n = ids.shape[1]
    x = model.tok(ids) + model.pos(torch.arange(past, past + n))
    for i, layer in enumerate(model.blocks.layers):
        a = layer.self_attn
        h = F.layer_norm(x, (D,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
        q, k, v = F.linear(h, a.in_proj_weight, a.in_proj_bias).view(1, n, 3, H, D // H).permute(2, 0, 3, 1, 4)
        if cache[i] is not None:
            k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
        cache[i] = (k, v)
        o = attend(q, k, v, past == 0 and n > 1).transpose(1, 2).reshape(1, n, D)
        x = x + a.out_proj(o)
        h = F.layer_norm(x, (D,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
        x = x + layer.linear2(F.gelu(layer.linear1(h)))
    return model.head(model.ln_f(x[:, -1]))


def generate():
    with torch.inference_mode():
        g = torch.Generator().manual_seed(1)
        cache, ids = [None] * len(model.blocks.layers), prompt
        logits = forward(ids, cache, 0)
        past, out = PROMPT, [ids]
        for _ in range(NEW):
            nxt = torch.multinomial(F.softmax(logits / 0.8, -1), 1, generator=g)
            out.append(nxt)
            if len(out) - 1 == NEW:
                break
            logits = forward(nxt, cache, past)
            past += 1
        return torch.cat(out, 1)


out = {"threads": threads, "new_tokens": NEW, "prompt": PROMPT}
out["generate_ms"] = timing.time_ms(generate, 1, 5)
out["tokens_per_s"] = NEW / (out["generate_ms"] / 1e3)
timing.print_json(out)
