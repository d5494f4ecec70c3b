from pathlib import Path

import numpy as np
import pytest
import torch

from pointcmt_pyg.datasets import default_data_root, stratified_split, subset, train_val_split
from pointcmt_pyg.datasets.base import PointCloudDataset, make_data


# --------------------------------------------------------------------------- root
def test_default_data_root_prefers_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTCMT_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("POINTCMT_DATA")
    assert default_data_root().parts[-2:] == ("shared", "data")


# --------------------------------------------------------------------------- split
def test_stratified_split_proportions_and_determinism():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1)[torch.randperm(101)]
    tr, va = stratified_split(labels, 0.2, seed=7)
    assert torch.bincount(labels[va], minlength=4).tolist() == [10, 6, 4, 0]
    assert torch.bincount(labels[tr], minlength=4).tolist() == [40, 24, 16, 1]
    assert sorted(torch.cat([tr, va]).tolist()) == list(range(101))
    tr2, va2 = stratified_split(labels.numpy(), 0.2, seed=7)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = stratified_split(labels.tolist(), 0.2, seed=8)
    assert not torch.equal(va, va3)


def test_stratified_split_small_classes_and_zero_fraction():
    labels = [0, 0, 1, 2, 2, 2]
    tr, va = stratified_split(labels, 0.1, seed=0)
    # At least one per class with >= 2 samples, never the only sample of a class.
    assert sorted(np.array(labels)[va.numpy()].tolist()) == [0, 2]
    tr, va = stratified_split(labels, 0.0, seed=0)
    assert va.numel() == 0 and tr.tolist() == list(range(6))


@pytest.mark.parametrize("frac", [1.0, -0.1, "0.1", True])
def test_stratified_split_rejects_bad_fraction(frac):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1], frac)


def test_stratified_split_rejects_bad_labels():
    with pytest.raises(TypeError, match="labels"):
        stratified_split(torch.tensor([0.5, 1.0]), 0.5)
    with pytest.raises(ValueError, match="labels"):
        stratified_split([0, -1], 0.5)
    with pytest.raises(TypeError, match="labels"):
        stratified_split("abc", 0.5)


class _Toy(PointCloudDataset):
    def __init__(self, labels):
        super().__init__()
        self._classes = ["a", "b", "c"]
        self._labels = torch.tensor(labels)
        self._sample_ids = [f"s{i}" for i in range(len(labels))]

    def _load(self, idx):
        return make_data(torch.full((4, 3), float(idx)), int(self._labels[idx]), self._sample_ids[idx])


def test_train_val_split_gives_consistent_views():
    ds = _Toy([0] * 10 + [1] * 10 + [2] * 10)
    tr, va = train_val_split(ds, 0.3, seed=1)
    assert len(tr) == 21 and len(va) == 9
    assert va.class_counts().tolist() == [3, 3, 3]
    assert tr.num_classes == 3 and va.classes == ["a", "b", "c"]
    assert set(tr.sample_ids).isdisjoint(va.sample_ids)
    for i in range(len(va)):
        data = va[i]
        assert data.sample_id == va.sample_ids[i] and int(data.y) == int(va.labels[i])
    sub = subset(ds, [2, 0])
    assert sub.sample_ids == ["s2", "s0"]
    with pytest.raises(IndexError):
        subset(ds, [30])


# --------------------------------------------------------------------------- folder
from pointcmt_pyg.datasets.folder import PointCloudFolder, read_pcd, read_shape  # noqa: E402
from pointcmt_pyg.datasets.modelnet import read_off  # noqa: E402


def _write_pcd(path: Path, pts: np.ndarray, binary: bool = True) -> None:
    head = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\n"
            f"COUNT 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\n"
            f"DATA {'binary' if binary else 'ascii'}\n")
    body = pts.astype("<f4").tobytes() if binary else "".join(f"{a} {b} {c}\n" for a, b, c in pts).encode()
    path.write_bytes(head.encode() + body)


_TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
_TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _write_off(path: Path, glued: bool = False) -> None:
    lines = ["OFF4 4 0" if glued else "OFF\n4 4 0"]
    lines += [" ".join(map(str, v)) for v in _TETRA_V] + ["3 " + " ".join(map(str, f)) for f in _TETRA_F]
    path.write_text("\n".join(lines) + "\n")


