"""Quantized models: recipes, model surgery, quantized layers, learnable quantizers, footprint.

    recipe = make_recipe(weights="int4", activations="fp8_e4m3", softmax="fp8_e5m2")
    assignment = quantize_model(model, recipe)       # any nn.Module, in place
    print(assignment.table())
    fp = footprint(model, assignment, (1, 3, 32, 32))
    dequantize_model(model)                           # exactly the original again

Files: specs (LayerSpec, SoftmaxSpec, MatmulSpec, SlotSpec), defaults (scaling per role), recipe
(Rule, Recipe), presets (make_recipe, recipe_for_precision), walker (finding/classifying layers),
modules (QLinear...), quantizers (fixed), learnable (LSQ, codebooks), softmax, functional
(TorchFunctionMode handlers), mha (nn.MultiheadAttention decomposed), hooks, coverage (recipe
rules/slots that take no effect), surgery (quantize_model), assignment, footprint, convert (packed
integer layers run by CPU kernels, kernels_cpu).
"""
from .assignment import Assignment, LayerRow
from .coverage import RecipeCoverageError, RecipeWarning
from .convert import ConvertError, ConvertReport, ConvertWarning, convert, state_bytes
from .defaults import default_scaling, resolve
from .footprint import Footprint, footprint
from .walker import discover
from .learnable import LearnableCodebook, LSQQuantizer
from .modules import QConv1d, QConv2d, QEmbedding, QLinear, QuantLayer
from .presets import TARGETS, make_recipe, recipe_for_precision
from .quantizers import FakeQuantizer, GradQuantizer, WeightQuantizer, quantize_grad
from .recipe import KINDS, TYPE_TAGS, Recipe, Rule
from .softmax import QuantSoftmax, quantized_softmax
from .specs import LayerSpec, MatmulSpec, SlotSpec, SoftmaxSpec
from .surgery import dequantize_model, quantize_model

__all__ = ["Assignment", "ConvertError", "ConvertReport", "ConvertWarning", "FakeQuantizer", "Footprint", "GradQuantizer", "KINDS", "LSQQuantizer", "LayerRow",
           "LayerSpec", "LearnableCodebook", "MatmulSpec", "QConv1d", "QConv2d", "QEmbedding", "QLinear",
           "QuantLayer", "QuantSoftmax", "Recipe", "RecipeCoverageError", "RecipeWarning", "Rule", "SlotSpec", "SoftmaxSpec", "TARGETS", "TYPE_TAGS",
           "WeightQuantizer", "convert", "default_scaling", "dequantize_model", "discover", "footprint", "make_recipe",
           "quantize_grad", "quantize_model", "quantized_softmax", "recipe_for_precision", "resolve", "state_bytes"]
