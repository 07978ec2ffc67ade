import pytest
import torch
from scipy import special

from acda_lightning.nn import fourier_bessel_bases, multiscale_fourier_bessel_bases
from acda_lightning.nn.bases import fourier_bessel_elements


@pytest.mark.parametrize("kernel_size, normaliser", [(3, 2.8617), (5, 4.3907), (7, 6.3512)])
def test_dcfnet_normaliser(kernel_size, normaliser):
    elements, c = fourier_bessel_elements(kernel_size)
    assert c == pytest.approx(normaliser, abs=1e-4)
    assert len(elements) <= kernel_size * kernel_size - 1
    # after dividing by c the mean energy of the kept elements is one
    assert (elements**2).sum(axis=(1, 2)).mean() == pytest.approx(1.0)


def test_first_six_elements_have_the_documented_symmetries():
    b = fourier_bessel_bases(7, 6).double()
    rot90 = lambda t: torch.rot90(t, 1, (0, 1))  # noqa: E731
    # (0,1) and (0,2): radial, so invariant under rotation and both flips
    for i in (0, 5):
        assert torch.allclose(rot90(b[i]), b[i], atol=1e-6)
        assert torch.allclose(b[i].flip(0), b[i], atol=1e-6)
    # (1,1) cos/sin: odd, and a quarter turn maps one onto the other up to sign
    for i in (1, 2):
        assert torch.allclose(torch.rot90(b[i], 2, (0, 1)), -b[i], atol=1e-6)
    assert torch.allclose(rot90(b[1]).abs(), b[2].abs(), atol=1e-6)
    # (2,1) cos/sin: even under a half turn, and a quarter turn negates the cos element
    for i in (3, 4):
        assert torch.allclose(torch.rot90(b[i], 2, (0, 1)), b[i], atol=1e-6)
    assert torch.allclose(rot90(b[3]), -b[3], atol=1e-6)
    # distinct elements are (nearly) orthogonal on the pixel grid
    gram = b.flatten(1) @ b.flatten(1).T
    off_diagonal = gram - torch.diag(torch.diag(gram))
    assert off_diagonal.abs().max() < 0.1 * torch.diag(gram).min()


def test_multiscale_pads_small_scales_to_the_centre():
    bases = multiscale_fourier_bessel_bases(7)
    assert bases.shape == (18, 7, 7) and bases.dtype == torch.float32
    assert torch.equal(bases[:6, 2:5, 2:5], fourier_bessel_bases(3))
    assert torch.equal(bases[6:12, 1:6, 1:6], fourier_bessel_bases(5))
    assert torch.equal(bases[12:], fourier_bessel_bases(7))
    outside_3x3 = bases[:6].clone()
    outside_3x3[:, 2:5, 2:5] = 0
    assert outside_3x3.abs().sum() == 0
    assert multiscale_fourier_bessel_bases(5, 4).shape == (8, 5, 5)
    assert multiscale_fourier_bessel_bases(7, 6, scales=(7, 3)).shape == (12, 7, 7)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fourier_bessel_bases(4), "odd kernel_size"),
        (lambda: fourier_bessel_bases(3, 7), "num_bases"),
        (lambda: multiscale_fourier_bessel_bases(5, scales=(7,)), "larger than kernel_size"),
        (lambda: multiscale_fourier_bessel_bases(5, scales=()), "at least one"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_energy_is_inside_the_disc():
    b = fourier_bessel_bases(7, 6)
    k = 7
    coords = torch.arange(k) - k // 2
    r = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    assert b[:, r >= (k // 2 + 0.5) * 1.0 + 1e-6].abs().max() == 0


def test_first_element_is_the_radial_bessel_mode_positive_at_the_centre():
    """Element (0, 1): J0(j01 r / R) on the disc of radius R = k // 2 + 1/2 (j01 = 2.404825557695773, the
    first zero of J0), up to a positive scale; a flipped sign or another mode first would fail."""
    for k in (3, 5, 7):
        coords = torch.arange(k, dtype=torch.float64) - k // 2
        r = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
        radius = k // 2 + 0.5
        expected = torch.from_numpy(special.j0(2.404825557695773 * r.numpy() / radius)) * (r < radius)
        first = fourier_bessel_bases(k, 6)[0].double()
        cosine = (first * expected).sum() / (first.norm() * expected.norm())
        assert cosine.item() == pytest.approx(1.0, abs=1e-6)
