"""Issue 17's parity check: the language models of the second main job (nnr.models.GPT and
RecurrentLM with an LSTM) trained for 20 AdamW steps in nnrun and in PyTorch from the same weights
(nnrun writes them with nnr.save; PyTorch reads the safetensors file) on the same batches, with
train_charlm.lua's optimizer (nanoGPT's weight-decay groups, betas 0.9/0.95), warm-up and cosine
schedule and gradient clipping: every step's loss within 1e-4 relative. The benchmark shapes (GPT 4
layers of d_model 256, 4 heads, context 128; LSTM 2 x 512, sequence 100) at batch 8.
Usage: python3 charlm.py [--nnrun PATH]; the last line is "N passed, N failed"; 77 without torch."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("skip: PyTorch is not installed")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "bench"))
import charlm_torch as twin  # noqa: E402

STEPS = 20
CASES = {
    "gpt": ({"kind": "gpt", "vocab_size": 96, "context": 128, "d_model": 256, "n_head": 4, "n_layer": 4}, 8, 128, 1e-3),
    "lstm": ({"kind": "rnn_lm", "vocab_size": 96, "cell": "lstm", "hidden": 512, "num_layers": 2}, 8, 100, 2e-3),
}

# the nnrun side: the model, its initial weights and the batches written out, then 20 steps
LUA = r"""
local nnr = require "nnr"
local lm = dofile("scripts/charlm.lua")
local cfg = assert(loadstring("return " .. arg[1]))()       -- the config as a Lua table literal
local batch, seq, lr, steps, dir = tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), tonumber(arg[5]), arg[6]
nnr.manual_seed(7)
local model = nnr.models.build(cfg)
nnr.save(dir .. "/init.safetensors", model:state_dict())
local xs, ys = {}, {}
for s = 1, steps do
  local w = nnr.randint(1, cfg.vocab_size + 1, { batch, seq + 1 })
  xs["x" .. s], ys["y" .. s] = w:narrow(2, 1, seq):contiguous(), w:narrow(2, 2, seq):contiguous()
end
local batches = {}
for k, v in pairs(xs) do batches[k] = v end
for k, v in pairs(ys) do batches[k] = v end
nnr.save(dir .. "/batches.safetensors", batches)
local opt = nnr.optim.AdamW(nnr.models.param_groups(model, 0.1), { lr = lr, betas = { 0.9, 0.95 } })
local params, losses = model:parameters(), {}
for s = 1, steps do
  for _, g in ipairs(opt.param_groups) do g.lr = lm.lr_at(s, steps, lr, lr / 10, 5) end
  opt:zero_grad()
  local loss = nnr.models.lm_loss(model(xs["x" .. s]), ys["y" .. s])
  loss:backward()
  nnr.nn.utils.clip_grad_norm(params, 1.0)
  opt:step()
  losses[s] = string.format("%.9g", loss:item())
end
print("LOSSES " .. table.concat(losses, " "))
"""


def torch_losses(cfg, lr, d):
    torch.manual_seed(0)
    model = twin.build(cfg)
    twin.load_nnrun_state(model, os.path.join(d, "init.safetensors"))
    batches = twin.read_safetensors(os.path.join(d, "batches.safetensors"))
    opt = torch.optim.AdamW(twin.param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
    out = []
    for s in range(1, STEPS + 1):
        for g in opt.param_groups:
            g["lr"] = twin.lr_at(s, STEPS, lr, lr / 10, 5)
        opt.zero_grad(set_to_none=True)
        loss = twin.lm_loss(model(batches["x%d" % s] - 1), batches["y%d" % s] - 1)     # nnrun's ids are 1-based
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        out.append(loss.item())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nnrun", default="build/bin/nnrun")
    a = ap.parse_args()
    torch.set_num_threads(2)
    passed = failed = 0
    for name, (cfg, batch, seq, lr) in CASES.items():
        with tempfile.TemporaryDirectory() as d:
            script = os.path.join(d, "parity.lua")
            with open(script, "w") as f:
                f.write(LUA)
            r = subprocess.run([a.nnrun, script, "{%s}" % ", ".join("%s = %s" % (k, json.dumps(v)) for k, v in cfg.items()), str(batch), str(seq), str(lr), str(STEPS), d], capture_output=True,
                               text=True, timeout=600)
            line = [x for x in r.stdout.splitlines() if x.startswith("LOSSES ")]
            if r.returncode != 0 or not line:
                print("FAIL %s: nnrun failed (%d)\n%s%s" % (name, r.returncode, r.stdout, r.stderr))
                failed += 1
                continue
            mine = [float(v) for v in line[0].split()[1:]]
            theirs = torch_losses(cfg, lr, d)
        worst = max(abs(m - t) / abs(t) for m, t in zip(mine, theirs))
        ok = len(mine) == STEPS and worst <= 1e-4
        print("%s %s: %d AdamW steps, loss %.6f -> %.6f (PyTorch %.6f -> %.6f), worst relative difference %.2e" % (
            "ok" if ok else "FAIL", name, STEPS, mine[0], mine[-1], theirs[0], theirs[-1], worst))
        passed, failed = passed + ok, failed + (not ok)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
