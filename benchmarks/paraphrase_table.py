"""Zone phrasings -> a paraphrase table over the simulator's training templates (`sigma train --paraphrases`).

    python benchmarks/paraphrase_table.py benchmarks/richer_phrasings.jsonl --out benchmarks/richer_paraphrases.jsonl

Each seen template of a zone gets, as its other wordings, the zone's other seen templates and every phrasing of
that zone in the file (JSON lines {"zone", "kind", "text"}, as `sigma rollout --instructions` reads them). A
training sample then reads its zone in any of them, a third of the time in one of the recorded templates. Held-out
templates appear nowhere: a phrasing that is one of them is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sigma_vla.errors import SigmaError
from sigma_vla.outdir import atomic_write_text
from sigma_vla.sim.instructions import TEMPLATES, read_instructions


def paraphrase_lines(phrasings_file: Path) -> list[dict]:
    phrasings = read_instructions(phrasings_file)
    held_out = {t.text for t in TEMPLATES if t.held_out}
    for p in phrasings:
        if p.text in held_out:
            raise SigmaError(f"{p.text!r} is a held-out template", file=phrasings_file, field="text")
    seen = [t for t in TEMPLATES if not t.held_out]
    lines = []
    for t in seen:
        others = [o.text for o in seen if o.zone == t.zone and o.text != t.text]
        lines += [{"task": t.text, "text": text} for text in others + [p.text for p in phrasings if p.zone == t.zone]]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phrasings", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        lines = paraphrase_lines(args.phrasings)
    except SigmaError as err:
        raise SystemExit(err.one_line()) from None
    atomic_write_text(args.out, "".join(json.dumps(line) + "\n" for line in lines))
    print(f"{len(lines)} wordings of {len({line['task'] for line in lines})} templates -> {args.out}")


if __name__ == "__main__":
    main()
