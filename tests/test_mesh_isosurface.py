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