def _make_folder(root: Path, rng: np.random.Generator) -> dict:
    """Two classes, every supported point format plus two meshes; returns expected xyz by sample id."""
    expect = {}
    for cls in ("mug", "cup"):
        for split in ("train", "test"):
            (root / cls / split).mkdir(parents=True)
    pts = lambda n=16: rng.standard_normal((n, 3)).astype(np.float32)  # noqa: E731
    a = pts(); np.save(root / "cup/train/a.npy", np.concatenate([a, a], 1)); expect["cup/train/a"] = a  # noqa: E702
    b = pts(); np.savez(root / "cup/train/b.npz", points=b, label=np.array(0)); expect["cup/train/b"] = b  # noqa: E702
    c = pts(); np.savetxt(root / "cup/train/c.txt", np.concatenate([c, -c], 1), delimiter=",", fmt="%.6f")  # noqa: E702
    expect["cup/train/c"] = c
    d = pts(); np.savetxt(root / "mug/train/d.xyz", d, fmt="%.6f"); expect["mug/train/d"] = d  # noqa: E702
    e = pts(); _write_pcd(root / "mug/train/e.pcd", e); expect["mug/train/e"] = e  # noqa: E702
    f = pts(); _write_pcd(root / "mug/train/f.pcd", f, binary=False); expect["mug/train/f"] = f  # noqa: E702
    _write_off(root / "mug/train/g.off", glued=True)
    (root / "cup/train/h.obj").write_text(
        "\n".join(["v " + " ".join(map(str, v)) for v in _TETRA_V] + ["f " + " ".join(f"{i + 1}/1" for i in f) for f in _TETRA_F]))
    np.save(root / "cup/test/z.npy", pts())
    np.save(root / "mug/test/y.npy", pts())
    return expect


def test_folder_reads_every_format(tmp_path):
    expect = _make_folder(tmp_path, np.random.default_rng(0))
    ds = PointCloudFolder(tmp_path, split="train", num_points=None)
    assert ds.classes == ["cup", "mug"] and ds.num_classes == 2
    assert ds.sample_ids == ["cup/train/a", "cup/train/b", "cup/train/c", "cup/train/h",
                             "mug/train/d", "mug/train/e", "mug/train/f", "mug/train/g"]
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    for sid, xyz in expect.items():
        i = ds.sample_ids.index(sid)
        data = ds[i]
        assert data.sample_id == sid and data.y.tolist() == [int(ds.labels[i])]
        assert data.pos.dtype == torch.float32 and data.pos.shape == (16, 3) and "mesh_pos" not in data
        np.testing.assert_allclose(data.pos.numpy(), xyz, atol=1e-5)
    with pytest.raises(ValueError, match=r"g\.off: a mesh needs num_points"):
        ds[7]
    ds = PointCloudFolder(tmp_path, split="train", num_points=64)
    mesh = ds[ds.sample_ids.index("mug/train/g")]
    assert mesh.pos.shape == (64, 3) and mesh.mesh_face.shape == (4, 3) and mesh.mesh_face.dtype == torch.long
    torch.testing.assert_close(mesh.mesh_pos, torch.from_numpy(_TETRA_V))
    # Points lie on the tetrahedron's surface: inside the simplex, on one of its four planes.
    p = mesh.pos
    on_face = torch.stack([p[:, 0].abs(), p[:, 1].abs(), p[:, 2].abs(), (p.sum(1) - 1).abs()]).amin(0)
    assert float(on_face.max()) < 1e-5 and float(p.min()) >= -1e-6
    torch.testing.assert_close(ds[ds.sample_ids.index("mug/train/g")].pos, p)  # seeded by sample id
    obj = ds[ds.sample_ids.index("cup/train/h")]
    assert torch.equal(obj.mesh_face, torch.from_numpy(_TETRA_F))
    small = ds[0].pos  # 16 stored points padded to 64 with repeats of them
    assert small.shape == (64, 3) and torch.unique(small, dim=0).shape[0] == 16
    test = PointCloudFolder(tmp_path, split="test", num_points=8)
    assert test.sample_ids == ["cup/test/z", "mug/test/y"] and test[1].pos.shape == (8, 3)


