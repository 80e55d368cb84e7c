"""Model zoo: ``create_model(name, ...)`` builds any registered model.

Models are plain torch modules (Conv2d, Linear, BatchNorm, LayerNorm,
nn.Softmax and activation modules); they know nothing about quantization.
Importing this package registers every model below.
"""
from .activations import get_activation, list_activations
from .registry import create_model, list_models, register_model
from . import cnn, gcn, mlp, mlpmixer, mobilenetv2, resnet, vit  # noqa: F401  (registration)

__all__ = ["create_model", "list_models", "register_model", "get_activation", "list_activations"]
