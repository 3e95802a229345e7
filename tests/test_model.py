import torch
from torch import nn

from lossbench.model import ProtocolNet, flatten_size


def test_protocol_layers_and_parameter_count() -> None:
    model = ProtocolNet()
    assert sum(p.numel() for p in model.parameters()) == 9986
    layers = [m for m in model.modules() if not isinstance(m, nn.Sequential | ProtocolNet)]
    kinds = [type(m).__name__ for m in layers]
    assert kinds == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    conv1, conv2 = layers[0], layers[3]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.padding) == (3, 4, (3, 3), (0, 0))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.padding) == (4, 8, (3, 3), (0, 0))
    assert (layers[7].in_features, layers[7].out_features) == (288, 32)
    assert (layers[9].in_features, layers[9].out_features) == (32, 10)


def test_output_shape_and_flatten_size() -> None:
    assert flatten_size(32, 32) == 8 * 6 * 6
    assert ProtocolNet()(torch.zeros(5, 3, 32, 32)).shape == (5, 10)
    # Other input sizes adapt the flatten size instead of failing.
    assert ProtocolNet(num_classes=4, height=64, width=48)(torch.zeros(2, 3, 64, 48)).shape == (2, 4)
