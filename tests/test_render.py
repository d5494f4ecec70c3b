"""Tests of pointcmt_pyg.render: cameras, point projection, mesh ray-casting,
montage, RenderViews transform (with cache)."""
import math

import numpy as np
import pytest
import torch

from pointcmt_pyg.render.cameras import camera_directions, view_frames
from pointcmt_pyg.render.points import PointRenderer, render_points

from conftest import cuda


# ----------------------------------------------------------------- cameras
@pytest.mark.parametrize("num_views,layout", [(6, "axes"), (12, "ring"), (20, "dodecahedron"),
                                              (7, "sphere"), (3, "ring")])
def test_view_frames_are_right_handed_orthonormal(num_views, layout):
    dirs = camera_directions(num_views, layout=layout)
    assert dirs.shape == (num_views, 3)
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(num_views, dtype=torch.float64))
    frames, half_width, depth_range = view_frames(dirs, padding=0.0)
    eye = torch.eye(3, dtype=torch.float64).expand(num_views, 3, 3)
    torch.testing.assert_close(frames @ frames.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(frames), torch.ones(num_views, dtype=torch.float64))
    torch.testing.assert_close(frames[:, 2], dirs)
    # The window holds the projection of every corner of the unit cube, tightly.
    corners = torch.tensor([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)],
                           dtype=torch.float64)
    proj = torch.einsum("vij,cj->vci", frames, corners)               # [V, 8, 3]
    torch.testing.assert_close(proj[..., :2].abs().amax(dim=(1, 2)), half_width)
    torch.testing.assert_close(proj[..., 2].amax(dim=1) - proj[..., 2].amin(dim=1), depth_range)


