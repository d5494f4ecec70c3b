import math

import pytest
import torch
from torch_geometric.data import Data

from pointcmt_pyg.datasets.transforms import (
    Jitter,
    NormalizeBoundingBox,
    RandomRotateUp,
    RandomScale,
    RandomShift,
    SamplePoints,
    SampleSurface,
    normalize_bbox,
    rotation_about_axis,
    sample_surface,
)


def _asym_cloud():
    # Three points at the origin and one far corner: mean (1, .5, .25), bbox centre (2, 1, .5).
    return torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 2.0, 1.0]])


def test_normalize_bbox_centres_the_box_not_the_mean():
    out, center, scale = normalize_bbox(_asym_cloud(), return_params=True)
    expected = torch.tensor([[-0.5, -0.25, -0.125]] * 3 + [[0.5, 0.25, 0.125]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(center, torch.tensor([[2.0, 1.0, 0.5]]))
    torch.testing.assert_close(scale, torch.tensor([[4.0]]))
    # Mean-centring (the official scale()) would put the far point at 0.75 / 4 * 4 = 0.75 > 0.5.
    mean_centred = _asym_cloud() - _asym_cloud().mean(0)
    assert float(mean_centred.abs().max()) / 4.0 > 0.5 + 1e-6
    assert float(out.amax(0).max()) == pytest.approx(0.5) and float(out.amin(0).min()) == pytest.approx(-0.5)


def test_normalize_bbox_batched_and_degenerate():
    a = torch.randn(50, 3) * torch.tensor([3.0, 1.0, 0.2]) + 7.0
    b = torch.rand(50, 3)
    out = normalize_bbox(torch.stack([a, b]))
    torch.testing.assert_close(out[0], normalize_bbox(a))
    torch.testing.assert_close(out[1], normalize_bbox(b))
    extent = out.amax(1) - out.amin(1)
    torch.testing.assert_close(extent.amax(-1), torch.ones(2))
    torch.testing.assert_close(out.amax(1) + out.amin(1), torch.zeros(2, 3), atol=1e-6, rtol=0)
    single = normalize_bbox(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    torch.testing.assert_close(single, torch.zeros(2, 3))


@pytest.mark.parametrize("bad", [torch.zeros(5, 2), torch.zeros(0, 3), torch.zeros(4, 3, dtype=torch.long), [[0, 0, 0]]])
def test_normalize_bbox_rejects_bad_input(bad):
    with pytest.raises((ValueError, TypeError), match="pos"):
        normalize_bbox(bad)


def test_normalize_bounding_box_transform_moves_mesh_identically():
    pos = _asym_cloud()
    mesh_pos = torch.tensor([[-1.0, 0.0, 0.0], [4.0, 2.0, 1.0], [0.0, 3.0, 0.0]])
    data = Data(pos=pos, mesh_pos=mesh_pos, mesh_face=torch.tensor([[0, 1, 2]]))
    out = NormalizeBoundingBox()(data)
    torch.testing.assert_close(out.pos, normalize_bbox(pos))
    torch.testing.assert_close(out.mesh_pos, (mesh_pos - torch.tensor([2.0, 1.0, 0.5])) / 4.0)
    assert data.pos is pos  # input left untouched
    out = NormalizeBoundingBox(reference="mesh")(data)
    # Mesh box: min (-1, 0, 0), max (4, 3, 1): centre (1.5, 1.5, .5), extent 5.
    torch.testing.assert_close(out.mesh_pos, normalize_bbox(mesh_pos))
    torch.testing.assert_close(out.pos, (pos - torch.tensor([1.5, 1.5, 0.5])) / 5.0)
    with pytest.raises(ValueError, match="reference"):
        NormalizeBoundingBox(reference="points")


def test_random_scale_matches_hand_computation():
    pos = torch.randn(20, 3)
    mesh = torch.randn(5, 3)
    g = torch.Generator().manual_seed(3)
    out = RandomScale((0.5, 2.0), generator=g)(Data(pos=pos, mesh_pos=mesh))
    r = torch.rand(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    factor = (0.5 + 1.5 * r).float()
    torch.testing.assert_close(out.pos, pos * factor)
    torch.testing.assert_close(out.mesh_pos, mesh * factor)
    iso = RandomScale((0.5, 2.0), anisotropic=False)(Data(pos=torch.ones(4, 3)))
    assert torch.unique(iso.pos).numel() == 1 and 0.5 <= float(iso.pos[0, 0]) <= 2.0
    with pytest.raises(ValueError, match="scales"):
        RandomScale((2.0, 1.0))
    with pytest.raises(ValueError, match="scales"):
        RandomScale((0.0, 1.0))


def test_random_shift_matches_hand_computation_and_global_seed():
    pos = torch.randn(10, 3)
    out = RandomShift(0.2, generator=torch.Generator().manual_seed(1))(Data(pos=pos))
    r = torch.rand(3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(out.pos, pos + (-0.2 + 0.4 * r).float())
    torch.manual_seed(5)
    a = RandomShift(0.2)(Data(pos=pos)).pos
    torch.manual_seed(5)
    b = RandomShift(0.2)(Data(pos=pos)).pos
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="shift"):
        RandomShift(-1.0)


def test_jitter_clips_and_has_requested_sigma():
    pos = torch.zeros(20000, 3)
    clipped = Jitter(sigma=1.0, clip=0.05)(Data(pos=pos)).pos
    assert float(clipped.abs().max()) <= 0.05 + 1e-7
    assert float((clipped.abs() == 0.05).float().mean()) > 0.9  # N(0,1) exceeds 0.05 96% of the time
    free = Jitter(sigma=0.01, clip=None)(Data(pos=pos)).pos
    assert float(free.std()) == pytest.approx(0.01, rel=0.05)
    torch.testing.assert_close(Jitter(sigma=0.0)(Data(pos=pos)).pos, pos)
    with pytest.raises(ValueError, match="sigma"):
        Jitter(sigma=-0.1)
    with pytest.raises(ValueError, match="clip"):
        Jitter(clip=0.0)


def test_rotation_about_axis_hand_values():
    rz = rotation_about_axis(math.pi / 2, 2)
    torch.testing.assert_close(torch.tensor([1.0, 0.0, 0.0]) @ rz.T, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    ry = rotation_about_axis(math.pi / 2, 1)
    torch.testing.assert_close(torch.tensor([0.0, 0.0, 1.0]) @ ry.T, torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    rx = rotation_about_axis(math.pi / 2, 0)
    torch.testing.assert_close(torch.tensor([0.0, 1.0, 0.0]) @ rx.T, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_random_rotate_up_keeps_up_coordinate(axis):
    pos = torch.randn(100, 3)
    mesh = torch.randn(7, 3)
    g = torch.Generator().manual_seed(11)
    out = RandomRotateUp(axis=axis, generator=g)(Data(pos=pos, mesh_pos=mesh))
    torch.testing.assert_close(out.pos[:, axis], pos[:, axis])
    torch.testing.assert_close(out.pos.norm(dim=1), pos.norm(dim=1))
    # Hand computation of the same angle.
    r = torch.rand(1, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    angle = math.radians(float(-180 + 360 * r))
    rot = rotation_about_axis(angle, axis)
    torch.testing.assert_close(out.pos, pos @ rot.T)
    torch.testing.assert_close(out.mesh_pos, mesh @ rot.T)
    assert not torch.allclose(out.pos, pos)
    torch.testing.assert_close(RandomRotateUp(axis=axis, degrees=0)(Data(pos=pos)).pos, pos)


def test_random_rotate_up_rejects_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        RandomRotateUp(axis=3)


def test_sample_points_subsets_and_pads():
    pos = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    normal = pos * 2
    out = SamplePoints(6)(Data(pos=pos, normal=normal))
    assert out.pos.shape == (6, 3)
    rows = (out.pos[:, 0] / 3).long()
    assert rows.unique().numel() == 6  # without replacement
    torch.testing.assert_close(out.pos, pos[rows])
    torch.testing.assert_close(out.normal, normal[rows])
    padded = SamplePoints(25)(Data(pos=pos)).pos
    assert padded.shape == (25, 3)
    assert set((padded[:, 0] / 3).long().tolist()) == set(range(10))  # every point kept
    first = SamplePoints(4, mode="first")(Data(pos=pos)).pos
    torch.testing.assert_close(first, pos[:4])
    with pytest.raises(ValueError, match="num"):
        SamplePoints(0)
    with pytest.raises(ValueError, match="mode"):
        SamplePoints(3, mode="fps")


def _two_triangles():
    # Unit square in the z=0 plane split into triangles of area 1/8 and 3/8... plus a second square.
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [3, 0, 0], [4, 0, 0], [3, 3, 0]])
    f = torch.tensor([[0, 1, 2], [4, 5, 6]])  # areas 0.5 and 1.5
    return v, f


def test_sample_surface_is_area_weighted_and_on_the_faces():
    v, f = _two_triangles()
    pts = sample_surface(v, f, 20000, generator=torch.Generator().manual_seed(0))
    assert pts.shape == (20000, 3)
    assert torch.all(pts[:, 2] == 0)
    first = pts[:, 0] <= 1
    # Triangle (0,0)-(1,0)-(1,1): y <= x; second: x in [3, 4], y <= 3 * (4 - x) ... within bounds.
    assert torch.all(pts[first, 1] <= pts[first, 0] + 1e-6)
    assert torch.all((pts[~first, 0] >= 3) & (pts[~first, 0] <= 4))
    assert float(first.float().mean()) == pytest.approx(0.25, abs=0.015)
    again = sample_surface(v, f, 20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pts, again)
    with pytest.raises(ValueError, match="mesh_face"):
        sample_surface(v, torch.tensor([[0, 1, 9]]), 10)
    with pytest.raises(ValueError, match="mesh_face"):
        sample_surface(v, torch.tensor([0, 1, 2]), 10)


def test_sample_surface_transform_keeps_mesh():
    v, f = _two_triangles()
    out = SampleSurface(64)(Data(pos=torch.zeros(1, 3), mesh_pos=v, mesh_face=f, sample_id="a"))
    assert out.pos.shape == (64, 3) and out.mesh_pos is v
    with pytest.raises(ValueError, match="mesh"):
        SampleSurface(8)(Data(pos=torch.zeros(3, 3), sample_id="a"))
