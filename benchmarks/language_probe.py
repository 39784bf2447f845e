"""Can a backbone read the held-out instructions' zones without being taught their words? A linear probe.

    python benchmarks/language_probe.py [--model DIR] [--extra-phrasings FILE.jsonl] [--out FILE.json]

For every layer of a pretrained language model (default: the embedded MiniLM; `--model` takes any local
Hugging Face encoder or decoder directory), the instruction templates of `sim/instructions.py` are encoded and
mean-pooled over their tokens; a logistic-regression probe per instruction kind learns the zone's depth
(near/far) and side (left/centre/right) from the seen templates and is scored on the held-out ones. The
held-out implicit templates use one depth phrase per depth that no seen template has ("just in front of you",
"out at arm's length"), so their depth accuracy says whether the model's features carry that meaning at all:
what Sigma's heads, which read the same features, can reach on them zero-shot (docs/closed_loop.md, "Where
Sigma's blocks land"). Chance is 0.5 for depth and 0.33 for side.

`--extra-phrasings` adds training phrasings (JSON lines {"zone", "kind", "text"}, as `sigma rollout
--instructions` reads them) to the seen templates: whether a richer training grammar would make the held-out
phrasings readable, asked in seconds before anyone re-records. `benchmarks/richer_phrasings.jsonl` is one such
grammar, written without the held-out templates' words.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from sigma_vla.outdir import atomic_write_text
from sigma_vla.errors import SigmaError
from sigma_vla.sim.instructions import KINDS, TEMPLATES, ZONES, Template, read_instructions

TARGETS = {"depth": lambda t: ZONES[t.zone].depth, "side": lambda t: ZONES[t.zone].side}


def layer_features(model_dir: str | None, texts: list[str]) -> list[Tensor]:
    """Mean-pooled hidden states of every layer (embeddings first): a list of (N, D) tensors."""
    from transformers import AutoModel, AutoTokenizer

    from sigma_vla.interop.hf import load_minilm, minilm_path

    tok = AutoTokenizer.from_pretrained(model_dir or minilm_path(), local_files_only=True)
    if tok.pad_token is None:  # decoder tokenizers (Gemma, Llama) may have none
        tok.pad_token = tok.eos_token
    if model_dir is None:
        model = load_minilm()
    else:
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.eval()(**enc, output_hidden_states=True).hidden_states
    mask = enc["attention_mask"].unsqueeze(-1).float()  # (N, L, 1)
    return [((h.float() * mask).sum(1) / mask.sum(1)) for h in hidden]


def probe_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, classes: int) -> float:
    """Held-out accuracy of an L2-regularised logistic regression on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=200)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x_train), y_train) + 1e-2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float((probe(x_test).argmax(1) == y_test).float().mean())


def run_probe(model_dir: str | None, templates: tuple[Template, ...] = TEMPLATES) -> list[dict]:
    feats = layer_features(model_dir, [t.text for t in templates])
    rows = []
    for kind in KINDS:
        train = [i for i, t in enumerate(templates) if t.kind == kind and not t.held_out]
        test = [i for i, t in enumerate(templates) if t.kind == kind and t.held_out]
        for target, label_of in TARGETS.items():
            names = sorted({label_of(t) for t in templates})
            labels = torch.tensor([names.index(label_of(t)) for t in templates])
            for layer, x in enumerate(feats):
                acc = probe_accuracy(x[train], labels[train], x[test], labels[test], len(names))
                rows.append({"kind": kind, "target": target, "layer": layer,
                             "held_out_accuracy": round(acc, 3),
                             "train_templates": len(train), "held_out_templates": len(test)})
    return rows


def extra_templates(path: Path) -> tuple[Template, ...]:
    """A phrasings file as seen templates of its zones; each line needs an explicit or implicit kind."""
    out = []
    for i, ins in enumerate(read_instructions(path)):
        if ins.kind not in KINDS:
            raise SigmaError(f"phrasing {i + 1} needs kind 'explicit' or 'implicit', got {ins.kind!r}",
                             file=path, field="kind")
        out.append(Template(f"{ins.zone}/{ins.kind}/extra{i}", ins.zone, ins.kind, ins.text, held_out=False))
    return tuple(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="A local Hugging Face model directory (default: MiniLM).")
    ap.add_argument("--extra-phrasings", type=Path, default=None,
                    help="JSON lines {zone, kind, text}: more training phrasings for the probe to learn from.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "language_probe.json")
    args = ap.parse_args()
    if args.model is not None and not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"--model {args.model}: no config.json there (a local Hugging Face model directory)")
    try:
        extra = extra_templates(args.extra_phrasings) if args.extra_phrasings else ()
    except SigmaError as err:
        raise SystemExit(err.one_line()) from None
    rows = run_probe(args.model, TEMPLATES + extra)
    for r in rows:
        print(f"{r['kind']:8s} {r['target']:5s} layer {r['layer']}: "
              f"held-out accuracy {r['held_out_accuracy']:.2f} (of {r['held_out_templates']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"benchmark": "language_probe", "model": args.model or "MiniLM",
                                            "extra_phrasings": str(args.extra_phrasings or ""),
                                            "rows": rows}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