def test_dodecahedron_and_ring_geometry():
    dirs = camera_directions(20)                                       # auto -> dodecahedron
    cos = dirs @ dirs.T - 2 * torch.eye(20, dtype=torch.float64)
    # every vertex has exactly 3 nearest neighbours at the same angle
    nearest = cos.max(dim=1).values
    torch.testing.assert_close(nearest, nearest[:1].expand(20))
    assert ((cos - nearest[:, None]).abs() < 1e-9).sum(dim=1).eq(3).all()
    ring = camera_directions(12, elevation=30.0)
    torch.testing.assert_close(ring[:, 2], torch.full((12,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="layout 'axes' has 6 views"):
        camera_directions(5, layout="axes")
    with pytest.raises(ValueError, match="layout must be one of"):
        camera_directions(6, layout="cube")
    with pytest.raises(ValueError, match="directions must be finite and non-zero"):
        view_frames([[0.0, 0.0, 0.0]])


# ----------------------------------------------------------------- points
def _expected_pixel(value: float, half_width: float, size: int, flip: bool) -> int:
    u = (half_width - value) if flip else (value + half_width)
    return math.floor(u / (2 * half_width) * size)


def test_single_point_lands_on_expected_pixel_with_expected_depth():
    p = (0.1, 0.2, 0.3)
    size, hw = 8, 0.5 * 1.05                                           # padding 0.05
    views = render_points(torch.tensor([p]), num_views=6, image_size=size, splat=0, normalize=False)
    assert views.shape == (1, 6, 1, size, size) and views.dtype == torch.float32
    # (image-plane right coordinate, up coordinate, distance towards the camera)
    # for the six axis views +x, -x, +y, -y, +z, -z with z up (hand-derived frames).
    x, y, z = p
    expected = [(y, z, x), (-y, z, -x), (-x, z, y), (x, z, -y), (x, y, z), (-x, y, -z)]
    for v, (a, b, t) in enumerate(expected):
        img = views[0, v, 0]
        assert int((img > 0).sum()) == 1, v
        row, col = _expected_pixel(b, hw, size, True), _expected_pixel(a, hw, size, False)
        depth = 0.5 - t                                                # |d|_1 = 1 for axis views
        assert img[row, col].item() == pytest.approx(1 - depth / 2, abs=1e-6), v
    # hand values for view +x: col floor((0.2+0.525)/1.05*8) = 5, row floor((0.525-0.3)/1.05*8) = 1
    assert views[0, 0, 0, 1, 5].item() == pytest.approx(0.8, abs=1e-6)


def test_zbuffer_keeps_nearest_point_and_splat_covers_square():
    # two points on the same +z pixel ray: the higher one is nearer to the +z camera
    pos = torch.tensor([[0.0, 0.0, -0.25], [0.0, 0.0, 0.25]])
    views = render_points(pos, image_size=9, splat=0, normalize=False)
    top, bottom = views[0, 4, 0], views[0, 5, 0]
    assert top[4, 4].item() == pytest.approx(1 - 0.25 / 2)           # depth 0.5 - 0.25
    assert bottom[4, 4].item() == pytest.approx(1 - 0.25 / 2)        # the other point, seen from below
    assert int((top > 0).sum()) == 1
    # splat radius 1: a 3x3 square, clipped at the border of the image
    views = render_points(torch.tensor([[0.0, 0.0, 0.0]]), image_size=9, splat=1, normalize=False)
    img = views[0, 4, 0]
    assert (img > 0).nonzero().tolist() == [[r, c] for r in (3, 4, 5) for c in (3, 4, 5)]
    assert torch.all(img[3:6, 3:6] == 0.75)
    corner = render_points(torch.tensor([[0.5, 0.5, 0.0]]), image_size=9, splat=2, normalize=False)
    assert int((corner[0, 4, 0] > 0).sum()) == 9                     # 3x3 of the 5x5 inside


def _naive_render(pos, size, splat, layout="auto", num_views=6):
    """Independent reference: loops over points, views and splat offsets (float64)."""
    frames, hw, dr = view_frames(camera_directions(num_views, layout=layout))
    p = pos.double()
    lo, hi = p.min(0).values, p.max(0).values
    p = (p - (lo + hi) / 2) / (hi - lo).max()
    out = torch.zeros(num_views, size, size, dtype=torch.float64)
    best = torch.full((num_views, size, size), math.inf, dtype=torch.float64)
    for v in range(num_views):
        h = float(hw[v])
        for q in p:
            a, b, t = (frames[v] @ q).tolist()
            depth = min(max((0.5 * float(dr[v]) - t) / float(dr[v]), 0.0), 1.0)
            col = min(math.floor((a + h) / (2 * h) * size), size - 1)
            row = min(math.floor((h - b) / (2 * h) * size), size - 1)
            for r in range(row - splat, row + splat + 1):
                for c in range(col - splat, col + splat + 1):
                    if 0 <= r < size and 0 <= c < size and depth < best[v, r, c]:
                        best[v, r, c] = depth
                        out[v, r, c] = 1 - depth / 2
    return out


@pytest.mark.parametrize("splat,layout,num_views", [(0, "auto", 6), (1, "auto", 6), (2, "ring", 5)])
def test_point_renderer_matches_naive_loops(splat, layout, num_views):
    torch.manual_seed(3)
    pos = torch.randn(40, 3, dtype=torch.float64) * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    got = render_points(pos, image_size=12, splat=splat, layout=layout, num_views=num_views)
    ref = _naive_render(pos, 12, splat, layout, num_views)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got[0, :, 0], ref, rtol=0, atol=1e-12)


def test_batched_equals_per_shape_bit_for_bit_and_dense():
    torch.manual_seed(0)
    counts = [37, 200, 1, 64]
    clouds = [torch.randn(n, 3) * torch.rand(3) + torch.randn(3) for n in counts]
    pos = torch.cat(clouds)
    batch = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    perm = torch.randperm(pos.size(0))                                 # unsorted batch too
    for splat in (0, 2):
        renderer = PointRenderer(num_views=12, image_size=24, splat=splat)
        together = renderer(pos[perm], batch[perm])
        assert together.shape == (4, 12, 1, 24, 24)
        for i, cloud in enumerate(clouds):
            assert torch.equal(together[i], renderer(cloud)[0])
    dense = torch.stack([torch.randn(50, 3) for _ in range(3)])
    renderer = PointRenderer(image_size=16)
    flat = renderer(dense.reshape(-1, 3), torch.arange(3).repeat_interleave(50))
    assert torch.equal(renderer(dense), flat)


def test_normalisation_makes_images_invariant_to_shift_and_scale():
    torch.manual_seed(1)
    pos = torch.randint(-512, 512, (300, 3)).float() / 1024           # dyadic: the
    moved = pos * 4.0 + torch.tensor([8.0, -2.0, 0.5])              # move is exact
    a, b = render_points(pos, image_size=32), render_points(moved, image_size=32)
    assert torch.equal(a, b)
    assert a.gt(0).any() and a.max() <= 1 and a[a > 0].min() >= 0.5


def test_empty_shapes_and_batch_size_give_blank_images():
    pos = torch.rand(10, 3)
    views = render_points(pos, torch.full((10,), 1), batch_size=3, image_size=8)
    assert views.shape == (3, 6, 1, 8, 8)
    assert views[0].eq(0).all() and views[2].eq(0).all() and views[1].gt(0).any()
    assert render_points(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                         batch_size=2, image_size=4).eq(0).all()


def test_render_points_bad_inputs():
    with pytest.raises(TypeError, match="pos must be a tensor"):
        render_points([[0.0, 0.0, 0.0]])
    with pytest.raises(TypeError, match="floating-point"):
        render_points(torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pos must be \[N, 3\]"):
        render_points(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="batch must be a LongTensor of shape"):
        render_points(torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size"):
        render_points(torch.zeros(4, 3), torch.tensor([0, 0, 1, 2]), batch_size=2)
    with pytest.raises(ValueError, match="NaN"):
        render_points(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="splat"):
        render_points(torch.zeros(4, 3), splat=-1)
    with pytest.raises(ValueError, match="image_size"):
        render_points(torch.zeros(4, 3), image_size=0)


@cuda
def test_points_cuda_matches_cpu():
    torch.manual_seed(0)
    pos = torch.rand(500, 3)
    batch = torch.arange(5).repeat_interleave(100)
    cpu = render_points(pos, batch, image_size=32)
    gpu = render_points(pos.cuda(), batch.cuda(), image_size=32)
    assert gpu.is_cuda and gpu.shape == cpu.shape and gpu.dtype == cpu.dtype
    # same pixels hit; values equal up to float rounding of the projection
    agree = cpu.gt(0) == gpu.cpu().gt(0)
    assert agree.float().mean() > 0.999
    both = cpu.gt(0) & gpu.cpu().gt(0)
    torch.testing.assert_close(gpu.cpu()[both], cpu[both], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- meshes
from pointcmt_pyg.render.mesh import MeshRenderer, read_off, render_mesh  # noqa: E402

CUBE_VERTS = torch.tensor([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)])
# vertex index = 4 * ix + 2 * iy + iz; two triangles per face
CUBE_FACES = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                           [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def test_unit_cube_axis_views_give_the_exact_square_silhouette():
    size, hw = 64, 0.5 * 1.05
    views = render_mesh(CUBE_VERTS, CUBE_FACES, num_views=6, image_size=size,
                        channels=("depth", "shading", "mask"))
    assert views.shape == (6, 3, size, size) and views.dtype == torch.float32
    # a pixel is hit iff its centre -hw + (j + 0.5) * 2hw / size lies inside [-0.5, 0.5]
    # (no centre lies on an edge for these numbers)
    centres = -hw + (torch.arange(size, dtype=torch.float64) + 0.5) * (2 * hw / size)
    inside = centres.abs() < 0.5
    assert not torch.isclose(centres.abs(), torch.tensor(0.5, dtype=torch.float64)).any()
    expected = inside[:, None] & inside[None, :]
    lo, hi = int(inside.nonzero().min()), int(inside.nonzero().max())
    assert (lo, hi, int(expected.sum())) == (2, 61, 3600)            # hand: (j+.5)*1.05/64 in (.025, 1.025)
    for v in range(6):
        assert torch.equal(views[v, 2] > 0, expected), v
        # the front face touches the cube's near side: depth 0 -> value 1; faces normal to d
        assert torch.all(views[v, 0][expected] == 1.0) and torch.all(views[v, 0][~expected] == 0)
        assert torch.allclose(views[v, 1][expected], torch.ones(3600))


def test_unit_cube_oblique_views_cover_the_projected_hexagon():
    from scipy.spatial import ConvexHull
    size = 48
    renderer = MeshRenderer(num_views=12, image_size=size, channels=("mask", "normal"))
    views = renderer(CUBE_VERTS, CUBE_FACES)
    assert views.shape == (12, 4, size, size)
    for v in range(12):
        frame, hw = renderer.frames[v], float(renderer.half_width[v])
        pix = 2 * hw / size
        hull = ConvexHull((CUBE_VERTS.double() @ frame[:2].T).numpy())   # 2-D: volume=area, area=perimeter
        # projection of the unit cube along a unit d has area |d|_1
        assert hull.volume == pytest.approx(float(frame[2].abs().sum()))
        mask = views[v, 0] > 0
        # pixel centres inside a convex region differ from its area (in pixels) by at most the
        # number of pixels its boundary crosses, <= 2 * perimeter / pixel + 4
        assert abs(int(mask.sum()) - hull.volume / pix ** 2) <= 2 * hull.area / pix + 4
        # exactly: a pixel is hit iff its centre lies in the projected hexagon
        # (centres within 1e-6 of an edge may go either way)
        centres = -hw + (torch.arange(size, dtype=torch.float64) + 0.5) * pix
        grid = torch.stack([centres[None, :].expand(size, size),          # right = column
                            centres.flip(0)[:, None].expand(size, size)], dim=-1)  # up = -row
        eq = torch.from_numpy(hull.equations)                            # n . x + c <= 0 inside
        signed = (grid @ eq[:, :2].T + eq[:, 2]).amax(dim=-1)
        sure = signed.abs() > 1e-6
        assert torch.equal(mask[sure], (signed < 0)[sure]), v
        # normals face the camera: the third normal channel |n . d| > 0 on every hit pixel
        assert torch.all(views[v, 3][mask] > 0)


def test_mesh_and_point_depth_images_line_up():
    # points on the +z face of the cube at pixel-centre positions: same pixels and depth
    size = 16
    renderer = MeshRenderer(num_views=6, image_size=size, channels=("depth",))
    mesh = renderer(CUBE_VERTS, CUBE_FACES)
    hw = float(renderer.half_width[4])
    c = -hw + (torch.arange(size) + 0.5) * (2 * hw / size)
    c = c[c.abs() < 0.5]
    xy = torch.cartesian_prod(c, c)
    pts = torch.cat([xy, torch.full((xy.size(0), 1), 0.5)], dim=1)
    pts = torch.cat([pts, torch.tensor([[-0.5, -0.5, -0.5]])])       # keep the bbox the unit cube
    points = render_points(pts, image_size=size, splat=0)
    assert torch.equal(points[0, 4, 0], mesh[4, 0])


def test_real_modelnet_mesh_renders_non_empty_views(shared_data):
    files = sorted((shared_data / "ModelNet_off").rglob("*.off"))
    assert files, "no .off meshes in the shared data"
    pos, face = read_off(files[0])
    assert pos.dtype == torch.float32 and face.dtype == torch.long and face.shape[1] == 3
    views = render_mesh(pos, face, num_views=12, image_size=32)
    assert views.shape == (12, 2, 32, 32)
    coverage = (views[:, 0] > 0).flatten(1).float().mean(dim=1)
    assert torch.all(coverage > 0.02) and torch.all(coverage < 0.98), coverage
    assert views.min() >= 0 and views.max() <= 1


def test_read_off_tolerates_counts_glued_to_header(tmp_path):
    path = tmp_path / "quirk.off"
    path.write_text("OFF4 2 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n4 0 1 3 2\n")
    pos, face = read_off(path)
    assert pos.shape == (4, 3) and face.tolist() == [[0, 1, 2], [0, 1, 3], [0, 3, 2]]
    (tmp_path / "bad.off").write_text("PLY\n")
    with pytest.raises(ValueError, match="bad.off"):
        read_off(tmp_path / "bad.off")


def test_render_mesh_bad_inputs():
    with pytest.raises(ValueError, match="vertices must have shape"):
        render_mesh(torch.zeros(4, 2), CUBE_FACES)
    with pytest.raises(ValueError, match="faces index vertices outside"):
        render_mesh(CUBE_VERTS, CUBE_FACES + 1)
    with pytest.raises(ValueError, match="faces must have shape"):
        render_mesh(CUBE_VERTS, torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="faces must hold integer"):
        render_mesh(CUBE_VERTS, CUBE_FACES.float())
    with pytest.raises(ValueError, match="NaN"):
        render_mesh(CUBE_VERTS * float("nan"), CUBE_FACES)
    with pytest.raises(ValueError, match="channels must be"):
        render_mesh(CUBE_VERTS, CUBE_FACES, channels=("colour",))


# ----------------------------------------------------------------- montage
def test_save_montage_writes_png(tmp_path):
    import matplotlib.image as mpimg
    from pointcmt_pyg.render.montage import save_montage
    views = render_mesh(CUBE_VERTS, CUBE_FACES, num_views=6, image_size=16)
    out = save_montage(views[None], tmp_path / "sub" / "cube.png", title="cube", dpi=50)
    img = mpimg.imread(out)
    assert out.exists() and img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 100
    with pytest.raises(ValueError, match="views must be"):
        save_montage(torch.zeros(2, 3, 4), tmp_path / "x.png")


# ----------------------------------------------------------------- RenderViews
from torch_geometric.data import Batch, Data  # noqa: E402

from pointcmt_pyg.render.cache import ViewStore, decode_views, encode_views  # noqa: E402
from pointcmt_pyg.render.transforms import RenderViews  # noqa: E402


def _u8(views):
    """What RenderViews hands out: the views as 8-bit images."""
    return decode_views(encode_views(views))


def _cloud_data(sample_id="shape_0001", n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Data(pos=torch.rand(n, 3, generator=g), y=torch.tensor([3]), sample_id=sample_id)


def test_render_views_points_mesh_and_batching():
    transform = RenderViews(num_views=6, image_size=16)
    a = transform(_cloud_data("a"))
    assert a.views.shape == (1, 6, 1, 16, 16) and a.views.dtype == torch.float32
    assert torch.equal(a.views, _u8(render_points(a.pos, image_size=16)))
    mesh = Data(pos=torch.rand(10, 3), mesh_pos=CUBE_VERTS, mesh_face=CUBE_FACES, sample_id="cube")
    m = transform(mesh)                                                # auto: the mesh is ray-cast
    assert torch.equal(m.views[0], _u8(render_mesh(CUBE_VERTS, CUBE_FACES, 6, 16, ("depth",))))
    batch = Batch.from_data_list([Data(views=a.views, y=a.y), Data(views=m.views, y=a.y)])
    assert batch.views.shape == (2, 6, 1, 16, 16)
    assert torch.equal(batch.views[1], m.views[0])
    pts_only = RenderViews(num_views=6, image_size=16, source="points")(mesh.clone())
    assert torch.equal(pts_only.views, _u8(render_points(mesh.pos, image_size=16)))


def test_render_views_cache_hit_is_identical_and_changed_config_misses(tmp_path):
    transform = RenderViews(num_views=6, image_size=16, cache_dir=tmp_path)
    first = transform(_cloud_data("chair/train/chair_0001")).views
    files = list(tmp_path.rglob("shard-*.npy"))
    assert len(files) == 1 and files[0].parent.name == transform.config_hash
    # Same id, different points: served from the cache, bit for bit the first views.
    again = RenderViews(num_views=6, image_size=16, cache_dir=tmp_path)(
        _cloud_data("chair/train/chair_0001", seed=1)).views
    assert torch.equal(again, first)
    fresh = RenderViews(num_views=6, image_size=16)(_cloud_data("x", seed=1)).views
    assert not torch.equal(fresh, first)
    # Another id misses.
    other = transform(_cloud_data("chair/train/chair_0002", seed=1)).views
    assert torch.equal(other, fresh) and len(list(tmp_path.rglob("shard-*.npy"))) == 2
    # A changed configuration misses: its own folder, freshly rendered views.
    changed = RenderViews(num_views=6, image_size=16, splat=0, cache_dir=tmp_path)
    assert changed.config_hash != transform.config_hash
    views = changed(_cloud_data("chair/train/chair_0001", seed=1)).views
    assert torch.equal(views, _u8(render_points(_cloud_data(seed=1).pos, image_size=16, splat=0)))
    assert len(list(tmp_path.rglob("shard-*.npy"))) == 3


def test_render_views_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="sample_id"):
        RenderViews(image_size=8, cache_dir=tmp_path)(Data(pos=torch.rand(5, 3)))
    with pytest.raises(ValueError, match="needs data.mesh_pos"):
        RenderViews(image_size=8, source="mesh")(_cloud_data())
    with pytest.raises(ValueError, match="source must be one of"):
        RenderViews(source="images")
    with pytest.raises(ValueError, match=r"data.pos must be a non-empty \[N, 3\]"):
        RenderViews(image_size=8)(Data(pos=torch.rand(5, 2), sample_id="s"))


# ----------------------------------------------------------------- ViewStore
def test_encode_views_rounds_to_the_nearest_code_and_keeps_background_apart():
    x = torch.tensor([0.0, 0.5, 0.5 + 0.4 / 255, 0.75, 1.0, 1 / 510 - 1e-6])
    codes = encode_views(x)
    assert codes.dtype == np.uint8 and codes.tolist() == [0, 128, 128, 191, 255, 0]
    views = torch.rand(3, 6, 1, 8, 8)
    assert (decode_views(encode_views(views)) - views).abs().max() <= 0.5 / 255 + 1e-7
    # Every surface pixel of a depth view (>= 0.5) stays clearly apart from the background 0.
    depth = render_points(torch.rand(300, 3), image_size=16)
    decoded = _u8(depth)
    assert torch.equal(decoded == 0, depth == 0) and float(decoded[depth > 0].min()) >= 128 / 255
    with pytest.raises(ValueError, match=r"views must hold finite values in \[0, 1\]"):
        encode_views(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="views must hold finite"):
        encode_views(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="views must be a floating-point tensor"):
        encode_views(torch.tensor([1]))
    with pytest.raises(TypeError, match="codes must be uint8"):
        decode_views(np.zeros(3, dtype=np.int16))


def test_view_store_shards_lookup_refresh_and_compact(tmp_path):
    store = ViewStore(tmp_path / "s")
    assert len(store) == 0 and store.get("a") is None and store.nbytes() == 0
    views = torch.rand(3, 2, 1, 4, 4)
    store.add(["a", "b", "c"], views)
    store.add(["d"], encode_views(views[:1]))
    assert len(store) == 4 and "c" in store and "e" not in store
    assert torch.equal(store.get("b"), _u8(views[1])) and torch.equal(store.get("d"), _u8(views[0]))
    assert torch.equal(store.get_many(["c", "a"]), _u8(views[[2, 0]]))
    assert store.nbytes() == sum(p.stat().st_size for p in (tmp_path / "s").glob("*.npy"))
    # A second handle (another process) sees both shards; a new shard shows after refresh.
    other = ViewStore(tmp_path / "s")
    assert set(other.index) == {"a", "b", "c", "d"}
    store.add(["e"], views[2:])
    assert "e" not in other
    other.refresh()
    assert torch.equal(other.get("e"), _u8(views[2]))
    # A shard whose id list was never written (an interrupted write) is ignored.
    np.save(tmp_path / "s" / "shard-orphan.npy", np.zeros((1, 2, 1, 4, 4), np.uint8))
    other.refresh()
    assert len(other) == 5
    # compact() merges the shards into one holding the same views.
    assert store.compact() == 2
    assert len(list((tmp_path / "s").glob("shard-*.json"))) == 1
    assert torch.equal(store.get_many(list("abcde")), _u8(torch.cat([views, views[:1], views[2:]])))
    with pytest.raises(KeyError, match="1 sample ids are not in the store"):
        store.get_many(["a", "zz"])
    with pytest.raises(ValueError, match="sample_ids must be distinct"):
        store.add(["x", "x"], views[:2])
    with pytest.raises(ValueError, match=r"views must be \[n, V, C, H, W\] with n = 1"):
        store.add(["x"], views)
    with pytest.raises(TypeError, match="uint8 codes"):
        store.add(["x"], np.zeros((1, 2, 1, 4, 4), np.float32))


def test_prerender_in_batches_equals_rendering_one_by_one(tmp_path):
    clouds = [_cloud_data(f"cloud_{i}", n=50 + 30 * i, seed=i) for i in range(7)]
    mesh = Data(pos=torch.rand(10, 3), mesh_pos=CUBE_VERTS, mesh_face=CUBE_FACES,
                sample_id="cube", y=torch.tensor([0]))
    dataset = clouds[:3] + [mesh] + clouds[3:]
    one_by_one = RenderViews(num_views=6, image_size=16)
    expected = [one_by_one(d.clone()).views[0] for d in dataset]
    renderer = RenderViews(num_views=6, image_size=16, cache_dir=tmp_path)
    assert renderer.prerender(dataset, batch_size=3, chunk_size=4, progress=False) == 8
    assert len(list(renderer.cache_dir.glob("shard-*.json"))) == 2   # 4 + 4 samples
    for data, views in zip(dataset, expected):
        assert renderer.is_cached(data.sample_id)
        assert torch.equal(renderer(data.clone()).views[0], views), data.sample_id
    # Everything cached: nothing rendered, nothing written.
    assert RenderViews(num_views=6, image_size=16, cache_dir=tmp_path).prerender(
        dataset, progress=False) == 0
    assert len(list(renderer.cache_dir.glob("shard-*.json"))) == 2
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        renderer.prerender(dataset, batch_size=0)
    with pytest.raises(ValueError, match="RenderViews has no cache_dir"):
        one_by_one.prerender(dataset)
