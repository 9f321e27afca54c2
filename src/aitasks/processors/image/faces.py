"""Face landmarks and the geometry of moving one face onto another.

Landmarks come from mediapipe's face mesh (478 points; the first 468 are the same mesh on every face,
so point i of one face corresponds to point i of another). The swap warps the source face triangle by
triangle onto the target's landmarks (a Delaunay triangulation of the target's points), matches its
colours to the target's skin in Lab space, and blends it in with Poisson (seamless) cloning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aitasks.errors import JobError
from aitasks.processors.image import models

if TYPE_CHECKING:
    import numpy as np

MESH_POINTS = 468


class NoFace(JobError):
    """Raised when an image has no face, or not the face asked for (bad input: never retried)."""


@dataclass
class Face:
    points: np.ndarray  # MESH_POINTS x 2, float32 pixel coordinates
    box: tuple[int, int, int, int]  # x, y, w, h

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


def find_faces(rgb: np.ndarray) -> list[Face]:
    """Every face the mesh finds, largest first."""
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    result = models.face_mesh().process(rgb)
    faces = []
    for landmarks in result.multi_face_landmarks or []:
        pts = np.array([(p.x * w, p.y * h) for p in landmarks.landmark[:MESH_POINTS]], np.float32)
        x, y, bw, bh = cv2.boundingRect(pts)
        faces.append(Face(points=pts, box=(int(x), int(y), int(bw), int(bh))))
    return sorted(faces, key=lambda f: f.area, reverse=True)


def pick(faces: list[Face], index: int, field: str) -> Face:
    if not faces:
        raise NoFace(f"no face found in {field}")
    if index >= len(faces):
        raise NoFace(f"{field} has {len(faces)} face(s); parameters index {index} does not exist "
                     "(faces are numbered from 0, largest first)")
    return faces[index]


def triangles(points: np.ndarray, size: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Delaunay triangles of ``points`` as index triples (inside an image of ``size`` = width, height)."""
    import cv2
    import numpy as np

    w, h = size
    subdiv = cv2.Subdiv2D((0, 0, w, h))
    inside = np.clip(points, 0, [w - 1, h - 1])
    lookup = {(round(float(x), 2), round(float(y), 2)): i for i, (x, y) in enumerate(inside)}
    for x, y in inside:
        subdiv.insert((float(x), float(y)))
    out = []
    for t in subdiv.getTriangleList():
        corners = [(round(float(t[i]), 2), round(float(t[i + 1]), 2)) for i in (0, 2, 4)]
        a, b, c = (lookup.get(corner) for corner in corners)
        if a is not None and b is not None and c is not None:
            out.append((a, b, c))
    return out


def warp_face(src: np.ndarray, src_pts: np.ndarray, dst_shape: tuple[int, ...], dst_pts: np.ndarray,
              tris: list[tuple[int, int, int]]) -> np.ndarray:
    """The source image warped, triangle by triangle, so its landmarks land on ``dst_pts``."""
    import cv2
    import numpy as np

    out = np.zeros(dst_shape, np.float32)
    covered = np.zeros(dst_shape[:2], np.float32)
    for a, b, c in tris:
        s = np.array([src_pts[a], src_pts[b], src_pts[c]], np.float32)
        d = np.array([dst_pts[a], dst_pts[b], dst_pts[c]], np.float32)
        sx, sy, sw, sh = cv2.boundingRect(s)
        dx, dy, dw, dh = cv2.boundingRect(d)
        if sw == 0 or sh == 0 or dw == 0 or dh == 0:
            continue
        patch = src[sy:sy + sh, sx:sx + sw].astype(np.float32)
        if patch.shape[0] != sh or patch.shape[1] != sw:
            continue
        matrix = cv2.getAffineTransform((s - [sx, sy]).astype(np.float32), (d - [dx, dy]).astype(np.float32))
        warped = cv2.warpAffine(patch, matrix, (dw, dh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        tri_mask = np.zeros((dh, dw), np.float32)
        cv2.fillConvexPoly(tri_mask, np.round(d - [dx, dy]).astype(np.int32), 1.0, cv2.LINE_AA)
        region = out[dy:dy + dh, dx:dx + dw]
        cov = covered[dy:dy + dh, dx:dx + dw]
        hh, ww = region.shape[:2]
        m = tri_mask[:hh, :ww] * (1.0 - cov)
        region += warped[:hh, :ww] * m[..., None]
        cov += m
    return out


def match_colours(face: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in Lab: the face's colour statistics become the target's, inside ``mask``."""
    import cv2
    import numpy as np

    inside = mask > 0
    if inside.sum() < 10:
        return face
    f_lab = cv2.cvtColor(np.clip(face, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    t_lab = cv2.cvtColor(target, cv2.COLOR_RGB2LAB).astype(np.float32)
    for ch in range(3):
        f, t = f_lab[..., ch][inside], t_lab[..., ch][inside]
        f_lab[..., ch] = (f_lab[..., ch] - f.mean()) * (t.std() / max(f.std(), 1e-3)) + t.mean()
    return cv2.cvtColor(np.clip(f_lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)


def swap(source: np.ndarray, src_face: Face, target: np.ndarray, dst_face: Face, blend: float) -> np.ndarray:
    """The target image with the source face on it."""
    import cv2
    import numpy as np

    h, w = target.shape[:2]
    tris = triangles(dst_face.points, (w, h))
    warped = warp_face(source, src_face.points, target.shape, dst_face.points, tris)
    hull = cv2.convexHull(np.round(dst_face.points).astype(np.int32))
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    # Shrink the mask a little so its edge lies on skin, not on the warped face's ragged border.
    k = max(3, int(0.04 * max(dst_face.box[2], dst_face.box[3])) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    coloured = match_colours(warped, target, mask)
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw < 4 or bh < 4:
        raise NoFace("the face in target_image is too small to swap")
    centre = (x + bw // 2, y + bh // 2)
    cloned = cv2.seamlessClone(coloured.astype(np.uint8), target, mask, centre, cv2.NORMAL_CLONE)
    if blend >= 1.0:
        return cloned
    return np.round(cloned.astype(np.float32) * blend + target.astype(np.float32) * (1 - blend)).astype(np.uint8)