def test_folder_in_memory_cache(tmp_path):
    _make_folder(tmp_path / "d", np.random.default_rng(1))
    cache = tmp_path / "cache"
    a = PointCloudFolder(tmp_path / "d", num_points=32, in_memory=True, cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1
    b = PointCloudFolder(tmp_path / "d", num_points=32, in_memory=True, cache_dir=cache)
    for i in range(len(a)):
        torch.testing.assert_close(a[i].pos, b[i].pos)
        assert a[i].sample_id == b[i].sample_id
    assert b[b.sample_ids.index("mug/train/g")].mesh_face.shape == (4, 3)
    c = PointCloudFolder(tmp_path / "d", num_points=16, in_memory=True, cache_dir=cache)
    assert c[0].pos.shape == (16, 3) and len(list(cache.glob("*.pt"))) == 2  # other arguments: other file


def test_folder_cache_of_fixed_size_clouds(tmp_path):
    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        (tmp_path / "d" / cls / "train").mkdir(parents=True)
        for k in range(3):
            np.save(tmp_path / "d" / cls / "train" / f"{k}.npy", rng.standard_normal((20, 3)).astype(np.float32))
    lazy = PointCloudFolder(tmp_path / "d", num_points=20)
    a = PointCloudFolder(tmp_path / "d", num_points=20, in_memory=True, cache_dir=tmp_path / "c")
    b = PointCloudFolder(tmp_path / "d", num_points=20, in_memory=True, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("*.pt"))) == 1
    for i in range(len(lazy)):
        for other in (a, b):
            assert other[i].sample_id == lazy[i].sample_id and torch.equal(other[i].y, lazy[i].y)
            torch.testing.assert_close(other[i].pos, lazy[i].pos)
    np.save(tmp_path / "d/a/train/0.npy", np.zeros((20, 3), dtype=np.float32) + 1)  # changed file: new cache
    c = PointCloudFolder(tmp_path / "d", num_points=20, in_memory=True, cache_dir=tmp_path / "c")
    torch.testing.assert_close(c[0].pos, torch.ones(20, 3))


def test_folder_rejects_unknown_extension(tmp_path):
    (tmp_path / "a/train").mkdir(parents=True)
    np.save(tmp_path / "a/train/ok.npy", np.zeros((4, 3)))
    (tmp_path / "a/train/shape.stl").write_text("solid")
    with pytest.raises(ValueError, match=r"shape\.stl.*unknown file extension"):
        PointCloudFolder(tmp_path)
    with pytest.raises(ValueError, match=r"x\.foo.*unknown file extension"):
        read_shape(tmp_path / "x.foo")


def test_folder_rejects_empty_class_folder(tmp_path):
    (tmp_path / "a/train").mkdir(parents=True)
    np.save(tmp_path / "a/train/ok.npy", np.zeros((4, 3)))
    (tmp_path / "b/train").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty class folder .*b[/\\]train"):
        PointCloudFolder(tmp_path)
    (tmp_path / "b/train").rmdir()
    with pytest.raises(ValueError, match=r"empty class folder .*b"):
        PointCloudFolder(tmp_path)


def test_folder_rejects_missing_split_and_root(tmp_path):
    (tmp_path / "a/train").mkdir(parents=True)
    np.save(tmp_path / "a/train/ok.npy", np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"no 'test' split .*\['train'\]"):
        PointCloudFolder(tmp_path, split="test")
    with pytest.raises(ValueError, match="nothere"):
        PointCloudFolder(tmp_path / "nothere")
    with pytest.raises(ValueError, match="num_points"):
        PointCloudFolder(tmp_path, num_points=0)


