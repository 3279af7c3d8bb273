"""Train a study MoE-ViT (golden.datasets) in PyTorch and write its float weights.

The quantization study needs a *trained* model of the M3ViT family; this script is
its recipe. It needs the optional extra ``train`` (``pip install -e ".[train]"``,
PyTorch on the CPU); the weights it writes are committed, so nothing else in the
project needs torch.

The network is the numpy float model (``golden/float_model.py``) written in torch:
pre-norm blocks, exact erf GELU, LayerNorm eps from the config, the M3ViT gate
(softmax over all experts, top-k, no renormalisation), a final LayerNorm and a linear
head on the class token. Experts run densely during training (every expert on every
token, weighted by the gate's top-k probabilities, zero elsewhere), which is the
same function. After training the script re-evaluates the exported weights with the
numpy model and writes that accuracy to the recipe file.

Recipe (all in :data:`RECIPE`): seed, AdamW with cosine decay, label smoothing,
random +-1 pixel shifts, and a Switch-style load-balancing loss so that all experts
receive tokens. Only the training split is used; no choice looks at the test split.

Usage: ``python -m examples.train_digits [--dataset digits|mnist5k] [--epochs N] [--out PATH]``
"""

import argparse
import json
import math
import time

import numpy as np

from golden.datasets import DATASETS, dataset
from golden.float_model import classify
from golden.weights import param_shapes, save_npz, validate_weights

RECIPE = {"seed": 0, "epochs": 150, "batch": 64, "lr": 2e-3, "weight_decay": 0.05,
          "label_smoothing": 0.1, "shift_pixels": 1, "balance_loss": 0.01, "warmup_epochs": 5}
#: Per-dataset changes to :data:`RECIPE`.
RECIPE_FOR = {"digits": {}, "mnist5k": {"epochs": 60, "shift_pixels": 2, "warmup_epochs": 3}}


def build(torch, cfg):
    nn, F = torch.nn, torch.nn.functional
    d, hd, e = cfg.embed_dim, cfg.head_dim, cfg.num_experts

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

        def forward(self, h):
            b, n, _ = h.shape
            q, k, v = (t.reshape(b, n, cfg.num_heads, hd).transpose(1, 2)
                       for t in self.qkv(h).split(d, dim=-1))
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
            return self.proj((p @ v).transpose(1, 2).reshape(b, n, d))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(d, cfg.mlp_hidden), nn.Linear(cfg.mlp_hidden, d)

        def forward(self, h):
            return self.fc2(F.gelu(self.fc1(h))), h.new_zeros(())

    class Experts(nn.Module):
        def __init__(self):
            super().__init__()
            he = cfg.expert_hidden
            self.htoh4 = nn.ParameterDict({
                "weight": nn.Parameter(torch.randn(e, he, d) / math.sqrt(d)),
                "bias": nn.Parameter(torch.zeros(e, he))})
            self.h4toh = nn.ParameterDict({
                "weight": nn.Parameter(torch.randn(e, d, he) / math.sqrt(he) * 0.5),
                "bias": nn.Parameter(torch.zeros(e, d))})

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.w_gate = nn.Parameter(torch.randn(d, e) * 0.02)

    class Moe(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.ModuleList(Gate() for _ in range(cfg.num_tasks))
            self.experts = Experts()

        def forward(self, h):
            probs = torch.softmax(h @ self.gate[0].w_gate, dim=-1)
            top = probs.topk(cfg.top_k, dim=-1)
            weight = torch.zeros_like(probs).scatter(-1, top.indices, top.values)
            x = self.experts
            hid = F.gelu(torch.einsum("bnd,ehd->bneh", h, x.htoh4["weight"]) + x.htoh4["bias"])
            out = torch.einsum("bneh,edh->bned", hid, x.h4toh["weight"]) + x.h4toh["bias"]
            y = (weight[..., None] * out).sum(dim=2)
            share = F.one_hot(top.indices[..., 0], e).float().mean(dim=(0, 1))
            return y, e * (share * probs.mean(dim=(0, 1))).sum()

    class Block(nn.Module):
        def __init__(self, moe):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d, eps=cfg.ln_eps), nn.LayerNorm(d, eps=cfg.ln_eps)
            self.attn = Attention()
            self.mlp = Moe() if moe else Mlp()

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            y, aux = self.mlp(self.norm2(x))
            return x + y, aux

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(cfg.in_chans, d, cfg.patch_size, cfg.patch_size)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_tokens, d) * 0.02)
            self.blocks = nn.ModuleList(Block(cfg.is_moe(b)) for b in range(cfg.depth))
            self.norm = nn.LayerNorm(d, eps=cfg.ln_eps)
            self.head = nn.Linear(d, cfg.num_classes)

        def forward(self, images):
            x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
            aux = x.new_zeros(())
            for block in self.blocks:
                x, a = block(x)
                aux = aux + a
            return self.head(self.norm(x[:, 0])), aux

    return Net()


