"""Big Transfer (BiT) ResNet-V2 in JAX/Flax."""
