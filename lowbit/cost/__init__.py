"""Cost models: MACs, storage with scale overhead, compression, BitOps, activation memory, energy and
an instruction-count proxy, per layer and in total.

    layers = profile_layers(model, (1, 1, 8, 8))            # one dummy forward pass
    plan = uniform_plan(layers, weight="int4", act="int8")   # or plan_from_assignment(assignment)
    report = model_cost(layers, plan)                        # EnergyModel.horowitz() by default
    print(report.table()); report.total["energy_pj"]; report.rows[0]["bitops"]

Files: profile (profile_layers over lowbit.nn.walker's LayerInfo records), energy (EnergyModel: Horowitz ISSCC 2014, user files,
the seed's relative model), model (LayerPlan, plans, model_cost, CostReport), table. The command
``lowbit cost``: :mod:`lowbit.cli.cost`.
"""
from .energy import EnergyModel
from .measured import InstructionTable
from .model import CostReport, LayerPlan, model_cost, plan_from_assignment, simd_lanes, uniform_plan
from .profile import LayerInfo, LayerProfile, profile_layers


__all__ = ["CostReport", "EnergyModel", "InstructionTable", "LayerInfo", "LayerPlan", "LayerProfile", "model_cost",
           "plan_from_assignment", "profile_layers", "simd_lanes", "uniform_plan"]
