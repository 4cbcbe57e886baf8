"""Average the weights of two generator checkpoints of the same shape (weight interpolation).

    python docs/lab/scripts/average.py A_DIR B_DIR --weight W --out OUT_DIR [--force]

Writes the generator whose every hypernetwork tensor is ``(1 - W) * A + W * B``: ``W = 0`` is A,
``W = 1`` is B. Both must be the same generator architecture (base, encoder and head settings); the
result keeps A's config. Used for docs/lab/LOG.md section 17, where A is a trained generator and B
its continuation on changed data; which ``W`` to keep is for validation to say
(``docs/lab/scripts/validate.py``), not this script.
"""

from __future__ import annotations

import argparse
import sys

import torch

from text2lora import TextToLoRA
from text2lora.errors import CheckpointError, T2LError


def average(a: TextToLoRA, b: TextToLoRA, weight: float) -> TextToLoRA:
    """``a`` with its hypernetwork weights replaced by ``(1 - weight) * a + weight * b``."""
    if a.config_dict() != b.config_dict():
        raise CheckpointError(f"{a.source} and {b.source} are different generators (base, encoder or head "
                              "settings differ; compare their config.json); only checkpoints of one "
                              "architecture can be averaged")
    sa, sb = a.hypernet.state_dict(), b.hypernet.state_dict()
    with torch.no_grad():
        a.hypernet.load_state_dict({k: torch.lerp(v.float(), sb[k].float(), weight).to(v.dtype)
                                    for k, v in sa.items()})
    return a


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="the first generator directory (weight 1 - W)")
    ap.add_argument("b", help="the second generator directory (weight W)")
    ap.add_argument("--weight", type=float, required=True, help="W, the share of B, between 0 and 1")
    ap.add_argument("--out", required=True, help="the directory to write the averaged generator to")
    ap.add_argument("--force", action="store_true", help="replace OUT if an earlier t2l run wrote it")
    args = ap.parse_args(argv)
    if not 0.0 <= args.weight <= 1.0:
        ap.error(f"--weight must be between 0 and 1, got {args.weight}")
    try:
        a, b = TextToLoRA.from_pretrained(args.a), TextToLoRA.from_pretrained(args.b)
        average(a, b, args.weight).save_pretrained(args.out, force=args.force)
    except T2LError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: (1 - {args.weight}) x {args.a} + {args.weight} x {args.b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
