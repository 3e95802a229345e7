import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms

from lossbench.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    PADDING,
    Normalizer,
    PaddedPixels,
    TestSet,
    TrainingSet,
    pad_images,
)
from lossbench.storage import PreparedData

CPU = torch.device("cpu")


def _random_uint8(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)


def test_crops_match_torchvision_with_the_same_offsets_and_cover_every_offset() -> None:
    images = _random_uint8(4000)
    padded = pad_images(images)
    index = torch.arange(len(images))
    # The identity "normalisation" keeps pixel values comparable with the uint8 source.
    pixels = PaddedPixels.from_images(images, lambda batch: batch.float())
    out = pixels.crop_and_flip(index, torch.Generator().manual_seed(3)).to(torch.uint8)
    assert out.shape == (4000, 3, 32, 32) and out.is_contiguous(memory_format=torch.channels_last)

    tops, lefts, flips = [], [], []
    for i in range(601):  # enough to see every offset
        # Recover each image's offset and flip by matching against every candidate.
        found = None
        for top in range(2 * PADDING + 1):
            for left in range(2 * PADDING + 1):
                crop = TF.crop(padded[i], top, left, 32, 32)
                if torch.equal(out[i], crop):
                    found = (top, left, False)
                elif torch.equal(out[i], TF.hflip(crop)):
                    found = (top, left, True)
        assert found is not None, f"image {i} is not a crop (or mirrored crop) of its padded source"
        tops.append(found[0])
        lefts.append(found[1])
        flips.append(found[2])
    assert sorted(set(tops)) == list(range(9))
    assert sorted(set(lefts)) == list(range(9))
    assert 0.42 < np.mean(flips) < 0.58


def test_about_half_the_images_are_flipped() -> None:
    # Left-right symmetric source can't tell a flip; use an image whose column index is its value.
    columns = torch.arange(40, dtype=torch.float32).expand(20000, 1, 40, 40)
    out = PaddedPixels.from_padded(columns).crop_and_flip(
        torch.arange(20000), torch.Generator().manual_seed(5)
    )
    out = out.long()
    flipped = (out[:, 0, 0, 0] > out[:, 0, 0, 1]).double()
    # Binomial(20000, 0.5): 4 standard deviations is 0.014.
    assert abs(flipped.mean().item() - 0.5) < 0.014
    offsets = torch.minimum(out[:, 0, 0, 0], out[:, 0, 0, -1])
    counts = torch.bincount(offsets, minlength=9)
    assert len(counts) == 9 and (counts > 20000 / 9 * 0.85).all()


def test_normalizer_matches_torchvision_to_tensor_and_normalize() -> None:
    image = _random_uint8(1, seed=7)[0]
    reference = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    expected = reference(Image.fromarray(image.permute(1, 2, 0).numpy()))
    torch.testing.assert_close(Normalizer(CPU)(image[None])[0], expected, rtol=1e-5, atol=1e-5)


def test_padding_is_black_before_normalisation() -> None:
    padded = pad_images(_random_uint8(2))
    assert padded.shape == (2, 3, 40, 40)
    assert padded[:, :, :PADDING].eq(0).all() and padded[:, :, :, -PADDING:].eq(0).all()


def test_test_images_are_only_normalised_never_augmented() -> None:
    train, test = _random_uint8(10, seed=1), _random_uint8(6, seed=2)
    data = PreparedData(
        train.numpy(), np.arange(10) % 10, test.numpy(), np.arange(6) % 10, tuple(str(i) for i in range(10))
    )
    test_set, training_set = TestSet.from_prepared(data, CPU), TrainingSet.from_prepared(data, CPU)
    torch.testing.assert_close(test_set.images, Normalizer(CPU)(test))
    # Training pixels: padded with black, then normalised, one row per pixel.
    expected_pixels = Normalizer(CPU)(pad_images(train)).permute(0, 2, 3, 1).reshape(-1, 3)
    torch.testing.assert_close(training_set.pixels.pixels, expected_pixels)


def test_crops_of_normalised_pixels_are_normalised_crops() -> None:
    images = _random_uint8(64, seed=4)
    normalize = Normalizer(CPU)
    raw = PaddedPixels.from_images(images, lambda batch: batch.float())
    normalised = PaddedPixels.from_images(images, normalize)
    index = torch.arange(63, -1, -1)
    crops = normalised.crop_and_flip(index, torch.Generator().manual_seed(9))
    raw_crops = raw.crop_and_flip(index, torch.Generator().manual_seed(9))
    torch.testing.assert_close(crops, normalize(raw_crops.to(torch.uint8)))
