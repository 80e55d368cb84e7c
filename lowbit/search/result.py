"""What a search returns: :class:`Result` (chosen assignment as a Recipe, evaluated points, costs).

Files written by :meth:`Result.save` (one folder):

    recipe.yaml      the chosen assignment as a lowbit Recipe (``Recipe.from_yaml`` ->
                     ``quantize_model``; usable by ``lowbit run`` / ``lowbit ptq``)
    results.csv      one row per evaluated point: assignment, ``fmt:<layer>`` per layer, cost metrics
                     (size bytes, bitops, energy pJ, instructions), loss, acc (fraction),
                     acc_drop_pp (percentage points below the float model), within_budget,
                     meets_drop, pareto, chosen
    assignment.csv   the chosen assignment per layer with its lowbit.cost rows
    summary.json     strategy, baseline, chosen point, evaluations used, notes, fine-tuning
    finetuned.pt     (after QAT fine-tuning) the float state_dict; apply recipe.yaml to it again
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .costing import METRICS, cost_of, units

LAYER_COLUMNS = ("name", "type", "macs", "params", "weight_bits", "weight_bytes", "bitops", "energy_mac_pj",
                 "energy_wmem_pj", "energy_amem_pj", "energy_mem_pj", "energy_pj", "energy_is_model", "energy_unit", "instructions")


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclass
class Result:
    """The outcome of one strategy; ``table`` holds every evaluated point (see module docstring)."""

    strategy: str
    space: object
    choice: tuple
    table: pd.DataFrame
    baseline: dict
    n_evaluations: int
    objective: str = "size"
    feasible: bool = True
    notes: list = field(default_factory=list)
    finetune: dict | None = None
    energy: object = None
    extra: dict = field(default_factory=dict)

    @property
    def recipe(self):
        return self.space.recipe(self.choice, name=f"search:{self.strategy}")

    @property
    def assignment(self) -> dict:
        """{layer: choice label} of the chosen point, every layer."""
        return {n: c.label for n, c in self.space.assignment(self.choice).items()}

    @property
    def chosen(self) -> dict:
        row = self.table[self.table["chosen"]]
        return _plain(row.iloc[0].to_dict()) if len(row) else {}

    def layer_table(self) -> pd.DataFrame:
        """Per layer: chosen format and the cost model's row (macs, bytes, bitops, energy...)."""
        rep = cost_of(self.space, self.choice, self.energy)
        asg = self.space.assignment(self.choice)
        rows = []
        for r in rep.rows:
            if r.get("name") not in asg:
                continue
            d = {"layer": r["name"], "format": asg[r["name"]].label,
                 "fixed": r["name"] in self.space.fixed}
            d.update({k: r[k] for k in LAYER_COLUMNS[1:] if k in r})
            rows.append(d)
        return pd.DataFrame(rows)

    def summary(self) -> dict:
        c = self.chosen
        return _plain({"strategy": self.strategy, "objective": self.objective, "feasible": self.feasible,
                       "baseline": self.baseline, "n_evaluations": self.n_evaluations,
                       "n_points": len(self.table), "assignment": self.assignment,
                       "chosen": {k: c.get(k) for k in ("acc", "loss", "acc_drop_pp", *METRICS) if k in c},
                       "units": units(self.energy), "energy_model": getattr(self.energy, "name", "horowitz"),
                       "recipe_hash": self.recipe.hash(), "notes": list(self.notes),
                       "finetune": {k: v for k, v in (self.finetune or {}).items() if k != "state_dict"} or None,
                       **self.extra})

    def save(self, out_dir) -> dict:
        """Write the files of the module docstring; returns {name: path}."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"recipe": out / "recipe.yaml", "results": out / "results.csv",
                 "assignment": out / "assignment.csv", "summary": out / "summary.json"}
        paths["recipe"].write_text(self.recipe.to_yaml())
        self.table.to_csv(paths["results"], index=False)
        self.layer_table().to_csv(paths["assignment"], index=False)
        paths["summary"].write_text(json.dumps(self.summary(), indent=1, default=str))
        if self.finetune and "state_dict" in self.finetune:
            import torch
            paths["finetuned"] = out / "finetuned.pt"
            torch.save(self.finetune["state_dict"], paths["finetuned"])
        return paths

    def __str__(self):
        c = self.chosen
        checks = [f"within budget: {'yes' if c.get('within_budget', True) else 'NO'}",
                  f"meets max accuracy drop: {'yes' if c.get('meets_drop', True) else 'NO'}"]
        lines = [f"strategy {self.strategy}: {self.n_evaluations} evaluations, {len(self.table)} points; "
                 + ", ".join(checks),
                 f"baseline (fp32) acc {100 * self.baseline['acc']:.2f}%; "
                 f"chosen acc {100 * c.get('acc', float('nan')):.2f}% "
                 f"(drop {c.get('acc_drop_pp', float('nan')):.2f} pp)"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
