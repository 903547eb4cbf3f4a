"""renderers.mesh.isosurface: one marching-cubes convention for every scene kind."""

import numpy as np
import pytest

from renderers.mesh import isosurface


def _ellipsoid(n: int = 32):
    axis = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.sqrt(x ** 2 + y ** 2 + (z / 1.4) ** 2), 2 / (n - 1)


@pytest.mark.parametrize("inside", ["above", "below"])
@pytest.mark.parametrize("order", ["xyz", "zyx"])
def test_isosurface_faces_and_normals_point_out_in_world_axes(inside, order):
    r, spacing = _ellipsoid()
    volume, level = (1 - r, 0.5) if inside == "above" else (r - 0.5, 0.0)
    if order == "zyx":
        volume = volume.transpose(2, 1, 0)
    mesh = isosurface(volume, level, -1.0, spacing, inside=inside, order=order)
    tri = mesh.vertices[mesh.faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    big = np.linalg.norm(face_normals, axis=1) > 1e-8
    assert (np.einsum("ij,ij->i", face_normals, tri.mean(1))[big] > 0).all()
    assert (np.einsum("ij,ij->i", mesh.normals, mesh.vertices) > 0).mean() > 0.99
    # the long axis is world z whatever the volume's index order
    np.testing.assert_allclose(mesh.bounds()[1], [0.5, 0.5, 0.7], atol=0.02)


def test_isosurface_is_empty_when_the_level_is_not_crossed():
    r, spacing = _ellipsoid(8)
    assert isosurface(r, 5.0, -1.0, spacing).is_empty
    with pytest.raises(ValueError, match="inside"):
        isosurface(r, 0.5, -1.0, spacing, inside="in")


def _ball(peak: float, soft: bool):
    """A voxel ball at the centre: a soft Gaussian of density ``peak``, or a hard sphere of radius 0.4."""
    import torch

    from renderers.voxels import VoxelScene

    axis = torch.linspace(-1, 1, 24)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = (x ** 2 + y ** 2 + z ** 2).sqrt()
    sigma = peak * (torch.exp(-(r / 0.35) ** 2) if soft else (r < 0.4).float())
    return VoxelScene.from_values(sigma[None], torch.full((1, 3, 24, 24, 24), 0.5))


def test_silhouette_level_puts_a_soft_fields_surface_on_its_rendered_outline():
    from renderers.cameras import orbit_cameras
    from renderers.mesh import silhouette_level

    soft = _ball(8.0, soft=True)
    assert soft.to_mesh(0.0, resolution=32, threshold=25.0).is_empty  # never as dense as threestudio's level
    level = silhouette_level(soft, lambda p, t: soft.sample(p, t)[0], [0.0], preferred=25.0)
    assert 0.1 < level < 8.0
    mesh = soft.to_mesh(0.0, resolution=48, threshold=level)
    # The rendered outline from the front: the pixels with alpha > 0.5, measured as a radius in world units.
    cams = orbit_cameras(3.0, 0.0, 0.0, 40.0, 64, 64)
    covered = float((soft.render(cams, 0.0).alpha > 0.5).sum())
    pixel = 2 * 3.0 * np.tan(np.radians(20.0)) / 64
    outline = np.sqrt(covered / np.pi) * pixel
    extent = float(np.abs(mesh.vertices[:, 1:]).max(0).mean())  # the mesh's half-width seen from +x
    assert abs(extent - outline) < 0.1, (extent, outline)


def test_silhouette_level_keeps_the_usual_level_where_it_fits():
    from renderers.mesh import silhouette_level

    hard = _ball(500.0, soft=False)  # any level between 0 and 500 gives the same outline
    assert silhouette_level(hard, lambda p, t: hard.sample(p, t)[0], [0.0], preferred=25.0) == pytest.approx(25.0)
    empty = _ball(0.0, soft=False)
    assert silhouette_level(empty, lambda p, t: empty.sample(p, t)[0], [0.0], preferred=25.0) == 25.0
