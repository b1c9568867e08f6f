"""Model registry: configs name models by string.

Every model is a Flax Linen module called as ``model.apply(variables, x, train=bool)``
on NHWC float images and returning float32 logits of shape ``[batch, num_classes]``
(probabilities are ``sigmoid(logits)``). Dropout draws from the ``'dropout'`` RNG, each
example's mask from its own key (``layers.Dropout``); BatchNorm statistics live in the
``'batch_stats'`` collection. Every model takes the options ``dtype`` (compute),
``bn_axis_name`` (pmap: BatchNorm statistics over that axis, and dropout keyed by each
example's position in the global batch) and ``frozen_bn`` (a frozen backbone: running
statistics in training too, no gradient below the head), and computes its final spatial
feature map in a ``feature_map(x, train)`` method called from ``__call__`` (what
``saliency.grad_cam`` explains).

The models are platform-free: their platform ops (``OPS``: the ``conv`` module, ``max_pool``)
are fields, flax's ``nn.Conv`` and ``nn.max_pool`` unless the assembly hands in others
(``jaxposter/experiment.py``: the CPU routes on a CPU host).
"""

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxposter.models import cnn, densenet, efficientnet, resnet

# name -> constructor(num_classes=..., dropout_rate=..., dtype=..., bn_axis_name=...,
#                     frozen_bn=..., **model kwargs)
MODELS: dict[str, Callable[..., nn.Module]] = {
    "custom_cnn": cnn.CustomCNN,
    **resnet.MODELS,
    **densenet.MODELS,
    **efficientnet.MODELS,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
OPS = ("conv", "max_pool")  # platform ops: fields handed in by the assembly, not config knobs


def _fields(name: str) -> set[str]:
  ctor = MODELS[name]
  return set(getattr(getattr(ctor, "func", ctor), "__dataclass_fields__", {}))


def arguments(name: str) -> set[str]:
  """The constructor arguments of registered model `name` (its dataclass fields) but `OPS`."""
  return _fields(name) - set(OPS)


def create_model(name: str, num_classes: int, *, dtype: str = "float32",
                 ops: dict[str, Any] | None = None, **kwargs: Any) -> nn.Module:
  """Builds a registered model; unknown names or dtypes raise ValueError naming the choices.
  `ops`: platform ops by field name (`OPS`), of which the model takes those it has."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
  if dtype not in DTYPES:
    raise ValueError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
  if kwargs.get("remat") and "remat" not in _fields(name):
    raise ValueError(f"model.remat=True: model {name} has no layers to recompute (only the "
                     "DenseNets do); set model.remat=False")
  ops = {k: v for k, v in (ops or {}).items() if k in _fields(name)}
  return MODELS[name](num_classes=num_classes, dtype=DTYPES[dtype], **ops, **kwargs)