def state_to_weights(net, cfg):
    state = net.state_dict()
    out = {name: state[name].detach().cpu().numpy().astype(np.float32) for name in param_shapes(cfg)}
    return validate_weights(out, cfg)


def shift_batch(torch, images, pixels, gen):
    if not pixels:
        return images
    padded = torch.nn.functional.pad(images, (pixels,) * 4)
    h, w = images.shape[-2:]
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=gen).tolist()
    return padded[..., dy:dy + h, dx:dx + w]


def main(argv=None):
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs")
    ap.add_argument("--out", help="weights file (default: the dataset's committed model)")
    args = ap.parse_args(argv)
    data = dataset(args.dataset)
    recipe = dict(RECIPE, **RECIPE_FOR[args.dataset], dataset=args.dataset)
    if args.epochs:
        recipe["epochs"] = args.epochs
    out = args.out or str(data.weights_path)
    torch.manual_seed(recipe["seed"])
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(recipe["seed"])
    cfg = data.config()
    net = build(torch, cfg)
    images, labels = data.load_split("train")
    x_all = torch.tensor(images, dtype=torch.float32)
    y_all = torch.tensor(labels)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    steps_per_epoch = math.ceil(len(x_all) / recipe["batch"])
    total, warm = recipe["epochs"] * steps_per_epoch, recipe["warmup_epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    t0 = time.time()
    for epoch in range(recipe["epochs"]):
        net.train()
        order = torch.randperm(len(x_all), generator=gen)
        seen = correct = 0
        for i in range(0, len(order), recipe["batch"]):
            idx = order[i:i + recipe["batch"]]
            x = shift_batch(torch, x_all[idx], recipe["shift_pixels"], gen)
            logits, aux = net(x)
            loss = torch.nn.functional.cross_entropy(logits, y_all[idx],
                                                     label_smoothing=recipe["label_smoothing"])
            loss = loss + recipe["balance_loss"] * aux
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.argmax(-1) == y_all[idx]).sum())
        if epoch % 10 == 9 or epoch == recipe["epochs"] - 1:
            print(f"epoch {epoch + 1:4d}  loss {loss.item():.4f}  train acc {correct / seen:.4f}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    weights = state_to_weights(net, cfg)
    save_npz(out, weights, cfg)

    # Re-evaluate with the numpy model (the reference every quantized figure is compared to).
    test_x, test_y = data.load_split("test")
    pred = np.array([int(np.argmax(classify(cfg, weights, im))) for im in test_x])
    acc = float((pred == test_y).mean())
    net.eval()
    with torch.no_grad():
        torch_pred = net(torch.tensor(test_x, dtype=torch.float32))[0].argmax(-1).numpy()
    meta = {"recipe": recipe, "torch": torch.__version__, "train_seconds": round(time.time() - t0, 1),
            "split_seed": data.split_seed, "test_size": data.test_size,
            "numpy_float_test_accuracy": acc,
            "torch_numpy_prediction_agreement": float((torch_pred == pred).mean())}
    with open(out.removesuffix(".npz") + ".json", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    print(json.dumps(meta, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
