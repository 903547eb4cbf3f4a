"""A minimal GLB writer on pygltflib's document model.

pygltflib holds the JSON side; this module lays out the binary chunk itself so the rules the
Khronos validator enforces hold by construction: every bufferView starts 4-byte aligned, each
accessor has its own bufferView (so no ``byteStride`` is ever needed), POSITION and animation
input accessors carry exact ``min``/``max``, and both chunks are padded to 4 bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import pygltflib as gl

from renderers.rotations import ZUP_TO_YUP

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
_COMPONENT = {np.dtype(np.float32): gl.FLOAT, np.dtype(np.uint32): gl.UNSIGNED_INT,
              np.dtype(np.uint16): gl.UNSIGNED_SHORT, np.dtype(np.uint8): gl.UNSIGNED_BYTE}
_TYPE = {1: gl.SCALAR, 2: gl.VEC2, 3: gl.VEC3, 4: gl.VEC4}
_ZUP_TO_YUP = ZUP_TO_YUP.numpy().astype(np.float64)
GENERATOR = "fourd-studio"


def to_yup(points: np.ndarray) -> np.ndarray:
    """World (+Z up) points or directions ``[N, 3]`` -> glTF axes (+Y up), float32."""
    return (np.asarray(points, np.float64) @ _ZUP_TO_YUP.T).astype(np.float32)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """glTF vertex colours are linear; scene colours are display (sRGB) values."""
    rgb = np.clip(rgb, 0, 1)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


class GlbBuilder:
    """Collects a glTF document and its binary chunk; :meth:`to_bytes` returns the GLB file."""

    def __init__(self) -> None:
        self.doc = gl.GLTF2(asset=gl.Asset(version="2.0", generator=GENERATOR), scene=0,
                            scenes=[gl.Scene(nodes=[])])
        self.blob = bytearray()

    # ------------------------------------------------------------------ raw data
    def add_view(self, data: bytes, target: int | None = None) -> int:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        self.doc.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data),
                                                  target=target))
        self.blob.extend(data)
        return len(self.doc.bufferViews) - 1

    def add_accessor(self, array: np.ndarray, *, target: int | None = None, normalized: bool = False,
                     bounds: bool = False) -> int:
        """An accessor over ``array`` ``[N]`` or ``[N, 1..4]`` in a bufferView of its own."""
        array = np.ascontiguousarray(array)
        width = 1 if array.ndim == 1 else array.shape[1]
        accessor = gl.Accessor(bufferView=self.add_view(array.tobytes(), target),
                               componentType=_COMPONENT[array.dtype], count=len(array), type=_TYPE[width])
        if normalized:
            accessor.normalized = True
        if bounds:
            flat = array.reshape(len(array), width)
            cast = float if array.dtype.kind == "f" else int
            accessor.min = [cast(v) for v in flat.min(0)]
            accessor.max = [cast(v) for v in flat.max(0)]
        self.doc.accessors.append(accessor)
        return len(self.doc.accessors) - 1

    # ------------------------------------------------------------------ scene objects
    def add_material(self, texture_png: bytes | None = None, name: str = "surface") -> int:
        pbr = gl.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
        if texture_png is not None:
            if not self.doc.samplers:
                self.doc.samplers.append(gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR,
                                                    wrapS=gl.CLAMP_TO_EDGE, wrapT=gl.CLAMP_TO_EDGE))
            self.doc.images.append(gl.Image(bufferView=self.add_view(texture_png), mimeType="image/png"))
            self.doc.textures.append(gl.Texture(sampler=0, source=len(self.doc.images) - 1))
            pbr.baseColorTexture = gl.TextureInfo(index=len(self.doc.textures) - 1)
        self.doc.materials.append(gl.Material(name=name, pbrMetallicRoughness=pbr))
        return len(self.doc.materials) - 1

    def add_mesh(self, positions: np.ndarray, faces: np.ndarray, *, normals: np.ndarray | None = None,
                 colors: np.ndarray | None = None, uvs: np.ndarray | None = None, material: int | None = None,
                 morph_positions: list[np.ndarray] | None = None, morph_normals: list[np.ndarray] | None = None,
                 name: str = "mesh") -> int:
        """A one-primitive mesh from glTF-axes arrays: ``positions``/``normals`` ``[V, 3]`` float32,
        ``faces`` ``[F, 3]``, ``colors`` ``[V, 3]`` sRGB in [0, 1], ``uvs`` ``[V, 2]`` (v down, glTF's),
        morph targets as displacements ``[V, 3]`` each."""
        attributes = gl.Attributes(POSITION=self.add_accessor(np.asarray(positions, np.float32),
                                                              target=ARRAY_BUFFER, bounds=True))
        if normals is not None:
            attributes.NORMAL = self.add_accessor(np.asarray(normals, np.float32), target=ARRAY_BUFFER)
        if colors is not None:
            rgba = np.concatenate([srgb_to_linear(colors), np.ones((len(colors), 1), np.float32)], 1)
            rgba8 = np.round(rgba * 255).astype(np.uint8)  # 4 bytes a vertex: aligned without a stride
            attributes.COLOR_0 = self.add_accessor(rgba8, target=ARRAY_BUFFER, normalized=True)
        if uvs is not None:
            attributes.TEXCOORD_0 = self.add_accessor(np.asarray(uvs, np.float32), target=ARRAY_BUFFER)
        indices = np.asarray(faces).reshape(-1)
        index_type = np.uint16 if len(positions) < 65535 else np.uint32
        primitive = gl.Primitive(attributes=attributes, mode=gl.TRIANGLES, material=material,
                                 indices=self.add_accessor(indices.astype(index_type), target=ELEMENT_ARRAY_BUFFER))
        mesh = gl.Mesh(name=name, primitives=[primitive])
        if morph_positions:
            primitive.targets = []
            for k, delta in enumerate(morph_positions):
                target = {"POSITION": self.add_accessor(np.asarray(delta, np.float32), target=ARRAY_BUFFER,
                                                        bounds=True)}
                if morph_normals is not None:
                    target["NORMAL"] = self.add_accessor(np.asarray(morph_normals[k], np.float32),
                                                         target=ARRAY_BUFFER)
                primitive.targets.append(target)
            mesh.weights = [0.0] * len(morph_positions)
        self.doc.meshes.append(mesh)
        return len(self.doc.meshes) - 1

    def add_node(self, node: gl.Node, parent: int | None = None) -> int:
        self.doc.nodes.append(node)
        index = len(self.doc.nodes) - 1
        if parent is None:
            self.doc.scenes[0].nodes.append(index)
        else:
            self.doc.nodes[parent].children.append(index)
        return index

    # ------------------------------------------------------------------ output
    def to_bytes(self) -> bytes:
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        self.doc.buffers = [gl.Buffer(byteLength=len(self.blob))] if self.blob else []
        if not self.blob:
            self.doc.bufferViews = []
        json_chunk = self.doc.to_json(separators=(",", ":")).encode("utf-8")
        json_chunk += b" " * (-len(json_chunk) % 4)
        chunks = struct.pack("<II", len(json_chunk), 0x4E4F534A) + json_chunk
        if self.blob:
            chunks += struct.pack("<II", len(self.blob), 0x004E4942) + bytes(self.blob)
        return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``[V, 3]`` of a counter-clockwise mesh."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    normals = np.stack([sum(np.bincount(f[:, corner], face_n[:, axis], len(v)) for corner in range(3))
                        for axis in range(3)], 1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    fallback = np.array([0.0, 0.0, 1.0])
    return np.where(length > 1e-20, normals / np.maximum(length, 1e-20), fallback).astype(np.float32)
