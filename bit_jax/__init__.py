"""Big Transfer (BiT) ResNet-V2 in JAX/Flax.

model, params = bit_jax.load_pretrained('BiT-M-R50x1', num_classes=10)
logits = model.apply({'params': params}, images)        # NHWC in [-1, 1]
"""

from bit_jax.models import KNOWN_MODELS, ResNetV2, create_model
from bit_jax.pretrained import CheckpointMismatchError, load_pretrained

__all__ = ['KNOWN_MODELS', 'ResNetV2', 'create_model', 'CheckpointMismatchError', 'load_pretrained']