def test_folder_corrupt_files_name_the_file(tmp_path):
    (tmp_path / "a/train").mkdir(parents=True)
    (tmp_path / "a/train/bad.npy").write_bytes(b"\x93NUMPY garbage")
    _write_pcd(tmp_path / "a/train/trunc.pcd", np.zeros((100, 3)))
    raw = (tmp_path / "a/train/trunc.pcd").read_bytes()
    (tmp_path / "a/train/trunc.pcd").write_bytes(raw[:-50])
    (tmp_path / "a/train/junk.pcd").write_bytes(b"\x00\x01\x02 not a pcd at all")
    np.save(tmp_path / "a/train/flat.npy", np.zeros(12))
    (tmp_path / "a/train/badmesh.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    ds = PointCloudFolder(tmp_path)  # listing does not read files
    names = [f.name for f in ds.files]
    for name, pattern in [("bad.npy", "cannot read .npy"), ("trunc.pcd", "truncated"), ("junk.pcd", "corrupt PCD"),
                          ("flat.npy", r"shape \[N, >=3\]"), ("badmesh.off", "face indices")]:
        with pytest.raises(ValueError, match=rf"{name}.*{pattern}"):
            ds[names.index(name)]
    with pytest.raises(ValueError, match=r"bad\.npy"):  # the first file in sorted order
        PointCloudFolder(tmp_path, in_memory=True)


def test_folder_rejects_duplicate_sample_ids(tmp_path):
    (tmp_path / "a/train").mkdir(parents=True)
    np.save(tmp_path / "a/train/x.npy", np.zeros((4, 3)))
    np.savetxt(tmp_path / "a/train/x.txt", np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x\.npy.*x\.txt"):
        PointCloudFolder(tmp_path)


def test_folder_labels_must_match_class_list(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls / "train").mkdir(parents=True)
    np.savez(tmp_path / "a/train/x.npz", pos=np.zeros((4, 3)), label=np.array(1))
    np.save(tmp_path / "b/train/y.npy", np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x\.npz: label 1 .*'a'"):
        PointCloudFolder(tmp_path)[0]
    with pytest.raises(ValueError, match=r"no folder for \['c'\]"):
        PointCloudFolder(tmp_path, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"b'\] not in classes"):
        PointCloudFolder(tmp_path, classes=["a"])
    ds = PointCloudFolder(tmp_path, classes=["b", "a"])  # explicit order defines the labels
    assert ds.sample_ids == ["b/train/y", "a/train/x"] and ds.labels.tolist() == [0, 1]
    assert int(ds[1].y) == 1  # x.npz says 1, which is 'a' under this order


def test_read_off_handles_glued_header_and_quads(tmp_path):
    _write_off(tmp_path / "g.off", glued=True)
    pos, face = read_off(tmp_path / "g.off")
    assert torch.equal(face, torch.from_numpy(_TETRA_F)) and pos.shape == (4, 3)
    (tmp_path / "q.off").write_text("OFF\n# a unit square\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    _, face = read_off(tmp_path / "q.off")
    assert face.tolist() == [[0, 1, 2], [0, 2, 3]]
    (tmp_path / "t.off").write_text("OFF\n4 1 0\n0 0 0\n")
    with pytest.raises(ValueError, match=r"t\.off.*truncated"):
        read_off(tmp_path / "t.off")


# --------------------------------------------------------------------------- real data
def test_modelnet40_npy_counts(shared_data):
    root = shared_data / "ModelNet40"
    ds = PointCloudFolder(root, split="train")
    assert len(ds) == 9843 and ds.num_classes == 40
    counts = dict(zip(ds.classes, ds.class_counts().tolist()))
    assert counts["airplane"] == 626 and counts["chair"] == 889 and counts["xbox"] == 103
    for i in (0, 5000, 9842):
        data = ds[i]
        assert data.pos.shape == (1024, 3) and data.pos.dtype == torch.float32
        assert ds.classes[int(data.y)] == data.sample_id.split("/")[0]
        # Stored centred with max radius 1.
        assert float(data.pos.norm(dim=1).max()) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="no 'test' split"):
        PointCloudFolder(root, split="test")


def test_modelnet10_pcd_counts(shared_data):
    root = shared_data / "ModelNet10_pcd"
    train, test = PointCloudFolder(root, split="train"), PointCloudFolder(root, split="test")
    assert (len(train), len(test)) == (3991, 908)
    assert train.classes == test.classes == ["bathtub", "bed", "chair", "desk", "dresser", "monitor",
                                             "night_stand", "sofa", "table", "toilet"]
    assert train.class_counts().tolist() == [106, 515, 889, 200, 200, 465, 200, 680, 392, 344]
    assert test.class_counts().tolist() == [50, 100, 100, 86, 86, 100, 86, 100, 100, 100]
    assert set(train.sample_ids).isdisjoint(test.sample_ids)
    data = test[0]
    assert data.sample_id == "bathtub/test/bathtub_0107" and data.pos.shape == (1024, 3)
    o3d = pytest.importorskip("open3d")
    ref = np.asarray(o3d.io.read_point_cloud(str(test.files[0])).points)
    np.testing.assert_allclose(data.pos.numpy(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(read_pcd(test.files[0]), data.pos)


# --------------------------------------------------------------------------- synthetic
from pointcmt_pyg.datasets import synthetic as synthetic_module  # noqa: E402
from pointcmt_pyg.datasets.synthetic import SYNTHETIC_CLASSES, SyntheticShapes  # noqa: E402
from pointcmt_pyg.datasets.transforms import scan_points  # noqa: E402


def test_synthetic_shapes_layout_and_labels():
    ds = SyntheticShapes("train", num_classes=12, samples_per_class=3, num_points=256, seed=1)
    assert len(ds) == 36 and ds.num_classes == 12 and ds.classes == list(SYNTHETIC_CLASSES)[:12]
    assert ds.class_counts().tolist() == [3] * 12
    for i in (0, 17, 35):
        data = ds[i]
        assert data.pos.shape == (256, 3) and data.pos.dtype == torch.float32
        assert data.y.tolist() == [int(ds.labels[i])] and data.sample_id == ds.sample_ids[i]
        assert data.sample_id.startswith(ds.classes[int(data.y)] + "/train/s1_")
        assert data.mesh_face.dtype == torch.long and data.mesh_face.size(1) == 3
        assert int(data.mesh_face.max()) < data.mesh_pos.size(0)
        # Mesh normalised to the unit box: centred, longest side 1.
        lo, hi = data.mesh_pos.amin(0), data.mesh_pos.amax(0)
        torch.testing.assert_close(lo + hi, torch.zeros(3), atol=1e-5, rtol=0)
        assert float((hi - lo).max()) == pytest.approx(1.0, abs=1e-5)
        assert float(data.pos.abs().max()) < 0.5 + 0.05  # noise only
    assert len(set(ds.sample_ids)) == 36


def test_synthetic_shapes_deterministic_by_seed():
    a = SyntheticShapes("train", num_classes=10, samples_per_class=2, num_points=128, seed=3)
    synthetic_module._CACHE.clear()
    b = SyntheticShapes("train", num_classes=10, samples_per_class=2, num_points=128, seed=3)
    for i in range(len(a)):
        assert a[i].sample_id == b[i].sample_id
        torch.testing.assert_close(a[i].pos, b[i].pos)
        torch.testing.assert_close(a[i].mesh_pos, b[i].mesh_pos)
    c = SyntheticShapes("train", num_classes=10, samples_per_class=2, num_points=128, seed=4)
    assert not torch.allclose(a[0].mesh_pos[:5], c[0].mesh_pos[:5]) or a[0].mesh_pos.shape != c[0].mesh_pos.shape
    test = SyntheticShapes("test", num_classes=10, samples_per_class=2, num_points=128, seed=3)
    assert set(test.sample_ids).isdisjoint(a.sample_ids)
    assert not torch.equal(test[0].pos, a[0].pos)
    # A sample does not depend on how many classes/samples were requested.
    more = SyntheticShapes("train", num_classes=11, samples_per_class=3, num_points=128, seed=3)
    torch.testing.assert_close(more[3].pos, a[2].pos)  # class 1, index 0


def test_synthetic_shapes_noise_free_points_lie_in_the_mesh_box():
    ds = SyntheticShapes("val", num_classes=10, samples_per_class=1, num_points=512, noise=0.0)
    for i in range(len(ds)):
        data = ds[i]
        assert bool((data.pos >= data.mesh_pos.amin(0) - 1e-5).all() and (data.pos <= data.mesh_pos.amax(0) + 1e-5).all())


def _unit_cube() -> tuple:
    v = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=torch.float64)
    f = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def test_scan_points_sees_only_the_faces_towards_the_sensor():
    v, f = _unit_cube()
    pts = scan_points(v, f, 2000, torch.Generator().manual_seed(0))
    assert pts.shape == (2000, 3) and pts.dtype == torch.float64
    # Every point on the cube's surface: one coordinate at +-0.5, the others inside.
    on_face = (pts.abs() - 0.5).abs() < 1e-5
    assert bool(on_face.any(1).all()) and bool((pts.abs() <= 0.5 + 1e-5).all())
    # A sensor above the horizon sees the top face and at most two side faces, never the bottom
    # nor a side facing away: the faces hit are those whose outward normal points towards it.
    hit_sides = {(axis, sign) for axis in range(3) for sign in (-1, 1)
                 if bool(((pts[:, axis] - 0.5 * sign).abs() < 1e-5).any())}
    assert (2, 1) in hit_sides and (2, -1) not in hit_sides
    assert not ((0, 1) in hit_sides and (0, -1) in hit_sides)
    assert not ((1, 1) in hit_sides and (1, -1) in hit_sides)
    # Deterministic given the generator's seed; another seed, another viewpoint.
    again = scan_points(v, f, 2000, torch.Generator().manual_seed(0))
    assert torch.equal(pts, again)
    other = scan_points(v, f, 2000, torch.Generator().manual_seed(1))
    assert not torch.equal(pts, other)


def test_scan_points_from_straight_above_sees_only_the_top():
    v, f = _unit_cube()
    gen = torch.Generator().manual_seed(3)
    pts = scan_points(v, f, 20000, gen, elevation=(90.0, 90.0))  # straight down
    assert bool(((pts[:, 2] - 0.5).abs() < 1e-5).all())  # only the top face is seen


def test_synthetic_scans_keep_the_whole_mesh_and_surface():
    whole = SyntheticShapes("train", num_classes=10, samples_per_class=2, num_points=256, seed=5, noise=0.0)
    scans = SyntheticShapes("train", num_classes=10, samples_per_class=2, num_points=256, seed=5, noise=0.0,
                            scan=True)
    assert scans.sample_ids == whole.sample_ids
    for i in (0, 7, 19):
        a, b = whole[i], scans[i]
        torch.testing.assert_close(b.mesh_pos, a.mesh_pos)          # the teacher renders the same mesh
        torch.testing.assert_close(b.complete_pos[0], a.pos)        # the CMPG's target: the whole surface
        assert b.pos.shape == (256, 3) and not torch.equal(b.pos, a.pos)
        assert bool((b.pos >= b.mesh_pos.amin(0) - 1e-5).all() and (b.pos <= b.mesh_pos.amax(0) + 1e-5).all())
    with pytest.raises(TypeError, match="scan"):
        SyntheticShapes("train", num_classes=2, samples_per_class=1, scan=1)
    with pytest.raises(ValueError, match="num"):
        scan_points(a.mesh_pos, a.mesh_face, 0)
    # A mesh no ray can hit (all faces degenerate) is named in the error.
    flat = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="mesh_pos/mesh_face: 0 of 10 points"):
        scan_points(flat, torch.tensor([[0, 1, 2]]), 10)


def test_random_scan_rescans_the_mesh_from_a_new_viewpoint():
    from pointcmt_pyg.datasets import RandomScan
    ds = SyntheticShapes("train", num_classes=2, samples_per_class=1, num_points=300, seed=2, scan=True)
    data = ds[0]
    torch.manual_seed(0)
    a = RandomScan()(data)
    torch.manual_seed(0)
    b = RandomScan()(data)
    c = RandomScan()(data)
    assert a.pos.shape == data.pos.shape and a.pos.dtype == data.pos.dtype
    torch.testing.assert_close(a.pos, b.pos)                        # the global RNG decides
    assert not torch.equal(c.pos, a.pos) and not torch.equal(a.pos, data.pos)
    assert torch.equal(ds[0].pos, data.pos)                         # the input is not modified
    torch.testing.assert_close(a.complete_pos, data.complete_pos)   # the CMPG target is kept
    gen = torch.Generator().manual_seed(4)
    exact = RandomScan(noise=0.0, generator=gen)(data).pos
    ref = scan_points(data.mesh_pos, data.mesh_face, 300, torch.Generator().manual_seed(4))
    torch.testing.assert_close(exact, ref.float())
    with pytest.raises(ValueError, match="mesh"):
        from torch_geometric.data import Data
        RandomScan()(Data(pos=torch.rand(5, 3)))
    with pytest.raises(ValueError, match="noise"):
        RandomScan(noise=-1.0)


@pytest.mark.parametrize("kwargs, match", [({"num_classes": 1}, "num_classes"), ({"num_classes": 99}, "num_classes"),
                                           ({"samples_per_class": 0}, "samples_per_class"),
                                           ({"num_points": 0}, "num_points"), ({"split": ""}, "split"),
                                           ({"noise": -1.0}, "noise")])
def test_synthetic_shapes_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticShapes(**kwargs)


# --------------------------------------------------------------------------- ModelNet (.off)
from pointcmt_pyg.datasets.modelnet import MODELNET10_CLASSES, ModelNet  # noqa: E402


def _write_modelnet_raw(root: Path) -> None:
    for cls in ("bed", "chair"):
        for split in ("train", "test"):
            folder = root / "raw" / cls / split
            folder.mkdir(parents=True)
            for k in (2, 1) if split == "train" else (3,):  # written out of order on purpose
                _write_off(folder / f"{cls}_{k:04d}.off", glued=(k == 1))


def test_modelnet_pyg_layout_sorted_with_official_labels(tmp_path):
    _write_modelnet_raw(tmp_path)
    with pytest.warns(UserWarning, match="2 of 10 class folders"):
        ds = ModelNet(tmp_path, name="10", train=True, num_points=100, download=False)
    assert ds.classes == MODELNET10_CLASSES and ds.num_classes == 10
    assert ds.sample_ids == ["bed/train/bed_0001", "bed/train/bed_0002", "chair/train/chair_0001", "chair/train/chair_0002"]
    assert ds.labels.tolist() == [1, 1, 2, 2]  # official indices: bed = 1, chair = 2
    data = ds[0]
    assert data.pos.shape == (100, 3) and data.y.tolist() == [1]
    torch.testing.assert_close(data.mesh_pos, torch.from_numpy(_TETRA_V))
    assert torch.equal(data.mesh_face, torch.from_numpy(_TETRA_F))
    torch.testing.assert_close(ds[0].pos, data.pos)  # sampling seeded by the sample id
    assert not torch.equal(ds[1].pos, data.pos)  # same mesh, other id: other points
    with pytest.warns(UserWarning):
        test = ModelNet(tmp_path, name="10", train=False, num_points=10, download=False)
    assert test.sample_ids == ["bed/test/bed_0003", "chair/test/chair_0003"]


def test_modelnet_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ModelNet40 not found.*raw.*<class>.*train,test.*off"):
        ModelNet(tmp_path / "none", name="40", download=False)
    with pytest.raises(ValueError, match="name"):
        ModelNet(tmp_path, name="20", download=False)


def test_modelnet_rejects_unknown_class_folder_and_corrupt_mesh(tmp_path):
    _write_modelnet_raw(tmp_path)
    (tmp_path / "raw" / "spaceship" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="spaceship.*not ModelNet10 classes"):
        ModelNet(tmp_path, download=False)
    (tmp_path / "raw" / "spaceship" / "train").rmdir()
    (tmp_path / "raw" / "spaceship").rmdir()
    (tmp_path / "raw/bed/train/bed_0001.off").write_text("OFF\n3 1 0\n0 0 0\n")
    with pytest.warns(UserWarning):
        ds = ModelNet(tmp_path, download=False)
    with pytest.raises(ValueError, match=r"bed_0001\.off.*truncated"):
        ds[0]


def test_modelnet_real_off_meshes(shared_data):
    root = shared_data / "ModelNet_off" / "ModelNet10"
    with pytest.warns(UserWarning, match="2 of 10"):
        ds = ModelNet(root, name="10", train=True, download=False)
    assert ds.sample_ids == ["sofa/train/sofa_0001", "table/train/table_0001"]
    assert ds.labels.tolist() == [7, 8]
    data = ds[1]
    mesh_pos, mesh_face = read_off(ds.files[1])
    assert torch.equal(data.mesh_pos, mesh_pos) and torch.equal(data.mesh_face, mesh_face)
    assert data.pos.shape == (1024, 3)
    assert bool((data.pos >= mesh_pos.amin(0) - 1e-4).all() and (data.pos <= mesh_pos.amax(0) + 1e-4).all())


# --------------------------------------------------------------------------- ScanObjectNN
from pointcmt_pyg.datasets.scanobjectnn import SCANOBJECTNN_CLASSES, ScanObjectNN  # noqa: E402


def _write_h5(path: Path, n: int = 6, points: int = 2048, mask: bool = True, labels=None) -> np.ndarray:
    h5py = pytest.importorskip("h5py")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(n).standard_normal((n, points, 3)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
        f.create_dataset("label", data=np.asarray(labels if labels is not None else np.arange(n) % 15, dtype=np.int64))
        if mask:
            f.create_dataset("mask", data=(np.arange(points)[None].repeat(n, 0) % 3 == 0).astype(np.int32) - 1)
    return data


def test_scanobjectnn_official_layout(tmp_path):
    data = _write_h5(tmp_path / "h5_files/main_split/training_objectdataset_augmentedrot_scale75.h5")
    ds = ScanObjectNN(tmp_path, variant="PB_T50_RS", split="train", num_points=1024)
    assert len(ds) == 6 and ds.num_classes == 15 and ds.classes == SCANOBJECTNN_CLASSES
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5]
    s = ds[4]
    assert s.sample_id == "PB_T50_RS/train/00004" and s.y.tolist() == [4]
    np.testing.assert_array_equal(s.pos.numpy(), data[4, :1024])
    assert s.mask.shape == (1024,) and s.mask.dtype == torch.long and s.mask[:4].tolist() == [0, -1, -1, 0]
    full = ScanObjectNN(tmp_path / "h5_files", variant="PB_T50_RS", num_points=None)
    assert full[0].pos.shape == (2048, 3)
    _write_h5(tmp_path / "main_split_nobg/test_objectdataset.h5", n=3, mask=False)
    test = ScanObjectNN(tmp_path, variant="OBJ_ONLY", split="test")
    assert len(test) == 3 and "mask" not in test[0] and test[2].sample_id == "OBJ_ONLY/test/00002"
    with pytest.raises(FileNotFoundError, match=r"main_split[/\\]test_objectdataset\.h5"):
        ScanObjectNN(tmp_path, variant="OBJ_BG", split="test")
    with pytest.raises(ValueError, match="variant"):
        ScanObjectNN(tmp_path, variant="PB_T25")


def test_scanobjectnn_bad_files_name_the_file(tmp_path):
    path = tmp_path / "main_split/training_objectdataset.h5"
    _write_h5(path, n=3, labels=[0, 15, 2])
    with pytest.raises(ValueError, match=r"training_objectdataset\.h5: label 15 of object 1"):
        ScanObjectNN(tmp_path, variant="OBJ_BG")
    path.write_bytes(b"not an h5 file")
    with pytest.raises(ValueError, match=r"training_objectdataset\.h5: not a readable h5"):
        ScanObjectNN(tmp_path, variant="OBJ_BG")
    _write_h5(tmp_path / "x/main_split/training_objectdataset.h5", n=2, points=512)
    with pytest.raises(ValueError, match="num_points=1024 exceeds"):
        ScanObjectNN(tmp_path / "x", variant="OBJ_BG")


# The fine-detail twins: same coarse shape, a detail a few render pixels wide.
TWINS = [("crate", "slatted_crate"), ("column", "ribbed_column"), ("panel", "grille"), ("cup", "mug"),
         ("brick", "studded_brick")]


def test_synthetic_twins_lead_the_class_list():
    names = list(SYNTHETIC_CLASSES)
    assert len(names) == 16 and len(set(names)) == 16
    assert [n for pair in TWINS for n in pair] == names[:10]  # the demo's 10 classes


def _twin_meshes(plain, detailed, seed):
    """The same random draw of the coarse shape through both generators (raw,
    before deformation and normalisation)."""
    a = SYNTHETIC_CLASSES[plain](np.random.default_rng(seed))
    b = SYNTHETIC_CLASSES[detailed](np.random.default_rng(seed))
    return a, b


def _area(v, f):
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1).sum()


@pytest.mark.parametrize("plain, detailed", TWINS)
def test_synthetic_twins_differ_only_by_a_fine_detail(plain, detailed):
    from pointcmt_pyg.render.mesh import render_mesh
    for seed in range(3):
        (va, fa), (vb, fb) = _twin_meshes(plain, detailed, seed)
        size = float((va.max(0) - va.min(0)).max())
        # Same coarse shape: the bounding boxes agree up to the detail's size
        # (rings and studs stick out by about _DETAIL of the longest side, a handle more).
        tol = 1.5 * synthetic_module._DETAIL * size if detailed != "mug" else 0.35 * size
        assert np.abs(va.min(0) - vb.min(0)).max() <= tol and np.abs(va.max(0) - vb.max(0)).max() <= tol
        # The detail changes the surface area by at most about a half, so a
        # minority of the sampled points lands on it...
        ratio = _area(vb, fb) / _area(va, fa)
        assert 0.75 < ratio < 1.7, ratio
        # ... but the 64 px depth views show it: silhouettes or depths differ.
        scale = 1.0 / max(float((np.concatenate([va, vb]).max(0) - np.concatenate([va, vb]).min(0)).max()), 1e-9)
        centre = (np.concatenate([va, vb]).max(0) + np.concatenate([va, vb]).min(0)) / 2
        views = [render_mesh(torch.from_numpy((v - centre) * scale), torch.from_numpy(f), num_views=6,
                             image_size=64, channels=("depth",), normalize=False, num_threads=1)
                 for v, f in ((va, fa), (vb, fb))]
        changed = ((views[0] - views[1]).abs() > 0.01).float().mean().item()
        assert changed > 0.004, changed  # > 100 of 24,576 pixels
    # and the detailed class really carries its detail
    (va, fa), (vb, fb) = _twin_meshes(plain, detailed, 0)
    assert len(fb) > len(fa)


def test_synthetic_grille_has_through_holes_and_panel_has_none():
    from pointcmt_pyg.render.mesh import render_mesh
    for name, holes in (("panel", False), ("grille", True)):
        v, f = SYNTHETIC_CLASSES[name](np.random.default_rng(0))
        v = (v - (v.max(0) + v.min(0)) / 2) / (v.max(0) - v.min(0)).max()
        # the +y / -y axis views look through the plate
        front = render_mesh(torch.from_numpy(v), torch.from_numpy(f), num_views=6, image_size=64,
                            channels=("mask",), normalize=False, num_threads=1)[2, 0]
        rows = front.any(1).nonzero().flatten()
        cols = front.any(0).nonzero().flatten()
        inner = front[rows[0] + 8:rows[-1] - 8, cols[0] + 4:cols[-1] - 4]
        assert bool((inner < 0.5).any()) == holes
