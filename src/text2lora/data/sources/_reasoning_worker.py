"""Runs reasoning-gym in a subprocess (``python -c``, with ``PYTHONPATH`` set to the install folder and
``PYTHONHASHSEED=0``): :mod:`text2lora.data.sources.reasoning` starts it. It imports nothing of text2lora.

Its one argument is a JSON request, and it writes JSON (never a pickle) to ``request["out"]``:

- ``{"mode": "list", "out": PATH}``: ``{"version": ..., "generators": {name: category}}``, every registered
  generator but ``composite`` (a mixture of the others);
- ``{"mode": "generate", "tasks": {name: seed}, "size": N, "out": PATH}``: ``{name: {"category": ...,
  "rows": [{"question": ..., "answer": ... or null, "targets": [...] (when the generator lists every
  accepted answer)}], "seconds": ...}}`` or ``{name: {"error": "..."}}``; it prints ``done <name>`` on stdout
  when a generator is done (what the generators print goes to stderr).
"""

import json
import sys
import time


def _generators():
    from reasoning_gym.factory import DATASETS

    return {name: cls.__module__.split(".")[1] for name, (cls, _) in sorted(DATASETS.items()) if name != "composite"}


def _seed_globals(seed):
    """Seed the process-wide generators: some generators (list_functions, the code snippets codeio runs) draw
    from ``random``'s global state rather than their own seeded one, or make an unseeded numpy Generator,
    which then takes its seed from ``random``'s seeded state instead of the operating system's entropy; a
    snippet that reseeds ``random`` from the operating system reseeds it from the row's seed."""
    import random

    seed_of = getattr(random.seed, "unseeded", random.seed)
    seed_of(seed)

    def reseed(a=None, version=2):  # `random.seed()` (OS entropy) in a snippet reseeds from the row's seed
        seed_of(seed + 1 if a is None else a, version)

    reseed.unseeded = seed_of
    random.seed = reseed
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed % 2**32)
    make = getattr(numpy.random.default_rng, "unseeded", numpy.random.default_rng)

    def default_rng(seed=None):
        return make(random.getrandbits(64) if seed is None else seed)

    default_rng.unseeded = make
    numpy.random.default_rng = default_rng


def _row(entry):
    answer = entry.get("answer")
    row = {"question": str(entry["question"]), "answer": None if answer is None else str(answer)}
    accepted = (entry.get("metadata") or {}).get("valid_answers")
    if isinstance(accepted, (list, tuple)) and accepted and all(isinstance(a, str) for a in accepted):
        row["targets"] = list(accepted)
    return row


def main(request):
    import importlib.metadata

    import reasoning_gym

    generators = _generators()
    if request["mode"] == "list":
        out = {"version": importlib.metadata.version("reasoning-gym"), "generators": generators}
    else:
        out = {}
        progress, sys.stdout = sys.stdout, sys.stderr
        for name, seed in request["tasks"].items():
            t0 = time.perf_counter()
            try:
                _seed_globals(seed)
                data = reasoning_gym.create_dataset(name, size=request["size"], seed=seed)
                rows = []
                for i in range(request["size"]):
                    _seed_globals(seed * 1_000_003 + i)  # each row the same whatever ran before it
                    rows.append(_row(data[i]))
                out[name] = {"category": generators.get(name, "other"), "rows": rows}
            except Exception as e:  # a generator that fails is dropped with the reason, not the whole build
                out[name] = {"error": f"{type(e).__name__}: {e}"}
            out[name]["seconds"] = round(time.perf_counter() - t0, 2)
            print("done", name, file=progress, flush=True)
    with open(request["out"], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
