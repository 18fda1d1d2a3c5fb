"""The one definition of every network: equinox classifiers that serve both as training
models (:mod:`bea.nn`, Section 6) and as the sweeps' problems (:mod:`bea.problems`).

The paper trains ResNet-50 and ResNet-101 on CIFAR-10/100 with full-batch Adam
(Figures 3 to 8); the authors' code also offers a plain CNN and a ViT. The sweeps need
smooth losses (assumption (3): no ReLU, no max-pool): :class:`MLP` (``bea.problems.mlp``)
and :class:`SmoothCNN` (``bea.problems.cnn``). All models here map ONE example
``(channels, height, width)`` (or its flattened pixels) to logits ``(num_classes,)``;
batching is ``jax.vmap``.

Normalisation under full-batch accumulation
-------------------------------------------
The full-batch gradient of a network that does not fit in memory is accumulated over
physical batches. With BatchNorm the forward pass of example i depends on the other
examples of its physical batch (through the batch mean and variance), so the
"full-batch loss" itself depends on how the data is split into physical batches:
changing the physical batch size, the number of devices or the padding changes the
gradient, and the accumulated gradient is not the gradient of any fixed function of
the whole data set. (The running statistics are also state that the optimizer does
not see.) GroupNorm (ResNets) and LayerNorm (ViT) normalise each example on its own,
so the loss is a plain sum of per-example terms and the accumulated gradient is
exactly the full-batch gradient, whatever the split (``tests/test_nn_train.py``
checks this to round-off). This is why every model here uses per-example
normalisation; the paper's ResNets use BatchNorm, so our ResNets are GroupNorm
variants of the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = [
    "CNN",
    "MLP",
    "SmoothCNN",
    "mlp_logits",
    "ResNet",
    "ViT",
    "MODEL_NAMES",
    "SMOOTH_MODELS",
    "ACTIVATIONS",
    "make_model",
    "cast_floating",
]

MODEL_NAMES = ("resnet50", "resnet101", "cnn", "vit", "cnn_small", "resnet_small", "mlp",
               "cnn_smooth", "cnn_small_smooth", "resnet_small_smooth")
SMOOTH_MODELS = ("vit", "mlp", "cnn_smooth", "cnn_small_smooth", "resnet_small_smooth")
"""The models whose training loss is C^infinity in the parameters (assumption (3) of the
paper needs C^4): no ReLU and no max-pool. ``vit`` (GELU, LayerNorm, softmax), ``mlp`` and
``cnn_smooth`` (tanh), ``cnn_small_smooth`` and ``resnet_small_smooth`` (GELU, average
pooling; GroupNorm divides by sqrt(var + 1e-5), smooth: equinox's clamp max(0, var) is the
identity since var >= 0). The others use ReLU (and the CNNs
max-pool): their loss is only piecewise smooth, and the modified flows of ``bea.mechanism``
are refused on them without an explicit opt-in."""

ACTIVATIONS: dict[str, Callable] = {"relu": jax.nn.relu, "gelu": jax.nn.gelu,
                                    "softplus": jax.nn.softplus, "tanh": jnp.tanh}
"""The activations the CNN and ResNet take by name (a static field, so that a model is a
plain pytree of its parameters)."""


def _groups(channels: int, max_groups: int) -> int:
    """Largest group count <= max_groups dividing channels (GroupNorm needs a divisor)."""
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


class CNN(eqx.Module):
    """Blocks of [conv3x3, relu, conv3x3, relu, max-pool 2] then dense layers.

    The authors' CNN uses widths (32, 64, 128) and one hidden dense layer of 512.
    No normalisation, so nothing couples examples. ``activation`` (a key of
    :data:`ACTIVATIONS`) and ``pool`` ('max' or 'avg') give the smooth variant
    (``cnn_small_smooth``: GELU and 2x2 average pooling, a C^infinity loss).
    """

    convs: list
    dense: list
    pool: eqx.Module
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 512,
        *,
        key: PRNGKeyArray,
        activation: str = "relu",
        pool: str = "max",
    ):
        if activation not in ACTIVATIONS or pool not in ("max", "avg"):
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} and pool "
                             f"'max' or 'avg', got {activation!r}, {pool!r}")
        keys = iter(jax.random.split(key, 2 * len(widths) + 2))
        convs, c, size = [], in_channels, image_size
        for w in widths:
            convs.append(eqx.nn.Conv2d(c, w, 3, padding=1, key=next(keys)))
            convs.append(eqx.nn.Conv2d(w, w, 3, padding=1, key=next(keys)))
            c, size = w, max(size // 2, 1)
        self.convs = convs
        self.pool = eqx.nn.MaxPool2d(2, 2) if pool == "max" else eqx.nn.AvgPool2d(2, 2)
        self.activation = activation
        flat = c * size * size
        self.dense = [
            eqx.nn.Linear(flat, hidden, key=next(keys)),
            eqx.nn.Linear(hidden, num_classes, key=next(keys)),
        ]

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, " k"]:
        act = ACTIVATIONS[self.activation]
        for i in range(0, len(self.convs), 2):
            x = act(self.convs[i](x))
            x = act(self.convs[i + 1](x))
            if x.shape[-1] >= 2:
                x = self.pool(x)
        x = act(self.dense[0](x.reshape(-1)))
        return self.dense[1](x)


def mlp_logits(params: dict[str, Array], x: Float[Array, "... d"]) -> Float[Array, "... k"]:
    """tanh(x W1 + b1) W2 + b2: the logits of :class:`MLP` for one example or a batch."""
    return jnp.tanh(x @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]


class MLP(eqx.Module):
    """A smooth (tanh) one-hidden-layer perceptron of the flattened pixels:
    logits = tanh(x W1 + b1) W2 + b2 (:func:`mlp_logits`), ``bea.problems.mlp``'s network.

    The parameters are one dict ``params`` = {W1, b1, W2, b2}, W1 of shape (d_in, hidden)
    drawn N(0, 1/d_in), W2 (hidden, num_classes) N(0, 1/hidden), zero biases; flattened
    (``ravel_pytree``) in the order W1, W2, b1, b2.
    """

    params: dict

    def __init__(self, d_in: int, hidden: int, num_classes: int, *, key: PRNGKeyArray):
        key1, key2 = jax.random.split(key)
        self.params = {
            "W1": jax.random.normal(key1, (d_in, hidden)) / np.sqrt(d_in),
            "b1": jnp.zeros(hidden),
            "W2": jax.random.normal(key2, (hidden, num_classes)) / np.sqrt(hidden),
            "b2": jnp.zeros(num_classes),
        }

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " k"]:
        return mlp_logits(self.params, x.reshape(-1))


class SmoothCNN(eqx.Module):
    """A small smooth convolutional network, ``bea.problems.cnn``'s network:

        conv 3x3 stride 2 (c -> c1) -> tanh -> conv 3x3 stride 2 (c1 -> c2) -> tanh
        -> flatten -> linear (-> hidden) -> tanh -> linear (-> num_classes)

    Strided convolutions instead of pooling and tanh throughout keep the loss C^infinity
    (assumption (3) needs C^4; docs/math.md, section 6). On 8x8 digits with the defaults
    p = 3658. The input may be an image (c, s, s) or its flattened pixels.
    """

    convs: list
    dense: list
    shape: tuple[int, int, int] = eqx.field(static=True)

    def __init__(self, in_channels: int, image_size: int, num_classes: int,
                 channels: Sequence[int] = (8, 16), hidden: int = 32, *, key: PRNGKeyArray,
                 dtype=None):
        c1, c2 = channels
        k1, k2, k3, k4 = jax.random.split(key, 4)
        size = (image_size - 1) // 2 + 1  # after one 3x3 stride-2 convolution, padding 1
        size = (size - 1) // 2 + 1
        self.convs = [
            eqx.nn.Conv2d(in_channels, c1, 3, stride=2, padding=1, key=k1, dtype=dtype),
            eqx.nn.Conv2d(c1, c2, 3, stride=2, padding=1, key=k2, dtype=dtype),
        ]
        self.dense = [
            eqx.nn.Linear(c2 * size * size, hidden, key=k3, dtype=dtype),
            eqx.nn.Linear(hidden, num_classes, key=k4, dtype=dtype),
        ]
        self.shape = (in_channels, image_size, image_size)

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " k"]:
        z = jnp.tanh(self.convs[0](x.reshape(self.shape)))
        z = jnp.tanh(self.convs[1](z))
        return self.dense[1](jnp.tanh(self.dense[0](z.reshape(-1))))


KERNELS = {"basic": (3, 3), "bottleneck": (1, 3, 1)}
"""ResNet's residual blocks by their convolutions' kernel sizes: two 3x3 (ResNet-18/34),
or 1x1 -> 3x3 -> 1x1 with 4x the channels out (ResNet-50/101)."""
EXPANSION = {"basic": 1, "bottleneck": 4}


class ResidualBlock(eqx.Module):
    """conv -> GroupNorm layers, relu between them, with an identity (or 1x1 conv +
    GroupNorm) shortcut and a relu after the sum; the stride sits on the first 3x3
    convolution. ``kind``: 'basic' or 'bottleneck' (:data:`KERNELS`); ``activation`` a key
    of :data:`ACTIVATIONS` in place of relu."""

    convs: list
    norms: list
    shortcut: list
    activation: str = eqx.field(static=True)

    def __init__(self, c_in: int, width: int, stride: int, groups: int, kind: str, *,
                 key: PRNGKeyArray, activation: str = "relu"):
        self.activation = activation
        kernels = KERNELS[kind]
        widths = [width] * (len(kernels) - 1) + [width * EXPANSION[kind]]
        keys = jax.random.split(key, len(kernels) + 1)
        first3 = kernels.index(3)
        self.convs, self.norms, c = [], [], c_in
        for i, (w, k) in enumerate(zip(widths, kernels, strict=True)):
            self.convs.append(eqx.nn.Conv2d(c, w, k, stride if i == first3 else 1,
                                            padding=k // 2, use_bias=False, key=keys[i]))
            self.norms.append(eqx.nn.GroupNorm(_groups(w, groups), w))
            c = w
        self.shortcut = _shortcut(c_in, c, stride, groups, keys[-1])

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        y = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            y = norm(conv(y))
            if i < len(self.convs) - 1:
                y = act(y)
        s = x if not self.shortcut else self.shortcut[1](self.shortcut[0](x))
        return act(y + s)


def _shortcut(c_in: int, c_out: int, stride: int, groups: int, key: PRNGKeyArray) -> list:
    if stride == 1 and c_in == c_out:
        return []
    return [
        eqx.nn.Conv2d(c_in, c_out, 1, stride, use_bias=False, key=key),
        eqx.nn.GroupNorm(_groups(c_out, groups), c_out),
    ]


class ResNet(eqx.Module):
    """CIFAR ResNet (He et al.): 3x3 stride-1 stem, no max-pool, four stages, GroupNorm.

    ``resnet50``: bottleneck blocks (3, 4, 6, 3) of widths (64, 128, 256, 512);
    ``resnet101``: (3, 4, 23, 3). BatchNorm is replaced by GroupNorm (module docstring).
    ``activation`` (a key of :data:`ACTIVATIONS`) replaces every relu:
    ``resnet_small_smooth`` uses GELU; GroupNorm (sqrt(var + 1e-5)) and the mean pool are
    smooth already, so its loss is C^infinity.
    """

    stem: eqx.nn.Conv2d
    stem_norm: eqx.nn.GroupNorm
    blocks: list
    head: eqx.nn.Linear
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        block: str = "bottleneck",
        depths: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        groups: int = 32,
        *,
        key: PRNGKeyArray,
        activation: str = "relu",
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got "
                             f"{activation!r}")
        self.activation = activation
        kstem, khead, kblocks = jax.random.split(key, 3)
        self.stem = eqx.nn.Conv2d(in_channels, stem_width, 3, padding=1, use_bias=False, key=kstem)
        self.stem_norm = eqx.nn.GroupNorm(_groups(stem_width, groups), stem_width)
        keys = iter(jax.random.split(kblocks, sum(depths)))
        blocks, c = [], stem_width
        for stage, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            for i in range(depth):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(ResidualBlock(c, width, stride, groups, block, key=next(keys),
                                            activation=activation))
                c = width * EXPANSION[block]
        self.blocks = blocks
        self.head = eqx.nn.Linear(c, num_classes, key=khead)

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, " k"]:
        x = ACTIVATIONS[self.activation](self.stem_norm(self.stem(x)))
        for b in self.blocks:
            x = b(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


class _EncoderBlock(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp1: eqx.nn.Linear
    mlp2: eqx.nn.Linear

    def __init__(self, width: int, heads: int, mlp: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(width)
        self.attn = eqx.nn.MultiheadAttention(heads, width, use_query_bias=True,
                                              use_key_bias=True, use_value_bias=True,
                                              use_output_bias=True, key=k1)
        self.norm2 = eqx.nn.LayerNorm(width)
        self.mlp1 = eqx.nn.Linear(width, mlp, key=k2)
        self.mlp2 = eqx.nn.Linear(mlp, width, key=k3)

    def __call__(self, t):
        y = jax.vmap(self.norm1)(t)
        t = t + self.attn(y, y, y)
        y = jax.vmap(self.norm2)(t)
        return t + jax.vmap(lambda z: self.mlp2(jax.nn.gelu(self.mlp1(z))))(y)


class ViT(eqx.Module):
    """Vision transformer: patch embedding, learned positions, pre-LN encoder, mean pool.

    The authors' ViT: patch 4, width 512, depth 6, 16 heads, MLP 1024. LayerNorm acts
    per token, so examples never interact.
    """

    patch: eqx.nn.Conv2d
    pos: Float[Array, "n d"]
    blocks: list
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        patch: int = 4,
        width: int = 512,
        depth: int = 6,
        heads: int = 16,
        mlp: int = 1024,
        *,
        key: PRNGKeyArray,
    ):
        kp, kpos, kh, kb = jax.random.split(key, 4)
        self.patch = eqx.nn.Conv2d(in_channels, width, patch, patch, key=kp)
        n = (image_size // patch) ** 2
        self.pos = 0.02 * jax.random.normal(kpos, (n, width))
        self.blocks = [_EncoderBlock(width, heads, mlp, key=k) for k in jax.random.split(kb, depth)]
        self.norm = eqx.nn.LayerNorm(width)
        self.head = eqx.nn.Linear(width, num_classes, key=kh)

    def __call__(self, x: Float[Array, "c h w"]) -> Float[Array, " k"]:
        p = self.patch(x)  # (width, h/patch, w/patch)
        t = p.reshape(p.shape[0], -1).T + self.pos
        for b in self.blocks:
            t = b(t)
        return self.head(jnp.mean(jax.vmap(self.norm)(t), axis=0))


_BUILDERS: dict[str, Callable[..., eqx.Module]] = {
    "resnet50": lambda c, s, k, key: ResNet(c, k, "bottleneck", (3, 4, 6, 3), key=key),
    "resnet101": lambda c, s, k, key: ResNet(c, k, "bottleneck", (3, 4, 23, 3), key=key),
    "cnn": lambda c, s, k, key: CNN(c, s, k, (32, 64, 128), 512, key=key),
    "vit": lambda c, s, k, key: ViT(c, s, k, 4, 512, 6, 16, 1024, key=key),
    # CPU-sized: a few thousand parameters, seconds per hundred full-batch steps on digits.
    "cnn_small": lambda c, s, k, key: CNN(c, s, k, (8, 16), 32, key=key),
    "resnet_small": lambda c, s, k, key: ResNet(
        c, k, "basic", (1, 1), (8, 16), stem_width=8, groups=4, key=key
    ),
    # smooth: the sweeps' problems (bea.problems.mlp and bea.problems.cnn), trainable too
    "mlp": lambda c, s, k, key: MLP(c * s * s, 16, k, key=key),
    "cnn_smooth": lambda c, s, k, key: SmoothCNN(c, s, k, (8, 16), 32, key=key),
    # smooth variants of the CPU-sized ReLU models (same widths, same parameter count):
    # GELU for relu, 2x2 average pooling for max-pool (Section 7: the theory needs smooth E)
    "cnn_small_smooth": lambda c, s, k, key: CNN(c, s, k, (8, 16), 32, key=key,
                                                 activation="gelu", pool="avg"),
    "resnet_small_smooth": lambda c, s, k, key: ResNet(
        c, k, "basic", (1, 1), (8, 16), stem_width=8, groups=4, key=key, activation="gelu"
    ),
}


def cast_floating(tree, dtype) -> object:
    """Cast every floating-point array leaf of ``tree`` to ``dtype`` (the rest unchanged)."""

    def cast(a):
        if eqx.is_array(a) and jnp.issubdtype(a.dtype, jnp.floating):
            return a.astype(dtype)
        return a

    return jax.tree_util.tree_map(cast, tree)


def make_model(
    name: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    key: PRNGKeyArray,
    dtype=jnp.float32,
) -> eqx.Module:
    """Build model ``name`` (one of ``MODEL_NAMES``) with parameters of ``dtype``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return cast_floating(_BUILDERS[name](in_channels, image_size, num_classes, key), dtype)
